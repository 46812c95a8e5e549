//! The accept loop both modes share, after mini-redis: a connection slot is taken
//! *before* accepting, so at the cap new clients wait in the kernel's backlog
//! instead of costing memory here; accept errors back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Accepts until `stop` fires, handing each connection and its slot to `handle`.
pub async fn accept_loop<F>(
    listener: &TcpListener,
    max_connections: usize,
    stop: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stop.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(listener) => accepted,
            () = stop.cancelled() => return,
        };
        // RFB is chatty with small messages: latency beats batching.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        handle(stream, peer, permit);
    }
}

/// Accepts, retrying failures (out of file descriptors, aborted handshakes) with
/// a backoff that doubles up to a second.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
