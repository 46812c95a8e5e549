//! `porthole-pve-sim --config FILE --state-dir DIR`: runs the simulator until
//! SIGTERM/SIGINT (or, with `--exit-on-stdin-eof`, until its parent closes stdin),
//! then stops its VMs.

use std::path::PathBuf;

use clap::Parser;
use tokio::io::AsyncReadExt as _;

#[derive(Parser)]
#[command(
    version,
    about = "A faithful Proxmox VE console simulator with real QEMU VMs (for tests)"
)]
struct Cli {
    /// YAML configuration (see the README).
    #[arg(long, env = "PORTHOLE_PVE_SIM_CONFIG")]
    config: PathBuf,
    /// Where VM sockets, ca.pem and ready.json go.
    #[arg(long, env = "PORTHOLE_PVE_SIM_STATE_DIR")]
    state_dir: PathBuf,
    /// Exit when stdin reaches EOF: a parent that dies (even by SIGKILL) closes
    /// the pipe, so the simulator and its VMs go with it.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "porthole-pve-sim failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = porthole_pve_sim::Config::from_file(&cli.config)?;
    let sim = porthole_pve_sim::Simulator::start(config, &cli.state_dir).await?;
    let ready = sim.write_ready_file(&cli.state_dir)?;
    tracing::info!(path = %ready.display(), "wrote ready file");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stdin_closed = async {
        if !cli.exit_on_stdin_eof {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 256];
        while matches!(stdin.read(&mut buffer).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        () = stdin_closed => tracing::info!("stdin closed"),
    }
    sim.shutdown().await;
    let _ = std::fs::remove_file(cli.state_dir.join("ready.json"));
    Ok(())
}
