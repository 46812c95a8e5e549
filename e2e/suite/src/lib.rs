//! The e2e harness: the test cluster, real QEMU VMs, and an RFB client that
//! speaks to a console through its WebSocket, as noVNC does.
#![forbid(unsafe_code)]

pub mod browser;
pub mod cluster;
pub mod pve;
pub mod rfb;
pub mod vm;

/// The node's address on the test host, where the test VMs serve VNC.
pub const HYPERVISOR_HOST: &str = "10.200.0.1";
