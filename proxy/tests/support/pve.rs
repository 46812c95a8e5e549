//! Proxmox VE helpers for the integration tests: the simulator
//! (`porthole-pve-sim`, run in the test process through its public API), its
//! API and test-only control API, and the proxy binary in Proxmox mode.
//! Included by `tests/proxmox.rs` beside `support`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use porthole_api::contract::{EndReason, UpstreamFailure, env};
use porthole_proxy::pve::api::percent_encode;
use porthole_pve_sim::{Config, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, http::Response};

use crate::support::{DEADLINE, RfbClient, TempDir, eventually, free_port, http_get, websocket};

pub const TOKEN: &str = "cHZlLXRlc3RzLXRva2VuLW9ubHktMzItYnl0ZXMhIQ";

/// Users, tokens and privileges every test simulator has; VMs vary.
///
/// * `alice@pve` may open every console; `alice@pve!porthole` is her token.
/// * `bob@pve` may look at VMs but not open their consoles.
pub fn config(behaviour: &str, vms: &str) -> String {
    format!(
        r#"
behaviour: {behaviour}
users:
  - {{id: alice@pve, password: alice-secret, privileges: {{/vms: [VM.Console, VM.Audit]}}}}
  - {{id: bob@pve, password: bob-secret, privileges: {{/vms: [VM.Audit]}}}}
tokens:
  - {{id: alice@pve!porthole, secret: 6c1f2a4e-porthole-token, privsep: false}}
vms: {vms}
"#
    )
}

pub const ALICE_TOKEN: &str = "alice@pve!porthole=6c1f2a4e-porthole-token";

/// A running simulator with a client for its API.
pub struct PveSim {
    handle: Option<SimulatorHandle>,
    http: reqwest::Client,
    pub url: String,
    pub ca_pem: String,
    pub fingerprint: String,
    pub node: String,
    _dir: TempDir,
}

/// Everything the simulator handed out (`GET /_sim/issued`).
#[derive(Debug, Default)]
pub struct Issued {
    pub login_tickets: Vec<String>,
    pub csrf_tokens: Vec<String>,
    pub vnc_tickets: Vec<String>,
    pub vnc_passwords: Vec<String>,
}

impl Issued {
    /// Every secret, for checking none went where it must not.
    pub fn secrets(&self) -> Vec<&str> {
        [
            &self.login_tickets,
            &self.csrf_tokens,
            &self.vnc_tickets,
            &self.vnc_passwords,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }
}

impl PveSim {
    pub async fn start(yaml: &str) -> Self {
        let dir = TempDir::new("pve-sim");
        let config = Config::from_yaml(yaml).expect("a valid simulator configuration");
        let handle = Simulator::start(config, dir.path())
            .await
            .expect("the simulator starts");
        let ca_pem = handle.ca_pem().to_string();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(&ca_pem))
            .build()
            .unwrap();
        Self {
            url: handle.url().to_string(),
            fingerprint: handle.fingerprint_sha256().to_string(),
            node: handle.node().to_string(),
            ca_pem,
            handle: Some(handle),
            http,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().addr()
    }

    /// Takes the API down: connections to it are refused.
    pub async fn take_down(&mut self) {
        self.handle.as_mut().unwrap().take_down().await;
    }

    /// Serves the API again, on the same address.
    pub async fn bring_up(&mut self) {
        self.handle
            .as_mut()
            .unwrap()
            .bring_up()
            .await
            .expect("the simulator listens again");
    }

    /// Logs in as `user` (password `NAME-secret`): (ticket, CSRF token).
    pub async fn login(&self, user: &str) -> (String, String) {
        let password = format!("{}-secret", user.split('@').next().unwrap());
        let response = self
            .http
            .post(format!("{}/api2/json/access/ticket", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "username={}&password={}",
                percent_encode(user),
                percent_encode(&password)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login as {user}");
        let body: Value = response.json().await.unwrap();
        (
            body["data"]["ticket"].as_str().unwrap().to_string(),
            body["data"]["CSRFPreventionToken"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// A call to the control API, `/_sim/PATH`.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "/_sim{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn issued(&self) -> Issued {
        let value = self.control(reqwest::Method::GET, "/issued", None).await;
        let list = |key: &str| -> Vec<String> {
            value[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} in {value}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        Issued {
            login_tickets: list("login_tickets"),
            csrf_tokens: list("csrf_tokens"),
            vnc_tickets: list("vnc_tickets"),
            vnc_passwords: list("vnc_passwords"),
        }
    }

    /// Switches faults on or off: `{"listener_timeout": true}`.
    pub async fn faults(&self, faults: Value) {
        self.control(reqwest::Method::POST, "/faults", Some(faults))
            .await;
    }

    /// What viewers typed into `vmid`: `{"type": "key", ...}` and pointer events.
    pub async fn input(&self, vmid: u32) -> Vec<Value> {
        self.control(reqwest::Method::GET, &format!("/vms/{vmid}/input"), None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

fn client_tls(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// How the proxy proves itself to Proxmox VE: the session directory's files.
#[derive(Clone, Debug)]
pub enum Identity {
    Ticket { ticket: String, csrf: String },
    Token(String),
}

impl Identity {
    pub async fn alice(sim: &PveSim) -> Self {
        Self::login(sim, "alice@pve").await
    }

    pub async fn login(sim: &PveSim, user: &str) -> Self {
        let (ticket, csrf) = sim.login(user).await;
        Identity::Ticket { ticket, csrf }
    }

    /// Writes the identity's files, replacing the other kind's, each by a
    /// rename as the kubelet swaps a Secret volume's files.
    pub fn write(&self, dir: &Path) {
        let put = |key: &str, value: &str| {
            let tmp = dir.join(format!(".{key}.tmp"));
            std::fs::write(&tmp, value).unwrap();
            std::fs::rename(&tmp, dir.join(key)).unwrap();
        };
        let remove = |key: &str| {
            let _ = std::fs::remove_file(dir.join(key));
        };
        match self {
            Identity::Ticket { ticket, csrf } => {
                remove("pve-api-token");
                put("pve-ticket", ticket);
                put("pve-csrf-token", csrf);
            }
            Identity::Token(token) => {
                remove("pve-ticket");
                remove("pve-csrf-token");
                put("pve-api-token", token);
            }
        }
    }
}

/// How to start the proxy in Proxmox mode.
pub struct PveOptions {
    pub url: String,
    pub node: String,
    pub kind: &'static str,
    pub vmid: u32,
    pub identity: Identity,
    /// `pve-ca.crt` in the session directory.
    pub ca_pem: Option<String>,
    /// More environment (`contract::env`), e.g. the fingerprint pin.
    pub env: Vec<(&'static str, String)>,
    pub extra_args: Vec<&'static str>,
}

impl PveOptions {
    /// A console of `vmid` on `sim`, verified with the simulator's CA.
    pub fn new(sim: &PveSim, kind: &'static str, vmid: u32, identity: Identity) -> Self {
        Self {
            url: sim.url.clone(),
            node: sim.node.clone(),
            kind,
            vmid,
            identity,
            ca_pem: Some(sim.ca_pem.clone()),
            // Viewers come one after another; with `exclusive`, the next one
            // could race the proxy noticing that the last one left.
            env: vec![(env::VIEWERS, "shared".into())],
            extra_args: Vec::new(),
        }
    }
}

/// The proxy binary in pod mode with a Proxmox VE upstream.
pub struct PveProxy {
    child: Child,
    pub addr: SocketAddr,
    /// The internal port: health, metrics.
    pub internal: SocketAddr,
    dir: TempDir,
}

impl PveProxy {
    pub async fn start(options: PveOptions) -> Self {
        let dir = TempDir::new("pve-proxy");
        let session_dir = dir.path().join("session");
        std::fs::create_dir_all(&session_dir).unwrap();
        std::fs::write(session_dir.join("token"), TOKEN).unwrap();
        options.identity.write(&session_dir);
        if let Some(ca) = &options.ca_pem {
            std::fs::write(session_dir.join("pve-ca.crt"), ca).unwrap();
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let internal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
            .arg("session")
            .arg("--termination-message-path")
            .arg(dir.path().join("termination-log"))
            .args(&options.extra_args)
            .env_clear()
            .env(env::LISTEN, addr.to_string())
            .env(env::INTERNAL_LISTEN, internal.to_string())
            .env(env::PVE_URL, &options.url)
            .env(env::PVE_NODE, &options.node)
            .env(env::PVE_VM_KIND, options.kind)
            .env(env::PVE_VMID, options.vmid.to_string())
            .env(env::SESSION_DIR, &session_dir)
            .env(env::SESSION_NAMESPACE, "tests")
            .env(env::SESSION_NAME, "pve-console")
            .env(env::VM_NAME, "pve-vm")
            .env(env::LOG, "debug")
            .envs(options.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary runs");
        eventually("the proxy to be ready", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited early: {status}");
            }
            async move {
                let (status, _) = http_get(internal, "/readyz").await.ok()?;
                (status == 200).then_some(())
            }
        })
        .await;
        Self {
            child,
            addr,
            internal,
            dir,
        }
    }

    pub fn session_dir(&self) -> PathBuf {
        self.dir.path().join("session")
    }

    pub fn termination_message(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("termination-log")).ok()
    }

    /// Waits for the process to exit; returns its exit code and its logs.
    pub async fn exited(&mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the proxy exits")
            .unwrap();
        let mut logs = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut logs).await.unwrap();
        }
        (status.code(), logs)
    }

    /// Stops the proxy (SIGTERM) and returns its logs.
    pub async fn stop(&mut self) -> String {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.exited().await.1
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.internal, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        body
    }

    /// The console WebSocket, as the page opens it.
    pub async fn viewer(
        &self,
    ) -> Result<(WebSocketStream<TcpStream>, Response<Option<Vec<u8>>>), tungstenite::Error> {
        let protocols = format!("binary, bearer.porthole.dev.{TOKEN}");
        websocket(self.addr, "/websockify", Some(&protocols)).await
    }

    /// A viewer that gets through the proxy's handshake and sees pixels.
    pub async fn view(&self) -> RfbClient<TcpStream> {
        let (ws, _) = self.viewer().await.expect("the WebSocket opens");
        let mut rfb = RfbClient::new(ws);
        rfb.handshake_through_proxy().await;
        rfb.init().await;
        assert!(rfb.width > 0 && rfb.height > 0);
        rfb.wait_for_pixels().await;
        rfb
    }

    /// Opens a viewer and waits until it is closed with a reason that names
    /// `failure`; returns the viewer (what it received) and the reason.
    async fn closed_for(&mut self, failure: UpstreamFailure) -> (RfbClient<TcpStream>, String) {
        let (ws, _) = self.viewer().await.expect("the WebSocket opens");
        let mut rfb = RfbClient::new(ws);
        let reason = rfb.closed().await;
        let prefix = format!("upstream-failed: {}: ", failure.label());
        assert!(
            reason.starts_with(&prefix),
            "close reason {reason:?}, expected {prefix}..."
        );
        (rfb, reason)
    }

    /// Opens a viewer that must be refused *for now* with `failure`: the
    /// close reason says why, with none of `secrets`, and the session stays
    /// open (still ready, not exited) for the next attempt.
    pub async fn refused_for_now(&mut self, failure: UpstreamFailure, secrets: &[&str]) {
        let (rfb, reason) = self.closed_for(failure).await;
        assert!(rfb.received.is_empty(), "the viewer got RFB bytes");
        for secret in secrets.iter().chain(&[TOKEN]) {
            assert!(!reason.contains(secret), "a secret in {reason}");
        }
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the session ended"
        );
        let (status, _) = http_get(self.internal, "/readyz").await.unwrap();
        assert_eq!(status, 200, "the session is no longer ready");
        assert!(self.termination_message().is_none());
    }

    /// Opens a viewer that must be refused because the console failed with
    /// `failure`: checks the close reason, the exit code, the termination
    /// message, and that the logs hold none of `secrets`. Returns the logs.
    pub async fn fails_with(&mut self, failure: UpstreamFailure, secrets: &[&str]) -> String {
        let (rfb, reason) = self.closed_for(failure).await;
        assert!(
            rfb.received.is_empty(),
            "the viewer got RFB bytes: {:?}",
            rfb.received
        );
        let (code, logs) = self.exited().await;
        assert_eq!(code, Some(1), "{logs}");
        let message = self.termination_message().expect("a termination message");
        match message.parse::<EndReason>() {
            Ok(EndReason::UpstreamFailed {
                failure: got,
                detail,
            }) => {
                assert_eq!(got, failure, "{message}");
                assert!(!detail.is_empty());
            }
            other => panic!("{message:?} parsed as {other:?}"),
        }
        for secret in secrets.iter().chain(&[TOKEN]) {
            assert!(!message.contains(secret), "a secret in {message}");
            assert!(!reason.contains(secret), "a secret in {reason}");
            assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
        }
        logs
    }
}

/// Another CA's certificate, for a wrong `pve-ca.crt`.
pub fn other_ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Not the Proxmox VE cluster CA");
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

pub fn no_faults() -> Value {
    json!({"listener_timeout": false, "reject_vnc_tickets": false})
}
