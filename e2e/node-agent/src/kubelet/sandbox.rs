//! Pod sandboxes: one container per pod that owns the pod's network, IPC and
//! UTS namespaces (kubelet's "pause" container). The pod's containers join
//! it, so every container sees the pod IP before it starts (for
//! `status.podIP` in env), and any of them can restart without taking the
//! network away from the others.
//!
//! There is no pause image on the test hosts and no registry to pull one from,
//! so the sandbox runs the host's `sleep infinity` from a root directory holding
//! only the host's `/usr` (and `/bin`, `/lib`... as links or read-only mounts).
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::podman::{BindMount, ContainerConfig, Namespaces, RootFs};

/// Host directories the sandbox needs to run `sleep`.
const HOST_DIRECTORIES: [&str; 5] = ["usr", "bin", "sbin", "lib", "lib64"];
const COMMAND: [&str; 2] = ["/bin/sleep", "infinity"];

/// The root directory the sandboxes run from.
#[derive(Debug, Clone)]
pub struct SandboxRoot {
    rootfs: PathBuf,
    mounts: Vec<BindMount>,
}

impl SandboxRoot {
    /// Creates `<state-dir>/sandbox-rootfs`, mirroring the host's layout: a
    /// host directory that is a symlink (merged /usr) becomes the same symlink,
    /// a real one is bind-mounted read-only.
    pub fn prepare(state_dir: &Path) -> io::Result<Self> {
        let rootfs = state_dir.join("sandbox-rootfs");
        fs::create_dir_all(&rootfs)?;
        let mut mounts = Vec::new();
        for name in HOST_DIRECTORIES {
            let host = Path::new("/").join(name);
            let inside = rootfs.join(name);
            match fs::symlink_metadata(&host) {
                Ok(meta) if meta.is_symlink() => {
                    let target = fs::read_link(&host)?;
                    if fs::read_link(&inside).ok().as_ref() != Some(&target) {
                        let _ = fs::remove_file(&inside);
                        symlink(&target, &inside)?;
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    fs::create_dir_all(&inside)?;
                    mounts.push(BindMount {
                        source: host,
                        destination: format!("/{name}"),
                        read_only: true,
                    });
                }
                _ => {}
            }
        }
        Ok(Self { rootfs, mounts })
    }

    /// The sandbox container for a pod.
    pub fn config(
        &self,
        name: String,
        hostname: String,
        labels: BTreeMap<String, String>,
    ) -> ContainerConfig {
        ContainerConfig {
            name,
            source: RootFs::Directory(self.rootfs.clone()),
            labels,
            args: COMMAND.map(String::from).to_vec(),
            namespaces: Namespaces::OwnWithHostname(hostname),
            mounts: self.mounts.clone(),
            // `sleep` as PID 1 ignores SIGTERM; there is nothing to shut down gracefully.
            stop_signal: Some("SIGKILL".into()),
            ..Default::default()
        }
    }
}
