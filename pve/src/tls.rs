//! How porthole trusts a Proxmox VE API: a CA bundle, a SHA-256 pin of the
//! server's certificate, the public web PKI, or (an explicit, visible opt-in)
//! nothing at all. One `rustls::ClientConfig` serves both the API requests and
//! the console WebSocket, so they can never disagree.

use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the Hypervisor says about verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM CA certificates to trust.
    pub ca_bundle: Option<String>,
    /// Trust exactly the leaf certificate with this SHA-256 fingerprint
    /// (`AA:BB:...`; case and colons do not matter).
    pub fingerprint_sha256: Option<String>,
    /// Verify nothing.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the CA bundle holds no PEM certificate")]
    EmptyCaBundle,
    #[error("the CA bundle is not valid PEM: {0}")]
    BadCaBundle(String),
    #[error("the certificate fingerprint must be 32 hex bytes such as AA:BB:..., not {0:?}")]
    BadFingerprint(String),
}

/// The message of the certificate error a pin mismatch produces, so callers can
/// tell it from other TLS failures.
pub const PIN_MISMATCH: &str =
    "the server certificate does not match the pinned SHA-256 fingerprint";

/// Builds the client configuration for `settings`. The CA bundle wins over the
/// pin when both are set (the CRD allows it): the CA then verifies the chain and
/// the name, and the pin is checked on top.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let pin = settings
        .fingerprint_sha256
        .as_deref()
        .map(parse_fingerprint)
        .transpose()?;
    let algorithms = provider.signature_verification_algorithms;
    let config = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: None,
                inner: None,
                algorithms,
            }))
            .with_no_client_auth()
    } else {
        let roots = match &settings.ca_bundle {
            Some(pem) => Some(root_store(pem)?),
            None if pin.is_some() => None,
            None => Some(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        match (roots, pin) {
            (Some(roots), None) => builder.with_root_certificates(roots).with_no_client_auth(),
            (roots, pin) => {
                let inner = roots
                    .map(|roots| {
                        rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| Error::BadCaBundle(e.to_string()))
                    })
                    .transpose()?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Pinned {
                        pin,
                        inner,
                        algorithms,
                    }))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Arc::new(config))
}

/// The process-wide crypto provider (ring, as everywhere in porthole).
pub fn provider() -> Arc<CryptoProvider> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Another part of the process may have installed it first; that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(pem: &str) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::BadCaBundle(e.to_string()))?;
        store
            .add(cert)
            .map_err(|e| Error::BadCaBundle(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(Error::EmptyCaBundle);
    }
    Ok(store)
}

/// `AA:BB:..` or `aabb..` into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], Error> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || Error::BadFingerprint(text.to_string());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The SHA-256 fingerprint of a DER certificate, as `AA:BB:...`.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Verifies the pin (when set), then the chain (when a CA is set). With
/// neither, this is `insecureSkipVerify`. Handshake signatures are always
/// checked, so the peer must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let actual = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            if actual.as_ref() != pin {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(PinMismatch)),
                )));
            }
        }
        match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            }
            None => Ok(ServerCertVerified::assertion()),
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

#[derive(Debug, thiserror::Error)]
#[error("{PIN_MISMATCH}")]
struct PinMismatch;

/// Whether `error` (or anything it wraps) is a TLS certificate failure, and if
/// so, a readable description of it.
pub fn certificate_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(cert)) = e.downcast_ref::<rustls::Error>() {
            return Some(match cert {
                CertificateError::Other(other) if other.to_string() == PIN_MISMATCH => {
                    PIN_MISMATCH.to_string()
                }
                CertificateError::UnknownIssuer => {
                    "the server certificate is not signed by a trusted CA".to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "the server certificate is not valid for this host name".to_string()
                }
                other => format!("the server certificate was rejected: {other:?}"),
            });
        }
        // Some layers of the HTTP stack keep only the text of the TLS error.
        if let Some(text) = certificate_failure_text(&e.to_string()) {
            return Some(text);
        }
        // An io::Error's source() skips the error it wraps: look inside.
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.get_ref().is_some() => io.get_ref().map(|inner| inner as _),
            _ => e.source(),
        };
    }
    None
}

/// Recognises rustls' "invalid peer certificate: ..." in an error's text.
fn certificate_failure_text(text: &str) -> Option<String> {
    let (_, detail) = text.split_once("invalid peer certificate")?;
    Some(
        if detail.contains("PinMismatch") || detail.contains(PIN_MISMATCH) {
            PIN_MISMATCH.to_string()
        } else if detail.contains("UnknownIssuer") {
            "the server certificate is not signed by a trusted CA".to_string()
        } else if detail.contains("NotValidForName") {
            "the server certificate is not valid for this host name".to_string()
        } else {
            format!("the server certificate was rejected{detail}")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons_and_in_any_case() {
        let upper = ["AB"; 32].join(":");
        let lower = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&upper), Ok([0xab; 32]));
        assert_eq!(parse_fingerprint(&lower), Ok([0xab; 32]));
    }

    #[test]
    fn short_or_non_hex_fingerprints_are_refused() {
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&["ZZ"; 32].join(":")).is_err());
        assert!(parse_fingerprint(&"é".repeat(32)).is_err());
    }

    #[test]
    fn fingerprint_formats_like_openssl() {
        let text = fingerprint(b"");
        assert_eq!(
            text,
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
        assert_eq!(
            parse_fingerprint(&text).map(|b| b.to_vec()),
            Ok(ring::digest::digest(&ring::digest::SHA256, b"")
                .as_ref()
                .to_vec())
        );
    }

    #[test]
    fn certificate_failures_are_found_inside_io_errors() {
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch)),
        ));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        assert_eq!(certificate_failure(&io), Some(PIN_MISMATCH.to_string()));
        let wrapped = std::io::Error::other(
            "client error (Connect): invalid peer certificate: Other(OtherError(PinMismatch))",
        );
        assert_eq!(
            certificate_failure(&wrapped),
            Some(PIN_MISMATCH.to_string())
        );
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_failure(&plain), None);
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error() {
        let settings = TlsSettings {
            ca_bundle: Some("not pem".into()),
            ..TlsSettings::default()
        };
        assert_eq!(client_config(&settings).err(), Some(Error::EmptyCaBundle));
    }
}
