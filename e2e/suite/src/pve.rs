//! The Proxmox VE simulator as e2e tests use it: started in the test process
//! on the node's address, where proxy pods reach it, and driven through its
//! test-only control API.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use porthole_pve_sim::{Config, Simulator, SimulatorHandle};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::HYPERVISOR_HOST;
use crate::cluster::{apply, unique_suffix};

/// The user porthole logs in as in every simulator: only `VM.Console` on the
/// VMs of the test.
pub const USER: &str = "porthole@pve";
pub const PASSWORD: &str = "console-only-Pa55word";
/// A user that exists but holds no privilege.
pub const POWERLESS_USER: &str = "nobody@pve";
pub const POWERLESS_PASSWORD: &str = "nobody-Pa55word";
/// An API token of [`USER`].
pub const TOKEN_ID: &str = "porthole@pve!console";
pub const TOKEN_SECRET: &str = "0b4f4ab1-1c1e-4f53-9c7b-6b1c1fd2e6a1";

/// Every credential a simulator issued, as `/_sim/issued` lists them.
#[derive(Debug, Default, Deserialize)]
pub struct Issued {
    pub login_tickets: Vec<String>,
    pub csrf_tokens: Vec<String>,
    pub vnc_tickets: Vec<String>,
    pub vnc_passwords: Vec<String>,
}

impl Issued {
    /// Every issued secret, longest first (a VNC password may be a prefix of
    /// its ticket before April 2026).
    pub fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .login_tickets
            .iter()
            .chain(&self.csrf_tokens)
            .chain(&self.vnc_tickets)
            .chain(&self.vnc_passwords)
            .map(String::as_str)
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all
    }
}

/// A running simulator and a client of its control API.
pub struct PveSim {
    handle: SimulatorHandle,
    http: reqwest::Client,
}

/// A VM of the simulator.
pub struct SimVm {
    pub vmid: u32,
    pub kind: &'static str,
    pub running: bool,
}

impl PveSim {
    /// Starts a simulator with `behaviour` (`A` or `B`), the standard users and
    /// these VMs. [`USER`] may open every VM's console.
    pub async fn start(behaviour: &str, vms: &[SimVm]) -> Result<Self> {
        // On `/vms`, so that a VM that does not exist is reported as such
        // rather than as a permission failure (Proxmox checks permissions first).
        let privileges = json!({"/vms": ["VM.Console"]});
        let config = json!({
            "listen": format!("{HYPERVISOR_HOST}:0"),
            "behaviour": behaviour,
            "node": "pve1",
            // Real Proxmox holds 401 answers back 3 s; tests keep that.
            "users": [
                {"id": USER, "password": PASSWORD, "privileges": privileges},
                {"id": POWERLESS_USER, "password": POWERLESS_PASSWORD},
            ],
            "tokens": [{"id": TOKEN_ID, "secret": TOKEN_SECRET, "privileges": privileges}],
            "vms": vms.iter().map(|vm| json!({
                "vmid": vm.vmid, "kind": vm.kind, "running": vm.running,
            })).collect::<Vec<_>>(),
        });
        let config = Config::from_yaml(&serde_json::to_string(&config)?)?;
        let state = std::env::temp_dir().join(format!("porthole-pve-sim-{}", unique_suffix()));
        let handle = Simulator::start(config, &state)
            .await
            .context("starting the Proxmox simulator")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(handle.ca_pem().as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(PveSim { handle, http })
    }

    /// `https://IP:PORT`.
    pub fn url(&self) -> &str {
        self.handle.url()
    }

    pub fn ca_pem(&self) -> &str {
        self.handle.ca_pem()
    }

    pub fn fingerprint(&self) -> &str {
        self.handle.fingerprint_sha256()
    }

    pub fn node(&self) -> &str {
        self.handle.node()
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/_sim/{path}", self.url());
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{url} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Every credential issued so far.
    pub async fn issued(&self) -> Result<Issued> {
        Ok(serde_json::from_value(
            self.control(reqwest::Method::GET, "issued", None).await?,
        )?)
    }

    /// The key and pointer events viewers sent to `vmid`.
    pub async fn input(&self, vmid: u32) -> Result<Vec<Value>> {
        let value = self
            .control(reqwest::Method::GET, &format!("vms/{vmid}/input"), None)
            .await?;
        Ok(match value {
            Value::Array(events) => events,
            Value::Object(mut map) => match map.remove("events") {
                Some(Value::Array(events)) => events,
                _ => bail!("unexpected input answer {map:?}"),
            },
            other => bail!("unexpected input answer {other}"),
        })
    }

    /// Switches faults on (`{"listener_timeout": true}`, ...).
    pub async fn set_faults(&self, faults: Value) -> Result<()> {
        self.control(reqwest::Method::POST, "faults", Some(faults))
            .await
            .map(drop)
    }

    /// Applies a credentials Secret in porthole's namespace (the only one
    /// the operator reads Secrets in) and a Hypervisor for this simulator.
    /// `credentials` are the Secret's string data; `tls` the Hypervisor's
    /// `spec.proxmox.tls`.
    pub async fn apply_hypervisor(&self, name: &str, credentials: Value, tls: Value) -> Result<()> {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-credentials"), "namespace": crate::cluster::PORTHOLE_NAMESPACE},
            "stringData": credentials,
        });
        let hypervisor = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name},
            "spec": {
                "allowedNamespaces": {},
                "proxmox": {
                    "url": self.url(),
                    "credentialsSecretRef": {"name": format!("{name}-credentials")},
                    "tls": tls,
                },
            },
        });
        for object in [secret, hypervisor] {
            apply(&object).await?;
        }
        Ok(())
    }

    /// The password-mode credentials of [`USER`].
    pub fn password_credentials() -> Value {
        json!({"username": USER, "password": PASSWORD})
    }

    /// The API-token credentials of [`USER`].
    pub fn token_credentials() -> Value {
        json!({"tokenId": TOKEN_ID, "tokenSecret": TOKEN_SECRET})
    }

    /// Trust the simulator's CA.
    pub fn ca_tls(&self) -> Value {
        json!({"caBundle": self.ca_pem()})
    }

    /// Pin the simulator's certificate.
    pub fn pin_tls(&self) -> Value {
        json!({"fingerprintSHA256": self.fingerprint()})
    }

    /// Stops the simulator, first leaving what it issued for the secret scan
    /// (`secret-scan`, run after the e2e tests) in `.e2e/secrets/`.
    pub async fn shutdown(self) {
        if let Err(error) = self.remember_issued().await {
            eprintln!("could not record the simulator's issued secrets: {error:#}");
        }
        self.handle.shutdown().await;
    }

    async fn remember_issued(&self) -> Result<()> {
        let issued = self.issued().await?;
        let dir = crate::cluster::state_dir().join("secrets");
        std::fs::create_dir_all(&dir)?;
        let lines: String = issued
            .all()
            .into_iter()
            // Behaviour A's VNC password is the ticket's public first 8 bytes.
            .filter(|s| !s.starts_with("PVEVNC:"))
            .map(|s| format!("{s}\n"))
            .collect();
        std::fs::write(dir.join(format!("pve-{}.txt", unique_suffix())), lines)?;
        Ok(())
    }
}

/// Fault injection: the simulator's API going away and coming back.
impl PveSim {
    /// Takes the API down (the listener closes, open API connections drop)
    /// and waits until connecting is refused.
    pub async fn take_api_down(&mut self) -> Result<()> {
        self.handle.take_down().await;
        let addr = self.handle.addr();
        crate::cluster::eventually(
            Duration::from_secs(10),
            "the simulator's API to refuse connections",
            || async move {
                Ok(tokio::net::TcpStream::connect(addr)
                    .await
                    .is_err()
                    .then_some(()))
            },
        )
        .await
    }

    /// Serves the API again on the same address and waits until it answers.
    pub async fn bring_api_up(&mut self) -> Result<()> {
        self.handle.bring_up().await?;
        let url = format!("{}/api2/json/version", self.url());
        let http = self.http.clone();
        crate::cluster::eventually(
            Duration::from_secs(10),
            "the simulator's API to answer again",
            || {
                let (http, url) = (http.clone(), url.clone());
                async move { Ok(http.get(&url).send().await.ok().map(drop)) }
            },
        )
        .await
    }
}
