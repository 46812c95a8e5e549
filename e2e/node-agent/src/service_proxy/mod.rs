//! The kube-proxy of the test bed: how the host and the pods reach ClusterIPs.
//!
//! There is no iptables/IPVS dataplane. Instead, the whole service range is
//! routed to the host's `lo` as local (`ip route add local`, by cluster-up.sh),
//! and a userspace listener on `ClusterIP:port` accepts each TCP port; packets
//! from containers to a local address are delivered to the host, so the same
//! listener serves pods and the host. `NodePort` and `LoadBalancer` Services are
//! also served on `<node-ip>:<nodePort>`. Every accepted connection is relayed
//! to a ready endpoint of the Service's EndpointSlices (matched by port name,
//! chosen round-robin); with no ready endpoint it is closed at once. Listeners
//! of Services that go away are removed.
pub mod endpoints;
pub mod relay;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::loopback;
use endpoints::SERVICE_NAME_LABEL;

/// The Service port a listener serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub namespace: String,
    pub service: String,
    /// "" for an unnamed port.
    pub port_name: String,
}

/// Every listener the Services call for: ClusterIP ports, and NodePorts on `node_ip`.
pub fn desired_listeners<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    node_ip: Ipv4Addr,
) -> BTreeMap<SocketAddr, ServicePort> {
    let mut listeners = BTreeMap::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless ("None"), ExternalName, or IPv6
        };
        let exposes_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let target = ServicePort {
                namespace: service.metadata.namespace.clone().unwrap_or_default(),
                service: service.metadata.name.clone().unwrap_or_default(),
                port_name: port.name.clone().unwrap_or_default(),
            };
            if let Ok(number) = u16::try_from(port.port) {
                listeners.insert(SocketAddr::new(cluster_ip.into(), number), target.clone());
            }
            if let Some(node_port) = port.node_port.filter(|_| exposes_node_ports)
                && let Ok(number) = u16::try_from(node_port)
            {
                listeners.insert(SocketAddr::new(node_ip.into(), number), target);
            }
        }
    }
    listeners
}

/// Looks up a Service port's ready endpoints at connection time.
struct SliceBackends {
    slices: Store<EndpointSlice>,
    port: ServicePort,
}

impl relay::Backends for SliceBackends {
    fn ready(&self) -> Vec<SocketAddr> {
        let slices = self.slices.state();
        let own = slices.iter().filter(|slice| {
            slice.metadata.namespace.as_deref() == Some(&self.port.namespace)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    == Some(&self.port.service)
        });
        endpoints::ready_backends(own.map(Arc::as_ref), &self.port.port_name)
    }
}

struct Listener {
    port: ServicePort,
    stop: CancellationToken,
}

pub struct ServiceProxy {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    node_ip: Ipv4Addr,
    listeners: BTreeMap<SocketAddr, Listener>,
    addresses: BTreeSet<Ipv4Addr>,
}

impl ServiceProxy {
    pub fn new(services: Store<Service>, slices: Store<EndpointSlice>, node_ip: Ipv4Addr) -> Self {
        Self {
            services,
            slices,
            node_ip,
            listeners: BTreeMap::new(),
            addresses: BTreeSet::new(),
        }
    }

    /// Keeps listeners in line with the Services until cancelled; then removes
    /// them and their addresses.
    pub async fn run(mut self, mut changed: watch::Receiver<()>, cancel: CancellationToken) {
        match loopback::labelled_addresses().await {
            // Left by an earlier run; reconcile removes those no longer wanted.
            Ok(found) => self.addresses.extend(found),
            Err(err) => tracing::warn!(error = %err, "cannot list ClusterIPs on lo"),
        }
        loop {
            self.reconcile().await;
            tokio::select! {
                () = cancel.cancelled() => break,
                result = changed.changed() => if result.is_err() { break },
            }
        }
        for listener in self.listeners.values() {
            listener.stop.cancel();
        }
        for address in std::mem::take(&mut self.addresses) {
            if let Err(err) = loopback::remove(address).await {
                tracing::warn!(%address, error = %err, "cannot remove ClusterIP from lo");
            }
        }
    }

    async fn reconcile(&mut self) {
        let services = self.services.state();
        let desired = desired_listeners(services.iter().map(Arc::as_ref), self.node_ip);
        self.listeners.retain(|address, listener| {
            let keep = desired.get(address) == Some(&listener.port);
            if !keep {
                tracing::info!(%address, service = %listener.port.service, "stopping service listener");
                listener.stop.cancel();
            }
            keep
        });
        for (address, port) in desired {
            if !self.listeners.contains_key(&address) {
                self.start_listener(address, port).await;
            }
        }
        // ClusterIPs need no address of their own: cluster-up.sh routes the
        // whole service range to `lo` (`ip route add local`), so listeners bind
        // to any of them and no address change ever reaches a browser under
        // test (Chromium aborts page loads on one: ERR_NETWORK_CHANGED).
        // Addresses an older agent added are removed.
        let leftovers: Vec<Ipv4Addr> = self.addresses.iter().copied().collect();
        for address in leftovers {
            match loopback::remove(address).await {
                Ok(()) => {
                    self.addresses.remove(&address);
                }
                Err(err) => {
                    tracing::warn!(%address, error = %err, "cannot remove ClusterIP from lo")
                }
            }
        }
    }

    async fn start_listener(&mut self, address: SocketAddr, port: ServicePort) {
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(err) => {
                // Retried on the next Service or EndpointSlice change.
                tracing::error!(%address, service = %port.service, error = %err, "cannot listen");
                return;
            }
        };
        tracing::info!(%address, namespace = %port.namespace, service = %port.service, port = %port.port_name, "serving service port");
        let stop = CancellationToken::new();
        let backends = Arc::new(SliceBackends {
            slices: self.slices.clone(),
            port: port.clone(),
        });
        tokio::spawn(relay::serve(listener, backends, stop.clone()));
        self.listeners.insert(address, Listener { port, stop });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_for_cluster_ips_and_node_ports() {
        let services: Vec<Service> = serde_yaml::from_str(
            r#"
- metadata: {name: kubernetes, namespace: default}
  spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443}]}
- metadata: {name: console, namespace: porthole}
  spec:
    type: NodePort
    clusterIP: 10.96.0.20
    ports: [{name: ws, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP}]
- metadata: {name: headless, namespace: porthole}
  spec: {clusterIP: None, ports: [{port: 80}]}
- metadata: {name: external, namespace: porthole}
  spec: {type: ExternalName, externalName: example.com}
"#,
        )
        .unwrap();
        let node_ip = Ipv4Addr::new(10, 200, 0, 1);
        let listeners = desired_listeners(&services, node_ip);
        let addresses: Vec<String> = listeners.keys().map(ToString::to_string).collect();
        assert_eq!(
            addresses,
            ["10.96.0.1:443", "10.96.0.20:80", "10.200.0.1:30080"]
        );
        let node_port = &listeners[&"10.200.0.1:30080".parse().unwrap()];
        assert_eq!(
            node_port,
            &ServicePort {
                namespace: "porthole".into(),
                service: "console".into(),
                port_name: "ws".into(),
            }
        );
    }
}
