//! `localmesh verify` end to end: against `localmesh up` with the real binaries every journey
//! passes; against a port with nothing listening every journey fails naming the connection error.

mod common;

use std::process::{Command, Output};

use common::{HOST, free_port};

fn verify(gw: u16, extra: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .arg("verify")
        .args(["--target", &format!("127.0.0.1:{gw}")])
        .arg("--cacert")
        .arg(common::root().join("gateway/certs/ca.crt"))
        .args(["--authority", HOST])
        .args(extra)
        .output()
        .expect("localmesh verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn rows<'a>(table: &'a str, result: &str) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == result))
        .collect()
}

#[test]
fn verify_passes_every_journey_against_localmesh_up() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = common::Up::start(data.path());
    let gw = up.gateway;
    let (out, table) = verify(gw, &["-n", "300"]);
    let status = up.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{table}");
    assert!(out.status.success(), "verify failed:\n{table}\n{stderr}");
    assert_eq!(rows(&table, "PASS").len(), 7, "7 PASS rows:\n{table}");
    assert!(rows(&table, "FAIL").is_empty(), "{table}");
    for name in [
        "reflection list",
        "GetProduct 123",
        "weighted split",
        "premium to v2",
        "AgentSync by agent-version",
        "frontend home",
        "order via frontend",
    ] {
        assert!(table.contains(name), "row {name:?} in\n{table}");
    }
    assert!(status.success(), "localmesh up exits 0 after SIGTERM: {status}");
}

#[test]
fn verify_fails_every_journey_when_nothing_listens() {
    let gw = free_port();
    let (out, table) = verify(gw, &["-n", "10"]);
    println!("{table}");
    assert!(!out.status.success(), "non-zero exit:\n{table}");
    let fails = rows(&table, "FAIL");
    assert_eq!(fails.len(), 7, "7 FAIL rows:\n{table}");
    for row in fails {
        assert!(
            row.contains("cannot connect to the gateway") && row.contains("refused"),
            "the row names the connection error: {row}"
        );
    }
}

#[test]
fn the_expected_split_comes_from_the_manifests() {
    let share = localmesh::verify::v2_share_from(&common::root(), HOST).expect("weights");
    assert!((share - 0.2).abs() < 1e-9, "80/20 in gateway/httproutes.yaml: {share}");
}
