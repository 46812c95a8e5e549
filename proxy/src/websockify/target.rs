//! Where standalone mode relays to: a TCP address, a Unix socket, or a target
//! looked up by token in websockify's TokenFile format.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

/// A byte stream of any kind: TCP, Unix or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why an address or a token file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not [ADDR:]PORT")]
    BadSource(String),
    #[error("{0:?} is not HOST:PORT")]
    BadTarget(String),
    #[error("cannot resolve {addr:?}: {source}")]
    Resolve { addr: String, source: io::Error },
}

/// websockify's `[source_addr:]source_port`: a bare port listens everywhere.
pub fn parse_source(text: &str) -> Result<SocketAddr, Error> {
    let bad = || Error::BadSource(text.to_string());
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            addr: text.to_string(),
            source,
        })?
        .next()
        .ok_or_else(bad)
}

/// `target_addr:target_port`, resolved when dialled.
pub fn parse_target(text: &str) -> Result<String, Error> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(Error::BadTarget(text.to_string())),
    }
}

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Tcp(String),
    Unix(PathBuf),
}

impl Destination {
    /// Dials, wrapping in TLS (to the target's host name) when `tls` is given.
    pub async fn connect(&self, tls: Option<&Arc<ClientConfig>>) -> io::Result<Box<dyn Io>> {
        match self {
            Destination::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
            Destination::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                // A target that vanishes without a FIN ends the relay too.
                crate::liveness::watch_or_warn(&stream);
                let Some(tls) = tls else {
                    return Ok(Box::new(stream));
                };
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Ok(Box::new(
                    TlsConnector::from(tls.clone())
                        .connect(name, stream)
                        .await?,
                ))
            }
        }
    }
}

/// Looks `token` up in a TokenFile source: a file, or a directory of files, of
/// `token: host:port` lines. Read on each lookup so edits apply at once.
pub fn lookup_token(source: &Path, token: &str) -> Option<Destination> {
    let files = if source.is_dir() {
        std::fs::read_dir(source)
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect()
    } else {
        vec![source.to_path_buf()]
    };
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        find_token(&text, token)
    })
}

/// The target of `token` in a TokenFile's text. Every line is compared, in
/// constant time, so how long a lookup takes says nothing about how close a
/// guess came.
fn find_token(text: &str, token: &str) -> Option<Destination> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, target)) = line.split_once(':') else {
            continue;
        };
        let matches = bool::from(name.trim().as_bytes().ct_eq(token.as_bytes()));
        if matches && found.is_none() {
            let target = target.trim();
            found = Some(match target.strip_prefix("unix_socket:") {
                Some(path) => Some(Destination::Unix(PathBuf::from(path.trim()))),
                None => parse_target(target).ok().map(Destination::Tcp),
            });
        }
    }
    found.flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("6080").unwrap(),
            "0.0.0.0:6080".parse().unwrap()
        );
        assert_eq!(
            parse_source("127.0.0.1:6080").unwrap(),
            "127.0.0.1:6080".parse().unwrap()
        );
        assert_eq!(
            parse_source(":6080").unwrap(),
            "0.0.0.0:6080".parse().unwrap()
        );
        assert_eq!(
            parse_source("[::1]:6080").unwrap(),
            "[::1]:6080".parse().unwrap()
        );
        assert!(parse_source("localhost:6080").unwrap().ip().is_loopback());
        assert!(parse_source("6080x").is_err());
        assert!(parse_source("host:").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("vnc.example:5900").unwrap(),
            "vnc.example:5900"
        );
        assert!(parse_target("5900").is_err());
        assert!(parse_target(":5900").is_err());
    }

    #[test]
    fn token_file_lines() {
        let text = "# comment\n\nvm1: 10.0.0.1:5901\nvm2 : host.example:5902\nvm3: unix_socket:/run/vm3.sock\n";
        assert_eq!(
            find_token(text, "vm1"),
            Some(Destination::Tcp("10.0.0.1:5901".into()))
        );
        assert_eq!(
            find_token(text, "vm2"),
            Some(Destination::Tcp("host.example:5902".into()))
        );
        assert_eq!(
            find_token(text, "vm3"),
            Some(Destination::Unix("/run/vm3.sock".into()))
        );
        assert_eq!(find_token(text, "vm"), None);
        assert_eq!(find_token(text, "# comment"), None);
    }
}
