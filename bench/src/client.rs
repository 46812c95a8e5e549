//! The viewer side: a WebSocket client for the proxies, raw TCP for the relay
//! (socat) and for the direct baseline, each optionally over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::target;

/// A byte stream: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How the client speaks to a contender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// WebSocket, offering the `binary` subprotocol as noVNC does, at this path.
    WebSocket { path: String },
    /// Plain bytes.
    Raw,
}

/// An open connection through a contender.
pub enum Link {
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
    Raw(Box<dyn Io>, Vec<u8>),
}

/// Connection facts for the report.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    pub cipher_suite: Option<String>,
    pub subprotocol: Option<String>,
}

/// Gives up on anything that takes this long: a stuck contender fails its round
/// instead of hanging the run.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Connects to `addr`, over TLS when `tls` is given, and speaks `protocol`.
pub async fn connect(
    addr: SocketAddr,
    protocol: &Protocol,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Link, Negotiated)> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut negotiated = Negotiated::default();
    let io: Box<dyn Io> = match tls {
        Some(config) => {
            let stream = TlsConnector::from(config.clone())
                .connect(ServerName::try_from("localhost")?, tcp)
                .await
                .context("TLS handshake failed")?;
            negotiated.cipher_suite = stream
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            Box::new(stream)
        }
        None => Box::new(tcp),
    };
    match protocol {
        Protocol::Raw => Ok((Link::Raw(io, vec![0u8; 256 * 1024]), negotiated)),
        Protocol::WebSocket { path } => {
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            let mut request =
                format!("{scheme}://localhost:{}{path}", addr.port()).into_client_request()?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "binary".parse()?);
            let config = WebSocketConfig::default()
                .max_message_size(Some(64 << 20))
                .max_frame_size(Some(64 << 20))
                .read_buffer_size(256 * 1024);
            let (ws, response) = client_async_with_config(request, io, Some(config))
                .await
                .context("WebSocket handshake failed")?;
            negotiated.subprotocol = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((Link::Ws(Box::new(ws)), negotiated))
        }
    }
}

impl Link {
    /// Sends one message (one WebSocket message, or one write).
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Link::Ws(ws) => {
                ws.send(Message::Binary(Bytes::copy_from_slice(data)))
                    .await?
            }
            Link::Raw(io, _) => {
                io.write_all(data).await?;
                io.flush().await?;
            }
        }
        Ok(())
    }

    /// Receives whatever comes next and says how many bytes; 0 at the end.
    pub async fn receive(&mut self) -> Result<usize> {
        match self {
            Link::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Binary(data))) => return Ok(data.len()),
                    Some(Ok(Message::Text(_))) => bail!("unexpected text message"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            },
            Link::Raw(io, buf) => Ok(io.read(buf).await?),
        }
    }

    /// Receives until `n` bytes have come.
    pub async fn receive_exactly(&mut self, n: u64) -> Result<()> {
        let mut got = 0u64;
        while got < n {
            match self.receive().await? {
                0 => bail!("the connection ended after {got} of {n} bytes"),
                k => got += k as u64,
            }
        }
        Ok(())
    }

    /// Closes politely, not waiting long.
    pub async fn close(self) {
        let close = async {
            match self {
                Link::Ws(mut ws) => {
                    let _ = WebSocketStream::close(&mut ws, None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
                Link::Raw(mut io, _) => {
                    let _ = io.shutdown().await;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
    }
}

/// Asks the bulk source for `bytes` and receives them all; the time from the
/// request to the last byte.
pub async fn bulk(link: &mut Link, bytes: u64) -> Result<Duration> {
    let started = Instant::now();
    link.send(&target::bulk_request(bytes)).await?;
    tokio::time::timeout(DEADLINE, link.receive_exactly(bytes))
        .await
        .context("bulk transfer timed out")??;
    Ok(started.elapsed())
}

/// A 10-byte input event, as a viewer sends per key press.
pub const EVENT: [u8; 10] = [4, 1, 0, 0, 0, 0, 0xff, 0x0d, 0, 0];

/// Switches the target of a new connection to echo.
pub async fn start_echo(link: &mut Link) -> Result<()> {
    link.send(&[target::ECHO]).await
}

/// Sends `count` events one at a time, each after the previous one's echo;
/// their round trips in nanoseconds.
pub async fn round_trips(link: &mut Link, count: usize) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(count);
    let run = async {
        for _ in 0..count {
            let started = Instant::now();
            link.send(&EVENT).await?;
            link.receive_exactly(EVENT.len() as u64).await?;
            samples.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .context("round trips timed out")??;
    Ok(samples)
}
