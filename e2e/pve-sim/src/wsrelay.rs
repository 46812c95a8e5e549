//! The WebSocket side of `vncwebsocket`, framed exactly as pve-http-server's
//! `websocket_proxy` does it (verified in `PVE/APIServer/AnyEvent.pm`):
//!
//! - server frames are single binary frames (`0x82`), at most 128 KiB of payload;
//! - client frames must be final (no fragmentation), without RSV bits, masked, and at
//!   most 128 KiB, else the connection is dropped;
//! - opcodes 1 and 2 carry data, 9 (ping) is answered with a pong carrying the same
//!   payload, 10 (pong) is ignored, 8 (close) shuts both sides down without a close
//!   frame in reply, anything else drops the connection;
//! - when the VNC side ends, the client connection is closed (no close frame).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::rfb::ClientStream;

pub const MAX_PAYLOAD: usize = 128 * 1024;

/// Why a relay ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("received fragmented websocket frame")]
    Fragmented,
    #[error("received websocket frame with RSV flags")]
    Rsv,
    #[error("received unmasked websocket frame from client")]
    Unmasked,
    #[error("received too large websocket frame (len = {0})")]
    TooLarge(u64),
    #[error("received unhandled websocket opcode {0}")]
    Opcode(u8),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A frame the client sent, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Takes one complete client frame off the front of `buffer`, if there is one.
pub fn parse_client_frame(buffer: &mut Vec<u8>) -> Result<Option<Frame>, RelayError> {
    if buffer.len() < 2 {
        return Ok(None);
    }
    let head = buffer[0];
    if head & 0x80 == 0 {
        return Err(RelayError::Fragmented);
    }
    if head & 0x70 != 0 {
        return Err(RelayError::Rsv);
    }
    let opcode = head & 0x0F;
    if buffer[1] & 0x80 == 0 {
        return Err(RelayError::Unmasked);
    }
    let mut offset = 2;
    let mut len = u64::from(buffer[1] & 0x7F);
    if len == 126 {
        if buffer.len() < 4 {
            return Ok(None);
        }
        len = u64::from(u16::from_be_bytes([buffer[2], buffer[3]]));
        offset = 4;
    } else if len == 127 {
        if buffer.len() < 10 {
            return Ok(None);
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&buffer[2..10]);
        len = u64::from_be_bytes(bytes);
        offset = 10;
    }
    if len > MAX_PAYLOAD as u64 {
        return Err(RelayError::TooLarge(len));
    }
    let len = len as usize;
    if buffer.len() < offset + 4 + len {
        return Ok(None);
    }
    let mask = [
        buffer[offset],
        buffer[offset + 1],
        buffer[offset + 2],
        buffer[offset + 3],
    ];
    let mut payload: Vec<u8> = buffer[offset + 4..offset + 4 + len].to_vec();
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    buffer.drain(..offset + 4 + len);
    Ok(Some(Frame { opcode, payload }))
}

/// A server frame: `opcode_byte` (0x82 binary, 0x8A pong) and the length.
pub fn encode_server_frame(opcode_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(opcode_byte);
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Relays between the upgraded client connection and the vncproxy worker's port
/// until either side ends; client-to-server bytes also feed `recorder`.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    mut recorder: ClientStream,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let client_write = Mutex::new(client_write);

    let from_client = async {
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some(frame) = parse_client_frame(&mut buffer)? {
                match frame.opcode {
                    1 | 2 => {
                        if recorder.feed(&frame.payload).is_err() {
                            tracing::debug!("RFB recorder stopped: unexpected client stream");
                        }
                        upstream_write.write_all(&frame.payload).await?;
                    }
                    8 => {
                        let _ = upstream_write.shutdown().await;
                        return Ok::<(), RelayError>(());
                    }
                    9 => {
                        let pong = encode_server_frame(0x8A, &frame.payload);
                        client_write.lock().await.write_all(&pong).await?;
                    }
                    10 => {}
                    other => return Err(RelayError::Opcode(other)),
                }
            }
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                let _ = upstream_write.shutdown().await;
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    };
    let to_client = async {
        let mut chunk = vec![0u8; MAX_PAYLOAD];
        loop {
            let n = upstream_read.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<(), RelayError>(());
            }
            let frame = encode_server_frame(0x82, &chunk[..n]);
            client_write.lock().await.write_all(&frame).await?;
        }
    };
    let result = tokio::select! {
        r = from_client => r,
        r = to_client => r,
    };
    let _ = client_write.lock().await.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(head: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![head];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn parses_masked_frames_incrementally() {
        let mut buffer = masked(0x82, b"hello");
        buffer.extend(masked(0x89, b"p"));
        let whole = buffer.clone();
        let mut partial = whole[..4].to_vec();
        assert_eq!(parse_client_frame(&mut partial).unwrap(), None);
        let frame = parse_client_frame(&mut buffer).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame {
                opcode: 2,
                payload: b"hello".to_vec()
            }
        );
        let ping = parse_client_frame(&mut buffer).unwrap().unwrap();
        assert_eq!(ping.opcode, 9);
        assert!(buffer.is_empty());
    }

    #[test]
    fn rejects_what_pve_rejects() {
        let mut unmasked = vec![0x82, 1, b'x'];
        assert!(matches!(
            parse_client_frame(&mut unmasked),
            Err(RelayError::Unmasked)
        ));
        let mut fragment = masked(0x02, b"x");
        assert!(matches!(
            parse_client_frame(&mut fragment),
            Err(RelayError::Fragmented)
        ));
        let mut rsv = masked(0xC2, b"x");
        assert!(matches!(parse_client_frame(&mut rsv), Err(RelayError::Rsv)));
        let mut big = vec![0x82, 0x80 | 127];
        big.extend_from_slice(&((MAX_PAYLOAD as u64) + 1).to_be_bytes());
        assert!(matches!(
            parse_client_frame(&mut big),
            Err(RelayError::TooLarge(_))
        ));
    }

    #[test]
    fn encodes_server_frames_unmasked() {
        assert_eq!(encode_server_frame(0x82, b"ab"), vec![0x82, 2, b'a', b'b']);
        let long = encode_server_frame(0x82, &[0; 300]);
        assert_eq!(&long[..4], &[0x82, 126, 1, 44]);
    }
}
