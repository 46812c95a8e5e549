//! Standalone mode end to end: the real binary as a websockify drop-in.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use support::{
    CountingListener, Process, Qemu, RfbClient, TempDir, Websockify, http_get, websocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

async fn echo_once<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::Binary(b"ping"[..].into())).await.unwrap();
    let reply = tokio::time::timeout(support::DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::Binary(b"ping"[..].into()));
}

#[tokio::test]
async fn relays_raw_rfb_to_qemu_and_exits_after_one_connection() {
    let qemu = Qemu::start(false).await;
    let dir = TempDir::new("record");
    let record = dir.path().join("session");
    let mut proxy = Websockify::start(
        &["--run-once", "--record", record.to_str().unwrap()],
        &[&qemu.vnc.to_string()],
    )
    .await;

    let (ws, response) = websocket(proxy.addr, "/websockify", Some("binary"))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    // No RFB termination: QEMU's own handshake comes through.
    let mut rfb = RfbClient::new(ws);
    assert_eq!(rfb.read_exact(12).await, b"RFB 003.008\n");
    rfb.send(b"RFB 003.008\n").await;
    let count = rfb.read_exact(1).await[0];
    assert!(rfb.read_exact(count.into()).await.contains(&1));
    rfb.send(&[1]).await;
    assert_eq!(rfb.read_exact(4).await, [0, 0, 0, 0]);
    rfb.init().await;
    rfb.wait_for_pixels().await;
    rfb.ws.close(None).await.unwrap();

    assert_eq!(
        proxy.exited().await,
        Some(0),
        "--run-once exits after the first connection"
    );
    let recording = std::fs::read_to_string(format!("{}.1", record.display())).unwrap();
    assert!(recording.starts_with("var VNC_frame_data = [\n"));
    assert!(recording.contains("{RFB 003.008\\x0a'"));
    assert!(recording.ends_with("'EOF'];\n"));
}

#[tokio::test]
async fn a_recorded_session_replays_the_same_server_bytes() {
    let qemu = Qemu::start(false).await;
    let dir = TempDir::new("replay");
    let record = dir.path().join("session");
    let mut proxy = Websockify::start(
        &["--run-once", "--record", record.to_str().unwrap()],
        &[&qemu.vnc.to_string()],
    )
    .await;
    let (ws, _) = websocket(proxy.addr, "/websockify", Some("binary"))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.read_exact(12).await;
    rfb.send(b"RFB 003.008\n").await;
    let count = rfb.read_exact(1).await[0];
    rfb.read_exact(count.into()).await;
    rfb.send(&[1]).await;
    rfb.read_exact(4).await;
    rfb.init().await;
    rfb.wait_for_pixels().await;
    // Every request is answered: the VM has nothing more to say.
    rfb.ws.close(None).await.unwrap();
    rfb.closed().await;
    assert_eq!(proxy.exited().await, Some(0));
    let original = rfb.received;

    let file = format!("{}.1", record.display());
    let last = porthole_proxy::recording::read(std::path::Path::new(&file))
        .unwrap()
        .last()
        .unwrap()
        .at;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut replay = Process::spawn(&["replay", &file, "--listen", &addr.to_string()]);
    replay.listening(addr).await;
    let started = std::time::Instant::now();
    let (ws, _) = websocket(addr, "/", Some("binary")).await.unwrap();
    let mut viewer = RfbClient::new(ws);
    assert_eq!(viewer.closed().await, "end of recording");
    assert!(
        started.elapsed() + Duration::from_millis(50) >= last,
        "played in {:?}, recorded over {last:?}",
        started.elapsed()
    );
    assert!(original.len() > 1000);
    assert!(viewer.received == original, "replayed bytes differ");
}

#[tokio::test]
async fn without_a_subprotocol_none_is_answered() {
    let echo = CountingListener::echo().await;
    let proxy = Websockify::start(&[], &[&echo.addr.to_string()]).await;
    let (mut ws, response) = websocket(proxy.addr, "/", None).await.unwrap();
    assert!(!response.headers().contains_key("sec-websocket-protocol"));
    echo_once(&mut ws).await;
    // A client that offers only other protocols is refused.
    assert!(websocket(proxy.addr, "/", Some("base64")).await.is_err());
}

#[tokio::test]
async fn tls_is_sniffed_on_the_same_port() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let pem = dir.path().join("self.pem");
    std::fs::write(
        &pem,
        certified.cert.pem() + &certified.signing_key.serialize_pem(),
    )
    .unwrap();
    let proxy = Websockify::start(
        &["--cert", pem.to_str().unwrap()],
        &[&echo.addr.to_string()],
    )
    .await;

    // Plain.
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    echo_once(&mut ws).await;

    // TLS, trusting the self-signed certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("wss://localhost:{}/websockify", proxy.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = client_async(request, tls).await.unwrap();
    echo_once(&mut ws).await;

    // --ssl-only refuses the plain one.
    let strict = Websockify::start(
        &["--cert", pem.to_str().unwrap(), "--ssl-only"],
        &[&echo.addr.to_string()],
    )
    .await;
    let mut plain = TcpStream::connect(strict.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(support::DEADLINE, plain.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "a plain request gets no answer with --ssl-only");
}

#[tokio::test]
async fn serves_files_with_web() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("web");
    std::fs::write(dir.path().join("vnc.html"), "<p>noVNC</p>").unwrap();
    let web = format!("--web={}", dir.path().display());
    let proxy = Websockify::start(&[&web], &[&echo.addr.to_string()]).await;
    assert_eq!(
        http_get(proxy.addr, "/vnc.html").await.unwrap(),
        (200, "<p>noVNC</p>".to_string())
    );
    assert_eq!(http_get(proxy.addr, "/missing.js").await.unwrap().0, 404);
    assert_eq!(http_get(proxy.addr, "/../etc/passwd").await.unwrap().0, 403);
    // The WebSocket works beside the files.
    let (mut ws, _) = websocket(proxy.addr, "/websockify", Some("binary"))
        .await
        .unwrap();
    echo_once(&mut ws).await;
}

#[tokio::test]
async fn idle_timeout_exits_once_nobody_is_connected() {
    let echo = CountingListener::echo().await;
    let mut proxy = Websockify::start(&["--idle-timeout=1"], &[&echo.addr.to_string()]).await;
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    // While connected it stays up, well past the idle timeout.
    let early = tokio::time::timeout(Duration::from_secs(2), proxy.child.wait()).await;
    assert!(early.is_err(), "exited while connected: {early:?}");
    echo_once(&mut ws).await;
    ws.close(None).await.unwrap();
    assert_eq!(proxy.exited().await, Some(0));
}

#[tokio::test]
async fn timeout_exits_after_the_time_when_not_connected() {
    let echo = CountingListener::echo().await;
    let mut proxy = Websockify::start(&["--timeout=1"], &[&echo.addr.to_string()]).await;
    assert_eq!(proxy.exited().await, Some(0));
}

#[tokio::test]
async fn token_file_picks_the_target() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("tokens");
    let tokens = dir.path().join("tokens.cfg");
    std::fs::write(&tokens, format!("# targets\nvm1: {}\n", echo.addr)).unwrap();
    let proxy = Websockify::start(&["--token-file", tokens.to_str().unwrap()], &[]).await;
    let (mut ws, _) = websocket(proxy.addr, "/websockify?token=vm1", Some("binary"))
        .await
        .unwrap();
    echo_once(&mut ws).await;
    assert!(
        websocket(proxy.addr, "/websockify?token=vm2", Some("binary"))
            .await
            .is_err()
    );
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

/// socat echoing on the port the proxy gives it; `fork` serves many
/// connections, without it socat exits after the first.
fn echo_command(fork: bool) -> Vec<&'static str> {
    let listen = if fork {
        "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"
    } else {
        "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"
    };
    vec!["--", "/usr/bin/socat", listen, "EXEC:/bin/cat"]
}

/// Opens a WebSocket that echoes, retrying while the wrapped command starts.
async fn echoing(addr: std::net::SocketAddr) -> WebSocketStream<TcpStream> {
    support::eventually("the wrapped command to answer", || async {
        let (mut ws, _) = websocket(addr, "/", Some("binary")).await.ok()?;
        ws.send(Message::Binary(b"ping"[..].into())).await.ok()?;
        match tokio::time::timeout(support::DEADLINE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) if &data[..] == b"ping" => Some(ws),
            _ => None,
        }
    })
    .await
}

#[tokio::test]
async fn a_wrapped_command_is_relayed_to_on_the_port_it_was_given() {
    let command = echo_command(true);
    let proxy = Websockify::start(&["--wrap-mode=ignore"], &command).await;
    let mut ws = echoing(proxy.addr).await;
    echo_once(&mut ws).await;
}

#[tokio::test]
async fn wrap_mode_exit_stops_the_proxy_with_the_command() {
    let command = echo_command(false);
    let mut proxy = Websockify::start(&["--wrap-mode=exit"], &command).await;
    let mut ws = echoing(proxy.addr).await;
    ws.close(None).await.unwrap();
    assert_eq!(proxy.exited().await, Some(0));
}

#[tokio::test]
async fn wrap_mode_respawn_starts_the_command_again() {
    let command = echo_command(false);
    let mut proxy = Websockify::start(&["--wrap-mode=respawn"], &command).await;
    for _ in 0..2 {
        let mut ws = echoing(proxy.addr).await;
        ws.close(None).await.unwrap();
    }
    assert!(proxy.child.try_wait().unwrap().is_none(), "still running");
}

#[tokio::test]
async fn wrap_mode_ignore_keeps_the_proxy_without_the_command() {
    let command = echo_command(false);
    let mut proxy = Websockify::start(&["--wrap-mode=ignore"], &command).await;
    let mut ws = echoing(proxy.addr).await;
    ws.close(None).await.unwrap();
    // The command is gone for good: connections now fail, the proxy stays.
    let reason = support::eventually("the target to be gone", || async {
        let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.ok()?;
        let reason = RfbClient::new(ws).closed().await;
        reason.contains("cannot connect").then_some(reason)
    })
    .await;
    assert_eq!(reason, "cannot connect to the target");
    assert!(proxy.child.try_wait().unwrap().is_none(), "still running");
}
