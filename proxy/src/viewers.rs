//! Who is watching: the [`ViewerReport`] the operator reads at
//! [`VIEWERS_PATH`](porthole_api::contract::VIEWERS_PATH) to publish the
//! session's `Connected` phase, `status.viewers` and viewer Events.
//!
//! A `watch` channel holds the report, so a long poll waits for the next
//! change without polling and without a lock held across an await.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use porthole_api::contract::ViewerReport;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct ViewerLog {
    report: watch::Sender<ViewerReport>,
}

impl Default for ViewerLog {
    fn default() -> Self {
        Self {
            report: watch::Sender::new(ViewerReport::default()),
        }
    }
}

impl ViewerLog {
    pub fn connected(&self, address: IpAddr) {
        self.report.send_modify(|r| {
            r.generation += 1;
            r.connected += 1;
            r.connections += 1;
            r.last_connected_at = Some(now());
            r.last_address = Some(address.to_canonical().to_string());
        });
    }

    pub fn disconnected(&self) {
        self.report.send_modify(|r| {
            r.generation += 1;
            r.connected = r.connected.saturating_sub(1);
            r.last_disconnected_at = Some(now());
        });
    }

    pub fn report(&self) -> ViewerReport {
        self.report.borrow().clone()
    }

    /// The report once its generation differs from `seen`, or as it is after
    /// `wait` or when `stop` fires (the session is ending: answer now).
    pub async fn changed_since(
        &self,
        seen: u64,
        wait: Duration,
        stop: &CancellationToken,
    ) -> ViewerReport {
        let mut changes = self.report.subscribe();
        let changed = changes.wait_for(|r| r.generation != seen);
        tokio::select! {
            _ = tokio::time::timeout(wait, changed) => {}
            () = stop.cancelled() => {}
        }
        self.report()
    }
}

/// `after=N` from a query string; anything else means "answer at once".
pub fn after(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
        .and_then(|n| n.parse().ok())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_read_from_the_query() {
        assert_eq!(after(Some("after=7")), Some(7));
        assert_eq!(after(Some("x=1&after=12")), Some(12));
        assert_eq!(after(Some("after=-1")), None);
        assert_eq!(after(Some("after=")), None);
        assert_eq!(after(None), None);
    }

    #[test]
    fn viewers_coming_and_going_are_counted() {
        let log = ViewerLog::default();
        log.connected("10.0.0.7".parse().unwrap());
        log.connected("::ffff:10.0.0.8".parse().unwrap());
        log.disconnected();
        let report = log.report();
        assert_eq!(report.generation, 3);
        assert_eq!(report.connected, 1);
        assert_eq!(report.connections, 2);
        assert_eq!(report.last_address.as_deref(), Some("10.0.0.8"));
        assert!(report.last_connected_at.is_some() && report.last_disconnected_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_answers_at_the_next_change() {
        let log = std::sync::Arc::new(ViewerLog::default());
        let stop = CancellationToken::new();
        let waiting = {
            let (log, stop) = (log.clone(), stop.clone());
            tokio::spawn(async move { log.changed_since(0, Duration::from_secs(25), &stop).await })
        };
        tokio::task::yield_now().await;
        log.connected("10.0.0.7".parse().unwrap());
        assert_eq!(waiting.await.unwrap().connected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_without_change_answers_after_the_wait() {
        let log = ViewerLog::default();
        let report = log
            .changed_since(0, Duration::from_secs(25), &CancellationToken::new())
            .await;
        assert_eq!(report, ViewerReport::default());
    }

    #[tokio::test]
    async fn a_stale_generation_answers_at_once() {
        let log = ViewerLog::default();
        log.connected("10.0.0.7".parse().unwrap());
        let report = log
            .changed_since(0, Duration::from_secs(3600), &CancellationToken::new())
            .await;
        assert_eq!(report.generation, 1);
    }
}
