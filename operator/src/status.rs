//! Pure status computation: what the session's status should say, given what
//! the reconciler observed. The reconciler only writes the result.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use porthole_api::contract::{EndReason, UpstreamFailure};
use porthole_api::v1alpha1::{ConsoleSessionStatus, SessionPhase, ViewerStatus};

pub const CONDITION_READY: &str = "Ready";

/// Reasons that appear in `status.reason`, conditions and Events: a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ProxyStarting,
    /// Someone else deletes the proxy pod (a drain, an eviction, by hand):
    /// another starts at the same URL once it is gone.
    ProxyStopping,
    ProxyReady,
    /// The proxy runs; its Service waits for an address (node port, load balancer).
    AwaitingAddress,
    ViewerConnected,
    HypervisorNotFound,
    CredentialsNotFound,
    InvalidSpec,
    PortNotAllowed,
    VmNotAllowed,
    NotAllowed,
    /// The administrator's policy does not allow the exposure (type,
    /// IngressClass, host or TLS Secret) the session asks for.
    ExposureNotAllowed,
    /// The Hypervisor forbids recording, or names no claim for it.
    RecordingNotAllowed,
    TimeoutTooLong,
    /// The session is recorded, and its PersistentVolumeClaim does not exist
    /// (or is being deleted): no pod is started until it does.
    RecordingClaimNotFound,
    /// The proxy could not write the session's recording, so it relayed nothing.
    RecordingFailed,
    Completed,
    UpstreamClosed,
    Expired,
    Idle,
    NeverConnected,
    /// The console could not be opened; each kind of failure has its own reason.
    Upstream(UpstreamFailure),
    ProxyFailed,
    /// porthole was uninstalled with the session open (`--release-sessions`).
    OperatorUninstalled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProxyStarting => "ProxyStarting",
            Reason::ProxyStopping => "ProxyStopping",
            Reason::ProxyReady => "ProxyReady",
            Reason::ViewerConnected => "ViewerConnected",
            Reason::AwaitingAddress => "AwaitingAddress",
            Reason::HypervisorNotFound => "HypervisorNotFound",
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::PortNotAllowed => "PortNotAllowed",
            Reason::VmNotAllowed => "VMNotAllowed",
            Reason::NotAllowed => "NotAllowed",
            Reason::ExposureNotAllowed => "ExposureNotAllowed",
            Reason::RecordingNotAllowed => "RecordingNotAllowed",
            Reason::TimeoutTooLong => "TimeoutTooLong",
            Reason::RecordingClaimNotFound => "RecordingClaimNotFound",
            Reason::RecordingFailed => "RecordingFailed",
            Reason::Completed => "Completed",
            Reason::UpstreamClosed => "UpstreamClosed",
            Reason::Expired => "Expired",
            Reason::Idle => "Idle",
            Reason::NeverConnected => "NeverConnected",
            Reason::Upstream(failure) => failure.reason(),
            Reason::ProxyFailed => "ProxyFailed",
            Reason::OperatorUninstalled => "OperatorUninstalled",
        }
    }
}

/// A phase with the reason and message that explain it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub phase: SessionPhase,
    pub reason: Reason,
    pub message: String,
    /// The console URL, once it works.
    pub url: Option<String>,
    /// The session's hard deadline, once known.
    pub expires_at: Option<Time>,
    /// When a final verdict happened, if known better than "now" (the proxy's
    /// exit time, rather than when the operator noticed it).
    pub ended_at: Option<Time>,
    /// The viewers, when the proxy told.
    pub viewers: Option<Box<SeenViewers>>,
}

/// The viewers as the proxy reported them.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenViewers {
    pub status: ViewerStatus,
    /// Where the last viewer came from, for the Event (not kept in status).
    pub last_address: Option<String>,
}

impl Verdict {
    pub fn new(phase: SessionPhase, reason: Reason, message: impl Into<String>) -> Self {
        Verdict {
            phase,
            reason,
            message: message.into(),
            url: None,
            expires_at: None,
            ended_at: None,
            viewers: None,
        }
    }

    /// The status to write, keeping the Ready condition's transition time when
    /// its status did not change.
    pub fn to_status(
        &self,
        previous: Option<&ConsoleSessionStatus>,
        generation: Option<i64>,
    ) -> ConsoleSessionStatus {
        let ready = if self.phase.is_open() {
            "True"
        } else {
            "False"
        };
        let previous_ready =
            previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
        let last_transition_time = match previous_ready {
            Some(c) if c.status == ready => c.last_transition_time.clone(),
            _ => Time(k8s_openapi::jiff::Timestamp::now()),
        };
        ConsoleSessionStatus {
            phase: Some(self.phase),
            url: self.url.clone(),
            ended_at: self.phase.is_final().then(|| {
                previous
                    .and_then(|p| p.ended_at.clone())
                    .or_else(|| self.ended_at.clone())
                    .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()))
            }),
            expires_at: self
                .expires_at
                .clone()
                .or_else(|| previous.and_then(|p| p.expires_at.clone())),
            reason: Some(self.reason.as_str().to_string()),
            message: Some(self.message.clone()),
            viewers: self
                .viewers
                .as_ref()
                .map(|seen| seen.status.clone())
                .or_else(|| previous.and_then(|p| p.viewers.clone()))
                .map(|viewers| ViewerStatus {
                    // Once the session is over, its proxy is gone: nobody watches.
                    count: if self.phase.is_final() {
                        0
                    } else {
                        viewers.count
                    },
                    ..viewers
                }),
            observed_generation: generation,
            conditions: vec![Condition {
                type_: CONDITION_READY.to_string(),
                status: ready.to_string(),
                reason: self.reason.as_str().to_string(),
                message: self.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }],
        }
    }
}

/// Whether the proxy pod has finished, and if so how the session ended, read
/// from the proxy's termination message.
pub fn pod_outcome(pod: &Pod) -> Option<Verdict> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref()?;
    if phase != "Succeeded" && phase != "Failed" {
        return None;
    }
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref());
    let message = terminated.and_then(|t| t.message.as_deref()).unwrap_or("");
    let exit_code = terminated.map(|t| t.exit_code);
    let mut verdict = match message.lines().next().map(str::parse::<EndReason>) {
        Some(Ok(reason)) => verdict_for(&reason),
        _ => Verdict::new(
            SessionPhase::Failed,
            Reason::ProxyFailed,
            match exit_code {
                Some(code) => {
                    format!("the console proxy exited with code {code} without an end reason")
                }
                None => "the console proxy stopped without an end reason".to_string(),
            },
        ),
    };
    verdict.ended_at = terminated.and_then(|t| t.finished_at.clone());
    Some(verdict)
}

/// Maps the proxy's end reason onto the session's final phase.
pub fn verdict_for(reason: &EndReason) -> Verdict {
    use SessionPhase::{Completed, Expired, Failed};
    match reason {
        EndReason::Completed => Verdict::new(Completed, Reason::Completed, "the session ended"),
        EndReason::UpstreamClosed => Verdict::new(
            Completed,
            Reason::UpstreamClosed,
            "the hypervisor closed the console",
        ),
        EndReason::Expired => Verdict::new(
            Expired,
            Reason::Expired,
            "the session reached its time limit",
        ),
        EndReason::Idle => Verdict::new(
            Expired,
            Reason::Idle,
            "the session ended after a period without user input",
        ),
        EndReason::NeverConnected => Verdict::new(
            Expired,
            Reason::NeverConnected,
            "nobody opened the console in time",
        ),
        EndReason::UpstreamFailed { failure, detail } => Verdict::new(
            Failed,
            Reason::Upstream(*failure),
            format!("the console could not be opened: {detail}"),
        ),
        EndReason::RecordingFailed { detail } => Verdict::new(
            Failed,
            Reason::RecordingFailed,
            format!(
                "the session is recorded, and the recording could not be written, so the console was not relayed: {detail}"
            ),
        ),
    }
}

/// Whether the pod's Ready condition is true.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };

    fn finished_pod(phase: &str, message: Option<&str>, exit_code: i32) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "proxy".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code,
                            message: message.map(Into::into),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_pod_has_no_outcome() {
        assert_eq!(pod_outcome(&finished_pod("Running", None, 0)), None);
    }

    #[test]
    fn end_reason_decides_the_final_phase() {
        let cases = [
            ("completed", SessionPhase::Completed, Reason::Completed),
            ("expired", SessionPhase::Expired, Reason::Expired),
            ("idle", SessionPhase::Expired, Reason::Idle),
            (
                "never-connected",
                SessionPhase::Expired,
                Reason::NeverConnected,
            ),
            (
                "upstream-closed",
                SessionPhase::Completed,
                Reason::UpstreamClosed,
            ),
            (
                "upstream-failed: unreachable: connection refused",
                SessionPhase::Failed,
                Reason::Upstream(UpstreamFailure::Unreachable),
            ),
            (
                "upstream-failed: vm-not-running: VM 100 not running",
                SessionPhase::Failed,
                Reason::Upstream(UpstreamFailure::VmNotRunning),
            ),
            (
                "recording-failed: cannot create /var/run/porthole/recordings/web: Permission denied (os error 13)",
                SessionPhase::Failed,
                Reason::RecordingFailed,
            ),
        ];
        for (message, phase, reason) in cases {
            let verdict = pod_outcome(&finished_pod("Succeeded", Some(message), 0)).unwrap();
            assert_eq!(
                (verdict.phase, verdict.reason),
                (phase, reason),
                "{message}"
            );
        }
    }

    #[test]
    fn upstream_failure_detail_reaches_the_message() {
        let verdict = pod_outcome(&finished_pod(
            "Failed",
            Some("upstream-failed: unreachable: connection refused"),
            1,
        ))
        .unwrap();
        assert!(verdict.message.contains("connection refused"));
    }

    #[test]
    fn a_recording_failure_says_what_could_not_be_written() {
        let verdict = pod_outcome(&finished_pod(
            "Failed",
            Some("recording-failed: cannot create /var/run/porthole/recordings/web: Permission denied (os error 13)"),
            1,
        ))
        .unwrap();
        assert_eq!(verdict.reason.as_str(), "RecordingFailed");
        assert!(
            verdict.message.contains("recorded")
                && verdict
                    .message
                    .contains("/var/run/porthole/recordings/web: Permission denied"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn the_session_ends_when_the_proxy_exited() {
        let mut pod = finished_pod("Succeeded", Some("idle"), 0);
        let finished = Time("2026-01-01T00:00:05Z".parse().unwrap());
        let status = pod.status.as_mut().unwrap();
        status.container_statuses.as_mut().unwrap()[0]
            .state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .finished_at = Some(finished.clone());
        let verdict = pod_outcome(&pod).unwrap();
        assert_eq!(verdict.to_status(None, None).ended_at, Some(finished));
    }

    #[test]
    fn crash_without_reason_is_a_proxy_failure() {
        let verdict =
            pod_outcome(&finished_pod("Failed", Some("thread main panicked"), 101)).unwrap();
        assert_eq!(verdict.reason, Reason::ProxyFailed);
        assert!(verdict.message.contains("101"));
    }

    #[test]
    fn ready_condition_keeps_its_transition_time_while_unchanged() {
        let ready = Verdict {
            url: Some("u".into()),
            ..Verdict::new(SessionPhase::Ready, Reason::ProxyReady, "ok")
        };
        let first = ready.to_status(None, Some(1));
        let t0 = first.conditions[0].last_transition_time.clone();
        let again = ready.to_status(Some(&first), Some(1));
        assert_eq!(again.conditions[0].last_transition_time, t0);
        assert_eq!(again.conditions[0].status, "True");
        let ended = Verdict::new(SessionPhase::Completed, Reason::Completed, "done")
            .to_status(Some(&first), Some(1));
        assert_eq!(ended.conditions[0].status, "False");
        assert_eq!(ended.url, None);
        assert!(first.ended_at.is_none(), "a running session has not ended");
        let ended_at = ended
            .ended_at
            .clone()
            .expect("a final phase records when it ended");
        let again = Verdict::new(SessionPhase::Completed, Reason::Completed, "done")
            .to_status(Some(&ended), Some(1));
        assert_eq!(again.ended_at, Some(ended_at), "the end time never moves");
    }

    #[test]
    fn pod_readiness_follows_its_condition() {
        let mut pod = finished_pod("Running", None, 0);
        assert!(!pod_is_ready(&pod));
        pod.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        assert!(pod_is_ready(&pod));
    }
}
