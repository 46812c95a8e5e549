//! `kubectl console`: open a VM's console in a browser through porthole.
//!
//! The plugin creates a `ConsoleSession` for the VM, watches it until the
//! operator reports it ready, and prints its URL; `--delete` ends a session.
//! Everything it checks locally ([`vm`], [`session`], [`cli`]) it checks before
//! any API call; the operator stays the authority on what a session may do.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod create;
pub mod delete;
pub mod hypervisor;
pub mod open;
pub mod output;
pub mod session;
pub mod status;
pub mod vm;
pub mod wait;

use std::io::Write as _;

use cli::{Action, CreateRequest, Request};

/// Why the plugin failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Create(#[from] create::CreateError),
    #[error(transparent)]
    Delete(#[from] delete::DeleteError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
}

/// Carries out a checked request against the cluster.
pub async fn run(request: Request) -> Result<(), Error> {
    let client = client::connect(&request.connection).await?;
    let namespace = request
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    match request.action {
        Action::Create(request) => create_and_print(client, &namespace, &request).await,
        Action::Delete { name } => {
            let report = delete::delete(client, &namespace, &name).await?;
            Ok(print(&format!("{report}\n"))?)
        }
    }
}

/// Creates the session, prints what `--output` asks for on stdout (progress on
/// stderr) and opens the URL when asked to.
async fn create_and_print(
    client: kube::Client,
    namespace: &str,
    request: &CreateRequest,
) -> Result<(), Error> {
    let ready = create::create(client, namespace, request, |line| eprintln!("{line}")).await?;
    print(&output::render(request.output, &ready.session, &ready.url)?)?;
    if request.open {
        let browser = std::env::var("BROWSER").ok();
        if let Err(error) = open::open(&ready.url, browser.as_deref()) {
            eprintln!("warning: {error}");
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe is an error, not a panic.
fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// An API error as a person reads it: the API server's own message when there
/// is one.
pub(crate) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}
