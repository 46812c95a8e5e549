//! Addresses and URLs: websockify's `[ADDR:]PORT` source and `HOST:PORT`
//! target (proxy/src/websockify/target.rs), the Proxmox API URL the proxy
//! dials (`ApiUrl`, proxy/src/pve/mod.rs) and the operator checks
//! (`porthole_pve::api::base_url`), and the operator's Ingress base URL
//! (`BaseUrl`, operator/src/exposure.rs).
//!
//! Asserts: no panic; a source is the port it names on the address it names
//! (all interfaces for a bare port); a target is accepted only as
//! `HOST:PORT` with a non-empty host and a valid port, unchanged; a Proxmox
//! URL is `https` with a host and no credentials or query, its authority is
//! exactly the host (an IPv6 address in brackets) and an optional numeric
//! port, the port it dials is that one (443 if none), it round-trips
//! through its text, and yields the `Host` header and request paths the
//! proxy builds with `expect` (so they cannot panic there); a base URL is
//! http(s) with no credentials, the same authority shape, and round-trips.
#![no_main]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use porthole_operator::exposure::BaseUrl;
use porthole_proxy::pve::ApiUrl;
use porthole_proxy::websockify::target::{parse_source, parse_target};

fn source(text: &str) {
    if let Ok(port) = text.parse::<u16>() {
        let addr = parse_source(text).expect("a bare port is a source");
        assert_eq!(addr, SocketAddr::from(([0, 0, 0, 0], port)));
        return;
    }
    // A host name would be resolved: stay off the network.
    let split = text.rsplit_once(':');
    let host = split.map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'));
    let port = split.and_then(|(_, p)| p.parse::<u16>().ok());
    if let (Some(host), Some(_)) = (host, port)
        && !host.is_empty()
        && host.parse::<IpAddr>().is_err()
    {
        return;
    }
    match parse_source(text) {
        Ok(addr) => {
            let (host, port) = (host.expect("HOST:PORT"), port.expect("a port"));
            assert_eq!(addr.port(), port);
            match host.parse::<IpAddr>() {
                Ok(ip) => assert_eq!(addr.ip(), ip),
                Err(_) => {
                    assert!(host.is_empty());
                    assert_eq!(addr.ip(), IpAddr::from([0, 0, 0, 0]));
                }
            }
        }
        Err(e) => assert!(port.is_none() || host.is_none(), "{text:?}: {e}"),
    }
}

fn target(text: &str) {
    let ok = parse_target(text);
    let (host, port) = text.rsplit_once(':').unwrap_or(("", ""));
    let valid = !host.is_empty() && port.parse::<u16>().is_ok();
    assert_eq!(ok.is_ok(), valid, "{text:?}");
    if let Ok(target) = ok {
        assert_eq!(target, text);
    }
}

/// What follows the host in `host[:port]` (IPv6 hosts in brackets).
fn port_text(authority: &str) -> Option<&str> {
    let after_host = match authority.rfind(']') {
        Some(end) => &authority[end + 1..],
        None => authority.find(':').map_or("", |at| &authority[at..]),
    };
    after_host.strip_prefix(':')
}

/// Whether `authority` is `host` or `host:PORT` with a numeric port.
fn is_host_and_port(authority: &str, host: &str) -> bool {
    match authority.strip_prefix(host) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        None => false,
    }
}

fn api_url(text: &str) {
    let Ok(url) = text.parse::<ApiUrl>() else {
        return;
    };
    assert!(
        text.to_ascii_lowercase().starts_with("https://"),
        "{text:?}"
    );
    assert!(
        !url.host.is_empty() && !url.authority.contains('@'),
        "{url:?}"
    );
    assert!(!url.host.starts_with('[') && !url.host.ends_with(']'));
    assert!(
        !url.prefix.ends_with('/') && !url.prefix.contains('?'),
        "{url:?}"
    );
    match port_text(&url.authority) {
        Some(text) => assert_eq!(text.parse::<u16>(), Ok(url.port), "{url:?}"),
        None => assert_eq!(url.port, 443, "{url:?}"),
    }
    // The authority is the host (an IPv6 address in brackets) and the port.
    let spelled = if url.host.contains(':') {
        assert!(url.host.parse::<Ipv6Addr>().is_ok(), "{url:?}");
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    assert!(
        is_host_and_port(&url.authority, &spelled),
        "{text:?}: {url:?}"
    );
    // What `Client` builds with `expect("a valid request")`.
    HeaderValue::from_str(&url.authority).expect("the authority is a Host header");
    let path = format!(
        "{}/api2/json/nodes/n/qemu/100/vncwebsocket?port=5900&vncticket=T",
        url.prefix
    );
    http::Request::get(path.as_str())
        .body(())
        .unwrap_or_else(|e| panic!("{url:?}: the request path {path:?} is invalid: {e}"));
    let shown = url.to_string();
    assert_eq!(
        shown.parse::<ApiUrl>().as_ref(),
        Ok(&url),
        "{text:?} -> {shown:?}"
    );
}

fn pve_base_url(text: &str) {
    let Ok(url) = porthole_pve::api::base_url(text) else {
        return;
    };
    assert_eq!(url.scheme(), "https");
    assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{url}");
    assert!(url.username().is_empty() && url.password().is_none());
    assert!(url.path() == "/" && url.query().is_none() && url.fragment().is_none());
    let again = porthole_pve::api::base_url(url.as_str()).expect("a checked URL passes again");
    assert_eq!(again, url);
}

fn base_url(text: &str) {
    let Ok(base) = text.parse::<BaseUrl>() else {
        return;
    };
    assert!(base.scheme == "http" || base.scheme == "https", "{base:?}");
    assert!(
        !base.host.is_empty() && !base.authority.contains('@'),
        "{base:?}"
    );
    assert_eq!(base.authority, base.authority.to_ascii_lowercase());
    assert!(base.authority.starts_with(&base.host), "{base:?}");
    assert!(
        !base.path.ends_with('/') && !base.path.contains(['?', '#']),
        "{base:?}"
    );
    // A port, if named, is a number: viewers get it in their URL; and the
    // authority is just the host (an IPv6 address in brackets) and the port.
    if let Some(port) = port_text(&base.authority) {
        assert!(
            port.parse::<u16>().is_ok(),
            "{text:?}: port {port:?} in {base:?}"
        );
    }
    if let Some(ip) = base.host.strip_prefix('[') {
        let ip = ip.strip_suffix(']').unwrap_or_else(|| panic!("{base:?}"));
        assert!(ip.parse::<Ipv6Addr>().is_ok(), "{text:?}: {base:?}");
    } else {
        assert!(!base.host.contains(['[', ']', ':']), "{text:?}: {base:?}");
    }
    assert!(
        is_host_and_port(&base.authority, &base.host),
        "{text:?}: {base:?}"
    );
    // The console URL built from it is a URL, and the base reads back.
    let console = format!("{}://{}{}/ns/name/", base.scheme, base.authority, base.path);
    console
        .parse::<http::Uri>()
        .unwrap_or_else(|e| panic!("{text:?}: console URL {console:?} is invalid: {e}"));
    let shown = format!("{}://{}{}", base.scheme, base.authority, base.path);
    assert_eq!(
        shown.parse::<BaseUrl>().as_ref(),
        Ok(&base),
        "{text:?} -> {shown:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    source(text);
    target(text);
    api_url(text);
    pve_base_url(text);
    base_url(text);
});
