//! Shared harness for the integration tests: a real QEMU VNC server, the real
//! proxy binary, and an RFB client speaking over a WebSocket. Every process is
//! killed when its handle drops; every wait polls a condition with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it yields a value or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on localhost (the OS picks; the tiny race is acceptable).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("porthole-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A QEMU VM with no disk (SeaBIOS paints its boot messages) and a VNC server.
pub struct Qemu {
    child: Child,
    pub vnc: SocketAddr,
    qmp: BufReader<UnixStream>,
    _dir: TempDir,
}

impl Qemu {
    pub async fn start(password: bool) -> Self {
        let dir = TempDir::new("qemu");
        let qmp_path = dir.path().join("qmp.sock");
        // QEMU takes a display number; find one whose port is free.
        let display = loop {
            let port = free_port();
            if port > 5900 {
                break port - 5900;
            }
        };
        let mut vnc_arg = format!("127.0.0.1:{display}");
        if password {
            vnc_arg.push_str(",password=on");
        }
        let log = dir.path().join("qemu.log");
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-display", "none", "-nodefaults", "-vga", "std", "-m", "64"])
            // KVM when it works, TCG otherwise.
            .args(["-machine", "accel=kvm:tcg", "-vnc", &vnc_arg])
            .arg("-qmp")
            .arg(format!("unix:{},server,nowait", qmp_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("qemu-system-x86_64 runs");
        let stream = eventually("QEMU's QMP socket", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("QEMU exited ({status}):\n{log}");
            }
            let path = qmp_path.clone();
            async move { UnixStream::connect(path).await.ok() }
        })
        .await;
        let mut qemu = Self {
            child,
            vnc: SocketAddr::from(([127, 0, 0, 1], 5900 + display)),
            qmp: BufReader::new(stream),
            _dir: dir,
        };
        qemu.qmp_read_reply().await; // the greeting
        qemu.qmp(r#"{"execute":"qmp_capabilities"}"#).await;
        let vnc = qemu.vnc;
        eventually("QEMU's VNC port", || async {
            TcpStream::connect(vnc).await.ok()
        })
        .await;
        qemu
    }

    /// Sends a QMP command and returns its reply, skipping events.
    pub async fn qmp(&mut self, command: &str) -> String {
        let stream = self.qmp.get_mut();
        stream.write_all(command.as_bytes()).await.unwrap();
        stream.write_all(b"\n").await.unwrap();
        self.qmp_read_reply().await
    }

    async fn qmp_read_reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.qmp.read_line(&mut line).await.unwrap();
            assert!(n > 0, "QMP closed");
            if !line.contains("\"event\"") {
                assert!(!line.contains("\"error\""), "QMP error: {line}");
                return line;
            }
        }
    }

    pub async fn set_vnc_password(&mut self, password: &str) {
        let reply = self
            .qmp(&format!(
                r#"{{"execute":"set_password","arguments":{{"protocol":"vnc","password":"{password}"}}}}"#
            ))
            .await;
        assert!(reply.contains("\"return\""), "set_password: {reply}");
    }

    /// How many VNC clients QEMU has now.
    pub async fn vnc_clients(&mut self) -> usize {
        let reply = self.qmp(r#"{"execute":"query-vnc"}"#).await;
        reply.matches("\"websocket\"").count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// A TCP listener that counts the connections it accepts: a VNC server that
/// must never be dialled ([`start`](Self::start)), or an echo target
/// ([`echo`](Self::echo)).
pub struct CountingListener {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    /// Accepts and closes every connection at once.
    pub async fn start() -> Self {
        Self::serve(false).await
    }

    /// Echoes every byte back.
    pub async fn echo() -> Self {
        Self::serve(true).await
    }

    async fn serve(echo: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if echo {
                    tokio::spawn(async move {
                        let (mut read, mut write) = stream.split();
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                    });
                }
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy binary in pod mode.
pub struct Proxy {
    child: Child,
    /// The console port.
    pub addr: SocketAddr,
    /// The internal port: health, metrics and the viewer report.
    pub internal: SocketAddr,
    pub token: String,
    dir: TempDir,
}

pub struct ProxyOptions<'a> {
    pub upstream: String,
    pub token: &'a str,
    pub vnc_password: Option<&'a str>,
    pub vm_name: &'a str,
    pub extra_args: &'a [&'a str],
    /// More of the operator's environment (`contract::env`).
    pub env: &'a [(&'a str, &'a str)],
}

impl Proxy {
    /// Starts the proxy and waits until it is ready.
    pub async fn start(options: ProxyOptions<'_>) -> Self {
        let proxy = Self::spawn(options);
        let addr = proxy.internal;
        eventually("the proxy to be ready", || async {
            let (status, _) = http_get(addr, "/readyz").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        proxy
    }

    /// Starts the proxy without waiting for it (it may end at once).
    pub fn spawn(options: ProxyOptions<'_>) -> Self {
        let dir = TempDir::new("proxy");
        let session_dir = dir.path().join("session");
        std::fs::create_dir_all(&session_dir).unwrap();
        std::fs::write(session_dir.join("token"), options.token).unwrap();
        if let Some(password) = options.vnc_password {
            std::fs::write(session_dir.join("vnc-password"), password).unwrap();
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let internal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
            .arg("session")
            .arg("--termination-message-path")
            .arg(dir.path().join("termination-log"))
            .args(options.extra_args)
            .env_clear()
            .env("PORTHOLE_LISTEN", addr.to_string())
            .env("PORTHOLE_INTERNAL_LISTEN", internal.to_string())
            .env("PORTHOLE_UPSTREAM", &options.upstream)
            .env("PORTHOLE_SESSION_DIR", &session_dir)
            .env("PORTHOLE_SESSION_NAMESPACE", "tests")
            .env("PORTHOLE_SESSION_NAME", "console")
            .env("PORTHOLE_VM_NAME", options.vm_name)
            .env("PORTHOLE_LOG", "debug")
            .envs(options.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary runs");
        Self {
            child,
            addr,
            internal,
            token: options.token.to_string(),
            dir,
        }
    }

    pub fn termination_message(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("termination-log")).ok()
    }

    /// Waits for the process to exit; returns its exit code and its logs.
    pub async fn exited(&mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the proxy exits")
            .unwrap();
        let mut logs = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut logs).await.unwrap();
        }
        (status.code(), logs)
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.internal, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        body
    }

    /// Opens the console WebSocket offering `protocols`.
    pub async fn websocket(
        &self,
        protocols: Option<&str>,
    ) -> Result<(WebSocketStream<TcpStream>, Response<Option<Vec<u8>>>), tungstenite::Error> {
        websocket(self.addr, "/websockify", protocols).await
    }

    /// The protocols a browser with the right token offers.
    pub fn good_protocols(&self) -> String {
        format!("binary, bearer.porthole.dev.{}", self.token)
    }
}

pub async fn websocket(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<(WebSocketStream<TcpStream>, Response<Option<Vec<u8>>>), tungstenite::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    websocket_on(stream, addr, path, protocols).await
}

/// A TCP connection to `addr` from the loopback address `from` (any of
/// 127.0.0.0/8 is this host), so tests can be several clients.
pub async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// A WebSocket on an open connection.
pub async fn websocket_on(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<(WebSocketStream<TcpStream>, Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    client_async(request, stream).await
}

/// A one-shot HTTP/1.1 GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let response = http_request(addr, path).await?;
    Ok((response.status, response.body))
}

/// An HTTP response, header names lower-cased.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A one-shot HTTP/1.1 GET.
pub async fn http_request(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_request_with(addr, path, &[]).await
}

/// A one-shot HTTP/1.1 GET with more headers.
pub async fn http_request_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let bad = || std::io::Error::other(format!("bad response {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.get(9..12))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The browser's half of RFB over a WebSocket, just enough to see pixels.
pub struct RfbClient<S> {
    pub ws: WebSocketStream<S>,
    buf: BytesMut,
    /// Every byte the server sent, in order.
    pub received: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

impl<S> RfbClient<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            buf: BytesMut::new(),
            received: Vec::new(),
            width: 0,
            height: 0,
        }
    }

    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the WebSocket stays open")
                .expect("no WebSocket error");
            match message {
                Message::Binary(data) => {
                    self.received.extend_from_slice(&data);
                    self.buf.extend_from_slice(&data);
                }
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
        self.buf.split_to(n).to_vec()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// The handshake as a browser sees it through the proxy: 3.8, only None.
    pub async fn handshake_through_proxy(&mut self) {
        assert_eq!(self.read_exact(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        assert_eq!(self.read_exact(2).await, [1, 1], "only None is offered");
        self.send(&[1]).await;
        assert_eq!(self.read_exact(4).await, [0, 0, 0, 0]);
    }

    /// ClientInit (shared), ServerInit, then 32 bpp raw pixels.
    pub async fn init(&mut self) {
        self.init_with(1).await;
    }

    /// As [`Self::init`], with the given ClientInit shared-flag.
    pub async fn init_with(&mut self, shared: u8) {
        self.send(&[shared]).await;
        let init = self.read_exact(24).await;
        self.width = u16::from_be_bytes([init[0], init[1]]);
        self.height = u16::from_be_bytes([init[2], init[3]]);
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
        self.read_exact(name_len).await;
        self.send(&[
            0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ])
        .await;
        self.send(&[2, 0, 0, 1, 0, 0, 0, 0]).await; // raw only
    }

    /// Asks for the whole screen until a FramebufferUpdate shows a non-black
    /// pixel (the BIOS takes a moment to paint).
    pub async fn wait_for_pixels(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "no non-zero pixels in time");
            let [w, h] = [self.width.to_be_bytes(), self.height.to_be_bytes()];
            self.send(&[3, 0, 0, 0, 0, 0, w[0], w[1], h[0], h[1]]).await;
            if self.read_update().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks for the whole screen.
    pub async fn request_update(&mut self) {
        let [w, h] = [self.width.to_be_bytes(), self.height.to_be_bytes()];
        self.send(&[3, 0, 0, 0, 0, 0, w[0], w[1], h[0], h[1]]).await;
    }

    /// Reads server messages up to and including one FramebufferUpdate; says
    /// whether it had a non-zero pixel.
    pub async fn read_update(&mut self) -> bool {
        loop {
            let kind = self.read_exact(1).await[0];
            match kind {
                0 => {
                    let header = self.read_exact(3).await;
                    let rects = u16::from_be_bytes([header[1], header[2]]);
                    let mut lit = false;
                    for _ in 0..rects {
                        let rect = self.read_exact(12).await;
                        let w = u16::from_be_bytes([rect[4], rect[5]]) as usize;
                        let h = u16::from_be_bytes([rect[6], rect[7]]) as usize;
                        let encoding = i32::from_be_bytes(rect[8..12].try_into().unwrap());
                        match encoding {
                            0 => lit |= self.read_exact(w * h * 4).await.iter().any(|&b| b != 0),
                            // DesktopSize or other pseudo-encodings carry no data.
                            e if e < 0 => {}
                            e => panic!("unexpected encoding {e}"),
                        }
                    }
                    return lit;
                }
                2 => {} // Bell
                3 => {
                    let header = self.read_exact(7).await;
                    let len = u32::from_be_bytes(header[3..7].try_into().unwrap());
                    self.read_exact(len as usize).await;
                }
                other => panic!("unexpected server message {other}"),
            }
        }
    }

    /// Waits for the close frame and returns its reason.
    pub async fn closed(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("closed in time");
            match message {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| f.reason.to_string()).unwrap_or_default();
                }
                Some(Ok(Message::Binary(data))) => self.received.extend_from_slice(&data),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return String::new(),
            }
        }
    }
}

/// The proxy binary in standalone (websockify) mode.
pub struct Websockify {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Websockify {
    /// Starts `porthole-proxy ARGS... 127.0.0.1:PORT TARGETS...` and waits until
    /// it accepts connections.
    pub async fn start(args: &[&str], targets: &[&str]) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
            .args(args)
            .arg(addr.to_string())
            .args(targets)
            .env_clear()
            .env("PORTHOLE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary runs");
        eventually("the proxy to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited early: {status}");
            }
            async move { TcpStream::connect(addr).await.ok() }
        })
        .await;
        Self { child, addr }
    }

    /// Waits for the process to exit on its own.
    pub async fn exited(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the proxy exits")
            .unwrap();
        status.code()
    }
}

/// A TCP relay in front of a server that keeps every byte its clients send,
/// to check what reached the server.
pub struct Tap {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (sent.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                relays.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let mut buf = vec![0; 64 * 1024];
                        loop {
                            let n = client_read.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = tokio::io::copy(&mut server_read, &mut client_write);
                    tokio::select! {
                        () = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Self {
            addr,
            sent,
            accepted,
            task,
        }
    }

    /// How many connections reached the server.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Everything the clients sent the server so far.
    pub fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts the relays.
        self.task.abort();
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A `porthole-proxy` process with any arguments, killed on drop.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
            .args(args)
            .env_clear()
            .env("PORTHOLE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary runs");
        Self { child }
    }

    /// Waits until `addr` accepts connections.
    pub async fn listening(&mut self, addr: SocketAddr) {
        let child = &mut self.child;
        eventually("the proxy to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited early: {status}");
            }
            async move { TcpStream::connect(addr).await.ok() }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Standalone (websockify) mode: more processes, TLS material, raw clients.
// ---------------------------------------------------------------------------

/// `porthole-proxy ARGS...` with only `env` in its environment and stderr
/// piped, for tests that need the process itself (exit codes, logs, -D).
pub fn proxy_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `porthole-proxy ARGS...` to its end: exit code and stderr.
pub async fn proxy_status(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(DEADLINE, proxy_command(args, &[]).output())
        .await
        .expect("the proxy exits")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until `addr` accepts TCP connections.
pub async fn accepting(addr: SocketAddr) {
    eventually("a listener", || async move {
        TcpStream::connect(addr).await.ok()
    })
    .await;
}

/// A QEMU VM whose VNC server listens on a Unix socket (no TCP port at all).
pub struct UnixQemu {
    child: Child,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl UnixQemu {
    pub async fn start() -> Self {
        let dir = TempDir::new("qemu-unix");
        let socket = dir.path().join("vnc.sock");
        let log = dir.path().join("qemu.log");
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-display", "none", "-nodefaults", "-vga", "std", "-m", "64"])
            .args(["-machine", "accel=kvm:tcg", "-vnc"])
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("qemu-system-x86_64 runs");
        eventually("QEMU's VNC socket", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("QEMU exited ({status}):\n{log}");
            }
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.ok() }
        })
        .await;
        Self {
            child,
            socket,
            _dir: dir,
        }
    }
}

/// QEMU's own RFB handshake (no password: security type None) through a
/// relay that does not terminate RFB, then pixels on the screen.
pub async fn see_the_screen<S>(rfb: &mut RfbClient<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(rfb.read_exact(12).await, b"RFB 003.008\n");
    rfb.send(b"RFB 003.008\n").await;
    let count = rfb.read_exact(1).await[0];
    assert!(
        rfb.read_exact(count.into()).await.contains(&1),
        "QEMU offers None"
    );
    rfb.send(&[1]).await;
    assert_eq!(rfb.read_exact(4).await, [0, 0, 0, 0]);
    rfb.init().await;
    rfb.wait_for_pixels().await;
}

/// Certificates for TLS tests: a CA, and leaf certificates it signs.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as DER and as PEM.
pub struct Leaf {
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    pub fn key(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

    /// Certificate then key, as websockify's `self.pem`.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self) -> Leaf {
        self.leaf(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

/// A TLS client trusting `roots`, with a client certificate if given.
pub fn tls_client(
    roots: &[rustls::pki_types::CertificateDer<'static>],
    identity: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

/// A `wss://` WebSocket to `addr`.
pub async fn wss(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    protocols: Option<&str>,
) -> Result<WebSocketStream<TlsStream>, tungstenite::Error> {
    let tls = tls_connect(addr, config).await?;
    let mut request = format!("wss://localhost:{}/websockify", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    client_async(request, tls).await.map(|(ws, _)| ws)
}

/// Sends `ping` and expects it back: the relay to an echo target works.
pub async fn echoes<S>(ws: &mut WebSocketStream<S>) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::Binary(b"ping"[..].into())).await.is_err() {
        return false;
    }
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => return &data[..] == b"ping",
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return false,
        }
    }
}

/// A raw TCP connection that has done the WebSocket upgrade by hand, for
/// writing crafted frames. `extra` goes into the request head as is.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("an upgrade response in time")
            .unwrap();
        assert!(
            n == 1,
            "closed during the upgrade: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// A WebSocket frame as a client sends it: masked (with a fixed key) unless
/// `mask` is false.
pub fn client_frame(first: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut frame = vec![first];
    let bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(bit | n as u8),
        n if n <= 0xffff => {
            frame.push(bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// What a server said on a raw connection until it closed it: every
/// frame's opcode and payload (unmasked, as servers send them), and whether
/// the TCP connection ended.
pub async fn server_frames(stream: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut bytes))
        .await
        .is_ok();
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let (len, header) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => (
                u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n if n < 126 => (n as usize, 2),
            _ => break,
        };
        if rest.len() < header + len {
            break;
        }
        frames.push((opcode, rest[header..header + len].to_vec()));
        rest = &rest[header + len..];
    }
    (frames, closed)
}

/// The close code in a close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A process's stderr, read as it comes so a chatty process never blocks on
/// a full pipe.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<String>>);

impl Logs {
    pub fn drain(stderr: Option<tokio::process::ChildStderr>) -> Self {
        let logs = Self::default();
        if let Some(stderr) = stderr {
            let text = logs.0.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut text = text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        logs
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until a line containing `needle` was logged.
    pub async fn wait_for(&self, needle: &str) {
        eventually(&format!("{needle:?} in the logs"), || async {
            self.text().contains(needle).then_some(())
        })
        .await;
    }
}

impl Websockify {
    /// Starts reading its stderr in the background.
    pub fn logs(&mut self) -> Logs {
        Logs::drain(self.child.stderr.take())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }
}

impl Proxy {
    /// Starts reading its stderr in the background (then [`Proxy::exited`]
    /// returns no logs).
    pub fn logs(&mut self) -> Logs {
        Logs::drain(self.child.stderr.take())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }
}
