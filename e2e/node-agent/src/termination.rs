//! Choosing a terminated container's `message`, as kubelet does.

/// At most this much of the termination-message file is reported.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// `FallbackToLogsOnError` reports at most this many trailing log lines...
pub const FALLBACK_LOG_LINES: usize = 80;
/// ...and at most this many bytes of them.
pub const FALLBACK_LOG_BYTES: usize = 2048;

/// The message for a container that wrote `file` to its termination-message path
/// and `log` to stdout/stderr, then exited with `exit_code`.
pub fn select_message(
    file: &[u8],
    log: &[u8],
    exit_code: i32,
    fallback_to_logs_on_error: bool,
) -> Option<String> {
    let file = &file[..file.len().min(MAX_MESSAGE_BYTES)];
    if !file.is_empty() {
        return Some(String::from_utf8_lossy(file).into_owned());
    }
    if fallback_to_logs_on_error && exit_code != 0 {
        let tail = log_tail(log, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES);
        if !tail.is_empty() {
            return Some(String::from_utf8_lossy(tail).into_owned());
        }
    }
    None
}

/// The last `max_lines` lines of `log`, cut to its last `max_bytes`.
fn log_tail(log: &[u8], max_lines: usize, max_bytes: usize) -> &[u8] {
    // A final newline ends the last line; it does not start another.
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|&(_, &byte)| byte == b'\n')
        .nth(max_lines - 1)
        .map_or(0, |(at, _)| at + 1);
    let tail = &log[start..];
    &tail[tail.len().saturating_sub(max_bytes)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wins_and_is_truncated() {
        let file = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        let message = select_message(&file, b"log", 1, true).unwrap();
        assert_eq!(message.len(), MAX_MESSAGE_BYTES);
        assert_eq!(
            select_message(b"done", b"log", 0, false).as_deref(),
            Some("done")
        );
    }

    #[test]
    fn logs_are_used_only_on_error_with_fallback() {
        assert_eq!(select_message(b"", b"oops\n", 0, true), None);
        assert_eq!(select_message(b"", b"oops\n", 2, false), None);
        assert_eq!(
            select_message(b"", b"oops\n", 2, true).as_deref(),
            Some("oops\n")
        );
        assert_eq!(select_message(b"", b"", 2, true), None);
    }

    #[test]
    fn fallback_keeps_the_last_80_lines() {
        let log: String = (0..100).map(|i| format!("{i}\n")).collect();
        let message = select_message(b"", log.as_bytes(), 1, true).unwrap();
        assert!(message.starts_with("20\n21\n"), "{message}");
        assert!(message.ends_with("99\n"));
    }

    #[test]
    fn fallback_keeps_the_last_2048_bytes() {
        let log = format!("{}\nend", "y".repeat(5000));
        let message = select_message(b"", log.as_bytes(), 1, true).unwrap();
        assert_eq!(message.len(), FALLBACK_LOG_BYTES);
        assert!(message.ends_with("y\nend"));
    }
}
