//! porthole-pve-sim: a faithful Proxmox VE console simulator for porthole's tests.
//!
//! It serves the parts of the PVE API a console client uses (login tickets, API
//! tokens, CSRF, `vncproxy`, `vncwebsocket`, VM status, task status) over HTTPS
//! with a generated CA, and runs real QEMU VMs behind them. A test-only control
//! API under `/_sim/` (not part of PVE) drives the VMs and provokes faults. See
//! the README for every deviation from the real server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), porthole_pve_sim::Error> {
//! let config = porthole_pve_sim::Config::from_yaml("vms: [{vmid: 100}]")?;
//! let sim = porthole_pve_sim::Simulator::start(config, "/tmp/pve-sim-state").await?;
//! println!("{} {}", sim.url(), sim.fingerprint_sha256());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod params;
pub mod png;
pub mod qemu;
pub mod reply;
pub mod rfb;
pub mod server;
pub mod state;
pub mod tickets;
pub mod tls;
pub mod vncproxy;
pub mod wsrelay;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use config::{Behaviour, Config, Kind};
pub use state::Faults;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Tickets(#[from] tickets::TicketError),
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

/// What `ready.json` holds, and what the handle tells embedding tests.
#[derive(Clone, Debug, Serialize)]
pub struct ReadyInfo {
    /// `https://IP:PORT`.
    pub url: String,
    pub ca_pem_path: PathBuf,
    pub ca_pem: String,
    /// SHA-256 of the server certificate, `AA:BB:...` (as `openssl x509 -fingerprint -sha256`).
    pub fingerprint_sha256: String,
    pub node: String,
    pub behaviour: Behaviour,
}

/// Starts simulators.
pub struct Simulator;

/// A running simulator. Dropping it without [`SimulatorHandle::shutdown`] stops
/// serving and cancels its tasks; the VMs' processes are killed when the last
/// task holding them ends (`kill_on_drop`).
pub struct SimulatorHandle {
    sim: Arc<state::Sim>,
    addr: SocketAddr,
    info: ReadyInfo,
    tls: Arc<rustls::ServerConfig>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// Fired to take the API down (see [`SimulatorHandle::take_down`]).
    outage: tokio_util::sync::CancellationToken,
}

impl Simulator {
    /// Generates the PKI, starts the configured VMs (those with `running: true`),
    /// binds the listener and serves. `state_dir` holds the VMs' sockets and
    /// `ca.pem`; it is created if missing.
    pub async fn start(
        config: Config,
        state_dir: impl AsRef<Path>,
    ) -> Result<SimulatorHandle, Error> {
        config.validate()?;
        let state_dir = state_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&state_dir).map_err(|source| Error::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let bind_to: SocketAddr = config.listen.parse().map_err(|_| {
            config::ConfigError::Invalid(format!("listen {:?} is not IP:PORT", config.listen))
        })?;
        let listener = tokio::net::TcpListener::bind(bind_to)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let pki = tls::Pki::generate(&config.node, addr.ip())?;
        let tls_config = pki.server_config()?;
        let ca_pem_path = state_dir.join("ca.pem");
        std::fs::write(&ca_pem_path, &pki.ca_pem).map_err(|source| Error::StateDir {
            path: ca_pem_path.display().to_string(),
            source,
        })?;

        let mut vms = BTreeMap::new();
        for vm_config in &config.vms {
            let vm = qemu::Vm::new(vm_config, &config.qemu_binary, &state_dir)?;
            vms.insert(
                vm_config.vmid,
                state::VmEntry {
                    vm: Arc::new(vm),
                    input: rfb::InputLog::default(),
                },
            );
        }
        let starts = config
            .vms
            .iter()
            .filter(|v| v.running)
            .map(|v| vms[&v.vmid].vm.clone());
        let results =
            futures::future::join_all(starts.map(|vm| async move { vm.start().await })).await;
        let info = ReadyInfo {
            url: format!("https://{addr}"),
            ca_pem_path,
            ca_pem: pki.ca_pem.clone(),
            fingerprint_sha256: pki.fingerprint_sha256(),
            node: config.node.clone(),
            behaviour: config.behaviour,
        };
        let sim = state::Sim::new(config, tickets::TicketAuthority::new()?, vms, pki.ca_pem);
        if let Some(error) = results.into_iter().find_map(Result::err) {
            stop_vms(&sim).await;
            return Err(error.into());
        }
        let outage = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(server::serve(
            sim.clone(),
            listener,
            tls_config.clone(),
            outage.clone(),
        ));
        tracing::info!(url = %info.url, node = %info.node, behaviour = ?info.behaviour, "PVE simulator ready");
        Ok(SimulatorHandle {
            sim,
            addr,
            info,
            tls: tls_config,
            server: Some(server),
            outage,
        })
    }
}

async fn stop_vms(sim: &state::Sim) {
    let stops = sim.vms.values().map(|entry| entry.vm.clone());
    futures::future::join_all(stops.map(|vm| async move {
        if let Err(e) = vm.stop().await {
            tracing::warn!(vmid = vm.vmid, error = %e, "stopping VM failed");
        }
    }))
    .await;
}

impl SimulatorHandle {
    /// `https://IP:PORT`.
    pub fn url(&self) -> &str {
        &self.info.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster CA (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.info.ca_pem
    }

    pub fn fingerprint_sha256(&self) -> &str {
        &self.info.fingerprint_sha256
    }

    pub fn node(&self) -> &str {
        &self.info.node
    }

    /// Everything `ready.json` contains.
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.info
    }

    /// Writes `ready.json` into `dir` atomically (write, then rename).
    pub fn write_ready_file(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("ready.json");
        let tmp = dir.join(".ready.json.tmp");
        let text = serde_json::to_string_pretty(&self.info).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Takes the API down, as when pveproxy dies: the listener closes (new
    /// connections are refused) and open API connections are dropped. The
    /// VMs, tickets and keys stay: [`SimulatorHandle::bring_up`] serves the
    /// same API on the same address again.
    pub async fn take_down(&mut self) {
        self.outage.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        tracing::info!(url = %self.info.url, "PVE simulator API down");
    }

    /// Serves the API again on the address it had, after [`SimulatorHandle::take_down`].
    pub async fn bring_up(&mut self) -> Result<(), Error> {
        if self.server.is_some() {
            return Ok(());
        }
        // Tokio sets SO_REUSEADDR, so connections the outage left in
        // TIME_WAIT do not hold the port.
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: self.addr.to_string(),
                source,
            })?;
        self.outage = tokio_util::sync::CancellationToken::new();
        self.server = Some(tokio::spawn(server::serve(
            self.sim.clone(),
            listener,
            self.tls.clone(),
            self.outage.clone(),
        )));
        tracing::info!(url = %self.info.url, "PVE simulator API up again");
        Ok(())
    }

    /// Stops serving, ends vncproxy workers and relays, and stops every VM.
    pub async fn shutdown(mut self) {
        self.sim.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.sim.tracker.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.sim.tracker.wait()).await;
        stop_vms(&self.sim).await;
        tracing::info!("PVE simulator stopped");
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.sim.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
