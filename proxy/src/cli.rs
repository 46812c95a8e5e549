//! The command line: `porthole-proxy session` for pod mode, otherwise
//! websockify's arguments.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use porthole_api::contract::{self, EndReason};
use tracing_subscriber::EnvFilter;

use crate::config::{SessionArgs, SessionConfig};
use crate::replay::{self, ReplayArgs};
use crate::session;
use crate::websockify::{Websockify, WebsockifyArgs, exit};

/// Exit statuses of standalone mode, for `--help` (kept in step with
/// [`exit`] and proxy/README.md).
const EXIT_STATUS_HELP: &str = "\
Exit status (standalone mode):
  0        stopped as asked: SIGTERM/SIGINT, --run-once, --timeout, --idle-timeout;
           with -D, the proxy is listening in the background
  1        cannot serve: cannot listen on the address, cannot start
  2        bad command line or configuration (unknown option, missing target,
           unloadable certificate, --ssl-only or --verify-client without one,
           --verify-client without --cafile)
  N        --wrap-mode=exit: the wrapped command's status (128+SIGNAL if killed)
  126/127  the wrapped command cannot be run / was not found";

/// What a background proxy (`-D`) writes on stderr once it listens; the
/// process that started it then returns.
const DAEMON_READY: &str = "\u{1}porthole-proxy: listening";
/// Once set, logs go nowhere: a background proxy has no terminal.
static DETACHED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Parser)]
#[command(
    name = "porthole-proxy",
    version,
    about = "WebSocket to VNC console proxy: porthole's session pods, or a websockify drop-in",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub websockify: WebsockifyArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one console session in a proxy pod, configured from the environment.
    Session(Box<SessionArgs>),
    /// Play a recording (`--record`) back to WebSocket viewers.
    Replay(ReplayArgs),
}

/// Runs the command line and says how the process should exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() && cli.websockify.daemon && !cli.websockify.daemon_child {
        return daemonize();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("porthole-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Session(args)) => {
            init_logging(true, false);
            runtime.block_on(run_session(args))
        }
        Some(Command::Replay(args)) => {
            init_logging(false, false);
            match runtime.block_on(replay::run(args, termination_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            init_logging(false, cli.websockify.verbose);
            runtime.block_on(run_websockify(cli.websockify))
        }
    }
}

async fn run_session(args: Box<SessionArgs>) -> ExitCode {
    let config = match SessionConfig::load(*args) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    match session::run(config, termination_signal()).await {
        // The operator reads why from the termination message; the exit code
        // only tells Kubernetes whether the pod failed.
        Ok(EndReason::UpstreamFailed { .. } | EndReason::RecordingFailed { .. }) => {
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve");
            ExitCode::FAILURE
        }
    }
}

/// Standalone mode. Errors that stop it from starting are one line on
/// stderr, `porthole-proxy: error: ...`, whatever the log settings.
async fn run_websockify(args: WebsockifyArgs) -> ExitCode {
    let daemon_child = args.daemon_child;
    let started = async {
        let proxy = Websockify::new(args)?;
        let listener = proxy.bind().await?;
        Ok::<_, crate::websockify::Error>((proxy, listener))
    };
    let (proxy, listener) = match started.await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("porthole-proxy: error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if daemon_child {
        // The process that started this one returns on this line; from here
        // on nobody reads stderr.
        let _ = writeln!(std::io::stderr(), "{DAEMON_READY}");
        DETACHED.store(true, Ordering::SeqCst);
    }
    ExitCode::from(proxy.serve(listener, termination_signal()).await)
}

/// `-D`: starts this same command line again in the background (its own
/// process group, no terminal) and returns once it listens, passing on what
/// it logged until then; if it fails first, returns its status. Re-running
/// instead of forking keeps the proxy free of `unsafe`.
fn daemonize() -> ExitCode {
    use std::os::unix::process::CommandExt;
    // First, so that a wrapped command after `--` keeps its arguments.
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("--daemon-child")
            .args(std::env::args_os().skip(1))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("porthole-proxy: error: cannot start in the background: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line == DAEMON_READY {
                eprintln!(
                    "porthole-proxy: running in the background as process {}",
                    child.id()
                );
                return ExitCode::SUCCESS;
            }
            eprintln!("{line}");
        }
    }
    match child.wait() {
        Ok(status) => ExitCode::from(match crate::websockify::wrap::exit_code(&status) {
            exit::OK => exit::FAILURE,
            code => code,
        }),
        Err(e) => {
            eprintln!("porthole-proxy: error: the background process failed: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// stderr, until a background proxy detaches.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if DETACHED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr, filtered by `PORTHOLE_LOG` (default `info`, or `debug` when
/// verbose): JSON in pods, for log collectors; text for people.
pub fn init_logging(json: bool, verbose: bool) {
    let filter = EnvFilter::try_from_env(contract::env::LOG)
        .unwrap_or_else(|_| EnvFilter::new(if verbose { "debug" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogWriter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("asked to stop");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn websockify_style_arguments() {
        let cli = Cli::try_parse_from([
            "porthole-proxy",
            "-v",
            "--run-once",
            "--timeout=5",
            "--idle-timeout=7",
            "--web=/srv/novnc",
            "--cert",
            "c.pem",
            "--ssl-only",
            "127.0.0.1:6080",
            "vnc:5900",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let a = cli.websockify;
        assert!(a.verbose && a.run_once && a.ssl_only);
        assert_eq!((a.timeout, a.idle_timeout), (Some(5), Some(7)));
        assert_eq!(a.source.as_deref(), Some("127.0.0.1:6080"));
        assert_eq!(a.target.as_deref(), Some("vnc:5900"));
    }

    #[test]
    fn wrap_command_after_double_dash() {
        let cli = Cli::try_parse_from(["porthole-proxy", "6080", "--", "vncserver", ":1"]).unwrap();
        assert_eq!(cli.websockify.wrap, ["vncserver", ":1"]);
        assert_eq!(cli.websockify.target, None);
    }

    #[test]
    fn replay_subcommand() {
        let cli = Cli::try_parse_from([
            "porthole-proxy",
            "replay",
            "rec.1",
            "--listen",
            "0.0.0.0:7000",
        ])
        .unwrap();
        let Some(Command::Replay(args)) = cli.command else {
            panic!("not replay: {cli:?}");
        };
        assert_eq!(args.file, std::path::Path::new("rec.1"));
        assert_eq!(args.listen.port(), 7000);
    }

    #[test]
    fn session_subcommand() {
        let cli =
            Cli::try_parse_from(["porthole-proxy", "session", "--upstream", "h:5900"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Session(_))));
    }
}
