//! The contract between the operator and a proxy pod. Change it here, and both
//! sides follow.

use std::fmt;
use std::str::FromStr;

/// Keys of the session Secret the operator creates for each ConsoleSession and
/// mounts into its proxy pod at [`SESSION_SECRET_MOUNT`].
pub mod secret_keys {
    /// The browser's access token (URL-safe base64 of 32 random bytes).
    pub const TOKEN: &str = "token";
    /// The upstream VNC password, present when the hypervisor requires one.
    /// The proxy answers VNC authentication itself; the browser never sees it.
    pub const VNC_PASSWORD: &str = "vnc-password";
}

/// Environment variables the operator sets on a proxy pod.
pub mod env {
    /// `ADDR:PORT` the proxy listens on for HTTP and WebSocket.
    pub const LISTEN: &str = "PORTHOLE_LISTEN";
    /// `HOST:PORT` of the VNC server to relay to (plain VNC hypervisors).
    pub const UPSTREAM: &str = "PORTHOLE_UPSTREAM";
    /// Directory holding the session Secret's keys as files.
    pub const SESSION_DIR: &str = "PORTHOLE_SESSION_DIR";
    /// The ConsoleSession's namespace and name, for logs, metrics and the page.
    pub const SESSION_NAMESPACE: &str = "PORTHOLE_SESSION_NAMESPACE";
    pub const SESSION_NAME: &str = "PORTHOLE_SESSION_NAME";
    /// A human name of the VM shown on the console page.
    pub const VM_NAME: &str = "PORTHOLE_VM_NAME";
    /// The session's hard deadline (RFC 3339, UTC). The proxy ends the session
    /// with [`EndReason::Expired`](super::EndReason::Expired) then, and the page
    /// counts down to it.
    pub const EXPIRES_AT: &str = "PORTHOLE_EXPIRES_AT";
    /// End the session as [`EndReason::NeverConnected`](super::EndReason::NeverConnected)
    /// when no viewer has connected this long after the proxy started
    /// (a [`duration`](crate::duration) such as `5m`). Unset: wait until expiry.
    pub const CONNECT_TIMEOUT: &str = "PORTHOLE_CONNECT_TIMEOUT";
    /// End the session as [`EndReason::Idle`](super::EndReason::Idle) after this
    /// long without user input (KeyEvent or PointerEvent); framebuffer traffic does
    /// not count. Unset: never.
    pub const IDLE_TIMEOUT: &str = "PORTHOLE_IDLE_TIMEOUT";
    /// `true`: the first viewer's disconnect ends the session as
    /// [`EndReason::Completed`](super::EndReason::Completed); nobody else gets in.
    pub const RUN_ONCE: &str = "PORTHOLE_RUN_ONCE";
    /// [`VIEWERS_EXCLUSIVE`](super::VIEWERS_EXCLUSIVE) (default) or
    /// [`VIEWERS_SHARED`](super::VIEWERS_SHARED).
    pub const VIEWERS: &str = "PORTHOLE_VIEWERS";
    /// `true`: viewers' key and pointer events are dropped, never reaching the VM.
    pub const VIEW_ONLY: &str = "PORTHOLE_VIEW_ONLY";
    /// Log filter (tracing `EnvFilter` syntax).
    pub const LOG: &str = "PORTHOLE_LOG";
}

/// One viewer at a time: a second one is refused with a clear message.
pub const VIEWERS_EXCLUSIVE: &str = "exclusive";
/// Any number of viewers share the console.
pub const VIEWERS_SHARED: &str = "shared";

/// Where the session Secret is mounted in the proxy pod.
pub const SESSION_SECRET_MOUNT: &str = "/var/run/porthole/session";
/// The port the proxy container serves HTTP and WebSocket on.
pub const PROXY_PORT: u16 = 8080;
/// The port of the per-session Service.
pub const SERVICE_PORT: u16 = 80;
/// The WebSocket path, relative to the session's base URL (noVNC's default).
pub const WEBSOCKET_PATH: &str = "websockify";
/// Kubernetes' termination message path, where the proxy writes its [`EndReason`].
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The browser hands its access token over as a WebSocket subprotocol
/// `bearer.porthole.dev.<token>`, beside `binary`: a header, never the request
/// line, so it lands in no access log. The proxy answers with `binary` only.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.porthole.dev.";
/// The subprotocol of the relayed RFB stream (websockify's).
pub const BINARY_SUBPROTOCOL: &str = "binary";

/// Labels on everything the operator creates for a session.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const PROXY_NAME: &str = "porthole-proxy";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const OPERATOR_NAME: &str = "porthole-operator";
    /// The ConsoleSession's name.
    pub const SESSION: &str = "porthole.dev/session";
}

/// Why a proxy ended a session, written to its termination message and read by
/// the operator. The text forms are stable: they appear in status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The viewer left (run-once) or the proxy was asked to stop.
    Completed,
    /// The hard lifetime ran out.
    Expired,
    /// No user input for the idle timeout.
    Idle,
    /// Nobody connected within the connect timeout.
    NeverConnected,
    /// The hypervisor closed the console.
    UpstreamClosed,
    /// The hypervisor could not be reached or refused the console.
    UpstreamFailed(String),
}

impl EndReason {
    /// A fixed, bounded label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Expired => "expired",
            EndReason::Idle => "idle",
            EndReason::NeverConnected => "never-connected",
            EndReason::UpstreamClosed => "upstream-closed",
            EndReason::UpstreamFailed(_) => "upstream-failed",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::UpstreamFailed(detail) => write!(f, "upstream-failed: {detail}"),
            other => f.write_str(other.label()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown end reason {0:?}")]
pub struct UnknownEndReason(pub String);

impl FromStr for EndReason {
    type Err = UnknownEndReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Ok(match s {
            "completed" => EndReason::Completed,
            "expired" => EndReason::Expired,
            "idle" => EndReason::Idle,
            "never-connected" => EndReason::NeverConnected,
            "upstream-closed" => EndReason::UpstreamClosed,
            _ => match s.strip_prefix("upstream-failed") {
                Some(rest) => {
                    EndReason::UpstreamFailed(rest.trim_start_matches(':').trim().to_string())
                }
                None => return Err(UnknownEndReason(s.to_string())),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_through_their_text() {
        for reason in [
            EndReason::Completed,
            EndReason::Expired,
            EndReason::Idle,
            EndReason::NeverConnected,
            EndReason::UpstreamClosed,
            EndReason::UpstreamFailed("connection refused".into()),
        ] {
            assert_eq!(reason.to_string().parse::<EndReason>(), Ok(reason));
        }
    }

    #[test]
    fn unknown_end_reason_is_an_error() {
        assert!("exploded".parse::<EndReason>().is_err());
    }
}
