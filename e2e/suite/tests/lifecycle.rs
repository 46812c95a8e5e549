//! Session lifecycle on the test bed: validation by the real apiserver,
//! namespace authorization, and the hard timeout.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use porthole_api::contract::labels;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestNamespace, child_name, children_api, client, kubectl, kubectl_output, session_pods,
    unique_suffix, wait_for_session, wait_until_children_gone,
};

fn hypervisor(name: &str, allowed_namespaces: &str) -> String {
    format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: Hypervisor\nmetadata: {{name: {name}}}\n\
         spec:\n  allowedNamespaces: {allowed_namespaces}\n  maxTimeout: 1h\n  vnc: {{host: {HYPERVISOR_HOST}, ports: {{first: 5910, last: 5930}}}}\n"
    )
}

fn session(ns: &str, name: &str, hypervisor: &str, extra: &str) -> String {
    format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hypervisor: {hypervisor}\n  vm: {{port: 5913}}\n{extra}"
    )
}

#[tokio::test]
async fn bad_specs_are_rejected_by_the_apiserver_with_readable_messages() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "validation").await?;
    let cases = [
        (
            session(&ns.name, "bad-duration", "any", "  timeout: 30 minutes\n"),
            "must be a duration such as 90s, 30m or 1h30m",
        ),
        (
            session(&ns.name, "bad-port", "any", "").replace("port: 5913", "port: 70000"),
            "spec.vm.port in body should be less than or equal to 65535",
        ),
        (
            session(&ns.name, "huge-name", &"h".repeat(300), ""),
            "spec.hypervisor: Too long: may not be more than 253 bytes",
        ),
        (
            session(
                &ns.name,
                "huge-timeout",
                "any",
                &format!("  timeout: {}h\n", "9".repeat(40)),
            ),
            "spec.timeout: Too long: may not be more than 32 bytes",
        ),
        (
            hypervisor("bad-range", "{}")
                .replace("first: 5910, last: 5930", "first: 5930, last: 5910"),
            "ports.first must not be greater than ports.last",
        ),
    ];
    for (manifest, expected) in cases {
        let out = kubectl_output(&["apply", "-f", "-"], Some(&manifest)).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_session_recreated_under_a_deleted_ones_name_gets_its_own_pod_and_token() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "recreated").await?;
    let hv = format!("recreated-{}", unique_suffix());
    let first = session(&ns.name, "again", &hv, "");
    kubectl(
        &["apply", "-f", "-"],
        Some(&(hypervisor(&hv, "{}") + "---\n" + &first)),
    )
    .await?;
    wait_for_session(
        &ns.name,
        "again",
        "condition=Ready",
        Duration::from_secs(60),
    )
    .await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let old = sessions.get("again").await?;
    let old_url = old.status.and_then(|s| s.url).context("old url")?;

    // Deleted and applied again at once: the old pod and Secret may still be
    // going away when the new session is first reconciled; the new session's
    // children carry its own uid, so they never meet.
    kubectl(
        &[
            "-n",
            &ns.name,
            "delete",
            "consolesession",
            "again",
            "--wait=false",
        ],
        None,
    )
    .await?;
    kubectl(&["apply", "-f", "-"], Some(&first)).await?;
    let old_uid = old.metadata.uid.context("uid")?;
    let pods: Api<Pod> = children_api(&client);
    let new = porthole_e2e::cluster::eventually(
        Duration::from_secs(90),
        "the new session Ready with a pod of its own",
        || {
            let (sessions, pods, old_uid) = (sessions.clone(), pods.clone(), old_uid.clone());
            async move {
                let Some(new) = sessions.get_opt("again").await? else {
                    return Ok(None);
                };
                let uid = new.metadata.uid.clone().unwrap_or_default();
                let phase = new.status.as_ref().and_then(|s| s.phase);
                anyhow::ensure!(
                    !phase.is_some_and(SessionPhase::is_final),
                    "the new session ended: {:?}",
                    new.status
                );
                let pod_session = pods
                    .get_opt(&porthole_api::contract::child_name("again", &uid))
                    .await?
                    .and_then(|p| p.metadata.labels?.remove(labels::SESSION_UID));
                let ready = uid != old_uid
                    && phase == Some(SessionPhase::Ready)
                    && pod_session.as_deref() == Some(uid.as_str());
                Ok(ready.then_some(new))
            }
        },
    )
    .await?;
    let new_url = new.status.and_then(|s| s.url).context("new url")?;
    assert_ne!(new_url, old_url, "the new session has a token of its own");
    kubectl(&["delete", "hypervisor", &hv], None).await?;
    Ok(())
}

#[tokio::test]
async fn a_session_whose_hypervisor_never_comes_expires_at_its_timeout() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "neverstarts").await?;
    let missing = format!("missing-{}", unique_suffix());
    let manifest = session(&ns.name, "waiting", &missing, "  timeout: 20s\n");
    kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
    wait_for_session(
        &ns.name,
        "waiting",
        "jsonpath={.status.reason}=HypervisorNotFound",
        Duration::from_secs(30),
    )
    .await?;
    wait_for_session(
        &ns.name,
        "waiting",
        "jsonpath={.status.phase}=Expired",
        Duration::from_secs(60),
    )
    .await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let session = sessions.get("waiting").await?;
    let status = session.status.context("status")?;
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("before it could start") && message.contains(&missing),
        "the message says why it never started: {message}"
    );
    // On time: seen Expired within 3 s of creation + 20 s (the retry for a
    // missing Hypervisor is a minute, so only the deadline can have woken it).
    let seen = k8s_openapi::jiff::Timestamp::now();
    let created = session.metadata.creation_timestamp.context("created")?.0;
    let late = seen.duration_since(created).as_secs_f64() - 20.0;
    assert!(late <= 3.0, "seen Expired {late:.1} s after its deadline");
    let ended = status.ended_at.context("endedAt")?.0;
    assert_eq!(
        ended.duration_since(created).as_secs(),
        20,
        "endedAt is the deadline"
    );
    assert!(session_pods(&client, &ns.name).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_namespace_outside_allowed_namespaces_gets_not_allowed_and_no_pod() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "notallowed").await?;
    let hv = format!("restricted-{}", unique_suffix());
    let manifests = hypervisor(&hv, "{matchLabels: {porthole.dev/consoles: allowed}}")
        + "---\n"
        + &session(&ns.name, "denied", &hv, "");
    kubectl(&["apply", "-f", "-"], Some(&manifests)).await?;
    wait_for_session(
        &ns.name,
        "denied",
        "jsonpath={.status.reason}=NotAllowed",
        Duration::from_secs(60),
    )
    .await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let status = sessions.get("denied").await?.status.context("status")?;
    assert_eq!(status.phase, Some(SessionPhase::Failed));
    assert!(status.message.unwrap_or_default().contains(&ns.name));
    assert!(
        session_pods(&client, &ns.name).await?.is_empty(),
        "no pod for a denied session"
    );
    kubectl(&["delete", "hypervisor", &hv], None).await?;
    Ok(())
}

#[tokio::test]
async fn the_hard_timeout_ends_the_session_on_time_and_removes_what_it_created() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "timeout").await?;
    let hv = format!("timed-{}", unique_suffix());
    let manifests =
        hypervisor(&hv, "{}") + "---\n" + &session(&ns.name, "short", &hv, "  timeout: 25s\n");
    kubectl(&["apply", "-f", "-"], Some(&manifests)).await?;
    wait_for_session(
        &ns.name,
        "short",
        "condition=Ready",
        Duration::from_secs(60),
    )
    .await?;
    wait_for_session(
        &ns.name,
        "short",
        "jsonpath={.status.phase}=Expired",
        Duration::from_secs(60),
    )
    .await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let status = sessions.get("short").await?.status.context("status")?;
    assert_eq!(status.reason.as_deref(), Some("Expired"));
    let expires_at = status.expires_at.context("expiresAt")?.0;
    let ended_at = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready condition")?
        .last_transition_time
        .0;
    let late = ended_at.duration_since(expires_at);
    assert!(
        late.as_secs_f64().abs() <= 2.0,
        "ended {late:?} after the deadline"
    );

    let child = child_name(&client, &ns.name, "short").await?;
    wait_until_children_gone(&client, &child, Duration::from_secs(30)).await?;
    assert!(
        sessions.get_opt("short").await?.is_some(),
        "the session stays with its final phase"
    );
    kubectl(&["delete", "hypervisor", &hv], None).await?;
    Ok(())
}
