//! The proxy's Prometheus metrics. Every label value comes from a fixed set, so
//! no client can grow the series count.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use porthole_api::contract::UpstreamFailure;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values spelled the Prometheus way (snake case), from a fixed set.
macro_rules! label_value {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                let text = match self {
                    $($name::$variant => $text,)*
                };
                EncodeLabelValue::encode(&text, encoder)
            }
        }
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// Browser to VNC server.
    Upstream,
    /// VNC server to browser.
    Downstream,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

label_value!(Direction { Upstream => "upstream", Downstream => "downstream" });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, or the wrong one.
    BadToken,
    /// Too many failures: refused before checking.
    RateLimited,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    pub reason: AuthFailure,
}

label_value!(AuthFailure { BadToken => "bad_token", RateLimited => "rate_limited" });

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum InputKind {
    Key,
    Pointer,
}

label_value!(InputKind { Key => "key", Pointer => "pointer" });

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabels {
    pub kind: InputKind,
}

/// A label holding a fixed string: a [`porthole_api::contract::EndReason::label`]
/// or a [`crate::relay::End::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// A label holding an [`UpstreamFailure::label`]: one of a fixed ten.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub failure: &'static str,
}

/// Everything the proxy counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    pub bytes: Family<DirectionLabels, Counter>,
    pub viewers: Gauge,
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    pub input_events: Family<InputLabels, Counter>,
    session_seconds: Gauge<f64, AtomicU64>,
    pub connections_ended: Family<ReasonLabels, Counter>,
    pub session_end: Family<ReasonLabels, Gauge>,
    /// Proxmox VE: how long `vncproxy` took to mint a console.
    pub pve_mint_seconds: Histogram,
    /// Proxmox VE: consoles that could not be minted or opened, by kind.
    pub pve_mint_failures: Family<FailureLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let bytes = Family::default();
        let viewers = Gauge::default();
        let auth_failures = Family::default();
        let input_events = Family::default();
        let session_seconds = Gauge::default();
        let connections_ended = Family::default();
        let session_end = Family::default();
        // 10 ms to about 20 s: Proxmox VE starts a worker for every console.
        let pve_mint_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let pve_mint_failures = Family::default();

        let mut registry = Registry::with_prefix("porthole_proxy");
        registry.register(
            "relayed_bytes",
            "Bytes relayed between browser and VNC server",
            bytes.clone(),
        );
        registry.register("viewers", "Viewers connected now", viewers.clone());
        registry.register(
            "auth_failures",
            "WebSocket upgrades refused for their token",
            auth_failures.clone(),
        );
        registry.register(
            "input_events",
            "Key and pointer events relayed from viewers",
            input_events.clone(),
        );
        registry.register(
            "session_seconds",
            "Seconds since the proxy started serving",
            session_seconds.clone(),
        );
        registry.register(
            "connections_ended",
            "Viewer connections ended, by reason",
            connections_ended.clone(),
        );
        registry.register(
            "session_end",
            "1 for the reason the session ended, once it has",
            session_end.clone(),
        );
        registry.register(
            "pve_mint_seconds",
            "Proxmox VE: seconds vncproxy took to mint a console for a viewer",
            pve_mint_seconds.clone(),
        );
        registry.register(
            "pve_mint_failures",
            "Proxmox VE: consoles that could not be minted or opened (vncproxy, vncwebsocket, VNC authentication), by failure kind",
            pve_mint_failures.clone(),
        );
        Self {
            registry,
            started: Instant::now(),
            bytes,
            viewers,
            auth_failures,
            input_events,
            session_seconds,
            connections_ended,
            session_end,
            pve_mint_seconds,
            pve_mint_failures,
        }
    }

    pub fn pve_minted(&self, took: Duration) {
        self.pve_mint_seconds.observe(took.as_secs_f64());
    }

    pub fn pve_failed(&self, failure: UpstreamFailure) {
        self.pve_mint_failures
            .get_or_create(&FailureLabels {
                failure: failure.label(),
            })
            .inc();
    }

    pub fn add_bytes(&self, direction: Direction, n: usize) {
        self.bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n as u64);
    }

    pub fn auth_failed(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels { reason })
            .inc();
    }

    pub fn add_input(&self, keys: u64, pointer: u64) {
        for (kind, n) in [(InputKind::Key, keys), (InputKind::Pointer, pointer)] {
            if n > 0 {
                self.input_events
                    .get_or_create(&InputLabels { kind })
                    .inc_by(n);
            }
        }
    }

    /// The text exposition, with the session's age brought up to date.
    pub fn encode(&self) -> String {
        self.session_seconds
            .set(self.started.elapsed().as_secs_f64());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_with_bounded_labels() {
        let m = Metrics::new();
        m.add_bytes(Direction::Upstream, 10);
        m.add_bytes(Direction::Downstream, 20);
        m.viewers.inc();
        m.auth_failed(AuthFailure::BadToken);
        m.add_input(2, 3);
        m.connections_ended
            .get_or_create(&ReasonLabels {
                reason: "viewer-left",
            })
            .inc();
        m.pve_minted(Duration::from_millis(300));
        m.pve_failed(UpstreamFailure::VmNotRunning);
        let text = m.encode();
        for line in [
            "porthole_proxy_relayed_bytes_total{direction=\"upstream\"} 10",
            "porthole_proxy_relayed_bytes_total{direction=\"downstream\"} 20",
            "porthole_proxy_viewers 1",
            "porthole_proxy_auth_failures_total{reason=\"bad_token\"} 1",
            "porthole_proxy_input_events_total{kind=\"key\"} 2",
            "porthole_proxy_input_events_total{kind=\"pointer\"} 3",
            "porthole_proxy_connections_ended_total{reason=\"viewer-left\"} 1",
            "porthole_proxy_session_seconds ",
            "porthole_proxy_pve_mint_seconds_count 1",
            "porthole_proxy_pve_mint_seconds_bucket{le=\"0.32\"} 1",
            "porthole_proxy_pve_mint_failures_total{failure=\"vm-not-running\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
