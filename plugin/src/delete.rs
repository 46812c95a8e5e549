//! `kubectl console --delete NAME`: end a session by deleting it. The operator's
//! owner references take its proxy Pod, Service and Secret with it.

use kube::api::DeleteParams;
use kube::{Api, Client};
use porthole_api::v1alpha1::ConsoleSession;

use crate::api_message;

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(
        "consolesession {namespace}/{name} not found (list them with `kubectl get consolesessions -n {namespace}`)"
    )]
    NotFound { namespace: String, name: String },
    #[error("deleting consolesession {namespace}/{name}: {message}")]
    Api {
        namespace: String,
        name: String,
        message: String,
    },
}

/// Deletes session `name` and returns the line that reports it.
pub async fn delete(client: Client, namespace: &str, name: &str) -> Result<String, DeleteError> {
    let sessions: Api<ConsoleSession> = Api::namespaced(client, namespace);
    let deleted = sessions
        .delete(name, &DeleteParams::background())
        .await
        .map_err(|error| match &error {
            kube::Error::Api(status) if status.code == 404 => DeleteError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            _ => DeleteError::Api {
                namespace: namespace.to_string(),
                name: name.to_string(),
                message: api_message(&error),
            },
        })?;
    let phase = deleted
        .left()
        .and_then(|session| session.status?.phase)
        .map(|phase| format!(" (it was {phase:?})"))
        .unwrap_or_default();
    Ok(format!("consolesession {namespace}/{name} deleted{phase}"))
}
