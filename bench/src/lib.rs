//! `make bench`: porthole-proxy's data plane against websockify and socat,
//! and (`porthole-bench controlplane`) the operator on the Kubernetes test bed.
//!
//! The driver starts each contender as a real process, drives it from a fast
//! client on loopback, alternates the contenders round by round, and writes
//! `bench/results.json`, `docs/benchmarks.md` and the plots beside it.

/// Progress on stderr; a closed stderr (`| head`) must not stop the run
/// half-way and leave contenders running.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod client;
pub mod contender;
pub mod controlplane;
pub mod procfs;
pub mod report;
pub mod results;
pub mod run;
pub mod stats;
pub mod target;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Parser;

use crate::contender::{ALL, Id, Tools};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "porthole-bench",
    about = "Benchmarks porthole-proxy against websockify and socat, and the operator on the test bed",
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// A smoke run: small sizes, few rounds.
    #[arg(long, global = true, env = "BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new())]
    pub quick: bool,
    /// Rounds of bulk and small-message runs [default: 5, quick 2].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// MiB per bulk transfer [default: 1024, quick 64].
    #[arg(long)]
    pub bulk_mib: Option<u64>,
    /// Small-message round trips per run [default: 20000, quick 1000].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Start-ups per contender [default: 10, quick 3].
    #[arg(long)]
    pub startup_rounds: Option<usize>,
    /// Only these contenders (comma-separated: porthole, porthole-features,
    /// websockify, socat, direct).
    #[arg(long, value_delimiter = ',', value_parser = parse_id)]
    pub only: Vec<Id>,
    /// The porthole-proxy release binary.
    #[arg(long, default_value = "target/release/porthole-proxy")]
    pub porthole: PathBuf,
    /// websockify's console script inside its venv.
    #[arg(long, required_unless_present = "report_only")]
    pub websockify: Option<PathBuf>,
    #[arg(long, default_value = "socat")]
    pub socat: PathBuf,
    /// A Python with matplotlib, for the plots (none: no plots).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Where to keep logs, certificates and recordings during the run.
    #[arg(long)]
    pub work: Option<PathBuf>,
    #[arg(long, default_value = "bench/results.json")]
    pub results: PathBuf,
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub report: PathBuf,
    /// Where the plots go (the report links them as `benchmarks/NAME.png`).
    #[arg(long, default_value = "docs/benchmarks")]
    pub plots: PathBuf,
    /// When to profile porthole-proxy with perf.
    #[arg(long, value_enum, default_value = "missed")]
    pub profile: run::ProfileWhen,
    /// porthole-proxy with symbols, for the profile.
    #[arg(long)]
    pub profile_binary: Option<PathBuf>,
    /// Rewrite the report and plots from an existing results file; run nothing.
    #[arg(long)]
    pub report_only: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Items 6-7, the operator on the Kubernetes test bed (which must be up,
    /// with porthole installed): one part's results into the results file, and
    /// the report rewritten.
    Controlplane(controlplane::Args),
}

fn parse_id(text: &str) -> Result<Id, String> {
    serde_json::from_value(serde_json::Value::String(text.into()))
        .map_err(|_| format!("unknown contender {text:?}"))
}

pub fn main() -> ExitCode {
    // The release profile aborts on panic, so no destructor stops the
    // contenders: the hook does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        contender::kill_all();
        default_hook(info);
    }));
    match run_main(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("porthole-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_main(args: Args) -> Result<()> {
    if let Some(Subcommand::Controlplane(part)) = &args.command {
        let results = controlplane::run(part, args.quick, &args.results)?;
        write(
            &args.results,
            &(serde_json::to_string_pretty(&results)? + "\n"),
        )?;
        say!("wrote {}", args.results.display());
        let plots = existing_plots(&args);
        return write_report(&args, &results, &plots);
    }
    let results: results::Results = if args.report_only {
        let text = std::fs::read_to_string(&args.results)
            .with_context(|| format!("cannot read {}", args.results.display()))?;
        serde_json::from_str(&text).context("unreadable results")?
    } else {
        let quick = args.quick;
        let pick = |given: Option<u64>, full: u64, small: u64| {
            given.unwrap_or(if quick { small } else { full })
        };
        let bulk_bytes = pick(args.bulk_mib, 1024, 64) << 20;
        let plan = run::Plan {
            quick,
            rounds: pick(args.rounds.map(|r| r as u64), 5, 2) as usize,
            bulk_bytes,
            features_bulk_bytes: (bulk_bytes / 8).max(1 << 20),
            messages: pick(args.messages.map(|m| m as u64), 20_000, 1_000) as usize,
            warmup: if quick { 100 } else { 1_000 },
            startup_rounds: pick(args.startup_rounds.map(|s| s as u64), 10, 3) as usize,
            contenders: if args.only.is_empty() {
                ALL.to_vec()
            } else {
                args.only.clone()
            },
            tools: Tools {
                porthole: absolute(&args.porthole),
                websockify: absolute(args.websockify.as_deref().unwrap_or(Path::new(""))),
                socat: args.socat.clone(),
            },
            python: args.python.clone(),
            profile: args.profile,
            profile_binary: args.profile_binary.as_deref().map(absolute),
            work: args.work.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("porthole-bench-{}", std::process::id()))
            }),
        };
        let work = plan.work.clone();
        // The control plane's figures come from runs of their own: keep them.
        let control_plane = std::fs::read_to_string(&args.results)
            .ok()
            .and_then(|text| serde_json::from_str::<results::Results>(&text).ok())
            .and_then(|previous| previous.control_plane);
        let mut results = run::run(plan)?;
        results.control_plane = control_plane;
        let _ = std::fs::remove_dir_all(&work);
        write(
            &args.results,
            &(serde_json::to_string_pretty(&results)? + "\n"),
        )?;
        results
    };
    let plots = plot(&args);
    if !args.report_only {
        say!("wrote {}", args.results.display());
    }
    write_report(&args, &results, &plots)
}

fn write_report(args: &Args, results: &results::Results, plots: &[String]) -> Result<()> {
    let analysis = std::fs::read_to_string("bench/analysis.md").ok();
    let control_plane_analysis = std::fs::read_to_string("bench/analysis-controlplane.md").ok();
    let plot_names: Vec<&str> = plots.iter().map(String::as_str).collect();
    write(
        &args.report,
        &report::render(
            results,
            report::Analyses {
                data_plane: analysis.as_deref(),
                control_plane: control_plane_analysis.as_deref(),
            },
            &plot_names,
        ),
    )?;
    say!(
        "wrote {} and {} plots in {}",
        args.report.display(),
        plots.len(),
        args.plots.display()
    );
    Ok(())
}

/// The plots already there (a control-plane run draws none).
fn existing_plots(args: &Args) -> Vec<String> {
    report::PLOTS
        .iter()
        .filter(|(file, _)| args.plots.join(file).exists())
        .map(|(file, _)| file.to_string())
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `bench/plot.py`; the names of the plots that exist afterwards.
/// Without a Python, the plots already there stay (a report rewritten with
/// `--report-only` keeps them).
fn plot(args: &Args) -> Vec<String> {
    let Some(python) = &args.python else {
        return existing_plots(args);
    };
    for (file, _) in report::PLOTS {
        let _ = std::fs::remove_file(args.plots.join(file));
    }
    let status = Command::new(python)
        .arg("bench/plot.py")
        .arg(&args.results)
        .arg(&args.plots)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        say!("plotting failed ({status:?}); the report goes without plots");
    }
    existing_plots(args)
}
