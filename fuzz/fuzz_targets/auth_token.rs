//! The access token's way in (proxy/src/auth.rs): the
//! `Sec-WebSocket-Protocol` headers a browser offers (`binary`,
//! `bearer.porthole.dev.<token>`), the constant-time comparison, and the
//! `after=N` of the operator's viewer long poll (proxy/src/viewers.rs).
//!
//! Input: header values separated by newlines; the first line is also
//! compared as a presented token and read as the long poll's query.
//!
//! Asserts: no panic; `Offered` agrees with a plain model of the header
//! grammar (comma-separated, trimmed, browsers may split over several
//! headers, the last bearer offer wins); a token matches exactly itself, and
//! an empty token matches nothing; `after` is the first `after=` pair's
//! number.
#![no_main]

use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use porthole_api::contract::{BINARY_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX};
use porthole_proxy::auth::{Offered, Token};
use porthole_proxy::viewers;

const SECRET: &str = "Zm9vYmFyLXNlY3JldC10b2tlbi0xMjM0NTY3ODkw";

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut items: Vec<String> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        if let Ok(text) = value.to_str() {
            items.extend(text.split(',').map(|i| i.trim().to_string()));
        }
        headers.append(SEC_WEBSOCKET_PROTOCOL, value);
    }
    let offered = Offered::from_headers(&headers);
    assert_eq!(
        offered.binary,
        items.iter().any(|i| i == BINARY_SUBPROTOCOL),
        "{items:?}"
    );
    let want = items
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX));
    assert_eq!(offered.token, want, "{items:?}");

    let secret = Token::new(SECRET);
    if let Some(token) = offered.token {
        assert_eq!(secret.matches(token.as_bytes()), token == SECRET);
    }
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    assert_eq!(secret.matches(first), first == SECRET.as_bytes());
    assert_eq!(Token::new(first).matches(first), !first.is_empty());
    assert!(!Token::new(Vec::new()).matches(first));
    assert_eq!(format!("{:?}", Token::new(first)), "Token(<redacted>)");

    if let Ok(query) = std::str::from_utf8(first) {
        let want = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("after="))
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(viewers::after(Some(query)), want, "{query:?}");
    }
});
