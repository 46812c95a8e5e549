//! The two control-plane measurements.
//!
//! * **Apply to Ready** (item 6): sessions applied one after another (with
//!   `concurrency` 1, each once the previous is Ready), real proxy containers;
//!   each session's time from just before its apply request until its
//!   `Ready` condition is seen `True`, with its pod's milestones between.
//! * **Scale** (item 7): every session applied at once (`concurrency`
//!   requests in flight), then watched until all are Ready, all Expired, and
//!   none of their Pods, Services and Secrets is left; the operator's memory
//!   and CPU sampled every second throughout.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use tokio::time::Instant;

use super::cluster::{self, Seen, Watches};
use super::operator::{self, Operator};
use crate::procfs;
use crate::results::{ApplyToReady, OperatorSample, Scale, SessionTiming, TestBed};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub kubeconfig: PathBuf,
    /// The test bed's state directory (`.e2e`): the node agent's mode and log.
    pub state: PathBuf,
    pub sessions: usize,
    pub concurrency: usize,
    /// Each session's `spec.timeout`.
    pub session_timeout: String,
    /// Item 6: how long to wait for one session before giving up on it.
    pub give_up: Duration,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Seconds from `from` to `to`, when `to` is there, to the millisecond.
fn since(from: Instant, to: Option<Instant>) -> Option<f64> {
    to.map(|to| ms(to.saturating_duration_since(from).as_secs_f64()))
}

/// Rounded to the millisecond (the results file stays readable).
fn ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

async fn bed(client: &Client, plan: &Plan) -> TestBed {
    let kubernetes = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let mode = std::fs::read_to_string(plan.state.join("node-agent.mode"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|_| "normal".into());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    TestBed {
        started_at: rfc3339_now(),
        quick: plan.quick,
        kubernetes,
        node_agent_mode: mode,
        commit,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before: crate::run::load_average(),
        ..TestBed::default()
    }
}

/// How long the operator must have led without interruption before measuring.
pub const SETTLE_HOLD: Duration = Duration::from_secs(30);
const SETTLE_LIMIT: Duration = Duration::from_secs(240);

/// Waits for a steady operator (see [`operator::settle`]) and finds it again
/// (it may have restarted meanwhile); notes the wait in `bed`.
async fn steady_operator(client: &Client, bed: &mut TestBed) -> Result<Operator> {
    let started = Instant::now();
    let mut found = operator::find(client).await?;
    let deadline = started + SETTLE_LIMIT;
    let mut settled = false;
    while !settled && Instant::now() < deadline {
        say!(
            "waiting for the operator ({}) to lead for {} s without interruption",
            found.pod,
            SETTLE_HOLD.as_secs()
        );
        settled = operator::settle(
            client,
            &found,
            SETTLE_HOLD,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
        // Its pod may have been replaced, or its container restarted.
        found = operator::find(client).await?;
    }
    bed.settle_s = settled.then(|| started.elapsed().as_secs_f64());
    bed.settle_hold_s = SETTLE_HOLD.as_secs_f64();
    bed.operator_restarts_before = found.restarts;
    bed.operator_image.clone_from(&found.image);
    bed.operator_limits.clone_from(&found.limits);
    if !settled {
        say!("the operator did not settle; measuring anyway");
    }
    Ok(found)
}

fn finish_bed(bed: &mut TestBed, started: Instant) {
    bed.finished_at = rfc3339_now();
    bed.duration_s = started.elapsed().as_secs_f64();
    bed.load_after = crate::run::load_average();
}

async fn apply(client: &Client, namespace: &str, index: usize, timeout: &str) -> Result<()> {
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), namespace);
    let name = cluster::session_name(index);
    sessions
        .patch(
            &name,
            &PatchParams::apply(cluster::MANAGER).force(),
            &Patch::Apply(&cluster::session(namespace, index, timeout)),
        )
        .await
        .with_context(|| format!("cannot apply the session {name}"))?;
    Ok(())
}

fn timing(seen: &Seen, name: &str, start: Instant, applied: Instant) -> SessionTiming {
    let pod = seen.pods.get(name);
    SessionTiming {
        name: name.to_string(),
        applied_s: ms(applied.saturating_duration_since(start).as_secs_f64()),
        pod_created_s: since(start, pod.map(|p| p.created_at)),
        pod_ready_s: since(start, pod.and_then(|p| p.ready_at)),
        endpoint_ready_s: since(start, seen.slices.get(name).and_then(|s| s.ready_at)),
        ready_s: since(start, seen.sessions.get(name).and_then(|s| s.ready_at)),
    }
}

/// Item 6.
pub async fn apply_to_ready(plan: &Plan) -> Result<ApplyToReady> {
    let started = Instant::now();
    let client = cluster::client(&plan.kubeconfig).await?;
    let mut bed = bed(&client, plan).await;
    steady_operator(&client, &mut bed).await?;
    let namespace = format!("porthole-bench-apply-{}", unix_now() as u64);
    cluster::prepare(&client, &namespace).await?;
    let watches = Watches::start(&client, &namespace).await?;
    say!(
        "apply to Ready: {} sessions, {} at a time, in {namespace} (node agent: {})",
        plan.sessions,
        plan.concurrency,
        bed.node_agent_mode
    );

    let next = AtomicUsize::new(0);
    let timings = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let worker = || async {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= plan.sessions {
                return;
            }
            let name = cluster::session_name(index);
            let start = Instant::now();
            if let Err(e) = apply(&client, &namespace, index, &plan.session_timeout).await {
                failures.lock().unwrap().push(format!("{e:#}"));
                continue;
            }
            let applied = Instant::now();
            let ready = watches
                .wait_until(plan.give_up, |s| {
                    s.sessions
                        .get(&name)
                        .is_some_and(|x| x.ready_at.is_some() || x.is_final())
                })
                .await;
            let seen = watches.seen();
            let t = timing(&seen, &name, start, applied);
            match t.ready_s {
                Some(ready_s) => say!("  {name} Ready after {ready_s:.3} s"),
                None => {
                    let state = seen
                        .sessions
                        .get(&name)
                        .map_or("never seen".into(), cluster::SessionSeen::describe);
                    let why = if ready { "ended" } else { "gave up waiting" };
                    say!("  {name} not Ready ({why}): {state}");
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{name} not Ready ({why}): {state}"));
                }
            }
            timings.lock().unwrap().push(t);
        }
    };
    futures::future::join_all((0..plan.concurrency.max(1)).map(|_| worker())).await;
    drop(watches);
    cluster::tear_down(&client, &namespace).await;
    let mut timings = timings.into_inner().unwrap();
    timings.sort_by(|a, b| a.name.cmp(&b.name));
    finish_bed(&mut bed, started);
    Ok(ApplyToReady {
        bed,
        sessions: plan.sessions,
        concurrency: plan.concurrency.max(1),
        give_up_s: plan.give_up.as_secs_f64(),
        timings,
        failures: failures.into_inner().unwrap(),
    })
}

/// Samples the operator every second until aborted; follows it if it is
/// replaced (a restart), noting when.
struct Sampler {
    samples: Arc<Mutex<Vec<OperatorSample>>>,
    restarts: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// `api`: the kubernetes Service's address, whose connections (relayed
    /// by the node agent on the host) are counted.
    fn start(client: Client, mut pid: u32, t0: Instant, api: Option<String>) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let restarts = Arc::new(Mutex::new(Vec::new()));
        let ticks = procfs::ticks_per_second();
        let task = tokio::spawn({
            let (samples, restarts) = (samples.clone(), restarts.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let t_s = ms(Instant::now().duration_since(t0).as_secs_f64());
                    match operator::sample(pid, ticks, t_s) {
                        Some(mut sample) => {
                            sample.api_connections =
                                api.as_deref().map(operator::established_connections);
                            samples.lock().unwrap().push(sample);
                        }
                        None => {
                            if let Ok(found) = operator::find(&client).await
                                && found.pid != pid
                            {
                                say!("  the operator process changed: {pid} -> {}", found.pid);
                                pid = found.pid;
                                restarts.lock().unwrap().push(t_s);
                            }
                        }
                    }
                }
            }
        });
        Self {
            samples,
            restarts,
            task,
        }
    }

    fn stop(self) -> (Vec<OperatorSample>, Vec<f64>) {
        self.task.abort();
        let samples = self.samples.lock().unwrap().clone();
        let restarts = self.restarts.lock().unwrap().clone();
        (samples, restarts)
    }
}

/// The test bed's processes, from `STATE/pids/NAME`.
const BED_PROCESSES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "node-agent",
];

/// CPU seconds so far of each test-bed process, the operator and the driver.
fn bed_cpu(state: &std::path::Path, operator_pid: u32) -> Vec<(String, f64)> {
    let ticks = procfs::ticks_per_second();
    let mut pids: Vec<(String, u32)> = BED_PROCESSES
        .iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(state.join("pids").join(name)).ok()?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect();
    pids.push(("porthole-operator".into(), operator_pid));
    pids.push(("porthole-bench (this driver)".into(), std::process::id()));
    pids.into_iter()
        .map(|(name, pid)| (name, procfs::Usage::of_tree(pid, ticks).cpu_s()))
        .collect()
}

/// The CPU each process used between two readings (the operator's over its
/// restarts is not comparable: left out when it restarted).
fn cpu_between(
    before: &[(String, f64)],
    after: &[(String, f64)],
    operator_restarted: bool,
) -> Vec<(String, f64)> {
    after
        .iter()
        .filter(|(name, _)| !(operator_restarted && name == "porthole-operator"))
        .filter_map(|(name, end)| {
            let (_, start) = before.iter().find(|(n, _)| n == name)?;
            Some((name.clone(), end - start))
        })
        .collect()
}

async fn scrape(
    operator: &Operator,
    when: &str,
    failures: &mut Vec<String>,
) -> std::collections::BTreeMap<String, f64> {
    let Some(ip) = &operator.pod_ip else {
        return Default::default();
    };
    operator::metrics(ip).await.unwrap_or_else(|e| {
        failures.push(format!(
            "could not scrape the operator's metrics {when}: {e:#}"
        ));
        Default::default()
    })
}

/// Item 7.
pub async fn scale(plan: &Plan) -> Result<Scale> {
    let started = Instant::now();
    let client = cluster::client(&plan.kubeconfig).await?;
    let mut bed = bed(&client, plan).await;
    let operator = steady_operator(&client, &mut bed).await?;
    let timeout =
        porthole_api::duration::parse(&plan.session_timeout).map_err(|e| anyhow::anyhow!("{e}"))?;
    let namespace = format!("porthole-bench-scale-{}", unix_now() as u64);
    cluster::prepare(&client, &namespace).await?;
    let watches = Watches::start(&client, &namespace).await?;
    let agent_log = plan.state.join("logs/node-agent.log");
    let agent_log_from = operator::file_length(&agent_log);
    let ticks = procfs::ticks_per_second();
    let mut failures = Vec::new();
    let metrics_before = scrape(&operator, "before", &mut failures).await;
    say!(
        "scale: {} sessions (timeout {}), {} apply requests in flight, in {namespace} (node agent: {}; operator pid {}, {})",
        plan.sessions,
        plan.session_timeout,
        plan.concurrency,
        bed.node_agent_mode,
        operator.pid,
        operator.found_by
    );

    let api = operator::api_address(&client).await;
    let operator_log_from = operator::file_length(&operator.archive(&plan.state));
    let baseline = operator::sample(operator.pid, ticks, 0.0).map(|mut b| {
        b.t_s = -1.0;
        b.api_connections = api.as_deref().map(operator::established_connections);
        b
    });
    let cpu_before = bed_cpu(&plan.state, operator.pid);
    let t0 = Instant::now();
    let t0_unix = unix_now();
    let sampler = Sampler::start(client.clone(), operator.pid, t0, api.clone());
    let unix = |at: Instant| t0_unix + at.saturating_duration_since(t0).as_secs_f64();

    // Apply every session.
    let starts: Vec<(usize, Instant, Result<Instant>)> = futures::stream::iter(0..plan.sessions)
        .map(|index| {
            let client = client.clone();
            let (namespace, timeout) = (namespace.clone(), plan.session_timeout.clone());
            async move {
                let start = Instant::now();
                let result = apply(&client, &namespace, index, &timeout).await;
                (index, start, result.map(|()| Instant::now()))
            }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await;
    let apply_s = t0.elapsed().as_secs_f64();
    let mut applied: Vec<(String, Instant, Instant)> = Vec::new();
    for (index, start, result) in starts {
        match result {
            Ok(done) => applied.push((cluster::session_name(index), start, done)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    applied.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<String> = applied.iter().map(|(n, _, _)| n.clone()).collect();
    say!("  applied {} sessions in {apply_s:.1} s", names.len());

    // Until all are Ready (or ended: a session cannot be Ready after its end).
    let settled = |s: &Seen| {
        names.iter().all(|n| {
            s.sessions
                .get(n)
                .is_some_and(|x| x.ready_at.is_some() || x.is_final())
        })
    };
    let all_ready = watches
        .wait_until(timeout + Duration::from_secs(60), settled)
        .await;
    let (all_ready_s, ready_count) = {
        let seen = watches.seen();
        let ready: Vec<Instant> = names
            .iter()
            .filter_map(|n| seen.sessions.get(n).and_then(|x| x.ready_at))
            .collect();
        let all = all_ready && ready.len() == names.len();
        (
            all.then(|| since(t0, ready.iter().max().copied()))
                .flatten(),
            ready.len(),
        )
    };
    match all_ready_s {
        Some(s) => say!("  all {ready_count} Ready after {s:.1} s"),
        None => say!("  only {ready_count} of {} Ready", names.len()),
    }

    // Until all have ended.
    let all_final = |s: &Seen| {
        names.iter().all(|n| {
            s.sessions
                .get(n)
                .is_some_and(cluster::SessionSeen::is_final)
        })
    };
    let ended = watches
        .wait_until(timeout + Duration::from_secs(600), all_final)
        .await;
    let all_final_at = Instant::now();
    if !ended {
        failures.push("not every session ended within 10 minutes of its timeout".into());
    }
    say!("  all ended: {ended}");

    // Until nothing they owned is left.
    let cleaned = watches
        .wait_until(Duration::from_secs(600), |s| s.children_left() == 0)
        .await;
    let cleaned_at = Instant::now();
    if !cleaned {
        let left = watches.seen().children_left();
        failures.push(format!(
            "{left} children left 10 minutes after the sessions ended"
        ));
    }
    say!("  cleaned up: {cleaned}");
    let (mut samples, restart_times) = sampler.stop();
    if let Some(b) = baseline {
        samples.insert(0, b);
    }
    // After a restart, the operator is another process, maybe another pod.
    let now = operator::find(&client)
        .await
        .unwrap_or_else(|_| operator.clone());
    let cpu_after = bed_cpu(&plan.state, now.pid);
    let metrics_after = scrape(&now, "after", &mut failures).await;
    // The log of every operator container that ran during the run: those
    // that ended (the node agent archives them), and the one running now.
    let mut log = operator::appended(&operator.archive(&plan.state), operator_log_from);
    if now.pod != operator.pod {
        log += &operator::appended(&now.archive(&plan.state), 0);
    }
    if let Some(id) = &now.container {
        log += &operator::container_log(id, t0_unix as u64).await?;
    }
    let operator_log = operator::digest(&log);
    let lost_leadership: Vec<String> = log
        .lines()
        .map(operator::strip_ansi)
        .filter(|l| l.contains("lost leadership"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    let node_agent_log = operator::digest(&operator::appended(&agent_log, agent_log_from));

    let (
        timings,
        ended_minus_expires_s,
        seen_expired_minus_expires_s,
        expires,
        expired_at,
        peak_children,
    ) = {
        let seen = watches.seen();
        let mut timings = Vec::new();
        let mut ended_minus_expires_s = Vec::new();
        let mut seen_expired_minus_expires_s = Vec::new();
        let mut expires = Vec::new();
        let mut expired_at = Vec::new();
        for (name, start, done) in &applied {
            timings.push(timing(&seen, name, *start, *done));
            let Some(s) = seen.sessions.get(name) else {
                continue;
            };
            if s.phase != Some(SessionPhase::Expired) {
                failures.push(format!("{name} ended otherwise: {}", s.describe()));
                continue;
            }
            let Some(expires_at) = s.expires_at else {
                continue;
            };
            let deadline = expires_at.as_millisecond() as f64 / 1000.0;
            expires.push(expires_at);
            if let Some(ended_at) = s.ended_at {
                ended_minus_expires_s.push(ended_at.as_millisecond() as f64 / 1000.0 - deadline);
            }
            if let Some(at) = s.final_at {
                seen_expired_minus_expires_s.push(ms(unix(at) - deadline));
                expired_at.push(at);
            }
        }
        let peak_children = seen.peak_children;
        (
            timings,
            ended_minus_expires_s,
            seen_expired_minus_expires_s,
            expires,
            expired_at,
            peak_children,
        )
    };
    drop(watches);
    cluster::tear_down(&client, &namespace).await;

    let last_deadline = expires
        .iter()
        .max()
        .map(|t| t.as_millisecond() as f64 / 1000.0);
    let after_deadline = |at: Instant| last_deadline.map(|d| unix(at) - d);
    let expired_count = expired_at.len();
    let everything_expired = ended && expired_count == names.len();
    finish_bed(&mut bed, started);
    Ok(Scale {
        bed,
        sessions: plan.sessions,
        session_timeout: plan.session_timeout.clone(),
        session_timeout_s: timeout.as_secs_f64(),
        concurrency: plan.concurrency.max(1),
        first_apply_unix_s: t0_unix,
        apply_s,
        all_ready_s,
        ready_count,
        timings,
        first_expires_at: expires
            .iter()
            .min()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        last_expires_at: expires
            .iter()
            .max()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        all_expired_after_deadline_s: everything_expired
            .then(|| expired_at.iter().max().and_then(|&at| after_deadline(at)))
            .flatten(),
        expired_count,
        cleaned_up_after_deadline_s: cleaned.then(|| after_deadline(cleaned_at)).flatten(),
        cleaned_up_after_expired_s: (cleaned && ended).then(|| {
            cleaned_at
                .saturating_duration_since(all_final_at)
                .as_secs_f64()
        }),
        ended_minus_expires_s,
        seen_expired_minus_expires_s,
        peak_children: [peak_children[0], peak_children[1], peak_children[2]],
        operator_pid: operator.pid,
        operator_found_by: operator.found_by.clone(),
        operator_restarts: restart_times.len(),
        operator_restarted_at_s: restart_times.clone(),
        lost_leadership,
        api_address: api.unwrap_or_default(),
        bed_cpu_s: cpu_between(&cpu_before, &cpu_after, !restart_times.is_empty()),
        samples,
        metrics_before,
        metrics_after,
        operator_log,
        node_agent_log,
        failures,
    })
}
