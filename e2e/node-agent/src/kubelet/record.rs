//! What the pod worker knows about one container of the pod spec, and the
//! `ContainerStatus` it reports.
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;

/// The podman container currently running for a spec container.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub started_at: Option<Timestamp>,
    /// Holds this attempt's termination-message file and saved log.
    pub attempt_dir: PathBuf,
    /// Aborted when the container exits.
    pub probes: Option<AbortHandle>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(probes) = &self.probes {
            probes.abort();
        }
    }
}

#[derive(Debug)]
pub struct ContainerRecord {
    pub spec: Container,
    pub init: bool,
    pub restart_count: i32,
    /// A container has been created for it before (the next one is a restart).
    pub has_run: bool,
    pub instance: Option<Instance>,
    /// Terminated and will not run again.
    pub finished: Option<ContainerStateTerminated>,
    pub last_termination: Option<ContainerStateTerminated>,
    /// Why it is not running, while it is not.
    pub waiting: ContainerStateWaiting,
    pub ready: bool,
    pub started: bool,
    pub image_id: String,
    pub backoff: Backoff,
    /// Not (re)started before this instant.
    pub start_after: Option<Instant>,
}

impl ContainerRecord {
    pub fn new(spec: Container, init: bool, waiting_reason: &str, backoff: Backoff) -> Self {
        Self {
            spec,
            init,
            restart_count: 0,
            has_run: false,
            instance: None,
            finished: None,
            last_termination: None,
            waiting: waiting(waiting_reason, None),
            ready: false,
            started: false,
            image_id: String::new(),
            backoff,
            start_after: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// An init container that completed.
    pub fn succeeded(&self) -> bool {
        self.finished.as_ref().is_some_and(|t| t.exit_code == 0)
    }

    pub fn set_waiting(&mut self, reason: &str, message: impl Into<String>) {
        self.waiting = waiting(reason, Some(message.into()));
    }

    /// Retry a start that could not happen after `delay`.
    pub fn retry_after(&mut self, delay: Duration) {
        self.start_after = Some(Instant::now() + delay);
    }

    pub fn status(&self) -> ContainerStatus {
        let state = match (&self.instance, &self.finished) {
            (Some(instance), _) => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: instance.started_at.map(Time),
                }),
                ..Default::default()
            },
            (None, Some(terminated)) => ContainerState {
                terminated: Some(terminated.clone()),
                ..Default::default()
            },
            (None, None) => ContainerState {
                waiting: Some(self.waiting.clone()),
                ..Default::default()
            },
        };
        let container_id = self
            .instance
            .as_ref()
            .map(|i| runtime_id(&i.id))
            .or_else(|| self.finished.as_ref().and_then(|t| t.container_id.clone()));
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id,
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: Some(ContainerState {
                terminated: self.last_termination.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// `podman://<id>`, as container IDs are reported.
pub fn runtime_id(id: &str) -> String {
    format!("podman://{id}")
}

fn waiting(reason: &str, message: Option<String>) -> ContainerStateWaiting {
    ContainerStateWaiting {
        reason: Some(reason.to_owned()),
        message: message.filter(|m| !m.is_empty()),
    }
}

/// The `reason` of a terminated container.
pub fn termination_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    match (oom_killed, exit_code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        (false, _) => "Error",
    }
}

/// Whether a container that exited with `exit_code` runs again.
pub fn restarts(init: bool, restart_policy: &str, exit_code: i32) -> bool {
    match restart_policy {
        "Never" => false,
        // Init containers run to completion once, whatever the policy.
        "OnFailure" => exit_code != 0,
        _ if init => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rules() {
        assert!(restarts(false, "Always", 0));
        assert!(restarts(false, "Always", 1));
        assert!(!restarts(false, "OnFailure", 0));
        assert!(restarts(false, "OnFailure", 1));
        assert!(!restarts(false, "Never", 1));
        assert!(!restarts(true, "Always", 0));
        assert!(restarts(true, "Always", 1));
        assert!(!restarts(true, "Never", 1));
    }

    #[test]
    fn reasons() {
        assert_eq!(termination_reason(0, false), "Completed");
        assert_eq!(termination_reason(2, false), "Error");
        assert_eq!(termination_reason(137, true), "OOMKilled");
    }

    #[test]
    fn status_reflects_the_state() {
        let spec: Container = serde_yaml::from_str("{name: app, image: app:1}").unwrap();
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut record = ContainerRecord::new(spec, false, "ContainerCreating", backoff);
        let status = record.status();
        let waiting = status.state.unwrap().waiting.unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(status.started, Some(false));

        record.finished = Some(ContainerStateTerminated {
            exit_code: 0,
            reason: Some("Completed".into()),
            container_id: Some(runtime_id("abc")),
            ..Default::default()
        });
        let status = record.status();
        assert_eq!(status.container_id.as_deref(), Some("podman://abc"));
        assert_eq!(status.state.unwrap().terminated.unwrap().exit_code, 0);
        assert!(record.succeeded());
    }
}
