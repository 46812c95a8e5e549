//! The console page in a real browser: Debian's Chromium driven by
//! `e2e/browser/drive.mjs` (playwright-core), against the operator's proxy
//! pods, real QEMU VMs and the Proxmox simulator. Every test opens exactly the
//! URL the session publishes in `status.url`, and keeps screenshots in
//! `.e2e/artifacts/browser/<test>/`.
//!
//! Needs the test bed (`make cluster-up`, `make images install`) and
//! `e2e/scripts/deps.sh` (Chromium, and the driver's `npm ci`).

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use kube::Api;
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::browser::{
    Browser, CONNECTED, CONNECTING, DISCONNECTED, Input, PageState, SimVms, Until,
    countdown_seconds, shows_the_same,
};
use porthole_e2e::cluster::{
    TestNamespace, apply, client, eventually, kubectl, ready_status, unique_suffix,
};
use porthole_e2e::pve::{self, PveSim, SimVm};
use porthole_e2e::rfb::ConsoleUrl;
use porthole_e2e::vm::Vm;
use serde_json::{Value, json};

/// Long enough for a proxy pod on a busy test bed and QEMU under TCG.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(90);
const END_TIMEOUT: Duration = Duration::from_secs(90);

/// A namespace, the Hypervisors the test registered (deleted at the end), and
/// the sessions in it.
struct Bed {
    ns: TestNamespace,
    sessions: Api<ConsoleSession>,
    hypervisors: Vec<String>,
}

impl Bed {
    async fn new(prefix: &str) -> Result<Bed> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        Ok(Bed {
            sessions: Api::namespaced(client, &ns.name),
            ns,
            hypervisors: Vec::new(),
        })
    }

    /// A plain VNC Hypervisor for the QEMU VMs on the node's address.
    async fn vnc_hypervisor(&mut self) -> Result<String> {
        let name = format!("browser-vnc-{}", unique_suffix());
        let manifest = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name},
            "spec": {
                "allowedNamespaces": {},
                "vnc": {"host": HYPERVISOR_HOST, "ports": {"first": 5910, "last": 5930}},
            },
        });
        self.hypervisors.push(name.clone());
        apply(&manifest).await?;
        Ok(name)
    }

    /// A Proxmox Hypervisor for `sim`: password credentials, its CA trusted.
    async fn proxmox_hypervisor(&mut self, sim: &PveSim) -> Result<String> {
        let name = format!("browser-pve-{}", unique_suffix());
        self.hypervisors.push(name.clone());
        sim.apply_hypervisor(&name, PveSim::password_credentials(), sim.ca_tls())
            .await?;
        Ok(name)
    }

    /// Applies a session for `vm` with `extra` spec fields.
    async fn apply(&self, name: &str, hypervisor: &str, vm: Value, extra: Value) -> Result<()> {
        let mut spec = json!({"hypervisor": hypervisor, "vm": vm});
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        let session = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": name, "namespace": self.ns.name},
            "spec": spec,
        });
        apply(&session).await
    }

    /// Waits until the session is Ready and returns its console URL.
    async fn ready(&self, name: &str) -> Result<String> {
        ready_status(&self.sessions, name, Duration::from_secs(120))
            .await?
            .url
            .with_context(|| format!("the Ready session {name} has no URL"))
    }

    /// Applies a session and waits until it is Ready; returns its URL.
    async fn session(
        &self,
        name: &str,
        hypervisor: &str,
        vm: Value,
        extra: Value,
    ) -> Result<String> {
        self.apply(name, hypervisor, vm, extra).await?;
        self.ready(name).await
    }

    async fn status(&self, name: &str) -> Result<ConsoleSessionStatus> {
        self.sessions
            .get(name)
            .await?
            .status
            .with_context(|| format!("session {name} has no status"))
    }

    /// Waits for the session's final phase and returns its final status.
    async fn ended(&self, name: &str) -> Result<ConsoleSessionStatus> {
        eventually(END_TIMEOUT, &format!("session {name} to end"), || async {
            let status = self.sessions.get(name).await?.status;
            Ok(status.filter(|s| s.phase.is_some_and(SessionPhase::is_final)))
        })
        .await
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let hypervisors = std::mem::take(&mut self.hypervisors);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            for name in hypervisors {
                let _ = rt.block_on(kubectl(
                    &["delete", "hypervisor", &name, "--wait=false"],
                    None,
                ));
            }
            Some(())
        })
        .join();
    }
}

fn qemu(vmid: u32) -> SimVm {
    SimVm {
        vmid,
        kind: "qemu",
        running: true,
    }
}

fn pve_vm(sim: &PveSim, vmid: u32) -> Value {
    json!({"node": sim.node(), "id": vmid})
}

fn vnc_vm(port: u16) -> Value {
    json!({"port": port})
}

/// Fails with the page's console messages added, for a readable report.
async fn explained<T>(browser: &Browser, page: &str, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(error) => {
            let messages = browser.console(page).await.unwrap_or_default();
            Err(error.context(format!(
                "page {page}'s console said:\n{}",
                messages.join("\n")
            )))
        }
    }
}

/// Waits for the VM's screen on `page`, with the page's console on failure.
async fn screen(browser: &Browser, page: &str) -> Result<PageState> {
    let result = browser.wait(page, Until::SCREEN, SCREEN_TIMEOUT).await;
    explained(browser, page, result).await
}

/// The page went from the loading state to the screen, and never ended.
fn assert_connected_once(page: &str, state: &PageState) {
    assert_eq!(
        state.statuses(),
        [CONNECTING, CONNECTED],
        "page {page} showed {:#?}",
        state.timeline
    );
    assert!(
        !state.ever_ended() && state.screen_visible,
        "page {page}: {state:#?}"
    );
}

/// The page ended with a message, its screen hidden, never having connected.
fn assert_refused_readably(page: &str, state: &PageState, expected: &str) -> String {
    let reason = state.reason.clone().unwrap_or_default();
    assert!(
        state.ended && reason.starts_with(expected),
        "page {page}: expected a message starting {expected:?}, got {state:#?}"
    );
    assert!(
        !reason.contains("upstream-failed") && !reason.is_empty(),
        "page {page}: an unreadable message {reason:?}"
    );
    assert!(
        !state.screen_visible,
        "page {page}: the (blank) canvas is still shown beside the message"
    );
    assert_eq!(state.status, DISCONNECTED, "page {page}: {state:#?}");
    assert!(
        !state.statuses().contains(&CONNECTED),
        "page {page} claimed to be connected: {:#?}",
        state.timeline
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_loading_state_then_the_vms_screen() -> Result<()> {
    let browser = Browser::launch("loading_then_screen").await?;
    let sim = PveSim::start("B", &[qemu(100)]).await?;
    let vms = SimVms::of(&sim)?;
    let mut bed = Bed::new("browser-screen").await?;
    let hypervisor = bed.proxmox_hypervisor(&sim).await?;
    let url = bed
        .session("screen", &hypervisor, pve_vm(&sim, 100), json!({}))
        .await?;

    let opened = browser.open("console", &url).await?;
    assert_eq!(opened.http_status, Some(200), "{opened:#?}");
    let first = opened.timeline.first().context("the page showed nothing")?;
    assert_eq!(
        first.status, CONNECTING,
        "the page's first state: {first:?}"
    );
    assert!(
        first.canvas.as_deref().is_none_or(|c| c == "0x0"),
        "a screen before connecting: {first:?}"
    );
    let shown = screen(&browser, "console").await?;
    assert_connected_once("console", &shown);

    // What the canvas holds is what the VM's QEMU shows.
    let (canvas, vm_screen) = browser
        .until_canvas_shows("console", "screen", Duration::from_secs(60), || {
            vms.screen(100)
        })
        .await?;
    assert!(shows_the_same(&canvas, &vm_screen), "{canvas:?}");
    eprintln!("screenshots in {}", browser.artifacts().display());
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_keys_and_mouse_clicks_arrive_at_the_vm() -> Result<()> {
    let browser = Browser::launch("keys_and_clicks").await?;
    let sim = PveSim::start("B", &[qemu(100)]).await?;
    let mut bed = Bed::new("browser-input").await?;
    let hypervisor = bed.proxmox_hypervisor(&sim).await?;
    let url = bed
        .session("input", &hypervisor, pve_vm(&sim, 100), json!({}))
        .await?;
    browser.open("console", &url).await?;
    screen(&browser, "console").await?;
    let before = Input::from_events(&sim.input(100).await?);
    assert!(before.typed().is_empty(), "keys before typing: {before:?}");

    let (x, y) = (100, 200);
    browser.click("console", x, y).await?;
    browser.type_text("console", "porthole").await?;
    browser.screenshot("console", "typed").await?;
    let input = eventually(
        Duration::from_secs(30),
        "the simulator to record the click and the keys",
        || async {
            let input = Input::from_events(&sim.input(100).await?);
            if input.typed().contains("porthole") && input.clicked_near(x as u16, y as u16, 1) {
                Ok(Some(input))
            } else {
                Err(anyhow!("recorded so far: {input:?}"))
            }
        },
    )
    .await?;
    assert_eq!(input.typed(), "porthole", "{input:?}");
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_carries_the_token_and_no_response_a_hypervisor_credential() -> Result<()> {
    let browser = Browser::launch("no_secrets_on_the_wire").await?;
    let sim = PveSim::start("B", &[qemu(100)]).await?;
    let mut bed = Bed::new("browser-secrets").await?;
    let hypervisor = bed.proxmox_hypervisor(&sim).await?;
    let url = bed
        .session("secrets", &hypervisor, pve_vm(&sim, 100), json!({}))
        .await?;
    let console_url = ConsoleUrl::parse(&url)?;
    browser.open("console", &url).await?;
    screen(&browser, "console").await?;
    // Input too, so both directions of the WebSocket carry traffic.
    browser.click("console", 10, 10).await?;
    browser.type_text("console", "x").await?;
    browser.screenshot("console", "console").await?;

    let network = browser.network("console").await?;
    assert!(!network.truncated, "the network log was cut short");
    let page_origin = format!("http://{}/", console_url.authority);
    let socket_origin = format!("ws://{}/", console_url.authority);
    for request in &network.requests {
        let sent = request.url.as_deref().unwrap_or_default();
        assert!(
            sent.starts_with(&page_origin) || sent.starts_with(&socket_origin),
            "a request outside the console's origin: {request:#?}"
        );
        assert!(
            !sent.contains(&console_url.token) && !sent.contains('#'),
            "a request line with the token or a fragment: {request:#?}"
        );
    }
    let document = network.requests.first().context("no requests logged")?;
    assert_eq!(document.url.as_deref(), Some(page_origin.as_str()));
    assert!(
        document
            .url_fragment
            .as_deref()
            .is_some_and(|f| f.contains(&console_url.token)),
        "the page's URL had the token in its fragment, kept apart from the request: {document:#?}"
    );
    let sockets: Vec<_> = network
        .requests
        .iter()
        .filter(|r| r.kind == "websocket")
        .collect();
    assert!(
        sockets.len() == 1 && sockets[0].status == Some(101) && sockets[0].bytes_received > 0,
        "one WebSocket carrying the console: {sockets:#?}"
    );

    let issued = sim.issued().await?;
    ensure!(
        !issued.login_tickets.is_empty()
            && !issued.vnc_tickets.is_empty()
            && !issued.vnc_passwords.is_empty(),
        "the simulator issued no console credentials, so this would prove nothing: {issued:?}"
    );
    const TOKEN: &str = "access token";
    const CANARY: &str = "RFB protocol version";
    let mut needles: Vec<(&str, &str)> = vec![
        (TOKEN, &console_url.token),
        ("hypervisor password", pve::PASSWORD),
        (CANARY, "RFB 003.008"),
    ];
    let kinds = [
        ("login ticket", &issued.login_tickets),
        ("CSRF token", &issued.csrf_tokens),
        ("VNC ticket", &issued.vnc_tickets),
        ("VNC password", &issued.vnc_passwords),
    ];
    for (kind, values) in kinds {
        needles.extend(values.iter().map(|v| (kind, v.as_str())));
    }
    let found = browser.scan("console", &needles).await?;
    // The scan reads the WebSocket's frames: the server's RFB greeting is there.
    assert!(
        found
            .iter()
            .any(|f| f.needle == CANARY && f.place == "websocket-frame-received"),
        "the scan did not see the RFB stream, so it could miss a credential in it: {found:#?}"
    );
    let token_places: Vec<&str> = found
        .iter()
        .filter(|f| f.needle == TOKEN)
        .map(|f| f.place.as_str())
        .collect();
    assert_eq!(
        token_places,
        ["websocket-request-header:sec-websocket-protocol"],
        "the token travels only as the WebSocket's subprotocol"
    );
    let leaked: Vec<_> = found
        .iter()
        .filter(|f| f.needle != TOKEN && f.needle != CANARY)
        .collect();
    assert!(
        leaked.is_empty(),
        "hypervisor credentials reached the browser: {leaked:#?}"
    );
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_keeps_showing_the_vm_through_a_reset() -> Result<()> {
    let browser = Browser::launch("reset").await?;
    let sim = PveSim::start("B", &[qemu(100)]).await?;
    let vms = SimVms::of(&sim)?;
    let mut bed = Bed::new("browser-reset").await?;
    let hypervisor = bed.proxmox_hypervisor(&sim).await?;
    let url = bed
        .session("reset", &hypervisor, pve_vm(&sim, 100), json!({}))
        .await?;
    browser.open("console", &url).await?;
    screen(&browser, "console").await?;
    let (before, _) = browser
        .until_canvas_shows("console", "before-reset", Duration::from_secs(60), || {
            vms.screen(100)
        })
        .await?;

    vms.reset(100).await?;
    // The reboot shows: the firmware starts over on a cleared screen.
    let result = browser
        .wait(
            "console",
            Until::Changed {
                from: before.thumb.clone(),
                min_cells: 10,
            },
            Duration::from_secs(60),
        )
        .await;
    explained(&browser, "console", result).await?;
    browser.screenshot("console", "rebooting").await?;
    // And the console goes on showing the VM as it is now.
    browser
        .until_canvas_shows("console", "after-reset", Duration::from_secs(90), || {
            vms.screen(100)
        })
        .await?;
    let state = browser.state("console").await?;
    assert_connected_once("console", &state);
    let network = browser.network("console").await?;
    let sockets: Vec<_> = network
        .requests
        .iter()
        .filter(|r| r.kind == "websocket")
        .collect();
    assert_eq!(sockets.len(), 1, "the page reconnected: {sockets:#?}");
    let status = bed.status("reset").await?;
    assert_eq!(status.phase, Some(SessionPhase::Connected), "{status:?}");
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sessions_to_different_vms_work_at_once_in_separate_pages() -> Result<()> {
    const PLAIN_PORT: u16 = 5921;
    let browser = Browser::launch("several_sessions").await?;
    let sim = PveSim::start("B", &[qemu(100), qemu(101)]).await?;
    let vms = SimVms::of(&sim)?;
    let plain = Vm::start(HYPERVISOR_HOST, PLAIN_PORT).await?;
    let plain_events = plain.watch_events().await?;
    let mut bed = Bed::new("browser-several").await?;
    let proxmox = bed.proxmox_hypervisor(&sim).await?;
    let vnc = bed.vnc_hypervisor().await?;
    bed.apply("vm100", &proxmox, pve_vm(&sim, 100), json!({}))
        .await?;
    bed.apply("vm101", &proxmox, pve_vm(&sim, 101), json!({}))
        .await?;
    bed.apply("plain", &vnc, vnc_vm(PLAIN_PORT), json!({}))
        .await?;
    let (url100, url101, url_plain) =
        futures::try_join!(bed.ready("vm100"), bed.ready("vm101"), bed.ready("plain"))?;
    let urls = [&url100, &url101, &url_plain];
    let distinct: std::collections::BTreeSet<_> = urls.iter().collect();
    assert_eq!(distinct.len(), 3, "each session has its own URL: {urls:?}");

    futures::try_join!(
        browser.open("vm100", &url100),
        browser.open("vm101", &url101),
        browser.open("plain", &url_plain),
    )?;
    futures::try_join!(
        screen(&browser, "vm100"),
        screen(&browser, "vm101"),
        screen(&browser, "plain"),
    )?;
    browser
        .until_canvas_shows("vm100", "vm100", Duration::from_secs(60), || {
            vms.screen(100)
        })
        .await?;
    browser
        .until_canvas_shows("vm101", "vm101", Duration::from_secs(60), || {
            vms.screen(101)
        })
        .await?;
    browser.screenshot("plain", "plain").await?;

    // Each page's keys reach its own VM, and only that one.
    browser.type_text("vm100", "1357").await?;
    browser.type_text("vm101", "2468").await?;
    let (input100, input101) = eventually(
        Duration::from_secs(30),
        "both VMs to record their page's keys",
        || async {
            let a = Input::from_events(&sim.input(100).await?);
            let b = Input::from_events(&sim.input(101).await?);
            if a.typed().contains("1357") && b.typed().contains("2468") {
                Ok(Some((a, b)))
            } else {
                Err(anyhow!("VM 100: {:?}; VM 101: {:?}", a.typed(), b.typed()))
            }
        },
    )
    .await?;
    assert_eq!(input100.typed(), "1357");
    assert_eq!(input101.typed(), "2468");
    assert_eq!(
        plain_events.count("VNC_CONNECTED"),
        1,
        "the plain VM has exactly its own page's proxy as client"
    );

    // All three pages still show their VM, at the same time.
    for page in ["vm100", "vm101", "plain"] {
        let state = screen(&browser, page).await?;
        assert_connected_once(page, &state);
    }
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_refuses_a_second_page_and_completes_when_the_first_closes() -> Result<()> {
    const PORT: u16 = 5922;
    let browser = Browser::launch("run_once").await?;
    let vm = Vm::start(HYPERVISOR_HOST, PORT).await?;
    let events = vm.watch_events().await?;
    let mut bed = Bed::new("browser-once").await?;
    let hypervisor = bed.vnc_hypervisor().await?;
    let url = bed
        .session("once", &hypervisor, vnc_vm(PORT), json!({"runOnce": true}))
        .await?;

    browser.open("first", &url).await?;
    screen(&browser, "first").await?;
    browser.open("second", &url).await?;
    let second = browser.wait("second", Until::Ended, END_TIMEOUT).await?;
    browser.screenshot("second", "refused").await?;
    assert_refused_readably(
        "second",
        &second,
        "This link was for a single visit, and it has been used.",
    );
    // The refusal cost the first viewer nothing, and never reached the VM.
    let first = browser.state("first").await?;
    assert_connected_once("first", &first);
    assert_eq!(events.count("VNC_CONNECTED"), 1);
    assert_eq!(
        bed.status("once").await?.phase,
        Some(SessionPhase::Connected)
    );

    browser.close_page("first").await?;
    let status = bed.ended("once").await?;
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(SessionPhase::Completed), Some("Completed")),
        "{status:?}"
    );
    browser.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_idle_show_the_countdown_then_the_end_reason_the_phase_matches() -> Result<()> {
    const EXPIRY_PORT: u16 = 5923;
    const IDLE_PORT: u16 = 5924;
    const EXPIRED: &str = "The session reached its time limit.";
    const IDLE: &str = "Closed after 8 seconds without input.";
    let browser = Browser::launch("expiry_and_idle").await?;
    let _expiry_vm = Vm::start(HYPERVISOR_HOST, EXPIRY_PORT).await?;
    let _idle_vm = Vm::start(HYPERVISOR_HOST, IDLE_PORT).await?;
    let mut bed = Bed::new("browser-ending").await?;
    let hypervisor = bed.vnc_hypervisor().await?;
    bed.apply(
        "expires",
        &hypervisor,
        vnc_vm(EXPIRY_PORT),
        json!({"timeout": "50s"}),
    )
    .await?;
    // A lifetime under five minutes, so the page counts it down meanwhile.
    bed.apply(
        "idles",
        &hypervisor,
        vnc_vm(IDLE_PORT),
        json!({"idleTimeout": "8s", "timeout": "4m"}),
    )
    .await?;
    let (expiry_url, idle_url) = futures::try_join!(bed.ready("expires"), bed.ready("idles"))?;
    futures::try_join!(
        browser.open("expires", &expiry_url),
        browser.open("idles", &idle_url),
    )?;

    // Expiry: the countdown, in its last minute's styling, then the end.
    let counting = browser
        .wait("expires", Until::Countdown { urgent: true }, SCREEN_TIMEOUT)
        .await?;
    let left = counting
        .countdown
        .as_deref()
        .and_then(countdown_seconds)
        .context("a countdown")?;
    assert!(left <= 60, "{counting:#?}");
    let (expired, idled) = futures::try_join!(
        browser.wait("expires", Until::Ended, END_TIMEOUT),
        browser.wait("idles", Until::Ended, END_TIMEOUT),
    )?;
    browser.screenshot("expires", "expired").await?;
    browser.screenshot("idles", "idle").await?;

    assert_eq!(expired.reason.as_deref(), Some(EXPIRED), "{expired:#?}");
    assert!(
        expired.countdown.is_none() && !expired.screen_visible,
        "{expired:#?}"
    );
    let counted: Vec<u64> = expired
        .countdowns()
        .iter()
        .filter_map(|t| countdown_seconds(t))
        .collect();
    assert!(
        counted.len() >= 2 && counted.windows(2).all(|w| w[1] < w[0]),
        "the countdown counted down: {counted:?}"
    );
    assert!(
        counted.last().is_some_and(|s| *s <= 3),
        "the countdown ran to the end: {counted:?}"
    );
    assert!(
        expired.statuses().contains(&CONNECTED),
        "the expiring page had the VM's screen: {:#?}",
        expired.timeline
    );
    let status = bed.ended("expires").await?;
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(SessionPhase::Expired), Some("Expired")),
        "the page said {EXPIRED:?}: {status:?}"
    );

    // Idle: the countdown was there too, then the idle message, some 8 s
    // after the viewer connected.
    assert_eq!(idled.reason.as_deref(), Some(IDLE), "{idled:#?}");
    assert!(
        !idled.countdowns().is_empty(),
        "the countdown was shown: {:#?}",
        idled.timeline
    );
    let connected_at = idled
        .timeline
        .iter()
        .find(|s| s.status == CONNECTED)
        .context("the idle page connected")?
        .at;
    let ended_at = idled
        .timeline
        .iter()
        .find(|s| s.ended)
        .context("the idle page ended")?
        .at;
    let idle_secs = (ended_at - connected_at) / 1000.0;
    assert!(
        (6.0..=12.0).contains(&idle_secs),
        "ended {idle_secs}s after connecting, for an idle timeout of 8s"
    );
    let status = bed.ended("idles").await?;
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Some(SessionPhase::Expired), Some("Idle")),
        "the page said {IDLE:?}: {status:?}"
    );
    browser.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_shows_a_readable_message_not_a_blank_canvas() -> Result<()> {
    const NOTHING_PORT: u16 = 5925;
    let browser = Browser::launch("failed_connection").await?;
    if tokio::net::TcpStream::connect((HYPERVISOR_HOST, NOTHING_PORT))
        .await
        .is_ok()
    {
        bail!("{HYPERVISOR_HOST}:{NOTHING_PORT} serves something; this test needs nothing there");
    }
    let sim = PveSim::start("B", &[qemu(100), qemu(101)]).await?;
    let vms = SimVms::of(&sim)?;
    let mut bed = Bed::new("browser-failed").await?;
    let proxmox = bed.proxmox_hypervisor(&sim).await?;
    let vnc = bed.vnc_hypervisor().await?;
    bed.apply("stopped", &proxmox, pve_vm(&sim, 100), json!({}))
        .await?;
    bed.apply("rejected", &proxmox, pve_vm(&sim, 101), json!({}))
        .await?;
    bed.apply("nothing", &vnc, vnc_vm(NOTHING_PORT), json!({}))
        .await?;
    let (stopped_url, rejected_url, nothing_url) = futures::try_join!(
        bed.ready("stopped"),
        bed.ready("rejected"),
        bed.ready("nothing")
    )?;

    // (page, URL, what the page says, the session's reason)
    let cases = [
        (
            "stopped",
            stopped_url,
            "The VM is not running.",
            "VMNotRunning",
        ),
        (
            "rejected",
            rejected_url,
            "The hypervisor rejected the console ticket it had just issued.",
            "TicketRejected",
        ),
        (
            "nothing",
            nothing_url,
            "The hypervisor cannot be reached.",
            "HypervisorUnreachable",
        ),
    ];
    for (page, url, says, reason) in &cases {
        // Each failure as it happens to a session that was fine until then.
        match *page {
            "stopped" => vms.stop(100).await?,
            "rejected" => sim.set_faults(json!({"reject_vnc_tickets": true})).await?,
            _ => {}
        }
        browser.open(page, url).await?;
        let result = browser.wait(page, Until::Ended, END_TIMEOUT).await;
        let state = explained(&browser, page, result).await?;
        browser.screenshot(page, page).await?;
        let message = assert_refused_readably(page, &state, says);
        let status = bed.ended(page).await?;
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(SessionPhase::Failed), Some(*reason)),
            "the page said {message:?}: {status:?}"
        );
    }
    browser.quit().await?;
    sim.shutdown().await;
    Ok(())
}
