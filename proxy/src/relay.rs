//! Pumps bytes between a browser's WebSocket and a VNC server's stream.
//!
//! Each direction is its own loop with a bounded buffer, and it only reads more
//! once the previous chunk is written, so a slow side slows the other instead of
//! filling memory. Both loops run in one `select!`: whichever ends first (or a
//! stop from outside) drops the other, so neither side outlives its peer.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::metrics::Direction;
use crate::rfb::client_messages::{self, Input, Parser};

/// How much the proxy reads from the VNC server before sending it on.
pub const CHUNK: usize = 64 * 1024;

/// What the relay reports as it goes; the session's idle timer and the metrics
/// listen here.
pub trait Observer: Sync {
    fn relayed(&self, _direction: Direction, _data: &[u8]) {}
    fn input(&self, _input: Input) {}
}

/// Why a relay ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("the viewer left")]
    ViewerLeft,
    #[error("the VNC server closed the connection")]
    UpstreamClosed,
    #[error("stopped")]
    Stopped,
    #[error("viewer connection failed: {0}")]
    Viewer(#[from] tungstenite::Error),
    #[error("the viewer sent a text message; only binary is relayed")]
    TextMessage,
    #[error("the viewer sent an unusable RFB message: {0}")]
    Protocol(#[from] client_messages::Error),
    #[error("VNC server connection failed: {0}")]
    Upstream(#[from] io::Error),
}

impl End {
    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            End::ViewerLeft => "viewer-left",
            End::UpstreamClosed => "upstream-closed",
            End::Stopped => "stopped",
            End::Viewer(_) | End::TextMessage => "viewer-error",
            End::Protocol(_) => "protocol-error",
            End::Upstream(_) => "upstream-error",
        }
    }
}

/// Relays until one side ends or `stop` fires, and returns why. `pending` holds
/// browser bytes already read (during a handshake). With a `parser`, browser
/// bytes are framed as RFB client messages; without, they pass untouched.
///
/// After `ping_every` without anything sent to the browser (a still screen
/// sends nothing), it gets a WebSocket ping: an Ingress or load balancer
/// between them would otherwise close the idle connection (nginx after 60 s).
/// Zero sends none.
pub async fn relay<S, U>(
    ws: &mut WebSocketStream<S>,
    upstream: U,
    pending: BytesMut,
    parser: Option<Parser>,
    observer: &impl Observer,
    stop: &CancellationToken,
    ping_every: Duration,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite,
{
    let (mut up_read, mut up_write) = tokio::io::split(upstream);
    let (mut ws_write, mut ws_read) = ws.split();
    let to_upstream = async {
        let mut filter = Filter {
            parser,
            pending,
            out: BytesMut::new(),
        };
        // Bytes left over from the handshake go first.
        filter.forward(&mut up_write, &[], observer).await?;
        while let Some(message) = ws_read.next().await {
            match message? {
                Message::Binary(data) => filter.forward(&mut up_write, &data, observer).await?,
                Message::Text(_) => return Err(End::TextMessage),
                Message::Close(_) => return Ok(End::ViewerLeft),
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        Ok(End::ViewerLeft)
    };
    let to_browser = async {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut keepalive = Keepalive::new(ping_every);
        loop {
            buf.reserve(CHUNK);
            tokio::select! {
                // Cancel-safe: a read that loses the race has read nothing.
                read = up_read.read_buf(&mut buf) => {
                    if read? == 0 {
                        return Ok::<_, End>(End::UpstreamClosed);
                    }
                    let chunk = buf.split().freeze();
                    ws_write.send(Message::Binary(chunk.clone())).await?;
                    // After sending, so a recording holds what the viewer was given.
                    observer.relayed(Direction::Downstream, &chunk);
                    keepalive.sent();
                }
                () = keepalive.due() => {
                    ws_write.send(Message::Ping(Bytes::new())).await?;
                    keepalive.sent();
                }
            }
        }
    };
    let end = tokio::select! {
        end = to_upstream => end.unwrap_or_else(|e| e),
        end = to_browser => end.unwrap_or_else(|e| e),
        () = stop.cancelled() => End::Stopped,
    };
    // Say goodbye to a server still there: a FIN for TCP, a close frame for
    // a WebSocket. One that stopped reading does not hold up the end.
    if !matches!(end, End::UpstreamClosed | End::Upstream(_)) {
        let _ = tokio::time::timeout(SHUTDOWN, up_write.shutdown()).await;
    }
    end
}

/// When the browser is due a ping: `every` after the last thing sent to it.
struct Keepalive {
    every: Duration,
    next: Instant,
}

impl Keepalive {
    fn new(every: Duration) -> Self {
        Self {
            every,
            next: Instant::now() + every,
        }
    }

    fn sent(&mut self) {
        self.next = Instant::now() + self.every;
    }

    /// Resolves when a ping is due; never, with pings off.
    async fn due(&self) {
        if self.every.is_zero() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next).await;
    }
}

/// How long the upstream gets to take its goodbye.
const SHUTDOWN: Duration = Duration::from_secs(1);

/// The browser-to-server direction's state between messages.
struct Filter {
    parser: Option<Parser>,
    pending: BytesMut,
    out: BytesMut,
}

impl Filter {
    async fn forward<W: AsyncWrite + Unpin>(
        &mut self,
        upstream: &mut W,
        data: &[u8],
        observer: &impl Observer,
    ) -> Result<(), End> {
        let bytes: &[u8] = match &mut self.parser {
            None => {
                if !self.pending.is_empty() {
                    self.pending.extend_from_slice(data);
                    self.out = self.pending.split();
                    &self.out
                } else {
                    data
                }
            }
            Some(parser) => {
                self.pending.extend_from_slice(data);
                let input = parser.feed(&mut self.pending, &mut self.out)?;
                if input.any() {
                    observer.input(input);
                }
                &self.out
            }
        };
        if !bytes.is_empty() {
            upstream.write_all(bytes).await?;
            // A TLS upstream buffers until flushed.
            upstream.flush().await?;
            observer.relayed(Direction::Upstream, bytes);
        }
        self.out.clear();
        Ok(())
    }
}
