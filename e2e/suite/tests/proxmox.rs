//! Proxmox VE consoles on the test bed, against the Proxmox simulator: tickets
//! minted when a viewer connects (so a console opens long after the session
//! became Ready), every failure with its own reason, and no credential ever
//! reaching the viewer.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use porthole_api::contract::secret_keys;
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus, SessionPhase};
use porthole_e2e::cluster::{
    TestNamespace, apply, child_name, children_api, client, event_note, eventually, ready_status,
    unique_suffix,
};
use porthole_e2e::pve::{self, PveSim, SimVm};
use porthole_e2e::rfb::{self, ConsoleUrl};
use serde_json::{Value, json};

/// How long after Ready the viewer comes: longer than any Proxmox console
/// ticket (40 s), listener (10-20 s) or VNC password (30 s) lives.
const LATE: Duration = Duration::from_secs(61);

/// X11 keysym of the letter `p`.
const KEYSYM_P: u32 = 0x70;

struct Setup {
    ns: TestNamespace,
    sessions: Api<ConsoleSession>,
    secrets: Api<Secret>,
    client: kube::Client,
    hypervisor: String,
}

impl Setup {
    async fn new(prefix: &str, sim: &PveSim, credentials: Value, tls: Value) -> Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let hypervisor = format!("{prefix}-{}", unique_suffix());
        sim.apply_hypervisor(&hypervisor, credentials, tls).await?;
        Ok(Setup {
            sessions: Api::namespaced(client.clone(), &ns.name),
            // The session Secrets live in porthole's namespace.
            secrets: children_api(&client),
            client,
            ns,
            hypervisor,
        })
    }

    async fn apply_session(&self, name: &str, node: &str, vmid: u32, kind: &str) -> Result<()> {
        let session = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": name, "namespace": self.ns.name},
            "spec": {
                "hypervisor": self.hypervisor,
                "vm": {"node": node, "id": vmid, "kind": kind},
            },
        });
        apply(&session).await
    }

    async fn ready(&self, name: &str) -> Result<ConsoleSessionStatus> {
        ready_status(&self.sessions, name, Duration::from_secs(120)).await
    }

    /// Waits for the session to reach a final phase and returns its status.
    async fn ended(&self, name: &str) -> Result<ConsoleSessionStatus> {
        eventually(
            Duration::from_secs(60),
            &format!("session {name} to end"),
            || async {
                let status = self.sessions.get(name).await?.status;
                Ok(status.filter(|s| s.phase.is_some_and(SessionPhase::is_final)))
            },
        )
        .await
    }

    /// Waits for the session to fail and checks its reason in status and Events.
    async fn fails_with(&self, name: &str, reason: &str) -> Result<ConsoleSessionStatus> {
        let status = self.ended(name).await?;
        ensure!(
            status.phase == Some(SessionPhase::Failed) && status.reason.as_deref() == Some(reason),
            "session {name} should fail with {reason}, got {:?} {:?}: {:?}",
            status.phase,
            status.reason,
            status.message
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .context("a Ready condition")?;
        ensure!(
            ready.status == "False" && ready.reason == reason,
            "{ready:?}"
        );
        event_note(
            &client().await?,
            &self.ns.name,
            name,
            reason,
            Duration::from_secs(30),
        )
        .await?;
        Ok(status)
    }
}

/// Connects as a viewer expecting the console to be refused, and returns the
/// readable reason the proxy closed it with.
async fn refused_viewer(status: &ConsoleSessionStatus) -> Result<String> {
    let url = ConsoleUrl::parse(status.url.as_deref().context("a Ready session has a URL")?)?;
    let mut console = rfb::open(&url, Some(&url.token))
        .await
        .map_err(|e| anyhow::anyhow!("the WebSocket upgrade failed: {e:?}"))?;
    console.close_reason(Duration::from_secs(30)).await
}

/// Waits until `ready_at` + [`LATE`]: the requirement is a viewer arriving
/// this much later, so here time itself is the condition.
async fn wait_until_late(status: &ConsoleSessionStatus) -> Result<()> {
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .context("a Ready condition")?;
    let since = ready
        .last_transition_time
        .0
        .duration_until(k8s_openapi::jiff::Timestamp::now());
    let elapsed = Duration::try_from(since).unwrap_or_default();
    if let Some(rest) = LATE.checked_sub(elapsed) {
        tokio::time::sleep(rest).await;
    }
    Ok(())
}

/// Reads the console page and every script and stylesheet it references, as a
/// browser would, and returns them concatenated.
async fn page_and_assets(status: &ConsoleSessionStatus) -> Result<String> {
    let url = ConsoleUrl::parse(status.url.as_deref().context("url")?)?;
    let base = format!("http://{}/", url.authority);
    let http = reqwest::Client::new();
    let page = http
        .get(&base)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut everything = page.clone();
    for attribute in ["src=\"", "href=\""] {
        for part in page.split(attribute).skip(1) {
            let target = part.split('"').next().unwrap_or_default();
            if target.is_empty() || target.starts_with('#') || target.contains("://") {
                continue;
            }
            let asset = format!(
                "{base}{}",
                target.trim_start_matches("./").trim_start_matches('/')
            );
            everything.push_str(&http.get(&asset).send().await?.text().await?);
        }
    }
    Ok(everything)
}

fn assert_no_credential_in(what: &str, haystack: &[u8], issued: &pve::Issued) -> Result<()> {
    ensure!(
        !issued.login_tickets.is_empty() && !issued.vnc_tickets.is_empty(),
        "the simulator issued no tickets, so this check would prove nothing: {issued:?}"
    );
    let text = String::from_utf8_lossy(haystack);
    for secret in issued.all() {
        if text.contains(secret) {
            bail!("{what} contains a credential the simulator issued");
        }
    }
    Ok(())
}

/// Opens the console late, checks the framebuffer, types, and checks that no
/// credential reached the viewer or the proxy's Secret.
async fn console_opens_late(sim: &PveSim, setup: &Setup, vmid: u32, kind: &str) -> Result<()> {
    setup.apply_session("late", sim.node(), vmid, kind).await?;
    let status = setup.ready("late").await?;
    wait_until_late(&status).await?;

    let mut console = rfb::open_viewer(status.url.as_deref().context("url")?).await?;
    console.press_key(KEYSYM_P).await?;
    console.click(10, 10).await?;
    eventually(
        Duration::from_secs(20),
        "the key and click to reach the VM",
        || async {
            let input = sim.input(vmid).await?;
            let key = input
                .iter()
                .any(|e| e["type"] == "key" && e["keysym"] == KEYSYM_P && e["down"] == true);
            let click = input
                .iter()
                .any(|e| e["type"] == "pointer" && e["buttons"] == 1);
            Ok((key && click).then_some(()))
        },
    )
    .await?;

    let issued = sim.issued().await?;
    assert_no_credential_in("the WebSocket stream", console.received(), &issued)?;
    assert_no_credential_in(
        "the page and its assets",
        page_and_assets(&status).await?.as_bytes(),
        &issued,
    )?;
    console.close().await;

    let secret = setup
        .secrets
        .get(&child_name(&setup.client, &setup.ns.name, "late").await?)
        .await?;
    let data = secret.data.unwrap_or_default();
    ensure!(
        data.contains_key(secret_keys::PVE_TICKET),
        "the proxy gets a login ticket"
    );
    for (key, value) in &data {
        ensure!(
            !String::from_utf8_lossy(&value.0).contains(pve::PASSWORD),
            "the session Secret holds the Proxmox password under {key}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_qemu_console_opens_a_minute_after_ready_with_a_fresh_ticket() -> Result<()> {
    let sim = PveSim::start(
        "B",
        &[SimVm {
            vmid: 100,
            kind: "qemu",
            running: true,
        }],
    )
    .await?;
    let setup = Setup::new(
        "pve-qemu",
        &sim,
        PveSim::password_credentials(),
        sim.ca_tls(),
    )
    .await?;
    console_opens_late(&sim, &setup, 100, "qemu").await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_lxc_console_opens_a_minute_after_ready_before_april_2026() -> Result<()> {
    let sim = PveSim::start(
        "A",
        &[SimVm {
            vmid: 200,
            kind: "lxc",
            running: true,
        }],
    )
    .await?;
    let setup = Setup::new(
        "pve-lxc",
        &sim,
        PveSim::password_credentials(),
        sim.pin_tls(),
    )
    .await?;
    console_opens_late(&sim, &setup, 200, "lxc").await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_api_token_reaches_the_proxy_and_opens_the_console() -> Result<()> {
    let sim = PveSim::start(
        "B",
        &[SimVm {
            vmid: 101,
            kind: "qemu",
            running: true,
        }],
    )
    .await?;
    let setup = Setup::new("pve-token", &sim, PveSim::token_credentials(), sim.ca_tls()).await?;
    setup
        .apply_session("token", sim.node(), 101, "qemu")
        .await?;
    let status = setup.ready("token").await?;
    rfb::open_viewer(status.url.as_deref().context("url")?)
        .await?
        .close()
        .await;
    let data = setup
        .secrets
        .get(&child_name(&setup.client, &setup.ns.name, "token").await?)
        .await?
        .data
        .unwrap_or_default();
    ensure!(
        data.contains_key(secret_keys::PVE_API_TOKEN)
            && !data.contains_key(secret_keys::PVE_TICKET)
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_fail_the_session_before_any_pod() -> Result<()> {
    let sim = PveSim::start("B", &[]).await?;
    let setup = Setup::new(
        "pve-badpw",
        &sim,
        json!({"username": pve::USER, "password": "not-the-password"}),
        sim.ca_tls(),
    )
    .await?;
    setup
        .apply_session("badpw", sim.node(), 100, "qemu")
        .await?;
    let status = setup.fails_with("badpw", "BadCredentials").await?;
    ensure!(
        !status
            .message
            .unwrap_or_default()
            .contains("not-the-password")
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_operator_refuses_a_certificate_that_matches_neither_pin_nor_ca() -> Result<()> {
    let sim = PveSim::start("B", &[]).await?;
    let wrong_pin = ["00"; 32].join(":");
    let pinned = Setup::new(
        "pve-pin",
        &sim,
        PveSim::password_credentials(),
        json!({"fingerprintSHA256": wrong_pin}),
    )
    .await?;
    pinned.apply_session("pin", sim.node(), 100, "qemu").await?;
    let status = pinned.fails_with("pin", "TLSVerificationFailed").await?;
    ensure!(status.message.unwrap_or_default().contains("fingerprint"));

    // A real CA that did not sign the simulator's certificate.
    let other_ca = std::fs::read_to_string("/etc/ssl/certs/ISRG_Root_X1.pem")?;
    let wrong_ca = Setup::new(
        "pve-ca",
        &sim,
        PveSim::password_credentials(),
        json!({"caBundle": other_ca}),
    )
    .await?;
    wrong_ca
        .apply_session("ca", sim.node(), 100, "qemu")
        .await?;
    wrong_ca.fails_with("ca", "TLSVerificationFailed").await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_proxy_refuses_a_certificate_that_does_not_match_the_pin() -> Result<()> {
    // With an API token the operator never calls Proxmox, so the proxy is the
    // first to see the certificate.
    let sim = PveSim::start(
        "B",
        &[SimVm {
            vmid: 102,
            kind: "qemu",
            running: true,
        }],
    )
    .await?;
    let wrong_pin = ["00"; 32].join(":");
    let setup = Setup::new(
        "pve-proxypin",
        &sim,
        PveSim::token_credentials(),
        json!({ "fingerprintSHA256": wrong_pin }),
    )
    .await?;
    setup.apply_session("pin", sim.node(), 102, "qemu").await?;
    let status = setup.ready("pin").await?;
    let reason = refused_viewer(&status).await?;
    ensure!(reason.contains("fingerprint"), "close reason: {reason}");
    setup.fails_with("pin", "TLSVerificationFailed").await?;
    sim.shutdown().await;
    Ok(())
}

/// Sessions that become Ready but cannot open their console: each fails with
/// its own reason, and the viewer reads why.
#[tokio::test]
async fn console_failures_each_have_their_own_reason() -> Result<()> {
    let sim = PveSim::start(
        "B",
        &[
            SimVm {
                vmid: 110,
                kind: "qemu",
                running: true,
            },
            SimVm {
                vmid: 111,
                kind: "qemu",
                running: false,
            },
        ],
    )
    .await?;
    let setup = Setup::new(
        "pve-fail",
        &sim,
        PveSim::password_credentials(),
        sim.ca_tls(),
    )
    .await?;
    let powerless = Setup::new(
        "pve-noperm",
        &sim,
        json!({"username": pve::POWERLESS_USER, "password": pve::POWERLESS_PASSWORD}),
        sim.ca_tls(),
    )
    .await?;
    let cases: [(&Setup, &str, u32, &str, &str); 3] = [
        (&setup, "stopped", 111, "VMNotRunning", "not running"),
        (&setup, "missing", 199, "VMNotFound", "199.conf"),
        (&powerless, "noperm", 110, "PermissionDenied", "VM.Console"),
    ];
    for (setup, name, vmid, _, _) in &cases {
        setup.apply_session(name, sim.node(), *vmid, "qemu").await?;
    }
    for (setup, name, _, reason, says) in &cases {
        let status = setup.ready(name).await?;
        let closed = refused_viewer(&status).await?;
        ensure!(closed.contains(says), "{name}: the viewer read {closed:?}");
        setup.fails_with(name, reason).await?;
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_listener_that_timed_out_and_a_rejected_ticket_have_their_own_reasons() -> Result<()> {
    for (fault, reason) in [
        ("listener_timeout", "ListenerTimeout"),
        ("reject_vnc_tickets", "TicketRejected"),
    ] {
        let sim = PveSim::start(
            "B",
            &[SimVm {
                vmid: 120,
                kind: "qemu",
                running: true,
            }],
        )
        .await?;
        let setup = Setup::new(
            "pve-fault",
            &sim,
            PveSim::password_credentials(),
            sim.ca_tls(),
        )
        .await?;
        setup
            .apply_session("fault", sim.node(), 120, "qemu")
            .await?;
        let status = setup.ready("fault").await?;
        sim.set_faults(json!({ fault: true })).await?;
        let closed = refused_viewer(&status).await?;
        ensure!(!closed.is_empty(), "{fault}: the viewer got no reason");
        setup
            .fails_with("fault", reason)
            .await
            .with_context(|| format!("{fault}: the viewer read {closed:?}"))?;
        sim.shutdown().await;
    }
    Ok(())
}
