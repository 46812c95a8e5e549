//! A pod-spec container as a podman container (pure).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

use crate::env;
use crate::image;
use crate::podman::{BindMount, ContainerConfig, Namespaces, Resources, RootFs, Security};
use crate::quantity::{self, InvalidQuantity};

/// Everything decided before a container is created.
pub struct ContainerPlan<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub sandbox_id: &'a str,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
}

/// Kubelet's minimum CPU shares.
const MIN_CPU_SHARES: u64 = 2;

pub fn container_config(plan: ContainerPlan<'_>) -> Result<ContainerConfig, InvalidQuantity> {
    let container = plan.container;
    let pod_security = plan
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let security = container.security_context.as_ref();
    let (entrypoint, args) = env::expand_command(container, &plan.env);
    Ok(ContainerConfig {
        name: plan.name,
        source: RootFs::Image(image::normalize(
            container.image.as_deref().unwrap_or_default(),
        )),
        labels: plan.labels,
        entrypoint,
        args,
        env: plan.env,
        working_dir: container.working_dir.clone().filter(|d| !d.is_empty()),
        user: user(security, pod_security),
        supplemental_groups: supplemental_groups(pod_security),
        namespaces: Namespaces::JoinContainer(plan.sandbox_id.to_owned()),
        mounts: plan.mounts,
        security: security_options(security, pod_security),
        resources: resources(container)?,
        stop_signal: None,
    })
}

/// `runAsUser[:runAsGroup]`, the container's settings overriding the pod's.
/// A group without a user cannot be expressed to podman and is left to the image.
fn user(container: Option<&SecurityContext>, pod: Option<&PodSecurityContext>) -> Option<String> {
    let uid = container
        .and_then(|c| c.run_as_user)
        .or(pod.and_then(|p| p.run_as_user))?;
    let gid = container
        .and_then(|c| c.run_as_group)
        .or(pod.and_then(|p| p.run_as_group));
    Some(match gid {
        Some(gid) => format!("{uid}:{gid}"),
        None => uid.to_string(),
    })
}

/// `fsGroup` and `supplementalGroups` both become supplemental groups.
fn supplemental_groups(pod: Option<&PodSecurityContext>) -> Vec<i64> {
    let Some(pod) = pod else {
        return Vec::new();
    };
    let mut groups: Vec<i64> = pod.fs_group.into_iter().collect();
    groups.extend(pod.supplemental_groups.iter().flatten());
    groups.dedup();
    groups
}

fn security_options(
    container: Option<&SecurityContext>,
    pod: Option<&PodSecurityContext>,
) -> Security {
    let seccomp = container
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()));
    let capabilities = container.and_then(|c| c.capabilities.as_ref());
    Security {
        read_only_root: container
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        privileged: container.and_then(|c| c.privileged).unwrap_or(false),
        no_new_privileges: container.and_then(|c| c.allow_privilege_escalation) == Some(false),
        // RuntimeDefault is podman's default profile; Localhost profiles are not supported.
        seccomp_unconfined: seccomp.is_some_and(|s| s.type_ == "Unconfined"),
        cap_add: capabilities.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: capabilities
            .and_then(|c| c.drop.clone())
            .unwrap_or_default(),
    }
}

fn resources(container: &Container) -> Result<Resources, InvalidQuantity> {
    let Some(requirements) = &container.resources else {
        return Ok(Resources::default());
    };
    let limit = |name: &str| requirements.limits.as_ref().and_then(|l| l.get(name));
    let request = |name: &str| requirements.requests.as_ref().and_then(|r| r.get(name));
    let memory_limit_bytes = limit("memory").map(|q| quantity::units(&q.0)).transpose()?;
    let cpu_limit_millis = limit("cpu").map(|q| quantity::millis(&q.0)).transpose()?;
    // Kubernetes defaults a missing request to the limit.
    let cpu_request = request("cpu").or(limit("cpu"));
    let cpu_shares = cpu_request
        .map(|q| quantity::millis(&q.0))
        .transpose()?
        .map(|millis| (millis * 1024 / 1000).max(MIN_CPU_SHARES));
    Ok(Resources {
        memory_limit_bytes,
        cpu_limit_millis,
        cpu_shares,
    })
}

/// Kubelet's `runAsNonRoot` check: the effective user must be known to be non-root.
pub fn verify_non_root(pod: &Pod, container: &Container, image_user: &str) -> Result<(), String> {
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let security = container.security_context.as_ref();
    let required = security
        .and_then(|c| c.run_as_non_root)
        .or(pod_security.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if !required {
        return Ok(());
    }
    let uid = security
        .and_then(|c| c.run_as_user)
        .or(pod_security.and_then(|p| p.run_as_user));
    match uid {
        Some(0) => Err("container's runAsUser breaks non-root policy".into()),
        Some(_) => Ok(()),
        None => {
            let image_uid = image_user.split(':').next().unwrap_or_default();
            match image_uid.parse::<i64>() {
                Ok(0) => Err("container has runAsNonRoot and image will run as root".into()),
                Ok(_) => Ok(()),
                Err(_) if image_uid.is_empty() || image_uid == "root" => {
                    Err("container has runAsNonRoot and image will run as root".into())
                }
                Err(_) => Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({image_uid}), \
                     cannot verify user is non-root"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const PROXY_POD: &str = r#"
metadata: {name: proxy, namespace: porthole, uid: u-1}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: proxy
    image: porthole/proxy:dev
    command: [/proxy]
    args: [--listen=$(LISTEN)]
    workingDir: /work
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    resources:
      limits: {memory: 128Mi, cpu: 500m}
      requests: {cpu: 100m}
"#;

    #[test]
    fn builds_the_podman_container_from_the_pod_spec() {
        let pod = pod(PROXY_POD);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mount = BindMount {
            source: "/state/pods/u-1/volumes/tls".into(),
            destination: "/tls".into(),
            read_only: true,
        };
        let config = container_config(ContainerPlan {
            pod: &pod,
            container,
            name: "k8s_proxy".into(),
            labels: BTreeMap::new(),
            sandbox_id: "sandbox-1",
            env: vec![("LISTEN".into(), ":8443".into())],
            mounts: vec![mount.clone()],
        })
        .unwrap();
        assert_eq!(
            config.source,
            RootFs::Image("localhost/porthole/proxy:dev".into())
        );
        assert_eq!(config.entrypoint, Some(vec!["/proxy".to_owned()]));
        assert_eq!(config.args, ["--listen=:8443"]);
        assert_eq!(config.working_dir.as_deref(), Some("/work"));
        assert_eq!(config.user.as_deref(), Some("65532:65532"));
        assert_eq!(config.supplemental_groups, [65532]);
        assert_eq!(
            config.namespaces,
            Namespaces::JoinContainer("sandbox-1".into())
        );
        assert_eq!(config.mounts, [mount]);
        assert_eq!(
            config.security,
            Security {
                read_only_root: true,
                no_new_privileges: true,
                cap_drop: vec!["ALL".into()],
                ..Default::default()
            }
        );
        assert_eq!(
            config.resources,
            Resources {
                memory_limit_bytes: Some(128 << 20),
                cpu_limit_millis: Some(500),
                cpu_shares: Some(102),
            }
        );
        let args = config.create_args().join(" ");
        assert!(args.contains("--entrypoint [\"/proxy\"]"), "{args}");
        assert!(
            args.ends_with("--pull=never localhost/porthole/proxy:dev --listen=:8443"),
            "{args}"
        );
    }

    #[test]
    fn container_security_context_overrides_the_pod() {
        let pod = pod(r#"
metadata: {name: p}
spec:
  securityContext: {runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: app
    securityContext: {runAsUser: 2000, seccompProfile: {type: Unconfined}}
"#);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let pod_security = pod.spec.as_ref().unwrap().security_context.as_ref();
        assert_eq!(
            user(container.security_context.as_ref(), pod_security).as_deref(),
            Some("2000")
        );
        assert!(
            security_options(container.security_context.as_ref(), pod_security).seccomp_unconfined
        );
    }

    #[test]
    fn run_as_non_root_is_verified() {
        let with_user = pod(PROXY_POD);
        let container = &with_user.spec.as_ref().unwrap().containers[0];
        assert_eq!(verify_non_root(&with_user, container, ""), Ok(()));

        let without_user = pod(
            "metadata: {name: p}\nspec: {securityContext: {runAsNonRoot: true}, containers: [{name: c}]}",
        );
        let container = &without_user.spec.as_ref().unwrap().containers[0];
        assert!(verify_non_root(&without_user, container, "").is_err());
        assert!(verify_non_root(&without_user, container, "root").is_err());
        assert!(verify_non_root(&without_user, container, "0:0").is_err());
        assert_eq!(verify_non_root(&without_user, container, "65532"), Ok(()));
        assert!(verify_non_root(&without_user, container, "nobody").is_err());
    }
}
