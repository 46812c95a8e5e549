//! Faults on the data path, injected into the real test bed: the Proxmox VE
//! API down for a minute, the network between a proxy pod and its VM cut, a
//! proxy pod force-deleted or drained under its viewer, the VM killed
//! mid-session. For
//! each, what the user sees (close reason, status, Events) and that the
//! session converges: it ends final, on time, and leaves nothing behind.
//!
//! Each test has its own namespace, Hypervisor and VM (VNC ports 5941-5944),
//! so they run beside the other files. Figures go to
//! `.e2e/reliability/faults.jsonl`.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, Client};
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::faults::{cut_pod_from, orphans_after};
use porthole_e2e::cluster::{
    PORTHOLE_NAMESPACE, TestHypervisor, TestNamespace, apply, child_name, children_api, client,
    event_note, eventually, kubectl, ready_status, record_figures, unique_suffix,
    wait_until_children_gone,
};
use porthole_e2e::pve::{self, PveSim, SimVm};
use porthole_e2e::rfb::{self, ConsoleUrl};
use porthole_e2e::vm::Vm;
use serde_json::json;

/// How far a recorded end may be from its deadline (as in endings.rs).
const ON_TIME_SECS: f64 = 2.0;
/// Children of a final session are deleted at once; this bounds "at once".
const CLEANUP: Duration = Duration::from_secs(60);

/// One test's namespace, Hypervisor and sessions.
struct Bed {
    client: Client,
    ns: TestNamespace,
    sessions: Api<ConsoleSession>,
    hypervisor: String,
    _vnc: Option<TestHypervisor>,
}

impl Bed {
    /// A bed whose VMs are plain VNC on the test host, `port` among them.
    async fn vnc(prefix: &str, port: u16) -> Result<Self> {
        let hv = TestHypervisor::create(
            prefix,
            &format!("vnc: {{host: {HYPERVISOR_HOST}, ports: {{first: {port}, last: {port}}}}}"),
        )
        .await?;
        let mut bed = Self::new(prefix, hv.name.clone()).await?;
        bed._vnc = Some(hv);
        Ok(bed)
    }

    async fn new(prefix: &str, hypervisor: String) -> Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        Ok(Bed {
            sessions: Api::namespaced(client.clone(), &ns.name),
            client,
            ns,
            hypervisor,
            _vnc: None,
        })
    }

    async fn apply_session(&self, name: &str, vm: serde_json::Value, timeout: u64) -> Result<()> {
        apply(&json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": name, "namespace": self.ns.name},
            "spec": {"hypervisor": self.hypervisor, "vm": vm, "timeout": format!("{timeout}s")},
        }))
        .await
    }

    async fn status(&self, name: &str) -> Result<ConsoleSessionStatus> {
        self.sessions.get(name).await?.status.context("status")
    }

    async fn ready(&self, name: &str) -> Result<ConsoleSessionStatus> {
        ready_status(&self.sessions, name, Duration::from_secs(120)).await
    }

    /// Waits for a final phase (at most `within`) and returns the status.
    async fn ended(&self, name: &str, within: Duration) -> Result<ConsoleSessionStatus> {
        eventually(within, &format!("session {name} to end"), || async {
            let status = self.sessions.get(name).await?.status;
            Ok(status.filter(|s| s.phase.is_some_and(SessionPhase::is_final)))
        })
        .await
    }

    /// The session ended with `phase` and `reason`, its children are gone
    /// and no child of any session is left in the namespace. Returns the
    /// final status.
    async fn converged(
        &self,
        name: &str,
        phase: SessionPhase,
        reason: &str,
        within: Duration,
    ) -> Result<ConsoleSessionStatus> {
        let status = self.ended(name, within).await?;
        ensure!(
            status.phase == Some(phase) && status.reason.as_deref() == Some(reason),
            "session {name} should end {phase:?}/{reason}, got {:?}/{:?}: {:?}",
            status.phase,
            status.reason,
            status.message
        );
        ensure!(status.url.is_none(), "a final session publishes no URL");
        let child = child_name(&self.client, &self.ns.name, name).await?;
        wait_until_children_gone(&self.client, &child, CLEANUP).await?;
        Ok(status)
    }

    /// The note of the session's Event with `reason`, once it is there.
    async fn event(&self, session: &str, reason: &str) -> Result<String> {
        event_note(
            &self.client,
            &self.ns.name,
            session,
            reason,
            Duration::from_secs(30),
        )
        .await
    }

    /// What the namespace's ended sessions left behind, once the garbage
    /// collector has had time to remove it.
    async fn orphans(&self) -> Result<usize> {
        orphans_after(&self.client, &self.ns.name, CLEANUP).await
    }

    /// Every Event note in the namespace, for checking no secret is in one.
    async fn event_notes(&self) -> Result<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .collect::<Vec<_>>()
            .join("\n"))
    }

    async fn pod(&self, name: &str) -> Result<Pod> {
        let pods: Api<Pod> = children_api(&self.client);
        let child = child_name(&self.client, &self.ns.name, name).await?;
        Ok(pods.get(&child).await?)
    }
}

/// How far the recorded end is from `deadline`, in seconds (positive: late).
fn seconds_off(status: &ConsoleSessionStatus, deadline: Timestamp) -> Result<f64> {
    let ended = status
        .ended_at
        .as_ref()
        .context("a final status records its end")?
        .0;
    Ok(deadline.duration_until(ended).as_secs_f64())
}

/// The session's deadline, as status published it.
fn expires_at(status: &ConsoleSessionStatus) -> Result<Timestamp> {
    Ok(status.expires_at.as_ref().context("status.expiresAt")?.0)
}

/// Opens the console expecting a refusal, and returns the close reason.
async fn refused(status_url: &str) -> Result<String> {
    let url = ConsoleUrl::parse(status_url)?;
    let mut console = rfb::open(&url, Some(&url.token))
        .await
        .map_err(|e| anyhow::anyhow!("the WebSocket upgrade failed: {e:?}"))?;
    let reason = console.close_reason(Duration::from_secs(30)).await?;
    ensure!(
        console.received().is_empty(),
        "a refused viewer got RFB bytes"
    );
    Ok(reason)
}

/// Whether `haystack` holds a credential the simulator issued or the
/// Hypervisor's password.
fn leaks(haystack: &str, issued: &pve::Issued) -> bool {
    haystack.contains(pve::PASSWORD) || issued.all().iter().any(|s| haystack.contains(s))
}

/// The Proxmox VE API down for a real minute. A session created meanwhile
/// waits, saying the hypervisor is unreachable; a viewer of a session that
/// was Ready is told so and the session stays open. Once the API is back,
/// both consoles open, and both sessions still expire on time.
#[tokio::test]
async fn proxmox_api_down_for_a_minute_refuses_clearly_then_recovers() -> Result<()> {
    const OUTAGE: Duration = Duration::from_secs(60);
    /// Ends after the outage and the recovery, before the test's patience.
    const TIMEOUT: u64 = 150;
    let mut sim = PveSim::start(
        "B",
        &[SimVm {
            vmid: 100,
            kind: "qemu",
            running: true,
        }],
    )
    .await?;
    let hypervisor = format!("faults-pve-{}", unique_suffix());
    let bed = Bed::new("faults-pve", hypervisor.clone()).await?;
    sim.apply_hypervisor(&hypervisor, PveSim::password_credentials(), sim.ca_tls())
        .await?;
    let vm = json!({"node": sim.node(), "id": 100, "kind": "qemu"});
    bed.apply_session("before", vm.clone(), TIMEOUT).await?;
    let before = bed.ready("before").await?;
    let before_url = before.url.clone().context("url")?;

    sim.take_api_down().await?;
    let down_since = tokio::time::Instant::now();
    bed.apply_session("during", vm, TIMEOUT).await?;
    let waiting = eventually(
        Duration::from_secs(30),
        "the new session to say the hypervisor is unreachable",
        || async {
            let status = bed.sessions.get("during").await?.status;
            Ok(status.filter(|s| s.reason.as_deref() == Some("HypervisorUnreachable")))
        },
    )
    .await?;
    ensure!(
        waiting.phase == Some(SessionPhase::Pending),
        "a session waiting for its hypervisor is Pending: {waiting:?}"
    );
    let viewer_told = refused(&before_url).await?;
    ensure!(
        viewer_told.starts_with("upstream-failed: unreachable: "),
        "the viewer should learn the hypervisor cannot be reached: {viewer_told:?}"
    );

    // The rest of the minute: the outage goes on, and nothing gives up.
    let mut looks = 0;
    while down_since.elapsed() < OUTAGE {
        ensure!(
            tokio::net::TcpStream::connect(sim.url().trim_start_matches("https://"))
                .await
                .is_err(),
            "the API came back before its minute was over"
        );
        for name in ["before", "during"] {
            let status = bed.status(name).await?;
            ensure!(
                !status.phase.is_some_and(SessionPhase::is_final),
                "session {name} ended during the outage: {status:?}"
            );
        }
        looks += 1;
        tokio::time::sleep(Duration::from_secs(1).min(OUTAGE.saturating_sub(down_since.elapsed())))
            .await;
    }
    ensure!(looks > 10, "the outage was watched {looks} times only");
    sim.bring_api_up().await?;

    // Both recover: the waiting session becomes Ready, both consoles open.
    let during = bed.ready("during").await?;
    for url in [&before_url, during.url.as_ref().context("url")?] {
        rfb::open_viewer(url).await?.close().await;
    }

    // No credential in anything the users saw.
    let issued = sim.issued().await?;
    ensure!(
        !issued.login_tickets.is_empty(),
        "nothing was issued: {issued:?}"
    );
    let seen = format!(
        "{viewer_told}\n{:?}\n{}",
        waiting.message,
        bed.event_notes().await?
    );
    ensure!(
        !leaks(&seen, &issued),
        "a credential reached a user: {seen}"
    );

    // And both still end on time, leaving nothing behind.
    let mut late = 0.0f64;
    for (name, status) in [("before", &before), ("during", &during)] {
        let deadline = expires_at(status)?;
        let wait = Duration::try_from(Timestamp::now().duration_until(deadline))
            .unwrap_or_default()
            + Duration::from_secs(30);
        let ended = bed
            .converged(name, SessionPhase::Expired, "Expired", wait)
            .await?;
        late = late.max(seconds_off(&ended, deadline)?.abs());
    }
    ensure!(
        late <= ON_TIME_SECS,
        "a session ended {late}s off its deadline"
    );
    let orphans_left = bed.orphans().await?;
    record_figures(&json!({
        "test": "proxmox_api_down_for_a_minute",
        "fault": "Proxmox VE API down for 60 s",
        "faults_injected": 1,
        "sessions_run": 2,
        "sessions_lost": 0,
        "orphans_left": orphans_left,
        "outcome": "new session Pending (HypervisorUnreachable) and viewer refused with \
                    `upstream-failed: unreachable` (1013), session kept; both consoles \
                    open once the API is back; both expire on time",
        "api_outage_seconds": OUTAGE.as_secs(),
    }))?;
    ensure!(orphans_left == 0, "{orphans_left} children left behind");
    sim.shutdown().await;
    Ok(())
}

/// The network between a proxy pod and its VM cut under a live viewer
/// (packets dropped both ways in the pod's network namespace: no reset, no
/// ICMP). The proxy notices the silent peer within its dead-peer bound,
/// tells the viewer the hypervisor stopped answering, and the session ends
/// as HypervisorUnreachable instead of hanging until its deadline.
#[tokio::test]
async fn a_network_cut_under_a_viewer_is_detected_and_ends_the_session() -> Result<()> {
    const PORT: u16 = 5941;
    /// The proxy's dead-peer bound (20 s) plus keepalive rounding and slack.
    const DETECTED_WITHIN: Duration = Duration::from_secs(45);
    let _vm = Vm::start(HYPERVISOR_HOST, PORT).await?;
    let bed = Bed::vnc("faults-cut", PORT).await?;
    bed.apply_session("cut", json!({"port": PORT}), 300).await?;
    let status = bed.ready("cut").await?;
    let mut console = rfb::open_viewer(status.url.as_deref().context("url")?).await?;

    let uid = bed.pod("cut").await?.metadata.uid.context("pod uid")?;
    cut_pod_from(&uid, HYPERVISOR_HOST, PORT).await?;
    let cut_at = Timestamp::now();
    let reason = console.close_reason(DETECTED_WITHIN).await?;
    let noticed_after = cut_at.duration_until(Timestamp::now()).as_secs_f64();
    ensure!(
        reason.starts_with("upstream-failed: unreachable: the hypervisor stopped answering"),
        "the viewer should learn the console is lost: {reason:?}"
    );

    let ended = bed
        .converged(
            "cut",
            SessionPhase::Failed,
            "HypervisorUnreachable",
            Duration::from_secs(60),
        )
        .await?;
    let ended_after = seconds_off(&ended, cut_at)?;
    ensure!(
        ended_after <= DETECTED_WITHIN.as_secs_f64() && Timestamp::now() < expires_at(&status)?,
        "the session ended {ended_after}s after the cut"
    );
    bed.event("cut", "HypervisorUnreachable").await?;
    let orphans_left = bed.orphans().await?;
    record_figures(&json!({
        "test": "network_cut_under_a_viewer",
        "fault": "network between proxy pod and VM cut",
        "faults_injected": 1,
        "sessions_run": 1,
        "sessions_lost": 0,
        "orphans_left": orphans_left,
        "outcome": format!(
            "viewer closed after {noticed_after:.0} s with `upstream-failed: unreachable: \
             the hypervisor stopped answering`; session Failed (HypervisorUnreachable)"
        ),
        "detected_after_seconds": noticed_after,
    }))?;
    ensure!(orphans_left == 0, "{orphans_left} children left behind");
    Ok(())
}

/// How a test deletes the session's proxy pod.
#[derive(Clone, Copy)]
enum PodDeletion {
    /// `--grace-period=0 --force`: the object goes at once, the process is
    /// killed (a node lost, an impatient admin).
    Forced,
    /// The default grace period: the proxy is asked to stop, as in a node
    /// drain or an eviction, and reports `completed` on its way out.
    Graceful,
}

/// The proxy pod force-deleted (grace 0) under a live viewer. The viewer's
/// connection ends; the operator starts another pod for the same session
/// (same URL and token, like a ReplicaSet would) and says so in a Warning
/// Event, the viewer reconnects to the same URL, and the session still
/// expires on time.
#[tokio::test]
async fn a_proxy_pod_deleted_under_a_viewer_is_replaced_and_the_session_lives_on() -> Result<()> {
    pod_deleted_under_a_viewer("faults-pod", 5942, PodDeletion::Forced).await
}

/// The same with a graceful deletion, as a node drain does: the proxy stops
/// as asked and reports `completed`, which must not end the session. It says
/// Pending `ProxyStopping` until the pod is gone, then gets another.
#[tokio::test]
async fn a_proxy_pod_drained_under_a_viewer_is_replaced_and_the_session_lives_on() -> Result<()> {
    pod_deleted_under_a_viewer("faults-drain", 5944, PodDeletion::Graceful).await
}

async fn pod_deleted_under_a_viewer(prefix: &str, port: u16, how: PodDeletion) -> Result<()> {
    const TIMEOUT: u64 = 75;
    let _vm = Vm::start(HYPERVISOR_HOST, port).await?;
    let bed = Bed::vnc(prefix, port).await?;
    bed.apply_session("lost", json!({"port": port}), TIMEOUT)
        .await?;
    let status = bed.ready("lost").await?;
    let url = status.url.clone().context("url")?;
    let mut console = rfb::open_viewer(&url).await?;
    let old_uid = bed.pod("lost").await?.metadata.uid.context("pod uid")?;

    // Conditions carry whole seconds.
    let before_delete = Timestamp::from_second(Timestamp::now().as_second())?;
    let lost = child_name(&bed.client, &bed.ns.name, "lost").await?;
    let mut delete = vec![
        "-n",
        PORTHOLE_NAMESPACE,
        "delete",
        "pod",
        &lost,
        "--wait=false",
    ];
    if let PodDeletion::Forced = how {
        delete.extend(["--grace-period=0", "--force"]);
    }
    kubectl(&delete, None).await?;
    // The viewer learns: its connection ends (a killed process sends no
    // close frame; the page then says the connection was lost).
    let deleted_at = Timestamp::now();
    match console.close_reason(Duration::from_secs(30)).await {
        Ok(reason) => eprintln!("the viewer was closed with {reason:?}"),
        Err(e) if !e.to_string().contains("timed out") => {
            eprintln!("the viewer's connection ended: {e:#}");
        }
        Err(e) => bail!("the viewer never learned its proxy was gone: {e:#}"),
    }

    // Another pod serves the same session, at the same URL. The session
    // became Ready again since the deletion: a status still saying Ready from
    // before it (the operator has not caught up yet) does not count.
    eventually(
        Duration::from_secs(90),
        "a new proxy pod, ready, and the session Ready again",
        || async {
            let pod = bed.pod("lost").await.ok();
            let status = bed.status("lost").await?;
            ensure!(
                !status.phase.is_some_and(SessionPhase::is_final),
                "the session ended: {status:?}"
            );
            let new = pod
                .and_then(|p| p.metadata.uid)
                .is_some_and(|u| u != old_uid);
            let ready_again = status.phase == Some(SessionPhase::Ready)
                && status.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.last_transition_time.0 >= before_delete
                });
            Ok((new && ready_again).then_some(()))
        },
    )
    .await?;
    let again = bed.status("lost").await?;
    ensure!(
        again.url.as_deref() == Some(url.as_str()),
        "the session's URL changed: {:?} -> {:?}",
        url,
        again.url
    );
    ensure!(
        again.expires_at == status.expires_at,
        "the deadline moved: {:?} -> {:?}",
        status.expires_at,
        again.expires_at
    );
    rfb::open_viewer(&url).await?.close().await;
    if let PodDeletion::Graceful = how {
        let stopping = bed.event("lost", "ProxyStopping").await?;
        ensure!(stopping.contains("reconnect"), "{stopping}");
    }
    let replaced = bed.event("lost", "ProxyReplaced").await?;
    ensure!(replaced.contains("reconnect"), "{replaced}");
    let recovered_after = deleted_at.duration_until(Timestamp::now()).as_secs_f64();

    let deadline = expires_at(&status)?;
    let wait = Duration::try_from(Timestamp::now().duration_until(deadline)).unwrap_or_default()
        + Duration::from_secs(30);
    let ended = bed
        .converged("lost", SessionPhase::Expired, "Expired", wait)
        .await?;
    let off = seconds_off(&ended, deadline)?;
    ensure!(off.abs() <= ON_TIME_SECS, "ended {off}s off its deadline");
    let orphans_left = bed.orphans().await?;
    let (test, fault, gone) = match how {
        PodDeletion::Forced => (
            "proxy_pod_deleted_under_a_viewer",
            "proxy pod force-deleted",
            "viewer's connection reset",
        ),
        PodDeletion::Graceful => (
            "proxy_pod_drained_under_a_viewer",
            "proxy pod deleted gracefully (drain)",
            "viewer closed by the stopping proxy; Pending ProxyStopping until the pod was gone",
        ),
    };
    record_figures(&json!({
        "test": test,
        "fault": fault,
        "faults_injected": 1,
        "sessions_run": 1,
        "sessions_lost": 0,
        "orphans_left": orphans_left,
        "outcome": format!(
            "{gone}; another pod at the same URL (ProxyReplaced Warning), console back after \
             {recovered_after:.0} s; expired on time"
        ),
        "console_back_after_seconds": recovered_after,
    }))?;
    ensure!(orphans_left == 0, "{orphans_left} children left behind");
    Ok(())
}

/// The VM killed mid-session. The viewer is told the hypervisor closed the
/// console; the session ends at once as UpstreamClosed (Completed), well
/// before its deadline; a reconnect gets no console.
#[tokio::test]
async fn a_vm_killed_mid_session_tells_the_viewer_and_ends_the_session() -> Result<()> {
    const PORT: u16 = 5943;
    let mut vm = Vm::start(HYPERVISOR_HOST, PORT).await?;
    let bed = Bed::vnc("faults-vm", PORT).await?;
    bed.apply_session("stopped", json!({"port": PORT}), 300)
        .await?;
    let status = bed.ready("stopped").await?;
    let url = status.url.clone().context("url")?;
    let mut console = rfb::open_viewer(&url).await?;

    vm.kill().await?;
    let killed_at = Timestamp::now();
    let reason = console.close_reason(Duration::from_secs(15)).await?;
    ensure!(
        reason == "upstream-closed",
        "the viewer should learn the VM closed the console: {reason:?}"
    );
    let ended = bed
        .converged(
            "stopped",
            SessionPhase::Completed,
            "UpstreamClosed",
            Duration::from_secs(30),
        )
        .await?;
    let after = seconds_off(&ended, killed_at)?;
    ensure!(after <= 10.0, "the session ended {after}s after the VM");
    ensure!(
        ended.ended_at.as_ref().context("endedAt")?.0
            < expires_at(&status)? - SignedDuration::from_secs(60),
        "the session should end with its VM, not at its deadline"
    );
    bed.event("stopped", "UpstreamClosed").await?;

    // A reconnect finds no console: the session's Service is gone.
    let url = ConsoleUrl::parse(&url)?;
    let reconnect =
        tokio::time::timeout(Duration::from_secs(10), rfb::open(&url, Some(&url.token)));
    match reconnect.await {
        Ok(Ok(mut console)) => {
            let handshake = console.handshake().await;
            ensure!(
                handshake.is_err(),
                "a reconnect got a console from a finished session"
            );
        }
        Ok(Err(rfb::Refused::Status(status))) => {
            eprintln!("the reconnect was refused with HTTP {status}");
        }
        Ok(Err(rfb::Refused::Other(e))) => eprintln!("the reconnect failed: {e:#}"),
        Err(_) => eprintln!("the reconnect got no answer in 10 s"),
    }
    let orphans_left = bed.orphans().await?;
    record_figures(&json!({
        "test": "vm_killed_mid_session",
        "fault": "VM (QEMU) killed under a viewer",
        "faults_injected": 1,
        "sessions_run": 1,
        "sessions_lost": 0,
        "orphans_left": orphans_left,
        "outcome": "viewer closed with `upstream-closed`; session Completed \
                    (UpstreamClosed) at once; a reconnect finds no console",
    }))?;
    ensure!(orphans_left == 0, "{orphans_left} children left behind");
    Ok(())
}
