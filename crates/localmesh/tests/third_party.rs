//! Third-party clients through the TLS gateway of a real `localmesh up`: Python grpcio (reflection,
//! no generated code), `buf curl` and curl with the listener's SNI and authority; `buf curl` and curl with a
//! wrong SNI (refused in the handshake) and in plaintext (told the port speaks TLS).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::HOST;

fn run(cmd: &mut Command) -> (Output, String) {
    let what = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let show = format!(
        "{what}\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, show)
}

fn ca() -> PathBuf {
    common::root().join("gateway/certs/ca.crt")
}

/// curl to the gateway as `https://sit-gateway.tcex.com.vn:<port>`, resolved to 127.0.0.1.
fn curl_gateway(gw: u16, path: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{HOST}:{gw}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca())
        .arg(format!("https://{HOST}:{gw}{path}"));
    cmd
}

fn buf_curl(schema: &Path) -> Command {
    let mut cmd = Command::new(common::venv_tool("buf"));
    cmd.args(["curl", "--schema"])
        .arg(schema)
        .args(["--protocol", "grpc", "--connect-timeout", "5", "--timeout", "10s"])
        .args(["-d", r#"{"product_id":"123"}"#]);
    cmd
}

#[test]
fn grpcio_and_curl_reach_the_suite_with_the_listener_sni_and_authority() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = common::Up::start(data.path());
    let gw = up.gateway;

    let (out, show) = run(Command::new(common::venv_tool("python"))
        .arg(common::root().join("tests/clients/reflect_client.py"))
        .arg(format!("127.0.0.1:{gw}"))
        .arg("--cacert")
        .arg(ca())
        .args(["--authority", HOST, "--agent-version", "v2.1"])
        // The gateway routes the product service and reflection, not the health service.
        .args(["--skip", "health"]));
    assert!(out.status.success(), "no problems reported: {show}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(seen["tls"], true, "{show}");
    let services = seen["reflection"]["services"].as_array().expect("services");
    assert!(
        services.iter().any(|s| s == "product.ProductService"),
        "reflection through the gateway: {show}"
    );
    let get = &seen["get_product"];
    assert_eq!(
        get["response"]["served_by"]["version"], "v2",
        "premium goes to v2: {show}"
    );
    assert_eq!(get["initial_metadata"]["x-version"], "v2", "{show}");
    let pongs = seen["agent_sync"]["pongs"].as_array().expect("pongs");
    assert_eq!(pongs.len(), 3, "{show}");
    let pods: std::collections::BTreeSet<_> = pongs.iter().map(|p| p["served_by"]["pod"].to_string()).collect();
    assert_eq!(pods.len(), 1, "one stream, one pod: {show}");
    assert!(
        pongs.iter().all(|p| p["served_by"]["version"] == "v2"),
        "agent-version v2.1 reaches v2 only: {show}"
    );
    assert_eq!(seen["errors"]["empty_product_id"]["code"], "INVALID_ARGUMENT", "{show}");

    // buf curl as `localmesh up` prints it: SNI, `Host` as :authority, reflection included.
    let (out, show) = run(Command::new(common::venv_tool("buf"))
        .args(["curl", "--protocol", "grpc", "--timeout", "10s", "--cacert"])
        .arg(ca())
        .args([
            "--servername",
            HOST,
            "-H",
            &format!("Host: {HOST}"),
            "--reflect-header",
            "*",
        ])
        .args(["-d", r#"{"product_id":"123"}"#])
        .arg(format!("https://127.0.0.1:{gw}/product.ProductService/GetProduct")));
    assert!(out.status.success(), "{show}");
    let product: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(product["id"], "123", "{show}");
    assert!(
        product["servedBy"]["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("product-v")),
        "{show}"
    );

    let (out, show) = run(curl_gateway(gw, "/api/products/123").args(["-w", "\n%{http_code} %{http_version}"]));
    assert!(out.status.success(), "{show}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.trim_end().ends_with("200 2"),
        "HTTP/2 200 through the gateway: {show}"
    );
    assert!(text.contains("\"id\":\"123\""), "{show}");

    assert!(up.stop().success(), "exit 0 after SIGTERM");
}

#[test]
fn a_wrong_sni_is_refused_and_plaintext_is_told_the_port_speaks_tls() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = common::Up::start(data.path());
    let gw = up.gateway;
    let schema = common::root().join("proto");
    let url = format!("127.0.0.1:{gw}/product.ProductService/GetProduct");

    // Right SNI, wrong authority: the handshake works and the routing answers.
    let (out, show) = run(buf_curl(&schema)
        .arg("--cacert")
        .arg(ca())
        .args(["--servername", HOST])
        .arg(format!("https://{url}")));
    assert_eq!(
        out.status.code(),
        Some(12 << 3),
        "UNIMPLEMENTED: no route for an IP authority: {show}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route"), "{show}");

    // Another SNI: refused during the handshake, before any request.
    let (out, show) = run(buf_curl(&schema)
        .arg("--cacert")
        .arg(ca())
        .args(["--servername", "other.example.com"])
        .arg(format!("https://{url}")));
    assert_eq!(out.status.code(), Some(14 << 3), "UNAVAILABLE: {show}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls"),
        "a TLS error: {show}"
    );
    let (out, show) = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca())
        .args(["--resolve", &format!("other.example.com:{gw}:127.0.0.1")])
        .arg(format!("https://other.example.com:{gw}/")));
    assert_eq!(out.status.code(), Some(35), "curl: TLS handshake failed: {show}");

    // Plaintext gRPC (as `grpcurl -plaintext`) and plaintext HTTP: the answer says why.
    let (out, show) = run(buf_curl(&schema)
        .arg("--http2-prior-knowledge")
        .arg(format!("http://{url}")));
    assert_eq!(out.status.code(), Some(14 << 3), "UNAVAILABLE: {show}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("is a TLS listener"), "{show}");
    assert!(text.contains("drop -plaintext"), "{show}");
    let (out, show) = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{gw}/")));
    assert!(out.status.success(), "{show}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("is a TLS listener") && text.trim_end().ends_with("400"),
        "{show}"
    );

    // None of that disturbed the gateway.
    let (out, show) = run(&mut curl_gateway(gw, "/healthz"));
    assert!(out.status.success(), "{show}");

    assert!(up.stop().success(), "exit 0 after SIGTERM");
}
