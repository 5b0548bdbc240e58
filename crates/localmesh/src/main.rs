fn main() -> std::process::ExitCode {
    localmesh::cli::main()
}
