//! `make demo-check`: does what a newcomer does. Runs `make demo`, waits for the
//! URL it prints, opens that URL in headless Chromium and checks that the page
//! shows the VM's screen (what the simulator's QEMU shows), then presses Ctrl-C
//! (SIGINT to make's process group, as a terminal does) and checks that the demo
//! cleaned up after itself: make exits, the simulator's VM is gone, the cluster
//! is down. Exits non-zero, saying why, on any failure.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use porthole_e2e::browser::{Browser, SimVms, Until, repo_root, shows_the_same};
use porthole_e2e::cluster::state_dir;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A warm machine reaches the URL in a minute or two; a cold one builds the
/// images and the control plane first.
const URL_TIMEOUT: Duration = Duration::from_secs(40 * 60);
const SCREEN_TIMEOUT: Duration = Duration::from_secs(90);
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(180);
/// The demo's VM (examples/proxmox-hypervisor.yaml's session names it).
const VMID: u32 = 101;

/// What the simulator writes once it serves (`ready.json`).
#[derive(Deserialize)]
struct SimReady {
    url: String,
    ca_pem: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let make = std::env::var_os("MAKE").unwrap_or_else(|| "make".into());
    let mut demo = Command::new(make)
        .arg("demo")
        .current_dir(repo_root())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting make demo")?;
    let result = check(&mut demo).await;
    let stopped = interrupt_and_wait(&mut demo).await;
    result?;
    stopped?;
    cleaned_up().await?;
    eprintln!("demo-check: make demo showed the VM's screen in Chromium and cleaned up");
    Ok(())
}

/// Reads the URL `make demo` prints and checks Chromium shows the VM there.
async fn check(demo: &mut Child) -> Result<()> {
    let stdout = demo.stdout.take().context("stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(URL_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("http://") || line.starts_with("https://") {
                return Ok(line);
            }
        }
        bail!("make demo ended without printing a URL")
    })
    .await
    .with_context(|| format!("make demo printed no URL within {URL_TIMEOUT:?}"))??;
    // Whatever else it prints goes on to this process's stdout.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    eprintln!("demo-check: make demo printed {}", redact(&url));

    let ready = state_dir().join("demo/sim/ready.json");
    let sim: SimReady = serde_json::from_str(
        &std::fs::read_to_string(&ready).with_context(|| format!("reading {}", ready.display()))?,
    )?;
    let vms = SimVms::new(&sim.url, &sim.ca_pem)?;
    let browser = Browser::launch("demo").await?;
    let opened = browser.open("demo", &url).await?;
    ensure!(
        opened.http_status == Some(200),
        "the demo URL answered {:?}",
        opened.http_status
    );
    browser
        .wait("demo", Until::SCREEN, SCREEN_TIMEOUT)
        .await
        .context("the demo page never showed a screen")?;
    let (canvas, vm_screen) = browser
        .until_canvas_shows("demo", "screen", SCREEN_TIMEOUT, || vms.screen(VMID))
        .await?;
    ensure!(shows_the_same(&canvas, &vm_screen), "{canvas:?}");
    eprintln!(
        "demo-check: the page shows VM {VMID}'s screen ({}x{}); screenshots in {}",
        canvas.width,
        canvas.height,
        browser.artifacts().display()
    );
    browser.quit().await
}

/// The URL without its access token, for the log.
fn redact(url: &str) -> String {
    match url.split_once("#token=") {
        Some((before, _)) => format!("{before}#token=…"),
        None => url.to_string(),
    }
}

/// Ctrl-C: SIGINT to every process of make's group, then waits for make.
async fn interrupt_and_wait(demo: &mut Child) -> Result<()> {
    let pgid = demo.id().context("make demo already exited")?;
    let status = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .await?;
    ensure!(status.success(), "kill -INT -{pgid} failed");
    let exit = tokio::time::timeout(CLEANUP_TIMEOUT, demo.wait())
        .await
        .with_context(|| {
            format!("make demo did not stop within {CLEANUP_TIMEOUT:?} of Ctrl-C")
        })??;
    eprintln!("demo-check: make demo stopped after Ctrl-C ({exit})");
    Ok(())
}

/// Nothing the demo started is left: no VM of its simulator, no cluster.
async fn cleaned_up() -> Result<()> {
    let state = state_dir();
    let sim_dir = state.join("demo/sim");
    let vms = Command::new("pgrep")
        .args(["-f", &sim_dir.display().to_string()])
        .output()
        .await?;
    ensure!(
        vms.stdout.is_empty(),
        "processes of the demo's simulator are still running: {}",
        String::from_utf8_lossy(&vms.stdout)
    );
    ensure!(
        !state.join("kubeconfig").exists() && !state.join("pids/kube-apiserver").exists(),
        "the demo left the cluster running"
    );
    Ok(())
}
