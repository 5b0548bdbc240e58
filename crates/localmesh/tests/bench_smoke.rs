//! `make bench` in small: `scripts/bench.sh` in smoke mode (`BENCH_SMOKE=1`: one round, h2load
//! -n 300, `localmesh load` for 1 s, 50 held streams) with the debug binaries cargo built for this
//! test. Every port it uses is 0 or probed free, so it runs beside any other localmesh. It needs
//! nginx, HAProxy and h2load (`make tools` installs them); without one the script fails saying
//! how to install it, and so does this test.

use std::process::Command;

mod common;

/// Every h2load setup; `localmesh load` drives all but the streams one.
const H2LOAD_SETUPS: [&str; 10] = [
    "direct",
    "nginx",
    "haproxy",
    "localmesh",
    "localmesh-0%",
    "lm-no-access-log",
    "lm-no-metrics",
    "localmesh-lean",
    "sidecar",
    "localmesh+streams",
];

/// The rows of the table that follows the line starting with `title`, by setup: its columns
/// (req/s, p50, p90, p99, max, failed, proxy CPU, pods CPU, peak RSS).
fn table<'a>(out: &'a str, title: &str) -> Vec<(&'a str, Vec<&'a str>)> {
    let rest = out
        .split_once(&format!("\n{title}"))
        .unwrap_or_else(|| panic!("a table after {title:?} in:\n{out}"))
        .1;
    rest.lines()
        .skip(3) // the rest of the title line, the two header lines
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('('))
        .map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next().expect("setup"), cols.collect())
        })
        .collect()
}

fn number(setup: &str, what: &str, v: &str) -> f64 {
    v.parse()
        .unwrap_or_else(|_| panic!("{setup}: {what} is a number, not {v:?}"))
}

#[test]
fn bench_smoke_prints_every_setup_with_figures_and_no_failed_call() {
    let root = common::root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/bench.sh"))
        .env("BENCH_SMOKE", "1")
        .env("BENCH_BIN", common::bin_dir());
    // The smoke run's own sizes, whatever the caller's environment says.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BENCH_") && k != "BENCH_SMOKE" && k != "BENCH_BIN" {
            cmd.env_remove(k);
        }
    }
    let started = std::time::Instant::now();
    let out = cmd.output().expect("bash runs scripts/bench.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}\n(in {:?})", started.elapsed());
    assert!(
        out.status.success(),
        "scripts/bench.sh exits 0 ({}):\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("bench: warning"),
        "no warning (a warning means the figures are not what they claim):\n{stderr}"
    );

    // Every setup answered its gRPC status check before the runs.
    for setup in &H2LOAD_SETUPS[..9] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(setup) && l.contains(" calls, "))
            .unwrap_or_else(|| panic!("a gRPC status check line for {setup}:\n{stdout}"));
        assert!(line.trim_end().ends_with("calls, 0 failed"), "{line}");
    }

    for (title, setups) in [
        ("h2load: ", &H2LOAD_SETUPS[..]),
        ("localmesh load: ", &H2LOAD_SETUPS[..9]),
    ] {
        let rows = table(&stdout, title);
        let names: Vec<&str> = rows.iter().map(|(s, _)| *s).collect();
        assert_eq!(names, setups, "a row per setup in the {title} table:\n{stdout}");
        for (setup, cols) in &rows {
            assert_eq!(cols.len(), 9, "{setup}: every column: {cols:?}");
            let rps = number(setup, "req/s", cols[0]);
            assert!(rps > 0.0, "{setup}: requests went through: {cols:?}");
            let p50 = number(setup, "p50", cols[1]);
            let p99 = number(setup, "p99", cols[3]);
            assert!(0.0 < p50 && p50 <= p99, "{setup}: p50 <= p99: {cols:?}");
            assert_eq!(cols[5], "0", "{setup}: no failed call: {cols:?}");
            number(setup, "pods CPU", cols[7]);
            if *setup == "direct" {
                // No proxy: no proxy CPU or memory.
                assert_eq!((cols[6], cols[8]), ("-", "-"), "{cols:?}");
            } else {
                number(setup, "proxy CPU", cols[6]);
                assert!(number(setup, "peak RSS", cols[8]) > 1.0, "{setup}: {cols:?}");
            }
        }
    }

    // The goals: each generator's three ratios with a verdict.
    let goals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with(" met") || l.ends_with(" NOT MET"))
        .filter(|l| l.starts_with("h2load ") || l.starts_with("lm-load "))
        .collect();
    assert_eq!(
        goals.len(),
        12,
        "throughput, p99 and CPU goals per generator, for localmesh and localmesh-lean:\n{stdout}"
    );

    // What each feature costs: a row per generator and variant, each with its ratio.
    let costs: Vec<&str> = stdout
        .split_once("\nfeature costs: ")
        .unwrap_or_else(|| panic!("a feature costs table:\n{stdout}"))
        .1
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(costs.len(), 8, "4 variants x 2 generators:\n{stdout}");
    for row in costs {
        let ratio = row
            .split_whitespace()
            .find_map(|w| w.strip_suffix('x'))
            .unwrap_or_else(|| panic!("a ratio in {row:?}"));
        assert!(number(row, "on/off", ratio) > 0.0, "{row}");
    }

    // The east-west line per generator, and the streams: all 50 held through the run.
    let east_west = stdout
        .lines()
        .filter(|l| l.contains(" throughput ") && l.contains("the sidecar (localmesh)"))
        .count();
    assert_eq!(east_west, 2, "{stdout}");
    assert!(
        stdout.contains("held 50 of 50 to the end in every run"),
        "the streams were held:\n{stdout}"
    );
    let per_stream = stdout
        .lines()
        .find_map(|l| l.split_once(" KiB per open stream")?.0.rsplit(' ').next())
        .unwrap_or_else(|| panic!("memory per open stream:\n{stdout}"));
    number("localmesh+streams", "KiB per open stream", per_stream);
}
