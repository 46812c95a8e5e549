//! porthole's API, written once for both sides.
//!
//! * [`v1alpha1`]: the `ConsoleSession` and `Hypervisor` custom resources.
//! * [`contract`]: what the operator hands a proxy pod (Secret keys, environment
//!   names, paths, the browser's token subprotocol) and what the proxy hands back
//!   (the end reason in its termination message).
//!
//! The operator never depends on the proxy nor the proxy on the operator: both
//! depend on this crate.
#![forbid(unsafe_code)]

pub mod contract;
pub mod duration;
pub mod names;
pub mod v1alpha1;

/// The API group of every porthole resource.
pub const GROUP: &str = "porthole.dev";
/// The API version served.
pub const VERSION: &str = "v1alpha1";
