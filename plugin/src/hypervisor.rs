//! A look at the Hypervisor before creating a session, to say early and clearly
//! when the VM argument does not fit it. The operator stays the authority: this
//! only catches the mistakes a person makes on the command line.

use kube::Api;
use porthole_api::v1alpha1::{Hypervisor, HypervisorSpec};

use crate::vm::VmArg;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HypervisorError {
    #[error("hypervisor {0:?} does not exist (list them with `kubectl get hypervisors`)")]
    NotFound(String),
    #[error(
        "hypervisor {hypervisor:?} is a Proxmox VE cluster: name the VM as NODE/ID, such as pve1/{example}, not a port"
    )]
    NeedsNodeAndId { hypervisor: String, example: u16 },
    #[error(
        "hypervisor {hypervisor:?} serves plain VNC: name the VM by its VNC port, such as {example}, not {vm}"
    )]
    NeedsPort {
        hypervisor: String,
        vm: String,
        example: u16,
    },
}

/// Checks the VM argument against Hypervisor `name`. A Hypervisor the user may
/// not read (or a failing read) is no reason to stop: the operator will judge.
pub async fn precheck(
    api: &Api<Hypervisor>,
    name: &str,
    vm: &VmArg,
) -> Result<(), HypervisorError> {
    match api.get(name).await {
        Ok(hypervisor) => fits(name, &hypervisor.spec, vm),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(HypervisorError::NotFound(name.to_string()))
        }
        Err(_) => Ok(()),
    }
}

/// Whether the kind of VM reference suits the kind of Hypervisor.
pub fn fits(name: &str, spec: &HypervisorSpec, vm: &VmArg) -> Result<(), HypervisorError> {
    match vm {
        VmArg::Port(port) if spec.proxmox.is_some() => Err(HypervisorError::NeedsNodeAndId {
            hypervisor: name.to_string(),
            example: (*port).max(100),
        }),
        VmArg::Proxmox { .. } if spec.vnc.is_some() => Err(HypervisorError::NeedsPort {
            hypervisor: name.to_string(),
            vm: vm.to_string(),
            example: spec.vnc.as_ref().map_or(5900, |vnc| vnc.ports.first),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> HypervisorSpec {
        serde_json::from_value(json).unwrap()
    }

    fn vnc() -> HypervisorSpec {
        spec(
            serde_json::json!({"vnc": {"host": "10.0.0.1", "ports": {"first": 5910, "last": 5930}}}),
        )
    }

    fn proxmox() -> HypervisorSpec {
        spec(serde_json::json!({"proxmox": {
            "url": "https://pve.example.com:8006",
            "credentialsSecretRef": {"namespace": "porthole-system", "name": "pve"}
        }}))
    }

    fn guest() -> VmArg {
        VmArg::Proxmox {
            node: "pve1".into(),
            id: 101,
        }
    }

    #[test]
    fn matching_kinds_fit() {
        assert_eq!(fits("h", &vnc(), &VmArg::Port(5910)), Ok(()));
        assert_eq!(fits("h", &proxmox(), &guest()), Ok(()));
    }

    #[test]
    fn a_port_on_proxmox_asks_for_node_and_id() {
        let error = fits("pve", &proxmox(), &VmArg::Port(101)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "hypervisor \"pve\" is a Proxmox VE cluster: name the VM as NODE/ID, such as pve1/101, not a port"
        );
    }

    #[test]
    fn node_and_id_on_vnc_asks_for_a_port() {
        let error = fits("libvirt", &vnc(), &guest()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "hypervisor \"libvirt\" serves plain VNC: name the VM by its VNC port, such as 5910, not pve1/101"
        );
    }
}
