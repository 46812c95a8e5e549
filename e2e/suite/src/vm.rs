//! Real QEMU VMs standing in for a hypervisor's guests: no disk, the firmware's
//! screen on VNC, and QMP to watch VNC clients arrive (the target's own view of
//! who connected).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::cluster::eventually;

/// A running VM; killed when dropped.
pub struct Vm {
    pub host: String,
    pub port: u16,
    /// Held so the VM lives as long as this value (killed on drop).
    _child: Child,
    qmp_path: PathBuf,
    _dir: TempDir,
}

/// Events QEMU reported on QMP, in order (`VNC_CONNECTED`, ...).
#[derive(Clone, Default)]
pub struct QmpEvents(Arc<Mutex<Vec<String>>>);

impl QmpEvents {
    pub fn count(&self, event: &str) -> usize {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|e| *e == event)
            .count()
    }
}

impl Vm {
    /// Starts a VM whose VNC console listens on `host:port` (port 5900-5999).
    pub async fn start(host: &str, port: u16) -> Result<Vm> {
        let display = port.checked_sub(5900).context("VNC ports start at 5900")?;
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            bail!(
                "{host}:{port} is already serving: another VM (or a previous test's) holds this port"
            );
        }
        let dir = TempDir::new()?;
        let qmp_path = dir.0.join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-vga",
                "std",
                "-m",
                "64",
            ])
            // KVM when the machine offers it, else software emulation.
            .args(["-machine", "accel=kvm:tcg"])
            .arg("-vnc")
            .arg(format!("{host}:{display}"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting qemu-system-x86_64 (run `make deps`)")?;
        let vm = Vm {
            host: host.to_string(),
            port,
            _child: child,
            qmp_path,
            _dir: dir,
        };
        let addr = format!("{host}:{port}");
        eventually(Duration::from_secs(20), "the VM's VNC server", || {
            let addr = addr.clone();
            async move { Ok(tokio::net::TcpStream::connect(&addr).await.ok().map(drop)) }
        })
        .await?;
        Ok(vm)
    }

    /// Connects to QMP and records every event from now on.
    pub async fn watch_events(&self) -> Result<QmpEvents> {
        let stream = UnixStream::connect(&self.qmp_path).await?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = lines.next_line().await?.context("QMP closed")?;
        if !greeting.contains("QMP") {
            bail!("unexpected QMP greeting {greeting}");
        }
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await?;
        let events = QmpEvents::default();
        let sink = events.clone();
        let ready = lines.next_line().await?.context("QMP closed")?;
        if !ready.contains("return") {
            bail!("qmp_capabilities failed: {ready}");
        }
        tokio::spawn(async move {
            let _write = write; // keep the connection open
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| Some(v.get("event")?.as_str()?.to_string()));
                if let Some(event) = event {
                    sink.0.lock().expect("not poisoned").push(event);
                }
            }
        });
        Ok(events)
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("porthole-vm-{}", crate::cluster::unique_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fault injection: the VM going away under its viewers.
impl Vm {
    /// Kills QEMU (SIGKILL, as a host crash or `qm stop` on a hung guest)
    /// and waits until it is gone and its VNC port refuses connections.
    pub async fn kill(&mut self) -> Result<()> {
        self._child.kill().await.context("killing QEMU")?;
        let addr = format!("{}:{}", self.host, self.port);
        eventually(
            Duration::from_secs(10),
            "the VM's VNC port to close",
            || {
                let addr = addr.clone();
                async move {
                    Ok(tokio::net::TcpStream::connect(&addr)
                        .await
                        .is_err()
                        .then_some(()))
                }
            },
        )
        .await
    }
}
