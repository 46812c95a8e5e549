//! Standalone mode's TLS: client certificates (`--verify-client --cafile`)
//! and a certificate that changes under the proxy as a Kubernetes Secret
//! volume changes.

mod support;

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use support::{
    CountingListener, Leaf, Pki, TempDir, Websockify, echoes, eventually, proxy_status, tls_client,
    tls_connect, websocket, wss,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn verify_client_admits_only_certificates_from_the_ca() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("verify-client");
    let pki = Pki::new("clients-ca");
    let server = pki.server();
    let cert = write(dir.path(), "server.crt", &server.cert_pem);
    let key = write(dir.path(), "server.key", &server.key_pem);
    let ca = write(dir.path(), "ca.crt", &pki.ca_pem());
    let proxy = Websockify::start(
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "--verify-client",
            "--cafile",
            &ca,
        ],
        &[&echo.addr.to_string()],
    )
    .await;
    let roots = [pki.ca_der()];

    let mut ws = wss(
        proxy.addr,
        &tls_client(&roots, Some(&pki.client())),
        Some("binary"),
    )
    .await
    .expect("a client certificate from the CA is admitted");
    assert!(echoes(&mut ws).await);

    let stranger = Pki::new("another-ca").client();
    for (what, identity) in [("no certificate", None), ("another CA's", Some(&stranger))] {
        let refused = wss(proxy.addr, &tls_client(&roots, identity), Some("binary")).await;
        assert!(refused.is_err(), "{what}: admitted");
    }
    // Plain HTTP on the same port presents no certificate at all: refused,
    // as with --ssl-only, rather than let past the check.
    let plain = websocket(proxy.addr, "/websockify", Some("binary")).await;
    assert!(plain.is_err(), "a plain WebSocket was admitted");
    assert_eq!(echo.count(), 1, "refused clients never reach the target");
    // Refusals leave the proxy serving.
    let mut ws = wss(proxy.addr, &tls_client(&roots, Some(&pki.client())), None)
        .await
        .unwrap();
    assert!(echoes(&mut ws).await);
    assert!(echoes(&mut ws).await);
}

#[tokio::test]
async fn verify_client_needs_a_ca_file() {
    let dir = TempDir::new("verify-client-no-ca");
    let server = Pki::new("ca").server();
    let pem = write(dir.path(), "self.pem", &server.combined_pem());
    let (code, stderr) =
        proxy_status(&["--cert", &pem, "--verify-client", "127.0.0.1:0", "h:1"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("porthole-proxy: error: --verify-client needs --cafile"),
        "{stderr}"
    );
    // Without a certificate there is nothing to verify clients with.
    let missing = dir.path().join("missing.pem");
    let ca = write(dir.path(), "ca.crt", &Pki::new("ca").ca_pem());
    let missing = missing.to_str().unwrap();
    let args = ["--cert", missing, "--verify-client", "--cafile", &ca];
    let (code, stderr) = proxy_status(&[&args[..], &["127.0.0.1:0", "h:1"]].concat()).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--verify-client needs a certificate"),
        "{stderr}"
    );
    let broken = write(dir.path(), "broken.pem", "-----BEGIN CERTIFICATE-----\n");
    let (code, stderr) = proxy_status(&["--cert", &broken, "127.0.0.1:0", "h:1"]).await;
    assert_eq!(code, Some(2), "{stderr}");
}

/// A Secret volume as the kubelet writes it: the files live in a timestamped
/// directory, `..data` links to it, and `tls.crt`/`tls.key` link through
/// `..data`. An update writes a new directory, points `..data_tmp` at it and
/// renames that over `..data` (one atomic step), then removes the old one.
struct SecretVolume {
    dir: PathBuf,
    generation: usize,
}

impl SecretVolume {
    fn new(dir: &Path, leaf: &Leaf) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.update(&leaf.cert_pem, &leaf.key_pem);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let name = format!(
            "..2026_11_21_00_00_{:02}.{:09}",
            self.generation, self.generation
        );
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

/// The certificate the proxy shows a new TLS connection.
async fn served_certificate(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> Option<CertificateDer<'static>> {
    let tls = tls_connect(addr, &tls_client(roots, None)).await.ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

#[tokio::test]
async fn a_certificate_swapped_like_a_secret_volume_is_served_without_restart() {
    let echo = CountingListener::echo().await;
    let tmp = TempDir::new("cert-reload");
    let pki = Pki::new("reload-ca");
    let roots = [pki.ca_der()];
    let (first, second, third) = (pki.server(), pki.server(), pki.server());
    let mut volume = SecretVolume::new(tmp.path(), &first);
    let mut proxy = Websockify::start(
        &[
            "--cert",
            &volume.path("tls.crt"),
            "--key",
            &volume.path("tls.key"),
            "--cert-reload-interval=200ms",
        ],
        &[&echo.addr.to_string()],
    )
    .await;
    assert_eq!(
        served_certificate(proxy.addr, &roots).await,
        Some(first.der.clone())
    );
    let mut open = wss(proxy.addr, &tls_client(&roots, None), Some("binary"))
        .await
        .unwrap();
    assert!(echoes(&mut open).await);

    volume.update(&second.cert_pem, &second.key_pem);
    let addr = proxy.addr;
    eventually("the new certificate to be served", || async {
        (served_certificate(addr, &roots).await? == second.der).then_some(())
    })
    .await;
    // The connection opened before the swap goes on.
    assert!(echoes(&mut open).await);

    // A key that does not match its certificate is not taken: the last good
    // pair stays, and the next good one is.
    volume.update(&third.cert_pem, &first.key_pem);
    volume.update(&third.cert_pem, &third.key_pem);
    eventually("the third certificate to be served", || async {
        (served_certificate(addr, &roots).await? == third.der).then_some(())
    })
    .await;
    assert!(proxy.child.try_wait().unwrap().is_none(), "still running");
    let mut ws = wss(proxy.addr, &tls_client(&roots, None), Some("binary"))
        .await
        .unwrap();
    assert!(echoes(&mut ws).await);
}

#[tokio::test]
async fn a_mismatched_pair_keeps_the_previous_certificate() {
    let echo = CountingListener::echo().await;
    let tmp = TempDir::new("cert-mismatch");
    let pki = Pki::new("mismatch-ca");
    let roots = [pki.ca_der()];
    let (first, second) = (pki.server(), pki.server());
    let mut volume = SecretVolume::new(tmp.path(), &first);
    let mut proxy = Websockify::start(
        &[
            "--cert",
            &volume.path("tls.crt"),
            "--key",
            &volume.path("tls.key"),
            "--cert-reload-interval=100ms",
        ],
        &[&echo.addr.to_string()],
    )
    .await;
    let logs = proxy.logs();
    volume.update(&second.cert_pem, &first.key_pem);
    // Once the proxy has looked at the broken pair (it says so), it still
    // serves the first certificate.
    logs.wait_for("cannot reload the TLS certificate").await;
    assert_eq!(
        served_certificate(proxy.addr, &roots).await,
        Some(first.der.clone())
    );
    let mut ws = wss(proxy.addr, &tls_client(&roots, None), Some("binary"))
        .await
        .unwrap();
    assert!(echoes(&mut ws).await);
}

#[tokio::test]
async fn slow_tls_handshakes_are_cut_off_and_free_their_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("tls-slow");
    let pki = Pki::new("slow-ca");
    let pem = write(dir.path(), "self.pem", &pki.server().combined_pem());
    let proxy = Websockify::start(
        &[
            "--cert",
            &pem,
            "--handshake-timeout=1s",
            "--max-connections=2",
        ],
        &[&echo.addr.to_string()],
    )
    .await;
    // Both slots taken: one client says nothing, one starts a ClientHello
    // (a TLS record header promising 512 bytes) and stalls.
    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut stalled = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // A real client gets in once they are cut off.
    let roots = [pki.ca_der()];
    let mut ws = wss(proxy.addr, &tls_client(&roots, None), Some("binary"))
        .await
        .unwrap();
    assert!(echoes(&mut ws).await);
    for (what, stream) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the {what} client was never cut off");
    }
}
