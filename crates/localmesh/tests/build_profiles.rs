//! The two build profiles of the workspace Cargo.toml, as cargo resolves them: `release` (what
//! `make run` builds) keeps the code `make bench` runs at opt-level 3 and builds the rest lower,
//! and `dist` (the images, `make bench`) builds every crate at opt-level 3. Every binary's
//! `main.rs` only calls its library, so that an optimised build compiles a server once.

use std::path::Path;
use std::process::Command;

/// A dependency `release` builds at opt-level 0 (template caching in minijinja, never on a request).
const LOWERED: &str = "memo-map";
/// A dependency the request path runs through (integer formatting in headers and metrics).
const HOT: &str = "itoa";

/// The opt-level cargo gives each of `packages` under `profile`, read from its JSON messages.
fn opt_levels(profile: &str, packages: &[&str]) -> Vec<(String, String)> {
    let target = tempfile::tempdir().expect("a temporary target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("CARGO_TARGET_DIR", target.path())
        .args([
            "build",
            "--offline",
            "--locked",
            "--message-format=json",
            "--profile",
            profile,
        ]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --profile {profile}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut levels: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.replace('_', "-");
            packages
                .contains(&name.as_str())
                .then(|| (name, m["profile"]["opt_level"].as_str().unwrap_or("?").to_owned()))
        })
        .collect();
    levels.sort();
    levels
}

#[test]
fn release_lowers_only_what_no_bench_request_runs_and_dist_optimises_everything() {
    assert_eq!(
        opt_levels("release", &[LOWERED, HOT]),
        vec![(HOT.to_owned(), "3".to_owned()), (LOWERED.to_owned(), "0".to_owned())],
        "release"
    );
    // A custom profile inherits its parent's package overrides: were `dist` to inherit `release`,
    // the lowered crates would stay lowered in the images.
    assert_eq!(
        opt_levels("dist", &[LOWERED, HOT]),
        vec![(HOT.to_owned(), "3".to_owned()), (LOWERED.to_owned(), "3".to_owned())],
        "dist"
    );
}

/// An optimised build does not share generic code between crates: whatever a binary's `main`
/// runs that is generic (the server stack, instantiated for the service's own types, and the drop
/// code of the futures it awaits) would be compiled again for the binary. So each `main.rs` only
/// calls its library, where that code is compiled anyway.
#[test]
fn every_binary_only_calls_its_library() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(["metadata", "--offline", "--no-deps", "--format-version", "1"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let mut bins = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let targets = package["targets"].as_array().expect("targets");
        let lib = targets
            .iter()
            .find(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib")))
            .and_then(|t| t["name"].as_str());
        for bin in targets
            .iter()
            .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        {
            let name = bin["name"].as_str().expect("a bin's name").to_owned();
            let path = bin["src_path"].as_str().expect("a bin's src_path");
            let source = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let code: String = source
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("//"))
                .collect::<Vec<_>>()
                .join(" ");
            let lib = lib.unwrap_or_else(|| panic!("{name}: the binary has no library to call"));
            let thin = code.starts_with("fn main() -> std::process::ExitCode {")
                && code.ends_with("main() }")
                && code.matches(';').count() == 0
                && code.contains(&format!(" {lib}::"));
            assert!(
                thin,
                "{path}: main.rs should only call `{lib}::…::main()`, found: {code}"
            );
            bins.push(name);
        }
    }
    bins.sort();
    assert_eq!(bins, ["agent", "frontend", "localmesh", "order", "payment", "product"]);
}
