//! The apply step: the session's children by server-side apply, and their
//! removal once the session has ended.

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use porthole_api::v1alpha1::ConsoleSession;
use tracing::info;

use super::next::until;
use super::update_status::publish;
use super::{MANAGER, Result};
use crate::context::Context;
use crate::naming::child_name;
use crate::resources::SessionPlan;
use crate::status::Reason;

/// The session's children, in porthole's sessions namespace.
pub(super) fn children_of(ctx: &Context, session: &ConsoleSession) -> Children {
    let uid = session.uid().unwrap_or_default();
    Children::new(
        ctx,
        ctx.config.sessions_namespace(),
        &child_name(&session.name_any(), &uid),
    )
}

/// The session's Pod, Service, Secret, NetworkPolicy and Ingress, which share
/// one name.
pub(super) struct Children {
    pub(super) name: String,
    pub(super) pods: Api<Pod>,
    services: Api<Service>,
    pub(super) secrets: Api<Secret>,
    network_policies: Api<NetworkPolicy>,
    ingresses: Api<Ingress>,
}

impl Children {
    fn new(ctx: &Context, ns: &str, name: &str) -> Self {
        Children {
            name: name.to_string(),
            pods: Api::namespaced(ctx.client.clone(), ns),
            services: Api::namespaced(ctx.client.clone(), ns),
            secrets: Api::namespaced(ctx.client.clone(), ns),
            network_policies: Api::namespaced(ctx.client.clone(), ns),
            ingresses: Api::namespaced(ctx.client.clone(), ns),
        }
    }

    /// Deletes everything the session created; already gone is fine.
    pub(super) async fn delete_all(&self) -> Result<()> {
        let dp = DeleteParams::background();
        ignore_not_found(self.pods.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.services.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.secrets.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(self.ingresses.delete(&self.name, &dp).await.map(drop))?;
        ignore_not_found(
            self.network_policies
                .delete(&self.name, &dp)
                .await
                .map(drop),
        )?;
        Ok(())
    }
}

fn ignore_not_found(result: kube::Result<()>) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

/// Applies the Secret, NetworkPolicy and Service, and creates the Pod unless
/// `existing_pod` is there (a Pod's spec is immutable: a running session keeps
/// the pod it started with). Returns the Pod and the Service as applied.
pub(super) async fn apply(
    ctx: &Context,
    children: &Children,
    plan: &SessionPlan,
    session: &ConsoleSession,
    existing_pod: Option<Pod>,
    secret_exists: bool,
) -> Result<(Pod, Service)> {
    let params = PatchParams::apply(MANAGER).force();
    // An immutable Secret keeps what the session started with: a password the
    // Hypervisor's Secret changed since must not fail every later reconcile.
    if !secret_exists || plan.target.renews() {
        children
            .secrets
            .patch(&children.name, &params, &Patch::Apply(&plan.secret()))
            .await?;
    }
    // The policy goes first, so the pod never runs unconfined.
    if ctx.config.network_policies {
        children
            .network_policies
            .patch(
                &children.name,
                &params,
                &Patch::Apply(&plan.network_policy()),
            )
            .await?;
    }
    let pod = match existing_pod {
        Some(pod) => pod,
        None => {
            // A session that published a URL, or saw its pod deleted, had a
            // pod: it was deleted or evicted under its viewers. Its
            // replacement serves the same URL, token and deadline; say so,
            // since the viewers were cut off.
            let replacing = session.status.as_ref().is_some_and(|s| {
                s.url.is_some() || s.reason.as_deref() == Some(Reason::ProxyStopping.as_str())
            });
            let pod = children
                .pods
                .patch(&children.name, &params, &Patch::Apply(&plan.pod()))
                .await?;
            info!(session = %session.name_any(), pod = %children.name, replacing, "created console proxy pod");
            let (type_, reason, note) = if replacing {
                (
                    EventType::Warning,
                    "ProxyReplaced",
                    format!(
                        "console proxy pod {} was gone; started another at the same URL: viewers must reconnect",
                        children.name
                    ),
                )
            } else {
                (
                    EventType::Normal,
                    "Created",
                    format!("created console proxy pod {}", children.name),
                )
            };
            publish(ctx, session, type_, reason, note).await;
            pod
        }
    };
    let service = children
        .services
        .patch(&children.name, &params, &Patch::Apply(&plan.service()))
        .await?;
    match plan.ingress() {
        Some(ingress) => {
            children
                .ingresses
                .patch(&children.name, &params, &Patch::Apply(&ingress))
                .await?;
        }
        // The session may have moved away from Ingress exposure.
        None => ignore_not_found(
            children
                .ingresses
                .delete(&children.name, &DeleteParams::background())
                .await
                .map(drop),
        )?,
    }
    Ok((pod, service))
}

/// A final session makes sure its children are gone, then is deleted at
/// `delete_at` (`ttlSecondsAfterFinished` after it ended, like a Job); until
/// then, it wakes up when that is due.
pub(super) async fn wind_down(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    delete_at: Option<Timestamp>,
) -> Result<Action> {
    ctx.viewer_watches.stop(&ObjectRef::from_obj(session));
    let uid = session.uid().unwrap_or_default();
    if !ctx.cleaned_up.contains(&uid) {
        children.delete_all().await?;
        ctx.cleaned_up.insert(&uid);
    }
    let Some(due) = delete_at else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    if now < due {
        return Ok(Action::requeue(until(now, due)));
    }
    let api: Api<ConsoleSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    let ttl = session.spec.ttl_seconds_after_finished.unwrap_or_default();
    info!(session = %session.name_any(), ttl, "deleting the finished session (ttlSecondsAfterFinished)");
    ignore_not_found(
        api.delete(&session.name_any(), &DeleteParams::background())
            .await
            .map(drop),
    )?;
    Ok(Action::await_change())
}
