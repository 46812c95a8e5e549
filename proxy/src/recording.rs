//! Session recordings (`--record FILE`), and reading them back for `replay`.
//!
//! # Format
//!
//! websockify's, so noVNC's playback tools read them too: a JavaScript file
//! holding one array, a string per relayed chunk, in order.
//!
//! ```text
//! var VNC_frame_data = [
//! '{0{RFB 003.008\x0a',
//! '}15}RFB 003.008\x0a',
//! 'EOF'];
//! ```
//!
//! * `{MS{DATA`: bytes from the server (target) to the viewer;
//!   `}MS}DATA`: bytes from the viewer to the server.
//! * `MS`: milliseconds since the connection opened, when the chunk was relayed.
//! * `DATA`: the bytes as a single-quoted JavaScript string body: printable
//!   ASCII as itself, `'` and `\` backslash-escaped, anything else `\xHH`.
//!   Reading also accepts `\n`, `\r`, `\t` and `\0`, which websockify writes.
//! * `'EOF'` ends a complete recording; one without it (the proxy was killed)
//!   still reads up to its last whole line.
//!
//! Each connection gets its own file, `FILE.N`, N counting from 1.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Direction;

const HEADER: &str = "var VNC_frame_data = [\n";
const FOOTER: &str = "'EOF'];\n";

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a recording: it does not start with {HEADER:?}")]
    NotARecording { path: PathBuf },
    #[error("{path}:{line}: {problem}")]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
}

/// One connection's recording, being written.
#[derive(Debug)]
pub struct Recorder {
    file: Mutex<BufWriter<File>>,
    started: Instant,
}

impl Recorder {
    /// Starts `BASE.ID`, as websockify names them.
    pub fn create(base: &Path, id: u64) -> io::Result<Self> {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{id}"));
        let mut file = BufWriter::new(File::create(name)?);
        file.write_all(HEADER.as_bytes())?;
        Ok(Self {
            file: Mutex::new(file),
            started: Instant::now(),
        })
    }

    pub fn frame(&self, direction: Direction, data: &[u8]) {
        let mark = match direction {
            Direction::Downstream => '{',
            Direction::Upstream => '}',
        };
        let ms = self.started.elapsed().as_millis();
        let mut line = format!("'{mark}{ms}{mark}");
        escape(&mut line, data);
        line.push_str("',\n");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot record a frame");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let file = self.file.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = file
            .write_all(FOOTER.as_bytes())
            .and_then(|()| file.flush());
    }
}

/// Bytes as a single-quoted JavaScript string body.
fn escape(out: &mut String, data: &[u8]) {
    for &b in data {
        match b {
            b'\'' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// One recorded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub direction: Direction,
    /// Since the connection opened.
    pub at: Duration,
    pub data: Vec<u8>,
}

/// Reads a whole recording.
pub fn read(path: &Path) -> Result<Vec<Frame>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let body = text
        .strip_prefix(HEADER)
        .ok_or_else(|| Error::NotARecording {
            path: path.to_owned(),
        })?;
    let mut frames = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let bad = |problem| Error::BadLine {
            path: path.to_owned(),
            line: n + 2,
            problem,
        };
        if line.starts_with("'EOF'") {
            break;
        }
        let Some(quoted) = line.strip_suffix(',') else {
            // A last line cut short by a crash.
            break;
        };
        let inner = quoted
            .strip_prefix('\'')
            .and_then(|l| l.strip_suffix('\''))
            .ok_or(bad("not a quoted string"))?;
        let direction = match inner.chars().next() {
            Some('{') => Direction::Downstream,
            Some('}') => Direction::Upstream,
            _ => return Err(bad("starts with neither { nor }")),
        };
        let (ms, data) = inner[1..]
            .split_once(&inner[..1])
            .ok_or(bad("no timestamp"))?;
        let ms: u64 = ms
            .parse()
            .map_err(|_| bad("the timestamp is not a number"))?;
        frames.push(Frame {
            direction,
            at: Duration::from_millis(ms),
            data: unescape(data).ok_or(bad("a broken escape"))?,
        });
    }
    Ok(frames)
}

/// The inverse of [`escape`], plus the escapes websockify writes.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next()? {
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0' => 0,
            other => other,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_a_javascript_string() {
        let mut out = String::new();
        escape(&mut out, b"RFB 003.008\n'\\\x00\xff");
        assert_eq!(out, r"RFB 003.008\x0a\'\\\x00\xff");
        assert_eq!(
            unescape(&out).unwrap(),
            b"RFB 003.008\n'\\\x00\xff".to_vec()
        );
    }

    fn temp_file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("porthole-rec-{name}-{}", std::process::id()))
    }

    #[test]
    fn what_is_written_reads_back() {
        let base = temp_file("roundtrip");
        let every_byte: Vec<u8> = (0..=255).collect();
        {
            let recorder = Recorder::create(&base, 1).unwrap();
            recorder.frame(Direction::Downstream, b"RFB 003.008\n");
            recorder.frame(Direction::Upstream, &every_byte);
        }
        let path = PathBuf::from(format!("{}.1", base.display()));
        let frames = read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].direction, Direction::Downstream);
        assert_eq!(frames[0].data, b"RFB 003.008\n");
        assert_eq!(frames[1].direction, Direction::Upstream);
        assert_eq!(frames[1].data, every_byte);
        assert!(frames[0].at <= frames[1].at);
    }

    #[test]
    fn reads_websockify_recordings_and_cut_ones() {
        let path = temp_file("websockify");
        let text = "var VNC_frame_data = [\n'{0{RFB 003.008\\n',\n'}12}\\x01\\'\\\\',\n'{20{cut";
        std::fs::write(&path, text).unwrap();
        let frames = read(&path).unwrap();
        std::fs::write(&path, "<html>").unwrap();
        let not_one = read(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            frames,
            [
                Frame {
                    direction: Direction::Downstream,
                    at: Duration::ZERO,
                    data: b"RFB 003.008\n".to_vec()
                },
                Frame {
                    direction: Direction::Upstream,
                    at: Duration::from_millis(12),
                    data: b"\x01'\\".to_vec()
                },
            ]
        );
        assert!(matches!(not_one, Err(Error::NotARecording { .. })));
    }
}
