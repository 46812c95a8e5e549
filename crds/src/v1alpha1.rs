//! `porthole.dev/v1alpha1`: ConsoleSession (namespaced) and Hypervisor (cluster-scoped).
//!
//! Doc comments here become the `kubectl explain` text: write them for users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to open one VM's console in a browser for a limited time.
///
/// The operator checks the session against its Hypervisor, creates a Secret, a
/// proxy Pod and a Service for it in porthole's own namespace (where the
/// session's namespace cannot see or change them), and publishes the console
/// URL in `status.url`. Deleting the session removes them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "porthole.dev",
    version = "v1alpha1",
    kind = "ConsoleSession",
    namespaced,
    status = "ConsoleSessionStatus",
    shortname = "console",
    doc = "A request to open one VM's console in a browser for a limited time. See spec and status.",
    category = "porthole",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Viewers","type":"integer","jsonPath":".status.viewers.count"}"#,
    printcolumn = r#"{"name":"Hypervisor","type":"string","jsonPath":".spec.hypervisor"}"#,
    printcolumn = r#"{"name":"VM","type":"integer","jsonPath":".spec.vm.id"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.vm.port"}"#,
    printcolumn = r#"{"name":"Timeout","type":"string","jsonPath":".spec.timeout"}"#,
    printcolumn = r#"{"name":"Expires At","type":"string","format":"date-time","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.record) == has(oldSelf.record) && (!has(self.record) || self.record == oldSelf.record)",
    "message": "spec.record cannot be added, changed or removed once the session exists: create a new session"
}]))]
pub struct ConsoleSessionSpec {
    /// Name of the cluster-scoped Hypervisor that hosts the VM.
    #[schemars(length(min = 1, max = 253))]
    pub hypervisor: String,
    /// Which VM's console to open on that Hypervisor.
    pub vm: VmRef,
    /// Hard lifetime of the session, counted from its creation, such as `30m` or
    /// `1h30m`. Defaults to the Hypervisor's `defaultTimeout`; may not exceed its
    /// `maxTimeout`. A session that cannot start (its Hypervisor missing or
    /// unreachable) also ends Expired at this deadline (1h when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub timeout: Option<String>,
    /// End the session (phase Expired, reason NeverConnected) when nobody has
    /// opened the console this long after it became ready, like websockify's
    /// `--timeout`. Unset: wait until `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub connect_timeout: Option<String>,
    /// End the session (phase Expired, reason Idle) after this long without user
    /// input (keys, pointer). Screen updates do not count as activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub idle_timeout: Option<String>,
    /// One viewer, once: the first viewer's disconnect ends the session
    /// (phase Completed), like websockify's `--run-once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_once: Option<bool>,
    /// Who may watch, and whether they may type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<Viewers>,
    /// How viewers reach the console: a Service (ClusterIP, NodePort,
    /// LoadBalancer) or an Ingress. Defaults to the operator's setting (the
    /// chart's `exposure.type`, ClusterIP unless changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Delete the ConsoleSession this many seconds after it ended, like a Job's
    /// field of the same name. Unset: it stays, with its final phase and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Record every viewer connection (`record: {}`), in websockify's format
    /// (noVNC's playback reads it). Recordings go to the claim the
    /// administrator names on the Hypervisor (`spec.recording`) or for the
    /// whole install, in porthole's namespace, never to one of the session's
    /// namespace: an audit trail the audited cannot delete. Files are
    /// `<namespace>/<session name>/<session uid>/connection.N`, N counting the
    /// viewer connections from 1. A Hypervisor may forbid recording (the
    /// session fails, reason `NotAllowed`) or require it (every session is
    /// recorded, asked or not). Until the claim exists the session waits
    /// (phase Pending, reason `RecordingClaimNotFound`); if the proxy cannot
    /// write a recording, it relays nothing and the session fails (reason
    /// `RecordingFailed`). Cannot be added, changed or removed once the
    /// session exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
}

/// A session's request to be recorded. Where recordings go is the
/// administrator's choice, not the session's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.claimName)",
    "message": "spec.record.claimName is no longer supported: recordings go to the claim the administrator names on the Hypervisor (spec.recording.claimName) or in porthole's chart values; write record: {}"
}]))]
pub struct Record {
    /// No longer supported: must be unset. Recordings go to the administrator's
    /// claim in porthole's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
}

/// How viewers reach a session's console.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.ingress) || (has(self.type) && self.type == 'Ingress')",
    "message": "expose.ingress applies to expose.type Ingress only"
}]))]
pub struct Expose {
    /// `ClusterIP` (reachable inside the cluster), `NodePort` (on every node's
    /// address), `LoadBalancer` (an external address from the cloud provider),
    /// or `Ingress` (a path on the ingress controller's host, TLS possible).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ExposeType>,
    /// Ingress settings; each defaults to the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExpose>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExposeType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    Ingress,
}

/// Ingress exposure: the console is served at `https://HOST/<namespace>/<name>/`
/// (under the base URL's path, when the operator has one).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressExpose {
    /// The IngressClass. Defaults to the operator's, else the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// The host name viewers use, such as `consoles.example.com`. Defaults to
    /// the host of the operator's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: Option<String>,
    /// A `kubernetes.io/tls` Secret in the session's namespace for the host;
    /// the URL is then `https`. Defaults to the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

/// Viewer policy of a session.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Viewers {
    /// `exclusive` (default): one viewer at a time, a second is refused with a
    /// clear message. `shared`: any number of viewers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ViewerPolicy>,
    /// Viewers see the screen, but their keys and clicks never reach the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_only: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ViewerPolicy {
    #[default]
    Exclusive,
    Shared,
}

/// Identifies a VM on its Hypervisor. A session can only name a VM, never a host:
/// the Hypervisor decides where the proxy connects. Set `port` for a `vnc`
/// Hypervisor, `node` and `id` (and optionally `kind`) for a `proxmox` one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.port) != has(self.id)",
        "message": "set either vm.port (for a vnc Hypervisor) or vm.node and vm.id (for a proxmox Hypervisor)"
    },
    {
        "rule": "has(self.id) == has(self.node)",
        "message": "vm.node and vm.id go together: name the Proxmox node that runs VM id"
    },
    {
        "rule": "!has(self.kind) || has(self.id)",
        "message": "vm.kind applies to Proxmox VMs only: set vm.node and vm.id too"
    }
]))]
pub struct VmRef {
    /// For `vnc` Hypervisors: the VNC TCP port of the VM's console on the
    /// hypervisor host. Must lie in the Hypervisor's `vnc.ports` range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// For `proxmox` Hypervisors: the cluster node that runs the VM, such as `pve1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
    )]
    pub node: Option<String>,
    /// For `proxmox` Hypervisors: the VM id (`vmid`), such as `100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 999999999))]
    pub id: Option<u32>,
    /// For `proxmox` Hypervisors: `qemu` (default) for a virtual machine, `lxc`
    /// for a container (its terminal, served as VNC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<VmKind>,
}

/// A Proxmox guest kind.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VmKind {
    #[default]
    Qemu,
    Lxc,
}

impl VmKind {
    /// As it appears in Proxmox API paths.
    pub fn as_str(self) -> &'static str {
        match self {
            VmKind::Qemu => crate::contract::PVE_KIND_QEMU,
            VmKind::Lxc => crate::contract::PVE_KIND_LXC,
        }
    }
}

/// Where a session stands. Completed, Expired and Failed are final.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionPhase {
    /// Accepted; the proxy is starting.
    #[default]
    Pending,
    /// The console URL works; nobody is watching.
    Ready,
    /// At least one viewer has the console open (`status.viewers.count`).
    Connected,
    /// The session ended normally.
    Completed,
    /// The session's lifetime ran out.
    Expired,
    /// The session cannot work; `status.reason` says why.
    Failed,
}

impl SessionPhase {
    pub const ALL: [SessionPhase; 6] = [
        SessionPhase::Pending,
        SessionPhase::Ready,
        SessionPhase::Connected,
        SessionPhase::Completed,
        SessionPhase::Expired,
        SessionPhase::Failed,
    ];

    /// As it appears in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPhase::Pending => "Pending",
            SessionPhase::Ready => "Ready",
            SessionPhase::Connected => "Connected",
            SessionPhase::Completed => "Completed",
            SessionPhase::Expired => "Expired",
            SessionPhase::Failed => "Failed",
        }
    }

    /// Ready or Connected: the console URL works.
    pub fn is_open(self) -> bool {
        matches!(self, SessionPhase::Ready | SessionPhase::Connected)
    }

    /// Final phases never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SessionPhase::Completed | SessionPhase::Expired | SessionPhase::Failed
        )
    }
}

/// What the operator observed about the session.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSessionStatus {
    /// Pending, Ready, Connected, Completed, Expired or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// The console URL. Its fragment carries the session's access token: browsers
    /// never send a fragment to a server, so it appears in no request line or log.
    /// Anyone who can read this ConsoleSession can open its console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A CamelCase reason for the current phase (for example `NotAllowed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable explanation of the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the session ends at the latest: creation time plus its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the session reached its final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// Who has the console open, as the proxy reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<ViewerStatus>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the console URL works (phase Ready or Connected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The session's viewers.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewerStatus {
    /// Viewers connected now.
    pub count: u32,
    /// Viewers that have connected since the session started.
    #[serde(default)]
    pub connections: u64,
    /// When a viewer last connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at: Option<Time>,
    /// When a viewer last disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnected_at: Option<Time>,
}

/// A hypervisor whose VM consoles porthole may open. Cluster-scoped: the platform
/// team registers it once; namespaces create ConsoleSessions that name it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "porthole.dev",
    version = "v1alpha1",
    kind = "Hypervisor",
    shortname = "hv",
    doc = "A hypervisor whose VM consoles porthole may open; cluster-scoped, registered by the platform team.",
    category = "porthole",
    status = "HypervisorStatus",
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.vnc.host"}"#,
    printcolumn = r#"{"name":"Proxmox","type":"string","jsonPath":".spec.proxmox.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.vnc) != has(self.proxmox)",
    "message": "set exactly one hypervisor kind: vnc or proxmox"
}]))]
pub struct HypervisorSpec {
    /// A host serving VM consoles as plain VNC on TCP ports (libvirt, Foreman).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc: Option<VncHypervisor>,
    /// A Proxmox VE cluster, reached through its API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<ProxmoxHypervisor>,
    /// Namespaces whose ConsoleSessions may use this Hypervisor, by label. `{}`
    /// allows every namespace; when absent, no namespace may (sessions fail with
    /// reason `NotAllowed`). Example: `matchLabels: {kubernetes.io/metadata.name: team-a}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
    /// Lifetime of sessions that set no `timeout`. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub default_timeout: Option<String>,
    /// The longest `timeout` a session may ask for. Default `8h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::schema")]
    pub max_timeout: Option<String>,
    /// Whether sessions on this Hypervisor are recorded, and where. Unset:
    /// sessions may ask (`spec.record`), into the install's default claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingPolicy>,
}

/// Recording of the sessions on one Hypervisor.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicy {
    /// `Allowed` (default): sessions that set `spec.record` are recorded.
    /// `Required`: every session is recorded, asked or not. `Forbidden`: a
    /// session that asks fails with reason `NotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RecordingMode>,
    /// A PersistentVolumeClaim in porthole's namespace that receives the
    /// recordings. Unset: the install's default (chart value
    /// `recording.claimName`). The proxy writes as user and group 65532 (the
    /// pod's `fsGroup`): the volume must let that group write (most storage
    /// drivers apply `fsGroup`; `hostPath` volumes do not). Sessions on
    /// different nodes sharing one claim need `ReadWriteMany`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::names::claim_name_schema")]
    pub claim_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RecordingMode {
    #[default]
    Allowed,
    Required,
    Forbidden,
}

/// Plain VNC consoles on a hypervisor host.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.ports.first <= self.ports.last",
    "message": "ports.first must not be greater than ports.last"
}]))]
pub struct VncHypervisor {
    /// Host name or IP address of the hypervisor, as the proxy pods reach it.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The TCP ports that hold VM consoles. Sessions may name no other port.
    pub ports: PortRange,
    /// An optional Secret holding the VNC password. The proxy performs VNC
    /// authentication with it; the browser never sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A Proxmox VE cluster. The operator logs in with the credentials and gives
/// each session's proxy a session-scoped login ticket; the proxy mints a console
/// ticket whenever a viewer connects.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxHypervisor {
    /// Base URL of the Proxmox VE API, such as `https://pve1.example.com:8006`.
    /// Console requests must reach the node that answered the console request:
    /// behind a load balancer, route sticky.
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://[^/?#]+/?$"))]
    pub url: String,
    /// A Secret holding `username` (`user@realm`) and `password`, recommended, or
    /// `tokenId` (`user@realm!name`) and `tokenSecret`. With a password, only a
    /// renewable login ticket reaches proxy pods; with an API token, the token does.
    /// Give the user only `VM.Console` on the VMs it serves.
    pub credentials_secret_ref: SecretRef,
    /// How to verify the API's certificate. Unset: the public web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProxmoxTls>,
    /// VM ids sessions may open (inclusive ranges). Unset: any VM the
    /// credential may open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_ids: Option<Vec<IdRange>>,
}

/// Certificate verification for a Proxmox API.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || (!has(self.caBundle) && !has(self.fingerprintSHA256))",
    "message": "insecureSkipVerify cannot be combined with caBundle or fingerprintSHA256"
}]))]
pub struct ProxmoxTls {
    /// PEM CA certificates to trust, such as the cluster's `/etc/pve/pve-root-ca.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub ca_bundle: Option<String>,
    /// Trust exactly the certificate with this SHA-256 fingerprint, as `openssl x509
    /// -noout -fingerprint -sha256` or the Proxmox GUI prints it (`AA:BB:...`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "fingerprintSHA256"
    )]
    #[schemars(regex(pattern = r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$"))]
    pub fingerprint_sha256: Option<String>,
    /// Skip certificate verification. Anyone on the path can then read consoles
    /// and tickets; the Hypervisor shows condition `InsecureTLS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// An inclusive range of Proxmox VM ids.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.first <= self.last",
    "message": "first must not be greater than last"
}]))]
pub struct IdRange {
    #[schemars(range(min = 100, max = 999999999))]
    pub first: u32,
    #[schemars(range(min = 100, max = 999999999))]
    pub last: u32,
}

impl IdRange {
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }
}

/// A Secret in porthole's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Must be porthole's namespace (the chart's release namespace), or unset:
    /// the operator reads Secrets there only, where no tenant can read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the operator observed about a Hypervisor.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HypervisorStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `InsecureTLS` (True: certificate verification is switched off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// An inclusive TCP port range.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct PortRange {
    /// First allowed port.
    #[schemars(range(min = 1, max = 65535))]
    pub first: u16,
    /// Last allowed port.
    #[schemars(range(min = 1, max = 65535))]
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// A key of a Secret in porthole's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Must be porthole's namespace (the chart's release namespace), or unset:
    /// the operator reads Secrets there only, where no tenant can read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_is_inclusive() {
        let range = PortRange {
            first: 5910,
            last: 5930,
        };
        assert!(range.contains(5910) && range.contains(5930));
        assert!(!range.contains(5909) && !range.contains(5931));
    }

    #[test]
    fn final_phases() {
        assert!(SessionPhase::Failed.is_final());
        assert!(!SessionPhase::Ready.is_final());
    }
}
