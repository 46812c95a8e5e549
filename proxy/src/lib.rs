//! porthole's console data plane.
//!
//! * Pod mode ([`session`]): one console session per process, configured by the
//!   operator through [`porthole_api::contract`]. The browser proves itself with
//!   a token; the proxy does the VNC server's security handshake itself, so the
//!   VNC password never leaves the pod.
//! * Standalone mode ([`websockify`]): a drop-in for websockify.
#![forbid(unsafe_code)]

pub mod admission;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod http;
pub mod lifetime;
pub mod liveness;
pub mod metrics;
pub mod page;
pub mod pve;
pub mod recording;
pub mod relay;
pub mod replay;
pub mod rfb;
pub mod server;
pub mod session;
pub mod source;
pub mod termination;
pub mod tls;
pub mod viewers;
pub mod websockify;
