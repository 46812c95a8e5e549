//! Standalone mode: a drop-in for websockify.
//!
//! `porthole-proxy [options] [source_addr:]source_port target_addr:target_port`
//! relays WebSocket connections to the target as websockify does: no RFB
//! termination, subprotocol `binary` (or none), TLS sniffed from the first byte
//! when a certificate is present, static files with `--web`.
//!
//! # Exit status
//!
//! [`exit`] holds the codes; `proxy/README.md` and `--help` list them.

pub mod files;
pub mod target;
pub mod wrap;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::header::ORIGIN;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use porthole_api::contract::{BINARY_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::target::{Destination, Io};
use crate::auth::{Gate, Offered, Refusal};
use crate::http::{self as web, Body, close_frame};
use crate::metrics::Direction;
use crate::recording::Recorder;
use crate::relay::{self, Observer};
use crate::server::{self, Conn, Upgraded};
use crate::tls;

/// How long open connections get once the proxy stops.
const DRAIN: Duration = Duration::from_secs(3);

/// The process's exit status in standalone mode, for scripts.
pub mod exit {
    /// Stopped as asked: SIGTERM or SIGINT, `--run-once` after its
    /// connection, `--timeout`, `--idle-timeout`; with `-D`, the proxy is
    /// listening in the background. In `--wrap-mode=exit`, the command's own
    /// status replaces it.
    pub const OK: u8 = 0;
    /// It could not serve: the address is in use or not ours, the runtime
    /// or the background process would not start.
    pub const FAILURE: u8 = 1;
    /// A bad command line or configuration: an unknown option, a missing
    /// target, a certificate or key that does not load, `--ssl-only` or
    /// `--verify-client` without a certificate, `--verify-client` without
    /// `--cafile`.
    pub const USAGE: u8 = 2;
    /// The wrapped command exists but cannot be run.
    pub const CANNOT_EXECUTE: u8 = 126;
    /// The wrapped command was not found.
    pub const NOT_FOUND: u8 = 127;
    /// Added to the signal number when a signal killed the wrapped command.
    pub const SIGNALLED: u8 = 128;
}

/// Why standalone mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing [source_addr:]source_port")]
    MissingSource,
    #[error("missing target_addr:target_port (or --unix-target, or --token-source)")]
    MissingTarget,
    #[error(transparent)]
    Address(#[from] target::Error),
    #[error("{flag} needs a certificate, and {path} does not exist")]
    MissingCertificate { flag: &'static str, path: PathBuf },
    #[error("--verify-client needs --cafile")]
    MissingCaFile,
    #[error("only the TokenFile token plugin is supported, not {0:?}")]
    UnsupportedTokenPlugin(String),
    #[error(transparent)]
    Wrap(#[from] wrap::Error),
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Error {
    /// The exit status it ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Bind { .. } => exit::FAILURE,
            _ => exit::USAGE,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    porthole_api::duration::parse(text).map_err(|e| e.to_string())
}

/// What to do when a wrapped command exits (websockify's `--wrap-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WrapMode {
    Exit,
    Ignore,
    Respawn,
}

/// websockify's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WebsockifyArgs {
    /// Where to listen: `[source_addr:]source_port`.
    #[arg(value_name = "[SOURCE_ADDR:]SOURCE_PORT")]
    pub source: Option<String>,
    /// Where to relay to: `target_addr:target_port`.
    #[arg(value_name = "TARGET_ADDR:TARGET_PORT")]
    pub target: Option<String>,
    /// A command to run and relay to; `{port}` in it (and $PORTHOLE_WRAP_PORT)
    /// is the localhost port it must listen on.
    #[arg(last = true, value_name = "WRAP_COMMAND_LINE")]
    pub wrap: Vec<String>,
    /// Log more: each request and connection (debug level).
    #[arg(short, long)]
    pub verbose: bool,
    /// Handle a single WebSocket connection, then exit; other WebSocket
    /// connections meanwhile are refused (503).
    #[arg(long)]
    pub run_once: bool,
    /// Stop accepting connections this many seconds after starting, and
    /// exit once none is open.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Exit once no connection has been open for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,
    /// Serve files from DIR beside the WebSocket.
    #[arg(long, value_name = "DIR")]
    pub web: Option<PathBuf>,
    /// PEM certificate for TLS (TLS is off when it does not exist).
    #[arg(long, default_value = "self.pem")]
    pub cert: PathBuf,
    /// PEM private key, when not in the certificate file.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// How often to check whether the certificate or key file changed (a
    /// Kubernetes Secret volume swaps a symlink); new connections get the
    /// new certificate.
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub cert_reload_interval: Duration,
    /// Refuse plain connections.
    #[arg(long)]
    pub ssl_only: bool,
    /// Connect to the target over TLS (unverified, as websockify does).
    #[arg(long)]
    pub ssl_target: bool,
    /// Relay to a Unix socket instead of a TCP target.
    #[arg(long, value_name = "FILE")]
    pub unix_target: Option<PathBuf>,
    /// Record each connection's frames to FILE.N.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Run in the background: returns once the proxy listens (status 0), or
    /// with the status it failed with.
    #[arg(short = 'D', long)]
    pub daemon: bool,
    /// Set by `-D` on the process it starts in the background.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
    /// What to do when a wrapped command exits: `exit` with its status,
    /// `ignore` it, or `respawn` it.
    #[arg(long, value_enum, default_value_t = WrapMode::Exit)]
    pub wrap_mode: WrapMode,
    /// Require clients to present a certificate signed by --cafile. Implies
    /// --ssl-only: a plain connection would present none.
    #[arg(long)]
    pub verify_client: bool,
    /// Accept WebSocket upgrades only with this `Origin` (repeatable, such as
    /// `https://console.example.com`); others get 403. Set it when browsers
    /// use the proxy: without it, any web page a user visits can open the
    /// WebSocket with the user's network position and cookies (cross-site
    /// WebSocket hijacking). Unset: any origin, as websockify.
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,
    /// PEM CA certificates for --verify-client.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// The token plugin (only TokenFile is supported).
    #[arg(long, value_name = "PLUGIN")]
    pub token_plugin: Option<String>,
    /// A file, or a directory of files, of `token: host:port` lines; the
    /// client names its target with `?token=` (or the subprotocol
    /// `bearer.porthole.dev.TOKEN`). Unknown tokens get 401, and after a
    /// burst of them 429.
    #[arg(long, visible_alias = "token-file", value_name = "FILE_OR_DIR")]
    pub token_source: Option<PathBuf>,
    /// Give up dialling the target after this long.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Give up on a TLS handshake after this long (request heads:
    /// --request-timeout).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Ping a client after this long without sending it anything, so that
    /// a reverse proxy or load balancer keeps an idle console open; 0s: never.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub ping_interval: Duration,
    /// WebSocket connections open at once at most; more get 503.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    #[command(flatten)]
    pub pending: crate::config::PendingArgs,
    /// Largest WebSocket message (and frame) accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_size: usize,
}

#[derive(Debug)]
enum Targets {
    Fixed(Destination),
    Tokens(PathBuf),
}

/// The standalone proxy's shared state.
pub struct Websockify {
    args: WebsockifyArgs,
    listen: SocketAddr,
    targets: Targets,
    tls: Option<TlsAcceptor>,
    certificates: Option<Arc<tls::CertificateFiles>>,
    target_tls: Option<Arc<ClientConfig>>,
    wrapped: Option<wrap::Wrapped>,
    gate: Gate,
    started: Instant,
    active: AtomicUsize,
    last_active: Mutex<Instant>,
    next_id: AtomicU64,
    /// `--run-once`: whether the one WebSocket connection has arrived.
    claimed: AtomicBool,
    /// The wrapped command's status, when it ends the proxy.
    exit_code: Mutex<Option<u8>>,
    /// Cancelled to stop accepting (`--timeout`); `stop` cancels it too.
    accepting: CancellationToken,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Websockify {
    /// Checks the arguments and loads TLS material.
    pub fn new(args: WebsockifyArgs) -> Result<Arc<Self>, Error> {
        let wrapped = if args.wrap.is_empty() {
            None
        } else if args.target.is_some() {
            return Err(wrap::Error::TargetAndCommand.into());
        } else {
            Some(wrap::Wrapped::new(&args.wrap)?)
        };
        let listen = target::parse_source(args.source.as_deref().ok_or(Error::MissingSource)?)?;
        if let Some(plugin) = &args.token_plugin
            && !plugin.ends_with("TokenFile")
        {
            return Err(Error::UnsupportedTokenPlugin(plugin.clone()));
        }
        let targets = match (
            &wrapped,
            &args.token_source,
            &args.unix_target,
            &args.target,
        ) {
            (Some(wrapped), _, _, _) => Targets::Fixed(Destination::Tcp(wrapped.addr.to_string())),
            (None, Some(source), _, _) => Targets::Tokens(source.clone()),
            (None, None, Some(path), _) => Targets::Fixed(Destination::Unix(path.clone())),
            (None, None, None, Some(addr)) => {
                Targets::Fixed(Destination::Tcp(target::parse_target(addr)?))
            }
            (None, None, None, None) => return Err(Error::MissingTarget),
        };
        let (tls, certificates) = if args.cert.exists() {
            let key = args.key.as_deref().unwrap_or(&args.cert);
            let ca = match (args.verify_client, &args.cafile) {
                (true, Some(ca)) => Some(ca.as_path()),
                (true, None) => return Err(Error::MissingCaFile),
                (false, _) => None,
            };
            let files = tls::CertificateFiles::load(&args.cert, key)?;
            let config = tls::server_config(files.clone(), ca)?;
            (Some(TlsAcceptor::from(config)), Some(files))
        } else if args.ssl_only || args.verify_client {
            let flag = if args.ssl_only {
                "--ssl-only"
            } else {
                "--verify-client"
            };
            return Err(Error::MissingCertificate {
                flag,
                path: args.cert.clone(),
            });
        } else {
            (None, None)
        };
        let target_tls = args
            .ssl_target
            .then(tls::unverified_client_config)
            .transpose()?;
        let stop = CancellationToken::new();
        Ok(Arc::new(Self {
            args,
            listen,
            targets,
            tls,
            certificates,
            target_tls,
            wrapped,
            gate: Gate::default(),
            started: Instant::now(),
            active: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            next_id: AtomicU64::new(1),
            claimed: AtomicBool::new(false),
            exit_code: Mutex::new(None),
            accepting: stop.child_token(),
            stop,
            tasks: TaskTracker::new(),
        }))
    }

    /// Binds the listening address.
    pub async fn bind(&self) -> Result<TcpListener, Error> {
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen,
                source,
            })?;
        tracing::info!(
            listen = %self.listen,
            target = ?self.targets,
            tls = self.tls.is_some(),
            ssl_only = self.args.ssl_only,
            web = ?self.args.web,
            "websockify listening"
        );
        Ok(listener)
    }

    /// Listens and relays until `shutdown`, `--run-once`, `--timeout`,
    /// `--idle-timeout` or the wrapped command says to stop; returns the
    /// exit status.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<u8, Error> {
        let listener = self.bind().await?;
        Ok(self.serve(listener, shutdown).await)
    }

    /// [`run`](Self::run) on a bound listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> u8 {
        let limits = self.args.pending.limits(self.args.max_connections);
        let stop = server::Stop {
            accepting: self.accepting.clone(),
            connections: self.stop.clone(),
        };
        let this = self.clone();
        let accept = server::run(
            listener,
            limits,
            stop,
            self.tasks.clone(),
            move |stream, conn| this.clone().connection(stream, conn),
        );
        self.tasks.spawn(accept);
        self.tasks.spawn(self.clone().watch_timeouts());
        if let Some(certificates) = self.certificates.clone() {
            self.tasks
                .spawn(certificates.watch(self.args.cert_reload_interval, self.stop.clone()));
        }
        if let Some(wrapped) = self.wrapped.clone() {
            let this = self.clone();
            self.tasks.spawn(async move {
                let status = wrapped
                    .supervise(this.args.wrap_mode, this.stop.clone())
                    .await;
                if let Some(code) = status {
                    *this.exit_code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
                    this.stop.cancel();
                }
            });
        }
        tokio::select! {
            () = shutdown => self.stop.cancel(),
            () = self.stop.cancelled() => {}
        }
        self.tasks.close();
        if tokio::time::timeout(DRAIN, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {DRAIN:?}; leaving anyway");
        }
        self.exit_code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(exit::OK)
    }

    /// websockify's `--timeout` and `--idle-timeout`. `--timeout` stops
    /// accepting once it has passed since the start and exits when no
    /// connection is left; `--idle-timeout` exits once no connection has
    /// been open for that long.
    async fn watch_timeouts(self: Arc<Self>) {
        let timeout = self.args.timeout.map(Duration::from_secs);
        let idle = self.args.idle_timeout.map(Duration::from_secs);
        if timeout.is_none() && idle.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let timed_out = timeout.is_some_and(|t| self.started.elapsed() >= t);
            if timed_out && !self.accepting.is_cancelled() {
                tracing::info!("--timeout: no longer accepting connections");
                self.accepting.cancel();
            }
            if self.active.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let last_active = *self.last_active.lock().unwrap_or_else(|e| e.into_inner());
            if timed_out {
                tracing::info!("exiting: --timeout");
                return self.stop.cancel();
            }
            if idle.is_some_and(|t| last_active.elapsed() >= t) {
                tracing::info!("exiting: --idle-timeout");
                return self.stop.cancel();
            }
        }
    }

    fn activity(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::SeqCst);
        Active(self.clone())
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, conn: Conn) {
        // Open HTTP connections count as activity for --idle-timeout.
        let _active = self.activity();
        let Some(io) = self.sniff_tls(stream).await else {
            return;
        };
        let service = {
            let (this, conn) = (self.clone(), conn.clone());
            service_fn(move |req| {
                let (this, conn) = (this.clone(), conn.clone());
                async move { Ok::<_, Infallible>(this.route(req, &conn).await) }
            })
        };
        conn.serve_http(io, service).await;
    }

    /// With a certificate, a first byte of 0x16 means TLS; anything else is
    /// plain HTTP, unless `--ssl-only` or `--verify-client` (a plain
    /// connection has no client certificate to verify).
    async fn sniff_tls(&self, stream: TcpStream) -> Option<Box<dyn Io>> {
        let Some(acceptor) = &self.tls else {
            return Some(Box::new(stream));
        };
        let timeout = self.args.handshake_timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            _ => return None,
        }
        if first[0] != tls::HANDSHAKE_RECORD {
            if self.args.ssl_only || self.args.verify_client {
                tracing::info!("refused a plain connection: TLS only");
                return None;
            }
            return Some(Box::new(stream));
        }
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("TLS handshake timed out");
                None
            }
        }
    }

    async fn route(self: Arc<Self>, mut req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        let peer = conn.peer();
        // The path only: with --token-source the query holds a token.
        tracing::debug!(method = %req.method(), path = req.uri().path(), "request");
        if web::is_websocket(&req) {
            if !self.origin_allowed(&req) {
                tracing::info!(%peer, origin = ?req.headers().get(ORIGIN), "refused: origin not in --allowed-origin");
                return web::text(StatusCode::FORBIDDEN, "origin not allowed\n");
            }
            let destination = match self.destination(&req, peer) {
                Ok(destination) => destination,
                Err(response) => return response,
            };
            let offered = Offered::from_headers(req.headers());
            let protocol = match (offered.binary, offers_others(req.headers())) {
                (true, _) => Some(BINARY_SUBPROTOCOL),
                (false, false) => None,
                (false, true) => {
                    return web::text(
                        StatusCode::BAD_REQUEST,
                        "only the binary subprotocol is supported\n",
                    );
                }
            };
            if self.args.run_once && self.claimed.swap(true, Ordering::SeqCst) {
                tracing::info!(%peer, "refused: --run-once already has its connection");
                return web::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "--run-once: already serving its one connection\n",
                );
            }
            let accepted = web::accept(&mut req, protocol);
            let slot = accepted.as_ref().ok().map(|_| conn.upgrade());
            return match (accepted, slot) {
                (Ok((response, on_upgrade)), Some(Ok(slot))) => {
                    let viewer = self.clone().viewer(on_upgrade, destination, slot);
                    self.tasks
                        .spawn(viewer.instrument(tracing::info_span!("viewer", %peer)));
                    response
                }
                (accepted, _) => {
                    // Not upgraded: the one connection is still to come.
                    if self.args.run_once {
                        self.claimed.store(false, Ordering::SeqCst);
                    }
                    accepted.err().unwrap_or_else(|| {
                        tracing::warn!(%peer, "refused: every WebSocket slot is taken");
                        web::text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n")
                    })
                }
            };
        }
        match (&self.args.web, req.method()) {
            (Some(root), &Method::GET | &Method::HEAD) => {
                files::serve(root, req.uri().path()).await
            }
            _ => web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        }
    }

    /// `--allowed-origin`: without it any origin (and none); with it, only
    /// an `Origin` on the list, compared as browsers send it (ASCII case
    /// aside, no trailing slash).
    fn origin_allowed(&self, req: &Request<Incoming>) -> bool {
        if self.args.allowed_origin.is_empty() {
            return true;
        }
        req.headers()
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|origin| {
                self.args
                    .allowed_origin
                    .iter()
                    .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
            })
    }

    /// Where a WebSocket goes: the fixed target, or the one its token names.
    /// A token check that fails spends one of the source's failure budget
    /// ([`Gate`]); tokens are never logged.
    #[allow(clippy::result_large_err)]
    fn destination(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Destination, Response<Body>> {
        let source = match &self.targets {
            Targets::Fixed(destination) => return Ok(destination.clone()),
            Targets::Tokens(source) => source,
        };
        let token = req.uri().query().and_then(token_from_query).or_else(|| {
            Offered::from_headers(req.headers())
                .token
                .map(str::to_string)
        });
        self.gate
            .authorize(peer.ip(), || {
                token.and_then(|t| target::lookup_token(source, &t))
            })
            .map_err(|refusal| {
                match refusal {
                    Refusal::Wrong => tracing::info!(%peer, "refused: unknown or missing token"),
                    Refusal::TooMany => {
                        tracing::debug!(%peer, "refused: unknown or missing token, past the failure budget");
                    }
                }
                refusal.response()
            })
    }

    async fn viewer(
        self: Arc<Self>,
        on_upgrade: OnUpgrade,
        destination: Destination,
        slot: Upgraded,
    ) {
        self.relay_viewer(on_upgrade, destination, slot).await;
        if self.args.run_once {
            tracing::info!("exiting: --run-once");
            self.stop.cancel();
        }
    }

    async fn relay_viewer(
        self: &Arc<Self>,
        on_upgrade: OnUpgrade,
        destination: Destination,
        _slot: Upgraded,
    ) {
        let _active = self.activity();
        let config = web::websocket_config(self.args.max_message_size);
        let mut ws = match web::websocket(on_upgrade, config).await {
            Ok(ws) => ws,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        let connect = destination.connect(self.target_tls.as_ref());
        let frame = match tokio::time::timeout(self.args.connect_timeout, connect).await {
            Ok(Ok(upstream)) => {
                tracing::info!(target = ?destination, "relaying");
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let recorder = self.args.record.as_deref().and_then(|base| {
                    Recorder::create(base, id)
                        .inspect_err(|e| tracing::warn!(error = %e, "cannot record"))
                        .ok()
                });
                let observer = Recording {
                    recorder,
                    warned: AtomicBool::new(false),
                };
                let end = relay::relay(
                    &mut ws,
                    upstream,
                    BytesMut::new(),
                    None,
                    &observer,
                    &self.stop,
                    self.args.ping_interval,
                )
                .await;
                tracing::info!(end = %end, "relay ended");
                web::relay_close_frame(&end)
            }
            Ok(Err(e)) => {
                tracing::warn!(target = ?destination, error = %e, "cannot connect to the target");
                close_frame(CloseCode::Error, "cannot connect to the target")
            }
            Err(_) => {
                tracing::warn!(target = ?destination, "timed out connecting to the target");
                close_frame(CloseCode::Error, "timed out connecting to the target")
            }
        };
        // A viewer that stopped reading must not hold the connection open.
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    }
}

/// Whether the client offered a subprotocol other than `binary` and
/// porthole's bearer token.
fn offers_others(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|p| {
            !p.is_empty() && p != BINARY_SUBPROTOCOL && !p.starts_with(TOKEN_SUBPROTOCOL_PREFIX)
        })
}

/// An open connection, counted for `--timeout` and `--idle-timeout`.
struct Active(Arc<Websockify>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// `--record`, as websockify does it: buffered, and a recording that cannot
/// be written is warned about (once per connection) while the relay goes on.
struct Recording {
    recorder: Option<Recorder>,
    warned: AtomicBool,
}

impl Observer for Recording {
    fn relayed(&self, direction: Direction, data: &[u8]) {
        if let Some(recorder) = &self.recorder
            && let Err(e) = recorder.frame(direction, data)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "cannot record");
        }
    }
}

/// `token=` from a query string (websockify's TokenFile convention).
fn token_from_query(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_the_query() {
        assert_eq!(token_from_query("token=vm1"), Some("vm1".into()));
        assert_eq!(token_from_query("a=b&token=vm2&c"), Some("vm2".into()));
        assert_eq!(token_from_query("tokens=x"), None);
    }
}
