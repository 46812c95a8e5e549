//! Choosing the backend of a Service port from its EndpointSlices (pure).
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready TCP backends for the Service port named `port_name` ("" when the
/// port is unnamed), sorted so round-robin order is stable.
pub fn ready_backends<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Vec<SocketAddr> {
    let mut backends = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // An unknown readiness means ready (EndpointConditions API doc).
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            // Consumers use only the first address of an endpoint.
            let address = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (true, Some(address)) = (ready, address) {
                backends.push(SocketAddr::new(address, port));
            }
        }
    }
    backends.sort();
    backends.dedup();
    backends
}

/// Hands out backends in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick(&self, backends: &[SocketAddr]) -> Option<SocketAddr> {
        if backends.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(backends[turn % backends.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn picks_ready_endpoints_of_the_named_port_in_turn() {
        let slices = [
            slice(
                r#"
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: metrics, port: 9090}]
endpoints:
- addresses: [10.88.0.5]
  conditions: {ready: true}
- addresses: [10.88.0.6]
  conditions: {ready: false}
- addresses: [10.88.0.4]
"#,
            ),
            slice(
                "metadata: {name: web-v6}\naddressType: IPv6\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: ['fd00::1']}]",
            ),
        ];
        let backends = ready_backends(&slices, "http");
        let expected: Vec<SocketAddr> = vec![
            "10.88.0.4:8080".parse().unwrap(),
            "10.88.0.5:8080".parse().unwrap(),
        ];
        assert_eq!(backends, expected);
        assert_eq!(ready_backends(&slices, "metrics")[0].port(), 9090);
        assert!(ready_backends(&slices, "").is_empty());

        let turns = RoundRobin::default();
        let picked: Vec<SocketAddr> = (0..3).map(|_| turns.pick(&backends).unwrap()).collect();
        assert_eq!(picked, [expected[0], expected[1], expected[0]]);
        assert_eq!(turns.pick(&[]), None);
    }
}
