//! The kubelet of the test bed: runs the pods bound to this node as podman
//! containers.
//!
//! A watch on `spec.nodeName=<node>` feeds one [`worker::PodWorker`] per pod
//! (keyed by UID). At start-up, once the first complete list is in, containers
//! and state directories of pods that no longer exist are removed; workers
//! adopt the containers of pods that do.
mod archive;
mod container_config;
pub mod fake;
mod naming;
mod record;
mod sandbox;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::podman::{ExitWatch, Podman};
use crate::probes::Prober;
use crate::volumes::token::TokenManager;
pub use sandbox::SandboxRoot;
use worker::{PodWorker, WorkerInputs};

/// What every pod worker shares.
pub struct NodeContext {
    pub client: Client,
    pub podman: Podman,
    pub cache: Cache,
    pub tokens: TokenManager,
    pub exits: ExitWatch,
    pub prober: Prober,
    pub sandbox_root: SandboxRoot,
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The agent is exiting: workers stop without touching their containers.
    pub shutdown: CancellationToken,
    /// `--fake-containers` (the control-plane benchmark only): porthole's
    /// proxy pods are reported running without running anything.
    pub fake_containers: Option<Arc<fake::FakeContainers>>,
}

struct WorkerHandle {
    updates: watch::Sender<Arc<Pod>>,
    vanished: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs pods until `ctx.shutdown` fires, then waits for the workers to let go.
pub async fn run(ctx: Arc<NodeContext>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = std::pin::pin!(watcher(pods, config).default_backoff());
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    // Pods whose deletion the agent finished; later events for them are echoes.
    let mut deleted: HashSet<String> = HashSet::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut collected_garbage = false;

    loop {
        let event = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            event = events.next() => event,
        };
        match event {
            Some(Ok(Event::Init)) => listing.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                listing.insert(uid(&pod));
                apply(&ctx, &mut workers, &deleted, pod);
            }
            Some(Ok(Event::InitDone)) => {
                // Pods not in a fresh list vanished while the watch was down.
                for (pod_uid, handle) in &workers {
                    if !listing.contains(pod_uid) {
                        handle.vanished.cancel();
                    }
                }
                if !collected_garbage {
                    collected_garbage = true;
                    remove_orphans(&ctx, &listing).await;
                }
            }
            Some(Ok(Event::Apply(pod))) => apply(&ctx, &mut workers, &deleted, pod),
            Some(Ok(Event::Delete(pod))) => {
                let pod_uid = uid(&pod);
                deleted.remove(&pod_uid);
                if let Some(handle) = workers.get(&pod_uid) {
                    handle.vanished.cancel();
                }
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "watching the node's pods failed; retrying")
            }
            None => break,
        }
        workers.retain(|pod_uid, handle| {
            let running = !handle.task.is_finished();
            if !running && !handle.vanished.is_cancelled() {
                deleted.insert(pod_uid.clone());
            }
            running
        });
    }
    for (_, handle) in workers {
        let _ = handle.task.await;
    }
}

fn apply(
    ctx: &Arc<NodeContext>,
    workers: &mut HashMap<String, WorkerHandle>,
    deleted: &HashSet<String>,
    pod: Pod,
) {
    let pod_uid = uid(&pod);
    if deleted.contains(&pod_uid) {
        return;
    }
    let pod = Arc::new(pod);
    if let Some(handle) = workers.get(&pod_uid)
        && !handle.task.is_finished()
    {
        handle.updates.send_replace(pod);
        return;
    }
    let faked = ctx.fake_containers.clone().filter(|_| fake::is_faked(&pod));
    let (updates, receiver) = watch::channel(pod);
    let vanished = CancellationToken::new();
    let inputs = WorkerInputs {
        updates: receiver,
        vanished: vanished.clone(),
    };
    let task = match faked {
        Some(fake) => tokio::spawn(fake::run(ctx.clone(), fake, inputs)),
        None => tokio::spawn(PodWorker::new(ctx.clone(), inputs).run()),
    };
    workers.insert(
        pod_uid,
        WorkerHandle {
            updates,
            vanished,
            task,
        },
    );
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Removes containers and state directories of pods not in `live` (the
/// first complete list of the node's pods), saving container logs first.
async fn remove_orphans(ctx: &NodeContext, live: &HashSet<String>) {
    let containers = match ctx
        .podman
        .list_labelled(naming::NODE_LABEL, &ctx.node_name)
        .await
    {
        Ok(containers) => containers,
        Err(err) => {
            return tracing::error!(error = %err, "cannot list containers for garbage collection");
        }
    };
    let orphans = containers.into_iter().filter(|c| {
        c.labels
            .get(naming::POD_UID_LABEL)
            .is_none_or(|pod_uid| !live.contains(pod_uid))
    });
    remove_containers(ctx, orphans.collect()).await;

    let pods_dir = ctx.state_dir.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name)
                && let Err(err) = std::fs::remove_dir_all(entry.path())
            {
                tracing::warn!(dir = %entry.path().display(), error = %err, "cannot remove orphaned pod directory");
            }
        }
    }
}

/// Removes every container this agent created (for `--remove-containers-on-exit`).
pub async fn remove_all_containers(ctx: &NodeContext) {
    match ctx
        .podman
        .list_labelled(naming::NODE_LABEL, &ctx.node_name)
        .await
    {
        Ok(containers) => remove_containers(ctx, containers).await,
        Err(err) => tracing::error!(error = %err, "cannot list containers to remove"),
    }
}

/// Saves logs of, then removes, `containers`: app containers before sandboxes,
/// which podman will not remove while others use them.
async fn remove_containers(ctx: &NodeContext, containers: Vec<crate::podman::ContainerSummary>) {
    let (sandboxes, apps): (Vec<_>, Vec<_>) = containers.into_iter().partition(|c| {
        c.labels.get(naming::ROLE_LABEL).map(String::as_str) == Some(naming::SANDBOX_ROLE)
    });
    for container in apps.iter().chain(&sandboxes) {
        let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
        if label(naming::ROLE_LABEL) == naming::CONTAINER_ROLE {
            let pod = naming::PodIdentity {
                namespace: label(naming::POD_NAMESPACE_LABEL),
                name: label(naming::POD_NAME_LABEL),
                uid: label(naming::POD_UID_LABEL),
            };
            let container_name = label(naming::CONTAINER_NAME_LABEL);
            let archive_path = ctx.log_dir.join(pod.log_file_name(&container_name));
            let scratch = ctx.state_dir.join(format!("removed-{}.log", container.id));
            let header = format!("container {} removed by the node agent", container.id);
            archive::save(&ctx.podman, &container.id, &scratch, &archive_path, &header).await;
            let _ = std::fs::remove_file(&scratch);
        }
        tracing::info!(container = %container.id, "removing container");
        if let Err(err) = ctx.podman.remove(&container.id).await {
            tracing::warn!(container = %container.id, error = %err, "cannot remove container");
        }
    }
}
