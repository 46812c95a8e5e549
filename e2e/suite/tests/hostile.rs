//! Hostile use of real sessions on the test bed: a token is good for its own
//! session only, and a session name at the apiserver's limit still gets valid
//! children (their names are shortened, never rejected).

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::Api;
use porthole_api::v1alpha1::ConsoleSession;
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestHypervisor, TestNamespace, client, eventually, kubectl, ready_status,
};
use porthole_e2e::rfb::{self, ConsoleUrl, Refused};
use porthole_e2e::vm::Vm;

/// Session A's VM (none runs there: A's token is all this test needs of it).
const PORT_A: u16 = 5919;
/// Session B's VM.
const PORT_B: u16 = 5920;
const WAIT: Duration = Duration::from_secs(120);

async fn ready_url(ns: &str, hypervisor: &str, name: &str, port: u16) -> Result<ConsoleUrl> {
    let manifest = format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hypervisor: {hypervisor}\n  vm: {{port: {port}}}\n"
    );
    kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client().await?, ns);
    let url = ready_status(&sessions, name, WAIT)
        .await?
        .url
        .context("status.url")?;
    ConsoleUrl::parse(&url)
}

#[tokio::test]
async fn one_sessions_token_does_not_open_another_sessions_console() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "crosstoken").await?;
    let hv = TestHypervisor::vnc("crosstoken").await?;
    let vm_b = Vm::start(HYPERVISOR_HOST, PORT_B).await?;
    let qmp = vm_b.watch_events().await?;
    let a = ready_url(&ns.name, &hv.name, "a", PORT_A).await?;
    let b = ready_url(&ns.name, &hv.name, "b", PORT_B).await?;
    ensure!(a.token != b.token, "two sessions share a token");

    // A's token on B's URL, and B's on A's: both refused.
    for (url, token, what) in [
        (&b, &a.token, "A's token on B"),
        (&a, &b.token, "B's token on A"),
    ] {
        match rfb::open(url, Some(token)).await {
            Err(Refused::Status(401)) => {}
            Err(Refused::Status(code)) => bail!("{what}: HTTP {code}, expected 401"),
            Err(Refused::Other(error)) => bail!("{what}: expected HTTP 401, got {error:#}"),
            Ok(_) => bail!("{what} was let in"),
        }
    }
    // B's own token works, and B's VM saw exactly that one connection.
    let viewer = rfb::open_viewer(&format!(
        "http://{}{}#token={}",
        b.authority, b.path, b.token
    ))
    .await?;
    viewer.close().await;
    eventually(WAIT, "B's VM to report its viewer", || async {
        Ok((qmp.count("VNC_CONNECTED") > 0).then_some(()))
    })
    .await?;
    ensure!(
        qmp.count("VNC_CONNECTED") == 1,
        "B's VM saw {} VNC connections; only B's own viewer should reach it",
        qmp.count("VNC_CONNECTED")
    );
    Ok(())
}

#[tokio::test]
async fn a_session_named_at_the_apiservers_limit_gets_valid_children() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "longname").await?;
    let hv = TestHypervisor::vnc("longname").await?;
    // 253 characters, dots included: valid for a ConsoleSession, far too long
    // (and dotted) for a Service.
    let name = format!("{}.{}", "a".repeat(200), "b".repeat(52));
    ensure!(name.len() == 253);
    let url = ready_url(&ns.name, &hv.name, &name, PORT_A).await?;
    ensure!(!url.token.is_empty());
    Ok(())
}
