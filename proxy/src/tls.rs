//! TLS for standalone mode: a server config from PEM files (optionally asking
//! clients for certificates) whose certificate follows the files as they
//! change, and websockify's unverified `--ssl-target` client. The crypto
//! provider is always ring, chosen explicitly.
//!
//! # Certificate reload
//!
//! A Kubernetes Secret volume updates by writing the new files into a fresh
//! directory and swapping a `..data` symlink to it; `tls.crt` and `tls.key`
//! are symlinks through `..data`. A file watch on `tls.crt` can miss that
//! swap, so [`CertificateFiles::watch`] polls instead: every interval it
//! `stat`s both paths (following symlinks) and reloads only when the device,
//! inode, size, modification or change time of either differs. New TLS
//! connections then get the new certificate; open ones keep theirs. A pair
//! that does not load (a key that does not match, a file half-written) is
//! logged and the previous certificate stays in use until a good pair appears.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_util::sync::CancellationToken;

/// The first byte of a TLS ClientHello record; a plain HTTP request starts
/// with a letter instead.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn open(path: &Path) -> Result<BufReader<File>, Error> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// A server config whose certificate comes from `files` (and follows them as
/// they change, once [`CertificateFiles::watch`] runs). With `client_ca`,
/// clients must present a certificate it signed.
pub fn server_config(
    files: Arc<CertificateFiles>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert)?;
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(files);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What `stat` says about a file, to notice it changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The files (certificate, key) as last loaded, and as last seen failing to
/// load.
#[derive(Debug, Default)]
struct Seen {
    loaded: Option<[Stamp; 2]>,
    failed: Option<[Stamp; 2]>,
}

/// A certificate chain and key read from PEM files (which may be one file,
/// as websockify's `self.pem` is), reloaded when they change.
#[derive(Debug)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<Seen>,
}

impl CertificateFiles {
    /// Loads the pair once; an error here means TLS cannot start.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, Error> {
        let stamps = Self::stamps(cert, key);
        let certified = certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            stamps: Mutex::new(Seen {
                loaded: stamps,
                failed: None,
            }),
        }))
    }

    fn stamps(cert: &Path, key: &Path) -> Option<[Stamp; 2]> {
        Some([Stamp::of(cert)?, Stamp::of(key)?])
    }

    /// The certificate chain new connections get.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .clone()
    }

    /// Reloads the pair if either file changed since it was last loaded;
    /// says whether the certificate changed. A pair that fails to load keeps
    /// the current certificate and is reported once per change of the files.
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let now = Self::stamps(&self.cert, &self.key);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || now == seen.loaded || now == seen.failed {
            return Ok(false);
        }
        match certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                *seen = Seen {
                    loaded: now,
                    failed: None,
                };
                Ok(true)
            }
            Err(e) => {
                seen.failed = now;
                Err(e)
            }
        }
    }

    /// Polls the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the TLS certificate; keeping the previous one");
                }
            }
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Reads a chain and its key and checks they belong together.
fn certified_key(cert: &Path, key_path: &Path) -> Result<CertifiedKey, Error> {
    let chain = certificates(cert)?;
    let key = rustls_pemfile::private_key(&mut open(key_path)?)
        .map_err(|source| Error::Read {
            path: key_path.to_owned(),
            source,
        })?
        .ok_or_else(|| Error::NoKey(key_path.to_owned()))?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

/// websockify's `--ssl-target`: TLS to the target without verifying it, as
/// websockify does. It protects against eavesdroppers, not impostors.
pub fn unverified_client_config() -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServer(provider.signature_verification_algorithms));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any certificate but still checks the handshake signatures, so the
/// peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn reloads_only_a_changed_pair_that_loads() {
        let dir = std::env::temp_dir().join(format!("porthole-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (first_cert, first_key) = pair();
        std::fs::write(&cert, &first_cert).unwrap();
        std::fs::write(&key, &first_key).unwrap();
        let files = CertificateFiles::load(&cert, &key).unwrap();
        let first = files.chain();
        assert!(!files.reload_if_changed().unwrap(), "nothing changed");

        // A certificate whose key has not arrived yet: an error, once.
        let (second_cert, second_key) = pair();
        std::fs::write(&cert, &second_cert).unwrap();
        assert!(files.reload_if_changed().is_err());
        assert!(!files.reload_if_changed().unwrap(), "reported once");
        assert_eq!(files.chain(), first, "the last good pair stays");

        std::fs::write(&key, &second_key).unwrap();
        assert!(files.reload_if_changed().unwrap());
        assert_ne!(files.chain(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
