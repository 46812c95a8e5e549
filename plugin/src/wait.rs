//! Waiting for a session to become ready, with a watch on that one object.

use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use porthole_api::v1alpha1::ConsoleSession;

use crate::status::{Ended, State, describe_waiting, state};

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("it ended {0}")]
    Ended(Ended),
    #[error("it was deleted while waiting for it to become ready")]
    Deleted,
    #[error("it was not ready after {} (last seen: {last})", human(*.after))]
    TimedOut { after: Duration, last: String },
    #[error("watching it failed: {0}")]
    Watch(#[source] watcher::Error),
}

/// Watches session `name` until it is ready and returns it with its URL, or
/// fails when it reaches a final phase, disappears, or `timeout` passes.
/// `progress` hears each new phase and reason while waiting.
pub async fn until_ready(
    api: &Api<ConsoleSession>,
    name: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(ConsoleSession, String), WaitError> {
    let mut last = describe_waiting(None, None);
    let watch = async {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher::watcher(api.clone(), config)
            .default_backoff()
            .boxed();
        let mut seen = false;
        while let Some(event) = events.next().await {
            let session = match event {
                Ok(Event::Apply(session) | Event::InitApply(session)) => session,
                Ok(Event::Delete(_)) => return Err(WaitError::Deleted),
                Ok(Event::Init) => {
                    seen = false;
                    continue;
                }
                Ok(Event::InitDone) if !seen => return Err(WaitError::Deleted),
                Ok(Event::InitDone) => continue,
                Err(error) if is_permanent(&error) => return Err(WaitError::Watch(error)),
                Err(error) => {
                    // The backoff retries; say so once per distinct failure.
                    let line = format!("watch failed, retrying: {error}");
                    if line != last {
                        progress(&line);
                        last = line;
                    }
                    continue;
                }
            };
            seen = true;
            match state(&session) {
                State::Ready { url } => return Ok((session, url)),
                State::Ended(ended) => return Err(WaitError::Ended(ended)),
                State::Waiting { phase, reason } => {
                    let line = describe_waiting(phase, reason.as_deref());
                    if line != last {
                        progress(&line);
                        last = line;
                    }
                }
            }
        }
        Err(WaitError::Deleted)
    };
    match tokio::time::timeout(timeout, watch).await {
        Ok(result) => result,
        Err(_) => Err(WaitError::TimedOut {
            after: timeout,
            last,
        }),
    }
}

/// `2m`, `1h30m`, or `300ms` below a second.
fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        porthole_api::duration::format(duration)
    }
}

/// Errors no retry can fix: not allowed, not there, bad request.
fn is_permanent(error: &watcher::Error) -> bool {
    let api_error = match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => error,
        watcher::Error::WatchError(status) => return matches!(status.code, 400 | 401 | 403 | 404),
        _ => return false,
    };
    matches!(api_error, kube::Error::Api(status) if matches!(status.code, 400 | 401 | 403 | 404))
}
