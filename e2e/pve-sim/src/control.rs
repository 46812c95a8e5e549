//! The test-only control API under `/_sim/`: **not part of Proxmox VE**. It needs
//! no authentication and lets tests drive the VMs, read what viewers typed, see
//! every credential the simulator issued, move the clock and switch on faults.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::reply::Body;
use crate::state::{Faults, Sim};

/// Errors of the control API, answered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no such VM {0}")]
    NoSuchVm(String),
    #[error("not found")]
    NotFound,
    #[error("bad request body: {0}")]
    BadBody(String),
    #[error("{0}")]
    Qemu(#[from] crate::qemu::QemuError),
    #[error("reading the request: {0}")]
    Read(#[from] hyper::Error),
}

impl ControlError {
    fn status(&self) -> StatusCode {
        match self {
            ControlError::NoSuchVm(_) | ControlError::NotFound => StatusCode::NOT_FOUND,
            ControlError::BadBody(_) | ControlError::Read(_) => StatusCode::BAD_REQUEST,
            ControlError::Qemu(crate::qemu::QemuError::NotRunning(_)) => StatusCode::CONFLICT,
            ControlError::Qemu(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_secs: i64,
}

/// Handles `/_sim/...`.
pub async fn handle(sim: Arc<Sim>, req: Request<Incoming>) -> Response<Body> {
    match dispatch(&sim, req).await {
        Ok(response) => response,
        Err(e) => json_response(e.status(), &json!({ "error": e.to_string() })),
    }
}

async fn dispatch(sim: &Sim, req: Request<Incoming>) -> Result<Response<Body>, ControlError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let body = req.into_body().collect().await?.to_bytes();
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    match (&method, &segments[1..]) {
        (&Method::GET, ["issued"]) => ok(serde_json::to_value(&*sim.issued()).unwrap_or_default()),
        (&Method::GET, ["faults"]) => ok(serde_json::to_value(sim.faults()).unwrap_or_default()),
        (&Method::POST, ["faults"]) => {
            let faults: Faults = parse(&body)?;
            if faults.reject_vnc_tickets && !sim.faults().reject_vnc_tickets {
                sim.tickets
                    .rotate()
                    .map_err(|e| ControlError::BadBody(e.to_string()))?;
            }
            sim.set_faults(faults);
            tracing::info!(?faults, "faults set");
            ok(serde_json::to_value(faults).unwrap_or_default())
        }
        (&Method::POST, ["clock"]) => {
            let change: ClockChange = parse(&body)?;
            let offset = sim.clock.advance(change.advance_secs);
            ok(json!({ "offset_secs": offset, "now": sim.now() }))
        }
        (&Method::GET, ["vms"]) => {
            let mut list = Vec::new();
            for entry in sim.vms.values() {
                list.push(json!({
                    "vmid": entry.vm.vmid,
                    "kind": entry.vm.kind,
                    "running": entry.vm.is_running().await,
                }));
            }
            ok(Value::Array(list))
        }
        (_, ["vms", vmid, rest @ ..]) => {
            let entry = vmid
                .parse::<u32>()
                .ok()
                .and_then(|id| sim.vms.get(&id))
                .ok_or_else(|| ControlError::NoSuchVm(vmid.to_string()))?;
            let vm = &entry.vm;
            match (&method, rest) {
                (&Method::GET, []) => ok(json!({
                    "vmid": vm.vmid,
                    "kind": vm.kind,
                    "running": vm.is_running().await,
                })),
                (&Method::GET, ["input"]) => {
                    ok(serde_json::to_value(entry.input.snapshot()).unwrap_or_default())
                }
                (&Method::DELETE, ["input"]) => {
                    entry.input.clear();
                    ok(json!([]))
                }
                (&Method::POST, ["start"]) => {
                    vm.start().await?;
                    ok(json!({ "running": true }))
                }
                (&Method::POST, ["stop"]) => {
                    vm.stop().await?;
                    ok(json!({ "running": false }))
                }
                (&Method::POST, ["reset"]) => {
                    vm.reset().await?;
                    ok(json!({ "running": true }))
                }
                (&Method::GET, ["screen"]) => {
                    let png = vm.screenshot_png().await?;
                    let mut response = Response::new(http_body_util::Full::new(Bytes::from(png)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static("image/png"),
                    );
                    Ok(response)
                }
                _ => Err(ControlError::NotFound),
            }
        }
        _ => Err(ControlError::NotFound),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ControlError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ControlError::BadBody(e.to_string()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
