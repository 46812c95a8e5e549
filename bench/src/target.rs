//! The server every contender relays to, inside the driver: the first byte a
//! client sends picks what it does.
//!
//! * `B` and a big-endian u64 `n`: sends `n` bytes (the bulk source), then
//!   reads the next request.
//! * `E`: echoes everything back from then on (the small-message target).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BULK: u8 = b'B';
pub const ECHO: u8 = b'E';

/// What the bulk source sends: pseudo-random bytes, as incompressible as
/// encoded framebuffer updates, repeated.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The bulk request: `B` and the length.
pub fn bulk_request(bytes: u64) -> [u8; 9] {
    let mut request = [0u8; 9];
    request[0] = BULK;
    request[1..].copy_from_slice(&bytes.to_be_bytes());
    request
}

/// Listens on `addr` and serves until the runtime stops.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let pattern: Arc<[u8]> = pattern(1 << 20).into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let pattern = pattern.clone();
            tokio::spawn(async move {
                let _ = connection(stream, &pattern).await;
            });
        }
    });
    Ok(())
}

async fn connection(mut stream: TcpStream, pattern: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    loop {
        // Probes and a client's close end here.
        stream.read_exact(&mut mode).await?;
        match mode[0] {
            BULK => {
                let mut len = [0u8; 8];
                stream.read_exact(&mut len).await?;
                let mut left = u64::from_be_bytes(len);
                while left > 0 {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(pattern.len());
                    stream.write_all(&pattern[..n]).await?;
                    left -= n as u64;
                }
            }
            ECHO => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    stream.write_all(&buf[..n]).await?;
                }
            }
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_varied() {
        let a = pattern(4096);
        assert_eq!(a, pattern(4096));
        let distinct = a.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct > 200, "only {distinct} distinct bytes");
    }

    #[test]
    fn bulk_request_layout() {
        assert_eq!(bulk_request(258), [b'B', 0, 0, 0, 0, 0, 0, 1, 2]);
    }
}
