//! The create-wait and delete flows against an in-memory API server that plays
//! the operator: it answers the Hypervisor read, stores the created session, and
//! sends a scripted sequence of statuses down the session's watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kubectl_console::cli::CreateRequest;
use kubectl_console::create::{CreateError, create};
use kubectl_console::delete::{DeleteError, delete};
use kubectl_console::output::OutputFormat;
use kubectl_console::session::SessionOptions;
use kubectl_console::vm::VmArg;
use serde_json::{Value, json};

const NS: &str = "team-a";
const HYPERVISORS: &str = "/apis/porthole.dev/v1alpha1/hypervisors/";
const SESSIONS: &str = "/apis/porthole.dev/v1alpha1/namespaces/team-a/consolesessions";
const URL: &str = "http://console-s.team-a/#token=secret-token";

enum HypervisorAnswer {
    Vnc,
    Proxmox,
    Missing,
    Forbidden,
}

/// What the operator does to the session once it exists.
enum Step {
    Status(Value),
    Deleted,
}

struct ApiServer {
    hypervisor: HypervisorAnswer,
    sessions: BTreeMap<String, Value>,
    script: Vec<Step>,
    version: u64,
    /// `METHOD what` for each request.
    log: Vec<String>,
}

enum Answer {
    Now(u16, Vec<u8>),
    /// A watch with nothing more to say: left open.
    Hold,
}

impl ApiServer {
    fn new(hypervisor: HypervisorAnswer, script: Vec<Step>) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(ApiServer {
            hypervisor,
            sessions: BTreeMap::new(),
            script,
            version: 1,
            log: Vec::new(),
        }))
    }

    fn answer(&mut self, method: &str, path: &str, query: &str, body: &[u8]) -> Answer {
        let watch = query.contains("watch=true");
        let (what, answer) = match (method, path) {
            ("GET", path) if path.starts_with(HYPERVISORS) => ("hypervisor", self.hypervisor()),
            ("POST", SESSIONS) => ("session", self.create(body)),
            ("GET", SESSIONS) if watch => ("watch", self.watch()),
            ("GET", SESSIONS) => ("list", self.list()),
            ("DELETE", path) => match path
                .strip_prefix(SESSIONS)
                .and_then(|p| p.strip_prefix('/'))
            {
                Some(name) => ("session", self.delete(name)),
                None => ("?", status(400, "BadRequest")),
            },
            _ => ("?", status(400, "BadRequest")),
        };
        self.log.push(format!("{method} {what}"));
        answer
    }

    fn hypervisor(&self) -> Answer {
        let kind = match self.hypervisor {
            HypervisorAnswer::Vnc => {
                json!({"vnc": {"host": "10.0.0.1", "ports": {"first": 5910, "last": 5930}}})
            }
            HypervisorAnswer::Proxmox => json!({"proxmox": {
                "url": "https://pve.example.com:8006",
                "credentialsSecretRef": {"namespace": "porthole-system", "name": "pve"}
            }}),
            HypervisorAnswer::Missing => return status(404, "NotFound"),
            HypervisorAnswer::Forbidden => return status(403, "Forbidden"),
        };
        let hypervisor = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": "h", "resourceVersion": "1"},
            "spec": kind,
        });
        Answer::Now(200, serde_json::to_vec(&hypervisor).unwrap())
    }

    fn create(&mut self, body: &[u8]) -> Answer {
        let mut session: Value = serde_json::from_slice(body).unwrap();
        let name = session["metadata"]["name"].as_str().unwrap().to_string();
        if self.sessions.contains_key(&name) {
            return status(409, "AlreadyExists");
        }
        self.version += 1;
        session["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.sessions.insert(name, session.clone());
        Answer::Now(201, serde_json::to_vec(&session).unwrap())
    }

    fn list(&self) -> Answer {
        let list = json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSessionList",
            "metadata": {"resourceVersion": self.version.to_string()},
            "items": self.sessions.values().collect::<Vec<_>>(),
        });
        Answer::Now(200, serde_json::to_vec(&list).unwrap())
    }

    /// The first watch plays the script, one event per line; later ones stay open.
    fn watch(&mut self) -> Answer {
        if self.script.is_empty() {
            return Answer::Hold;
        }
        let mut lines = Vec::new();
        for step in std::mem::take(&mut self.script) {
            let Some(name) = self.sessions.keys().next().cloned() else {
                break;
            };
            self.version += 1;
            let event = match step {
                Step::Status(status) => {
                    let session = self.sessions.get_mut(&name).unwrap();
                    session["status"] = status;
                    session["metadata"]["resourceVersion"] = json!(self.version.to_string());
                    json!({"type": "MODIFIED", "object": session})
                }
                Step::Deleted => {
                    let session = self.sessions.remove(&name).unwrap();
                    json!({"type": "DELETED", "object": session})
                }
            };
            lines.extend(serde_json::to_vec(&event).unwrap());
            lines.push(b'\n');
        }
        Answer::Now(200, lines)
    }

    fn delete(&mut self, name: &str) -> Answer {
        match self.sessions.remove(name) {
            Some(session) => Answer::Now(200, serde_json::to_vec(&session).unwrap()),
            None => status(404, "NotFound"),
        }
    }
}

fn status(code: u16, reason: &str) -> Answer {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("the server says {reason}"), "reason": reason, "code": code,
    });
    Answer::Now(code, serde_json::to_vec(&body).unwrap())
}

/// A client whose requests `server` answers.
fn client(server: &Arc<Mutex<ApiServer>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = server.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap();
            let answer = server.lock().unwrap().answer(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                &body,
            );
            match answer {
                Answer::Now(code, body) => reply.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(body))
                        .unwrap(),
                ),
                Answer::Hold => held.push(reply),
            }
        }
    });
    kube::Client::new(service, NS)
}

fn request(vm: VmArg, name: Option<&str>) -> CreateRequest {
    CreateRequest {
        session: SessionOptions {
            hypervisor: "h".into(),
            vm: vm.to_vm_ref(None),
            timeout: Some("30m".into()),
            view_only: true,
            ..SessionOptions::default()
        },
        vm,
        name: name.map(Into::into),
        wait_timeout: Duration::from_secs(10),
        open: false,
        output: OutputFormat::Url,
    }
}

fn pending() -> Step {
    Step::Status(json!({"phase": "Pending", "reason": "ProxyStarting"}))
}

fn ready() -> Step {
    Step::Status(json!({
        "phase": "Ready", "reason": "Ready", "url": URL,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "2025-01-01T00:00:00Z"
        }]
    }))
}

#[tokio::test]
async fn a_ready_session_yields_its_url_after_reporting_progress() {
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![pending(), ready()]);
    let mut progress = Vec::new();
    let ready = create(
        client(&server),
        NS,
        &request(VmArg::Port(5910), None),
        |line| progress.push(line.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(ready.url, URL);
    let name = ready.session.metadata.name.clone().unwrap();
    assert!(name.starts_with("console-5910-"), "{name}");
    assert_eq!(
        progress,
        [
            format!("consolesession {NS}/{name} created for port 5910 on hypervisor h"),
            format!(
                "waiting for consolesession {NS}/{name} to be ready (phase Pending: ProxyStarting)"
            ),
        ]
    );
    // No progress line repeats the token.
    assert!(!progress.iter().any(|line| line.contains("secret-token")));

    let server = server.lock().unwrap();
    let stored = &server.sessions[&name];
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"app.kubernetes.io/created-by": "kubectl-console"})
    );
    assert_eq!(stored["metadata"]["namespace"], NS);
    assert_eq!(
        stored["spec"],
        json!({"hypervisor": "h", "vm": {"port": 5910}, "timeout": "30m", "viewers": {"viewOnly": true}})
    );
    assert_eq!(
        server.log[..3],
        ["GET hypervisor", "POST session", "GET list"]
    );
}

#[tokio::test]
async fn a_final_phase_ends_the_wait_with_reason_and_message() {
    let failed = Step::Status(json!({
        "phase": "Failed", "reason": "PortNotAllowed",
        "message": "port 5990 is outside the range 5910-5930 that Hypervisor \"h\" allows"
    }));
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![pending(), failed]);
    let error = create(
        client(&server),
        NS,
        &request(VmArg::Port(5990), Some("refused")),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(error, CreateError::Ended { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "consolesession team-a/refused: it ended Failed with reason PortNotAllowed: \
         port 5990 is outside the range 5910-5930 that Hypervisor \"h\" allows"
    );
}

#[tokio::test]
async fn a_session_deleted_while_waiting_is_reported() {
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![pending(), Step::Deleted]);
    let error = create(
        client(&server),
        NS,
        &request(VmArg::Port(5910), Some("gone")),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("deleted"), "{error}");
}

#[tokio::test]
async fn waiting_too_long_names_the_last_state_and_how_to_clean_up() {
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![pending()]);
    let mut slow = request(VmArg::Port(5910), Some("slow"));
    slow.wait_timeout = Duration::from_millis(300);
    let error = create(client(&server), NS, &slow, |_| {})
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, CreateError::NotReady { .. }), "{error:?}");
    assert!(
        message.contains("not ready after 300ms (last seen: phase Pending: ProxyStarting)"),
        "{message}"
    );
    assert!(
        message.contains("kubectl console --delete slow -n team-a"),
        "{message}"
    );
}

#[tokio::test]
async fn a_port_for_a_proxmox_hypervisor_creates_nothing() {
    let server = ApiServer::new(HypervisorAnswer::Proxmox, vec![]);
    let error = create(
        client(&server),
        NS,
        &request(VmArg::Port(101), None),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("NODE/ID, such as pve1/101"),
        "{error}"
    );
    assert_eq!(server.lock().unwrap().log, ["GET hypervisor"]);
}

#[tokio::test]
async fn a_missing_hypervisor_creates_nothing() {
    let server = ApiServer::new(HypervisorAnswer::Missing, vec![]);
    let error = create(
        client(&server),
        NS,
        &request(VmArg::Port(5910), None),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("\"h\" does not exist"),
        "{error}"
    );
    assert_eq!(server.lock().unwrap().log, ["GET hypervisor"]);
}

#[tokio::test]
async fn a_hypervisor_the_user_may_not_read_is_left_to_the_operator() {
    let server = ApiServer::new(HypervisorAnswer::Forbidden, vec![ready()]);
    let guest = VmArg::Proxmox {
        node: "pve1".into(),
        id: 101,
    };
    let ready = create(client(&server), NS, &request(guest, None), |_| {})
        .await
        .unwrap();
    assert_eq!(ready.url, URL);
    let name = ready.session.metadata.name.unwrap();
    assert!(name.starts_with("console-pve1-101-"), "{name}");
}

#[tokio::test]
async fn an_existing_name_is_not_overwritten() {
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![]);
    server
        .lock()
        .unwrap()
        .sessions
        .insert("taken".into(), json!({}));
    let error = create(
        client(&server),
        NS,
        &request(VmArg::Port(5910), Some("taken")),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, CreateError::AlreadyExists { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("choose another --name"),
        "{error}"
    );
}

#[tokio::test]
async fn delete_reports_the_phase_it_ended_and_a_missing_session_clearly() {
    let server = ApiServer::new(HypervisorAnswer::Vnc, vec![]);
    server.lock().unwrap().sessions.insert(
        "s".into(),
        json!({
            "apiVersion": "porthole.dev/v1alpha1", "kind": "ConsoleSession",
            "metadata": {"name": "s", "namespace": NS, "resourceVersion": "3"},
            "spec": {"hypervisor": "h", "vm": {"port": 5910}},
            "status": {"phase": "Ready", "url": URL}
        }),
    );
    let report = delete(client(&server), NS, "s").await.unwrap();
    assert_eq!(report, "consolesession team-a/s deleted (it was Ready)");
    let error = delete(client(&server), NS, "s").await.unwrap_err();
    assert!(matches!(error, DeleteError::NotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "consolesession team-a/s not found (list them with `kubectl get consolesessions -n team-a`)"
    );
}
