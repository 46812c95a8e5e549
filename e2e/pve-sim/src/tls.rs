//! The simulator's PKI, generated at start like a fresh PVE cluster's: a cluster CA
//! (`pve-root-ca.pem`, returned as `cert` by vncproxy) and a node certificate signed
//! by it, served on the API port. Keys are ECDSA P-256 (PVE uses RSA; clients do
//! not care).

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors generating certificates or the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The generated CA and server certificate.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Pki {
    /// A CA and a server certificate for `node` with SANs `ip`, `localhost`,
    /// `127.0.0.1` and the node name.
    pub fn generate(node: &str, ip: IpAddr) -> Result<Pki, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "Proxmox Virtual Environment");
        ca_name.push(DnType::OrganizationName, "PVE Cluster Manager CA");
        ca_name.push(DnType::OrganizationalUnitName, "porthole-pve-sim");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names = vec![ip.to_string(), "localhost".to_string()];
        for extra in ["127.0.0.1", node] {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.to_string());
            }
        }
        let server_key = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(names)?;
        let mut server_name = DistinguishedName::new();
        server_name.push(DnType::CommonName, node);
        server_name.push(DnType::OrganizationName, "PVE Cluster Node");
        server_name.push(DnType::OrganizationalUnitName, "PVE Cluster Node");
        server_params.distinguished_name = server_name;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        Ok(Pki {
            ca_pem: ca_cert.pem(),
            server_cert_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
        })
    }

    /// SHA-256 of the server (leaf) certificate, as `openssl x509 -fingerprint
    /// -sha256` prints it: upper-case hex pairs joined by colons.
    pub fn fingerprint_sha256(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.server_cert_der.as_ref());
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A rustls server configuration with the ring provider, HTTP/1.1 only (as
    /// pveproxy).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert_der.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_colon_hex_of_the_leaf() {
        let pki = Pki::generate("pve", "127.0.0.1".parse().unwrap()).unwrap();
        let fingerprint = pki.fingerprint_sha256();
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(fingerprint.split(':').all(|pair| {
            pair.len() == 2
                && pair
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        }));
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        pki.server_config().unwrap();
    }
}
