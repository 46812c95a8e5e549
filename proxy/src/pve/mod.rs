//! Proxmox VE consoles, the client side.
//!
//! A Proxmox console lives for seconds: `vncproxy` starts a one-shot listener
//! that waits 10 s for one connection, with a VNC ticket valid for 40 s and a
//! VNC password for 30 s. So nothing is minted ahead: at every viewer
//! connection [`Client::open`] reads the session's identity afresh, mints a
//! console (`POST .../vncproxy` with `websocket=1`), and opens it (`GET
//! .../vncwebsocket`) as the same identity, over the same verified TLS
//! connection when the server keeps it open (so a layer-4 balancer sends
//! both to the same node). What comes back is a byte stream carrying the VNC
//! server's RFB and the VNC password to answer it with; the browser sees
//! neither the login ticket, nor the VNC ticket, nor the password.
//!
//! * [`api`]: the requests' shape, the answer's parsing, error classification.
//! * [`credentials`]: the login ticket or API token in the session directory.
//! * [`trust`]: CA bundle, fingerprint pin, or explicitly no verification.
//! * [`websocket`]: the WebSocket as an `AsyncRead + AsyncWrite`.

pub mod api;
pub mod credentials;
pub mod trust;
pub mod websocket;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT, CONNECTION, CONTENT_TYPE, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use porthole_api::contract::{self, BINARY_SUBPROTOCOL, UpstreamFailure, secret_keys};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::metrics::Metrics;
use crate::rfb::vnc_auth::VncPassword;
use api::{Call, Minted};
use credentials::Credential;
use trust::Trust;
use websocket::ByteStream;

/// The largest API answer read (a vncproxy answer is about 2 KiB with the CA).
const MAX_ANSWER: usize = 64 * 1024;
/// The largest message accepted from `vncwebsocket` (the server sends at
/// most 128 KiB per frame).
const MAX_MESSAGE: usize = 1 << 20;

/// A Proxmox guest kind, as it appears in API paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Qemu,
    Lxc,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Qemu => contract::PVE_KIND_QEMU,
            Kind::Lxc => contract::PVE_KIND_LXC,
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            contract::PVE_KIND_QEMU => Ok(Kind::Qemu),
            contract::PVE_KIND_LXC => Ok(Kind::Lxc),
            _ => Err(format!(
                "must be {} or {}, not {text:?}",
                contract::PVE_KIND_QEMU,
                contract::PVE_KIND_LXC
            )),
        }
    }
}

/// The API's base URL: `https://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiUrl {
    /// The host to dial and verify, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// As the URL spells it, for the `Host` header.
    pub authority: String,
    /// A path prefix before `/api2/json` (empty for Proxmox VE itself).
    pub prefix: String,
    server_name: ServerName<'static>,
}

impl FromStr for ApiUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SHAPE: &str = "must be https://HOST[:PORT]";
        let uri: http::Uri = text.parse().map_err(|_| format!("{SHAPE}, not {text:?}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{SHAPE} (TLS only), not {text:?}"));
        }
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            .ok_or_else(|| format!("{SHAPE}, not {text:?}"))?;
        // `http` is lenient: it takes anything after the colon as the port
        // text (one that is no number would silently become 443), skips
        // what stands between a `]` and that colon, and takes any text in
        // brackets.
        if !porthole_api::names::is_host_and_port(authority) {
            return Err(format!(
                "{SHAPE}, with a numeric port and only an IPv6 address in brackets, not {text:?}"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("{SHAPE}, without a query, not {text:?}"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("{SHAPE}: {host:?} is not a host name or address"))?;
        Ok(Self {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            host,
            server_name,
        })
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority, self.prefix)
    }
}

/// Which console, where, and how to reach it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: ApiUrl,
    pub node: String,
    pub kind: Kind,
    pub vmid: u32,
    pub trust: Trust,
    /// Where the identity and the CA bundle are, re-read at every connection.
    pub session_dir: PathBuf,
    /// For each TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// For each API call, from request to answer.
    pub request_timeout: Duration,
}

impl Settings {
    fn path(&self, call: Call) -> String {
        format!(
            "{}/api2/json/nodes/{}/{}/{}/{call}",
            self.url.prefix,
            api::percent_encode(&self.node),
            self.kind.as_str(),
            self.vmid
        )
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} node {} {}/{}",
            self.url,
            self.node,
            self.kind.as_str(),
            self.vmid
        )
    }
}

/// Why a Proxmox console did not open. The text ends up in the session's
/// end reason: readable, and never a ticket, password, token or cookie.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Credentials(#[from] credentials::Error),
    #[error("cannot use the CA bundle: {0}")]
    CaBundle(#[from] trust::CaError),
    #[error("cannot connect to Proxmox VE at {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out connecting to Proxmox VE at {0}")]
    ConnectTimeout(String),
    #[error("the TLS certificate of {addr} is not trusted: {detail}")]
    Certificate { addr: String, detail: String },
    #[error("TLS with Proxmox VE at {addr} failed: {detail}")]
    Tls { addr: String, detail: String },
    #[error("{call}: no answer from Proxmox VE within {after:?}")]
    Timeout { call: Call, after: Duration },
    #[error("{call}: Proxmox VE closed the connection without answering ({detail})")]
    NoAnswer { call: Call, detail: String },
    #[error("{call}: Proxmox VE answered {}{}", .status.as_u16(), message_suffix(.message))]
    Refused {
        call: Call,
        failure: UpstreamFailure,
        status: StatusCode,
        message: String,
    },
    #[error("{call}: unexpected answer: {detail}")]
    BadAnswer { call: Call, detail: String },
    #[error("the console closed before the VNC server spoke{}", task_suffix(.task))]
    ClosedAtOnce {
        failure: UpstreamFailure,
        /// What the task that served it says, if it could be read.
        task: Option<String>,
    },
    #[error("the VNC server rejected the password Proxmox VE had just issued: {0}")]
    VncAuthentication(String),
    #[error("the RFB handshake through vncwebsocket failed: {0}")]
    Rfb(String),
}

fn task_suffix(task: &Option<String>) -> String {
    match task {
        Some(line) => format!("; its task says: {line}"),
        None => ": its one-shot listener was gone".to_string(),
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// The API is down or silent (cannot connect, no answer to minting a
    /// console): worth another try later, unlike a refusal, which says
    /// something lasting about the credential, the VM or the certificate.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::ConnectTimeout(_) => true,
            Error::Timeout { call, .. } | Error::NoAnswer { call, .. } => {
                matches!(call, Call::Vncproxy)
            }
            _ => false,
        }
    }

    /// What the operator makes of it.
    pub fn failure(&self) -> UpstreamFailure {
        match self {
            Error::Credentials(_) => UpstreamFailure::BadCredentials,
            Error::CaBundle(_) | Error::Certificate { .. } => UpstreamFailure::TlsVerification,
            Error::Connect { .. } | Error::ConnectTimeout(_) => UpstreamFailure::Unreachable,
            Error::Tls { .. } => UpstreamFailure::Protocol,
            // Minting is an ordinary API call: silence means an unreachable
            // API. Opening is not: pve-http-server dials the listener before
            // it answers the upgrade, and when that fails it never answers.
            Error::Timeout { call, .. } | Error::NoAnswer { call, .. } => match call {
                Call::Vncproxy | Call::Task => UpstreamFailure::Unreachable,
                Call::Vncwebsocket => UpstreamFailure::ListenerTimeout,
            },
            Error::Refused { failure, .. } => *failure,
            Error::BadAnswer { .. } | Error::Rfb(_) => UpstreamFailure::Protocol,
            Error::ClosedAtOnce { failure, .. } => *failure,
            Error::VncAuthentication(_) => UpstreamFailure::TicketRejected,
        }
    }
}

/// An opened console, its RFB handshake still to do.
#[derive(Debug)]
pub struct Console {
    pub stream: ByteStream<TokioIo<Upgraded>>,
    pub password: VncPassword,
    /// The task serving it, to ask why it ended.
    pub upid: Option<String>,
}

/// Opens consoles of one VM.
#[derive(Debug)]
pub struct Client {
    settings: Settings,
    tls: trust::Configs,
}

impl Client {
    pub fn new(settings: Settings) -> Self {
        if settings.trust == Trust::InsecureSkipVerify {
            tracing::warn!(
                url = %settings.url,
                "{} is set: the Proxmox VE API's certificate is not verified, so anyone on the path can impersonate it and take its credentials",
                contract::env::PVE_INSECURE_SKIP_VERIFY
            );
        }
        let tls = trust::Configs::new(
            settings.trust.clone(),
            settings.session_dir.join(secret_keys::PVE_CA_BUNDLE),
        );
        Self { settings, tls }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Mints a console and opens it; records the mint's latency in `metrics`.
    pub async fn open(&self, metrics: &Metrics) -> Result<Console, Error> {
        let credential = credentials::read(&self.settings.session_dir)?;
        let tls = self.tls.current()?;
        let mut connection = self.connect(&tls).await?;

        let started = Instant::now();
        let minted = self.mint(&mut connection, &credential).await?;
        metrics.pve_minted(started.elapsed());
        tracing::debug!(
            port = minted.port,
            upid = minted.upid.as_deref().unwrap_or_default(),
            identity = credential.mode(),
            generated_password = minted.password.is_some(),
            "minted a Proxmox VE console"
        );

        // Same connection if the server kept it, so the same node answers.
        if !connection.reusable(self.settings.request_timeout).await {
            tracing::debug!(
                "Proxmox VE closed the API connection; opening the console on a new one"
            );
            connection = self.connect(&tls).await?;
        }
        let ws = self.upgrade(connection, &credential, &minted).await?;
        Ok(Console {
            stream: ByteStream::new(ws),
            password: minted.vnc_password(),
            upid: minted.upid,
        })
    }

    /// Says why a console closed before its VNC server spoke, from the task
    /// that served it: Proxmox VE's `vncproxy` for a stopped VM answers like
    /// any other, and only the task's log tells. Unreadable, it is taken for
    /// a listener that was gone.
    pub async fn closed_at_once(&self, upid: Option<&str>) -> Error {
        let outcome = match upid {
            Some(upid) => self.task(upid).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot read the console's vncproxy task");
                None
            }),
            None => None,
        };
        let (failure, task) = outcome
            .map(|o| o.meaning())
            .unwrap_or((UpstreamFailure::ListenerTimeout, None));
        Error::ClosedAtOnce { failure, task }
    }

    /// `GET .../tasks/{upid}/status` and `.../log`, as the task's owner.
    async fn task(&self, upid: &str) -> Result<Option<api::TaskOutcome>, Error> {
        let credential = credentials::read(&self.settings.session_dir)?;
        let tls = self.tls.current()?;
        let mut connection = self.connect(&tls).await?;
        let base = format!(
            "{}/api2/json/nodes/{}/tasks/{}",
            self.settings.url.prefix,
            api::percent_encode(&self.settings.node),
            api::percent_encode(upid)
        );
        let status = self
            .get(&mut connection, &credential, &format!("{base}/status"))
            .await?;
        if !connection.reusable(self.settings.request_timeout).await {
            connection = self.connect(&tls).await?;
        }
        let log = self
            .get(&mut connection, &credential, &format!("{base}/log"))
            .await?;
        Ok(status
            .zip(log)
            .and_then(|(status, log)| api::TaskOutcome::parse(&status, &log)))
    }

    /// A GET whose successful body is returned; `None` for any other status.
    async fn get(
        &self,
        connection: &mut Connection,
        credential: &Credential,
        path: &str,
    ) -> Result<Option<Bytes>, Error> {
        let call = Call::Task;
        let mut request = Request::get(path)
            .header(HOST, &self.settings.url.authority)
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        request.headers_mut().extend(credential.headers(false));
        let limit = self.settings.request_timeout;
        let exchange = async {
            let response = connection.send(call, request).await?;
            let status = response.status();
            let (_, body) = read_body(call, response).await?;
            Ok((status == StatusCode::OK).then_some(body))
        };
        timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout { call, after: limit })?
    }

    async fn connect(&self, tls: &Arc<ClientConfig>) -> Result<Connection, Error> {
        let url = &self.settings.url;
        let addr = url.authority.clone();
        let limit = self.settings.connect_timeout;
        let tcp = timeout(limit, TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(|_| Error::ConnectTimeout(addr.clone()))?
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY towards Proxmox VE");
        }
        // A console outlives this call on the same connection.
        crate::liveness::watch_or_warn(&tcp);
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let stream = timeout(limit, connector.connect(url.server_name.clone(), tcp))
            .await
            .map_err(|_| Error::ConnectTimeout(addr.clone()))?
            .map_err(|e| match trust::rustls_error(&e) {
                Some(error @ rustls::Error::InvalidCertificate(_)) => Error::Certificate {
                    addr: addr.clone(),
                    detail: trust::describe(error),
                },
                Some(other) => Error::Tls {
                    addr: addr.clone(),
                    detail: other.to_string(),
                },
                None => Error::Connect {
                    addr: addr.clone(),
                    source: e,
                },
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Connect {
                addr: addr.clone(),
                source: io::Error::other(e),
            })?;
        // Drives the connection; done by itself once upgraded or closed.
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "Proxmox VE API connection failed");
            }
        });
        Ok(Connection {
            sender,
            driver: AbortOnDrop(driver),
        })
    }

    /// `POST .../vncproxy` with `websocket=1`.
    async fn mint(
        &self,
        connection: &mut Connection,
        credential: &Credential,
    ) -> Result<Minted, Error> {
        let call = Call::Vncproxy;
        let mut request = Request::post(self.settings.path(call))
            .header(HOST, &self.settings.url.authority)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(b"websocket=1")))
            .expect("a valid request");
        request.headers_mut().extend(credential.headers(true));
        let limit = self.settings.request_timeout;
        let exchange = async {
            let response = connection.send(call, request).await?;
            let status = response.status();
            let (reason, body) = read_body(call, response).await?;
            if status != StatusCode::OK {
                return Err(refused(call, status, reason.as_deref(), &body));
            }
            api::parse_vncproxy(&body).map_err(|detail| Error::BadAnswer { call, detail })
        };
        timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout { call, after: limit })?
    }

    /// `GET .../vncwebsocket?port=P&vncticket=T`, upgraded to a WebSocket
    /// speaking `binary`.
    async fn upgrade(
        &self,
        mut connection: Connection,
        credential: &Credential,
        minted: &Minted,
    ) -> Result<WebSocketStream<TokioIo<Upgraded>>, Error> {
        let call = Call::Vncwebsocket;
        let key = generate_key();
        let path = format!(
            "{}?port={}&vncticket={}",
            self.settings.path(call),
            minted.port,
            api::percent_encode(&minted.ticket)
        );
        let mut request = Request::get(path)
            .header(HOST, &self.settings.url.authority)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "Upgrade")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, &key)
            .header(SEC_WEBSOCKET_PROTOCOL, BINARY_SUBPROTOCOL)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        request.headers_mut().extend(credential.headers(false));
        let limit = self.settings.request_timeout;
        let exchange = async {
            let response = connection.send(call, request).await?;
            let status = response.status();
            if status != StatusCode::SWITCHING_PROTOCOLS {
                let (reason, body) = read_body(call, response).await?;
                return Err(refused(call, status, reason.as_deref(), &body));
            }
            let bad = |detail: &str| Error::BadAnswer {
                call,
                detail: detail.to_string(),
            };
            let headers = response.headers();
            if headers.get(SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes())
                != Some(derive_accept_key(key.as_bytes()).as_bytes())
            {
                return Err(bad("the WebSocket accept key is wrong"));
            }
            if headers.get(SEC_WEBSOCKET_PROTOCOL).map(|v| v.as_bytes())
                != Some(BINARY_SUBPROTOCOL.as_bytes())
            {
                return Err(bad("the WebSocket subprotocol is not binary"));
            }
            hyper::upgrade::on(response)
                .await
                .map_err(|e| Error::NoAnswer {
                    call,
                    detail: e.to_string(),
                })
        };
        let upgraded = timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout { call, after: limit })??;
        drop(connection);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .write_buffer_size(websocket::MAX_FRAME)
            .max_write_buffer_size(4 * MAX_MESSAGE);
        Ok(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config))
                .await,
        )
    }
}

/// One HTTP/1.1 connection to the API.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: AbortOnDrop,
}

impl Connection {
    async fn send(
        &mut self,
        call: Call,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Error> {
        let no_answer = |e: hyper::Error| Error::NoAnswer {
            call,
            detail: e.to_string(),
        };
        self.sender.ready().await.map_err(no_answer)?;
        self.sender.send_request(request).await.map_err(no_answer)
    }

    /// Whether another request can go on this connection.
    async fn reusable(&mut self, limit: Duration) -> bool {
        !self.driver.0.is_finished()
            && matches!(timeout(limit, self.sender.ready()).await, Ok(Ok(())))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        // After an upgrade the task has already finished; this only ends a
        // connection given up on.
        self.0.abort();
    }
}

/// The reason phrase (where Proxmox VE puts its error message) and the body,
/// at most [`MAX_ANSWER`] bytes of it.
async fn read_body(
    call: Call,
    response: Response<Incoming>,
) -> Result<(Option<String>, Bytes), Error> {
    let reason = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .or_else(|| response.status().canonical_reason().map(str::to_string));
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| Error::BadAnswer {
            call,
            detail: format!("cannot read the answer: {e}"),
        })?
        .to_bytes();
    Ok((reason, body))
}

fn refused(call: Call, status: StatusCode, reason: Option<&str>, body: &[u8]) -> Error {
    let message = api::error_message(reason, body);
    Error::Refused {
        call,
        failure: api::classify(status.as_u16(), &message),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        let url: ApiUrl = "https://pve.example:8006".parse().unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("pve.example", 8006, "")
        );
        assert_eq!(url.authority, "pve.example:8006");
        assert_eq!(url.to_string(), "https://pve.example:8006");
        let url: ApiUrl = "https://[fd00::1]:8006/".parse().unwrap();
        assert_eq!(
            (url.host.as_str(), url.authority.as_str()),
            ("fd00::1", "[fd00::1]:8006")
        );
        let url: ApiUrl = "https://10.0.0.1/pve".parse().unwrap();
        assert_eq!((url.port, url.prefix.as_str()), (443, "/pve"));
        for bad in [
            "http://pve.example:8006",
            "pve.example:8006",
            "https://",
            "https://user:pw@pve.example:8006",
            "https://pve.example:8006/?x=1",
            "",
        ] {
            assert!(bad.parse::<ApiUrl>().is_err(), "{bad}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/addresses.rs): a port that is no
    /// number was dropped, and the proxy dialled 443; text between `]` and
    /// the port was skipped, and brackets held any host.
    #[test]
    fn api_url_ports_are_numbers() {
        for bad in [
            "https://u:22v",
            "https://pve.example:80O6/",
            "https://pve:",
            "https://[::1]:x",
            "https://[U]8:006/",
            "https://[::1]8:443",
            "https://[pve.example]:8006",
        ] {
            assert!(bad.parse::<ApiUrl>().is_err(), "{bad}");
        }
        let url: ApiUrl = "https://pve.example:006006".parse().unwrap();
        assert_eq!(url.port, 6006);
        let url: ApiUrl = "https://[fd00::1]:8006/".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("fd00::1", 8006));
    }

    #[test]
    fn paths_escape_the_node() {
        let settings = Settings {
            url: "https://pve.example:8006".parse().unwrap(),
            node: "pve-1".into(),
            kind: Kind::Lxc,
            vmid: 200,
            trust: Trust::Default,
            session_dir: PathBuf::new(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            settings.path(Call::Vncproxy),
            "/api2/json/nodes/pve-1/lxc/200/vncproxy"
        );
        assert_eq!(
            Settings {
                node: "a/b".into(),
                ..settings
            }
            .path(Call::Vncwebsocket),
            "/api2/json/nodes/a%2Fb/lxc/200/vncwebsocket"
        );
    }

    #[test]
    fn kinds() {
        assert_eq!("qemu".parse(), Ok(Kind::Qemu));
        assert_eq!("lxc".parse(), Ok(Kind::Lxc));
        assert!("QEMU".parse::<Kind>().is_err());
    }

    #[test]
    fn failures_by_call() {
        let timeout = |call| Error::Timeout {
            call,
            after: Duration::from_secs(1),
        };
        assert_eq!(
            timeout(Call::Vncproxy).failure(),
            UpstreamFailure::Unreachable
        );
        assert_eq!(
            timeout(Call::Vncwebsocket).failure(),
            UpstreamFailure::ListenerTimeout
        );
        let refused = refused(
            Call::Vncproxy,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("VM 100 not running"),
            b"{\"data\":null}",
        );
        assert_eq!(refused.failure(), UpstreamFailure::VmNotRunning);
        assert_eq!(
            refused.to_string(),
            "vncproxy: Proxmox VE answered 500: VM 100 not running"
        );
        // The password minted with the console was refused: so was the ticket.
        assert_eq!(
            Error::VncAuthentication("Authentication failed".into()).failure(),
            UpstreamFailure::TicketRejected
        );
        let closed = Error::ClosedAtOnce {
            failure: UpstreamFailure::VmNotRunning,
            task: Some("VM 101 not running".into()),
        };
        assert_eq!(closed.failure(), UpstreamFailure::VmNotRunning);
        assert_eq!(
            closed.to_string(),
            "the console closed before the VNC server spoke; its task says: VM 101 not running"
        );
    }
}
