//! Malformed and hostile input against the running binary, in both modes:
//! standalone (websockify) and pod mode (`porthole-proxy session`). Bytes are
//! crafted by hand on raw TCP connections. Each case expects a clean end
//! (a close frame or an HTTP error, then the connection closed by the proxy)
//! and then a normal viewer that still sees the VM's screen.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{
    Logs, Proxy, ProxyOptions, Qemu, RfbClient, Tap, TempDir, Websockify, client_frame, close_code,
    raw_upgrade, see_the_screen, server_frames, websocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;

const TOKEN: &str = "bWFsZm9ybWVkLWlucHV0LXRlc3RzLW9ubHktMzJieXRl";
/// How long a client gets for its request head (and TLS or RFB handshake).
const HANDSHAKE: Duration = Duration::from_secs(1);
const MAX_CONNECTIONS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Standalone,
    Pod,
}

/// A proxy of either mode in front of a real QEMU, behind a tap that counts
/// the connections reaching the VNC server.
struct Under {
    mode: Mode,
    /// Standalone with `--token-file`: viewers name the target by token.
    tokens: bool,
    addr: SocketAddr,
    tap: Tap,
    logs: Logs,
    _standalone: Option<Websockify>,
    _pod: Option<Proxy>,
    _qemu: Qemu,
    _dir: TempDir,
}

impl Under {
    async fn start(mode: Mode) -> Self {
        Self::start_with(mode, false).await
    }

    async fn start_with(mode: Mode, tokens: bool) -> Self {
        let qemu = Qemu::start(false).await;
        let tap = Tap::start(qemu.vnc).await;
        let dir = TempDir::new("malformed");
        let token_file = dir.path().join("tokens");
        std::fs::write(&token_file, format!("{TOKEN}: {}\n", tap.addr)).unwrap();
        let token_file = token_file.to_str().unwrap().to_string();
        let target = tap.addr.to_string();
        let timeout = format!("{}s", HANDSHAKE.as_secs());
        let cap = MAX_CONNECTIONS.to_string();
        let (addr, logs, standalone, pod) = match mode {
            Mode::Standalone => {
                let mut args = vec!["--handshake-timeout", &timeout, "--max-connections", &cap];
                let mut targets = vec![target.as_str()];
                if tokens {
                    args.extend(["--token-file", &token_file]);
                    targets.clear();
                }
                let mut proxy = Websockify::start(&args, &targets).await;
                (proxy.addr, proxy.logs(), Some(proxy), None)
            }
            Mode::Pod => {
                let extra = ["--handshake-timeout", &timeout, "--max-connections", &cap];
                let mut proxy = Proxy::start(ProxyOptions {
                    upstream: tap.addr.to_string(),
                    token: TOKEN,
                    vnc_password: None,
                    vm_name: "malformed",
                    extra_args: &extra,
                    env: &[],
                })
                .await;
                (proxy.addr, proxy.logs(), None, Some(proxy))
            }
        };
        Self {
            mode,
            tokens,
            addr,
            tap,
            logs,
            _standalone: standalone,
            _pod: pod,
            _qemu: qemu,
            _dir: dir,
        }
    }

    /// The subprotocols a legitimate viewer offers.
    fn protocols(&self) -> String {
        match (self.mode, self.tokens) {
            (Mode::Standalone, false) => "binary".into(),
            _ => format!("binary, bearer.porthole.dev.{TOKEN}"),
        }
    }

    /// A raw connection past a successful upgrade.
    async fn upgraded(&self) -> TcpStream {
        let header = format!("Sec-WebSocket-Protocol: {}\r\n", self.protocols());
        let (stream, head) = raw_upgrade(self.addr, "/websockify", &header).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        stream
    }

    /// A well-behaved viewer sees the VM's screen.
    async fn serves_a_viewer(&self) {
        let (ws, _) = websocket(self.addr, "/websockify", Some(&self.protocols()))
            .await
            .expect("a normal viewer is let in");
        self.sees_the_screen(ws).await;
    }

    async fn sees_the_screen(&self, ws: WebSocketStream<TcpStream>) {
        let mut rfb = RfbClient::new(ws);
        match self.mode {
            Mode::Standalone => see_the_screen(&mut rfb).await,
            Mode::Pod => {
                rfb.handshake_through_proxy().await;
                rfb.init().await;
                rfb.wait_for_pixels().await;
            }
        }
        rfb.ws.close(None).await.unwrap();
        rfb.closed().await;
    }

    /// Sends `bytes` on an upgraded connection and expects a close frame with
    /// one of `codes`, then the connection closed by the proxy.
    async fn closes_after(&self, what: &str, bytes: &[u8], codes: &[u16]) {
        let mut stream = self.upgraded().await;
        stream.write_all(bytes).await.unwrap();
        let (frames, closed) = server_frames(&mut stream).await;
        assert!(closed, "{what}: the proxy left the connection open");
        let close = frames
            .iter()
            .find(|(opcode, _)| *opcode == 0x8)
            .unwrap_or_else(|| panic!("{what}: no close frame in {frames:?}"));
        let code = close_code(&close.1);
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{what}: close code {code:?}, expected one of {codes:?}"
        );
    }

    /// Close codes for a protocol violation; pod mode reports every failure
    /// during its RFB handshake as one.
    fn protocol_error(&self) -> &'static [u16] {
        &[1002]
    }

    fn too_big(&self) -> &'static [u16] {
        match self.mode {
            Mode::Standalone => &[1009],
            Mode::Pod => &[1002, 1009],
        }
    }
}

async fn bad_frames(under: &Under) {
    let rsv = client_frame(0x82 | 0x40, b"RFB 003.008\n", true);
    under
        .closes_after("RSV1 set", &rsv, under.protocol_error())
        .await;
    let opcode = client_frame(0x83, b"x", true);
    under
        .closes_after("reserved opcode 3", &opcode, under.protocol_error())
        .await;
    let continuation = client_frame(0x80, b"x", true);
    under
        .closes_after(
            "a continuation with nothing to continue",
            &continuation,
            under.protocol_error(),
        )
        .await;
    if under.mode == Mode::Standalone {
        // Only binary is relayed; text that is not even UTF-8 is invalid.
        let text = client_frame(0x81, b"RFB 003.008\n", true);
        under.closes_after("a text message", &text, &[1003]).await;
        let latin1 = client_frame(0x81, b"caf\xe9", true);
        under
            .closes_after("text that is not UTF-8", &latin1, &[1007])
            .await;
    }
    under.serves_a_viewer().await;
}

async fn oversized_lengths(under: &Under) {
    // A 64-bit length far beyond memory, then a mask key and nothing else.
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    under
        .closes_after("a 2^62-byte frame", &huge, under.too_big())
        .await;
    // Just over the 1 MiB limit, sent in full.
    let over = client_frame(0x82, &vec![0; (1 << 20) + 1], true);
    under
        .closes_after("a 1 MiB + 1 frame", &over, under.too_big())
        .await;
    // A message over the limit in small fragments.
    let mut fragments = client_frame(0x02, &vec![0; 600 * 1024], true);
    fragments.extend(client_frame(0x00, &vec![0; 600 * 1024], true));
    under
        .closes_after("a fragmented 1.2 MiB message", &fragments, under.too_big())
        .await;
    under.serves_a_viewer().await;
}

async fn unmasked_client_frames(under: &Under) {
    let unmasked = client_frame(0x82, b"RFB 003.008\n", false);
    under
        .closes_after("an unmasked frame", &unmasked, under.protocol_error())
        .await;
    under.serves_a_viewer().await;
}

async fn fragmented_control_frames(under: &Under) {
    let ping = client_frame(0x09, b"not final", true);
    under
        .closes_after("a fragmented ping", &ping, under.protocol_error())
        .await;
    let close = client_frame(0x08, &[0x03, 0xe8], true);
    under
        .closes_after("a fragmented close", &close, under.protocol_error())
        .await;
    let long = client_frame(0x89, &[0; 126], true);
    under
        .closes_after("a 126-byte ping", &long, under.protocol_error())
        .await;
    under.serves_a_viewer().await;
}

/// Sends `bytes` as a whole connection and returns what came back once the
/// proxy closed it.
async fn answer_to(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before reading everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the proxy left {bytes:.40?} open");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn garbage_http(under: &Under) {
    let mut noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    noise.extend_from_slice(b"\r\n\r\n");
    let cases: [(&str, Vec<u8>); 5] = [
        ("binary noise", noise),
        (
            "no request line",
            b"\r\n\r\n\r\n\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a bad version",
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a header without a colon",
            b"GET /websockify HTTP/1.1\r\nHost x\r\nUpgrade websocket\r\n\r\n".to_vec(),
        ),
        (
            "a 1 MiB header",
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let answer = answer_to(under.addr, &bytes).await;
        // A head that big may be cut off (a reset) before the 431 is read.
        let cut_off = what.contains("MiB") && answer.is_empty();
        assert!(
            cut_off || answer.starts_with("HTTP/1.1 4"),
            "{what}: {answer:.200}"
        );
    }
    // A WebSocket upgrade missing its key, or of another version.
    let keyless = format!(
        "GET /websockify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
        under.protocols()
    );
    let answer = answer_to(under.addr, keyless.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.200}");
    let version = format!(
        "GET /websockify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {}\r\nConnection: close\r\n\r\n",
        under.protocols()
    );
    let answer = answer_to(under.addr, version.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer:.200}");
    under.serves_a_viewer().await;
}

async fn slow_handshakes(under: &Under) {
    // As many slow clients as --max-connections: half send nothing, half
    // trickle a request head a byte at a time.
    let mut slow = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(under.addr).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /websockify HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        slow.push(stream);
    }
    let opened = Instant::now();
    let trickle = async {
        for stream in slow.iter_mut().skip(1).step_by(2) {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            for byte in b"X-Slow: 1111111111111111111111111111111111111111\r\n" {
                ticks.tick().await;
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
            }
        }
    };
    // A normal viewer gets in meanwhile: slow clients cannot hold it out.
    let viewer = under.serves_a_viewer();
    tokio::join!(trickle, viewer);
    for (i, stream) in slow.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "slow client {i} was never cut off");
    }
    // Cut off after the request timeout, not at the end of the test.
    assert!(
        opened.elapsed() < HANDSHAKE * 20,
        "slow clients held on for {:?}",
        opened.elapsed()
    );
    under.serves_a_viewer().await;
}

/// Thousands of upgrades with wrong tokens: every one refused, past the
/// source's failure budget with 429, the VNC server never dialled, and the
/// right token still let in at once.
async fn wrong_tokens(under: &Under) {
    const ATTEMPTS: usize = 2000;
    const BURST: usize = 10;
    let started = Instant::now();
    let wrong = format!("binary, bearer.porthole.dev.{}", TOKEN.replace('b', "c"));
    let mut unauthorized = 0;
    let mut limited = 0;
    let mut next = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while next < ATTEMPTS || !tasks.is_empty() {
        while next < ATTEMPTS && tasks.len() < MAX_CONNECTIONS {
            let (addr, wrong) = (under.addr, wrong.clone());
            let path = format!("/websockify?token=guess-{next}");
            tasks.spawn(async move {
                let header = format!("Sec-WebSocket-Protocol: {wrong}\r\nConnection: close\r\n");
                let (_, head) = raw_upgrade(addr, &path, &header).await;
                head
            });
            next += 1;
        }
        let head = tasks.join_next().await.unwrap().unwrap();
        match head.get(9..12) {
            Some("401") => unauthorized += 1,
            Some("429") => limited += 1,
            _ => panic!("a wrong token was not refused: {head}"),
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(unauthorized + limited, ATTEMPTS);
    // A burst, then one check per two seconds.
    let allowed = BURST + (elapsed.as_secs_f64() / 2.0).ceil() as usize + 1;
    assert!(
        unauthorized <= allowed,
        "{unauthorized} tokens checked in {elapsed:?}"
    );
    assert_eq!(
        under.tap.connections(),
        0,
        "a wrong token reached the VNC server"
    );
    // The right token gets in at once: wrong ones spend only their own budget.
    let (ws, _) = websocket(under.addr, "/websockify", Some(&under.protocols()))
        .await
        .expect("the right token is let in after the wrong ones");
    under.sees_the_screen(ws).await;
    under.serves_a_viewer().await;
    assert!(
        !under.logs.text().contains(TOKEN),
        "the token is in the logs"
    );
}

macro_rules! both_modes {
    ($($case:ident),* $(,)?) => {
        mod standalone {
            $(
                #[tokio::test]
                async fn $case() {
                    let under = super::Under::start(super::Mode::Standalone).await;
                    super::$case(&under).await;
                }
            )*
        }
        mod pod {
            $(
                #[tokio::test]
                async fn $case() {
                    let under = super::Under::start(super::Mode::Pod).await;
                    super::$case(&under).await;
                }
            )*
        }
    };
}

both_modes!(
    bad_frames,
    oversized_lengths,
    unmasked_client_frames,
    fragmented_control_frames,
    garbage_http,
    slow_handshakes,
);

#[tokio::test]
async fn pod_mode_wrong_tokens() {
    let under = Under::start(Mode::Pod).await;
    wrong_tokens(&under).await;
}

#[tokio::test]
async fn standalone_token_file_wrong_tokens() {
    let under = Under::start_with(Mode::Standalone, true).await;
    wrong_tokens(&under).await;
}
