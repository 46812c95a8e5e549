//! The porthole operator: for each ConsoleSession it validates the request
//! against its Hypervisor, creates the session's Secret, proxy Pod and Service,
//! and publishes the console URL and phase in the session's status.
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
pub mod controller;
pub mod hypervisor;
pub mod naming;
pub mod proxmox;
pub mod reconcile;
pub mod resources;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod validate;
pub mod viewers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use config::Config;

/// Runs the operator: the controller and the health/metrics endpoint.
pub async fn run(config: Config) -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let client = kube::Client::try_default().await?;
    let metrics = telemetry::Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let http = tokio::spawn(telemetry::serve_http(
        config.http_addr,
        metrics.clone(),
        ready.clone(),
    ));
    let ctx = Arc::new(context::Context::new(client.clone(), config, metrics));
    ready.store(true, Ordering::Relaxed);
    tokio::select! {
        ((), ()) = futures::future::join(
            controller::run_controller(client.clone(), ctx.clone()),
            hypervisor::run_controller(client, ctx),
        ) => Ok(()),
        result = http => Err(anyhow::anyhow!("the health endpoint stopped: {:?}", result)),
    }
}
