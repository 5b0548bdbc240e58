//! The `payment` binary as an operator runs it: config errors, SIGTERM, and
//! what its database file keeps across a restart.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use reqwest::{Client, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

fn payment(envs: &[(&str, &str)]) -> Command {
    testkit::service_command(env!("CARGO_BIN_EXE_payment"), envs)
}

/// Runs the binary expecting it to stop at startup: a binary that serves
/// instead fails here within 10 s (and is killed), rather than hanging.
async fn exits(envs: &[(&str, &str)]) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(10), payment(envs).output())
        .await
        .unwrap_or_else(|_| panic!("still running 10 s after starting with {envs:?}: it should have refused to start"))
        .unwrap()
}

/// A running binary: its HTTP and metrics addresses from the startup log line.
struct Running {
    child: Child,
    url: String,
    metrics_url: String,
}

async fn start(envs: &[(&str, &str)]) -> Running {
    let mut child = payment(envs).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("startup log")
            .unwrap()
            .expect("stdout open");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "payment provider stand-in listening" {
            break v;
        }
    };
    // Keep reading, so the log never fills the pipe and blocks the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running {
        child,
        url: format!("http://{}", started["http"].as_str().unwrap()),
        metrics_url: format!("http://{}/metrics", started["metrics"].as_str().unwrap()),
    }
}

impl Running {
    /// SIGTERM, then exit 0 within 10 s.
    async fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id().unwrap() as i32, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }

    async fn charge(&self, key: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let res = Client::new()
            .post(format!("{}/v1/charges", self.url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("payment answers");
        let (status, headers) = (res.status(), res.headers().clone());
        (status, headers, res.json().await.expect("JSON body"))
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let res = reqwest::get(format!("{}{path_and_query}", self.url))
            .await
            .expect("payment answers");
        (res.status(), res.json().await.expect("JSON body"))
    }

    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url).await.unwrap().text().await.unwrap()
    }
}

fn body(order: &str) -> Value {
    json!({"order_id": order, "amount": "12.50", "currency": "EUR", "customer_id": "c-9"})
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
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
        ("PAYMENT_DB_PATH", "sqlite:/tmp/payment.db"),
        ("PAYMENT_DB_PATH", "/var/lib/payment/"),
        ("PAYMENT_KEY_RETENTION", "a day"),
        ("PAYMENT_KEY_RETENTION", "0s"),
        ("PAYMENT_KEY_RETENTION", "9000h"),
        ("PAYMENT_PURGE_INTERVAL", "-1"),
        ("PAYMENT_PURGE_BATCH", "0"),
        ("PAYMENT_DB_TIMEOUT", "soon"),
    ] {
        let out = exits(&[(var, value)]).await;
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains(value), "{var}={value}: {err}");
    }
}

#[tokio::test]
async fn an_unusable_db_path_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the database's directory should be.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let db = blocker.join("payment.db");
    let out = exits(&[("PAYMENT_DB_PATH", db.to_str().unwrap())]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PAYMENT_DB_PATH") && err.contains(db.to_str().unwrap()) && err.contains("is not a directory"),
        "{err}"
    );
}

#[tokio::test]
async fn it_serves_charges_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payment.db");
    let p = start(&[("POD_NAME", "payment-0"), ("PAYMENT_DB_PATH", db.to_str().unwrap())]).await;
    let (status, headers, _) = p.charge("p-1", &body("o")).await;
    assert_eq!(status, 201);
    assert_eq!(headers["x-served-by"], "payment-0");
    p.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_every_charge_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state").join("payment.db");
    let db = db.to_str().unwrap();

    let p = start(&[("POD_NAME", "payment-0"), ("PAYMENT_DB_PATH", db)]).await;
    let (status, headers, first) = p.charge("restart-1", &body("o-r")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = first["id"].as_str().expect("id").to_owned();
    p.stop().await;

    // A new process (a replaced pod) on the same file.
    let p = start(&[("POD_NAME", "payment-1"), ("PAYMENT_DB_PATH", db)]).await;
    let (status, headers, again) = p.charge("restart-1", &body("o-r")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the retry is a replay, not a new charge: {again}"
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["x-served-by"], "payment-1");
    assert_eq!(again, first, "the first charge, as the first pod answered it");
    assert_eq!(again["served_by"]["pod"], "payment-0");

    let (status, list) = p.get("/v1/charges").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 1, "no second charge: {list}");
    assert_eq!(list["charges"][0], first);
    let (_, by_order) = p.get("/v1/charges?order_id=o-r").await;
    assert_eq!(by_order["count"], 1, "{by_order}");
    let (status, by_id) = p.get(&format!("/v1/charges/{id}")).await;
    assert_eq!((status, &by_id), (StatusCode::OK, &first));

    let (status, by_key) = p.get("/v1/charges?idempotency_key=restart-1").await;
    assert_eq!((status, &by_key), (StatusCode::OK, &first));
    let (status, err) = p.get("/v1/charges?idempotency_key=never-used").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"], "not_found");

    // The key still refuses a different charge after the restart.
    let (status, _, err) = p.charge("restart-1", &body("o-other")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    p.stop().await;
}

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("new-dir");
    let db = state.join("payment.db");
    let p = start(&[("PAYMENT_DB_PATH", db.to_str().unwrap())]).await;
    let (status, _, _) = p.charge("mode-1", &body("o-m")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(mode(&db), 0o600, "the database file");
    assert_eq!(mode(&state), 0o700, "the directory it created");
    let wal = state.join("payment.db-wal");
    assert!(wal.exists(), "WAL mode keeps a -wal file while it runs");
    assert_eq!(mode(&wal), 0o600, "the WAL file");
    p.stop().await;

    // A file that others can read (a volume's group bits, a copy) is narrowed on start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
    let p = start(&[("PAYMENT_DB_PATH", db.to_str().unwrap())]).await;
    assert_eq!(mode(&db), 0o600);
    let (status, _, _) = p.charge("mode-1", &body("o-m")).await;
    assert_eq!(status, StatusCode::OK, "still the same store");
    p.stop().await;
}

#[tokio::test]
async fn expired_keys_are_purged_and_can_be_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payment.db");
    let p = start(&[
        ("PAYMENT_DB_PATH", db.to_str().unwrap()),
        ("PAYMENT_KEY_RETENTION", "1s"),
        ("PAYMENT_PURGE_INTERVAL", "100ms"),
    ])
    .await;
    let (status, _, first) = p.charge("short-lived", &body("o-e")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = p.get("/v1/charges?idempotency_key=short-lived").await;
    assert_eq!(status, StatusCode::OK, "kept while it is young");

    // The background purge deletes it without any request touching the key.
    let purged = "payment_keys_purged_total 1\n";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = p.metrics().await;
        if metrics.contains(purged) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(purged), "{metrics}");
    let (status, err) = p.get("/v1/charges?idempotency_key=short-lived").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert!(err["detail"].as_str().unwrap_or("").contains("expired"), "{err}");
    let (_, list) = p.get("/v1/charges").await;
    assert_eq!(list["count"], 0, "the charge went with its key: {list}");

    let (status, headers, second) = p.charge("short-lived", &body("o-e")).await;
    assert_eq!(status, StatusCode::CREATED, "a new charge: {second}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(second["id"], first["id"]);
    let (_, list) = p.get("/v1/charges").await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["charges"][0]["id"], second["id"]);
    p.stop().await;
}
