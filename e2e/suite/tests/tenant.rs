//! The trust boundary, as a tenant meets it: a user who is `admin` of its own
//! namespace only (the built-in ClusterRole, bound there; impersonated by the
//! test bed's admin) opens consoles on a VNC Hypervisor with a password and on
//! Proxmox Hypervisors in password and API-token mode. Everything that user
//! can list, in every namespace and cluster-wide, holds none of the
//! hypervisors' credentials nor any ticket porthole minted, as written or
//! base64-encoded; and the user can neither read nor change nor delete what
//! porthole made for its sessions.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Client, ResourceExt};
use porthole_api::v1alpha1::ConsoleSession;
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    PORTHOLE_NAMESPACE, TestHypervisor, TestNamespace, apply, child_name, children_api, client,
    client_as, kubectl, ready_status, unique_suffix,
};
use porthole_e2e::pve::{self, PveSim, SimVm};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
/// No VM listens here: a session is Ready once its proxy is, and the
/// credential reaches the session's Secret before anyone connects.
const VNC_PORT: u16 = 5922;

/// Whether `secret` is in `value`: in any string, or in any string's base64
/// decoding (a Secret's data, or a credential base64-encoded inside a longer
/// value, such as `USER!ID=SECRET`).
fn holds(value: &Value, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    match value {
        Value::String(text) => {
            text.contains(secret)
                || b64
                    .decode(text.trim())
                    .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(secret))
        }
        Value::Array(items) => items.iter().any(|v| holds(v, secret)),
        Value::Object(fields) => fields
            .iter()
            .any(|(k, v)| k.contains(secret) || holds(v, secret)),
        _ => false,
    }
}

/// Everything `tenant` may list: every listable resource, cluster-wide
/// where it is cluster-scoped, and in each of `namespaces` where it is not.
/// Returns each object's kind/namespace/name with its JSON, and the kinds the
/// tenant could list somewhere (empty lists included).
async fn everything_listable(
    tenant: &Client,
    namespaces: &[String],
) -> Result<(Vec<(String, Value)>, BTreeSet<String>)> {
    let discovery = Discovery::new(tenant.clone()).run().await?;
    let mut seen = Vec::new();
    let mut listed = BTreeSet::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let scopes: Vec<Option<&str>> = match caps.scope {
                Scope::Cluster => vec![None],
                Scope::Namespaced => namespaces.iter().map(|n| Some(n.as_str())).collect(),
            };
            for namespace in scopes {
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(tenant.clone(), ns, &resource),
                    None => Api::all_with(tenant.clone(), &resource),
                };
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        listed.insert(resource.kind.clone());
                        for object in list.items {
                            let id = format!(
                                "{} {}/{}",
                                resource.kind,
                                object.namespace().unwrap_or_default(),
                                object.name_any()
                            );
                            seen.push((id, serde_json::to_value(&object)?));
                        }
                    }
                    Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("listing {}", resource.plural));
                    }
                }
            }
        }
    }
    Ok((seen, listed))
}

/// Expects the API server to refuse `what` with 403 Forbidden.
fn forbidden<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => bail!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn a_namespace_admin_opens_consoles_but_holds_no_credential_and_cannot_touch_the_machinery()
-> Result<()> {
    let admin = client().await?;
    let ns = TestNamespace::create(&admin, "tenant").await?;
    let user = format!("tenant-{}", unique_suffix());
    // The built-in admin role (porthole's console-user role is aggregated
    // into it by the chart), bound in the tenant's namespace only.
    apply(&json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "admin", "namespace": ns.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .await?;

    // The platform team's side: hypervisors and their credentials, in
    // porthole's namespace.
    let vnc_password = format!("vnc-{}", unique_suffix());
    let vnc_secret = format!("tenant-vnc-{}", unique_suffix());
    apply(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": vnc_secret, "namespace": PORTHOLE_NAMESPACE},
        "stringData": {"password": vnc_password},
    }))
    .await?;
    let vnc = TestHypervisor::create(
        "tenant-vnc",
        &format!(
            "vnc: {{host: {HYPERVISOR_HOST}, ports: {{first: 5910, last: 5930}}, \
             passwordSecretRef: {{name: {vnc_secret}, key: password}}}}"
        ),
    )
    .await?;
    let sim = PveSim::start(
        "A",
        &[SimVm {
            vmid: 100,
            kind: "qemu",
            running: true,
        }],
    )
    .await?;
    let (pve_password, pve_token) = (
        format!("tenant-pve-pw-{}", unique_suffix()),
        format!("tenant-pve-tok-{}", unique_suffix()),
    );
    sim.apply_hypervisor(&pve_password, PveSim::password_credentials(), sim.ca_tls())
        .await?;
    sim.apply_hypervisor(&pve_token, PveSim::token_credentials(), sim.ca_tls())
        .await?;

    // The tenant's side: three sessions, made as the tenant.
    let tenant = client_as(&user).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(tenant.clone(), &ns.name);
    let pve_vm = json!({"node": sim.node(), "id": 100, "kind": "qemu"});
    for (name, hypervisor, vm) in [
        ("vnc", vnc.name.as_str(), json!({"port": VNC_PORT})),
        ("pve-password", pve_password.as_str(), pve_vm.clone()),
        ("pve-token", pve_token.as_str(), pve_vm),
    ] {
        let session: ConsoleSession = serde_json::from_value(json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": name, "namespace": ns.name},
            "spec": {"hypervisor": hypervisor, "vm": vm},
        }))?;
        sessions
            .create(&PostParams::default(), &session)
            .await
            .with_context(|| format!("the tenant creating session {name}"))?;
    }
    for name in ["vnc", "pve-password", "pve-token"] {
        let status = ready_status(&sessions, name, WAIT).await?;
        ensure!(status.url.is_some(), "the tenant sees its console URL");
    }

    // What a credential would be, everywhere the tenant can look.
    let issued = sim.issued().await?;
    ensure!(
        !issued.login_tickets.is_empty() && !issued.csrf_tokens.is_empty(),
        "the password-mode session got no login ticket, so the search would prove nothing"
    );
    let mut secrets: Vec<String> = vec![
        vnc_password.clone(),
        pve::PASSWORD.to_string(),
        pve::TOKEN_SECRET.to_string(),
    ];
    secrets.extend(issued.all().into_iter().map(str::to_string));
    // The credentials did reach porthole's side, so finding none is a result.
    let porthole_secrets: Api<Secret> = children_api(&admin);
    let mut written = 0;
    for name in ["vnc", "pve-password", "pve-token"] {
        let child = child_name(&admin, &ns.name, name).await?;
        let secret = serde_json::to_value(porthole_secrets.get(&child).await?)?;
        written += secrets.iter().filter(|s| holds(&secret, s)).count();
    }
    ensure!(
        written >= 3,
        "the session Secrets should hold the credentials ({written} found)"
    );

    let namespaces: Vec<String> = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| n.name_any())
        .collect();
    let (listable, kinds) = everything_listable(&tenant, &namespaces).await?;
    ensure!(
        ["ConsoleSession", "Event", "Pod", "Secret", "Service"]
            .iter()
            .all(|k| kinds.contains(*k)),
        "the search covered too little to prove anything: {kinds:?}"
    );
    for (id, object) in &listable {
        for secret in &secrets {
            ensure!(
                !holds(object, secret),
                "the tenant can read a credential in {id}"
            );
        }
    }
    eprintln!(
        "searched {} objects of the {} kinds the tenant can list: no credential",
        listable.len(),
        kinds.len()
    );

    // The machinery is out of the tenant's reach.
    let child = child_name(&admin, &ns.name, "vnc").await?;
    let pods: Api<Pod> = Api::namespaced(tenant.clone(), PORTHOLE_NAMESPACE);
    let services: Api<Service> = Api::namespaced(tenant.clone(), PORTHOLE_NAMESPACE);
    let tenant_secrets: Api<Secret> = Api::namespaced(tenant.clone(), PORTHOLE_NAMESPACE);
    forbidden(
        "listing porthole's pods",
        pods.list(&ListParams::default()).await,
    )?;
    forbidden(
        "reading the session Secret",
        tenant_secrets.get(&child).await,
    )?;
    forbidden(
        "deleting the proxy pod",
        pods.delete(&child, &DeleteParams::default()).await,
    )?;
    forbidden(
        "relabelling the Service",
        services
            .patch(
                &child,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"selector": {"app": "mine"}}})),
            )
            .await,
    )?;
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": {"name": "impostor", "labels": {"porthole.dev/session-uid": "x"}},
        "spec": {"containers": [{"name": "c", "image": "porthole/proxy:dev"}]},
    }))?;
    forbidden(
        "creating a pod beside the proxies",
        pods.create(&PostParams::default(), &impostor).await,
    )?;
    // In its own namespace the tenant sees its sessions and nothing of theirs.
    let own_pods: Api<Pod> = Api::namespaced(tenant.clone(), &ns.name);
    ensure!(
        own_pods
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "a session's pod in the tenant's namespace"
    );
    let own_secrets: Api<Secret> = Api::namespaced(tenant.clone(), &ns.name);
    ensure!(
        own_secrets
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .all(|s| !s.name_any().starts_with("console-")),
        "a session Secret in the tenant's namespace"
    );

    for name in [&pve_password, &pve_token] {
        kubectl(&["delete", "hypervisor", name, "--wait=false"], None).await?;
    }
    sim.shutdown().await;
    Ok(())
}
