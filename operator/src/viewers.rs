//! Viewers, as the proxy pods report them
//! ([`VIEWERS_PATH`](porthole_api::contract::VIEWERS_PATH)).
//!
//! The reconciler reads a pod's report to set the `Connected` phase and
//! `status.viewers`; a long poll per open session ([`Watches`]) brings the
//! session back to the reconciler the moment a viewer comes or goes, so
//! neither the status nor the Events wait for a periodic resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use porthole_api::contract::{INTERNAL_PORT, VIEWERS_LONG_POLL, VIEWERS_PATH, ViewerReport};
use porthole_api::v1alpha1::{ConsoleSession, ViewerStatus};
use tracing::debug;

use crate::exposure::http_origin;

/// A quick read must not hold up a reconcile.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// A watch gives up after this many failures in a row: the pod is gone, and
/// the next reconcile starts a new watch if the session is still open.
const MAX_FAILURES: u32 = 5;
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the viewer report from {pod_ip}: {source}")]
    Request {
        pod_ip: String,
        source: reqwest::Error,
    },
    #[error("the proxy at {pod_ip} answered the viewer report with HTTP {status}")]
    Status {
        pod_ip: String,
        status: reqwest::StatusCode,
    },
}

/// Reads a proxy pod's viewer report; with `after`, waits for the next change.
pub async fn read(
    http: &reqwest::Client,
    pod_ip: &str,
    token: &str,
    after: Option<u64>,
) -> Result<ViewerReport, Error> {
    let mut url = format!("{}{VIEWERS_PATH}", http_origin(pod_ip, INTERNAL_PORT));
    let timeout = match after {
        Some(generation) => {
            url.push_str(&format!("?after={generation}"));
            VIEWERS_LONG_POLL + READ_TIMEOUT
        }
        None => READ_TIMEOUT,
    };
    let failed = |source| Error::Request {
        pod_ip: pod_ip.to_string(),
        source,
    };
    let response = http
        .get(url)
        .bearer_auth(token)
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(Error::Status {
            pod_ip: pod_ip.to_string(),
            status: response.status(),
        });
    }
    response.json().await.map_err(failed)
}

/// The status form of a report.
pub fn status(report: &ViewerReport) -> ViewerStatus {
    ViewerStatus {
        count: report.connected,
        connections: report.connections,
        last_connected_at: report.last_connected_at.clone(),
        last_disconnected_at: report.last_disconnected_at.clone(),
    }
}

/// What changed between two reports, as Event notes (reason, note).
pub fn changes(
    before: Option<&ViewerStatus>,
    now: &ViewerStatus,
    address: Option<&str>,
) -> Vec<(&'static str, String)> {
    let before = before.cloned().unwrap_or_default();
    let mut events = Vec::new();
    let from = address.map(|a| format!(" from {a}")).unwrap_or_default();
    match now.connections.saturating_sub(before.connections) {
        0 => {}
        1 => events.push(("ViewerConnected", format!("a viewer connected{from}"))),
        n => events.push((
            "ViewerConnected",
            format!("{n} viewers connected, the last{from}"),
        )),
    }
    if now.last_disconnected_at.is_some() && now.last_disconnected_at != before.last_disconnected_at
    {
        events.push((
            "ViewerDisconnected",
            format!("a viewer disconnected; {} still connected", now.count),
        ));
    }
    events
}

/// One long poll per open session; each change sends the session back to the
/// controller through `trigger`.
pub struct Watches {
    http: reqwest::Client,
    trigger: mpsc::UnboundedSender<ObjectRef<ConsoleSession>>,
    running: Arc<Mutex<HashMap<ObjectRef<ConsoleSession>, Running>>>,
}

struct Running {
    pod_ip: String,
    task: tokio::task::AbortHandle,
}

impl Watches {
    pub fn new(
        http: reqwest::Client,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<ConsoleSession>>) {
        let (trigger, triggers) = mpsc::unbounded();
        let watches = Watches {
            http,
            trigger,
            running: Arc::default(),
        };
        (watches, triggers)
    }

    /// Makes sure the session's pod at `pod_ip` is watched from `generation` on.
    pub fn ensure(
        &self,
        session: ObjectRef<ConsoleSession>,
        pod_ip: &str,
        token: &str,
        generation: u64,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&session).is_some_and(|r| r.pod_ip == pod_ip) {
            return;
        }
        let task = tokio::spawn(watch(
            self.http.clone(),
            session.clone(),
            pod_ip.to_string(),
            token.to_string(),
            generation,
            self.trigger.clone(),
            self.running.clone(),
        ));
        let replaced = running.insert(
            session,
            Running {
                pod_ip: pod_ip.to_string(),
                task: task.abort_handle(),
            },
        );
        if let Some(old) = replaced {
            old.task.abort();
        }
    }

    /// Stops watching a session that ended.
    pub fn stop(&self, session: &ObjectRef<ConsoleSession>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = running.remove(session) {
            old.task.abort();
        }
    }

    pub fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn watch(
    http: reqwest::Client,
    session: ObjectRef<ConsoleSession>,
    pod_ip: String,
    token: String,
    mut generation: u64,
    trigger: mpsc::UnboundedSender<ObjectRef<ConsoleSession>>,
    running: Arc<Mutex<HashMap<ObjectRef<ConsoleSession>, Running>>>,
) {
    let mut failures = 0;
    while failures < MAX_FAILURES {
        match read(&http, &pod_ip, &token, Some(generation)).await {
            Ok(report) => {
                failures = 0;
                if report.generation != generation {
                    generation = report.generation;
                    if trigger.unbounded_send(session.clone()).is_err() {
                        return; // the controller stopped
                    }
                }
            }
            Err(error) => {
                failures += 1;
                debug!(session = %session, %error, failures, "viewer watch failed");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
    if running.get(&session).is_some_and(|r| r.pod_ip == pod_ip) {
        running.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(seconds).unwrap()))
    }

    #[test]
    fn a_new_viewer_is_one_event_with_its_address() {
        let now = ViewerStatus {
            count: 1,
            connections: 1,
            last_connected_at: at(10),
            last_disconnected_at: None,
        };
        assert_eq!(
            changes(None, &now, Some("10.1.2.3")),
            vec![("ViewerConnected", "a viewer connected from 10.1.2.3".into())]
        );
        assert!(changes(Some(&now), &now, Some("10.1.2.3")).is_empty());
    }

    #[test]
    fn several_comings_and_a_going_between_two_reads_are_told() {
        let before = ViewerStatus {
            count: 1,
            connections: 1,
            last_connected_at: at(10),
            last_disconnected_at: None,
        };
        let now = ViewerStatus {
            count: 2,
            connections: 4,
            last_connected_at: at(20),
            last_disconnected_at: at(15),
        };
        assert_eq!(
            changes(Some(&before), &now, None),
            vec![
                ("ViewerConnected", "3 viewers connected, the last".into()),
                (
                    "ViewerDisconnected",
                    "a viewer disconnected; 2 still connected".into()
                )
            ]
        );
    }

    #[test]
    fn a_report_becomes_status() {
        let report = ViewerReport {
            generation: 3,
            connected: 1,
            connections: 2,
            last_connected_at: at(10),
            last_disconnected_at: at(5),
            last_address: Some("10.0.0.1".into()),
        };
        let status = status(&report);
        assert_eq!((status.count, status.connections), (1, 2));
        assert_eq!(status.last_disconnected_at, at(5));
    }
}
