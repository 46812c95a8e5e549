//! Fake containers, **for the control-plane benchmark only** (`make bench`,
//! `--fake-containers`): porthole's proxy pods are reported Running and
//! Ready without running anything, so that a thousand sessions fit on one
//! test machine while the operator itself still runs for real.
//!
//! A fake pod gets a unique address from [`FAKE_POD_NETWORK`] (not podman's
//! 10.88.0.0/16), so its Service's EndpointSlice becomes ready and the
//! operator sees its session Ready. Nothing listens there: the operator's
//! viewer reads fail (`cluster-up.sh` routes the range to the host itself, so
//! they are refused at once rather than time out). Deleting such a pod just
//! removes it.
//! Every other pod (the operator's own, say) runs as usual.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use porthole_api::contract::labels;

use super::NodeContext;
use super::naming::PodIdentity;
use super::worker::WorkerInputs;
use crate::status::{self, Observed};

/// Where fake pods' addresses come from: 10.89.0.1 to 10.89.255.254.
pub const FAKE_POD_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 89, 0, 0), 16);
const RETRY: Duration = Duration::from_secs(2);

/// Whether `pod` is one of porthole's console proxy pods, the only ones faked.
pub fn is_faked(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::NAME))
        .is_some_and(|name| name == labels::PROXY_NAME)
}

/// Addresses handed to fake pods, each unique while its pod lives.
#[derive(Debug, Default)]
pub struct AddressPool {
    in_use: BTreeSet<u32>,
    next: u32,
}

impl AddressPool {
    const SIZE: u32 = 1 << (32 - FAKE_POD_NETWORK.1);

    fn address(offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(FAKE_POD_NETWORK.0) + offset)
    }

    fn offset(address: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(address).checked_sub(u32::from(FAKE_POD_NETWORK.0))?;
        (1..Self::SIZE - 1).contains(&offset).then_some(offset)
    }

    /// `wanted` (the address a pod already reports, after an agent restart)
    /// when it is in the range and free; else the next free one, round-robin
    /// so a released address is not reused at once. `None` when all are taken.
    pub fn allocate(&mut self, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(offset) = wanted.and_then(Self::offset)
            && self.in_use.insert(offset)
        {
            return Some(Self::address(offset));
        }
        for _ in 0..Self::SIZE {
            self.next = self.next % (Self::SIZE - 2) + 1;
            if self.in_use.insert(self.next) {
                return Some(Self::address(self.next));
            }
        }
        None
    }

    pub fn release(&mut self, address: Ipv4Addr) {
        if let Some(offset) = Self::offset(address) {
            self.in_use.remove(&offset);
        }
    }
}

/// The fake-containers mode's shared state.
#[derive(Debug, Default)]
pub struct FakeContainers {
    addresses: Mutex<AddressPool>,
}

impl FakeContainers {
    fn allocate(&self, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allocate(wanted)
    }

    fn release(&self, address: Ipv4Addr) {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(address);
    }
}

/// The statuses of a fake pod's containers: init containers completed,
/// the others running and ready since `started`.
pub fn container_statuses(
    pod: &Pod,
    started: Timestamp,
) -> (Vec<ContainerStatus>, Vec<ContainerStatus>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let base = |container: &k8s_openapi::api::core::v1::Container| ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: String::new(),
        container_id: Some(format!("fake://{uid}/{}", container.name)),
        restart_count: 0,
        ..Default::default()
    };
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ContainerStatus {
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(Time(started)),
                    finished_at: Some(Time(started)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ready: true,
            started: Some(false),
            ..base(c)
        })
        .collect();
    let regular = spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(started)),
                }),
                ..Default::default()
            }),
            ready: true,
            started: Some(true),
            ..base(c)
        })
        .collect();
    (init, regular)
}

/// Plays kubelet for one fake pod: reports it Running and Ready once, and
/// deletes it for good as soon as it is being deleted.
pub async fn run(ctx: Arc<NodeContext>, fake: Arc<FakeContainers>, mut inputs: WorkerInputs) {
    let mut pod = inputs.updates.borrow().clone();
    let id = PodIdentity::of(&pod);
    let reported = pod.status.as_ref();
    let wanted = reported
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let started = reported
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(Timestamp::now, |t| t.0);
    let address = fake.allocate(wanted);
    if address.is_none() {
        tracing::error!(pod = %id.describe(), "no fake pod address left");
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let mut written: Option<PodStatus> = None;
    let mut retry_at = None;
    loop {
        if inputs.vanished.is_cancelled() {
            break;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(id.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&id.name, &params).await {
                Ok(_) => tracing::debug!(pod = %id.describe(), "fake pod deleted"),
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(err) => tracing::warn!(pod = %id.describe(), error = %err, "cannot delete pod"),
            }
            break;
        }
        if let (None, Some(address)) = (&written, address) {
            let (init_statuses, statuses) = container_statuses(&pod, started);
            let host_ip = ctx.node_ip.to_string();
            let address = address.to_string();
            let status = status::pod_status(Observed {
                pod: &pod,
                init_statuses,
                statuses,
                pod_ip: Some(&address),
                host_ip: &host_ip,
                start_time: Some(started),
                sandbox_ready: true,
                terminal: false,
                now: Timestamp::now(),
            });
            let patch = Patch::Strategic(status::status_patch(&pod, &status));
            match pods
                .patch_status(&id.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    tracing::debug!(pod = %id.describe(), ip = %address, "fake pod running");
                    written = Some(status);
                    retry_at = None;
                }
                Err(kube::Error::Api(err)) if matches!(err.code, 404 | 409) => {
                    written = Some(status);
                }
                Err(err) => {
                    tracing::warn!(pod = %id.describe(), error = %err, "cannot write pod status");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                }
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = inputs.vanished.cancelled() => {}
            changed = inputs.updates.changed() => match changed {
                Ok(()) => pod = inputs.updates.borrow_and_update().clone(),
                Err(_) => break,
            },
            () = retry => retry_at = None,
        }
    }
    if let Some(address) = address {
        fake.release(address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn pod(name_label: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("u1".into()),
                labels: name_label.map(|v| {
                    [(labels::NAME.to_string(), v.to_string())]
                        .into_iter()
                        .collect()
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "proxy".into(),
                    image: Some("porthole/proxy:dev".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_proxy_pods_are_faked() {
        assert!(is_faked(&pod(Some("porthole-proxy"))));
        assert!(!is_faked(&pod(Some("porthole-operator"))));
        assert!(!is_faked(&pod(None)));
    }

    #[test]
    fn addresses_are_unique_and_outside_podman_range() {
        let mut pool = AddressPool::default();
        let a = pool.allocate(None).unwrap();
        let b = pool.allocate(None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(b, Ipv4Addr::new(10, 89, 0, 2));
        pool.release(a);
        // Round-robin: a released address is not handed out again at once.
        assert_eq!(pool.allocate(None), Some(Ipv4Addr::new(10, 89, 0, 3)));
        // A pod keeps the address it reports, when free; a taken one is not shared.
        assert_eq!(pool.allocate(Some(a)), Some(a));
        assert_eq!(pool.allocate(Some(b)), Some(Ipv4Addr::new(10, 89, 0, 4)));
        // Out of range (podman's network) is not honoured.
        let podman = Ipv4Addr::new(10, 88, 0, 5);
        assert_eq!(
            pool.allocate(Some(podman)),
            Some(Ipv4Addr::new(10, 89, 0, 5))
        );
    }

    #[test]
    fn the_pool_runs_out_and_wraps_around() {
        let mut pool = AddressPool::default();
        let mut seen = BTreeSet::new();
        while let Some(address) = pool.allocate(None) {
            assert!(seen.insert(address), "{address} handed out twice");
        }
        assert_eq!(seen.len(), 65_534);
        assert_eq!(seen.first(), Some(&Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(seen.last(), Some(&Ipv4Addr::new(10, 89, 255, 254)));
        pool.release(Ipv4Addr::new(10, 89, 7, 7));
        assert_eq!(pool.allocate(None), Some(Ipv4Addr::new(10, 89, 7, 7)));
    }

    #[test]
    fn fake_pods_report_running_and_ready() {
        let p = pod(Some("porthole-proxy"));
        let started = Timestamp::now();
        let (init, regular) = container_statuses(&p, started);
        assert!(init.is_empty());
        assert_eq!(regular.len(), 1);
        let status = status::pod_status(Observed {
            pod: &p,
            init_statuses: init,
            statuses: regular,
            pod_ip: Some("10.89.0.1"),
            host_ip: "10.200.0.1",
            start_time: Some(started),
            sandbox_ready: true,
            terminal: false,
            now: started,
        });
        assert_eq!(status.phase.as_deref(), Some(status::RUNNING));
        assert_eq!(status.pod_ip.as_deref(), Some("10.89.0.1"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}
