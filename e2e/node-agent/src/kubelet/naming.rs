//! How the agent names and labels its podman containers. Labels carry the
//! pod identity, so a restarted agent finds its containers again and removes
//! those whose pod is gone.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

pub const NODE_LABEL: &str = "io.porthole.node";
pub const POD_UID_LABEL: &str = "io.porthole.pod.uid";
pub const POD_NAME_LABEL: &str = "io.porthole.pod.name";
pub const POD_NAMESPACE_LABEL: &str = "io.porthole.pod.namespace";
pub const ROLE_LABEL: &str = "io.porthole.role";
pub const CONTAINER_NAME_LABEL: &str = "io.porthole.container.name";
pub const RESTART_COUNT_LABEL: &str = "io.porthole.container.restart-count";

/// The container holding a pod's network, IPC and UTS namespaces.
pub const SANDBOX_ROLE: &str = "sandbox";
/// A container of the pod spec (init or regular).
pub const CONTAINER_ROLE: &str = "container";

/// Who a pod is, for naming things on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodIdentity {
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Labels shared by every container of the pod.
    pub fn labels(&self, node: &str, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NODE_LABEL.into(), node.into()),
            (POD_UID_LABEL.into(), self.uid.clone()),
            (POD_NAME_LABEL.into(), self.name.clone()),
            (POD_NAMESPACE_LABEL.into(), self.namespace.clone()),
            (ROLE_LABEL.into(), role.into()),
        ])
    }

    /// Docker-shim style: `k8s_POD_<pod>_<namespace>_<uid>_<attempt>`.
    pub fn sandbox_name(&self, attempt: u32) -> String {
        format!(
            "k8s_POD_{}_{}_{}_{attempt}",
            self.name, self.namespace, self.uid
        )
    }

    /// `k8s_<container>_<pod>_<namespace>_<uid>_<restart count>`.
    pub fn container_name(&self, container: &str, restart_count: i32) -> String {
        format!(
            "k8s_{container}_{}_{}_{}_{restart_count}",
            self.name, self.namespace, self.uid
        )
    }

    /// Where a container's logs are archived: `<namespace>_<pod>_<container>.log`.
    pub fn log_file_name(&self, container: &str) -> String {
        format!("{}_{}_{container}.log", self.namespace, self.name)
    }

    /// `name_namespace(uid)`, as kubelet writes pods in messages.
    pub fn describe(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let pod = PodIdentity {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        assert_eq!(pod.sandbox_name(0), "k8s_POD_web_ns_u1_0");
        assert_eq!(pod.container_name("app", 2), "k8s_app_web_ns_u1_2");
        assert_eq!(pod.log_file_name("app"), "ns_web_app.log");
        assert_eq!(pod.labels("node", SANDBOX_ROLE)[POD_UID_LABEL], "u1");
    }
}
