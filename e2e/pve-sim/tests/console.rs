//! Consoles end to end against real QEMU VMs: login, vncproxy, vncwebsocket over
//! TLS, VNC authentication, a framebuffer with pixels, recorded input, and the
//! failure modes of stopped VMs and late viewers.

mod support;

use std::time::Duration;

use anyhow::{Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Auth, Sim, eventually, rfb_handshake, wait_for_nonzero_pixels};

fn config(behaviour: &str, vms: &str) -> String {
    format!(
        r#"
behaviour: {behaviour}
auth_failure_delay_ms: 200
users:
  - {{id: alice@pve, password: alice-secret, privileges: {{/vms: [VM.Console, VM.Audit]}}}}
  - {{id: bob@pve, password: bob-secret, privileges: {{/vms: [VM.Console]}}}}
tokens:
  - {{id: alice@pve!porthole, secret: s3cr3t, privsep: false}}
vms: {vms}
"#
    )
}

async fn login(sim: &Sim, user: &str) -> Result<Auth> {
    let password = format!("{}-secret", user.split('@').next().unwrap_or_default());
    let (ticket, csrf) = sim.login(user, &password).await?;
    Ok(Auth::Ticket { ticket, csrf })
}

/// vncproxy + vncwebsocket + RFB with the password the behaviour prescribes;
/// returns the open connection and the task's UPID.
async fn open_console(
    sim: &Sim,
    auth: &Auth,
    kind: &str,
    vmid: u32,
    a_or_b: char,
) -> Result<(support::Ws, String)> {
    let (status, body) = sim
        .vncproxy(auth, kind, vmid, &[("websocket", "1")])
        .await?;
    if status != StatusCode::OK {
        bail!("vncproxy: {status} {body}");
    }
    let data = &body["data"];
    let ticket = data["ticket"].as_str().unwrap_or_default();
    let port = data["port"].as_u64().unwrap_or_default() as u16;
    let password = match a_or_b {
        // Late 2025: the ticket is the VNC password (its first 8 bytes count).
        'A' => ticket.to_string(),
        _ => data["password"].as_str().unwrap_or_default().to_string(),
    };
    let mut ws = sim.websocket(auth, kind, vmid, port, ticket).await?;
    let (width, height) = rfb_handshake(&mut ws, &password).await?;
    wait_for_nonzero_pixels(&mut ws, width, height).await?;
    Ok((ws, data["upid"].as_str().unwrap_or_default().to_string()))
}

async fn input(sim: &Sim, vmid: u32) -> Result<Vec<Value>> {
    let events = sim
        .control(Method::GET, &format!("/vms/{vmid}/input"), None)
        .await?;
    Ok(events.as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn consoles_work_end_to_end_in_behaviour_b() -> Result<()> {
    let sim = Sim::start(&config("B", "[{vmid: 100}, {vmid: 200, kind: lxc}]")).await?;
    let alice = login(&sim, "alice@pve").await?;

    let (mut ws, upid) = open_console(&sim, &alice, "qemu", 100, 'B').await?;
    ws.send(&[4, 1, 0, 0, 0, 0, 0, 0x61]).await?; // key 'a' down
    ws.send(&[4, 0, 0, 0, 0, 0, 0, 0x61]).await?; // key 'a' up
    ws.send(&[5, 1, 0, 10, 0, 20]).await?; // pointer, button 1, (10, 20)
    let expected = vec![
        json!({"type": "key", "down": true, "keysym": 0x61}),
        json!({"type": "key", "down": false, "keysym": 0x61}),
        json!({"type": "pointer", "buttons": 1, "x": 10, "y": 20}),
    ];
    eventually(Duration::from_secs(10), "recorded input", || {
        let expected = expected.clone();
        let sim = &sim;
        async move { Ok((input(sim, 100).await? == expected).then_some(())) }
    })
    .await?;
    ws.ws.close(None).await.ok();
    assert_eq!(sim.task_exit(&alice, &upid).await?, "OK");

    // The same with an API token, and for a container.
    let token = Auth::Token("alice@pve!porthole=s3cr3t".into());
    let (_ws, _) = open_console(&sim, &token, "qemu", 100, 'B').await?;
    let (_ws, _) = open_console(&sim, &alice, "lxc", 200, 'B').await?;

    // A wrong VNC password fails in QEMU itself.
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let port = body["data"]["port"].as_u64().unwrap() as u16;
    let mut ws = sim
        .websocket(
            &alice,
            "qemu",
            100,
            port,
            body["data"]["ticket"].as_str().unwrap(),
        )
        .await?;
    let error = rfb_handshake(&mut ws, "wrong!!!").await.unwrap_err();
    assert!(
        error.to_string().contains("VNC authentication failed"),
        "{error}"
    );

    // Another identity cannot use the ticket: 401 instead of 101.
    let bob = login(&sim, "bob@pve").await?;
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let port = body["data"]["port"].as_u64().unwrap() as u16;
    let refused = sim
        .websocket(
            &bob,
            "qemu",
            100,
            port,
            body["data"]["ticket"].as_str().unwrap(),
        )
        .await;
    let error = format!("{:#}", refused.err().expect("refused"));
    assert!(error.contains("401"), "{error}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn consoles_work_end_to_end_in_behaviour_a() -> Result<()> {
    let sim = Sim::start(&config("A", "[{vmid: 100}, {vmid: 200, kind: lxc}]")).await?;
    let alice = login(&sim, "alice@pve").await?;
    let (mut ws, _) = open_console(&sim, &alice, "qemu", 100, 'A').await?;
    ws.send(&[255, 0, 0, 1, 0, 0, 0xff, 0x0d, 0, 0, 0, 0x1c])
        .await?; // QEMU extended key: Return down
    eventually(Duration::from_secs(10), "the extended key event", || {
        let sim = &sim;
        async move {
            let events = input(sim, 100).await?;
            Ok(events
                .contains(&json!({"type": "key", "down": true, "keysym": 0xff0d}))
                .then_some(()))
        }
    })
    .await?;
    let (_ws, _) = open_console(&sim, &alice, "lxc", 200, 'A').await?;
    let token = Auth::Token("alice@pve!porthole=s3cr3t".into());
    let (_ws, _) = open_console(&sim, &token, "lxc", 200, 'A').await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stopped_vms_answer_vncproxy_but_close_the_console() -> Result<()> {
    let sim = Sim::start(&config("B", "[{vmid: 300, running: false}]")).await?;
    let alice = login(&sim, "alice@pve").await?;
    let (status, body) = sim
        .vncproxy(&alice, "qemu", 300, &[("websocket", "1")])
        .await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "PVE's vncproxy only checks the configuration"
    );
    let data = &body["data"];
    let upid = data["upid"].as_str().unwrap().to_string();
    let port = data["port"].as_u64().unwrap() as u16;
    let mut ws = sim
        .websocket(&alice, "qemu", 300, port, data["ticket"].as_str().unwrap())
        .await?;
    assert!(
        ws.closes_without_data().await,
        "the console must close without RFB"
    );
    assert_eq!(
        sim.task_exit(&alice, &upid).await?,
        "Failed to run vncproxy."
    );
    let log = sim.task_log(&alice, &upid).await?;
    assert!(log.iter().any(|l| l == "VM 300 not running"), "{log:?}");

    // Started through the control API, it serves a console; reset and screen work.
    sim.control(Method::POST, "/vms/300/start", None).await?;
    let (_ws, _) = open_console(&sim, &alice, "qemu", 300, 'B').await?;
    sim.control(Method::POST, "/vms/300/reset", None).await?;
    let png = sim
        .http
        .get(format!("{}/_sim/vms/300/screen", sim.url))
        .send()
        .await?;
    assert_eq!(png.status(), StatusCode::OK);
    assert!(png.bytes().await?.starts_with(b"\x89PNG\r\n\x1a\n"));
    sim.control(Method::POST, "/vms/300/stop", None).await?;
    let state = sim.control(Method::GET, "/vms/300", None).await?;
    assert_eq!(state["running"], false);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn late_viewers_find_the_listener_gone() -> Result<()> {
    let sim = Sim::start(&config("B", "[{vmid: 100, running: false}]")).await?;
    let alice = login(&sim, "alice@pve").await?;
    sim.control(
        Method::POST,
        "/faults",
        Some(json!({"listener_timeout": true})),
    )
    .await?;
    let (status, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"];
    let upid = data["upid"].as_str().unwrap();
    assert_eq!(sim.task_exit(&alice, upid).await?, "connection timed out");
    let port = data["port"].as_u64().unwrap() as u16;
    let attempt = sim
        .websocket(&alice, "qemu", 100, port, data["ticket"].as_str().unwrap())
        .await;
    assert!(
        attempt.is_err(),
        "no 101 once the worker's listener is gone"
    );
    sim.shutdown().await;
    Ok(())
}
