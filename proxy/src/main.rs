use std::process::ExitCode;

fn main() -> ExitCode {
    porthole_proxy::cli::main()
}
