//! Container logs kept after their container is removed: each attempt's log
//! is saved next to its termination-message file and appended, under a
//! header line, to `<log-dir>/<namespace>_<pod>_<container>.log`.
use std::io::Write;
use std::path::Path;

use crate::podman::Podman;

/// Saves container `id`'s log to `attempt_log`, appends it to `archive`, and
/// returns it. Failures are logged: a lost log must not stop the pod.
pub async fn save(
    podman: &Podman,
    id: &str,
    attempt_log: &Path,
    archive: &Path,
    header: &str,
) -> Vec<u8> {
    if let Err(err) = podman.save_logs(id, attempt_log).await {
        tracing::warn!(container = id, error = %err, "cannot save container log");
    }
    let log = std::fs::read(attempt_log).unwrap_or_default();
    if let Err(err) = append(archive, header, &log) {
        tracing::warn!(archive = %archive.display(), error = %err, "cannot archive container log");
    }
    log
}

fn append(archive: &Path, header: &str, log: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(archive)?;
    writeln!(file, "===== {header} =====")?;
    file.write_all(log)?;
    if !log.ends_with(b"\n") && !log.is_empty() {
        file.write_all(b"\n")?;
    }
    Ok(())
}
