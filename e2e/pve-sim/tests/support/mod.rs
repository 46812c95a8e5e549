//! Helpers for tests against a real simulator: an HTTPS client that trusts only the
//! simulator's generated CA, a WebSocket client over tokio-rustls, and a small RFB
//! client with VNC authentication (DES).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{SinkExt as _, StreamExt as _};
use porthole_pve_sim::{Config, Simulator, SimulatorHandle};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A running simulator with its state directory (removed on drop).
pub struct Sim {
    pub handle: Option<SimulatorHandle>,
    pub dir: TempDir,
    pub http: reqwest::Client,
    pub url: String,
}

impl Sim {
    pub async fn start(yaml: &str) -> Result<Sim> {
        init();
        let config = Config::from_yaml(yaml)?;
        let dir = TempDir::new()?;
        let handle = Simulator::start(config, &dir.0).await?;
        let http = http_client(handle.ca_pem())?;
        Ok(Sim {
            url: handle.url().to_string(),
            handle: Some(handle),
            dir,
            http,
        })
    }

    pub fn handle(&self) -> &SimulatorHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.url)
    }

    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Logs in; returns (ticket, CSRF token).
    pub async fn login(&self, user: &str, password: &str) -> Result<(String, String)> {
        let response = self
            .http
            .post(self.api("/access/ticket"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != StatusCode::OK {
            bail!("login failed: {status} {body}");
        }
        Ok((
            body["data"]["ticket"]
                .as_str()
                .context("ticket")?
                .to_string(),
            body["data"]["CSRFPreventionToken"]
                .as_str()
                .context("csrf")?
                .to_string(),
        ))
    }

    /// `POST .../vncproxy` with a ticket (cookie + CSRF) or a token.
    pub async fn vncproxy(
        &self,
        auth: &Auth,
        kind: &str,
        vmid: u32,
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, Value)> {
        let request = self
            .http
            .post(self.api(&format!("/nodes/pve/{kind}/{vmid}/vncproxy")))
            .form(form);
        let response = auth.apply(request, true).send().await?;
        let status = response.status();
        let text = response.text().await?;
        // Authentication failures have an empty body.
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await?;
        if !status.is_success() {
            bail!("control {path}: {status} {value}");
        }
        Ok(value)
    }

    /// Opens `vncwebsocket` over TLS; returns the WebSocket or the HTTP status
    /// the server answered instead of 101.
    pub async fn websocket(
        &self,
        auth: &Auth,
        kind: &str,
        vmid: u32,
        port: u16,
        ticket: &str,
    ) -> Result<Ws> {
        let query = encode_query(&[("port", &port.to_string()), ("vncticket", ticket)]);
        let addr = self.handle().addr();
        let url = format!("wss://{addr}/api2/json/nodes/pve/{kind}/{vmid}/vncwebsocket?{query}");
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "binary".parse()?);
        for (name, value) in auth.headers() {
            request.headers_mut().insert(name, value.parse()?);
        }
        let tls = self.tls_connect().await?;
        let (ws, response) = tokio_tungstenite::client_async(request, tls).await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if protocol != Some("binary") {
            bail!("subprotocol not echoed: {protocol:?}");
        }
        Ok(Ws {
            ws,
            buffer: Vec::new(),
        })
    }

    pub async fn tls_connect(&self) -> Result<TlsStream<tokio::net::TcpStream>> {
        let addr = self.handle().addr();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = TlsConnector::from(Arc::new(client_tls(self.handle().ca_pem())?));
        let name = rustls::pki_types::ServerName::from(addr.ip());
        Ok(connector.connect(name, tcp).await?)
    }

    /// A raw HTTP/1.1 request; returns the status line and the body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(String, String)> {
        let mut tls = self.tls_connect().await?;
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: pve\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tls.write_all(request.as_bytes()).await?;
        let mut text = Vec::new();
        let _ = tls.read_to_end(&mut text).await;
        let text = String::from_utf8_lossy(&text).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        ))
    }

    /// Waits until the task's status has an exit status.
    pub async fn task_exit(&self, auth: &Auth, upid: &str) -> Result<String> {
        let url = self.api(&format!(
            "/nodes/pve/tasks/{}/status",
            encode_component(upid)
        ));
        eventually(Duration::from_secs(30), "the task to end", || async {
            let body: Value = auth
                .apply(self.http.get(&url), false)
                .send()
                .await?
                .json()
                .await?;
            Ok(body["data"]["exitstatus"].as_str().map(str::to_string))
        })
        .await
    }

    pub async fn task_log(&self, auth: &Auth, upid: &str) -> Result<Vec<String>> {
        let url = self.api(&format!("/nodes/pve/tasks/{}/log", encode_component(upid)));
        let body: Value = auth
            .apply(self.http.get(&url), false)
            .send()
            .await?
            .json()
            .await?;
        Ok(body["data"]
            .as_array()
            .context("log")?
            .iter()
            .filter_map(|l| l["t"].as_str().map(str::to_string))
            .collect())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Dropping the handle kills its QEMU children (kill_on_drop).
        self.handle.take();
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Cookie `PVEAuthCookie` plus the CSRF token for non-GET requests.
    Ticket { ticket: String, csrf: String },
    /// `Authorization: PVEAPIToken=user@realm!name=secret`.
    Token(String),
}

impl Auth {
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Auth::Ticket { ticket, .. } => {
                vec![(
                    "cookie",
                    format!("PVEAuthCookie={}", encode_component(ticket)),
                )]
            }
            Auth::Token(token) => vec![("authorization", format!("PVEAPIToken={token}"))],
        }
    }

    pub fn apply(
        &self,
        mut request: reqwest::RequestBuilder,
        csrf: bool,
    ) -> reqwest::RequestBuilder {
        for (name, value) in self.headers() {
            request = request.header(name, value);
        }
        if let (Auth::Ticket { csrf: token, .. }, true) = (self, csrf) {
            request = request.header("CSRFPreventionToken", token);
        }
        request
    }
}

/// A WebSocket carrying RFB, read as a byte stream.
pub struct Ws {
    pub ws: WebSocketStream<TlsStream<tokio::net::TcpStream>>,
    buffer: Vec<u8>,
}

impl Ws {
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buffer.len() < n {
            match self.ws.next().await {
                Some(Ok(Message::Binary(data))) => self.buffer.extend_from_slice(&data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => bail!("unexpected message {other:?}"),
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => bail!("websocket closed"),
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.ws.send(Message::Binary(bytes.to_vec().into())).await?;
        Ok(())
    }

    /// Whether the server ends the stream without sending RFB data.
    pub async fn closes_without_data(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(15), self.ws.next()).await,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
        )
    }
}

/// The RFB handshake with VNC authentication; returns (width, height) or the
/// server's failure.
pub async fn rfb_handshake(ws: &mut Ws, password: &str) -> Result<(u16, u16)> {
    let version = ws.read_exact(12).await?;
    if !version.starts_with(b"RFB 003.") {
        bail!("not RFB: {version:?}");
    }
    ws.send(b"RFB 003.008\n").await?;
    let count = ws.read_exact(1).await?[0] as usize;
    if count == 0 {
        bail!("server refused the connection");
    }
    let types = ws.read_exact(count).await?;
    if !types.contains(&2) {
        bail!("no VNC authentication offered: {types:?}");
    }
    ws.send(&[2]).await?;
    let challenge: [u8; 16] = ws.read_exact(16).await?.try_into().expect("16 bytes");
    ws.send(&des_response(password.as_bytes(), &challenge))
        .await?;
    let result = ws.read_exact(4).await?;
    if result != [0, 0, 0, 0] {
        let len = u32::from_be_bytes(ws.read_exact(4).await?.try_into().expect("4")) as usize;
        let reason = ws.read_exact(len).await?;
        bail!(
            "VNC authentication failed: {}",
            String::from_utf8_lossy(&reason)
        );
    }
    ws.send(&[1]).await?; // ClientInit, shared
    let init = ws.read_exact(24).await?;
    let width = u16::from_be_bytes([init[0], init[1]]);
    let height = u16::from_be_bytes([init[2], init[3]]);
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    ws.read_exact(name_len).await?;
    // 32 bpp true colour, little endian.
    let set_pixel_format = [
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ];
    ws.send(&set_pixel_format).await?;
    ws.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await?; // SetEncodings: raw only
    Ok((width, height))
}

/// Requests full framebuffer updates until one has a non-zero pixel.
pub async fn wait_for_nonzero_pixels(ws: &mut Ws, width: u16, height: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        ws.send(&request).await?;
        let mut nonzero = false;
        loop {
            let kind = ws.read_exact(1).await?[0];
            match kind {
                0 => {
                    let head = ws.read_exact(3).await?;
                    let rects = u16::from_be_bytes([head[1], head[2]]);
                    for _ in 0..rects {
                        let rect = ws.read_exact(12).await?;
                        let w = u16::from_be_bytes([rect[4], rect[5]]) as usize;
                        let h = u16::from_be_bytes([rect[6], rect[7]]) as usize;
                        let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
                        if encoding != 0 {
                            bail!("unexpected encoding {encoding}");
                        }
                        let pixels = ws.read_exact(w * h * 4).await?;
                        nonzero |= pixels.chunks(4).any(|p| p[..3].iter().any(|&b| b != 0));
                    }
                    break;
                }
                2 => {}
                3 => {
                    let head = ws.read_exact(7).await?;
                    let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
                    ws.read_exact(len).await?;
                }
                other => bail!("unexpected server message {other}"),
            }
        }
        if nonzero {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the screen stayed black")
}

/// VNC authentication: DES-ECB over the challenge, keyed with the password's first
/// 8 bytes (zero-padded), each byte bit-reversed.
pub fn des_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    use des::Des;
    use des::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&Array::from(key));
    let mut out = *challenge;
    for half in out.chunks_exact_mut(8) {
        let mut block = Array::<u8, _>::try_from(&*half).expect("8 bytes");
        cipher.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    out
}

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client_tls(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der = pem_to_der(ca_pem)?;
    roots.add(rustls::pki_types::CertificateDer::from(der))?;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// An HTTPS client that trusts exactly the simulator's CA.
pub fn http_client(ca_pem: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(ca_pem)?)
        .build()?)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// Percent-encodes everything but unreserved characters.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A short state directory (unix socket paths are limited to 107 bytes).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("pvesim-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
