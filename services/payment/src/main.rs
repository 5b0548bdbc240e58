fn main() -> std::process::ExitCode {
    payment::main()
}
