//! Requests to a Proxmox VE API and the errors they end in.

use std::fmt;
use std::time::Duration;

use porthole_api::contract::UpstreamFailure;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::tls::{self, TlsSettings};

/// Why a request failed. Messages are readable and never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Proxmox API URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid TLS settings: {0}")]
    TlsSettings(#[from] tls::Error),
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    #[error("cannot reach the Proxmox API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("TLS verification of the Proxmox API at {url} failed: {detail}")]
    Tls { url: String, detail: String },
    #[error("Proxmox VE rejected the credentials: {0}")]
    Unauthorized(String),
    #[error("the Proxmox user needs a second factor (TFA); use a user without TFA or an API token")]
    NeedsSecondFactor,
    #[error("Proxmox VE answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer from the Proxmox API: {0}")]
    Protocol(String),
}

impl Error {
    /// Which kind of failure this is, for status reasons and end reasons.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            Error::BadUrl { .. } | Error::TlsSettings(_) | Error::Client(_) => {
                UpstreamFailure::Protocol
            }
            Error::Unreachable { .. } => UpstreamFailure::Unreachable,
            Error::Tls { .. } => UpstreamFailure::TlsVerification,
            Error::Unauthorized(_) | Error::NeedsSecondFactor => UpstreamFailure::BadCredentials,
            Error::Status { status, message } => classify(*status, message),
            Error::Protocol(_) => UpstreamFailure::Protocol,
        }
    }
}

/// What an error answer from either call means.
pub fn classify(status: u16, message: &str) -> UpstreamFailure {
    let message = message.to_ascii_lowercase();
    let says = |what: &str| message.contains(what);
    if says("invalid pvevnc ticket") {
        return UpstreamFailure::TicketRejected;
    }
    match status {
        401 => UpstreamFailure::BadCredentials,
        403 => UpstreamFailure::PermissionDenied,
        // `Configuration file 'nodes/N/qemu-server/ID.conf' does not exist`
        _ if says("does not exist")
            || says("no such vm")
            || says("unable to find configuration") =>
        {
            UpstreamFailure::VmNotFound
        }
        // `VM 100 not running`, `CT 200 not running`
        _ if says("not running") => UpstreamFailure::VmNotRunning,
        // pveproxy could not reach the node that runs the VM.
        595 | 596 => UpstreamFailure::Unreachable,
        _ => UpstreamFailure::Protocol,
    }
}

/// The longest Proxmox message porthole repeats (in status, Events, close
/// reasons).
pub const MAX_MESSAGE_LEN: usize = 200;

/// A message from Proxmox VE made one line of at most [`MAX_MESSAGE_LEN`]
/// characters.
pub fn readable(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE_LEN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// A login ticket and its CSRF token. Debug output hides both.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginTicket {
    pub username: String,
    pub ticket: String,
    pub csrf_token: String,
}

impl fmt::Debug for LoginTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginTicket")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A client of one Proxmox VE API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// `url` is the API's base URL, `https://HOST:PORT`.
    pub fn new(url: &str, tls: &TlsSettings, timeout: Duration) -> Result<Self, Error> {
        let base = base_url(url)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls::client_config(tls)?).clone())
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Client { http, base })
    }

    /// The API's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `POST /access/ticket`: a password login, or the renewal of a still-valid
    /// ticket (sent as the password).
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginTicket, Error> {
        #[derive(Deserialize)]
        struct Answer {
            username: Option<String>,
            ticket: Option<String>,
            #[serde(rename = "CSRFPreventionToken")]
            csrf_token: Option<String>,
            #[serde(rename = "NeedTFA")]
            need_tfa: Option<serde_json::Value>,
        }
        let url = self.endpoint("access/ticket");
        let response = self
            .http
            .post(url.clone())
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let answer: Answer = read_data(response).await?;
        if answer.need_tfa.is_some() {
            return Err(Error::NeedsSecondFactor);
        }
        match (answer.ticket, answer.csrf_token) {
            (Some(ticket), Some(csrf_token)) => Ok(LoginTicket {
                username: answer.username.unwrap_or_else(|| username.to_string()),
                ticket,
                csrf_token,
            }),
            _ => Err(Error::Protocol(
                "the login answer has no ticket or CSRF token".into(),
            )),
        }
    }

    /// `base/api2/json/<path>`.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/api2/json/{}", path.trim_start_matches('/')));
        url
    }
}

/// Checks and normalises the base URL: HTTPS, no path, query or credentials.
pub fn base_url(url: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("it names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials do not belong in the URL"));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("give only https://HOST:PORT, without a path"));
    }
    Ok(parsed)
}

/// Classifies a transport error: a certificate failure, or no connection.
pub fn transport_error(url: &Url, error: &reqwest::Error) -> Error {
    let url = redacted(url);
    match tls::certificate_failure(error) {
        Some(detail) => Error::Tls { url, detail },
        None => Error::Unreachable {
            url,
            detail: describe(error),
        },
    }
}

/// The URL without its query (which may carry a console ticket).
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// The innermost cause, which says what actually happened ("connection
/// refused"), without the URL reqwest repeats at the top.
fn describe(error: &reqwest::Error) -> String {
    let mut current: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = current.source() {
        current = source;
    }
    if error.is_timeout() {
        "timed out".to_string()
    } else {
        current.to_string()
    }
}

/// Reads `{"data": ...}`, or turns an error answer into an [`Error`].
pub async fn read_data<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, Error> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        data: Option<T>,
    }
    let status = response.status();
    let url = redacted(response.url());
    let body = response.bytes().await.map_err(|e| Error::Unreachable {
        url: url.clone(),
        detail: describe(&e),
    })?;
    if !status.is_success() {
        let message = error_message(Some(status.canonical_reason().unwrap_or("error")), &body);
        return Err(match status {
            StatusCode::UNAUTHORIZED
                if classify(401, &message) == UpstreamFailure::BadCredentials =>
            {
                Error::Unauthorized(message)
            }
            _ => Error::Status {
                status: status.as_u16(),
                message,
            },
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("{url} answered with unreadable JSON: {e}")))?;
    envelope
        .data
        .ok_or_else(|| Error::Protocol(format!("{url} answered without data")))
}

/// Proxmox VE's error message for a failed call: the JSON `message` (or
/// `errors`, for parameter errors) when the body has one, else the HTTP reason
/// phrase, where Proxmox VE puts it. Made one readable line; nothing else of
/// the body is ever used.
pub fn error_message(reason: Option<&str>, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        errors: Option<serde_json::Value>,
    }
    let from_body = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message.or_else(|| b.errors.map(|e| e.to_string())));
    readable(from_body.as_deref().or(reason).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_what_proxmox_answers() {
        use UpstreamFailure::*;
        for (status, message, failure) in [
            (401, "authentication failure", BadCredentials),
            (401, "No ticket", BadCredentials),
            (
                401,
                "permission denied - invalid PVEVNC ticket",
                TicketRejected,
            ),
            (
                500,
                "permission denied - invalid PVEVNC ticket",
                TicketRejected,
            ),
            (
                403,
                "Permission check failed (/vms/100, VM.Console)",
                PermissionDenied,
            ),
            (
                500,
                "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist",
                VmNotFound,
            ),
            (
                500,
                "Configuration file 'nodes/pve/lxc/999.conf' does not exist",
                VmNotFound,
            ),
            (500, "VM 100 not running", VmNotRunning),
            (500, "CT 200 not running", VmNotRunning),
            (595, "Connection refused", Unreachable),
            (400, "Parameter verification failed.", Protocol),
            (
                501,
                "Method 'POST /nodes/pve/qemu/100/vncproxy' not implemented",
                Protocol,
            ),
            (500, "", Protocol),
        ] {
            assert_eq!(classify(status, message), failure, "{status} {message}");
        }
    }

    #[test]
    fn error_messages_come_from_the_json_message_or_the_reason_phrase() {
        assert_eq!(
            error_message(Some("VM 100 not running"), br#"{"data":null}"#),
            "VM 100 not running"
        );
        assert_eq!(
            error_message(
                Some("x"),
                b"{\"data\":null,\"message\":\"VM 100 not running\\n\"}"
            ),
            "VM 100 not running"
        );
        assert_eq!(error_message(None, b"<html>body</html>"), "");
        let long = error_message(Some(&"é".repeat(300)), b"");
        assert_eq!(long.chars().count(), MAX_MESSAGE_LEN + 3);
    }

    #[test]
    fn base_urls_are_https_hosts_without_paths() {
        assert!(base_url("https://pve.example:8006").is_ok());
        assert!(base_url("https://10.0.0.1:8006/").is_ok());
        for bad in [
            "http://pve:8006",
            "https://pve:8006/api2/json",
            "https://user:pw@pve:8006",
            "https://pve:8006/?x=1",
            "pve:8006",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_live_under_api2_json() {
        let client = Client::new(
            "https://pve:8006",
            &TlsSettings::default(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            client.endpoint("access/ticket").as_str(),
            "https://pve:8006/api2/json/access/ticket"
        );
    }

    #[test]
    fn login_tickets_do_not_debug_print_their_secrets() {
        let ticket = LoginTicket {
            username: "porthole@pve".into(),
            ticket: "PVE:porthole@pve:4EEC61E2::secret".into(),
            csrf_token: "4EEC61E2:csrf".into(),
        };
        let text = format!("{ticket:?}");
        assert!(text.contains("porthole@pve"));
        assert!(!text.contains("secret") && !text.contains("csrf"));
    }
}
