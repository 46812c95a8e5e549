//! Access to the test cluster: a kube client, `kubectl`, and a namespace per test
//! that reports what happened in it when the test fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use porthole_api::v1alpha1::{ConsoleSession, ConsoleSessionStatus};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// porthole's namespace (`make install`): the operator, Hypervisor
/// credentials, and every session's proxy Pod, Secret, Service, Ingress and
/// NetworkPolicy.
pub const PORTHOLE_NAMESPACE: &str = "porthole-system";

/// An API for a kind of session children, in porthole's namespace.
pub fn children_api<K>(client: &Client) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), PORTHOLE_NAMESPACE)
}

/// The name shared by session `ns/name`'s children in porthole's namespace
/// (`contract::child_name`, from the session's uid).
pub async fn child_name(client: &Client, ns: &str, name: &str) -> Result<String> {
    let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), ns);
    let uid = sessions
        .get(name)
        .await
        .with_context(|| format!("reading ConsoleSession {ns}/{name}"))?
        .metadata
        .uid
        .context("a stored session has a uid")?;
    Ok(porthole_api::contract::child_name(name, &uid))
}

/// The proxy pods of namespace `ns`'s sessions.
pub async fn session_pods(
    client: &Client,
    ns: &str,
) -> Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = children_api(client);
    let selector = format!("{}={ns}", porthole_api::contract::labels::SESSION_NAMESPACE);
    Ok(pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?
        .items)
}

/// The kubeconfig the test cluster writes (`make cluster-up`).
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.e2e/kubeconfig"
            ))
        })
}

/// The test bed's state directory (`.e2e`, or `PORTHOLE_STATE`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("PORTHOLE_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.e2e")))
}

/// kubectl built with the control plane (same version as the apiserver).
pub fn kubectl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PORTHOLE_KUBECTL") {
        return path.into();
    }
    cache_dir().join("kubernetes-v1.35.4/kubectl")
}

/// Helm built with the control plane (`e2e/scripts/build-controlplane.sh helm`).
pub fn helm_path() -> PathBuf {
    cache_dir().join("helm-v3.21.4-k8s-v1.35.4/helm")
}

/// Where the expensive builds live (`e2e/scripts/lib.sh`'s `CACHE`).
fn cache_dir() -> PathBuf {
    std::env::var_os("PORTHOLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/porthole")
        })
}

/// The test cluster's client settings, from its kubeconfig.
async fn config() -> Result<Config> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path())
        .context("reading the test cluster's kubeconfig: run `make cluster-up` first")?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)
}

pub async fn client() -> Result<Client> {
    Ok(Client::try_from(config().await?)?)
}

/// A client acting as `user` (impersonated by the test bed's admin), in the
/// group every authenticated user has, as a person with kubectl would.
pub async fn client_as(user: &str) -> Result<Client> {
    let mut config = config().await?;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(vec!["system:authenticated".to_string()]);
    Ok(Client::try_from(config)?)
}

/// Runs kubectl with `stdin`, returning stdout; fails with kubectl's stderr.
pub async fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let output = kubectl_output(args, stdin).await?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs kubectl and returns its whole output, success or not.
pub async fn kubectl_output(args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.unwrap_or("").as_bytes()).await?;
    drop(input);
    Ok(child.wait_with_output().await?)
}

/// A namespace of its own for one test. On drop it prints the namespace's Events
/// and pod logs when the test is failing, then deletes the namespace.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}-{}", unique_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"porthole.dev/e2e": "true"}}
        }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        let failing = std::thread::panicking();
        // Drop cannot be async: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                if failing {
                    for args in [
                        vec![
                            "-n",
                            &name,
                            "get",
                            "all,consolesessions,events",
                            "-o",
                            "wide",
                        ],
                        vec!["-n", &name, "get", "consolesessions", "-o", "yaml"],
                    ] {
                        if let Ok(out) = kubectl_output(&args, None).await {
                            eprintln!(
                                "--- kubectl {}\n{}{}",
                                args.join(" "),
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr)
                            );
                        }
                    }
                }
                let _ = kubectl_output(&["delete", "namespace", &name, "--wait=false"], None).await;
            });
            Some(())
        })
        .join();
    }
}

/// A cluster-scoped vnc Hypervisor for the test's VMs, deleted on drop.
pub struct TestHypervisor {
    pub name: String,
}

impl TestHypervisor {
    /// The test VMs' host, ports 5910-5930.
    pub async fn vnc(prefix: &str) -> Result<Self> {
        Self::create(
            prefix,
            &format!(
                "vnc: {{host: {}, ports: {{first: 5910, last: 5930}}}}",
                crate::HYPERVISOR_HOST
            ),
        )
        .await
    }

    pub async fn create(prefix: &str, kind: &str) -> Result<Self> {
        let name = format!("{prefix}-{}", unique_suffix());
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: Hypervisor\nmetadata: {{name: {name}}}\n\
             spec:\n  allowedNamespaces: {{}}\n  maxTimeout: 1h\n  {kind}\n"
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        Ok(TestHypervisor { name })
    }
}

impl Drop for TestHypervisor {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(kubectl(
                &["delete", "hypervisor", &name, "--wait=false"],
                None,
            ))
            .ok()
        })
        .join();
    }
}

/// `kubectl apply` of one object, as the JSON form of its manifest.
pub async fn apply(object: &serde_json::Value) -> Result<()> {
    kubectl(&["apply", "-f", "-"], Some(&serde_json::to_string(object)?)).await?;
    Ok(())
}

/// `kubectl wait --for=CONDITION` on a ConsoleSession, such as
/// `condition=Ready` or `jsonpath={.status.phase}=Expired`.
pub async fn wait_for_session(
    namespace: &str,
    name: &str,
    condition: &str,
    timeout: Duration,
) -> Result<()> {
    kubectl(
        &[
            "-n",
            namespace,
            "wait",
            &format!("--for={condition}"),
            &format!("consolesession/{name}"),
            &format!("--timeout={}s", timeout.as_secs()),
        ],
        None,
    )
    .await?;
    Ok(())
}

/// Waits (`kubectl wait`) until session `name` in `sessions`' namespace is
/// Ready, and returns its status then.
pub async fn ready_status(
    sessions: &Api<ConsoleSession>,
    name: &str,
    timeout: Duration,
) -> Result<ConsoleSessionStatus> {
    let namespace = sessions.namespace().context("a namespaced API")?;
    wait_for_session(namespace, name, "condition=Ready", timeout).await?;
    sessions
        .get(name)
        .await?
        .status
        .with_context(|| format!("the Ready session {name} has no status"))
}

/// A short random suffix so parallel tests never share names.
pub fn unique_suffix() -> String {
    let n: u32 = rand::rng().random();
    format!("{n:08x}")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` saying what
/// it waited for. For conditions no watch can express.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut last_error = None;
    loop {
        poll.tick().await;
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_error:?})");
        }
    }
}

/// Waits until a session's Pod, Service and Secret (all named `child`, in
/// porthole's namespace) are gone.
pub async fn wait_until_children_gone(
    client: &Client,
    child: &str,
    timeout: Duration,
) -> Result<()> {
    use k8s_openapi::api::core::v1::{Pod, Secret, Service};
    let pods: Api<Pod> = children_api(client);
    let services: Api<Service> = children_api(client);
    let secrets: Api<Secret> = children_api(client);
    eventually(
        timeout,
        &format!("{PORTHOLE_NAMESPACE}/{child}'s Pod, Service and Secret to be deleted"),
        || {
            let (pods, services, secrets) = (pods.clone(), services.clone(), secrets.clone());
            async move {
                let gone = pods.get_opt(child).await?.is_none()
                    && services.get_opt(child).await?.is_none()
                    && secrets.get_opt(child).await?.is_none();
                Ok(gone.then_some(()))
            }
        },
    )
    .await
}

/// Waits for an Event with `reason` about the object `name` in `ns` and returns
/// its note. The operator records Events after it writes status, so a test that
/// has just seen the status must wait for the Event rather than look once.
pub async fn event_note(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<String> {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::ListParams;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let selector = format!("involvedObject.name={name},reason={reason}");
    eventually(
        timeout,
        &format!("a {reason} Event for {ns}/{name}"),
        || {
            let (events, selector) = (events.clone(), selector.clone());
            async move {
                let list = events
                    .list(&ListParams::default().fields(&selector))
                    .await?;
                Ok(list
                    .items
                    .into_iter()
                    .next()
                    .map(|e| e.message.unwrap_or_default()))
            }
        },
    )
    .await
}

/// Adds a fault-injection test's figures to `.e2e/reliability/faults.jsonl`,
/// which `docs/reliability.md` is written from.
pub fn record_figures(figures: &serde_json::Value) -> Result<()> {
    use std::io::Write as _;
    let dir = state_dir().join("reliability");
    std::fs::create_dir_all(&dir)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("faults.jsonl"))?;
    writeln!(file, "{figures}")?;
    Ok(())
}

// --- Control-plane faults (tests/restarts.rs, tests/apiserver.rs) ---

/// Stops (`"stop"`) or starts again (`"start"`) the test bed's kube-apiserver
/// with `e2e/scripts/apiserver.sh`; `start` returns once `/readyz` answers.
pub async fn apiserver(action: &str) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/apiserver.sh");
    let output = Command::new(script)
        .arg(action)
        .env("PORTHOLE_STATE", state_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running e2e/scripts/apiserver.sh")?;
    if !output.status.success() {
        bail!(
            "apiserver.sh {action} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Force-deletes every operator pod (no graceful shutdown, so the leadership
/// Lease is not released) and returns how many there were: the Deployment
/// starts another, which leads once the dead one's Lease expires.
pub async fn kill_operator() -> Result<usize> {
    let out = kubectl(
        &[
            "-n",
            "porthole-system",
            "delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=porthole-operator",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    )
    .await?;
    Ok(out.lines().filter(|l| l.contains("deleted")).count())
}

/// Fault injection on the test bed's node: what a pod's network sees, and
/// what a session leaves behind.
pub mod faults {
    use std::time::Duration;

    use anyhow::{Context as _, Result, bail};
    use k8s_openapi::api::core::v1::{Pod, Secret, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::Client;
    use kube::api::{Api, ListParams};
    use tokio::process::Command;

    use porthole_api::contract::labels;

    /// The host pid of the pod's sandbox (its network namespace's holder),
    /// found by the labels the node agent puts on its podman containers.
    pub async fn sandbox_pid(pod_uid: &str) -> Result<u32> {
        let ids = run(
            "podman",
            &[
                "ps",
                "--filter",
                &format!("label=io.porthole.pod.uid={pod_uid}"),
                "--filter",
                "label=io.porthole.role=sandbox",
                "--format",
                "{{.ID}}",
            ],
        )
        .await?;
        let id = ids
            .lines()
            .next()
            .context("no running sandbox for the pod")?;
        let pid = run("podman", &["inspect", "--format", "{{.State.Pid}}", id]).await?;
        let pid: u32 = pid.trim().parse().context("the sandbox's pid")?;
        if pid == 0 {
            bail!("the pod's sandbox is not running");
        }
        Ok(pid)
    }

    /// The operator's pod IP and the host pid of its container's process,
    /// found by the labels the node agent puts on its podman containers.
    pub async fn operator_process(client: &Client) -> Result<(String, u32)> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), super::PORTHOLE_NAMESPACE);
        let pod = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=porthole-operator"))
            .await?
            .items
            .into_iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .context("no running operator pod")?;
        let uid = pod.metadata.uid.clone().context("the pod's uid")?;
        let ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .context("the operator's pod IP")?;
        let ids = run(
            "podman",
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=io.porthole.pod.uid={uid}"),
                "--filter",
                "label=io.porthole.role=container",
            ],
        )
        .await?;
        let id = ids.lines().next().context("no operator container")?;
        let pid: u32 = run("podman", &["inspect", "--format", "{{.State.Pid}}", id])
            .await?
            .trim()
            .parse()
            .context("the operator's pid")?;
        Ok((ip, pid))
    }

    /// A process's resident memory, in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(pid: u32) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS")
    }

    /// Cuts the network between the pod and `host:port`, both ways, without
    /// a word to either side (packets dropped: no reset, no ICMP), inside the
    /// pod's network namespace only. The rules go with the namespace.
    pub async fn cut_pod_from(pod_uid: &str, host: &str, port: u16) -> Result<()> {
        let netns = format!("--net=/proc/{}/ns/net", sandbox_pid(pod_uid).await?);
        let port = port.to_string();
        for rule in [
            ["OUTPUT", "-d", host, "--dport", &port],
            ["INPUT", "-s", host, "--sport", &port],
        ] {
            let [chain, dir, addr, port_flag, port] = rule;
            run(
                "nsenter",
                &[
                    &netns, "iptables", "-w", "-I", chain, dir, addr, "-p", "tcp", port_flag, port,
                    "-j", "DROP",
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// How many Pods, Services, Secrets and NetworkPolicies of sessions in
    /// namespace `ns` are left (in porthole's namespace, where they live).
    async fn orphans(client: &Client, ns: &str) -> Result<usize> {
        let lp = ListParams::default().labels(&format!("{}={ns}", labels::SESSION_NAMESPACE));
        let pods: Api<Pod> = super::children_api(client);
        let services: Api<Service> = super::children_api(client);
        let secrets: Api<Secret> = super::children_api(client);
        let policies: Api<NetworkPolicy> = super::children_api(client);
        Ok(pods.list_metadata(&lp).await?.items.len()
            + services.list_metadata(&lp).await?.items.len()
            + secrets.list_metadata(&lp).await?.items.len()
            + policies.list_metadata(&lp).await?.items.len())
    }

    /// The children of `ns`'s sessions left once the operator has had `grace`
    /// to remove those of deleted or ended sessions: zero as soon as nothing
    /// is left, else the count at the end.
    pub async fn orphans_after(client: &Client, ns: &str, grace: Duration) -> Result<usize> {
        let gone = super::eventually(grace, "every session's children to be deleted", || async {
            Ok((orphans(client, ns).await? == 0).then_some(()))
        })
        .await;
        match gone {
            Ok(()) => Ok(0),
            Err(_) => orphans(client, ns).await,
        }
    }

    async fn run(program: &str, args: &[&str]) -> Result<String> {
        let output = Command::new(program)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }
}
