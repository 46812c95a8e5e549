//! Validation: turns a session and what it refers to into a [`SessionPlan`], or
//! into the verdict that explains why it cannot run. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use porthole_api::contract::secret_keys;
use porthole_api::duration;
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor, SessionPhase};

use crate::config::Config;
use crate::naming::child_name;
use crate::resources::SessionPlan;
use crate::status::{Reason, Verdict};

/// What the reconciler read from the API before deciding anything.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub hypervisor: Option<Hypervisor>,
    /// Labels of the session's namespace, matched against `allowedNamespaces`.
    pub namespace_labels: BTreeMap<String, String>,
    /// The VNC password, when the Hypervisor names a password Secret.
    pub vnc_password: PasswordLookup,
    /// The session's own Secret, if it exists already (its token is kept).
    pub session_secret: Option<Secret>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum PasswordLookup {
    #[default]
    NotConfigured,
    Found(String),
    /// The named Secret or key does not exist: the message says which.
    Missing(String),
}

/// Decides what to run for `session`, given a fresh token in case the session
/// has none yet.
pub fn plan(
    session: &ConsoleSession,
    observed: &Observed,
    config: &Config,
    fresh_token: impl FnOnce() -> String,
) -> Result<SessionPlan, Verdict> {
    let name = session.name_any();
    let hv_name = &session.spec.hypervisor;
    let Some(hypervisor) = &observed.hypervisor else {
        // Not final: GitOps may apply the Hypervisor after the session.
        return Err(Verdict::new(
            SessionPhase::Pending,
            Reason::HypervisorNotFound,
            format!("Hypervisor {hv_name:?} does not exist"),
        ));
    };
    let allowed = hypervisor
        .spec
        .allowed_namespaces
        .as_ref()
        .is_some_and(|selector| selector_matches(selector, &observed.namespace_labels));
    if !allowed {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::NotAllowed,
            format!(
                "namespace {:?} is not allowed to use Hypervisor {hv_name:?} (see its spec.allowedNamespaces)",
                session.namespace().unwrap_or_default()
            ),
        ));
    }
    let expires_at = expiry(session, hypervisor)?;
    let Some(vnc) = &hypervisor.spec.vnc else {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::InvalidSpec,
            format!("Hypervisor {hv_name:?} is not a vnc Hypervisor"),
        ));
    };
    let Some(port) = session.spec.vm.port else {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::InvalidSpec,
            format!("spec.vm.port is required for the vnc Hypervisor {hv_name:?}"),
        ));
    };
    if !vnc.ports.contains(port) {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::PortNotAllowed,
            format!(
                "port {port} is outside the range {}-{} that Hypervisor {hv_name:?} allows",
                vnc.ports.first, vnc.ports.last
            ),
        ));
    }
    let vnc_password = match &observed.vnc_password {
        PasswordLookup::NotConfigured => None,
        PasswordLookup::Found(password) => Some(password.clone()),
        PasswordLookup::Missing(what) => {
            return Err(Verdict::new(
                SessionPhase::Pending,
                Reason::CredentialsNotFound,
                format!("the VNC password of Hypervisor {hv_name:?} is missing: {what}"),
            ));
        }
    };
    let viewers = session.spec.viewers.clone().unwrap_or_default();
    let token = observed
        .session_secret
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(secret_keys::TOKEN))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(fresh_token);
    Ok(SessionPlan {
        namespace: session.namespace().unwrap_or_default(),
        child_name: child_name(&name),
        session_name: name.clone(),
        owner: session
            .controller_owner_ref(&())
            .expect("a ConsoleSession read from the API has a name and uid"),
        upstream: host_port(&vnc.host, port),
        upstream_host: vnc.host.clone(),
        upstream_port: port,
        vm_name: format!("{hv_name} port {port}"),
        proxy_image: config.proxy_image.clone(),
        proxy_image_pull_policy: config.proxy_image_pull_policy.clone(),
        token,
        vnc_password,
        expires_at,
        connect_timeout: session.spec.connect_timeout.clone(),
        idle_timeout: session.spec.idle_timeout.clone(),
        run_once: session.spec.run_once.unwrap_or(false),
        viewers: viewers.policy.unwrap_or_default(),
        view_only: viewers.view_only.unwrap_or(false),
    })
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

/// The session's hard deadline: its creation time plus its timeout. Computed
/// from the resource alone, so an operator restart cannot lose or move it.
fn expiry(session: &ConsoleSession, hypervisor: &Hypervisor) -> Result<Timestamp, Verdict> {
    let invalid =
        |message: String| Verdict::new(SessionPhase::Failed, Reason::InvalidSpec, message);
    let parse = |field: &str, text: &Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => duration::parse(text).map_err(|e| invalid(format!("{field}: {e}"))),
    };
    let hv = &hypervisor.spec;
    let max = parse(
        "Hypervisor spec.maxTimeout",
        &hv.max_timeout,
        DEFAULT_MAX_TIMEOUT,
    )?;
    let default = parse(
        "Hypervisor spec.defaultTimeout",
        &hv.default_timeout,
        DEFAULT_TIMEOUT,
    )?
    .min(max);
    let timeout = parse("spec.timeout", &session.spec.timeout, default)?;
    if timeout > max {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::TimeoutTooLong,
            format!(
                "spec.timeout {} exceeds the maximum {} that Hypervisor {:?} allows",
                duration::format(timeout),
                duration::format(max),
                hypervisor.name_any()
            ),
        ));
    }
    let created = session
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let timeout = SignedDuration::try_from(timeout)
        .map_err(|_| invalid("spec.timeout is too long".into()))?;
    created
        .checked_add(timeout)
        .map_err(|_| invalid("spec.timeout is too long".into()))
}

/// Kubernetes label-selector semantics: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold; an empty selector matches all.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false, // unknown operators match nothing, like the apiserver rejects them
        }
    });
    labels_match && expressions_match
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use porthole_api::v1alpha1::{
        ConsoleSessionSpec, HypervisorSpec, PortRange, VmRef, VncHypervisor,
    };
    use std::collections::BTreeMap;

    fn session(port: Option<u16>) -> ConsoleSession {
        let mut s = ConsoleSession::new(
            "web",
            ConsoleSessionSpec {
                hypervisor: "hv1".into(),
                vm: VmRef {
                    port,
                    ..VmRef::default()
                },
                timeout: None,
                connect_timeout: None,
                idle_timeout: None,
                run_once: None,
                viewers: None,
                ttl_seconds_after_finished: None,
            },
        );
        s.metadata.namespace = Some("team-a".into());
        s.metadata.uid = Some("uid-1".into());
        s.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        s
    }

    fn observed() -> Observed {
        Observed {
            hypervisor: Some(Hypervisor::new(
                "hv1",
                HypervisorSpec {
                    vnc: Some(VncHypervisor {
                        host: "10.200.0.1".into(),
                        ports: PortRange {
                            first: 5910,
                            last: 5930,
                        },
                        password_secret_ref: None,
                    }),
                    proxmox: None,
                    allowed_namespaces: Some(LabelSelector::default()),
                    default_timeout: None,
                    max_timeout: Some("2h".into()),
                },
            )),
            ..Observed::default()
        }
    }

    fn run(session: &ConsoleSession, observed: &Observed) -> Result<SessionPlan, Verdict> {
        plan(session, observed, &Config::for_tests(), || "fresh".into())
    }

    #[test]
    fn a_valid_session_gets_a_plan_pointing_at_its_hypervisor() {
        let plan = run(&session(Some(5912)), &observed()).unwrap();
        assert_eq!(plan.upstream, "10.200.0.1:5912");
        assert_eq!(plan.token, "fresh");
        assert_eq!(plan.owner.uid, "uid-1");
        assert_eq!(plan.child_name, "console-web");
    }

    #[test]
    fn an_existing_token_is_kept() {
        let mut obs = observed();
        obs.session_secret = Some(Secret {
            data: Some(BTreeMap::from([(
                secret_keys::TOKEN.into(),
                ByteString(b"kept".to_vec()),
            )])),
            ..Secret::default()
        });
        assert_eq!(run(&session(Some(5912)), &obs).unwrap().token, "kept");
    }

    #[test]
    fn a_port_outside_the_range_fails_for_good() {
        let verdict = run(&session(Some(22)), &observed()).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::PortNotAllowed)
        );
        assert!(verdict.message.contains("5910-5930"));
    }

    #[test]
    fn a_missing_port_is_an_invalid_spec() {
        let verdict = run(&session(None), &observed()).unwrap_err();
        assert_eq!(verdict.reason, Reason::InvalidSpec);
    }

    #[test]
    fn a_missing_hypervisor_waits() {
        let verdict = run(&session(Some(5912)), &Observed::default()).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Pending, Reason::HypervisorNotFound)
        );
    }

    #[test]
    fn a_missing_password_waits_and_says_which() {
        let mut obs = observed();
        obs.vnc_password =
            PasswordLookup::Missing("Secret porthole-system/vnc has no key password".into());
        let verdict = run(&session(Some(5912)), &obs).unwrap_err();
        assert_eq!(verdict.reason, Reason::CredentialsNotFound);
        assert!(verdict.message.contains("porthole-system/vnc"));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("fd00::5", 5910), "[fd00::5]:5910");
        assert_eq!(host_port("hv.example", 5910), "hv.example:5910");
    }

    #[test]
    fn expiry_is_creation_plus_timeout_with_the_hypervisor_default() {
        let plan = run(&session(Some(5912)), &observed()).unwrap();
        assert_eq!(plan.expires_at.to_string(), "2026-01-01T01:00:00Z");
        let mut s = session(Some(5912));
        s.spec.timeout = Some("90s".into());
        assert_eq!(
            run(&s, &observed()).unwrap().expires_at.to_string(),
            "2026-01-01T00:01:30Z"
        );
    }

    #[test]
    fn a_timeout_above_the_maximum_fails_and_says_both() {
        let mut s = session(Some(5912));
        s.spec.timeout = Some("3h".into());
        let verdict = run(&s, &observed()).unwrap_err();
        assert_eq!(verdict.reason, Reason::TimeoutTooLong);
        assert!(
            verdict.message.contains("3h") && verdict.message.contains("2h"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn namespaces_outside_the_selector_are_not_allowed() {
        let mut obs = observed();
        obs.hypervisor.as_mut().unwrap().spec.allowed_namespaces = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            ..LabelSelector::default()
        });
        let verdict = run(&session(Some(5912)), &obs).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::NotAllowed)
        );
        obs.namespace_labels.insert("team".into(), "a".into());
        assert!(run(&session(Some(5912)), &obs).is_ok());
    }

    #[test]
    fn an_absent_selector_allows_no_namespace() {
        let mut obs = observed();
        obs.hypervisor.as_mut().unwrap().spec.allowed_namespaces = None;
        assert_eq!(
            run(&session(Some(5912)), &obs).unwrap_err().reason,
            Reason::NotAllowed
        );
    }

    #[test]
    fn selector_expressions_follow_kubernetes_semantics() {
        let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let req = |key: &str, op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selector_matches(
            &req("env", "In", &["prod", "dev"]),
            &labels
        ));
        assert!(!selector_matches(&req("env", "NotIn", &["prod"]), &labels));
        assert!(selector_matches(&req("team", "NotIn", &["x"]), &labels));
        assert!(selector_matches(&req("env", "Exists", &[]), &labels));
        assert!(!selector_matches(&req("env", "DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&req("env", "Bogus", &[]), &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
    }
}
