//! `bench/results.json`: everything a run measured, every round of every
//! contender, so the report (and anyone) can be recomputed from it.

use serde::{Deserialize, Serialize};

use crate::contender::Id;
use crate::procfs::Usage;
use crate::stats::Latencies;

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub started_at: String,
    pub finished_at: String,
    pub duration_s: f64,
    pub quick: bool,
    pub machine: Machine,
    pub settings: Settings,
    pub contenders: Vec<ContenderInfo>,
    pub startup: Vec<StartupSample>,
    pub bulk: Vec<BulkSample>,
    pub latency: Vec<LatencySample>,
    pub failures: Vec<Failure>,
    /// perf profiles of porthole-proxy and the relay under bulk load, taken
    /// when porthole-proxy missed a CPU target.
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// Why a wanted profile could not be taken (no perf, say).
    #[serde(default)]
    pub profile_errors: Vec<String>,
    /// Items 6-7, the operator on the Kubernetes test bed (`porthole-bench
    /// controlplane`): written by their own runs, kept by data-plane runs.
    #[serde(default)]
    pub control_plane: Option<ControlPlane>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_kib: u64,
    /// Load averages (1, 5, 15 min) before and after the run: how busy the
    /// machine was with other work.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
    pub python: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub rounds: usize,
    pub bulk_bytes: u64,
    /// The +rec +token variant writes every relayed byte to its recording
    /// (about four times the size), so it moves less.
    pub features_bulk_bytes: u64,
    pub messages: usize,
    pub warmup: usize,
    pub startup_rounds: usize,
    pub message_bytes: usize,
    pub ticks_per_second: f64,
    pub tls_suite: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContenderInfo {
    pub id: Id,
    pub name: String,
    pub version: String,
    pub command: Option<String>,
    pub command_tls: Option<String>,
    /// Why this contender runs as it does (its fastest sensible settings).
    pub notes: Vec<String>,
    /// Set when it cannot run at all; its figures are then missing.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupSample {
    pub contender: Id,
    pub round: usize,
    /// From just before the spawn to the first TCP connection accepted.
    pub ready_ms: f64,
    /// The process tree once started and without connections.
    pub idle: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkSample {
    pub contender: Id,
    pub tls: bool,
    pub round: usize,
    pub bytes: u64,
    pub wall_s: f64,
    /// The contender's user CPU seconds during the transfer.
    pub user_s: f64,
    /// The contender's system CPU seconds during the transfer.
    pub sys_s: f64,
    /// Context switches of the contender's threads during the transfer.
    #[serde(default)]
    pub switches: u64,
    pub cpu_s_per_gib: f64,
    pub gib_per_s: f64,
    /// The process tree right after the last byte arrived (before closing).
    pub after: Usage,
    pub cipher_suite: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencySample {
    pub contender: Id,
    pub tls: bool,
    pub round: usize,
    pub latencies: Latencies,
    /// The process tree right after the last round trip (before closing).
    pub after: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub contender: Id,
    pub tls: bool,
    pub round: usize,
    pub phase: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub contender: Id,
    pub tool: String,
    pub command: String,
    /// `perf report` lines: share of samples, where, and the symbol.
    pub top: Vec<String>,
    pub note: String,
}

impl Results {
    pub fn contender(&self, id: Id) -> Option<&ContenderInfo> {
        self.contenders.iter().find(|c| c.id == id)
    }
}

/// Items 6-7: each part runs on a test bed of its own (real containers for
/// item 6, the node agent's fake containers for item 7), so each has its own
/// run time and machine figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlPlane {
    /// Item 6: `kubectl apply` to Ready, real proxy containers.
    #[serde(default)]
    pub apply_to_ready: Option<ApplyToReady>,
    /// Item 7: many sessions at once, the node agent's fake containers.
    #[serde(default)]
    pub scale: Option<Scale>,
}

/// What a control-plane part ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestBed {
    pub started_at: String,
    pub finished_at: String,
    pub duration_s: f64,
    pub quick: bool,
    /// The Kubernetes version the API server reports.
    pub kubernetes: String,
    /// `normal` (containers run with podman) or `fake-containers`.
    pub node_agent_mode: String,
    /// `git rev-parse --short HEAD` of the driver's checkout.
    pub commit: String,
    /// The operator container's image, as podman has it.
    pub operator_image: String,
    /// The operator pod's resource limits (`cpu`, `memory`).
    pub operator_limits: Vec<(String, String)>,
    /// How long the driver waited, after the install, for an operator that
    /// had led without interruption for `settle_hold_s` (`None`: it never did
    /// within the driver's patience, and the run went ahead anyway).
    #[serde(default)]
    pub settle_s: Option<f64>,
    #[serde(default)]
    pub settle_hold_s: f64,
    /// The operator container's restarts before measuring began.
    #[serde(default)]
    pub operator_restarts_before: i32,
    pub cpus: usize,
    /// Load averages (1, 5, 15 min) before and after.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
}

/// One session's way to Ready, in seconds from just before its apply request.
/// `None`: not seen (before the run gave up on it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionTiming {
    pub name: String,
    /// The apply request returned.
    pub applied_s: f64,
    /// The operator's proxy pod was first seen.
    pub pod_created_s: Option<f64>,
    /// The pod's Ready condition was first seen True.
    pub pod_ready_s: Option<f64>,
    /// The session's Service's EndpointSlice first listed a ready endpoint.
    #[serde(default)]
    pub endpoint_ready_s: Option<f64>,
    /// The session's Ready condition was first seen True.
    pub ready_s: Option<f64>,
}

/// Item 6.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyToReady {
    pub bed: TestBed,
    pub sessions: usize,
    /// Sessions in flight at once; 1: each applied once the previous is Ready.
    pub concurrency: usize,
    /// How long the driver waited for one session before giving up on it.
    pub give_up_s: f64,
    pub timings: Vec<SessionTiming>,
    pub failures: Vec<String>,
}

/// The operator process at one moment of item 7.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorSample {
    /// Seconds since the first apply (negative: the baseline before it).
    pub t_s: f64,
    pub rss_kib: u64,
    /// VmHWM: the process's peak RSS so far.
    pub hwm_kib: u64,
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Open connections from pods to the API server (the kubernetes Service,
    /// relayed by the node agent on the host): in this bench, the operator's.
    #[serde(default)]
    pub api_connections: Option<u32>,
}

/// How often a log line of one kind appeared during a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogCount {
    pub level: String,
    pub message: String,
    pub count: usize,
    /// The first such line, shortened.
    pub example: String,
}

/// Item 7.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scale {
    pub bed: TestBed,
    pub sessions: usize,
    /// Each session's `spec.timeout`.
    pub session_timeout: String,
    pub session_timeout_s: f64,
    /// Apply requests in flight at once.
    pub concurrency: usize,
    /// When the first apply request went out (Unix seconds): the origin of
    /// every `*_s` figure and sample time.
    pub first_apply_unix_s: f64,
    /// From the first apply request to the last one's return.
    pub apply_s: f64,
    /// From the first apply request until every session was Ready (`None`:
    /// not all were, before the first deadline).
    pub all_ready_s: Option<f64>,
    /// Sessions seen Ready at all.
    pub ready_count: usize,
    pub timings: Vec<SessionTiming>,
    /// The earliest and latest `status.expiresAt` (RFC 3339).
    pub first_expires_at: String,
    pub last_expires_at: String,
    /// From the latest `status.expiresAt` until every session was seen Expired.
    pub all_expired_after_deadline_s: Option<f64>,
    /// Sessions that ended Expired (the others ended otherwise, or not at all).
    pub expired_count: usize,
    /// From the latest `status.expiresAt` until no Pod, Service or Secret
    /// with the session label was left.
    pub cleaned_up_after_deadline_s: Option<f64>,
    /// From the moment all sessions were seen Expired until that point.
    pub cleaned_up_after_expired_s: Option<f64>,
    /// Per session, `status.endedAt - status.expiresAt` (whole seconds: both
    /// are written with second precision).
    pub ended_minus_expires_s: Vec<f64>,
    /// Per session, when the driver saw the phase Expired, minus
    /// `status.expiresAt` (milliseconds precision; includes the status write
    /// and the watch delivery).
    pub seen_expired_minus_expires_s: Vec<f64>,
    /// Most children (Pods, Services, Secrets) seen at once.
    pub peak_children: [usize; 3],
    /// The operator's process: how it was found, and every second's sample.
    pub operator_pid: u32,
    pub operator_found_by: String,
    /// Times the operator process was replaced during the run, and when
    /// (seconds from the first apply, as the sampler noticed).
    pub operator_restarts: usize,
    #[serde(default)]
    pub operator_restarted_at_s: Vec<f64>,
    /// The operator's log lines saying it lost its leadership Lease.
    #[serde(default)]
    pub lost_leadership: Vec<String>,
    /// The kubernetes Service's address, whose connections were counted.
    #[serde(default)]
    pub api_address: String,
    /// CPU seconds of each test-bed process, the operator and the driver
    /// from the first apply to the end of the clean-up.
    #[serde(default)]
    pub bed_cpu_s: Vec<(String, f64)>,
    pub samples: Vec<OperatorSample>,
    /// The operator's `/metrics` (its `porthole_operator_*` series) before the
    /// first apply and after the clean-up.
    pub metrics_before: std::collections::BTreeMap<String, f64>,
    pub metrics_after: std::collections::BTreeMap<String, f64>,
    /// Warnings and errors in the operator's and the node agent's logs during the run.
    pub operator_log: Vec<LogCount>,
    pub node_agent_log: Vec<LogCount>,
    pub failures: Vec<String>,
}
