//! The real QEMU VMs behind the simulator: one `qemu-system-x86_64` per VMID, with
//! no disk (the firmware's screen is the console), its VNC server on a unix socket
//! with `password=on` (as PVE runs it) and QMP on another unix socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::config::{Kind, VmConfig};

/// Errors starting, stopping or talking to a VM.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// PVE's own text (`PVE::QemuServer::Monitor::qmp_cmd`).
    #[error("VM {0} not running")]
    NotRunning(u32),
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("VM {vmid} did not come up within {secs} s")]
    StartTimeout { vmid: u32, secs: u64 },
    #[error("socket path {0} is longer than a unix socket address allows")]
    PathTooLong(String),
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = QemuError> = std::result::Result<T, E>;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
const UNIX_PATH_MAX: usize = 107;

/// One VM: its configuration, its QEMU process when running, and the lock that
/// serialises QMP use (QEMU serves one QMP client at a time).
pub struct Vm {
    pub vmid: u32,
    pub kind: Kind,
    pub name: Option<String>,
    binary: String,
    vnc_path: PathBuf,
    qmp_path: PathBuf,
    screen_path: PathBuf,
    process: Mutex<Option<Child>>,
}

impl Vm {
    pub fn new(config: &VmConfig, binary: &str, state_dir: &Path) -> Result<Vm> {
        let vnc_path = state_dir.join(format!("{}.vnc", config.vmid));
        let qmp_path = state_dir.join(format!("{}.qmp", config.vmid));
        for path in [&vnc_path, &qmp_path] {
            if path.as_os_str().len() > UNIX_PATH_MAX {
                return Err(QemuError::PathTooLong(path.display().to_string()));
            }
        }
        Ok(Vm {
            vmid: config.vmid,
            kind: config.kind,
            name: config.name.clone(),
            binary: binary.to_string(),
            screen_path: state_dir.join(format!("{}.screen", config.vmid)),
            vnc_path,
            qmp_path,
            process: Mutex::new(None),
        })
    }

    /// The VNC server's unix socket.
    pub fn vnc_path(&self) -> &Path {
        &self.vnc_path
    }

    /// Starts QEMU unless it runs; returns once QMP answers and the VNC socket exists.
    pub async fn start(&self) -> Result<()> {
        let mut process = self.process.lock().await;
        if let Some(child) = process.as_mut()
            && child.try_wait()?.is_none()
        {
            return Ok(());
        }
        // A QEMU left behind by a killed simulator with the same state directory.
        let _ = qmp_command(&self.qmp_path, "quit", json!({})).await;
        let _ = std::fs::remove_file(&self.vnc_path);
        let _ = std::fs::remove_file(&self.qmp_path);
        let child = Command::new(&self.binary)
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-vga", "std", "-m", "64", "-machine", "accel=kvm:tcg"])
            .arg("-name")
            .arg(format!("porthole-pve-sim-{}", self.vmid))
            .arg("-vnc")
            .arg(format!("unix:{},password=on", self.vnc_path.display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.qmp_path.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| QemuError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        *process = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(child) = process.as_mut()
                && let Some(status) = child.try_wait()?
            {
                *process = None;
                return Err(QemuError::Qmp(format!("QEMU exited at start: {status}")));
            }
            if self.vnc_path.exists()
                && qmp_command(&self.qmp_path, "query-status", json!({}))
                    .await
                    .is_ok()
            {
                tracing::info!(vmid = self.vmid, "VM started");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QemuError::StartTimeout {
                    vmid: self.vmid,
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Stops QEMU: QMP `quit`, then a kill if it lingers.
    pub async fn stop(&self) -> Result<()> {
        let mut process = self.process.lock().await;
        let Some(mut child) = process.take() else {
            return Ok(());
        };
        let _ = qmp_command(&self.qmp_path, "quit", json!({})).await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_file(&self.vnc_path);
        let _ = std::fs::remove_file(&self.qmp_path);
        tracing::info!(vmid = self.vmid, "VM stopped");
        Ok(())
    }

    /// Whether QEMU runs (the process exists and has not exited).
    pub async fn is_running(&self) -> bool {
        let mut process = self.process.lock().await;
        match process.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs one QMP command; `NotRunning` when QEMU does not run.
    pub async fn qmp(&self, command: &str, arguments: Value) -> Result<Value> {
        let process = self.process.lock().await;
        if process.is_none() {
            return Err(QemuError::NotRunning(self.vmid));
        }
        qmp_command(&self.qmp_path, command, arguments)
            .await
            .map_err(|e| match e {
                QemuError::Io(_) => QemuError::NotRunning(self.vmid),
                other => other,
            })
    }

    /// What `qm vncproxy` does before relaying: set the VNC password and let it
    /// expire in 30 s, so VNC authentication must finish within 30 s.
    pub async fn set_vnc_password(&self, password: &str) -> Result<()> {
        self.qmp(
            "set_password",
            json!({"protocol": "vnc", "password": password}),
        )
        .await?;
        self.qmp("expire_password", json!({"protocol": "vnc", "time": "+30"}))
            .await?;
        Ok(())
    }

    pub async fn reset(&self) -> Result<()> {
        self.qmp("system_reset", json!({})).await.map(drop)
    }

    /// The screen as PNG: QMP `screendump` with `format: png` (QEMU >= 7.1), else a
    /// PPM dump converted here.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>> {
        let path = self.screen_path.display().to_string();
        let png = self
            .qmp("screendump", json!({"filename": path, "format": "png"}))
            .await;
        let bytes = match png {
            Ok(_) => std::fs::read(&self.screen_path)?,
            Err(QemuError::Qmp(_)) => {
                self.qmp("screendump", json!({"filename": path})).await?;
                let ppm = std::fs::read(&self.screen_path)?;
                crate::png::from_ppm(&ppm).map_err(|e| QemuError::Qmp(e.to_string()))?
            }
            Err(e) => return Err(e),
        };
        let _ = std::fs::remove_file(&self.screen_path);
        Ok(bytes)
    }
}

/// One QMP exchange on a fresh connection: greeting, `qmp_capabilities`, the
/// command; events in between are skipped.
async fn qmp_command(path: &Path, command: &str, arguments: Value) -> Result<Value> {
    let exchange = async {
        let stream = UnixStream::connect(path).await?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = lines.next_line().await?.unwrap_or_default();
        if !greeting.contains("QMP") {
            return Err(QemuError::Qmp(format!("unexpected greeting {greeting}")));
        }
        let reply = |value: Value| {
            let mut text = value.to_string();
            text.push('\n');
            text
        };
        write
            .write_all(reply(json!({"execute": "qmp_capabilities"})).as_bytes())
            .await?;
        read_return(&mut lines).await?;
        write
            .write_all(reply(json!({"execute": command, "arguments": arguments})).as_bytes())
            .await?;
        read_return(&mut lines).await
    };
    tokio::time::timeout(QMP_TIMEOUT, exchange)
        .await
        .map_err(|_| QemuError::Qmp(format!("{command} timed out")))?
}

async fn read_return(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Value> {
    loop {
        let Some(line) = lines.next_line().await? else {
            return Err(QemuError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        };
        let value: Value =
            serde_json::from_str(&line).map_err(|e| QemuError::Qmp(format!("bad reply: {e}")))?;
        if let Some(result) = value.get("return") {
            return Ok(result.clone());
        }
        if let Some(error) = value.get("error") {
            let desc = error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(QemuError::Qmp(desc.to_string()));
        }
        // An asynchronous event: skip.
    }
}
