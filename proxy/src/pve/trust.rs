//! Whom the proxy believes to be Proxmox VE: a CA bundle from the session
//! directory, a pinned certificate fingerprint, explicitly nobody in
//! particular, or by default the public web PKI.
//!
//! One [`ClientConfig`] serves both the API call and the WebSocket of a
//! console. The CA bundle is a file of the session Secret, which the kubelet
//! may swap at any time, so it is read at every connection and the config
//! rebuilt when its bytes change.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use porthole_pve::tls::{self, Roots};
pub use porthole_pve::tls::{BadFingerprint, Fingerprint, describe, rustls_error};
use rustls::ClientConfig;

/// How the API's certificate is checked, as the environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The leaf certificate's SHA-256 fingerprint must be this one; names and
    /// dates are not checked (Proxmox VE's certificates are often self-signed).
    Pin(Fingerprint),
    /// Anything goes: an explicit, logged opt-in.
    InsecureSkipVerify,
    /// The CA bundle `pve-ca.crt` when the session directory has one, else
    /// the public web PKI.
    Default,
}

/// The CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("{path} holds a certificate rustls cannot use: {detail}")]
    Unusable { path: PathBuf, detail: String },
}

/// The client configs for one session, by [`Trust`].
#[derive(Debug)]
pub struct Configs {
    trust: Trust,
    ca_path: PathBuf,
    /// The last config built, with the CA bundle it was built from (`None`:
    /// a config that reads no file).
    cached: Mutex<Option<Built>>,
}

/// A config and the CA bundle it was built from.
type Built = (Option<Vec<u8>>, Arc<ClientConfig>);

impl Configs {
    pub fn new(trust: Trust, ca_path: PathBuf) -> Self {
        Self {
            trust,
            ca_path,
            cached: Mutex::new(None),
        }
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The config to connect with now.
    pub fn current(&self) -> Result<Arc<ClientConfig>, CaError> {
        let ca = match self.trust {
            Trust::Default => match std::fs::read(&self.ca_path) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(CaError::Read {
                        path: self.ca_path.clone(),
                        source,
                    });
                }
            },
            _ => None,
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_from, config)) = cached.as_ref()
            && *built_from == ca
        {
            return Ok(config.clone());
        }
        let config = self.build(ca.as_deref())?;
        *cached = Some((ca, config.clone()));
        Ok(config)
    }

    fn build(&self, ca: Option<&[u8]>) -> Result<Arc<ClientConfig>, CaError> {
        let (pin, roots) = match (&self.trust, ca) {
            (Trust::Pin(pin), _) => (Some(*pin), Roots::None),
            (Trust::InsecureSkipVerify, _) => (None, Roots::None),
            (Trust::Default, Some(pem)) => (
                None,
                Roots::Store(tls::root_store(pem).map_err(|e| self.ca_error(e))?),
            ),
            (Trust::Default, None) => (None, Roots::WebPki),
        };
        tls::config(pin, roots).map_err(|e| self.ca_error(e))
    }

    fn ca_error(&self, error: tls::Error) -> CaError {
        let path = self.ca_path.clone();
        match error {
            tls::Error::EmptyCaBundle => CaError::Empty { path },
            other => CaError::Unusable {
                path,
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("porthole-pve-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pve-ca.crt");
        let configs = Configs::new(Trust::Default, path.clone());
        let _ = std::fs::remove_file(&path);
        let public = configs.current().unwrap();
        assert!(Arc::ptr_eq(&public, &configs.current().unwrap()), "cached");
        std::fs::write(&path, "not PEM").unwrap();
        assert!(matches!(configs.current(), Err(CaError::Empty { .. })));
        // Pins and the insecure mode read no file.
        let pinned = Configs::new(Trust::Pin(Fingerprint([0; 32])), path.clone());
        assert!(pinned.current().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
