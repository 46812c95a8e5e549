//! The command line: `porthole-proxy session` for pod mode, otherwise
//! websockify's arguments.

use std::process::{ExitCode, Stdio};

use clap::{Parser, Subcommand};
use porthole_api::contract::{self, EndReason};
use tracing_subscriber::EnvFilter;

use crate::config::{SessionArgs, SessionConfig};
use crate::replay::{self, ReplayArgs};
use crate::session;
use crate::websockify::{Websockify, WebsockifyArgs};

#[derive(Debug, Parser)]
#[command(
    name = "porthole-proxy",
    version,
    about = "WebSocket to VNC console proxy: porthole's session pods, or a websockify drop-in",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
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
    if cli.command.is_none() && cli.websockify.daemon {
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
        Ok(EndReason::UpstreamFailed { .. }) => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve");
            ExitCode::FAILURE
        }
    }
}

async fn run_websockify(args: WebsockifyArgs) -> ExitCode {
    let proxy = match Websockify::new(args) {
        Ok(proxy) => proxy,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match proxy.run(termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `-D`: starts this same command line again without `-D`, detached in its
/// own process group with no terminal, and returns at once. (Re-running
/// instead of forking keeps the proxy free of `unsafe`.)
fn daemonize() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let args = std::env::args_os()
        .skip(1)
        .filter(|a| a != "-D" && a != "--daemon");
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    });
    match spawned {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("porthole-proxy: cannot start in the background: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `PORTHOLE_LOG` (default `info`, or `debug` when
/// verbose): JSON in pods, for log collectors; text for people.
pub fn init_logging(json: bool, verbose: bool) {
    let filter = EnvFilter::try_from_env(contract::env::LOG)
        .unwrap_or_else(|_| EnvFilter::new(if verbose { "debug" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
