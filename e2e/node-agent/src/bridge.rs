//! The pod network's bridge keeps one MAC address.
//!
//! podman's bridge (`podman0`, the pods' gateway) is created without an
//! address of its own, so the kernel gives it the lowest MAC among its ports
//! and changes it whenever a pod's veth comes or goes. On the test bed, each
//! change could cut a running pod off from the gateway for 10 to 40 seconds:
//! the operator's requests to the API server got no answer (it lost its
//! leadership Lease and restarted) and the agent's probes of it failed. Once
//! the address is set explicitly, even to the one it has, the kernel leaves
//! it alone; so the agent sets it after each sandbox start (a no-op once set).
use tokio::sync::OnceCell;

use crate::podman::Podman;

/// podman's default network, the one sandboxes join.
const NETWORK: &str = "podman";
/// `addr_assign_type` of an address set from user space (`NET_ADDR_SET`).
const SET_BY_USER: &str = "3";

/// Whether an interface with this `addr_assign_type` still has an address
/// the kernel may change.
pub fn changeable(assign_type: &str) -> bool {
    assign_type.trim() != SET_BY_USER
}

/// Sets the bridge's MAC address to the one it has, once; failures are
/// logged, never fatal (the pods work, only less steadily).
pub async fn pin_address(podman: &Podman) {
    static BRIDGE: OnceCell<String> = OnceCell::const_new();
    let bridge = match BRIDGE
        .get_or_try_init(|| podman.network_interface(NETWORK))
        .await
    {
        Ok(bridge) => bridge,
        Err(err) => return tracing::warn!(error = %err, "cannot find the pod network's bridge"),
    };
    let sys = std::path::Path::new("/sys/class/net").join(bridge);
    let (Ok(assign_type), Ok(address)) = (
        std::fs::read_to_string(sys.join("addr_assign_type")),
        std::fs::read_to_string(sys.join("address")),
    ) else {
        return;
    };
    if !changeable(&assign_type) {
        return;
    }
    let address = address.trim();
    match crate::loopback::ip(&["link", "set", "dev", bridge, "address", address]).await {
        Ok(_) => tracing::info!(%bridge, %address, "pinned the pod bridge's MAC address"),
        Err(err) => {
            tracing::warn!(%bridge, error = %err, "cannot pin the pod bridge's MAC address")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_user_set_address_stays() {
        assert!(changeable("1\n"));
        assert!(changeable("0"));
        assert!(!changeable("3\n"));
    }
}
