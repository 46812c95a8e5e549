//! What a session's status means for someone waiting for its URL.

use std::fmt;

use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};

/// The `Ready` condition's type.
const READY: &str = "Ready";

/// Where a session stands, as the plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The console URL works.
    Ready { url: String },
    /// The session reached a final phase without (or after) being ready.
    Ended(Ended),
    /// Not ready yet: the phase and reason so far (none before the operator
    /// has seen the session).
    Waiting {
        phase: Option<SessionPhase>,
        reason: Option<String>,
    },
}

/// A final phase with its reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub phase: SessionPhase,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} with reason {}",
            self.phase,
            self.reason.as_deref().unwrap_or("(none)")
        )?;
        match self.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) => write!(f, ": {message}"),
            None => Ok(()),
        }
    }
}

/// Reads a session's state: final phases first (a final session is never
/// ready), then `Ready=True` with a URL, else still waiting.
pub fn state(session: &ConsoleSession) -> State {
    let Some(status) = session.status.as_ref() else {
        return State::Waiting {
            phase: None,
            reason: None,
        };
    };
    if let Some(phase) = status.phase.filter(|phase| phase.is_final()) {
        return State::Ended(Ended {
            phase,
            reason: status.reason.clone(),
            message: status.message.clone(),
        });
    }
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    match status.url.as_deref().filter(|url| !url.is_empty()) {
        Some(url) if ready => State::Ready {
            url: url.to_string(),
        },
        _ => State::Waiting {
            phase: status.phase,
            reason: status.reason.clone(),
        },
    }
}

/// The progress line for a waiting session: `phase Pending: ProxyStarting`.
pub fn describe_waiting(phase: Option<SessionPhase>, reason: Option<&str>) -> String {
    match (phase, reason) {
        (None, _) => "not yet seen by the operator".to_string(),
        (Some(phase), Some(reason)) if !reason.is_empty() => format!("phase {phase:?}: {reason}"),
        (Some(phase), _) => format!("phase {phase:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use porthole_api::v1alpha1::ConsoleSessionStatus;

    fn session(status: Option<ConsoleSessionStatus>) -> ConsoleSession {
        let mut session: ConsoleSession = serde_json::from_value(serde_json::json!({
            "apiVersion": "porthole.dev/v1alpha1",
            "kind": "ConsoleSession",
            "metadata": {"name": "s"},
            "spec": {"hypervisor": "h", "vm": {"port": 5910}}
        }))
        .unwrap();
        session.status = status;
        session
    }

    fn ready_condition(status: &str) -> Condition {
        Condition {
            type_: READY.into(),
            status: status.into(),
            reason: "Ready".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn status(phase: SessionPhase, reason: &str) -> ConsoleSessionStatus {
        ConsoleSessionStatus {
            phase: Some(phase),
            reason: Some(reason.into()),
            ..ConsoleSessionStatus::default()
        }
    }

    #[test]
    fn a_new_session_is_waiting_for_the_operator() {
        let state = state(&session(None));
        assert_eq!(
            state,
            State::Waiting {
                phase: None,
                reason: None
            }
        );
        assert_eq!(describe_waiting(None, None), "not yet seen by the operator");
    }

    #[test]
    fn pending_is_waiting_with_its_reason() {
        let pending = session(Some(status(SessionPhase::Pending, "ProxyStarting")));
        let State::Waiting { phase, reason } = state(&pending) else {
            panic!("not waiting");
        };
        assert_eq!(
            describe_waiting(phase, reason.as_deref()),
            "phase Pending: ProxyStarting"
        );
        assert_eq!(
            describe_waiting(Some(SessionPhase::Pending), None),
            "phase Pending"
        );
    }

    #[test]
    fn ready_needs_the_condition_and_the_url() {
        let mut status = status(SessionPhase::Ready, "Ready");
        status.conditions = vec![ready_condition("True")];
        assert!(matches!(
            state(&session(Some(status.clone()))),
            State::Waiting { .. }
        ));
        status.url = Some("http://console-s/#token=abc".into());
        assert_eq!(
            state(&session(Some(status.clone()))),
            State::Ready {
                url: "http://console-s/#token=abc".into()
            }
        );
        status.conditions = vec![ready_condition("False")];
        assert!(matches!(
            state(&session(Some(status))),
            State::Waiting { .. }
        ));
    }

    #[test]
    fn a_final_phase_ends_the_wait_with_reason_and_message() {
        for phase in [
            SessionPhase::Failed,
            SessionPhase::Expired,
            SessionPhase::Completed,
        ] {
            let mut status = status(phase, "PortNotAllowed");
            status.message = Some("port 5999 is outside the range 5910-5930".into());
            // A stale Ready condition does not make a final session ready.
            status.conditions = vec![ready_condition("True")];
            status.url = Some("http://x/".into());
            let State::Ended(ended) = state(&session(Some(status))) else {
                panic!("{phase:?} is final");
            };
            assert_eq!(
                ended.to_string(),
                format!(
                    "{phase:?} with reason PortNotAllowed: port 5999 is outside the range 5910-5930"
                )
            );
        }
    }

    #[test]
    fn a_final_phase_without_reason_or_message_still_reads_well() {
        let ended = Ended {
            phase: SessionPhase::Failed,
            reason: None,
            message: Some(String::new()),
        };
        assert_eq!(ended.to_string(), "Failed with reason (none)");
    }
}
