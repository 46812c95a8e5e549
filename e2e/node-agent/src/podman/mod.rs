//! A typed wrapper over the podman CLI.
//!
//! Every call carries the global flags the test hosts need (`--runtime runc
//! --cgroup-manager=cgroupfs`: crun fails there), and `create` adds the explicit
//! ulimits runc needs. Images are local only and never pulled.
mod create;
mod exits;
mod inspect;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::process::Command;

pub use create::{BindMount, ContainerConfig, Namespaces, Resources, RootFs, Security};
pub use exits::ExitWatch;
pub use inspect::{ContainerInspect, ContainerState, ContainerSummary, ImageInspect};

const GLOBAL_FLAGS: [&str; 3] = ["--runtime", "runc", "--cgroup-manager=cgroupfs"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program} (is podman installed?): {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("podman {command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("podman {command} printed unexpected output: {source}")]
    Parse {
        command: String,
        source: serde_json::Error,
    },
    #[error("podman {command} did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("no image {0}")]
    NoSuchImage(String),
    #[error("cannot write container logs to {path}: {source}")]
    LogFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    fn is_no_such_container(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("no such container"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a command run in a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    Exited(i32),
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Podman {
    program: PathBuf,
}

impl Podman {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The podman version, e.g. `4.3.1`.
    pub async fn version(&self) -> Result<String> {
        let stdout = self
            .run(["version", "--format", "{{.Client.Version}}"])
            .await?;
        Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
    }

    pub async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let stdout = self.run(config.create_args()).await?;
        Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.run(["start", id]).await.map(drop)
    }

    /// Sends the stop signal, then SIGKILL after `grace`. A missing container is
    /// already stopped.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = grace.as_secs().to_string();
        match self.run(["stop", "--time", &seconds, id]).await {
            Err(err) if err.is_no_such_container() => Ok(()),
            result => result.map(drop),
        }
    }

    /// Kills (no grace) and removes; a missing container is already removed.
    pub async fn remove(&self, id: &str) -> Result<()> {
        match self.run(["rm", "--force", "--time", "0", id]).await {
            Err(err) if err.is_no_such_container() => Ok(()),
            result => result.map(drop),
        }
    }

    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInspect>> {
        let found: Result<Vec<ContainerInspect>> = self.json(["container", "inspect", id]).await;
        match found {
            Ok(found) => Ok(found.into_iter().next()),
            Err(err) if err.is_no_such_container() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// All containers, running or not, carrying label `key=value`.
    pub async fn list_labelled(&self, key: &str, value: &str) -> Result<Vec<ContainerSummary>> {
        let filter = format!("label={key}={value}");
        self.json(["ps", "--all", "--format", "json", "--filter", &filter])
            .await
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        match self.run(["image", "exists", image]).await {
            Ok(_) => Ok(true),
            Err(Error::Failed { status, .. }) if status.code() == Some(1) => Ok(false),
            Err(err) => Err(err),
        }
    }

    pub async fn image_inspect(&self, image: &str) -> Result<ImageInspect> {
        let found: Vec<ImageInspect> = self.json(["image", "inspect", image]).await?;
        found
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoSuchImage(image.to_owned()))
    }

    /// Runs `command` in a running container, discarding its output.
    pub async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome> {
        let mut child = self.command();
        child
            .args(["exec", id])
            .args(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match tokio::time::timeout(timeout, child.status()).await {
            Ok(status) => {
                let status = status.map_err(|source| self.spawn_error(source))?;
                Ok(ExecOutcome::Exited(status.code().unwrap_or(-1)))
            }
            Err(_elapsed) => Ok(ExecOutcome::TimedOut),
        }
    }

    /// Writes the container's stdout and stderr, interleaved as written, to `path`.
    pub async fn save_logs(&self, id: &str, path: &Path) -> Result<()> {
        let log_error = |source| Error::LogFile {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::create(path).map_err(log_error)?;
        let stderr = file.try_clone().map_err(log_error)?;
        let output = self
            .command()
            .args(["logs", id])
            .stdout(file)
            .stderr(stderr)
            .status()
            .await
            .map_err(|source| self.spawn_error(source))?;
        if output.success() {
            Ok(())
        } else {
            Err(Error::Failed {
                command: "logs".into(),
                status: output,
                stderr: std::fs::read_to_string(path).unwrap_or_default(),
            })
        }
    }

    pub async fn build_image(&self, context: &Path, tag: &str) -> Result<()> {
        let context = context.display().to_string();
        self.run(["build", "--quiet", "--tag", tag, &context])
            .await
            .map(drop)
    }

    /// The host interface of a network (its bridge), e.g. `podman0`.
    pub async fn network_interface(&self, network: &str) -> Result<String> {
        let out = self
            .run([
                "network",
                "inspect",
                "--format",
                "{{.NetworkInterface}}",
                network,
            ])
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    pub async fn remove_image(&self, image: &str) -> Result<()> {
        self.run(["rmi", "--force", image]).await.map(drop)
    }

    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(GLOBAL_FLAGS)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run<I, S>(&self, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self
            .command()
            .args(&args)
            .output()
            .await
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(Error::Failed {
                command: subcommand(&args),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    async fn json<T, I, S>(&self, args: I) -> Result<T>
    where
        T: DeserializeOwned,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let stdout = self.run(&args).await?;
        serde_json::from_slice(&stdout).map_err(|source| Error::Parse {
            command: subcommand(&args),
            source,
        })
    }

    fn spawn_error(&self, source: std::io::Error) -> Error {
        Error::Spawn {
            program: self.program.clone(),
            source,
        }
    }
}

/// The words before the first flag: enough to tell which call failed without
/// echoing arguments that may hold secrets (`--env`).
fn subcommand(args: &[String]) -> String {
    args.iter()
        .take_while(|arg| !arg.starts_with('-'))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
