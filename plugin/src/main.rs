use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use kubectl_console::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let request = match Cli::parse().into_request() {
        Ok(request) => request,
        Err(error) => Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, error)
            .exit(),
    };
    match kubectl_console::run(request).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
