//! Whom the proxy believes to be Proxmox VE: a CA bundle from the session
//! directory, a pinned certificate fingerprint, explicitly nobody in
//! particular, or by default the public web PKI.
//!
//! One [`ClientConfig`] serves both the API call and the WebSocket of a
//! console. The CA bundle is a file of the session Secret, which the kubelet
//! may swap at any time, so it is read at every connection and the config
//! rebuilt when its bytes change.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

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

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Self(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

/// The fingerprint is not `AA:BB:...` (32 bytes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "not a SHA-256 fingerprint: expected 32 hexadecimal bytes separated by colons (AA:BB:...), as `openssl x509 -noout -fingerprint -sha256` prints them"
)]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// `AA:BB:...` in either case; bare hex is accepted too.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let text = text
            .strip_prefix("sha256 Fingerprint=")
            .or_else(|| text.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(text);
        let hex: Vec<&str> = if text.contains(':') {
            text.split(':').collect()
        } else if text.len() == 64 && text.is_ascii() {
            (0..32).map(|i| &text[2 * i..2 * i + 2]).collect()
        } else {
            return Err(BadFingerprint);
        };
        if hex.len() != 32 {
            return Err(BadFingerprint);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex) {
            if pair.len() != 2 {
                return Err(BadFingerprint);
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The certificate's fingerprint differs from the pin: carried inside
/// rustls's error so the caller can say which certificate it saw.
#[derive(Debug, thiserror::Error)]
#[error("its SHA-256 fingerprint {got} is not the pinned {want}")]
pub struct PinMismatch {
    pub got: Fingerprint,
    pub want: Fingerprint,
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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let config = match (&self.trust, ca) {
            (Trust::Pin(pin), _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin: Some(*pin),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            (Trust::InsecureSkipVerify, _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin: None,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            (Trust::Default, Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut &*pem) {
                    let cert = cert.map_err(|e| CaError::Unusable {
                        path: self.ca_path.clone(),
                        detail: e.to_string(),
                    })?;
                    roots.add(cert).map_err(|e| CaError::Unusable {
                        path: self.ca_path.clone(),
                        detail: e.to_string(),
                    })?;
                }
                if roots.is_empty() {
                    return Err(CaError::Empty {
                        path: self.ca_path.clone(),
                    });
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (Trust::Default, None) => builder
                .with_root_certificates(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// Accepts the leaf certificate whose fingerprint is the pin (or, without a
/// pin, any certificate), and still checks the handshake signature, so the
/// server must hold the certificate's private key.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(want) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let got = Fingerprint::of(end_entity);
        if bool::from(subtle::ConstantTimeEq::ct_eq(&got.0[..], &want.0[..])) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch { got, want })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error inside an I/O error from a TLS handshake, if any.
pub fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS failure in words: the pin mismatch, or rustls's own.
pub fn describe(error: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = error
        && let Some(mismatch) = inner.downcast_ref::<PinMismatch>()
    {
        return mismatch.to_string();
    }
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "5A:0B:7C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";

    #[test]
    fn fingerprints_parse_as_openssl_prints_them() {
        let pin: Fingerprint = HEX.parse().unwrap();
        assert_eq!(pin.to_string(), HEX);
        assert_eq!(HEX.to_lowercase().parse::<Fingerprint>(), Ok(pin));
        assert_eq!(HEX.replace(':', "").parse::<Fingerprint>(), Ok(pin));
        assert_eq!(
            format!("sha256 Fingerprint={HEX}").parse::<Fingerprint>(),
            Ok(pin)
        );
        for bad in [
            "",
            "5A:0B",
            &HEX[3..],
            &format!("{HEX}:00"),
            &HEX.replace("5A", "5G"),
            &HEX.replace("5A:", "5:A"),
        ] {
            assert_eq!(bad.parse::<Fingerprint>(), Err(BadFingerprint), "{bad}");
        }
    }

    fn verify(pin: Option<Fingerprint>, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = PinVerifier {
            pin,
            algorithms: provider().signature_verification_algorithms,
        };
        verifier.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("pve.example").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn the_pin_accepts_exactly_its_certificate() {
        let der = b"not really a certificate, but bytes to hash";
        let pin = Fingerprint::of(der);
        assert!(verify(Some(pin), der).is_ok());
        let error = verify(Some(pin), b"another certificate").unwrap_err();
        assert!(matches!(error, rustls::Error::InvalidCertificate(_)));
        let text = describe(&error);
        assert!(text.contains(&format!("is not the pinned {pin}")), "{text}");
        assert!(text.contains(&Fingerprint::of(b"another certificate").to_string()));
        assert!(
            verify(None, b"anything").is_ok(),
            "insecure accepts anything"
        );
    }

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
