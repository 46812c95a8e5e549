//! The Node object: registration and the Ready heartbeat.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Pods the node accepts (kubelet's default `maxPods`).
const MAX_PODS: &str = "110";

/// What the Node reports about itself; gathered once at start-up.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub ip: Ipv4Addr,
    pub cpus: usize,
    pub memory_kib: u64,
    pub system: NodeSystemInfo,
}

impl NodeIdentity {
    /// Reads the host's facts; `kubelet_version` is the API server's version,
    /// as a kubelet of the same release would report.
    pub fn from_host(
        name: &str,
        ip: Ipv4Addr,
        kubelet_version: &str,
        runtime_version: &str,
    ) -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|value| value.trim_matches('"').to_owned())
            .unwrap_or_else(|| "Linux".into());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            name: name.to_owned(),
            ip,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib,
            system: NodeSystemInfo {
                architecture: architecture.into(),
                boot_id: read("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: format!("podman://{runtime_version}"),
                kernel_version: read("/proc/sys/kernel/osrelease"),
                kube_proxy_version: kubelet_version.into(),
                kubelet_version: kubelet_version.into(),
                machine_id: read("/etc/machine-id"),
                operating_system: std::env::consts::OS.into(),
                os_image,
                system_uuid: read("/etc/machine-id"),
                ..Default::default()
            },
        }
    }

    /// The labels kubelet puts on its Node; the scheduler matches `nodeSelector` against them.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("kubernetes.io/hostname".into(), self.name.clone()),
            (
                "kubernetes.io/os".into(),
                self.system.operating_system.clone(),
            ),
            (
                "kubernetes.io/arch".into(),
                self.system.architecture.clone(),
            ),
            (
                "beta.kubernetes.io/os".into(),
                self.system.operating_system.clone(),
            ),
            (
                "beta.kubernetes.io/arch".into(),
                self.system.architecture.clone(),
            ),
        ])
    }

    fn status(&self, ready_since: Timestamp, now: Timestamp) -> NodeStatus {
        let resources = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.cpus.to_string())),
            (
                "memory".to_owned(),
                Quantity(format!("{}Ki", self.memory_kib)),
            ),
            ("pods".to_owned(), Quantity(MAX_PODS.into())),
            ("ephemeral-storage".to_owned(), Quantity("20Gi".into())),
        ]);
        let pressure = |type_: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(ready_since)),
        };
        NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.name.clone(),
                },
            ]),
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            conditions: Some(vec![
                pressure(
                    "MemoryPressure",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                pressure(
                    "DiskPressure",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                pressure(
                    "PIDPressure",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("KubeletReady".into()),
                    message: Some("kubelet is posting ready status".into()),
                    last_heartbeat_time: Some(Time(now)),
                    last_transition_time: Some(Time(ready_since)),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints::default()),
            node_info: Some(self.system.clone()),
            ..Default::default()
        }
    }
}

/// Creates the Node if needed, then renews its status every `interval` until cancelled.
pub async fn run(
    client: Client,
    identity: NodeIdentity,
    interval: Duration,
    cancel: CancellationToken,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client);
    register(&nodes, &identity).await?;
    let ready_since = Timestamp::now();
    loop {
        let status = identity.status(ready_since, Timestamp::now());
        let patch = Patch::Merge(json!({ "status": status }));
        if let Err(err) = nodes
            .patch_status(&identity.name, &PatchParams::default(), &patch)
            .await
        {
            tracing::warn!(error = %err, "node heartbeat failed");
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn register(nodes: &Api<Node>, identity: &NodeIdentity) -> Result<(), kube::Error> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            labels: Some(identity.labels()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %identity.name, "registered node"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = Patch::Merge(json!({ "metadata": { "labels": identity.labels() } }));
            let params = PatchParams::default();
            nodes.patch(&identity.name, &params, &patch).await?;
            tracing::info!(node = %identity.name, "node already registered");
        }
        Err(err) => return Err(err),
    }
    Ok(())
}
