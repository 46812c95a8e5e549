//! Recorded sessions (`spec.record`) on the test bed: the administrator's
//! claim in porthole's namespace, named by the Hypervisor and bound to a
//! `hostPath` PersistentVolume, a viewer, and the recording read back from the
//! host. VNC port: 5918.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use porthole_api::contract;
use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
use porthole_e2e::HYPERVISOR_HOST;
use porthole_e2e::cluster::{
    PORTHOLE_NAMESPACE, TestHypervisor, TestNamespace, child_name, children_api, client,
    event_note, kubectl, kubectl_output, unique_suffix, wait_for_session,
};
use porthole_e2e::rfb;
use porthole_e2e::vm::Vm;

const PORT: u16 = 5918;
/// The proxy's user and group (the pod's `fsGroup`).
const PROXY_ID: u32 = 65532;
const WAIT: Duration = Duration::from_secs(90);

/// A claim `name` in porthole's namespace, bound to a `hostPath`
/// PersistentVolume on a directory of the test host that the proxy's group
/// may write, as an administrator prepares one (kubelet applies no `fsGroup`
/// to `hostPath`). Drop deletes the claim, the volume and, unless the test
/// failed, the directory.
struct HostClaim {
    name: String,
    volume: String,
    dir: PathBuf,
}

impl HostClaim {
    async fn create(name: &str) -> Result<Self> {
        let namespace = PORTHOLE_NAMESPACE;
        let volume = format!("recordings-{}", unique_suffix());
        let dir = std::env::temp_dir().join(format!("porthole-{volume}"));
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::chown(&dir, None, Some(PROXY_ID))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770))?;
        let claim = HostClaim {
            name: name.to_string(),
            volume,
            dir,
        };
        let manifest = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {volume}}}\n\
             spec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  \
             persistentVolumeReclaimPolicy: Retain\n  storageClassName: ''\n  \
             claimRef: {{namespace: {namespace}, name: {name}}}\n  \
             hostPath: {{path: {dir}, type: Directory}}\n\
             ---\n\
             apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: ''\n  volumeName: {volume}\n  \
             resources: {{requests: {{storage: 1Gi}}}}\n",
            volume = claim.volume,
            dir = claim.dir.display(),
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        kubectl(
            &[
                "-n",
                namespace,
                "wait",
                "--for=jsonpath={.status.phase}=Bound",
                &format!("pvc/{name}"),
                "--timeout=60s",
            ],
            None,
        )
        .await
        .context("the claim never bound: is persistentvolume-binder-controller running (make cluster-up)?")?;
        Ok(claim)
    }
}

impl Drop for HostClaim {
    fn drop(&mut self) {
        let (volume, claim) = (self.volume.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let _ = kubectl_output(
                    &[
                        "-n",
                        PORTHOLE_NAMESPACE,
                        "delete",
                        "pvc",
                        &claim,
                        "--wait=false",
                    ],
                    None,
                )
                .await;
                kubectl_output(
                    &["delete", "persistentvolume", &volume, "--wait=false"],
                    None,
                )
                .await
            })
            .ok()
        })
        .join();
        if std::thread::panicking() {
            eprintln!("--- the recordings are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn session(ns: &str, name: &str, hypervisor: &str, extra: &str) -> String {
    format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  hypervisor: {hypervisor}\n  vm: {{port: {PORT}}}\n  record: {{}}\n{extra}"
    )
}

/// A vnc Hypervisor whose sessions may be recorded into `claim`.
async fn recording_hypervisor(prefix: &str, claim: &str) -> Result<TestHypervisor> {
    TestHypervisor::create(
        prefix,
        &format!(
            "vnc: {{host: {HYPERVISOR_HOST}, ports: {{first: 5910, last: 5930}}}}\n  \
             recording: {{claimName: {claim}}}"
        ),
    )
    .await
}

/// The recording's chunks in one direction (`{` from the VM, `}` from the
/// viewer), decoded: websockify's `'{MS{DATA',` lines, DATA escaped as in a
/// JavaScript string.
fn chunks(recording: &str, mark: char) -> Vec<Vec<u8>> {
    recording
        .lines()
        .filter_map(|line| line.strip_prefix('\'')?.strip_suffix("',"))
        .filter_map(|body| {
            let rest = body.strip_prefix(mark)?;
            Some(rest.split_once(mark)?.1)
        })
        .map(unescape)
        .collect()
}

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[tokio::test]
async fn a_recorded_session_leaves_the_viewers_console_in_its_claim() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "record").await?;
    let claim = HostClaim::create(&format!("recordings-{}", unique_suffix())).await?;
    let hypervisor = recording_hypervisor("record", &claim.name).await?;
    let _vm = Vm::start(HYPERVISOR_HOST, PORT).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);

    kubectl(
        &["apply", "-f", "-"],
        Some(&session(
            &ns.name,
            "taped",
            &hypervisor.name,
            "  runOnce: true\n",
        )),
    )
    .await?;
    wait_for_session(&ns.name, "taped", "condition=Ready", WAIT).await?;
    let taped = sessions.get("taped").await?;
    let uid = taped.uid().context("the session's uid")?;
    let url = taped
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .context("url")?;

    let mut console = rfb::open_viewer(&url).await?;
    console.press_key(0x61).await?; // 'a'
    let seen = console.received().to_vec();
    console.close().await;
    wait_for_session(
        &ns.name,
        "taped",
        &format!("jsonpath={{.status.phase}}={:?}", SessionPhase::Completed),
        WAIT,
    )
    .await?;

    let base = claim
        .dir
        .join(contract::recording_base(&ns.name, "taped", &uid));
    let file = PathBuf::from(format!("{}.1", base.display()));
    let recording = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the recording {}", file.display()))?;
    ensure!(
        recording.starts_with("var VNC_frame_data = [\n"),
        "not a websockify recording: {:?}",
        &recording[..recording.len().min(200)]
    );
    ensure!(
        recording.ends_with("'EOF'];\n"),
        "the recording of a finished session is complete"
    );
    let from_vm: Vec<u8> = chunks(&recording, '{').concat();
    let from_viewer: Vec<u8> = chunks(&recording, '}').concat();
    // The viewer's own RFB stream: the proxy's version and security type None,
    // the viewer's answers, then the VM's screen as the viewer received it.
    ensure!(
        from_vm.starts_with(b"RFB 003.008\n\x01\x01\x00\x00\x00\x00"),
        "the version exchange, from the proxy: {:?}",
        &from_vm[..from_vm.len().min(16)]
    );
    ensure!(
        from_viewer.starts_with(b"RFB 003.008\n\x01"),
        "the version exchange, from the viewer: {:?}",
        &from_viewer[..from_viewer.len().min(16)]
    );
    ensure!(
        from_vm.starts_with(&seen),
        "the recording holds what the viewer saw, in order"
    );
    let key_down = [4, 1, 0, 0, 0, 0, 0, 0x61];
    let key_up = [4, 0, 0, 0, 0, 0, 0, 0x61];
    ensure!(
        from_viewer.windows(8).any(|w| w == key_down)
            && from_viewer.windows(8).any(|w| w == key_up),
        "the key press is recorded"
    );
    ensure!(
        !PathBuf::from(format!("{}.2", base.display())).exists(),
        "one viewer, one recording"
    );
    // Written by the non-root proxy, into a directory only it may read, as
    // a file no one else may write.
    let dir = std::fs::metadata(file.parent().context("its directory")?)?;
    ensure!(
        dir.uid() == PROXY_ID && dir.mode() & 0o007 == 0,
        "the recording directory is the proxy's and private: uid {}, mode {:o}",
        dir.uid(),
        dir.mode()
    );
    let written = std::fs::metadata(&file)?;
    ensure!(
        written.mode() & 0o137 == 0,
        "the recording is mode 0640 or tighter: {:o}",
        written.mode()
    );
    Ok(())
}

#[tokio::test]
async fn a_symlink_planted_in_the_recording_claim_is_not_followed() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "symlink").await?;
    let claim = HostClaim::create(&format!("recordings-{}", unique_suffix())).await?;
    let hypervisor = recording_hypervisor("symlink", &claim.name).await?;
    // Another session's compromised proxy, writing to the shared claim, points
    // this namespace's directory somewhere else.
    let elsewhere = std::env::temp_dir().join(format!("porthole-elsewhere-{}", unique_suffix()));
    std::fs::create_dir_all(&elsewhere)?;
    std::os::unix::fs::chown(&elsewhere, None, Some(PROXY_ID))?;
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o2770))?;
    std::os::unix::fs::symlink(&elsewhere, claim.dir.join(&ns.name))?;

    kubectl(
        &["apply", "-f", "-"],
        Some(&session(&ns.name, "planted", &hypervisor.name, "")),
    )
    .await?;
    wait_for_session(
        &ns.name,
        "planted",
        "jsonpath={.status.reason}=RecordingFailed",
        WAIT,
    )
    .await?;
    let leaked: Vec<_> = std::fs::read_dir(&elsewhere)?.collect();
    let _ = std::fs::remove_dir_all(&elsewhere);
    ensure!(
        leaked.is_empty(),
        "the proxy followed the symlink and wrote {leaked:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_session_naming_a_missing_claim_waits_for_it_without_a_pod() -> Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "noclaim").await?;
    let later = format!("later-{}", unique_suffix());
    let hypervisor = recording_hypervisor("noclaim", &later).await?;
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = children_api(&client);

    // The apiserver refuses a session naming a claim of its own, in words.
    let own = format!(
        "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: own, namespace: {}}}\n\
         spec:\n  hypervisor: {}\n  vm: {{port: {PORT}}}\n  record: {{claimName: mine}}\n",
        ns.name, hypervisor.name
    );
    let bad = kubectl_output(&["apply", "-f", "-"], Some(&own)).await?;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && stderr.contains("spec.record.claimName is no longer supported"),
        "{stderr}"
    );

    kubectl(
        &["apply", "-f", "-"],
        Some(&session(&ns.name, "waiting", &hypervisor.name, "")),
    )
    .await?;
    wait_for_session(
        &ns.name,
        "waiting",
        "jsonpath={.status.reason}=RecordingClaimNotFound",
        WAIT,
    )
    .await?;
    let status = sessions.get("waiting").await?.status.context("status")?;
    ensure!(status.phase == Some(SessionPhase::Pending), "{status:?}");
    let message = status.message.unwrap_or_default();
    ensure!(
        message.contains(&format!("claim \"{later}\" does not exist"))
            && message.contains(PORTHOLE_NAMESPACE),
        "{message}"
    );
    let note = event_note(&client, &ns.name, "waiting", "RecordingClaimNotFound", WAIT).await?;
    ensure!(note.contains(&format!("\"{later}\"")), "{note}");
    let child = child_name(&client, &ns.name, "waiting").await?;
    ensure!(
        pods.get_opt(&child).await?.is_none(),
        "no pod is started for a claim that does not exist"
    );

    // Recording cannot be switched off (or on) once the session exists.
    let changed = kubectl_output(
        &[
            "-n",
            &ns.name,
            "patch",
            "consolesession",
            "waiting",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/record"}]"#,
        ],
        None,
    )
    .await?;
    let stderr = String::from_utf8_lossy(&changed.stderr);
    ensure!(
        !changed.status.success()
            && stderr.contains("spec.record cannot be added, changed or removed"),
        "{stderr}"
    );

    // Once the administrator creates the claim, the session starts.
    let _claim = HostClaim::create(&later).await?;
    wait_for_session(&ns.name, "waiting", "condition=Ready", WAIT).await?;
    ensure!(pods.get_opt(&child).await?.is_some());
    Ok(())
}
