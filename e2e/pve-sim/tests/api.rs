//! The PVE API of a real simulator over HTTPS (no VM needs to run: PVE's
//! vncproxy only checks that the VM's configuration exists).

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Auth, Sim, encode_component, encode_query};

const DELAY: Duration = Duration::from_millis(300);
const TOKEN: &str = "alice@pve!porthole=11111111-2222-3333-4444-555555555555";

fn config(behaviour: &str) -> String {
    format!(
        r#"
behaviour: {behaviour}
auth_failure_delay_ms: {}
users:
  - {{id: alice@pve, password: alice-secret, privileges: {{/vms/100: [VM.Console, VM.Audit], /vms/200: [VM.Console]}}}}
  - {{id: bob@pve, password: bob-secret, privileges: {{/vms/100: [VM.Console]}}}}
  - {{id: carol@pve, password: carol-secret}}
  - {{id: admin@pve, password: admin-secret, privileges: {{/: [VM.Console, VM.Audit, Sys.Audit]}}}}
tokens:
  - {{id: alice@pve!porthole, secret: 11111111-2222-3333-4444-555555555555, privileges: {{/vms: [VM.Console]}}}}
vms:
  - {{vmid: 100, running: false}}
  - {{vmid: 200, kind: lxc, running: false}}
"#,
        DELAY.as_millis()
    )
}

async fn ticket_auth(sim: &Sim, user: &str) -> Result<Auth> {
    let (ticket, csrf) = sim
        .login(user, &format!("{}-secret", user.split('@').next().unwrap()))
        .await?;
    Ok(Auth::Ticket { ticket, csrf })
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn login_returns_ticket_csrf_token_and_capabilities() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let response = sim
        .http
        .post(sim.api("/access/ticket"))
        .form(&[
            ("username", "alice"),
            ("realm", "pve"),
            ("password", "alice-secret"),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await?;
    let data = &body["data"];
    assert_eq!(data["username"], "alice@pve");
    let ticket = data["ticket"].as_str().unwrap();
    let (plain, signature) = ticket.split_once("::").unwrap();
    assert!(plain.starts_with("PVE:alice@pve:"), "{ticket}");
    assert_eq!(plain.rsplit(':').next().unwrap().len(), 8);
    assert!(!signature.is_empty());
    let csrf = data["CSRFPreventionToken"].as_str().unwrap();
    let (stamp, tag) = csrf.split_once(':').unwrap();
    assert!(stamp.len() == 8 && stamp.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(tag.len(), 43, "HMAC-SHA256 in unpadded base64");
    assert_eq!(data["cap"]["vms"]["VM.Console"], 1);
    let issued = sim.control(reqwest::Method::GET, "/issued", None).await?;
    assert_eq!(issued["login_tickets"], json!([ticket]));
    assert_eq!(issued["csrf_tokens"], json!([csrf]));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn failed_logins_are_401_after_the_delay() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    for (user, password) in [
        ("alice@pve", "wrong"),
        ("nobody@pve", "x"),
        ("alice", "alice-secret"),
    ] {
        let started = Instant::now();
        let response = sim
            .http
            .post(sim.api("/access/ticket"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{user}");
        assert!(started.elapsed() >= DELAY, "answered before the delay");
        let body: Value = response.json().await?;
        assert_eq!(message(&body), "authentication failure\n");
        assert_eq!(body["data"], Value::Null);
    }
    let (status, _) = sim
        .raw(
            "POST",
            "/api2/json/access/ticket",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", "0"),
            ],
        )
        .await?;
    assert_eq!(status, "HTTP/1.1 400 Parameter verification failed.");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tickets_renew_until_they_expire() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let (ticket, _) = sim.login("alice@pve", "alice-secret").await?;
    let (renewed, _) = sim.login("alice@pve", &ticket).await?;
    assert!(renewed.starts_with("PVE:alice@pve:"));
    assert!(
        sim.login("bob@pve", &ticket).await.is_err(),
        "a ticket renews only its own user"
    );
    let cookie = format!("PVEAuthCookie={}", encode_component(&ticket));
    let (status, _) = sim
        .raw("GET", "/api2/json/version", &[("Cookie", &cookie)])
        .await?;
    assert_eq!(status, "HTTP/1.1 200 OK");

    sim.control(
        reqwest::Method::POST,
        "/clock",
        Some(json!({"advance_secs": 7200})),
    )
    .await?;
    assert!(
        sim.login("alice@pve", &ticket).await.is_err(),
        "an expired ticket does not renew"
    );
    let started = Instant::now();
    let (status, body) = sim
        .raw("GET", "/api2/json/version", &[("Cookie", &cookie)])
        .await?;
    assert_eq!(
        status,
        "HTTP/1.1 401 permission denied - invalid PVE ticket"
    );
    assert!(body.is_empty());
    assert!(started.elapsed() >= DELAY);
    // The Authorization header form of the cookie works like the cookie.
    let header = format!("PVEAuthCookie={}", encode_component(&renewed));
    let (status, _) = sim
        .raw("GET", "/api2/json/version", &[("Authorization", &header)])
        .await?;
    assert_eq!(
        status,
        "HTTP/1.1 401 permission denied - invalid PVE ticket"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn api_tokens_cannot_log_in_but_work_elsewhere_without_csrf() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let response = sim
        .http
        .post(sim.api("/access/ticket"))
        .header("Authorization", format!("PVEAPIToken={TOKEN}"))
        .form(&[("username", "alice@pve"), ("password", "alice-secret")])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await?;
    assert!(
        message(&body).contains("not available with API token"),
        "{body}"
    );

    let token = Auth::Token(TOKEN.into());
    let (status, body) = sim
        .vncproxy(&token, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user"], "alice@pve!porthole");

    let wrong = Auth::Token("alice@pve!porthole=nope".into());
    let (status, _) = sim
        .vncproxy(&wrong, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = sim
        .raw(
            "GET",
            "/api2/json/version",
            &[("Authorization", "PVEAPIToken=alice@pve!porthole=nope")],
        )
        .await?;
    assert_eq!(status, "HTTP/1.1 401 invalid token value!");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_credentials_is_no_ticket() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let started = Instant::now();
    let (status, body) = sim
        .raw("GET", "/api2/json/nodes/pve/qemu/100/status/current", &[])
        .await?;
    assert_eq!(status, "HTTP/1.1 401 No ticket");
    assert!(body.is_empty());
    assert!(started.elapsed() >= DELAY);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cookie_posts_need_the_csrf_token() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let auth = ticket_auth(&sim, "alice@pve").await?;
    let url = sim.api("/nodes/pve/qemu/100/vncproxy");
    let without = auth
        .apply(sim.http.post(&url), false)
        .form(&[("websocket", "1")])
        .send()
        .await?;
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let Auth::Ticket { ticket, .. } = &auth else {
        unreachable!()
    };
    let (status, _) = sim
        .raw(
            "POST",
            "/api2/json/nodes/pve/qemu/100/vncproxy",
            &[
                (
                    "Cookie",
                    &format!("PVEAuthCookie={}", encode_component(ticket)),
                ),
                ("Content-Length", "0"),
            ],
        )
        .await?;
    assert_eq!(
        status,
        "HTTP/1.1 401 Permission denied - invalid csrf token"
    );
    let (status, body) = sim
        .vncproxy(&auth, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn missing_privileges_are_403() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let carol = ticket_auth(&sim, "carol@pve").await?;
    let (status, body) = sim
        .vncproxy(&carol, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        message(&body),
        "Permission check failed (/vms/100, VM.Console)\n"
    );
    let bob = ticket_auth(&sim, "bob@pve").await?;
    let response = bob
        .apply(
            sim.http.get(sim.api("/nodes/pve/qemu/100/status/current")),
            false,
        )
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A privilege-separated token gets the intersection with its user's.
    let token = Auth::Token(TOKEN.into());
    let (status, body) = sim
        .vncproxy(&token, "qemu", 101, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_vms_are_500_configuration_file_does_not_exist() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let admin = ticket_auth(&sim, "admin@pve").await?;
    for (kind, vmid, node_path) in [
        ("qemu", 999, "nodes/pve/qemu-server/999.conf"),
        ("lxc", 100, "nodes/pve/lxc/100.conf"),
        ("qemu", 200, "nodes/pve/qemu-server/200.conf"),
    ] {
        let (status, body) = sim
            .vncproxy(&admin, kind, vmid, &[("websocket", "1")])
            .await?;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            message(&body),
            format!("Configuration file '{node_path}' does not exist\n")
        );
    }
    let response = admin
        .apply(
            sim.http.get(sim.api("/nodes/pve/qemu/100/status/current")),
            false,
        )
        .send()
        .await?;
    let body: Value = response.json().await?;
    assert_eq!(body["data"]["status"], "stopped");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn vncproxy_answers_like_april_2026() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let auth = ticket_auth(&sim, "alice@pve").await?;
    let (status, body) = sim
        .vncproxy(&auth, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"];
    let password = data["password"].as_str().unwrap();
    assert_eq!(password.len(), 8);
    assert!(password.bytes().all(|b| (0x21..=0x60).contains(&b)));
    let ticket = data["ticket"].as_str().unwrap();
    assert!(
        ticket.starts_with(&format!("{password}:PVEVNC:")),
        "{ticket}"
    );
    assert!(
        data["port"]
            .as_u64()
            .is_some_and(|p| (5900..=5999).contains(&p))
    );
    assert!(data["upid"].as_str().unwrap().starts_with("UPID:pve:"));
    assert!(
        data["upid"]
            .as_str()
            .unwrap()
            .ends_with(":vncproxy:100:alice@pve:")
    );
    assert_eq!(data["cert"], sim.handle().ca_pem());
    assert_eq!(data["user"], "alice@pve");
    let issued = sim.control(reqwest::Method::GET, "/issued", None).await?;
    assert_eq!(issued["vnc_passwords"], json!([password]));
    assert_eq!(issued["vnc_tickets"], json!([ticket]));

    // LXC: a password only with websocket.
    let (_, body) = sim.vncproxy(&auth, "lxc", 200, &[]).await?;
    assert!(body["data"].get("password").is_none(), "{body}");
    let (_, body) = sim
        .vncproxy(&auth, "lxc", 200, &[("websocket", "1"), ("width", "800")])
        .await?;
    assert!(body["data"]["password"].is_string(), "{body}");
    let (status, body) = sim.vncproxy(&auth, "lxc", 200, &[("width", "8")]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["width"],
        "value must have a minimum value of 16"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn vncproxy_answers_like_late_2025() -> Result<()> {
    let sim = Sim::start(&config("A")).await?;
    let auth = ticket_auth(&sim, "alice@pve").await?;
    let (_, body) = sim
        .vncproxy(&auth, "qemu", 100, &[("websocket", "1")])
        .await?;
    assert!(
        body["data"]["ticket"]
            .as_str()
            .unwrap()
            .starts_with("PVEVNC:")
    );
    assert!(body["data"].get("password").is_none());
    let (_, body) = sim
        .vncproxy(
            &auth,
            "qemu",
            100,
            &[("websocket", "1"), ("generate-password", "1")],
        )
        .await?;
    assert!(
        body["data"]["ticket"]
            .as_str()
            .unwrap()
            .starts_with("PVEVNC:")
    );
    assert_eq!(body["data"]["password"].as_str().unwrap().len(), 8);
    sim.shutdown().await;
    Ok(())
}

async fn websocket_get(
    sim: &Sim,
    auth: &Auth,
    vmid: u32,
    port: &str,
    ticket: &str,
) -> Result<(StatusCode, Value)> {
    let url = format!(
        "{}?{}",
        sim.api(&format!("/nodes/pve/qemu/{vmid}/vncwebsocket")),
        encode_query(&[("port", port), ("vncticket", ticket)])
    );
    let response = auth.apply(sim.http.get(url), false).send().await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn vncwebsocket_binds_identity_port_and_age() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let alice = ticket_auth(&sim, "alice@pve").await?;
    let bob = ticket_auth(&sim, "bob@pve").await?;
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let ticket = body["data"]["ticket"].as_str().unwrap().to_string();
    let port = body["data"]["port"].as_u64().unwrap().to_string();

    let (status, body) = websocket_get(&sim, &alice, 100, &port, &ticket).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"data": {"port": port}}),
        "the port comes back as a string"
    );

    let started = Instant::now();
    let (status, body) = websocket_get(&sim, &bob, 100, &port, &ticket).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        message(&body),
        "permission denied - invalid PVEVNC ticket\n"
    );
    assert!(started.elapsed() >= DELAY);

    let other_port = if port == "5999" { "5998" } else { "5999" };
    let (status, _) = websocket_get(&sim, &alice, 100, other_port, &ticket).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "behaviour B binds the port"
    );

    let long = "x".repeat(513);
    let (status, body) = websocket_get(&sim, &alice, 100, &port, &long).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["vncticket"],
        "value may only be 512 characters long"
    );
    let (status, body) = websocket_get(&sim, &alice, 100, "6000", &ticket).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["port"],
        "value must have a maximum value of 5999"
    );

    // pve-http-server's query decoding: ';' separates, '+' is a space.
    let query = format!("port={port};vncticket={}", encode_component(&ticket));
    let url = format!("{}?{query}", sim.api("/nodes/pve/qemu/100/vncwebsocket"));
    assert_eq!(
        alice
            .apply(sim.http.get(&url), false)
            .send()
            .await?
            .status(),
        StatusCode::OK
    );
    // Only the signed part matters: from April 2026 the ticket starts with the
    // generated password, which is not part of the signature.
    let signed = ticket
        .find("PVEVNC:")
        .map_or(ticket.as_str(), |at| &ticket[at..]);
    if signed.contains('+') {
        let raw_plus = format!(
            "port={port}&vncticket={}",
            encode_component(&ticket).replace("%2B", "+")
        );
        let url = format!("{}?{raw_plus}", sim.api("/nodes/pve/qemu/100/vncwebsocket"));
        assert_eq!(
            alice
                .apply(sim.http.get(&url), false)
                .send()
                .await?
                .status(),
            StatusCode::UNAUTHORIZED,
            "an unencoded '+' turns into a space"
        );
    }

    sim.control(
        reqwest::Method::POST,
        "/clock",
        Some(json!({"advance_secs": 40})),
    )
    .await?;
    let (status, _) = websocket_get(&sim, &alice, 100, &port, &ticket).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "VNC tickets live less than 40 s"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn late_2025_tickets_are_not_bound_to_the_port() -> Result<()> {
    let sim = Sim::start(&config("A")).await?;
    let alice = ticket_auth(&sim, "alice@pve").await?;
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let ticket = body["data"]["ticket"].as_str().unwrap().to_string();
    let (status, _) = websocket_get(&sim, &alice, 100, "5999", &ticket).await?;
    assert_eq!(status, StatusCode::OK);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rejected_vnc_tickets_fault() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let alice = ticket_auth(&sim, "alice@pve").await?;
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let ticket = body["data"]["ticket"].as_str().unwrap().to_string();
    let port = body["data"]["port"].as_u64().unwrap().to_string();
    sim.control(
        reqwest::Method::POST,
        "/faults",
        Some(json!({"reject_vnc_tickets": true})),
    )
    .await?;
    let (status, _) = websocket_get(&sim, &alice, 100, &port, &ticket).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Login tickets survive the key rotation, as in PVE.
    assert_eq!(
        alice
            .apply(sim.http.get(sim.api("/version")), false)
            .send()
            .await?
            .status(),
        StatusCode::OK
    );
    sim.control(reqwest::Method::POST, "/faults", Some(json!({})))
        .await?;
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let fresh = body["data"]["ticket"].as_str().unwrap().to_string();
    let port = body["data"]["port"].as_u64().unwrap().to_string();
    let (status, _) = websocket_get(&sim, &alice, 100, &port, &fresh).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = websocket_get(&sim, &alice, 100, &port, &ticket).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "tickets from before the rotation stay invalid"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn websocket_upgrades_need_websocket_13() -> Result<()> {
    let sim = Sim::start(&config("B")).await?;
    let (ticket, csrf) = sim.login("alice@pve", "alice-secret").await?;
    let alice = Auth::Ticket {
        ticket: ticket.clone(),
        csrf,
    };
    let (_, body) = sim
        .vncproxy(&alice, "qemu", 100, &[("websocket", "1")])
        .await?;
    let vnc_ticket = body["data"]["ticket"].as_str().unwrap().to_string();
    let port = body["data"]["port"].as_u64().unwrap().to_string();
    let path = format!(
        "/api2/json/nodes/pve/qemu/100/vncwebsocket?{}",
        encode_query(&[("port", &port), ("vncticket", &vnc_ticket)])
    );
    let cookie = format!("PVEAuthCookie={}", encode_component(&ticket));
    let (status, _) = sim
        .raw(
            "GET",
            &path,
            &[
                ("Cookie", &cookie),
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade"),
            ],
        )
        .await?;
    assert_eq!(status, "HTTP/1.1 501 unable to upgrade to protocol 'h2c'");
    let (status, _) = sim
        .raw(
            "GET",
            &path,
            &[
                ("Cookie", &cookie),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await?;
    assert_eq!(status, "HTTP/1.1 501 unsupported websocket-version '8'");
    sim.shutdown().await;
    Ok(())
}

/// An outage of the API, for fault-injection tests: while down, connections
/// are refused; once up again, the same address serves, and what was issued
/// before (tickets, keys) is still good.
#[tokio::test]
async fn the_api_goes_down_and_comes_back_on_the_same_address() -> Result<()> {
    let mut sim = Sim::start(&config("B")).await?;
    let auth = ticket_auth(&sim, "alice@pve").await?;
    let addr = sim.handle.as_ref().unwrap().addr();
    sim.handle.as_mut().unwrap().take_down().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(sim.http.get(sim.api("/version")).send().await.is_err());
    sim.handle.as_mut().unwrap().bring_up().await?;
    assert_eq!(sim.handle.as_ref().unwrap().addr(), addr);
    let response = auth
        .apply(
            sim.http.get(sim.api("/nodes/pve/qemu/100/status/current")),
            false,
        )
        .send()
        .await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a ticket from before the outage"
    );
    Ok(())
}
