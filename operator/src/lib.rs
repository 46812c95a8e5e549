//! The porthole operator: for each ConsoleSession it validates the request
//! against its Hypervisor, creates the session's Secret, proxy Pod and Service,
//! and publishes the console URL and phase in the session's status.
#![forbid(unsafe_code)]

pub mod cleaned;
pub mod config;
pub mod context;
pub mod controller;
pub mod exposure;
pub mod hypervisor;
pub mod leader;
pub mod naming;
pub mod proxmox;
pub mod reconcile;
pub mod release;
pub mod resources;
pub mod status;
pub mod sweep;
pub mod target;
pub mod telemetry;
pub mod validate;
pub mod viewers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use config::Config;

/// Runs the operator: the health/metrics endpoint, and the controllers while
/// this replica leads.
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
    let election = config
        .leader_elect
        .then(|| leader_config(&config))
        .transpose()?;
    let ctx = Arc::new(context::Context::new(client.clone(), config, metrics));
    // Ready means up, not leading: were standbys unready, a rolling update would
    // wait forever for the new pod while the old one keeps the Lease.
    ready.store(true, Ordering::Relaxed);
    let controllers = async {
        let ((), ()) = futures::future::join(
            controller::run_controller(client.clone(), ctx.clone()),
            hypervisor::run_controller(client.clone(), ctx),
        )
        .await;
    };
    let leading = tokio::sync::watch::Sender::new(false);
    let work = async {
        match &election {
            // Err on lost leadership: exit, so that Kubernetes restarts us as a standby.
            Some(election) => {
                // A client of its own: renewals must not queue behind a burst
                // of reconciles on the shared client's connections.
                let lease_client = kube::Client::try_default().await?;
                Ok(leader::run_as_leader(lease_client, election, &leading, controllers).await?)
            }
            None => {
                controllers.await;
                Ok(())
            }
        }
    };
    tokio::select! {
        result = work => result,
        result = http => Err(anyhow::anyhow!("the health endpoint stopped: {:?}", result)),
    }
}

/// Leader election settings: compete for the Lease in our own namespace, as this pod.
fn leader_config(config: &Config) -> anyhow::Result<leader::LeaderConfig> {
    let election = leader::LeaderConfig {
        lease_duration: config.leader_election_lease_duration,
        renew_deadline: config.leader_election_renew_deadline,
        retry_period: config.leader_election_retry_period,
        ..leader::LeaderConfig::new(
            &config.namespace,
            &config.leader_election_lease,
            leader::identity()?,
        )
    };
    election.validate()?;
    Ok(election)
}
