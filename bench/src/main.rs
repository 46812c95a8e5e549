fn main() -> std::process::ExitCode {
    porthole_bench::main()
}
