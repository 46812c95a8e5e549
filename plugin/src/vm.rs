//! The VM argument: `NODE/ID` for a Proxmox VE Hypervisor, or a bare `PORT` for
//! a plain VNC one.

use std::fmt;
use std::str::FromStr;

use porthole_api::v1alpha1::{VmKind, VmRef};

/// The lowest Proxmox VM id (`vmid`).
const MIN_VMID: u32 = 100;
/// The highest Proxmox VM id.
const MAX_VMID: u32 = 999_999_999;
/// A Proxmox node name is a DNS label.
const MAX_NODE_LEN: usize = 63;

/// Which VM the user named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmArg {
    /// A VNC port on a `vnc` Hypervisor's host.
    Port(u16),
    /// A Proxmox guest: the node that runs it and its VM id.
    Proxmox { node: String, id: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmArgError {
    #[error(
        "the VM is empty: write NODE/ID (Proxmox, such as pve1/101) or PORT (vnc, such as 5910)"
    )]
    Empty,
    #[error(
        "{0:?} is not a VM: write NODE/ID (Proxmox, such as pve1/101) or PORT (vnc, such as 5910)"
    )]
    Unrecognized(String),
    #[error("port {0:?} is not a TCP port: it must be a number from 1 to 65535")]
    BadPort(String),
    #[error(
        "node {0:?} is not a Proxmox node name: letters, digits and '-', at most 63 characters, not starting or ending with '-'"
    )]
    BadNode(String),
    #[error("VM id {0:?} is not a Proxmox VM id: it must be a number from 100 to 999999999")]
    BadId(String),
}

impl FromStr for VmArg {
    type Err = VmArgError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VmArgError::Empty);
        }
        match text.split_once('/') {
            Some((node, id)) => {
                if !is_node_name(node) {
                    return Err(VmArgError::BadNode(node.to_string()));
                }
                let id = Some(id)
                    .filter(|id| is_digits(id))
                    .and_then(|id| id.parse::<u32>().ok())
                    .filter(|id| (MIN_VMID..=MAX_VMID).contains(id))
                    .ok_or_else(|| VmArgError::BadId(id.to_string()))?;
                Ok(VmArg::Proxmox {
                    node: node.to_string(),
                    id,
                })
            }
            None if is_digits(text) => text
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .map(VmArg::Port)
                .ok_or_else(|| VmArgError::BadPort(text.to_string())),
            None => Err(VmArgError::Unrecognized(text.to_string())),
        }
    }
}

impl fmt::Display for VmArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmArg::Port(port) => write!(f, "port {port}"),
            VmArg::Proxmox { node, id } => write!(f, "{node}/{id}"),
        }
    }
}

impl VmArg {
    /// The `spec.vm` of a session for this VM. `kind` applies to Proxmox guests
    /// only (the caller has checked it is not given with a port).
    pub fn to_vm_ref(&self, kind: Option<VmKind>) -> VmRef {
        match self {
            VmArg::Port(port) => VmRef {
                port: Some(*port),
                ..VmRef::default()
            },
            VmArg::Proxmox { node, id } => VmRef {
                node: Some(node.clone()),
                id: Some(*id),
                kind,
                ..VmRef::default()
            },
        }
    }

    /// A short DNS-safe rendering for generated session names: `5910`, `pve1-101`.
    pub fn name_part(&self) -> String {
        match self {
            VmArg::Port(port) => port.to_string(),
            VmArg::Proxmox { node, id } => format!("{}-{id}", node.to_ascii_lowercase()),
        }
    }

    pub fn is_port(&self) -> bool {
        matches!(self, VmArg::Port(_))
    }
}

/// `--kind`'s values, as Proxmox spells them.
pub fn parse_kind(text: &str) -> Result<VmKind, String> {
    match text {
        "qemu" => Ok(VmKind::Qemu),
        "lxc" => Ok(VmKind::Lxc),
        other => Err(format!(
            "{other:?} is not a Proxmox guest kind: use qemu (a virtual machine) or lxc (a container)"
        )),
    }
}

/// Only ASCII digits, at least one: `u16`/`u32` parsing alone would accept `+5`.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A Proxmox node name, as the CRD's `vm.node` pattern accepts it.
fn is_node_name(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= MAX_NODE_LEN
        && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !node.starts_with('-')
        && !node.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_a_vnc_port() {
        assert_eq!("5910".parse(), Ok(VmArg::Port(5910)));
        assert_eq!(" 5910 ".parse(), Ok(VmArg::Port(5910)));
        assert_eq!("65535".parse(), Ok(VmArg::Port(65535)));
    }

    #[test]
    fn node_slash_id_is_a_proxmox_guest() {
        assert_eq!(
            "pve1/101".parse(),
            Ok(VmArg::Proxmox {
                node: "pve1".into(),
                id: 101
            })
        );
        assert_eq!(
            "PVE-West-2/999999999".parse(),
            Ok(VmArg::Proxmox {
                node: "PVE-West-2".into(),
                id: 999_999_999
            })
        );
    }

    #[test]
    fn bad_ports_are_rejected_with_the_reason() {
        for bad in ["0", "65536", "99999999999999999999"] {
            assert_eq!(
                bad.parse::<VmArg>(),
                Err(VmArgError::BadPort(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_proxmox_references_are_rejected_with_the_reason() {
        let cases = [
            ("pve1/99", VmArgError::BadId("99".into())),
            ("pve1/1000000000", VmArgError::BadId("1000000000".into())),
            ("pve1/", VmArgError::BadId("".into())),
            ("pve1/10a", VmArgError::BadId("10a".into())),
            ("pve1/+101", VmArgError::BadId("+101".into())),
            ("pve1/101/2", VmArgError::BadId("101/2".into())),
            ("/101", VmArgError::BadNode("".into())),
            ("-pve/101", VmArgError::BadNode("-pve".into())),
            ("pve.lan/101", VmArgError::BadNode("pve.lan".into())),
            (
                &format!("{}/101", "n".repeat(64)),
                VmArgError::BadNode("n".repeat(64)),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<VmArg>(), Err(expected), "{text}");
        }
    }

    #[test]
    fn other_text_is_not_a_vm() {
        assert_eq!("".parse::<VmArg>(), Err(VmArgError::Empty));
        for bad in ["web-01", "-5910", "5910a", "10.0.0.1:5910"] {
            assert_eq!(
                bad.parse::<VmArg>(),
                Err(VmArgError::Unrecognized(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let message = "web-01".parse::<VmArg>().unwrap_err().to_string();
        assert!(
            message.contains("NODE/ID") && message.contains("PORT"),
            "{message}"
        );
    }

    #[test]
    fn vm_refs_set_the_fields_of_their_hypervisor_kind() {
        assert_eq!(
            VmArg::Port(5910).to_vm_ref(None),
            VmRef {
                port: Some(5910),
                ..VmRef::default()
            }
        );
        let guest = VmArg::Proxmox {
            node: "pve1".into(),
            id: 101,
        };
        assert_eq!(
            guest.to_vm_ref(Some(VmKind::Lxc)),
            VmRef {
                node: Some("pve1".into()),
                id: Some(101),
                kind: Some(VmKind::Lxc),
                port: None,
            }
        );
        assert_eq!(guest.to_vm_ref(None).kind, None);
    }

    #[test]
    fn kinds_are_spelled_as_proxmox_does() {
        assert_eq!(parse_kind("qemu"), Ok(VmKind::Qemu));
        assert_eq!(parse_kind("lxc"), Ok(VmKind::Lxc));
        assert!(parse_kind("kvm").unwrap_err().contains("qemu"));
    }
}
