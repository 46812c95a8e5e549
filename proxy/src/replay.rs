//! `porthole-proxy replay FILE`: plays a [recording](crate::recording) back
//! to whoever connects, as the server did: each server-to-viewer chunk is sent
//! at its recorded time after the WebSocket opens. What the viewer sends is
//! read and dropped, so a viewer that behaves as the recorded one did (noVNC
//! does) sees the session again.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use porthole_api::contract::BINARY_SUBPROTOCOL;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Offered;
use crate::http::{self as web, Body, close_frame};
use crate::metrics::Direction;
use crate::recording::{self, Frame};
use crate::server::{self, Conn};

/// A replay is for a few people at a workstation.
const LIMITS: server::Limits = server::Limits {
    max_pending: 16,
    max_pending_per_source: 16,
    max_upgraded: 16,
    request_timeout: Duration::from_secs(10),
};

/// `porthole-proxy replay`: serve a recording to WebSocket viewers.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A recording written by `--record` (or by websockify).
    pub file: PathBuf,
    /// Address to serve the WebSocket on (any path).
    #[arg(long, default_value = "127.0.0.1:6080")]
    pub listen: SocketAddr,
}

/// Why a replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recording(#[from] recording::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves the recording until `shutdown`; every viewer gets it from the start.
pub async fn run(args: ReplayArgs, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let frames: Arc<[Frame]> = recording::read(&args.file)?
        .into_iter()
        .filter(|f| f.direction == Direction::Downstream)
        .collect();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.listen,
            source,
        })?;
    tracing::info!(file = %args.file.display(), frames = frames.len(), listen = %args.listen, "replaying");
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let accept = server::run(
        listener,
        LIMITS,
        server::Stop::both(&stop),
        tasks.clone(),
        |stream, conn| {
            let (frames, stop, viewers) = (frames.clone(), stop.clone(), tasks.clone());
            async move {
                let service = {
                    let conn = conn.clone();
                    service_fn(move |req| {
                        let response = upgrade(req, &conn, &frames, &viewers, &stop);
                        async move { Ok::<_, Infallible>(response) }
                    })
                };
                conn.serve_http(stream, service).await;
            }
        },
    );
    tokio::select! {
        () = accept => {}
        () = shutdown => stop.cancel(),
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tasks.wait()).await;
    Ok(())
}

fn upgrade(
    mut req: Request<Incoming>,
    conn: &Conn,
    frames: &Arc<[Frame]>,
    viewers: &TaskTracker,
    stop: &CancellationToken,
) -> Response<Body> {
    if !web::is_websocket(&req) {
        return web::text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    let protocol = Offered::from_headers(req.headers())
        .binary
        .then_some(BINARY_SUBPROTOCOL);
    let (response, on_upgrade) = match web::accept(&mut req, protocol) {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let Ok(slot) = conn.upgrade() else {
        return web::text(StatusCode::SERVICE_UNAVAILABLE, "too many viewers\n");
    };
    let play = play(on_upgrade, frames.clone(), stop.clone());
    viewers.spawn(
        async move {
            let _slot = slot;
            play.await;
        }
        .instrument(tracing::info_span!("viewer", peer = %conn.peer())),
    );
    response
}

/// Sends each frame at its time, reading (and dropping) what the viewer says.
async fn play(on_upgrade: OnUpgrade, frames: Arc<[Frame]>, stop: CancellationToken) {
    let Ok(ws) = web::websocket(on_upgrade, web::websocket_config(1 << 20)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let started = Instant::now();
    let send = async {
        for frame in frames.iter() {
            tokio::time::sleep_until(started + frame.at).await;
            sink.send(Message::Binary(frame.data.clone().into()))
                .await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let finished = tokio::select! {
        sent = send => sent.is_ok(),
        () = drain => false,
        () = stop.cancelled() => true,
    };
    if finished {
        tracing::info!("replay finished");
        let frame = close_frame(CloseCode::Normal, "end of recording");
        if let Ok(mut ws) = sink.reunite(stream) {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
        }
    }
}
