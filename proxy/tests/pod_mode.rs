//! Pod mode end to end: the real proxy binary in front of a real QEMU VNC server.

mod support;

use std::time::Duration;

use support::{CountingListener, Proxy, ProxyOptions, Qemu, RfbClient, eventually, http_get};
use tokio_tungstenite::tungstenite;

const TOKEN: &str = "dG9rZW4tZm9yLXRlc3RzLW9ubHktMzItYnl0ZXMhIQ";

fn options(upstream: String) -> ProxyOptions<'static> {
    ProxyOptions {
        upstream,
        token: TOKEN,
        vnc_password: None,
        vm_name: "test-vm",
        extra_args: &[],
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_viewer_sees_the_vms_screen_and_its_input_is_counted() {
    let qemu = Qemu::start(false).await;
    let proxy = Proxy::start(options(qemu.vnc.to_string())).await;

    let (ws, response) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "binary",
        "the bearer protocol is never echoed"
    );
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;
    assert!(rfb.width > 0 && rfb.height > 0);
    rfb.wait_for_pixels().await;

    rfb.send(&[4, 1, 0, 0, 0, 0, 0, 0x61]).await; // key down 'a'
    rfb.send(&[4, 0, 0, 0, 0, 0, 0, 0x61]).await; // key up 'a'
    rfb.send(&[5, 0, 0, 10, 0, 10]).await; // pointer move
    let metrics = eventually("input to be counted", || async {
        let m = proxy.metrics().await;
        let keys = metric(&m, "porthole_proxy_input_events_total{kind=\"key\"}");
        let pointer = metric(&m, "porthole_proxy_input_events_total{kind=\"pointer\"}");
        (keys == Some(2.0) && pointer == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        metric(&metrics, "porthole_proxy_viewers"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "porthole_proxy_relayed_bytes_total{direction=\"downstream\"}"
        )
        .unwrap()
            > 1000.0
    );
    assert!(
        metric(
            &metrics,
            "porthole_proxy_relayed_bytes_total{direction=\"upstream\"}"
        )
        .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn the_proxy_answers_vnc_authentication_and_the_browser_sees_none() {
    let mut qemu = Qemu::start(true).await;
    qemu.set_vnc_password("s3cret").await;
    let proxy = Proxy::start(ProxyOptions {
        vnc_password: Some("s3cret\n"),
        ..options(qemu.vnc.to_string())
    })
    .await;

    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;
    rfb.wait_for_pixels().await;
}

#[tokio::test]
async fn a_wrong_vnc_password_ends_the_session_as_upstream_failed() {
    let mut qemu = Qemu::start(true).await;
    qemu.set_vnc_password("right-pw").await;
    let mut proxy = Proxy::start(ProxyOptions {
        vnc_password: Some("wrong-pw"),
        ..options(qemu.vnc.to_string())
    })
    .await;

    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let reason = RfbClient::new(ws).closed().await;
    assert!(
        reason.starts_with("upstream-failed: VNC authentication failed"),
        "{reason}"
    );

    let (code, logs) = proxy.exited().await;
    assert_eq!(code, Some(1));
    let message = proxy.termination_message().expect("a termination message");
    assert!(
        message.starts_with("upstream-failed: VNC authentication failed"),
        "{message}"
    );
    for secret in ["wrong-pw", "right-pw", TOKEN] {
        assert!(!message.contains(secret));
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_wrong_or_missing_token_never_reaches_the_vnc_server() {
    let upstream = CountingListener::start().await;
    let proxy = Proxy::start(options(upstream.addr.to_string())).await;

    let refused = |result: Result<_, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => panic!("the WebSocket opened"),
        Err(e) => panic!("unexpected error {e}"),
    };
    let wrong = format!("binary, bearer.porthole.dev.{}", TOKEN.replace('d', "e"));
    assert_eq!(refused(proxy.websocket(Some(&wrong)).await), 401);
    assert_eq!(refused(proxy.websocket(Some("binary")).await), 401);
    assert_eq!(refused(proxy.websocket(None).await), 401);
    // Guessing is slowed down: after a burst, even the right token waits.
    let status = eventually("rate limiting", || async {
        let status = refused(proxy.websocket(Some(&wrong)).await);
        (status == 429).then_some(status)
    })
    .await;
    assert_eq!(status, 429);
    let metrics = proxy.metrics().await;
    assert!(
        metric(
            &metrics,
            "porthole_proxy_auth_failures_total{reason=\"bad_token\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        metric(
            &metrics,
            "porthole_proxy_auth_failures_total{reason=\"rate_limited\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(upstream.count(), 0, "no upstream connection was attempted");
}

#[tokio::test]
async fn health_and_page_are_served() {
    let upstream = CountingListener::start().await;
    let proxy = Proxy::start(ProxyOptions {
        vm_name: "web-01 <prod>",
        ..options(upstream.addr.to_string())
    })
    .await;
    assert_eq!(http_get(proxy.addr, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(proxy.addr, "/readyz").await.unwrap().0, 200);
    for path in ["/", "/vnc.html"] {
        let (status, body) = http_get(proxy.addr, path).await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("web-01 &lt;prod&gt;"));
    }
    assert_eq!(http_get(proxy.addr, "/nope").await.unwrap().0, 404);
    assert_eq!(http_get(proxy.addr, "/websockify").await.unwrap().0, 400);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn sigterm_ends_the_session_as_completed() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(options(qemu.vnc.to_string())).await;
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;

    proxy.sigterm();
    assert_eq!(rfb.closed().await, "completed");
    let (code, _) = proxy.exited().await;
    assert_eq!(code, Some(0));
    assert_eq!(proxy.termination_message().as_deref(), Some("completed"));
}

#[tokio::test]
async fn an_unreachable_vnc_server_ends_the_session_as_upstream_failed() {
    // A port nobody listens on: bound, then closed.
    let addr = CountingListener::start().await.addr;
    let mut proxy = Proxy::start(ProxyOptions {
        extra_args: &["--upstream-connect-timeout", "2s"],
        ..options(addr.to_string())
    })
    .await;
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let reason = RfbClient::new(ws).closed().await;
    assert!(
        reason.starts_with("upstream-failed: cannot connect"),
        "{reason}"
    );
    let (code, _) = proxy.exited().await;
    assert_eq!(code, Some(1));
    let message = proxy.termination_message().unwrap();
    assert!(
        message.starts_with("upstream-failed: cannot connect to the VNC server"),
        "{message}"
    );
}

#[tokio::test]
async fn the_vnc_server_going_away_ends_the_session_as_upstream_closed() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(options(qemu.vnc.to_string())).await;
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;
    drop(qemu);
    assert_eq!(rfb.closed().await, "upstream-closed");
    let (code, _) = proxy.exited().await;
    assert_eq!(code, Some(0));
    assert_eq!(
        proxy.termination_message().as_deref(),
        Some("upstream-closed")
    );
}

#[tokio::test]
async fn an_idle_session_ends_as_idle() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(ProxyOptions {
        extra_args: &["--idle-timeout", "2s"],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;
    let started = std::time::Instant::now();
    assert_eq!(rfb.closed().await, "idle");
    assert!(started.elapsed() >= Duration::from_secs(1));
    proxy.exited().await;
    assert_eq!(proxy.termination_message().as_deref(), Some("idle"));
}
