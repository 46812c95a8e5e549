//! One listener of a Service port: accepts connections and relays each to a
//! ready backend.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::endpoints::RoundRobin;

/// Connections one listener relays at once; further ones wait to be accepted.
const MAX_CONNECTIONS: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Where a listener finds its current backends.
pub trait Backends: Send + Sync + 'static {
    fn ready(&self) -> Vec<SocketAddr>;
}

/// Accepts on `listener` until `cancel` fires. A connection with no ready
/// backend is closed at once, as a REJECT rule would.
pub async fn serve(listener: TcpListener, backends: Arc<dyn Backends>, cancel: CancellationToken) {
    let turns = Arc::new(RoundRobin::default());
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Take the permit before accepting: a full relay pushes back on clients.
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Some(backend) = turns.pick(&backends.ready()) else {
            tracing::debug!(%peer, "no ready endpoint; closing");
            continue;
        };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = relay(client, backend) => {}
            }
            drop(permit);
        });
    }
}

async fn relay(mut client: TcpStream, backend: SocketAddr) {
    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(err)) => {
                tracing::debug!(%backend, error = %err, "backend refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%backend, "backend connect timed out");
                return;
            }
        };
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%backend, error = %err, "relay ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fixed(Mutex<Vec<SocketAddr>>);

    impl Backends for Fixed {
        fn ready(&self) -> Vec<SocketAddr> {
            self.0.lock().unwrap().clone()
        }
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn relays_to_a_backend_and_rejects_without_one() {
        let backend = echo_server().await;
        let backends = Arc::new(Fixed(Mutex::new(vec![backend])));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, backends.clone(), cancel.clone()));

        let mut client = TcpStream::connect(front).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping");

        backends.0.lock().unwrap().clear();
        let mut rejected = TcpStream::connect(front).await.unwrap();
        let mut buffer = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), rejected.read(&mut buffer))
            .await
            .expect("closed promptly");
        assert!(matches!(read, Ok(0) | Err(_)));
        cancel.cancel();
    }
}
