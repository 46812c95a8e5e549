//! The HTTPS listener: TLS (rustls), HTTP/1.1 with upgrades (hyper), a connection
//! cap taken before accepting, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::reply::{self, Body};
use crate::state::Sim;
use crate::{api, auth, control};

const MAX_CONNECTIONS: usize = 256;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the simulator shuts down, or until `outage`
/// fires: then the listener closes and every API connection it accepted is
/// dropped at once (no graceful close), as when pveproxy dies. Consoles
/// already upgraded to `vncwebsocket` run on in their own tasks.
pub async fn serve(
    sim: Arc<Sim>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    outage: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = sim.shutdown.cancelled() => return,
            () = outage.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sim.shutdown.cancelled() => return,
            () = outage.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sim = sim.clone();
        let shutdown = sim.shutdown.clone();
        let outage = outage.clone();
        sim.tracker.clone().spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = service_fn(move |req| route(sim.clone(), req));
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024 + 16 * 1024)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
                // Dropped mid-request: the client sees its connection reset.
                () = outage.cancelled() => {}
            }
        });
    }
}

async fn route(sim: Arc<Sim>, req: Request<Incoming>) -> Result<Response<Body>, api::ApiError> {
    let path = req.uri().path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return Ok(control::handle(sim, req).await);
    }
    if auth::uri_unescape(path).starts_with("/api2/") {
        let method = req.method().clone();
        let uri = req.uri().path().to_string();
        let response = api::handle(sim, req).await;
        match &response {
            Ok(r) => tracing::debug!(%method, path = %uri, status = r.status().as_u16(), "request"),
            Err(e) => tracing::info!(%method, path = %uri, error = %e, "request dropped"),
        }
        return response;
    }
    // pveproxy serves its GUI files elsewhere; anything else is "no such file".
    Ok(reply::bare_error(
        StatusCode::NOT_IMPLEMENTED,
        &format!("no such file '{}'", auth::uri_unescape(path)),
    ))
}
