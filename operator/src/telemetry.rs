//! Logs, metrics and the health endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::Store;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};
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

/// Serves `/healthz`, `/readyz` (true once the controller runs) and `/metrics`.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                warn!(%error, "accept failed");
                continue;
            }
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = respond(req.uri().path(), &metrics, ready.load(Ordering::Relaxed));
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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
