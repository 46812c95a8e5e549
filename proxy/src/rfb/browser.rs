//! The server side of the RFB handshake, towards the browser. The browser proved
//! itself with its token before the WebSocket opened, so the only security type
//! offered is None; the VNC password never reaches it.

use bytes::BytesMut;

use super::{BadVersion, SECURITY_NONE, Step, VERSION_LEN, Version, take};

/// Why the browser's side of the handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the browser is not an RFB client: {0}")]
    BadVersion(#[from] BadVersion),
    #[error("the browser chose security type {0}, which was not offered")]
    UnofferedSecurityType(u8),
}

#[derive(Debug, Clone, Copy)]
enum State {
    AwaitVersion,
    AwaitSecurityChoice(Version),
    Done,
}

/// The handshake towards the browser: send [`Handshake::GREETING`] first, then
/// feed it what the browser sends.
#[derive(Debug)]
pub struct Handshake {
    state: State,
}

impl Default for Handshake {
    fn default() -> Self {
        Self {
            state: State::AwaitVersion,
        }
    }
}

impl Handshake {
    /// The proxy's ProtocolVersion, sent as soon as the WebSocket is open.
    pub const GREETING: &'static [u8; VERSION_LEN] = Version::V3_8.message();

    /// Consumes what it can from `buf` and says what to do next.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        match self.state {
            State::Done => Ok(Step::Done),
            State::AwaitVersion => {
                let Some(message) = take::<VERSION_LEN>(buf) else {
                    return Ok(Step::NeedMore);
                };
                // A client may not ask for more than the server offered.
                let version = Version::parse(&message)?.min(Version::V3_8);
                Ok(Step::Send(match version {
                    // 3.3: the server decides, as a 32-bit type.
                    Version::V3_3 => {
                        self.state = State::Done;
                        u32::from(SECURITY_NONE).to_be_bytes().to_vec()
                    }
                    v => {
                        self.state = State::AwaitSecurityChoice(v);
                        vec![1, SECURITY_NONE]
                    }
                }))
            }
            State::AwaitSecurityChoice(version) => {
                let Some([choice]) = take::<1>(buf) else {
                    return Ok(Step::NeedMore);
                };
                if choice != SECURITY_NONE {
                    return Err(Error::UnofferedSecurityType(choice));
                }
                self.state = State::Done;
                Ok(match version {
                    // Only 3.8 confirms None with a SecurityResult.
                    Version::V3_8 => Step::Send(vec![0, 0, 0, 0]),
                    _ => Step::Done,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(input: &[u8]) -> (Result<Vec<u8>, Error>, BytesMut) {
        let mut hs = Handshake::default();
        let mut buf = BytesMut::from(input);
        let mut sent = Vec::new();
        loop {
            match hs.step(&mut buf) {
                Ok(Step::Send(bytes)) => sent.extend(bytes),
                Ok(Step::NeedMore) => return (Ok(sent), buf),
                Ok(Step::Done) => return (Ok(sent), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    #[test]
    fn v3_8_offers_only_none_and_confirms_it() {
        let (sent, rest) = answers(b"RFB 003.008\n\x01\x01");
        assert_eq!(sent.unwrap(), [1, 1, 0, 0, 0, 0]);
        // ClientInit (shared) stays in the buffer for the relay.
        assert_eq!(&rest[..], [1]);
    }

    #[test]
    fn v3_7_gets_no_security_result() {
        let (sent, _) = answers(b"RFB 003.007\n\x01");
        assert_eq!(sent.unwrap(), [1, 1]);
    }

    #[test]
    fn v3_3_is_told_none() {
        let (sent, _) = answers(b"RFB 003.003\n");
        assert_eq!(sent.unwrap(), [0, 0, 0, 1]);
    }

    #[test]
    fn waits_for_a_whole_version() {
        let (sent, rest) = answers(b"RFB 003");
        assert_eq!(sent.unwrap(), b"");
        assert_eq!(&rest[..], b"RFB 003");
    }

    #[test]
    fn refuses_vnc_auth() {
        let (sent, _) = answers(b"RFB 003.008\n\x02");
        assert_eq!(sent, Err(Error::UnofferedSecurityType(2)));
    }

    #[test]
    fn refuses_garbage() {
        let (sent, _) = answers(b"GET / HTTP/1.1\r\n");
        assert!(matches!(sent, Err(Error::BadVersion(_))));
    }
}
