//! How porthole trusts a Proxmox VE API: a CA bundle, a SHA-256 pin of the
//! server's certificate, the public web PKI, or (an explicit, visible opt-in)
//! nothing at all. The operator (login) and the proxy (consoles) build their
//! `rustls::ClientConfig` here, so they verify alike.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Once};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

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

/// A pin mismatch described without the fingerprints, for errors that reach
/// porthole as text only.
pub const PIN_MISMATCH: &str =
    "the server certificate does not match the pinned SHA-256 fingerprint";

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

    /// `AA:BB:...` in either case, with or without openssl's
    /// `sha256 Fingerprint=` prefix; bare hex is accepted too.
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

/// Which certificate authorities vouch for the server.
#[derive(Debug)]
pub enum Roots {
    /// None: only the pin (or nothing, `insecureSkipVerify`) decides.
    None,
    /// The public web PKI.
    WebPki,
    /// These CAs (a `caBundle`).
    Store(RootCertStore),
}

/// Builds the client configuration for `settings`. When both a CA bundle and a
/// pin are set (the CRD allows it), the CA verifies the chain and the name and
/// the pin is checked on top.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, Error> {
    let pin = settings
        .fingerprint_sha256
        .as_deref()
        .map(|text| {
            text.parse::<Fingerprint>()
                .map_err(|_| Error::BadFingerprint(text.to_string()))
        })
        .transpose()?;
    let roots = match &settings.ca_bundle {
        _ if settings.insecure_skip_verify => Roots::None,
        Some(pem) => Roots::Store(root_store(pem.as_bytes())?),
        None if pin.is_some() => Roots::None,
        None => Roots::WebPki,
    };
    config(pin, roots)
}

/// The client configuration that checks `pin` (when set) and then the chain
/// against `roots`. With neither, it accepts any certificate; handshake
/// signatures are always checked, so the peer must hold the certificate's key.
pub fn config(pin: Option<Fingerprint>, roots: Roots) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let store = match roots {
        Roots::None => None,
        Roots::WebPki => Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Roots::Store(store) => Some(store),
    };
    let config = match (pin, store) {
        (None, Some(store)) => builder.with_root_certificates(store).with_no_client_auth(),
        (pin, store) => {
            let chain = store
                .map(|store| {
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                        .build()
                        .map_err(|e| Error::BadCaBundle(e.to_string()))
                })
                .transpose()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin,
                    chain,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
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

/// The CA certificates of a PEM bundle; at least one.
pub fn root_store(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &*pem) {
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

/// Accepts the leaf certificate whose fingerprint is the pin (or, without a
/// pin, any certificate), then lets `chain` verify it when set.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<Fingerprint>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(want) = self.pin {
            let got = Fingerprint::of(end_entity);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(&got.0[..], &want.0[..])) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(PinMismatch { got, want })),
                )));
            }
        }
        match &self.chain {
            Some(chain) => {
                chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

/// The rustls error inside an I/O error from a TLS handshake, if any.
pub fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS failure in words: the pin mismatch with both fingerprints, or rustls's own.
pub fn describe(error: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = error
        && let Some(mismatch) = inner.downcast_ref::<PinMismatch>()
    {
        return mismatch.to_string();
    }
    error.to_string()
}

/// Whether `error` (or anything it wraps) is a TLS certificate failure, and if
/// so, a readable description of it.
pub fn certificate_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let chain = || {
        std::iter::successors(Some(error), |e| match e.downcast_ref::<std::io::Error>() {
            // An io::Error's source() skips the error it wraps: look inside.
            Some(io) if io.get_ref().is_some() => io.get_ref().map(|inner| inner as _),
            _ => e.source(),
        })
    };
    let typed = chain().find_map(|e| match e.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(cert)) => Some(match cert {
            CertificateError::UnknownIssuer => {
                "the server certificate is not signed by a trusted CA".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server certificate is not valid for this host name".to_string()
            }
            _ => describe(&rustls::Error::InvalidCertificate(cert.clone())),
        }),
        _ => None,
    });
    // Some layers of the HTTP stack keep only the text of the TLS error.
    typed.or_else(|| chain().find_map(|e| certificate_failure_text(&e.to_string())))
}

/// Recognises rustls' "invalid peer certificate: ..." in an error's text.
fn certificate_failure_text(text: &str) -> Option<String> {
    let (_, detail) = text.split_once("invalid peer certificate")?;
    Some(if detail.contains("PinMismatch") {
        PIN_MISMATCH.to_string()
    } else if detail.contains("UnknownIssuer") {
        "the server certificate is not signed by a trusted CA".to_string()
    } else if detail.contains("NotValidForName") {
        "the server certificate is not valid for this host name".to_string()
    } else {
        format!("the server certificate was rejected{detail}")
    })
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
            &"é".repeat(32),
        ] {
            assert_eq!(bad.parse::<Fingerprint>(), Err(BadFingerprint), "{bad}");
        }
    }

    #[test]
    fn fingerprint_formats_like_openssl() {
        assert_eq!(
            Fingerprint::of(b"").to_string(),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    fn verify(pin: Option<Fingerprint>, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = PinVerifier {
            pin,
            chain: None,
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
        assert_eq!(certificate_failure(&error), Some(text));
        assert!(
            verify(None, b"anything").is_ok(),
            "insecure accepts anything"
        );
    }

    #[test]
    fn certificate_failures_are_found_inside_io_errors() {
        let pin = Fingerprint([0; 32]);
        let rustls_error = verify(Some(pin), b"another certificate").unwrap_err();
        let expected = describe(&rustls_error);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        assert_eq!(certificate_failure(&io), Some(expected));
        let wrapped = std::io::Error::other(
            "client error (Connect): invalid peer certificate: Other(OtherError(PinMismatch { got: .. }))",
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

    #[test]
    fn a_malformed_pin_is_an_error_naming_it() {
        let settings = TlsSettings {
            fingerprint_sha256: Some("AB:CD".into()),
            ..TlsSettings::default()
        };
        assert_eq!(
            client_config(&settings).err(),
            Some(Error::BadFingerprint("AB:CD".into()))
        );
    }
}
