//! `vncwebsocket` as a byte stream.
//!
//! Proxmox VE carries the VNC server's RFB stream in binary WebSocket
//! messages. Rather than teach the RFB handshake and the relay a second kind
//! of upstream, [`ByteStream`] turns the WebSocket back into what a TCP
//! connection to a VNC server is, an `AsyncRead + AsyncWrite` of bytes: the
//! handshake, the relay's bounded buffers, input parsing, metrics and
//! teardown then apply unchanged and stay tested by the plain VNC tests.
//!
//! On the wire it does what pve-http-server expects of a client: every write
//! is one masked, unfragmented binary frame of at most [`MAX_FRAME`] bytes
//! (the server drops a connection sending frames over 128 KiB); pings are
//! answered (tungstenite queues the pong and sends it with the next read or
//! write); a close frame, or the server simply closing the connection as
//! Proxmox VE does when the VNC side ends, reads as end of stream; shutting
//! the stream down sends a close frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error, Message};

/// The largest frame written: well under the server's 128 KiB limit.
pub const MAX_FRAME: usize = 64 * 1024;

/// A WebSocket carrying a byte stream in binary messages.
#[derive(Debug)]
pub struct ByteStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last message.
    unread: Bytes,
    eof: bool,
}

impl<S> ByteStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            unread: Bytes::new(),
            eof: false,
        }
    }
}

fn io_error(error: Error) -> io::Error {
    match error {
        Error::Io(e) => e,
        Error::ConnectionClosed | Error::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread[..n]);
                self.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(data))) => self.unread = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message where only binary ones carry RFB",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // Proxmox VE ends a console by closing the connection,
                // without a close frame: that is its end of stream.
                Some(Err(
                    Error::ConnectionClosed
                    | Error::AlreadyClosed
                    | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                )) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(io_error)?;
        let n = buf.len().min(MAX_FRAME);
        self.ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.ws.poll_close_unpin(cx)) {
            Ok(()) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (ByteStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        (ByteStream::new(client), server)
    }

    #[tokio::test]
    async fn reads_messages_as_bytes_and_answers_pings() {
        let (mut stream, mut server) = pair().await;
        server
            .send(Message::Binary(b"RFB 003"[..].into()))
            .await
            .unwrap();
        server.send(Message::Ping(b"hi"[..].into())).await.unwrap();
        server
            .send(Message::Binary(b".008\n"[..].into()))
            .await
            .unwrap();
        let mut version = [0u8; 12];
        stream.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, b"RFB 003.008\n");
        // The pong went out with the reads.
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::Pong(b"hi"[..].into())
        );
    }

    #[tokio::test]
    async fn writes_are_binary_frames_of_bounded_size() {
        let (mut stream, mut server) = pair().await;
        let data: Vec<u8> = (0..MAX_FRAME * 2 + 10).map(|i| i as u8).collect();
        stream.write_all(&data).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < data.len() {
            match server.next().await.unwrap().unwrap() {
                Message::Binary(frame) => {
                    assert!(frame.len() <= MAX_FRAME);
                    got.extend_from_slice(&frame);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_close_or_a_dropped_connection_is_end_of_stream() {
        let (mut stream, mut server) = pair().await;
        server
            .send(Message::Binary(b"bye"[..].into()))
            .await
            .unwrap();
        server.close(None).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");

        let (mut stream, server) = pair().await;
        drop(server);
        assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn shutdown_sends_a_close_frame() {
        let (mut stream, mut server) = pair().await;
        stream.shutdown().await.unwrap();
        assert!(matches!(
            server.next().await.unwrap().unwrap(),
            Message::Close(_)
        ));
    }

    #[tokio::test]
    async fn text_is_not_rfb() {
        let (mut stream, mut server) = pair().await;
        server.send(Message::Text("RFB".into())).await.unwrap();
        let error = stream.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
