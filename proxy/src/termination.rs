//! The end reason handed back to the operator through Kubernetes' termination
//! message.

use std::path::Path;

use porthole_api::contract::EndReason;

/// Writes `reason` where the kubelet reads the termination message. Failing to
/// is logged, not fatal: outside Kubernetes the path may not be writable.
pub fn write(path: &Path, reason: &EndReason) {
    match std::fs::write(path, reason.to_string()) {
        Ok(()) => tracing::debug!(path = %path.display(), "wrote termination message"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write termination message")
        }
    }
}
