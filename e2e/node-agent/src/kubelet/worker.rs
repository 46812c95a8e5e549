//! The pod worker: one task per pod on the node, owning the pod's lifecycle.
//!
//! Each turn of its loop it syncs (sandbox, volumes, containers that are due
//! to start), then publishes the pod status if it changed, then waits for the
//! next thing to happen: a new version of the pod, a Secret/ConfigMap change,
//! a container exit, a probe transition, or a timer (restart back-off, token
//! refresh, retry). A pod with a `deletionTimestamp` is stopped with its grace
//! period, cleaned up and deleted; a pod that vanished is only cleaned up.
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NodeContext;
use super::archive;
use super::container_config::{self, ContainerPlan};
use super::naming::{self, CONTAINER_ROLE, PodIdentity, SANDBOX_ROLE};
use super::record::{self, ContainerRecord, Instance};
use crate::backoff::Backoff;
use crate::downward::Addresses;
use crate::env::{self, EnvContext};
use crate::image;
use crate::podman::{BindMount, ContainerInspect};
use crate::probes::{ProbeKind, ProbeTarget, ProbeTransition};
use crate::service_env::service_env;
use crate::status::{self, Observed};
use crate::termination;
use crate::volumes::{PodVolumes, VolumeInputs};

/// Retry interval for starts that failed for reasons outside the container
/// (missing image, Secret or ConfigMap, sandbox or volume errors).
const RETRY: Duration = Duration::from_secs(2);
/// Even with no event, look again this often (a missed podman event, a token).
const RESYNC: Duration = Duration::from_secs(30);
const DEFAULT_GRACE_SECONDS: i64 = 30;
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

struct Sandbox {
    id: String,
    ip: String,
}

/// Signals from the pod watch to a worker.
pub struct WorkerInputs {
    pub updates: watch::Receiver<Arc<Pod>>,
    /// The pod object is gone from the API (no graceful deletion to finish).
    pub vanished: CancellationToken,
}

pub struct PodWorker {
    ctx: Arc<NodeContext>,
    pod: Arc<Pod>,
    inputs: WorkerInputs,
    id: PodIdentity,
    dir: PathBuf,
    volumes: PodVolumes,
    volumes_ready: bool,
    volumes_stale: bool,
    token_refresh_at: Option<Timestamp>,
    /// A sandbox or volume problem, reported on containers not yet created.
    setup_error: Option<String>,
    sandbox: Option<Sandbox>,
    sandbox_attempt: u32,
    records: Vec<ContainerRecord>,
    exit_tx: mpsc::UnboundedSender<String>,
    exit_rx: mpsc::UnboundedReceiver<String>,
    probe_tx: mpsc::UnboundedSender<ProbeTransition>,
    probe_rx: mpsc::UnboundedReceiver<ProbeTransition>,
    objects_changed: watch::Receiver<()>,
    start_time: Option<Timestamp>,
    /// Set while the pod is being stopped for good: nothing restarts.
    terminating: bool,
    written: Option<PodStatus>,
    retry_at: Option<Instant>,
}

impl PodWorker {
    pub fn new(ctx: Arc<NodeContext>, inputs: WorkerInputs) -> Self {
        let pod = inputs.updates.borrow().clone();
        let id = PodIdentity::of(&pod);
        let dir = ctx.state_dir.join("pods").join(&id.uid);
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|gid| u32::try_from(gid).ok());
        let backoff = Backoff::new(ctx.initial_backoff, ctx.max_backoff);
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let regular_reason = if has_init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let mut records: Vec<ContainerRecord> = spec
            .init_containers
            .into_iter()
            .flatten()
            .map(|c| ContainerRecord::new(c, true, "PodInitializing", backoff.clone()))
            .collect();
        records.extend(
            spec.containers
                .into_iter()
                .map(|c| ContainerRecord::new(c, false, regular_reason, backoff.clone())),
        );
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let objects_changed = ctx.cache.objects_changed.clone();
        Self {
            volumes: PodVolumes::new(dir.join("volumes"), fs_group),
            ctx,
            pod,
            inputs,
            id,
            dir,
            volumes_ready: false,
            volumes_stale: true,
            token_refresh_at: None,
            setup_error: None,
            sandbox: None,
            sandbox_attempt: 0,
            records,
            exit_tx,
            exit_rx,
            probe_tx,
            probe_rx,
            objects_changed,
            start_time: None,
            terminating: false,
            written: None,
            retry_at: None,
        }
    }

    pub async fn run(mut self) {
        self.adopt().await;
        loop {
            if self.inputs.vanished.is_cancelled() {
                tracing::info!(pod = %self.id.describe(), "pod is gone; removing its containers");
                self.stop_all(Duration::ZERO).await;
                self.remove_everything().await;
                return;
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.finish_deletion().await;
                return;
            }
            self.sync().await;
            self.publish_status().await;
            let wake = self.next_wake();
            tokio::select! {
                () = self.ctx.shutdown.cancelled() => return,
                () = self.inputs.vanished.cancelled() => {}
                changed = self.inputs.updates.changed() => match changed {
                    Ok(()) => self.pod = self.inputs.updates.borrow_and_update().clone(),
                    Err(_) => return,
                },
                Ok(()) = self.objects_changed.changed() => self.volumes_stale = true,
                Some(id) = self.exit_rx.recv() => self.on_exit_notice(&id).await,
                Some(transition) = self.probe_rx.recv() => self.on_probe(transition),
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    // ----- start-up -------------------------------------------------------

    /// Takes over after an agent restart: restart counts and finished
    /// containers from the last reported status, running containers from podman.
    async fn adopt(&mut self) {
        let reported = self.pod.status.clone().unwrap_or_default();
        let restart_policy = self.restart_policy();
        let pod_finished = status::is_terminal_phase(reported.phase.as_deref());
        let all_reported = reported
            .init_container_statuses
            .iter()
            .flatten()
            .chain(reported.container_statuses.iter().flatten());
        for previous in all_reported {
            let Some(record) = self.records.iter_mut().find(|r| r.name() == previous.name) else {
                continue;
            };
            let state = previous.state.clone().unwrap_or_default();
            record.restart_count = previous.restart_count;
            record.image_id = previous.image_id.clone();
            record.last_termination = previous.last_state.clone().and_then(|s| s.terminated);
            record.has_run = state.running.is_some()
                || state.terminated.is_some()
                || record.last_termination.is_some();
            if let Some(terminated) = state.terminated
                && (pod_finished
                    || !record::restarts(record.init, &restart_policy, terminated.exit_code))
            {
                record.finished = Some(terminated);
            }
        }
        self.start_time = reported.start_time.map(|t| t.0);

        let existing = match self
            .ctx
            .podman
            .list_labelled(naming::POD_UID_LABEL, &self.id.uid)
            .await
        {
            Ok(existing) => existing,
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot list containers");
                return;
            }
        };
        let mut sandbox_alive = false;
        for summary in existing
            .iter()
            .filter(|s| s.labels.get(naming::ROLE_LABEL).map(String::as_str) == Some(SANDBOX_ROLE))
        {
            match self.ctx.podman.inspect(&summary.id).await {
                Ok(Some(inspect)) if inspect.is_running() && !sandbox_alive => {
                    self.ctx.exits.watch(&inspect.id, self.exit_tx.clone());
                    self.sandbox = Some(Sandbox {
                        ip: inspect.ip().unwrap_or_default().to_owned(),
                        id: inspect.id,
                    });
                    sandbox_alive = true;
                }
                _ => self.remove_container(&summary.id).await,
            }
        }
        for summary in existing.iter().filter(|s| {
            s.labels.get(naming::ROLE_LABEL).map(String::as_str) == Some(CONTAINER_ROLE)
        }) {
            let name = summary
                .labels
                .get(naming::CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_default();
            let restart_count: i32 = summary
                .labels
                .get(naming::RESTART_COUNT_LABEL)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let Some(index) = self
                .records
                .iter()
                .position(|r| r.name() == name && r.instance.is_none())
            else {
                self.remove_container(&summary.id).await;
                continue;
            };
            self.ctx.exits.watch(&summary.id, self.exit_tx.clone());
            let inspect = self.ctx.podman.inspect(&summary.id).await.ok().flatten();
            let has_no_readiness_probe = self.has_no_readiness_probe(index);
            let record = &mut self.records[index];
            record.restart_count = restart_count;
            record.has_run = true;
            record.finished = None;
            record.instance = Some(Instance {
                id: summary.id.clone(),
                started_at: inspect.as_ref().and_then(|i| i.state.started_at),
                attempt_dir: self
                    .dir
                    .join("containers")
                    .join(&name)
                    .join(restart_count.to_string()),
                probes: None,
            });
            match inspect {
                Some(inspect) if inspect.is_running() && sandbox_alive => {
                    tracing::info!(pod = %self.id.describe(), container = %name, "adopted running container");
                    record.started = true;
                    record.ready = has_no_readiness_probe;
                    self.start_probes(index);
                }
                _ => {
                    if inspect.as_ref().is_some_and(ContainerInspect::is_running) {
                        let _ = self.ctx.podman.stop(&summary.id, Duration::ZERO).await;
                    }
                    self.on_container_exit(index).await;
                }
            }
        }
    }

    // ----- sync -----------------------------------------------------------

    async fn sync(&mut self) {
        self.retry_at = None;
        if self.is_finished() {
            // Nothing will run again: free the sandbox, keep the record.
            if let Some(sandbox) = self.sandbox.take() {
                self.ctx.exits.unwatch(&sandbox.id);
                self.remove_container(&sandbox.id).await;
            }
            return;
        }
        if !self.ensure_sandbox().await || !self.ensure_volumes().await {
            let message = self.setup_error.clone().unwrap_or_default();
            for record in self
                .records
                .iter_mut()
                .filter(|r| r.instance.is_none() && r.finished.is_none())
            {
                if !record.has_run {
                    record.set_waiting("ContainerCreating", message.clone());
                }
            }
            self.retry_at = Some(Instant::now() + RETRY);
            return;
        }
        self.start_due_containers().await;
    }

    /// The pod reached a terminal phase (reported, or computed from its containers).
    fn is_finished(&self) -> bool {
        let reported = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if status::is_terminal_phase(reported) {
            return true;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let (init, regular) = self.container_statuses();
        status::is_terminal_phase(Some(status::phase(&spec, &init, &regular, false)))
    }

    async fn ensure_sandbox(&mut self) -> bool {
        if self.sandbox.is_some() {
            return true;
        }
        let name = self.id.sandbox_name(self.sandbox_attempt);
        self.sandbox_attempt += 1;
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.id.name.clone());
        let hostname: String = hostname.chars().take(63).collect();
        let labels = self.id.labels(&self.ctx.node_name, SANDBOX_ROLE);
        let config = self.ctx.sandbox_root.config(name.clone(), hostname, labels);
        // A leftover with the same name (an earlier agent run) would block create.
        self.remove_container(&name).await;
        let created = async {
            let id = self.ctx.podman.create(&config).await?;
            self.ctx.exits.watch(&id, self.exit_tx.clone());
            self.ctx.podman.start(&id).await?;
            let ip = self
                .ctx
                .podman
                .inspect(&id)
                .await?
                .and_then(|i| i.ip().map(str::to_owned))
                .unwrap_or_default();
            Ok::<_, crate::podman::Error>(Sandbox { id, ip })
        };
        match created.await {
            Ok(sandbox) => {
                tracing::info!(pod = %self.id.describe(), ip = %sandbox.ip, "started pod sandbox");
                crate::bridge::pin_address(&self.ctx.podman).await;
                self.sandbox = Some(sandbox);
                self.start_time.get_or_insert_with(Timestamp::now);
                self.setup_error = None;
                true
            }
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot create pod sandbox");
                self.setup_error = Some(format!("failed to create pod sandbox: {err}"));
                self.remove_container(&name).await;
                false
            }
        }
    }

    async fn ensure_volumes(&mut self) -> bool {
        let token_due = self.token_refresh_at.is_some_and(|t| t <= Timestamp::now());
        if self.volumes_ready && !self.volumes_stale && !token_due {
            return true;
        }
        self.volumes_stale = false;
        let pod = self.pod.clone();
        let inputs = VolumeInputs {
            pod: &pod,
            addresses: Addresses {
                pod_ip: self.sandbox.as_ref().map_or("", |s| s.ip.as_str()),
                host_ip: &self.ctx.node_ip.to_string(),
            },
            objects: &self.ctx.cache,
            tokens: &self.ctx.tokens,
            client: &self.ctx.client,
        };
        match self.volumes.sync(&inputs).await {
            Ok(refresh) => {
                self.token_refresh_at = refresh;
                self.volumes_ready = true;
                self.setup_error = None;
                true
            }
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot set up volumes");
                self.setup_error = Some(format!("MountVolume.SetUp failed for {err}"));
                self.retry_at = Some(Instant::now() + RETRY);
                // Running containers keep their (older) files.
                self.volumes_ready
            }
        }
    }

    /// Init containers one at a time, in order; then every regular container.
    async fn start_due_containers(&mut self) {
        let now = Instant::now();
        for index in 0..self.records.len() {
            let record = &self.records[index];
            if record.init && record.succeeded() {
                continue;
            }
            let busy = record.instance.is_some() || record.finished.is_some();
            let due = record.start_after.is_none_or(|at| at <= now);
            if record.init {
                if !busy && due {
                    self.start_container(index).await;
                }
                // Later containers wait for this init container to succeed.
                return;
            }
            if !busy && due {
                self.start_container(index).await;
            }
        }
    }

    async fn start_container(&mut self, index: usize) {
        let Some(sandbox_id) = self.sandbox.as_ref().map(|s| s.id.clone()) else {
            return;
        };
        let pod = self.pod.clone();
        let spec = self.records[index].spec.clone();
        let name = spec.name.clone();
        let image_ref = spec.image.clone().unwrap_or_default();
        let local_image = image::normalize(&image_ref);

        match self.ctx.podman.image_exists(&local_image).await {
            Ok(true) => {}
            Ok(false) => {
                let message = format!(
                    "Container image \"{image_ref}\" is not present with pull policy of Never"
                );
                return self.cannot_start(index, "ErrImageNeverPull", message);
            }
            Err(err) => return self.cannot_start(index, "ContainerCreating", err.to_string()),
        }
        if needs_non_root_check(&pod, &spec) {
            let image_user = match self.ctx.podman.image_inspect(&local_image).await {
                Ok(inspect) => inspect.config.user,
                Err(err) => {
                    return self.cannot_start(index, "CreateContainerConfigError", err.to_string());
                }
            };
            if let Err(message) = container_config::verify_non_root(&pod, &spec, &image_user) {
                return self.cannot_start(index, "CreateContainerConfigError", message);
            }
        }

        let pod_ip = self
            .sandbox
            .as_ref()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        let host_ip = self.ctx.node_ip.to_string();
        let services = self.ctx.cache.services.state();
        let service_links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let service_vars = service_env(
            services.iter().map(Arc::as_ref),
            &self.id.namespace,
            service_links,
        );
        let env_context = EnvContext {
            pod: &pod,
            addresses: Addresses {
                pod_ip: &pod_ip,
                host_ip: &host_ip,
            },
            objects: &self.ctx.cache,
            service_env: &service_vars,
        };
        let env = match env::resolve(&spec, &env_context) {
            Ok(env) => env,
            Err(err) => {
                return self.cannot_start(index, "CreateContainerConfigError", err.to_string());
            }
        };
        let mut mounts = match self.volumes.mounts(&spec) {
            Ok(mounts) => mounts,
            Err(err) => {
                return self.cannot_start(index, "CreateContainerConfigError", err.to_string());
            }
        };

        let record = &mut self.records[index];
        let restart_count = if record.has_run {
            record.restart_count + 1
        } else {
            record.restart_count
        };
        let attempt_dir = self
            .dir
            .join("containers")
            .join(&name)
            .join(restart_count.to_string());
        match termination_log_file(&attempt_dir) {
            Ok(file) => mounts.push(BindMount {
                source: file,
                destination: spec
                    .termination_message_path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into()),
                read_only: false,
            }),
            Err(err) => return self.cannot_start(index, "CreateContainerError", err.to_string()),
        }

        let mut labels = self.id.labels(&self.ctx.node_name, CONTAINER_ROLE);
        labels.insert(naming::CONTAINER_NAME_LABEL.into(), name.clone());
        labels.insert(
            naming::RESTART_COUNT_LABEL.into(),
            restart_count.to_string(),
        );
        let container_name = self.id.container_name(&name, restart_count);
        let config = match container_config::container_config(ContainerPlan {
            pod: &pod,
            container: &spec,
            name: container_name.clone(),
            labels,
            sandbox_id: &sandbox_id,
            env,
            mounts,
        }) {
            Ok(config) => config,
            Err(err) => {
                return self.cannot_start(index, "CreateContainerConfigError", err.to_string());
            }
        };

        self.remove_container(&container_name).await;
        let id = match self.ctx.podman.create(&config).await {
            Ok(id) => id,
            Err(err) => return self.cannot_start(index, "CreateContainerError", err.to_string()),
        };
        self.ctx.exits.watch(&id, self.exit_tx.clone());
        let record = &mut self.records[index];
        record.restart_count = restart_count;
        record.has_run = true;
        record.start_after = None;
        record.instance = Some(Instance {
            id: id.clone(),
            started_at: None,
            attempt_dir,
            probes: None,
        });
        if let Err(err) = self.ctx.podman.start(&id).await {
            // Kubelet reports a container that could not start as terminated
            // with exit code 128 and reason StartError, and restarts it by policy.
            tracing::warn!(pod = %self.id.describe(), container = %name, error = %err, "container failed to start");
            let now = Timestamp::now();
            let failure = ContainerStateTerminated {
                exit_code: 128,
                reason: Some("StartError".into()),
                message: Some(err.to_string()),
                started_at: Some(Time(now)),
                finished_at: Some(Time(now)),
                container_id: Some(record::runtime_id(&id)),
                ..Default::default()
            };
            return self.record_exit(index, failure).await;
        }
        let inspect = self.ctx.podman.inspect(&id).await.ok().flatten();
        let record = &mut self.records[index];
        if let Some(inspect) = &inspect {
            record.image_id = format!("sha256:{}", inspect.image);
            if let Some(instance) = &mut record.instance {
                instance.started_at = inspect.state.started_at;
            }
        }
        record.started = spec.startup_probe.is_none();
        record.ready = record.started && spec.readiness_probe.is_none();
        tracing::info!(pod = %self.id.describe(), container = %name, restart_count, "started container");
        self.start_probes(index);
        if inspect.is_some_and(|i| !i.is_running()) {
            // It exited before we looked: handle it now rather than wait for the event.
            self.on_container_exit(index).await;
        }
    }

    fn cannot_start(&mut self, index: usize, reason: &str, message: String) {
        let record = &mut self.records[index];
        let repeated = record.waiting.reason.as_deref() == Some(reason)
            && record.waiting.message.as_deref() == Some(message.as_str());
        if !repeated {
            tracing::warn!(pod = %self.id.describe(), container = %record.name(), reason, %message, "cannot start container");
        }
        record.set_waiting(reason, message);
        record.retry_after(RETRY);
    }

    fn start_probes(&mut self, index: usize) {
        let record = &self.records[index];
        let spec = &record.spec;
        let has_probes = spec.startup_probe.is_some()
            || spec.readiness_probe.is_some()
            || spec.liveness_probe.is_some();
        let (Some(instance), Some(sandbox), true) = (&record.instance, &self.sandbox, has_probes)
        else {
            return;
        };
        let target = ProbeTarget {
            container_id: instance.id.clone(),
            pod_ip: sandbox.ip.clone(),
            ports: spec.ports.clone().unwrap_or_default(),
        };
        let task = tokio::spawn(self.ctx.prober.clone().watch(
            spec.clone(),
            target,
            self.probe_tx.clone(),
        ));
        if let Some(instance) = &mut self.records[index].instance {
            instance.probes = Some(task.abort_handle());
        }
    }

    // ----- container exits ------------------------------------------------

    async fn on_exit_notice(&mut self, id: &str) {
        if self.sandbox.as_ref().is_some_and(|s| s.id == id) {
            let running =
                matches!(self.ctx.podman.inspect(id).await, Ok(Some(i)) if i.is_running());
            if !running {
                self.on_sandbox_lost().await;
            }
            return;
        }
        let Some(index) = self
            .records
            .iter()
            .position(|r| r.instance.as_ref().is_some_and(|i| i.id == id))
        else {
            return;
        };
        match self.ctx.podman.inspect(id).await {
            Ok(Some(inspect)) if inspect.is_running() => {}
            Ok(_) => self.on_container_exit(index).await,
            Err(err) => tracing::warn!(container = id, error = %err, "cannot inspect container"),
        }
    }

    /// The sandbox died: its containers lost their network. Stop them (they
    /// restart by policy) and let the next sync create a new sandbox.
    async fn on_sandbox_lost(&mut self) {
        tracing::warn!(pod = %self.id.describe(), "pod sandbox exited; recreating it");
        self.stop_all(Duration::ZERO).await;
        if let Some(sandbox) = self.sandbox.take() {
            self.ctx.exits.unwatch(&sandbox.id);
            self.remove_container(&sandbox.id).await;
        }
    }

    /// Records how the current instance of container `index` ended.
    async fn on_container_exit(&mut self, index: usize) {
        let Some(instance) = &self.records[index].instance else {
            return;
        };
        let id = instance.id.clone();
        let attempt_dir = instance.attempt_dir.clone();
        let inspect = self.ctx.podman.inspect(&id).await.ok().flatten();
        let spec = &self.records[index].spec;
        let name = spec.name.clone();
        let fallback = spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");

        let termination = match inspect {
            Some(inspect) => {
                let exit_code = inspect.state.exit_code;
                let header = format!(
                    "container {id} restart {} exited {exit_code}",
                    self.records[index].restart_count
                );
                let archive_path = self.ctx.log_dir.join(self.id.log_file_name(&name));
                let log = archive::save(
                    &self.ctx.podman,
                    &id,
                    &attempt_dir.join("log"),
                    &archive_path,
                    &header,
                )
                .await;
                let file = read_capped(
                    &attempt_dir.join("termination-log"),
                    termination::MAX_MESSAGE_BYTES,
                );
                ContainerStateTerminated {
                    exit_code,
                    reason: Some(
                        record::termination_reason(exit_code, inspect.state.oom_killed).into(),
                    ),
                    message: termination::select_message(&file, &log, exit_code, fallback),
                    started_at: inspect.state.started_at.map(Time),
                    finished_at: inspect
                        .state
                        .finished_at
                        .or(Some(Timestamp::now()))
                        .map(Time),
                    container_id: Some(record::runtime_id(&id)),
                    ..Default::default()
                }
            }
            None => ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some(
                    "The container could not be located when the pod was terminated".into(),
                ),
                finished_at: Some(Time(Timestamp::now())),
                container_id: Some(record::runtime_id(&id)),
                ..Default::default()
            },
        };
        self.remove_container(&id).await;
        self.record_exit(index, termination).await;
    }

    /// Decides what follows an exit: a restart after back-off, or the end.
    async fn record_exit(&mut self, index: usize, termination: ContainerStateTerminated) {
        let restart_policy = self.restart_policy();
        let terminating = self.terminating;
        let describe = self.id.describe();
        let record = &mut self.records[index];
        if let Some(instance) = record.instance.take() {
            self.ctx.exits.unwatch(&instance.id);
        }
        record.ready = false;
        record.started = false;
        let ran_for = match (&termination.started_at, &termination.finished_at) {
            (Some(start), Some(end)) => end.0.duration_since(start.0).unsigned_abs(),
            _ => Duration::ZERO,
        };
        tracing::info!(
            pod = %describe,
            container = %record.name(),
            exit_code = termination.exit_code,
            reason = termination.reason.as_deref().unwrap_or_default(),
            "container exited"
        );
        if !terminating && record::restarts(record.init, &restart_policy, termination.exit_code) {
            let delay = record.backoff.next_delay(ran_for);
            record.start_after = Some(Instant::now() + delay);
            record.last_termination = Some(termination);
            let message = format!(
                "back-off {} restarting failed container={} pod={describe}",
                format_delay(delay),
                record.name()
            );
            record.set_waiting("CrashLoopBackOff", message);
        } else {
            record.finished = Some(termination);
        }
    }

    fn on_probe(&mut self, transition: ProbeTransition) {
        let Some(index) = self.records.iter().position(|r| {
            r.instance
                .as_ref()
                .is_some_and(|i| i.id == transition.container_id)
        }) else {
            return;
        };
        let has_no_readiness_probe = self.has_no_readiness_probe(index);
        let describe = self.id.describe();
        let record = &mut self.records[index];
        let name = record.name().to_owned();
        match (transition.kind, transition.healthy) {
            (ProbeKind::Startup, true) => {
                record.started = true;
                record.ready = has_no_readiness_probe;
            }
            (ProbeKind::Readiness, healthy) => record.ready = healthy && record.started,
            (ProbeKind::Liveness, true) => {}
            (kind @ (ProbeKind::Startup | ProbeKind::Liveness), false) => {
                let probe = if kind == ProbeKind::Startup {
                    record.spec.startup_probe.as_ref()
                } else {
                    record.spec.liveness_probe.as_ref()
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .unwrap_or_else(|| self.grace_seconds_from_spec());
                tracing::info!(pod = %describe, container = %name, ?kind, message = %transition.message, "probe failed; container will be restarted");
                // Stopping takes up to the grace period: do not hold the worker.
                // The exit event brings the container back by its restart policy.
                let podman = self.ctx.podman.clone();
                let id = transition.container_id;
                tokio::spawn(async move {
                    if let Err(err) = podman.stop(&id, seconds(grace)).await {
                        tracing::warn!(container = id, error = %err, "cannot stop unhealthy container");
                    }
                });
            }
        }
    }

    // ----- deletion -------------------------------------------------------

    /// Graceful deletion: stop the containers within the grace period, clean
    /// up, report the final status, then delete the pod object for good.
    async fn finish_deletion(&mut self) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| self.grace_seconds_from_spec());
        tracing::info!(pod = %self.id.describe(), grace, "stopping pod for deletion");
        self.stop_all(seconds(grace)).await;
        self.remove_everything().await;
        self.publish_status().await;

        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.id.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.id.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&self.id.name, &params).await {
            Ok(_) => tracing::info!(pod = %self.id.describe(), "pod deleted"),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot delete pod")
            }
        }
    }

    /// Stops every running container with `grace`, recording their exits;
    /// nothing restarts afterwards.
    async fn stop_all(&mut self, grace: Duration) {
        self.terminating = true;
        let running: Vec<(usize, String)> = self
            .records
            .iter()
            .enumerate()
            .filter_map(|(index, r)| r.instance.as_ref().map(|i| (index, i.id.clone())))
            .collect();
        let podman = &self.ctx.podman;
        let stops = running.iter().map(|(_, id)| podman.stop(id, grace));
        for (result, (_, id)) in futures::future::join_all(stops)
            .await
            .into_iter()
            .zip(&running)
        {
            if let Err(err) = result {
                tracing::warn!(container = %id, error = %err, "cannot stop container");
            }
        }
        for (index, _) in running {
            self.on_container_exit(index).await;
        }
        for record in &mut self.records {
            record.start_after = None;
        }
    }

    /// Removes the sandbox, any containers left and the pod's state directory.
    async fn remove_everything(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            self.ctx.exits.unwatch(&sandbox.id);
        }
        match self
            .ctx
            .podman
            .list_labelled(naming::POD_UID_LABEL, &self.id.uid)
            .await
        {
            Ok(left) => {
                // Containers before the sandbox: podman refuses to remove a
                // container others depend on.
                let (sandboxes, containers): (Vec<_>, Vec<_>) = left.into_iter().partition(|s| {
                    s.labels.get(naming::ROLE_LABEL).map(String::as_str) == Some(SANDBOX_ROLE)
                });
                for summary in containers.iter().chain(&sandboxes) {
                    self.remove_container(&summary.id).await;
                }
            }
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot list containers")
            }
        }
        if let Err(err) = fs::remove_dir_all(&self.dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot remove pod directory");
        }
        self.ctx.tokens.forget_pod(&self.id.uid);
    }

    async fn remove_container(&self, id_or_name: &str) {
        if let Err(err) = self.ctx.podman.remove(id_or_name).await {
            tracing::warn!(container = id_or_name, error = %err, "cannot remove container");
        }
    }

    // ----- status ---------------------------------------------------------

    fn container_statuses(
        &self,
    ) -> (
        Vec<k8s_openapi::api::core::v1::ContainerStatus>,
        Vec<k8s_openapi::api::core::v1::ContainerStatus>,
    ) {
        let (init, regular): (Vec<_>, Vec<_>) = self.records.iter().partition(|r| r.init);
        (
            init.iter().map(|r| r.status()).collect(),
            regular.iter().map(|r| r.status()).collect(),
        )
    }

    async fn publish_status(&mut self) {
        let (init_statuses, statuses) = self.container_statuses();
        let host_ip = self.ctx.node_ip.to_string();
        let mut pod = (*self.pod).clone();
        if let Some(written) = &self.written {
            // Our last write is newer than the watched copy may be; it decides
            // transition times. Conditions others own come from the watch.
            let mut previous = pod.status.take().unwrap_or_default();
            let foreign: Vec<_> = previous
                .conditions
                .take()
                .into_iter()
                .flatten()
                .filter(|c| {
                    !written
                        .conditions
                        .iter()
                        .flatten()
                        .any(|w| w.type_ == c.type_)
                })
                .collect();
            let mut conditions = written.conditions.clone().unwrap_or_default();
            conditions.extend(foreign);
            previous.conditions = Some(conditions);
            previous.phase = written.phase.clone().or(previous.phase);
            previous.start_time = written.start_time.clone().or(previous.start_time);
            pod.status = Some(previous);
        }
        let status = status::pod_status(Observed {
            pod: &pod,
            init_statuses,
            statuses,
            pod_ip: self
                .sandbox
                .as_ref()
                .map(|s| s.ip.as_str())
                .filter(|ip| !ip.is_empty()),
            host_ip: &host_ip,
            start_time: self.start_time,
            sandbox_ready: self.sandbox.is_some(),
            terminal: self.terminating,
            now: Timestamp::now(),
        });
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.id.namespace);
        let patch = Patch::Strategic(status::status_patch(&self.pod, &status));
        match pods
            .patch_status(&self.id.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => self.written = Some(status),
            Err(kube::Error::Api(err)) if matches!(err.code, 404 | 409) => {
                // Gone, or a new pod under the same name: the watch will tell.
                self.written = Some(status);
            }
            Err(err) => {
                tracing::warn!(pod = %self.id.describe(), error = %err, "cannot write pod status");
                self.retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    // ----- helpers --------------------------------------------------------

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + RESYNC;
        let restarts = self.records.iter().filter_map(|r| r.start_after);
        for at in restarts.chain(self.retry_at) {
            wake = wake.min(at);
        }
        if let Some(refresh) = self.token_refresh_at {
            let until = Timestamp::now().duration_until(refresh).unsigned_abs();
            let due = if refresh <= Timestamp::now() {
                Duration::ZERO
            } else {
                until
            };
            wake = wake.min(Instant::now() + due);
        }
        wake
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn grace_seconds_from_spec(&self) -> i64 {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS)
    }

    fn has_no_readiness_probe(&self, index: usize) -> bool {
        self.records[index].spec.readiness_probe.is_none()
    }
}

fn needs_non_root_check(pod: &Pod, container: &k8s_openapi::api::core::v1::Container) -> bool {
    let pod_says = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.run_as_non_root);
    let container_says = container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root);
    container_says.or(pod_says).unwrap_or(false)
}

/// A fresh, world-writable termination-message file for one container attempt
/// (the container may run as any user).
fn termination_log_file(attempt_dir: &std::path::Path) -> std::io::Result<PathBuf> {
    fs::create_dir_all(attempt_dir)?;
    let file = attempt_dir.join("termination-log");
    fs::write(&file, b"")?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666))?;
    Ok(file)
}

fn read_capped(path: &std::path::Path, limit: usize) -> Vec<u8> {
    let mut data = Vec::new();
    if let Ok(file) = fs::File::open(path) {
        let _ = file.take(limit as u64).read_to_end(&mut data);
    }
    data
}

fn seconds(value: i64) -> Duration {
    Duration::from_secs(value.max(0) as u64)
}

/// Go-style durations as kubelet prints them: `10s`, `2m40s`.
fn format_delay(delay: Duration) -> String {
    let total = delay.as_secs();
    match (total / 60, total % 60) {
        (0, seconds) => format!("{seconds}s"),
        (minutes, 0) => format!("{minutes}m0s"),
        (minutes, seconds) => format!("{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_print_like_go() {
        assert_eq!(format_delay(Duration::from_secs(10)), "10s");
        assert_eq!(format_delay(Duration::from_secs(160)), "2m40s");
        assert_eq!(format_delay(Duration::from_secs(300)), "5m0s");
    }
}
