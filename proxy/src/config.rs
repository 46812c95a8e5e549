//! Pod mode's configuration: the environment the operator sets
//! ([`porthole_api::contract::env`]) and the session Secret's files.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgAction;
use jiff::Timestamp;
use porthole_api::contract::{self, env, secret_keys};

use crate::admission::{UnknownPolicy, Viewers};
use crate::auth::Token;
use crate::lifetime::Limits;
use crate::pve::{self, ApiUrl, Kind, trust::Fingerprint, trust::Trust};
use crate::rfb::vnc_auth::VncPassword;

/// Why pod mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key} is missing from the session directory {dir}")]
    MissingKey { key: &'static str, dir: PathBuf },
    #[error("{key} in the session directory {dir} is empty")]
    EmptyKey { key: &'static str, dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{var} must be HOST:PORT, not {0:?}", var = env::UPSTREAM)]
    BadUpstream(String),
    #[error(
        "no console to open: set {} (a VNC server, HOST:PORT) or {} (Proxmox VE, with {}, {} and {})",
        env::UPSTREAM,
        env::PVE_URL,
        env::PVE_NODE,
        env::PVE_VM_KIND,
        env::PVE_VMID
    )]
    NoUpstream,
    #[error("set {} or {}, not both", env::UPSTREAM, env::PVE_URL)]
    TwoUpstreams,
    #[error(
        "{var} is set but {} is not: it only applies to Proxmox VE",
        env::PVE_URL
    )]
    PveOnly { var: &'static str },
    #[error("{} is set, so {var} is required", env::PVE_URL)]
    PveMissing { var: &'static str },
    #[error(
        "set {} or {}, not both",
        env::PVE_FINGERPRINT,
        env::PVE_INSECURE_SKIP_VERIFY
    )]
    PinAndInsecure,
    #[error("{0}")]
    PveCredentials(#[from] pve::credentials::Error),
}

/// A value parser whose errors name `var`: in a pod, a bad value comes from
/// the environment the operator set, and clap alone names only the flag.
fn named<T: Clone + Send + Sync + 'static>(
    var: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| parse(text).map_err(|e| format!("{var}: {e}"))
}

fn duration(text: &str) -> Result<Duration, String> {
    porthole_api::duration::parse(text).map_err(|e| e.to_string())
}

fn instant(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>()
        .map_err(|e| format!("not an RFC 3339 instant such as 2030-01-01T12:00:00Z: {e}"))
}

fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_string()),
    }
}

fn policy(text: &str) -> Result<Viewers, String> {
    text.parse().map_err(|e: UnknownPolicy| e.to_string())
}

fn api_url(text: &str) -> Result<ApiUrl, String> {
    text.parse()
}

fn vm_kind(text: &str) -> Result<Kind, String> {
    text.parse()
}

/// Proxmox VE's VMID range.
fn vmid(text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|id| (100..=999_999_999).contains(id))
        .ok_or_else(|| format!("must be a VM id from 100 to 999999999, not {text:?}"))
}

fn fingerprint(text: &str) -> Result<Fingerprint, String> {
    text.parse()
        .map_err(|e: pve::trust::BadFingerprint| e.to_string())
}

/// A cluster node name: a host name.
fn node(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("must be a node name such as pve1, not {text:?}"))
    }
}

/// `porthole-proxy session`: serve one console session in a proxy pod.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    /// Address to serve the console page and WebSocket on.
    #[arg(long, env = env::LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], contract::PROXY_PORT)))]
    pub listen: SocketAddr,
    /// Address to serve /healthz, /readyz, /metrics and the viewer report on,
    /// apart from the console.
    #[arg(long, env = env::INTERNAL_LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], contract::INTERNAL_PORT)))]
    pub internal_listen: SocketAddr,
    /// HOST:PORT of the VNC server (plain VNC hypervisors). Set this or --pve-url.
    #[arg(long, env = env::UPSTREAM)]
    pub upstream: Option<String>,
    /// Proxmox VE: the API's base URL, https://HOST:PORT. A console is minted
    /// at every viewer connection.
    #[arg(long, env = env::PVE_URL, value_name = "URL", value_parser = named(env::PVE_URL, api_url))]
    pub pve_url: Option<ApiUrl>,
    /// Proxmox VE: the node that runs the VM.
    #[arg(long, env = env::PVE_NODE, value_name = "NODE", value_parser = named(env::PVE_NODE, node))]
    pub pve_node: Option<String>,
    /// Proxmox VE: `qemu` or `lxc`.
    #[arg(long, env = env::PVE_VM_KIND, value_name = "KIND", value_parser = named(env::PVE_VM_KIND, vm_kind))]
    pub pve_vm_kind: Option<Kind>,
    /// Proxmox VE: the VM id.
    #[arg(long, env = env::PVE_VMID, value_name = "VMID", value_parser = named(env::PVE_VMID, vmid))]
    pub pve_vmid: Option<u32>,
    /// Proxmox VE: accept only the API certificate with this SHA-256
    /// fingerprint (AA:BB:...). Without it, the CA bundle `pve-ca.crt` from
    /// the session directory verifies the API, or else the public web PKI.
    #[arg(long, env = env::PVE_FINGERPRINT, value_name = "SHA256", value_parser = named(env::PVE_FINGERPRINT, fingerprint))]
    pub pve_fingerprint: Option<Fingerprint>,
    /// Proxmox VE: do not verify the API's certificate at all (insecure).
    #[arg(long, env = env::PVE_INSECURE_SKIP_VERIFY, action = ArgAction::SetTrue, value_parser = named(env::PVE_INSECURE_SKIP_VERIFY, boolean))]
    pub pve_insecure_skip_verify: bool,
    /// Directory holding the session Secret's keys as files.
    #[arg(long, env = env::SESSION_DIR, default_value = contract::SESSION_SECRET_MOUNT)]
    pub session_dir: PathBuf,
    /// The ConsoleSession's namespace, for logs.
    #[arg(long, env = env::SESSION_NAMESPACE, default_value = "")]
    pub namespace: String,
    /// The ConsoleSession's name, for logs.
    #[arg(long, env = env::SESSION_NAME, default_value = "")]
    pub name: String,
    /// The VM's name, shown on the console page.
    #[arg(long, env = env::VM_NAME, default_value = "")]
    pub vm_name: String,
    /// Where to write the end reason on exit.
    #[arg(long, default_value = contract::TERMINATION_MESSAGE_PATH)]
    pub termination_message_path: PathBuf,
    /// Give up dialling the VNC server (or connecting to Proxmox VE) after this long.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub upstream_connect_timeout: Duration,
    /// Give up on a Proxmox VE API call or an RFB handshake after this long
    /// (HTTP request heads: --request-timeout).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Ping a viewer after this long without sending it anything, so that an
    /// Ingress or load balancer keeps an idle console open; 0s: never.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub ping_interval: Duration,
    /// Console WebSockets open at once at most (only the right token opens
    /// one); more get 503.
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    #[command(flatten)]
    pub pending: PendingArgs,
    /// Largest WebSocket message (and frame) accepted from a browser, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// The session's hard deadline (RFC 3339): it ends as `expired` then.
    #[arg(long, env = env::EXPIRES_AT, value_name = "RFC3339", value_parser = named(env::EXPIRES_AT, instant))]
    pub expires_at: Option<Timestamp>,
    /// End the session (`never-connected`) if no viewer connects this long after start.
    #[arg(long, env = env::CONNECT_TIMEOUT, value_name = "DURATION", value_parser = named(env::CONNECT_TIMEOUT, duration))]
    pub connect_timeout: Option<Duration>,
    /// End the session (`idle`) after this long without key or pointer input.
    #[arg(long, env = env::IDLE_TIMEOUT, value_name = "DURATION", value_parser = named(env::IDLE_TIMEOUT, duration))]
    pub idle_timeout: Option<Duration>,
    /// Let one viewer in, ever; its leaving ends the session (`completed`).
    #[arg(long, env = env::RUN_ONCE, action = ArgAction::SetTrue, value_parser = named(env::RUN_ONCE, boolean))]
    pub run_once: bool,
    /// `exclusive`: one viewer at a time; `shared`: any number.
    #[arg(long, env = env::VIEWERS, value_name = "POLICY", default_value = contract::VIEWERS_EXCLUSIVE, value_parser = named(env::VIEWERS, policy))]
    pub viewers: Viewers,
    /// Relay no keyboard, pointer or clipboard input.
    #[arg(long, env = env::VIEW_ONLY, action = ArgAction::SetTrue, value_parser = named(env::VIEW_ONLY, boolean))]
    pub view_only: bool,
    /// Record each viewer connection to FILE.N, as the standalone proxy's
    /// --record does, handshake included. What cannot be recorded is not
    /// relayed: the session ends as `recording-failed`.
    #[arg(long, env = env::RECORD, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// HTTP connections not yet upgraded to a WebSocket, in both modes: what
/// keeps a flood of them from shutting viewers out (see [`crate::server`]).
#[derive(Debug, Clone, clap::Args)]
pub struct PendingArgs {
    /// HTTP connections not upgraded to a WebSocket, at most; a newcomer past
    /// it closes the oldest idle one.
    #[arg(long, default_value_t = 256)]
    pub max_pending: usize,
    /// ... of them from one address (an IPv6 /64).
    #[arg(long, default_value_t = 128)]
    pub max_pending_per_source: usize,
    /// An HTTP connection must send each complete request head within this
    /// long of opening (after its TLS handshake, if any) or of its previous
    /// response.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub request_timeout: Duration,
}

impl PendingArgs {
    /// The listener's limits, with at most `max_upgraded` WebSockets.
    pub fn limits(&self, max_upgraded: usize) -> crate::server::Limits {
        crate::server::Limits {
            max_pending: self.max_pending,
            max_pending_per_source: self.max_pending_per_source,
            max_upgraded,
            request_timeout: self.request_timeout,
        }
    }
}

impl SessionArgs {
    pub fn console_limits(&self) -> crate::server::Limits {
        self.pending.limits(self.max_connections)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            expires_at: self.expires_at,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Which console a session opens.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A VNC server, dialled directly.
    Vnc {
        /// `HOST:PORT`.
        addr: String,
        password: Option<VncPassword>,
    },
    /// A Proxmox VE guest, minted at every viewer connection.
    Proxmox(Box<pve::Settings>),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Vnc { addr, .. } => write!(f, "vnc://{addr}"),
            Upstream::Proxmox(settings) => write!(f, "Proxmox VE {settings}"),
        }
    }
}

/// Everything pod mode runs on, loaded and checked.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub args: SessionArgs,
    pub token: Token,
    pub upstream: Upstream,
}

impl SessionConfig {
    /// Reads the session Secret's files: the token must be there; the VNC
    /// password may be; a Proxmox VE session needs its identity (checked
    /// here, and read again at every viewer connection).
    pub fn load(args: SessionArgs) -> Result<Self, Error> {
        let dir = &args.session_dir;
        let upstream = upstream(&args)?;
        let token = read_key(dir, secret_keys::TOKEN)?.ok_or_else(|| Error::MissingKey {
            key: secret_keys::TOKEN,
            dir: dir.clone(),
        })?;
        // Token bytes are base64, so surrounding whitespace is never part of it.
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err(Error::EmptyKey {
                key: secret_keys::TOKEN,
                dir: dir.clone(),
            });
        }
        let upstream = match upstream {
            Target::Vnc(addr) => Upstream::Vnc {
                addr,
                password: read_key(dir, secret_keys::VNC_PASSWORD)?
                    .map(|p| VncPassword::new(strip_line_end(&p))),
            },
            Target::Proxmox(settings) => {
                pve::credentials::read(dir)?;
                Upstream::Proxmox(settings)
            }
        };
        Ok(Self {
            token: Token::new(token),
            upstream,
            args,
        })
    }
}

/// The upstream the environment names, before any file is read.
enum Target {
    Vnc(String),
    Proxmox(Box<pve::Settings>),
}

fn upstream(args: &SessionArgs) -> Result<Target, Error> {
    let pve_only = [
        (env::PVE_NODE, args.pve_node.is_some()),
        (env::PVE_VM_KIND, args.pve_vm_kind.is_some()),
        (env::PVE_VMID, args.pve_vmid.is_some()),
        (env::PVE_FINGERPRINT, args.pve_fingerprint.is_some()),
        (env::PVE_INSECURE_SKIP_VERIFY, args.pve_insecure_skip_verify),
    ];
    match (&args.upstream, &args.pve_url) {
        (Some(_), Some(_)) => Err(Error::TwoUpstreams),
        (None, None) => Err(Error::NoUpstream),
        (Some(addr), None) => {
            if let Some((var, _)) = pve_only.iter().find(|(_, set)| *set) {
                return Err(Error::PveOnly { var });
            }
            if !has_port(addr) {
                return Err(Error::BadUpstream(addr.clone()));
            }
            Ok(Target::Vnc(addr.clone()))
        }
        (None, Some(url)) => {
            let missing = |var| Error::PveMissing { var };
            let trust = match (args.pve_fingerprint, args.pve_insecure_skip_verify) {
                (Some(_), true) => return Err(Error::PinAndInsecure),
                (Some(pin), false) => Trust::Pin(pin),
                (None, true) => Trust::InsecureSkipVerify,
                (None, false) => Trust::Default,
            };
            Ok(Target::Proxmox(Box::new(pve::Settings {
                url: url.clone(),
                node: args
                    .pve_node
                    .clone()
                    .ok_or_else(|| missing(env::PVE_NODE))?,
                kind: args.pve_vm_kind.ok_or_else(|| missing(env::PVE_VM_KIND))?,
                vmid: args.pve_vmid.ok_or_else(|| missing(env::PVE_VMID))?,
                trust,
                session_dir: args.session_dir.clone(),
                connect_timeout: args.upstream_connect_timeout,
                request_timeout: args.handshake_timeout,
            })))
        }
    }
}

fn read_key(dir: &Path, key: &'static str) -> Result<Option<Vec<u8>>, Error> {
    let path = dir.join(key);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// A password written with `echo` ends in a newline that is not part of it.
fn strip_line_end(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn has_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SessionArgs,
    }

    fn args(dir: &Path, upstream: &str) -> SessionArgs {
        Cli::parse_from([
            "test",
            "--upstream",
            upstream,
            "--session-dir",
            dir.to_str().unwrap(),
        ])
        .args
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("porthole-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_token_and_password() {
        let dir = temp_dir("full");
        std::fs::write(dir.join("token"), "abc123\n").unwrap();
        std::fs::write(dir.join("vnc-password"), "pw word\n").unwrap();
        let config = SessionConfig::load(args(&dir, "vnc.example:5901")).unwrap();
        assert!(config.token.matches(b"abc123"));
        assert!(matches!(
            config.upstream,
            Upstream::Vnc { password: Some(p), .. } if p == VncPassword::new("pw word")
        ));
        assert_eq!(config.args.listen.port(), contract::PROXY_PORT);
    }

    #[test]
    fn password_is_optional_token_is_not() {
        let dir = temp_dir("partial");
        assert!(matches!(
            SessionConfig::load(args(&dir, "10.0.0.1:5900")),
            Err(Error::MissingKey { .. })
        ));
        std::fs::write(dir.join("token"), " \n").unwrap();
        assert!(matches!(
            SessionConfig::load(args(&dir, "10.0.0.1:5900")),
            Err(Error::EmptyKey { .. })
        ));
        std::fs::write(dir.join("token"), "t").unwrap();
        let config = SessionConfig::load(args(&dir, "10.0.0.1:5900")).unwrap();
        assert!(matches!(
            config.upstream,
            Upstream::Vnc { password: None, .. }
        ));
    }

    fn parse(extra: &[&str]) -> Result<SessionArgs, String> {
        let base = ["test", "--upstream", "h:5900"];
        Cli::try_parse_from(base.iter().chain(extra))
            .map(|cli| cli.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn lifetime_and_viewer_settings() {
        let args = parse(&[
            "--expires-at=2030-01-01T12:00:00Z",
            "--connect-timeout=1m",
            "--idle-timeout=90s",
            "--run-once",
            "--viewers=shared",
            "--view-only",
        ])
        .unwrap();
        assert_eq!(
            args.limits(),
            Limits {
                expires_at: Some("2030-01-01T12:00:00Z".parse().unwrap()),
                connect_timeout: Some(Duration::from_secs(60)),
                idle_timeout: Some(Duration::from_secs(90)),
            }
        );
        assert!(args.run_once && args.view_only);
        assert_eq!(args.viewers, Viewers::Shared);

        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.record, None);
        assert_eq!(
            parse(&["--record=/rec/web/uid/connection"]).unwrap().record,
            Some(PathBuf::from("/rec/web/uid/connection"))
        );
        assert_eq!(defaults.limits(), Limits::default());
        assert!(!defaults.run_once && !defaults.view_only);
        assert_eq!(defaults.viewers, Viewers::Exclusive);
    }

    /// Boolean flags take no value on the command line; their variables are
    /// checked end to end (`tests/pod_mode.rs`).
    #[test]
    fn bad_values_name_the_environment_variable() {
        for (arg, var) in [
            ("--expires-at=tomorrow", env::EXPIRES_AT),
            ("--expires-at=2030-01-01T12:00:00", env::EXPIRES_AT),
            ("--connect-timeout=5 minutes", env::CONNECT_TIMEOUT),
            ("--idle-timeout=", env::IDLE_TIMEOUT),
            ("--viewers=many", env::VIEWERS),
        ] {
            let error = parse(&[arg]).unwrap_err();
            assert!(error.contains(var), "{arg}: {error}");
        }
    }

    fn pve(dir: &Path, extra: &[&str]) -> Result<SessionConfig, String> {
        let base = [
            "test",
            "--session-dir",
            dir.to_str().unwrap(),
            "--pve-url=https://pve.example:8006",
            "--pve-node=pve1",
            "--pve-vm-kind=qemu",
            "--pve-vmid=100",
        ];
        // An argument in `extra` replaces the base one of the same flag.
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_string();
        let base = base
            .into_iter()
            .filter(|arg| !extra.iter().any(|e| flag(e) == flag(arg)));
        let cli =
            Cli::try_parse_from(base.chain(extra.iter().copied())).map_err(|e| e.to_string())?;
        SessionConfig::load(cli.args).map_err(|e| e.to_string())
    }

    fn pve_dir(name: &str) -> PathBuf {
        let dir = temp_dir(name);
        std::fs::write(dir.join("token"), "t").unwrap();
        std::fs::write(dir.join("pve-ticket"), "PVE:porthole@pve:6745A1B2::c2ln").unwrap();
        std::fs::write(dir.join("pve-csrf-token"), "6745A1B2:abc").unwrap();
        dir
    }

    #[test]
    fn a_proxmox_session() {
        let dir = pve_dir("pve");
        let config = pve(&dir, &["--pve-fingerprint", &["AB"; 32].join(":")]).unwrap();
        let Upstream::Proxmox(settings) = &config.upstream else {
            panic!("{:?}", config.upstream);
        };
        assert_eq!(settings.url.to_string(), "https://pve.example:8006");
        assert_eq!(
            (settings.node.as_str(), settings.kind, settings.vmid),
            ("pve1", Kind::Qemu, 100)
        );
        assert!(matches!(settings.trust, Trust::Pin(_)));
        assert_eq!(
            config.upstream.to_string(),
            "Proxmox VE https://pve.example:8006 node pve1 qemu/100"
        );
        let lxc = pve(&dir, &["--pve-vm-kind=lxc"]).unwrap();
        assert!(
            matches!(&lxc.upstream, Upstream::Proxmox(s) if s.kind == Kind::Lxc && s.trust == Trust::Default)
        );
        // An API token instead of a ticket.
        std::fs::remove_file(dir.join("pve-ticket")).unwrap();
        std::fs::write(dir.join("pve-api-token"), "porthole@pve!console=s3cret").unwrap();
        pve(&dir, &[]).unwrap();
    }

    #[test]
    fn exactly_one_upstream_fully_described() {
        let dir = pve_dir("pve-errors");
        let none = Cli::try_parse_from(["test", "--session-dir", dir.to_str().unwrap()]).unwrap();
        let error = SessionConfig::load(none.args).unwrap_err().to_string();
        assert!(
            error.contains(env::UPSTREAM) && error.contains(env::PVE_URL),
            "{error}"
        );
        for (extra, expected) in [
            (&["--upstream=h:5900"][..], "not both"),
            (
                &[
                    "--pve-insecure-skip-verify",
                    "--pve-fingerprint",
                    &["AB"; 32].join(":"),
                ][..],
                "not both",
            ),
            (&["--pve-url=http://pve.example:8006"][..], env::PVE_URL),
            (&["--pve-vm-kind=vm"][..], env::PVE_VM_KIND),
            (&["--pve-vmid=99"][..], env::PVE_VMID),
            (&["--pve-vmid=abc"][..], env::PVE_VMID),
            (&["--pve-node=a/b"][..], env::PVE_NODE),
            (&["--pve-fingerprint=AB:CD"][..], env::PVE_FINGERPRINT),
        ] {
            let error = pve(&dir, extra).unwrap_err();
            assert!(error.contains(expected), "{extra:?}: {error}");
        }
        let partial = Cli::try_parse_from([
            "test",
            "--session-dir",
            dir.to_str().unwrap(),
            "--pve-url=https://pve.example:8006",
            "--pve-node=pve1",
            "--pve-vmid=100",
        ])
        .unwrap();
        let error = SessionConfig::load(partial.args).unwrap_err().to_string();
        assert!(error.contains(env::PVE_VM_KIND), "{error}");
        let stray = Cli::try_parse_from([
            "test",
            "--session-dir",
            dir.to_str().unwrap(),
            "--upstream=h:5900",
            "--pve-vmid=100",
        ])
        .unwrap();
        let error = SessionConfig::load(stray.args).unwrap_err().to_string();
        assert!(
            error.contains(env::PVE_VMID) && error.contains("only applies"),
            "{error}"
        );
    }

    #[test]
    fn a_proxmox_session_needs_its_identity_at_start() {
        let dir = pve_dir("pve-identity");
        std::fs::remove_file(dir.join("pve-csrf-token")).unwrap();
        let error = pve(&dir, &[]).unwrap_err();
        assert!(error.contains("pve-csrf-token"), "{error}");
        std::fs::remove_file(dir.join("pve-ticket")).unwrap();
        let error = pve(&dir, &[]).unwrap_err();
        assert!(error.contains("no Proxmox VE credential"), "{error}");
    }

    #[test]
    fn upstream_needs_a_port() {
        let dir = temp_dir("upstream");
        for bad in ["vnc.example", ":5900", "host:port", "host:99999"] {
            assert!(matches!(
                SessionConfig::load(args(&dir, bad)),
                Err(Error::BadUpstream(_))
            ));
        }
        assert!(has_port("[fd00::1]:5900"));
    }
}
