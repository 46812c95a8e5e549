//! The real `reconcile` against a mocked Kubernetes API, in the style of kube-rs
//! controller-rs (`fixtures.rs`): `Client::new` over a `tower_test` mock, and an
//! [`ApiServerVerifier`] that runs as a spawned task, asserts every request the
//! reconcile makes, in order (method, path, query, content type, the body's
//! essential fields), and answers each as an API server would. A request the
//! scenario does not expect, or one missing at the end, fails the test.
//!
//! Secrets are watched on the way: the session token and the hypervisor's VNC
//! password may appear in the session Secret's apply and nowhere else (the token
//! in `status.url` only, by design).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use porthole_api::contract::{FINALIZER, annotations, labels, secret_keys};
use porthole_api::v1alpha1::{
    ConsoleSession, ConsoleSessionSpec, ConsoleSessionStatus, Expose, ExposeType, Hypervisor,
    HypervisorSpec, PortRange, RecordingMode, RecordingPolicy, SecretKeyRef, SessionPhase, VmRef,
    VncHypervisor,
};
use porthole_operator::Config;
use porthole_operator::context::Context;
use porthole_operator::reconcile::{Error, MANAGER, reconcile};
use porthole_operator::telemetry::Metrics;
use serde_json::{Value, json};

/// The session's namespace: a tenant's.
const NS: &str = "team-a";
/// porthole's namespace: its Secrets, its recording claims, and (by default)
/// every session's children.
const HOME: &str = "porthole-system";
const SESSION: &str = "web";
/// The name of the session's children, `console-<name>-<uid>`.
macro_rules! child {
    () => {
        "console-web-0b5f3a52-6d0e-4c1e-9a57-3c2f1d9e8a41"
    };
}
const SESSION_UID: &str = "0b5f3a52-6d0e-4c1e-9a57-3c2f1d9e8a41";
const CHILD: &str = child!();
const HV: &str = "hv1";
const VNC_PASSWORD: &str = "vnc-s3cret-pw";
/// The token of a session whose Secret exists already.
const TOKEN: &str = "Qm9vdHN0cmFwLXRva2VuLWZvci10ZXN0cy1vbmx5LTAxMjM";
/// The namespace label the test Hypervisor's allowedNamespaces selects.
const ALLOW_LABEL: (&str, &str) = ("porthole.dev/consoles", "allowed");
const CLUSTER_IP: &str = "10.96.0.42";

// The session's children, in porthole's namespace.
const POD: &str = concat!("/api/v1/namespaces/porthole-system/pods/", child!());
const SERVICE: &str = concat!("/api/v1/namespaces/porthole-system/services/", child!());
const SECRET: &str = concat!("/api/v1/namespaces/porthole-system/secrets/", child!());
const NETWORK_POLICY: &str = concat!(
    "/apis/networking.k8s.io/v1/namespaces/porthole-system/networkpolicies/",
    child!()
);
const INGRESS: &str = concat!(
    "/apis/networking.k8s.io/v1/namespaces/porthole-system/ingresses/",
    child!()
);
/// The order in which the operator deletes them.
const CHILDREN: [&str; 5] = [POD, SERVICE, SECRET, INGRESS, NETWORK_POLICY];
const ENDPOINT_SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/porthole-system/endpointslices";
// The administrator's objects.
const HYPERVISOR: &str = "/apis/porthole.dev/v1alpha1/hypervisors/hv1";
const PASSWORD_SECRET: &str = "/api/v1/namespaces/porthole-system/secrets/vnc";
const RECORDING_CLAIM: &str = "/api/v1/namespaces/porthole-system/persistentvolumeclaims/audit";
// The tenant's: the session, its namespace and its Events.
const NAMESPACE: &str = "/api/v1/namespaces/team-a";
const CONSOLE_SESSION: &str = "/apis/porthole.dev/v1alpha1/namespaces/team-a/consolesessions/web";
const STATUS: &str = "/apis/porthole.dev/v1alpha1/namespaces/team-a/consolesessions/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// Only guards against a hang; no test waits for it.
const GUARD: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Fixtures: the objects the API server holds.
// ---------------------------------------------------------------------------

/// Whole seconds: what the API server stores and the status serializes.
fn seconds_ago(seconds: i64) -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second() - seconds).unwrap()
}

/// A session on `hv1`, port 5910, created `created_ago` seconds ago, with
/// porthole's finalizer (which the first reconcile adds).
fn session(
    timeout: &str,
    created_ago: i64,
    status: Option<ConsoleSessionStatus>,
) -> ConsoleSession {
    let mut session = ConsoleSession::new(
        SESSION,
        ConsoleSessionSpec {
            hypervisor: HV.into(),
            vm: VmRef {
                port: Some(5910),
                ..VmRef::default()
            },
            timeout: Some(timeout.into()),
            connect_timeout: None,
            idle_timeout: None,
            run_once: None,
            viewers: None,
            expose: None,
            ttl_seconds_after_finished: None,
            record: None,
        },
    );
    let meta = session.meta_mut();
    meta.namespace = Some(NS.into());
    meta.uid = Some(SESSION_UID.into());
    meta.generation = Some(1);
    meta.resource_version = Some("1200".into());
    meta.creation_timestamp = Some(Time(seconds_ago(created_ago)));
    meta.finalizers = Some(vec![FINALIZER.into()]);
    session.status = status;
    session
}

/// `session` as it is being deleted, held by `finalizers`.
fn being_deleted(mut session: ConsoleSession, finalizers: &[&str]) -> ConsoleSession {
    let meta = session.meta_mut();
    meta.deletion_timestamp = Some(Time(seconds_ago(1)));
    meta.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    session
}

/// A VNC Hypervisor with a password (in porthole's namespace: its reference
/// names none), open to namespaces labelled [`ALLOW_LABEL`].
fn hypervisor() -> Hypervisor {
    let mut hv = Hypervisor::new(
        HV,
        HypervisorSpec {
            vnc: Some(VncHypervisor {
                host: "10.200.0.1".into(),
                ports: PortRange {
                    first: 5910,
                    last: 5930,
                },
                password_secret_ref: Some(SecretKeyRef {
                    namespace: None,
                    name: "vnc".into(),
                    key: "password".into(),
                }),
            }),
            proxmox: None,
            allowed_namespaces: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    ALLOW_LABEL.0.to_string(),
                    ALLOW_LABEL.1.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            default_timeout: None,
            max_timeout: Some("8h".into()),
            recording: None,
        },
    );
    hv.metadata.uid = Some("7e0c2b4a-hv".into());
    hv.metadata.resource_version = Some("17".into());
    hv.metadata.generation = Some(1);
    hv.metadata.creation_timestamp = Some(Time(seconds_ago(86400)));
    hv
}

/// A Hypervisor as the API server returns it.
fn served_hypervisor(hv: Hypervisor) -> Value {
    serde_json::to_value(hv).unwrap()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn password_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "vnc", "namespace": "porthole-system", "uid": "pw-uid", "resourceVersion": "5"},
        "data": {"password": b64(VNC_PASSWORD)},
    })
}

/// The session Secret a previous reconcile created.
fn session_secret() -> Value {
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": true,
        "metadata": child_metadata(),
        "data": {secret_keys::TOKEN: b64(TOKEN), secret_keys::VNC_PASSWORD: b64(VNC_PASSWORD)},
    });
    served(&mut secret);
    secret
}

fn namespace(allowed: bool) -> Value {
    let mut labels = json!({"kubernetes.io/metadata.name": NS});
    if allowed {
        labels[ALLOW_LABEL.0] = json!(ALLOW_LABEL.1);
    }
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "uid": "ns-uid", "resourceVersion": "3", "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// What the operator puts on every child: labels and an annotation that say
/// whose it is, and no owner reference (which cannot cross namespaces).
fn child_metadata() -> Value {
    json!({
        "name": CHILD, "namespace": HOME,
        "labels": {
            labels::NAME: labels::PROXY_NAME,
            labels::MANAGED_BY: labels::OPERATOR_NAME,
            labels::SESSION: SESSION,
            labels::SESSION_NAMESPACE: NS,
            labels::SESSION_UID: SESSION_UID,
        },
        "annotations": {annotations::SESSION: format!("{NS}/{SESSION}")},
    })
}

/// The proxy pod a previous reconcile created, running (and ready, or not).
fn running_pod(ready: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": child_metadata(),
        "spec": {"containers": [{"name": "proxy", "image": "porthole/proxy:test"}], "restartPolicy": "Never", "nodeName": "porthole-node"},
        "status": {
            "phase": "Running",
            "hostIP": "10.200.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }},
            ],
            "containerStatuses": [{
                "name": "proxy", "ready": ready, "restartCount": 0, "image": "porthole/proxy:test", "imageID": "",
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            }],
        },
    });
    served(&mut pod);
    pod
}

/// A proxy pod whose container exited with `message` as termination message.
fn exited_pod(message: &str, finished_at: &Timestamp) -> Value {
    let mut pod = running_pod(false);
    pod["status"]["phase"] = json!("Succeeded");
    pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
        "exitCode": 0, "reason": "Completed", "message": message,
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": finished_at.to_string(),
    }});
    pod
}

/// The server-side fields of a stored object.
fn served(object: &mut Value) {
    let meta = &mut object["metadata"];
    if meta.get("uid").is_none() {
        let uid = format!("{}-uid", object["kind"].as_str().unwrap_or("object"));
        object["metadata"]["uid"] = json!(uid.to_lowercase());
    }
    object["metadata"]["resourceVersion"] = json!("1300");
    object["metadata"]["creationTimestamp"] = json!(seconds_ago(0).to_string());
}

fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    })
}

/// A status as the previous reconcile wrote it.
fn status(phase: SessionPhase, reason: &str, message: &str) -> ConsoleSessionStatus {
    serde_json::from_value(json!({
        "phase": phase.as_str(), "reason": reason, "message": message,
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready", "status": if phase.is_open() { "True" } else { "False" },
            "reason": reason, "message": message, "observedGeneration": 1,
            "lastTransitionTime": seconds_ago(120).to_string(),
        }],
    }))
    .unwrap()
}

/// The status of a session whose proxy pod is starting.
fn waiting_for_the_proxy() -> ConsoleSessionStatus {
    status(
        SessionPhase::Pending,
        "ProxyStarting",
        "waiting for the console proxy to become ready",
    )
}

/// Defaults but for the image and the policies; porthole's namespace given
/// (the environment could set another), the sessions namespace left unset.
fn config(network_policies: bool) -> Config {
    Config::try_parse_from([
        "porthole-operator",
        "--proxy-image=porthole/proxy:test",
        "--namespace=porthole-system",
        "--expose=ClusterIP",
        &format!("--network-policies={network_policies}"),
    ])
    .unwrap()
}

// ---------------------------------------------------------------------------
// The verifier.
// ---------------------------------------------------------------------------

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// What a scenario expects of the API, request by request.
enum Scenario {
    /// A session seen for the first time, without porthole's finalizer.
    AddFinalizer,
    /// Nothing exists yet; the Pod comes back Pending.
    NewSession { network_policies: bool },
    /// Pod, Secret and Service exist and the pod is ready; its Service's one
    /// ready endpoint is this pod, or another (replaced) one.
    StartedSession { routed_to_this_pod: bool },
    /// Someone else deletes the running proxy pod (a drain, `kubectl delete`).
    PodDeletedByOthers,
    /// The session is being deleted and still has porthole's finalizer (at
    /// index `finalizer_index`): its children go, then the finalizer.
    SessionDeleted { finalizer_index: usize },
    /// A final session whose children were deleted when it ended is deleted.
    FinishedSessionDeleted,
    /// The reconcile sends nothing at all.
    NoRequest,
    /// The plan is refused for good: the session's namespace does not carry
    /// the label the Hypervisor selects, or (`namespace_allowed`) the session
    /// asks for something else the administrator does not allow.
    Refused { namespace_allowed: bool },
    /// The Hypervisor's credentials Secret reference names the session's
    /// namespace instead of porthole's.
    ForeignCredentials,
    /// The Hypervisor requires recording into a claim that does not exist.
    RecordingClaimMissing,
    /// The proxy pod still runs, but the session's timeout has passed.
    TimeoutPassed,
    /// The proxy pod exited with `idle` as its end reason, at `finished_at`.
    ProxyExited { finished_at: Timestamp },
    /// The Hypervisor the session names does not exist.
    HypervisorMissing { status_unchanged: bool },
    /// A final session: its children are deleted again; then, if its TTL has
    /// passed, the session itself.
    Finished { ttl_passed: bool },
}

/// Deletion answers.
enum Stored {
    /// The object is there: the API server answers with `answer`.
    Yes(Value),
    No,
}

/// What the reconcile sent, for the tests to judge.
#[derive(Default)]
struct Transcript {
    /// Every request, `METHOD path`, in order.
    requests: Vec<String>,
    /// Server-side applies, `(kind, body)`, in order.
    applied: Vec<(String, Value)>,
    statuses: Vec<ConsoleSessionStatus>,
    events: Vec<K8sEvent>,
    deleted: Vec<String>,
    /// JSON patches of the session (its finalizers), in order.
    session_patches: Vec<Value>,
}

impl Transcript {
    /// The requests that touch `namespace`, `METHOD path`.
    fn requests_in(&self, namespace: &str) -> Vec<&str> {
        let (inside, itself) = (
            format!("/namespaces/{namespace}/"),
            format!("/namespaces/{namespace}"),
        );
        self.requests
            .iter()
            .filter(|r| r.contains(&inside) || r.ends_with(&itself))
            .map(String::as_str)
            .collect()
    }

    fn applied_kinds(&self) -> Vec<&str> {
        self.applied.iter().map(|(kind, _)| kind.as_str()).collect()
    }

    fn only_status(&self) -> &ConsoleSessionStatus {
        assert_eq!(self.statuses.len(), 1, "one status write");
        &self.statuses[0]
    }

    fn event_reasons(&self) -> Vec<(&str, &str)> {
        self.events
            .iter()
            .map(|e| {
                (
                    e.type_.as_deref().unwrap_or_default(),
                    e.reason.as_deref().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// One request, taken apart.
struct Received {
    query: BTreeMap<String, String>,
    content_type: String,
    text: String,
    body: Value,
    reply: Reply,
}

struct ApiServerVerifier {
    handle: ApiServerHandle,
    /// Values no status, Event, Pod, Service or policy may carry.
    secrets: Vec<String>,
    transcript: Transcript,
}

impl ApiServerVerifier {
    fn new(handle: ApiServerHandle) -> Self {
        ApiServerVerifier {
            handle,
            secrets: vec![VNC_PASSWORD.to_string()],
            transcript: Transcript::default(),
        }
    }

    /// Plays `scenario` in a task; the task ends once the client is gone and
    /// fails on any request the scenario did not expect.
    fn run(mut self, scenario: Scenario) -> tokio::task::JoinHandle<Transcript> {
        tokio::spawn(async move {
            match scenario {
                Scenario::AddFinalizer => {
                    self.patch_session(
                        json!([
                            {"op": "test", "path": "/metadata/finalizers", "value": null},
                            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
                        ]),
                        &[FINALIZER],
                    )
                    .await;
                }
                Scenario::NewSession { network_policies } => {
                    self.get(POD, None).await;
                    self.dereference(hypervisor(), true, None).await;
                    let secret = self.apply(SECRET, "Secret").await;
                    let token = secret_value(&secret, secret_keys::TOKEN);
                    assert_eq!(token.len(), 43, "a fresh 256-bit token: {token}");
                    self.secrets.push(token);
                    assert_eq!(
                        secret_value(&secret, secret_keys::VNC_PASSWORD),
                        VNC_PASSWORD
                    );
                    assert_eq!(secret["immutable"], json!(true));
                    if network_policies {
                        self.apply_network_policy().await;
                    }
                    self.apply_pod().await;
                    self.event().await;
                    self.apply_service().await;
                    self.delete(INGRESS, Stored::No).await;
                    self.patch_status().await;
                    self.event().await;
                }
                Scenario::StartedSession { routed_to_this_pod } => {
                    self.secrets.push(TOKEN.to_string());
                    self.get(POD, Some(running_pod(true))).await;
                    self.dereference(hypervisor(), true, Some(session_secret()))
                        .await;
                    // The immutable session Secret and the running pod are
                    // kept: no apply, no "Created" Event. The URL still
                    // carries the Secret's token.
                    self.apply_network_policy().await;
                    self.apply_service().await;
                    self.delete(INGRESS, Stored::No).await;
                    let endpoint = if routed_to_this_pod {
                        "pod-uid"
                    } else {
                        "replaced-pod-uid"
                    };
                    self.list_endpoint_slices(true, endpoint).await;
                    self.patch_status().await;
                    if routed_to_this_pod {
                        self.event().await;
                    }
                }
                Scenario::PodDeletedByOthers => {
                    let mut pod = running_pod(true);
                    pod["metadata"]["deletionTimestamp"] = json!(seconds_ago(1).to_string());
                    pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                    self.get(POD, Some(pod)).await;
                    self.patch_status().await;
                    self.event().await;
                }
                Scenario::SessionDeleted { finalizer_index } => {
                    self.delete_children([true, true, true, false, true]).await;
                    self.remove_finalizer(finalizer_index).await;
                }
                Scenario::FinishedSessionDeleted => {
                    // When the final session comes in.
                    self.delete_children([false; 5]).await;
                    // When it is deleted: its children are gone already.
                    self.remove_finalizer(0).await;
                }
                Scenario::NoRequest => {}
                Scenario::Refused { namespace_allowed } => {
                    self.get(POD, None).await;
                    self.dereference(hypervisor(), namespace_allowed, None)
                        .await;
                    self.patch_status().await;
                    self.event().await;
                    self.delete_children([false; 5]).await;
                }
                Scenario::ForeignCredentials => {
                    let mut hv = hypervisor();
                    if let Some(vnc) = hv.spec.vnc.as_mut() {
                        vnc.password_secret_ref.as_mut().unwrap().namespace = Some(NS.into());
                    }
                    // The Hypervisor, then no Secret of its: neither in the
                    // namespace it names nor in porthole's.
                    self.get(POD, None).await;
                    self.get(HYPERVISOR, Some(served_hypervisor(hv))).await;
                    self.get(SECRET, None).await;
                    self.get(NAMESPACE, Some(namespace(true))).await;
                    self.patch_status().await;
                    self.event().await;
                }
                Scenario::RecordingClaimMissing => {
                    let mut hv = hypervisor();
                    hv.spec.recording = Some(RecordingPolicy {
                        policy: Some(RecordingMode::Required),
                        claim_name: Some("audit".into()),
                    });
                    self.get(POD, None).await;
                    self.dereference(hv, true, None).await;
                    self.get(RECORDING_CLAIM, None).await;
                    self.patch_status().await;
                    self.event().await;
                }
                Scenario::TimeoutPassed => {
                    self.secrets.push(TOKEN.to_string());
                    // Past the deadline in its status: nothing is read but
                    // the pod (which could have ended otherwise before).
                    self.get(POD, Some(running_pod(true))).await;
                    self.patch_status().await;
                    self.event().await;
                    self.delete_children([true, true, true, false, true]).await;
                }
                Scenario::ProxyExited { finished_at } => {
                    self.secrets.push(TOKEN.to_string());
                    self.get(POD, Some(exited_pod("idle\n", &finished_at)))
                        .await;
                    self.patch_status().await;
                    self.event().await;
                    self.delete_children([true, true, true, false, true]).await;
                }
                Scenario::HypervisorMissing { status_unchanged } => {
                    self.get(POD, None).await;
                    self.get(HYPERVISOR, None).await;
                    self.get(SECRET, None).await;
                    self.get(NAMESPACE, Some(namespace(true))).await;
                    if !status_unchanged {
                        self.patch_status().await;
                        self.event().await;
                    }
                }
                Scenario::Finished { ttl_passed } => {
                    self.delete_children([false; 5]).await;
                    if ttl_passed {
                        let mut gone = api_status(200, "", "");
                        gone["details"] = json!({"name": SESSION, "group": "porthole.dev", "kind": "consolesessions", "uid": SESSION_UID});
                        self.delete(CONSOLE_SESSION, Stored::Yes(gone)).await;
                    }
                }
            }
            self.expect_no_further_request().await;
            self.transcript
        })
    }

    /// Takes the next request, which must be `method path`.
    async fn next(&mut self, method: Method, path: &str) -> Received {
        let (request, reply) = self
            .handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, but reconcile was done"));
        let (parts, body) = request.into_parts();
        self.transcript
            .requests
            .push(format!("{} {}", parts.method, parts.uri.path()));
        assert_eq!(
            format!("{} {}", parts.method, parts.uri.path()),
            format!("{method} {path}"),
            "unexpected request (query {:?})",
            parts.uri.query()
        );
        let bytes = body.collect_bytes().await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        Received {
            query: query(parts.uri.query().unwrap_or_default()),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body: if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
            text,
            reply,
        }
    }

    async fn expect_no_further_request(&mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    /// A GET of one object, found (`Some`) or not.
    async fn get(&mut self, path: &str, stored: Option<Value>) {
        let received = self.next(Method::GET, path).await;
        assert!(received.query.is_empty(), "{:?}", received.query);
        match stored {
            Some(object) => answer(received.reply, StatusCode::OK, &object),
            None => not_found(received.reply, path),
        }
    }

    /// The reads before validation: the Hypervisor `hv`, its password Secret,
    /// the session's own Secret, the namespace's labels.
    async fn dereference(&mut self, hv: Hypervisor, allowed: bool, session_secret: Option<Value>) {
        self.get(HYPERVISOR, Some(served_hypervisor(hv))).await;
        self.get(PASSWORD_SECRET, Some(password_secret())).await;
        self.get(SECRET, session_secret).await;
        self.get(NAMESPACE, Some(namespace(allowed))).await;
    }

    /// A server-side apply of a child: forced, as the operator's field manager,
    /// in porthole's namespace under the child name, with [`child_metadata`]'s
    /// labels and annotation and no owner reference; no secret unless it is
    /// the Secret. Answers with the object as stored, with `finish` run on it.
    async fn apply_with(
        &mut self,
        path: &str,
        kind: &str,
        finish: impl FnOnce(&mut Value),
    ) -> Value {
        let received = self.next(Method::PATCH, path).await;
        assert_server_side_apply(&received);
        let body = received.body;
        assert_eq!(body["kind"], json!(kind));
        let (meta, expected) = (&body["metadata"], child_metadata());
        for field in ["name", "namespace", "labels", "annotations"] {
            assert_eq!(meta[field], expected[field], "{kind}'s {field}");
        }
        assert!(
            meta.get("ownerReferences").is_none(),
            "{kind}: an owner reference cannot cross namespaces: {meta}"
        );
        if kind != "Secret" {
            self.assert_no_secret(&received.text, kind);
        }
        let mut stored = body.clone();
        served(&mut stored);
        finish(&mut stored);
        answer(received.reply, StatusCode::OK, &stored);
        self.transcript
            .applied
            .push((kind.to_string(), body.clone()));
        body
    }

    async fn apply(&mut self, path: &str, kind: &str) -> Value {
        self.apply_with(path, kind, |_| {}).await
    }

    async fn apply_network_policy(&mut self) {
        let policy = self.apply(NETWORK_POLICY, "NetworkPolicy").await;
        let spec = &policy["spec"];
        assert_eq!(
            spec["podSelector"],
            json!({"matchLabels": {labels::SESSION_UID: SESSION_UID}}),
            "the session's pod, by the uid no other session shares"
        );
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            spec["egress"],
            json!([{"to": [{"ipBlock": {"cidr": "10.200.0.1/32"}}], "ports": [{"port": 5910, "protocol": "TCP"}]}]),
            "the proxy reaches its VM's console port and nothing else"
        );
    }

    /// The Pod comes back as just created: Pending, not ready.
    async fn apply_pod(&mut self) {
        let pod = self
            .apply_with(POD, "Pod", |pod| {
                pod["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
            })
            .await;
        let spec = &pod["spec"];
        assert_eq!(spec["containers"][0]["image"], json!("porthole/proxy:test"));
        assert_eq!(spec["restartPolicy"], json!("Never"));
        assert_eq!(spec["automountServiceAccountToken"], json!(false));
        assert_eq!(spec["volumes"][0]["secret"]["secretName"], json!(CHILD));
        let env = spec["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.iter().any(|e| e["name"] == json!("PORTHOLE_UPSTREAM")
                && e["value"] == json!("10.200.0.1:5910")),
            "{env:?}"
        );
    }

    /// The Service comes back with its cluster IP.
    async fn apply_service(&mut self) {
        let service = self
            .apply_with(SERVICE, "Service", |service| {
                service["spec"]["clusterIP"] = json!(CLUSTER_IP);
                service["spec"]["clusterIPs"] = json!([CLUSTER_IP]);
                service["status"] = json!({"loadBalancer": {}});
            })
            .await;
        assert_eq!(service["spec"]["type"], json!("ClusterIP"));
        assert_eq!(
            service["spec"]["selector"],
            json!({labels::SESSION_UID: SESSION_UID})
        );
    }

    async fn delete(&mut self, path: &str, stored: Stored) {
        let received = self.next(Method::DELETE, path).await;
        assert_eq!(received.body["propagationPolicy"], json!("Background"));
        self.transcript.deleted.push(path.to_string());
        match stored {
            Stored::Yes(answer_with) => answer(received.reply, StatusCode::OK, &answer_with),
            Stored::No => not_found(received.reply, path),
        }
    }

    /// Pod, Service, Secret, Ingress, NetworkPolicy, in that order; `stored`
    /// says which exist.
    async fn delete_children(&mut self, stored: [bool; 5]) {
        for (path, stored) in CHILDREN.into_iter().zip(stored) {
            let answer_with = if path == POD {
                let mut pod = running_pod(false);
                pod["metadata"]["deletionTimestamp"] = json!(seconds_ago(-5).to_string());
                pod["metadata"]["deletionGracePeriodSeconds"] = json!(5);
                pod
            } else {
                api_status(200, "", "")
            };
            let stored = if stored {
                Stored::Yes(answer_with)
            } else {
                Stored::No
            };
            self.delete(path, stored).await;
        }
    }

    /// The Service's one endpoint, `ready` or not, pointing at the pod `pod_uid`.
    async fn list_endpoint_slices(&mut self, ready: bool, pod_uid: &str) {
        let received = self.next(Method::GET, ENDPOINT_SLICES).await;
        assert_eq!(
            received.query,
            BTreeMap::from([(
                "labelSelector".to_string(),
                format!("kubernetes.io/service-name={CHILD}")
            )])
        );
        let list = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": "1400"},
            "items": [{
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{CHILD}-x7k2p"), "namespace": HOME,
                             "labels": {"kubernetes.io/service-name": CHILD}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.88.0.7"], "conditions": {"ready": ready},
                               "targetRef": {"kind": "Pod", "namespace": HOME, "name": CHILD, "uid": pod_uid}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }],
        });
        answer(received.reply, StatusCode::OK, &list);
    }

    /// A JSON patch of the session (kube's `finalizer` helper, adding or
    /// removing porthole's finalizer): exactly `ops`. Answers with the
    /// session, holding `finalizers` after it.
    async fn patch_session(&mut self, ops: Value, finalizers: &[&str]) {
        let received = self.next(Method::PATCH, CONSOLE_SESSION).await;
        assert_eq!(received.content_type, "application/json-patch+json");
        assert!(received.query.is_empty(), "{:?}", received.query);
        assert_eq!(received.body, ops);
        let mut stored = serde_json::to_value(session("30m", 60, None)).unwrap();
        stored["metadata"]["finalizers"] = json!(finalizers);
        stored["metadata"]["resourceVersion"] = json!("1301");
        answer(received.reply, StatusCode::OK, &stored);
        self.transcript.session_patches.push(ops);
    }

    /// The finalizer's removal, once the cleanup is done: tested in place
    /// first, so that a concurrent change of the list fails the patch.
    async fn remove_finalizer(&mut self, index: usize) {
        let path = format!("/metadata/finalizers/{index}");
        self.patch_session(
            json!([
                {"op": "test", "path": path, "value": FINALIZER},
                {"op": "remove", "path": path},
            ]),
            &[],
        )
        .await;
    }

    /// The status, by forced server-side apply on the status subresource; no
    /// secret anywhere but in `status.url`.
    async fn patch_status(&mut self) {
        let received = self.next(Method::PATCH, STATUS).await;
        assert_server_side_apply(&received);
        let body = received.body;
        assert_eq!(body["apiVersion"], json!("porthole.dev/v1alpha1"));
        assert_eq!(body["kind"], json!("ConsoleSession"));
        let mut without_url = body.clone();
        if let Some(status) = without_url["status"].as_object_mut() {
            status.remove("url");
        }
        self.assert_no_secret(&without_url.to_string(), "the status");
        let status: ConsoleSessionStatus =
            serde_json::from_value(body["status"].clone()).expect("a ConsoleSession status");
        let mut stored = serde_json::to_value(session("1h", 60, Some(status.clone()))).unwrap();
        stored["metadata"]["resourceVersion"] = json!("1301");
        answer(received.reply, StatusCode::OK, &stored);
        self.transcript.statuses.push(status);
    }

    /// An Event about the session, created (a first Event of its kind).
    async fn event(&mut self) {
        let received = self.next(Method::POST, EVENTS).await;
        assert_eq!(received.content_type, "application/json");
        self.assert_no_secret(&received.text, "an Event");
        let event: K8sEvent = serde_json::from_value(received.body.clone()).unwrap();
        let regarding = event
            .regarding
            .clone()
            .expect("an Event is about something");
        assert_eq!(
            (
                regarding.kind.as_deref(),
                regarding.name.as_deref(),
                regarding.namespace.as_deref(),
                regarding.uid.as_deref()
            ),
            (
                Some("ConsoleSession"),
                Some(SESSION),
                Some(NS),
                Some(SESSION_UID)
            )
        );
        assert_eq!(event.reporting_controller.as_deref(), Some(MANAGER));
        assert!(event.note.as_deref().is_some_and(|n| !n.is_empty()));
        let mut stored = received.body;
        stored["metadata"]["uid"] = json!("event-uid");
        stored["metadata"]["resourceVersion"] = json!("1302");
        answer(received.reply, StatusCode::CREATED, &stored);
        self.transcript.events.push(event);
    }

    fn assert_no_secret(&self, text: &str, what: &str) {
        for secret in &self.secrets {
            assert!(
                !text.contains(secret.as_str()) && !text.contains(&b64(secret)),
                "{what} carries a secret: {text}"
            );
        }
    }
}

fn assert_server_side_apply(received: &Received) {
    assert_eq!(received.content_type, "application/apply-patch+yaml");
    assert_eq!(
        received.query,
        BTreeMap::from([
            ("fieldManager".to_string(), MANAGER.to_string()),
            ("force".to_string(), "true".to_string()),
        ])
    );
}

fn secret_value(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn answer(reply: Reply, code: StatusCode, body: &Value) {
    reply.send_response(
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn not_found(reply: Reply, path: &str) {
    let (resource, name) = path.rsplit_once('/').unwrap();
    let resource = resource.rsplit('/').next().unwrap();
    let mut status = api_status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    status["details"] = json!({"name": name, "kind": resource});
    answer(reply, StatusCode::NOT_FOUND, &status);
}

/// A URL query, decoded.
fn query(text: &str) -> BTreeMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Runs one reconcile of `session` while the verifier plays `scenario`.
async fn reconcile_with(
    session: ConsoleSession,
    config: Config,
    scenario: Scenario,
) -> (Result<Action, Error>, Transcript) {
    reconcile_times(1, session, config, scenario).await
}

/// Runs `times` reconciles of `session`, one after the other with one context,
/// while the verifier plays `scenario`; returns the last one's result.
async fn reconcile_times(
    times: usize,
    session: ConsoleSession,
    config: Config,
    scenario: Scenario,
) -> (Result<Action, Error>, Transcript) {
    reconcile_each(vec![session; times], config, scenario).await
}

/// Reconciles each of `sessions` (versions of one session, as the watch
/// brings them) in turn with one context, while the verifier plays
/// `scenario`; returns the last one's result.
async fn reconcile_each(
    sessions: Vec<ConsoleSession>,
    config: Config,
    scenario: Scenario,
) -> (Result<Action, Error>, Transcript) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let verifier = ApiServerVerifier::new(handle).run(scenario);
    let ctx = Arc::new(Context::new(
        Client::new(mock, "default"),
        config,
        Metrics::default(),
    ));
    // The context (and with it every client) is dropped when reconcile returns,
    // which tells the verifier that no further request comes.
    let mut result = None;
    for session in sessions {
        let run = reconcile(Arc::new(session), ctx.clone());
        result = Some(
            tokio::time::timeout(GUARD, run)
                .await
                .expect("reconcile hung"),
        );
    }
    drop(ctx);
    let result = result.expect("at least one reconcile");
    let transcript = match tokio::time::timeout(GUARD, verifier)
        .await
        .expect("the API server verifier hung")
    {
        Ok(transcript) => transcript,
        Err(failed) => std::panic::resume_unwind(failed.into_panic()),
    };
    (result, transcript)
}

/// The delay of a requeue action (kube keeps it private; its Debug shows it).
fn requeue_after(action: &Action) -> Option<Duration> {
    let debug = format!("{action:?}");
    let seconds = debug.split("Some(").nth(1)?.split("s)").next()?;
    Some(Duration::from_secs_f64(seconds.parse().ok()?))
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_new_session_gets_its_secret_policy_pod_and_service_applied_and_waits_pending() {
    let session = session("30m", 60, None);
    let expires_at =
        session.metadata.creation_timestamp.clone().unwrap().0 + SignedDuration::from_mins(30);
    let (result, transcript) = reconcile_with(
        session,
        config(true),
        Scenario::NewSession {
            network_policies: true,
        },
    )
    .await;

    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(300)),
        "looked at again within five minutes, long before its deadline"
    );
    assert_eq!(
        transcript.applied_kinds(),
        ["Secret", "NetworkPolicy", "Pod", "Service"],
        "the policy is in place before the pod runs"
    );
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("ProxyStarting"));
    assert_eq!(
        status.message.as_deref(),
        Some("waiting for the console proxy to become ready")
    );
    assert_eq!(status.url, None, "no URL before the console works");
    assert_eq!(status.expires_at, Some(Time(expires_at)));
    assert_eq!(status.ended_at, None);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(
        (
            status.conditions[0].type_.as_str(),
            status.conditions[0].status.as_str()
        ),
        ("Ready", "False")
    );
    assert_eq!(
        transcript.event_reasons(),
        [("Normal", "Created"), ("Normal", "ProxyStarting")]
    );
    assert!(transcript.deleted.contains(&INGRESS.to_string()));
}

#[tokio::test]
async fn without_network_policies_a_new_session_gets_no_policy() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(false),
        Scenario::NewSession {
            network_policies: false,
        },
    )
    .await;
    result.expect("reconcile");
    assert_eq!(transcript.applied_kinds(), ["Secret", "Pod", "Service"]);
    assert_eq!(transcript.only_status().phase, Some(SessionPhase::Pending));
}

#[tokio::test]
async fn a_new_sessions_children_are_applied_in_porthole_system_unowned_and_labelled_with_its_uid()
{
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(true),
        Scenario::NewSession {
            network_policies: true,
        },
    )
    .await;
    result.expect("reconcile");

    let applies: Vec<&str> = transcript
        .requests
        .iter()
        .filter(|r| r.starts_with("PATCH ") && !r.ends_with("/status"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        applies,
        [SECRET, NETWORK_POLICY, POD, SERVICE].map(|path| format!("PATCH {path}"))
    );
    for (kind, body) in &transcript.applied {
        let meta = &body["metadata"];
        assert_eq!(meta["namespace"], json!(HOME), "{kind}");
        assert!(meta.get("ownerReferences").is_none(), "{kind}: {meta}");
        assert_eq!(
            meta["labels"][labels::SESSION_UID],
            json!(SESSION_UID),
            "{kind}"
        );
    }
    let (_, pod) = &transcript.applied[2];
    let proxy = &pod["spec"]["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            proxy[probe]["httpGet"]["port"],
            json!("internal"),
            "{probe}: on the internal port, apart from the viewers'"
        );
    }
    assert!(
        proxy["ports"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "internal", "containerPort": 8081, "protocol": "TCP"})),
        "{}",
        proxy["ports"]
    );
}

#[tokio::test]
async fn a_hypervisor_secret_in_another_namespace_is_not_read_and_the_session_waits_saying_where() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(true),
        Scenario::ForeignCredentials,
    )
    .await;

    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(60))
    );
    assert!(
        !transcript
            .requests
            .iter()
            .any(|r| r.ends_with("/secrets/vnc")),
        "{:?}",
        transcript.requests
    );
    assert!(transcript.applied.is_empty());
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("CredentialsNotFound"));
    let message = status.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("\"team-a\"") && message.contains("\"porthole-system\""),
        "says which namespace it named and which it must be: {message}"
    );
    assert_eq!(
        transcript.event_reasons(),
        [("Normal", "CredentialsNotFound")]
    );
}

#[tokio::test]
async fn a_session_asking_for_an_exposure_the_administrator_did_not_allow_fails() {
    let mut node_port = session("30m", 60, None);
    node_port.spec.expose = Some(Expose {
        type_: Some(ExposeType::NodePort),
        ingress: None,
    });
    let (result, transcript) = reconcile_with(
        node_port,
        config(true),
        Scenario::Refused {
            namespace_allowed: true,
        },
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(transcript.applied.is_empty(), "no NodePort Service");
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("ExposureNotAllowed"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("NodePort"),
        "{status:?}"
    );
    assert_eq!(
        transcript.event_reasons(),
        [("Warning", "ExposureNotAllowed")]
    );
    assert_eq!(transcript.deleted, CHILDREN);
}

#[tokio::test]
async fn a_hypervisor_that_requires_recording_has_its_claim_looked_up_in_porthole_system() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(true),
        Scenario::RecordingClaimMissing,
    )
    .await;

    // The claim is not watched: looked for again soon.
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(15))
    );
    assert!(transcript.applied.is_empty(), "no pod waiting for a claim");
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("RecordingClaimNotFound"));
    assert!(
        transcript
            .requests_in(NS)
            .iter()
            .all(|r| !r.contains("persistentvolumeclaims")),
        "{:?}",
        transcript.requests
    );
}

#[tokio::test]
async fn a_started_session_keeps_its_pod_and_token_and_becomes_ready_once_routed() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, Some(waiting_for_the_proxy())),
        config(true),
        Scenario::StartedSession {
            routed_to_this_pod: true,
        },
    )
    .await;

    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(transcript.applied_kinds(), ["NetworkPolicy", "Service"]);
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Ready));
    assert_eq!(status.reason.as_deref(), Some("ProxyReady"));
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://{CLUSTER_IP}/#token={TOKEN}").as_str()),
        "the token travels in the URL's fragment"
    );
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(transcript.event_reasons(), [("Normal", "ProxyReady")]);
}

#[tokio::test]
async fn a_ready_pod_is_not_announced_while_its_service_still_routes_to_a_replaced_one() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, Some(waiting_for_the_proxy())),
        config(true),
        Scenario::StartedSession {
            routed_to_this_pod: false,
        },
    )
    .await;

    // Still Pending: the EndpointSlice watch brings the session back once
    // the Service routes to this pod.
    result.expect("reconcile");
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("ProxyStarting"));
    assert_eq!(status.url, None, "no URL before it works");
    assert!(
        transcript.event_reasons().is_empty(),
        "the reason did not change"
    );
}

#[tokio::test]
async fn a_proxy_pod_deleted_by_someone_else_is_waited_for_not_taken_as_the_sessions_end() {
    let previous = status(SessionPhase::Ready, "ProxyReady", "the console is ready");
    let (result, transcript) = reconcile_with(
        session("30m", 60, Some(previous)),
        config(true),
        Scenario::PodDeletedByOthers,
    )
    .await;

    // Pending until the pod is gone (the pod watch brings the session back);
    // nothing deleted, nothing applied.
    let retry = requeue_after(&result.expect("reconcile")).expect("a backstop requeue");
    assert!(retry <= Duration::from_secs(10), "{retry:?}");
    assert!(transcript.applied.is_empty());
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("ProxyStopping"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("reconnect"),
        "{status:?}"
    );
    assert_eq!(transcript.event_reasons(), [("Normal", "ProxyStopping")]);
}

#[tokio::test]
async fn a_new_session_first_gets_portholes_finalizer_and_nothing_else() {
    let mut new = session("30m", 0, None);
    new.meta_mut().finalizers = None;
    let (result, transcript) = reconcile_with(new, config(true), Scenario::AddFinalizer).await;

    // The patch brings the session back, with its finalizer, for the rest.
    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert_eq!(
        transcript.requests,
        [format!("PATCH {CONSOLE_SESSION}")],
        "no child before the finalizer that removes them is in place"
    );
    assert!(transcript.statuses.is_empty());
}

#[tokio::test]
async fn a_deleted_session_has_its_children_in_porthole_system_deleted_then_its_finalizer_removed()
{
    // Deleted in the foreground: the garbage collector's finalizer comes first.
    let deleted = being_deleted(
        session(
            "30m",
            60,
            Some(status(
                SessionPhase::Ready,
                "ProxyReady",
                "the console is ready",
            )),
        ),
        &["foregroundDeletion", FINALIZER],
    );
    let (result, transcript) = reconcile_with(
        deleted,
        config(true),
        Scenario::SessionDeleted { finalizer_index: 1 },
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert_eq!(transcript.deleted, CHILDREN);
    assert_eq!(
        transcript.session_patches.len(),
        1,
        "only porthole's finalizer removed"
    );
    assert_eq!(
        transcript.requests_in(NS),
        [format!("PATCH {CONSOLE_SESSION}")],
        "nothing else in the session's namespace: {:?}",
        transcript.requests
    );
    assert!(transcript.statuses.is_empty());
    assert!(transcript.events.is_empty());
}

#[tokio::test]
async fn a_finished_session_deleted_later_only_loses_its_finalizer() {
    let finished = finished_session(10, 3600);
    let deleted = being_deleted(finished.clone(), &[FINALIZER]);
    let (result, transcript) = reconcile_each(
        vec![finished, deleted],
        config(true),
        Scenario::FinishedSessionDeleted,
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert_eq!(transcript.deleted, CHILDREN, "each child deleted once");
    assert_eq!(transcript.session_patches.len(), 1);
}

#[tokio::test]
async fn a_session_being_deleted_without_portholes_finalizer_gets_no_request() {
    // Its cleanup is done, and the garbage collector still holds it.
    let deleted = being_deleted(session("30m", 60, None), &["foregroundDeletion"]);
    let (result, transcript) = reconcile_with(deleted, config(true), Scenario::NoRequest).await;

    // The verifier fails on any request: no finalizer added back, no child made.
    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(transcript.requests.is_empty());
}

#[tokio::test]
async fn a_session_in_a_namespace_the_hypervisor_does_not_allow_fails_without_creating_anything() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(true),
        Scenario::Refused {
            namespace_allowed: false,
        },
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(
        transcript.applied.is_empty(),
        "nothing applied: {:?}",
        transcript.applied_kinds()
    );
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("NotAllowed"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "namespace \"team-a\" is not allowed to use Hypervisor \"hv1\" (see its spec.allowedNamespaces)"
        )
    );
    assert!(status.ended_at.is_some(), "a final phase records its end");
    assert_eq!(transcript.event_reasons(), [("Warning", "NotAllowed")]);
    // Finishing removes whatever the session may have had; here nothing.
    assert_eq!(transcript.deleted, CHILDREN);
}

#[tokio::test]
async fn a_session_past_its_timeout_expires_and_its_children_are_deleted() {
    // Created 2 h ago with a 1 h timeout, its console still open.
    let mut previous = status(SessionPhase::Ready, "ProxyReady", "the console is ready");
    previous.url = Some(format!("http://{CLUSTER_IP}/#token={TOKEN}"));
    let expired_at = Time(seconds_ago(3600));
    previous.expires_at = Some(expired_at.clone());
    let (result, transcript) = reconcile_with(
        session("1h", 7200, Some(previous)),
        config(true),
        Scenario::TimeoutPassed,
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(
        transcript.applied.is_empty(),
        "no pod for an expired session"
    );
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Expired));
    assert_eq!(status.reason.as_deref(), Some("Expired"));
    assert_eq!(
        status.message.as_deref(),
        Some("the session reached its time limit")
    );
    assert_eq!(
        status.url, None,
        "the URL (and its token) leaves the status"
    );
    assert_eq!(
        status.ended_at, status.expires_at,
        "it ended at its deadline, however late the operator noticed"
    );
    assert_eq!(status.expires_at, Some(expired_at), "the deadline stays");
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(transcript.event_reasons(), [("Normal", "Expired")]);
    assert_eq!(
        transcript.deleted, CHILDREN,
        "the operator deletes its children itself, not only through owner references"
    );
}

#[tokio::test]
async fn a_session_whose_proxy_exited_ends_with_the_proxys_end_reason() {
    let finished_at = seconds_ago(30);
    let mut previous = status(SessionPhase::Ready, "ProxyReady", "the console is ready");
    previous.url = Some(format!("http://{CLUSTER_IP}/#token={TOKEN}"));
    let (result, transcript) = reconcile_with(
        session("1h", 600, Some(previous)),
        config(true),
        Scenario::ProxyExited { finished_at },
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Expired));
    assert_eq!(status.reason.as_deref(), Some("Idle"));
    assert_eq!(
        status.ended_at,
        Some(Time(finished_at)),
        "the end is when the proxy exited"
    );
    assert_eq!(status.url, None);
    assert_eq!(transcript.event_reasons(), [("Normal", "Idle")]);
    assert_eq!(transcript.deleted, CHILDREN);
}

#[tokio::test]
async fn a_session_naming_a_missing_hypervisor_waits_pending_and_says_which() {
    let (result, transcript) = reconcile_with(
        session("30m", 60, None),
        config(true),
        Scenario::HypervisorMissing {
            status_unchanged: false,
        },
    )
    .await;

    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(60)),
        "not final: the Hypervisor may come later"
    );
    assert!(transcript.applied.is_empty());
    assert!(
        transcript.deleted.is_empty(),
        "a waiting session keeps what it has"
    );
    let status = transcript.only_status();
    assert_eq!(status.phase, Some(SessionPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("HypervisorNotFound"));
    assert_eq!(
        status.message.as_deref(),
        Some("Hypervisor \"hv1\" does not exist")
    );
    assert_eq!(status.ended_at, None);
    assert_eq!(
        transcript.event_reasons(),
        [("Normal", "HypervisorNotFound")]
    );
}

#[tokio::test]
async fn an_unchanged_status_is_neither_rewritten_nor_announced_again() {
    let previous = status(
        SessionPhase::Pending,
        "HypervisorNotFound",
        "Hypervisor \"hv1\" does not exist",
    );
    let (result, transcript) = reconcile_with(
        session("30m", 60, Some(previous)),
        config(true),
        Scenario::HypervisorMissing {
            status_unchanged: true,
        },
    )
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(60))
    );
    assert!(transcript.statuses.is_empty());
    assert!(transcript.events.is_empty());
}

#[tokio::test]
async fn a_final_sessions_children_are_deleted_once_however_often_it_comes_back() {
    // Each child's deletion brings the session back; only the first reconcile
    // deletes anything.
    let (result, transcript) = reconcile_times(
        3,
        finished_session(10, 3600),
        config(true),
        Scenario::Finished { ttl_passed: false },
    )
    .await;

    assert!(requeue_after(&result.expect("reconcile")).is_some());
    assert_eq!(transcript.deleted, CHILDREN);
}

#[tokio::test]
async fn a_session_that_just_expired_is_not_cleaned_up_twice_when_its_status_brings_it_back() {
    let mut previous = status(SessionPhase::Ready, "ProxyReady", "the console is ready");
    previous.expires_at = Some(Time(seconds_ago(1)));
    let expiring = session("1h", 3601, Some(previous));
    let mut ended = expiring.clone();
    ended.status = Some(status(
        SessionPhase::Expired,
        "Expired",
        "the session reached its time limit",
    ));
    let (result, transcript) =
        reconcile_each(vec![expiring, ended], config(true), Scenario::TimeoutPassed).await;

    result.expect("reconcile");
    assert_eq!(transcript.deleted, CHILDREN, "each child deleted once");
}

fn finished_session(ended_ago: i64, ttl: i32) -> ConsoleSession {
    let mut previous = status(
        SessionPhase::Expired,
        "Expired",
        "the session reached its time limit",
    );
    previous.ended_at = Some(Time(seconds_ago(ended_ago)));
    previous.expires_at = Some(Time(seconds_ago(ended_ago)));
    let mut session = session("1h", 3600 + ended_ago, Some(previous));
    session.spec.ttl_seconds_after_finished = Some(ttl);
    session
}

#[tokio::test]
async fn a_final_session_past_its_ttl_after_finished_is_deleted() {
    let (result, transcript) = reconcile_with(
        finished_session(120, 60),
        config(true),
        Scenario::Finished { ttl_passed: true },
    )
    .await;

    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert_eq!(
        transcript.deleted,
        [
            POD,
            SERVICE,
            SECRET,
            INGRESS,
            NETWORK_POLICY,
            CONSOLE_SESSION
        ]
    );
    assert!(
        transcript.statuses.is_empty(),
        "a final status never changes"
    );
    assert!(transcript.events.is_empty());
    assert!(transcript.applied.is_empty());
}

#[tokio::test]
async fn a_final_session_within_its_ttl_is_kept_and_looked_at_again_when_due() {
    let (result, transcript) = reconcile_with(
        finished_session(10, 3600),
        config(true),
        Scenario::Finished { ttl_passed: false },
    )
    .await;

    let due = requeue_after(&result.expect("reconcile")).expect("a requeue");
    assert!(
        (Duration::from_secs(3588)..=Duration::from_secs(3590)).contains(&due),
        "due in about 3590 s: {due:?}"
    );
    assert_eq!(transcript.deleted, CHILDREN);
    assert!(transcript.statuses.is_empty());
}
