//! Validation: turns a session and what it refers to into a [`SessionPlan`], or
//! into the verdict that explains why it cannot run. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use porthole_api::contract::{self, secret_keys};
use porthole_api::duration;
use porthole_api::v1alpha1::{
    ConsoleSession, Hypervisor, ProxmoxHypervisor, RecordingMode, SessionPhase, VncHypervisor,
};
use porthole_pve::tls::TlsSettings;

use crate::config::Config;
use crate::exposure;
use crate::naming::child_name;
use crate::resources::{Recording, SessionPlan, secret_text};
use crate::status::{Reason, Verdict};
use crate::target::{ProxmoxAuth, ProxmoxTarget, Target, VncTarget};

/// What the reconciler read from the API before deciding anything.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub hypervisor: Option<Hypervisor>,
    /// Labels of the session's namespace, matched against `allowedNamespaces`.
    pub namespace_labels: BTreeMap<String, String>,
    /// The Hypervisor's credentials, read from the Secret it names.
    pub credentials: Credentials,
    /// The session's own Secret, if it exists already (its token is kept).
    pub session_secret: Option<Secret>,
    /// The recording claim in porthole's namespace, when the session is recorded.
    pub recording_claim: RecordingClaim,
}

/// The claim a recorded session's recordings go to, as the reconciler found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordingClaim {
    /// Not looked up: the session is not recorded, or its pod already runs
    /// with the claim mounted (a claim deleted under a running pod stays until
    /// the pod is gone, so the session goes on).
    #[default]
    NotChecked,
    Missing,
    /// It has a deletion timestamp: a new pod could not mount it.
    BeingDeleted,
    Present,
}

impl RecordingClaim {
    /// What a lookup by name found.
    pub fn found(claim: Option<&PersistentVolumeClaim>) -> Self {
        match claim {
            None => RecordingClaim::Missing,
            Some(pvc) if pvc.metadata.deletion_timestamp.is_some() => RecordingClaim::BeingDeleted,
            Some(_) => RecordingClaim::Present,
        }
    }
}

/// What the Hypervisor's credentials Secret holds. Debug output hides values.
#[derive(Clone, Default, PartialEq)]
pub enum Credentials {
    /// A vnc Hypervisor without a password.
    #[default]
    NotConfigured,
    VncPassword(String),
    Proxmox(ProxmoxCredentials),
    /// The named Secret or key does not exist: the message says which.
    Missing(String),
}

#[derive(Clone, PartialEq)]
pub enum ProxmoxCredentials {
    Password {
        username: String,
        password: String,
    },
    /// `USER@REALM!TOKENID=SECRET`.
    ApiToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::NotConfigured => f.write_str("NotConfigured"),
            Credentials::VncPassword(_) => f.write_str("VncPassword(<redacted>)"),
            Credentials::Proxmox(ProxmoxCredentials::Password { username, .. }) => {
                write!(f, "ProxmoxPassword({username})")
            }
            Credentials::Proxmox(ProxmoxCredentials::ApiToken(_)) => {
                f.write_str("ProxmoxApiToken(<redacted>)")
            }
            Credentials::Missing(what) => write!(f, "Missing({what})"),
        }
    }
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
    let target = match (&hypervisor.spec.vnc, &hypervisor.spec.proxmox) {
        (Some(vnc), _) => vnc_target(session, vnc, &observed.credentials, hv_name)?,
        (None, Some(pve)) => proxmox_target(session, pve, &observed.credentials, hv_name)?,
        (None, None) => {
            return Err(Verdict::new(
                SessionPhase::Failed,
                Reason::InvalidSpec,
                format!("Hypervisor {hv_name:?} sets neither vnc nor proxmox"),
            ));
        }
    };
    let namespace = session.namespace().unwrap_or_default();
    let exposure = exposure::resolve(session.spec.expose.as_ref(), config, &namespace, &name)
        .map_err(|e| {
            if e.is_policy() {
                Verdict::new(
                    SessionPhase::Failed,
                    Reason::ExposureNotAllowed,
                    e.to_string(),
                )
            } else {
                invalid_spec(e.to_string())
            }
        })?;
    let uid = session
        .uid()
        .expect("a ConsoleSession read from the API has a uid");
    let recording = recording(session, &uid, hypervisor, observed, config)?;
    let viewers = session.spec.viewers.clone().unwrap_or_default();
    let token = observed
        .session_secret
        .as_ref()
        .and_then(|s| secret_text(s, secret_keys::TOKEN))
        .unwrap_or_else(fresh_token);
    Ok(SessionPlan {
        namespace: config.sessions_namespace().to_string(),
        operator_namespace: config.namespace.clone(),
        exposure,
        child_name: child_name(&name, &uid),
        session_namespace: namespace,
        session_name: name.clone(),
        session_uid: uid,
        vm_name: target.describe(hv_name),
        target,
        proxy_image: config.proxy_image.clone(),
        proxy_image_pull_policy: config.proxy_image_pull_policy.clone(),
        token,
        expires_at,
        connect_timeout: session.spec.connect_timeout.clone(),
        idle_timeout: session.spec.idle_timeout.clone(),
        run_once: session.spec.run_once.unwrap_or(false),
        viewers: viewers.policy.unwrap_or_default(),
        view_only: viewers.view_only.unwrap_or(false),
        recording,
    })
}

/// The claim a session's recordings go to, if it is recorded: the
/// Hypervisor's policy decides whether, its claim (or the install's) where.
/// Never a claim the session names: recordings are an audit trail, kept
/// where the audited cannot reach them.
pub fn recording_claim(
    session: &ConsoleSession,
    hypervisor: &Hypervisor,
    config: &Config,
) -> Result<Option<String>, Verdict> {
    let policy = hypervisor.spec.recording.clone().unwrap_or_default();
    let mode = policy.policy.unwrap_or_default();
    let asked = session.spec.record.is_some();
    let hv_name = hypervisor.name_any();
    let recorded = match mode {
        RecordingMode::Forbidden if asked => {
            return Err(Verdict::new(
                SessionPhase::Failed,
                Reason::RecordingNotAllowed,
                format!(
                    "Hypervisor {hv_name:?} forbids recording (spec.recording.policy): create the session without spec.record"
                ),
            ));
        }
        RecordingMode::Forbidden => false,
        RecordingMode::Allowed => asked,
        RecordingMode::Required => true,
    };
    if !recorded {
        return Ok(None);
    }
    if session
        .spec
        .record
        .as_ref()
        .is_some_and(|r| r.claim_name.is_some())
    {
        return Err(invalid_spec(
            "spec.record.claimName is no longer supported: recordings go to the claim the administrator \
             names on the Hypervisor or in porthole's chart values; write record: {}"
                .to_string(),
        ));
    }
    let claim = policy.claim_name.or(config.recording_claim.clone());
    let Some(claim) = claim.filter(|c| !c.is_empty()) else {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::RecordingNotAllowed,
            format!(
                "the session is to be recorded, and neither Hypervisor {hv_name:?} (spec.recording.claimName) \
                 nor porthole's install (chart value recording.claimName) names a claim for recordings"
            ),
        ));
    };
    // The CRD schema checks this too; a hand-edited CRD must not turn a name
    // into a path.
    if !porthole_api::names::is_dns_subdomain(&claim) {
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::RecordingClaimNotFound,
            format!("recording claim {claim:?} is not the name of a PersistentVolumeClaim"),
        ));
    }
    Ok(Some(claim))
}

/// Where the proxy records, when the session is recorded: its claim must
/// exist, or the pod would wait for it forever without saying why.
fn recording(
    session: &ConsoleSession,
    uid: &str,
    hypervisor: &Hypervisor,
    observed: &Observed,
    config: &Config,
) -> Result<Option<Recording>, Verdict> {
    let Some(claim) = recording_claim(session, hypervisor, config)? else {
        return Ok(None);
    };
    let namespace = session.namespace().unwrap_or_default();
    let home = &config.namespace;
    // Not final: the claim may be created after the session (GitOps applies in
    // any order).
    let waiting = |what: &str| {
        Verdict::new(
            SessionPhase::Pending,
            Reason::RecordingClaimNotFound,
            format!(
                "the session is recorded, and the recording claim {claim:?} {what} in porthole's namespace \
                 {home:?}: the administrator must create it"
            ),
        )
    };
    match observed.recording_claim {
        RecordingClaim::Missing => return Err(waiting("does not exist")),
        RecordingClaim::BeingDeleted => return Err(waiting("is being deleted")),
        RecordingClaim::Present | RecordingClaim::NotChecked => {}
    }
    Ok(Some(Recording {
        claim_name: claim,
        base: format!(
            "{}/{}",
            contract::RECORDING_MOUNT,
            contract::recording_base(&namespace, &session.name_any(), uid)
        ),
    }))
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

/// The deadline of a session that cannot start yet (its Hypervisor missing or
/// unreachable, say): the one it was given when it last could, else its
/// creation plus `spec.timeout`, or plus the default timeout when that is
/// unset or unreadable. Without it, a session waiting for something that never
/// comes would wait forever.
pub fn waiting_deadline(session: &ConsoleSession) -> Option<Timestamp> {
    if let Some(known) = session.status.as_ref().and_then(|s| s.expires_at.as_ref()) {
        return Some(known.0);
    }
    let created = session.meta().creation_timestamp.as_ref()?.0;
    let timeout = session
        .spec
        .timeout
        .as_deref()
        .and_then(|text| duration::parse(text).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    created
        .checked_add(SignedDuration::try_from(timeout).ok()?)
        .ok()
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

fn invalid_spec(message: String) -> Verdict {
    Verdict::new(SessionPhase::Failed, Reason::InvalidSpec, message)
}

fn missing_credentials(hv_name: &str, what: &str) -> Verdict {
    // Not final: the platform team may create the Secret after the session.
    Verdict::new(
        SessionPhase::Pending,
        Reason::CredentialsNotFound,
        format!("the credentials of Hypervisor {hv_name:?} are missing: {what}"),
    )
}

/// A plain VNC console: the session's port, inside the Hypervisor's range.
fn vnc_target(
    session: &ConsoleSession,
    vnc: &VncHypervisor,
    credentials: &Credentials,
    hv_name: &str,
) -> Result<Target, Verdict> {
    let Some(port) = session.spec.vm.port else {
        return Err(invalid_spec(format!(
            "Hypervisor {hv_name:?} is a vnc Hypervisor: set spec.vm.port, not spec.vm.node and spec.vm.id"
        )));
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
    let password = match credentials {
        Credentials::NotConfigured => None,
        Credentials::VncPassword(password) => Some(password.clone()),
        Credentials::Missing(what) => return Err(missing_credentials(hv_name, what)),
        Credentials::Proxmox(_) => {
            return Err(missing_credentials(hv_name, "a VNC password was expected"));
        }
    };
    Ok(Target::Vnc(VncTarget {
        host: vnc.host.clone(),
        port,
        password,
    }))
}

/// A Proxmox console: node and id, inside the Hypervisor's allowed ids.
fn proxmox_target(
    session: &ConsoleSession,
    pve: &ProxmoxHypervisor,
    credentials: &Credentials,
    hv_name: &str,
) -> Result<Target, Verdict> {
    let vm = &session.spec.vm;
    let (Some(node), Some(vmid)) = (&vm.node, vm.id) else {
        return Err(invalid_spec(format!(
            "Hypervisor {hv_name:?} is a proxmox Hypervisor: set spec.vm.node and spec.vm.id, not spec.vm.port"
        )));
    };
    if let Some(ranges) = &pve.vm_ids
        && !ranges.iter().any(|r| r.contains(vmid))
    {
        let allowed = ranges
            .iter()
            .map(|r| format!("{}-{}", r.first, r.last))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Verdict::new(
            SessionPhase::Failed,
            Reason::VmNotAllowed,
            format!(
                "VM {vmid} is not among the VM ids {allowed} that Hypervisor {hv_name:?} allows"
            ),
        ));
    }
    let url = porthole_pve::api::base_url(&pve.url)
        .map_err(|e| invalid_spec(format!("Hypervisor {hv_name:?}: {e}")))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let auth = match credentials {
        Credentials::Proxmox(ProxmoxCredentials::Password { username, password }) => {
            ProxmoxAuth::Login {
                username: username.clone(),
                password: password.clone(),
            }
        }
        Credentials::Proxmox(ProxmoxCredentials::ApiToken(token)) => {
            ProxmoxAuth::ApiToken(token.clone())
        }
        Credentials::Missing(what) => return Err(missing_credentials(hv_name, what)),
        Credentials::NotConfigured | Credentials::VncPassword(_) => {
            return Err(missing_credentials(
                hv_name,
                "Proxmox credentials were expected",
            ));
        }
    };
    let tls = pve.tls.clone().unwrap_or_default();
    Ok(Target::Proxmox(ProxmoxTarget {
        url: url.as_str().trim_end_matches('/').to_string(),
        host,
        port,
        node: node.clone(),
        kind: vm.kind.unwrap_or_default(),
        vmid,
        tls: TlsSettings {
            ca_bundle: tls.ca_bundle,
            fingerprint_sha256: tls.fingerprint_sha256,
            insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        },
        auth,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use porthole_api::v1alpha1::{
        ConsoleSessionSpec, HypervisorSpec, PortRange, Record, RecordingPolicy, VmRef,
        VncHypervisor,
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
                expose: None,
                ttl_seconds_after_finished: None,
                record: None,
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
                    recording: None,
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
        assert_eq!(plan.target.endpoint(), ("10.200.0.1", 5912));
        assert_eq!(plan.token, "fresh");
        assert_eq!(plan.child_name, "console-web-uid-1");
        assert_eq!(plan.namespace, "porthole-system");
        assert_eq!(plan.session_namespace, "team-a");
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

    fn proxmox_observed() -> Observed {
        let mut obs = observed();
        let spec = &mut obs.hypervisor.as_mut().unwrap().spec;
        spec.vnc = None;
        spec.proxmox = Some(ProxmoxHypervisor {
            url: "https://10.200.0.1:8006".into(),
            credentials_secret_ref: porthole_api::v1alpha1::SecretRef {
                namespace: None,
                name: "pve".into(),
            },
            tls: Some(porthole_api::v1alpha1::ProxmoxTls {
                fingerprint_sha256: Some(["AB"; 32].join(":")),
                ..Default::default()
            }),
            vm_ids: Some(vec![porthole_api::v1alpha1::IdRange {
                first: 100,
                last: 199,
            }]),
        });
        obs.credentials = Credentials::Proxmox(ProxmoxCredentials::Password {
            username: "porthole@pve".into(),
            password: "hunter2".into(),
        });
        obs
    }

    fn proxmox_session(id: u32) -> ConsoleSession {
        let mut s = session(None);
        s.spec.vm = VmRef {
            node: Some("pve1".into()),
            id: Some(id),
            ..VmRef::default()
        };
        s
    }

    #[test]
    fn a_proxmox_session_targets_the_api_and_waits_to_log_in() {
        let plan = run(&proxmox_session(120), &proxmox_observed()).unwrap();
        let Target::Proxmox(pve) = &plan.target else {
            panic!("not a Proxmox target: {:?}", plan.target);
        };
        assert_eq!(plan.target.endpoint(), ("10.200.0.1", 8006));
        assert_eq!((pve.node.as_str(), pve.vmid), ("pve1", 120));
        assert_eq!(pve.url, "https://10.200.0.1:8006");
        assert!(matches!(pve.auth, ProxmoxAuth::Login { .. }));
        assert_eq!(plan.vm_name, "hv1 pve1/qemu 120");
    }

    #[test]
    fn a_vm_id_outside_the_allowed_ranges_fails_and_says_which() {
        let verdict = run(&proxmox_session(250), &proxmox_observed()).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::VmNotAllowed)
        );
        assert!(verdict.message.contains("100-199"), "{}", verdict.message);
    }

    #[test]
    fn a_session_must_name_its_vm_the_way_its_hypervisor_does() {
        let port_on_proxmox = run(&session(Some(5912)), &proxmox_observed()).unwrap_err();
        assert_eq!(port_on_proxmox.reason, Reason::InvalidSpec);
        assert!(port_on_proxmox.message.contains("spec.vm.node"));
        let id_on_vnc = run(&proxmox_session(120), &observed()).unwrap_err();
        assert_eq!(id_on_vnc.reason, Reason::InvalidSpec);
        assert!(id_on_vnc.message.contains("spec.vm.port"));
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
        obs.credentials =
            Credentials::Missing("Secret porthole-system/vnc has no key password".into());
        let verdict = run(&session(Some(5912)), &obs).unwrap_err();
        assert_eq!(verdict.reason, Reason::CredentialsNotFound);
        assert!(verdict.message.contains("porthole-system/vnc"));
    }

    fn recorded() -> ConsoleSession {
        let mut s = session(Some(5912));
        s.spec.record = Some(Record::default());
        s
    }

    /// The Hypervisor of `observed()`, recording per `mode` into `claim`.
    fn recording_to(mode: RecordingMode, claim: Option<&str>) -> Observed {
        let mut obs = observed();
        obs.hypervisor.as_mut().unwrap().spec.recording = Some(RecordingPolicy {
            policy: Some(mode),
            claim_name: claim.map(Into::into),
        });
        obs.recording_claim = RecordingClaim::Present;
        obs
    }

    fn claim(name: &str) -> PersistentVolumeClaim {
        let mut pvc = PersistentVolumeClaim::default();
        pvc.metadata.name = Some(name.into());
        pvc.metadata.namespace = Some("porthole-system".into());
        pvc
    }

    #[test]
    fn a_session_without_record_records_nothing() {
        assert_eq!(
            run(&session(Some(5912)), &observed()).unwrap().recording,
            None
        );
    }

    #[test]
    fn a_recorded_session_writes_under_its_namespace_name_and_uid_in_the_administrators_claim() {
        let obs = recording_to(RecordingMode::Allowed, Some("audit"));
        let plan = run(&recorded(), &obs).unwrap();
        assert_eq!(
            plan.recording,
            Some(Recording {
                claim_name: "audit".into(),
                base: "/var/run/porthole/recordings/team-a/web/uid-1/connection".into(),
            })
        );
    }

    #[test]
    fn the_installs_claim_serves_hypervisors_that_name_none() {
        let obs = recording_to(RecordingMode::Allowed, None);
        let config = Config::parse_from(["porthole-operator", "--recording-claim", "all-consoles"]);
        let plan = plan(&recorded(), &obs, &config, || "t".into()).unwrap();
        assert_eq!(plan.recording.unwrap().claim_name, "all-consoles");
        let verdict = run(&recorded(), &obs).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::RecordingNotAllowed)
        );
        assert!(
            verdict.message.contains("names a claim"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_hypervisor_can_require_or_forbid_recording() {
        let required = recording_to(RecordingMode::Required, Some("audit"));
        let plan = run(&session(Some(5912)), &required).unwrap();
        assert_eq!(plan.recording.unwrap().claim_name, "audit");
        let forbidden = recording_to(RecordingMode::Forbidden, Some("audit"));
        assert_eq!(
            run(&session(Some(5912)), &forbidden).unwrap().recording,
            None
        );
        let verdict = run(&recorded(), &forbidden).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::RecordingNotAllowed)
        );
        assert!(
            verdict.message.contains("forbids recording"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_session_cannot_name_the_claim() {
        let mut s = recorded();
        s.spec.record = Some(Record {
            claim_name: Some("tenants-own".into()),
        });
        let verdict = run(&s, &recording_to(RecordingMode::Allowed, Some("audit"))).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Failed, Reason::InvalidSpec)
        );
        assert!(verdict.message.contains("claimName"), "{}", verdict.message);
    }

    #[test]
    fn a_missing_claim_waits_and_names_it() {
        let mut obs = recording_to(RecordingMode::Allowed, Some("audit"));
        obs.recording_claim = RecordingClaim::found(None);
        let verdict = run(&recorded(), &obs).unwrap_err();
        assert_eq!(
            (verdict.phase, verdict.reason),
            (SessionPhase::Pending, Reason::RecordingClaimNotFound)
        );
        assert!(
            verdict.message.contains("\"audit\"")
                && verdict.message.contains("does not exist")
                && verdict.message.contains("\"porthole-system\""),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_claim_being_deleted_waits_too() {
        let mut obs = recording_to(RecordingMode::Allowed, Some("audit"));
        let mut pvc = claim("audit");
        pvc.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        obs.recording_claim = RecordingClaim::found(Some(&pvc));
        let verdict = run(&recorded(), &obs).unwrap_err();
        assert_eq!(verdict.reason, Reason::RecordingClaimNotFound);
        assert!(
            verdict.message.contains("is being deleted"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_running_session_keeps_recording_while_its_claim_is_deleted() {
        // Its pod runs, so the reconciler does not look the claim up again.
        let mut obs = recording_to(RecordingMode::Allowed, Some("audit"));
        obs.recording_claim = RecordingClaim::NotChecked;
        let plan = run(&recorded(), &obs).unwrap();
        assert_eq!(
            plan.recording.map(|r| r.claim_name).as_deref(),
            Some("audit")
        );
    }

    #[test]
    fn a_claim_name_that_is_no_object_name_is_refused() {
        let obs = recording_to(RecordingMode::Allowed, Some("../etc"));
        let verdict = run(&recorded(), &obs).unwrap_err();
        assert_eq!(verdict.phase, SessionPhase::Failed);
    }

    #[test]
    fn a_session_that_can_never_run_fails_rather_than_wait_for_its_claim() {
        let mut s = recorded();
        s.spec.vm.port = Some(22);
        let mut obs = recording_to(RecordingMode::Allowed, Some("audit"));
        obs.recording_claim = RecordingClaim::found(None);
        let verdict = run(&s, &obs).unwrap_err();
        assert_eq!(verdict.reason, Reason::PortNotAllowed);
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
    fn a_session_that_cannot_start_keeps_a_deadline() {
        let mut s = session(Some(5912));
        s.spec.timeout = Some("90s".into());
        assert_eq!(
            waiting_deadline(&s).unwrap().to_string(),
            "2026-01-01T00:01:30Z"
        );
        // Unset or unreadable: the default timeout, an hour.
        s.spec.timeout = Some("soon".into());
        assert_eq!(
            waiting_deadline(&s).unwrap().to_string(),
            "2026-01-01T01:00:00Z"
        );
        // Once planned, the deadline it was given stands.
        s.status = Some(porthole_api::v1alpha1::ConsoleSessionStatus {
            expires_at: Some(Time("2026-01-01T00:30:00Z".parse().unwrap())),
            ..Default::default()
        });
        assert_eq!(
            waiting_deadline(&s).unwrap().to_string(),
            "2026-01-01T00:30:00Z"
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
