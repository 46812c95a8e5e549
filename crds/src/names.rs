//! Kubernetes object names, checked the way the API server checks them.

/// A DNS-1123 subdomain, as a pattern accepting exactly what
/// [`is_dns_subdomain`] accepts (up to its length limit, [`DNS_SUBDOMAIN_MAX`]).
/// A character class rather than `\.`, so the pattern needs no escaping in CEL.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The longest DNS-1123 subdomain.
pub const DNS_SUBDOMAIN_MAX: usize = 253;

/// Whether `name` is a DNS-1123 subdomain: the names of PersistentVolumeClaims,
/// Secrets and most other objects. Lowercase letters, digits, `-` and `.`;
/// every dot-separated part starts and ends with a letter or digit.
pub fn is_dns_subdomain(name: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= DNS_SUBDOMAIN_MAX
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(&first), Some(&last)) => {
                    alphanumeric(first)
                        && alphanumeric(last)
                        && bytes.iter().all(|&b| alphanumeric(b) || b == b'-')
                }
                _ => false,
            }
        })
}

/// The OpenAPI schema of a PersistentVolumeClaim name: a CEL rule with a
/// message a person understands, rather than the pattern the API server
/// would quote.
pub fn claim_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": DNS_SUBDOMAIN_MAX,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"),
            "message": "must be the name of a PersistentVolumeClaim: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as console-recordings"
        }]
    })
}

/// Whether a URL's authority is exactly `HOST` or `HOST:PORT` with a numeric
/// port, a bracketed host being an IPv6 address. The `http` crate is lenient:
/// it ignores text between `]` and the port colon and takes any text after the
/// colon as the port (found by fuzzing), so the operator's base URL and the
/// proxy's Proxmox API URL both check with this.
pub fn is_host_and_port(authority: &http::uri::Authority) -> bool {
    let host = authority.host();
    let port_ok = match (authority.as_str().strip_prefix(host), authority.port()) {
        (Some(rest), Some(port)) => rest.strip_prefix(':') == Some(port.as_str()),
        (Some(rest), None) => rest.is_empty(),
        (None, _) => false,
    };
    let brackets_ok = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.contains(['[', ']']),
    };
    port_ok && brackets_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_object_names() {
        for good in [
            "a",
            "recordings",
            "console-recordings",
            "team-a.rec-1",
            "0",
            "a.b.c",
        ] {
            assert!(is_dns_subdomain(good), "{good:?} should be accepted");
        }
        assert!(is_dns_subdomain(&"a".repeat(DNS_SUBDOMAIN_MAX)));
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        for bad in [
            "",
            "Recordings",
            "console_recordings",
            "-recordings",
            "recordings-",
            "a..b",
            ".a",
            "a.",
            "a/b",
            "..",
            "a b",
            "récordings",
        ] {
            assert!(!is_dns_subdomain(bad), "{bad:?} should be rejected");
        }
        assert!(!is_dns_subdomain(&"a".repeat(DNS_SUBDOMAIN_MAX + 1)));
    }
}
