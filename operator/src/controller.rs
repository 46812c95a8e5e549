//! Wires the reconciler to watches: ConsoleSessions, their Pods, Services and
//! the Services' EndpointSlices in porthole's sessions namespace, and the
//! Hypervisors they name. Secrets are not watched: the session Secret never
//! changes, and not listing Secrets keeps the operator's RBAC small. The
//! sweep of orphaned children runs beside it, on the leader only.

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
    // Children live in porthole's namespace without owner references: each
    // brings back the session whose uid it carries.
    let children = ctx.config.sessions_namespace().to_string();
    let by_uid = |sessions: kube::runtime::reflector::Store<ConsoleSession>| {
        move |child_labels: &std::collections::BTreeMap<String, String>| {
            let uid = child_labels.get(labels::SESSION_UID)?;
            sessions
                .state()
                .into_iter()
                .find(|s| s.metadata.uid.as_ref() == Some(uid))
                .map(|s| ObjectRef::from_obj(&*s))
        }
    };
    let (pod_owner, service_owner, slice_owner) = (
        by_uid(store.clone()),
        by_uid(store.clone()),
        by_uid(sessions),
    );
    tokio::spawn(crate::sweep::run(client.clone(), children.clone()));
    controller
        .reconcile_on(viewer_triggers)
        .watches(
            Api::<Pod>::namespaced(client.clone(), &children),
            owned.clone(),
            move |pod| pod_owner(pod.labels()),
        )
        .watches(
            Api::<Service>::namespaced(client.clone(), &children),
            owned.clone(),
            move |service| service_owner(service.labels()),
        )
        .watches(
            // EndpointSlices carry their Service's labels.
            Api::<EndpointSlice>::namespaced(client.clone(), &children),
            owned,
            move |slice| slice_owner(slice.labels()),
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
