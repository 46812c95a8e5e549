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
    /// Items 6-7 (operator and session start-up on the Kubernetes test bed):
    /// not measured by this driver yet.
    pub control_plane: Option<serde_json::Value>,
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
