//! Leader election against an in-memory API server that keeps one Lease with
//! real resourceVersion semantics, so the tests see the actual request sequence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use porthole_operator::leader::{Error, LeaderConfig, run_as_leader};
use tokio::sync::watch;

const NAMESPACE: &str = "porthole-system";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/porthole-system/leases";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/porthole-system/leases/porthole-operator";

/// Short timings so that the tests take well under a second each.
fn config() -> LeaderConfig {
    LeaderConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(300),
        retry_period: Duration::from_millis(30),
        ..LeaderConfig::new(NAMESPACE, "porthole-operator", "me")
    }
}

#[derive(Default)]
struct ApiServer {
    lease: Option<Lease>,
    version: u64,
    /// Requests as `METHOD holder`, `-` for a write without holder.
    log: Vec<String>,
    /// Answer everything with 500.
    failing: bool,
    /// Stored just before answering our first create: another replica won the race.
    created_first: Option<Lease>,
}

impl ApiServer {
    fn answer(&mut self, method: &Method, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let sent: Option<Lease> = serde_json::from_slice(body).ok();
        self.log.push(match &sent {
            Some(lease) => format!("{method} {}", holder(lease)),
            None => method.to_string(),
        });
        if self.failing {
            return status(500, "InternalError");
        }
        match (method.as_str(), path, sent) {
            ("GET", LEASE, None) => match &self.lease {
                Some(lease) => (200, serde_json::to_vec(lease).unwrap()),
                None => status(404, "NotFound"),
            },
            ("POST", LEASES, Some(sent)) => {
                if let Some(winner) = self.created_first.take() {
                    self.store(winner);
                }
                if self.lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                (201, self.store(sent))
            }
            ("PUT", LEASE, Some(sent)) => match &self.lease {
                None => status(404, "NotFound"),
                Some(current)
                    if current.metadata.resource_version != sent.metadata.resource_version =>
                {
                    status(409, "Conflict")
                }
                Some(_) => (200, self.store(sent)),
            },
            _ => status(400, "BadRequest"),
        }
    }

    /// Stores `lease` under a new resourceVersion, as another writer or as the server.
    fn store(&mut self, mut lease: Lease) -> Vec<u8> {
        self.version += 1;
        lease.metadata.resource_version = Some(self.version.to_string());
        let body = serde_json::to_vec(&lease).unwrap();
        self.lease = Some(lease);
        body
    }

    fn spec(&self) -> LeaseSpec {
        self.lease
            .as_ref()
            .and_then(|lease| lease.spec.clone())
            .unwrap()
    }
}

fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .unwrap_or("-")
}

fn status(code: u16, reason: &str) -> (u16, Vec<u8>) {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    });
    (code, serde_json::to_vec(&body).unwrap())
}

/// A client whose requests `server` answers.
fn client(server: &Arc<Mutex<ApiServer>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = server.clone();
    tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap();
            let (code, answer) =
                server
                    .lock()
                    .unwrap()
                    .answer(&parts.method, parts.uri.path(), &body);
            reply.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(answer))
                    .unwrap(),
            );
        }
    });
    kube::Client::new(service, NAMESPACE)
}

/// A Lease held by `holder`, renewed `ago` before now.
fn lease_held_by(holder: Option<&str>, ago: SignedDuration) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("porthole-operator".to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::now() - SignedDuration::from_hours(1))),
            renew_time: Some(MicroTime(Timestamp::now() - ago)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    }
}

fn server_with(lease: Option<Lease>) -> Arc<Mutex<ApiServer>> {
    let mut server = ApiServer::default();
    if let Some(lease) = lease {
        server.store(lease);
    }
    Arc::new(Mutex::new(server))
}

fn log(server: &Arc<Mutex<ApiServer>>) -> Vec<String> {
    server.lock().unwrap().log.clone()
}

/// Guards each test against hanging on a bug.
async fn within_seconds<F: std::future::Future>(seconds: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("leader election hung")
}

#[tokio::test]
async fn creates_the_missing_lease_runs_the_work_and_releases() {
    let server = server_with(None);
    let leading = watch::Sender::new(false);
    let watcher = leading.subscribe();
    let work = async { *watcher.borrow() };
    let was_leading = within_seconds(5, run_as_leader(client(&server), &config(), &leading, work))
        .await
        .unwrap();
    assert!(was_leading, "the flag is raised while the work runs");
    assert!(!*leading.borrow(), "and lowered afterwards");
    assert_eq!(log(&server), ["GET", "POST me", "PUT -"]);
    let spec = server.lock().unwrap().spec();
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert_eq!(spec.lease_transitions, Some(0));
}

#[tokio::test]
async fn takes_over_an_expired_lease_counting_a_transition() {
    let server = server_with(Some(lease_held_by(
        Some("old"),
        SignedDuration::from_secs(60),
    )));
    let leading = watch::Sender::new(false);
    let seen = Arc::new(Mutex::new(None));
    let work = async { *seen.lock().unwrap() = Some(server.lock().unwrap().spec()) };
    within_seconds(5, run_as_leader(client(&server), &config(), &leading, work))
        .await
        .unwrap();
    assert_eq!(log(&server), ["GET", "PUT me", "PUT -"]);
    let held = seen.lock().unwrap().clone().unwrap();
    assert_eq!(held.holder_identity.as_deref(), Some("me"));
    assert_eq!(held.lease_transitions, Some(4));
    assert_eq!(held.lease_duration_seconds, Some(1));
    assert_eq!(held.acquire_time, held.renew_time);
}

#[tokio::test]
async fn waits_while_another_replica_holds_the_lease_then_takes_it_once_released() {
    let server = server_with(Some(lease_held_by(Some("other"), SignedDuration::ZERO)));
    let leading = watch::Sender::new(false);
    let watcher = leading.subscribe();
    let other_releases = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !*watcher.borrow(),
            "no leadership while another holds the Lease"
        );
        let mut server = server.lock().unwrap();
        server.store(lease_held_by(None, SignedDuration::ZERO));
        server.log.len()
    };
    let (result, gets_while_waiting) = within_seconds(
        5,
        futures::future::join(
            run_as_leader(client(&server), &config(), &leading, async {}),
            other_releases,
        ),
    )
    .await;
    result.unwrap();
    let log = log(&server);
    assert!(
        gets_while_waiting >= 3,
        "polled every retry period: {log:?}"
    );
    assert!(
        log[..gets_while_waiting]
            .iter()
            .all(|request| request == "GET"),
        "{log:?}"
    );
    assert_eq!(log[gets_while_waiting..], ["GET", "PUT me", "PUT -"]);
}

#[tokio::test]
async fn losing_the_create_race_retries_and_takes_the_winners_released_lease() {
    let server = server_with(None);
    server.lock().unwrap().created_first = Some(lease_held_by(None, SignedDuration::ZERO));
    let leading = watch::Sender::new(false);
    within_seconds(
        5,
        run_as_leader(client(&server), &config(), &leading, async {}),
    )
    .await
    .unwrap();
    assert_eq!(log(&server), ["GET", "POST me", "GET", "PUT me", "PUT -"]);
}

#[tokio::test]
async fn renews_while_the_work_runs_keeping_acquire_time() {
    let server = server_with(None);
    let leading = watch::Sender::new(false);
    let acquired = Arc::new(Mutex::new(None));
    let work = async {
        *acquired.lock().unwrap() = server.lock().unwrap().spec().acquire_time;
        tokio::time::sleep(Duration::from_millis(250)).await;
        server.lock().unwrap().spec()
    };
    let held = within_seconds(5, run_as_leader(client(&server), &config(), &leading, work))
        .await
        .unwrap();
    let log = log(&server);
    let renewals = log.iter().filter(|request| *request == "PUT me").count();
    assert!(renewals >= 3, "renewed every retry period: {log:?}");
    assert_eq!(log.last().map(String::as_str), Some("PUT -"));
    assert_eq!(held.acquire_time, *acquired.lock().unwrap());
    assert!(held.renew_time > held.acquire_time);
    assert_eq!(held.lease_transitions, Some(0));
}

#[tokio::test]
async fn a_takeover_by_another_replica_stops_the_work_without_releasing() {
    let server = server_with(None);
    let leading = watch::Sender::new(false);
    let mut watcher = leading.subscribe();
    let other_takes_over = async {
        watcher.wait_for(|leading| *leading).await.unwrap();
        server
            .lock()
            .unwrap()
            .store(lease_held_by(Some("thief"), SignedDuration::ZERO));
    };
    let (result, ()) = within_seconds(
        5,
        futures::future::join(
            run_as_leader(
                client(&server),
                &config(),
                &leading,
                std::future::pending::<()>(),
            ),
            other_takes_over,
        ),
    )
    .await;
    match result {
        Err(Error::LostLeadership { lease, reason }) => {
            assert_eq!(lease, "porthole-system/porthole-operator");
            assert!(reason.contains("thief"), "{reason}");
        }
        other => panic!("expected lost leadership, got {other:?}"),
    }
    assert!(!*leading.borrow());
    assert_eq!(
        log(&server).last().map(String::as_str),
        Some("GET"),
        "no release"
    );
    assert_eq!(
        server.lock().unwrap().spec().holder_identity.as_deref(),
        Some("thief")
    );
}

#[tokio::test]
async fn renewals_failing_past_the_deadline_lose_leadership() {
    let server = server_with(None);
    let leading = watch::Sender::new(false);
    let mut watcher = leading.subscribe();
    let api_breaks = async {
        watcher.wait_for(|leading| *leading).await.unwrap();
        server.lock().unwrap().failing = true;
        tokio::time::Instant::now()
    };
    let (result, broke) = within_seconds(
        5,
        futures::future::join(
            run_as_leader(
                client(&server),
                &config(),
                &leading,
                std::future::pending::<()>(),
            ),
            api_breaks,
        ),
    )
    .await;
    let took = broke.elapsed();
    match result {
        Err(Error::LostLeadership { reason, .. }) => {
            assert!(reason.contains("not renewed"), "{reason}");
        }
        other => panic!("expected lost leadership, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(250),
        "kept leading through the renew deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(900),
        "gave up well before the lease expired: {took:?}"
    );
}

#[tokio::test]
async fn invalid_timings_are_refused_before_any_request() {
    let server = server_with(None);
    let config = LeaderConfig {
        renew_deadline: Duration::from_secs(2),
        ..config()
    };
    let result = run_as_leader(
        client(&server),
        &config,
        &watch::Sender::new(false),
        async {},
    )
    .await;
    assert!(matches!(result, Err(Error::InvalidConfig(_))), "{result:?}");
    assert!(log(&server).is_empty());
}
