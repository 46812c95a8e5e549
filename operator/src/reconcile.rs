//! The reconcile pipeline for one ConsoleSession. Its children live in
//! porthole's sessions namespace, without owner references (those cannot cross
//! namespaces): the session's finalizer removes them when it is deleted, and
//! the sweep ([`crate::sweep`]) removes any whose session is gone.
//!
//! 0. **deleted?** the finalizer's cleanup removes the children;
//! 1. **next?** what was observed so far decides, purely (`next`), whether
//!    this reconcile ends here: a final session only makes sure its children
//!    are gone; a proxy pod that exited ends the session with its end reason,
//!    as do a run-once session's used viewer and a published deadline that
//!    passed; a pod being deleted is waited for;
//! 2. **dereference** the Hypervisor, its password Secret, the session Secret
//!    and, for a recorded session, its PersistentVolumeClaim (`dereference`);
//! 3. **validate** into a [`SessionPlan`](crate::resources::SessionPlan) (pure);
//! 4. **apply** the Secret, NetworkPolicy, Pod, Service and Ingress by
//!    server-side apply (`apply`);
//! 5. **update status** from what the Pod and Service report (`update_status`).
//!
//! Reading the session's pod before step 1, and steps 2, 4 and 5, talk to the
//! API server; step 1 and the decisions between the others (`next`) are pure,
//! and unit-tested with plain values.

mod apply;
mod dereference;
mod next;
mod update_status;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use porthole_api::contract::FINALIZER;
use porthole_api::v1alpha1::ConsoleSession;
use rand::RngCore;
use tracing::{info, warn};

use self::apply::{Children, apply, children_of, wind_down};
use self::dereference::dereference;
use self::next::Next;
pub use self::update_status::apply_status;
use self::update_status::{finish, serving, update_status};
use crate::context::Context;
use crate::proxmox::{Authenticated, authenticate};
use crate::validate::plan;

/// The one field manager for everything the operator writes.
pub const MANAGER: &str = "porthole-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the session's finalizer failed, or its cleanup did.
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Keeps the session's finalizer in place while it lives, and runs the
/// cleanup when it is deleted.
pub async fn reconcile(session: Arc<ConsoleSession>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let api: Api<ConsoleSession> =
        Api::namespaced(ctx.client.clone(), &session.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, session, |event| async {
        match event {
            finalizer::Event::Apply(session) => run(session, &ctx).await,
            finalizer::Event::Cleanup(session) => clean_up(&session, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The session is being deleted: its children go first, then the finalizer.
async fn clean_up(session: &ConsoleSession, ctx: &Context) -> Result<Action> {
    ctx.viewer_watches.stop(&ObjectRef::from_obj(session));
    let uid = session.uid().unwrap_or_default();
    if !ctx.cleaned_up.contains(&uid) {
        children_of(ctx, session).delete_all().await?;
        info!(session = %session.name_any(), "deleted the session's proxy pod and what went with it");
    }
    Ok(Action::await_change())
}

/// The live session, step by step; each step that can end the reconcile
/// hands `next`'s decision to [`conclude`].
async fn run(session: Arc<ConsoleSession>, ctx: &Context) -> Result<Action> {
    let children = children_of(ctx, &session);
    // A final session's status alone decides: its pod is not read.
    let existing_pod = if next::is_final(&session) {
        None
    } else {
        children.pods.get_opt(&children.name).await?
    };
    if let Some(decided) = next::decide(&session, existing_pod.as_ref(), Timestamp::now()) {
        return conclude(&session, ctx, &children, decided).await;
    }
    let observed = dereference(&session, ctx, &children, existing_pod.is_some()).await?;
    let plan = match plan(&session, &observed, &ctx.config, new_token) {
        Ok(plan) => plan,
        Err(verdict) => {
            let decided = next::unplanned(&session, verdict, Timestamp::now());
            return conclude(&session, ctx, &children, decided).await;
        }
    };
    if let Some(end) = next::past_deadline(plan.expires_at, Timestamp::now()) {
        return conclude(&session, ctx, &children, end).await;
    }
    let Authenticated { plan, renew_at } =
        match authenticate(plan, observed.session_secret.as_ref(), ctx).await {
            Ok(authenticated) => authenticated,
            Err(verdict) => {
                let retry = Duration::from_secs(15);
                let decided = next::wait(&session, verdict, retry, Timestamp::now());
                return conclude(&session, ctx, &children, decided).await;
            }
        };
    let secret_exists = observed.session_secret.is_some();
    let (pod, service) =
        apply(ctx, &children, &plan, &session, existing_pod, secret_exists).await?;
    let verdict = serving(&session, ctx, &children, &plan, &pod, &service).await?;
    update_status(&session, ctx, &verdict).await?;
    // Wake up exactly at the deadline. Measured now, not when this reconcile
    // began: the requeue counts from the reconcile's end.
    let wake = next::wake_after(plan.expires_at, renew_at, Timestamp::now());
    Ok(Action::requeue(wake))
}

/// Carries out a decision that ends this reconcile.
async fn conclude(
    session: &ConsoleSession,
    ctx: &Context,
    children: &Children,
    decided: Next,
) -> Result<Action> {
    match decided {
        Next::Finished { delete_at } => wind_down(session, ctx, children, delete_at).await,
        Next::End(verdict) => {
            finish(session, ctx, children, verdict).await?;
            Ok(Action::await_change())
        }
        Next::Wait { verdict, retry } => {
            update_status(session, ctx, &verdict).await?;
            Ok(Action::requeue(retry))
        }
    }
}

/// 32 random bytes, URL-safe base64: 256 bits an attacker cannot guess.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn error_policy(session: Arc<ConsoleSession>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(session = %session.name_any(), %error, "reconcile failed, retrying");
    ctx.metrics.reconcile_failed(error.category());
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
