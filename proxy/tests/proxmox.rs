//! Pod mode with a Proxmox VE upstream, end to end: the real proxy binary in
//! front of the Proxmox VE simulator (`porthole-pve-sim`), which runs real
//! QEMU VMs behind a faithful vncproxy/vncwebsocket API over TLS.

#[path = "support/pve.rs"]
mod pve;
mod support;

use porthole_api::contract::{UpstreamFailure, env};
use pve::{ALICE_TOKEN, Identity, PveOptions, PveProxy, PveSim, config, no_faults, other_ca_pem};
use serde_json::json;
use support::{contains, eventually, http_request};

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A qemu and an lxc console, each through its own session, reach a
/// framebuffer with pixels.
async fn qemu_and_lxc_consoles_work(behaviour: &str) {
    let sim = PveSim::start(&config(behaviour, "[{vmid: 100}, {vmid: 200, kind: lxc}]")).await;
    for (kind, vmid) in [("qemu", 100), ("lxc", 200)] {
        let identity = Identity::alice(&sim).await;
        let mut proxy = PveProxy::start(PveOptions::new(&sim, kind, vmid, identity)).await;
        let mut viewer = proxy.view().await;
        // The viewer's input reaches the VM.
        viewer.send(&[4, 1, 0, 0, 0, 0, 0, 0x61]).await;
        viewer.send(&[4, 0, 0, 0, 0, 0, 0, 0x61]).await;
        eventually("the key to reach the VM", || async {
            let input = sim.input(vmid).await;
            input
                .iter()
                .any(|e| e["type"] == "key" && e["keysym"] == 0x61)
                .then_some(())
        })
        .await;
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric(&metrics, "porthole_proxy_pve_mint_seconds_count"),
            Some(1.0),
            "{metrics}"
        );
        drop(viewer);
        proxy.stop().await;
    }
    assert_eq!(sim.issued().await.vnc_tickets.len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn behaviour_b_consoles_show_the_vms_screen() {
    qemu_and_lxc_consoles_work("B").await;
}

#[tokio::test]
async fn behaviour_a_consoles_show_the_vms_screen() {
    qemu_and_lxc_consoles_work("A").await;
}

/// A console ticket lives 40 s and its listener 10 s, so each viewer gets a
/// console minted when it connects: a viewer minutes later works as well as
/// the first (checked by counting the mints, not by waiting).
#[tokio::test]
async fn every_viewer_connection_mints_a_fresh_console() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        100,
        Identity::alice(&sim).await,
    ))
    .await;
    assert!(
        sim.issued().await.vnc_tickets.is_empty(),
        "nothing minted ahead"
    );
    for viewers in 1..=3 {
        let mut viewer = proxy.view().await;
        let issued = sim.issued().await;
        assert_eq!(issued.vnc_tickets.len(), viewers, "one mint per viewer");
        // A viewer that leaves closes its console cleanly.
        viewer.ws.close(None).await.unwrap();
        viewer.closed().await;
    }
    let issued = sim.issued().await;
    let mut tickets = issued.vnc_tickets.clone();
    tickets.dedup();
    assert_eq!(tickets.len(), 3, "each viewer had its own ticket");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, "porthole_proxy_pve_mint_seconds_count"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "porthole_proxy_connections_ended_total{reason=\"viewer-left\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    let logs = proxy.stop().await;
    assert_eq!(proxy.termination_message().as_deref(), Some("completed"));
    for secret in issued.secrets() {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
    }
    sim.shutdown().await;
}

/// The operator renews the login ticket and the kubelet swaps the files: the
/// proxy reads them at every connection, never once at start.
#[tokio::test]
async fn the_identity_is_read_again_at_every_connection() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    let (ticket, csrf) = sim.login("alice@pve").await;
    // A well-formed ticket that is not valid: the proxy starts with it.
    let stale = Identity::Ticket {
        ticket: ticket.replace("::", "::AAAA"),
        csrf: csrf.clone(),
    };
    let mut proxy = PveProxy::start(PveOptions::new(&sim, "qemu", 100, stale)).await;
    Identity::Ticket { ticket, csrf }.write(&proxy.session_dir());
    proxy.view().await;
    // Then the operator switches the session to an API token.
    Identity::Token(ALICE_TOKEN.into()).write(&proxy.session_dir());
    proxy.view().await;
    assert_eq!(sim.issued().await.vnc_tickets.len(), 2);
    proxy.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_api_token_opens_consoles_too() {
    let sim = PveSim::start(&config("B", "[{vmid: 200, kind: lxc}]")).await;
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "lxc",
        200,
        Identity::Token(ALICE_TOKEN.into()),
    ))
    .await;
    proxy.view().await;
    proxy.view().await;
    assert_eq!(sim.issued().await.vnc_tickets.len(), 2);
    let logs = proxy.stop().await;
    assert!(!logs.contains("6c1f2a4e-porthole-token"), "{logs}");
    sim.shutdown().await;
}

/// The browser sees neither the login ticket, nor the CSRF token, nor any VNC
/// ticket or password: not in the page, the scripts, or the WebSocket.
#[tokio::test]
async fn no_proxmox_secret_reaches_the_viewer() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        100,
        Identity::alice(&sim).await,
    ))
    .await;
    let mut seen: Vec<u8> = Vec::new();
    for path in ["/", "/vnc.html"] {
        seen.extend(
            http_request(proxy.addr, path)
                .await
                .unwrap()
                .body
                .into_bytes(),
        );
    }
    for asset in porthole_proxy::assets::ASSETS {
        let response = http_request(proxy.addr, &format!("/{}", asset.path))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        seen.extend(response.body.into_bytes());
    }
    for _ in 0..2 {
        let (ws, response) = proxy.viewer().await.unwrap();
        for (name, value) in response.headers() {
            seen.extend(name.as_str().as_bytes());
            seen.extend(value.as_bytes());
        }
        let mut viewer = support::RfbClient::new(ws);
        viewer.handshake_through_proxy().await;
        viewer.init().await;
        viewer.wait_for_pixels().await;
        viewer.ws.close(None).await.unwrap();
        viewer.closed().await;
        seen.extend(&viewer.received);
    }
    let issued = sim.issued().await;
    assert_eq!(issued.vnc_tickets.len(), 2);
    assert_eq!(issued.vnc_passwords.len(), 2);
    assert!(!issued.login_tickets.is_empty() && !issued.csrf_tokens.is_empty());
    for secret in issued.secrets() {
        assert!(
            !contains(&seen, secret.as_bytes()),
            "the viewer saw {secret:?}"
        );
    }
    let logs = proxy.stop().await;
    for secret in issued.secrets() {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
    }
    sim.shutdown().await;
}

/// Input reaches the VM; with viewOnly it does not (checked once the VM has
/// answered a request sent after the input, so nothing is still on its way).
#[tokio::test]
async fn view_only_viewers_input_never_reaches_the_vm() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    let mut options = PveOptions::new(&sim, "qemu", 100, Identity::alice(&sim).await);
    options.env.push((env::VIEW_ONLY, "true".into()));
    let mut proxy = PveProxy::start(options).await;
    let mut viewer = proxy.view().await;
    viewer.send(&[4, 1, 0, 0, 0, 0, 0, 0x62]).await; // key 'b' down
    viewer.send(&[4, 0, 0, 0, 0, 0, 0, 0x62]).await;
    viewer.send(&[5, 1, 0, 10, 0, 20]).await; // pointer
    viewer.request_update().await;
    viewer.read_update().await;
    assert_eq!(sim.input(100).await, Vec::<serde_json::Value>::new());
    proxy.stop().await;
    sim.shutdown().await;
}

// Failures: each its own reason in the termination message and in the close
// reason the viewer gets, and no secret anywhere.

#[tokio::test]
async fn credential_failures() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    let (ticket, csrf) = sim.login("alice@pve").await;
    // A ticket Proxmox VE did not sign.
    let forged = Identity::Ticket {
        ticket: ticket.replace("::", "::AAAA"),
        csrf: csrf.clone(),
    };
    let Identity::Ticket { ticket: bad, .. } = &forged else {
        unreachable!()
    };
    let bad = bad.clone();
    let mut proxy = PveProxy::start(PveOptions::new(&sim, "qemu", 100, forged)).await;
    proxy
        .fails_with(UpstreamFailure::BadCredentials, &[&ticket, &bad, &csrf])
        .await;

    let wrong_token = Identity::Token("alice@pve!porthole=not-the-secret".into());
    let mut proxy = PveProxy::start(PveOptions::new(&sim, "qemu", 100, wrong_token)).await;
    proxy
        .fails_with(UpstreamFailure::BadCredentials, &["not-the-secret"])
        .await;

    // bob may see VMs but lacks VM.Console.
    let bob = Identity::login(&sim, "bob@pve").await;
    let mut proxy = PveProxy::start(PveOptions::new(&sim, "qemu", 100, bob)).await;
    let logs = proxy
        .fails_with(UpstreamFailure::PermissionDenied, &[])
        .await;
    assert!(
        logs.contains("VM.Console"),
        "Proxmox VE's message is kept:\n{logs}"
    );
    let issued = sim.issued().await;
    assert!(issued.vnc_tickets.is_empty(), "nothing was minted");
    for secret in issued.secrets() {
        assert!(!logs.contains(secret));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn vm_failures() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}, {vmid: 101, running: false}]")).await;
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        999,
        Identity::alice(&sim).await,
    ))
    .await;
    proxy.fails_with(UpstreamFailure::VmNotFound, &[]).await;

    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        101,
        Identity::alice(&sim).await,
    ))
    .await;
    let logs = proxy.fails_with(UpstreamFailure::VmNotRunning, &[]).await;
    assert!(logs.contains("not running"), "{logs}");

    // A VM that stops under a viewer ends the session as upstream-closed.
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        100,
        Identity::alice(&sim).await,
    ))
    .await;
    let mut viewer = proxy.view().await;
    sim.control(reqwest::Method::POST, "/vms/100/stop", None)
        .await;
    assert_eq!(viewer.closed().await, "upstream-closed");
    assert_eq!(proxy.exited().await.0, Some(0));
    assert_eq!(
        proxy.termination_message().as_deref(),
        Some("upstream-closed")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn console_failures() {
    let sim = PveSim::start(&config("B", "[{vmid: 100}]")).await;
    // The one-shot listener gave up before the proxy came.
    sim.faults(json!({"listener_timeout": true})).await;
    let mut options = PveOptions::new(&sim, "qemu", 100, Identity::alice(&sim).await);
    // pve-http-server never answers an upgrade whose listener is gone (the
    // simulator closes the connection instead); either way the proxy gives up
    // on the upgrade within the handshake timeout.
    options.extra_args = vec!["--handshake-timeout", "3s"];
    let mut proxy = PveProxy::start(options).await;
    let secrets = sim.issued().await;
    proxy
        .fails_with(UpstreamFailure::ListenerTimeout, &secrets.secrets())
        .await;

    // The ticket signing key rotated between vncproxy and vncwebsocket.
    sim.faults(json!({"reject_vnc_tickets": true})).await;
    let mut proxy = PveProxy::start(PveOptions::new(
        &sim,
        "qemu",
        100,
        Identity::alice(&sim).await,
    ))
    .await;
    let logs = proxy.fails_with(UpstreamFailure::TicketRejected, &[]).await;
    sim.faults(no_faults()).await;
    let issued = sim.issued().await;
    assert_eq!(issued.vnc_tickets.len(), 2, "both consoles were minted");
    for secret in issued.secrets() {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_and_network_failures() {
    let sim = PveSim::start(&config("B", "[{vmid: 100, running: false}]")).await;
    let alice = Identity::alice(&sim).await;
    let Identity::Ticket { ticket, csrf } = alice.clone() else {
        unreachable!()
    };

    // A pin of another certificate.
    let mut options = PveOptions::new(&sim, "qemu", 100, alice.clone());
    options.ca_pem = None;
    let mut wrong_pin = sim.fingerprint.clone();
    let last = wrong_pin.pop().unwrap();
    wrong_pin.push(if last == '0' { '1' } else { '0' });
    options.env.push((env::PVE_FINGERPRINT, wrong_pin.clone()));
    let mut proxy = PveProxy::start(options).await;
    let logs = proxy
        .fails_with(UpstreamFailure::TlsVerification, &[&ticket, &csrf])
        .await;
    assert!(logs.contains(&wrong_pin), "the pin is named:\n{logs}");

    // The right pin gets as far as Proxmox VE's own answer.
    let mut options = PveOptions::new(&sim, "qemu", 100, alice.clone());
    options.ca_pem = Some(other_ca_pem()); // a pin overrides the CA bundle
    options
        .env
        .push((env::PVE_FINGERPRINT, sim.fingerprint.to_lowercase()));
    let mut proxy = PveProxy::start(options).await;
    proxy.fails_with(UpstreamFailure::VmNotRunning, &[]).await;

    // A CA bundle of another CA.
    let mut options = PveOptions::new(&sim, "qemu", 100, alice.clone());
    options.ca_pem = Some(other_ca_pem());
    let mut proxy = PveProxy::start(options).await;
    proxy
        .fails_with(UpstreamFailure::TlsVerification, &[&ticket, &csrf])
        .await;

    // No CA bundle, no pin: the public web PKI, which never signed it.
    let mut options = PveOptions::new(&sim, "qemu", 100, alice.clone());
    options.ca_pem = None;
    let mut proxy = PveProxy::start(options).await;
    proxy
        .fails_with(UpstreamFailure::TlsVerification, &[&ticket, &csrf])
        .await;

    // Verification skipped on purpose, and said so.
    let mut options = PveOptions::new(&sim, "qemu", 100, alice.clone());
    options.ca_pem = Some(other_ca_pem());
    options
        .env
        .push((env::PVE_INSECURE_SKIP_VERIFY, "true".into()));
    let mut proxy = PveProxy::start(options).await;
    let logs = proxy.fails_with(UpstreamFailure::VmNotRunning, &[]).await;
    assert!(logs.contains("not verified"), "{logs}");

    // Nobody listening: the viewer is refused, the session waits for it.
    let closed = support::free_port();
    let mut options = PveOptions::new(&sim, "qemu", 100, alice);
    options.url = format!("https://127.0.0.1:{closed}");
    let mut proxy = PveProxy::start(options).await;
    proxy
        .refused_for_now(UpstreamFailure::Unreachable, &[&ticket, &csrf])
        .await;
    let logs = proxy.stop().await;
    for secret in [&ticket, &csrf] {
        assert!(!logs.contains(secret.as_str()), "a secret in the logs");
    }
    sim.shutdown().await;
}

/// A run-once session's one turn is not spent by a viewer the API outage
/// refused: the next viewer, once the API is back, still gets the console.
#[tokio::test]
async fn an_api_outage_does_not_spend_a_run_once_sessions_turn() {
    let mut sim = PveSim::start(&config("B", "[{vmid: 100, running: true}]")).await;
    let alice = Identity::alice(&sim).await;
    let mut options = PveOptions::new(&sim, "qemu", 100, alice);
    options.env.push((env::RUN_ONCE, "true".into()));
    let mut proxy = PveProxy::start(options).await;
    sim.take_down().await;
    proxy
        .refused_for_now(UpstreamFailure::Unreachable, &[])
        .await;
    sim.bring_up().await;
    let viewer = proxy.view().await;
    drop(viewer);
    proxy.stop().await;
    sim.shutdown().await;
}

/// The Proxmox VE API down for a while: a viewer who comes meanwhile is told
/// the hypervisor cannot be reached, and the session stays open, so the
/// next viewer, once the API is back, gets the console.
#[tokio::test]
async fn an_api_outage_refuses_viewers_without_ending_the_session() {
    let mut sim = PveSim::start(&config("B", "[{vmid: 100, running: true}]")).await;
    let alice = Identity::alice(&sim).await;
    let mut proxy = PveProxy::start(PveOptions::new(&sim, "qemu", 100, alice)).await;
    sim.take_down().await;
    proxy
        .refused_for_now(UpstreamFailure::Unreachable, &[])
        .await;
    proxy
        .refused_for_now(UpstreamFailure::Unreachable, &[])
        .await;
    sim.bring_up().await;
    let viewer = proxy.view().await;
    drop(viewer);
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("upstream-unavailable"), "{metrics}");
    proxy.stop().await;
    sim.shutdown().await;
}

/// A session names one upstream: a VNC server or a Proxmox VE guest, fully.
#[tokio::test]
async fn a_session_with_no_or_two_upstreams_does_not_start() {
    let dir = support::TempDir::new("pve-config");
    std::fs::write(dir.path().join("token"), pve::TOKEN).unwrap();
    let session_dir = dir.path().to_str().unwrap();
    let pve = [
        (env::PVE_URL, "https://127.0.0.1:8006"),
        (env::PVE_NODE, "pve"),
        (env::PVE_VM_KIND, "qemu"),
        (env::PVE_VMID, "100"),
    ];
    type Vars<'a> = Vec<(&'a str, &'a str)>;
    let cases: [(Vars, &[&str]); 4] = [
        (vec![], &[env::UPSTREAM, env::PVE_URL]),
        (
            [&pve[..], &[(env::UPSTREAM, "127.0.0.1:5900")]].concat(),
            &["not both"],
        ),
        (pve[..3].to_vec(), &[env::PVE_VMID]),
        // No identity in the session directory.
        (pve.to_vec(), &["pve-ticket", "pve-api-token"]),
    ];
    for (vars, expected) in cases {
        let mut vars = vars.clone();
        vars.push((env::SESSION_DIR, session_dir));
        let output = tokio::time::timeout(
            support::DEADLINE,
            support::proxy_command(&["session"], &vars).output(),
        )
        .await
        .expect("the proxy exits")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        for text in expected {
            assert!(stderr.contains(text), "{vars:?}: {text} not in {stderr}");
        }
    }
}
