//! TLS material for the wss runs: a self-signed certificate for `localhost`
//! that every contender serves, and a client that trusts it and offers a single
//! cipher suite, so that every contender encrypts with the same cipher.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use rustls::ClientConfig;
use rustls::crypto::ring;

/// The one suite offered: AES-128-GCM, which every contender's TLS library
/// runs with AES-NI.
pub const SUITE: &str = "TLS13_AES_128_GCM_SHA256";

/// The certificate and key files, and the client config that trusts them.
pub struct Material {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: Arc<ClientConfig>,
}

/// Writes `cert.pem` and `key.pem` into `dir`.
pub fn material(dir: &Path) -> Result<Material> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..ring::default_provider()
    };
    let client = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Material {
        cert,
        key,
        client: Arc::new(client),
    })
}
