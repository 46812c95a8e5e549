//! The report's control-plane part (items 6-7): its verdict lines, why a
//! target was missed (from the run's own figures, metrics and logs), and its
//! section.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{KIB_PER_MIB, Verdict, table, verdict};
use crate::results::{ApplyToReady, ControlPlane, OperatorSample, Scale, SessionTiming, TestBed};
use crate::stats::{Summary, percentile, sorted};

/// The targets for the operator.
pub mod targets {
    /// `kubectl apply` to Ready, median, seconds (real containers).
    pub const APPLY_TO_READY_P50_S: f64 = 2.0;
    /// 1,000 sessions: the operator's peak RSS, MiB.
    pub const SCALE_RSS_MIB: f64 = 100.0;
    /// 1,000 sessions: all Ready within, seconds from the first apply.
    pub const SCALE_ALL_READY_S: f64 = 60.0;
    /// 1,000 sessions: |status.endedAt - status.expiresAt|, at most, seconds.
    pub const EXPIRY_S: f64 = 1.0;
}

/// Percentiles of one stage over sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub p50: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let s = sorted(values);
        Some(Self {
            p50: percentile(&s, 50.0)?,
            p95: percentile(&s, 95.0)?,
            min: *s.first()?,
            max: *s.last()?,
            n: s.len(),
        })
    }
}

/// One stage of every session's way to Ready (`None` where a milestone was
/// not seen).
fn stage(timings: &[SessionTiming], f: impl Fn(&SessionTiming) -> Option<f64>) -> Option<Spread> {
    Spread::of(&timings.iter().filter_map(f).collect::<Vec<_>>())
}

fn between(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / KIB_PER_MIB
}

/// A verdict on a single figure with its own description.
fn single(target: String, value: Option<f64>, limit: f64, unit: &str, measured: String) -> Verdict {
    let summary = value.map(|v| Summary {
        median: v,
        min: v,
        max: v,
        n: 1,
    });
    let mut v = verdict(&target, summary, limit, unit, false);
    if value.is_some() {
        v.measured = measured;
    } else {
        v.detail = "not measured: see section 6–7".into();
    }
    v
}

fn sessions(n: usize) -> String {
    if n >= 1000 {
        format!("{},{:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}

/// The operator samples of a scale run, with figures over spans of it.
struct Samples<'a>(&'a [OperatorSample]);

impl Samples<'_> {
    fn peak_hwm_kib(&self) -> Option<u64> {
        self.0.iter().map(|s| s.hwm_kib.max(s.rss_kib)).max()
    }

    fn idle(&self) -> Option<&OperatorSample> {
        self.0.first()
    }

    /// The first sample at or after `t`.
    fn at(&self, t: f64) -> Option<&OperatorSample> {
        self.0.iter().find(|s| s.t_s >= t)
    }

    /// CPU seconds between `from` and `to` (the samples nearest inside).
    fn cpu_between(&self, from: f64, to: f64) -> Option<(f64, f64)> {
        let a = self.0.iter().find(|s| s.t_s >= from)?;
        let b = self.0.iter().rev().find(|s| s.t_s <= to)?;
        (b.t_s > a.t_s).then_some((b.cpu_s - a.cpu_s, b.t_s - a.t_s))
    }

    /// The busiest second: CPU share of one core.
    fn busiest(&self) -> Option<(f64, f64)> {
        self.0
            .windows(2)
            .filter(|w| w[1].t_s > w[0].t_s && w[0].t_s >= 0.0)
            .map(|w| ((w[1].cpu_s - w[0].cpu_s) / (w[1].t_s - w[0].t_s), w[1].t_s))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }
}

/// Seconds from the first apply to the first and last deadline.
fn deadlines(s: &Scale) -> Option<(f64, f64)> {
    let since = |t: &str| {
        let t = t.parse::<k8s_openapi::jiff::Timestamp>().ok()?;
        Some(t.as_millisecond() as f64 / 1000.0 - s.first_apply_unix_s)
    };
    Some((since(&s.first_expires_at)?, since(&s.last_expires_at)?))
}

/// A counter's growth during the run; after a restart the counters began
/// again at zero, so the final value is all there is.
fn metric_delta(s: &Scale, name: &str) -> f64 {
    let after = s.metrics_after.get(name).copied().unwrap_or(0.0);
    if s.operator_restarts > 0 {
        return after;
    }
    after - s.metrics_before.get(name).copied().unwrap_or(0.0)
}

/// Where in the run `t` (seconds from the first apply) falls.
fn phase_at(s: &Scale, t: f64) -> &'static str {
    let (first_deadline, _) = deadlines(s).unwrap_or((f64::INFINITY, f64::INFINITY));
    if t >= first_deadline {
        "while the sessions expired and were cleaned up"
    } else if s.all_ready_s.is_some_and(|ready| t >= ready) {
        "while all sessions were Ready"
    } else {
        "while the sessions were starting"
    }
}

/// The most API-server connections the operator held at once, and when.
fn peak_connections(s: &Scale) -> Option<(u32, f64)> {
    s.samples
        .iter()
        .filter_map(|x| Some((x.api_connections?, x.t_s)))
        .max_by_key(|(n, _)| *n)
}

/// The operator's restarts, in words (empty when none).
fn restarts_in_words(s: &Scale) -> String {
    if s.operator_restarts == 0 {
        return String::new();
    }
    let at: Vec<String> = s
        .operator_restarted_at_s
        .iter()
        .map(|t| format!("{t:.0} s"))
        .collect();
    let why = s.lost_leadership.first().map_or(String::new(), |line| {
        let reason = line.split_once("error=").map_or(line.as_str(), |(_, r)| r);
        format!(" after it lost its leadership Lease (“{reason}”)")
    });
    let crowd = peak_connections(s).map_or(String::new(), |(n, _)| {
        let relay = if n >= 1024 {
            ", more than the node agent's relay accepts at once per Service (1,024), so \
             further connections waited un-accepted"
        } else {
            ""
        };
        format!(
            " Its Lease renewals share its one client, and so the API server, with its \
             reconciles: up to {n} connections at once{relay}."
        )
    });
    format!(
        " The operator restarted {} time(s), noticed at {} after the first apply,{why}; \
         a new process lists everything again and must first win the Lease.{crowd}",
        s.operator_restarts,
        at.join(", ")
    )
}

/// Reconcile errors by category during the run.
fn reconcile_errors(s: &Scale) -> BTreeMap<String, f64> {
    s.metrics_after
        .keys()
        .filter(|k| k.starts_with("porthole_operator_reconcile_errors_total"))
        .map(|k| {
            let category = k
                .split_once("category=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or("", |(c, _)| c)
                .to_string();
            (category, metric_delta(s, k))
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// The reconcile-duration histogram's quantile, as the upper bound of the
/// bucket it falls in.
fn reconcile_quantile(s: &Scale, q: f64) -> Option<f64> {
    let prefix = "porthole_operator_reconcile_duration_seconds_bucket{le=\"";
    let mut buckets: Vec<(f64, f64)> = s
        .metrics_after
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, metric_delta(s, k)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(bound, _)| *bound)
}

/// A reconcile-time quantile in words: `up to 0.256 s`, or `over 8.192 s`
/// past the last finite bucket.
fn reconcile_bound(s: &Scale, q: f64) -> String {
    match reconcile_quantile(s, q) {
        Some(bound) if bound.is_finite() => format!("up to {bound:.3} s"),
        Some(_) => {
            let last = s
                .metrics_after
                .keys()
                .filter_map(|k| {
                    k.strip_prefix("porthole_operator_reconcile_duration_seconds_bucket{le=\"")?
                        .strip_suffix("\"}")?
                        .parse::<f64>()
                        .ok()
                        .filter(|b| b.is_finite())
                })
                .fold(0.0, f64::max);
            format!("over {last:.3} s")
        }
        None => "–".into(),
    }
}

fn cpu_limit(bed: &TestBed) -> String {
    let get = |k: &str| {
        bed.operator_limits
            .iter()
            .find(|(key, _)| key == k)
            .map_or("none".to_string(), |(_, v)| v.clone())
    };
    format!("CPU {}, memory {}", get("cpu"), get("memory"))
}

/// The control plane's verdict lines, each with why it was missed (if it was).
pub fn verdicts(cp: Option<&ControlPlane>) -> Vec<(Verdict, Option<String>)> {
    use targets::*;
    let apply = cp.and_then(|c| c.apply_to_ready.as_ref());
    let scale = cp.and_then(|c| c.scale.as_ref());
    let mut out = Vec::new();

    let ready = apply.and_then(|a| stage(&a.timings, |t| t.ready_s));
    let v = single(
        format!(
            "`kubectl apply` to Ready p50 ≤ {APPLY_TO_READY_P50_S} s ({} sessions, real proxy containers)",
            apply.map_or(50, |a| a.sessions)
        ),
        ready.map(|r| r.p50),
        APPLY_TO_READY_P50_S,
        " s",
        ready.map_or_else(String::new, |r| {
            format!("p50 {:.2} s (p95 {:.2}, max {:.2})", r.p50, r.p95, r.max)
        }),
    );
    let why = (v.met == Some(false)).then(|| apply.map(why_apply).unwrap_or_default());
    out.push((v, why));

    let n = scale.map_or("1,000".into(), |s| sessions(s.sessions));
    let fake = "node agent's fake containers";
    let peak = scale.and_then(|s| Samples(&s.samples).peak_hwm_kib());
    let v = single(
        format!("{n} sessions: operator RSS ≤ {SCALE_RSS_MIB} MiB ({fake})"),
        peak.map(mib),
        SCALE_RSS_MIB,
        " MiB",
        scale.map_or_else(String::new, |s| {
            let samples = Samples(&s.samples);
            format!(
                "peak {:.1} MiB (idle {:.1}, after clean-up {:.1})",
                mib(peak.unwrap_or(0)),
                mib(samples.idle().map_or(0, |x| x.rss_kib)),
                mib(s.samples.last().map_or(0, |x| x.rss_kib)),
            )
        }),
    );
    let why = (v.met == Some(false)).then(|| scale.map(why_rss).unwrap_or_default());
    out.push((v, why));

    let all_ready = scale.map(|s| s.all_ready_s.unwrap_or(f64::INFINITY));
    let mut v = single(
        format!("{n} sessions: all Ready within {SCALE_ALL_READY_S} s ({fake})"),
        all_ready,
        SCALE_ALL_READY_S,
        " s",
        scale.map_or_else(String::new, |s| match s.all_ready_s {
            Some(t) => format!(
                "{t:.1} s (applying took {:.1} s; per session p50 {:.1} s)",
                s.apply_s,
                stage(&s.timings, |t| t.ready_s).map_or(f64::NAN, |r| r.p50)
            ),
            None => format!("{} of {} Ready", s.ready_count, s.sessions),
        }),
    );
    if let Some(s) = scale
        && s.all_ready_s.is_none()
    {
        v.detail = format!(
            "**missed**: only {} of {} sessions became Ready",
            s.ready_count, s.sessions
        );
    }
    let why = (v.met == Some(false)).then(|| scale.map(why_ready).unwrap_or_default());
    out.push((v, why));

    let ended = scale.and_then(|s| Spread::of(&s.ended_minus_expires_s));
    let seen = scale.and_then(|s| Spread::of(&s.seen_expired_minus_expires_s));
    // When the session was seen Expired, not its endedAt: an operator that
    // notices a deadline late records the deadline itself as endedAt (the
    // proxy stopped serving then), so endedAt cannot show the operator's lag.
    let worst = seen.or(ended).map(|e| e.max.abs().max(e.min.abs()));
    let v = single(
        format!("{n} sessions: expiry within {EXPIRY_S} s of status.expiresAt ({fake})"),
        worst,
        EXPIRY_S,
        " s",
        match (ended, seen) {
            (Some(e), Some(o)) => format!(
                "seen Expired − expiresAt median {:.2} s, max {:.2} (endedAt − expiresAt median {:.0} s, max {:.0})",
                o.p50, o.max, e.p50, e.max
            ),
            (Some(e), None) => format!(
                "endedAt − expiresAt median {:.0} s, min {:.0}, max {:.0}",
                e.p50, e.min, e.max
            ),
            _ => String::new(),
        },
    );
    let why = (v.met == Some(false)).then(|| scale.map(why_expiry).unwrap_or_default());
    out.push((v, why));
    out
}

fn median_stage(timings: &[SessionTiming], f: impl Fn(&SessionTiming) -> Option<f64>) -> f64 {
    stage(timings, f).map_or(f64::NAN, |s| s.p50)
}

/// One stage's duration for one session.
pub type StageOf = fn(&SessionTiming) -> Option<f64>;

fn to_pod(x: &SessionTiming) -> Option<f64> {
    x.pod_created_s
}
fn to_pod_ready(x: &SessionTiming) -> Option<f64> {
    between(x.pod_created_s, x.pod_ready_s)
}
fn to_endpoint(x: &SessionTiming) -> Option<f64> {
    between(x.pod_ready_s, x.endpoint_ready_s)
}
fn to_ready(x: &SessionTiming) -> Option<f64> {
    between(x.endpoint_ready_s, x.ready_s)
}

/// The stages of a session's way to Ready, each from the previous milestone,
/// with who works in it.
pub const STAGES: [(&str, &str, StageOf); 4] = [
    (
        "apply → proxy Pod seen",
        "the operator: validation, Secret, NetworkPolicy, Pod",
        to_pod,
    ),
    (
        "Pod seen → Pod Ready",
        "the node agent: binding, then the Pod's sandbox, container and first readiness \
         probe; with fake containers, one status write",
        to_pod_ready,
    ),
    (
        "Pod Ready → EndpointSlice ready",
        "kube-controller-manager's EndpointSlice controller",
        to_endpoint,
    ),
    (
        "EndpointSlice ready → session Ready",
        "the operator: a reconcile and its status write",
        to_ready,
    ),
];

/// Each stage's p50 and max, in words.
fn stages_in_words(t: &[SessionTiming]) -> String {
    STAGES
        .iter()
        .map(|(name, who, f)| match stage(t, f) {
            Some(x) => format!("{name} p50 {:.2} s, max {:.2} ({who})", x.p50, x.max),
            None => format!("{name} not seen ({who})"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The stage with the largest median.
fn slowest_stage(t: &[SessionTiming]) -> Option<(&'static str, &'static str, f64)> {
    STAGES
        .iter()
        .filter_map(|(name, who, f)| Some((*name, *who, stage(t, f)?.p50)))
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

fn why_apply(a: &ApplyToReady) -> String {
    let t = &a.timings;
    let slowest = slowest_stage(t).map_or(String::new(), |(name, who, p50)| {
        format!(" The slowest stage is {name} ({p50:.2} s at the median: {who}).")
    });
    format!(
        "per session: {}.{slowest} The apply request itself took {:.2} s at the median.",
        stages_in_words(t),
        median_stage(t, |x| Some(x.applied_s)),
    )
}

fn why_rss(s: &Scale) -> String {
    let samples = Samples(&s.samples);
    let at_ready = s.all_ready_s.and_then(|t| samples.at(t)).map(|x| x.rss_kib);
    let idle = samples.idle().map_or(0, |x| x.rss_kib);
    let peak = s.samples.iter().max_by_key(|x| x.rss_kib);
    let connections = peak_connections(s).map_or(String::new(), |(n, t)| {
        format!(
            " It held up to {n} connections to the API server at once (at {t:.0} s): its \
             Kubernetes client speaks HTTP/1.1, one TLS connection per request in flight, and \
             its controller runs every due reconcile at once (no concurrency limit), each with \
             its buffers and the objects it fetched."
        )
    });
    format!(
        "idle RSS was {:.1} MiB; with {} sessions Ready it was {:.1} MiB, about {:.0} KiB per \
         session (the operator caches every ConsoleSession, and the Pods, Services and \
         EndpointSlices it owns, in its watches' stores). The largest sample, {:.1} MiB, came \
         at {:.0} s, {}.{connections} Memory freed later stays with the process (the \
         allocator keeps it): {:.1} MiB after the clean-up.{}",
        mib(idle),
        s.ready_count,
        mib(at_ready.unwrap_or(0)),
        (at_ready.unwrap_or(idle) as f64 - idle as f64) / s.sessions.max(1) as f64,
        mib(peak.map_or(0, |x| x.rss_kib)),
        peak.map_or(f64::NAN, |x| x.t_s),
        peak.map_or("", |x| phase_at(s, x.t_s)),
        mib(s.samples.last().map_or(0, |x| x.rss_kib)),
        restarts_in_words(s),
    )
}

/// The operator's CPU over a span, as a share of one core.
fn cpu_share(s: &Scale, from: f64, to: f64) -> String {
    match Samples(&s.samples).cpu_between(from, to) {
        Some((cpu, wall)) if wall > 0.0 => format!(
            "{cpu:.1} CPU s in {wall:.0} s, {:.0}% of one core",
            100.0 * cpu / wall
        ),
        _ => "no samples".into(),
    }
}

fn top_warnings(s: &Scale, n: usize) -> String {
    let list: Vec<String> = s
        .operator_log
        .iter()
        .take(n)
        .map(|w| format!("{}× “{}”", w.count, w.message))
        .collect();
    if list.is_empty() {
        "No warnings in the operator's log".into()
    } else {
        format!("The operator's log: {}", list.join("; "))
    }
}

fn why_ready(s: &Scale) -> String {
    let t = &s.timings;
    let last = |f: fn(&SessionTiming) -> Option<f64>| stage(t, f).map_or(f64::NAN, |x| x.max);
    let end = s.all_ready_s.unwrap_or_else(|| last(|x| x.ready_s));
    let errors = reconcile_errors(s);
    let errors = if errors.is_empty() {
        "none failed".to_string()
    } else {
        errors
            .iter()
            .map(|(c, n)| format!("{n:.0} failed ({c})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let slowest = slowest_stage(t).map_or(String::new(), |(name, who, p50)| {
        let note = if name.contains("EndpointSlice ready") && !name.starts_with("EndpointSlice") {
            " kube-controller-manager talks to the API server through a client limited to 20 \
             requests a second with bursts of 30 (its defaults, `--kube-api-qps` and \
             `--kube-api-burst`, which the test bed keeps); its EndpointSlice controller writes \
             one slice per Service when the Service appears and again when its Pod is Ready, \
             so a thousand new Services take it on the order of a minute or more."
        } else {
            ""
        };
        format!(" The slowest stage is {name} ({p50:.1} s at the median: {who}).{note}")
    });
    let bed = bed_cpu_in_words(s);
    format!(
        "the API server took {:.1} s to accept the {} applies ({} in flight). The last proxy \
         Pod appeared at {:.1} s, the last Pod was Ready at {:.1} s, the last EndpointSlice at \
         {:.1} s, the last session at {:.1} s. Per session: {}.{slowest} Meanwhile the \
         operator used {}; it ran {:.0} reconciles in the whole run ({errors}; by its \
         histogram, the median reconcile took {}, the 95th percentile {}).{}{bed} {}.",
        s.apply_s,
        s.sessions,
        s.concurrency,
        last(|x| x.pod_created_s),
        last(|x| x.pod_ready_s),
        last(|x| x.endpoint_ready_s),
        last(|x| x.ready_s),
        stages_in_words(t),
        cpu_share(s, 0.0, end),
        metric_delta(s, "porthole_operator_reconciliations_total"),
        reconcile_bound(s, 0.5),
        reconcile_bound(s, 0.95),
        restarts_in_words(s),
        top_warnings(s, 3),
    )
}

/// The test bed's CPU during the run, in words.
fn bed_cpu_in_words(s: &Scale) -> String {
    let span = s.samples.last().map_or(0.0, |x| x.t_s);
    if s.bed_cpu_s.is_empty() || span <= 0.0 {
        return String::new();
    }
    let total: f64 = s.bed_cpu_s.iter().map(|(_, c)| c).sum();
    let parts: Vec<String> = s
        .bed_cpu_s
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.0} s"))
        .collect();
    format!(
        " The machine's {} cores gave the test bed {total:.0} CPU s in the run's {span:.0} s \
         ({:.0}% of them): {}.",
        s.bed.cpus,
        100.0 * total / (span * s.bed.cpus.max(1) as f64),
        parts.join(", ")
    )
}

fn why_expiry(s: &Scale) -> String {
    let (first, last) = deadlines(s).unwrap_or((f64::NAN, f64::NAN));
    let late = s
        .seen_expired_minus_expires_s
        .iter()
        .filter(|&&d| d > 1.0)
        .count();
    let end = last + s.all_expired_after_deadline_s.unwrap_or(0.0);
    let connections = s
        .samples
        .iter()
        .filter(|x| x.t_s >= first && x.t_s <= end + 1.0)
        .filter_map(|x| x.api_connections)
        .max()
        .map_or(String::new(), |n| {
            format!(" It held up to {n} connections to the API server meanwhile.")
        });
    format!(
        "the operator wakes each session at its deadline, then writes the final status, records \
         an Event and deletes the children (Pod, Service, Secret, NetworkPolicy, Ingress) one \
         request after another. The {} deadlines fell within {:.0} s of one another, so about \
         {:.0} such reconciles were due each second; {late} sessions were seen Expired more than \
         1 s late, the last {:.1} s after the last deadline. Over that span the \
         operator used {}, so it waited on the API server rather than computed.{connections}{} \
         {}.",
        s.sessions,
        last - first,
        s.sessions as f64 / (last - first).max(1.0),
        s.all_expired_after_deadline_s.unwrap_or(f64::NAN),
        cpu_share(s, first, end),
        restarts_in_words(s),
        top_warnings(s, 3),
    )
}

fn bed_line(bed: &TestBed) -> String {
    let settle = match bed.settle_s {
        Some(waited) => format!(
            "Measuring began once the operator had led for {:.0} s without interruption (the \
             driver waited {waited:.0} s for that after the install",
            bed.settle_hold_s
        ),
        None => format!(
            "The operator never led for {:.0} s without interruption within the driver's \
             patience; it measured anyway (",
            bed.settle_hold_s
        ),
    };
    let restarts = match bed.operator_restarts_before {
        0 => ")".to_string(),
        n => format!("; the operator's container had restarted {n} times by then)"),
    };
    format!(
        "Run of {} ({:.0} s), commit {}, Kubernetes {}, node agent mode `{}`, operator image \
         `{}` (limits: {}); load average before / after: {:?} / {:?} on {} cores. \
         {settle}{restarts}.",
        bed.started_at,
        bed.duration_s,
        bed.commit,
        bed.kubernetes,
        bed.node_agent_mode,
        bed.operator_image,
        cpu_limit(bed),
        bed.load_before,
        bed.load_after,
        bed.cpus,
    )
}

fn spread_row(label: &str, s: Option<Spread>) -> Vec<String> {
    match s {
        Some(s) => vec![
            label.into(),
            format!("{:.2}", s.p50),
            format!("{:.2}", s.p95),
            format!("{:.2}", s.min),
            format!("{:.2}", s.max),
            s.n.to_string(),
        ],
        None => vec![
            label.into(),
            "–".into(),
            "–".into(),
            "–".into(),
            "–".into(),
            "0".into(),
        ],
    }
}

fn stages_table(out: &mut String, t: &[SessionTiming]) {
    let mut rows = vec![spread_row(
        "apply request returned",
        stage(t, |x| Some(x.applied_s)),
    )];
    for (name, who, f) in STAGES {
        rows.push(spread_row(&format!("{name} ({who})"), stage(t, f)));
    }
    rows.push(spread_row(
        "**apply → session Ready**",
        stage(t, |x| x.ready_s),
    ));
    table(
        out,
        &["stage", "p50 s", "p95 s", "min s", "max s", "sessions"],
        &rows,
        true,
    );
}

fn failures(out: &mut String, list: &[String]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "Failures ({}):\n", list.len());
    for f in list.iter().take(20) {
        let _ = writeln!(out, "* {f}");
    }
    if list.len() > 20 {
        let _ = writeln!(
            out,
            "* … and {} more (all in the results file)",
            list.len() - 20
        );
    }
    out.push('\n');
}

/// Section 6–7.
pub fn section(out: &mut String, cp: Option<&ControlPlane>) {
    let _ = writeln!(out, "## 6–7. Control plane (Kubernetes test bed)\n");
    let apply = cp.and_then(|c| c.apply_to_ready.as_ref());
    let scale = cp.and_then(|c| c.scale.as_ref());
    if apply.is_none() && scale.is_none() {
        let _ = writeln!(
            out,
            "Not measured yet: `make bench` (or `BENCH_ONLY=controlplane make bench`) runs it \
             on the test bed.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "On the test bed of `make cluster-up` (a real kube-apiserver, etcd and \
         kube-controller-manager, and porthole's node agent as kubelet), with porthole \
         installed by its Helm chart (`make images install`: the release images, one operator \
         replica). `bench/bench.sh` starts a fresh test bed for each part. The driver \
         (`porthole-bench controlplane`) applies ConsoleSessions with kube-rs by server-side \
         apply (what `kubectl apply --server-side` sends) and notes when its watches (the \
         sessions; the Pods, Services, Secrets and EndpointSlices with the session label) \
         deliver each change, so every time below includes the watch's delivery. Nothing waits by sleeping.\n"
    );

    if let Some(a) = apply {
        let _ = writeln!(
            out,
            "### 6. `kubectl apply` to Ready ({} sessions, real proxy containers)\n",
            a.sessions
        );
        if a.bed.quick {
            let _ = writeln!(out, "> **Smoke run** (`BENCH_QUICK=1`): do not quote.\n");
        }
        let _ = writeln!(out, "{}\n", bed_line(&a.bed));
        let _ = writeln!(
            out,
            "{} sessions on the bench's VNC Hypervisor, applied {} (`spec.timeout` far \
             away); the node agent starts each real proxy Pod with podman (sandbox, then the \
             proxy container; its readiness probe runs every second). Per session, from just \
             before its apply request:\n",
            a.sessions,
            if a.concurrency == 1 {
                "one after another, each once the previous one was Ready".to_string()
            } else {
                format!("{} at a time", a.concurrency)
            }
        );
        stages_table(out, &a.timings);
        failures(out, &a.failures);
    }

    if let Some(s) = scale {
        let _ = writeln!(
            out,
            "### 7. {} sessions at once (the node agent's fake containers)\n",
            sessions(s.sessions)
        );
        let _ = writeln!(
            out,
            "> **Fake containers.** This part ran with the node agent's `--fake-containers` \
             (node agent mode: `{}`): the proxy Pods were **not started**. The agent reported \
             each one Running and Ready at an address of its own in 10.89.0.0/16, so that its \
             Service's EndpointSlice became ready, and removed it at once when it was deleted. \
             The operator ran for real, in its container, with its chart's limits. With no \
             proxy behind them, the operator's reads of each proxy's viewers failed at once \
             (counted below), and it kept no long poll per session open: with real proxies it \
             would hold one per open session. And since no proxy ends its session at the \
             deadline, every expiry below is the operator's own timer.\n",
            s.bed.node_agent_mode
        );
        if s.bed.quick {
            let _ = writeln!(out, "> **Smoke run** (`BENCH_QUICK=1`): do not quote.\n");
        }
        let _ = writeln!(out, "{}\n", bed_line(&s.bed));
        let _ = writeln!(
            out,
            "{} sessions with `spec.timeout: {}` (long enough for all to be Ready before the \
             first deadline), applied with {} requests in flight; then watched until all were \
             Ready, all Expired, and no Pod, Service or Secret with the session label was left. \
             The operator's process ({}) was sampled every second from `/proc/PID/stat` \
             (utime + stime) and `/proc/PID/status` (VmRSS, VmHWM).\n",
            sessions(s.sessions),
            s.session_timeout,
            s.concurrency,
            s.operator_found_by
        );
        let samples = Samples(&s.samples);
        let (first_deadline, last_deadline) = deadlines(s).unwrap_or((f64::NAN, f64::NAN));
        let ended = Spread::of(&s.ended_minus_expires_s);
        let seen = Spread::of(&s.seen_expired_minus_expires_s);
        let spread_text = |x: Option<Spread>, d: usize| {
            x.map_or("–".into(), |x| {
                format!(
                    "median {:.d$} s, min {:.d$}, max {:.d$} ({} sessions)",
                    x.p50,
                    x.min,
                    x.max,
                    x.n,
                    d = d
                )
            })
        };
        let stage_text = |x: Option<Spread>| {
            x.map_or("–".into(), |x| {
                format!("p50 {:.2} s, p95 {:.2}, max {:.2}", x.p50, x.p95, x.max)
            })
        };
        let t = &s.timings;
        let mut rows = vec![
            vec![
                "all applied (from the first request)".into(),
                format!("{:.1} s", s.apply_s),
            ],
            vec![
                "**all Ready** (from the first apply)".into(),
                match s.all_ready_s {
                    Some(r) => format!("**{r:.1} s**"),
                    None => format!("never: {} of {} Ready", s.ready_count, s.sessions),
                },
            ],
            vec![
                "per session: apply → Ready".into(),
                stage_text(stage(t, |x| x.ready_s)),
            ],
            vec![
                "deadlines (`status.expiresAt`)".into(),
                format!(
                    "{} to {} ({:.0} s apart)",
                    s.first_expires_at,
                    s.last_expires_at,
                    last_deadline - first_deadline
                ),
            ],
            vec![
                "**all Expired**, after the last deadline".into(),
                s.all_expired_after_deadline_s.map_or_else(
                    || format!("never: {} of {} Expired", s.expired_count, s.sessions),
                    |x| format!("**{x:.1} s**"),
                ),
            ],
            vec![
                "**all cleaned up** (no Pod, Service, Secret left), after the last deadline".into(),
                match (s.cleaned_up_after_deadline_s, s.cleaned_up_after_expired_s) {
                    (Some(a), Some(b)) => format!("**{a:.1} s** ({b:.1} s after all were Expired)"),
                    (Some(a), None) => format!("**{a:.1} s**"),
                    _ => "never (see failures)".into(),
                },
            ],
            vec![
                "most children at once".into(),
                format!(
                    "{} Pods, {} Services, {} Secrets",
                    s.peak_children[0], s.peak_children[1], s.peak_children[2]
                ),
            ],
            vec![
                "**expiry accuracy**: `status.endedAt` − `status.expiresAt` (whole seconds)".into(),
                spread_text(ended, 0),
            ],
            vec![
                "phase Expired seen by the watch − `status.expiresAt`".into(),
                spread_text(seen, 2),
            ],
        ];
        for (i, (name, who, f)) in STAGES.iter().enumerate() {
            rows.insert(
                3 + i,
                vec![
                    format!("per session: {name} ({who})"),
                    stage_text(stage(t, f)),
                ],
            );
        }
        table(out, &["", ""], &rows, false);
        let _ = writeln!(
            out,
            "Both timestamps in the status have whole-second precision (as every Kubernetes \
             time), and `expiresAt` is the creation time, itself whole seconds, plus the \
             timeout; so an `endedAt − expiresAt` of 0 means the session ended less than a \
             second after its deadline. The watch's figure is finer, and later: it includes \
             writing the status and delivering the change.\n"
        );

        let _ = writeln!(out, "The operator:\n");
        let idle = samples.idle();
        let cpu = |from: f64, to: f64| cpu_share(s, from, to);
        let ready_at = s.all_ready_s.unwrap_or(f64::NAN);
        let cleaned_at = last_deadline + s.cleaned_up_after_deadline_s.unwrap_or(f64::NAN);
        let reconciles = metric_delta(s, "porthole_operator_reconciliations_total");
        let errors = reconcile_errors(s);
        let rows = vec![
            vec!["limits (chart defaults)".into(), cpu_limit(&s.bed)],
            vec![
                "RSS idle, before the first apply".into(),
                idle.map_or("–".into(), |x| format!("{:.1} MiB", mib(x.rss_kib))),
            ],
            vec![
                "**peak RSS** (VmHWM)".into(),
                samples
                    .peak_hwm_kib()
                    .map_or("–".into(), |x| format!("**{:.1} MiB**", mib(x))),
            ],
            vec![
                "RSS when all were Ready".into(),
                samples
                    .at(ready_at)
                    .map_or("–".into(), |x| format!("{:.1} MiB", mib(x.rss_kib))),
            ],
            vec![
                "RSS after the clean-up".into(),
                s.samples
                    .last()
                    .map_or("–".into(), |x| format!("{:.1} MiB", mib(x.rss_kib))),
            ],
            vec!["CPU, first apply → all Ready".into(), cpu(0.0, ready_at)],
            vec![
                "CPU, all Ready → first deadline".into(),
                cpu(ready_at, first_deadline),
            ],
            vec![
                "CPU, first deadline → all cleaned up".into(),
                cpu(first_deadline, cleaned_at),
            ],
            vec![
                "busiest second".into(),
                samples.busiest().map_or("–".into(), |(share, t)| {
                    format!("{:.0}% of one core (at {t:.0} s)", 100.0 * share)
                }),
            ],
            vec![
                "reconciles (`porthole_operator_reconciliations_total`)".into(),
                format!(
                    "{reconciles:.0}; {}; reconcile time p50 {}, p95 {} (by the \
                     histogram's buckets)",
                    if errors.is_empty() {
                        "no errors".to_string()
                    } else {
                        errors
                            .iter()
                            .map(|(c, n)| format!("{n:.0} errors ({c})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    reconcile_bound(s, 0.5),
                    reconcile_bound(s, 0.95),
                ),
            ],
            vec![
                "most connections to the API server at once".into(),
                peak_connections(s).map_or("–".into(), |(n, t)| {
                    format!(
                        "{n} (at {t:.0} s; connections from pods to {}, which only the \
                         operator opens here)",
                        s.api_address
                    )
                }),
            ],
            vec![
                "process restarts during the run".into(),
                if s.operator_restarts == 0 {
                    "0".into()
                } else {
                    format!(
                        "**{}** (noticed at {} s); {}",
                        s.operator_restarts,
                        s.operator_restarted_at_s
                            .iter()
                            .map(|t| format!("{t:.0}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.lost_leadership.first().map_or(
                            "see the operator's log".into(),
                            |l| format!(
                                "its log: `{}`",
                                l.split_once(" INFO ").map_or(l.as_str(), |(_, r)| r)
                            )
                        )
                    )
                },
            ],
        ];
        table(out, &["", ""], &rows, false);
        if !s.bed_cpu_s.is_empty() {
            let _ = writeln!(
                out,
                "CPU seconds of each process from the first apply to the end of the clean-up \
                 ({} cores; the operator's only when it did not restart):\n",
                s.bed.cpus
            );
            table(
                out,
                &["process", "CPU s"],
                &s.bed_cpu_s
                    .iter()
                    .map(|(name, cpu)| vec![name.clone(), format!("{cpu:.1}")])
                    .collect::<Vec<_>>(),
                true,
            );
        }
        for (who, log) in [
            ("operator", &s.operator_log),
            ("node agent", &s.node_agent_log),
        ] {
            if log.is_empty() {
                let _ = writeln!(out, "No warnings or errors in the {who}'s log.\n");
                continue;
            }
            let _ = writeln!(
                out,
                "Warnings and errors in the {who}'s log during the run (digits blurred to #):\n"
            );
            table(
                out,
                &["level", "count", "message"],
                &log.iter()
                    .take(8)
                    .map(|w| {
                        vec![
                            w.level.clone(),
                            w.count.to_string(),
                            w.message.replace('|', "\\|"),
                        ]
                    })
                    .collect::<Vec<_>>(),
                false,
            );
        }
        failures(out, &s.failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(ready: f64) -> SessionTiming {
        SessionTiming {
            name: "s".into(),
            applied_s: 0.01,
            pod_created_s: Some(0.1),
            pod_ready_s: Some(ready - 0.2),
            endpoint_ready_s: Some(ready - 0.1),
            ready_s: Some(ready),
        }
    }

    #[test]
    fn spreads_have_percentiles() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!((s.p50, s.min, s.max, s.n), (3.0, 1.0, 5.0, 5));
        assert!((s.p95 - 4.8).abs() < 1e-9);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn unmeasured_parts_have_no_verdict() {
        let v = verdicts(None);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|(v, why)| v.met.is_none() && why.is_none()));
    }

    #[test]
    fn a_slow_apply_is_missed_and_explained() {
        let cp = ControlPlane {
            apply_to_ready: Some(ApplyToReady {
                sessions: 3,
                timings: vec![timing(2.5), timing(3.0), timing(2.8)],
                ..ApplyToReady::default()
            }),
            scale: None,
        };
        let v = verdicts(Some(&cp));
        let (apply, why) = &v[0];
        assert_eq!(apply.met, Some(false));
        assert!(
            apply.measured.starts_with("p50 2.80 s"),
            "{}",
            apply.measured
        );
        assert!(apply.detail.contains("missed"));
        let why = why.as_ref().unwrap();
        assert!(why.contains("node agent"), "{why}");
        assert!(
            why.contains("The slowest stage is Pod seen → Pod Ready"),
            "{why}"
        );
    }

    #[test]
    fn scale_verdicts() {
        let samples = vec![
            OperatorSample {
                t_s: -1.0,
                rss_kib: 10 * 1024,
                hwm_kib: 10 * 1024,
                cpu_s: 1.0,
                api_connections: None,
            },
            OperatorSample {
                t_s: 10.0,
                rss_kib: 40 * 1024,
                hwm_kib: 50 * 1024,
                cpu_s: 5.0,
                api_connections: Some(3),
            },
        ];
        let scale = Scale {
            sessions: 1000,
            all_ready_s: None,
            ready_count: 990,
            samples,
            ended_minus_expires_s: vec![0.0, 0.0, 2.0],
            seen_expired_minus_expires_s: vec![0.3, 0.5, 2.4],
            ..Scale::default()
        };
        let cp = ControlPlane {
            apply_to_ready: None,
            scale: Some(scale),
        };
        let v = verdicts(Some(&cp));
        assert_eq!(v[1].0.met, Some(true));
        assert!(v[1].0.measured.starts_with("peak 50.0 MiB"));
        assert_eq!(v[2].0.met, Some(false));
        assert!(v[2].0.detail.contains("990 of 1000"));
        assert_eq!(v[3].0.met, Some(false));
        assert!(v[3].0.target.starts_with("1,000 sessions"));
        let mut out = String::new();
        section(&mut out, Some(&cp));
        assert!(out.contains("Fake containers"));
        assert!(out.contains("never: 990 of 1000 Ready"));
    }
}
