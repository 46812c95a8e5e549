//! Proxmox VE's `vncwebsocket` as the proxy reads it (proxy/src/pve/
//! websocket.rs `ByteStream`): the server's WebSocket frames turned back into
//! the VNC server's byte stream, which the RFB handshake and relay then read.
//!
//! Input: what Proxmox VE sends after the upgrade (server frames, unmasked).
//!
//! Asserts: no panic or hang; the bytes read are exactly the binary messages'
//! payloads in order, up to the end of the stream (a close frame, the
//! connection dropped, or a reset without a closing handshake, as Proxmox VE
//! ends consoles), and a text message or any other WebSocket error is a read
//! error; no message over the configured limit is accepted.
#![no_main]

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use porthole_fuzz::block_on;
use porthole_proxy::pve::websocket::ByteStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

/// Small, so the fuzzer reaches it (the proxy uses 1 MiB).
const MAX_MESSAGE: usize = 2048;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// A client WebSocket reading `data` as if Proxmox VE had sent it; the
/// server end is drained (pongs, close replies) until the client is done.
async fn client(data: &[u8]) -> (WebSocketStream<DuplexStream>, tokio::task::JoinHandle<()>) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let data = data.to_vec();
    let server = tokio::spawn(async move {
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
    let ws = WebSocketStream::from_raw_socket(ours, Role::Client, Some(config())).await;
    (ws, server)
}

/// What reading should give: the binary payloads up to the end of the
/// stream, or an error (after the payloads before it).
async fn model(data: &[u8]) -> (Vec<u8>, bool) {
    let (mut ws, server) = client(data).await;
    let mut bytes = Vec::new();
    let ok = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(payload))) => {
                assert!(payload.len() <= MAX_MESSAGE);
                bytes.extend_from_slice(&payload);
            }
            Some(Ok(Message::Text(text))) => {
                assert!(text.len() <= MAX_MESSAGE);
                break false;
            }
            Some(Ok(Message::Ping(p) | Message::Pong(p))) => assert!(p.len() <= 125),
            Some(Ok(Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => break true,
            Some(Err(
                Error::ConnectionClosed
                | Error::AlreadyClosed
                | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            )) => break true,
            Some(Err(_)) => break false,
        }
    };
    drop(ws);
    porthole_fuzz::join(server).await;
    (bytes, ok)
}

fuzz_target!(|data: &[u8]| {
    let outcome = block_on(async {
        let (want, want_ok) = model(data).await;
        let (ws, server) = client(data).await;
        let mut stream = ByteStream::new(ws);
        let mut got = Vec::new();
        let read = stream.read_to_end(&mut got).await;
        drop(stream);
        porthole_fuzz::join(server).await;
        assert_eq!(read.is_ok(), want_ok, "{read:?}");
        assert_eq!(got, want);
    });
    assert!(outcome.is_some(), "reading hung");
});
