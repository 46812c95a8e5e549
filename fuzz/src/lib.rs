//! Helpers the fuzz targets share.
#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

/// How long (in paused, virtual time) one input may run before it is given
/// up on. Time only advances when every task waits, so this costs nothing
/// unless something hangs.
pub const VIRTUAL_LIMIT: Duration = Duration::from_secs(600);

thread_local! {
    /// One runtime for all inputs (building one per input costs more than
    /// most inputs): single-threaded, with paused time, so timeouts (hyper's
    /// header timeout, the relay's shutdown grace) fire at once and every
    /// run is deterministic.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
}

/// Runs `future` to completion; `None` when it was still running after
/// [`VIRTUAL_LIMIT`], which targets treat as a hang.
pub fn block_on<F: Future>(future: F) -> Option<F::Output> {
    RUNTIME.with(|runtime| {
        runtime.block_on(async { tokio::time::timeout(VIRTUAL_LIMIT, future).await.ok() })
    })
}

/// Splits `data` at the first `separator` byte: the part before it and the
/// part after it (empty when there is none).
pub fn split_at_byte(data: &[u8], separator: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == separator) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// The lengths to cut `len` bytes into, taken cyclically from `pattern`
/// (each 1..=16): feeding a parser in such chunks must give the same result
/// as feeding it everything at once.
pub fn chunks(len: usize, pattern: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = len;
    let mut i = 0;
    while left > 0 {
        let size = pattern
            .get(i % pattern.len().max(1))
            .map_or(1, |&b| usize::from(b % 16) + 1)
            .min(left);
        out.push(size);
        left -= size;
        i += 1;
    }
    out
}

/// Whether `text` is one line a person can read: no control characters.
pub fn is_one_readable_line(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// Awaits a spawned task, re-raising its panic: tokio catches panics in
/// tasks, and a fuzz target must see them to report a crash.
pub async fn join<T>(task: tokio::task::JoinHandle<T>) -> Option<T> {
    match task.await {
        Ok(value) => Some(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
    }
}
