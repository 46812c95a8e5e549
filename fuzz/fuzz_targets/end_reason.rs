//! The proxy's termination message, which the operator reads back
//! (`EndReason::from_str`) to set the session's final phase and message.
//!
//! Asserts: parsing never panics; whatever parses is stable, i.e. it prints
//! as text that parses back to the same reason (so nothing the proxy said
//! is lost or changes meaning between the proxy, the status and the
//! metrics); a reason's label is the fixed, bounded metric label of its kind
//! (see `label_of`), and the text it was read from starts with that label;
//! details are trimmed; every label on its own parses to its kind.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use porthole_api::contract::{EndReason, UpstreamFailure};

/// The stable label of each kind of end reason, as status and metrics show
/// it. The match has no wildcard on purpose: a new `EndReason` variant in the
/// contract stops this target compiling until its label is added here, so
/// the list cannot go stale.
fn label_of(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::Completed => "completed",
        EndReason::Expired => "expired",
        EndReason::Idle => "idle",
        EndReason::NeverConnected => "never-connected",
        EndReason::UpstreamClosed => "upstream-closed",
        EndReason::UpstreamFailed { .. } => "upstream-failed",
        EndReason::RecordingFailed { .. } => "recording-failed",
    }
}

/// One reason of every kind. A kind missing here is missing from `LABELS`,
/// and the first input of that kind fails the `LABELS` check (the seed
/// corpus has one of each).
fn one_of_each() -> Vec<EndReason> {
    vec![
        EndReason::Completed,
        EndReason::Expired,
        EndReason::Idle,
        EndReason::NeverConnected,
        EndReason::UpstreamClosed,
        EndReason::upstream_failed(UpstreamFailure::Protocol, ""),
        EndReason::recording_failed(""),
    ]
}

/// Every metric label, derived from the kinds above.
static LABELS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let labels: Vec<_> = one_of_each().iter().map(label_of).collect();
    for (reason, label) in one_of_each().iter().zip(&labels) {
        assert_eq!(reason.label(), *label, "{reason:?}");
        // A bare label is a reason of its kind (the operator may see one).
        let parsed = label.parse::<EndReason>().expect("a bare label parses");
        assert_eq!(label_of(&parsed), *label);
    }
    assert!(labels.contains(&"recording-failed"));
    labels
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The operator reads the first line of the termination message.
    for candidate in [text, text.lines().next().unwrap_or_default()] {
        let Ok(reason) = candidate.parse::<EndReason>() else {
            continue;
        };
        let label = reason.label();
        assert!(LABELS.contains(&label), "{reason:?}");
        assert_eq!(label, label_of(&reason), "{reason:?}");
        assert!(
            candidate.trim().starts_with(label),
            "{candidate:?} -> {reason:?}"
        );
        match &reason {
            EndReason::UpstreamFailed { failure, detail } => {
                assert!(UpstreamFailure::ALL.contains(failure));
                assert_eq!(detail.trim(), detail, "details are trimmed");
            }
            EndReason::RecordingFailed { detail } => {
                assert_eq!(detail.trim(), detail, "details are trimmed");
            }
            _ => assert_eq!(candidate.trim(), label, "{candidate:?}"),
        }
        let shown = reason.to_string();
        assert!(shown.starts_with(label), "{reason:?} -> {shown:?}");
        assert_eq!(
            shown.parse::<EndReason>().as_ref(),
            Ok(&reason),
            "{candidate:?} -> {reason:?} -> {shown:?}"
        );
    }
});
