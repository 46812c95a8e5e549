//! Prompt notice of container exits, from one `podman events` stream.
//!
//! A notice only says "look at this container now": the receiver inspects it
//! for the authoritative state. When the stream restarts, every watcher is
//! notified, since an exit may have happened while no stream was listening.
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Podman;

const RESTART_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct ExitWatch {
    watchers: Arc<Mutex<HashMap<String, UnboundedSender<String>>>>,
}

#[derive(Deserialize)]
struct DiedEvent {
    #[serde(rename = "ID")]
    id: String,
}

impl ExitWatch {
    /// Sends `id` to `notify` whenever container `id` may have exited.
    pub fn watch(&self, id: &str, notify: UnboundedSender<String>) {
        self.lock().insert(id.to_owned(), notify);
    }

    pub fn unwatch(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Follows podman's died events until cancelled.
    pub async fn run(self, podman: Podman, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.follow_events(&podman) => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RESTART_DELAY) => {}
            }
        }
    }

    async fn follow_events(&self, podman: &Podman) {
        let mut command = podman.command();
        command
            .args(["events", "--format", "json"])
            .args(["--filter", "type=container", "--filter", "event=died"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                tracing::error!(error = %err, "cannot follow podman events");
                return;
            }
        };
        self.notify_all();
        let Some(stdout) = child.stdout.take() else {
            return;
        };
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<DiedEvent>(&line) {
                    Ok(event) => self.notify(&event.id),
                    Err(err) => tracing::warn!(error = %err, line, "unexpected podman event"),
                },
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "reading podman events");
                    break;
                }
            }
        }
        tracing::warn!("podman events stream ended; restarting it");
    }

    fn notify(&self, id: &str) {
        let mut watchers = self.lock();
        if let Some(notify) = watchers.get(id)
            && notify.send(id.to_owned()).is_err()
        {
            watchers.remove(id);
        }
    }

    fn notify_all(&self) {
        self.lock()
            .retain(|id, notify| notify.send(id.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnboundedSender<String>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.watchers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}
