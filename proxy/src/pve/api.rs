//! The two API calls behind a console, without I/O: where they go, what
//! `vncproxy` answers, and what an error answer means.

use std::fmt;
use std::fmt::Write as _;

use porthole_api::contract::UpstreamFailure;
pub use porthole_pve::api::{classify, error_message, readable};
use serde::Deserialize;

use crate::rfb::vnc_auth::VncPassword;

/// The longest `vncticket` `vncwebsocket` accepts.
pub const MAX_VNC_TICKET_LEN: usize = 512;
/// Error messages from Proxmox VE are cut to this many characters.
/// Which call failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `POST .../vncproxy`: mints the console.
    Vncproxy,
    /// `GET .../vncwebsocket`: opens it.
    Vncwebsocket,
    /// `GET .../tasks/{upid}/...`: why a console ended.
    Task,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Vncproxy => "vncproxy",
            Call::Vncwebsocket => "vncwebsocket",
            Call::Task => "task",
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// value survives any query or cookie parser: Proxmox VE turns `+` into a
/// space and splits on `&` and `;`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A console `vncproxy` minted: valid for one connection within seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// The one-shot listener's port, for `vncwebsocket`.
    pub port: u16,
    /// The VNC ticket (`PVEVNC:...`, or `PASSWORD:PVEVNC:...` from behaviour B).
    pub ticket: String,
    /// The generated VNC password (always from behaviour B; before, absent).
    pub password: Option<String>,
    /// The worker's task id, for logs.
    pub upid: Option<String>,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("port", &self.port)
            .field("ticket", &"<redacted>")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("upid", &self.upid)
            .finish()
    }
}

impl Minted {
    /// The password the VNC server expects: the generated one, else (before
    /// behaviour B) the ticket itself, of which VNC uses the first 8 bytes.
    pub fn vnc_password(&self) -> VncPassword {
        VncPassword::new(self.password.as_deref().unwrap_or(&self.ticket))
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct VncproxyData {
    port: Port,
    ticket: String,
    password: Option<String>,
    upid: Option<String>,
}

/// Perl's JSON writes a port as a number or a string, depending on history.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u64),
    Text(String),
}

/// Parses a successful `vncproxy` answer. The error says what was wrong,
/// never what the body held.
pub fn parse_vncproxy(body: &[u8]) -> Result<Minted, String> {
    let envelope: Envelope<VncproxyData> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not the expected JSON ({})",
            match e.classify() {
                serde_json::error::Category::Data => "missing or mistyped fields",
                _ => "not JSON",
            }
        )
    })?;
    let data = envelope.data.ok_or("the answer has no data")?;
    let port = match data.port {
        Port::Number(n) => u16::try_from(n).ok(),
        Port::Text(text) => text.parse().ok(),
    }
    .filter(|&p| p > 0)
    .ok_or("the answer's port is not a TCP port")?;
    if data.ticket.is_empty() || data.ticket.len() > MAX_VNC_TICKET_LEN {
        return Err(format!(
            "the answer's ticket is empty or longer than {MAX_VNC_TICKET_LEN} characters"
        ));
    }
    if data.password.as_deref() == Some("") {
        return Err("the answer's password is empty".into());
    }
    Ok(Minted {
        port,
        ticket: data.ticket,
        password: data.password,
        upid: data.upid,
    })
}

/// What the `vncproxy` task that served a console says about its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOutcome {
    /// `running`, or `stopped` with an exit status.
    pub running: bool,
    pub exit_status: Option<String>,
    pub log: Vec<String>,
}

impl TaskOutcome {
    /// Parses the answers of `.../tasks/{upid}/status` and `.../log`.
    pub fn parse(status: &[u8], log: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Status {
            status: String,
            exitstatus: Option<String>,
        }
        #[derive(Deserialize)]
        struct Line {
            t: String,
        }
        let status: Envelope<Status> = serde_json::from_slice(status).ok()?;
        let log: Envelope<Vec<Line>> = serde_json::from_slice(log).ok()?;
        let status = status.data?;
        Some(Self {
            running: status.status == "running",
            exit_status: status.exitstatus,
            log: log.data?.into_iter().map(|l| l.t).collect(),
        })
    }

    /// What it means for a console that closed before its VNC server spoke,
    /// and the line that says so.
    pub fn meaning(&self) -> (UpstreamFailure, Option<String>) {
        // qemu-server's worker: `qm vncproxy` fails with `VM 100 not running`.
        if let Some(line) = self.log.iter().find(|l| l.contains("not running")) {
            return (UpstreamFailure::VmNotRunning, Some(readable(line)));
        }
        match self.exit_status.as_deref() {
            // `connection timed out`: the listener waited 10 s (LXC: 20 s).
            Some(exit) if exit.contains("timed out") => {
                (UpstreamFailure::ListenerTimeout, Some(readable(exit)))
            }
            Some(exit) if !self.running => (UpstreamFailure::Protocol, Some(readable(exit))),
            _ => (UpstreamFailure::ListenerTimeout, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            percent_encode(": ; & + = % # / ?"),
            "%3A%20%3B%20%26%20%2B%20%3D%20%25%20%23%20%2F%20%3F"
        );
        // A behaviour-B ticket: the generated password, then the VNC ticket.
        let ticket = "a+b;c&d=:PVEVNC:6745A1B2::sig/na+ture==";
        let encoded = percent_encode(ticket);
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
        );
        assert_eq!(decode(&encoded), ticket);
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    /// Proxmox VE's `decode_urlencoded`: `+` is a space, then `%XX`.
    fn decode(text: &str) -> String {
        let text = text.replace('+', " ");
        let mut out = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_behaviour_b_with_a_numeric_port() {
        let minted = parse_vncproxy(
            br#"{"data":{"user":"porthole@pve","ticket":"pw;&+=/?:PVEVNC:6745A1B2::c2ln","port":5901,"upid":"UPID:pve:1:2:3:vncproxy:100:porthole@pve:","cert":"-----BEGIN CERTIFICATE-----\n","password":"pw;&+=/?"}}"#,
        )
        .unwrap();
        assert_eq!(minted.port, 5901);
        assert_eq!(minted.password.as_deref(), Some("pw;&+=/?"));
        assert_eq!(minted.vnc_password(), VncPassword::new("pw;&+=/?"));
        let debug = format!("{minted:?}");
        assert!(
            !debug.contains("PVEVNC") && !debug.contains("pw;"),
            "{debug}"
        );
    }

    #[test]
    fn before_behaviour_b_the_ticket_is_the_password() {
        let minted =
            parse_vncproxy(br#"{"data":{"ticket":"PVEVNC:6745A1B2::c2ln","port":"5900"}}"#)
                .unwrap();
        assert_eq!(minted.port, 5900);
        assert_eq!(minted.password, None);
        assert_eq!(
            minted.vnc_password(),
            VncPassword::new("PVEVNC:6745A1B2::c2ln")
        );
    }

    #[test]
    fn unusable_answers_are_described_without_their_content() {
        let long = format!(
            r#"{{"data":{{"ticket":"{}","port":5900}}}}"#,
            "T".repeat(513)
        );
        for body in [
            &b"<html>secret-ish</html>"[..],
            br#"{"data":null}"#,
            br#"{"data":{"ticket":"secret-ish"}}"#,
            br#"{"data":{"ticket":"secret-ish","port":"59x0"}}"#,
            br#"{"data":{"ticket":"secret-ish","port":70000}}"#,
            br#"{"data":{"ticket":"","port":5900}}"#,
            br#"{"data":{"ticket":"secret-ish","port":5900,"password":""}}"#,
            long.as_bytes(),
        ] {
            let error = parse_vncproxy(body).unwrap_err();
            assert!(
                !error.contains("secret-ish") && !error.contains("TTT"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_task_says_why_its_console_closed() {
        let outcome = |status: &str, log: &str| {
            TaskOutcome::parse(status.as_bytes(), log.as_bytes())
                .unwrap()
                .meaning()
        };
        assert_eq!(
            outcome(
                r#"{"data":{"status":"stopped","exitstatus":"Failed to run vncproxy."}}"#,
                r#"{"data":[{"n":1,"t":"VM 100 not running"},{"n":2,"t":"TASK ERROR: Failed to run vncproxy."}]}"#
            ),
            (
                UpstreamFailure::VmNotRunning,
                Some("VM 100 not running".into())
            )
        );
        assert_eq!(
            outcome(
                r#"{"data":{"status":"stopped","exitstatus":"connection timed out"}}"#,
                r#"{"data":[{"n":1,"t":"TASK ERROR: connection timed out"}]}"#
            )
            .0,
            UpstreamFailure::ListenerTimeout
        );
        assert_eq!(
            outcome(r#"{"data":{"status":"running"}}"#, r#"{"data":[]}"#),
            (UpstreamFailure::ListenerTimeout, None)
        );
        assert_eq!(
            outcome(
                r#"{"data":{"status":"stopped","exitstatus":"something else"}}"#,
                r#"{"data":[]}"#
            ),
            (UpstreamFailure::Protocol, Some("something else".into()))
        );
        assert_eq!(TaskOutcome::parse(b"{}", b"[]"), None);
    }
}
