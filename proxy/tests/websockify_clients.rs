//! Standalone mode with real third-party WebSocket clients, as websockify's
//! users have them: Python's `websockets` and websocat, each doing QEMU's RFB
//! handshake through the proxy, over ws:// and wss:// on the same port, with
//! the `binary` subprotocol and with none. `e2e/scripts/deps.sh` installs
//! both (`make deps`).

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use support::{Pki, Qemu, TempDir, Websockify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The Python that has `websockets`: Debian's, where deps.sh installs
/// python3-websockets, unless `PORTHOLE_PYTHON` names another.
fn python() -> String {
    let python = std::env::var("PORTHOLE_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import websockets: run e2e/scripts/deps.sh (or set PORTHOLE_PYTHON)"
    );
    python
}

/// websocat: `PORTHOLE_WEBSOCAT`, else the version deps.sh builds into the
/// cache, else whatever is on PATH.
fn websocat() -> PathBuf {
    if let Ok(path) = std::env::var("PORTHOLE_WEBSOCAT") {
        return path.into();
    }
    let deps = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/scripts/deps.sh");
    let version = std::fs::read_to_string(deps).ok().and_then(|script| {
        script
            .lines()
            .find_map(|l| l.strip_prefix("WEBSOCAT_VERSION="))
            .map(|v| v.trim().to_string())
    });
    // As e2e/scripts/lib.sh finds its cache.
    let cache = std::env::var_os("PORTHOLE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("porthole")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/porthole")));
    let path = match (cache, version) {
        (Some(cache), Some(version)) => {
            let built = cache.join(format!("websocat-{version}/bin/websocat"));
            if built.is_file() {
                built
            } else {
                "websocat".into()
            }
        }
        _ => "websocat".into(),
    };
    let ok = std::process::Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no websocat: run e2e/scripts/deps.sh (or set PORTHOLE_WEBSOCAT)"
    );
    path
}

/// RFB through the proxy with Python's `websockets`: QEMU's handshake,
/// security None, ClientInit, ServerInit. Prints what it saw.
const PYTHON_VIEWER: &str = r#"
import asyncio, ssl, sys
import websockets

async def main(uri, protocol, cafile):
    options = {"max_size": None}
    if protocol:
        options["subprotocols"] = [protocol]
    if cafile:
        options["ssl"] = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(uri, **options) as ws:
        buf = bytearray()
        async def read(n):
            while len(buf) < n:
                message = await ws.recv()
                if isinstance(message, str):
                    sys.exit("a text message")
                buf.extend(message)
            out = bytes(buf[:n])
            del buf[:n]
            return out
        version = await read(12)
        await ws.send(version)
        types = await read((await read(1))[0])
        assert 1 in types, types
        await ws.send(b"\x01")
        assert await read(4) == b"\0\0\0\0"
        await ws.send(b"\x01")
        init = await read(24)
        name = await read(int.from_bytes(init[20:24], "big"))
        width, height = int.from_bytes(init[0:2], "big"), int.from_bytes(init[2:4], "big")
        print(f"subprotocol={ws.subprotocol} version={version.decode().strip()} screen={width}x{height}")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"#;

async fn python_viewer(uri: &str, protocol: &str, cafile: &str) -> (bool, String) {
    let output = tokio::time::timeout(
        support::DEADLINE,
        Command::new(python())
            .args(["-c", PYTHON_VIEWER, uri, protocol, cafile])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the Python viewer finishes")
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A proxy in front of QEMU with a certificate, so ws:// and wss:// share
/// its port.
async fn proxy_with_tls(qemu: &Qemu, dir: &TempDir) -> (Websockify, String) {
    let pki = Pki::new("clients-ca");
    let pem = dir.path().join("self.pem");
    std::fs::write(&pem, pki.server().combined_pem()).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let proxy =
        Websockify::start(&["--cert", pem.to_str().unwrap()], &[&qemu.vnc.to_string()]).await;
    (proxy, ca.to_str().unwrap().to_string())
}

#[tokio::test]
async fn python_websockets_sees_qemus_console() {
    let qemu = Qemu::start(false).await;
    let dir = TempDir::new("python-client");
    let (proxy, ca) = proxy_with_tls(&qemu, &dir).await;
    let port = proxy.addr.port();
    let cases = [
        (
            format!("ws://127.0.0.1:{port}/websockify"),
            "binary",
            "",
            "subprotocol=binary",
        ),
        (
            format!("ws://127.0.0.1:{port}/"),
            "",
            "",
            "subprotocol=None",
        ),
        (
            format!("wss://localhost:{port}/websockify"),
            "binary",
            ca.as_str(),
            "subprotocol=binary",
        ),
        (
            format!("wss://localhost:{port}/"),
            "",
            ca.as_str(),
            "subprotocol=None",
        ),
    ];
    for (uri, protocol, cafile, expected) in cases {
        let (ok, output) = python_viewer(&uri, protocol, cafile).await;
        assert!(ok, "{uri} {protocol:?}: {output}");
        assert!(output.contains(expected), "{uri} {protocol:?}: {output}");
        assert!(output.contains("version=RFB 003.008"), "{output}");
        assert!(
            output.contains("screen=") && !output.contains("screen=0x"),
            "{output}"
        );
    }
    // Offering only a protocol the proxy does not speak is refused.
    let (ok, output) = python_viewer(&format!("ws://127.0.0.1:{port}/"), "base64", "").await;
    assert!(!ok, "{output}");
    assert!(output.contains("400"), "{output}");
}

/// websocat relaying stdin and stdout as binary messages.
struct Websocat {
    child: Child,
}

impl Websocat {
    fn start(args: &[&str], url: &str) -> Self {
        let child = Command::new(websocat())
            .arg("--binary")
            .args(args)
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("websocat runs");
        Self { child }
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        let stdout = self.child.stdout.as_mut().unwrap();
        let read = tokio::time::timeout(support::DEADLINE, stdout.read_exact(&mut buf)).await;
        if !matches!(read, Ok(Ok(_))) {
            let mut errors = String::new();
            let _ = self.child.kill().await;
            if let Some(mut stderr) = self.child.stderr.take() {
                let _ = stderr.read_to_string(&mut errors).await;
            }
            panic!("websocat gave no {n} bytes: {read:?}: {errors}");
        }
        buf
    }

    async fn send(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// QEMU's RFB handshake up to ServerInit; returns the screen size.
    async fn handshake(&mut self) -> (u16, u16) {
        assert_eq!(self.read(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let count = self.read(1).await[0];
        assert!(self.read(count.into()).await.contains(&1));
        self.send(&[1]).await;
        assert_eq!(self.read(4).await, [0, 0, 0, 0]);
        self.send(&[1]).await;
        let init = self.read(24).await;
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap());
        self.read(name_len as usize).await;
        (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        )
    }

    /// Ends stdin, so websocat closes the WebSocket and exits.
    async fn finish(mut self) -> bool {
        drop(self.child.stdin.take());
        tokio::time::timeout(support::DEADLINE, self.child.wait())
            .await
            .expect("websocat exits")
            .unwrap()
            .success()
    }
}

#[tokio::test]
async fn websocat_sees_qemus_console() {
    let qemu = Qemu::start(false).await;
    let dir = TempDir::new("websocat-client");
    let (proxy, _) = proxy_with_tls(&qemu, &dir).await;
    let port = proxy.addr.port();
    let cases: [(&[&str], String); 4] = [
        (
            &["--protocol", "binary"],
            format!("ws://127.0.0.1:{port}/websockify"),
        ),
        (&[], format!("ws://127.0.0.1:{port}/")),
        // The proxy's certificate is from a CA websocat does not know.
        (
            &["--insecure", "--protocol", "binary"],
            format!("wss://localhost:{port}/websockify"),
        ),
        (&["--insecure"], format!("wss://localhost:{port}/")),
    ];
    for (args, url) in cases {
        let mut websocat = Websocat::start(args, &url);
        let (width, height) = websocat.handshake().await;
        assert!(width > 0 && height > 0, "{url} {args:?}: {width}x{height}");
        assert!(websocat.finish().await, "{url} {args:?}: websocat failed");
    }
}
