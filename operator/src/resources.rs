//! Pure builders of the objects made for a session: its Secret, proxy Pod,
//! Service, Ingress and NetworkPolicy, all in porthole's sessions namespace.
//! No client here: everything is unit-tested from plain values.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use porthole_api::contract::{self, annotations, env, labels, secret_keys};
use porthole_api::v1alpha1::ViewerPolicy;

use crate::exposure::Exposure;
use crate::naming::label_value;
use crate::target::Target;

/// Everything the builders need, resolved and validated by the reconciler.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionPlan {
    /// Where the children live: porthole's sessions namespace, never the
    /// session's own.
    pub namespace: String,
    /// Where the operator runs: the only source its NetworkPolicy lets reach
    /// the proxy's internal port.
    pub operator_namespace: String,
    /// How viewers reach the console.
    pub exposure: Exposure,
    /// Name shared by the Pod, Service, Secret, NetworkPolicy and Ingress.
    pub child_name: String,
    pub session_namespace: String,
    pub session_name: String,
    /// Children carry it as a label: what their Service and NetworkPolicy
    /// select, and how the sweep tells an orphan.
    pub session_uid: String,
    /// Where the proxy connects, taken from the Hypervisor, never from the session.
    pub target: Target,
    /// Shown on the console page.
    pub vm_name: String,
    pub proxy_image: String,
    pub proxy_image_pull_policy: String,
    /// The browser's access token.
    pub token: String,
    /// The session's hard deadline.
    pub expires_at: k8s_openapi::jiff::Timestamp,
    /// Lifetime and viewer settings, passed through to the proxy as they are
    /// (already validated by the CRD schema).
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub run_once: bool,
    pub viewers: ViewerPolicy,
    pub view_only: bool,
    /// Where the proxy records its viewers (`spec.record`), if anywhere.
    pub recording: Option<Recording>,
}

/// A recorded session's claim, and where in it the proxy writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// The PersistentVolumeClaim, mounted writable at
    /// [`contract::RECORDING_MOUNT`].
    pub claim_name: String,
    /// The proxy's [`env::RECORD`]: a path under the mount, to which it
    /// appends `.N` per viewer connection.
    pub base: String,
}

/// The unprivileged user the proxy runs as (the conventional "nonroot" id).
/// Also the pod's `fsGroup`: the group that may write a recording claim.
const PROXY_UID: i64 = 65532;
const SESSION_VOLUME: &str = "session";
const RECORDING_VOLUME: &str = "recording";

impl SessionPlan {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NAME.to_string(), labels::PROXY_NAME.to_string()),
            (
                labels::MANAGED_BY.to_string(),
                labels::OPERATOR_NAME.to_string(),
            ),
            (labels::SESSION.to_string(), label_value(&self.session_name)),
            (
                labels::SESSION_NAMESPACE.to_string(),
                self.session_namespace.clone(),
            ),
            (labels::SESSION_UID.to_string(), self.session_uid.clone()),
        ])
    }

    /// Selects this session's proxy pod: by uid, which no other session shares.
    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(labels::SESSION_UID.to_string(), self.session_uid.clone())])
    }

    /// No owner reference: the session is in another namespace, which
    /// Kubernetes does not allow for owners. The session's finalizer and the
    /// sweep of orphans remove the children instead.
    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.child_name.clone()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            annotations: Some(BTreeMap::from([(
                annotations::SESSION.to_string(),
                format!("{}/{}", self.session_namespace, self.session_name),
            )])),
            ..ObjectMeta::default()
        }
    }

    /// The session Secret: the access token and the target's credential.
    pub fn secret(&self) -> Secret {
        let mut data = BTreeMap::from([(
            secret_keys::TOKEN.to_string(),
            ByteString(self.token.clone().into_bytes()),
        )]);
        for (key, value) in self.target.secret_data() {
            data.insert(key.to_string(), ByteString(value.into_bytes()));
        }
        Secret {
            metadata: self.metadata(),
            type_: Some("Opaque".to_string()),
            // A renewed login ticket replaces the old one in place.
            immutable: Some(!self.target.renews()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// The proxy Pod: one restricted container, the Secret mounted read-only, no
    /// service-account token (the proxy never talks to the API server).
    pub fn pod(&self) -> Pod {
        let env_var = |name: &str, value: &str| EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            ..EnvVar::default()
        };
        // Probes go to the internal port: a flood on the console port cannot
        // starve them into a restart that would end the session.
        let http_probe = |path: &str, period: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_string()),
                port: IntOrString::String(contract::INTERNAL_PORT_NAME.to_string()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        };
        let quantities = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.to_string())),
                ("memory".to_string(), Quantity(memory.to_string())),
            ])
        };
        let mut env_vars = vec![
            env_var(env::LISTEN, &format!("0.0.0.0:{}", contract::PROXY_PORT)),
            env_var(
                env::INTERNAL_LISTEN,
                &format!("0.0.0.0:{}", contract::INTERNAL_PORT),
            ),
            env_var(env::SESSION_DIR, contract::SESSION_SECRET_MOUNT),
            env_var(env::SESSION_NAMESPACE, &self.session_namespace),
            env_var(env::SESSION_NAME, &self.session_name),
            env_var(env::VM_NAME, &self.vm_name),
            env_var(env::EXPIRES_AT, &self.expires_at.to_string()),
            env_var(
                env::VIEWERS,
                match self.viewers {
                    ViewerPolicy::Exclusive => contract::VIEWERS_EXCLUSIVE,
                    ViewerPolicy::Shared => contract::VIEWERS_SHARED,
                },
            ),
            env_var(env::RUN_ONCE, &self.run_once.to_string()),
            env_var(env::VIEW_ONLY, &self.view_only.to_string()),
        ];
        for (name, value) in self.target.env() {
            env_vars.push(env_var(name, &value));
        }
        if let Some(timeout) = &self.connect_timeout {
            env_vars.push(env_var(env::CONNECT_TIMEOUT, timeout));
        }
        if let Some(timeout) = &self.idle_timeout {
            env_vars.push(env_var(env::IDLE_TIMEOUT, timeout));
        }
        let mut volumes = vec![Volume {
            name: SESSION_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.child_name.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }];
        let mut volume_mounts = vec![VolumeMount {
            name: SESSION_VOLUME.to_string(),
            mount_path: contract::SESSION_SECRET_MOUNT.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        }];
        if let Some(recording) = &self.recording {
            env_vars.push(env_var(env::RECORD, &recording.base));
            volumes.push(Volume {
                name: RECORDING_VOLUME.to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: recording.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            });
            volume_mounts.push(VolumeMount {
                name: RECORDING_VOLUME.to_string(),
                mount_path: contract::RECORDING_MOUNT.to_string(),
                read_only: Some(false),
                ..VolumeMount::default()
            });
        }
        let container = Container {
            name: "proxy".to_string(),
            image: Some(self.proxy_image.clone()),
            image_pull_policy: Some(self.proxy_image_pull_policy.clone()),
            args: Some(vec!["session".to_string()]),
            env: Some(env_vars),
            ports: Some(vec![
                ContainerPort {
                    name: Some(contract::PROXY_PORT_NAME.to_string()),
                    container_port: i32::from(contract::PROXY_PORT),
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some(contract::INTERNAL_PORT_NAME.to_string()),
                    container_port: i32::from(contract::INTERNAL_PORT),
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                },
            ]),
            volume_mounts: Some(volume_mounts),
            readiness_probe: Some(http_probe("/readyz", 1)),
            liveness_probe: Some(http_probe("/healthz", 10)),
            resources: Some(ResourceRequirements {
                requests: Some(quantities("10m", "16Mi")),
                limits: Some(quantities("500m", "64Mi")),
                ..ResourceRequirements::default()
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_string()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            termination_message_path: Some(contract::TERMINATION_MESSAGE_PATH.to_string()),
            termination_message_policy: Some("FallbackToLogsOnError".to_string()),
            ..Container::default()
        };
        Pod {
            metadata: self.metadata(),
            spec: Some(PodSpec {
                containers: vec![container],
                // The proxy's exit is the session's end: never restart it.
                restart_policy: Some("Never".to_string()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(PROXY_UID),
                    run_as_group: Some(PROXY_UID),
                    // Volumes that support it (the Secret, most recording
                    // claims) are made accessible to this group.
                    fs_group: Some(PROXY_UID),
                    // A recording claim fills up over time: re-own it only when
                    // its root is not the group's yet, not file by file at every
                    // session start.
                    fs_group_change_policy: Some("OnRootMismatch".to_string()),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_string(),
                        ..SeccompProfile::default()
                    }),
                    ..PodSecurityContext::default()
                }),
                volumes: Some(volumes),
                termination_grace_period_seconds: Some(5),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// The Service in front of the proxy Pod.
    pub fn service(&self) -> Service {
        Service {
            metadata: self.metadata(),
            spec: Some(ServiceSpec {
                type_: Some(self.exposure.service_type().to_string()),
                selector: Some(self.selector()),
                // The console port only: probes, metrics and the viewer
                // report stay on the pod's internal port.
                ports: Some(vec![ServicePort {
                    name: Some(contract::PROXY_PORT_NAME.to_string()),
                    port: i32::from(contract::SERVICE_PORT),
                    target_port: Some(IntOrString::String(contract::PROXY_PORT_NAME.to_string())),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

impl SessionPlan {
    /// The session's Ingress, for Ingress exposure: one Prefix path on the
    /// host to the session's Service.
    pub fn ingress(&self) -> Option<Ingress> {
        let Exposure::Ingress(plan) = &self.exposure else {
            return None;
        };
        Some(Ingress {
            metadata: self.metadata(),
            spec: Some(IngressSpec {
                ingress_class_name: plan.class_name.clone(),
                tls: plan.tls_secret_name.as_ref().map(|secret| {
                    vec![IngressTLS {
                        hosts: Some(vec![plan.host.clone()]),
                        secret_name: Some(secret.clone()),
                    }]
                }),
                rules: Some(vec![IngressRule {
                    host: Some(plan.host.clone()),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some(plan.path.clone()),
                            path_type: "Prefix".to_string(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: self.child_name.clone(),
                                    port: Some(ServiceBackendPort {
                                        number: Some(i32::from(contract::SERVICE_PORT)),
                                        ..ServiceBackendPort::default()
                                    }),
                                }),
                                ..IngressBackend::default()
                            },
                        }],
                    }),
                }]),
                ..IngressSpec::default()
            }),
            status: None,
        })
    }

    /// Lets the proxy pod receive viewers on its console port, the operator
    /// (only) on its internal port, and reach nothing but its hypervisor's
    /// console or API port (and DNS, when the hypervisor is named by host
    /// name).
    pub fn network_policy(&self) -> NetworkPolicy {
        let (host, port) = self.target.endpoint();
        let tcp = |port: u16| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(port))),
            protocol: Some("TCP".to_string()),
            ..NetworkPolicyPort::default()
        };
        let mut egress = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![tcp(port)]),
            },
            // A host name can resolve anywhere: only the port can be pinned.
            Err(_) => NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![tcp(port)]),
            },
        }];
        if host.parse::<std::net::IpAddr>().is_err() {
            egress.push(NetworkPolicyEgressRule {
                to: None,
                ports: Some(
                    ["UDP", "TCP"]
                        .into_iter()
                        .map(|protocol| NetworkPolicyPort {
                            port: Some(IntOrString::Int(53)),
                            protocol: Some(protocol.to_string()),
                            ..NetworkPolicyPort::default()
                        })
                        .collect(),
                ),
            });
        }
        NetworkPolicy {
            metadata: self.metadata(),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.selector()),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
                ingress: Some(vec![
                    NetworkPolicyIngressRule {
                        from: None,
                        ports: Some(vec![tcp(contract::PROXY_PORT)]),
                    },
                    NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            namespace_selector: Some(LabelSelector {
                                match_labels: Some(BTreeMap::from([(
                                    "kubernetes.io/metadata.name".to_string(),
                                    self.operator_namespace.clone(),
                                )])),
                                ..LabelSelector::default()
                            }),
                            pod_selector: Some(LabelSelector {
                                match_labels: Some(BTreeMap::from([(
                                    labels::NAME.to_string(),
                                    labels::OPERATOR_NAME.to_string(),
                                )])),
                                ..LabelSelector::default()
                            }),
                            ..NetworkPolicyPeer::default()
                        }]),
                        ports: Some(vec![tcp(contract::INTERNAL_PORT)]),
                    },
                ]),
                egress: Some(egress),
            }),
        }
    }
}

/// A Secret's value under `key` as text, when it is there and not empty.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::VncTarget;

    fn plan() -> SessionPlan {
        SessionPlan {
            namespace: "porthole-sessions".into(),
            operator_namespace: "porthole-system".into(),
            exposure: Exposure::ClusterIp,
            child_name: "console-web-uid-1".into(),
            session_namespace: "team-a".into(),
            session_name: "web".into(),
            session_uid: "uid-1".into(),
            target: Target::Vnc(VncTarget {
                host: "10.0.0.5".into(),
                port: 5910,
                password: Some("pw".into()),
            }),
            vm_name: "web (port 5910)".into(),
            proxy_image: "porthole/proxy:dev".into(),
            proxy_image_pull_policy: "IfNotPresent".into(),
            token: "tok".into(),
            expires_at: "2026-01-01T01:00:00Z".parse().unwrap(),
            connect_timeout: Some("5m".into()),
            idle_timeout: None,
            run_once: true,
            viewers: ViewerPolicy::Shared,
            view_only: false,
            recording: None,
        }
    }

    fn recorded() -> SessionPlan {
        SessionPlan {
            recording: Some(Recording {
                claim_name: "recordings".into(),
                base: "/var/run/porthole/recordings/web/uid-1/connection".into(),
            }),
            ..plan()
        }
    }

    #[test]
    fn a_recorded_session_mounts_its_claim_writable_and_tells_the_proxy_where_to_write() {
        let spec = recorded().pod().spec.unwrap();
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.persistent_volume_claim.is_some())
            .expect("a claim volume");
        let claim = volume.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("recordings", Some(false))
        );
        let container = &spec.containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == volume.name)
            .expect("the claim is mounted");
        assert_eq!(mount.mount_path, contract::RECORDING_MOUNT);
        assert_eq!(mount.read_only, Some(false));
        let record = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == env::RECORD)
            .and_then(|e| e.value.clone());
        assert_eq!(
            record.as_deref(),
            Some("/var/run/porthole/recordings/web/uid-1/connection")
        );
        assert!(
            record
                .unwrap()
                .starts_with(&format!("{}/", mount.mount_path)),
            "the proxy writes inside the mount"
        );
        // The non-root proxy may write to the claim as its fsGroup.
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.fs_group, Some(PROXY_UID));
        assert_eq!(pod_sc.run_as_group, Some(PROXY_UID));
        assert_eq!(
            pod_sc.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch")
        );
    }

    #[test]
    fn a_recorded_pod_stays_restricted() {
        let spec = recorded().pod().spec.unwrap();
        let pod_sc = spec.security_context.clone().unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".into()]));
        // The restricted standard allows these volume types only (hostPath never).
        for volume in spec.volumes.unwrap() {
            assert!(
                volume.secret.is_some() || volume.persistent_volume_claim.is_some(),
                "{volume:?}"
            );
        }
    }

    #[test]
    fn an_unrecorded_session_mounts_no_claim_and_sets_no_recording() {
        let spec = plan().pod().spec.unwrap();
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 1);
        assert!(spec.volumes.unwrap()[0].persistent_volume_claim.is_none());
        let container = &spec.containers[0];
        assert_eq!(container.volume_mounts.as_ref().unwrap().len(), 1);
        assert!(
            container
                .env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.name != env::RECORD)
        );
    }

    #[test]
    fn everything_lives_in_the_sessions_namespace_labelled_with_its_session() {
        let p = plan();
        for meta in [
            p.secret().metadata,
            p.pod().metadata,
            p.service().metadata,
            p.network_policy().metadata,
        ] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[labels::SESSION], "web");
            assert_eq!(labels[labels::SESSION_NAMESPACE], "team-a");
            assert_eq!(labels[labels::SESSION_UID], "uid-1");
            assert_eq!(
                meta.annotations.as_ref().unwrap()[annotations::SESSION],
                "team-a/web"
            );
            assert_eq!(meta.name.as_deref(), Some("console-web-uid-1"));
            assert_eq!(meta.namespace.as_deref(), Some("porthole-sessions"));
            // Owners cannot be in another namespace.
            assert!(meta.owner_references.is_none());
        }
    }

    #[test]
    fn probes_use_the_internal_port_which_no_service_exposes() {
        let container = plan().pod().spec.unwrap().containers.remove(0);
        for probe in [
            container.readiness_probe.unwrap(),
            container.liveness_probe.unwrap(),
        ] {
            assert_eq!(
                probe.http_get.unwrap().port,
                IntOrString::String(contract::INTERNAL_PORT_NAME.into())
            );
        }
        let ports = container.ports.unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some(contract::INTERNAL_PORT_NAME)
                    && p.container_port == i32::from(contract::INTERNAL_PORT))
        );
        let service_ports = plan().service().spec.unwrap().ports.unwrap();
        assert_eq!(service_ports.len(), 1);
        assert_eq!(
            service_ports[0].target_port,
            Some(IntOrString::String(contract::PROXY_PORT_NAME.into()))
        );
    }

    #[test]
    fn secret_holds_token_and_password() {
        let data = plan().secret().data.unwrap();
        assert_eq!(data[secret_keys::TOKEN].0, b"tok");
        assert_eq!(data[secret_keys::VNC_PASSWORD].0, b"pw");
        let without = SessionPlan {
            target: Target::Vnc(VncTarget {
                host: "10.0.0.5".into(),
                port: 5910,
                password: None,
            }),
            ..plan()
        }
        .secret()
        .data
        .unwrap();
        assert!(!without.contains_key(secret_keys::VNC_PASSWORD));
    }

    #[test]
    fn pod_passes_the_restricted_pod_security_standard() {
        let spec = plan().pod().spec.unwrap();
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".into()]));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn pod_gets_the_upstream_from_the_plan_and_never_the_token_in_env() {
        let container = plan().pod().spec.unwrap().containers.remove(0);
        let env = container.env.unwrap();
        let upstream = env.iter().find(|e| e.name == env::UPSTREAM).unwrap();
        assert_eq!(upstream.value.as_deref(), Some("10.0.0.5:5910"));
        assert!(env.iter().all(|e| e.value.as_deref() != Some("tok")));
        assert!(env.iter().all(|e| e.value.as_deref() != Some("pw")));
    }

    #[test]
    fn lifetime_settings_reach_the_proxy() {
        let env = plan().pod().spec.unwrap().containers.remove(0).env.unwrap();
        let get = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(get(env::CONNECT_TIMEOUT).as_deref(), Some("5m"));
        assert_eq!(get(env::IDLE_TIMEOUT), None);
        assert_eq!(get(env::RUN_ONCE).as_deref(), Some("true"));
        assert_eq!(get(env::VIEWERS).as_deref(), Some(contract::VIEWERS_SHARED));
        assert_eq!(
            get(env::EXPIRES_AT).as_deref(),
            Some("2026-01-01T01:00:00Z")
        );
    }

    #[test]
    fn service_selects_the_session_pod() {
        let spec = plan().service().spec.unwrap();
        assert_eq!(
            spec.selector.unwrap(),
            BTreeMap::from([(labels::SESSION_UID.to_string(), "uid-1".to_string())])
        );
        assert_eq!(spec.ports.unwrap()[0].port, 80);
    }

    #[test]
    fn network_policy_allows_only_the_vm_console() {
        let spec = plan().network_policy().spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[labels::SESSION_UID],
            "uid-1"
        );
        let egress = spec.egress.unwrap();
        assert_eq!(egress.len(), 1);
        let peer = egress[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
        assert_eq!(peer.cidr, "10.0.0.5/32");
        assert_eq!(
            egress[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(5910))
        );
        let ingress = spec.ingress.unwrap();
        assert_eq!(
            ingress[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
        assert!(ingress[0].from.is_none(), "viewers come from anywhere");
        // The internal port admits the operator's pods only.
        assert_eq!(
            ingress[1].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8081))
        );
        let peer = &ingress[1].from.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "porthole-system"
        );
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[labels::NAME],
            labels::OPERATOR_NAME
        );
    }

    #[test]
    fn a_named_host_pins_the_port_and_allows_dns() {
        let named = SessionPlan {
            target: Target::Vnc(VncTarget {
                host: "hv.example".into(),
                port: 5910,
                password: None,
            }),
            ..plan()
        };
        let egress = named.network_policy().spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 2);
        assert!(egress[0].to.is_none());
        assert_eq!(
            egress[1].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(53))
        );
    }

    #[test]
    fn ingress_exposure_routes_a_prefix_on_the_host_to_the_service() {
        let mut p = plan();
        assert!(p.ingress().is_none());
        p.exposure = Exposure::Ingress(crate::exposure::IngressPlan {
            class_name: Some("nginx".into()),
            host: "consoles.example.com".into(),
            path: "/team-a/web/".into(),
            tls_secret_name: Some("consoles-tls".into()),
            origin: "https://consoles.example.com".into(),
        });
        let ingress = p.ingress().unwrap();
        assert_eq!(
            ingress.metadata.namespace.as_deref(),
            Some("porthole-sessions")
        );
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("consoles-tls"));
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("consoles.example.com"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(
            (path.path.as_deref(), path.path_type.as_str()),
            (Some("/team-a/web/"), "Prefix")
        );
        let backend = path.backend.service.as_ref().unwrap();
        assert_eq!(backend.name, "console-web-uid-1");
        assert_eq!(backend.port.as_ref().unwrap().number, Some(80));
        assert_eq!(
            p.service().spec.unwrap().type_.as_deref(),
            Some("ClusterIP")
        );
    }

    #[test]
    fn the_service_type_follows_the_exposure() {
        let mut p = plan();
        p.exposure = Exposure::NodePort;
        assert_eq!(p.service().spec.unwrap().type_.as_deref(), Some("NodePort"));
        p.exposure = Exposure::LoadBalancer;
        assert_eq!(
            p.service().spec.unwrap().type_.as_deref(),
            Some("LoadBalancer")
        );
    }
}
