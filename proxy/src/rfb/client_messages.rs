//! Frames the browser's RFB messages after the handshake (ClientInit onwards).
//!
//! Framing every message is what lets the proxy tell user input (keys, pointer)
//! from background traffic (update requests), and drop input for view-only
//! viewers without desynchronising the stream. A message type it cannot frame
//! ends the connection: guessing would let input slip through.

use bytes::{Buf, BytesMut};

/// The default bound on ClientCutText: enough for any sane paste.
pub const DEFAULT_MAX_CUT_TEXT: usize = 1 << 20;

/// ClientInit's shared-flag: keep other clients connected.
const SHARED: u8 = 1;

/// A message the browser sent that the proxy cannot or will not relay.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unsupported client message type {0}")]
    UnknownType(u8),
    #[error("unsupported QEMU client message subtype {0}")]
    UnknownQemuSubtype(u8),
    #[error("clipboard text of {len} bytes exceeds the limit of {max}")]
    CutTextTooLong { len: usize, max: usize },
}

/// The kinds of client messages the proxy frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ClientInit,
    SetPixelFormat,
    SetEncodings,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    ClientCutText,
    EnableContinuousUpdates,
    ClientFence,
    Xvp,
    SetDesktopSize,
    QemuKeyEvent,
    QemuAudio,
}

impl Kind {
    /// Input a person made, as opposed to what the viewer sends on its own.
    pub fn is_user_input(self) -> bool {
        matches!(
            self,
            Kind::KeyEvent | Kind::QemuKeyEvent | Kind::PointerEvent
        )
    }

    /// Messages that change the VM: never relayed for a view-only viewer.
    pub fn changes_the_vm(self) -> bool {
        matches!(
            self,
            Kind::KeyEvent
                | Kind::QemuKeyEvent
                | Kind::PointerEvent
                | Kind::ClientCutText
                | Kind::Xvp
                | Kind::SetDesktopSize
        )
    }
}

/// How many input events one [`Parser::feed`] relayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Input {
    pub keys: u64,
    pub pointer: u64,
}

impl Input {
    pub fn any(&self) -> bool {
        self.keys + self.pointer > 0
    }
}

/// The length and kind of the first message in `buf`, or `None` while it is
/// incomplete. Never consumes anything.
pub fn frame(buf: &[u8], max_cut_text: usize) -> Result<Option<(Kind, usize)>, Error> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let u16_at = |at: usize| {
        buf.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let fixed = |kind, len| Ok(Some((kind, len)));
    match kind {
        0 => fixed(Kind::SetPixelFormat, 20),
        2 => Ok(u16_at(2).map(|n| (Kind::SetEncodings, 4 + 4 * usize::from(n)))),
        3 => fixed(Kind::FramebufferUpdateRequest, 10),
        4 => fixed(Kind::KeyEvent, 8),
        5 => fixed(Kind::PointerEvent, 6),
        6 => {
            let Some(len) = buf.get(4..8) else {
                return Ok(None);
            };
            // Extended Clipboard sends a negative length: its magnitude counts.
            let len = i32::from_be_bytes(len.try_into().expect("4 bytes")).unsigned_abs() as usize;
            if len > max_cut_text {
                return Err(Error::CutTextTooLong {
                    len,
                    max: max_cut_text,
                });
            }
            Ok(Some((Kind::ClientCutText, 8 + len)))
        }
        150 => fixed(Kind::EnableContinuousUpdates, 10),
        248 => Ok(buf.get(8).map(|&n| (Kind::ClientFence, 9 + usize::from(n)))),
        250 => fixed(Kind::Xvp, 4),
        251 => Ok(buf
            .get(6)
            .map(|&n| (Kind::SetDesktopSize, 8 + 16 * usize::from(n)))),
        255 => match buf.get(1) {
            None => Ok(None),
            Some(0) => fixed(Kind::QemuKeyEvent, 12),
            // Audio: enable and disable are 4 bytes, set-format (2) is 10.
            Some(1) => Ok(u16_at(2).map(|op| (Kind::QemuAudio, if op == 2 { 10 } else { 4 }))),
            Some(&sub) => Err(Error::UnknownQemuSubtype(sub)),
        },
        other => Err(Error::UnknownType(other)),
    }
}

/// Frames the browser's byte stream and decides what goes upstream.
#[derive(Debug)]
pub struct Parser {
    view_only: bool,
    max_cut_text: usize,
    seen_init: bool,
}

impl Parser {
    pub fn new(view_only: bool, max_cut_text: usize) -> Self {
        Self {
            view_only,
            max_cut_text,
            seen_init: false,
        }
    }

    /// Moves every complete message from `input` to `output`, leaving a partial
    /// one in `input`, and drops input messages when view-only.
    pub fn feed(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> Result<Input, Error> {
        let mut counted = Input::default();
        loop {
            let framed = if self.seen_init {
                frame(input, self.max_cut_text)?
            } else {
                (!input.is_empty()).then_some((Kind::ClientInit, 1))
            };
            let Some((kind, len)) = framed else {
                return Ok(counted);
            };
            if input.len() < len {
                return Ok(counted);
            }
            self.seen_init = true;
            if self.view_only && kind.changes_the_vm() {
                input.advance(len);
                continue;
            }
            match kind {
                Kind::KeyEvent | Kind::QemuKeyEvent => counted.keys += 1,
                Kind::PointerEvent => counted.pointer += 1,
                // Always ask to share the VNC server: a viewer asking for it
                // alone would disconnect every other client (other viewers in
                // a shared session, an administrator's own client). Who may
                // watch is the proxy's decision, not the viewer's.
                Kind::ClientInit => {
                    input.advance(len);
                    output.extend_from_slice(&[SHARED]);
                    continue;
                }
                _ => {}
            }
            output.extend_from_slice(&input.split_to(len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_INIT: &[u8] = &[1];
    const SET_PIXEL_FORMAT: &[u8] = &[
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ];
    const SET_ENCODINGS: &[u8] = &[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21];
    const UPDATE_REQUEST: &[u8] = &[3, 0, 0, 0, 0, 0, 4, 0, 3, 0];
    const KEY_DOWN_A: &[u8] = &[4, 1, 0, 0, 0, 0, 0, 0x61];
    const POINTER: &[u8] = &[5, 1, 0, 10, 0, 20];
    const CUT_TEXT: &[u8] = &[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'];
    const QEMU_KEY: &[u8] = &[255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e];
    const FENCE: &[u8] = &[248, 0, 0, 0, 0, 0, 0, 0, 2, 0xaa, 0xbb];
    const DESKTOP_SIZE: &[u8] = &[
        251, 0, 4, 0, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 3, 0, 0, 0, 0, 0,
    ];

    fn session() -> Vec<u8> {
        [
            CLIENT_INIT,
            SET_PIXEL_FORMAT,
            SET_ENCODINGS,
            UPDATE_REQUEST,
            KEY_DOWN_A,
            POINTER,
            CUT_TEXT,
            QEMU_KEY,
            FENCE,
            DESKTOP_SIZE,
            UPDATE_REQUEST,
        ]
        .concat()
    }

    #[test]
    fn relays_a_whole_session_and_counts_input() {
        let mut parser = Parser::new(false, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::from(&session()[..]);
        let mut output = BytesMut::new();
        let counted = parser.feed(&mut input, &mut output).unwrap();
        assert_eq!(
            counted,
            Input {
                keys: 2,
                pointer: 1
            }
        );
        assert!(input.is_empty());
        assert_eq!(&output[..], &session()[..]);
    }

    #[test]
    fn byte_by_byte_gives_the_same_result() {
        let mut parser = Parser::new(false, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::new();
        let mut output = BytesMut::new();
        let mut total = Input::default();
        for b in session() {
            input.extend_from_slice(&[b]);
            let counted = parser.feed(&mut input, &mut output).unwrap();
            total.keys += counted.keys;
            total.pointer += counted.pointer;
        }
        assert_eq!(
            total,
            Input {
                keys: 2,
                pointer: 1
            }
        );
        assert_eq!(&output[..], &session()[..]);
    }

    #[test]
    fn partial_messages_wait() {
        let mut parser = Parser::new(false, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::from(&[CLIENT_INIT, &KEY_DOWN_A[..5]].concat()[..]);
        let mut output = BytesMut::new();
        assert_eq!(
            parser.feed(&mut input, &mut output).unwrap(),
            Input::default()
        );
        assert_eq!(&output[..], CLIENT_INIT);
        assert_eq!(&input[..], &KEY_DOWN_A[..5]);
    }

    #[test]
    fn view_only_drops_input_but_keeps_the_rest() {
        let mut parser = Parser::new(true, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::from(&session()[..]);
        let mut output = BytesMut::new();
        let counted = parser.feed(&mut input, &mut output).unwrap();
        assert_eq!(counted, Input::default());
        let expected = [
            CLIENT_INIT,
            SET_PIXEL_FORMAT,
            SET_ENCODINGS,
            UPDATE_REQUEST,
            FENCE,
            UPDATE_REQUEST,
        ]
        .concat();
        assert_eq!(&output[..], &expected[..]);
    }

    #[test]
    fn client_init_always_asks_to_share() {
        let mut parser = Parser::new(false, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::from(&[&[0], UPDATE_REQUEST].concat()[..]);
        let mut output = BytesMut::new();
        parser.feed(&mut input, &mut output).unwrap();
        assert_eq!(&output[..], [&[SHARED][..], UPDATE_REQUEST].concat());
    }

    #[test]
    fn cut_text_is_bounded() {
        let mut parser = Parser::new(false, 4);
        let mut input = BytesMut::from(&[CLIENT_INIT, &[6, 0, 0, 0, 0, 0, 0, 5]].concat()[..]);
        let err = parser.feed(&mut input, &mut BytesMut::new()).unwrap_err();
        assert_eq!(err, Error::CutTextTooLong { len: 5, max: 4 });
    }

    #[test]
    fn extended_clipboard_length_is_its_magnitude() {
        let msg = [6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 1];
        assert_eq!(frame(&msg, 16), Ok(Some((Kind::ClientCutText, 12))));
    }

    #[test]
    fn unknown_types_end_the_stream() {
        let mut parser = Parser::new(false, DEFAULT_MAX_CUT_TEXT);
        let mut input = BytesMut::from(&[1, 77, 0, 0][..]);
        let mut output = BytesMut::new();
        assert_eq!(
            parser.feed(&mut input, &mut output),
            Err(Error::UnknownType(77))
        );
        assert_eq!(frame(&[255, 9], 16), Err(Error::UnknownQemuSubtype(9)));
    }
}
