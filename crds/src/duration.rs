//! Durations as Kubernetes users write them (`90s`, `30m`, `1h30m`), the Go
//! `time.ParseDuration` subset that makes sense for session lifetimes.

use std::time::Duration;

/// A pattern accepting exactly what [`parse`] accepts.
pub const PATTERN: &str = r"^([0-9]+(h|m|s|ms))+$";

/// The OpenAPI schema of an optional duration field: a CEL rule with a message a
/// person understands, so `kubectl apply` rejects `30 minutes` with an example
/// of what to write instead.
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 32,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{PATTERN}')"),
            "message": "must be a duration such as 90s, 30m or 1h30m (units: h, m, s, ms)"
        }]
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration: write it like 90s, 30m or 1h30m")]
    Empty,
    #[error("invalid duration {0:?}: write it like 90s, 30m or 1h30m")]
    Invalid(String),
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Parses `1h30m`, `45s`, `500ms`. Units: h, m, s, ms.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_string()))?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return Err(invalid());
        };
        rest = &rest[len..];
        total = value
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats whole seconds the way [`parse`] reads them (`1h30m`, `45s`).
pub fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m3s"), Ok(Duration::from_secs(123)));
    }

    #[test]
    fn rejects_what_people_get_wrong() {
        for bad in ["", "30", "m", "1d", "1.5h", "-5m", "5 m", "1h30"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(matches!(
            parse("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for secs in [0, 1, 59, 60, 61, 3600, 5400, 86399] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
