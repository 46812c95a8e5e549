//! Standalone mode's relay under pressure: a side that stops reading holds the
//! other back instead of filling the proxy's memory, and a side that goes
//! away takes the other down promptly, whichever it is and whatever state
//! the relay is in.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::{Websockify, rss_kib, websocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// More than any kernel buffers along the way hold: a relay that let this
/// much through without the far side reading has no backpressure.
const CAP: usize = 256 << 20;
/// What may sit in socket buffers (two TCP connections, both ends) and the
/// proxy's own bounded buffers, generously.
const IN_FLIGHT: usize = 64 << 20;
/// The proxy's resident memory may not grow by more than this while data
/// is held back.
const RSS_GROWTH_KIB: u64 = 48 << 10;
const CHUNK: usize = 64 << 10;
/// "Promptly": the proxy gives a close frame one second to go out.
const PROMPTLY: Duration = Duration::from_secs(3);

/// Waits until `count` stops growing, then returns it: sampled every half
/// second, it has not moved since the previous sample.
async fn settled(what: &str, count: &AtomicUsize) -> usize {
    let deadline = Instant::now() + support::DEADLINE;
    let mut last = usize::MAX;
    loop {
        let now = count.load(Ordering::SeqCst);
        assert!(
            now < CAP,
            "{what}: {now} bytes went through without backpressure"
        );
        if now == last && now > 0 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never settled ({now} bytes)"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A target that writes zeros as fast as it may, up to [`CAP`], counting
/// what the kernel took.
async fn flooding_target() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let chunk = vec![0u8; CHUNK];
        while count.load(Ordering::SeqCst) < CAP {
            let Ok(n) = stream.write(&chunk).await else {
                return;
            };
            count.fetch_add(n, Ordering::SeqCst);
        }
        // Hold the connection open.
        let _ = stream.read(&mut [0]).await;
    });
    (addr, written)
}

#[tokio::test]
async fn a_viewer_that_stops_reading_holds_the_target_back() {
    let (target, written) = flooding_target().await;
    let proxy = Websockify::start(&[], &[&target.to_string()]).await;
    let before = rss_kib(proxy.child.id().unwrap());
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();

    // The viewer reads nothing.
    let held = settled("target to viewer", &written).await;
    let rss = rss_kib(proxy.child.id().unwrap());
    eprintln!("held back: {held} bytes in flight; proxy RSS {before} -> {rss} KiB");
    assert!(held < IN_FLIGHT, "{held} bytes in flight");
    assert!(
        rss < before + RSS_GROWTH_KIB,
        "the proxy grew from {before} KiB to {rss} KiB"
    );

    // Reading again lets the target go on: more arrives than it had
    // written while held back.
    let mut received = 0;
    while received < held + (8 << 20) {
        match tokio::time::timeout(support::DEADLINE, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => received += data.len(),
            other => panic!("the relay stopped: {other:?} after {received} bytes"),
        }
    }
    assert!(written.load(Ordering::SeqCst) > held);
}

#[tokio::test]
async fn a_target_that_stops_reading_holds_the_viewer_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    // Accepts and never reads.
    let holder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(stream);
    });
    let proxy = Websockify::start(&[], &[&target.to_string()]).await;
    let before = rss_kib(proxy.child.id().unwrap());
    let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    let (mut sink, _stream) = ws.split();

    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    let sender = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![0u8; CHUNK]);
        while count.load(Ordering::SeqCst) < CAP {
            if sink.send(Message::Binary(chunk.clone())).await.is_err() {
                return;
            }
            count.fetch_add(CHUNK, Ordering::SeqCst);
        }
    });
    let held = settled("viewer to target", &sent).await;
    let rss = rss_kib(proxy.child.id().unwrap());
    eprintln!("held back: {held} bytes in flight; proxy RSS {before} -> {rss} KiB");
    assert!(held < IN_FLIGHT, "{held} bytes in flight");
    assert!(
        rss < before + RSS_GROWTH_KIB,
        "the proxy grew from {before} KiB to {rss} KiB"
    );
    sender.abort();
    holder.abort();
}

/// A target that reports when its connection ends, and can end it itself.
struct Watched {
    addr: SocketAddr,
    ended: oneshot::Receiver<Instant>,
    hang_up: Option<oneshot::Sender<&'static [u8]>>,
    /// What it wrote, with `flood`.
    written: Arc<AtomicUsize>,
}

/// `flood`: the target writes without pause; `read`: it reads what comes
/// (and so notices the end of the connection).
async fn watched_target(flood: bool, read: bool) -> Watched {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended_tx, ended) = oneshot::channel();
    let (hang_up, mut hang_up_rx) = oneshot::channel::<&'static [u8]>();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, mut write) = stream.into_split();
        let reading = async {
            let mut buf = vec![0; CHUNK];
            while read && matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
            if !read {
                std::future::pending::<()>().await;
            }
        };
        let writing = async {
            let chunk = vec![0u8; CHUNK];
            while flood && count.load(Ordering::SeqCst) < CAP {
                match write.write(&chunk).await {
                    Ok(n) => count.fetch_add(n, Ordering::SeqCst),
                    Err(_) => break,
                };
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = reading => {}
            () = writing => {}
            last = &mut hang_up_rx => {
                if let Ok(last) = last {
                    let _ = write.write_all(last).await;
                }
                return;
            }
        }
        let _ = ended_tx.send(Instant::now());
    });
    Watched {
        addr,
        ended,
        hang_up: Some(hang_up),
        written,
    }
}

async fn ended_within(what: &str, ended: oneshot::Receiver<Instant>, since: Instant) {
    let at = tokio::time::timeout(support::DEADLINE, ended)
        .await
        .unwrap_or_else(|_| panic!("{what}: the target's connection stayed open"))
        .unwrap();
    let took = at.duration_since(since);
    assert!(
        took < PROMPTLY,
        "{what}: the target's connection ended after {took:?}"
    );
}

#[tokio::test]
async fn the_viewer_closing_ends_the_target_connection() {
    for flood in [false, true] {
        let target = watched_target(flood, true).await;
        let proxy = Websockify::start(&[], &[&target.addr.to_string()]).await;
        let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
        ws.send(Message::Binary(b"hello"[..].into())).await.unwrap();
        // With `flood`, the viewer reads nothing: the proxy is stuck sending
        // to it when it closes.
        if flood {
            settled("the flood", &target.written).await;
        }
        let closed = Instant::now();
        ws.send(Message::Close(None)).await.unwrap();
        ended_within(&format!("close frame, flood={flood}"), target.ended, closed).await;
    }
}

#[tokio::test]
async fn the_viewer_vanishing_ends_the_target_connection() {
    let target = watched_target(false, true).await;
    let proxy = Websockify::start(&[], &[&target.addr.to_string()]).await;
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    ws.send(Message::Binary(b"hello"[..].into())).await.unwrap();
    // No close frame: the TCP connection just goes.
    let closed = Instant::now();
    drop(ws);
    ended_within("dropped TCP connection", target.ended, closed).await;
}

#[tokio::test]
async fn the_target_closing_closes_the_viewer_after_what_it_sent() {
    let mut target = watched_target(false, true).await;
    let proxy = Websockify::start(&[], &[&target.addr.to_string()]).await;
    let (mut ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    ws.send(Message::Binary(b"hello"[..].into())).await.unwrap();
    let closed = Instant::now();
    target.hang_up.take().unwrap().send(b"goodbye").unwrap();
    let mut received = Vec::new();
    let code = loop {
        match tokio::time::timeout(support::DEADLINE, ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert!(
        closed.elapsed() < PROMPTLY,
        "closed after {:?}",
        closed.elapsed()
    );
    assert_eq!(received, b"goodbye", "the last bytes come before the close");
    assert_eq!(code, Some(1000));
    assert!(
        matches!(
            tokio::time::timeout(support::DEADLINE, ws.next()).await,
            Ok(None | Some(Err(_)))
        ),
        "the connection ends after the close frame"
    );
}

#[tokio::test]
async fn the_target_closing_ends_a_viewer_blocked_sending() {
    // A target that reads nothing: the viewer's sends back up to it.
    let mut target = watched_target(false, false).await;
    let proxy = Websockify::start(&[], &[&target.addr.to_string()]).await;
    let (ws, _) = websocket(proxy.addr, "/", Some("binary")).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    let sender = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![0u8; CHUNK]);
        while sink.send(Message::Binary(chunk.clone())).await.is_ok() {
            count.fetch_add(CHUNK, Ordering::SeqCst);
        }
    });
    settled("the viewer's sends", &sent).await;
    let closed = Instant::now();
    target.hang_up.take().unwrap().send(b"").unwrap();
    let end = tokio::time::timeout(support::DEADLINE, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    })
    .await
    .expect("the viewer's connection ends");
    assert!(
        closed.elapsed() < PROMPTLY,
        "ended after {:?}",
        closed.elapsed()
    );
    drop(end);
    sender.abort();
    let _ = TcpStream::connect(proxy.addr).await.expect("still serving");
}
