//! One bench run: start-up and idle memory, then rounds of bulk and
//! small-message runs, plain and over TLS, the contenders alternating.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use crate::client;
use crate::contender::{self, Id, Running, TARGET_PORT, Tools, Variant, Workdir};
use crate::procfs::{self, Usage};
use crate::results::{
    BulkSample, ContenderInfo, Failure, LatencySample, Machine, Profile, Results, SCHEMA, Settings,
    StartupSample,
};
use crate::stats::Latencies;
use crate::target;
use crate::tls::{self, Material};

const GIB: f64 = (1u64 << 30) as f64;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub bulk_bytes: u64,
    pub features_bulk_bytes: u64,
    pub messages: usize,
    pub warmup: usize,
    pub startup_rounds: usize,
    pub contenders: Vec<Id>,
    pub tools: Tools,
    pub python: Option<PathBuf>,
    pub work: PathBuf,
    pub profile: ProfileWhen,
    /// porthole-proxy with symbols for the profile (else the release binary,
    /// whose own functions then show as addresses).
    pub profile_binary: Option<PathBuf>,
}

/// When to profile porthole-proxy with `perf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileWhen {
    /// When it missed a CPU target.
    Missed,
    Always,
    Never,
}

/// The contenders in round `round`'s order: the list rotated by the round, so
/// each goes first, second, ... in turn.
pub fn order<T: Clone>(contenders: &[T], round: usize) -> Vec<T> {
    let mut order = contenders.to_vec();
    if !order.is_empty() {
        let by = round % order.len();
        order.rotate_left(by);
    }
    order
}

struct Runner {
    plan: Plan,
    work: Workdir,
    tls: Material,
    rt: Runtime,
    ticks: f64,
    results: Results,
}

/// Runs everything in `plan` and returns what was measured. Contenders that
/// fail are recorded as failures; the run goes on without them.
pub fn run(plan: Plan) -> Result<Results> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::fs::create_dir_all(&plan.work)?;
    let work = Workdir {
        dir: plan.work.canonicalize()?,
    };
    work.prepare()?;
    let tls = tls::material(&work.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(target::serve(([127, 0, 0, 1], TARGET_PORT).into()))
        .with_context(|| format!("cannot listen on port {TARGET_PORT} for the target"))?;
    let ticks = procfs::ticks_per_second();
    let results = Results {
        schema: SCHEMA,
        started_at,
        finished_at: String::new(),
        duration_s: 0.0,
        quick: plan.quick,
        machine: machine(&plan),
        settings: Settings {
            rounds: plan.rounds,
            bulk_bytes: plan.bulk_bytes,
            features_bulk_bytes: plan.features_bulk_bytes,
            messages: plan.messages,
            warmup: plan.warmup,
            startup_rounds: plan.startup_rounds,
            message_bytes: client::EVENT.len(),
            ticks_per_second: ticks,
            tls_suite: tls::SUITE.into(),
        },
        contenders: Vec::new(),
        startup: Vec::new(),
        bulk: Vec::new(),
        latency: Vec::new(),
        failures: Vec::new(),
        profiles: Vec::new(),
        profile_errors: Vec::new(),
        control_plane: None,
    };
    let mut runner = Runner {
        plan,
        work,
        tls,
        rt,
        ticks,
        results,
    };
    runner.describe_and_check();
    runner.startup_phase();
    runner.load_phase();
    runner.profile_if_needed();
    let mut results = runner.results;
    results.machine.load_after = load_average();
    results.finished_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    results.duration_s = started.elapsed().as_secs_f64();
    Ok(results)
}

impl Runner {
    fn available(&self) -> Vec<Id> {
        self.plan
            .contenders
            .iter()
            .copied()
            .filter(|&id| {
                self.results
                    .contender(id)
                    .is_some_and(|c| c.error.is_none())
            })
            .collect()
    }

    fn fail(&mut self, variant: Variant, round: usize, phase: &str, error: String) {
        say!("  {} {phase} failed: {error}", variant.name());
        self.results.failures.push(Failure {
            contender: variant.id,
            tls: variant.tls,
            round,
            phase: phase.into(),
            error,
        });
    }

    /// Records each contender's version and command lines, and starts each
    /// once: one that cannot start is left out of the rounds.
    fn describe_and_check(&mut self) {
        for &id in &self.plan.contenders.clone() {
            let plain = contender::command(id, &self.plan.tools, &self.work, None);
            let with_tls = id
                .does_tls()
                .then(|| contender::command(id, &self.plan.tools, &self.work, Some(&self.tls)))
                .flatten();
            let mut info = ContenderInfo {
                id,
                name: id.name().into(),
                version: self.version(id),
                command: plain.as_ref().map(|c| self.display(c)),
                command_tls: with_tls.as_ref().map(|c| self.display(c)),
                notes: self.notes(id),
                error: None,
            };
            if let Some(cmd) = plain {
                match contender::start(Variant { id, tls: false }, cmd, &self.work) {
                    Ok(running) => running.stop(),
                    Err(e) => info.error = Some(format!("{e:#}")),
                }
            }
            if let Some(error) = &info.error {
                say!("{} cannot run: {error}", id.name());
            }
            self.results.contenders.push(info);
        }
    }

    /// A command line for the report, its files named relative to the work
    /// directory (a temporary one).
    fn display(&self, cmd: &Command) -> String {
        let dir = format!("{}/", self.work.dir.display());
        contender::display(cmd).replace(&dir, "")
    }

    fn version(&self, id: Id) -> String {
        let tools = &self.plan.tools;
        match id {
            Id::Porthole | Id::PortholeFeatures | Id::PortholeOneWorker => {
                let version = first_line(Command::new(&tools.porthole).arg("--version"));
                let commit = first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"]));
                format!("{version} (release build, commit {commit})")
            }
            Id::Websockify => python_package(&tools.websockify, "websockify"),
            Id::Socat => {
                let out = Command::new(&tools.socat).arg("-V").output();
                let text = out.map(|o| o.stdout).unwrap_or_default();
                String::from_utf8_lossy(&text)
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("socat version "))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or("unknown")
                    .to_string()
            }
            Id::Direct => "-".into(),
        }
    }

    fn notes(&self, id: Id) -> Vec<String> {
        match id {
            Id::Porthole => vec![
                "release build (`cargo build --release`: opt-level 3, thin LTO), defaults: \
                 no recording, one fixed target, 64 KiB reads, TCP_NODELAY"
                    .into(),
            ],
            Id::PortholeFeatures => vec![format!(
                "the same binary with `--token-source` (target looked up per connection) and \
                 `--record` (every relayed chunk escaped and written to disk); its bulk runs \
                 move {} MiB instead of {} MiB, because the recording is about four times the \
                 data",
                self.plan.features_bulk_bytes >> 20,
                self.plan.bulk_bytes >> 20
            )],
            Id::PortholeOneWorker => vec![
                "the same binary and options with `TOKIO_WORKER_THREADS=1`: one runtime \
                 worker thread instead of one per core (a diagnostic, not a setting users have)"
                    .into(),
            ],
            Id::Websockify => {
                let numpy = python_package(&self.plan.tools.websockify, "numpy");
                vec![
                    format!(
                        "from PyPI in a venv on {}; numpy {numpy} is installed, which websockify \
                         uses to unmask client frames (its only accelerator: websockify ships \
                         no C extension)",
                        python_version(&self.plan.tools.websockify)
                    ),
                    "standalone mode as shipped: one forked process per connection, whose CPU \
                     and memory count with the parent's"
                        .into(),
                ]
            }
            Id::Socat => vec![
                "`-b 65536` (the proxies' 64 KiB reads; socat's default is 8 KiB) and \
                 `nodelay` on both sides; forks a process per connection; with TLS it \
                 terminates TLS (OpenSSL) and relays plain TCP"
                    .into(),
            ],
            Id::Direct => vec![
                "the bench client straight to the target: what the client and target manage \
                 with nothing in between"
                    .into(),
            ],
        }
    }

    fn start(&mut self, variant: Variant, round: usize, phase: &str) -> Option<Running> {
        let material = variant.tls.then_some(&self.tls);
        let cmd = contender::command(variant.id, &self.plan.tools, &self.work, material)?;
        match contender::start(variant, cmd, &self.work) {
            Ok(running) => Some(running),
            Err(e) => {
                self.fail(variant, round, phase, format!("{e:#}"));
                None
            }
        }
    }

    /// Start-up to accepting, and idle memory, each from a fresh process.
    fn startup_phase(&mut self) {
        let contenders: Vec<Id> = self
            .available()
            .into_iter()
            .filter(|id| id.starts_alone())
            .collect();
        say!(
            "start-up: {} rounds of {}",
            self.plan.startup_rounds,
            names(&contenders)
        );
        for round in 0..self.plan.startup_rounds {
            for id in order(&contenders, round) {
                let Some(running) = self.start(Variant { id, tls: false }, round, "start-up")
                else {
                    continue;
                };
                let ready = running.ready;
                running.settle(Duration::from_secs(2));
                // Let it finish whatever it does after listening.
                std::thread::sleep(Duration::from_millis(200));
                let idle = running.usage(self.ticks);
                running.stop();
                self.results.startup.push(StartupSample {
                    contender: id,
                    round,
                    ready_ms: ready.as_secs_f64() * 1000.0,
                    idle,
                });
            }
        }
    }

    /// Rounds of bulk and small-message runs. A round starts every contender,
    /// plain and TLS, each as its own process; then each takes its turn with a
    /// slice of the bulk data, and then of the round trips, in rotated order,
    /// so that whatever else the machine does falls on all of them alike.
    fn load_phase(&mut self) {
        let contenders = self.available();
        let variants: Vec<Variant> = contenders
            .iter()
            .map(|&id| Variant { id, tls: false })
            .chain(
                contenders
                    .iter()
                    .filter(|id| id.does_tls())
                    .map(|&id| Variant { id, tls: true }),
            )
            .collect();
        say!(
            "load: {} rounds of {} (bulk {} MiB in {BULK_SLICES} turns, {} round trips in \
             {LATENCY_SLICES} turns)",
            self.plan.rounds,
            names(&contenders),
            self.plan.bulk_bytes >> 20,
            self.plan.messages
        );
        for round in 0..self.plan.rounds {
            say!("round {}/{}", round + 1, self.plan.rounds);
            self.load_round(&order(&variants, round), round);
        }
    }

    fn load_round(&mut self, variants: &[Variant], round: usize) {
        let mut live = Vec::new();
        for &variant in variants {
            let running = if variant.id.has_process() {
                match self.start(variant, round, "start") {
                    Some(running) => Some(running),
                    None => continue,
                }
            } else {
                None
            };
            live.push(Live {
                variant,
                running,
                link: None,
                bulk: BulkSample {
                    contender: variant.id,
                    tls: variant.tls,
                    round,
                    bytes: 0,
                    wall_s: 0.0,
                    user_s: 0.0,
                    sys_s: 0.0,
                    switches: 0,
                    cpu_s_per_gib: 0.0,
                    gib_per_s: 0.0,
                    after: Usage::default(),
                    cipher_suite: None,
                },
                round_trips: Vec::new(),
            });
        }
        for l in &live {
            if let Some(running) = &l.running {
                running.settle(Duration::from_secs(2));
            }
        }
        let mut failures = Vec::new();

        // Bulk.
        for l in &mut live {
            match self.connect(l.variant) {
                Ok((link, negotiated)) => {
                    l.link = Some(link);
                    l.bulk.cipher_suite = negotiated.cipher_suite;
                }
                Err(e) => failures.push(failure(l.variant, round, "bulk", e)),
            }
        }
        for turn in 0..BULK_SLICES {
            for l in rotated(&mut live, turn) {
                let Some(link) = &mut l.link else { continue };
                let bytes = self.bulk_bytes(l.variant.id) / BULK_SLICES as u64;
                let before = self.usage(l.running.as_ref());
                let transfer = self.rt.block_on(client::bulk(link, bytes));
                let after = self.usage(l.running.as_ref());
                match transfer {
                    Ok(wall) => {
                        l.bulk.bytes += bytes;
                        l.bulk.wall_s += wall.as_secs_f64();
                        l.bulk.user_s += after.user_s - before.user_s;
                        l.bulk.sys_s += after.sys_s - before.sys_s;
                        l.bulk.switches += after.switches.saturating_sub(before.switches);
                    }
                    Err(e) => {
                        failures.push(failure(l.variant, round, "bulk", e));
                        l.link = None;
                    }
                }
            }
        }
        for l in &mut live {
            let Some(link) = l.link.take() else { continue };
            // Before closing: websockify's and socat's child for this
            // connection is still there.
            l.bulk.after = self.usage(l.running.as_ref());
            self.rt.block_on(link.close());
            let b = &mut l.bulk;
            let gib = b.bytes as f64 / GIB;
            b.cpu_s_per_gib = (b.user_s + b.sys_s) / gib;
            b.gib_per_s = gib / b.wall_s;
            say!(
                "  {:<34} bulk {:>6.2} GiB/s {:>7.3} CPU s/GiB",
                l.variant.name(),
                b.gib_per_s,
                b.cpu_s_per_gib
            );
            self.results.bulk.push(b.clone());
        }

        // Small messages.
        for l in &mut live {
            let warmup = self.plan.warmup;
            let opened = self.connect(l.variant).and_then(|(mut link, _)| {
                self.rt.block_on(async {
                    client::start_echo(&mut link).await?;
                    client::round_trips(&mut link, warmup).await?;
                    anyhow::Ok(link)
                })
            });
            match opened {
                Ok(link) => l.link = Some(link),
                Err(e) => failures.push(failure(l.variant, round, "latency", e)),
            }
        }
        let per_turn = self.plan.messages.div_ceil(LATENCY_SLICES);
        for turn in 0..LATENCY_SLICES {
            for l in rotated(&mut live, turn) {
                let Some(link) = &mut l.link else { continue };
                match self.rt.block_on(client::round_trips(link, per_turn)) {
                    Ok(samples) => l.round_trips.extend(samples),
                    Err(e) => {
                        failures.push(failure(l.variant, round, "latency", e));
                        l.link = None;
                    }
                }
            }
        }
        for l in &mut live {
            let Some(link) = l.link.take() else { continue };
            let after = self.usage(l.running.as_ref());
            self.rt.block_on(link.close());
            let Some(latencies) = Latencies::from_nanos(&l.round_trips) else {
                continue;
            };
            say!(
                "  {:<34} echo p50 {:>7.1} us  p99 {:>7.1} us",
                l.variant.name(),
                latencies.p50_us,
                latencies.p99_us
            );
            self.results.latency.push(LatencySample {
                contender: l.variant.id,
                tls: l.variant.tls,
                round,
                latencies,
                after,
            });
        }

        for l in live {
            if let Some(mut running) = l.running {
                if !running.alive() {
                    let e = anyhow::anyhow!("exited during the round: {}", running.log_tail());
                    failures.push(failure(l.variant, round, "run", e));
                }
                running.stop();
            }
        }
        self.work.clear_recordings();
        for f in failures {
            say!("  {} {} failed: {}", f.contender.name(), f.phase, f.error);
            self.results.failures.push(f);
        }
    }

    /// Profiles porthole-proxy under a plain bulk transfer when it missed a CPU
    /// target (or when asked to), for the report's "why".
    fn profile_if_needed(&mut self) {
        let missed = crate::report::Figures::new(&self.results)
            .verdicts()
            .iter()
            .take(2)
            .any(|v| v.met == Some(false));
        let wanted = match self.plan.profile {
            ProfileWhen::Always => true,
            ProfileWhen::Missed => missed,
            ProfileWhen::Never => false,
        };
        if !wanted {
            return;
        }
        let symbols = self
            .plan
            .profile_binary
            .as_ref()
            .is_some_and(|p| p.exists());
        for id in [Id::Porthole, Id::Socat, Id::PortholeFeatures] {
            // Without symbols the recording's profile is only addresses.
            if !self.available().contains(&id) || (id == Id::PortholeFeatures && !symbols) {
                continue;
            }
            say!("profiling {} under bulk load with perf", id.name());
            match self.profile(id) {
                Ok(profile) => self.results.profiles.push(profile),
                Err(e) => {
                    say!("  no profile: {e:#}");
                    let error = format!("{}: {e:#}", id.name());
                    self.results.profile_errors.push(error);
                }
            }
        }
    }

    fn profile(&mut self, id: Id) -> Result<Profile> {
        let variant = Variant { id, tls: false };
        let mut tools = self.plan.tools.clone();
        let symbols = self
            .plan
            .profile_binary
            .as_ref()
            .filter(|p| id != Id::Socat && p.exists());
        if let Some(binary) = symbols {
            tools.porthole = binary.clone();
        }
        let cmd = contender::command(id, &tools, &self.work, None).context("no command")?;
        let running = contender::start(variant, cmd, &self.work)?;
        running.settle(Duration::from_secs(2));
        let data = self.work.dir.join("perf.data");
        let result = (|| {
            let (mut link, _) = self.connect(variant)?;
            // websockify and socat serve the connection from a child.
            let pids = Usage::pids(running.pid)
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut perf = Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "1999", "-p", &pids, "-o"])
                .arg(&data)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("cannot run perf")?;
            // perf needs a moment to attach.
            std::thread::sleep(Duration::from_millis(500));
            let transfer = self
                .rt
                .block_on(client::bulk(&mut link, self.bulk_bytes(id)));
            contender::signal("INT", perf.id());
            let _ = perf.wait();
            self.rt.block_on(link.close());
            transfer?;
            anyhow::Ok(())
        })();
        running.stop();
        self.work.clear_recordings();
        result?;
        let report = |sort: &str, limit: &str| -> Result<Vec<String>> {
            let out = Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--sort",
                    sort,
                    "--percent-limit",
                    limit,
                    "-i",
                ])
                .arg(&data)
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect())
        };
        let mut top = vec!["by binary:".to_string()];
        top.extend(report("dso", "0.5")?);
        top.push("by function (over 1.5% of samples):".into());
        top.extend(report("dso,sym", "1.5")?.into_iter().take(30));
        let _ = std::fs::remove_file(&data);
        if top.len() <= 2 {
            anyhow::bail!("perf recorded no samples");
        }
        Ok(Profile {
            contender: id,
            tool: "perf record -e cpu-clock -F 1999".into(),
            command: format!("{} bulk, plain", crate::report::size(self.bulk_bytes(id))),
            top,
            note: match (id, symbols) {
                (Id::Socat, _) => String::new(),
                (_, Some(_)) => "built with symbols (release, unstripped)".into(),
                (_, None) => "the release binary is stripped: its own functions \
                                         show as addresses; the kernel's and the C library's \
                                         are named"
                    .into(),
            },
        })
    }

    fn bulk_bytes(&self, id: Id) -> u64 {
        if id == Id::PortholeFeatures {
            self.plan.features_bulk_bytes
        } else {
            self.plan.bulk_bytes
        }
    }

    fn connect(&self, variant: Variant) -> Result<(client::Link, client::Negotiated)> {
        let tls = variant.tls.then(|| self.tls.client.clone());
        let addr = match variant.id {
            Id::Direct => SocketAddr::from(([127, 0, 0, 1], TARGET_PORT)),
            _ => variant.addr(),
        };
        self.rt
            .block_on(client::connect(addr, &variant.id.protocol(), tls.as_ref()))
    }

    fn usage(&self, running: Option<&Running>) -> Usage {
        running.map(|r| r.usage(self.ticks)).unwrap_or_default()
    }
}

/// How many turns each contender's bulk data and round trips are cut into.
pub const BULK_SLICES: usize = 4;
pub const LATENCY_SLICES: usize = 10;

/// A contender during a load round.
struct Live {
    variant: Variant,
    running: Option<Running>,
    link: Option<client::Link>,
    bulk: BulkSample,
    round_trips: Vec<u64>,
}

/// The contenders in turn `turn`'s order.
fn rotated(live: &mut [Live], turn: usize) -> impl Iterator<Item = &mut Live> {
    let n = live.len();
    let (head, tail) = live.split_at_mut(if n == 0 { 0 } else { turn % n });
    tail.iter_mut().chain(head.iter_mut())
}

fn failure(variant: Variant, round: usize, phase: &str, error: anyhow::Error) -> Failure {
    Failure {
        contender: variant.id,
        tls: variant.tls,
        round,
        phase: phase.into(),
        error: format!("{error:#}"),
    }
}

fn names(ids: &[Id]) -> String {
    ids.iter()
        .map(|id| id.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A command's first line of output (stdout, else stderr), or "unknown".
fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|out| {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The Python of the venv a console script lives in.
fn venv_python(script: &std::path::Path) -> PathBuf {
    script.with_file_name("python")
}

fn python_package(script: &std::path::Path, package: &str) -> String {
    first_line(Command::new(venv_python(script)).args([
        "-c",
        &format!("import importlib.metadata as m; print(m.version('{package}'))"),
    ]))
}

fn python_version(script: &std::path::Path) -> String {
    first_line(Command::new(venv_python(script)).arg("--version"))
}

pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn machine(plan: &Plan) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m)
        })
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        kernel: first_line(Command::new("uname").args(["-srm"])),
        memory_kib,
        load_before: load_average(),
        load_after: Vec::new(),
        python: python_version(&plan.tools.websockify),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_contender_leads_a_round_in_turn() {
        let ids = [Id::Porthole, Id::Websockify, Id::Socat];
        assert_eq!(order(&ids, 0), ids);
        assert_eq!(order(&ids, 1), [Id::Websockify, Id::Socat, Id::Porthole]);
        assert_eq!(order(&ids, 2), [Id::Socat, Id::Porthole, Id::Websockify]);
        assert_eq!(order(&ids, 3), ids);
        assert!(order::<Id>(&[], 1).is_empty());
    }
}
