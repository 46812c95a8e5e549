//! Every manifest the README and `examples/` show, applied exactly as written:
//! the plain-VNC ones open the VM's console on the test bed's VM at port 5910;
//! the Ingress one gets its Ingress and URL; the Proxmox example, whose host is a
//! placeholder, is accepted and says readably why it cannot reach that host.
//!
//! The README's and the examples' objects share names (`libvirt-demo`,
//! `default/demo`), so one test applies them one set after another.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;
use porthole_api::contract::labels;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{child_name, children_api, client, eventually, kubectl, ready_status};
use porthole_e2e::rfb;
use porthole_e2e::vm::Vm;
use serde_json::Value;

/// The port the examples name (and no other e2e test uses).
const EXAMPLE_PORT: u16 = 5910;
const WAIT: Duration = Duration::from_secs(120);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The README's ```yaml blocks, in order.
fn readme_manifests() -> Result<Vec<String>> {
    let readme = std::fs::read_to_string(repo_file("README.md"))?;
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    ensure!(current.is_none(), "README.md has an unclosed ```yaml block");
    Ok(blocks)
}

/// `(namespace, name)` of each ConsoleSession in a manifest.
fn sessions_in(manifest: &str) -> Result<Vec<(String, String)>> {
    let mut sessions = Vec::new();
    for document in manifest.split("\n---") {
        let object: Value =
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(document)?)?;
        if object["kind"] == "ConsoleSession" {
            let meta = &object["metadata"];
            sessions.push((
                meta["namespace"].as_str().unwrap_or("default").to_string(),
                meta["name"].as_str().context("metadata.name")?.to_string(),
            ));
        }
    }
    Ok(sessions)
}

async fn apply(manifest: &str) -> Result<()> {
    kubectl(&["apply", "-f", "-"], Some(manifest)).await?;
    Ok(())
}

/// Deletes a manifest's objects and waits until they are gone.
async fn delete(manifest: &str) -> Result<()> {
    kubectl(
        &["delete", "--ignore-not-found", "--wait=true", "-f", "-"],
        Some(manifest),
    )
    .await?;
    Ok(())
}

/// Waits until the session is Ready and checks what its URL leads to: the VM's
/// console for a Service URL, the Ingress's host and path for an Ingress URL.
async fn check_ready(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), ns);
    let status = ready_status(&sessions, name, WAIT).await?;
    let url = status.url.context("status.url")?;
    let ingresses: Api<Ingress> = children_api(client);
    match ingresses
        .get_opt(&child_name(client, ns, name).await?)
        .await?
    {
        Some(ingress) => {
            let host = ingress
                .spec
                .and_then(|s| s.rules)
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.host)
                .context("the Ingress has a host")?;
            ensure!(
                url.starts_with(&format!("https://{host}/{ns}/{name}/#token=")),
                "{ns}/{name}: Ingress URL {}",
                url.split('#').next().unwrap_or_default()
            );
        }
        None => {
            let viewer = rfb::open_viewer(&url)
                .await
                .with_context(|| format!("opening {ns}/{name}'s console"))?;
            viewer.close().await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_readme_and_vnc_examples_work_exactly_as_written() -> Result<()> {
    let client = client().await?;
    let _vm = Vm::start(HYPERVISOR_HOST, EXAMPLE_PORT).await?;

    let readme = readme_manifests()?;
    ensure!(readme.len() >= 2, "README.md lost its manifests");
    for manifest in &readme {
        apply(manifest).await?;
        for (ns, name) in sessions_in(manifest)? {
            check_ready(&client, &ns, &name).await?;
        }
    }
    for manifest in readme.iter().rev() {
        delete(manifest).await?;
    }

    let examples = ["examples/vnc-hypervisor.yaml", "examples/vnc-session.yaml"]
        .map(|path| std::fs::read_to_string(repo_file(path)))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .join("\n---\n");
    apply(&examples).await?;
    let sessions = sessions_in(&examples)?;
    ensure!(sessions.len() == 1, "{sessions:?}");
    for (ns, name) in sessions {
        check_ready(&client, &ns, &name).await?;
    }
    delete(&examples).await
}

#[tokio::test]
async fn the_proxmox_example_is_accepted_and_says_it_cannot_reach_its_placeholder_host()
-> Result<()> {
    let client = client().await?;
    let manifest = std::fs::read_to_string(repo_file("examples/proxmox-hypervisor.yaml"))?;
    apply(&manifest).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), "default");
    let status = eventually(WAIT, "pve-demo to report its hypervisor", || async {
        let status = sessions.get("pve-demo").await?.status;
        Ok(status.filter(|s| s.reason.as_deref() == Some("HypervisorUnreachable")))
    })
    .await?;
    let message = status.message.unwrap_or_default();
    ensure!(
        message.contains("pve1.example.com"),
        "the message should name the host: {message}"
    );
    ensure!(
        !message.contains("change-me"),
        "the message shows the password"
    );
    ensure!(
        status.phase != Some(SessionPhase::Ready),
        "{:?}",
        status.phase
    );
    let pods: Api<Pod> = children_api(&client);
    let proxies = pods
        .list(&ListParams::default().labels(&format!(
            "{}=pve-demo,{}=default",
            labels::SESSION,
            labels::SESSION_NAMESPACE
        )))
        .await?;
    ensure!(
        proxies.items.is_empty(),
        "a proxy pod for a session whose hypervisor is unreachable"
    );
    delete(&manifest).await
}
