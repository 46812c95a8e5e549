//! The operator as the driver observes it from the host: its process (found
//! through podman, which the node agent runs it with), its `/metrics`, and
//! the warnings in its log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procfs;
use crate::results::{LogCount, OperatorSample};

/// The operator pods' `app.kubernetes.io/name` (the chart's).
const OPERATOR_NAME: &str = "porthole-operator";
/// Its health and metrics port (the operator's `--http-addr`).
const METRICS_PORT: u16 = 8080;
/// What `/proc/PID/comm` holds for it (15 characters at most).
const COMM: &str = "porthole-operat";

/// The running operator.
#[derive(Debug, Clone, Default)]
pub struct Operator {
    pub pid: u32,
    /// How the pid was found.
    pub found_by: String,
    /// Its podman container, when found through podman.
    pub container: Option<String>,
    pub pod_ip: Option<String>,
    pub image: String,
    pub limits: Vec<(String, String)>,
    pub namespace: String,
    pub pod: String,
    /// Its leader-election Lease (`None`: leader election is off).
    pub lease: Option<String>,
    /// Its container's restarts so far, as the pod reports them.
    pub restarts: i32,
    /// When its running container started (a restarted container keeps its
    /// pod's Lease, and the Lease's acquire time with it).
    pub started_at: Option<k8s_openapi::jiff::Timestamp>,
}

/// `podman` as the node agent runs it.
pub async fn podman(args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
        .args(args)
        .output()
        .await
        .context("cannot run podman")?;
    if !output.status.success() {
        bail!(
            "podman {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Finds the operator's process: its pod's container through podman (the
/// node agent labels containers with their pod's UID), else a scan of `/proc`.
pub async fn find(client: &Client) -> Result<Operator> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={OPERATOR_NAME}")))
        .await
        .context("cannot list the operator's pods")?;
    let pod = list
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .context("no running operator pod (is porthole installed?)")?;
    let container_spec = pod.spec.as_ref().and_then(|s| s.containers.first());
    let env = |name: &str| {
        container_spec
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == name))
            .and_then(|e| e.value.clone())
    };
    let lease = match env("PORTHOLE_LEADER_ELECT").as_deref() {
        Some("false") => None,
        _ => Some(env("PORTHOLE_LEADER_ELECTION_LEASE").unwrap_or_else(|| OPERATOR_NAME.into())),
    };
    let mut operator = Operator {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        lease,
        restarts: pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map_or(0, |c| c.restart_count),
        started_at: pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .map(|t| t.0),
        pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        image: container_spec
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        limits: container_spec
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default(),
        ..Operator::default()
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let by_podman = async {
        let ids = podman(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=io.porthole.pod.uid={uid}"),
            "--filter",
            "label=io.porthole.role=container",
        ])
        .await?;
        let id = ids
            .lines()
            .next()
            .context("no container")?
            .trim()
            .to_string();
        let pid: u32 = podman(&["inspect", "--format", "{{.State.Pid}}", &id])
            .await?
            .trim()
            .parse()
            .context("no pid")?;
        let image = podman(&["inspect", "--format", "{{.ImageName}} {{.Image}}", &id]).await?;
        anyhow::Ok((id, pid, image.trim().to_string()))
    };
    match by_podman.await {
        Ok((id, pid, image)) if pid > 0 => {
            operator.pid = pid;
            operator.found_by = format!("podman inspect of container {}", &id[..12.min(id.len())]);
            operator.container = Some(id);
            let short = image
                .split_once(' ')
                .map(|(name, digest)| format!("{name} ({})", &digest[..12.min(digest.len())]));
            operator.image = short.unwrap_or(image);
        }
        other => {
            let pid = scan_proc().with_context(|| {
                format!("no operator process: not through podman ({other:?}), nor in /proc")
            })?;
            operator.pid = pid;
            operator.found_by = format!("/proc scan for {COMM}");
        }
    }
    Ok(operator)
}

/// Waits until the operator has led without interruption for `hold` (by its
/// Lease: held by its pod, renewed `hold` after it was acquired), at most
/// `limit`; whether it did. Measuring starts from a steady operator, not one
/// that has just been installed.
pub async fn settle(client: &Client, operator: &Operator, hold: Duration, limit: Duration) -> bool {
    let Some(lease) = &operator.lease else {
        return true;
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &operator.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={lease}"));
    let steady = |lease: &Lease| {
        let Some(spec) = &lease.spec else {
            return false;
        };
        let (Some(acquired), Some(renewed)) = (&spec.acquire_time, &spec.renew_time) else {
            return false;
        };
        let since = |t: k8s_openapi::jiff::Timestamp| renewed.0.duration_since(t).as_secs_f64();
        spec.holder_identity.as_deref() == Some(operator.pod.as_str())
            && since(acquired.0) >= hold.as_secs_f64()
            && operator
                .started_at
                .is_none_or(|started| since(started) >= hold.as_secs_f64())
    };
    let mut events = std::pin::pin!(watcher(leases, config).default_backoff().applied_objects());
    let watch = async {
        while let Some(event) = events.next().await {
            if event.as_ref().is_ok_and(&steady) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(limit, watch).await.unwrap_or(false)
}

impl Operator {
    /// Where the node agent archives the logs of this pod's ended containers.
    pub fn archive(&self, state: &Path) -> std::path::PathBuf {
        state
            .join("logs/pods")
            .join(format!("{}_{}_operator.log", self.namespace, self.pod))
    }
}

/// The kubernetes Service's `ADDRESS:PORT`, through which pods reach the API server.
pub async fn api_address(client: &Client) -> Option<String> {
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let service = services.get("kubernetes").await.ok()?;
    let spec = service.spec?;
    let port = spec.ports?.first()?.port;
    Some(format!("{}:{port}", spec.cluster_ip?))
}

/// Established TCP connections whose local end is `address` (`IP:PORT`),
/// from `/proc/net/tcp`: on the host, the relayed connections to a Service.
pub fn established_connections(address: &str) -> u32 {
    std::fs::read_to_string("/proc/net/tcp").map_or(0, |table| count_established(&table, address))
}

/// The `/proc/net/tcp` form of `IP:PORT` (the address as the kernel's
/// native-endian word, the port big-endian), then its established entries.
pub fn count_established(table: &str, address: &str) -> u32 {
    let Some((ip, port)) = address.rsplit_once(':') else {
        return 0;
    };
    let (Ok(ip), Ok(port)) = (ip.parse::<std::net::Ipv4Addr>(), port.parse::<u16>()) else {
        return 0;
    };
    let local = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(local.as_str()) && fields.nth(1) == Some("01")
        })
        .count() as u32
}

/// The one process called `porthole-operator`.
fn scan_proc() -> Option<u32> {
    let mut found = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == COMM)
        });
    let pid = found.next()?;
    found.next().is_none().then_some(pid)
}

/// The process's memory and CPU now (`None` once it is gone).
pub fn sample(pid: u32, ticks_per_second: f64, t_s: f64) -> Option<OperatorSample> {
    let stat = procfs::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let memory =
        procfs::parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?);
    Some(OperatorSample {
        t_s,
        rss_kib: memory.rss_kib,
        hwm_kib: memory.hwm_kib,
        cpu_s: (stat.utime + stat.stime) as f64 / ticks_per_second,
        api_connections: None,
    })
}

/// The operator's `porthole_operator_*` series, scraped from its pod.
pub async fn metrics(pod_ip: &str) -> Result<BTreeMap<String, f64>> {
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect((pod_ip, METRICS_PORT)),
    )
    .await
    .context("timed out")??;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {pod_ip}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut response),
    )
    .await
    .context("timed out")??;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(parse_metrics(body))
}

/// Prometheus text lines `name{labels} value` of the operator's own series.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| line.starts_with("porthole_operator_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The operator container's log since `since` (Unix seconds), both streams.
pub async fn container_log(container: &str, since: u64) -> Result<String> {
    let output = tokio::process::Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager=cgroupfs", "logs"])
        .args(["--since", &since.to_string(), container])
        .output()
        .await
        .context("cannot run podman logs")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr))
}

/// A file's length now, to read what is appended later.
pub fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What was appended to `path` since it was `from` bytes long.
pub fn appended(path: &Path, from: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// Removes terminal colour sequences (`ESC [ ... letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const LEVELS: [&str; 2] = ["WARN", "ERROR"];

/// Warnings and errors in a `tracing` text log (`TIME LEVEL target: message
/// key=value ...`), counted by message and error (digits blurred, so that one
/// kind of error on different sessions counts as one), most frequent first.
pub fn digest(log: &str) -> Vec<LogCount> {
    let mut counts: BTreeMap<(String, String), LogCount> = BTreeMap::new();
    for raw in log.lines() {
        let line = strip_ansi(raw);
        let mut words = line.split_whitespace();
        let Some(level) = words.by_ref().take(3).find(|w| LEVELS.contains(w)) else {
            continue;
        };
        let after_level = &line[line.find(level).unwrap_or(0) + level.len()..];
        let (message, fields) = split_fields(after_target(after_level.trim_start()));
        let error = fields
            .iter()
            .find(|(k, _)| *k == "error")
            .map(|(_, v)| blur(v.trim_matches('"')))
            .unwrap_or_default();
        let mut key = message.to_string();
        if !error.is_empty() {
            key = format!("{key} (error: {error})");
        }
        let entry = counts
            .entry((level.to_string(), key.clone()))
            .or_insert_with(|| LogCount {
                level: level.to_string(),
                message: key,
                count: 0,
                example: line.chars().take(300).collect(),
            });
        entry.count += 1;
    }
    let mut list: Vec<LogCount> = counts.into_values().collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));
    list
}

/// What follows the `target: ` (a module path) of a log line, after any
/// spans (`reconciling object{object.ref=...}: porthole_operator::reconcile: `).
fn after_target(text: &str) -> &str {
    let is_path = |token: &str| {
        !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut fallback = None;
    for (at, _) in text.match_indices(": ") {
        let start = text[..at].rfind([' ', ':', '}']).map_or(0, |i| {
            // A path's own `::` is part of it: back up over it.
            let mut s = i + 1;
            while s > 0 && is_path(&text[s - 1..at]) {
                s -= 1;
            }
            s
        });
        let token = &text[start..at];
        let spaced = start == 0 || text[..start].ends_with(' ');
        if is_path(token) && spaced {
            if token.contains("::") {
                return &text[at + 2..];
            }
            fallback.get_or_insert(&text[at + 2..]);
        }
    }
    fallback.unwrap_or(text)
}

/// Splits `message key=value key2=value two` at the first ` key=`; the
/// fields' values run to the next ` key=`.
fn split_fields(text: &str) -> (&str, Vec<(&str, &str)>) {
    let starts: Vec<(usize, usize)> = field_starts(text);
    let Some(&(first, _)) = starts.first() else {
        return (text.trim(), Vec::new());
    };
    let mut fields = Vec::new();
    for (i, &(start, eq)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |&(next, _)| next);
        fields.push((&text[start..eq], text[eq + 1..end].trim()));
    }
    (text[..first].trim(), fields)
}

/// Where each ` key=` begins (after its space), with its `=`.
fn field_starts(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    for (i, _) in text.match_indices('=') {
        let mut start = i;
        while start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || matches!(bytes[start - 1], b'_' | b'.'))
        {
            start -= 1;
        }
        if start < i && (start == 0 || bytes[start - 1] == b' ') {
            // Not inside an earlier value's quotes.
            let quotes = text[..start].matches('"').count();
            if quotes.is_multiple_of(2) {
                starts.push((start, i));
            }
        }
    }
    starts
}

/// Each run of digits becomes one `#` (addresses, names and counts alike),
/// and the text is cut at 160 characters.
fn blur(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_of_the_operator_only() {
        let text = "# HELP porthole_operator_reconciliations Reconciliations started\n\
                    porthole_operator_reconciliations_total 1234\n\
                    porthole_operator_reconcile_errors_total{category=\"api\"} 5\n\
                    process_cpu 3\n";
        let m = parse_metrics(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["porthole_operator_reconciliations_total"], 1234.0);
        assert_eq!(
            m["porthole_operator_reconcile_errors_total{category=\"api\"}"],
            5.0
        );
    }

    #[test]
    fn established_connections_by_local_address() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0100600A:01BB E20258 0A:C350 01 00000000:00000000\n\
           1: 0100600A:01BB E20258 0A:C351 01 00000000:00000000\n\
           2: 0100600A:01BB E20258 0A:C352 06 00000000:00000000\n\
           3: 0100600A:0050 E20258 0A:C353 01 00000000:00000000\n\
           4: 00000000:01BB 00000000:0000 0A 00000000:00000000\n"
            .replace("E20258 0A", "E202580A");
        assert_eq!(count_established(&table, "10.96.0.1:443"), 2);
        assert_eq!(count_established(&table, "10.96.0.1:80"), 1);
        assert_eq!(count_established(&table, "nonsense"), 0);
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn warnings_are_counted_by_message_and_error() {
        let log = "\
2026-11-21T08:00:00.1Z  WARN porthole_operator::reconcile: could not read the viewers session=s0001 error=reading the viewer report from 10.89.0.1: error sending request\n\
2026-11-21T08:00:00.2Z  WARN porthole_operator::reconcile: could not read the viewers session=s0002 error=reading the viewer report from 10.89.0.2: error sending request\n\
2026-11-21T08:00:00.3Z  INFO porthole_operator::reconcile: created console proxy pod session=s0002 pod=s0002\n\
2026-11-21T08:00:00.4Z ERROR porthole_operator::reconcile: reconcile failed, retrying session=s0003 error=\"Kubernetes API request failed: a = b\"\n";
        let d = digest(log);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].count, 2);
        assert_eq!(d[0].level, "WARN");
        assert_eq!(
            d[0].message,
            "could not read the viewers (error: reading the viewer report from #.#.#.#: error sending request)"
        );
        assert!(d[0].example.contains("s0001"));
        assert_eq!(d[1].level, "ERROR");
        assert_eq!(
            d[1].message,
            "reconcile failed, retrying (error: Kubernetes API request failed: a = b)"
        );
    }

    #[test]
    fn spans_before_the_target_are_skipped() {
        let line = "2026-11-21T11:29:34.184143Z  WARN reconciling object{object.ref=ConsoleSession.v1alpha1.porthole.dev/s14.ns object.reason=related object updated: EndpointSlice.v1.discovery.k8s.io/console-s15.ns}: porthole_operator::reconcile: could not read the viewers session=s14 error=boom at 10.88.2.13";
        let d = digest(line);
        assert_eq!(
            d[0].message,
            "could not read the viewers (error: boom at #.#.#.#)"
        );
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \u{1b}[1mreconciling object\u{1b}[0m\u{1b}[1m{\u{1b}[0m\u{1b}[3mobject.ref\u{1b}[0m\u{1b}[2m=\u{1b}[0mx\u{1b}[1m}\u{1b}[0m\u{1b}[2m:\u{1b}[0m \u{1b}[2mporthole_operator::reconcile\u{1b}[0m\u{1b}[2m:\u{1b}[0m could not read the viewers \u{1b}[3msession\u{1b}[0m\u{1b}[2m=\u{1b}[0ms15";
        assert_eq!(digest(coloured)[0].message, "could not read the viewers");
        assert_eq!(
            digest("T  WARN porthole_node_agent: fake containers: on network=x")[0].message,
            "fake containers: on"
        );
    }

    #[test]
    fn a_message_without_fields_is_kept_whole() {
        let d = digest("T  WARN agent: some tasks did not stop in time\n");
        assert_eq!(d[0].message, "some tasks did not stop in time");
    }
}
