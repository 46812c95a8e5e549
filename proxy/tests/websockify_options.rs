//! Standalone mode's options, each against the real binary: `--run-once`
//! under racing clients, `--timeout`, `--idle-timeout`, `--unix-target`,
//! `--ssl-target`, `-v`, `-D`, `--wrap-mode` and the exit status scripts see.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::{
    CountingListener, Leaf, Pki, Qemu, RfbClient, Tap, TempDir, UnixQemu, Websockify, accepting,
    echoes, eventually, free_port, proxy_command, proxy_status, see_the_screen, websocket,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Sends SIGTERM and returns the exit code and everything logged.
async fn stop(mut child: Child) -> (Option<i32>, String) {
    signal(child.id().expect("still running"), "TERM");
    let status = tokio::time::timeout(support::DEADLINE, child.wait())
        .await
        .expect("the proxy exits")
        .unwrap();
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut logs).await.unwrap();
    }
    (status.code(), logs)
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() || name == "KILL");
}

#[tokio::test]
async fn run_once_with_two_racing_clients_serves_exactly_one() {
    let qemu = Qemu::start(false).await;
    let tap = Tap::start(qemu.vnc).await;
    let mut proxy = Websockify::start(&["--run-once"], &[&tap.addr.to_string()]).await;

    // Both connect first, then both ask to upgrade at the same moment.
    let (a, b) = tokio::join!(
        websocket(proxy.addr, "/websockify", Some("binary")),
        websocket(proxy.addr, "/websockify", Some("binary")),
    );
    let (winner, loser) = match (a, b) {
        (Ok((ws, _)), Err(e)) | (Err(e), Ok((ws, _))) => (ws, e),
        (Ok(_), Ok(_)) => panic!("both clients got the --run-once connection"),
        (Err(a), Err(b)) => panic!("neither client got through: {a}; {b}"),
    };
    match loser {
        tungstenite::Error::Http(response) => assert_eq!(response.status(), 503),
        other => panic!("the loser was not refused cleanly: {other}"),
    }
    let mut rfb = RfbClient::new(winner);
    see_the_screen(&mut rfb).await;
    assert_eq!(
        tap.connections(),
        1,
        "only the winner reached the VNC server"
    );
    assert!(proxy.child.try_wait().unwrap().is_none(), "still serving");
    rfb.ws.close(None).await.unwrap();
    assert_eq!(proxy.exited().await, Some(0));
    assert_eq!(tap.connections(), 1);
}

#[tokio::test]
async fn run_once_does_not_count_file_requests() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("run-once-web");
    std::fs::write(dir.path().join("vnc.html"), "page").unwrap();
    let web = format!("--web={}", dir.path().display());
    let mut proxy = Websockify::start(&["--run-once", &web], &[&echo.addr.to_string()]).await;
    for _ in 0..2 {
        let (status, _) = support::http_get(proxy.addr, "/vnc.html").await.unwrap();
        assert_eq!(status, 200);
    }
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    assert!(echoes(&mut ws).await);
    ws.close(None).await.unwrap();
    assert_eq!(proxy.exited().await, Some(0));
}

#[tokio::test]
async fn timeout_stops_accepting_but_serves_the_open_connection_to_its_end() {
    let qemu = Qemu::start(false).await;
    let started = Instant::now();
    let mut proxy = Websockify::start(&["--timeout=2"], &[&qemu.vnc.to_string()]).await;
    let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    let mut rfb = RfbClient::new(ws);
    see_the_screen(&mut rfb).await;

    let addr = proxy.addr;
    eventually("new connections to be refused", || async move {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2), "refused early");
    // The open console still works, and the proxy waits for it.
    rfb.request_update().await;
    rfb.read_update().await;
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "exited while connected"
    );
    rfb.ws.close(None).await.unwrap();
    assert_eq!(proxy.exited().await, Some(0));
}

/// A still screen sends nothing: the proxy pings the client, so that an
/// Ingress or load balancer in between does not close the idle console.
#[tokio::test]
async fn an_idle_connection_is_pinged_and_still_relays() {
    let target = CountingListener::echo().await;
    let proxy = Websockify::start(&["--ping-interval=1s"], &[&target.addr.to_string()]).await;
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();

    let first = tokio::time::timeout(support::DEADLINE, ws.next())
        .await
        .expect("a message within the deadline");
    assert!(
        matches!(first, Some(Ok(tungstenite::Message::Ping(_)))),
        "{first:?}"
    );
    // Answered (tungstenite pongs by itself), and the relay goes on.
    ws.send(tungstenite::Message::binary(&b"still here"[..]))
        .await
        .unwrap();
    let echoed = loop {
        match tokio::time::timeout(support::DEADLINE, ws.next()).await {
            Ok(Some(Ok(tungstenite::Message::Binary(data)))) => break data,
            Ok(Some(Ok(tungstenite::Message::Ping(_)))) => continue,
            other => panic!("no echo: {other:?}"),
        }
    };
    assert_eq!(&echoed[..], b"still here");
}

#[tokio::test]
async fn idle_timeout_counts_from_the_last_close() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Websockify::start(&["--idle-timeout=2"], &[&qemu.vnc.to_string()]).await;
    let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    let mut rfb = RfbClient::new(ws);
    see_the_screen(&mut rfb).await;
    // Connected for longer than the idle timeout: still there.
    let early = tokio::time::timeout(Duration::from_secs(3), proxy.child.wait()).await;
    assert!(early.is_err(), "exited while connected: {early:?}");
    rfb.ws.close(None).await.unwrap();
    rfb.closed().await;
    let closed = Instant::now();
    assert_eq!(proxy.exited().await, Some(0));
    let idle = closed.elapsed();
    assert!(
        idle >= Duration::from_millis(1500),
        "exited {idle:?} after the last close"
    );
}

#[tokio::test]
async fn idle_timeout_without_any_connection_counts_from_the_start() {
    let echo = CountingListener::echo().await;
    let started = Instant::now();
    let mut proxy = Websockify::start(&["--idle-timeout=1"], &[&echo.addr.to_string()]).await;
    assert_eq!(proxy.exited().await, Some(0));
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn unix_target_reaches_a_vnc_server_on_a_socket() {
    let qemu = UnixQemu::start().await;
    let socket = qemu.socket.to_str().unwrap();
    let proxy = Websockify::start(&["--unix-target", socket], &[]).await;
    let (ws, _) = websocket(proxy.addr, "/websockify", Some("binary"))
        .await
        .unwrap();
    see_the_screen(&mut RfbClient::new(ws)).await;
}

/// socat terminating TLS in front of QEMU's VNC port, with a self-signed
/// certificate (websockify does not verify the target's).
async fn tls_terminator(dir: &TempDir, target: SocketAddr) -> (Child, SocketAddr) {
    let leaf: Leaf = Pki::new("target-ca").server();
    let pem = dir.path().join("target.pem");
    std::fs::write(&pem, leaf.combined_pem()).unwrap();
    let addr = local();
    let child = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            addr.port(),
            pem.display()
        ))
        .arg(format!("TCP:{target}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("socat runs");
    accepting(addr).await;
    (child, addr)
}

#[tokio::test]
async fn ssl_target_speaks_tls_to_the_target() {
    let qemu = Qemu::start(false).await;
    let dir = TempDir::new("ssl-target");
    let (_socat, tls_addr) = tls_terminator(&dir, qemu.vnc).await;

    let proxy = Websockify::start(&["--ssl-target"], &[&tls_addr.to_string()]).await;
    let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    see_the_screen(&mut RfbClient::new(ws)).await;

    // Without --ssl-target the same target only ever sees plain bytes, which
    // are no TLS handshake: no RFB greeting comes back.
    let plain = Websockify::start(&[], &[&tls_addr.to_string()]).await;
    let (ws, _) = websocket(plain.addr, "/", Some("binary")).await.unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.send(b"RFB 003.008\n").await;
    rfb.closed().await;
    assert!(
        !support::contains(&rfb.received, b"RFB"),
        "{:?}",
        rfb.received
    );
}

#[tokio::test]
async fn verbose_logs_each_request_without_the_token() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("verbose");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("s3cret-vm-token: {}\n", echo.addr)).unwrap();
    let tokens = tokens.to_str().unwrap();

    let mut logs = Vec::new();
    for verbose in [true, false] {
        let addr = local();
        let listen = addr.to_string();
        let mut args = vec!["--token-file", tokens, &listen];
        if verbose {
            args.insert(0, "-v");
        }
        let child = proxy_command(&args, &[]).spawn().unwrap();
        accepting(addr).await;
        let (mut ws, _) = websocket(addr, "/websockify?token=s3cret-vm-token", Some("binary"))
            .await
            .unwrap();
        assert!(echoes(&mut ws).await);
        ws.close(None).await.unwrap();
        let (code, log) = stop(child).await;
        assert_eq!(code, Some(0), "{log}");
        logs.push(log);
    }
    let (verbose, quiet) = (&logs[0], &logs[1]);
    assert!(verbose.contains("DEBUG"), "{verbose}");
    assert!(
        verbose.contains(r#"request method=GET path="/websockify""#),
        "{verbose}"
    );
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    assert!(quiet.contains("relaying"), "{quiet}");
    for log in &logs {
        assert!(!log.contains("s3cret"), "a token in the logs:\n{log}");
    }
}

/// A process `-D` left running, killed when the test ends however it ends.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        signal(self.0, "KILL");
    }
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn daemon_returns_once_listening_and_keeps_serving() {
    let echo = CountingListener::echo().await;
    let addr = local();
    let (code, stderr) = proxy_status(&["-D", &addr.to_string(), &echo.addr.to_string()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let pid: u32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("porthole-proxy: running in the background as process "))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process id in {stderr:?}"));
    let daemon = Daemon(pid);
    assert!(stderr.contains("websockify listening"), "{stderr}");

    // Already listening when -D returned: no waiting needed.
    let (mut ws, _) = websocket(addr, "/", Some("binary")).await.unwrap();
    assert!(echoes(&mut ws).await);
    // Its own process group, away from the terminal's signals.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[2], pid.to_string(), "process group: {stat}");
    ws.close(None).await.unwrap();

    signal(daemon.0, "TERM");
    eventually("the background proxy to stop", || async move {
        (!running(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn daemon_reports_a_failure_to_start_in_the_foreground() {
    let taken = CountingListener::start().await;
    let (code, stderr) = proxy_status(&["-D", &taken.addr.to_string(), "127.0.0.1:1"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("porthole-proxy: error: cannot listen on"),
        "{stderr}"
    );
    let (code, stderr) = proxy_status(&["-D", &local().to_string()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("missing target_addr:target_port"),
        "{stderr}"
    );
}

#[tokio::test]
async fn exit_codes_and_messages_of_bad_starts() {
    let taken = CountingListener::start().await;
    let taken = taken.addr.to_string();
    let dir = TempDir::new("exit-codes");
    let missing = dir.path().join("missing.pem");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--no-such-option", "6080", "h:1"], 2, "--no-such-option"),
        (
            &["127.0.0.1:0"],
            2,
            "porthole-proxy: error: missing target_addr:target_port",
        ),
        (
            &["127.0.0.1:0", "nowhere"],
            2,
            "porthole-proxy: error: \"nowhere\" is not HOST:PORT",
        ),
        (
            &["not-a-port", "h:1"],
            2,
            "porthole-proxy: error: \"not-a-port\" is not [ADDR:]PORT",
        ),
        (
            &[
                "--ssl-only",
                "--cert",
                missing.to_str().unwrap(),
                "127.0.0.1:0",
                "h:1",
            ],
            2,
            "porthole-proxy: error: --ssl-only needs a certificate",
        ),
        (
            &[&taken, "h:1"],
            1,
            "porthole-proxy: error: cannot listen on",
        ),
        (
            &["127.0.0.1:0", "h:1", "--", "true"],
            2,
            "porthole-proxy: error: wrapping a command and naming a target",
        ),
        (
            &[
                "--token-plugin",
                "ReadOnlyTokenFile2",
                "--token-file",
                "/x",
                "127.0.0.1:0",
            ],
            2,
            "only the TokenFile",
        ),
    ];
    for (args, code, message) in cases {
        let (status, stderr) = proxy_status(args).await;
        assert_eq!(status, Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn help_documents_the_exit_status() {
    let output = Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for line in ["Exit status", "--wrap-mode=exit", "126/127"] {
        assert!(help.contains(line), "{help}");
    }
}

/// Runs a proxy wrapping `command` until it exits by itself.
async fn wrapped_exit(mode: &str, command: &[&str]) -> (Option<i32>, String) {
    let listen = local().to_string();
    let mut args = vec![mode, &listen, "--"];
    args.extend_from_slice(command);
    let mut child = proxy_command(&args, &[("PORTHOLE_LOG", "info")])
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(support::DEADLINE, child.wait())
        .await
        .expect("the proxy exits with its command")
        .unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    (status.code(), logs)
}

#[tokio::test]
async fn wrap_mode_exit_passes_on_the_commands_status() {
    // A real relay first: socat serves one connection, then the shell exits 7.
    let addr = local();
    let listen = addr.to_string();
    let args = [
        "--wrap-mode=exit",
        &listen,
        "--",
        "/bin/sh",
        "-c",
        "socat TCP-LISTEN:$PORTHOLE_WRAP_PORT,bind=127.0.0.1,reuseaddr EXEC:/bin/cat; exit 7",
    ];
    let mut child = proxy_command(&args, &[]).spawn().unwrap();
    accepting(addr).await;
    let mut ws = eventually("the wrapped command to answer", || async {
        let (mut ws, _) = websocket(addr, "/", Some("binary")).await.ok()?;
        echoes(&mut ws).await.then_some(ws)
    })
    .await;
    ws.close(None).await.unwrap();
    let status = tokio::time::timeout(support::DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(7));

    let (code, _) = wrapped_exit("--wrap-mode=exit", &["/bin/sh", "-c", "exit 0"]).await;
    assert_eq!(code, Some(0));
    let (code, _) = wrapped_exit("--wrap-mode=exit", &["/bin/sh", "-c", "kill -TERM $$"]).await;
    assert_eq!(code, Some(128 + 15), "killed by SIGTERM");
    let (code, logs) = wrapped_exit("--wrap-mode=exit", &["/nonexistent/vncserver"]).await;
    assert_eq!(code, Some(127), "{logs}");
    assert!(logs.contains("cannot start the wrapped command"), "{logs}");
    // Whatever the mode, a command that cannot start at all ends the proxy.
    let (code, _) = wrapped_exit("--wrap-mode=respawn", &["/nonexistent/vncserver"]).await;
    assert_eq!(code, Some(127));
    let dir = TempDir::new("not-executable");
    let script = dir.path().join("vnc");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let (code, _) = wrapped_exit("--wrap-mode=exit", &[script.to_str().unwrap()]).await;
    assert_eq!(code, Some(126));
}

#[tokio::test]
async fn wrap_mode_ignore_and_respawn_outlive_the_commands_status() {
    for mode in ["--wrap-mode=ignore", "--wrap-mode=respawn"] {
        let dir = TempDir::new("wrap-starts");
        let starts = dir.path().join("starts");
        let addr = local();
        let listen = addr.to_string();
        let script = format!("echo started >> {}; exit 3", starts.display());
        let args = [mode, &listen, "--", "/bin/sh", "-c", &script];
        let mut child = proxy_command(&args, &[]).spawn().unwrap();
        accepting(addr).await;
        let count = || {
            std::fs::read_to_string(&starts)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        if mode.ends_with("respawn") {
            eventually("the command to be started three times", || async {
                (count() >= 3).then_some(())
            })
            .await;
        } else {
            eventually("the command to have run", || async {
                (count() == 1).then_some(())
            })
            .await;
            // Nothing is to happen now; give it the time a respawn would take.
            let early = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            assert!(early.is_err(), "{mode}: exited with its command: {early:?}");
            assert_eq!(count(), 1, "ignored, not respawned");
        }
        assert!(child.try_wait().unwrap().is_none(), "{mode}: still serving");
        let (code, logs) = stop(child).await;
        assert_eq!(code, Some(0), "{mode}: {logs}");
    }
}

#[tokio::test]
async fn record_writes_one_file_per_connection() {
    let echo = CountingListener::echo().await;
    let dir = TempDir::new("record-each");
    let base = dir.path().join("rec");
    let proxy = Websockify::start(
        &["--record", base.to_str().unwrap()],
        &[&echo.addr.to_string()],
    )
    .await;
    for _ in 0..2 {
        let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
        assert!(echoes(&mut ws).await);
        ws.close(None).await.unwrap();
        RfbClient::new(ws).closed().await;
    }
    for n in [1, 2] {
        let file = dir.path().join(format!("rec.{n}"));
        let frames = eventually("the recording to be complete", || {
            let file = file.clone();
            async move {
                let text = std::fs::read_to_string(&file).ok()?;
                text.ends_with("'EOF'];\n").then_some(())?;
                porthole_proxy::recording::read(&file).ok()
            }
        })
        .await;
        let directions: Vec<_> = frames
            .iter()
            .map(|f| (f.direction.clone(), &f.data[..]))
            .collect();
        assert_eq!(
            directions,
            [
                (porthole_proxy::metrics::Direction::Upstream, &b"ping"[..]),
                (porthole_proxy::metrics::Direction::Downstream, &b"ping"[..]),
            ],
            "rec.{n}"
        );
    }
    assert!(!dir.path().join("rec.3").exists());
}

/// `--allowed-origin`: a WebSocket from another origin (a page elsewhere
/// that a user visits), or with none, gets 403 and never reaches the target;
/// without the option any origin goes, as with websockify.
#[tokio::test]
async fn allowed_origin_refuses_websockets_from_other_origins() {
    let echo = CountingListener::echo().await;
    let target = echo.addr.to_string();
    let upgrade = |addr, origin: Option<&'static str>| async move {
        let extra = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        let (_, head) = support::raw_upgrade(addr, "/websockify", &extra).await;
        head[9..12].to_string()
    };
    let proxy = Websockify::start(
        &[
            "--allowed-origin",
            "https://console.example.com",
            "--allowed-origin=https://other.example.com:8443/",
        ],
        &[&target],
    )
    .await;
    for origin in [
        "https://console.example.com",
        "https://Other.example.com:8443",
    ] {
        assert_eq!(upgrade(proxy.addr, Some(origin)).await, "101", "{origin}");
    }
    for origin in [
        Some("https://evil.example"),
        Some("http://console.example.com"),
        Some("https://console.example.com.evil.example"),
        Some("null"),
        None,
    ] {
        assert_eq!(upgrade(proxy.addr, origin).await, "403", "{origin:?}");
    }
    let accepted = eventually("the two allowed upgrades at the target", || async {
        (echo.count() == 2).then_some(())
    });
    accepted.await;

    let open = Websockify::start(&[], &[&target]).await;
    assert_eq!(
        upgrade(open.addr, Some("https://evil.example")).await,
        "101"
    );
    assert_eq!(upgrade(open.addr, None).await, "101");
}
