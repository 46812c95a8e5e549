//! What happens next to a session, decided from what was observed: pure, so
//! that each turn of its lifecycle is tested with plain values, as
//! [`crate::leader::decide`] is for the Lease.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};

use crate::status::{Reason, Verdict, pod_outcome};
use crate::validate::waiting_deadline;

/// How this reconcile ends, when something it observed decides that.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Next {
    /// The session is final: its children go, and the session itself at
    /// `delete_at` (`ttlSecondsAfterFinished` after it ended), if that is set.
    Finished { delete_at: Option<Timestamp> },
    /// The session ends with this final verdict; its children go.
    End(Verdict),
    /// The session cannot go on yet: report `verdict`, and look again after `retry`.
    Wait { verdict: Verdict, retry: Duration },
}

/// Whether the session has ended: then its status alone decides, and its pod
/// need not be read.
pub(super) fn is_final(session: &ConsoleSession) -> bool {
    session
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(SessionPhase::is_final)
}

/// Decides, at `now`, from the session and its proxy pod (`None`: there is
/// none), whether this reconcile ends here. `None`: nothing observed so far
/// stops the session: what it names is read, and it is planned.
pub(super) fn decide(session: &ConsoleSession, pod: Option<&Pod>, now: Timestamp) -> Option<Next> {
    if is_final(session) {
        return Some(Next::Finished {
            delete_at: ttl_due(session),
        });
    }
    if let Some(going) = pod.filter(|p| p.metadata.deletion_timestamp.is_some()) {
        return Some(wait_for_replacement(session, &going.name_any(), now));
    }
    if let Some(verdict) = pod.and_then(pod_outcome) {
        return Some(Next::End(verdict));
    }
    if pod.is_none() && run_once_used(session) {
        // A new pod would not know its one viewer had been: it would let another in.
        return Some(Next::End(Verdict::new(
            SessionPhase::Completed,
            Reason::Completed,
            "the run-once session's viewer has been, and its proxy pod is gone",
        )));
    }
    // Past the deadline the session published (for the spec it has now):
    // it ends, with nothing more to look up (a proxy that ended
    // before it has said why above). Many sessions can fall due
    // at once; each reaching its status write sooner keeps them on time.
    published_deadline_passed(session, now).map(|deadline| Next::End(expired(deadline)))
}

/// The session could not be planned, for the reason `verdict` gives.
pub(super) fn unplanned(session: &ConsoleSession, verdict: Verdict, now: Timestamp) -> Next {
    // Watches on Hypervisors bring a waiting session back; the retry is a backstop.
    // Claims are not watched (that would take list and watch on every
    // claim in the cluster): a session waiting for one looks again sooner.
    let retry = match verdict.reason {
        Reason::RecordingClaimNotFound => Duration::from_secs(15),
        _ => Duration::from_secs(60),
    };
    wait(session, verdict, retry, now)
}

/// The planned deadline, once it has passed, ends the session.
pub(super) fn past_deadline(expires_at: Timestamp, now: Timestamp) -> Option<Next> {
    (now >= expires_at).then(|| Next::End(expired(Time(expires_at))))
}

/// Settles on a verdict that stops this reconcile: a final one ends the
/// session; any other is reported, and the session is looked at again after
/// `retry`, or at its deadline if sooner: a session that cannot start still
/// expires on time.
pub(super) fn wait(
    session: &ConsoleSession,
    mut verdict: Verdict,
    mut retry: Duration,
    now: Timestamp,
) -> Next {
    if let Some(deadline) = waiting_deadline(session).filter(|_| !verdict.phase.is_final()) {
        if now >= deadline {
            verdict = Verdict {
                expires_at: Some(Time(deadline)),
                ended_at: Some(Time(deadline)),
                ..Verdict::new(
                    SessionPhase::Expired,
                    Reason::Expired,
                    format!(
                        "the session reached its time limit before it could start: {}",
                        verdict.message
                    ),
                )
            };
        } else {
            retry = retry.min(until(now, deadline));
        }
    }
    if verdict.phase.is_final() {
        Next::End(verdict)
    } else {
        Next::Wait { verdict, retry }
    }
}

/// When a session that runs looks again: at its deadline, when its Proxmox
/// ticket is due for renewal, and every five minutes at least. The deadline
/// comes from the resource, so a restarted operator computes the same one.
pub(super) fn wake_after(
    expires_at: Timestamp,
    renew_at: Option<SystemTime>,
    now: Timestamp,
) -> Duration {
    let until_renewal = renew_at
        .and_then(|at| at.duration_since(SystemTime::from(now)).ok())
        .unwrap_or(Duration::MAX);
    until(now, expires_at)
        .min(until_renewal)
        .min(Duration::from_secs(300))
}

/// How long from `now` until `at`; zero once it has passed.
pub(super) fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO)
}

/// The session's pod is being deleted by someone else: the operator deletes
/// pods only of sessions that have ended. A drain, an eviction or `kubectl
/// delete pod` stops the proxy, which then reports `completed`: that says
/// nothing about the session, so it is not taken as its end. Once the pod is
/// gone (the watch brings the session back) another starts at the same URL.
fn wait_for_replacement(session: &ConsoleSession, pod: &str, now: Timestamp) -> Next {
    let verdict = Verdict::new(
        SessionPhase::Pending,
        Reason::ProxyStopping,
        format!(
            "console proxy pod {pod} is being deleted; another starts at the same URL once it \
             is gone, and viewers must reconnect"
        ),
    );
    wait(session, verdict, Duration::from_secs(10), now)
}

/// When a finished session is deleted: `ttlSecondsAfterFinished` after it
/// ended, like a Job; never without both.
fn ttl_due(session: &ConsoleSession) -> Option<Timestamp> {
    let ttl = session.spec.ttl_seconds_after_finished?;
    let ended_at = session.status.as_ref()?.ended_at.as_ref()?;
    Some(ended_at.0 + SignedDuration::from_secs(i64::from(ttl)))
}

/// The deadline in the session's status, once it has passed, if that status
/// describes the session's current spec (a changed timeout is planned anew).
fn published_deadline_passed(session: &ConsoleSession, now: Timestamp) -> Option<Time> {
    let status = session.status.as_ref()?;
    let current = status.observed_generation.is_some()
        && status.observed_generation == session.meta().generation;
    let deadline = status.expires_at.as_ref()?;
    (current && now >= deadline.0).then(|| deadline.clone())
}

/// The session ended at its deadline, whenever that is noticed: the proxy
/// stops serving then by itself, and a session that never started served
/// nobody after.
fn expired(deadline: Time) -> Verdict {
    Verdict {
        expires_at: Some(deadline.clone()),
        ended_at: Some(deadline),
        ..Verdict::new(
            SessionPhase::Expired,
            Reason::Expired,
            "the session reached its time limit",
        )
    }
}

/// Whether a run-once session has had its one viewer, as the proxy reported.
fn run_once_used(session: &ConsoleSession) -> bool {
    session.spec.run_once == Some(true)
        && session
            .status
            .as_ref()
            .and_then(|s| s.viewers.as_ref())
            .is_some_and(|v| v.connections > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A fixed "now": the tests never read the clock.
    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    fn at(offset_secs: i64) -> Timestamp {
        now() + SignedDuration::from_secs(offset_secs)
    }

    fn time(offset_secs: i64) -> Time {
        Time(at(offset_secs))
    }

    /// A session created a minute ago with the default one-hour timeout,
    /// with `status` as given.
    fn session(spec: serde_json::Value, status: serde_json::Value) -> ConsoleSession {
        let mut spec_json = json!({"hypervisor": "h", "vm": {"port": 5900}});
        if let (Some(base), Some(extra)) = (spec_json.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {
                "name": "s", "namespace": "n", "generation": 2,
                "creationTimestamp": time(-60),
            },
            "spec": spec_json,
            "status": status,
        }))
        .unwrap()
    }

    fn live() -> ConsoleSession {
        session(
            json!({}),
            json!({"phase": "Ready", "observedGeneration": 2}),
        )
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "porthole-s-1234"},
            "status": status,
        }))
        .unwrap()
    }

    fn running() -> Pod {
        pod(json!({"phase": "Running"}))
    }

    fn being_deleted(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp = Some(time(-1));
        pod
    }

    fn exited(message: &str) -> Pod {
        pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{
                "name": "proxy", "image": "proxy", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": 0, "message": message, "finishedAt": time(-5),
                }},
            }],
        }))
    }

    fn pending(reason: Reason) -> Verdict {
        Verdict::new(SessionPhase::Pending, reason, "waiting")
    }

    #[test]
    fn a_final_session_is_finished_without_a_ttl_whatever_its_pod() {
        let done = session(
            json!({}),
            json!({"phase": "Completed", "endedAt": time(-10)}),
        );
        assert_eq!(
            decide(&done, None, now()),
            Some(Next::Finished { delete_at: None })
        );
        assert_eq!(
            decide(&done, Some(&being_deleted(running())), now()),
            Some(Next::Finished { delete_at: None })
        );
    }

    #[test]
    fn a_final_session_with_a_ttl_is_deleted_that_long_after_it_ended() {
        let done = session(
            json!({"ttlSecondsAfterFinished": 30}),
            json!({"phase": "Expired", "endedAt": time(-10)}),
        );
        assert_eq!(
            decide(&done, None, now()),
            Some(Next::Finished {
                delete_at: Some(at(20))
            })
        );
        // Without the time it ended, there is nothing to count from.
        let unknown = session(
            json!({"ttlSecondsAfterFinished": 30}),
            json!({"phase": "Failed"}),
        );
        assert_eq!(
            decide(&unknown, None, now()),
            Some(Next::Finished { delete_at: None })
        );
    }

    #[test]
    fn a_pod_being_deleted_is_waited_for_not_taken_as_the_end() {
        // Its proxy reports `completed` as it stops: that is not the session's end.
        let going = being_deleted(exited("completed"));
        let Some(Next::Wait { verdict, retry }) = decide(&live(), Some(&going), now()) else {
            panic!("expected to wait for the replacement");
        };
        assert_eq!(verdict.phase, SessionPhase::Pending);
        assert_eq!(verdict.reason, Reason::ProxyStopping);
        assert!(verdict.message.contains("porthole-s-1234"), "{verdict:?}");
        assert_eq!(retry, Duration::from_secs(10));
    }

    #[test]
    fn a_pod_being_deleted_past_the_waiting_deadline_ends_the_session() {
        let late = session(json!({}), json!({"expiresAt": time(-1)}));
        let Some(Next::End(verdict)) = decide(&late, Some(&being_deleted(running())), now()) else {
            panic!("expected the session to end");
        };
        assert_eq!(verdict.phase, SessionPhase::Expired);
        assert_eq!(verdict.ended_at, Some(time(-1)));
        assert!(
            verdict.message.contains("before it could start"),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_pod_that_exited_ends_the_session_with_its_end_reason() {
        let gone = exited("upstream-closed");
        let expected = pod_outcome(&gone).unwrap();
        assert_eq!(expected.reason, Reason::UpstreamClosed);
        assert_eq!(
            decide(&live(), Some(&gone), now()),
            Some(Next::End(expected))
        );
    }

    #[test]
    fn a_used_run_once_session_without_its_pod_is_completed() {
        let used = session(
            json!({"runOnce": true}),
            json!({"phase": "Ready", "viewers": {"count": 0, "connections": 1}}),
        );
        let Some(Next::End(verdict)) = decide(&used, None, now()) else {
            panic!("expected the session to end");
        };
        assert_eq!(verdict.phase, SessionPhase::Completed);
        assert_eq!(verdict.reason, Reason::Completed);
        // While its pod runs, the proxy itself keeps the second viewer out.
        assert_eq!(decide(&used, Some(&running()), now()), None);
    }

    #[test]
    fn a_published_deadline_that_passed_expires_the_session_at_that_deadline() {
        let due = session(
            json!({}),
            json!({"phase": "Ready", "observedGeneration": 2, "expiresAt": time(-5)}),
        );
        assert_eq!(
            decide(&due, Some(&running()), now()),
            Some(Next::End(expired(time(-5))))
        );
    }

    #[test]
    fn a_live_session_is_planned() {
        assert_eq!(decide(&live(), None, now()), None);
        assert_eq!(decide(&live(), Some(&running()), now()), None);
    }

    #[test]
    fn a_session_waiting_for_its_claim_looks_again_sooner_than_for_anything_else() {
        let fresh = session(json!({}), json!({}));
        assert_eq!(
            unplanned(&fresh, pending(Reason::RecordingClaimNotFound), now()),
            Next::Wait {
                verdict: pending(Reason::RecordingClaimNotFound),
                retry: Duration::from_secs(15)
            }
        );
        assert_eq!(
            unplanned(&fresh, pending(Reason::HypervisorNotFound), now()),
            Next::Wait {
                verdict: pending(Reason::HypervisorNotFound),
                retry: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn a_session_that_cannot_be_planned_for_good_ends() {
        let invalid = Verdict::new(SessionPhase::Failed, Reason::InvalidSpec, "bad");
        // Even past its deadline: the final verdict says more than "expired".
        let late = session(json!({}), json!({"expiresAt": time(-1)}));
        assert_eq!(unplanned(&late, invalid.clone(), now()), Next::End(invalid));
    }

    #[test]
    fn a_waiting_session_looks_again_no_later_than_its_deadline() {
        let soon = session(json!({}), json!({"expiresAt": time(7)}));
        assert_eq!(
            wait(
                &soon,
                pending(Reason::ProxyStarting),
                Duration::from_secs(60),
                now()
            ),
            Next::Wait {
                verdict: pending(Reason::ProxyStarting),
                retry: Duration::from_secs(7)
            }
        );
        // Without a published deadline, it counts from its creation and timeout.
        let fresh = session(json!({"timeout": "90s"}), json!({}));
        assert_eq!(
            wait(
                &fresh,
                pending(Reason::ProxyStarting),
                Duration::from_secs(60),
                now()
            ),
            Next::Wait {
                verdict: pending(Reason::ProxyStarting),
                retry: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_planned_deadline_ends_the_session_once_reached() {
        assert_eq!(
            past_deadline(now(), now()),
            Some(Next::End(expired(Time(now()))))
        );
        assert_eq!(past_deadline(at(1), now()), None);
    }

    #[test]
    fn a_running_session_wakes_at_its_deadline_its_renewal_or_in_five_minutes() {
        let renew = |offset: i64| Some(SystemTime::from(at(offset)));
        assert_eq!(wake_after(at(40), None, now()), Duration::from_secs(40));
        assert_eq!(
            wake_after(at(40), renew(25), now()),
            Duration::from_secs(25)
        );
        assert_eq!(wake_after(at(3600), None, now()), Duration::from_secs(300));
        // A renewal already due does not make it spin: the deadline still counts.
        assert_eq!(
            wake_after(at(40), renew(-5), now()),
            Duration::from_secs(40)
        );
    }

    #[test]
    fn a_run_once_session_is_used_once_a_viewer_has_connected() {
        let with = |run_once: bool, connections: u64| {
            session(
                json!({"runOnce": run_once}),
                json!({"viewers": {"count": 0, "connections": connections}}),
            )
        };
        assert!(run_once_used(&with(true, 1)));
        assert!(!run_once_used(&with(true, 0)));
        assert!(!run_once_used(&with(false, 3)));
    }

    #[test]
    fn a_deadline_that_passed_is_due_now_not_as_far_in_the_future() {
        assert_eq!(until(now(), at(-30)), Duration::ZERO);
        assert_eq!(until(now(), at(30)), Duration::from_secs(30));
    }

    #[test]
    fn a_published_deadline_counts_only_once_passed_and_for_the_current_spec() {
        let with = |expires_in: i64, observed: i64| {
            session(
                json!({}),
                json!({"observedGeneration": observed, "expiresAt": time(expires_in)}),
            )
        };
        assert!(published_deadline_passed(&with(-5, 2), now()).is_some());
        assert!(published_deadline_passed(&with(60, 2), now()).is_none());
        // The timeout changed since: the deadline is planned anew.
        assert!(published_deadline_passed(&with(-5, 1), now()).is_none());
        assert!(published_deadline_passed(&session(json!({}), json!({})), now()).is_none());
    }
}
