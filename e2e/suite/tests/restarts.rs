//! The operator killed again and again while it runs 50 sessions: every session
//! still gets exactly one proxy pod, every one expires on time, and nothing a
//! session created is left behind.
//!
//! Killing the operator disturbs every other test, so this one lives in the
//! `disruptive` module: `make e2e` runs those alone, after the rest.

mod disruptive {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::{Context as _, Result, ensure};
    use futures::TryStreamExt as _;
    use k8s_openapi::api::core::v1::{Pod, Secret, Service};
    use kube::Api;
    use kube::api::ListParams;
    use kube::runtime::{WatchStreamExt as _, watcher};
    use porthole_api::contract::labels;
    use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
    use porthole_e2e::cluster::{
        TestHypervisor, TestNamespace, client, eventually, kubectl, record_figures,
    };
    use serde_json::json;

    const SESSIONS: usize = 50;
    /// Long enough for every proxy pod to be running at its deadline, so each
    /// proxy ends its session itself, on time, whether or not an operator runs.
    const FIRST_TIMEOUT_SECS: usize = 150;
    const WAIT: Duration = Duration::from_secs(600);
    /// How far a recorded end may be from the deadline (as in endings.rs).
    const ON_TIME_SECS: f64 = 2.0;
    const CLEANUP: Duration = Duration::from_secs(120);

    /// Kills every operator pod now: force-deleted, no graceful shutdown, no
    /// Lease released. The Deployment starts another, which must wait for the
    /// Lease to expire before it leads.
    async fn kill_operator(why: &str, kills: &mut usize) -> Result<()> {
        eprintln!("killing the operator: {why}");
        *kills += 1;
        kubectl(
            &[
                "-n",
                "porthole-system",
                "delete",
                "pod",
                "-l",
                "app.kubernetes.io/name=porthole-operator",
                "--grace-period=0",
                "--force",
                "--wait=false",
            ],
            None,
        )
        .await?;
        Ok(())
    }

    /// Every proxy pod UID ever seen, per session: a watch from before the first
    /// session, so a pod that came and went between two looks still counts.
    #[derive(Clone, Default)]
    struct PodsSeen(Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>);

    impl PodsSeen {
        fn record(&self, pod: &Pod) {
            let session = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SESSION));
            if let (Some(session), Some(uid)) = (session, &pod.metadata.uid) {
                self.0
                    .lock()
                    .expect("not poisoned")
                    .entry(session.clone())
                    .or_default()
                    .insert(uid.clone());
            }
        }

        fn snapshot(&self) -> BTreeMap<String, BTreeSet<String>> {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    /// Counts sessions by phase.
    async fn phases(sessions: &Api<ConsoleSession>) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for session in sessions.list(&ListParams::default()).await? {
            let phase = session
                .status
                .and_then(|s| s.phase)
                .map_or("none", SessionPhase::as_str);
            *counts.entry(phase.to_string()).or_default() += 1;
        }
        Ok(counts)
    }

    async fn wait_until_count(
        sessions: &Api<ConsoleSession>,
        what: &str,
        at_least: usize,
        count: impl Fn(&BTreeMap<String, usize>) -> usize,
    ) -> Result<()> {
        eventually(WAIT, &format!("{at_least} sessions {what}"), || async {
            let counts = phases(sessions).await?;
            Ok((count(&counts) >= at_least).then_some(()))
        })
        .await
    }

    fn open(counts: &BTreeMap<String, usize>) -> usize {
        ["Ready", "Connected"]
            .iter()
            .filter_map(|p| counts.get(*p))
            .sum()
    }

    fn ended(counts: &BTreeMap<String, usize>) -> usize {
        ["Expired", "Completed", "Failed"]
            .iter()
            .filter_map(|p| counts.get(*p))
            .sum()
    }

    #[tokio::test]
    async fn killing_the_operator_repeatedly_loses_no_session_and_leaves_nothing_behind()
    -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "restarts").await?;
        let hv = TestHypervisor::vnc("restarts").await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

        let seen = PodsSeen::default();
        let recorder = seen.clone();
        let watch = tokio::spawn(
            watcher(
                pods.clone(),
                watcher::Config::default().labels(labels::SESSION),
            )
            .applied_objects()
            .try_for_each(move |pod| {
                recorder.record(&pod);
                async { Ok(()) }
            }),
        );

        let mut kills = 0;
        for i in 0..SESSIONS {
            // Deadlines one second apart, so expiries keep coming while the
            // operator is killed.
            let manifest = format!(
                "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
                 metadata: {{name: s{i:02}, namespace: {}}}\n\
                 spec:\n  hypervisor: {}\n  vm: {{port: 5930}}\n  timeout: {}s\n",
                ns.name,
                hv.name,
                FIRST_TIMEOUT_SECS + i
            );
            kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
            if i == 9 || i == 29 {
                kill_operator(&format!("{} sessions created", i + 1), &mut kills).await?;
            }
        }
        wait_until_count(&sessions, "open", 1, open).await?;
        kill_operator("the first session is open", &mut kills).await?;
        wait_until_count(&sessions, "open", SESSIONS / 2, open).await?;
        kill_operator("half the sessions are open", &mut kills).await?;
        wait_until_count(&sessions, "ended", 1, ended).await?;
        kill_operator("the first session ended", &mut kills).await?;
        wait_until_count(&sessions, "ended", SESSIONS / 2, ended).await?;
        kill_operator("half the sessions ended", &mut kills).await?;
        wait_until_count(&sessions, "ended", SESSIONS, ended).await?;

        // Every session expired, on time, by its own deadline.
        let mut lost = Vec::new();
        for session in sessions.list(&ListParams::default()).await? {
            let name = session.metadata.name.clone().unwrap_or_default();
            let status = session.status.context("status")?;
            let expired = status.phase == Some(SessionPhase::Expired)
                && status.reason.as_deref() == Some("Expired");
            let off = match (&status.expires_at, &status.ended_at) {
                (Some(deadline), Some(ended)) => deadline.0.duration_until(ended.0).as_secs_f64(),
                _ => f64::INFINITY,
            };
            if !expired || off.abs() > ON_TIME_SECS {
                lost.push(format!(
                    "{name}: {:?} {:?}, {off:+.1}s off its deadline",
                    status.phase, status.reason
                ));
            }
        }

        // Nothing a session created is left.
        let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        let owned = ListParams::default().labels(labels::SESSION);
        let left_behind = || async {
            Ok::<_, anyhow::Error>(
                pods.list(&owned).await?.items.len()
                    + services.list(&owned).await?.items.len()
                    + secrets.list(&owned).await?.items.len(),
            )
        };
        let cleaned = eventually(
            CLEANUP,
            "every session's pod, service and secret to go",
            || async { Ok((left_behind().await? == 0).then_some(())) },
        )
        .await;
        let orphans = if cleaned.is_ok() {
            0
        } else {
            left_behind().await?
        };

        // Exactly one proxy pod per session, ever.
        watch.abort();
        let seen = seen.snapshot();
        let duplicated: Vec<_> = seen.iter().filter(|(_, uids)| uids.len() > 1).collect();

        record_figures(&json!({
            "test": "killing_the_operator_repeatedly_loses_no_session_and_leaves_nothing_behind",
            "sessions_run": SESSIONS,
            "faults_injected": kills,
            "fault": "operator pod force-deleted (no graceful shutdown, Lease not released)",
            "sessions_lost": lost.len(),
            "orphans_left": orphans,
            "duplicate_pods": duplicated.len(),
        }))?;
        ensure!(
            lost.is_empty(),
            "sessions that did not expire on time: {lost:?}"
        );
        ensure!(
            orphans == 0,
            "{orphans} pods, services or secrets left behind"
        );
        ensure!(
            seen.len() == SESSIONS,
            "{} of {SESSIONS} sessions had a pod",
            seen.len()
        );
        ensure!(
            duplicated.is_empty(),
            "sessions with more than one pod: {duplicated:?}"
        );
        Ok(())
    }
}
