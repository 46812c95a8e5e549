//! Logs, metrics and the health endpoint.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::runtime::reflector::Store;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

/// Text logs for people; format `json` for log pipelines.
pub fn init_logging(filter: &str, format: &str) {
    let builder = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    /// `ok`, or an upstream failure label (`bad-credentials`, ...).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

/// Operator metrics. Labels come from fixed sets, never from object names.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciliations: Counter,
    reconcile_errors: Family<CategoryLabel, Counter>,
    reconcile_duration: Histogram,
    phase_transitions: Family<PhaseLabel, Counter>,
    sessions: Family<PhaseLabel, Gauge>,
    sessions_store: Arc<OnceLock<Store<ConsoleSession>>>,
    ticket_mints: Family<OutcomeLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("porthole_operator");
        let reconciliations = Counter::default();
        let reconcile_errors = Family::<CategoryLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let phase_transitions = Family::<PhaseLabel, Counter>::default();
        let ticket_mints = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "pve_ticket_mint_duration_seconds",
            "Proxmox logins and ticket renewals, by outcome",
            ticket_mints.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "session_phase_transitions",
            "Sessions entering each phase",
            phase_transitions.clone(),
        );
        let sessions = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "sessions",
            "ConsoleSessions in the cluster, by phase",
            sessions.clone(),
        );
        Metrics {
            sessions,
            sessions_store: Arc::default(),
            registry: Arc::new(registry),
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            phase_transitions,
            ticket_mints,
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// A Proxmox login or renewal: `outcome` is `ok` or a failure label.
    pub fn ticket_minted(&self, outcome: &'static str, took: std::time::Duration) {
        self.ticket_mints
            .get_or_create(&OutcomeLabel { outcome })
            .observe(took.as_secs_f64());
    }

    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }

    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabel { category })
            .inc();
    }

    pub fn phase_entered(&self, phase: SessionPhase) {
        self.phase_transitions
            .get_or_create(&PhaseLabel {
                phase: phase.as_str(),
            })
            .inc();
    }

    /// Counts sessions by phase from the controller's cache at every scrape, so
    /// the gauge can never drift from what the cluster holds.
    pub fn count_sessions_from(&self, store: Store<ConsoleSession>) {
        let _ = self.sessions_store.set(store);
    }

    fn count_sessions(&self) {
        let Some(store) = self.sessions_store.get() else {
            return;
        };
        let mut counts = [0i64; SessionPhase::ALL.len()];
        for session in store.state() {
            let phase = session
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or_default();
            if let Some(i) = SessionPhase::ALL.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in SessionPhase::ALL.iter().zip(counts) {
            self.sessions
                .get_or_create(&PhaseLabel {
                    phase: phase.as_str(),
                })
                .set(count);
        }
    }

    pub fn encode(&self) -> String {
        self.count_sessions();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Limits of the health and metrics server. Its clients are the kubelet (one
/// short connection per probe) and Prometheus (one connection per scrape), but
/// any pod can reach it, and it shares its process with the controller: these
/// keep what a misbehaving client can hold small and short-lived.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections held at once. The slot is taken *before* accepting, so past
    /// it clients wait in the kernel's backlog instead of costing memory here.
    pub max_connections: usize,
    /// Connections held at once from one source address (one pod, or one
    /// node's kubelet), so that one client cannot take every slot.
    pub max_connections_per_source: usize,
    /// Time a client gets to send a whole request head. hyper starts it
    /// whenever the connection waits for a head, so it is also how long a
    /// keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers); a larger one is
    /// answered 431 and the connection closed. It also caps hyper's read buffer.
    pub max_header_size: usize,
    /// Age at which a connection is asked to close after its current request
    /// (and closed `header_timeout` later if it has not), so that a client
    /// that stops reading responses cannot keep its slot.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Probes and scrapes need a handful. A held connection costs about
            // 20 KiB (hyper's read and write buffers and state): 5 MiB at most.
            max_connections: 256,
            max_connections_per_source: 32,
            header_timeout: Duration::from_secs(5),
            // hyper's smallest read buffer; real probe and scrape heads are a few hundred bytes.
            max_header_size: 8 * 1024,
            max_connection_age: Duration::from_secs(60),
        }
    }
}

/// Serves `/healthz`, `/readyz` (true once the controller runs) and `/metrics`
/// on `addr`, within the default [`Limits`]. Returns only if it cannot bind.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    match serve(listener, metrics, ready, Limits::default()).await {}
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener`, forever. Dropping
/// the future closes the connections it holds.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    limits: Limits,
) -> Infallible {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(MIN_BUF_SIZE));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let sources = Arc::new(Sources::new(limits.max_connections_per_source.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        while let Some(ended) = connections.try_join_next() {
            if let Err(error) = ended {
                warn!(%error, "a health connection task failed");
            }
        }
        let (stream, peer) = accept(|| listener.accept()).await;
        let Some(source) = sources.admit(peer.ip()) else {
            debug!(%peer, "too many health connections from this source; closing");
            continue;
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let response = respond(req.uri().path(), &metrics, ready.load(Ordering::Relaxed));
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let (max_age, grace) = (limits.max_connection_age, limits.header_timeout);
        connections.spawn(async move {
            let _held = (permit, source);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = tokio::time::sleep(max_age) => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(grace, connection).await.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = ended {
                debug!(%peer, %error, "health connection ended");
            }
        });
    }
}

/// hyper's smallest allowed `max_buf_size`.
const MIN_BUF_SIZE: usize = 8 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts, retrying failures (out of file descriptors, aborted handshakes)
/// after a pause that doubles up to a second, instead of spinning or giving up.
async fn accept<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                warn!(%error, ?backoff, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Connections held per source address.
struct Sources {
    max_per_source: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its source's allowance, returned on drop.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn new(max_per_source: usize) -> Self {
        Sources {
            max_per_source,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The lock guards plain counts that no panic can leave half-updated.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more connection from `ip`, or None when it holds its share.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        // An IPv4 client of a dual-stack listener is the same source either way.
        let ip = ip.to_canonical();
        let mut held = self.held();
        let count = held.entry(ip).or_default();
        if *count >= self.max_per_source {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.sources.held();
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

fn respond(path: &str, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if ready => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string()),
        "/metrics" => (StatusCode::OK, metrics.encode()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_fixed_labels() {
        let metrics = Metrics::default();
        drop(metrics.reconcile_timer());
        metrics.reconcile_failed("api");
        metrics.phase_entered(SessionPhase::Ready);
        let text = metrics.encode();
        assert!(text.contains("porthole_operator_reconciliations_total 1"));
        assert!(text.contains(r#"porthole_operator_reconcile_errors_total{category="api"} 1"#));
        assert!(
            text.contains(r#"porthole_operator_session_phase_transitions_total{phase="Ready"} 1"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_doubling_to_a_second() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let accepted = accept(|| {
            calls += 1;
            let call = calls;
            async move {
                match call {
                    1..=9 => Err(std::io::Error::other("too many open files")),
                    _ => Ok(call),
                }
            }
        })
        .await;
        assert_eq!(accepted, 10);
        let waits = [10, 20, 40, 80, 160, 320, 640, 1000, 1000];
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(waits.iter().sum::<u64>())
        );
    }

    #[test]
    fn each_source_holds_at_most_its_share() {
        let sources = Arc::new(Sources::new(2));
        let pod: IpAddr = "10.0.0.7".parse().expect("an address");
        let kubelet: IpAddr = "10.0.0.1".parse().expect("an address");
        let first = sources.admit(pod).expect("first");
        // The same pod, seen through a dual-stack listener.
        let mapped = sources
            .admit("::ffff:10.0.0.7".parse().expect("an address"))
            .expect("second");
        assert!(sources.admit(pod).is_none(), "a third from the same pod");
        let other = sources.admit(kubelet).expect("another source");
        drop(first);
        let again = sources.admit(pod).expect("a slot came back");
        drop((mapped, other, again));
        assert!(sources.held().is_empty(), "no entries left behind");
    }

    #[test]
    fn readyz_reflects_readiness() {
        let metrics = Metrics::default();
        assert_eq!(
            respond("/readyz", &metrics, false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond("/readyz", &metrics, true).status(), StatusCode::OK);
        assert_eq!(
            respond("/healthz", &metrics, false).status(),
            StatusCode::OK
        );
    }
}
