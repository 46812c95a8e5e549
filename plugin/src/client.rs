//! The connection to the cluster, found as kubectl finds it.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Where the cluster is: `--kubeconfig` and `--context`, else `$KUBECONFIG`
/// (or `~/.kube/config`) and its current context, else the in-cluster config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no cluster to talk to: {0} (set KUBECONFIG or pass --kubeconfig)")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("setting up the API client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster `connection` names. Its default namespace is the
/// context's namespace (else `default`).
pub async fn connect(connection: &Connection) -> Result<Client, ClientError> {
    // kube's TLS needs a process-wide crypto provider; ring is the workspace's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&connection.kubeconfig, &connection.context) {
        (Some(path), _) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
