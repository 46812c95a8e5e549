//! Items 6-7 of `make bench`: the operator on the Kubernetes test bed
//! (`porthole-bench controlplane PART`). `bench/bench.sh` brings up the test
//! bed for each part (real containers for `apply-to-ready`, the node agent's
//! fake containers for `scale`) and installs porthole; the driver applies
//! sessions with kube-rs (server-side apply, as `kubectl apply --server-side`)
//! and times them with watches. Each part's results replace its own entry in
//! `bench/results.json`; the report is rewritten from the whole file.

pub mod cluster;
pub mod operator;
pub mod run;

/// Where `make install` puts porthole, and so every session's children.
pub const PORTHOLE_NAMESPACE: &str = "porthole-system";

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::results::{ControlPlane, Results};

/// Which measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Item 6: `kubectl apply` to Ready, one session after another, real
    /// proxy containers (a normal test bed).
    ApplyToReady,
    /// Item 7: many sessions at once until they expire and are cleaned up,
    /// operator memory and CPU (a test bed whose node agent fakes the proxy
    /// containers: `PORTHOLE_FAKE_CONTAINERS=1 e2e/scripts/cluster-up.sh`).
    Scale,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub part: Part,
    #[arg(long, default_value = ".e2e/kubeconfig")]
    pub kubeconfig: PathBuf,
    /// The test bed's state directory (the node agent's mode and log).
    #[arg(long, default_value = ".e2e")]
    pub state: PathBuf,
    /// Sessions [default: apply-to-ready 50, scale 1000; quick 5 and 50].
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Apply requests in flight at once [default: apply-to-ready 1, each
    /// session applied once the previous one is Ready; scale 32].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Each session's spec.timeout [default: apply-to-ready 30m; scale 3m,
    /// quick 1m]: for scale, long enough for all to be Ready before the first
    /// expires.
    #[arg(long)]
    pub session_timeout: Option<String>,
    /// apply-to-ready: seconds to wait for one session before giving up on it.
    #[arg(long, default_value_t = 120)]
    pub give_up: u64,
}

impl Args {
    pub fn plan(&self, quick: bool) -> run::Plan {
        let (sessions, concurrency, timeout) = match (self.part, quick) {
            (Part::ApplyToReady, false) => (50, 1, "30m"),
            (Part::ApplyToReady, true) => (5, 1, "30m"),
            (Part::Scale, false) => (1000, 32, "3m"),
            (Part::Scale, true) => (50, 32, "1m"),
        };
        run::Plan {
            quick,
            kubeconfig: self.kubeconfig.clone(),
            state: self.state.clone(),
            sessions: self.sessions.unwrap_or(sessions),
            concurrency: self.concurrency.unwrap_or(concurrency),
            session_timeout: self
                .session_timeout
                .clone()
                .unwrap_or_else(|| timeout.into()),
            give_up: Duration::from_secs(self.give_up),
        }
    }
}

/// Runs one part and merges it into `results` (the file must exist: the
/// data plane's figures are kept as they are).
pub fn run(args: &Args, quick: bool, results: &std::path::Path) -> Result<Results> {
    let text = std::fs::read_to_string(results).with_context(|| {
        format!(
            "cannot read {}: run the data-plane benchmark first (make bench)",
            results.display()
        )
    })?;
    let mut all: Results = serde_json::from_str(&text).context("unreadable results")?;
    let plan = args.plan(quick);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let control_plane = all.control_plane.get_or_insert_with(ControlPlane::default);
    match args.part {
        Part::ApplyToReady => {
            control_plane.apply_to_ready = Some(rt.block_on(run::apply_to_ready(&plan))?);
        }
        Part::Scale => control_plane.scale = Some(rt.block_on(run::scale(&plan))?),
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn quick_runs_are_small() {
        let cli = Cli::parse_from(["x", "scale"]);
        assert_eq!(cli.args.plan(false).sessions, 1000);
        assert_eq!(cli.args.plan(false).session_timeout, "3m");
        assert_eq!(cli.args.plan(true).sessions, 50);
        let cli = Cli::parse_from(["x", "apply-to-ready", "--sessions", "7"]);
        assert_eq!(cli.args.plan(true).sessions, 7);
        assert_eq!(cli.args.plan(false).concurrency, 1);
    }
}
