//! `kubectl console VM --hypervisor H`: create the session, wait, print the URL.

use kube::api::PostParams;
use kube::{Api, Client};
use porthole_api::v1alpha1::{ConsoleSession, Hypervisor};

use crate::api_message;
use crate::cli::CreateRequest;
use crate::hypervisor::{self, HypervisorError};
use crate::session::{self, build};
use crate::wait::{self, WaitError};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error(
        "consolesession {namespace}/{name} already exists: choose another --name, or end it with `kubectl console --delete {name} -n {namespace}`"
    )]
    AlreadyExists { namespace: String, name: String },
    #[error("creating consolesession {namespace}/{name}: {message}")]
    Create {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "consolesession {namespace}/{name}: {source}\n  see `kubectl describe consolesession {name} -n {namespace}`; end it with `kubectl console --delete {name} -n {namespace}`"
    )]
    NotReady {
        namespace: String,
        name: String,
        source: Box<WaitError>,
    },
    #[error("consolesession {namespace}/{name}: {source}")]
    Ended {
        namespace: String,
        name: String,
        source: Box<WaitError>,
    },
}

/// A session that is ready, and its console URL.
#[derive(Clone, Debug)]
pub struct Ready {
    pub session: ConsoleSession,
    pub url: String,
}

/// Creates the session and waits until it is ready. `progress` hears what
/// happens meanwhile, one line at a time.
pub async fn create(
    client: Client,
    namespace: &str,
    request: &CreateRequest,
    mut progress: impl FnMut(&str),
) -> Result<Ready, CreateError> {
    let hypervisors: Api<Hypervisor> = Api::all(client.clone());
    hypervisor::precheck(&hypervisors, &request.session.hypervisor, &request.vm).await?;

    let name = match &request.name {
        Some(name) => name.clone(),
        None => session::generate_name(&request.vm, &mut rand::rng()),
    };
    let sessions: Api<ConsoleSession> = Api::namespaced(client, namespace);
    let object = build(&name, namespace, &request.session);
    sessions
        .create(&PostParams::default(), &object)
        .await
        .map_err(|error| match &error {
            kube::Error::Api(status) if status.code == 409 => CreateError::AlreadyExists {
                namespace: namespace.to_string(),
                name: name.clone(),
            },
            _ => CreateError::Create {
                namespace: namespace.to_string(),
                name: name.clone(),
                message: api_message(&error),
            },
        })?;
    progress(&format!(
        "consolesession {namespace}/{name} created for {} on hypervisor {}",
        request.vm, request.session.hypervisor
    ));

    let (session, url) = wait::until_ready(&sessions, &name, request.wait_timeout, |state| {
        progress(&format!(
            "waiting for consolesession {namespace}/{name} to be ready ({state})"
        ));
    })
    .await
    .map_err(|source| match source {
        WaitError::Ended(_) | WaitError::Deleted => CreateError::Ended {
            namespace: namespace.to_string(),
            name: name.clone(),
            source: Box::new(source),
        },
        WaitError::TimedOut { .. } | WaitError::Watch(_) => CreateError::NotReady {
            namespace: namespace.to_string(),
            name: name.clone(),
            source: Box::new(source),
        },
    })?;

    Ok(Ready { session, url })
}
