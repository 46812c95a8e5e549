//! The RFB security handshakes (proxy/src/rfb/): towards the browser (the
//! proxy is the server, offering only None) and towards the VNC server (the
//! proxy is the client, answering VNC Authentication with the password).
//!
//! Input: a selector byte (bit 0: which side; bit 1: whether the session has
//! a VNC password), a chunking pattern byte, then what the peer sends.
//!
//! Asserts: no panic; feeding the peer's bytes in arbitrary chunks gives the
//! same answers, outcome and leftover bytes as feeding them at once; the
//! browser is only ever offered security type None; towards the server the
//! proxy announces a version no newer than the server's, picks a security
//! type the server offered (VNC Authentication only with a password), and
//! its errors are one readable line, bounded, without the password.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use porthole_fuzz::{chunks, is_one_readable_line};
use porthole_proxy::rfb::vnc_auth::VncPassword;
use porthole_proxy::rfb::{
    SECURITY_NONE, SECURITY_VNC_AUTH, Step, VERSION_LEN, Version, browser, upstream,
};

const PASSWORD: &str = "Pw-k3y!9";

#[derive(Debug, PartialEq, Eq)]
enum Outcome<E> {
    NeedMore(Vec<u8>),
    Done(Vec<u8>),
    Failed(E),
}

/// Runs a handshake over `stream` fed in `sizes`-long pieces: what it sent,
/// and how it ended (with the bytes left for the relay).
fn drive<E>(
    mut step: impl FnMut(&mut BytesMut) -> Result<Step, E>,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Outcome<E>) {
    let mut buf = BytesMut::new();
    let mut sent = Vec::new();
    let mut fed = 0;
    for &size in sizes {
        buf.extend_from_slice(&stream[fed..fed + size]);
        fed += size;
        loop {
            match step(&mut buf) {
                Ok(Step::Send(bytes)) => {
                    assert!(!bytes.is_empty(), "Send carries bytes");
                    sent.extend(bytes);
                }
                Ok(Step::NeedMore) => break,
                Ok(Step::Done) => {
                    let mut left = buf.to_vec();
                    left.extend_from_slice(&stream[fed..]);
                    return (sent, Outcome::Done(left));
                }
                Err(e) => return (sent, Outcome::Failed(e)),
            }
        }
    }
    (sent, Outcome::NeedMore(buf.to_vec()))
}

fn same_whole_and_chunked<E: PartialEq + std::fmt::Debug>(
    mut run: impl FnMut(&[usize]) -> (Vec<u8>, Outcome<E>),
    stream: &[u8],
    pattern: u8,
) -> (Vec<u8>, Outcome<E>) {
    let whole = run(&[stream.len()]);
    let chunked = run(&chunks(stream.len(), &[pattern, pattern ^ 0x5a, 3]));
    assert_eq!(whole, chunked, "chunking changed the handshake");
    whole
}

fn browser_side(stream: &[u8], pattern: u8) {
    let (sent, outcome) = same_whole_and_chunked(
        |sizes| {
            let mut hs = browser::Handshake::default();
            drive(|buf| hs.step(buf), stream, sizes)
        },
        stream,
        pattern,
    );
    // 3.3: the server names None; 3.7/3.8: it offers None alone, and 3.8
    // confirms it.
    let allowed: [&[u8]; 4] = [&[], &[0, 0, 0, 1], &[1, 1], &[1, 1, 0, 0, 0, 0]];
    assert!(allowed.contains(&sent.as_slice()), "offered {sent:?}");
    if let Outcome::Done(_) = outcome {
        assert!(sent.len() >= 2);
    }
    if let Outcome::Failed(browser::Error::UnofferedSecurityType(t)) = outcome {
        assert_ne!(t, SECURITY_NONE);
    }
}

fn server_side(stream: &[u8], pattern: u8, password: bool) {
    let mut last = None;
    let (sent, outcome) = same_whole_and_chunked(
        |sizes| {
            let mut hs = upstream::Handshake::new(password.then(|| VncPassword::new(PASSWORD)));
            let result = drive(|buf| hs.step(buf), stream, sizes);
            last = Some((hs.version(), hs.security()));
            result
        },
        stream,
        pattern,
    );
    let (version, security) = last.expect("ran");
    if sent.is_empty() {
        return;
    }
    // The version answer: ours, no newer than the server's.
    let (answer, rest) = sent.split_at(VERSION_LEN);
    let answer: &[u8; VERSION_LEN] = answer.try_into().expect("12 bytes");
    let ours = Version::parse(answer).expect("the proxy announces a valid version");
    let theirs = Version::parse(stream[..VERSION_LEN].try_into().expect("12 bytes"))
        .expect("the proxy answered a valid version");
    assert_eq!(ours, theirs);
    assert_eq!(version, Some(ours));
    assert_eq!(answer, ours.message());
    if ours == Version::V3_3 {
        // The server chose; the proxy only answers VNC Authentication.
        assert!(
            rest.is_empty()
                || rest.len() == 16 && password && stream[VERSION_LEN..][..4] == [0, 0, 0, 2],
            "answered {rest:?}"
        );
    } else if let Some(&chosen) = rest.first() {
        let count = usize::from(stream[VERSION_LEN]);
        let offered = &stream[VERSION_LEN + 1..VERSION_LEN + 1 + count];
        assert!(offered.contains(&chosen), "chose {chosen} of {offered:?}");
        assert!(chosen == SECURITY_NONE || chosen == SECURITY_VNC_AUTH && password);
        assert_eq!(security, Some(chosen));
        // A VNC Authentication response is 16 bytes, after the choice.
        assert!(rest.len() == 1 || chosen == SECURITY_VNC_AUTH && rest.len() == 17);
    }
    match outcome {
        Outcome::Done(_) => assert!(security.is_some(), "done without a security type"),
        Outcome::Failed(e) => {
            let text = e.to_string();
            assert!(is_one_readable_line(&text), "{text:?}");
            // It becomes the end reason in the 4 KiB termination message.
            assert!(text.len() <= 4000, "unbounded error: {} bytes", text.len());
            if !stream
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
            {
                assert!(!text.contains(PASSWORD), "the password leaked: {text:?}");
            }
        }
        Outcome::NeedMore(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, pattern, stream @ ..] = data else {
        return;
    };
    if let Ok(message) =
        <&[u8; VERSION_LEN]>::try_from(stream.get(..VERSION_LEN).unwrap_or_default())
        && let Ok(version) = Version::parse(message)
    {
        assert_eq!(Version::parse(version.message()), Ok(version));
    }
    if selector & 1 == 0 {
        browser_side(stream, *pattern);
    } else {
        server_side(stream, *pattern, selector & 2 != 0);
    }
});
