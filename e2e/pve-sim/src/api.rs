//! The PVE API routes the simulator serves under `/api2/json`, in pveproxy's order:
//! authenticate (401 after the delay), find the method, refuse API tokens where
//! PVE does, check privileges (403), check parameters (400), run the method.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::{self, Credentials, Identity};
use crate::config::{Behaviour, Kind};
use crate::params::{self, Params, Type, optional, required};
use crate::reply::{self, Body};
use crate::rfb::ClientStream;
use crate::state::Sim;
use crate::vncproxy::{self, Worker};
use crate::wsrelay;

/// The request is dropped without an answer (the connection closes), as pveproxy
/// does when its connection to the vncproxy worker fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("connection to the console port {port} failed: {source}")]
    ConsoleConnect { port: u16, source: std::io::Error },
    #[error("reading the request body: {0}")]
    Body(#[from] hyper::Error),
}

/// pveproxy's `$limit_max_post`.
const MAX_POST: u64 = 64 * 1024;
const KNOWN_METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];

/// Handles one request under `/api2/`.
pub async fn handle(sim: Arc<Sim>, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = auth::uri_unescape(req.uri().path());
    if !KNOWN_METHODS.contains(&method) {
        return Ok(reply::bare_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("method '{method}' not available"),
        ));
    }
    let Some((format, rel_path)) = split_api_path(&path) else {
        return Ok(reply::bare_error(
            StatusCode::NOT_IMPLEMENTED,
            "no such uri",
        ));
    };
    let credentials = auth::extract(req.headers());
    let identity = if auth::needs_auth(&method, &rel_path) {
        match auth::authenticate(&sim, &method, &credentials) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::info!(%method, path = %rel_path, error = %e, "authentication failed");
                delay(&sim, started).await;
                return Ok(reply::bare_error(StatusCode::UNAUTHORIZED, &e.to_string()));
            }
        }
    } else {
        None
    };
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if content_length > 0 && method != Method::POST && method != Method::PUT {
        return Ok(reply::bare_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("Unexpected content for method '{method}'"),
        ));
    }
    if content_length > MAX_POST {
        return Ok(reply::bare_error(
            StatusCode::NOT_IMPLEMENTED,
            "for data too large",
        ));
    }
    if format != "json" {
        return Ok(reply::bare_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("no formatter for uri {rel_path}, {format}"),
        ));
    }
    let mut params = Params::new();
    if method == Method::POST || method == Method::PUT {
        let body = req.body_mut().collect().await?.to_bytes();
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim() == "application/json");
        if is_json {
            match serde_json::from_slice::<Value>(&body) {
                Ok(value) if params::from_json(&value, &mut params) => {}
                _ => {
                    return Ok(reply::api_error(
                        StatusCode::BAD_REQUEST,
                        "malformed JSON request body\n",
                    ));
                }
            }
        } else {
            params::decode_urlencoded(&String::from_utf8_lossy(&body), &mut params);
        }
    }
    if let Some(query) = req.uri().query() {
        let mut query_params = Params::new();
        params::decode_urlencoded(query, &mut query_params);
        params.extend(query_params);
    }
    params.remove("_dc");

    let request = ApiRequest {
        sim: &sim,
        method: &method,
        rel_path: &rel_path,
        credentials: &credentials,
        identity: identity.as_ref(),
        params,
    };
    let response = match route(request, &mut req).await? {
        Routed::Response(response) => response,
        Routed::Upgrade(response) => return Ok(response),
    };
    if response.status() == StatusCode::UNAUTHORIZED {
        delay(&sim, started).await;
    }
    Ok(response)
}

/// `^/api2/+([a-z][a-z0-9]+)(/.*)?$` into (format, relative path).
fn split_api_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api2/")?.trim_start_matches('/');
    let (format, rel) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let valid = format.len() >= 2
        && format.as_bytes()[0].is_ascii_lowercase()
        && format
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then(|| (format.to_string(), rel.to_string()))
}

/// pveproxy holds every 401 back until the delay (3 s) has passed since the request
/// arrived.
async fn delay(sim: &Sim, started: Instant) {
    let total = Duration::from_millis(sim.config.auth_failure_delay_ms);
    tokio::time::sleep(total.saturating_sub(started.elapsed())).await;
}

struct ApiRequest<'a> {
    sim: &'a Arc<Sim>,
    method: &'a Method,
    rel_path: &'a str,
    credentials: &'a Credentials,
    identity: Option<&'a Identity>,
    params: Params,
}

enum Routed {
    Response(Response<Body>),
    /// A 101 answer: sent as is, never delayed.
    Upgrade(Response<Body>),
}

impl From<Response<Body>> for Routed {
    fn from(response: Response<Body>) -> Self {
        Routed::Response(response)
    }
}

async fn route(request: ApiRequest<'_>, req: &mut Request<Incoming>) -> Result<Routed, ApiError> {
    let segments: Vec<String> = request
        .rel_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method.clone();
    let rel_path = request.rel_path;
    let not_implemented = || {
        reply::api_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("Method '{method} {rel_path}' not implemented"),
        )
    };
    Ok(match (&method, segments.as_slice()) {
        (&Method::GET, ["access", "ticket"]) => reply::ok(Value::Null).into(),
        (&Method::POST, ["access", "ticket"]) => login(request).await.into(),
        (&Method::GET, ["access", "domains"]) => reply::ok(json!([
            {"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
            {"realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server"},
        ]))
        .into(),
        (&Method::GET, ["version"]) => reply::ok(json!({
            "version": match request.sim.config.behaviour { Behaviour::A => "9.0.10", Behaviour::B => "9.1.2" },
            "release": match request.sim.config.behaviour { Behaviour::A => "9.0", Behaviour::B => "9.1" },
            "repoid": "porthole-pve-sim",
        }))
        .into(),
        (_, ["nodes", node, kind @ ("qemu" | "lxc"), vmid, rest @ ..]) => {
            let kind = if *kind == "qemu" { Kind::Qemu } else { Kind::Lxc };
            let target = Target {
                node: node.to_string(),
                kind,
                vmid: vmid.to_string(),
            };
            match (&method, rest) {
                (&Method::POST, ["vncproxy"]) => vncproxy(request, target).await.into(),
                (&Method::GET, ["vncwebsocket"]) => return vncwebsocket(request, target, req).await,
                (&Method::GET, ["status", "current"]) => status_current(request, target).await.into(),
                _ => not_implemented().into(),
            }
        }
        (&Method::GET, ["nodes", node, "tasks", upid, what @ ("status" | "log")]) => {
            task(request, node, upid, what).into()
        }
        _ => not_implemented().into(),
    })
}

/// `POST /access/ticket` (pve-access-control `create_ticket`).
async fn login(request: ApiRequest<'_>) -> Response<Body> {
    let sim = request.sim;
    if request.credentials.api_token.is_some() {
        // rest_handler: the method has `allowtoken => 0`.
        return reply::api_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Permission check failed (URI '{}' not available with API token, need proper ticket.\n)\n",
                request.rel_path
            ),
        );
    }
    let specs = [
        required("username", Type::Str { max_len: 64 }),
        required(
            "password",
            Type::Str {
                max_len: usize::MAX,
            },
        ),
        optional("realm", Type::Str { max_len: 32 }),
        optional(
            "otp",
            Type::Str {
                max_len: usize::MAX,
            },
        ),
        optional("path", Type::Str { max_len: 64 }),
        optional("privs", Type::Str { max_len: 64 }),
        optional("new-format", Type::Bool),
        optional(
            "tfa-challenge",
            Type::Str {
                max_len: usize::MAX,
            },
        ),
    ];
    let params = match params::check(&request.params, &specs) {
        Ok(p) => p,
        Err(errors) => return reply::param_error(errors),
    };
    let mut username = params.str("username").unwrap_or_default().to_string();
    if let Some(realm) = params.str("realm") {
        username = format!("{username}@{realm}");
    }
    let password = params.str("password").unwrap_or_default();
    let now = sim.now();
    let renewal = sim
        .tickets
        .verify_login_ticket(password, sim.login_lifetime(), now)
        .is_some_and(|t| t.userid == username || t.userid == "root@pam");
    let authenticated = auth::check_user_enabled(sim, &username).is_ok()
        && (renewal || auth::check_password(sim, &username, password));
    let verify_only = params.str("path").zip(params.str("privs"));
    let permitted = match verify_only {
        Some((path, privs)) => privs
            .split([',', ';', ' '])
            .filter(|p| !p.is_empty())
            .all(|p| auth::check(sim, &username, path, p).is_none()),
        None => true,
    };
    if !authenticated || !permitted {
        tracing::info!(user = %username, "authentication failure");
        return reply::api_error(StatusCode::UNAUTHORIZED, "authentication failure\n");
    }
    if verify_only.is_some() {
        return reply::ok(json!({ "username": username }));
    }
    let ticket = sim.tickets.login_ticket(&username, now);
    let csrf = sim.tickets.csrf_token(&username, now);
    {
        let mut issued = sim.issued();
        issued.login_tickets.push(ticket.clone());
        issued.csrf_tokens.push(csrf.clone());
    }
    tracing::info!(user = %username, renewal, "successful auth");
    reply::ok(json!({
        "username": username,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "cap": auth::capabilities(sim, &username),
    }))
}

/// The VM a request names.
struct Target {
    node: String,
    kind: Kind,
    vmid: String,
}

impl Target {
    fn acl_path(&self) -> String {
        format!("/vms/{}", self.vmid)
    }

    /// `load_config`: 500 "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist".
    fn load_config(&self, sim: &Sim) -> Result<u32, Box<Response<Body>>> {
        let found = self
            .vmid
            .parse::<u32>()
            .ok()
            .filter(|_| self.node == sim.config.node)
            .filter(|vmid| sim.vms.get(vmid).is_some_and(|e| e.vm.kind == self.kind));
        found.ok_or_else(|| {
            Box::new(reply::api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Configuration file 'nodes/{}/{}/{}.conf' does not exist\n",
                    self.node,
                    self.kind.config_dir(),
                    self.vmid
                ),
            ))
        })
    }

    /// The URI's own parameters, checked with the rest.
    fn uri_params(&self, params: &mut Params) -> Option<Response<Body>> {
        for (name, value) in [("node", &self.node), ("vmid", &self.vmid)] {
            if let Some(Some(given)) = params.get(name)
                && given != value
            {
                let mut errors = std::collections::BTreeMap::new();
                errors.insert(
                    name.to_string(),
                    "duplicate parameter (already defined in URI) with conflicting values!".into(),
                );
                return Some(reply::param_error(errors));
            }
            params.insert(name.to_string(), Some(value.clone()));
        }
        None
    }
}

const NODE: params::Spec = required("node", Type::Str { max_len: 64 });
const VMID: params::Spec = required(
    "vmid",
    Type::Int {
        min: 100,
        max: 999_999_999,
    },
);

/// `$rpcenv->check($authuser, '/vms/{vmid}', [privilege])` as a 403 answer.
fn check_privilege(
    sim: &Sim,
    identity: &Identity,
    path: &str,
    privilege: &str,
) -> Option<Response<Body>> {
    auth::check(sim, &identity.authid, path, privilege)
        .map(|message| reply::api_error(StatusCode::FORBIDDEN, &message))
}

/// `POST /nodes/{node}/{qemu|lxc}/{vmid}/vncproxy`.
async fn vncproxy(mut request: ApiRequest<'_>, target: Target) -> Response<Body> {
    let sim = request.sim;
    let Some(identity) = request.identity else {
        return reply::bare_error(StatusCode::UNAUTHORIZED, "No ticket");
    };
    if let Some(denied) = check_privilege(sim, identity, &target.acl_path(), "VM.Console") {
        return denied;
    }
    if let Some(conflict) = target.uri_params(&mut request.params) {
        return conflict;
    }
    let specs: &[params::Spec] = match target.kind {
        Kind::Qemu => &[
            NODE,
            VMID,
            optional("websocket", Type::Bool),
            optional("generate-password", Type::Bool),
        ],
        Kind::Lxc => &[
            NODE,
            VMID,
            optional("websocket", Type::Bool),
            optional("width", Type::Int { min: 16, max: 4096 }),
            optional("height", Type::Int { min: 16, max: 2160 }),
        ],
    };
    let params = match params::check(&request.params, specs) {
        Ok(p) => p,
        Err(errors) => return reply::param_error(errors),
    };
    let vmid = match target.load_config(sim) {
        Ok(vmid) => vmid,
        Err(response) => return *response,
    };
    let entry = &sim.vms[&vmid];
    let (listener, port) = match vncproxy::bind_console_port(sim.console_address).await {
        Ok(bound) => bound,
        Err(e) => return reply::api_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    };
    let now = sim.now();
    let authid = &identity.authid;
    let websocket = params.bool("websocket");
    let behaviour = sim.config.behaviour;
    let acl_path = target.acl_path();
    // Which password QEMU gets, what `ticket` looks like, and whether `password` is
    // returned, per behaviour (see the README's table).
    let generated = match (behaviour, target.kind) {
        (Behaviour::B, Kind::Qemu) => true,
        (Behaviour::B, Kind::Lxc) => websocket,
        (Behaviour::A, Kind::Qemu) => params.bool("generate-password"),
        (Behaviour::A, Kind::Lxc) => false,
    };
    let bound_port = (behaviour == Behaviour::B).then_some(port);
    let vnc_ticket = sim.tickets.vnc_ticket(authid, &acl_path, bound_port, now);
    let (password, ticket) = if generated {
        let password = sim.tickets.vnc_password();
        let ticket = if behaviour == Behaviour::B {
            format!("{password}:{vnc_ticket}")
        } else {
            vnc_ticket
        };
        (password, ticket)
    } else {
        (vnc_ticket.clone(), vnc_ticket)
    };
    let accept_timeout = if sim.faults().listener_timeout {
        Duration::ZERO
    } else {
        Duration::from_secs(match target.kind {
            Kind::Qemu => sim.config.qemu_listener_timeout_secs,
            Kind::Lxc => sim.config.lxc_listener_timeout_secs,
        })
    };
    let [a, b, c, d, e, f, g, h] = sim.tickets.random_bytes::<8>();
    let pid = u32::from_be_bytes([0, a, b, c]) | 0x1000;
    let pstart = u32::from_be_bytes([d, e, f, g]) >> 8 | u32::from(h);
    let upid = sim
        .tasks
        .start(&sim.config.node, vmid, authid, now, pid, pstart);
    {
        let mut issued = sim.issued();
        issued.vnc_tickets.push(ticket.clone());
        issued.vnc_passwords.push(password.clone());
    }
    let worker = Worker {
        listener,
        vm: entry.vm.clone(),
        password: password.clone(),
        accept_timeout,
        upid: upid.clone(),
        tasks: sim.tasks.clone(),
        shutdown: sim.shutdown.clone(),
    };
    sim.tracker.spawn(worker.run());
    tracing::info!(vmid, port, user = %authid, "vncproxy worker listening");
    let mut data = json!({
        "user": authid,
        "ticket": ticket,
        "port": port,
        "upid": upid,
        "cert": sim.ca_pem,
    });
    if generated {
        data["password"] = json!(password);
    }
    reply::ok(data)
}

/// `GET /nodes/{node}/{qemu|lxc}/{vmid}/vncwebsocket`.
async fn vncwebsocket(
    mut request: ApiRequest<'_>,
    target: Target,
    req: &mut Request<Incoming>,
) -> Result<Routed, ApiError> {
    let sim = request.sim;
    let Some(identity) = request.identity else {
        return Ok(reply::bare_error(StatusCode::UNAUTHORIZED, "No ticket").into());
    };
    if let Some(denied) = check_privilege(sim, identity, &target.acl_path(), "VM.Console") {
        return Ok(denied.into());
    }
    if let Some(conflict) = target.uri_params(&mut request.params) {
        return Ok(conflict.into());
    }
    let specs = [
        NODE,
        VMID,
        required("vncticket", Type::Str { max_len: 512 }),
        required(
            "port",
            Type::Int {
                min: 5900,
                max: 5999,
            },
        ),
    ];
    let params = match params::check(&request.params, &specs) {
        Ok(p) => p,
        Err(errors) => return Ok(reply::param_error(errors).into()),
    };
    let port_text = params.str("port").unwrap_or_default().to_string();
    let port = params.int("port").unwrap_or_default() as u16;
    let ticket = params.str("vncticket").unwrap_or_default();
    let behaviour = sim.config.behaviour;
    // Behaviour B hands out "<password>:PVEVNC:..."; the 8-character password
    // (which may itself contain ':') is not part of what is verified. How PVE
    // itself strips it is not verified.
    let ticket = match behaviour {
        Behaviour::B
            if !ticket.starts_with("PVEVNC:") && ticket.as_bytes().get(8) == Some(&b':') =>
        {
            ticket.get(9..).unwrap_or_default()
        }
        _ => ticket,
    };
    let bound_port = (behaviour == Behaviour::B).then_some(port);
    let valid = !sim.faults().reject_vnc_tickets
        && sim.tickets.verify_vnc_ticket(
            ticket,
            &identity.authid,
            &target.acl_path(),
            bound_port,
            sim.now(),
        );
    if !valid {
        return Ok(reply::api_error(
            StatusCode::UNAUTHORIZED,
            "permission denied - invalid PVEVNC ticket\n",
        )
        .into());
    }
    let vmid = match target.load_config(sim) {
        Ok(vmid) => vmid,
        Err(response) => return Ok((*response).into()),
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let Some(upgrade) = upgrade.filter(|u| !u.is_empty()) else {
        // Without an upgrade the method's own result: the port as a string.
        return Ok(reply::ok(json!({ "port": port_text })).into());
    };
    let fail =
        |message: String| Ok(reply::bare_error(StatusCode::NOT_IMPLEMENTED, &message).into());
    if upgrade != "websocket" {
        return fail(format!("unable to upgrade to protocol '{upgrade}'"));
    }
    let version = header_text(req, "sec-websocket-version");
    if version.as_deref() != Some("13") {
        return fail(format!(
            "unsupported websocket-version '{}'",
            version.unwrap_or_default()
        ));
    }
    let Some(key) = header_text(req, "sec-websocket-key").filter(|k| !k.is_empty()) else {
        return fail("missing websocket-key".into());
    };
    let protocol = header_text(req, "sec-websocket-protocol").unwrap_or_default();
    // pveproxy connects to the worker before it answers 101; a failed connect
    // leaves the client without an answer.
    let upstream = tokio::net::TcpStream::connect((sim.console_address, port))
        .await
        .map_err(|source| ApiError::ConsoleConnect { port, source })?;
    let on_upgrade = hyper::upgrade::on(req);
    let input = sim.vms[&vmid].input.clone();
    let shutdown = sim.shutdown.clone();
    sim.tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::warn!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let client = hyper_util::rt::TokioIo::new(upgraded);
        tokio::select! {
            result = wsrelay::relay(client, upstream, ClientStream::new(input)) => {
                if let Err(e) = result {
                    tracing::info!(vmid, error = %e, "vncwebsocket closed");
                }
            }
            () = shutdown.cancelled() => {}
        }
    });
    let accept = websocket_accept(&key);
    let mut response = reply::response(StatusCode::SWITCHING_PROTOCOLS, None, Bytes::new(), false);
    let headers = response.headers_mut();
    headers.clear();
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Ok(value) = http::HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", value);
    }
    if !protocol.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&protocol)
    {
        // Echoed as sent (pve-http-server: "we have to reply with the websocket
        // subprotocol from the request").
        headers.insert("sec-websocket-protocol", value);
    }
    Ok(Routed::Upgrade(response))
}

fn header_text(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `base64(sha1(key + GUID))`.
fn websocket_accept(key: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// `GET /nodes/{node}/{qemu|lxc}/{vmid}/status/current` (VM.Audit).
async fn status_current(mut request: ApiRequest<'_>, target: Target) -> Response<Body> {
    let sim = request.sim;
    let Some(identity) = request.identity else {
        return reply::bare_error(StatusCode::UNAUTHORIZED, "No ticket");
    };
    if let Some(denied) = check_privilege(sim, identity, &target.acl_path(), "VM.Audit") {
        return denied;
    }
    if let Some(conflict) = target.uri_params(&mut request.params) {
        return conflict;
    }
    if let Err(errors) = params::check(&request.params, &[NODE, VMID]) {
        return reply::param_error(errors);
    }
    let vmid = match target.load_config(sim) {
        Ok(vmid) => vmid,
        Err(response) => return *response,
    };
    let entry = &sim.vms[&vmid];
    let running = entry.vm.is_running().await;
    let status = if running { "running" } else { "stopped" };
    let mut data = json!({
        "vmid": vmid,
        "status": status,
        "name": entry.vm.name.clone().unwrap_or_else(|| format!("vm{vmid}")),
    });
    match target.kind {
        Kind::Qemu => data["qmpstatus"] = json!(status),
        Kind::Lxc => data["type"] = json!("lxc"),
    }
    reply::ok(data)
}

/// `GET /nodes/{node}/tasks/{upid}/status|log`: the task's owner, or Sys.Audit on
/// the node.
fn task(request: ApiRequest<'_>, node: &str, upid: &str, what: &str) -> Response<Body> {
    let sim = request.sim;
    let Some(identity) = request.identity else {
        return reply::bare_error(StatusCode::UNAUTHORIZED, "No ticket");
    };
    let Some(status) = sim.tasks.status(upid).filter(|s| s.node == node) else {
        return reply::api_error(StatusCode::INTERNAL_SERVER_ERROR, "no such task\n");
    };
    if status.user != identity.authid
        && let Some(denied) = check_privilege(sim, identity, &format!("/nodes/{node}"), "Sys.Audit")
    {
        return denied;
    }
    if what == "status" {
        return reply::ok(serde_json::to_value(status).unwrap_or(Value::Null));
    }
    let lines = sim.tasks.log_lines(upid).unwrap_or_default();
    let total = lines.len();
    let data: Vec<Value> = lines
        .into_iter()
        .enumerate()
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    reply::ok_with(json!({ "data": data, "total": total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_api_paths_like_pveproxy() {
        assert_eq!(
            split_api_path("/api2/json/access/ticket"),
            Some(("json".into(), "/access/ticket".into()))
        );
        assert_eq!(
            split_api_path("/api2//json"),
            Some(("json".into(), "/".into()))
        );
        assert_eq!(split_api_path("/api2/"), None);
        assert_eq!(split_api_path("/api2/J/x"), None);
    }

    #[test]
    fn computes_the_rfc_6455_accept_key() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
