//! The `kubectl console` plugin against the test bed: the URL it prints is the
//! ready session's, it opens the real VM's console, `--delete` ends the session,
//! and a session the operator refuses exits 1 with the operator's reason.
//!
//! The plugin binary is not built by `cargo test -p porthole-e2e`: build it
//! first (`cargo build -p kubectl-console`; `make e2e` does).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kube::Api;
use kube::api::ListParams;
use porthole_api::v1alpha1::ConsoleSession;
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestHypervisor, TestNamespace, child_name, client, eventually, kubeconfig_path,
    wait_until_children_gone,
};
use porthole_e2e::rfb;
use porthole_e2e::vm::Vm;
use tokio::process::Command;

/// A port no other e2e test serves a VM on.
const VM_PORT: u16 = 5928;
/// Outside the test Hypervisor's range 5910-5930.
const FORBIDDEN_PORT: u16 = 5990;

/// `<target dir>/debug/kubectl-console`, as `cargo build -p kubectl-console` leaves it.
fn plugin_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("debug/kubectl-console")
}

/// Runs the plugin against the test cluster as `kubectl console ARGS` would.
async fn plugin(args: &[&str]) -> Result<Output> {
    let path = plugin_path();
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build -p kubectl-console` first",
            path.display()
        );
    }
    let output = Command::new(&path)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env_remove("BROWSER")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", path.display()))?;
    eprintln!(
        "--- kubectl console {} (exit {:?})\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

#[tokio::test]
async fn the_plugin_prints_the_ready_sessions_url_and_delete_ends_it() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "plugin").await?;
    let hypervisor = TestHypervisor::vnc("plugin").await?;
    let _vm = Vm::start(HYPERVISOR_HOST, VM_PORT).await?;

    let port = VM_PORT.to_string();
    let out = plugin(&[
        &port,
        "--hypervisor",
        &hypervisor.name,
        "-n",
        &ns.name,
        "--timeout",
        "10m",
        "--view-only",
        "--wait-timeout",
        "2m",
    ])
    .await?;
    assert_eq!(out.status.code(), Some(0), "the plugin failed");
    let stdout = String::from_utf8(out.stdout)?;

    // The session it created: generated name, the plugin's label, the spec asked for.
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let created = sessions
        .list(&ListParams::default().labels("app.kubernetes.io/created-by=kubectl-console"))
        .await?
        .items;
    assert_eq!(created.len(), 1, "one session with the plugin's label");
    let session = &created[0];
    let name = session.metadata.name.clone().context("name")?;
    assert!(name.starts_with(&format!("console-{VM_PORT}-")), "{name}");
    assert_eq!(session.spec.hypervisor, hypervisor.name);
    assert_eq!(session.spec.vm.port, Some(VM_PORT));
    assert_eq!(session.spec.timeout.as_deref(), Some("10m"));
    let viewers = session.spec.viewers.as_ref().context("spec.viewers")?;
    assert_eq!(viewers.view_only, Some(true));
    assert_eq!(viewers.policy, None, "the default policy stays the default");

    // stdout is the URL alone: exactly the session's status.url.
    let url = session
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .context("status.url")?;
    assert_eq!(stdout, format!("{url}\n"));

    // The URL opens the real VM's console.
    let console = rfb::open_viewer(stdout.trim_end()).await?;
    console.close().await;

    // --delete ends it: the session and what the operator made for it go away.
    let child = child_name(&client, &ns.name, &name).await?;
    let out = plugin(&["--delete", &name, "-n", &ns.name]).await?;
    assert_eq!(out.status.code(), Some(0), "--delete failed");
    let report = String::from_utf8(out.stdout)?;
    assert!(
        report.contains(&format!("consolesession {}/{name} deleted", ns.name)),
        "{report}"
    );
    eventually(
        Duration::from_secs(30),
        "the deleted session to be gone",
        || {
            let sessions = sessions.clone();
            let name = name.clone();
            async move { Ok(sessions.get_opt(&name).await?.is_none().then_some(())) }
        },
    )
    .await?;
    wait_until_children_gone(&client, &child, Duration::from_secs(60)).await?;

    // Deleting it again says so, with exit status 1.
    let out = plugin(&["--delete", &name, "-n", &ns.name]).await?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("not found"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_session_the_operator_refuses_exits_1_with_its_reason() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "plugin-refused").await?;
    let hypervisor = TestHypervisor::vnc("plugin-refused").await?;

    let port = FORBIDDEN_PORT.to_string();
    let out = plugin(&[
        &port,
        "--hypervisor",
        &hypervisor.name,
        "-n",
        &ns.name,
        "--name",
        "refused",
        "--wait-timeout",
        "90s",
    ])
    .await?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no URL for a failed session");
    assert!(stderr.contains("PortNotAllowed"), "{stderr}");
    assert!(stderr.contains("Failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("port {FORBIDDEN_PORT}")),
        "{stderr}"
    );

    // The session stays, with its final phase, as any refused session does.
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let status = sessions.get("refused").await?.status.context("status")?;
    assert_eq!(status.reason.as_deref(), Some("PortNotAllowed"));

    // A command-line mistake is a usage error (2), found before any API call.
    let out = plugin(&[&port, "--hypervisor", &hypervisor.name, "--timeout", "ten"]).await?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[tokio::test]
async fn a_port_for_a_proxmox_hypervisor_asks_for_node_and_id_before_creating_anything()
-> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "plugin-pve").await?;
    // Only read by the plugin: no session ever names it.
    let hypervisor = TestHypervisor::create(
        "plugin-pve",
        "proxmox: {url: 'https://pve.invalid:8006', credentialsSecretRef: {name: absent}}",
    )
    .await?;

    let out = plugin(&["101", "--hypervisor", &hypervisor.name, "-n", &ns.name]).await?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NODE/ID"), "{stderr}");
    let sessions: Api<ConsoleSession> = Api::namespaced(client, &ns.name);
    assert!(
        sessions
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "no session was created"
    );
    Ok(())
}
