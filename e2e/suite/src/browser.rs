//! A real browser for the e2e tests: Debian's Chromium, driven through
//! `e2e/browser/drive.mjs` (playwright-core) in its long-lived mode. One JSON
//! command per line goes to the driver's stdin; one JSON answer per line, with
//! the command's id, comes back. Commands run concurrently in the driver, so a
//! test can wait on several pages at once.
//!
//! Artefacts (screenshots, the canvas's pixels, the VM's own screen) go to
//! `.e2e/artifacts/browser/<test>/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::pve::PveSim;

/// What the page's status line says while it connects.
pub const CONNECTING: &str = "Connecting…";
/// What it says once the VM's screen is there.
pub const CONNECTED: &str = "Connected";
/// What it says once the console has closed.
pub const DISCONNECTED: &str = "Disconnected";

/// How many browser tests run at once (each has a Chromium, and most a
/// simulator with QEMU VMs): `PORTHOLE_BROWSER_TESTS_AT_ONCE`, default 2.
fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let n = std::env::var("PORTHOLE_BROWSER_TESTS_AT_ONCE")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(2);
            Arc::new(Semaphore::new(n))
        })
        .clone()
}

pub fn repo_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Where a test's screenshots go: `.e2e/artifacts/browser/<test>/`.
pub fn artifacts_dir(test: &str) -> PathBuf {
    std::env::var_os("PORTHOLE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".e2e/artifacts"))
        .join("browser")
        .join(test)
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>>;

/// A Chromium driven by `drive.mjs serve`. Dropping it closes the driver's
/// stdin, and the driver closes Chromium and removes its profile.
pub struct Browser {
    child: Child,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    out: PathBuf,
    _slot: OwnedSemaphorePermit,
}

/// Which condition [`Browser::wait`] waits for.
#[derive(Clone, Debug)]
pub enum Until {
    /// The status line says Connected.
    Connected,
    /// Connected, and the canvas has at least this many non-black pixels.
    Screen { min_non_black: u32 },
    /// The end message is shown.
    Ended,
    /// The countdown is shown; with `urgent`, in its last minute's styling.
    Countdown { urgent: bool },
    /// More canvas draws than this have happened.
    DrawsAfter(u64),
    /// The canvas differs from this thumbnail in at least `min_cells` cells.
    Changed { from: Thumb, min_cells: usize },
}

impl Until {
    /// The VM's screen with some content (more than a cursor).
    pub const SCREEN: Until = Until::Screen {
        min_non_black: 1000,
    };

    fn to_json(&self) -> Value {
        match self {
            Until::Connected => json!({"until": "connected"}),
            Until::Screen { min_non_black } => {
                json!({"until": "screen", "minNonBlack": min_non_black})
            }
            Until::Ended => json!({"until": "ended"}),
            Until::Countdown { urgent } => json!({"until": "countdown", "urgent": urgent}),
            Until::DrawsAfter(since) => json!({"until": "draws", "since": since}),
            Until::Changed { from, min_cells } => json!({
                "until": "changed", "minCells": min_cells, "level": Thumb::LEVEL,
                "from": {"width": from.width, "height": from.height, "grey": from.grey},
            }),
        }
    }
}

/// What a page shows now, and everything it showed since it was opened.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageState {
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub status: String,
    pub countdown: Option<String>,
    #[serde(default)]
    pub urgent: bool,
    #[serde(default)]
    pub ended: bool,
    pub reason: Option<String>,
    #[serde(default)]
    pub screen_visible: bool,
    /// `WIDTHxHEIGHT` of the console canvas, once there is one.
    pub canvas: Option<String>,
    /// Draws on the page's canvases so far.
    #[serde(default)]
    pub draws: u64,
    #[serde(default)]
    pub timeline: Vec<Shown>,
}

/// One thing the page showed, with when (ms since the epoch, the browser's clock).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shown {
    pub at: f64,
    pub status: String,
    pub countdown: Option<String>,
    #[serde(default)]
    pub urgent: bool,
    #[serde(default)]
    pub ended: bool,
    pub reason: Option<String>,
    #[serde(default)]
    pub screen_visible: bool,
    pub canvas: Option<String>,
}

impl PageState {
    /// The distinct status texts the page showed, in order.
    pub fn statuses(&self) -> Vec<&str> {
        let mut statuses: Vec<&str> = Vec::new();
        for shown in &self.timeline {
            if statuses.last() != Some(&shown.status.as_str()) {
                statuses.push(&shown.status);
            }
        }
        statuses
    }

    /// The countdown texts the page showed, in order, without repeats.
    pub fn countdowns(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = Vec::new();
        for text in self.timeline.iter().filter_map(|s| s.countdown.as_deref()) {
            if texts.last() != Some(&text) {
                texts.push(text);
            }
        }
        texts
    }

    /// Whether the page ever showed an end message.
    pub fn ever_ended(&self) -> bool {
        self.timeline.iter().any(|s| s.ended)
    }
}

/// Seconds left in a countdown text such as `Ends in 4:05`.
pub fn countdown_seconds(text: &str) -> Option<u64> {
    let (minutes, seconds) = text.strip_prefix("Ends in ")?.split_once(':')?;
    Some(minutes.parse::<u64>().ok()? * 60 + seconds.parse::<u64>().ok()?)
}

/// A canvas's (or image's) pixels in brief.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanvasStats {
    pub width: u32,
    pub height: u32,
    /// Pixels with any channel above 16.
    pub non_black: u64,
    pub total: u64,
    /// FNV-1a of the RGB bytes: equal for equal pixels.
    pub hash: String,
    pub thumb: Thumb,
}

/// A grey thumbnail (box-filtered mean of each cell, 0-255), row by row.
#[derive(Clone, Debug, Deserialize)]
pub struct Thumb {
    pub width: u32,
    pub height: u32,
    pub grey: Vec<u8>,
}

impl Thumb {
    /// A cell differs, or is lit, when its mean grey is this far off (or above black).
    pub const LEVEL: u8 = 24;

    /// Cells whose mean grey differs from `other`'s by more than [`Self::LEVEL`].
    pub fn differing_cells(&self, other: &Thumb) -> usize {
        if (self.width, self.height) != (other.width, other.height) {
            return self.grey.len().max(other.grey.len());
        }
        self.grey
            .iter()
            .zip(&other.grey)
            .filter(|(a, b)| a.abs_diff(**b) > Self::LEVEL)
            .count()
    }

    /// Cells brighter than [`Self::LEVEL`]: how much there is on the screen.
    pub fn lit_cells(&self) -> usize {
        self.grey.iter().filter(|g| **g > Self::LEVEL).count()
    }
}

/// Whether the page's canvas shows what `reference` (the VM's own screen)
/// shows: same size, and all but a few cells (a blinking cursor) alike. A
/// reference with next to nothing on it matches nothing, so a black canvas
/// never passes for a black screen.
pub fn shows_the_same(canvas: &CanvasStats, reference: &CanvasStats) -> bool {
    let lit = reference.thumb.lit_cells();
    (canvas.width, canvas.height) == (reference.width, reference.height)
        && lit >= 20
        && canvas.thumb.differing_cells(&reference.thumb) <= (lit / 50).max(2)
}

/// Paths of a saved screenshot and of the canvas's exact pixels.
#[derive(Clone, Debug, Deserialize)]
pub struct Screenshot {
    pub page: PathBuf,
    pub canvas: Option<PathBuf>,
}

/// Every request a page made, as Chromium sent it (CDP network events).
#[derive(Clone, Debug, Deserialize)]
pub struct NetworkLog {
    pub truncated: bool,
    pub requests: Vec<Request>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// `http` or `websocket`.
    pub kind: String,
    /// The URL as requested: browsers never send the fragment, so it is not here.
    pub url: Option<String>,
    /// The fragment the page's URL had (Chromium reports it apart).
    pub url_fragment: Option<String>,
    pub method: Option<String>,
    /// The headers as sent, names in lower case.
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    pub status: Option<u16>,
    #[serde(default)]
    pub response_headers: BTreeMap<String, Value>,
    pub body_bytes: Option<u64>,
    pub body_sha256: Option<String>,
    pub failed: Option<String>,
    #[serde(default)]
    pub frames_received: u64,
    #[serde(default)]
    pub bytes_received: u64,
}

/// Where a needle (a secret) was found in a page's traffic.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Found {
    pub needle: String,
    /// `request-url`, `request-header:NAME`, `response-header:NAME`,
    /// `response-body`, `websocket-request-header:NAME`,
    /// `websocket-frame-sent`, `websocket-frame-received`, ...
    #[serde(rename = "where")]
    pub place: String,
    pub url: Option<String>,
}

impl Browser {
    /// Starts the driver and its Chromium for `test`, whose artefacts go to
    /// [`artifacts_dir`]. Waits for a free slot first (see
    /// `PORTHOLE_BROWSER_TESTS_AT_ONCE`).
    pub async fn launch(test: &str) -> Result<Browser> {
        let slot = slots().acquire_owned().await?;
        let out = artifacts_dir(test);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let driver_dir = repo_root().join("e2e/browser");
        if !driver_dir.join("node_modules/playwright-core").is_dir() {
            bail!(
                "{} has no node_modules: run e2e/scripts/deps.sh (npm ci there, and Debian's chromium)",
                driver_dir.display()
            );
        }
        let node = std::env::var_os("PORTHOLE_NODE").unwrap_or_else(|| "node".into());
        // Inside the test bed's browser network namespace, which no pod's veth
        // disturbs (see e2e/browser/chromium-netns.sh).
        let chromium = std::env::var_os("PORTHOLE_CHROMIUM").unwrap_or_else(|| {
            if std::path::Path::new("/run/netns/porthole-browser").exists() {
                driver_dir.join("chromium-netns.sh").into()
            } else {
                "/usr/bin/chromium".into()
            }
        });
        let mut child = Command::new(node)
            .arg(driver_dir.join("drive.mjs"))
            .arg("serve")
            .arg("--out")
            .arg(&out)
            .arg("--chromium")
            .arg(chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting node e2e/browser/drive.mjs (run e2e/scripts/deps.sh)")?;
        let stdin = child.stdin.take().context("stdin is piped")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let pending: Pending = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        pending.lock().expect("not poisoned").insert(0, ready_tx);
        let answers = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(answer) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("browser driver: {line}");
                    continue;
                };
                let Some(id) = answer.get("id").and_then(Value::as_u64) else {
                    eprintln!("browser driver: {line}");
                    continue;
                };
                let result = if answer["ok"].as_bool() == Some(true) {
                    Ok(answer["result"].clone())
                } else {
                    Err(anyhow!(
                        "{}",
                        answer["error"].as_str().unwrap_or("the driver failed")
                    ))
                };
                if let Some(reply) = answers.lock().expect("not poisoned").remove(&id) {
                    let _ = reply.send(result);
                }
            }
            // The driver is gone: fail whatever still waits.
            answers.lock().expect("not poisoned").clear();
        });
        let ready = tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("timed out starting Chromium")?
            .context("the browser driver exited while starting")??;
        eprintln!(
            "browser: {} (artefacts in {})",
            ready["browser"].as_str().unwrap_or("?"),
            out.display()
        );
        Ok(Browser {
            child,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            out,
            _slot: slot,
        })
    }

    /// This test's artefacts directory.
    pub fn artifacts(&self) -> &Path {
        &self.out
    }

    /// Sends one command and waits for its answer (at most `limit`).
    async fn call<T: DeserializeOwned>(&self, command: Value, limit: Duration) -> Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = command;
        command["id"] = json!(id);
        let what = command["cmd"].as_str().unwrap_or("?").to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("not poisoned").insert(id, tx);
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin.as_mut().context("the browser was closed")?;
            stdin
                .write_all(format!("{command}\n").as_bytes())
                .await
                .context("writing to the browser driver")?;
            stdin.flush().await?;
        }
        let value = tokio::time::timeout(limit, rx)
            .await
            .map_err(|_| anyhow!("the browser driver did not answer {what} within {limit:?}"))?
            .map_err(|_| anyhow!("the browser driver exited during {what}"))?
            .with_context(|| format!("browser {what}"))?;
        serde_json::from_value(value).with_context(|| format!("reading the answer to {what}"))
    }

    /// Opens `url`, exactly as given, in a new page called `page`.
    pub async fn open(&self, page: &str, url: &str) -> Result<PageState> {
        self.call(
            json!({"cmd": "open", "page": page, "url": url, "timeoutMs": 60_000}),
            Duration::from_secs(90),
        )
        .await
    }

    /// What `page` shows now.
    pub async fn state(&self, page: &str) -> Result<PageState> {
        self.call(
            json!({"cmd": "state", "page": page}),
            Duration::from_secs(30),
        )
        .await
    }

    /// Waits until `page` shows `until`; fails after `timeout`, with what the page showed.
    pub async fn wait(&self, page: &str, until: Until, timeout: Duration) -> Result<PageState> {
        let mut command = until.to_json();
        command["cmd"] = json!("wait");
        command["page"] = json!(page);
        command["timeoutMs"] = json!(timeout.as_millis() as u64);
        self.call(command, timeout + Duration::from_secs(30)).await
    }

    /// The console canvas of `page`, in brief.
    pub async fn canvas(&self, page: &str) -> Result<CanvasStats> {
        self.call(
            json!({"cmd": "canvas", "page": page}),
            Duration::from_secs(30),
        )
        .await
    }

    /// The same statistics of a PNG file, decoded by the browser.
    pub async fn reference(&self, png: &Path) -> Result<CanvasStats> {
        self.call(
            json!({"cmd": "reference", "path": png}),
            Duration::from_secs(30),
        )
        .await
    }

    /// Saves a screenshot of `page` (and its canvas's pixels) as `name`.
    pub async fn screenshot(&self, page: &str, name: &str) -> Result<Screenshot> {
        self.call(
            json!({"cmd": "screenshot", "page": page, "name": name}),
            Duration::from_secs(30),
        )
        .await
    }

    /// Clicks the left button at (x, y) of the VM's framebuffer.
    pub async fn click(&self, page: &str, x: u32, y: u32) -> Result<()> {
        self.call::<Value>(
            json!({"cmd": "click", "page": page, "x": x, "y": y}),
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    /// Types `text` on the keyboard into the console.
    pub async fn type_text(&self, page: &str, text: &str) -> Result<()> {
        self.call::<Value>(
            json!({"cmd": "type", "page": page, "text": text}),
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    /// Every request `page` made and response it got.
    pub async fn network(&self, page: &str) -> Result<NetworkLog> {
        self.call(
            json!({"cmd": "network", "page": page}),
            Duration::from_secs(30),
        )
        .await
    }

    /// Where each `(name, value)` occurs in what `page` sent and received.
    pub async fn scan(&self, page: &str, needles: &[(&str, &str)]) -> Result<Vec<Found>> {
        let needles: Vec<Value> = needles
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        #[derive(Deserialize)]
        struct Scan {
            found: Vec<Found>,
        }
        let scan: Scan = self
            .call(
                json!({"cmd": "scan", "page": page, "needles": needles}),
                Duration::from_secs(60),
            )
            .await?;
        Ok(scan.found)
    }

    /// The page's console messages (for failure reports).
    pub async fn console(&self, page: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Messages {
            messages: Vec<String>,
        }
        let messages: Messages = self
            .call(
                json!({"cmd": "console", "page": page}),
                Duration::from_secs(30),
            )
            .await?;
        Ok(messages.messages)
    }

    /// Closes `page`, and with it its WebSocket.
    pub async fn close_page(&self, page: &str) -> Result<()> {
        self.call::<Value>(
            json!({"cmd": "close", "page": page}),
            Duration::from_secs(30),
        )
        .await
        .map(drop)
    }

    /// Closes Chromium and waits for the driver to exit.
    pub async fn quit(mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.lock().await.take() {
            let _ = stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("the browser driver did not exit")??;
        if !status.success() {
            bail!("the browser driver exited with {status}");
        }
        Ok(())
    }

    /// Polls until `page`'s canvas shows what `screen` (the VM's own screen,
    /// fetched anew each time) shows. Saves the last screen as
    /// `<name>.vm.png` and a screenshot as `<name>.png` in the artefacts,
    /// match or not.
    pub async fn until_canvas_shows<F, Fut>(
        &self,
        page: &str,
        name: &str,
        timeout: Duration,
        mut screen: F,
    ) -> Result<(CanvasStats, CanvasStats)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let reference_path = self.out.join(format!("{name}.vm.png"));
        let mut poll = tokio::time::interval(Duration::from_millis(300));
        loop {
            poll.tick().await;
            let png = screen().await?;
            std::fs::write(&reference_path, &png)?;
            let reference = self.reference(&reference_path).await?;
            let canvas = self.canvas(page).await?;
            let alike = shows_the_same(&canvas, &reference);
            if alike || tokio::time::Instant::now() >= deadline {
                self.screenshot(page, name).await?;
                if !alike {
                    bail!(
                        "page {page}'s canvas ({}x{}, {} lit cells) never showed the VM's screen \
                         ({}x{}, {} lit cells): {} cells differ; see {}",
                        canvas.width,
                        canvas.height,
                        canvas.thumb.lit_cells(),
                        reference.width,
                        reference.height,
                        reference.thumb.lit_cells(),
                        canvas.thumb.differing_cells(&reference.thumb),
                        self.out.display()
                    );
                }
                return Ok((canvas, reference));
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin tells the driver to close Chromium and remove its
        // profile; it exits by itself.
        if let Ok(mut stdin) = self.stdin.try_lock() {
            stdin.take();
        }
    }
}

/// The simulator's test-only VM controls, beside [`PveSim`]'s: power, reset and
/// what the VM's screen shows.
pub struct SimVms {
    url: String,
    http: reqwest::Client,
}

impl SimVms {
    pub fn of(sim: &PveSim) -> Result<SimVms> {
        SimVms::new(sim.url(), sim.ca_pem())
    }

    /// The controls of a simulator at `url` whose certificate `ca_pem` signed
    /// (one this process did not start, such as `make demo`'s).
    pub fn new(url: &str, ca_pem: &str) -> Result<SimVms> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(SimVms {
            url: url.to_string(),
            http,
        })
    }

    async fn post(&self, vmid: u32, action: &str) -> Result<()> {
        let url = format!("{}/_sim/vms/{vmid}/{action}", self.url);
        let response = self.http.post(&url).send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("{url} answered {status}: {}", response.text().await?);
        }
        Ok(())
    }

    /// Resets the VM (QMP `system_reset`): it reboots, its console stays.
    pub async fn reset(&self, vmid: u32) -> Result<()> {
        self.post(vmid, "reset").await
    }

    /// Stops the VM (its QEMU process ends).
    pub async fn stop(&self, vmid: u32) -> Result<()> {
        self.post(vmid, "stop").await
    }

    pub async fn start(&self, vmid: u32) -> Result<()> {
        self.post(vmid, "start").await
    }

    /// The VM's screen as QEMU shows it (PNG).
    pub async fn screen(&self, vmid: u32) -> Result<Vec<u8>> {
        let url = format!("{}/_sim/vms/{vmid}/screen", self.url);
        let response = self.http.get(&url).send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("{url} answered {status}: {}", response.text().await?);
        }
        Ok(response.bytes().await?.to_vec())
    }
}

/// Key-down keysyms and pointer events in what the simulator recorded of a
/// VM's viewer input (`GET /_sim/vms/{vmid}/input`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Input {
    /// Keysyms of key presses, in order.
    pub pressed: Vec<u32>,
    /// (buttons, x, y) of pointer events, in order.
    pub pointer: Vec<(u8, u16, u16)>,
}

impl Input {
    pub fn from_events(events: &[Value]) -> Input {
        let mut input = Input::default();
        for event in events {
            match event["type"].as_str() {
                Some("key") if event["down"].as_bool() == Some(true) => {
                    if let Some(keysym) = event["keysym"].as_u64() {
                        input.pressed.push(keysym as u32);
                    }
                }
                Some("pointer") => {
                    let field = |name: &str| event[name].as_u64().unwrap_or(u64::MAX);
                    input.pointer.push((
                        field("buttons") as u8,
                        field("x") as u16,
                        field("y") as u16,
                    ));
                }
                _ => {}
            }
        }
        input
    }

    /// The pressed keys as text (keysyms of Latin-1 characters are their code).
    pub fn typed(&self) -> String {
        self.pressed
            .iter()
            .filter_map(|k| char::from_u32(*k).filter(|c| *k < 0x100 && !c.is_control()))
            .collect()
    }

    /// Whether the left button went down and up again within `slack` pixels of (x, y).
    pub fn clicked_near(&self, x: u16, y: u16, slack: u16) -> bool {
        let near = |px: u16, py: u16| px.abs_diff(x) <= slack && py.abs_diff(y) <= slack;
        let down = self
            .pointer
            .iter()
            .position(|(b, px, py)| b & 1 == 1 && near(*px, *py));
        down.is_some_and(|i| {
            self.pointer[i..]
                .iter()
                .any(|(b, px, py)| b & 1 == 0 && near(*px, *py))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_countdowns() {
        assert_eq!(countdown_seconds("Ends in 4:05"), Some(245));
        assert_eq!(countdown_seconds("Ends in 0:00"), Some(0));
        assert_eq!(countdown_seconds("soon"), None);
    }

    fn thumb(grey: &[u8]) -> Thumb {
        Thumb {
            width: grey.len() as u32,
            height: 1,
            grey: grey.to_vec(),
        }
    }

    fn stats(grey: &[u8]) -> CanvasStats {
        CanvasStats {
            width: 720,
            height: 400,
            non_black: 0,
            total: 0,
            hash: String::new(),
            thumb: thumb(grey),
        }
    }

    #[test]
    fn a_black_canvas_never_shows_a_screen() {
        let screen = stats(&[vec![200u8; 30], vec![0; 70]].concat());
        let black = stats(&[0u8; 100]);
        assert!(!shows_the_same(&black, &screen));
        assert!(shows_the_same(&screen, &screen));
        // Nothing on the VM's screen: nothing to compare, so no match.
        assert!(!shows_the_same(&black, &black));
        // A blinking cursor is one cell.
        let mut cursor = screen.clone();
        cursor.thumb.grey[90] = 200;
        assert!(shows_the_same(&cursor, &screen));
    }

    #[test]
    fn reads_input_records() {
        let events: Vec<Value> = serde_json::from_str(
            r#"[{"type":"pointer","buttons":0,"x":99,"y":200},
                {"type":"pointer","buttons":1,"x":100,"y":200},
                {"type":"pointer","buttons":0,"x":100,"y":200},
                {"type":"key","down":true,"keysym":112},{"type":"key","down":false,"keysym":112},
                {"type":"key","down":true,"keysym":65293}]"#,
        )
        .unwrap();
        let input = Input::from_events(&events);
        assert_eq!(input.typed(), "p");
        assert_eq!(input.pressed, vec![112, 65293]);
        assert!(input.clicked_near(100, 200, 1));
        assert!(!input.clicked_near(300, 200, 1));
    }
}
