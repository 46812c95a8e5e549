//! Crash-loop back-off: the delay before a failed container is started again.
use std::time::Duration;

/// Doubles from `initial` up to `max`; starts over once a container has run
/// for twice the cap without failing, as kubelet forgets old back-off entries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: None,
        }
    }

    /// The delay before restarting a container that ran for `ran_for`.
    /// Like kubelet, the first restart is immediate.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.max * 2 {
            self.next = None;
        }
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(match self.next {
            None => self.initial,
            Some(current) => (current * 2).min(self.max),
        });
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_long_run() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay(short).as_secs())
            .collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.next_delay(Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(backoff.next_delay(short), Duration::from_secs(10));
    }
}
