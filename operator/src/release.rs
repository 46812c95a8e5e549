//! `porthole-operator --release-sessions`: what the chart's pre-delete hook
//! runs when porthole is uninstalled, so that nothing waits for an operator
//! that will not come back.
//!
//! 1. The operator's Deployment is scaled to zero and its pods waited for: a
//!    running operator would put the finalizers back.
//! 2. Every ConsoleSession that is not over ends (phase Completed, reason
//!    `OperatorUninstalled`) and loses porthole's finalizer, so deleting it,
//!    or its namespace, is immediate.
//! 3. Every child in the sessions namespace is deleted.
//!
//! Sessions stay (their CRD outlives the chart, as Helm keeps CRDs), with a
//! status that says what happened.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use porthole_api::contract::FINALIZER;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use serde_json::json;
use tracing::info;

use crate::config::Config;
use crate::reconcile::apply_status;
use crate::status::{Reason, Verdict};

/// Labels of the operator's own pods (the chart's selector labels).
const OPERATOR_PODS: &str = "app.kubernetes.io/name=porthole-operator";

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    stop_operator(&client, config).await?;
    let sessions: Api<ConsoleSession> = Api::all(client.clone());
    let mut released = 0;
    for session in sessions.list(&ListParams::default()).await? {
        release(&client, &session).await.with_context(|| {
            format!(
                "releasing ConsoleSession {}/{}",
                session.namespace().unwrap_or_default(),
                session.name_any()
            )
        })?;
        released += 1;
    }
    // The operator is stopped and every session released: every child goes,
    // however young.
    let swept = crate::sweep::sweep(
        &client,
        config.sessions_namespace(),
        &HashSet::new(),
        SignedDuration::ZERO,
    )
    .await?;
    info!(
        released,
        swept, "every session released; porthole can be uninstalled"
    );
    Ok(())
}

/// Scales the operator's Deployment to zero and waits until its pods are gone.
async fn stop_operator(client: &Client, config: &Config) -> anyhow::Result<()> {
    let name = config
        .operator_deployment
        .as_deref()
        .context("--operator-deployment names the Deployment to stop")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &config.namespace);
    deployments
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .with_context(|| format!("scaling Deployment {name} to zero"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    let lp = ListParams::default().labels(OPERATOR_PODS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if pods.list_metadata(&lp).await?.items.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator's pods were still there 2 minutes after scaling it to zero"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Ends a session that is not over and removes porthole's finalizer.
async fn release(client: &Client, session: &ConsoleSession) -> anyhow::Result<()> {
    let api: Api<ConsoleSession> =
        Api::namespaced(client.clone(), &session.namespace().unwrap_or_default());
    let previous = session.status.as_ref();
    if !previous
        .and_then(|s| s.phase)
        .is_some_and(SessionPhase::is_final)
    {
        let verdict = Verdict::new(
            SessionPhase::Completed,
            Reason::OperatorUninstalled,
            "porthole was uninstalled: the console is gone",
        );
        let status = verdict.to_status(previous, session.metadata.generation);
        apply_status(client, session, &status).await?;
    }
    if let Some(index) = session.finalizers().iter().position(|f| f == FINALIZER) {
        // `test` first: the list may have changed since it was read.
        let path = format!("/metadata/finalizers/{index}");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": path, "value": FINALIZER},
            {"op": "remove", "path": path},
        ]))?;
        api.patch(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    }
    Ok(())
}
