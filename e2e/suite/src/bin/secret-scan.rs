//! Looks for every secret the system handled in the places secrets must never
//! appear: logs (the test bed's components, every container's, archived or
//! running), Events, and the status of every ConsoleSession and Hypervisor.
//!
//! `secret-scan collect` runs beside the e2e tests (started and stopped by
//! `e2e/scripts/e2e.sh`): it watches every Secret in the cluster and remembers
//! each secret value it sees, in `.e2e/secrets/cluster.txt`, as it sees it (session
//! Secrets live only as long as their session). The e2e harness adds what the
//! Proxmox simulators issued (`.e2e/secrets/pve-*.txt`). It also records every
//! Event and every ConsoleSession status as they happen, in
//! `.e2e/logs/recorded/`, since tests delete their namespaces (and with them
//! their Events and sessions) before the scan.
//!
//! `secret-scan scan` then searches for each value, as written and base64-encoded,
//! writes the figures to `.e2e/reliability/secrets.json` and exits 1 naming where
//! (never what) it found any. `status.url` is left out: by design it carries the
//! session's access token, for whoever may read the session.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor};
use porthole_e2e::cluster::{client, state_dir};
use serde_json::json;
use tokio::process::Command;

/// Keys whose values are not secret: names, ids and certificates.
const PUBLIC_KEYS: &[&str] = &["username", "tokenId", "pve-ca.crt", "ca.crt"];
/// Shorter values would match by chance.
const MIN_LEN: usize = 8;
const PODMAN: &[&str] = &["--runtime", "runc", "--cgroup-manager=cgroupfs"];

#[tokio::main]
async fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("collect") => collect().await,
        Some("scan") => scan().await,
        _ => bail!("usage: secret-scan collect | scan"),
    }
}

/// The secret values of a Secret: Opaque data, minus names and certificates.
fn secret_values(secret: &Secret) -> Vec<String> {
    if secret.type_.as_deref().is_some_and(|t| t != "Opaque") {
        return Vec::new();
    }
    secret
        .data
        .iter()
        .flatten()
        .filter(|(key, _)| !PUBLIC_KEYS.contains(&key.as_str()))
        .filter_map(|(_, value)| String::from_utf8(value.0.clone()).ok())
        .filter(|value| value.len() >= MIN_LEN && !value.contains("-----BEGIN"))
        .collect()
}

async fn collect() -> Result<()> {
    let client = client().await?;
    tokio::try_join!(
        collect_secrets(client.clone()),
        record_events(client.clone()),
        record_statuses(client),
    )?;
    Ok(())
}

async fn collect_secrets(client: kube::Client) -> Result<()> {
    let dir = state_dir().join("secrets");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cluster.txt");
    let mut seen: BTreeSet<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut file = append_to(&path)?;
    let secrets: Api<Secret> = Api::all(client);
    let mut events = std::pin::pin!(
        watcher(secrets, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    eprintln!(
        "secret-scan: collecting secret values in {}",
        path.display()
    );
    while let Some(secret) = next(&mut events, "Secrets").await {
        for value in secret_values(&secret) {
            if seen.insert(value.clone()) {
                writeln!(file, "{value}")?;
                file.flush()?;
            }
        }
    }
    Ok(())
}

/// The next object of a watch. A watch error (the apiserver restarting, a
/// resource version gone) is logged and the watcher, which re-lists by itself,
/// goes on: the collector must last the whole run.
async fn next<K>(
    stream: &mut (impl futures::Stream<Item = Result<K, watcher::Error>> + Unpin),
    what: &str,
) -> Option<K> {
    loop {
        match stream.next().await? {
            Ok(object) => return Some(object),
            Err(error) => eprintln!("secret-scan: watching {what}: {error}; retrying"),
        }
    }
}

/// Where what the API showed during the run is kept for the scan: tests delete
/// their namespaces, and their Events and sessions with them.
fn recorded(name: &str) -> Result<std::fs::File> {
    let dir = state_dir().join("logs/recorded");
    std::fs::create_dir_all(&dir)?;
    append_to(&dir.join(name))
}

fn append_to(path: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

/// Every Event of the run, as it is recorded.
async fn record_events(client: kube::Client) -> Result<()> {
    let mut file = recorded("events.jsonl")?;
    let mut events = std::pin::pin!(
        watcher(Api::<Event>::all(client), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(event) = next(&mut events, "Events").await {
        writeln!(
            file,
            "{}",
            json!({"reason": event.reason, "message": event.message, "object": event.involved_object.name})
        )?;
        file.flush()?;
    }
    Ok(())
}

/// Every ConsoleSession status of the run, as it changes (without `url`).
async fn record_statuses(client: kube::Client) -> Result<()> {
    let mut file = recorded("session-statuses.jsonl")?;
    let mut sessions = std::pin::pin!(
        watcher(
            Api::<ConsoleSession>::all(client),
            watcher::Config::default()
        )
        .default_backoff()
        .applied_objects()
    );
    while let Some(session) = next(&mut sessions, "ConsoleSessions").await {
        writeln!(file, "{}", status_without_url(&session)?)?;
        file.flush()?;
    }
    Ok(())
}

/// A session's status as JSON, without `status.url` (which carries the
/// session's token by design).
fn status_without_url(session: &ConsoleSession) -> Result<String> {
    let mut status = serde_json::to_value(&session.status)?;
    if let Some(status) = status.as_object_mut() {
        status.remove("url");
    }
    Ok(status.to_string())
}

/// Everything collected: one secret per line in `.e2e/secrets/*.txt`.
fn known_secrets(dir: &Path) -> Result<BTreeSet<String>> {
    let mut secrets = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            secrets.extend(
                std::fs::read_to_string(&path)?
                    .lines()
                    .filter(|l| l.len() >= MIN_LEN)
                    .map(str::to_string),
            );
        }
    }
    Ok(secrets)
}

/// A text to search, and where it came from.
struct Place {
    name: String,
    text: String,
}

fn files_under(dir: &Path, out: &mut Vec<Place>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push(Place {
                name: path.display().to_string(),
                text: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
    }
    Ok(())
}

/// Logs of the containers the node agent still has (running or not yet archived).
async fn container_logs(out: &mut Vec<Place>) -> Result<()> {
    let ids = Command::new("podman")
        .args(PODMAN)
        .args([
            "ps",
            "-a",
            "--filter",
            "label=io.porthole.node",
            "--format",
            "{{.ID}} {{.Names}}",
        ])
        .output()
        .await?;
    for line in String::from_utf8_lossy(&ids.stdout).lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let logs = Command::new("podman")
            .args(PODMAN)
            .args(["logs", id])
            .output()
            .await?;
        out.push(Place {
            name: format!("container {name}"),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            ),
        });
    }
    Ok(())
}

async fn api_objects(out: &mut Vec<Place>) -> Result<()> {
    let client = client().await?;
    let all = ListParams::default();
    for event in Api::<Event>::all(client.clone()).list(&all).await? {
        out.push(Place {
            name: format!(
                "Event {}/{}",
                event.metadata.namespace.unwrap_or_default(),
                event.metadata.name.clone().unwrap_or_default()
            ),
            text: serde_json::to_string(&json!({
                "reason": event.reason, "message": event.message,
                "object": event.involved_object.name,
            }))?,
        });
    }
    for session in Api::<ConsoleSession>::all(client.clone())
        .list(&all)
        .await?
    {
        out.push(Place {
            name: format!(
                "ConsoleSession {}/{} status",
                session.metadata.namespace.clone().unwrap_or_default(),
                session.metadata.name.clone().unwrap_or_default()
            ),
            text: status_without_url(&session)?,
        });
    }
    for hypervisor in Api::<Hypervisor>::all(client).list(&all).await? {
        out.push(Place {
            name: format!(
                "Hypervisor {} status",
                hypervisor.metadata.name.unwrap_or_default()
            ),
            text: serde_json::to_string(&hypervisor.status)?,
        });
    }
    Ok(())
}

async fn scan() -> Result<()> {
    let state = state_dir();
    let secrets = known_secrets(&state.join("secrets"))?;
    let mut places = Vec::new();
    files_under(&state.join("logs"), &mut places)?;
    let files = places.len();
    container_logs(&mut places).await?;
    let containers = places.len() - files;
    api_objects(&mut places).await?;
    let objects = places.len() - files - containers;
    let bytes: usize = places.iter().map(|p| p.text.len()).sum();

    let base64 = base64::engine::general_purpose::STANDARD;
    let mut found = Vec::new();
    for place in &places {
        let hits = secrets
            .iter()
            .filter(|s| place.text.contains(s.as_str()) || place.text.contains(&base64.encode(s)))
            .count();
        if hits > 0 {
            found.push(json!({"where": place.name, "secrets": hits}));
        }
    }
    let report = json!({
        "secrets_known": secrets.len(),
        "log_files": files,
        "container_logs": containers,
        "api_objects": objects,
        "bytes_scanned": bytes,
        "places_with_secrets": found.len(),
        "found": found,
    });
    let out = state.join("reliability");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("secrets.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!(
        "secret-scan: {} secrets searched for in {files} log files, {containers} container logs \
         and {objects} Events and statuses ({bytes} bytes): found in {} places",
        secrets.len(),
        found.len()
    );
    if !found.is_empty() {
        for place in &found {
            eprintln!("secret-scan: a secret appears in {}", place["where"]);
        }
        bail!("secrets appear in logs, Events or status");
    }
    if secrets.is_empty() {
        bail!("no secrets were collected: the scan would prove nothing");
    }
    Ok(())
}
