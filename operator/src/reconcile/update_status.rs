//! The update-status step: the verdict a running session's children report,
//! the status written from a verdict, and the Events that go with it.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus, SessionPhase};
use serde_json::json;
use tracing::{info, warn};

use super::apply::Children;
use super::dereference::{read_viewers, service_routes_to};
use super::{MANAGER, Result};
use crate::context::Context;
use crate::resources::SessionPlan;
use crate::status::{Reason, SeenViewers, Verdict, pod_is_ready};
use crate::viewers;

/// What a session whose children are applied shows: Ready (or Connected)
/// once a viewer can connect, Pending with the reason until then.
pub(super) async fn serving(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    plan: &SessionPlan,
    pod: &Pod,
    service: &Service,
) -> Result<Verdict> {
    let ns = ctx.config.sessions_namespace();
    // Ready means a viewer can connect now: the pod is ready *and* the Service
    // routes to it, which happens only once its EndpointSlice lists *this* pod
    // as ready (a replaced pod's endpoint can linger there for a while).
    let routed = pod_is_ready(pod) && service_routes_to(ctx, ns, &children.name, pod).await?;
    let url = plan.exposure.url(
        service,
        pod,
        ctx.config.node_address.as_deref(),
        &plan.token,
    );
    let mut verdict = match url {
        Ok(url) if routed => {
            let viewers = read_viewers(session, ctx, pod, &plan.token).await;
            open_verdict(url, viewers)
        }
        Ok(_) => Verdict::new(
            SessionPhase::Pending,
            Reason::ProxyStarting,
            "waiting for the console proxy to become ready",
        ),
        Err(waiting) => Verdict::new(SessionPhase::Pending, Reason::AwaitingAddress, waiting),
    };
    verdict.expires_at = Some(Time(plan.expires_at));
    Ok(verdict)
}

/// Ready, or Connected while somebody watches.
fn open_verdict(url: String, viewers: Option<SeenViewers>) -> Verdict {
    let watching = viewers.as_ref().map_or(0, |v| v.status.count);
    let base = if watching > 0 {
        Verdict::new(
            SessionPhase::Connected,
            Reason::ViewerConnected,
            format!("{watching} viewer(s) connected"),
        )
    } else {
        Verdict::new(
            SessionPhase::Ready,
            Reason::ProxyReady,
            "the console is ready",
        )
    };
    Verdict {
        url: Some(url),
        viewers: viewers.map(Box::new),
        ..base
    }
}

/// Records a final verdict, then removes everything the session created.
pub(super) async fn finish(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    verdict: Verdict,
) -> Result<()> {
    update_status(session, ctx, &verdict).await?;
    children.delete_all().await?;
    // The status write brings the session back, final: nothing to delete again.
    ctx.cleaned_up.insert(&session.uid().unwrap_or_default());
    Ok(())
}

/// Writes `status` as the session's whole status, by server-side apply with
/// the operator's one field manager.
pub async fn apply_status(
    client: &kube::Client,
    session: &ConsoleSession,
    status: &ConsoleSessionStatus,
) -> kube::Result<()> {
    let api: Api<ConsoleSession> =
        Api::namespaced(client.clone(), &session.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "porthole.dev/v1alpha1",
        "kind": "ConsoleSession",
        "status": status,
    });
    api.patch_status(
        &session.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}

/// Writes the status when it changed, with an Event for each phase transition.
pub(super) async fn update_status(
    session: &ConsoleSession,
    ctx: &Context,
    verdict: &Verdict,
) -> Result<()> {
    let previous = session.status.as_ref();
    let generation = session.meta().generation;
    let status = verdict.to_status(previous, generation);
    if previous == Some(&status) {
        return Ok(());
    }
    apply_status(&ctx.client, session, &status).await?;
    if let Some(now) = &status.viewers {
        let before = previous.and_then(|p| p.viewers.as_ref());
        let address = verdict
            .viewers
            .as_ref()
            .and_then(|v| v.last_address.as_deref());
        for (reason, note) in viewers::changes(before, now, address) {
            info!(session = %session.name_any(), reason, "{note}");
            publish(ctx, session, EventType::Normal, reason, note).await;
        }
    }
    let previous_phase = previous.and_then(|p| p.phase);
    let phase_changed = previous_phase != Some(verdict.phase);
    let reason_changed =
        previous.and_then(|p| p.reason.as_deref()) != Some(verdict.reason.as_str());
    // Viewers coming and going have their own Events (above).
    let viewers_only = previous_phase.is_some_and(SessionPhase::is_open) && verdict.phase.is_open();
    if (phase_changed || reason_changed) && !viewers_only {
        ctx.metrics.phase_entered(verdict.phase);
        let type_ = if verdict.phase == SessionPhase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(session = %session.name_any(), phase = ?verdict.phase, reason = verdict.reason.as_str(), "{}", verdict.message);
        publish(
            ctx,
            session,
            type_,
            verdict.reason.as_str(),
            verdict.message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Events are best effort: a failure to record one must not fail the reconcile.
pub(super) async fn publish(
    ctx: &Context,
    session: &ConsoleSession,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
        warn!(session = %session.name_any(), %error, "could not record an Event");
    }
}
