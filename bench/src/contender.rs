//! The contenders: how each is started, how a client speaks to it, and how it
//! is stopped. Each runs as a real process of its own, in its own process
//! group, with its fastest sensible settings.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::client::Protocol;
use crate::procfs::Usage;
use crate::tls::Material;

/// Which contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Id {
    /// porthole-proxy in standalone mode, defaults (no recording, no tokens).
    Porthole,
    /// porthole-proxy with `--record` and `--token-source`.
    PortholeFeatures,
    /// porthole-proxy, defaults, with one runtime worker thread
    /// (`TOKIO_WORKER_THREADS=1`) instead of one per core: shows what the
    /// threads' hand-offs cost.
    PortholeOneWorker,
    Websockify,
    /// socat as a plain TCP relay: the floor.
    Socat,
    /// The client straight to the target, no process between: the client's
    /// own ceiling.
    Direct,
}

pub const ALL: [Id; 6] = [
    Id::Porthole,
    Id::PortholeFeatures,
    Id::PortholeOneWorker,
    Id::Websockify,
    Id::Socat,
    Id::Direct,
];

/// Where the contenders listen (loopback, clear of the ports other tests use).
pub const FIRST_PORT: u16 = 20001;
/// Where the driver's own target (bulk source and echo) listens.
pub const TARGET_PORT: u16 = 20100;
/// The token the features variant looks its target up by.
pub const TOKEN: &str = "bench";

impl Id {
    pub fn name(self) -> &'static str {
        match self {
            Id::Porthole => "porthole-proxy",
            Id::PortholeFeatures => "porthole-proxy +rec +token",
            Id::PortholeOneWorker => "porthole-proxy 1-worker",
            Id::Websockify => "websockify",
            Id::Socat => "socat relay",
            Id::Direct => "direct (no proxy)",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Id::Direct => TARGET_PORT,
            other => FIRST_PORT + ALL.iter().position(|&c| c == other).unwrap_or(0) as u16,
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Id::Porthole | Id::PortholeOneWorker | Id::Websockify => {
                Protocol::WebSocket { path: "/".into() }
            }
            Id::PortholeFeatures => Protocol::WebSocket {
                path: format!("/?token={TOKEN}"),
            },
            Id::Socat | Id::Direct => Protocol::Raw,
        }
    }

    /// Whether there is a process to start (all but the direct baseline).
    pub fn has_process(self) -> bool {
        self != Id::Direct
    }

    /// Whether the start-up phase includes it (the variants are the same
    /// binary as porthole-proxy).
    pub fn starts_alone(self) -> bool {
        matches!(self, Id::Porthole | Id::Websockify | Id::Socat)
    }

    /// Whether the wss runs include it.
    pub fn does_tls(self) -> bool {
        matches!(self, Id::Porthole | Id::Websockify | Id::Socat)
    }
}

/// A contender, plain or over TLS: each runs as a process of its own, so
/// that all of a round's can run side by side and take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub id: Id,
    pub tls: bool,
}

impl Variant {
    pub fn port(self) -> u16 {
        self.id.port() + if self.tls { 10 } else { 0 }
    }

    pub fn addr(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    pub fn name(self) -> String {
        format!("{}{}", self.id.name(), if self.tls { " (TLS)" } else { "" })
    }
}

/// The programs, as `make bench` installed them.
#[derive(Debug, Clone)]
pub struct Tools {
    pub porthole: PathBuf,
    pub websockify: PathBuf,
    pub socat: PathBuf,
}

/// Where one run keeps its files.
#[derive(Debug, Clone)]
pub struct Workdir {
    pub dir: PathBuf,
}

impl Workdir {
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    pub fn recordings(&self) -> PathBuf {
        self.dir.join("recordings")
    }

    pub fn log(&self, variant: Variant) -> PathBuf {
        let tls = if variant.tls { "-tls" } else { "" };
        self.dir
            .join(format!("{:?}{tls}.log", variant.id).to_lowercase())
    }

    /// Writes the token file and makes the recordings folder.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(self.recordings())?;
        let target = SocketAddr::from(([127, 0, 0, 1], TARGET_PORT));
        std::fs::write(self.tokens(), format!("{TOKEN}: {target}\n"))?;
        Ok(())
    }

    /// Deletes the recordings made so far (they grow fast under bulk load).
    pub fn clear_recordings(&self) {
        if let Ok(entries) = std::fs::read_dir(self.recordings()) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The command line that starts `id`; `None` for the direct baseline.
pub fn command(id: Id, tools: &Tools, work: &Workdir, tls: Option<&Material>) -> Option<Command> {
    let variant = Variant {
        id,
        tls: tls.is_some(),
    };
    let listen = variant.addr().to_string();
    let target = SocketAddr::from(([127, 0, 0, 1], TARGET_PORT)).to_string();
    let mut cmd = match id {
        Id::Direct => return None,
        Id::Porthole | Id::PortholeFeatures | Id::PortholeOneWorker => {
            let mut cmd = Command::new(&tools.porthole);
            if id == Id::PortholeOneWorker {
                cmd.env("TOKIO_WORKER_THREADS", "1");
            }
            if let Some(tls) = tls {
                cmd.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
                cmd.arg("--ssl-only");
            }
            if id == Id::PortholeFeatures {
                cmd.arg("--token-source").arg(work.tokens());
                cmd.arg("--record").arg(work.recordings().join("porthole"));
                cmd.arg(listen);
            } else {
                cmd.args([listen, target]);
            }
            cmd
        }
        Id::Websockify => {
            let mut cmd = Command::new(&tools.websockify);
            if let Some(tls) = tls {
                cmd.arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
                cmd.arg("--ssl-only");
            }
            cmd.args([listen, target]);
            cmd
        }
        Id::Socat => {
            let mut cmd = Command::new(&tools.socat);
            // The same 64 KiB buffer the proxies read with (socat's default is 8 KiB),
            // and Nagle off on both sides as the proxies do.
            cmd.args(["-b", "65536"]);
            let port = variant.port();
            match tls {
                Some(tls) => cmd.arg(format!(
                    "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,verify=0,cert={},key={}",
                    tls.cert.display(),
                    tls.key.display()
                )),
                None => cmd.arg(format!(
                    "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay"
                )),
            };
            cmd.arg(format!("TCP:{target},nodelay"));
            cmd
        }
    };
    // Without self.pem in the working directory porthole-proxy and websockify
    // serve plain unless told otherwise.
    cmd.current_dir(&work.dir);
    Some(cmd)
}

/// A command line as one string, for the report.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A started contender.
pub struct Running {
    pub variant: Variant,
    child: Child,
    pub pid: u32,
    /// From just before the spawn to the first accepted connection.
    pub ready: Duration,
    log: PathBuf,
}

/// How often the start-up probe tries to connect.
const PROBE_EVERY: Duration = Duration::from_micros(100);
/// How long a contender gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts `variant` with `cmd`, and waits until a TCP connection to its port
/// succeeds (the kernel completes it once the process listens).
pub fn start(variant: Variant, mut cmd: Command, work: &Workdir) -> Result<Running> {
    let addr = variant.addr();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
        bail!("{addr} is already taken by another process");
    }
    let log = work.log(variant);
    let out = File::options().create(true).append(true).open(&log)?;
    // In the driver's process group, so that ^C stops the contenders too.
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", display(&cmd)))?;
    let pid = child.id();
    live().push(pid);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before listening: {}", tail(&log));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not listen within {START_TIMEOUT:?}: {}", tail(&log));
        }
        std::thread::sleep(PROBE_EVERY);
    }
    let ready = started.elapsed();
    Ok(Running {
        variant,
        child,
        pid,
        ready,
        log,
    })
}

/// The last lines of a log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Running {
    pub fn usage(&self, ticks_per_second: f64) -> Usage {
        Usage::of_tree(self.pid, ticks_per_second)
    }

    /// Waits (up to `limit`) until the contender has no child processes left,
    /// such as the one websockify or socat forked for the start-up probe.
    pub fn settle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Usage::pids(self.pid).len() > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// SIGTERM, then SIGKILL after a grace period; then any child it left.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        live().retain(|&pid| pid != self.pid);
        if !self.alive() {
            return;
        }
        let pids = Usage::pids(self.pid);
        signal("TERM", self.pid);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for pid in pids.into_iter().skip(1) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal("KILL", pid);
            }
        }
    }
}

/// A contender left running when the driver stops early (an error, a panic)
/// goes with it.
impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The contenders running now, for `kill_all`.
fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every contender still running (the driver is going down).
pub fn kill_all() {
    for pid in live().drain(..) {
        signal("KILL", pid);
    }
}

/// Sends a signal to one process of ours, by its id.
pub fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_clear_of_other_tests() {
        let mut ports: Vec<u16> = ALL
            .iter()
            .flat_map(|&id| [false, true].map(|tls| Variant { id, tls }.port()))
            .filter(|&p| p != TARGET_PORT)
            .collect();
        let all = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), all);
        assert!(ports.iter().all(|&p| p >= 20000 && p != TARGET_PORT));
    }
}
