//! Opening a console for one viewer in pod mode: dial the VNC server, finish
//! its security handshake with the session's password, then give the browser a
//! handshake of its own that needs no password. What follows is relayed.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use porthole_api::contract::UpstreamFailure;

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
    BrowserHandshake(#[from] browser::Error),
    #[error("the viewer's WebSocket failed during the RFB handshake: {0}")]
    Browser(#[from] tungstenite::Error),
    #[error("the viewer left during the RFB handshake")]
    BrowserLeft,
    #[error("the viewer did not finish the RFB handshake in time")]
    BrowserTimeout,
}

impl Error {
    /// How the operator should classify an upstream failure.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            Error::Connect { .. } | Error::ConnectTimeout(_) => UpstreamFailure::Unreachable,
            Error::UpstreamHandshake(
                upstream::Error::AuthFailed(_) | upstream::Error::PasswordRequired,
            ) => UpstreamFailure::VncAuthentication,
            _ => UpstreamFailure::Protocol,
        }
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
        )
    }
}

/// Where and how to reach the VNC server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `HOST:PORT`.
    pub addr: String,
    pub password: Option<VncPassword>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// A console ready to relay.
#[derive(Debug)]
pub struct Opened {
    pub upstream: TcpStream,
    /// Browser bytes read past its handshake (ClientInit, usually).
    pub pending: BytesMut,
}

/// Opens the console: the VNC server first, so a viewer never sees a console
/// that cannot work, then the browser.
pub async fn open<S>(ws: &mut WebSocketStream<S>, target: &Upstream) -> Result<Opened, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream =
        tokio::time::timeout(target.connect_timeout, TcpStream::connect(&target.addr))
            .await
            .map_err(|_| Error::ConnectTimeout(target.addr.clone()))?
            .map_err(|source| Error::Connect {
                addr: target.addr.clone(),
                source,
            })?;
    if let Err(e) = upstream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
    }
    let mut handshake = upstream::Handshake::new(target.password.clone());
    let leftover = tokio::time::timeout(
        target.handshake_timeout,
        upstream_handshake(&mut upstream, &mut handshake, &target.addr),
    )
    .await
    .map_err(|_| Error::UpstreamTimeout(target.addr.clone()))??;
    tracing::debug!(
        version = ?handshake.version(),
        security = ?handshake.security(),
        "VNC server handshake done"
    );

    let pending = tokio::time::timeout(target.handshake_timeout, browser_handshake(ws))
        .await
        .map_err(|_| Error::BrowserTimeout)??;
    // A server should wait for ClientInit, but pass on anything it sent early.
    if !leftover.is_empty() {
        ws.send(Message::Binary(leftover.freeze())).await?;
    }
    Ok(Opened { upstream, pending })
}

async fn upstream_handshake(
    stream: &mut TcpStream,
    handshake: &mut upstream::Handshake,
    addr: &str,
) -> Result<BytesMut, Error> {
    let io_error = |source| Error::UpstreamIo {
        addr: addr.to_string(),
        source,
    };
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match handshake.step(&mut buf)? {
            Step::Send(bytes) => stream.write_all(&bytes).await.map_err(io_error)?,
            Step::Done => return Ok(buf),
            Step::NeedMore => {
                if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                    return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
}

async fn browser_handshake<S>(ws: &mut WebSocketStream<S>) -> Result<BytesMut, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::Binary(Bytes::from_static(
        browser::Handshake::GREETING,
    )))
    .await?;
    let mut handshake = browser::Handshake::default();
    let mut buf = BytesMut::new();
    loop {
        match handshake.step(&mut buf)? {
            Step::Send(bytes) => ws.send(Message::Binary(bytes.into())).await?,
            Step::Done => return Ok(buf),
            Step::NeedMore => match ws.next().await.transpose()? {
                Some(Message::Binary(data)) => buf.extend_from_slice(&data),
                Some(Message::Close(_)) | None => return Err(Error::BrowserLeft),
                Some(_) => {}
            },
        }
    }
}
