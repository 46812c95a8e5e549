//! What users and UIs see of a live session: the Connected phase and
//! `status.viewers` as viewers come and go, with Events; Ingress exposure
//! producing an Ingress the real apiserver accepts and a URL the proxy serves;
//! and the administrator's exposure policy refusing what it does not list
//! (the test bed's is in e2e/testbed-values.yaml).

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestHypervisor, TestNamespace, child_name, children_api, client, eventually, kubectl,
    ready_status, wait_for_session,
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

    // `kubectl get` reads right for a live session: what a person needs at a
    // glance, and no `<invalid>` (kubectl prints ages of past times only).
    let table = kubectl(&["-n", &ns.name, "get", "consolesession", "web"], None).await?;
    let header = table.lines().next().unwrap_or_default();
    for column in ["PHASE", "VIEWERS", "TIMEOUT", "EXPIRES AT", "REASON"] {
        assert!(header.contains(column), "no {column} column: {table}");
    }
    assert!(
        !table.contains("<invalid>") && table.contains("ProxyReady"),
        "{table}"
    );

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

    // The apiserver accepted the Ingress the operator built, in porthole's
    // namespace, where the session's namespace cannot change it.
    let child = child_name(&client, &ns.name, "web").await?;
    let ingresses: Api<Ingress> = children_api(&client);
    let ingress = ingresses.get(&child).await?;
    let spec = ingress.spec.context("ingress spec")?;
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = spec.tls.context("tls")?;
    assert_eq!(tls[0].secret_name.as_deref(), Some("consoles-tls"));
    let rule = &spec.rules.context("rules")?[0];
    assert_eq!(rule.host.as_deref(), Some("consoles.porthole.test"));
    let path = &rule.http.as_ref().context("http")?.paths[0];
    assert_eq!(path.path.as_deref(), Some(prefix.as_str()));
    let backend = path.backend.service.as_ref().context("backend")?;
    assert_eq!(backend.name, child);

    // Do what an ingress controller does: forward the path, unchanged, to the
    // Service. The proxy serves the console there.
    let services: Api<Service> = children_api(&client);
    let cluster_ip = services
        .get(&child)
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

    // Deleting the session takes the Ingress with it (the session's finalizer).
    kubectl(&["-n", &ns.name, "delete", "consolesession", "web"], None).await?;
    eventually(WAIT, "the Ingress to be deleted", || async {
        Ok(ingresses.get_opt(&child).await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// Applies session `name` asking for `expose` and returns its final status
/// once the operator has refused it.
async fn refused(
    ns: &str,
    hypervisor: &TestHypervisor,
    name: &str,
    expose: &str,
) -> Result<String> {
    let manifest = format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hypervisor: {}\n  vm: {{port: 5928}}\n  expose:\n{expose}",
        hypervisor.name
    );
    kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
    wait_for_session(ns, name, "jsonpath={.status.phase}=Failed", WAIT).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client().await?, ns);
    let status = sessions.get(name).await?.status.context("status")?;
    assert_eq!(
        status.reason.as_deref(),
        Some("ExposureNotAllowed"),
        "{status:?}"
    );
    Ok(status.message.unwrap_or_default())
}

#[tokio::test]
async fn exposure_the_administrator_does_not_allow_is_refused_with_what_and_why() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "policy").await?;
    let hv = TestHypervisor::vnc("policy").await?;
    let plaintext = refused(&ns.name, &hv, "lb", "    type: LoadBalancer\n").await?;
    assert!(
        plaintext.contains("\"LoadBalancer\" is not allowed") && plaintext.contains("plaintext"),
        "{plaintext}"
    );
    let class = refused(
        &ns.name,
        &hv,
        "class",
        "    type: Ingress\n    ingress: {className: public, host: consoles.porthole.test}\n",
    )
    .await?;
    assert!(
        class.contains("className \"public\" is not allowed"),
        "{class}"
    );
    let host = refused(
        &ns.name,
        &hv,
        "host",
        "    type: Ingress\n    ingress: {host: bank.example.com}\n",
    )
    .await?;
    assert!(
        host.contains("host \"bank.example.com\" is not allowed"),
        "{host}"
    );
    let tls = refused(
        &ns.name,
        &hv,
        "tls",
        "    type: Ingress\n    ingress: {host: consoles.porthole.test, tlsSecretName: someone-elses}\n",
    )
    .await?;
    assert!(tls.contains("tlsSecretName \"someone-elses\""), "{tls}");
    // Nothing was made for any of them.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = children_api(&client);
    let made = pods
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            porthole_api::contract::labels::SESSION_NAMESPACE,
            ns.name
        )))
        .await?;
    assert!(made.items.is_empty(), "a proxy pod for a refused session");
    Ok(())
}
