//! The viewer's WebSocket after the upgrade, as the proxy reads it: frames
//! decoded with the proxy's limits (proxy/src/http.rs `websocket_config`),
//! then relayed by proxy/src/relay.rs through the RFB client-message filter
//! to the VNC server.
//!
//! Input: a flags byte (bit 0: view-only viewer), then what the browser
//! sends (client frames, masked) from ClientInit on.
//!
//! Asserts: no panic or hang; no message or frame over the configured
//! maximum is ever delivered (control frames at most 125 bytes); what the
//! relay writes to the VNC server is exactly what the RFB filter makes of the
//! binary messages in order, stopping at the first text message, close,
//! WebSocket error or unusable RFB message (and the relay says which); the
//! input counts it reports match; for a view-only viewer no input reaches the
//! server.
#![no_main]

use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use porthole_fuzz::block_on;
use porthole_proxy::http::websocket_config;
use porthole_proxy::metrics::Direction;
use porthole_proxy::relay::{self, End, Observer};
use porthole_proxy::rfb::client_messages::{DEFAULT_MAX_CUT_TEXT, Input, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

/// Small, so the fuzzer reaches it (the proxy's default is larger).
const MAX_MESSAGE: usize = 4096;

/// How a relay of these bytes must end.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    ViewerLeft,
    Text,
    Rfb,
    WebSocket,
}

fn stop_of(end: &End) -> Stop {
    match end {
        End::ViewerLeft => Stop::ViewerLeft,
        End::TextMessage => Stop::Text,
        End::Protocol(_) => Stop::Rfb,
        End::Viewer(_) => Stop::WebSocket,
        other => panic!("the relay ended with {other:?}"),
    }
}

/// The proxy's end of a viewer's WebSocket, the viewer sending `data`; the
/// viewer drains what it gets (pongs, close replies).
async fn server(data: &[u8]) -> (WebSocketStream<DuplexStream>, JoinHandle<()>) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let data = data.to_vec();
    let viewer = tokio::spawn(async move {
        let (mut read, mut write) = tokio::io::split(&mut theirs);
        let send = async {
            let _ = write.write_all(&data).await;
            let _ = write.shutdown().await;
        };
        let drain = async {
            let _ = tokio::io::copy(&mut read, &mut tokio::io::sink()).await;
        };
        tokio::join!(send, drain);
    });
    let ws =
        WebSocketStream::from_raw_socket(ours, Role::Server, Some(websocket_config(MAX_MESSAGE)))
            .await;
    (ws, viewer)
}

/// What the relay must send upstream: the messages decoded one by one and
/// filtered as the relay does.
async fn model(data: &[u8], view_only: bool) -> (Vec<u8>, Input, Stop) {
    let (mut ws, viewer) = server(data).await;
    let mut parser = Parser::new(view_only, DEFAULT_MAX_CUT_TEXT);
    let mut pending = BytesMut::new();
    let mut out = BytesMut::new();
    let mut upstream = Vec::new();
    let mut counted = Input::default();
    let stop = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(payload))) => {
                assert!(
                    payload.len() <= MAX_MESSAGE,
                    "a {} byte message",
                    payload.len()
                );
                pending.extend_from_slice(&payload);
                match parser.feed(&mut pending, &mut out) {
                    Ok(input) => {
                        counted.keys += input.keys;
                        counted.pointer += input.pointer;
                        upstream.extend_from_slice(&out);
                        out.clear();
                    }
                    Err(_) => break Stop::Rfb,
                }
            }
            Some(Ok(Message::Text(text))) => {
                assert!(text.len() <= MAX_MESSAGE, "a {} byte message", text.len());
                break Stop::Text;
            }
            Some(Ok(Message::Ping(p) | Message::Pong(p))) => assert!(p.len() <= 125),
            Some(Ok(Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    assert!(frame.reason.len() <= 123);
                }
                break Stop::ViewerLeft;
            }
            None => break Stop::ViewerLeft,
            Some(Err(_)) => break Stop::WebSocket,
        }
    };
    drop(ws);
    porthole_fuzz::join(viewer).await;
    (upstream, counted, stop)
}

#[derive(Default)]
struct Seen {
    upstream: Mutex<Vec<u8>>,
    input: Mutex<Input>,
}

impl Observer for Seen {
    fn relayed(&self, direction: Direction, data: &[u8]) {
        if matches!(direction, Direction::Upstream) {
            self.upstream.lock().unwrap().extend_from_slice(data);
        }
    }

    fn input(&self, input: Input) {
        let mut seen = self.input.lock().unwrap();
        seen.keys += input.keys;
        seen.pointer += input.pointer;
    }
}

async fn relay(data: &[u8], view_only: bool) -> (Vec<u8>, Input, End, Vec<u8>) {
    let (mut ws, viewer) = server(data).await;
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (mut vnc_read, vnc_write) = tokio::io::split(theirs);
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let parser = Parser::new(view_only, DEFAULT_MAX_CUT_TEXT);
    let relayed = relay::relay(
        &mut ws,
        ours,
        BytesMut::new(),
        Some(parser),
        &seen,
        &stop,
        Duration::ZERO,
    );
    let mut received = Vec::new();
    // The VNC server sends nothing and reads until the relay says goodbye.
    let (end, _) = tokio::join!(relayed, vnc_read.read_to_end(&mut received));
    drop(vnc_write);
    drop(ws);
    porthole_fuzz::join(viewer).await;
    let observed = std::mem::take(&mut *seen.upstream.lock().unwrap());
    let input = *seen.input.lock().unwrap();
    (received, input, end, observed)
}

fuzz_target!(|data: &[u8]| {
    let [flags, stream @ ..] = data else {
        return;
    };
    let view_only = flags & 1 == 1;
    let outcome = block_on(async {
        let (want, want_input, want_stop) = model(stream, view_only).await;
        let (got, input, end, observed) = relay(stream, view_only).await;
        assert_eq!(stop_of(&end), want_stop, "{end:?}");
        assert_eq!(
            got, want,
            "the VNC server got other bytes than the filter let through"
        );
        assert_eq!(observed, got, "the observer saw other bytes than were sent");
        assert_eq!(input, want_input);
        if view_only {
            assert_eq!(input, Input::default());
        }
    });
    assert!(outcome.is_some(), "the relay hung");
});
