//! The walking skeleton, end to end on the test bed: `kubectl apply` of a
//! Hypervisor and a ConsoleSession, the operator's proxy pod relaying a real QEMU
//! VM's console, and the session's finalizer cleaning up.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use porthole_api::v1alpha1::ConsoleSession;
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestNamespace, child_name, children_api, client, eventually, kubectl, unique_suffix,
    wait_for_session, wait_until_children_gone,
};
use porthole_e2e::rfb::{self, ConsoleUrl, Refused};
use porthole_e2e::vm::Vm;

const VNC_PORT: u16 = 5911;

fn manifests(ns: &str, hypervisor: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: porthole.dev/v1alpha1
kind: Hypervisor
metadata:
  name: {hypervisor}
spec:
  allowedNamespaces: {{}}
  vnc:
    host: {HYPERVISOR_HOST}
    ports: {{first: 5910, last: 5930}}
---
apiVersion: porthole.dev/v1alpha1
kind: ConsoleSession
metadata:
  name: web
  namespace: {ns}
spec:
  hypervisor: {hypervisor}
  vm: {{port: {port}}}
"#
    )
}

#[tokio::test]
async fn console_session_opens_a_real_vm_and_is_cleaned_up_by_the_garbage_collector() -> Result<()>
{
    let client = client().await?;
    let ns = TestNamespace::create(&client, "skeleton").await?;
    let vm = Vm::start(HYPERVISOR_HOST, VNC_PORT).await?;
    let qmp = vm.watch_events().await?;
    let hypervisor = format!("libvirt-{}", unique_suffix());

    kubectl(
        &["apply", "-f", "-"],
        Some(&manifests(&ns.name, &hypervisor, VNC_PORT)),
    )
    .await?;
    wait_for_session(&ns.name, "web", "condition=Ready", Duration::from_secs(120)).await?;

    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let session = sessions.get("web").await?;
    let status = session.status.context("a Ready session has a status")?;
    let url = ConsoleUrl::parse(status.url.as_deref().context("a Ready session has a URL")?)?;

    // A wrong or missing token is refused before any upstream connection.
    for token in [Some("not-the-token"), None] {
        match rfb::open(&url, token).await {
            Err(Refused::Status(code)) => assert_eq!(code, 401, "token {token:?}"),
            Err(Refused::Other(error)) => {
                panic!("token {token:?}: expected HTTP 401, got {error:#}")
            }
            Ok(_) => panic!("token {token:?} was let in"),
        }
    }

    // The right token reaches the VM: RFB handshake and a non-black frame.
    let mut console = rfb::open(&url, Some(&url.token))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let init = console.handshake().await?;
    assert!(init.width > 0 && init.height > 0, "{init:?}");
    let nonzero = console
        .wait_for_nonzero_frame(&init, Duration::from_secs(60))
        .await?;
    assert!(nonzero > 0);
    eventually(
        Duration::from_secs(10),
        "QEMU to see the proxy's connection",
        || {
            let qmp = qmp.clone();
            async move { Ok((qmp.count("VNC_CONNECTED") > 0).then_some(())) }
        },
    )
    .await?;
    // QMP events arrive in order: the refused attempts came first and made none.
    assert_eq!(
        qmp.count("VNC_CONNECTED"),
        1,
        "only the authorised viewer reached the VM"
    );
    console.close().await;

    // The session's Pod, Service and Secret live in porthole's namespace,
    // and deleting the session removes them (its finalizer).
    let child = child_name(&client, &ns.name, "web").await?;
    let pods: Api<Pod> = children_api(&client);
    let services: Api<Service> = children_api(&client);
    let secrets: Api<Secret> = children_api(&client);
    assert!(pods.get_opt(&child).await?.is_some() && services.get_opt(&child).await?.is_some());
    assert!(secrets.get_opt(&child).await?.is_some());
    // The proxy may reach its VM's console port and nothing else.
    let policies: Api<NetworkPolicy> = children_api(&client);
    let egress = policies
        .get(&child)
        .await?
        .spec
        .and_then(|s| s.egress)
        .context("egress rules")?;
    let block = egress[0]
        .to
        .as_ref()
        .and_then(|to| to[0].ip_block.clone())
        .context("ipBlock")?;
    assert_eq!(block.cidr, format!("{HYPERVISOR_HOST}/32"));
    assert_eq!(
        egress[0].ports.as_ref().context("ports")?[0].port,
        Some(IntOrString::Int(i32::from(VNC_PORT)))
    );
    kubectl(
        &[
            "-n",
            &ns.name,
            "delete",
            "consolesession/web",
            "--wait=true",
        ],
        None,
    )
    .await?;
    wait_until_children_gone(&client, &child, Duration::from_secs(90)).await?;
    kubectl(&["delete", "hypervisor", &hypervisor], None).await?;
    drop(vm);
    Ok(())
}

#[tokio::test]
async fn kubectl_version_reports_a_real_server() -> Result<()> {
    let out = kubectl(&["version", "-o", "json"], None).await?;
    let version: serde_json::Value = serde_json::from_str(&out)?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .context("no server version")?;
    assert_eq!(server, "v1.35.4", "kubectl version: {out}");
    Ok(())
}
