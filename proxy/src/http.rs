//! HTTP plumbing shared by both modes: responses, the WebSocket upgrade, and
//! serving one connection with hyper.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::relay::End;

pub type Body = Full<Bytes>;
/// The browser's WebSocket once upgraded.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A response with a plain-text or given-type body.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A short plain-text response, mostly for errors.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

/// Whether the request asks for a WebSocket (RFC 6455 §4.2.1).
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    let has_token = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == Method::GET
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
}

/// Accepts a WebSocket upgrade: the 101 response to send, and the future that
/// yields the connection once hyper has sent it. `protocol` is the subprotocol
/// to answer with; the caller checked the client offered it.
#[allow(clippy::result_large_err)]
pub fn accept(
    req: &mut Request<Incoming>,
    protocol: Option<&'static str>,
) -> Result<(Response<Body>, OnUpgrade), Response<Body>> {
    let headers: &HeaderMap = req.headers();
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(response);
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"));
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Ok((response, on_upgrade))
}

/// WebSocket limits: frames and messages no larger than `max_message`, and a
/// write buffer that pushes back instead of growing.
pub fn websocket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(crate::relay::CHUNK)
        .max_write_buffer_size(4 * max_message.max(crate::relay::CHUNK))
}

/// Waits for hyper to hand over an upgraded connection and speaks WebSocket on it.
pub async fn websocket(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<Socket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// The most a request head may take in the read buffer. Browsers' heads,
/// cookies included, stay well below; larger ones get 431. It bounds what
/// a connection that never finishes its head costs.
pub const MAX_HEAD: usize = 64 * 1024;

/// Serves HTTP/1.1 on one connection, upgrades included. A client gets
/// `header_timeout` to send each request head (see
/// [`Conn::serve_http`](crate::server::Conn::serve_http) for the clock that
/// also covers idle keep-alive).
pub async fn serve<I, S>(io: I, service: S, header_timeout: Duration) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
}

/// The close frame that tells a viewer why its relay ended: 1000 when
/// either side closed, 1001 when the proxy stops, 1002 for a protocol
/// violation (unmasked or malformed frames), 1003 for text messages, 1007 for
/// text that is not UTF-8, 1009 for a frame or message over
/// `--max-message-size`, 1011 otherwise.
pub fn relay_close_frame(end: &End) -> CloseFrame {
    use tokio_tungstenite::tungstenite::Error as Ws;
    let code = match end {
        End::ViewerLeft | End::UpstreamClosed => CloseCode::Normal,
        End::Stopped => CloseCode::Away,
        End::TextMessage => CloseCode::Unsupported,
        End::Viewer(Ws::Protocol(_)) => CloseCode::Protocol,
        End::Viewer(Ws::Capacity(_)) => CloseCode::Size,
        End::Viewer(Ws::Utf8(_)) => CloseCode::Invalid,
        _ => CloseCode::Error,
    };
    let reason = match code {
        CloseCode::Normal | CloseCode::Away => String::new(),
        _ => end.to_string(),
    };
    close_frame(code, &reason)
}

/// A close frame whose reason fits the 123 bytes a control frame allows.
pub fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};

    #[test]
    fn a_relay_end_tells_the_viewer_its_close_code() {
        let code = |end: End| relay_close_frame(&end).code;
        assert_eq!(code(End::ViewerLeft), CloseCode::Normal);
        assert_eq!(code(End::UpstreamClosed), CloseCode::Normal);
        assert_eq!(code(End::Stopped), CloseCode::Away);
        assert_eq!(code(End::TextMessage), CloseCode::Unsupported);
        let unmasked = tungstenite::Error::Protocol(ProtocolError::UnmaskedFrameFromClient);
        assert_eq!(code(End::Viewer(unmasked)), CloseCode::Protocol);
        let big = tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        assert_eq!(code(End::Viewer(big)), CloseCode::Size);
        let io = std::io::Error::other("reset");
        assert_eq!(code(End::Upstream(io)), CloseCode::Error);
        assert!(relay_close_frame(&End::ViewerLeft).reason.is_empty());
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let frame = close_frame(CloseCode::Error, &long);
        assert!(frame.reason.len() <= 123);
        assert!(long.starts_with(frame.reason.as_str()));
    }
}
