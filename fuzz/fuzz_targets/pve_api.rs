//! Proxmox VE's answers: `vncproxy` (proxy/src/pve/api.rs
//! `parse_vncproxy`), a console task's status and log (`TaskOutcome`), error
//! answers (`error_message`, `classify`, the shared `read_data` of
//! pve/src/api.rs the operator's login goes through), ticket times
//! (pve/src/ticket.rs) and certificate pins (pve/src/tls.rs).
//!
//! Asserts: no panic; a minted console has a TCP port, a bounded non-empty
//! ticket, no empty password, and a `Debug` that hides its secrets; a
//! refused `vncproxy` answer is described by one of a few fixed sentences,
//! never with the body's content; every message taken from Proxmox VE (error
//! messages, task lines) is one readable line of bounded length; a ticket's
//! time is the 8 hex digits before `::`; a pin round-trips through its text.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use porthole_api::contract::UpstreamFailure;
use porthole_fuzz::{block_on, is_one_readable_line, split_at_byte};
use porthole_proxy::pve::api::{MAX_VNC_TICKET_LEN, TaskOutcome, parse_vncproxy};
use porthole_pve::api::{Error, MAX_MESSAGE_LEN, classify, error_message, read_data};
use porthole_pve::tls::Fingerprint;
use serde::Deserialize;

const VNCPROXY_ERRORS: [&str; 6] = [
    "the answer is not the expected JSON (missing or mistyped fields)",
    "the answer is not the expected JSON (not JSON)",
    "the answer has no data",
    "the answer's port is not a TCP port",
    "the answer's ticket is empty or longer than 512 characters",
    "the answer's password is empty",
];

/// A message porthole repeats from Proxmox VE: one line, bounded.
fn assert_readable(message: &str) {
    assert!(is_one_readable_line(message), "{message:?}");
    assert!(
        message.chars().count() <= MAX_MESSAGE_LEN + 3,
        "{message:?}"
    );
    assert_eq!(message.trim_start(), message);
}

fn vncproxy(body: &[u8]) {
    match parse_vncproxy(body) {
        Ok(minted) => {
            assert!(minted.port > 0);
            assert!(!minted.ticket.is_empty() && minted.ticket.len() <= MAX_VNC_TICKET_LEN);
            assert_ne!(minted.password.as_deref(), Some(""));
            let mut hidden = minted.clone();
            hidden.upid = None;
            let password = if minted.password.is_some() {
                "Some(\"<redacted>\")"
            } else {
                "None"
            };
            assert_eq!(
                format!("{hidden:?}"),
                format!(
                    "Minted {{ port: {}, ticket: \"<redacted>\", password: {password}, upid: None }}",
                    minted.port
                )
            );
        }
        Err(error) => assert!(VNCPROXY_ERRORS.contains(&error.as_str()), "{error:?}"),
    }
}

fn task(status: &[u8], log: &[u8]) {
    let Some(outcome) = TaskOutcome::parse(status, log) else {
        return;
    };
    let (failure, line) = outcome.meaning();
    if let Some(line) = &line {
        assert_readable(line);
    }
    if outcome.log.iter().any(|l| l.contains("not running")) {
        assert_eq!(failure, UpstreamFailure::VmNotRunning);
    } else if outcome.running || outcome.exit_status.is_none() {
        assert_eq!((failure, line), (UpstreamFailure::ListenerTimeout, None));
    }
}

fn error_answer(reason: &[u8], body: &[u8]) {
    let reason = std::str::from_utf8(reason).ok();
    let message = error_message(reason, body);
    assert_readable(&message);
    for status in [401, 403, 500, 595] {
        let failure = classify(status, &message);
        if message
            .to_ascii_lowercase()
            .contains("invalid pvevnc ticket")
        {
            assert_eq!(failure, UpstreamFailure::TicketRejected);
        }
    }
}

/// The shape of the operator's login answer.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Login {
    username: Option<String>,
    ticket: Option<String>,
    #[serde(rename = "CSRFPreventionToken")]
    csrf_token: Option<String>,
    #[serde(rename = "NeedTFA")]
    need_tfa: Option<serde_json::Value>,
}

fn answer(data: &[u8]) {
    let [hi, lo, body @ ..] = data else {
        return;
    };
    let status = 100 + u16::from_be_bytes([*hi, *lo]) % 500;
    let response = || {
        let response = http::Response::builder()
            .status(status)
            .body(body.to_vec())
            .expect("a valid response");
        reqwest::Response::from(response)
    };
    let check = |error: Error| {
        let text = error.to_string();
        assert!(is_one_readable_line(&text), "{text:?}");
        match error {
            Error::Status { message, .. } | Error::Unauthorized(message) => {
                assert_readable(&message)
            }
            Error::Protocol(_) => assert!((200..300).contains(&status)),
            other => panic!("read_data cannot fail with {other:?}"),
        }
    };
    block_on(async {
        if let Err(e) = read_data::<Login>(response()).await {
            check(e);
        }
        if let Err(e) = read_data::<serde_json::Value>(response()).await {
            check(e);
        }
    })
    .expect("a complete body reads at once");
}

fn ticket(text: &str) {
    if let Some(issued) = porthole_pve::ticket::issued_at(text) {
        let (plain, _) = text.split_once("::").expect("a ticket has ::");
        let hex = plain.rsplit(':').next().expect("one part");
        let secs = u64::from_str_radix(hex, 16).expect("hex");
        assert_eq!(issued, UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(hex.len(), 8);
    }
}

fn fingerprint(text: &str) {
    if let Ok(pin) = text.parse::<Fingerprint>() {
        let shown = pin.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(shown.parse::<Fingerprint>(), Ok(pin));
        assert_eq!(shown.to_lowercase().parse::<Fingerprint>(), Ok(pin));
    }
}

fuzz_target!(|data: &[u8]| {
    vncproxy(data);
    let (first, second) = split_at_byte(data, 0xff);
    task(first, second);
    error_answer(first, second);
    answer(data);
    if let Ok(text) = std::str::from_utf8(data) {
        ticket(text);
        fingerprint(text);
    }
});
