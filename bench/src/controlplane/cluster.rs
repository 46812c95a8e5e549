//! The test bed as the driver sees it: a client, the bench's namespace and
//! Hypervisor, the sessions it applies, and watches that note when each thing
//! happened. Waiting is always on a watch, never a sleep.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use porthole_api::contract::labels;
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor, SessionPhase};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The field manager of everything the driver applies.
pub const MANAGER: &str = "porthole-bench";
/// The bench's Hypervisor (cluster-scoped; reapplied by every run).
pub const HYPERVISOR: &str = "porthole-bench";
/// Its VNC ports; sessions take them in turn (several may share one: the
/// proxies dial the VM only when a viewer comes, and none does here).
pub const FIRST_PORT: u16 = 5910;
pub const LAST_PORT: u16 = 5930;

pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The bench's Hypervisor: plain VNC on the test bed's node address, every
/// namespace allowed, a maximum timeout far above any session's.
pub fn hypervisor() -> serde_json::Value {
    json!({
        "apiVersion": "porthole.dev/v1alpha1",
        "kind": "Hypervisor",
        "metadata": {"name": HYPERVISOR},
        "spec": {
            "allowedNamespaces": {},
            "maxTimeout": "24h",
            "vnc": {"host": "10.200.0.1", "ports": {"first": FIRST_PORT, "last": LAST_PORT}},
        },
    })
}

/// The `index`th session's name: `s0001`, ... (sorts as applied).
pub fn session_name(index: usize) -> String {
    format!("s{:04}", index + 1)
}

/// The `index`th session, as `kubectl apply --server-side` would send it.
pub fn session(namespace: &str, index: usize, timeout: &str) -> serde_json::Value {
    let ports = usize::from(LAST_PORT - FIRST_PORT) + 1;
    let port = FIRST_PORT as usize + index % ports;
    json!({
        "apiVersion": "porthole.dev/v1alpha1",
        "kind": "ConsoleSession",
        "metadata": {"name": session_name(index), "namespace": namespace},
        "spec": {"hypervisor": HYPERVISOR, "vm": {"port": port}, "timeout": timeout},
    })
}

/// A namespace of its own for this run, and the Hypervisor.
pub async fn prepare(client: &Client, namespace: &str) -> Result<()> {
    let params = PatchParams::apply(MANAGER).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    namespaces
        .patch(namespace, &params, &Patch::Apply(&ns))
        .await
        .with_context(|| format!("cannot create the namespace {namespace}"))?;
    let hypervisors: Api<Hypervisor> = Api::all(client.clone());
    hypervisors
        .patch(HYPERVISOR, &params, &Patch::Apply(&hypervisor()))
        .await
        .context("cannot apply the bench's Hypervisor (is porthole installed?)")?;
    Ok(())
}

/// Deletes the run's namespace (and with it its sessions); does not wait.
pub async fn tear_down(client: &Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces
        .delete(namespace, &DeleteParams::background())
        .await
    {
        say!("could not delete the namespace {namespace}: {e}");
    }
}

/// What the watches saw of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionSeen {
    /// Its `Ready` condition was first seen `True`.
    pub ready_at: Option<Instant>,
    /// Its phase was first seen final.
    pub final_at: Option<Instant>,
    pub phase: Option<SessionPhase>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
}

impl SessionSeen {
    pub fn is_final(&self) -> bool {
        self.final_at.is_some()
    }

    /// Why it is not Ready, for a failure note.
    pub fn describe(&self) -> String {
        format!(
            "phase {}, reason {}: {}",
            self.phase.map_or("none".into(), |p| format!("{p:?}")),
            self.reason.as_deref().unwrap_or("none"),
            self.message.as_deref().unwrap_or("")
        )
    }
}

/// What the watches saw of one session's proxy pod.
#[derive(Debug, Clone, Copy)]
pub struct PodSeen {
    pub created_at: Instant,
    /// Its `Ready` condition was first seen `True`.
    pub ready_at: Option<Instant>,
}

/// What the watches saw of one session's Service's EndpointSlices.
#[derive(Debug, Clone, Copy, Default)]
pub struct SliceSeen {
    /// An endpoint was first seen ready.
    pub ready_at: Option<Instant>,
}

/// The children kinds counted: Pods, Services, Secrets.
pub const CHILD_KINDS: [&str; 3] = ["Pods", "Services", "Secrets"];

/// Everything the watches saw, with when.
#[derive(Debug, Default)]
pub struct Seen {
    pub sessions: HashMap<String, SessionSeen>,
    /// By the session label's value (the session's name).
    pub pods: HashMap<String, PodSeen>,
    /// Likewise (EndpointSlices carry their Service's labels).
    pub slices: HashMap<String, SliceSeen>,
    /// Names of the live Pods, Services and Secrets with the session label.
    pub children: [HashSet<String>; 3],
    pub peak_children: [usize; 3],
    /// Watches that have listed once.
    synced: usize,
}

impl Seen {
    pub fn children_left(&self) -> usize {
        self.children.iter().map(HashSet::len).sum()
    }

    fn note_child(&mut self, kind: usize, name: String) {
        self.children[kind].insert(name);
        self.peak_children[kind] = self.peak_children[kind].max(self.children[kind].len());
    }
}

fn condition_true(conditions: Option<&[(String, String)]>) -> bool {
    conditions.is_some_and(|c| c.iter().any(|(t, s)| t == "Ready" && s == "True"))
}

/// How one kind updates [`Seen`].
trait Tracked:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Its index in [`Seen::children`], if it is a child.
    const CHILD: Option<usize>;
    fn seen(&self, seen: &mut Seen, now: Instant);
}

impl Tracked for ConsoleSession {
    const CHILD: Option<usize> = None;
    fn seen(&self, seen: &mut Seen, now: Instant) {
        let entry = seen.sessions.entry(self.name_any()).or_default();
        let Some(status) = &self.status else {
            return;
        };
        let conditions: Vec<(String, String)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        if entry.ready_at.is_none() && condition_true(Some(&conditions)) {
            entry.ready_at = Some(now);
        }
        if entry.final_at.is_none() && status.phase.is_some_and(SessionPhase::is_final) {
            entry.final_at = Some(now);
        }
        entry.phase = status.phase;
        entry.reason.clone_from(&status.reason);
        entry.message.clone_from(&status.message);
        entry.expires_at = status.expires_at.as_ref().map(|t| t.0);
        entry.ended_at = status.ended_at.as_ref().map(|t| t.0);
    }
}

impl Tracked for Pod {
    const CHILD: Option<usize> = Some(0);
    fn seen(&self, seen: &mut Seen, now: Instant) {
        let Some(session) = self.labels().get(labels::SESSION).cloned() else {
            return;
        };
        let entry = seen.pods.entry(session).or_insert(PodSeen {
            created_at: now,
            ready_at: None,
        });
        let conditions: Option<Vec<(String, String)>> = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect()
            });
        if entry.ready_at.is_none() && condition_true(conditions.as_deref()) {
            entry.ready_at = Some(now);
        }
    }
}

impl Tracked for EndpointSlice {
    const CHILD: Option<usize> = None;
    fn seen(&self, seen: &mut Seen, now: Instant) {
        let Some(session) = self.labels().get(labels::SESSION).cloned() else {
            return;
        };
        let ready = self
            .endpoints
            .iter()
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false));
        let entry = seen.slices.entry(session).or_default();
        if entry.ready_at.is_none() && ready {
            entry.ready_at = Some(now);
        }
    }
}

impl Tracked for Service {
    const CHILD: Option<usize> = Some(1);
    fn seen(&self, _: &mut Seen, _: Instant) {}
}

impl Tracked for Secret {
    const CHILD: Option<usize> = Some(2);
    fn seen(&self, _: &mut Seen, _: Instant) {}
}

/// Watches on the run's sessions, in their namespace, and on their Pods,
/// Services, Secrets and EndpointSlices, in porthole's namespace (labelled
/// with the sessions' namespace).
pub struct Watches {
    seen: Arc<Mutex<Seen>>,
    changed: watch::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watches {
    /// Starts the watches and returns once each has listed.
    pub async fn start(client: &Client, namespace: &str) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, changed) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let children = watcher::Config::default()
            .labels(&format!("{}={namespace}", labels::SESSION_NAMESPACE));
        let home = crate::controlplane::PORTHOLE_NAMESPACE;
        let tasks = vec![
            spawn::<ConsoleSession>(
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default(),
                seen.clone(),
                tx.clone(),
            ),
            spawn::<Pod>(
                Api::namespaced(client.clone(), home),
                children.clone(),
                seen.clone(),
                tx.clone(),
            ),
            spawn::<Service>(
                Api::namespaced(client.clone(), home),
                children.clone(),
                seen.clone(),
                tx.clone(),
            ),
            spawn::<Secret>(
                Api::namespaced(client.clone(), home),
                children.clone(),
                seen.clone(),
                tx.clone(),
            ),
            spawn::<EndpointSlice>(
                Api::namespaced(client.clone(), home),
                children,
                seen.clone(),
                tx,
            ),
        ];
        let watches = Self {
            seen,
            changed,
            tasks,
        };
        let count = watches.tasks.len();
        if !watches
            .wait_until(Duration::from_secs(60), |s| s.synced >= count)
            .await
        {
            anyhow::bail!("the watches did not list within 60 s");
        }
        Ok(watches)
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds, at most `limit`; whether it holds.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let mut changed = self.changed.clone();
        let deadline = Instant::now() + limit;
        loop {
            changed.borrow_and_update();
            if done(&self.seen()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return done(&self.seen()),
            }
        }
    }
}

fn spawn<K: Tracked>(
    api: Api<K>,
    config: watcher::Config,
    seen: Arc<Mutex<Seen>>,
    tx: Arc<watch::Sender<u64>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        let mut listing: Vec<K> = Vec::new();
        let mut listed_once = false;
        while let Some(event) = events.next().await {
            let now = Instant::now();
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    say!("  watch of {} failed, retrying: {e}", K::kind(&()));
                    continue;
                }
            };
            {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Event::Init => listing.clear(),
                    Event::InitApply(object) => listing.push(object),
                    Event::InitDone => {
                        if let Some(kind) = K::CHILD {
                            seen.children[kind].clear();
                        }
                        for object in listing.drain(..) {
                            if let Some(kind) = K::CHILD {
                                seen.note_child(kind, object.name_any());
                            }
                            object.seen(&mut seen, now);
                        }
                        if !listed_once {
                            listed_once = true;
                            seen.synced += 1;
                        }
                    }
                    Event::Apply(object) => {
                        if let Some(kind) = K::CHILD {
                            seen.note_child(kind, object.name_any());
                        }
                        object.seen(&mut seen, now);
                    }
                    Event::Delete(object) => {
                        if let Some(kind) = K::CHILD {
                            seen.children[kind].remove(&object.name_any());
                        }
                    }
                }
            }
            tx.send_modify(|n| *n += 1);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_take_the_ports_in_turn() {
        let first = session("ns", 0, "3m");
        assert_eq!(first["metadata"]["name"], "s0001");
        assert_eq!(first["spec"]["vm"]["port"], 5910);
        assert_eq!(first["spec"]["timeout"], "3m");
        assert_eq!(session("ns", 20, "3m")["spec"]["vm"]["port"], 5930);
        assert_eq!(session("ns", 21, "3m")["spec"]["vm"]["port"], 5910);
        assert_eq!(session_name(999), "s1000");
    }

    #[test]
    fn the_hypervisor_allows_every_namespace() {
        let hv = hypervisor();
        assert_eq!(hv["spec"]["allowedNamespaces"], json!({}));
        assert_eq!(hv["spec"]["vnc"]["host"], "10.200.0.1");
    }

    #[test]
    fn ready_needs_the_ready_condition_true() {
        let c = |t: &str, s: &str| (t.to_string(), s.to_string());
        assert!(condition_true(Some(&[
            c("Other", "False"),
            c("Ready", "True")
        ])));
        assert!(!condition_true(Some(&[c("Ready", "False")])));
        assert!(!condition_true(None));
    }
}
