//! Wrapping a command (`-- COMMAND...`, websockify's `--wrap-mode`).
//!
//! websockify preloads `rebind.so` into the command, which moves its `bind()`
//! on the proxy's own port to a free one the proxy then relays to. A static
//! binary cannot preload a library, so porthole-proxy *tells* the command
//! where to listen instead: it picks a free localhost port, replaces `{port}`
//! in the command's arguments with it and sets [`PORT_ENV`]. The command must
//! therefore be told its port (`x11vnc -rfbport {port}`, `Xvnc -rfbport
//! {port}`); a program that cannot be, websockify's rebind.so still suits.
//!
//! # The port between picking and binding
//!
//! Picking a free port and letting it go before the command binds it is a
//! race: another local process could bind it first, and the proxy would
//! relay viewers to it. So the port stays *reserved* (bound, not listening:
//! nobody can bind it, and the kernel hands it to nobody as an ephemeral
//! port) from the moment it is picked until just before the command is
//! started, and again between a command's exit and its respawn. What
//! remains is the moment between `spawn` and the command's own `bind()`:
//! the command binds by port number, so the reservation must be gone by
//! then, and closing that gap needs the command's cooperation (an
//! inherited listening socket, as systemd's socket activation, or
//! websockify's `LD_PRELOAD` of rebind.so, which a static binary cannot
//! do). Another process must then know the port and bind it within those
//! milliseconds, and the command would then fail to bind (and, in `exit`
//! mode, end the proxy).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use socket2::{Domain, Socket, Type};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{WrapMode, exit};

/// The environment variable holding the port the wrapped command must listen on.
pub const PORT_ENV: &str = "PORTHOLE_WRAP_PORT";
/// Replaced by that port in the command's arguments.
pub const PORT_PLACEHOLDER: &str = "{port}";
/// A command that dies sooner than this is respawned only after it, so a
/// broken one does not spin.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);

/// Why the command cannot be wrapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find a free port for the wrapped command: {0}")]
    NoPort(std::io::Error),
    #[error("wrapping a command and naming a target both say where to relay; give one")]
    TargetAndCommand,
}

/// A command to run beside the proxy, and where it listens.
#[derive(Debug, Clone)]
pub struct Wrapped {
    pub program: String,
    pub args: Vec<String>,
    /// Where the command listens, and the proxy relays to.
    pub addr: SocketAddr,
    /// Holds [`addr`](Self::addr) while no command should be listening on it.
    reservation: Arc<Mutex<Option<Socket>>>,
}

/// Binds `addr` without listening: it is ours, and accepts nothing.
fn reserve(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Wrapped {
    /// Picks a free port for `command_line` (program and arguments).
    pub fn new(command_line: &[String]) -> Result<Self, Error> {
        // The OS picks, and the port stays reserved until the command starts.
        let reservation = reserve(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(Error::NoPort)?;
        let addr = reservation
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| Error::NoPort(std::io::Error::other("no local address")))?;
        let port = addr.port().to_string();
        let mut words = command_line
            .iter()
            .map(|word| word.replace(PORT_PLACEHOLDER, &port));
        Ok(Self {
            program: words.next().unwrap_or_default(),
            args: words.collect(),
            addr,
            reservation: Arc::new(Mutex::new(Some(reservation))),
        })
    }

    /// Lets the port go, for the command to bind.
    fn release(&self) {
        drop(self.lock().take());
    }

    /// Takes the port back once the command is gone, if nobody (a process
    /// the command left behind) holds it.
    fn take_back(&self) {
        let mut reservation = self.lock();
        if reservation.is_none() {
            match reserve(self.addr) {
                Ok(socket) => *reservation = Some(socket),
                Err(e) => {
                    tracing::debug!(port = self.addr.port(), error = %e, "cannot reserve the port again")
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Socket>> {
        self.reservation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the command until `stop`, following `mode` when it exits:
    /// `exit` returns the status the proxy should exit with (the command's),
    /// `ignore` leaves the proxy relaying to nothing, `respawn` starts the
    /// command again. A command that cannot be started at all ends the proxy
    /// with a shell's status for that (127 not found, 126 otherwise).
    pub async fn supervise(self, mode: WrapMode, stop: CancellationToken) -> Option<u8> {
        loop {
            let started = Instant::now();
            self.release();
            let spawned = Command::new(&self.program)
                .args(&self.args)
                .env(PORT_ENV, self.addr.port().to_string())
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(program = %self.program, error = %e, "cannot start the wrapped command");
                    return Some(match e.kind() {
                        std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                        _ => exit::CANNOT_EXECUTE,
                    });
                }
            };
            tracing::info!(program = %self.program, port = self.addr.port(), "started the wrapped command");
            let status = tokio::select! {
                status = child.wait() => status,
                () = stop.cancelled() => return None,
            };
            tracing::info!(status = ?status, ?mode, "the wrapped command exited");
            self.take_back();
            match mode {
                WrapMode::Exit => {
                    return Some(status.map_or(exit::FAILURE, |status| exit_code(&status)));
                }
                WrapMode::Ignore => return None,
                WrapMode::Respawn => {
                    let again = started + RESPAWN_DELAY;
                    tokio::select! {
                        () = tokio::time::sleep_until(again) => {}
                        () = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// A child's status as a shell reports it: its exit code, or 128 plus the
/// signal that killed it.
pub fn exit_code(status: &ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => exit::SIGNALLED.wrapping_add((signal & 0x7f) as u8),
        (None, None) => exit::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_substituted() {
        let line = ["x11vnc", "-rfbport", "{port}", "-listen", "127.0.0.1"].map(String::from);
        let wrapped = Wrapped::new(&line).unwrap();
        assert_eq!(wrapped.program, "x11vnc");
        assert_eq!(wrapped.args[1], wrapped.addr.port().to_string());
        assert!(wrapped.addr.ip().is_loopback());
    }

    #[test]
    fn nobody_can_take_the_port_before_the_command_starts() {
        let wrapped = Wrapped::new(&["true".to_string()]).unwrap();
        let taken = std::net::TcpListener::bind(wrapped.addr);
        assert!(taken.is_err(), "another process bound the reserved port");
        wrapped.release();
        let command = std::net::TcpListener::bind(wrapped.addr).expect("the command binds it");
        drop(command);
        wrapped.take_back();
        assert!(
            std::net::TcpListener::bind(wrapped.addr).is_err(),
            "reserved again"
        );
    }

    #[test]
    fn statuses_as_a_shell_reports_them() {
        assert_eq!(exit_code(&ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(&ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(&ExitStatus::from_raw(15)), 128 + 15);
    }
}
