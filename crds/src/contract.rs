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
    /// Proxmox, password mode: a login ticket (`PVE:user@realm:...`) the operator
    /// obtained for this session and renews before it expires. The user's
    /// password never leaves the operator.
    pub const PVE_TICKET: &str = "pve-ticket";
    /// Proxmox, password mode: the CSRF token that goes with [`PVE_TICKET`].
    pub const PVE_CSRF_TOKEN: &str = "pve-csrf-token";
    /// Proxmox, API-token mode: `USER@REALM!TOKENID=SECRET`. Proxmox cannot derive
    /// a narrower credential from an API token, so the token itself reaches the pod.
    pub const PVE_API_TOKEN: &str = "pve-api-token";
    /// Proxmox: the PEM CA bundle to verify the API's certificate with, when the
    /// Hypervisor sets one.
    pub const PVE_CA_BUNDLE: &str = "pve-ca.crt";
}

/// Keys of the Secret a Proxmox Hypervisor's `credentialsSecretRef` names. Set
/// `username` and `password` (recommended: the proxy then only ever holds a
/// renewable, session-scoped ticket), or `tokenId` and `tokenSecret`.
pub mod proxmox_credentials {
    /// `user@realm`, for example `porthole@pve`.
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    /// `user@realm!tokenid`, for example `porthole@pve!console`.
    pub const TOKEN_ID: &str = "tokenId";
    pub const TOKEN_SECRET: &str = "tokenSecret";
}

/// Environment variables the operator sets on a proxy pod.
pub mod env {
    /// `ADDR:PORT` the proxy listens on for the console page and WebSocket.
    pub const LISTEN: &str = "PORTHOLE_LISTEN";
    /// `ADDR:PORT` of the proxy's internal port
    /// ([`INTERNAL_PORT`](super::INTERNAL_PORT)): `/healthz`, `/readyz`,
    /// `/metrics` and the viewer report, apart from the console port.
    pub const INTERNAL_LISTEN: &str = "PORTHOLE_INTERNAL_LISTEN";
    /// `HOST:PORT` of the VNC server to relay to (plain VNC hypervisors). Set
    /// either this or [`PVE_URL`].
    pub const UPSTREAM: &str = "PORTHOLE_UPSTREAM";
    /// Proxmox: the API's base URL, `https://HOST:PORT` (no path; without a
    /// port, 443; Proxmox VE's own is 8006). The proxy mints a console
    /// (`vncproxy`) at every viewer connection and opens `vncwebsocket`.
    pub const PVE_URL: &str = "PORTHOLE_PVE_URL";
    /// Proxmox: the node that runs the VM.
    pub const PVE_NODE: &str = "PORTHOLE_PVE_NODE";
    /// Proxmox: `qemu` or `lxc`.
    pub const PVE_VM_KIND: &str = "PORTHOLE_PVE_VM_KIND";
    /// Proxmox: the VM id.
    pub const PVE_VMID: &str = "PORTHOLE_PVE_VMID";
    /// Proxmox: pin the API's certificate by its SHA-256 fingerprint
    /// (`AA:BB:...`, as `openssl x509 -fingerprint -sha256` prints it).
    pub const PVE_FINGERPRINT: &str = "PORTHOLE_PVE_FINGERPRINT";
    /// Proxmox: `true` skips certificate verification (an explicit opt-in).
    pub const PVE_INSECURE_SKIP_VERIFY: &str = "PORTHOLE_PVE_INSECURE_SKIP_VERIFY";
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
    /// Record every viewer connection to `VALUE.N` (N from 1), as the
    /// standalone proxy's `--record` does: the operator sets it to
    /// [`RECORDING_MOUNT`](super::RECORDING_MOUNT) joined with
    /// [`recording_base`](super::recording_base) when the session has
    /// `spec.record`. The proxy creates the directory at start; if it cannot,
    /// or cannot write a connection's recording, the session ends as
    /// [`EndReason::RecordingFailed`](super::EndReason::RecordingFailed)
    /// rather than relay anything unrecorded. Unset: nothing is recorded.
    pub const RECORD: &str = "PORTHOLE_RECORD";
    /// Log filter (tracing `EnvFilter` syntax).
    pub const LOG: &str = "PORTHOLE_LOG";
}

/// Proxmox guest kinds, as they appear in API paths.
pub const PVE_KIND_QEMU: &str = "qemu";
pub const PVE_KIND_LXC: &str = "lxc";

/// One viewer at a time: a second one is refused with a clear message.
pub const VIEWERS_EXCLUSIVE: &str = "exclusive";
/// Any number of viewers share the console.
pub const VIEWERS_SHARED: &str = "shared";

/// Where the session Secret is mounted in the proxy pod.
pub const SESSION_SECRET_MOUNT: &str = "/var/run/porthole/session";
/// Where a recorded session's claim (`spec.record.claimName`) is mounted in
/// the proxy pod, writable.
pub const RECORDING_MOUNT: &str = "/var/run/porthole/recordings";

/// Where a session's recordings go, relative to the recording claim:
/// `<namespace>/<session name>/<session uid>/connection`, to which the proxy
/// appends `.N` for the Nth viewer connection. The uid keeps a session that is
/// deleted and created again under the same name from overwriting the earlier
/// recordings; every part is a safe path component (a DNS label or subdomain
/// never is `.` or `..`, and a uid holds no `/`).
pub fn recording_base(namespace: &str, session_name: &str, session_uid: &str) -> String {
    format!("{namespace}/{session_name}/{session_uid}/connection")
}
/// The port the proxy container serves the console page and WebSocket on: the
/// only port in the session's Service.
pub const PROXY_PORT: u16 = 8080;
/// The name of [`PROXY_PORT`] on the proxy container.
pub const PROXY_PORT_NAME: &str = "http";
/// The proxy container's internal port: `/healthz` and `/readyz` for the
/// kubelet, `/metrics`, and the viewer report ([`VIEWERS_PATH`]) for the
/// operator. It is in no Service and its NetworkPolicy admits only the
/// operator, so nothing sent to the console port can starve the probes.
pub const INTERNAL_PORT: u16 = 8081;
/// The name of [`INTERNAL_PORT`] on the proxy container.
pub const INTERNAL_PORT_NAME: &str = "internal";
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

/// Where a proxy pod reports its viewers to the operator, as a
/// [`ViewerReport`] in JSON. The caller proves itself with the session's token
/// (`Authorization: Bearer <token>`), which the operator holds and viewers
/// already have, so the report tells nobody anything new.
///
/// `?after=GENERATION` turns the request into a long poll: the answer comes when
/// the report's generation differs (a viewer came or went), or after
/// [`VIEWERS_LONG_POLL`] with the unchanged report.
pub const VIEWERS_PATH: &str = "/_porthole/viewers";
/// The longest a `?after=` request is held open.
pub const VIEWERS_LONG_POLL: std::time::Duration = std::time::Duration::from_secs(25);

/// The viewers of a session, as its proxy saw them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerReport {
    /// Grows by one whenever a viewer connects or disconnects.
    pub generation: u64,
    /// Viewers connected now.
    pub connected: u32,
    /// Viewers that have connected since the proxy started.
    pub connections: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnected_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The address the last viewer connected from, as the proxy saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_address: Option<String>,
}

/// Labels on everything the operator creates for a session. A session's
/// children live in porthole's namespace, apart from the ConsoleSession:
/// these labels (and [`annotations::SESSION`]) say whose they are, since an
/// owner reference cannot cross namespaces.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const PROXY_NAME: &str = "porthole-proxy";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const OPERATOR_NAME: &str = "porthole-operator";
    /// The ConsoleSession's name (shortened with a hash when longer than a
    /// label value may be).
    pub const SESSION: &str = "porthole.dev/session";
    /// The ConsoleSession's namespace.
    pub const SESSION_NAMESPACE: &str = "porthole.dev/session-namespace";
    /// The ConsoleSession's uid: what the Service and NetworkPolicy select,
    /// and what the sweep of orphans checks.
    pub const SESSION_UID: &str = "porthole.dev/session-uid";
}

/// Annotations on everything the operator creates for a session.
pub mod annotations {
    /// `<namespace>/<name>` of the ConsoleSession, whole (a label value may
    /// be too short for it).
    pub const SESSION: &str = "porthole.dev/session";
}

/// The name a session's Pod, Service, Secret, NetworkPolicy and Ingress share,
/// in porthole's namespace, where sessions of every tenant meet:
/// `console-<session>-<uid>`, the session name shortened to fit. The uid, which
/// no two sessions share, keeps tenants' names from colliding; the session
/// name is there for people reading `kubectl get pods`. A valid DNS-1035
/// label (Services need one), at most 63 characters.
pub fn child_name(session: &str, uid: &str) -> String {
    const PREFIX: &str = "console-";
    const MAX: usize = 63;
    let uid: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let room = MAX.saturating_sub(PREFIX.len() + 1 + uid.len());
    let readable: String = session
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(room)
        .collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("{PREFIX}{uid}")
    } else {
        format!("{PREFIX}{readable}-{uid}")
    }
}

/// The finalizer the operator puts on every ConsoleSession, so that the
/// session's children in porthole's namespace are removed when it is deleted.
pub const FINALIZER: &str = "porthole.dev/cleanup";

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
    /// The hypervisor could not be reached or refused the console. `detail` is
    /// for people: readable, and never a secret.
    UpstreamFailed {
        failure: UpstreamFailure,
        detail: String,
    },
    /// The session is recorded (`spec.record`), and the recording could not be
    /// written: nothing was relayed unrecorded. `detail` is for people.
    RecordingFailed { detail: String },
}

impl EndReason {
    pub fn upstream_failed(failure: UpstreamFailure, detail: impl Into<String>) -> Self {
        EndReason::UpstreamFailed {
            failure,
            detail: detail.into(),
        }
    }

    pub fn recording_failed(detail: impl Into<String>) -> Self {
        EndReason::RecordingFailed {
            detail: detail.into().trim().to_string(),
        }
    }

    /// A fixed, bounded label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Expired => "expired",
            EndReason::Idle => "idle",
            EndReason::NeverConnected => "never-connected",
            EndReason::UpstreamClosed => "upstream-closed",
            EndReason::UpstreamFailed { .. } => "upstream-failed",
            EndReason::RecordingFailed { .. } => "recording-failed",
        }
    }
}

/// Why a console could not be opened, as precisely as the proxy can tell. Each
/// kind becomes its own status reason, so users can tell a stopped VM from a
/// missing permission or a certificate that does not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No TCP or HTTPS connection to the hypervisor (refused, timed out, DNS).
    Unreachable,
    /// The hypervisor's certificate matched neither the CA bundle nor the pin.
    TlsVerification,
    /// The hypervisor rejected the session's credential (login ticket or API token).
    BadCredentials,
    /// The credential lacks the privilege to open this VM's console (Proxmox `VM.Console`).
    PermissionDenied,
    /// The hypervisor does not know this VM.
    VmNotFound,
    /// The VM exists but is not running. (Proxmox VE's QEMU `vncproxy` answers
    /// for a stopped VM too; its console then closes at once, and the proxy
    /// reads why from the console's task.)
    VmNotRunning,
    /// The hypervisor's one-shot console listener was gone when the proxy came
    /// (Proxmox VE then never answers the `vncwebsocket` upgrade, or closes the
    /// console before the VNC server speaks).
    ListenerTimeout,
    /// The hypervisor rejected the console ticket it had just issued.
    TicketRejected,
    /// The VNC server rejected the VNC password.
    VncAuthentication,
    /// The hypervisor answered with something the proxy does not understand.
    Protocol,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 10] = [
        UpstreamFailure::Unreachable,
        UpstreamFailure::TlsVerification,
        UpstreamFailure::BadCredentials,
        UpstreamFailure::PermissionDenied,
        UpstreamFailure::VmNotFound,
        UpstreamFailure::VmNotRunning,
        UpstreamFailure::ListenerTimeout,
        UpstreamFailure::TicketRejected,
        UpstreamFailure::VncAuthentication,
        UpstreamFailure::Protocol,
    ];

    /// The stable text form, used in termination messages and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Unreachable => "unreachable",
            UpstreamFailure::TlsVerification => "tls-verification",
            UpstreamFailure::BadCredentials => "bad-credentials",
            UpstreamFailure::PermissionDenied => "permission-denied",
            UpstreamFailure::VmNotFound => "vm-not-found",
            UpstreamFailure::VmNotRunning => "vm-not-running",
            UpstreamFailure::ListenerTimeout => "listener-timeout",
            UpstreamFailure::TicketRejected => "ticket-rejected",
            UpstreamFailure::VncAuthentication => "vnc-authentication",
            UpstreamFailure::Protocol => "protocol",
        }
    }

    /// The CamelCase reason the operator puts in status and Events.
    pub fn reason(self) -> &'static str {
        match self {
            UpstreamFailure::Unreachable => "HypervisorUnreachable",
            UpstreamFailure::TlsVerification => "TLSVerificationFailed",
            UpstreamFailure::BadCredentials => "BadCredentials",
            UpstreamFailure::PermissionDenied => "PermissionDenied",
            UpstreamFailure::VmNotFound => "VMNotFound",
            UpstreamFailure::VmNotRunning => "VMNotRunning",
            UpstreamFailure::ListenerTimeout => "ListenerTimeout",
            UpstreamFailure::TicketRejected => "TicketRejected",
            UpstreamFailure::VncAuthentication => "VNCAuthenticationFailed",
            UpstreamFailure::Protocol => "HypervisorProtocolError",
        }
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::UpstreamFailed { failure, detail } => {
                write!(f, "upstream-failed: {failure}: {detail}")
            }
            EndReason::RecordingFailed { detail } if !detail.is_empty() => {
                write!(f, "recording-failed: {detail}")
            }
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
            _ => {
                if let Some(rest) = s.strip_prefix("upstream-failed") {
                    parse_upstream_failure(rest.trim_start_matches(':').trim())
                } else if let Some(detail) = s
                    .strip_prefix("recording-failed")
                    .filter(|rest| rest.is_empty() || rest.starts_with(':'))
                {
                    EndReason::recording_failed(&detail[detail.len().min(1)..])
                } else {
                    return Err(UnknownEndReason(s.to_string()));
                }
            }
        })
    }
}

/// `KIND: DETAIL`; a message without a known kind is a protocol failure with
/// the whole text as its detail, so nothing the proxy said is lost.
fn parse_upstream_failure(text: &str) -> EndReason {
    let (kind, detail) = text.split_once(':').unwrap_or((text, ""));
    match UpstreamFailure::ALL
        .into_iter()
        .find(|f| f.label() == kind.trim())
    {
        Some(failure) => EndReason::upstream_failed(failure, detail.trim()),
        None => EndReason::upstream_failed(UpstreamFailure::Protocol, text),
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
            EndReason::upstream_failed(UpstreamFailure::Unreachable, "connection refused"),
            EndReason::upstream_failed(
                UpstreamFailure::VmNotRunning,
                "Proxmox VE says: VM 100 not running",
            ),
            EndReason::recording_failed(
                "cannot create /var/run/porthole/recordings/web/u1/connection.1: No space left on device (os error 28)",
            ),
            EndReason::recording_failed(""),
        ] {
            assert_eq!(reason.to_string().parse::<EndReason>(), Ok(reason));
        }
    }

    #[test]
    fn every_upstream_failure_round_trips() {
        for failure in UpstreamFailure::ALL {
            let reason = EndReason::upstream_failed(failure, "a: b");
            assert_eq!(reason.to_string().parse::<EndReason>(), Ok(reason));
        }
    }

    #[test]
    fn an_upstream_failure_of_unknown_kind_keeps_its_text() {
        assert_eq!(
            "upstream-failed: exploded: badly".parse::<EndReason>(),
            Ok(EndReason::upstream_failed(
                UpstreamFailure::Protocol,
                "exploded: badly"
            ))
        );
    }

    #[test]
    fn unknown_end_reason_is_an_error() {
        assert!("exploded".parse::<EndReason>().is_err());
        assert!("recording-failedly".parse::<EndReason>().is_err());
    }

    #[test]
    fn a_recording_failure_keeps_its_detail_trimmed() {
        assert_eq!(
            "recording-failed:   disk full ".parse::<EndReason>(),
            Ok(EndReason::RecordingFailed {
                detail: "disk full".into()
            })
        );
        assert_eq!(
            EndReason::recording_failed("disk full").to_string(),
            "recording-failed: disk full"
        );
        assert_eq!(
            EndReason::recording_failed(" ").to_string(),
            "recording-failed"
        );
    }

    #[test]
    fn recordings_go_under_the_session_name_and_uid() {
        assert_eq!(
            recording_base("team-a", "web", "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"),
            "team-a/web/0f1e2d3c-aaaa-bbbb-cccc-123456789abc/connection"
        );
    }
}
