//! Durations as users write them in a ConsoleSession or a Hypervisor
//! (`timeout: 1h30m`), and the proxy's duration flags.
//!
//! Asserts: `parse` never panics; it agrees with an independent model of the
//! grammar (digits then h|m|s|ms, repeated; values summed in u128; the first
//! problem from the left reported) on value, rejection and overflow; the
//! CRD's CEL pattern (`PATTERN`) matches exactly the grammatical texts, so
//! what the API server admits the operator parses (or finds too long); and
//! what `parse` returns round-trips through `format` (to whole seconds).
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use porthole_api::duration::{self, DurationError, PATTERN};

static PATTERN_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(PATTERN).expect("PATTERN is a valid regex"));

/// What `parse` must answer, reading left to right as it does: the first
/// problem found wins (a value too large before a bad unit after it is an
/// overflow). Also whether the whole text is grammatical.
fn model(text: &str) -> (Result<u64, DurationError>, bool) {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return (Err(DurationError::Empty), false);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let mut first_error = None;
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut value: u128 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            value = value
                .saturating_mul(10)
                .saturating_add(u128::from(bytes[i] - b'0'));
            i += 1;
        }
        if i == start {
            return (Err(first_error.unwrap_or_else(invalid)), false);
        }
        if value > u128::from(u64::MAX) {
            first_error.get_or_insert_with(overflow);
        }
        let unit: u128 = match &bytes[i..] {
            [b'm', b's', ..] => {
                i += 2;
                1
            }
            [b'h', ..] => {
                i += 1;
                3_600_000
            }
            [b'm', ..] => {
                i += 1;
                60_000
            }
            [b's', ..] => {
                i += 1;
                1_000
            }
            _ => return (Err(first_error.unwrap_or_else(invalid)), false),
        };
        total = total.saturating_add(value.saturating_mul(unit));
        if total > u128::from(u64::MAX) {
            first_error.get_or_insert_with(overflow);
        }
    }
    match first_error {
        Some(error) => (Err(error), true),
        None => (Ok(total as u64), true),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = duration::parse(text);
    let (want, grammatical) = model(text);
    assert_eq!(
        parsed.as_ref().map(Duration::as_millis),
        want.as_ref().map(|&ms| u128::from(ms)),
        "{text:?}"
    );
    assert_eq!(
        PATTERN_RE.is_match(text),
        grammatical,
        "{text:?}: the CEL pattern and the grammar disagree"
    );
    if let Ok(d) = parsed {
        let shown = duration::format(d);
        assert_eq!(
            duration::parse(&shown),
            Ok(Duration::from_secs(d.as_secs())),
            "{text:?} -> {d:?} -> {shown:?}"
        );
        assert!(PATTERN_RE.is_match(&shown), "{shown:?}");
    }
});
