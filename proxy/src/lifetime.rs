//! When a session ends on its own: at its hard deadline
//! ([`EXPIRES_AT`](porthole_api::contract::env::EXPIRES_AT)), when nobody
//! connects in time ([`CONNECT_TIMEOUT`](porthole_api::contract::env::CONNECT_TIMEOUT))
//! or when nobody types or moves the pointer
//! ([`IDLE_TIMEOUT`](porthole_api::contract::env::IDLE_TIMEOUT)).
//!
//! Pure: [`Limits::check`] is given the clocks and says whether to end now or
//! when to look again, so the session sleeps exactly until the next deadline.

use std::time::Duration;

use jiff::Timestamp;
use porthole_api::contract::EndReason;
use tokio::time::Instant;

/// A session's configured limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The hard deadline, a wall-clock instant the operator chose: the
    /// session ends then however long the pod took to start.
    pub expires_at: Option<Timestamp>,
    /// How long after start the first viewer may take.
    pub connect_timeout: Option<Duration>,
    /// How long without key or pointer input.
    pub idle_timeout: Option<Duration>,
}

/// What the session is doing, as far as its limits care.
#[derive(Clone, Copy, Debug)]
pub struct Activity {
    pub started: Instant,
    /// The last key or pointer event, or the last viewer's arrival.
    pub last_input: Instant,
    pub ever_connected: bool,
}

/// What [`Limits::check`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    End(EndReason),
    /// Look again then; `None`: no limit can ever run out.
    CheckAt(Option<Instant>),
}

impl Limits {
    /// Checks the limits at `now` (monotonic) and `wall` (the same moment on
    /// the wall clock). When several have run out, the hard deadline wins,
    /// then never-connected, then idle.
    pub fn check(&self, activity: Activity, now: Instant, wall: Timestamp) -> Verdict {
        let mut next: Option<Instant> = None;
        let mut wake_at = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));

        if let Some(expires_at) = self.expires_at {
            // Converted each time: the wall clock is the reference, and may
            // have been stepped since the last check.
            match Duration::try_from(wall.duration_until(expires_at)) {
                Ok(left) if !left.is_zero() => wake_at(now + left),
                _ => return Verdict::End(EndReason::Expired),
            }
        }
        if let Some(timeout) = self.connect_timeout
            && !activity.ever_connected
        {
            let deadline = activity.started + timeout;
            if now >= deadline {
                return Verdict::End(EndReason::NeverConnected);
            }
            wake_at(deadline);
        }
        if let Some(timeout) = self.idle_timeout {
            let deadline = activity.last_input + timeout;
            if now >= deadline {
                return Verdict::End(EndReason::Idle);
            }
            wake_at(deadline);
        }
        Verdict::CheckAt(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn wall(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn activity(t0: Instant, last_input: u32, ever_connected: bool) -> Activity {
        Activity {
            started: t0,
            last_input: t0 + SEC * last_input,
            ever_connected,
        }
    }

    #[test]
    fn no_limits_never_end() {
        let t0 = Instant::now();
        let verdict = Limits::default().check(activity(t0, 0, false), t0 + 999 * SEC, wall(999));
        assert_eq!(verdict, Verdict::CheckAt(None));
    }

    #[test]
    fn expiry_follows_the_wall_clock_not_the_start() {
        let limits = Limits {
            expires_at: Some(wall(10)),
            ..Limits::default()
        };
        let t0 = Instant::now();
        // Started at wall second 7: three seconds left, not ten.
        let a = activity(t0, 0, true);
        assert_eq!(
            limits.check(a, t0, wall(7)),
            Verdict::CheckAt(Some(t0 + 3 * SEC))
        );
        assert_eq!(
            limits.check(a, t0 + 3 * SEC, wall(10)),
            Verdict::End(EndReason::Expired)
        );
        // Already past when the pod starts.
        assert_eq!(
            limits.check(a, t0, wall(11)),
            Verdict::End(EndReason::Expired)
        );
    }

    #[test]
    fn never_connected_only_before_the_first_viewer() {
        let limits = Limits {
            connect_timeout: Some(2 * SEC),
            ..Limits::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            limits.check(activity(t0, 0, false), t0 + SEC, wall(1)),
            Verdict::CheckAt(Some(t0 + 2 * SEC))
        );
        assert_eq!(
            limits.check(activity(t0, 0, false), t0 + 2 * SEC, wall(2)),
            Verdict::End(EndReason::NeverConnected)
        );
        assert_eq!(
            limits.check(activity(t0, 0, true), t0 + 5 * SEC, wall(5)),
            Verdict::CheckAt(None)
        );
    }

    #[test]
    fn idle_counts_from_the_last_input() {
        let limits = Limits {
            idle_timeout: Some(3 * SEC),
            ..Limits::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            limits.check(activity(t0, 2, true), t0 + 4 * SEC, wall(4)),
            Verdict::CheckAt(Some(t0 + 5 * SEC))
        );
        assert_eq!(
            limits.check(activity(t0, 2, true), t0 + 5 * SEC, wall(5)),
            Verdict::End(EndReason::Idle)
        );
    }

    #[test]
    fn the_earliest_deadline_is_next_and_expiry_wins_ties() {
        let limits = Limits {
            expires_at: Some(wall(10)),
            connect_timeout: Some(4 * SEC),
            idle_timeout: Some(6 * SEC),
        };
        let t0 = Instant::now();
        assert_eq!(
            limits.check(activity(t0, 0, false), t0, wall(0)),
            Verdict::CheckAt(Some(t0 + 4 * SEC))
        );
        assert_eq!(
            limits.check(activity(t0, 0, false), t0 + 10 * SEC, wall(10)),
            Verdict::End(EndReason::Expired)
        );
    }
}
