//! `localmesh verify` end to end: against `localmesh up` with the real binaries every journey
//! passes, the order's trace included (read through the console's Jaeger API); against a port with
//! nothing listening every journey fails naming the connection error.

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
    let jaeger = format!("http://127.0.0.1:{}", up.console);
    let (out, table) = verify(gw, &["-n", "300", "--jaeger", &jaeger]);
    let status = up.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{table}");
    assert!(out.status.success(), "verify failed:\n{table}\n{stderr}");
    assert_eq!(rows(&table, "PASS").len(), 8, "8 PASS rows:\n{table}");
    assert!(rows(&table, "FAIL").is_empty(), "{table}");
    for name in [
        "reflection list",
        "GetProduct 123",
        "weighted split",
        "premium to v2",
        "AgentSync by agent-version",
        "frontend home",
        "order via frontend",
        "order trace in Jaeger",
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
    assert_eq!(fails.len(), 8, "8 FAIL rows:\n{table}");
    for row in &fails[..7] {
        assert!(
            row.contains("cannot connect to the gateway") && row.contains("refused"),
            "the row names the connection error: {row}"
        );
    }
    assert!(fails[7].contains("no order was placed"), "{}", fails[7]);
}

/// A Jaeger answer holding one trace: `spans` as (span id, parent, service).
fn jaeger(spans: &[(&str, Option<&str>, &str)]) -> serde_json::Value {
    let mut processes = serde_json::Map::new();
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|(id, parent, service)| {
            let pid = format!("p{}", processes.len() + 1);
            processes.insert(pid.clone(), serde_json::json!({"serviceName": service, "tags": []}));
            let refs: Vec<serde_json::Value> = parent
                .iter()
                .map(|p| serde_json::json!({"refType": "CHILD_OF", "traceID": "t", "spanID": p}))
                .collect();
            serde_json::json!({"traceID": "t", "spanID": id, "operationName": "op", "references": refs, "processID": pid})
        })
        .collect();
    serde_json::json!({"data": [{"traceID": "t", "spans": spans, "processes": processes}]})
}

#[test]
fn the_trace_check_wants_one_gateway_root_every_parent_and_every_app() {
    use localmesh::verify::check_order_trace;
    let gw = "public-api-gateway-istio.gateway";
    let good = [
        ("a", None, gw),
        ("b", Some("a"), "frontend.default"),
        ("c", Some("b"), "order"),
        ("d", Some("c"), "product"),
        ("e", Some("c"), "payment.default"),
    ];
    let ok = check_order_trace(&jaeger(&good)).expect("a good trace passes");
    assert!(ok.contains("5 spans"), "{ok}");

    let mut orphan = good;
    orphan[4].1 = Some("zz");
    let e = check_order_trace(&jaeger(&orphan)).unwrap_err();
    assert!(e.contains("parent that is not in the trace"), "{e}");

    let mut two_roots = good;
    two_roots[1].1 = None;
    let e = check_order_trace(&jaeger(&two_roots)).unwrap_err();
    assert!(e.contains("2 root spans"), "{e}");

    let mut app_root = good;
    app_root[0].2 = "frontend";
    let e = check_order_trace(&jaeger(&app_root)).unwrap_err();
    assert!(e.contains("root span is frontend's"), "{e}");

    let e = check_order_trace(&jaeger(&good[..4])).unwrap_err();
    assert!(e.contains("payment"), "{e}");
    let e = check_order_trace(&serde_json::json!({"data": []})).unwrap_err();
    assert!(e.contains("0 traces"), "{e}");
}

#[test]
fn the_expected_split_comes_from_the_manifests() {
    let share = localmesh::verify::v2_share_from(&common::root(), HOST).expect("weights");
    assert!((share - 0.2).abs() < 1e-9, "80/20 in gateway/httproutes.yaml: {share}");
}
