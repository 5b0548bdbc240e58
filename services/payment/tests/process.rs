//! The `payment` binary as an operator runs it: config errors and SIGTERM.

use std::time::Duration;

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn payment(envs: &[(&str, &str)]) -> Command {
    testkit::service_command(env!("CARGO_BIN_EXE_payment"), envs)
}

#[tokio::test]
async fn a_bad_setting_stops_startup_naming_the_variable() {
    for (var, value) in [
        ("PAYMENT_FAILURE_PERCENT", "150"),
        ("PAYMENT_ERROR_PERCENT", "lots"),
        ("PAYMENT_LATENCY_MS", "-3"),
        ("PORT", "http"),
        ("BIND_ADDR", "localhost"),
        ("SHUTDOWN_GRACE_SECS", "x"),
    ] {
        let out = payment(&[(var, value)]).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains(value), "{var}={value}: {err}");
    }
}

#[tokio::test]
async fn it_serves_charges_and_exits_0_on_sigterm() {
    let mut child = payment(&[("POD_NAME", "payment-0")]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("startup log")
            .unwrap()
            .expect("stdout open");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "payment provider stand-in listening" {
            break v["http"].as_str().unwrap().to_owned();
        }
    };
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/v1/charges"))
        .header("Idempotency-Key", "p-1")
        .json(&serde_json::json!({"order_id": "o", "amount": "1.00", "currency": "USD", "customer_id": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-served-by"], "payment-0");

    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
