//! How sessions end, for real causes, on the test bed: the proxy's end reason
//! travels through its termination message into the session's final phase.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    TestHypervisor, TestNamespace, child_name, children_api, client, kubectl, wait_for_session,
};
use porthole_e2e::rfb;
use porthole_e2e::vm::Vm;

struct Setup {
    ns: TestNamespace,
    hypervisor: TestHypervisor,
    sessions: Api<ConsoleSession>,
}

impl Setup {
    async fn new(prefix: &str) -> Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let hypervisor = TestHypervisor::vnc(prefix).await?;
        let sessions = Api::namespaced(client, &ns.name);
        Ok(Setup {
            ns,
            hypervisor,
            sessions,
        })
    }

    /// Applies a session for the VM on `port` and waits until it is Ready.
    async fn ready_session(
        &self,
        name: &str,
        port: u16,
        extra: &str,
    ) -> Result<ConsoleSessionStatus> {
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {}}}\n\
             spec:\n  hypervisor: {}\n  vm: {{port: {port}}}\n{extra}",
            self.ns.name, self.hypervisor.name
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        self.wait_for(name, "condition=Ready").await?;
        self.sessions.get(name).await?.status.context("status")
    }

    async fn wait_for(&self, name: &str, condition: &str) -> Result<()> {
        wait_for_session(&self.ns.name, name, condition, Duration::from_secs(90)).await
    }

    /// Waits for the final phase and returns the final status.
    async fn ended(&self, name: &str, phase: SessionPhase) -> Result<ConsoleSessionStatus> {
        self.wait_for(name, &format!("jsonpath={{.status.phase}}={phase:?}"))
            .await?;
        self.sessions.get(name).await?.status.context("status")
    }
}

/// How far the recorded end is from `deadline`, in seconds (positive: late).
fn seconds_off(status: &ConsoleSessionStatus, deadline: Timestamp) -> f64 {
    let ended = status
        .ended_at
        .as_ref()
        .expect("a final status records its end")
        .0;
    deadline.duration_until(ended).as_secs_f64()
}

#[tokio::test]
async fn nobody_connecting_ends_the_session_as_never_connected_on_time() -> Result<()> {
    let setup = Setup::new("noshow").await?;
    setup
        .ready_session("noshow", 5914, "  connectTimeout: 6s\n")
        .await?;
    // The proxy counts from its start.
    let client = setup.sessions.clone().into_client();
    let pods: Api<Pod> = children_api(&client);
    let started = pods
        .get(&child_name(&client, &setup.ns.name, "noshow").await?)
        .await?
        .status
        .and_then(|s| s.container_statuses?.remove(0).state?.running?.started_at)
        .context("the proxy container's start time")?
        .0;
    let status = setup.ended("noshow", SessionPhase::Expired).await?;
    assert_eq!(
        status.reason.as_deref(),
        Some("NeverConnected"),
        "{status:?}"
    );
    let off = seconds_off(&status, started + SignedDuration::from_secs(6));
    assert!(off.abs() <= 2.0, "ended {off}s off the connect deadline");
    Ok(())
}

#[tokio::test]
async fn a_viewer_without_input_is_ended_as_idle_on_time() -> Result<()> {
    let setup = Setup::new("idle").await?;
    let _vm = Vm::start(HYPERVISOR_HOST, 5915).await?;
    let status = setup
        .ready_session("idle", 5915, "  idleTimeout: 5s\n")
        .await?;
    let before = Timestamp::now();
    // The viewer watches (screen updates flow: they are not input) and never types.
    let _console = rfb::open_viewer(status.url.as_deref().context("url")?).await?;
    let after = Timestamp::now();
    let status = setup.ended("idle", SessionPhase::Expired).await?;
    assert_eq!(status.reason.as_deref(), Some("Idle"), "{status:?}");
    // The idle clock starts when the viewer connects, somewhere in [before, after].
    let (early, late) = (
        seconds_off(&status, after + SignedDuration::from_secs(5)),
        seconds_off(&status, before + SignedDuration::from_secs(5)),
    );
    assert!(
        early >= -2.0 && late <= 2.0,
        "ended {early}..{late}s off the idle deadline"
    );
    Ok(())
}

#[tokio::test]
async fn run_once_ends_as_completed_when_the_viewer_leaves() -> Result<()> {
    let setup = Setup::new("once").await?;
    let _vm = Vm::start(HYPERVISOR_HOST, 5916).await?;
    let status = setup
        .ready_session("once", 5916, "  runOnce: true\n")
        .await?;
    let console = rfb::open_viewer(status.url.as_deref().context("url")?).await?;
    console.close().await;
    let status = setup.ended("once", SessionPhase::Completed).await?;
    assert_eq!(status.reason.as_deref(), Some("Completed"), "{status:?}");
    assert!(status.url.is_none(), "a finished session publishes no URL");
    Ok(())
}

#[tokio::test]
async fn ttl_seconds_after_finished_deletes_the_session() -> Result<()> {
    let setup = Setup::new("ttl").await?;
    setup
        .ready_session("ttl", 5917, "  timeout: 8s\n  ttlSecondsAfterFinished: 3\n")
        .await?;
    let status = setup.ended("ttl", SessionPhase::Expired).await?;
    let ended = status.ended_at.context("endedAt")?.0;
    setup.wait_for("ttl", "delete").await?;
    let deleted_after = ended.duration_until(Timestamp::now()).as_secs_f64();
    assert!(
        deleted_after >= 2.0,
        "deleted {deleted_after}s after ending, before its TTL of 3s"
    );
    Ok(())
}
