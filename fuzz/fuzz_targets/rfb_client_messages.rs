//! The browser's RFB messages after the handshake (proxy/src/rfb/
//! client_messages.rs): what decides which bytes reach the VM.
//!
//! Input: one flags byte (bit 0: view-only; bits 1-3: the ClientCutText
//! limit), one byte of chunking pattern, then the browser's byte stream.
//!
//! Asserts: framing never panics and always makes progress; feeding the
//! stream in arbitrary chunks gives the same output, counts and error as
//! feeding it at once; what goes upstream is exactly what came in, except
//! that ClientInit always asks to share and, for a view-only viewer, no
//! message that changes the VM (keys, pointer, clipboard, xvp, desktop size)
//! gets through; no ClientCutText larger than the limit is accepted.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use porthole_fuzz::chunks;
use porthole_proxy::rfb::client_messages::{Error, Input, Kind, Parser, frame};

const LIMITS: [usize; 8] = [0, 1, 4, 16, 255, 1024, 65_536, 1 << 20];

/// Feeds `stream` in `sizes`-long pieces; what went upstream, what was
/// counted, the error if any, and how many bytes were consumed.
fn feed(
    view_only: bool,
    limit: usize,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Input, Option<Error>, usize) {
    let mut parser = Parser::new(view_only, limit);
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut counted = Input::default();
    let mut fed = 0;
    for &size in sizes {
        input.extend_from_slice(&stream[fed..fed + size]);
        fed += size;
        match parser.feed(&mut input, &mut output) {
            Ok(got) => {
                counted.keys += got.keys;
                counted.pointer += got.pointer;
            }
            Err(e) => return (output.to_vec(), counted, Some(e), fed - input.len()),
        }
    }
    (output.to_vec(), counted, None, fed - input.len())
}

fuzz_target!(|data: &[u8]| {
    let [flags, pattern, stream @ ..] = data else {
        return;
    };
    let view_only = flags & 1 == 1;
    let limit = LIMITS[usize::from(flags >> 1) % LIMITS.len()];

    let (out, counted, error, consumed) = feed(view_only, limit, stream, &[stream.len()]);
    let sizes = chunks(stream.len(), &[*pattern, pattern.rotate_left(3), 1]);
    let (out2, counted2, error2, consumed2) = feed(view_only, limit, stream, &sizes);
    assert_eq!(out, out2, "chunking changed what goes upstream");
    assert_eq!(error, error2, "chunking changed the error");
    assert_eq!(consumed, consumed2);
    // A failed feed reports no counts (the relay then ends, sending nothing
    // of that feed), so counts compare only when nothing failed.
    if error.is_none() {
        assert_eq!(counted, counted2, "chunking changed the input counts");
    }

    // Re-frame what went upstream: whole messages, ClientInit first.
    if out.is_empty() {
        assert!(stream.is_empty(), "the first byte is always ClientInit");
        return;
    }
    assert_eq!(out[0], 1, "ClientInit always asks to share");
    let mut rest = &out[1..];
    let mut keys = 0;
    let mut pointer = 0;
    let mut relayed = 1;
    while !rest.is_empty() {
        let (kind, len) = frame(rest, limit)
            .expect("what went upstream frames again")
            .expect("only whole messages go upstream");
        assert!(len >= 1 && len <= rest.len());
        if view_only {
            assert!(!kind.changes_the_vm(), "a view-only viewer sent {kind:?}");
        }
        if kind == Kind::ClientCutText {
            assert!(len <= 8 + limit);
        }
        match kind {
            Kind::KeyEvent | Kind::QemuKeyEvent => keys += 1,
            Kind::PointerEvent => pointer += 1,
            _ => {}
        }
        relayed += len;
        rest = &rest[len..];
    }
    if error.is_none() {
        assert_eq!(
            counted,
            Input { keys, pointer },
            "counts match what was relayed"
        );
    }
    if !view_only {
        // Everything consumed went upstream unchanged, but for ClientInit.
        assert_eq!(relayed, consumed);
        assert_eq!(&out[1..], &stream[1..consumed]);
    }
});
