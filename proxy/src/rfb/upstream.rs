//! The client side of the RFB handshake, towards the VNC server: agree on a
//! version, pick a security type, answer VNC Authentication and read the
//! SecurityResult. Ends before ClientInit, which the browser sends itself.

use bytes::{Buf, BytesMut};

use super::vnc_auth::{self, CHALLENGE_LEN, VncPassword};
use super::{BadVersion, SECURITY_NONE, SECURITY_VNC_AUTH, Step, VERSION_LEN, Version, take};

/// Reason strings longer than this are cut: they end up in a termination
/// message, which Kubernetes caps at 4 KiB.
const MAX_REASON_LEN: usize = 1024;

/// Why the VNC server would not let the proxy in. Displayed in end reasons, so
/// every message is readable and none contains the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the upstream is not a VNC server: {0}")]
    BadVersion(#[from] BadVersion),
    #[error("the VNC server refused the connection: {0}")]
    Refused(String),
    #[error("the VNC server offers no supported security type (offered {0:?})")]
    NoCommonSecurityType(Vec<u32>),
    #[error("the VNC server requires a password, but the session has none")]
    PasswordRequired,
    #[error("VNC authentication failed: {0}")]
    AuthFailed(String),
}

#[derive(Debug, Clone, Copy)]
enum State {
    AwaitVersion,
    /// 3.3: the server decides the security type alone.
    AwaitSecurityType,
    /// 3.7 and later: the server lists types and the client picks one.
    AwaitSecurityTypes(Version),
    AwaitChallenge(Version),
    AwaitResult(Version, u8),
    AwaitReason(Failure),
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Refused,
    AuthFailed,
}

/// The handshake towards the VNC server. Feed it what the server sends.
#[derive(Debug)]
pub struct Handshake {
    password: Option<VncPassword>,
    state: State,
    version: Option<Version>,
    security: Option<u8>,
}

impl Handshake {
    /// With a password, VNC Authentication is preferred when offered; without
    /// one, only None can work.
    pub fn new(password: Option<VncPassword>) -> Self {
        Self {
            password,
            state: State::AwaitVersion,
            version: None,
            security: None,
        }
    }

    /// The version agreed with the server, once known.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The security type in use, once chosen.
    pub fn security(&self) -> Option<u8> {
        self.security
    }

    /// Consumes what it can from `buf` and says what to do next.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        match self.state {
            State::Done => Ok(Step::Done),
            State::AwaitVersion => {
                let Some(message) = take::<VERSION_LEN>(buf) else {
                    return Ok(Step::NeedMore);
                };
                let version = Version::parse(&message)?;
                self.version = Some(version);
                self.state = match version {
                    Version::V3_3 => State::AwaitSecurityType,
                    v => State::AwaitSecurityTypes(v),
                };
                Ok(Step::Send(version.message().to_vec()))
            }
            State::AwaitSecurityType => {
                let Some(kind) = take::<4>(buf).map(u32::from_be_bytes) else {
                    return Ok(Step::NeedMore);
                };
                match kind {
                    0 => self.state = State::AwaitReason(Failure::Refused),
                    1 => {
                        self.security = Some(SECURITY_NONE);
                        self.state = State::Done;
                    }
                    2 if self.password.is_some() => {
                        self.security = Some(SECURITY_VNC_AUTH);
                        self.state = State::AwaitChallenge(Version::V3_3);
                    }
                    2 => return Err(Error::PasswordRequired),
                    other => return Err(Error::NoCommonSecurityType(vec![other])),
                }
                self.step(buf)
            }
            State::AwaitSecurityTypes(version) => {
                let Some(&count) = buf.first() else {
                    return Ok(Step::NeedMore);
                };
                if count == 0 {
                    buf.advance(1);
                    self.state = State::AwaitReason(Failure::Refused);
                    return self.step(buf);
                }
                if buf.len() < 1 + usize::from(count) {
                    return Ok(Step::NeedMore);
                }
                let offered = buf.split_to(1 + usize::from(count)).split_off(1);
                let chosen = self.choose(&offered)?;
                self.security = Some(chosen);
                self.state = match (chosen, version) {
                    (SECURITY_VNC_AUTH, v) => State::AwaitChallenge(v),
                    (_, Version::V3_8) => State::AwaitResult(version, chosen),
                    // 3.7 sends no SecurityResult after None.
                    _ => State::Done,
                };
                Ok(Step::Send(vec![chosen]))
            }
            State::AwaitChallenge(version) => {
                let Some(challenge) = take::<CHALLENGE_LEN>(buf) else {
                    return Ok(Step::NeedMore);
                };
                let password = self.password.as_ref().ok_or(Error::PasswordRequired)?;
                self.state = State::AwaitResult(version, SECURITY_VNC_AUTH);
                Ok(Step::Send(
                    vnc_auth::response(password, &challenge).to_vec(),
                ))
            }
            State::AwaitResult(version, security) => {
                let Some(result) = take::<4>(buf).map(u32::from_be_bytes) else {
                    return Ok(Step::NeedMore);
                };
                match (result, version) {
                    (0, _) => {
                        self.state = State::Done;
                        Ok(Step::Done)
                    }
                    // Only 3.8 explains a failure.
                    (_, Version::V3_8) => {
                        self.state = State::AwaitReason(Failure::AuthFailed);
                        self.step(buf)
                    }
                    _ if security == SECURITY_VNC_AUTH => {
                        Err(Error::AuthFailed("wrong password".into()))
                    }
                    _ => Err(Error::AuthFailed(
                        "the server rejected the connection".into(),
                    )),
                }
            }
            State::AwaitReason(failure) => {
                let Some(len) = buf.get(..4) else {
                    return Ok(Step::NeedMore);
                };
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                let reason = if len > MAX_REASON_LEN {
                    "(reason too long to show)".to_string()
                } else if buf.len() < 4 + len {
                    return Ok(Step::NeedMore);
                } else {
                    readable(&buf[4..4 + len])
                };
                Err(match failure {
                    Failure::Refused => Error::Refused(reason),
                    Failure::AuthFailed => Error::AuthFailed(reason),
                })
            }
        }
    }

    fn choose(&self, offered: &[u8]) -> Result<u8, Error> {
        let offers = |kind| offered.contains(&kind);
        if self.password.is_some() && offers(SECURITY_VNC_AUTH) {
            Ok(SECURITY_VNC_AUTH)
        } else if offers(SECURITY_NONE) {
            Ok(SECURITY_NONE)
        } else if offers(SECURITY_VNC_AUTH) {
            Err(Error::PasswordRequired)
        } else {
            Err(Error::NoCommonSecurityType(
                offered.iter().map(|&t| u32::from(t)).collect(),
            ))
        }
    }
}

/// A server's reason string made safe for one log line or termination message.
fn readable(raw: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match text.trim() {
        "" => "(no reason given)".to_string(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the handshake over a scripted server: each entry is what the server
    /// sends, followed by what the client must answer (empty: nothing).
    fn run(password: Option<&str>, script: &[(&[u8], &[u8])]) -> Result<Handshake, Error> {
        let mut hs = Handshake::new(password.map(VncPassword::new));
        let mut buf = BytesMut::new();
        for (from_server, expected) in script {
            buf.extend_from_slice(from_server);
            let mut sent = Vec::new();
            while let Step::Send(bytes) = hs.step(&mut buf)? {
                sent.extend(bytes);
            }
            assert_eq!(&sent, expected, "answer to {from_server:?}");
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(hs)
    }

    #[test]
    fn v3_8_with_none() {
        let mut hs = run(
            None,
            &[
                (b"RFB 003.008\n", b"RFB 003.008\n"),
                (&[2, 2, 1], &[1]),
                (&[0, 0, 0, 0], b""),
            ],
        )
        .unwrap();
        assert_eq!(hs.security(), Some(SECURITY_NONE));
        assert_eq!(hs.step(&mut BytesMut::new()), Ok(Step::Done));
    }

    #[test]
    fn v3_8_with_vnc_auth() {
        let challenge = [7u8; 16];
        let answer = vnc_auth::response(&VncPassword::new("secret"), &challenge);
        let hs = run(
            Some("secret"),
            &[
                (b"RFB 003.008\n", b"RFB 003.008\n"),
                (&[2, 1, 2], &[2]),
                (&challenge, &answer),
                (&[0, 0, 0, 0], b""),
            ],
        )
        .unwrap();
        assert_eq!(hs.security(), Some(SECURITY_VNC_AUTH));
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_answers() {
        let mut hs = Handshake::new(None);
        let mut buf = BytesMut::new();
        let mut sent = Vec::new();
        for &b in b"RFB 003.008\n\x01\x01\0\0\0\0" {
            buf.extend_from_slice(&[b]);
            while let Step::Send(bytes) = hs.step(&mut buf).unwrap() {
                sent.extend(bytes);
            }
        }
        assert_eq!(sent, b"RFB 003.008\n\x01");
        assert_eq!(hs.step(&mut buf), Ok(Step::Done));
    }

    #[test]
    fn v3_3_server_decides() {
        let hs = run(
            None,
            &[(b"RFB 003.003\n", b"RFB 003.003\n"), (&[0, 0, 0, 1], b"")],
        )
        .unwrap();
        assert_eq!(hs.version(), Some(Version::V3_3));
        assert_eq!(hs.security(), Some(SECURITY_NONE));
    }

    #[test]
    fn v3_3_vnc_auth_failure_has_no_reason() {
        let challenge = [1u8; 16];
        let answer = vnc_auth::response(&VncPassword::new("pw"), &challenge);
        let err = run(
            Some("pw"),
            &[
                (b"RFB 003.003\n", b"RFB 003.003\n"),
                (&[0, 0, 0, 2], b""),
                (&challenge, &answer),
                (&[0, 0, 0, 1], b""),
            ],
        )
        .unwrap_err();
        assert_eq!(err, Error::AuthFailed("wrong password".into()));
    }

    #[test]
    fn v3_7_none_has_no_security_result() {
        let hs = run(
            None,
            &[(b"RFB 003.007\n", b"RFB 003.007\n"), (&[1, 1], &[1])],
        )
        .unwrap();
        assert_eq!(hs.version(), Some(Version::V3_7));
    }

    #[test]
    fn newer_servers_are_answered_with_3_8() {
        run(None, &[(b"RFB 003.889\n", b"RFB 003.008\n")]).unwrap();
    }

    #[test]
    fn v3_8_auth_failure_carries_the_servers_reason() {
        let mut hs = Handshake::new(Some(VncPassword::new("pw")));
        let mut buf = BytesMut::from(&b"RFB 003.008\n\x01\x02"[..]);
        assert!(matches!(hs.step(&mut buf), Ok(Step::Send(_))));
        assert_eq!(hs.step(&mut buf), Ok(Step::Send(vec![SECURITY_VNC_AUTH])));
        buf.extend_from_slice(&[0; 16]);
        assert!(matches!(hs.step(&mut buf), Ok(Step::Send(_))));
        // The reason arrives in two parts: the error comes with the second.
        buf.extend_from_slice(b"\0\0\0\x01\0\0\0\x15Authentication");
        assert_eq!(hs.step(&mut buf), Ok(Step::NeedMore));
        buf.extend_from_slice(b" failed");
        assert_eq!(
            hs.step(&mut buf),
            Err(Error::AuthFailed("Authentication failed".into()))
        );
    }

    #[test]
    fn refusal_carries_the_servers_reason() {
        let err = run(
            None,
            &[
                (b"RFB 003.008\n", b"RFB 003.008\n"),
                (b"\0\0\0\0\x10too many\nclients", b""),
            ],
        )
        .unwrap_err();
        assert_eq!(err, Error::Refused("too many clients".into()));
    }

    #[test]
    fn password_required_but_missing() {
        let err = run(
            None,
            &[(b"RFB 003.008\n", b"RFB 003.008\n"), (&[1, 2], b"")],
        )
        .unwrap_err();
        assert_eq!(err, Error::PasswordRequired);
    }

    #[test]
    fn no_common_security_type() {
        let err = run(
            Some("pw"),
            &[(b"RFB 003.008\n", b"RFB 003.008\n"), (&[2, 18, 19], b"")],
        )
        .unwrap_err();
        assert_eq!(err, Error::NoCommonSecurityType(vec![18, 19]));
    }

    #[test]
    fn password_with_a_server_that_wants_none_still_works() {
        run(
            Some("pw"),
            &[
                (b"RFB 003.008\n", b"RFB 003.008\n"),
                (&[1, 1], &[1]),
                (&[0, 0, 0, 0], b""),
            ],
        )
        .unwrap();
    }

    #[test]
    fn not_a_vnc_server() {
        let err = run(None, &[(b"SSH-2.0-Open", b"")]).unwrap_err();
        assert!(matches!(err, Error::BadVersion(_)));
    }
}
