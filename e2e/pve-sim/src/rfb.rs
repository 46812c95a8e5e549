//! Watches the client-to-server half of an RFB (VNC) stream as it passes through
//! vncwebsocket and records what the viewer sent: key events (including QEMU's
//! extended key event, which noVNC uses against QEMU) and pointer events.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One input event, as the control API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InputEvent {
    Key { down: bool, keysym: u32 },
    Pointer { buttons: u8, x: u16, y: u16 },
}

/// Errors in the client's stream: recording stops, relaying goes on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RfbError {
    #[error("unknown client message type {0}")]
    UnknownMessage(u8),
    #[error("unsupported security type {0}")]
    UnsupportedSecurity(u8),
}

/// A VM's recorded input, shared between relays and the control API.
#[derive(Clone, Debug, Default)]
pub struct InputLog(Arc<Mutex<Vec<InputEvent>>>);

impl InputLog {
    pub fn push(&self, event: InputEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    pub fn snapshot(&self) -> Vec<InputEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `RFB 003.008\n`
    Version,
    /// One byte: the chosen security type (3.7/3.8).
    SecurityChoice,
    /// 16 bytes of DES response (VNC authentication).
    VncAuthResponse,
    /// One byte: shared flag.
    ClientInit,
    Messages,
    Stopped,
}

/// Incremental parser of the client's byte stream.
pub struct ClientStream {
    phase: Phase,
    buffer: Vec<u8>,
    log: InputLog,
}

/// Bounded so a hostile client cannot make the recorder buffer without limit.
const MAX_BUFFER: usize = 1 << 20;

impl ClientStream {
    pub fn new(log: InputLog) -> Self {
        ClientStream {
            phase: Phase::Version,
            buffer: Vec::new(),
            log,
        }
    }

    /// Feeds bytes the client sent; returns an error once the stream stops making
    /// sense (the recorder then ignores the rest).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), RfbError> {
        if self.phase == Phase::Stopped {
            return Ok(());
        }
        self.buffer.extend_from_slice(bytes);
        let result = self.drain();
        if result.is_err() || self.buffer.len() > MAX_BUFFER {
            self.phase = Phase::Stopped;
            self.buffer = Vec::new();
        }
        result
    }

    fn drain(&mut self) -> Result<(), RfbError> {
        loop {
            let needed = match self.phase {
                Phase::Version => Some(12),
                Phase::SecurityChoice | Phase::ClientInit => Some(1),
                Phase::VncAuthResponse => Some(16),
                Phase::Messages => message_len(&self.buffer)?,
                Phase::Stopped => return Ok(()),
            };
            let Some(needed) = needed else { return Ok(()) };
            if self.buffer.len() < needed {
                return Ok(());
            }
            let message: Vec<u8> = self.buffer.drain(..needed).collect();
            self.phase = match self.phase {
                Phase::Version => Phase::SecurityChoice,
                Phase::SecurityChoice => match message[0] {
                    1 => Phase::ClientInit,
                    2 => Phase::VncAuthResponse,
                    other => return Err(RfbError::UnsupportedSecurity(other)),
                },
                Phase::VncAuthResponse => Phase::ClientInit,
                Phase::ClientInit => Phase::Messages,
                Phase::Messages => {
                    self.record(&message);
                    Phase::Messages
                }
                Phase::Stopped => Phase::Stopped,
            };
        }
    }

    fn record(&self, message: &[u8]) {
        match message[0] {
            4 => self.log.push(InputEvent::Key {
                down: message[1] != 0,
                keysym: u32::from_be_bytes([message[4], message[5], message[6], message[7]]),
            }),
            5 => self.log.push(InputEvent::Pointer {
                buttons: message[1],
                x: u16::from_be_bytes([message[2], message[3]]),
                y: u16::from_be_bytes([message[4], message[5]]),
            }),
            // QEMU extended key event: 255, 0, down-flag u16, keysym u32, keycode u32.
            255 if message[1] == 0 => self.log.push(InputEvent::Key {
                down: u16::from_be_bytes([message[2], message[3]]) != 0,
                keysym: u32::from_be_bytes([message[4], message[5], message[6], message[7]]),
            }),
            _ => {}
        }
    }
}

/// The length of the client message at the start of `buffer`, `None` while more
/// bytes are needed to tell.
fn message_len(buffer: &[u8]) -> Result<Option<usize>, RfbError> {
    let Some(&kind) = buffer.first() else {
        return Ok(None);
    };
    let be16 = |at: usize| {
        buffer
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let be32 = |at: usize| {
        buffer
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    Ok(match kind {
        0 => Some(20),                   // SetPixelFormat
        2 => be16(2).map(|n| 4 + 4 * n), // SetEncodings
        3 => Some(10),                   // FramebufferUpdateRequest
        4 => Some(8),                    // KeyEvent
        5 => Some(6),                    // PointerEvent
        // ClientCutText; a negative length is the Extended Clipboard form,
        // whose |length| bytes follow (noVNC sends one as soon as QEMU offers it).
        6 => be32(4).map(|n| 8 + (n as u32 as i32).unsigned_abs() as usize),
        150 => Some(10),                                   // EnableContinuousUpdates
        248 => buffer.get(8).map(|&n| 9 + usize::from(n)), // ClientFence
        250 => Some(4),                                    // xvp
        251 => buffer.get(6).map(|&n| 8 + 16 * usize::from(n)), // SetDesktopSize
        255 => match buffer.get(1) {
            None => None,
            Some(0) => Some(12), // extended key event
            Some(1) => match be16(2) {
                None => None,
                Some(0) | Some(1) => Some(4), // audio enable / disable
                Some(2) => Some(10),          // audio set format
                Some(_) => return Err(RfbError::UnknownMessage(255)),
            },
            Some(_) => return Err(RfbError::UnknownMessage(255)),
        },
        other => return Err(RfbError::UnknownMessage(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(security: u8) -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.push(security);
        if security == 2 {
            bytes.extend_from_slice(&[0xAA; 16]);
        }
        bytes.push(1); // shared
        bytes
    }

    #[test]
    fn records_keys_and_pointer_after_vnc_auth_even_split_byte_by_byte() {
        let log = InputLog::default();
        let mut stream = ClientStream::new(log.clone());
        let mut bytes = handshake(2);
        bytes.extend_from_slice(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]); // SetEncodings
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 100, 0, 100]); // FBUR
        bytes.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0x61]); // key 'a' down
        bytes.extend_from_slice(&[5, 1, 0, 10, 0, 20]); // pointer
        bytes.extend_from_slice(&[255, 0, 0, 0, 0, 0, 0xff, 0x0d, 0, 0, 0, 0x1c]); // ext key up Return
        for byte in bytes {
            stream.feed(&[byte]).unwrap();
        }
        assert_eq!(
            log.snapshot(),
            vec![
                InputEvent::Key {
                    down: true,
                    keysym: 0x61
                },
                InputEvent::Pointer {
                    buttons: 1,
                    x: 10,
                    y: 20
                },
                InputEvent::Key {
                    down: false,
                    keysym: 0xff0d
                },
            ]
        );
    }

    #[test]
    fn skips_extended_clipboard_cut_text_with_its_negative_length() {
        let log = InputLog::default();
        let mut stream = ClientStream::new(log.clone());
        let mut bytes = handshake(1);
        // noVNC's Extended Clipboard caps: length -8, then 8 bytes.
        bytes.extend_from_slice(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xf8]);
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0x70]);
        stream.feed(&bytes).unwrap();
        assert_eq!(
            log.snapshot(),
            vec![InputEvent::Key {
                down: true,
                keysym: 0x70
            }]
        );
    }

    #[test]
    fn skips_cut_text_and_stops_on_garbage() {
        let log = InputLog::default();
        let mut stream = ClientStream::new(log.clone());
        let mut bytes = handshake(1);
        bytes.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
        bytes.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0x62]);
        stream.feed(&bytes).unwrap();
        assert_eq!(
            log.snapshot(),
            vec![InputEvent::Key {
                down: false,
                keysym: 0x62
            }]
        );
        assert_eq!(stream.feed(&[77]), Err(RfbError::UnknownMessage(77)));
        stream.feed(&[4, 1, 0, 0, 0, 0, 0, 0x63]).unwrap();
        assert_eq!(log.snapshot().len(), 1);
    }
}
