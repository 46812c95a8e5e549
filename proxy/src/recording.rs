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
//!
//! Standalone mode buffers, and warns when a recording cannot be written, as
//! websockify does. Pod mode writes every chunk through as it is relayed
//! ([`Recorder::write_through`]): a failing disk is noticed at once, and the
//! relay stops (a recorded session never relays unrecorded); the file holds
//! what the viewer was given even if the proxy is killed.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use porthole_api::contract::RECORDING_MOUNT;

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
    path: PathBuf,
    started: Instant,
    write_through: bool,
}

/// Why a recording cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the recording {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl Recorder {
    /// Starts `BASE.ID`, as websockify names them, and writes its header
    /// through: a file that cannot be written fails here, before anything
    /// is relayed.
    pub fn create(base: &Path, id: u64) -> Result<Self, WriteError> {
        let path = Self::path(base, id);
        let file = match claim_relative(&path) {
            // A session's recording: a new file, never one that is there
            // already, and never through a symlink.
            Some((root, parts)) => open_beneath(root, parts, Walk::Open),
            // Standalone, as websockify: the file the user named, anew.
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o640)
                    .open(&path)
            }
        };
        Self::start(path, file)
    }

    /// Whether `BASE.ID` already holds a recording (a regular file). A
    /// session's pod that was replaced (force-deleted, started again by the
    /// operator) finds its predecessor's recordings on the same claim and
    /// must not overwrite them; anything else there (a device, say) is
    /// opened as before.
    pub fn taken(base: &Path, id: u64) -> bool {
        std::fs::symlink_metadata(Self::path(base, id)).is_ok_and(|m| m.is_file())
    }

    fn start(path: PathBuf, file: io::Result<File>) -> Result<Self, WriteError> {
        let failed = |source| WriteError {
            path: path.clone(),
            source,
        };
        let mut file = BufWriter::new(file.map_err(failed)?);
        file.write_all(HEADER.as_bytes())
            .and_then(|()| file.flush())
            .map_err(failed)?;
        Ok(Self {
            file: Mutex::new(file),
            path,
            started: Instant::now(),
            write_through: false,
        })
    }

    /// Writes every chunk to the file as it is recorded, instead of buffering.
    pub fn write_through(mut self) -> Self {
        self.write_through = true;
        self
    }

    /// `BASE.ID`.
    pub fn path(base: &Path, id: u64) -> PathBuf {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{id}"));
        PathBuf::from(name)
    }

    /// Creates the directory `base` names its files in (and its parents),
    /// readable by the proxy's user and group only: recordings show all that
    /// a viewer saw and typed.
    ///
    /// Under [`RECORDING_MOUNT`] (a session's claim, shared with other
    /// sessions' proxies) every directory is made and entered relative to
    /// its parent's handle, refusing symlinks: a symlink planted there by
    /// another proxy cannot send this session's recordings elsewhere.
    pub fn prepare_directory(base: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let Some(dir) = base.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
            return Ok(());
        };
        match claim_relative(dir) {
            Some((root, parts)) => open_beneath(root, parts, Walk::Create).map(drop),
            None => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir),
        }
    }

    /// Records one relayed chunk.
    pub fn frame(&self, direction: Direction, data: &[u8]) -> Result<(), WriteError> {
        let mark = match direction {
            Direction::Downstream => '{',
            Direction::Upstream => '}',
        };
        let ms = self.started.elapsed().as_millis();
        let mut line = format!("'{mark}{ms}{mark}");
        escape(&mut line, data);
        line.push_str("',\n");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|()| {
                if self.write_through {
                    file.flush()
                } else {
                    Ok(())
                }
            })
            .map_err(|source| WriteError {
                path: self.path.clone(),
                source,
            })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let file = self.file.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file
            .write_all(FOOTER.as_bytes())
            .and_then(|()| file.flush())
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot finish the recording");
        }
    }
}

/// Bytes as a single-quoted JavaScript string body.
/// The claim's mount and the parts of `path` below it, for a session's
/// recording; `None` for a standalone one.
fn claim_relative(path: &Path) -> Option<(&Path, Vec<&std::ffi::OsStr>)> {
    let root = Path::new(RECORDING_MOUNT);
    let below = path.strip_prefix(root).ok()?;
    let parts: Vec<_> = below
        .components()
        .map(|c| match c {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!parts.is_empty()).then_some((root, parts))
}

/// What [`open_beneath`] does with the last part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Every part is a directory, made if missing (mode 0750).
    Create,
    /// The last part is a new file (mode 0640), the others directories that
    /// must exist.
    Open,
}

/// Walks `parts` from `root` one handle at a time, never following a
/// symlink, and returns the last directory or the new file.
fn open_beneath(root: &Path, parts: Vec<&std::ffi::OsStr>, walk: Walk) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags, mkdirat, open, openat};
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut dir = open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        if walk == Walk::Open && i == last {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            return Ok(File::from(openat(
                &dir,
                part,
                flags,
                Mode::from_raw_mode(0o640),
            )?));
        }
        if walk == Walk::Create {
            match mkdirat(&dir, part, Mode::from_raw_mode(0o750)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // ELOOP or ENOTDIR for a symlink: refused, whatever it points to.
        dir = openat(&dir, part, dir_flags, Mode::empty())?;
    }
    Ok(File::from(dir))
}

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
        let path = PathBuf::from(format!("{}.1", base.display()));
        {
            let recorder = Recorder::create(&base, 1).unwrap().write_through();
            recorder
                .frame(Direction::Downstream, b"RFB 003.008\n")
                .unwrap();
            // Written through: on disk before the recording ends.
            let so_far = std::fs::read_to_string(&path).unwrap();
            assert!(so_far.ends_with("RFB 003.008\\x0a',\n"), "{so_far}");
            recorder.frame(Direction::Upstream, &every_byte).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("'EOF'];\n")
        );
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
    fn a_file_that_cannot_be_written_fails_at_creation_and_names_itself() {
        // A full disk, as a device: opening works, writing does not.
        let dir = temp_file("full");
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("connection");
        std::os::unix::fs::symlink("/dev/full", Recorder::path(&base, 1)).unwrap();
        let error = Recorder::create(&base, 1).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(error.source.raw_os_error(), Some(28), "{error}");
        assert!(
            error.to_string().contains("connection.1"),
            "the error says which file: {error}"
        );
    }

    #[test]
    fn earlier_recordings_are_taken_and_other_files_are_not() {
        let dir = temp_file("again");
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("connection");
        assert!(!Recorder::taken(&base, 1));
        Recorder::create(&base, 1).unwrap();
        assert!(Recorder::taken(&base, 1));
        std::os::unix::fs::symlink("/dev/full", Recorder::path(&base, 2)).unwrap();
        assert!(!Recorder::taken(&base, 2), "a device is no recording");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sessions_recording_never_goes_through_a_symlink_nor_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_file("beneath");
        let elsewhere = temp_file("beneath-elsewhere");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let parts = |p: &'static str| p.split('/').map(std::ffi::OsStr::new).collect::<Vec<_>>();

        // A planted symlink, at any depth, is refused, not followed.
        std::os::unix::fs::symlink(&elsewhere, root.join("team-a")).unwrap();
        assert!(open_beneath(&root, parts("team-a/web/uid-1"), Walk::Create).is_err());
        std::fs::create_dir_all(root.join("team-b/web")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("team-b/web/uid-1")).unwrap();
        assert!(open_beneath(&root, parts("team-b/web/uid-1"), Walk::Create).is_err());
        assert!(open_beneath(&root, parts("team-b/web/uid-1/connection.1"), Walk::Open).is_err());
        // A symlink in place of the file itself.
        open_beneath(&root, parts("team-c/web/uid-1"), Walk::Create).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.join("x"),
            root.join("team-c/web/uid-1/connection.1"),
        )
        .unwrap();
        assert!(open_beneath(&root, parts("team-c/web/uid-1/connection.1"), Walk::Open).is_err());
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written elsewhere"
        );

        // A new file, 0640 at most, and never twice.
        open_beneath(&root, parts("team-c/web/uid-1/connection.2"), Walk::Open).unwrap();
        let mode = std::fs::metadata(root.join("team-c/web/uid-1/connection.2"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o137, 0, "{mode:o}");
        let again = open_beneath(&root, parts("team-c/web/uid-1/connection.2"), Walk::Open);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn only_paths_under_the_claim_mount_are_walked_without_symlinks() {
        let (root, parts) = claim_relative(Path::new(
            "/var/run/porthole/recordings/ns/web/uid/connection.1",
        ))
        .unwrap();
        assert_eq!(root, Path::new(RECORDING_MOUNT));
        assert_eq!(parts.len(), 4);
        assert!(claim_relative(Path::new("/tmp/recording.1")).is_none());
        assert!(claim_relative(Path::new("/var/run/porthole/recordings/ns/../x")).is_none());
    }

    #[test]
    fn the_directory_is_prepared_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_file("prepare");
        let base = root.join("web/uid-1/connection");
        Recorder::prepare_directory(&base).unwrap();
        Recorder::prepare_directory(&base).unwrap(); // again: already there is fine
        let mode = std::fs::metadata(root.join("web/uid-1"))
            .unwrap()
            .permissions()
            .mode();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(mode & 0o007, 0, "others may not read recordings: {mode:o}");
        // A path under a file cannot become a directory.
        let file = temp_file("prepare-file");
        std::fs::write(&file, "").unwrap();
        let error = Recorder::prepare_directory(&file.join("web/connection"));
        std::fs::remove_file(&file).unwrap();
        assert!(error.is_err());
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
