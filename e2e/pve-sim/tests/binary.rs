//! The `porthole-pve-sim` binary: ready.json, the certificate it describes, and
//! that the simulator and its VMs go away with SIGTERM or with its parent
//! (stdin EOF).

mod support;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;
use support::{TempDir, eventually};
use tokio::process::{Child, Command};

const CONFIG: &str = r#"
listen: 127.0.0.1:0
node: sim1
users: [{id: alice@pve, password: alice-secret, privileges: {/vms: [VM.Console]}}]
vms: [{vmid: 100}]
"#;

async fn spawn(dir: &TempDir) -> Result<(Child, Value)> {
    support::init();
    let config = dir.0.join("config.yaml");
    std::fs::write(&config, CONFIG)?;
    let child = Command::new(env!("CARGO_BIN_EXE_porthole-pve-sim"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&dir.0)
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let ready_path = dir.0.join("ready.json");
    let ready = eventually(Duration::from_secs(60), "ready.json", || {
        let ready_path = ready_path.clone();
        async move {
            Ok(std::fs::read_to_string(&ready_path)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok()))
        }
    })
    .await?;
    Ok((child, ready))
}

/// The certificate the server presents, and its SHA-256 fingerprint.
async fn presented_fingerprint(ready: &Value) -> Result<String> {
    let url = ready["url"].as_str().context("url")?;
    let addr: std::net::SocketAddr = url.trim_start_matches("https://").parse()?;
    let mut roots = rustls::RootCertStore::empty();
    let pem = ready["ca_pem"].as_str().context("ca_pem")?;
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    roots.add(rustls::pki_types::CertificateDer::from(
        base64::engine::general_purpose::STANDARD.decode(der)?,
    ))?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::from(addr.ip()), tcp)
        .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    Ok(digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

async fn exits_within(child: &mut Child, secs: u64) -> Result<std::process::ExitStatus> {
    Ok(
        tokio::time::timeout(Duration::from_secs(secs), child.wait())
            .await
            .context("the simulator did not exit")??,
    )
}

fn vm_gone(dir: &TempDir) -> bool {
    !dir.0.join("100.vnc").exists()
        && std::os::unix::net::UnixStream::connect(dir.0.join("100.qmp")).is_err()
}

#[tokio::test]
async fn ready_json_describes_the_server_and_stdin_eof_stops_everything() -> Result<()> {
    let dir = TempDir::new()?;
    let (mut child, ready) = spawn(&dir).await?;
    assert!(
        ready["url"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert_eq!(ready["node"], "sim1");
    let ca_path = ready["ca_pem_path"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(ca_path)?,
        ready["ca_pem"].as_str().unwrap()
    );
    assert_eq!(
        presented_fingerprint(&ready).await?,
        ready["fingerprint_sha256"].as_str().unwrap()
    );
    assert!(dir.0.join("100.vnc").exists(), "the VM runs");

    drop(child.stdin.take()); // the parent "dies"
    assert!(exits_within(&mut child, 30).await?.success());
    assert!(vm_gone(&dir), "the VM must stop with the simulator");
    assert!(!dir.0.join("ready.json").exists());
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_simulator_and_its_vms() -> Result<()> {
    let dir = TempDir::new()?;
    let (mut child, _) = spawn(&dir).await?;
    let pid = child.id().context("pid")?;
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await?;
    assert!(kill.success());
    assert!(exits_within(&mut child, 30).await?.success());
    assert!(vm_gone(&dir));
    Ok(())
}
