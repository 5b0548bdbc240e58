fn main() -> std::process::ExitCode {
    frontend::main()
}
