//! The operator force-killed at random moments while 100 sessions go through
//! their whole lives (created, Ready, expired, cleaned up): every session still
//! gets exactly one proxy pod, every one expires on time, and nothing a session
//! created is left behind.
//!
//! Sessions are created one every 1.5 s and live 100 s each, so at any moment
//! some are being created, some starting, some expiring and some being cleaned
//! up. The kill schedule is random (seeded; the seed is printed, and
//! `PORTHOLE_FAULT_SEED` replays it) but stratified: one kill in each slice
//! of the run, so kills land in every stage of a session's life.
//!
//! Killing the operator disturbs every other test, so this one lives in the
//! `disruptive` module: `make e2e` runs those alone, after the rest.

mod disruptive {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::{Context as _, Result, ensure};
    use futures::TryStreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::{ListParams, PostParams};
    use kube::runtime::{WatchStreamExt as _, watcher};
    use kube::{Api, Client};
    use porthole_api::contract::labels;
    use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
    use porthole_e2e::cluster::faults::orphans_after;
    use porthole_e2e::cluster::{
        TestHypervisor, TestNamespace, children_api, client, eventually, kill_operator,
        record_figures,
    };
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};
    use serde_json::json;
    use tokio::time::Instant;

    const SESSIONS: usize = 100;
    /// One session created every this long: creation spans 150 s.
    const CREATE_EVERY: Duration = Duration::from_millis(1500);
    /// Each session's lifetime. Long enough that a session created just after a
    /// kill still has its proxy pod running at its deadline (the next leader
    /// waits up to the 15 s Lease, then catches up on a backlog that a busy
    /// test bed drains slowly), so each proxy ends its session itself, on
    /// time, whether or not an operator runs.
    const TIMEOUT_SECS: u64 = 100;
    /// How many times the operator is killed.
    const KILLS: usize = 9;
    /// Kills come at least this far apart, so the operator leads again between
    /// most of them (a kill while the next one still waits for the Lease is
    /// fine too: it only prolongs the outage).
    const KILL_GAP: Duration = Duration::from_secs(14);
    const WAIT: Duration = Duration::from_secs(300);
    /// How far a recorded end may be from the deadline (as in endings.rs).
    const ON_TIME_SECS: f64 = 2.0;
    const CLEANUP: Duration = Duration::from_secs(120);

    /// When to kill, from the start of the run: one kill at a random point in
    /// each of `KILLS` equal slices of the sessions' lives (creation of the
    /// first to clean-up of the last), at least `KILL_GAP` apart.
    fn kill_schedule(rng: &mut StdRng) -> Vec<Duration> {
        let span = CREATE_EVERY * SESSIONS as u32
            + Duration::from_secs(TIMEOUT_SECS)
            + Duration::from_secs(3);
        let slice = span / KILLS as u32;
        let room = slice.saturating_sub(KILL_GAP);
        (0..KILLS)
            .map(|i| slice * i as u32 + KILL_GAP / 2 + room.mul_f64(rng.random::<f64>()))
            .collect()
    }

    /// The seed of the kill schedule: `PORTHOLE_FAULT_SEED`, or a fresh one.
    fn seed() -> Result<u64> {
        match std::env::var("PORTHOLE_FAULT_SEED") {
            Ok(text) => text.parse().context("PORTHOLE_FAULT_SEED is not a u64"),
            Err(_) => Ok(rand::rng().random()),
        }
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

    /// Where the sessions' lives stood when a kill came.
    #[derive(Debug, Default, serde::Serialize)]
    struct Stages {
        /// Seconds since the first session was created.
        at_secs: f64,
        created: usize,
        /// Created, no URL yet (no status, or Pending).
        starting: usize,
        /// Ready or Connected.
        open: usize,
        /// Within 5 s of their deadline, either side.
        expiring: usize,
        /// Ended, with their proxy pod not yet deleted.
        cleaning_up: usize,
        ended: usize,
    }

    async fn stages(
        sessions: &Api<ConsoleSession>,
        pods: &Api<Pod>,
        selector: &str,
        at_secs: f64,
    ) -> Result<Stages> {
        let with_pod: BTreeSet<String> = pods
            .list(&ListParams::default().labels(selector))
            .await?
            .into_iter()
            .filter_map(|p| p.metadata.labels?.remove(labels::SESSION))
            .collect();
        let now = Timestamp::now();
        let mut stages = Stages {
            at_secs,
            ..Stages::default()
        };
        for session in sessions.list(&ListParams::default()).await? {
            let name = session.metadata.name.clone().unwrap_or_default();
            let status = session.status.unwrap_or_default();
            stages.created += 1;
            match status.phase {
                Some(phase) if phase.is_final() => {
                    stages.ended += 1;
                    stages.cleaning_up += usize::from(with_pod.contains(&name));
                }
                Some(phase) if phase.is_open() => stages.open += 1,
                _ => stages.starting += 1,
            }
            if let Some(deadline) = status.expires_at {
                let off = deadline.0.duration_until(now).as_secs_f64();
                stages.expiring += usize::from(off.abs() <= 5.0);
            }
        }
        Ok(stages)
    }

    /// Creates the sessions, one every `CREATE_EVERY`, each with the same
    /// lifetime: deadlines follow one another as creations did.
    async fn create_sessions(client: Client, ns: String, hypervisor: String) -> Result<()> {
        let sessions: Api<ConsoleSession> = Api::namespaced(client, &ns);
        let mut every = tokio::time::interval(CREATE_EVERY);
        for i in 0..SESSIONS {
            every.tick().await;
            let session: ConsoleSession = serde_json::from_value(json!({
                "apiVersion": "porthole.dev/v1alpha1",
                "kind": "ConsoleSession",
                "metadata": {"name": format!("s{i:03}"), "namespace": ns},
                // No VM listens on 5930: nobody connects, and the proxy ends
                // each session at its deadline without dialling.
                "spec": {"hypervisor": hypervisor, "vm": {"port": 5930},
                         "timeout": format!("{TIMEOUT_SECS}s")},
            }))?;
            sessions
                .create(&PostParams::default(), &session)
                .await
                .with_context(|| format!("creating session s{i:03}"))?;
        }
        Ok(())
    }

    fn ended(session: &ConsoleSession) -> bool {
        session
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(SessionPhase::is_final)
    }

    #[tokio::test]
    async fn killing_the_operator_at_random_during_100_lifecycles_loses_no_session_and_leaves_nothing_behind()
    -> Result<()> {
        let seed = seed()?;
        eprintln!("kill schedule seed: {seed} (PORTHOLE_FAULT_SEED={seed} replays it)");
        let schedule = kill_schedule(&mut StdRng::seed_from_u64(seed));
        eprintln!("kills at {schedule:.1?} after the first session");

        let client = client().await?;
        let ns = TestNamespace::create(&client, "restarts").await?;
        let hv = TestHypervisor::vnc("restarts").await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        // The proxy pods of this namespace's sessions, in porthole's namespace.
        let pods: Api<Pod> = children_api(&client);
        let selector = format!("{}={}", labels::SESSION_NAMESPACE, ns.name);

        let seen = PodsSeen::default();
        let recorder = seen.clone();
        let watch = tokio::spawn(
            watcher(pods.clone(), watcher::Config::default().labels(&selector))
                .applied_objects()
                .try_for_each(move |pod| {
                    recorder.record(&pod);
                    async { Ok(()) }
                }),
        );

        let started = Instant::now();
        let creator = tokio::spawn(create_sessions(
            client.clone(),
            ns.name.clone(),
            hv.name.clone(),
        ));
        let mut kills = Vec::new();
        let mut killed = 0;
        for at in schedule {
            // Sleeping is the point here: the fault comes at a random moment.
            tokio::time::sleep_until(started + at).await;
            let stage =
                stages(&sessions, &pods, &selector, started.elapsed().as_secs_f64()).await?;
            let pods_killed = kill_operator().await?;
            eprintln!("killed {pods_killed} operator pod(s) at {stage:?}");
            killed += pods_killed;
            kills.push(stage);
        }
        creator.await??;

        eventually(WAIT, &format!("all {SESSIONS} sessions to end"), || async {
            let list = sessions.list(&ListParams::default()).await?;
            Ok((list.items.len() == SESSIONS && list.iter().all(ended)).then_some(()))
        })
        .await?;

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
        let orphans = orphans_after(&client, &ns.name, CLEANUP).await?;

        // Exactly one proxy pod per session, ever.
        watch.abort();
        let seen = seen.snapshot();
        let duplicated: Vec<_> = seen.iter().filter(|(_, uids)| uids.len() > 1).collect();
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!("{SESSIONS} lifecycles in {elapsed:.0}s");

        record_figures(&json!({
            "test": "killing_the_operator_at_random_during_100_lifecycles_loses_no_session_and_leaves_nothing_behind",
            "fault": "operator pod force-deleted at random moments (no graceful shutdown, Lease not released)",
            "outcome": "every session Expired within 2 s of its deadline, one proxy pod each, nothing left",
            "seed": seed,
            "sessions_run": SESSIONS,
            "faults_injected": killed,
            "kills": kills,
            "sessions_lost": lost.len(),
            "orphans_left": orphans,
            "duplicate_pods": duplicated.len(),
            "seconds": elapsed.round(),
        }))?;
        ensure!(
            killed >= KILLS,
            "only {killed} of {KILLS} kills found an operator pod"
        );
        ensure!(
            lost.is_empty(),
            "sessions that did not expire on time: {lost:?}"
        );
        ensure!(
            orphans == 0,
            "{orphans} pods, services, secrets or network policies left behind"
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
