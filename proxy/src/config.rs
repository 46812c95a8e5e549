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

/// `porthole-proxy session`: serve one console session in a proxy pod.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = env::LISTEN, default_value_t = SocketAddr::from(([0, 0, 0, 0], contract::PROXY_PORT)))]
    pub listen: SocketAddr,
    /// HOST:PORT of the VNC server.
    #[arg(long, env = env::UPSTREAM)]
    pub upstream: String,
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
    /// Give up dialling the VNC server after this long.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub upstream_connect_timeout: Duration,
    /// Give up on an HTTP request head or an RFB handshake after this long.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// Open connections (HTTP and WebSocket) at most; more wait to be accepted.
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
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
}

impl SessionArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            expires_at: self.expires_at,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Everything pod mode runs on, loaded and checked.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub args: SessionArgs,
    pub token: Token,
    pub vnc_password: Option<VncPassword>,
}

impl SessionConfig {
    /// Reads the session Secret's files: the token must be there, the VNC
    /// password may be.
    pub fn load(args: SessionArgs) -> Result<Self, Error> {
        if !has_port(&args.upstream) {
            return Err(Error::BadUpstream(args.upstream));
        }
        let dir = &args.session_dir;
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
        let vnc_password =
            read_key(dir, secret_keys::VNC_PASSWORD)?.map(|p| VncPassword::new(strip_line_end(&p)));
        Ok(Self {
            token: Token::new(token),
            vnc_password,
            args,
        })
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
        assert_eq!(config.vnc_password, Some(VncPassword::new("pw word")));
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
        assert_eq!(config.vnc_password, None);
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
