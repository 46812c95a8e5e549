//! Opening a console for one viewer in pod mode: reach the VNC server (dial
//! it, or have Proxmox VE mint a console and open its WebSocket), finish its
//! security handshake with the password, then give the browser a handshake of
//! its own that needs no password. What follows is relayed.
//!
//! Both kinds of upstream end up as one byte stream ([`Io`]): a TCP
//! connection, or Proxmox VE's `vncwebsocket` seen through
//! [`pve::websocket::ByteStream`]. So the RFB handshake below and the whole
//! relay (bounded buffers, input parsing, metrics, teardown) are the same
//! code for both; only reaching the server and naming its failures differ.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use porthole_api::contract::UpstreamFailure;

use crate::metrics::{Direction, Metrics};
use crate::pve;
use crate::recording::{self, Recorder};
use crate::rfb::vnc_auth::VncPassword;
use crate::rfb::{Step, browser, upstream};

/// Why a console did not open. Upstream variants end the session, so their
/// text becomes the `upstream-failed` detail: readable, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the VNC server at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out connecting to the VNC server at {0}")]
    ConnectTimeout(String),
    #[error("{0}")]
    UpstreamHandshake(#[from] upstream::Error),
    #[error("the VNC server at {addr} dropped the connection during the RFB handshake: {source}")]
    UpstreamIo { addr: String, source: io::Error },
    #[error("the VNC server at {0} did not finish the RFB handshake in time")]
    UpstreamTimeout(String),
    #[error("{0}")]
    Proxmox(#[from] pve::Error),
    #[error("{0}")]
    BrowserHandshake(#[from] browser::Error),
    #[error("the viewer's WebSocket failed during the RFB handshake: {0}")]
    Browser(#[from] tungstenite::Error),
    #[error("the viewer left during the RFB handshake")]
    BrowserLeft,
    #[error("the viewer did not finish the RFB handshake in time")]
    BrowserTimeout,
    /// The session is recorded and its recording cannot be written: nothing
    /// more is relayed.
    #[error("{0}")]
    Recording(#[from] recording::WriteError),
}

impl Error {
    /// How the operator should classify an upstream failure.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            Error::Connect { .. } | Error::ConnectTimeout(_) => UpstreamFailure::Unreachable,
            Error::UpstreamHandshake(
                upstream::Error::AuthFailed(_) | upstream::Error::PasswordRequired,
            ) => UpstreamFailure::VncAuthentication,
            Error::Proxmox(e) => e.failure(),
            _ => UpstreamFailure::Protocol,
        }
    }

    /// Whether the hypervisor cannot serve a console *now* but may soon: its
    /// API is down or does not answer. The viewer is refused; the session
    /// stays open for the next attempt. (A VNC server that refuses its own
    /// port is a stopped VM, which is not expected back.)
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Proxmox(e) if e.is_transient())
    }

    /// Whether the VNC server is at fault (the session cannot work), rather than
    /// this one viewer.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::ConnectTimeout(_)
                | Error::UpstreamHandshake(_)
                | Error::UpstreamIo { .. }
                | Error::UpstreamTimeout(_)
                | Error::Proxmox(_)
        )
    }
}

/// Where a session's consoles come from.
#[derive(Debug)]
pub enum Upstream {
    Vnc(Vnc),
    Proxmox(Box<pve::Client>),
}

/// Where and how to reach a VNC server.
#[derive(Debug, Clone)]
pub struct Vnc {
    /// `HOST:PORT`.
    pub addr: String,
    pub password: Option<VncPassword>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// A byte stream to a VNC server, whatever carries it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A console ready to relay.
pub struct Opened {
    pub upstream: Box<dyn Io>,
    /// Browser bytes read past its handshake (ClientInit, usually).
    pub pending: BytesMut,
}

/// Opens the console: the VNC server first, so a viewer never sees a console
/// that cannot work, then the browser. With a `recorder`, the browser's side
/// of the handshake is recorded as it happens, so the recording is the RFB
/// stream the viewer had (security type None: it replays without a password).
pub async fn open<S>(
    ws: &mut WebSocketStream<S>,
    target: &Upstream,
    handshake_timeout: Duration,
    metrics: &Metrics,
    recorder: Option<&Recorder>,
) -> Result<Opened, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (upstream, leftover) = match target {
        Upstream::Vnc(vnc) => open_vnc(vnc).await?,
        Upstream::Proxmox(client) => open_proxmox(client, handshake_timeout, metrics)
            .await
            .inspect_err(|e| metrics.pve_failed(e.failure()))?,
    };
    let pending = tokio::time::timeout(handshake_timeout, browser_handshake(ws, recorder))
        .await
        .map_err(|_| Error::BrowserTimeout)??;
    // A server should wait for ClientInit, but pass on anything it sent early.
    if !leftover.is_empty() {
        let leftover = leftover.freeze();
        ws.send(Message::Binary(leftover.clone())).await?;
        record(recorder, Direction::Downstream, &leftover)?;
    }
    Ok(Opened { upstream, pending })
}

fn record(recorder: Option<&Recorder>, direction: Direction, data: &[u8]) -> Result<(), Error> {
    match recorder {
        Some(recorder) => Ok(recorder.frame(direction, data)?),
        None => Ok(()),
    }
}

async fn open_vnc(target: &Vnc) -> Result<(Box<dyn Io>, BytesMut), Error> {
    let mut stream = tokio::time::timeout(target.connect_timeout, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| Error::ConnectTimeout(target.addr.clone()))?
        .map_err(|source| Error::Connect {
            addr: target.addr.clone(),
            source,
        })?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
    }
    crate::liveness::watch_or_warn(&stream);
    let leftover = tokio::time::timeout(
        target.handshake_timeout,
        upstream_handshake(&mut stream, target.password.clone()),
    )
    .await
    .map_err(|_| Error::UpstreamTimeout(target.addr.clone()))?
    .map_err(|failure| match failure {
        Failure::Rfb(e) => Error::UpstreamHandshake(e),
        Failure::Io { source, .. } => Error::UpstreamIo {
            addr: target.addr.clone(),
            source,
        },
    })?;
    Ok((Box::new(stream), leftover))
}

/// Mints and opens a Proxmox VE console, then answers its VNC authentication
/// with the password minted with it. Failures say what they mean for
/// Proxmox VE: a rejected password is a rejected ticket; a console that
/// closes before its VNC server speaks is explained by its task (a stopped
/// VM, a listener that timed out).
async fn open_proxmox(
    client: &pve::Client,
    handshake_timeout: Duration,
    metrics: &Metrics,
) -> Result<(Box<dyn Io>, BytesMut), pve::Error> {
    let mut console = client.open(metrics).await?;
    let handshake = tokio::time::timeout(
        handshake_timeout,
        upstream_handshake(&mut console.stream, Some(console.password.clone())),
    )
    .await
    .map_err(|_| {
        pve::Error::Rfb(format!(
            "the VNC server did not finish the RFB handshake within {handshake_timeout:?}"
        ))
    })?;
    match handshake {
        Ok(leftover) => Ok((Box::new(console.stream), leftover)),
        Err(Failure::Rfb(upstream::Error::AuthFailed(reason))) => {
            Err(pve::Error::VncAuthentication(reason))
        }
        Err(Failure::Io { received: 0, .. }) => {
            Err(client.closed_at_once(console.upid.as_deref()).await)
        }
        Err(other) => Err(pve::Error::Rfb(other.to_string())),
    }
}

/// How the RFB handshake with the VNC server failed.
#[derive(Debug)]
enum Failure {
    Rfb(upstream::Error),
    /// The stream failed or ended after `received` bytes.
    Io {
        source: io::Error,
        received: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Rfb(e) => e.fmt(f),
            Failure::Io { source, .. } => {
                write!(f, "the connection failed during the handshake: {source}")
            }
        }
    }
}

async fn upstream_handshake<S>(
    stream: &mut S,
    password: Option<VncPassword>,
) -> Result<BytesMut, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut handshake = upstream::Handshake::new(password);
    let mut buf = BytesMut::with_capacity(1024);
    let mut received = 0;
    let io = |source, received| Failure::Io { source, received };
    loop {
        match handshake.step(&mut buf).map_err(Failure::Rfb)? {
            Step::Send(bytes) => {
                stream
                    .write_all(&bytes)
                    .await
                    .map_err(|e| io(e, received))?;
                // A WebSocket or TLS upstream buffers until flushed.
                stream.flush().await.map_err(|e| io(e, received))?;
            }
            Step::Done => {
                tracing::debug!(
                    version = ?handshake.version(),
                    security = ?handshake.security(),
                    "VNC server handshake done"
                );
                return Ok(buf);
            }
            Step::NeedMore => match stream.read_buf(&mut buf).await {
                Ok(0) => return Err(io(io::ErrorKind::UnexpectedEof.into(), received)),
                Ok(n) => received += n,
                Err(e) => return Err(io(e, received)),
            },
        }
    }
}

/// The browser's half of the handshake. What the browser sent is recorded as
/// the handshake consumes it; what it reads past its handshake (ClientInit)
/// is left to the relay, which records it when passing it on.
async fn browser_handshake<S>(
    ws: &mut WebSocketStream<S>,
    recorder: Option<&Recorder>,
) -> Result<BytesMut, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting = Bytes::from_static(browser::Handshake::GREETING);
    ws.send(Message::Binary(greeting.clone())).await?;
    record(recorder, Direction::Downstream, &greeting)?;
    let mut handshake = browser::Handshake::default();
    let mut buf = BytesMut::new();
    loop {
        let unread = recorder.map(|_| buf.clone());
        let step = handshake.step(&mut buf)?;
        // A step consumes a prefix of what the browser sent.
        if let Some(unread) = unread {
            let consumed = unread.len() - buf.len();
            if consumed > 0 {
                record(recorder, Direction::Upstream, &unread[..consumed])?;
            }
        }
        match step {
            Step::Send(bytes) => {
                let bytes = Bytes::from(bytes);
                ws.send(Message::Binary(bytes.clone())).await?;
                record(recorder, Direction::Downstream, &bytes)?;
            }
            Step::Done => return Ok(buf),
            Step::NeedMore => match ws.next().await.transpose()? {
                Some(Message::Binary(data)) => buf.extend_from_slice(&data),
                Some(Message::Close(_)) | None => return Err(Error::BrowserLeft),
                Some(_) => {}
            },
        }
    }
}
