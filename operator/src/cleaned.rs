//! Finished sessions whose children this process has already deleted.
//!
//! A finished session is reconciled again whenever one of its children goes
//! away (the controller watches them), and a thousand sessions expiring
//! together would otherwise send five DELETEs, each answered 404, for every
//! such wake-up. Kept in memory only: after a restart each finished session is
//! cleaned once more, which is what makes forgetting safe.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct CleanedUp(Mutex<HashSet<String>>);

impl CleanedUp {
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains(uid)
    }

    pub fn insert(&self, uid: &str) {
        self.lock().insert(uid.to_owned());
    }

    /// Forgets sessions that no longer exist, so the set stays as small as
    /// the number of finished sessions.
    pub fn retain_existing<'a>(&self, existing: impl IntoIterator<Item = &'a str>) {
        let existing: HashSet<&str> = existing.into_iter().collect();
        self.lock().retain(|uid| existing.contains(uid.as_str()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_session_is_gone() {
        let cleaned = CleanedUp::default();
        cleaned.insert("a");
        cleaned.insert("b");
        assert!(cleaned.contains("a") && cleaned.contains("b"));
        cleaned.retain_existing(["b", "c"]);
        assert!(!cleaned.contains("a"));
        assert!(cleaned.contains("b"));
        assert!(!cleaned.contains("c"));
    }
}
