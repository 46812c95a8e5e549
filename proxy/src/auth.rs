//! The browser's access token: where it travels (a WebSocket subprotocol), how it
//! is compared (in constant time), and the [`Gate`] every credential check goes
//! through (a failure budget per source for wrong ones).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{CONNECTION, RETRY_AFTER, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use porthole_api::contract::{BINARY_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX};
use subtle::ConstantTimeEq;

use crate::http::{Body, text};
use crate::source::Source;

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

/// Failed credential checks allowed at once per source, and how fast they
/// come back.
pub const FAILURE_BURST: u32 = 10;
pub const FAILURE_REFILL: Duration = Duration::from_secs(2);
/// Sources whose failures are remembered at once. Beyond it, the one that
/// failed longest ago is forgotten, so a spray of addresses costs a bounded
/// amount of memory (and, at worst, gets some of them a fresh budget).
const REMEMBERED_SOURCES: usize = 4096;

/// Why a credential was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or missing, within the source's failure budget.
    Wrong,
    /// Wrong or missing, and the source has spent its failure budget.
    TooMany,
}

impl Refusal {
    /// 401, or 429 with `Retry-After` and the connection closed, so every
    /// further guess costs the guesser a new connection.
    pub fn response(self) -> Response<Body> {
        match self {
            Refusal::Wrong => text(StatusCode::UNAUTHORIZED, "wrong or missing token\n"),
            Refusal::TooMany => {
                let mut response =
                    text(StatusCode::TOO_MANY_REQUESTS, "too many failed attempts\n");
                let headers = response.headers_mut();
                headers.insert(RETRY_AFTER, HeaderValue::from(FAILURE_REFILL.as_secs()));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
                response
            }
        }
    }
}

/// The door both modes check credentials at: the credential first, then, for
/// a wrong one only, its source's failure budget.
///
/// A right credential is always let in. A budget checked first (as porthole
/// once did, and globally) lets anyone who sends a wrong token every two
/// seconds lock the real viewer out. So the budget cannot stop a guesser
/// who ignores the 429s from being let in by a right guess; what stops
/// guessing is the token itself (32 random bytes). The budget keeps a flood
/// of wrong tokens cheap: past it, each costs a new connection, is logged at
/// debug level only, and is counted as rate-limited.
#[derive(Debug)]
pub struct Gate {
    budgets: FailureBudgets,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            budgets: FailureBudgets::new(FAILURE_BURST, FAILURE_REFILL, REMEMBERED_SOURCES),
        }
    }
}

impl Gate {
    /// Runs `check` (which compares in constant time), and on failure spends
    /// one of `peer`'s failures.
    pub fn authorize<T>(
        &self,
        peer: IpAddr,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<T, Refusal> {
        match check() {
            Some(granted) => Ok(granted),
            None if self.budgets.spend(Source::of(peer), Instant::now()) => Err(Refusal::Wrong),
            None => Err(Refusal::TooMany),
        }
    }
}

/// A token bucket of failures per source: `burst` at once, then one per
/// `refill`, for at most `capacity` sources.
#[derive(Debug)]
pub struct FailureBudgets {
    burst: f64,
    per_second: f64,
    capacity: usize,
    buckets: Mutex<HashMap<Source, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl FailureBudgets {
    pub fn new(burst: u32, refill: Duration, capacity: usize) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: 1.0 / refill.as_secs_f64().max(f64::EPSILON),
            capacity: capacity.max(1),
            buckets: Mutex::default(),
        }
    }

    /// Spends one failure of `source`'s budget; false when there was none left.
    pub fn spend(&self, source: Source, now: Instant) -> bool {
        // A poisoned map only means a panic mid-update of two numbers.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&source) && buckets.len() >= self.capacity {
            self.forget(&mut buckets, now);
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now.max(bucket.updated);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Makes room: sources whose budget is whole again are as good as
    /// unknown; failing that, the one that failed longest ago goes.
    fn forget(&self, buckets: &mut HashMap<Source, Bucket>, now: Instant) {
        let full = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * self.per_second >= self.burst
        };
        buckets.retain(|_, b| !full(b));
        if buckets.len() >= self.capacity
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(s, _)| *s)
        {
            buckets.remove(&oldest);
        }
    }

    /// How many sources are remembered now.
    pub fn remembered(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
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

    fn ip(text: &str) -> Source {
        Source::of(text.parse().unwrap())
    }

    #[test]
    fn a_budget_allows_a_burst_then_refills_per_source() {
        let budgets = FailureBudgets::new(3, Duration::from_secs(2), 16);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(budgets.spend(ip("10.0.0.1"), t0));
        }
        assert!(!budgets.spend(ip("10.0.0.1"), t0));
        assert!(
            budgets.spend(ip("10.0.0.2"), t0),
            "another source has its own"
        );
        assert!(!budgets.spend(ip("10.0.0.1"), t0 + Duration::from_secs(1)));
        assert!(budgets.spend(ip("10.0.0.1"), t0 + Duration::from_secs(3)));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(budgets.spend(ip("10.0.0.1"), later));
        }
        assert!(!budgets.spend(ip("10.0.0.1"), later));
    }

    #[test]
    fn a_spray_of_sources_is_remembered_up_to_the_capacity() {
        let budgets = FailureBudgets::new(1, Duration::from_secs(3600), 8);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let source = Source::of(std::net::Ipv4Addr::from(i).into());
            assert!(budgets.spend(source, t0 + Duration::from_millis(i.into())));
            assert!(budgets.remembered() <= 8);
        }
        // The latest sources are still remembered, spent.
        let last = Source::of(std::net::Ipv4Addr::from(999).into());
        assert!(!budgets.spend(last, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_right_credential_passes_whatever_was_spent() {
        let gate = Gate::default();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let refusals: Vec<_> = (0..100)
            .map(|_| gate.authorize(peer, || None::<()>).unwrap_err())
            .collect();
        assert_eq!(refusals[0], Refusal::Wrong);
        assert_eq!(refusals[99], Refusal::TooMany);
        assert_eq!(gate.authorize(peer, || Some(7)), Ok(7));
    }
}
