//! `docs/benchmarks.md`, written from the results alone: a table per figure
//! with the contenders side by side, and a verdict per target.

pub mod controlplane;

use std::fmt::Write as _;

use crate::contender::Id;
use crate::results::{BulkSample, LatencySample, Results};
use crate::stats::{Summary, over_by_percent};

/// The issue's targets for porthole-proxy (standalone, defaults, plain).
pub mod targets {
    /// CPU per GiB at most this times the socat relay's.
    pub const CPU_VS_RELAY: f64 = 1.15;
    /// CPU per GiB at most this times websockify's.
    pub const CPU_VS_WEBSOCKIFY: f64 = 0.8;
    /// Peak RSS under load, MiB.
    pub const RSS_MIB: f64 = 8.0;
    /// Small-message p99 over the relay's, µs.
    pub const ADDED_P99_US: f64 = 100.0;
    /// Process start to accepting, ms.
    pub const STARTUP_MS: f64 = 20.0;
}

/// Where the plots are, relative to the report.
pub const PLOTS: [(&str, &str); 5] = [
    ("bulk-cpu.png", "CPU seconds per GiB, bulk transfer"),
    ("bulk-throughput.png", "Bulk throughput"),
    ("latency.png", "Small-message round trips"),
    ("memory.png", "Memory"),
    ("startup.png", "Start-up to accepting"),
];

const KIB_PER_MIB: f64 = 1024.0;

/// The figures, computed from the samples.
pub struct Figures<'a> {
    r: &'a Results,
}

impl<'a> Figures<'a> {
    pub fn new(r: &'a Results) -> Self {
        Self { r }
    }

    fn bulk(&self, id: Id, tls: bool) -> impl Iterator<Item = &'a BulkSample> {
        self.r
            .bulk
            .iter()
            .filter(move |s| s.contender == id && s.tls == tls)
    }

    fn latency(&self, id: Id, tls: bool) -> impl Iterator<Item = &'a LatencySample> {
        self.r
            .latency
            .iter()
            .filter(move |s| s.contender == id && s.tls == tls)
    }

    pub fn bulk_summary(
        &self,
        id: Id,
        tls: bool,
        f: impl Fn(&BulkSample) -> f64,
    ) -> Option<Summary> {
        Summary::of(&self.bulk(id, tls).map(f).collect::<Vec<_>>())
    }

    pub fn latency_summary(
        &self,
        id: Id,
        tls: bool,
        f: impl Fn(&LatencySample) -> f64,
    ) -> Option<Summary> {
        Summary::of(&self.latency(id, tls).map(f).collect::<Vec<_>>())
    }

    /// `a`'s CPU per GiB over `b`'s, paired round by round.
    pub fn cpu_ratio(&self, a: Id, b: Id, tls: bool) -> Option<Summary> {
        let ratios: Vec<f64> = self
            .bulk(a, tls)
            .filter_map(|x| {
                let y = self.bulk(b, tls).find(|y| y.round == x.round)?;
                (y.cpu_s_per_gib > 0.0).then(|| x.cpu_s_per_gib / y.cpu_s_per_gib)
            })
            .collect();
        Summary::of(&ratios)
    }

    /// `a`'s latency percentile minus `b`'s, paired round by round, in µs.
    pub fn latency_difference(
        &self,
        a: Id,
        b: Id,
        tls: bool,
        f: impl Fn(&LatencySample) -> f64,
    ) -> Option<Summary> {
        let differences: Vec<f64> = self
            .latency(a, tls)
            .filter_map(|x| {
                let y = self.latency(b, tls).find(|y| y.round == x.round)?;
                Some(f(x) - f(y))
            })
            .collect();
        Summary::of(&differences)
    }

    /// Peak RSS (sum of the processes' VmHWM) per plain load round, in MiB.
    pub fn peak_rss(&self, id: Id, tls: bool) -> Option<Summary> {
        let peaks: Vec<f64> = self
            .bulk(id, tls)
            .map(|b| {
                let after_latency = self
                    .latency(id, tls)
                    .find(|l| l.round == b.round)
                    .map_or(0, |l| l.after.hwm_kib);
                b.after.hwm_kib.max(after_latency) as f64 / KIB_PER_MIB
            })
            .collect();
        Summary::of(&peaks)
    }

    pub fn idle_rss(&self, id: Id) -> Option<Summary> {
        self.startup(id, |s| s.idle.rss_kib as f64 / KIB_PER_MIB)
    }

    pub fn startup(
        &self,
        id: Id,
        f: impl Fn(&crate::results::StartupSample) -> f64,
    ) -> Option<Summary> {
        let samples: Vec<f64> = self
            .r
            .startup
            .iter()
            .filter(|s| s.contender == id)
            .map(f)
            .collect();
        Summary::of(&samples)
    }
}

/// `median (min–max)`.
fn cell(s: Option<Summary>, decimals: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.d$} ({:.d$}–{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => "–".into(),
    }
}

/// `1.23×` with its range.
fn times(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max),
        None => "–".into(),
    }
}

fn signed(s: Option<Summary>, decimals: usize) -> String {
    match s {
        Some(s) => format!(
            "{:+.d$} ({:+.d$} to {:+.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => "–".into(),
    }
}

/// A markdown table; the columns after the first are right-aligned when
/// `numbers`.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], numbers: bool) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i > 0 && numbers { "--:" } else { "---" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

/// A target's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
    pub detail: String,
}

/// Checks `value` (a median) against an upper `limit`. A `difference` (to
/// another contender) can be negative, so its room is told in units, not in
/// percent.
pub fn verdict(
    target: &str,
    value: Option<Summary>,
    limit: f64,
    unit: &str,
    difference: bool,
) -> Verdict {
    let Some(s) = value else {
        return Verdict {
            target: target.into(),
            measured: "not measured".into(),
            met: None,
            detail: "not measured in this run (see Failures)".into(),
        };
    };
    let measured = format!("{:.2}{unit} (min {:.2}, max {:.2})", s.median, s.min, s.max);
    if s.median <= limit {
        let room = if difference {
            format!("{:.2}{unit} under the limit", limit - s.median)
        } else {
            format!("{:.0}% under the limit", -over_by_percent(s.median, limit))
        };
        Verdict {
            target: target.into(),
            measured,
            met: Some(true),
            detail: format!("met, {room}"),
        }
    } else {
        Verdict {
            target: target.into(),
            measured,
            met: Some(false),
            detail: format!(
                "**missed** by {:.0}% ({:.2}{unit} over the limit)",
                over_by_percent(s.median, limit),
                s.median - limit
            ),
        }
    }
}

const CONTENDERS: [Id; 6] = [
    Id::Porthole,
    Id::PortholeOneWorker,
    Id::PortholeFeatures,
    Id::Websockify,
    Id::Socat,
    Id::Direct,
];
const TLS_CONTENDERS: [Id; 3] = [Id::Porthole, Id::Websockify, Id::Socat];

/// A size as people write it: `1 GiB`, `128 MiB`.
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

impl Figures<'_> {
    /// The five targets' verdicts.
    pub fn verdicts(&self) -> Vec<Verdict> {
        use targets::*;
        vec![
            verdict(
                &format!("CPU per GiB ≤ {CPU_VS_RELAY}× the socat relay's"),
                self.cpu_ratio(Id::Porthole, Id::Socat, false),
                CPU_VS_RELAY,
                "×",
                false,
            ),
            verdict(
                &format!("CPU per GiB ≤ {CPU_VS_WEBSOCKIFY}× websockify's"),
                self.cpu_ratio(Id::Porthole, Id::Websockify, false),
                CPU_VS_WEBSOCKIFY,
                "×",
                false,
            ),
            verdict(
                &format!("peak RSS under load ≤ {RSS_MIB} MiB"),
                self.peak_rss(Id::Porthole, false),
                RSS_MIB,
                " MiB",
                false,
            ),
            verdict(
                &format!("small-message p99 ≤ {ADDED_P99_US} µs over the relay's"),
                self.latency_difference(Id::Porthole, Id::Socat, false, |l| l.latencies.p99_us),
                ADDED_P99_US,
                " µs",
                true,
            ),
            verdict(
                &format!("start-up to accepting ≤ {STARTUP_MS} ms"),
                self.startup(Id::Porthole, |s| s.ready_ms),
                STARTUP_MS,
                " ms",
                false,
            ),
        ]
    }

    /// Why a missed target was missed, from the measurements themselves.
    fn why(&self, index: usize) -> String {
        let per_gib = |id: Id, f: fn(&BulkSample) -> f64| {
            self.bulk_summary(id, false, |s| f(s) / (s.bytes as f64 / (1u64 << 30) as f64))
                .map_or(f64::NAN, |s| s.median)
        };
        let cpu = |id: Id| per_gib(id, |s| s.user_s + s.sys_s);
        let switches = |id: Id| per_gib(id, |s| s.switches as f64) / 1000.0;
        let one_worker = || {
            let ratio = self.cpu_ratio(Id::PortholeOneWorker, Id::Socat, false)?;
            let versus = self.cpu_ratio(Id::PortholeOneWorker, Id::Websockify, false)?;
            let meets = ratio.median <= targets::CPU_VS_RELAY
                && versus.median <= targets::CPU_VS_WEBSOCKIFY;
            Some(format!(
                " With one runtime worker thread instead of one per core (the \"{}\" row) it \
                 spends {:.3} s/GiB, {:.2}× the relay's and {:.2}× websockify's, and switches \
                 {:.1}k times per GiB: the hand-offs between the runtime's worker threads \
                 (wake-ups and context switches, which the kernel accounts as system time) {}.",
                Id::PortholeOneWorker.name(),
                cpu(Id::PortholeOneWorker),
                ratio.median,
                versus.median,
                switches(Id::PortholeOneWorker),
                if meets {
                    "make the difference: that meets both CPU targets"
                } else {
                    "are part of the difference"
                }
            ))
        };
        let profile = if self.r.profiles.is_empty() {
            ""
        } else {
            " The profiles below show where the time goes."
        };
        match index {
            0 | 1 => {
                let other = if index == 0 {
                    Id::Socat
                } else {
                    Id::Websockify
                };
                let (pu, ps) = (
                    per_gib(Id::Porthole, |s| s.user_s),
                    per_gib(Id::Porthole, |s| s.sys_s),
                );
                let (ou, os) = (per_gib(other, |s| s.user_s), per_gib(other, |s| s.sys_s));
                let mut why = format!(
                    "porthole-proxy spends {pu:.3} s/GiB in user space and {ps:.3} s/GiB in the \
                     kernel, {} {ou:.3} and {os:.3}: a difference of {:+.3} s/GiB of user and \
                     {:+.3} s/GiB of system time. Its threads switch context {:.1}k times per \
                     GiB, the relay's {:.1}k.",
                    other.name(),
                    pu - ou,
                    ps - os,
                    switches(Id::Porthole),
                    switches(Id::Socat),
                );
                if index == 1 {
                    let floor = self
                        .cpu_ratio(Id::Socat, Id::Websockify, false)
                        .map_or(f64::NAN, |s| s.median);
                    let _ = write!(
                        why,
                        " Moving bytes from one socket to another costs every contender about \
                         the same kernel time; websockify's Python adds little to it, once per \
                         64 KiB chunk. Even the relay floor is {floor:.2}× websockify's, so this \
                         target asks porthole-proxy to come within {:.2}× of the relay.",
                        targets::CPU_VS_WEBSOCKIFY / floor
                    );
                }
                why + &one_worker().unwrap_or_default() + profile
            }
            2 => {
                let idle = self.idle_rss(Id::Porthole).map_or(f64::NAN, |s| s.median);
                let peak = self
                    .peak_rss(Id::Porthole, false)
                    .map_or(f64::NAN, |s| s.median);
                format!(
                    "idle RSS is {idle:.1} MiB; one connection under bulk load adds {:.1} MiB \
                     (buffers and the runtime's per-thread allocator arenas).",
                    peak - idle
                )
            }
            3 => {
                let diff = |f: fn(&LatencySample) -> f64| {
                    self.latency_difference(Id::Porthole, Id::Socat, false, f)
                        .map_or(f64::NAN, |s| s.median)
                };
                let p50 = diff(|l| l.latencies.p50_us);
                let p99 = diff(|l| l.latencies.p99_us);
                let direct = self
                    .latency_summary(Id::Direct, false, |l| {
                        l.latencies.p99_us - l.latencies.p50_us
                    })
                    .map_or(f64::NAN, |s| s.median);
                if p50.abs() < p99 / 2.0 {
                    format!(
                        "the medians differ by only {p50:+.1} µs, so the p99 gap ({p99:+.1} µs) \
                         comes from occasional stalls, not from each message's cost. On a busy \
                         machine those are mostly scheduling delays: even the direct baseline's \
                         p99 is {direct:.1} µs over its median. Compare with a run on a quiet \
                         machine before changing the proxy."
                    )
                } else {
                    format!(
                        "the median round trip is {p50:+.1} µs over the relay's too, so the \
                         cost is in every message rather than in occasional stalls."
                    )
                }
            }
            _ => {
                let idle = self.idle_rss(Id::Porthole).map_or(f64::NAN, |s| s.median);
                format!(
                    "the start-up includes the dynamic loader, the runtime's threads and parsing \
                     the arguments; idle RSS at that point is {idle:.1} MiB."
                )
            }
        }
    }
}

/// Hand-written findings, shown as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Analyses<'a> {
    /// `bench/analysis.md`, after the verdicts.
    pub data_plane: Option<&'a str>,
    /// `bench/analysis-controlplane.md`, at the end of section 6–7.
    pub control_plane: Option<&'a str>,
}

/// The whole report.
pub fn render(r: &Results, analyses: Analyses, plots: &[&str]) -> String {
    let analysis = analyses.data_plane;
    let f = Figures::new(r);
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(out, "# Benchmarks: the data plane and the control plane\n");
    let _ = writeln!(
        out,
        "Written by `make bench` (the driver is `bench/`) from the run of {} ({:.0} s); every \
         sample is in [`bench/results.json`](../bench/results.json). Do not edit: run `make \
         bench` again. Benchmarks are not tests: no number here fails CI.\n",
        r.started_at, r.duration_s
    );
    if r.quick {
        let _ = writeln!(
            out,
            "> **Smoke run** (`BENCH_QUICK=1`): small sizes and few rounds. The figures below \
             only show that the bench works; do not quote them.\n"
        );
    }

    // Verdicts.
    let verdicts = f.verdicts();
    let control_plane = controlplane::verdicts(r.control_plane.as_ref());
    let _ = writeln!(out, "## Verdicts\n");
    let _ = writeln!(
        out,
        "The first five lines: porthole-proxy (standalone, defaults, plain WebSocket) against \
         the issue's targets. Ratios and differences are paired: each round's figure against \
         the other contender's in the same round; the median over rounds, with min and max. \
         The last four: the operator on the Kubernetes test bed (section 6–7), from runs of \
         their own; the {} lines ran with the node agent's **fake containers** (proxy Pods \
         reported Running and Ready, never started).\n",
        control_plane
            .get(1)
            .map_or("1,000-session".into(), |(v, _)| {
                format!("{}-session", v.target.split(' ').next().unwrap_or("1,000"))
            })
    );
    table(
        &mut out,
        &["target", "measured", "verdict"],
        &verdicts
            .iter()
            .chain(control_plane.iter().map(|(v, _)| v))
            .map(|v| vec![v.target.clone(), v.measured.clone(), v.detail.clone()])
            .collect::<Vec<_>>(),
        false,
    );
    let missed: Vec<usize> = (0..verdicts.len())
        .filter(|&i| verdicts[i].met == Some(false))
        .collect();
    let missed_control_plane: Vec<&(Verdict, Option<String>)> = control_plane
        .iter()
        .filter(|(v, _)| v.met == Some(false))
        .collect();
    let missed_data_plane = !missed.is_empty();
    if missed_data_plane || !missed_control_plane.is_empty() {
        let _ = writeln!(out, "Why the missed targets were missed:\n");
        for i in missed {
            let _ = writeln!(out, "* **{}**: {}", verdicts[i].target, f.why(i));
        }
        for (v, why) in missed_control_plane {
            let _ = writeln!(
                out,
                "* **{}**: {}",
                v.target,
                why.as_deref().unwrap_or_default()
            );
        }
        out.push('\n');
    }
    if missed_data_plane {
        for error in &r.profile_errors {
            let _ = writeln!(out, "No profile of {error}\n");
        }
        for profile in &r.profiles {
            let _ = writeln!(
                out,
                "Profile of {} during one extra run ({}; `{}`){}:\n",
                profile.contender.name(),
                profile.command,
                profile.tool,
                if profile.note.is_empty() {
                    String::new()
                } else {
                    format!("; {}", profile.note)
                }
            );
            let _ = writeln!(out, "```text\n{}\n```\n", profile.top.join("\n"));
        }
    }
    if let Some(analysis) = analysis {
        let _ = writeln!(out, "{}\n", analysis.trim());
    }

    // Machine.
    let m = &r.machine;
    let _ = writeln!(out, "## Machine\n");
    table(
        &mut out,
        &["", ""],
        &[
            vec!["cores".into(), m.cpus.to_string()],
            vec!["CPU".into(), m.cpu_model.clone()],
            vec!["kernel".into(), m.kernel.clone()],
            vec![
                "memory".into(),
                format!("{:.1} GiB", m.memory_kib as f64 / (1024.0 * 1024.0)),
            ],
            vec![
                "load average (1, 5, 15 min) before / after".into(),
                format!("{:?} / {:?}", m.load_before, m.load_after),
            ],
        ],
        false,
    );
    let _ = writeln!(
        out,
        "A load average near or above the core count means other work shared the machine; \
         alternating the contenders round by round spreads that noise over all of them.\n"
    );

    // Method.
    let _ = writeln!(out, "## Method\n");
    let _ = writeln!(
        out,
        "All on loopback. The driver (Rust, tokio) is the viewer and the VNC-server side at \
         once: its target sends bulk data or echoes, and its client reads with tokio-tungstenite \
         (WebSocket, for the proxies) or plain sockets (socat, and the direct baseline), over \
         rustls for the TLS runs. Each contender runs as its own process, started afresh for \
         each round and each of plain/TLS; rounds alternate the contenders in rotated order.\n"
    );
    let _ = writeln!(
        out,
        "* **Bulk**: the target sends {} of pseudo-random bytes to the viewer; wall time from \
         the request to the last byte. CPU is the contender's user + system time from \
         `/proc/PID/stat` (utime + stime of the process and its children; {:.0} ticks a second) \
         over the same span; context switches likewise, from each thread's \
         `/proc/PID/task/TID/status`. Each contender's transfer is cut into {} turns, taken in \
         rotation with the others'.\n\
         * **Small messages**: {} round trips of a {}-byte message viewer → target → viewer, \
         each sent once the previous echo arrived, after {} warm-up round trips; in {} turns \
         taken in rotation, like the bulk data.\n\
         * **Memory**: VmRSS (idle, after start-up) and VmHWM (peak, after the bulk and the \
         small-message runs) from `/proc/PID/status`, summed over the contender's processes. \
         Forked children share pages with their parent, so for websockify and socat this sum \
         counts shared pages twice; the Pss column divides them fairly.\n\
         * **Start-up**: from just before the spawn until a TCP connection to its port succeeds \
         (probing every 0.1 ms), {} times each.\n\
         * **TLS**: every contender serves the same self-signed ECDSA certificate; the client \
         offers only {} (TLS 1.3), so all encrypt alike.\n\
         * {} rounds; each figure is the median over rounds, with min and max.\n",
        size(s.bulk_bytes),
        s.ticks_per_second,
        crate::run::BULK_SLICES,
        s.messages,
        s.message_bytes,
        s.warmup,
        crate::run::LATENCY_SLICES,
        s.startup_rounds,
        s.tls_suite,
        s.rounds,
    );
    let _ = writeln!(
        out,
        "Contenders, each with its fastest sensible settings:\n"
    );
    table(
        &mut out,
        &[
            "contender",
            "version",
            "command (plain; TLS adds certificate options)",
            "notes",
        ],
        &r.contenders
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.version.clone(),
                    c.command
                        .as_deref()
                        .map_or("–".into(), |c| format!("`{c}`")),
                    match &c.error {
                        Some(e) => format!("**could not run**: {e}"),
                        None => c.notes.join("; "),
                    },
                ]
            })
            .collect::<Vec<_>>(),
        false,
    );

    // 1. Bulk.
    let _ = writeln!(
        out,
        "## 1. Bulk transfer, server to viewer ({})\n",
        size(s.bulk_bytes)
    );
    bulk_table(&mut out, &f, &CONTENDERS, false);
    let _ = writeln!(
        out,
        "CPU columns: median (min–max) over rounds. The +rec +token variant moves {} a round; \
         its figures are per GiB all the same. The direct baseline has no process of its own: \
         its throughput is the client's and target's ceiling.\n",
        size(s.features_bulk_bytes)
    );

    // 2. Latency.
    let _ = writeln!(
        out,
        "## 2. Small messages viewer → server → viewer ({} bytes, echo)\n",
        s.message_bytes
    );
    latency_table(&mut out, &f, &CONTENDERS, false);

    // 3. Memory.
    let _ = writeln!(out, "## 3. Memory\n");
    table(
        &mut out,
        &[
            "contender",
            "idle RSS MiB",
            "peak RSS under load MiB",
            "Pss after bulk MiB",
            "processes under load",
        ],
        &CONTENDERS
            .iter()
            .filter(|id| id.has_process())
            .map(|&id| {
                vec![
                    id.name().into(),
                    cell(f.idle_rss(id), 1),
                    cell(f.peak_rss(id, false), 1),
                    cell(
                        f.bulk_summary(id, false, |b| b.after.pss_kib as f64 / KIB_PER_MIB),
                        1,
                    ),
                    cell(f.bulk_summary(id, false, |b| b.after.processes as f64), 0),
                ]
            })
            .collect::<Vec<_>>(),
        true,
    );

    // 4. Start-up.
    let _ = writeln!(
        out,
        "## 4. Start-up: process start to accepting connections\n"
    );
    table(
        &mut out,
        &["contender", "ms"],
        &CONTENDERS
            .iter()
            .filter(|id| id.starts_alone())
            .map(|&id| vec![id.name().into(), cell(f.startup(id, |s| s.ready_ms), 2)])
            .collect::<Vec<_>>(),
        true,
    );

    // 5. TLS.
    let _ = writeln!(
        out,
        "## 5. The same over TLS (wss; socat terminates TLS and relays TCP)\n"
    );
    let suites: std::collections::BTreeSet<&str> = r
        .bulk
        .iter()
        .filter_map(|b| b.cipher_suite.as_deref())
        .collect();
    if !suites.is_empty() {
        let _ = writeln!(
            out,
            "Negotiated: {}.\n",
            suites.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(out, "### Bulk\n");
    bulk_table(&mut out, &f, &TLS_CONTENDERS, true);
    let _ = writeln!(out, "### Small messages\n");
    latency_table(&mut out, &f, &TLS_CONTENDERS, true);
    let _ = writeln!(out, "### Memory\n");
    table(
        &mut out,
        &["contender", "peak RSS under TLS load MiB"],
        &TLS_CONTENDERS
            .iter()
            .map(|&id| vec![id.name().into(), cell(f.peak_rss(id, true), 1)])
            .collect::<Vec<_>>(),
        true,
    );

    // 6-7.
    controlplane::section(&mut out, r.control_plane.as_ref());
    if let Some(analysis) = analyses.control_plane
        && r.control_plane.is_some()
    {
        let _ = writeln!(out, "{}\n", analysis.trim());
    }

    // Plots.
    if !plots.is_empty() {
        let _ = writeln!(out, "## Plots\n");
        for (file, title) in PLOTS.iter().filter(|(file, _)| plots.contains(file)) {
            let _ = writeln!(out, "![{title}](benchmarks/{file})\n");
        }
    }

    // Failures.
    let _ = writeln!(out, "## Failures\n");
    let unavailable: Vec<_> = r.contenders.iter().filter(|c| c.error.is_some()).collect();
    if r.failures.is_empty() && unavailable.is_empty() {
        let _ = writeln!(out, "None: every contender ran every round.");
    } else {
        for c in unavailable {
            let _ = writeln!(
                out,
                "* {} could not run at all: {}",
                c.name,
                c.error.as_deref().unwrap_or_default()
            );
        }
        for x in &r.failures {
            let _ = writeln!(
                out,
                "* round {}, {} ({}): {}",
                x.round + 1,
                x.contender.name(),
                x.phase,
                x.error
            );
        }
    }
    out
}

fn bulk_table(out: &mut String, f: &Figures, ids: &[Id], tls: bool) {
    let gib = |b: &BulkSample| b.bytes as f64 / (1u64 << 30) as f64;
    table(
        out,
        &[
            "contender",
            "wall s per GiB",
            "GiB/s",
            "CPU s/GiB",
            "user s/GiB",
            "sys s/GiB",
            "switches k/GiB",
            "CPU vs socat",
            "CPU vs websockify",
        ],
        &ids.iter()
            .map(|&id| {
                let cpu = |v: Option<Summary>| if id.has_process() { v } else { None };
                vec![
                    id.name().into(),
                    cell(f.bulk_summary(id, tls, |b| b.wall_s / gib(b)), 3),
                    cell(f.bulk_summary(id, tls, |b| b.gib_per_s), 2),
                    cell(cpu(f.bulk_summary(id, tls, |b| b.cpu_s_per_gib)), 3),
                    cell(cpu(f.bulk_summary(id, tls, |b| b.user_s / gib(b))), 3),
                    cell(cpu(f.bulk_summary(id, tls, |b| b.sys_s / gib(b))), 3),
                    cell(
                        cpu(f.bulk_summary(id, tls, |b| b.switches as f64 / gib(b) / 1000.0)),
                        1,
                    ),
                    times(cpu(f.cpu_ratio(id, Id::Socat, tls))),
                    times(cpu(f.cpu_ratio(id, Id::Websockify, tls))),
                ]
            })
            .collect::<Vec<_>>(),
        true,
    );
}

fn latency_table(out: &mut String, f: &Figures, ids: &[Id], tls: bool) {
    table(
        out,
        &[
            "contender",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "p50 − relay µs",
            "p99 − relay µs",
        ],
        &ids.iter()
            .map(|&id| {
                vec![
                    id.name().into(),
                    cell(f.latency_summary(id, tls, |l| l.latencies.p50_us), 1),
                    cell(f.latency_summary(id, tls, |l| l.latencies.p99_us), 1),
                    cell(f.latency_summary(id, tls, |l| l.latencies.p999_us), 1),
                    signed(
                        f.latency_difference(id, Id::Socat, tls, |l| l.latencies.p50_us),
                        1,
                    ),
                    signed(
                        f.latency_difference(id, Id::Socat, tls, |l| l.latencies.p99_us),
                        1,
                    ),
                ]
            })
            .collect::<Vec<_>>(),
        true,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64, min: f64, max: f64) -> Option<Summary> {
        Some(Summary {
            median,
            min,
            max,
            n: 3,
        })
    }

    #[test]
    fn a_met_target_says_how_much_room_is_left() {
        let v = verdict("x", s(6.0, 5.5, 7.0), 8.0, " MiB", false);
        assert_eq!(v.met, Some(true));
        assert_eq!(v.detail, "met, 25% under the limit");
        assert_eq!(v.measured, "6.00 MiB (min 5.50, max 7.00)");
    }

    #[test]
    fn a_missed_target_says_by_how_much() {
        let v = verdict("x", s(1.38, 1.2, 1.5), 1.15, "×", false);
        assert_eq!(v.met, Some(false));
        assert_eq!(v.detail, "**missed** by 20% (0.23× over the limit)");
    }

    #[test]
    fn a_difference_says_its_room_in_units() {
        let v = verdict("x", s(-20.0, -30.0, 5.0), 100.0, " µs", true);
        assert_eq!(v.detail, "met, 120.00 µs under the limit");
    }

    #[test]
    fn an_unmeasured_target_is_neither() {
        let v = verdict("x", None, 1.0, "", false);
        assert_eq!(v.met, None);
        assert!(v.detail.contains("not measured"));
    }

    #[test]
    fn cells_show_median_and_range() {
        assert_eq!(cell(s(1.0, 0.5, 2.25), 2), "1.00 (0.50–2.25)");
        assert_eq!(cell(None, 2), "–");
        assert_eq!(times(s(0.5, 0.4, 0.6)), "0.50× (0.40–0.60)");
        assert_eq!(signed(s(3.0, -1.0, 5.0), 1), "+3.0 (-1.0 to +5.0)");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(128 << 20), "128 MiB");
    }
}
