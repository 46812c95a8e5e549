//! Answers shaped like pveproxy's: the error message is the HTTP reason phrase
//! (first line), JSON answers are `{"data": ...}` and errors from API handlers add
//! `"message"` (and `"errors"` for parameter errors); authentication failures have
//! an empty body. Every answer of 400 and above closes the connection.
//! Verified against `PVE/APIServer/AnyEvent.pm` and `Formatter/Standard.pm`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

pub type Body = Full<Bytes>;

/// A response with PVE's headers and, for errors, PVE's message as reason phrase.
pub fn response(
    status: StatusCode,
    message: Option<&str>,
    body: Bytes,
    json_body: bool,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::SERVER,
        HeaderValue::from_static("pve-api-daemon/3.0"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if json_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    if status.as_u16() >= 400 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(message) = message {
        let first_line = message.lines().next().unwrap_or("").trim_end();
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(first_line.to_string()) {
            response.extensions_mut().insert(reason);
        }
    }
    response
}

/// `{"data": data}` with 200.
pub fn ok(data: Value) -> Response<Body> {
    ok_with(json!({ "data": data }))
}

/// A 200 whose whole JSON document is given (e.g. with `total`).
pub fn ok_with(document: Value) -> Response<Body> {
    response(
        StatusCode::OK,
        None,
        Bytes::from(document.to_string()),
        true,
    )
}

/// An error raised inside an API handler: `{"data":null,"message":"..."}`.
pub fn api_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = json!({ "data": null, "message": message });
    response(status, Some(message), Bytes::from(body.to_string()), true)
}

/// `raise_param_exc`: 400 with the per-parameter errors.
pub fn param_error(errors: BTreeMap<String, String>) -> Response<Body> {
    let message = "Parameter verification failed.\n";
    let body = json!({ "data": null, "errors": errors, "message": message });
    response(
        StatusCode::BAD_REQUEST,
        Some(message),
        Bytes::from(body.to_string()),
        true,
    )
}

/// An error from the server itself (authentication, framing): no body.
pub fn bare_error(status: StatusCode, message: &str) -> Response<Body> {
    response(status, Some(message), Bytes::new(), false)
}
