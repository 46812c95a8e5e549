//! `--record FILE`: each connection's frames, in websockify's replay format (a
//! JavaScript array of `'{ms{data'` for server frames and `'}ms}data'` for
//! client frames, ended by `'EOF'`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::Direction;

/// One connection's recording.
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
        file.write_all(b"var VNC_frame_data = [\n")?;
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
        let _ = file.write_all(b"'EOF'];\n").and_then(|()| file.flush());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_a_javascript_string() {
        let mut out = String::new();
        escape(&mut out, b"RFB 003.008\n'\\\x00\xff");
        assert_eq!(out, r"RFB 003.008\x0a\'\\\x00\xff");
    }
}
