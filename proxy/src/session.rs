//! Pod mode: one console session per process.
//!
//! The process *is* the session. It serves the page, its assets and the
//! WebSocket on the console port, and `/healthz`, `/readyz`, `/metrics` and
//! the viewer report on an internal port of their own, so that nothing sent
//! to the console port can starve the kubelet's probes. It ends on SIGTERM (`completed`), when the VNC server
//! fails or closes the console, or when one of its timeouts runs out, and it
//! leaves the [`EndReason`] in the termination message for the operator.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use porthole_api::contract::{
    BINARY_SUBPROTOCOL, EndReason, UpstreamFailure, VIEWERS_LONG_POLL, VIEWERS_PATH, WEBSOCKET_PATH,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{Admission, Refused, Ticket};
use crate::auth::{Gate, Offered, Refusal};
use crate::config::{SessionConfig, Upstream};
use crate::http::{self as web, Body, Socket, close_frame};
use crate::lifetime::{Activity, Limits, Verdict};
use crate::metrics::{self, AuthFailure, Direction, Metrics, ReasonLabels};
use crate::recording::{self, Recorder};
use crate::relay::{self, End, Observer};
use crate::rfb::client_messages::{self, Input, Parser};
use crate::server::{self, Conn, Upgraded};
use crate::viewers::{self, ViewerLog};
use crate::{assets, console, liveness, page, pve, termination};

/// How long connections get to finish once the session ends (the pod's grace
/// period is longer).
const DRAIN: Duration = Duration::from_secs(3);
/// The close reason viewers get when the pod is stopped (SIGTERM). The proxy
/// cannot tell why: its session was deleted, or the pod is drained or deleted
/// and the operator starts another at the same URL. The page says both.
pub const PROXY_STOPPING: &str = "proxy-stopping";

/// Why pod mode could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves the session until it ends, writes the termination message, and returns
/// the end reason. `shutdown` resolving (SIGTERM) ends it as `completed`. A
/// recorded session whose recording directory cannot be created ends at once,
/// as `recording-failed`, before anyone can connect.
pub async fn run(
    config: SessionConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<EndReason, Error> {
    if let Some(base) = &config.args.record
        && let Err(e) = Recorder::prepare_directory(base)
    {
        let dir = base.parent().unwrap_or(base);
        let reason = EndReason::recording_failed(format!(
            "cannot create the recording directory {}: {e}",
            dir.display()
        ));
        tracing::error!(reason = %reason, "the session is recorded, and its recordings cannot be written");
        termination::write(&config.args.termination_message_path, &reason);
        return Ok(reason);
    }
    let console = bind(config.args.listen).await?;
    let internal = bind(config.args.internal_listen).await?;
    let session = Session::new(config);
    let reason = session.serve(console, internal, shutdown).await;
    termination::write(&session.config.args.termination_message_path, &reason);
    Ok(reason)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// The internal port's callers: the kubelet, the operator, a metrics scraper.
/// It is in no Service and its NetworkPolicy admits only the operator, but
/// it has caps and timeouts of its own all the same.
const INTERNAL_LIMITS: server::Limits = server::Limits {
    max_pending: 16,
    max_pending_per_source: 8,
    max_upgraded: 0,
    request_timeout: Duration::from_secs(5),
};

/// The session's shared state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    metrics: Metrics,
    gate: Gate,
    page: Bytes,
    upstream: console::Upstream,
    admission: Admission,
    viewers: ViewerLog,
    limits: Limits,
    started: Instant,
    /// The last key or pointer event, or the last viewer's arrival.
    last_input: Mutex<Instant>,
    end: Mutex<Option<EndReason>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// The number of the next viewer connection's recording (`FILE.N`).
    next_recording: AtomicU64,
    /// Stopped by SIGTERM rather than by one of the session's own ends.
    signalled: AtomicBool,
}

impl Session {
    pub fn new(config: SessionConfig) -> Arc<Self> {
        let args = &config.args;
        let upstream = match &config.upstream {
            Upstream::Vnc { addr, password } => console::Upstream::Vnc(console::Vnc {
                addr: addr.clone(),
                password: password.clone(),
                connect_timeout: args.upstream_connect_timeout,
                handshake_timeout: args.handshake_timeout,
            }),
            Upstream::Proxmox(settings) => {
                console::Upstream::Proxmox(Box::new(pve::Client::new((**settings).clone())))
            }
        };
        Arc::new(Self {
            page: page::Page {
                vm_name: &args.vm_name,
                expires_at: args.expires_at,
                idle_timeout: args.idle_timeout,
                view_only: args.view_only,
            }
            .render()
            .into(),
            metrics: Metrics::new(),
            gate: Gate::default(),
            upstream,
            admission: Admission::new(args.viewers, args.run_once),
            viewers: ViewerLog::default(),
            limits: args.limits(),
            started: Instant::now(),
            last_input: Mutex::new(Instant::now()),
            end: Mutex::new(None),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_recording: AtomicU64::new(1),
            signalled: AtomicBool::new(false),
            config,
        })
    }

    /// Ends the session. The first reason wins: a viewer failing because the
    /// session is already stopping must not overwrite why it stopped.
    pub fn end(&self, reason: EndReason) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if end.is_none() {
            tracing::info!(reason = %reason, "session ending");
            self.metrics
                .session_end
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .set(1);
            *end = Some(reason);
        }
        self.stop.cancel();
    }

    fn end_reason(&self) -> Option<EndReason> {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn serve(
        self: &Arc<Self>,
        console: TcpListener,
        internal: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> EndReason {
        let args = &self.config.args;
        let span = tracing::info_span!("session", namespace = %args.namespace, name = %args.name);
        tracing::info!(parent: &span, listen = %args.listen, internal = %args.internal_listen, upstream = %self.config.upstream, "serving console");
        let session = self.clone();
        let console = server::run(
            console,
            args.console_limits(),
            server::Stop::both(&self.stop),
            self.tasks.clone(),
            move |stream, conn| session.clone().console(stream, conn),
        );
        self.tasks.spawn(console.instrument(span.clone()));
        let session = self.clone();
        let internal = server::run(
            internal,
            INTERNAL_LIMITS,
            server::Stop::both(&self.stop),
            self.tasks.clone(),
            move |stream, conn| session.clone().internal(stream, conn),
        );
        self.tasks.spawn(internal.instrument(span.clone()));
        self.tasks
            .spawn(self.clone().watchdog().instrument(span.clone()));

        tokio::select! {
            () = shutdown => {
                self.signalled.store(true, Ordering::Relaxed);
                self.end(EndReason::Completed);
            }
            () = self.stop.cancelled() => {}
        }
        self.tasks.close();
        if tokio::time::timeout(DRAIN, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(parent: &span, "connections still open after {DRAIN:?}; leaving anyway");
        }
        self.end_reason().unwrap_or(EndReason::Completed)
    }

    /// Ends the session when one of its limits runs out, sleeping until the
    /// next deadline in between.
    async fn watchdog(self: Arc<Self>) {
        loop {
            let activity = Activity {
                started: self.started,
                last_input: *self.last_input.lock().unwrap_or_else(|e| e.into_inner()),
                ever_connected: self.admission.ever_admitted(),
            };
            let next = match self
                .limits
                .check(activity, Instant::now(), jiff::Timestamp::now())
            {
                Verdict::End(reason) => return self.end(reason),
                Verdict::CheckAt(next) => next,
            };
            let wait = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// The console port: the page, its assets and the WebSocket.
    async fn console(self: Arc<Self>, stream: TcpStream, conn: Conn) {
        let service = {
            let (session, conn) = (self.clone(), conn.clone());
            service_fn(move |req| {
                let response = session.route(req, &conn);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        conn.serve_http(stream, service).await;
    }

    /// The internal port: health, metrics and the viewer report.
    async fn internal(self: Arc<Self>, stream: TcpStream, conn: Conn) {
        let peer = conn.peer();
        let service = service_fn(move |req| {
            let session = self.clone();
            async move { Ok::<_, Infallible>(session.internal_route(req, peer).await) }
        });
        conn.serve_http(stream, service).await;
    }

    async fn internal_route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => web::text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") if self.stop.is_cancelled() => {
                web::text(StatusCode::SERVICE_UNAVAILABLE, "ending\n")
            }
            (&Method::GET, "/readyz") => web::text(StatusCode::OK, "ready\n"),
            (&Method::GET, "/metrics") => {
                web::respond(StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.encode())
            }
            (&Method::GET, VIEWERS_PATH) => self.viewer_report(&req, peer).await,
            (_, "/healthz" | "/readyz" | "/metrics" | VIEWERS_PATH) => {
                web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => web::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn route(self: &Arc<Self>, req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        let path = req.uri().path();
        // The page and socket may sit under a prefix an ingress adds.
        let is_socket = path
            .strip_suffix(WEBSOCKET_PATH)
            .is_some_and(|p| p.ends_with('/'));
        let is_page = path.ends_with('/') || path.ends_with("/vnc.html");
        match (req.method(), path) {
            (_, _) if is_socket => self.open_console(req, conn),
            (&Method::GET | &Method::HEAD, _) if is_page => {
                let mut response = web::respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    self.page.clone(),
                );
                // Per session, and short-lived: never cached.
                assets::secure(response.headers_mut(), "no-store");
                response
            }
            (&Method::GET | &Method::HEAD, _) => match assets::find(path) {
                Some(asset) => asset.respond(req.headers()),
                None => web::text(StatusCode::NOT_FOUND, "not found\n"),
            },
            _ => web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        }
    }

    /// The operator's view of the viewers (see [`VIEWERS_PATH`]), for the
    /// session's token only, rate-limited like a viewer's.
    async fn viewer_report(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let bearer = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let authorized = self.gate.authorize(peer.ip(), || {
            bearer
                .filter(|t| self.config.token.matches(t.as_bytes()))
                .map(drop)
        });
        if let Err(refusal) = authorized {
            self.refused(refusal, peer, "a viewer report");
            return refusal.response();
        }
        let report = match viewers::after(req.uri().query()) {
            Some(seen) => {
                self.viewers
                    .changed_since(seen, VIEWERS_LONG_POLL, &self.stop)
                    .await
            }
            None => self.viewers.report(),
        };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let mut response = web::respond(StatusCode::OK, "application/json", body);
        assets::secure(response.headers_mut(), "no-store");
        response
    }

    /// Checks the token before anything else happens: a refused request never
    /// reaches the VNC server.
    fn open_console(self: &Arc<Self>, mut req: Request<Incoming>, conn: &Conn) -> Response<Body> {
        let peer = conn.peer();
        if !web::is_websocket(&req) {
            return web::text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
        }
        let offered = Offered::from_headers(req.headers());
        let authorized = self.gate.authorize(peer.ip(), || {
            offered
                .token
                .filter(|t| self.config.token.matches(t.as_bytes()))
                .map(drop)
        });
        if let Err(refusal) = authorized {
            self.refused(refusal, peer, "a viewer");
            return refusal.response();
        }
        if !offered.binary {
            return web::text(
                StatusCode::BAD_REQUEST,
                "offer the \"binary\" subprotocol\n",
            );
        }
        let (response, on_upgrade) = match web::accept(&mut req, Some(BINARY_SUBPROTOCOL)) {
            Ok(accepted) => accepted,
            Err(response) => return response,
        };
        let Ok(slot) = conn.upgrade() else {
            tracing::warn!(%peer, "refused a viewer: every WebSocket slot is taken");
            return web::text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
        };
        // Refused viewers still get the WebSocket, so the page can show why
        // in the close reason: a browser hides a failed upgrade's status.
        let span = tracing::info_span!("viewer", %peer);
        match self.admission.admit() {
            Ok(ticket) => {
                let viewer = self.clone().viewer(on_upgrade, peer, slot, ticket);
                self.tasks.spawn(viewer.instrument(span));
            }
            Err(refused) => {
                tracing::info!(parent: &span, reason = %refused, "refused a viewer");
                let refuse = self.clone().refuse(on_upgrade, refused, slot);
                self.tasks.spawn(refuse.instrument(span));
            }
        }
        response
    }

    /// Counts and logs a refused credential; past the source's budget only at
    /// debug level, so a flood of guesses cannot flood the logs.
    fn refused(&self, refusal: Refusal, peer: SocketAddr, what: &str) {
        match refusal {
            Refusal::Wrong => {
                self.metrics.auth_failed(AuthFailure::BadToken);
                tracing::warn!(%peer, "refused {what}: wrong or missing token");
            }
            Refusal::TooMany => {
                self.metrics.auth_failed(AuthFailure::RateLimited);
                tracing::debug!(%peer, "refused {what}: wrong or missing token, past the failure budget");
            }
        }
    }

    async fn refuse(self: Arc<Self>, on_upgrade: OnUpgrade, refused: Refused, _slot: Upgraded) {
        self.count_ended(refused.label());
        let config = web::websocket_config(self.config.args.max_message_size);
        if let Ok(mut ws) = web::websocket(on_upgrade, config).await {
            close_gracefully(
                &mut ws,
                close_frame(CloseCode::Policy, &refused.to_string()),
            )
            .await;
        }
    }

    fn count_ended(&self, reason: &'static str) {
        self.metrics
            .connections_ended
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    async fn viewer(
        self: Arc<Self>,
        on_upgrade: OnUpgrade,
        peer: SocketAddr,
        _slot: Upgraded,
        mut ticket: Ticket,
    ) {
        let had_its_turn = self.watch(on_upgrade, peer, &mut ticket).await;
        drop(ticket);
        if self.admission.run_once() && had_its_turn {
            // However it went, the one viewer has been and gone.
            self.end(EndReason::Completed);
        }
    }

    /// Serves one viewer; false when it could not have the console for a
    /// passing reason (the hypervisor's API down), so its turn is not spent.
    async fn watch(&self, on_upgrade: OnUpgrade, peer: SocketAddr, ticket: &mut Ticket) -> bool {
        let config = web::websocket_config(self.config.args.max_message_size);
        let mut ws = match web::websocket(on_upgrade, config).await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return true;
            }
        };
        self.metrics.viewers.inc();
        self.viewers.connected(peer.ip());
        *self.last_input.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        tracing::info!("viewer connected");

        let mut had_its_turn = true;
        let (label, frame) = match self.relay(&mut ws).await {
            Ok(end) => {
                tracing::info!(end = %end, "viewer disconnected");
                let frame = match (&end, self.end_reason()) {
                    (End::Stopped, _) if self.signalled.load(Ordering::Relaxed) => {
                        close_frame(CloseCode::Away, PROXY_STOPPING)
                    }
                    // Tell the page why the session ended.
                    (End::Stopped | End::UpstreamClosed | End::Upstream(_), Some(reason)) => {
                        close_frame(CloseCode::Normal, &reason.to_string())
                    }
                    (End::ViewerLeft, _) => close_frame(CloseCode::Normal, ""),
                    (End::Protocol(_) | End::TextMessage, _) => {
                        close_frame(CloseCode::Protocol, &end.to_string())
                    }
                    (other, _) => close_frame(CloseCode::Error, &other.to_string()),
                };
                (end.label(), frame)
            }
            Err(console::Error::Recording(e)) => {
                tracing::error!(error = %e, "the session is recorded, and its recording cannot be written: not relaying");
                // The page gets the cause (a close reason holds 123 bytes);
                // the session's status gets the path too.
                let frame = close_frame(
                    CloseCode::Error,
                    &EndReason::recording_failed(e.source.to_string()).to_string(),
                );
                self.end(EndReason::recording_failed(e.to_string()));
                ("recording-failed", frame)
            }
            Err(e) if e.is_transient() => {
                // The hypervisor's API is down or silent: this viewer cannot
                // have a console now, but the session (and the VM) are fine,
                // so the next attempt may work. 1013 is "try again later".
                tracing::warn!(error = %e, "cannot open the console now; the session stays open");
                // Before the close frame: the viewer may retry at once.
                ticket.give_back();
                had_its_turn = false;
                let reason = EndReason::upstream_failed(e.failure(), e.to_string());
                (
                    "upstream-unavailable",
                    close_frame(CloseCode::Again, &reason.to_string()),
                )
            }
            Err(e) if e.is_upstream() => {
                tracing::error!(error = %e, "cannot open the console");
                let reason = EndReason::upstream_failed(e.failure(), e.to_string());
                let frame = close_frame(CloseCode::Error, &reason.to_string());
                self.end(reason);
                ("upstream-failed", frame)
            }
            Err(e) => {
                tracing::info!(error = %e, "viewer failed the RFB handshake");
                (
                    "handshake-failed",
                    close_frame(CloseCode::Protocol, &e.to_string()),
                )
            }
        };
        self.count_ended(label);
        self.metrics.viewers.dec();
        self.viewers.disconnected();
        close_gracefully(&mut ws, frame).await;
        had_its_turn
    }

    /// Opens the console and relays it until either side or the session ends.
    /// A recorded session starts the connection's recording first: a viewer
    /// whose connection cannot be recorded never reaches the VM.
    async fn relay(&self, ws: &mut Socket) -> Result<End, console::Error> {
        let recorder = match &self.config.args.record {
            Some(base) => {
                // Numbers a replaced pod's predecessor used are skipped.
                let id = loop {
                    let id = self.next_recording.fetch_add(1, Ordering::Relaxed);
                    if !Recorder::taken(base, id) {
                        break id;
                    }
                };
                let recorder = Recorder::create(base, id)?.write_through();
                tracing::info!(recording = %Recorder::path(base, id).display(), "recording the connection");
                Some(recorder)
            }
            None => None,
        };
        let opened = tokio::select! {
            opened = console::open(
                ws,
                &self.upstream,
                self.config.args.handshake_timeout,
                &self.metrics,
                recorder.as_ref(),
            ) => opened?,
            () = self.stop.cancelled() => return Ok(End::Stopped),
        };
        let parser = Parser::new(
            self.config.args.view_only,
            client_messages::DEFAULT_MAX_CUT_TEXT,
        );
        // A recording that fails stops this relay (and then the session).
        let stop = self.stop.child_token();
        let observer = Watching {
            session: self,
            recorder: recorder.as_ref(),
            failed: Mutex::new(None),
            stop: &stop,
        };
        let end = relay::relay(
            ws,
            opened.upstream,
            opened.pending,
            Some(parser),
            &observer,
            &stop,
            self.config.args.ping_interval,
        )
        .await;
        if let Some(error) = observer
            .failed
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
        {
            return Err(error.into());
        }
        // The hypervisor closing (or resetting) the console ends the session;
        // so does one that stopped answering (a network cut, a dead host),
        // which says so rather than pretending it closed the console.
        match &end {
            End::Upstream(e) if liveness::is_dead_peer(e) => {
                self.end(EndReason::upstream_failed(
                    UpstreamFailure::Unreachable,
                    format!(
                        "the hypervisor stopped answering (nothing for {}s); the console is lost",
                        liveness::DEAD_AFTER.as_secs()
                    ),
                ));
            }
            End::UpstreamClosed | End::Upstream(_) => self.end(EndReason::UpstreamClosed),
            _ => {}
        }
        Ok(end)
    }
}

/// One viewer's relay, as the session observes it: the session's metrics and
/// idle clock, and the connection's recording when the session is recorded.
struct Watching<'a> {
    session: &'a Session,
    recorder: Option<&'a Recorder>,
    /// The first recording failure; it stops the relay.
    failed: Mutex<Option<recording::WriteError>>,
    stop: &'a CancellationToken,
}

impl Observer for Watching<'_> {
    fn relayed(&self, direction: Direction, data: &[u8]) {
        self.session.relayed(direction.clone(), data);
        if let Some(recorder) = self.recorder
            && let Err(error) = recorder.frame(direction, data)
        {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert(error);
            self.stop.cancel();
        }
    }

    fn input(&self, input: Input) {
        self.session.input(input);
    }
}

/// Sends the close frame, then reads until the viewer answers it: closing a
/// socket with unread data makes the kernel send a reset, and a browser that
/// gets one drops the close frame (and its reason) it had not yet read. A
/// viewer that stopped reading must not hold up the end of the session.
async fn close_gracefully(ws: &mut Socket, frame: CloseFrame) {
    let handshake = async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), handshake).await;
}

impl Observer for Session {
    fn relayed(&self, direction: Direction, data: &[u8]) {
        self.metrics.add_bytes(direction, data.len());
    }

    fn input(&self, input: Input) {
        self.metrics.add_input(input.keys, input.pointer);
        *self.last_input.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}
