//! The kube-apiserver stopped and started again (same arguments) while
//! sessions are live, for long enough that a session's deadline passes during
//! the outage and the operator loses its leadership Lease:
//!
//! - a viewer watching through the proxy keeps its console throughout;
//! - the session whose deadline passes is ended by its proxy on time, with no
//!   apiserver, and the operator records it Expired, on time, afterwards;
//! - a session applied just before the outage, and one applied after it,
//!   become Ready;
//! - the operator leads again (after restarting, if it had to), nothing is
//!   left behind and no session is stuck short of a final phase.
//!
//! Stopping the apiserver disturbs every other test, so this one lives in the
//! `disruptive` module: `make e2e` runs those alone, after the rest.

mod disruptive {
    use std::time::Duration;

    use anyhow::{Context as _, Result, bail, ensure};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ListParams;
    use kube::{Api, Client};
    use porthole_api::contract::PROXY_PORT;
    use porthole_api::v1alpha1::ConsoleSession;
    use porthole_e2e::HYPERVISOR_HOST;
    use porthole_e2e::cluster::faults::orphans_after;
    use porthole_e2e::cluster::{
        TestHypervisor, TestNamespace, apiserver, child_name, children_api, client, eventually,
        kubectl, ready_status, record_figures, wait_for_session,
    };
    use porthole_e2e::rfb::{self, Console, ConsoleUrl, ServerInit};
    use porthole_e2e::vm::Vm;
    use serde_json::json;
    use tokio::net::TcpStream;
    use tokio::time::{Instant, timeout};

    /// A port no other e2e test serves a VM on.
    const VM_PORT: u16 = 5912;
    /// The lifetime of the session that expires during the outage: it is
    /// Ready a few seconds after it is applied and the outage starts at once,
    /// so its deadline comes well after the operator's 10 s renew deadline.
    const EXPIRING_TIMEOUT: &str = "25s";
    const WAIT: Duration = Duration::from_secs(120);
    /// How far a recorded end may be from the deadline (as in endings.rs).
    const ON_TIME_SECS: f64 = 2.0;
    const OPERATOR_NAMESPACE: &str = "porthole-system";
    const OPERATOR_LABEL: &str = "app.kubernetes.io/name=porthole-operator";
    const LEASE: &str = "porthole-operator";

    async fn apply_session(ns: &str, hv: &str, name: &str, timeout: &str) -> Result<()> {
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
             metadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hypervisor: {hv}\n  vm: {{port: {VM_PORT}}}\n  timeout: {timeout}\n"
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        Ok(())
    }

    /// The viewer gets a fresh non-black frame within a few seconds.
    async fn sees_frames(viewer: &mut Console, init: &ServerInit) -> Result<()> {
        let limit = Duration::from_secs(15);
        timeout(limit, viewer.wait_for_nonzero_frame(init, limit))
            .await
            .context("no frame within 15 s")?
            .map(drop)
    }

    /// Whether the proxy at `addr` accepts connections.
    async fn serving(addr: &str) -> bool {
        matches!(
            timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }

    /// The operator's pods, and how often their containers restarted in all.
    async fn operator_pods(client: &Client) -> Result<(Vec<String>, i32)> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
        let list = pods
            .list(&ListParams::default().labels(OPERATOR_LABEL))
            .await?;
        let restarts = list
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum();
        let names = list.into_iter().filter_map(|p| p.metadata.name).collect();
        Ok((names, restarts))
    }

    /// Waits until a running, ready operator pod holds the leadership Lease
    /// and renews it.
    async fn operator_leads(client: &Client) -> Result<String> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
        eventually(WAIT, "a ready operator pod to renew the Lease", || async {
            let Some(spec) = leases.get_opt(LEASE).await?.and_then(|l| l.spec) else {
                return Ok(None);
            };
            let (Some(holder), Some(renewed)) = (spec.holder_identity, spec.renew_time) else {
                return Ok(None);
            };
            let fresh = renewed.0.duration_until(Timestamp::now()).as_secs_f64() < 5.0;
            let ready = pods.get_opt(&holder).await?.is_some_and(|pod| {
                pod.status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok((fresh && ready).then_some(holder))
        })
        .await
    }

    /// What happened during the outage, as the test saw it.
    struct Outage {
        /// The viewer's console worked at every look during the outage.
        viewer_kept: Result<()>,
        /// Seconds from the expiring session's deadline to its proxy stopping.
        proxy_stopped_after_deadline: Result<f64>,
    }

    /// With the apiserver stopped: the viewer keeps its console, and the
    /// expiring session's proxy stops serving at its deadline. Never fails:
    /// the apiserver must be started again whatever happens.
    async fn during_outage(
        viewer: &mut Console,
        init: &ServerInit,
        expiring_proxy: &str,
        deadline: Timestamp,
    ) -> Outage {
        let mut viewer_kept = sees_frames(viewer, init)
            .await
            .context("just after the apiserver stopped");
        // Two failed connections in a row, so one lost packet is not an end.
        let give_up = Instant::now() + WAIT;
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        let mut refused = 0;
        let stopped = loop {
            poll.tick().await;
            refused = if serving(expiring_proxy).await {
                0
            } else {
                refused + 1
            };
            if refused >= 2 {
                break Ok(Timestamp::now());
            }
            if Instant::now() >= give_up {
                break Err(anyhow::anyhow!(
                    "the expiring session's proxy still served {WAIT:?} after the outage began"
                ));
            }
        };
        if viewer_kept.is_ok() {
            viewer_kept = sees_frames(viewer, init)
                .await
                .context("after the other session's deadline, apiserver still down");
        }
        Outage {
            viewer_kept,
            // The second failed look came at least 0.2 s after the stop.
            proxy_stopped_after_deadline: stopped
                .map(|at| deadline.duration_until(at).as_secs_f64() - 0.2),
        }
    }

    #[tokio::test]
    async fn restarting_the_apiserver_keeps_viewers_and_expiries_and_leaves_nothing_behind()
    -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "apiserver").await?;
        let _vm = Vm::start(HYPERVISOR_HOST, VM_PORT).await?;
        let hv = TestHypervisor::vnc("apiserver").await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        let pods: Api<Pod> = children_api(&client);

        // A viewer watching a long session.
        apply_session(&ns.name, &hv.name, "watched", "30m").await?;
        let status = ready_status(&sessions, "watched", WAIT).await?;
        let url = ConsoleUrl::parse(status.url.as_deref().context("status.url")?)?;
        let mut viewer = rfb::open(&url, Some(&url.token))
            .await
            .map_err(|refused| anyhow::anyhow!("the console refused its token: {refused:?}"))?;
        let init = viewer.handshake().await?;
        sees_frames(&mut viewer, &init).await?;
        wait_for_session(
            &ns.name,
            "watched",
            "jsonpath={.status.phase}=Connected",
            WAIT,
        )
        .await?;

        // A session whose deadline will pass while the apiserver is down.
        apply_session(&ns.name, &hv.name, "expiring", EXPIRING_TIMEOUT).await?;
        let status = ready_status(&sessions, "expiring", WAIT).await?;
        let deadline = status.expires_at.context("status.expiresAt")?.0;
        let expiring_child = child_name(&client, &ns.name, "expiring").await?;
        let pod_ip = pods
            .get(&expiring_child)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .context("the expiring session's pod IP")?;
        let expiring_proxy = format!("{pod_ip}:{PROXY_PORT}");
        ensure!(
            serving(&expiring_proxy).await,
            "the expiring session's proxy does not serve at {expiring_proxy}"
        );
        // A session applied as the apiserver goes: the operator may or may not
        // have started its pod when the outage begins.
        apply_session(&ns.name, &hv.name, "interrupted", "30m").await?;
        let (operator_before, restarts_before) = operator_pods(&client).await?;
        let left = Timestamp::now().duration_until(deadline).as_secs_f64();
        ensure!(
            left > 5.0,
            "the expiring session's deadline is {left:.1}s away: too close to pass during the outage"
        );

        // The apiserver stops listening as soon as it is told to stop.
        let stopped = Instant::now();
        apiserver("stop").await?;
        eprintln!("apiserver stopped, {left:.1}s before the expiring session's deadline");
        let outage = during_outage(&mut viewer, &init, &expiring_proxy, deadline).await;
        let started = apiserver("start").await;
        let outage_secs = stopped.elapsed().as_secs_f64();
        started?;
        eprintln!("apiserver back after {outage_secs:.1}s");

        let mut problems = Vec::new();
        let mut lost = Vec::new();
        let mut check = |what: &str, result: Result<()>, session: Option<&str>| {
            if let Err(error) = result {
                problems.push(format!("{what}: {error:#}"));
                lost.extend(session.map(str::to_owned));
            }
        };
        check(
            "the viewer during the outage",
            outage.viewer_kept,
            Some("watched"),
        );
        check(
            "the expiring session's proxy, on its own",
            outage.proxy_stopped_after_deadline.and_then(|off| {
                eprintln!("the expiring proxy stopped {off:+.1}s from its deadline");
                ensure!(off >= -1.0, "it stopped {off:.1}s before its deadline");
                ensure!(
                    off <= ON_TIME_SECS + 1.0,
                    "it stopped {off:.1}s after its deadline"
                );
                Ok(())
            }),
            Some("expiring"),
        );
        check(
            "the viewer after the outage",
            sees_frames(&mut viewer, &init).await,
            Some("watched"),
        );

        // The operator records the expiry the proxy enforced, and cleans up.
        let expired = async {
            wait_for_session(
                &ns.name,
                "expiring",
                "jsonpath={.status.phase}=Expired",
                WAIT,
            )
            .await?;
            let status = sessions.get("expiring").await?.status.context("status")?;
            ensure!(
                status.reason.as_deref() == Some("Expired"),
                "reason {:?}",
                status.reason
            );
            let ended = status.ended_at.context("endedAt")?.0;
            let off = deadline.duration_until(ended).as_secs_f64();
            ensure!(
                off.abs() <= ON_TIME_SECS,
                "recorded {off:+.1}s off its deadline"
            );
            porthole_e2e::cluster::wait_until_children_gone(&client, &expiring_child, WAIT).await
        };
        check("the expired session", expired.await, Some("expiring"));
        check(
            "the session applied just before the outage",
            wait_for_session(&ns.name, "interrupted", "condition=Ready", WAIT).await,
            Some("interrupted"),
        );
        let after = async {
            apply_session(&ns.name, &hv.name, "after", "30m").await?;
            wait_for_session(&ns.name, "after", "condition=Ready", WAIT).await
        };
        check(
            "a session applied after the outage",
            after.await,
            Some("after"),
        );
        // The operator follows the watched session again: still Connected, one viewer.
        let followed = async {
            wait_for_session(
                &ns.name,
                "watched",
                "jsonpath={.status.phase}=Connected",
                WAIT,
            )
            .await?;
            wait_for_session(
                &ns.name,
                "watched",
                "jsonpath={.status.viewers.count}=1",
                WAIT,
            )
            .await?;
            sees_frames(&mut viewer, &init).await
        };
        check(
            "the watched session after the outage",
            followed.await,
            Some("watched"),
        );
        let leader = operator_leads(&client).await;
        let (operator_after, restarts_after) = operator_pods(&client).await?;
        let operator_restarts = (restarts_after - restarts_before).max(0) as usize
            + operator_after
                .iter()
                .filter(|p| !operator_before.contains(p))
                .count();
        eprintln!("operator: {operator_restarts} restart(s) across the outage, leader {leader:?}");
        check("the operator leading again", leader.map(drop), None);

        // No session stuck short of a final phase: each is final or open.
        let stuck: Vec<String> = sessions
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|s| {
                !s.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_final() || p.is_open())
            })
            .filter_map(|s| s.metadata.name)
            .collect();
        check(
            "sessions stuck",
            if stuck.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{stuck:?}"))
            },
            None,
        );

        // Nothing orphaned: once the viewer leaves and the sessions are
        // deleted, the namespace holds no pod, service, secret or policy.
        viewer.close().await;
        kubectl(
            &[
                "-n",
                &ns.name,
                "delete",
                "consolesessions",
                "--all",
                "--wait=true",
            ],
            None,
        )
        .await?;
        let orphans = orphans_after(&client, &ns.name, WAIT).await?;
        if orphans > 0 {
            problems.push(format!(
                "{orphans} pods, services, secrets or policies left"
            ));
        }

        lost.sort();
        lost.dedup();
        record_figures(&json!({
            "test": "restarting_the_apiserver_keeps_viewers_and_expiries_and_leaves_nothing_behind",
            "fault": format!("kube-apiserver stopped for {outage_secs:.0} s and started again with the same arguments"),
            "outcome": if problems.is_empty() {
                format!("the viewer kept its console; the session due during the outage was ended by its proxy and recorded Expired on time; sessions applied before and after became Ready; the operator led again ({operator_restarts} restart(s)); nothing left")
            } else {
                format!("FAILED: {}", problems.join("; "))
            },
            "sessions_run": 4,
            "faults_injected": 1,
            "outage_seconds": outage_secs.round(),
            "operator_restarts": operator_restarts,
            "sessions_lost": lost.len(),
            "orphans_left": orphans,
        }))?;
        if !problems.is_empty() {
            bail!("after the apiserver restart: {}", problems.join("\n"));
        }
        Ok(())
    }
}
