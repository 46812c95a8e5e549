//! The parts of RFB (RFC 6143) the proxy speaks itself.
//!
//! Everything here is sans-I/O: state machines fed with bytes that say what to
//! send next, so they are tested with byte fixtures and driven by whichever
//! transport (TCP upstream, WebSocket browser) carries them.
//!
//! * [`upstream`]: the client side of the security handshake towards the VNC
//!   server, including VNC Authentication ([`vnc_auth`]).
//! * [`browser`]: the server side towards the browser, offering only None: the
//!   browser has already proved itself with its token.
//! * [`client_messages`]: frames the browser's messages after the handshake, to
//!   count user input and drop it for view-only viewers.

pub mod browser;
pub mod client_messages;
pub mod upstream;
pub mod vnc_auth;

use std::fmt;

/// The length of a ProtocolVersion message, `RFB xxx.yyy\n`.
pub const VERSION_LEN: usize = 12;

/// Security type 1: no authentication.
pub const SECURITY_NONE: u8 = 1;
/// Security type 2: VNC Authentication (DES challenge and response).
pub const SECURITY_VNC_AUTH: u8 = 2;

/// The protocol versions that differ on the wire. Servers and clients that
/// announce anything else are treated as the nearest of these (RFC 6143 §7.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V3_3,
    V3_7,
    V3_8,
}

/// A ProtocolVersion message that is not `RFB 00M.00m\n`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an RFB protocol version: {0:?}")]
pub struct BadVersion(pub String);

impl Version {
    /// Parses a ProtocolVersion message. Unknown 3.x minors (Apple's 3.889, the
    /// odd 3.4 and 3.6) map as the RFC says: below 3.7 is 3.3, above 3.8 is 3.8.
    pub fn parse(message: &[u8; VERSION_LEN]) -> Result<Self, BadVersion> {
        let bad = || BadVersion(message.escape_ascii().to_string());
        let text = std::str::from_utf8(message).map_err(|_| bad())?;
        let numbers = text
            .strip_prefix("RFB ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .ok_or_else(bad)?;
        let (major, minor) = numbers.split_once('.').ok_or_else(bad)?;
        if major.len() != 3 || minor.len() != 3 {
            return Err(bad());
        }
        let major: u16 = major.parse().map_err(|_| bad())?;
        let minor: u16 = minor.parse().map_err(|_| bad())?;
        Ok(match (major, minor) {
            (0..=2, _) => return Err(bad()),
            (3, 0..=6) => Version::V3_3,
            (3, 7) => Version::V3_7,
            _ => Version::V3_8,
        })
    }

    /// The ProtocolVersion message announcing this version.
    pub const fn message(self) -> &'static [u8; VERSION_LEN] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        })
    }
}

/// What a handshake state machine wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed more bytes from the peer.
    NeedMore,
    /// Send these bytes to the peer, then step again.
    Send(Vec<u8>),
    /// The handshake is over; what is left in the buffer belongs to the relay.
    Done,
}

/// Splits the first `n` bytes off `buf` once that many have arrived.
fn take<const N: usize>(buf: &mut bytes::BytesMut) -> Option<[u8; N]> {
    if buf.len() < N {
        return None;
    }
    let head = buf.split_to(N);
    let mut out = [0; N];
    out.copy_from_slice(&head);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_versions_that_matter() {
        assert_eq!(Version::parse(b"RFB 003.003\n"), Ok(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(Version::parse(b"RFB 003.008\n"), Ok(Version::V3_8));
    }

    #[test]
    fn maps_odd_versions_as_the_rfc_says() {
        assert_eq!(Version::parse(b"RFB 003.006\n"), Ok(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 004.001\n"), Ok(Version::V3_8));
    }

    #[test]
    fn rejects_what_is_not_rfb() {
        assert!(Version::parse(b"HTTP/1.1 200").is_err());
        assert!(Version::parse(b"RFB 002.000\n").is_err());
        assert!(Version::parse(b"RFB 003.008 ").is_err());
        assert!(Version::parse(b"RFB 03.0008\n").is_err());
    }

    #[test]
    fn messages_round_trip() {
        for v in [Version::V3_3, Version::V3_7, Version::V3_8] {
            assert_eq!(Version::parse(v.message()), Ok(v));
        }
    }
}
