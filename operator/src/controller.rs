//! Wires the reconciler to watches: ConsoleSessions, the Pods and Services they
//! own, their Services' EndpointSlices, and the Hypervisors they name. Secrets are not watched: the session
//! Secret never changes, and not listing Secrets keeps the operator's RBAC small.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use porthole_api::contract::labels;
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor};
use tracing::{info, warn};

use crate::context::Context;
use crate::naming::label_value;
use crate::reconcile::{error_policy, reconcile};

/// Runs the controller until a shutdown signal arrives.
pub async fn run_controller(client: Client, ctx: Arc<Context>) {
    let sessions: Api<ConsoleSession> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::OPERATOR_NAME
    ));
    let controller = Controller::new(sessions, watcher::Config::default()).with_config(
        controller::Config::default().concurrency(ctx.config.max_concurrent_reconciles),
    );
    let store = controller.store();
    ctx.metrics.count_sessions_from(store.clone());
    let sessions = store.clone();
    tokio::spawn(forget_deleted_sessions(ctx.clone(), store.clone()));
    // A viewer coming or going brings its session back at once.
    let viewer_triggers = ctx
        .viewer_triggers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| futures::channel::mpsc::unbounded().1);
    controller
        .reconcile_on(viewer_triggers)
        .owns(Api::<Pod>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned)
        .watches(
            // EndpointSlices carry their Service's labels, so the session's
            // label value: its name, shortened when long (naming::label_value).
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::OPERATOR_NAME
            )),
            move |slice| {
                let value = slice.labels().get(labels::SESSION)?;
                let namespace = slice.namespace()?;
                sessions
                    .state()
                    .into_iter()
                    .find(|s| {
                        s.namespace().as_deref() == Some(namespace.as_str())
                            && label_value(&s.name_any()) == *value
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
            },
        )
        .watches(
            Api::<Hypervisor>::all(client.clone()),
            watcher::Config::default(),
            move |hypervisor| {
                // A Hypervisor change concerns every session that names it.
                let name = hypervisor.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|s| s.spec.hypervisor == name)
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((session, _)) => tracing::debug!(session = %session.name, "reconciled"),
                Err(error) => warn!(%error, "reconcile loop error"),
            }
        })
        .await;
    info!("controller stopped");
}

/// Keeps `Context::cleaned_up` to sessions that still exist.
async fn forget_deleted_sessions(
    ctx: Arc<Context>,
    store: kube::runtime::reflector::Store<ConsoleSession>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        every.tick().await;
        let sessions = store.state();
        ctx.cleaned_up
            .retain_existing(sessions.iter().filter_map(|s| s.metadata.uid.as_deref()));
    }
}
