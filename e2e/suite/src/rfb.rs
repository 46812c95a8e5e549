//! A small RFB client over the console WebSocket, doing what noVNC does: offer the
//! token as a subprotocol, take security type None, and read the framebuffer.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::{SinkExt, StreamExt};
use porthole_api::contract::{BINARY_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX, WEBSOCKET_PATH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

/// A console URL split into where to connect and the token from its fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleUrl {
    pub authority: String,
    /// The page's path, `/` or a prefix such as `/ns/name/`; the WebSocket is
    /// beside it.
    pub path: String,
    pub token: String,
}

impl ConsoleUrl {
    /// Parses `http://host[:port]/...#token=T` as `status.url` publishes it.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .context("console URL is not http://")?;
        let (authority, rest) = rest.split_once('/').context("console URL has no path")?;
        let (path, fragment) = rest
            .split_once('#')
            .context("console URL has no fragment")?;
        let token = fragment
            .strip_prefix("token=")
            .context("fragment carries no token")?;
        Ok(ConsoleUrl {
            authority: authority.to_string(),
            path: format!("/{path}"),
            token: token.to_string(),
        })
    }

    /// `host:port` to dial (port 80 when the URL names none).
    pub fn socket_addr(&self) -> String {
        match self.authority.rsplit_once(':') {
            Some((_, port)) if !port.ends_with(']') => self.authority.clone(),
            _ => format!("{}:80", self.authority),
        }
    }

    pub fn websocket_url(&self) -> String {
        format!("ws://{}{}{}", self.authority, self.path, WEBSOCKET_PATH)
    }
}

/// Why a WebSocket connection was not established.
#[derive(Debug)]
pub enum Refused {
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    Other(anyhow::Error),
}

pub struct Console {
    ws: WebSocketStream<TcpStream>,
    pending: Vec<u8>,
    /// Every byte the server sent, so tests can check what a viewer received.
    received: Vec<u8>,
}

/// Opens the console WebSocket, offering `token` (if any) as the bearer subprotocol.
pub async fn open(url: &ConsoleUrl, token: Option<&str>) -> Result<Console, Refused> {
    let mut request = url
        .websocket_url()
        .into_client_request()
        .map_err(|e| Refused::Other(e.into()))?;
    let mut protocols = vec![BINARY_SUBPROTOCOL.to_string()];
    if let Some(token) = token {
        protocols.push(format!("{TOKEN_SUBPROTOCOL_PREFIX}{token}"));
    }
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocols
            .join(", ")
            .parse()
            .map_err(|e: http::header::InvalidHeaderValue| Refused::Other(e.into()))?,
    );
    let stream = TcpStream::connect(url.socket_addr())
        .await
        .map_err(|e| Refused::Other(e.into()))?;
    match client_async(request, stream).await {
        Ok((ws, response)) => {
            let chosen = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok());
            if chosen != Some(BINARY_SUBPROTOCOL) {
                return Err(Refused::Other(anyhow::anyhow!(
                    "server chose subprotocol {chosen:?}, not binary"
                )));
            }
            Ok(Console {
                ws,
                pending: Vec::new(),
                received: Vec::new(),
            })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(Refused::Status(response.status().as_u16()))
        }
        Err(error) => Err(Refused::Other(error.into())),
    }
}

/// Opens the console at a session's `status.url` as its viewer would: the URL's
/// own token, the handshake, and a first non-black frame.
pub async fn open_viewer(status_url: &str) -> Result<Console> {
    let url = ConsoleUrl::parse(status_url)?;
    let mut console = open(&url, Some(&url.token))
        .await
        .map_err(|refused| anyhow::anyhow!("the console refused its own token: {refused:?}"))?;
    let init = console.handshake().await?;
    console
        .wait_for_nonzero_frame(&init, Duration::from_secs(30))
        .await?;
    Ok(console)
}

/// What the server said about its framebuffer in ServerInit.
#[derive(Debug, Clone)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub bits_per_pixel: u8,
    pub name: String,
}

impl Console {
    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.pending.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .context("timed out reading from the console")?
                .context("console closed")??;
            match message {
                Message::Binary(bytes) => {
                    self.received.extend_from_slice(&bytes);
                    self.pending.extend_from_slice(&bytes);
                }
                Message::Close(frame) => bail!("console closed: {frame:?}"),
                _ => {}
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// RFB 3.8 handshake taking security type None, then ClientInit/ServerInit.
    pub async fn handshake(&mut self) -> Result<ServerInit> {
        let version = self.read_exact(12).await?;
        if !version.starts_with(b"RFB 003.") {
            bail!("not an RFB server: {:?}", String::from_utf8_lossy(&version));
        }
        self.send(b"RFB 003.008\n".to_vec()).await?;
        let count = self.read_exact(1).await?[0] as usize;
        if count == 0 {
            let len =
                u32::from_be_bytes(self.read_exact(4).await?.try_into().expect("4 bytes")) as usize;
            let reason = self.read_exact(len).await?;
            bail!("server refused: {}", String::from_utf8_lossy(&reason));
        }
        let types = self.read_exact(count).await?;
        if types != [1] {
            bail!("the browser must be offered exactly security type None (1), got {types:?}");
        }
        self.send(vec![1]).await?;
        let result = self.read_exact(4).await?;
        if result != [0, 0, 0, 0] {
            bail!("security handshake failed: {result:?}");
        }
        self.send(vec![1]).await?; // ClientInit, shared
        let init = self.read_exact(24).await?;
        let name_len = u32::from_be_bytes(init[20..24].try_into().expect("4 bytes")) as usize;
        let name = String::from_utf8_lossy(&self.read_exact(name_len).await?).into_owned();
        Ok(ServerInit {
            width: u16::from_be_bytes([init[0], init[1]]),
            height: u16::from_be_bytes([init[2], init[3]]),
            bits_per_pixel: init[4],
            name,
        })
    }

    /// Requests full frames (raw encoding) until one has a non-zero pixel;
    /// returns how many non-zero bytes it had.
    pub async fn wait_for_nonzero_frame(
        &mut self,
        init: &ServerInit,
        timeout: Duration,
    ) -> Result<usize> {
        // SetEncodings: Raw only, so every rectangle is plain pixels.
        self.send(vec![2, 0, 0, 1, 0, 0, 0, 0]).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let [w0, w1] = init.width.to_be_bytes();
            let [h0, h1] = init.height.to_be_bytes();
            self.send(vec![3, 0, 0, 0, 0, 0, w0, w1, h0, h1]).await?;
            let nonzero = self.read_framebuffer_update(init).await?;
            if nonzero > 0 {
                return Ok(nonzero);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the framebuffer stayed black for {timeout:?}");
            }
        }
    }

    /// Reads server messages up to and including one FramebufferUpdate.
    async fn read_framebuffer_update(&mut self, init: &ServerInit) -> Result<usize> {
        loop {
            match self.read_exact(1).await?[0] {
                0 => {
                    let header = self.read_exact(3).await?;
                    let rects = u16::from_be_bytes([header[1], header[2]]);
                    let mut nonzero = 0;
                    for _ in 0..rects {
                        let rect = self.read_exact(12).await?;
                        let w = u16::from_be_bytes([rect[4], rect[5]]) as usize;
                        let h = u16::from_be_bytes([rect[6], rect[7]]) as usize;
                        let encoding = i32::from_be_bytes(rect[8..12].try_into().expect("4 bytes"));
                        if encoding != 0 {
                            bail!("asked for raw encoding only, got encoding {encoding}");
                        }
                        let pixels = self
                            .read_exact(w * h * usize::from(init.bits_per_pixel / 8))
                            .await?;
                        nonzero += pixels.iter().filter(|b| **b != 0).count();
                    }
                    return Ok(nonzero);
                }
                1 => {
                    let header = self.read_exact(5).await?;
                    let colours = u16::from_be_bytes([header[3], header[4]]) as usize;
                    self.read_exact(colours * 6).await?;
                }
                2 => {} // Bell
                3 => {
                    let header = self.read_exact(7).await?;
                    let len =
                        u32::from_be_bytes(header[3..7].try_into().expect("4 bytes")) as usize;
                    self.read_exact(len).await?;
                }
                other => bail!("unexpected server message type {other}"),
            }
        }
    }

    /// Everything the server has sent so far.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Presses and releases a key (an RFB KeyEvent pair).
    pub async fn press_key(&mut self, keysym: u32) -> Result<()> {
        for down in [1u8, 0] {
            let mut event = vec![4, down, 0, 0];
            event.extend_from_slice(&keysym.to_be_bytes());
            self.send(event).await?;
        }
        Ok(())
    }

    /// Clicks the left button at (x, y) (an RFB PointerEvent pair).
    pub async fn click(&mut self, x: u16, y: u16) -> Result<()> {
        for buttons in [1u8, 0] {
            let mut event = vec![5, buttons];
            event.extend_from_slice(&x.to_be_bytes());
            event.extend_from_slice(&y.to_be_bytes());
            self.send(event).await?;
        }
        Ok(())
    }

    /// Waits for the server to close the console and returns its close reason.
    pub async fn close_reason(&mut self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("timed out waiting for the console to close")?;
            match message {
                Some(Ok(Message::Close(frame))) => {
                    return Ok(frame.map(|f| f.reason.to_string()).unwrap_or_default());
                }
                Some(Ok(Message::Binary(bytes))) => self.received.extend_from_slice(&bytes),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("the console failed without a close frame: {e}"),
                None => bail!("the console ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_published_url() {
        let url = ConsoleUrl::parse("http://10.96.0.12/#token=abc_-1").unwrap();
        assert_eq!(url.authority, "10.96.0.12");
        assert_eq!(url.token, "abc_-1");
        assert_eq!(url.websocket_url(), "ws://10.96.0.12/websockify");
        let prefixed = ConsoleUrl::parse("https://h/ns/web/#token=t").ok();
        assert!(prefixed.is_none(), "only http:// is published by ClusterIP");
        let behind = ConsoleUrl::parse("http://h/ns/web/#token=t").unwrap();
        assert_eq!(behind.websocket_url(), "ws://h/ns/web/websockify");
        assert_eq!(url.socket_addr(), "10.96.0.12:80");
        assert_eq!(
            ConsoleUrl::parse("http://h:8080/#token=t")
                .unwrap()
                .socket_addr(),
            "h:8080"
        );
        assert!(ConsoleUrl::parse("http://10.96.0.12/").is_err());
    }
}
