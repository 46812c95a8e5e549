//! Who may open the console: the session's viewer policy
//! ([`porthole_api::contract::env::VIEWERS`]) and run-once
//! ([`porthole_api::contract::env::RUN_ONCE`]).
//!
//! Admission is decided under one lock, before the WebSocket upgrade and
//! before the VNC server is dialled, so of two viewers racing for an exclusive
//! or run-once session exactly one wins, and the loser costs the hypervisor
//! nothing.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use porthole_api::contract::{VIEWERS_EXCLUSIVE, VIEWERS_SHARED};

/// How many viewers may watch at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Viewers {
    /// One at a time.
    #[default]
    Exclusive,
    /// Any number, each with its own connection to the VNC server.
    Shared,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be {VIEWERS_EXCLUSIVE:?} or {VIEWERS_SHARED:?}, not {0:?}")]
pub struct UnknownPolicy(String);

impl FromStr for Viewers {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            VIEWERS_EXCLUSIVE => Ok(Viewers::Exclusive),
            VIEWERS_SHARED => Ok(Viewers::Shared),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// Why a viewer with the right token was turned away. The text is the
/// WebSocket close reason the page turns into a sentence.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("another viewer is connected")]
    Occupied,
    #[error("the session was for one viewer, who has already connected")]
    AlreadyUsed,
}

impl Refused {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Occupied => "refused-occupied",
            Refused::AlreadyUsed => "refused-already-used",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    connected: usize,
    admitted: usize,
}

/// The session's door.
#[derive(Debug)]
pub struct Admission {
    viewers: Viewers,
    run_once: bool,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(viewers: Viewers, run_once: bool) -> Self {
        Self {
            viewers,
            run_once,
            counts: Arc::default(),
        }
    }

    pub fn run_once(&self) -> bool {
        self.run_once
    }

    /// Whether anyone has been let in yet.
    pub fn ever_admitted(&self) -> bool {
        self.lock().admitted > 0
    }

    /// Lets a viewer in, or says why not. The ticket holds its place until
    /// dropped.
    pub fn admit(&self) -> Result<Ticket, Refused> {
        let mut counts = self.lock();
        if self.run_once && counts.admitted > 0 {
            return Err(Refused::AlreadyUsed);
        }
        if self.viewers == Viewers::Exclusive && counts.connected > 0 {
            return Err(Refused::Occupied);
        }
        counts.connected += 1;
        counts.admitted += 1;
        Ok(Ticket {
            counts: self.counts.clone(),
            given_back: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Poisoning only means a panic between two integer updates.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An admitted viewer's place; dropping it lets the next one in.
#[derive(Debug)]
pub struct Ticket {
    counts: Arc<Mutex<Counts>>,
    given_back: bool,
}

impl Ticket {
    /// The viewer could not have the console (the hypervisor could not be
    /// reached): as if never admitted, so a run-once session's one turn is
    /// still to come. The place stays held until the ticket is dropped.
    pub fn give_back(&mut self) {
        if !std::mem::replace(&mut self.given_back, true) {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            counts.admitted -= 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.connected -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_from_the_contract_names() {
        assert_eq!(VIEWERS_EXCLUSIVE.parse(), Ok(Viewers::Exclusive));
        assert_eq!(VIEWERS_SHARED.parse(), Ok(Viewers::Shared));
        assert!("Shared".parse::<Viewers>().is_err());
    }

    #[test]
    fn exclusive_admits_one_at_a_time() {
        let door = Admission::new(Viewers::Exclusive, false);
        assert!(!door.ever_admitted());
        let first = door.admit().unwrap();
        assert_eq!(door.admit().unwrap_err(), Refused::Occupied);
        drop(first);
        let _second = door.admit().unwrap();
        assert!(door.ever_admitted());
    }

    #[test]
    fn a_turn_given_back_lets_a_run_once_viewer_in_again() {
        let door = Admission::new(Viewers::Exclusive, true);
        let mut first = door.admit().unwrap();
        first.give_back();
        first.give_back();
        drop(first);
        assert!(!door.ever_admitted());
        let _second = door.admit().unwrap();
        assert_eq!(door.admit().unwrap_err(), Refused::AlreadyUsed);
    }

    #[test]
    fn shared_admits_many() {
        let door = Admission::new(Viewers::Shared, false);
        let _a = door.admit().unwrap();
        let _b = door.admit().unwrap();
    }

    #[test]
    fn run_once_admits_exactly_one_ever() {
        for viewers in [Viewers::Exclusive, Viewers::Shared] {
            let door = Admission::new(viewers, true);
            let first = door.admit().unwrap();
            assert_eq!(door.admit().unwrap_err(), Refused::AlreadyUsed);
            drop(first);
            assert_eq!(door.admit().unwrap_err(), Refused::AlreadyUsed);
        }
    }

    #[test]
    fn racing_viewers_get_one_ticket() {
        let door = Arc::new(Admission::new(Viewers::Exclusive, true));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| door.admit().map(std::mem::forget).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(admitted, 1);
    }
}
