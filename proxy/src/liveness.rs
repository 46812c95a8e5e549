//! Noticing a hypervisor that went away without a word: a network cut, a
//! host that lost power. No FIN or reset ever comes then, and a console that
//! nobody redraws carries no data, so without help the relay would wait on
//! its read until the session's deadline, and a viewer's keystrokes would sit
//! unacknowledged for the kernel's ~15 minutes of retransmissions.
//!
//! Every upstream TCP connection therefore gets keepalive probes after
//! [`IDLE`] of silence, and a `TCP_USER_TIMEOUT` of [`DEAD_AFTER`]: when
//! nothing (data or probe answer) has come back for that long, the kernel
//! fails the socket with `ETIMEDOUT`, the relay's read or write returns it,
//! and the relay tears down both directions.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Silence before the first keepalive probe.
pub const IDLE: Duration = Duration::from_secs(10);
/// Between probes.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long a peer may stay silent (no acknowledgement of data or probes)
/// before the connection counts as dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(20);

/// Arms dead-peer detection on an upstream connection.
pub fn watch(stream: &TcpStream) -> io::Result<()> {
    let socket = SockRef::from(stream);
    let probes = (DEAD_AFTER.as_secs() - IDLE.as_secs()) / INTERVAL.as_secs();
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(IDLE)
            .with_interval(INTERVAL)
            .with_retries(u32::try_from(probes).unwrap_or(1).max(1)),
    )?;
    socket.set_tcp_user_timeout(Some(DEAD_AFTER))
}

/// Arms detection, logging rather than failing when the platform refuses:
/// a console without it still works, it only notices a cut later.
pub fn watch_or_warn(stream: &TcpStream) {
    if let Err(error) = watch(stream) {
        tracing::warn!(%error, "cannot arm dead-peer detection upstream");
    }
}

/// Whether an upstream I/O error means the peer stopped answering, as
/// [`watch`] reports it (directly, or carried through a WebSocket upstream).
pub fn is_dead_peer(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::TimedOut {
        return true;
    }
    let inner = error.get_ref();
    if let Some(io) = inner.and_then(|e| e.downcast_ref::<io::Error>()) {
        return is_dead_peer(io);
    }
    matches!(
        inner.and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        Some(tokio_tungstenite::tungstenite::Error::Io(io)) if is_dead_peer(io)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upstream_connection_gets_probes_and_a_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        watch(&stream).unwrap();
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), INTERVAL);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(DEAD_AFTER));
    }

    /// What the relay sees of a dead peer, however the upstream carried it.
    #[test]
    fn timeouts_are_dead_peers_however_they_are_wrapped() {
        let timed_out = || io::Error::from(io::ErrorKind::TimedOut);
        assert!(is_dead_peer(&timed_out()));
        assert!(is_dead_peer(&io::Error::other(timed_out())));
        assert!(is_dead_peer(&io::Error::other(
            tokio_tungstenite::tungstenite::Error::Io(timed_out())
        )));
        assert!(!is_dead_peer(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!is_dead_peer(&io::Error::other("closed")));
    }
}
