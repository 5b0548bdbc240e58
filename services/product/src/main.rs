fn main() -> std::process::ExitCode {
    product::main()
}
