//! `localmesh`: for now only `lint`, which compiles the repo's manifests into the routing model
//! and prints it, so a manifest change can be checked without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "localmesh",
    about = "Istio's gateway and sidecars on one machine, from the repo's manifests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load gateway/ and manifests/, print the compiled routing model and what is not emulated.
    Lint {
        /// The repository root (holding gateway/ and manifests/).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Lint { root } => match localmesh::load(&root) {
            Ok(mesh) => {
                print!("{mesh}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("localmesh: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
