//! The browser's access token: where it travels (a WebSocket subprotocol), how it
//! is compared (in constant time) and how guessing is slowed (a token bucket).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use porthole_api::contract::{BINARY_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX};
use subtle::ConstantTimeEq;

/// A session's access token. Its `Debug` hides it, so it can sit in structs
/// that get logged.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl Token {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Compares in constant time, so response timing tells nothing about how
    /// much of a guess was right. Only the length can leak, and every token has
    /// the same length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !self.0.is_empty() && bool::from(self.0.as_slice().ct_eq(presented))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the browser offered in `Sec-WebSocket-Protocol`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered<'a> {
    /// `binary`, the protocol the proxy answers with.
    pub binary: bool,
    /// The token from `bearer.porthole.dev.<token>`, if offered.
    pub token: Option<&'a str>,
}

impl<'a> Offered<'a> {
    /// Reads every `Sec-WebSocket-Protocol` header: a comma-separated list that
    /// browsers may also split over several headers.
    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        let mut offered = Offered::default();
        let protocols = headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for protocol in protocols {
            if protocol == BINARY_SUBPROTOCOL {
                offered.binary = true;
            } else if let Some(token) = protocol.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX) {
                offered.token = Some(token);
            }
        }
        offered
    }
}

/// A token bucket for failed token checks: `burst` failures at once, then one
/// per `refill`. It is global, not per client: behind an ingress every client
/// has the ingress's address, and a session has a single legitimate viewer.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: 1.0 / refill.as_secs_f64().max(f64::EPSILON),
            state: Mutex::new(Bucket {
                tokens: f64::from(burst),
                updated: Instant::now(),
            }),
        }
    }

    /// Whether another attempt may be checked now. Does not use up a token.
    pub fn allows(&self, now: Instant) -> bool {
        self.refilled(now).tokens >= 1.0
    }

    /// Records a failed attempt.
    pub fn failed(&self, now: Instant) {
        let mut bucket = self.refilled(now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned bucket only means a panic mid-update of two numbers.
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now.max(bucket.updated);
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn token_matches_only_itself() {
        let token = Token::new("s3cr3t-token");
        assert!(token.matches(b"s3cr3t-token"));
        assert!(!token.matches(b"s3cr3t-tokeN"));
        assert!(!token.matches(b"s3cr3t"));
        assert!(!token.matches(b""));
        assert!(!Token::new("").matches(b""), "an empty token opens nothing");
    }

    #[test]
    fn token_debug_is_redacted() {
        assert!(!format!("{:?}", Token::new("s3cr3t")).contains("s3cr3t"));
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn parses_binary_and_bearer() {
        let h = headers(&["binary, bearer.porthole.dev.abc_DEF-123"]);
        assert_eq!(
            Offered::from_headers(&h),
            Offered {
                binary: true,
                token: Some("abc_DEF-123")
            }
        );
    }

    #[test]
    fn parses_protocols_split_over_headers() {
        let h = headers(&["bearer.porthole.dev.t0k", "binary"]);
        let offered = Offered::from_headers(&h);
        assert!(offered.binary);
        assert_eq!(offered.token, Some("t0k"));
    }

    #[test]
    fn nothing_offered() {
        assert_eq!(Offered::from_headers(&headers(&[])), Offered::default());
        let h = headers(&["base64,bearer.other.x"]);
        assert_eq!(Offered::from_headers(&h), Offered::default());
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let limiter = RateLimiter::new(3, Duration::from_secs(2));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.allows(t0));
            limiter.failed(t0);
        }
        assert!(!limiter.allows(t0));
        assert!(!limiter.allows(t0 + Duration::from_secs(1)));
        assert!(limiter.allows(t0 + Duration::from_secs(2)));
        limiter.failed(t0 + Duration::from_secs(2));
        assert!(!limiter.allows(t0 + Duration::from_secs(2)));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.allows(later));
            limiter.failed(later);
        }
        assert!(!limiter.allows(later));
    }
}
