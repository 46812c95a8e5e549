//! The part of the Proxmox VE API porthole uses, written once for the operator
//! (which logs in and renews tickets) and the proxy (which mints consoles).
//!
//! * [`tls`]: how a Proxmox API is trusted (CA, pin, web PKI, or explicitly not).
//! * [`ticket`]: reading a ticket's issue time, and when to renew it.
//! * [`api`]: requests and the errors they end in, each mapped to an
//!   [`UpstreamFailure`](porthole_api::contract::UpstreamFailure).
#![forbid(unsafe_code)]

pub mod api;
pub mod ticket;
pub mod tls;
