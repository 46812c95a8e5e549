//! The HTTP request a viewer's connection starts with, served as the pod
//! mode's session serves it (proxy/src/http.rs `serve`, `is_websocket`,
//! `accept`, `websocket`; proxy/src/auth.rs; proxy/src/assets.rs), over an
//! in-memory stream: hyper parses the request, the proxy's code decides, and
//! after an upgrade the same bytes go on as WebSocket frames.
//!
//! The routing below is `Session::route`/`open_console` (proxy/src/
//! session.rs) without the session around it: the checks run in the same
//! order and through the same functions.
//!
//! Input: the bytes a client sends on the connection.
//!
//! Asserts: no panic or hang; a connection is upgraded only for a GET that
//! asks for a WebSocket, offers the right token and `binary`, speaks version
//! 13 and sends a key, and then with the RFC 6455 accept key for that key and
//! the `binary` subprotocol; refusals have the expected status; an asset is
//! only ever served for a path ending in `/` + its own path; after the
//! upgrade no message over the configured maximum is delivered.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::header::{
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use libfuzzer_sys::fuzz_target;
use porthole_api::contract::{BINARY_SUBPROTOCOL, WEBSOCKET_PATH};
use porthole_fuzz::{block_on, join};
use porthole_proxy::assets;
use porthole_proxy::auth::{Offered, Token};
use porthole_proxy::http::{self as web, Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const TOKEN: &str = "s3ss10n-t0k3n";
const MAX_MESSAGE: usize = 4096;

type Viewers = Arc<Mutex<Vec<JoinHandle<()>>>>;

fn route(req: &mut Request<Incoming>, viewers: &Viewers) -> Response<Body> {
    let path = req.uri().path().to_string();
    let is_socket = path
        .strip_suffix(WEBSOCKET_PATH)
        .is_some_and(|p| p.ends_with('/'));
    if is_socket {
        return open_console(req, viewers);
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return web::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match assets::find(&path) {
        Some(asset) => {
            assert!(
                path.ends_with(&format!("/{}", asset.path)),
                "{path:?} served {:?}",
                asset.path
            );
            let response = asset.respond(req.headers());
            assert!(matches!(
                response.status(),
                StatusCode::OK | StatusCode::NOT_MODIFIED
            ));
            response
        }
        None => web::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn open_console(req: &mut Request<Incoming>, viewers: &Viewers) -> Response<Body> {
    if !web::is_websocket(req) {
        return web::text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    assert_eq!(req.method(), Method::GET);
    let offered = Offered::from_headers(req.headers());
    let token = Token::new(TOKEN);
    if !offered.token.is_some_and(|t| token.matches(t.as_bytes())) {
        return web::text(StatusCode::UNAUTHORIZED, "wrong or missing token\n");
    }
    assert_eq!(offered.token, Some(TOKEN));
    if !offered.binary {
        return web::text(
            StatusCode::BAD_REQUEST,
            "offer the \"binary\" subprotocol\n",
        );
    }
    let version_13 = req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        == Some(b"13");
    let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
    match web::accept(req, Some(BINARY_SUBPROTOCOL)) {
        Ok((response, on_upgrade)) => {
            assert!(version_13, "upgraded without version 13");
            let key = key.expect("upgraded without a key");
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert_eq!(
                response.headers()[SEC_WEBSOCKET_ACCEPT].as_bytes(),
                derive_accept_key(key.as_bytes()).as_bytes()
            );
            assert_eq!(
                response.headers()[SEC_WEBSOCKET_PROTOCOL],
                BINARY_SUBPROTOCOL
            );
            viewers
                .lock()
                .unwrap()
                .push(tokio::spawn(viewer(on_upgrade)));
            response
        }
        Err(response) => {
            let status = response.status();
            if !version_13 {
                assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
            } else {
                assert!(key.is_none());
                assert_eq!(status, StatusCode::BAD_REQUEST);
            }
            response
        }
    }
}

/// The viewer's WebSocket, read as the relay reads it.
async fn viewer(on_upgrade: OnUpgrade) {
    let Ok(mut ws) = web::websocket(on_upgrade, web::websocket_config(MAX_MESSAGE)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Binary(data) => assert!(data.len() <= MAX_MESSAGE),
            Message::Text(text) => assert!(text.len() <= MAX_MESSAGE),
            Message::Ping(data) | Message::Pong(data) => assert!(data.len() <= 125),
            Message::Close(_) | Message::Frame(_) => {}
        }
    }
}

async fn connection(data: Vec<u8>) {
    let viewers = Viewers::default();
    let service = {
        let viewers = viewers.clone();
        service_fn(move |mut req| {
            let response = route(&mut req, &viewers);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let (client, server) = tokio::io::duplex(1 << 16);
    let serve = async {
        // Errors are the client's fault (malformed requests); panics are ours.
        let _ = web::serve(server, service, Duration::from_secs(5)).await;
    };
    let (mut read, mut write) = tokio::io::split(client);
    let send = async {
        let _ = write.write_all(&data).await;
        let _ = write.shutdown().await;
    };
    let mut answer = Vec::new();
    let receive = read.read_to_end(&mut answer);
    let ((), (), _) = tokio::join!(serve, send, receive);
    let viewers = std::mem::take(&mut *viewers.lock().unwrap());
    for viewer in viewers {
        join(viewer).await;
    }
}

fuzz_target!(|data: &[u8]| {
    assert!(
        block_on(connection(data.to_vec())).is_some(),
        "the connection hung"
    );
});
