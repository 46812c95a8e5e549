//! The one-shot workers behind `vncproxy`, as qemu-server forks them: listen on a
//! free port in 5900-5999, wait for exactly one connection (10 s for QEMU, 20 s
//! for LXC's vncterm), then do what `qm vncproxy` does (set the VNC password with
//! a 30 s expiry over QMP) and relay to the VM's VNC unix socket. Each worker is a
//! PVE task with a UPID whose status and log can be read through the API.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::{TcpListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::qemu::{QemuError, Vm};

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Every port in 5900-5999 is taken on the console address.
    #[error("unable to find free port (5900-5999)")]
    NoFreePort,
    #[error("binding the console port: {0}")]
    Bind(std::io::Error),
}

pub const FIRST_PORT: u16 = 5900;
pub const LAST_PORT: u16 = 5999;

/// The loopback address this simulator's console workers listen on.
///
/// PVE uses 127.0.0.1, one host per server. Several simulators on one host
/// (parallel tests) would share that port range: a worker whose listener
/// timed out frees its port, another simulator binds it, and the first
/// simulator's `vncwebsocket` connects into the other one's VM. Each
/// simulator therefore gets its own address in 127.0.0.0/8 (all of it is
/// local on Linux); clients never see it, they only see the port.
pub fn console_address() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed) % 254 + 1;
    let pid = std::process::id() & 0xffff;
    Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, serial as u8)
}

/// Binds the lowest free port in 5900-5999 on `address` (as PVE's
/// `next_vnc_port`); a port another process holds (EADDRINUSE) is skipped.
pub async fn bind_console_port(address: Ipv4Addr) -> Result<(TcpListener, u16), WorkerError> {
    for port in FIRST_PORT..=LAST_PORT {
        match TcpListener::bind((address, port)).await {
            Ok(listener) => return Ok((listener, port)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(WorkerError::Bind(e)),
        }
    }
    Err(WorkerError::NoFreePort)
}

/// A task's state, as `GET /nodes/{node}/tasks/{upid}/status` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskStatus {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u32,
    pub starttime: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub user: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exitstatus: Option<String>,
}

#[derive(Debug)]
struct Task {
    status: TaskStatus,
    log: Vec<String>,
}

/// Every task the simulator ran.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<HashMap<String, Task>>>);

impl Tasks {
    /// Registers a running `vncproxy` task and returns its UPID
    /// (`UPID:node:PID:PSTART:STARTTIME:type:id:user:`).
    pub fn start(
        &self,
        node: &str,
        vmid: u32,
        user: &str,
        now: i64,
        pid: u32,
        pstart: u32,
    ) -> String {
        let upid = format!(
            "UPID:{node}:{pid:08X}:{pstart:08X}:{:08X}:vncproxy:{vmid}:{user}:",
            now.max(0)
        );
        let status = TaskStatus {
            upid: upid.clone(),
            node: node.to_string(),
            pid,
            pstart,
            starttime: now,
            kind: "vncproxy".into(),
            id: vmid.to_string(),
            user: user.to_string(),
            status: "running".into(),
            exitstatus: None,
        };
        self.lock().insert(
            upid.clone(),
            Task {
                status,
                log: Vec::new(),
            },
        );
        upid
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log(&self, upid: &str, line: impl Into<String>) {
        if let Some(task) = self.lock().get_mut(upid) {
            task.log.push(line.into());
        }
    }

    /// Ends a task with PVE's exit status text (`OK` or the error).
    pub fn finish(&self, upid: &str, exitstatus: &str) {
        if let Some(task) = self.lock().get_mut(upid) {
            if exitstatus != "OK" {
                task.log.push(format!("TASK ERROR: {exitstatus}"));
            } else {
                task.log.push("TASK OK".into());
            }
            task.status.status = "stopped".into();
            task.status.exitstatus = Some(exitstatus.to_string());
        }
    }

    pub fn status(&self, upid: &str) -> Option<TaskStatus> {
        self.lock().get(upid).map(|t| t.status.clone())
    }

    pub fn log_lines(&self, upid: &str) -> Option<Vec<String>> {
        self.lock().get(upid).map(|t| t.log.clone())
    }
}

/// Everything one worker needs.
pub struct Worker {
    pub listener: TcpListener,
    pub vm: Arc<Vm>,
    pub password: String,
    pub accept_timeout: Duration,
    pub upid: String,
    pub tasks: Tasks,
    pub shutdown: CancellationToken,
}

impl Worker {
    /// Runs the worker to its end; the outcome is the task's exit status.
    pub async fn run(self) {
        let Worker {
            listener,
            vm,
            password,
            accept_timeout,
            upid,
            tasks,
            shutdown,
        } = self;
        let exitstatus = tokio::select! {
            status = serve(listener, &vm, &password, accept_timeout, &upid, &tasks) => status,
            () = shutdown.cancelled() => "interrupted by signal".to_string(),
        };
        tracing::info!(vmid = vm.vmid, %upid, %exitstatus, "vncproxy task ended");
        tasks.finish(&upid, &exitstatus);
    }
}

async fn serve(
    listener: TcpListener,
    vm: &Vm,
    password: &str,
    accept_timeout: Duration,
    upid: &str,
    tasks: &Tasks,
) -> String {
    // qemu-server: `alarm $timeout; accept(...)`; die "connection timed out".
    // A zero timeout (the listener_timeout fault) must not accept a client that
    // is already queued: `timeout` polls its future before the deadline.
    if accept_timeout.is_zero() {
        drop(listener);
        return "connection timed out".into();
    }
    let accepted = tokio::time::timeout(accept_timeout, listener.accept()).await;
    drop(listener); // one-shot: nobody else gets in
    let mut client = match accepted {
        Err(_) => return "connection timed out".into(),
        Ok(Err(e)) => return format!("connection failed: {e}"),
        Ok(Ok((client, _))) => client,
    };
    // `qm vncproxy`: mon_cmd set_password / expire_password, then relay.
    if let Err(e) = vm.set_vnc_password(password).await {
        let line = match e {
            QemuError::NotRunning(_) => e.to_string(),
            other => format!("VM {} qmp command failed - {other}", vm.vmid),
        };
        tasks.log(upid, line);
        return "Failed to run vncproxy.".into();
    }
    let mut upstream = match UnixStream::connect(vm.vnc_path()).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tasks.log(upid, format!("connecting to the VNC socket failed: {e}"));
            return "Failed to run vncproxy.".into();
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok(_) => "OK".into(),
        // A viewer that goes away mid-stream ends the proxy normally for PVE too.
        Err(e) if is_disconnect(&e) => "OK".into(),
        Err(e) => {
            tasks.log(upid, format!("relay failed: {e}"));
            "Failed to run vncproxy.".into()
        }
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_have_pve_s_shape_and_tasks_end_with_a_status() {
        let tasks = Tasks::default();
        let upid = tasks.start("pve", 100, "root@pam", 0x68000000, 0x1234, 0xABCDEF);
        assert_eq!(
            upid,
            "UPID:pve:00001234:00ABCDEF:68000000:vncproxy:100:root@pam:"
        );
        assert_eq!(tasks.status(&upid).unwrap().status, "running");
        tasks.log(&upid, "VM 100 not running");
        tasks.finish(&upid, "Failed to run vncproxy.");
        let status = tasks.status(&upid).unwrap();
        assert_eq!(status.status, "stopped");
        assert_eq!(
            status.exitstatus.as_deref(),
            Some("Failed to run vncproxy.")
        );
        assert_eq!(
            tasks.log_lines(&upid).unwrap(),
            vec!["VM 100 not running", "TASK ERROR: Failed to run vncproxy."]
        );
    }

    #[tokio::test]
    async fn binds_a_port_in_range_and_skips_taken_ones() {
        let address = console_address();
        let (first, port) = bind_console_port(address).await.unwrap();
        assert!((FIRST_PORT..=LAST_PORT).contains(&port));
        let (_second, other) = bind_console_port(address).await.unwrap();
        assert_ne!(port, other);
        drop(first);
    }

    #[tokio::test]
    async fn simulators_in_one_process_get_their_own_console_address() {
        let (one, other) = (console_address(), console_address());
        assert_ne!(one, other);
        assert!(one.is_loopback() && other.is_loopback());
        // Both can hold the same port at once.
        let (_first, port) = bind_console_port(one).await.unwrap();
        TcpListener::bind((other, port)).await.unwrap();
    }
}
