//! The documented local commands work as written. Every fenced block whose info string is
//! `sh local` in `docs/flows/*.md` and README.md runs with bash, from the repository root, in file
//! order, against a real `localmesh up` on `make run`'s ports (gateway 8443, plaintext listener
//! 8880, admin 15000, console 16686), with the test tools' venv (the real grpcurl) first on PATH
//! and `target/release/` meaning the binaries under test. A block fails when it exits non-zero,
//! runs over 60 s, or when a line of the `output` block right after it does not appear in what it
//! printed (`...` lines are skipped).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

/// `make run`'s ports, which the documented commands name.
const PORTS: [(&str, u16); 4] = [
    ("--gateway-port", 8443),
    ("--http-port", 8880),
    ("--admin-port", 15000),
    ("--console-port", 16686),
];
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Block {
    file: PathBuf,
    line: usize,
    code: String,
    output: Vec<String>,
}

/// The `sh local` blocks of a Markdown text, each with the lines of its `output` block.
fn blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let info = info.trim().to_string();
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && !lines[end].trim_start().starts_with("```") {
            end += 1;
        }
        let body: Vec<&str> = lines[start..end.min(lines.len())].to_vec();
        if info == "sh local" {
            out.push(Block {
                file: file.to_path_buf(),
                line: i + 1,
                code: body.join("\n"),
                output: Vec::new(),
            });
        } else if info == "output"
            && let Some(last) = out.last_mut()
            && last.output.is_empty()
        {
            last.output = body
                .iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && l != "...")
                .collect();
        }
        i = end + 1;
    }
    out
}

#[test]
fn blocks_are_read_with_their_output() {
    let md = "# t\n```sh local\necho hi\n```\n\n```output\nhi\n...\n```\n```sh\nnot run\n```\n```sh cluster\nkubectl get pods\n```\n```sh local\ntrue\n```\n";
    let b = blocks(Path::new("t.md"), md);
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!((b[0].line, b[0].code.as_str()), (2, "echo hi"));
    assert_eq!(b[0].output, vec!["hi"]);
    assert!(b[1].output.is_empty());
}

fn documented_blocks() -> (Vec<Block>, Vec<PathBuf>) {
    let root = common::root();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs/flows"))
        .expect("docs/flows")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut all = Vec::new();
    for f in std::iter::once(root.join("README.md")).chain(pages.iter().cloned()) {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        all.extend(blocks(&f, &text));
    }
    (all, pages)
}

#[test]
fn the_documented_local_commands_work_as_written() {
    let (all, pages) = documented_blocks();
    let root = common::root();
    assert!(
        all.iter().any(|b| b.file.ends_with("README.md")),
        "README.md has local blocks"
    );
    for p in &pages {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name != "README.md" {
            assert!(
                all.iter().any(|b| &b.file == p),
                "{} has no `sh local` block",
                p.display()
            );
        }
    }
    for (flag, port) in PORTS {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "127.0.0.1:{port} ({flag}) is taken ({e}): the documented commands name make run's ports; \
                 stop `make run` and run the tests again"
            );
        }
    }
    let data = tempfile::tempdir().expect("tempdir");
    let flags: Vec<(&str, String)> = PORTS.iter().map(|(f, p)| (*f, p.to_string())).collect();
    let flags: Vec<(&str, &str)> = flags.iter().map(|(f, p)| (*f, p.as_str())).collect();
    let _up = common::Up::start_on(data.path(), &root, &[], &flags);

    let bin = common::bin_dir();
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for b in &all {
        let code = b.code.replace("target/release/", &format!("{}/", bin.display()));
        let out = Command::new("timeout")
            .arg(BLOCK_TIMEOUT.as_secs().to_string())
            .args(["bash", "-eo", "pipefail", "-c", &code])
            .current_dir(&root)
            .env("PATH", &path)
            .output()
            .expect("bash runs");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let rel = b.file.strip_prefix(&root).unwrap_or(&b.file).display().to_string();
        if !out.status.success() {
            failures.push(format!(
                "{rel}:{}: exited {} (124: over {} s)\n{}\n---\n{printed}",
                b.line,
                out.status,
                BLOCK_TIMEOUT.as_secs(),
                b.code
            ));
            continue;
        }
        let missing: Vec<&String> = b.output.iter().filter(|l| !printed.contains(l.as_str())).collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{rel}:{}: the documented output {missing:?} did not appear\n{}\n---\n{printed}",
                b.line, b.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documented local blocks failed:\n\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}
