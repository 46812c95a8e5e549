//! Pod mode end to end: the real proxy binary in front of a real QEMU VNC server.

mod support;

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use porthole_api::contract::{VIEWERS_PATH, VIEWERS_SHARED, ViewerReport, env};
use support::{
    CountingListener, HttpResponse, Proxy, ProxyOptions, Qemu, RfbClient, Tap, contains,
    eventually, http_get, http_request, http_request_with,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

const TOKEN: &str = "dG9rZW4tZm9yLXRlc3RzLW9ubHktMzItYnl0ZXMhIQ";

fn options(upstream: String) -> ProxyOptions<'static> {
    ProxyOptions {
        upstream,
        token: TOKEN,
        vnc_password: None,
        vm_name: "test-vm",
        extra_args: &[],
        env: &[],
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
        reason.starts_with("upstream-failed: vnc-authentication: VNC authentication failed"),
        "{reason}"
    );

    let (code, logs) = proxy.exited().await;
    assert_eq!(code, Some(1));
    let message = proxy.termination_message().expect("a termination message");
    assert!(
        message.starts_with("upstream-failed: vnc-authentication: VNC authentication failed"),
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
    // Past a burst, wrong tokens are answered 429.
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

/// Wrong tokens spend their source's failure budget, never the right
/// token's way in: after 1,000 guesses from 127.0.0.1, the viewer gets in at
/// once from there and from 127.0.0.2.
#[tokio::test]
async fn the_right_token_gets_in_at_once_after_a_thousand_wrong_ones() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::VIEWERS, VIEWERS_SHARED)],
        ..options(qemu.vnc.to_string())
    })
    .await;
    // A thousand refusals log more than a pipe holds.
    let _logs = proxy.logs();
    let wrong = format!("binary, bearer.porthole.dev.{}", TOKEN.replace('d', "e"));
    let mut statuses = std::collections::BTreeMap::new();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..1000 {
        if guesses.len() == 8 {
            let status = guesses.join_next().await.unwrap().unwrap();
            *statuses.entry(status).or_insert(0) += 1;
        }
        let (addr, wrong) = (proxy.addr, wrong.clone());
        guesses.spawn(async move {
            let header = format!("Sec-WebSocket-Protocol: {wrong}\r\nConnection: close\r\n");
            let (_, head) = support::raw_upgrade(addr, &format!("/websockify?{i}"), &header).await;
            head[9..12].to_string()
        });
    }
    while let Some(status) = guesses.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses.values().sum::<usize>(), 1000);
    assert!(
        statuses.keys().all(|s| s == "401" || s == "429"),
        "{statuses:?}"
    );
    assert!(
        statuses.get("429").is_some_and(|n| *n > 900),
        "{statuses:?}"
    );

    let started = Instant::now();
    let protocols = proxy.good_protocols();
    let from = |source: [u8; 4]| {
        let protocols = protocols.clone();
        let addr = proxy.addr;
        async move {
            let stream = support::connect_from(source, addr).await.unwrap();
            let (mut ws, _) = support::websocket_on(stream, addr, "/websockify", Some(&protocols))
                .await
                .unwrap_or_else(|e| panic!("the right token from {source:?} was refused: {e}"));
            assert_eq!(greeting(&mut ws).await, Greeting::Rfb);
        }
    };
    tokio::join!(from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the viewers took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_and_page_are_served() {
    let upstream = CountingListener::start().await;
    let proxy = Proxy::start(ProxyOptions {
        vm_name: "web-01 <prod>",
        ..options(upstream.addr.to_string())
    })
    .await;
    assert_eq!(http_get(proxy.internal, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(proxy.internal, "/readyz").await.unwrap().0, 200);
    let metrics = http_request(proxy.internal, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("porthole_proxy_viewers"));
    // The console port serves the console only, and the internal port
    // nothing of it.
    for path in ["/healthz", "/readyz", "/metrics", VIEWERS_PATH] {
        let auth = format!("Bearer {TOKEN}");
        let response = http_request_with(proxy.addr, path, &[("Authorization", &auth)])
            .await
            .unwrap();
        assert_eq!(response.status, 404, "{path} on the console port");
    }
    for path in ["/", "/vnc.html", "/websockify", "/nope"] {
        assert_eq!(
            http_get(proxy.internal, path).await.unwrap().0,
            404,
            "{path}"
        );
    }
    for path in ["/", "/vnc.html"] {
        let (status, body) = http_get(proxy.addr, path).await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("web-01 &lt;prod&gt;"));
    }
    let page = http_request(proxy.addr, "/").await.unwrap();
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_page_headers(&page);
    assert_eq!(http_get(proxy.addr, "/nope").await.unwrap().0, 404);
    assert_eq!(http_get(proxy.addr, "/websockify").await.unwrap().0, 400);
    assert_eq!(upstream.count(), 0);
}

fn assert_page_headers(response: &HttpResponse) {
    let csp = response.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test]
async fn every_embedded_file_is_served_with_its_type_under_any_prefix() {
    let upstream = CountingListener::start().await;
    let proxy = Proxy::start(options(upstream.addr.to_string())).await;
    let page = http_get(proxy.addr, "/s/ns/console/").await.unwrap();
    assert_eq!(page.0, 200, "the page under an ingress prefix");
    for asset in porthole_proxy::assets::ASSETS {
        for prefix in ["/", "/s/ns/console/"] {
            let response = http_request(proxy.addr, &format!("{prefix}{}", asset.path))
                .await
                .unwrap();
            assert_eq!(response.status, 200, "{prefix}{}", asset.path);
            let expected = if asset.path.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(response.header("content-type"), Some(expected));
            assert_eq!(response.header("cache-control"), Some("no-cache"));
            assert!(response.header("etag").is_some());
            assert_page_headers(&response);
            assert_eq!(response.body.as_bytes(), asset.body);
        }
    }
}

#[tokio::test]
async fn sigterm_ends_the_session_as_completed_and_tells_viewers_the_proxy_stopped() {
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
    assert_eq!(rfb.closed().await, "proxy-stopping");
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
        reason.starts_with("upstream-failed: unreachable: cannot connect"),
        "{reason}"
    );
    let (code, _) = proxy.exited().await;
    assert_eq!(code, Some(1));
    let message = proxy.termination_message().unwrap();
    assert!(
        message.starts_with("upstream-failed: unreachable: cannot connect to the VNC server"),
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

async fn viewer_report(proxy: &Proxy, query: &str) -> ViewerReport {
    let auth = format!("Bearer {TOKEN}");
    let path = format!("{VIEWERS_PATH}{query}");
    let response = http_request_with(proxy.internal, &path, &[("Authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    serde_json::from_str(&response.body).unwrap()
}

/// The operator learns who is watching from the proxy: for the session's token
/// only, at once or by long poll.
#[tokio::test]
async fn the_viewer_report_follows_viewers_for_the_token_holder_only() {
    let qemu = Qemu::start(false).await;
    let proxy = Proxy::start(options(qemu.vnc.to_string())).await;
    for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let response = http_request_with(proxy.internal, VIEWERS_PATH, &headers)
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{auth:?}: {}", response.body);
        assert!(!response.body.contains("connected"), "{}", response.body);
    }
    let before = viewer_report(&proxy, "").await;
    assert_eq!((before.connected, before.connections), (0, 0));

    // A long poll from the current generation answers when the viewer comes.
    let poll = {
        let path = format!("?after={}", before.generation);
        let proxy_addr = proxy.internal;
        tokio::spawn(async move {
            let auth = format!("Bearer {TOKEN}");
            http_request_with(
                proxy_addr,
                &format!("{VIEWERS_PATH}{path}"),
                &[("Authorization", &auth)],
            )
            .await
            .unwrap()
        })
    };
    let rfb = viewer(&proxy).await;
    let answered: ViewerReport = serde_json::from_str(&poll.await.unwrap().body).unwrap();
    assert_eq!(answered.connected, 1);
    assert_eq!(answered.last_address.as_deref(), Some("127.0.0.1"));
    assert!(answered.last_connected_at.is_some());

    drop(rfb);
    let after = viewer_report(&proxy, &format!("?after={}", answered.generation)).await;
    assert_eq!((after.connected, after.connections), (0, 1));
    assert!(after.last_disconnected_at.is_some());
}

/// A viewer through the handshake and ServerInit.
async fn viewer(proxy: &Proxy) -> RfbClient<TcpStream> {
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut rfb = RfbClient::new(ws);
    rfb.handshake_through_proxy().await;
    rfb.init().await;
    rfb
}

/// The first thing an opened console WebSocket says: the RFB greeting for an
/// admitted viewer, the close reason for a refused one.
#[derive(Debug, PartialEq, Eq)]
enum Greeting {
    Rfb,
    Refused(String),
}

async fn greeting(ws: &mut WebSocketStream<TcpStream>) -> Greeting {
    let message = tokio::time::timeout(support::DEADLINE, ws.next())
        .await
        .expect("a first message in time")
        .expect("a message")
        .expect("no error");
    match message {
        Message::Binary(data) if &data[..] == b"RFB 003.008\n" => Greeting::Rfb,
        Message::Close(Some(frame)) => {
            assert_eq!(
                frame.code,
                tungstenite::protocol::frame::coding::CloseCode::Policy
            );
            Greeting::Refused(frame.reason.to_string())
        }
        other => panic!("unexpected first message {other:?}"),
    }
}

const OCCUPIED: &str = "another viewer is connected";
const ALREADY_USED: &str = "the session was for one viewer, who has already connected";

/// Keeps a viewer busy for `period`: a full-screen update request every
/// 200 ms (so framebuffer traffic flows) and, with `input`, a pointer move.
/// Returns the close reason if the session ended meanwhile, and how many
/// bytes the VM sent.
async fn busy(
    rfb: &mut RfbClient<TcpStream>,
    period: Duration,
    input: bool,
) -> (Option<String>, usize) {
    let end = Instant::now() + period;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut received = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end {
                    return (None, received);
                }
                if input {
                    rfb.send(&[5, 0, 0, 20, 0, 20]).await;
                }
                rfb.request_update().await;
            }
            message = rfb.ws.next() => match message {
                Some(Ok(Message::Binary(data))) => received += data.len(),
                Some(Ok(Message::Close(frame))) => {
                    return (Some(frame.map(|f| f.reason.to_string()).unwrap_or_default()), received);
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (Some(String::new()), received),
            },
        }
    }
}

#[tokio::test]
async fn expires_at_ends_the_session_at_that_instant() {
    let qemu = Qemu::start(false).await;
    // A whole second, so "on the second" is easy to check; counted from now,
    // before the proxy starts, so its start-up time cannot stretch it.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let expires = Duration::from_secs(now.as_secs() + 3);
    let expires_at = jiff::Timestamp::from_second(expires.as_secs() as i64)
        .unwrap()
        .to_string();
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::EXPIRES_AT, &expires_at)],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let mut rfb = viewer(&proxy).await;
    assert_eq!(rfb.closed().await, "expired");
    let ended = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert!(ended >= expires, "ended {:?} early", expires - ended);
    assert!(
        ended < expires + Duration::from_secs(1),
        "ended {:?} late",
        ended - expires
    );
    assert_eq!(proxy.exited().await.0, Some(0));
    assert_eq!(proxy.termination_message().as_deref(), Some("expired"));
}

#[tokio::test]
async fn nobody_connecting_in_time_ends_the_session_as_never_connected() {
    let upstream = CountingListener::start().await;
    let started = Instant::now();
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::CONNECT_TIMEOUT, "1s")],
        ..options(upstream.addr.to_string())
    })
    .await;
    assert_eq!(proxy.exited().await.0, Some(0));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        proxy.termination_message().as_deref(),
        Some("never-connected")
    );
}

#[tokio::test]
async fn a_viewer_connecting_in_time_keeps_the_session() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::CONNECT_TIMEOUT, "1s")],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let mut rfb = viewer(&proxy).await;
    let (closed, _) = busy(&mut rfb, Duration::from_secs(2), true).await;
    assert_eq!(closed, None, "the session outlived its connect timeout");
    proxy.sigterm();
    assert_eq!(rfb.closed().await, "proxy-stopping");
    proxy.exited().await;
}

#[tokio::test]
async fn idle_counts_input_but_not_framebuffer_traffic() {
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::IDLE_TIMEOUT, "2s")],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let mut rfb = viewer(&proxy).await;
    // Input keeps it alive past the idle timeout...
    let (closed, _) = busy(&mut rfb, Duration::from_secs(3), true).await;
    assert_eq!(closed, None);
    // ...screen updates alone do not.
    let last_input = Instant::now();
    let (closed, received) = busy(&mut rfb, support::DEADLINE, false).await;
    assert_eq!(closed.as_deref(), Some("idle"));
    let idle = last_input.elapsed();
    assert!(received > 0, "framebuffer traffic flowed while idle");
    assert!(
        // Generous for loaded machines; without the idle timeout it would
        // run until the deadline.
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(4),
        "idle after {idle:?}"
    );
    assert_eq!(proxy.exited().await.0, Some(0));
    assert_eq!(proxy.termination_message().as_deref(), Some("idle"));
}

#[tokio::test]
async fn run_once_admits_one_of_two_racing_viewers_and_ends_when_it_leaves() {
    let qemu = Qemu::start(false).await;
    let tap = Tap::start(qemu.vnc).await;
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::RUN_ONCE, "true")],
        ..options(tap.addr.to_string())
    })
    .await;
    let protocols = proxy.good_protocols();
    let (a, b) = tokio::join!(
        proxy.websocket(Some(&protocols)),
        proxy.websocket(Some(&protocols))
    );
    let (mut a, mut b) = (a.unwrap().0, b.unwrap().0);
    let (first_a, first_b) = tokio::join!(greeting(&mut a), greeting(&mut b));
    let refused = Greeting::Refused(ALREADY_USED.into());
    let winner = match (first_a, first_b) {
        (Greeting::Rfb, loser) => {
            assert_eq!(loser, refused);
            a
        }
        (loser, Greeting::Rfb) => {
            assert_eq!(loser, refused);
            b
        }
        other => panic!("nobody won: {other:?}"),
    };
    assert_eq!(tap.connections(), 1, "only the winner reached the VM");

    // A latecomer is refused too, while the winner is still there.
    let (mut late, _) = proxy.websocket(Some(&protocols)).await.unwrap();
    assert_eq!(greeting(&mut late).await, refused);
    assert_eq!(tap.connections(), 1);

    drop(winner);
    assert_eq!(proxy.exited().await.0, Some(0));
    assert_eq!(proxy.termination_message().as_deref(), Some("completed"));
}

#[tokio::test]
async fn an_exclusive_session_refuses_a_second_viewer_with_a_reason() {
    let qemu = Qemu::start(false).await;
    let tap = Tap::start(qemu.vnc).await;
    let proxy = Proxy::start(options(tap.addr.to_string())).await;
    let mut first = viewer(&proxy).await;
    first.wait_for_pixels().await;

    let (mut second, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    assert_eq!(
        greeting(&mut second).await,
        Greeting::Refused(OCCUPIED.into())
    );
    assert_eq!(
        tap.connections(),
        1,
        "the refused viewer never reached the VM"
    );

    // Once the first leaves, the next gets in.
    first.ws.close(None).await.unwrap();
    let mut next = eventually("the first viewer's place to free up", || async {
        let (mut ws, _) = proxy.websocket(Some(&proxy.good_protocols())).await.ok()?;
        (greeting(&mut ws).await == Greeting::Rfb).then_some(ws)
    })
    .await;
    next.close(None).await.unwrap();
}

#[tokio::test]
async fn shared_viewers_each_see_the_vm_and_none_can_push_the_others_out() {
    let mut qemu = Qemu::start(false).await;
    let proxy = Proxy::start(ProxyOptions {
        env: &[(env::VIEWERS, VIEWERS_SHARED)],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let mut a = viewer(&proxy).await;
    a.wait_for_pixels().await;
    // B asks for the VM to itself (ClientInit shared-flag 0); the proxy asks
    // for sharing anyway, so QEMU keeps A.
    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let mut b = RfbClient::new(ws);
    b.handshake_through_proxy().await;
    b.init_with(0).await;
    b.wait_for_pixels().await;
    // QEMU may still list the harness's port probe for a moment.
    let deadline = Instant::now() + support::DEADLINE;
    while qemu.vnc_clients().await != 2 {
        assert!(Instant::now() < deadline, "both viewers at QEMU");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.wait_for_pixels().await;
}

#[tokio::test]
async fn view_only_input_never_reaches_the_vm() {
    const KEY: [u8; 8] = [4, 1, 0, 0, 0, 0, 0xab, 0xcd];
    const POINTER: [u8; 6] = [5, 1, 0x12, 0x34, 0x0a, 0xbc];
    let qemu = Qemu::start(false).await;

    for view_only in [true, false] {
        let tap = Tap::start(qemu.vnc).await;
        let proxy = Proxy::start(ProxyOptions {
            env: &[(env::VIEW_ONLY, if view_only { "true" } else { "false" })],
            ..options(tap.addr.to_string())
        })
        .await;
        let mut rfb = viewer(&proxy).await;
        rfb.send(&KEY).await;
        rfb.send(&POINTER).await;
        // An update answered means the messages before it were dealt with.
        rfb.request_update().await;
        rfb.read_update().await;
        let sent = tap.sent();
        assert!(contains(&sent, &[3, 0, 0, 0, 0, 0]), "updates pass");
        assert_eq!(
            contains(&sent, &KEY),
            !view_only,
            "key, view-only {view_only}"
        );
        assert_eq!(
            contains(&sent, &POINTER),
            !view_only,
            "pointer, view-only {view_only}"
        );
        let counted = if view_only { None } else { Some(1.0) };
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric(&metrics, "porthole_proxy_input_events_total{kind=\"key\"}"),
            counted
        );
    }
}

#[tokio::test]
async fn invalid_settings_are_a_startup_error_naming_the_variable() {
    for (var, value) in [
        (env::EXPIRES_AT, "tomorrow"),
        (env::CONNECT_TIMEOUT, "5 minutes"),
        (env::IDLE_TIMEOUT, "soon"),
        (env::RUN_ONCE, "yes"),
        (env::VIEWERS, "everyone"),
        (env::VIEW_ONLY, "1"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_porthole-proxy"))
            .arg("session")
            .env_clear()
            .env(env::UPSTREAM, "127.0.0.1:1")
            .env(var, value)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

/// A recorded session: one file per viewer connection, the whole RFB stream
/// the viewer had (the proxy's handshake with it included, security type
/// None), written through as it goes and finished when the viewer leaves.
#[tokio::test]
async fn each_viewer_connection_is_recorded_from_its_handshake() {
    use porthole_proxy::metrics::Direction;
    use porthole_proxy::recording;

    let mut qemu = Qemu::start(true).await;
    qemu.set_vnc_password("s3cret").await;
    let dir = support::TempDir::new("recorded");
    let base = dir.path().join("web/0f1e2d3c-uid/connection");
    let base_text = base.to_str().unwrap().to_string();
    let proxy = Proxy::start(ProxyOptions {
        vnc_password: Some("s3cret"),
        env: &[(env::RECORD, &base_text), (env::VIEWERS, VIEWERS_SHARED)],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let first = recording::Recorder::path(&base, 1);
    assert!(!first.exists(), "nothing is recorded before a viewer comes");

    let mut rfb = viewer(&proxy).await;
    rfb.wait_for_pixels().await;
    let key = [4, 1, 0, 0, 0, 0, 0, 0x61];
    rfb.send(&key).await;
    // An update answered means the key before it was relayed.
    rfb.request_update().await;
    rfb.read_update().await;
    let written = std::fs::read_to_string(&first).unwrap();
    assert!(written.starts_with("var VNC_frame_data = [\n"), "{written}");
    assert!(!written.contains("'EOF'"), "still being written");

    let mut second = viewer(&proxy).await;
    second.wait_for_pixels().await;
    drop(second.ws);
    rfb.ws.close(None).await.unwrap();
    let text = eventually("both recordings to be finished", || async {
        let one = std::fs::read_to_string(&first).ok()?;
        let two = std::fs::read_to_string(recording::Recorder::path(&base, 2)).ok()?;
        (one.ends_with("'EOF'];\n") && two.ends_with("'EOF'];\n")).then_some(one)
    })
    .await;

    let frames = recording::read(&first).unwrap();
    let stream = |direction: Direction| -> Vec<u8> {
        frames
            .iter()
            .filter(|f| f.direction == direction)
            .flat_map(|f| f.data.clone())
            .collect()
    };
    let (down, up) = (stream(Direction::Downstream), stream(Direction::Upstream));
    // What the viewer was given, in order, is exactly what it received.
    assert!(
        down.starts_with(&rfb.received),
        "the recording holds what the viewer saw, in order"
    );
    assert!(down.starts_with(b"RFB 003.008\n\x01\x01\x00\x00\x00\x00"));
    assert!(
        up.starts_with(b"RFB 003.008\n\x01\x01"),
        "version, None, ClientInit"
    );
    assert!(contains(&up, &key), "the key press is recorded");
    assert!(text.contains(r"'}"), "viewer-to-VM frames are marked }}");
    // The viewer's side only: no token, and none of the VM's VNC
    // authentication (its challenge would start right after a type-2 choice).
    assert!(!text.contains(TOKEN) && !text.contains("s3cret"));
    assert!(
        !contains(&up[..14], &[2]),
        "the viewer never chose VNC authentication"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(first.parent().unwrap())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o007, 0, "the directory is private: {mode:o}");
}

/// A recording that cannot be written is a session that cannot work: the
/// viewer is told why, the VM is never dialled, and the session ends as
/// `recording-failed`.
#[tokio::test]
async fn an_unwritable_recording_refuses_the_viewer_before_the_vm_is_dialled() {
    let upstream = CountingListener::start().await;
    let dir = support::TempDir::new("unrecordable");
    let base = dir.path().join("connection");
    // A full disk: the file opens, nothing can be written to it.
    std::os::unix::fs::symlink("/dev/full", dir.path().join("connection.1")).unwrap();
    let base_text = base.to_str().unwrap().to_string();
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::RECORD, &base_text)],
        ..options(upstream.addr.to_string())
    })
    .await;

    let (ws, _) = proxy
        .websocket(Some(&proxy.good_protocols()))
        .await
        .unwrap();
    let reason = RfbClient::new(ws).closed().await;
    assert!(
        reason.starts_with("recording-failed: No space left on device"),
        "{reason}"
    );
    let (code, logs) = proxy.exited().await;
    assert_eq!(code, Some(1), "{logs}");
    let message = proxy.termination_message().expect("a termination message");
    assert!(
        message.starts_with("recording-failed: cannot write the recording ")
            && message.contains("connection.1"),
        "{message}"
    );
    assert_eq!(upstream.count(), 0, "the VM was never dialled");
}

/// A recording directory that cannot be created ends the session at start,
/// before anyone can connect.
#[tokio::test]
async fn a_recording_directory_that_cannot_be_made_ends_the_session_at_once() {
    let upstream = CountingListener::start().await;
    let dir = support::TempDir::new("no-recording-dir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let base = file.join("web/uid/connection");
    let base_text = base.to_str().unwrap().to_string();
    let mut proxy = Proxy::spawn(ProxyOptions {
        env: &[(env::RECORD, &base_text)],
        ..options(upstream.addr.to_string())
    });
    let (code, logs) = proxy.exited().await;
    assert_eq!(code, Some(1), "{logs}");
    let message = proxy.termination_message().expect("a termination message");
    assert!(
        message.starts_with("recording-failed: cannot create the recording directory ")
            && message.contains("not-a-directory/web/uid"),
        "{message}"
    );
    assert_eq!(upstream.count(), 0);
}

/// One client holds 200 connections to the console port that never upgrade,
/// half idle after a keep-alive request and half stuck in a half-sent head,
/// and opens another each time the proxy closes one. Meanwhile a viewer
/// with the right token, from the same address (as behind an ingress), gets
/// the console within seconds, again and again, and `/readyz` on the
/// internal port answers throughout.
#[tokio::test]
async fn a_flood_of_connections_that_never_upgrade_keeps_neither_viewer_nor_probes_out() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HOLDERS: usize = 200;
    const FLOOD: Duration = Duration::from_secs(12);
    const PROMPT: Duration = Duration::from_secs(3);
    let qemu = Qemu::start(false).await;
    let mut proxy = Proxy::start(ProxyOptions {
        env: &[(env::VIEWERS, VIEWERS_SHARED)],
        ..options(qemu.vnc.to_string())
    })
    .await;
    let _logs = proxy.logs();
    let until = Instant::now() + FLOOD;
    let opened = Arc::new(AtomicUsize::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..HOLDERS {
        let (addr, opened) = (proxy.addr, opened.clone());
        flood.spawn(async move {
            while Instant::now() < until {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let head: &[u8] = if i % 2 == 0 {
                    b"GET /vnc.html HTTP/1.1\r\nHost: flood\r\n\r\n"
                } else {
                    b"GET /vnc.html HTTP/1.1\r\nHost: flood\r\nX-Slow: 1"
                };
                if stream.write_all(head).await.is_ok() {
                    // Holds the connection until the proxy closes it.
                    let mut sink = Vec::new();
                    let _ = tokio::time::timeout_at(until, stream.read_to_end(&mut sink)).await;
                }
            }
        });
    }
    let probes = {
        let internal = proxy.internal;
        tokio::spawn(async move {
            let mut answered = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while Instant::now() < until {
                tick.tick().await;
                let probe =
                    tokio::time::timeout(Duration::from_secs(1), http_get(internal, "/readyz"));
                match probe.await {
                    Ok(Ok((200, _))) => answered += 1,
                    other => panic!("/readyz failed during the flood: {other:?}"),
                }
            }
            answered
        })
    };

    // Once the flood has filled the pool, and a few times more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut viewers = 0;
    while Instant::now() + PROMPT < until {
        let started = Instant::now();
        let rfb = tokio::time::timeout(PROMPT, viewer(&proxy))
            .await
            .unwrap_or_else(|_| panic!("viewer {viewers} got no console within {PROMPT:?}"));
        eprintln!(
            "viewer {viewers} had the console after {:?}",
            started.elapsed()
        );
        viewers += 1;
        drop(rfb);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(viewers >= 3, "only {viewers} viewers tried");
    let answered = probes.await.unwrap();
    assert!(answered >= 30, "only {answered} probes");
    while flood.join_next().await.is_some() {}
    let opened = opened.load(Ordering::Relaxed);
    assert!(
        opened > 2 * HOLDERS,
        "the flood was {opened} connections: the proxy should have closed and the client reopened"
    );
}
