//! What users and UIs see of a live session: the Connected phase and
//! `status.viewers` as viewers come and go, with Events, and Ingress exposure
//! producing an Ingress the real apiserver accepts and a URL the proxy serves.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestHypervisor, TestNamespace, client, eventually, kubectl, ready_status, wait_for_session,
};
use porthole_e2e::rfb::{self, ConsoleUrl};
use porthole_e2e::vm::Vm;

const WAIT: Duration = Duration::from_secs(120);

/// Applies session `web` for the VM on `port` and returns its URL once Ready.
async fn ready_session(
    ns: &str,
    hypervisor: &TestHypervisor,
    port: u16,
    extra: &str,
) -> Result<String> {
    let manifest = format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec:\n  hypervisor: {}\n  vm: {{port: {port}}}\n{extra}",
        hypervisor.name
    );
    kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client().await?, ns);
    ready_status(&sessions, "web", WAIT)
        .await?
        .url
        .context("status.url")
}

/// The notes of the session's Events with this reason.
async fn event_notes(client: &kube::Client, ns: &str, reason: &str) -> Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await?;
    Ok(list.items.into_iter().filter_map(|e| e.message).collect())
}

#[tokio::test]
async fn a_viewer_makes_the_session_connected_and_leaving_makes_it_ready_again() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "viewers").await?;
    let _vm = Vm::start(HYPERVISOR_HOST, 5926).await?;
    let hv = TestHypervisor::vnc("viewers").await?;
    let url = ready_session(&ns.name, &hv, 5926, "").await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);

    let viewer = rfb::open_viewer(&url).await?;
    wait_for_session(&ns.name, "web", "jsonpath={.status.phase}=Connected", WAIT).await?;
    let status = sessions.get("web").await?.status.context("status")?;
    let viewers = status.viewers.context("status.viewers")?;
    assert_eq!((viewers.count, viewers.connections), (1, 1));
    assert!(viewers.last_connected_at.is_some());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready condition")?;
    assert_eq!(ready.status, "True", "a Connected session is still Ready");
    let connected = eventually(WAIT, "a ViewerConnected Event", || async {
        let notes = event_notes(&client, &ns.name, "ViewerConnected").await?;
        Ok(notes.into_iter().next())
    })
    .await?;
    assert!(
        connected.starts_with("a viewer connected from "),
        "{connected}"
    );

    viewer.close().await;
    wait_for_session(&ns.name, "web", "jsonpath={.status.viewers.count}=0", WAIT).await?;
    let status = sessions.get("web").await?.status.context("status")?;
    assert_eq!(status.phase, Some(SessionPhase::Ready));
    let viewers = status.viewers.context("status.viewers")?;
    assert_eq!(viewers.connections, 1);
    assert!(viewers.last_disconnected_at.is_some());
    eventually(WAIT, "a ViewerDisconnected Event", || async {
        let notes = event_notes(&client, &ns.name, "ViewerDisconnected").await?;
        Ok(notes.into_iter().find(|n| n.contains("0 still connected")))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn ingress_exposure_yields_a_valid_ingress_and_a_url_the_proxy_serves() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "ingress").await?;
    let _vm = Vm::start(HYPERVISOR_HOST, 5927).await?;
    let hv = TestHypervisor::vnc("ingress").await?;
    let expose = "  expose:\n    type: Ingress\n    ingress: {className: nginx, host: consoles.porthole.test, tlsSecretName: consoles-tls}\n";
    let url = ready_session(&ns.name, &hv, 5927, expose).await?;
    let prefix = format!("/{}/web/", ns.name);
    let (origin_and_path, token) = url.split_once("#token=").context("token fragment")?;
    assert_eq!(
        origin_and_path,
        format!("https://consoles.porthole.test{prefix}")
    );

    // The apiserver accepted the Ingress the operator built.
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns.name);
    let ingress = ingresses.get("console-web").await?;
    let spec = ingress.spec.context("ingress spec")?;
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = spec.tls.context("tls")?;
    assert_eq!(tls[0].secret_name.as_deref(), Some("consoles-tls"));
    let rule = &spec.rules.context("rules")?[0];
    assert_eq!(rule.host.as_deref(), Some("consoles.porthole.test"));
    let path = &rule.http.as_ref().context("http")?.paths[0];
    assert_eq!(path.path.as_deref(), Some(prefix.as_str()));
    let backend = path.backend.service.as_ref().context("backend")?;
    assert_eq!(backend.name, "console-web");

    // Do what an ingress controller does: forward the path, unchanged, to the
    // Service. The proxy serves the console there.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let cluster_ip = services
        .get("console-web")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("cluster IP")?;
    let behind_ingress = ConsoleUrl {
        authority: cluster_ip,
        path: prefix,
        token: token.to_string(),
    };
    let mut console = rfb::open(&behind_ingress, Some(token))
        .await
        .map_err(|refused| anyhow::anyhow!("refused behind the ingress path: {refused:?}"))?;
    let init = console.handshake().await?;
    console
        .wait_for_nonzero_frame(&init, Duration::from_secs(30))
        .await?;
    console.close().await;

    // Deleting the session takes the Ingress with it (owner reference, real GC).
    kubectl(&["-n", &ns.name, "delete", "consolesession", "web"], None).await?;
    eventually(WAIT, "the Ingress to be garbage-collected", || async {
        Ok(ingresses
            .get_opt("console-web")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}
