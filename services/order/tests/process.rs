//! The `order` binary as an operator runs it: config errors exit 2 naming
//! the variable, the default SQLite file under DATA_DIR, SIGTERM exits 0.

mod common;

use std::time::Duration;

use proto::order::{OrderStatus, order_service_client::OrderServiceClient};
use serde_json::Value;
use sqlx::Row as _;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use tokio_stream::StreamExt as _;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn order(envs: &[(&str, &str)]) -> Command {
    testkit::service_command(env!("CARGO_BIN_EXE_order"), envs)
}

/// The gRPC address from the "listening" line; later lines go to the receiver.
async fn listening(child: &mut Child) -> (String, mpsc::UnboundedReceiver<Value>) {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let _ = tx.send(v);
        }
    });
    loop {
        let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("startup log")
            .expect("stdout open");
        if v["message"] == "order service listening" {
            return (v["grpc"].as_str().expect("grpc").to_owned(), rx);
        }
    }
}

#[tokio::test]
async fn a_bad_setting_stops_startup_naming_the_variable() {
    for (var, value, words) in [
        ("PORT", "http", &["PORT", "number"][..]),
        ("PAYMENT_TIMEOUT_MS", "0", &["PAYMENT_TIMEOUT_MS", "1 to 600000"][..]),
        ("PAYMENT_TIMEOUT_MS", "soon", &["PAYMENT_TIMEOUT_MS"][..]),
        ("PAYMENT_URL", "ftp://pay", &["PAYMENT_URL", "http://"][..]),
        (
            "PRODUCT_SERVICE_ADDR",
            "product-service:50051",
            &["PRODUCT_SERVICE_ADDR", "http://"][..],
        ),
        (
            "DATABASE_URL",
            "mysql://u:hunter2@db/orders",
            &["DATABASE_URL", "postgres://", "u:***@db"][..],
        ),
        (
            "DATABASE_URL",
            "postgres://u@db:notaport/orders",
            &["DATABASE_URL", "PostgreSQL URL"][..],
        ),
        ("BIND_ADDR", "localhost", &["BIND_ADDR"][..]),
        ("SERVICE_VERSION", "1", &["SERVICE_VERSION"][..]),
        ("SHUTDOWN_GRACE_SECS", "-1", &["SHUTDOWN_GRACE_SECS"][..]),
        (
            "ORDER_SETTLE_INTERVAL",
            "soon",
            &["ORDER_SETTLE_INTERVAL", "5s, 250ms or 1m"][..],
        ),
        (
            "ORDER_SETTLE_INTERVAL",
            "0s",
            &["ORDER_SETTLE_INTERVAL", "greater than zero"][..],
        ),
        (
            "ORDER_SETTLE_INTERVAL",
            "2h",
            &["ORDER_SETTLE_INTERVAL", "at most 3600s"][..],
        ),
        (
            "ORDER_SETTLE_AFTER",
            "2s",
            &["ORDER_SETTLE_AFTER=\"2s\"", "longer than PAYMENT_TIMEOUT_MS (3000 ms)"][..],
        ),
        ("ORDER_SETTLE_BATCH", "0", &["ORDER_SETTLE_BATCH", "1 to 1000"][..]),
        ("ORDER_SETTLE_BATCH", "many", &["ORDER_SETTLE_BATCH", "1 to 1000"][..]),
        (
            "ORDER_SETTLE_LEASE",
            "5s",
            &["ORDER_SETTLE_LEASE=\"5s\"", "twice PAYMENT_TIMEOUT_MS (6000 ms)"][..],
        ),
        (
            "ORDER_SETTLE_MAX_AGE",
            "10s",
            &["ORDER_SETTLE_MAX_AGE=\"10s\"", "longer than ORDER_SETTLE_AFTER (10s)"][..],
        ),
        ("ORDER_SETTLE_MAX_AGE", "400d", &["ORDER_SETTLE_MAX_AGE", "at most"][..]),
    ] {
        let out = order(&[(var, value)]).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in words {
            assert!(err.contains(w), "{var}={value}: stderr {err:?} lacks {w:?}");
        }
        assert!(!err.contains("hunter2"), "the password is never printed: {err}");
    }
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_created_stops_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data_dir = file.join("data");
    let out = order(&[("DATA_DIR", data_dir.to_str().unwrap())])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DATA_DIR") && err.contains(&data_dir.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_land_in_the_sqlite_file_under_data_dir_and_sigterm_exits_0() {
    let product = common::start_product().await;
    let payment = payment::spawn(payment::Config::for_test(), common::registry())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut child = order(&[
        ("DATA_DIR", data_dir.to_str().unwrap()),
        ("PRODUCT_SERVICE_ADDR", &product.url()),
        ("PAYMENT_URL", &payment.url()),
        ("POD_NAME", "order-7d9f-abc"),
        ("SHUTDOWN_GRACE_SECS", "5"),
    ])
    .spawn()
    .unwrap();
    let (addr, mut logs) = listening(&mut child).await;
    let url = format!("http://{addr}");

    let mut health = HealthClient::new(common::channel(&url).await);
    let mut watch = health
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let mut client = OrderServiceClient::new(common::channel(&url).await);
    let res = client
        .create_order(common::create("k-bin", "c-bin", &[("123", 2)]))
        .await
        .expect("order");
    assert_eq!(res.metadata().get("x-served-by").unwrap(), "order-7d9f-abc");
    let o = res.into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);

    // Where the docs say it lands: DATA_DIR/orders.db, table orders.
    let db_file = data_dir.join("orders.db");
    assert!(db_file.is_file(), "{} exists", db_file.display());
    let pool = sqlx::sqlite::SqlitePool::connect(&format!("sqlite:{}", db_file.display()))
        .await
        .unwrap();
    let row = sqlx::query("SELECT id, status, total_micros FROM orders WHERE idempotency_key = 'k-bin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("id"), o.id);
    assert_eq!(row.get::<String, _>("status"), "PAID");
    assert_eq!(row.get::<i64, _>("total_micros"), 698_000_000);
    pool.close().await;

    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) }, 0);
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::NotServing);
    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let mut lines = Vec::new();
    // The process has exited: read its stdout to the end (the channel closes at EOF).
    while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(5), logs.recv()).await {
        lines.push(v);
    }
    assert!(lines.iter().all(|v| v["pod"] == "order-7d9f-abc"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "order stored" && v["order_id"] == o.id.as_str())
    );
    assert!(lines.iter().any(|v| v["message"] == "shutdown complete"));
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The SQLite file holds customers' orders: the service creates it (and
/// SQLite its WAL and shared-memory files) readable by its own user only,
/// whatever the umask lets other files be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_under_data_dir_is_created_with_mode_0600() {
    let product = common::start_product().await;
    let payment = payment::spawn(payment::Config::for_test(), common::registry())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut child = order(&[
        ("DATA_DIR", data_dir.to_str().unwrap()),
        ("PRODUCT_SERVICE_ADDR", &product.url()),
        ("PAYMENT_URL", &payment.url()),
    ])
    .spawn()
    .unwrap();
    let (addr, _logs) = listening(&mut child).await;
    let mut client = OrderServiceClient::new(common::channel(&format!("http://{addr}")).await);
    let o = client
        .create_order(common::create("k-mode", "c-mode", &[("1", 1)]))
        .await
        .expect("order")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    for name in ["orders.db", "orders.db-wal", "orders.db-shm"] {
        assert_eq!(mode(&data_dir.join(name)), 0o600, "{name}");
    }
    child.kill().await.unwrap();
}

/// A file that an older version (or a hand) left readable by others is
/// narrowed to 0600 when the service opens it; its orders stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_sqlite_file_readable_by_others_is_narrowed_to_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("orders.db");
    let shm = tmp.path().join("orders.db-shm");
    for f in [&file, &shm] {
        std::fs::write(f, "").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = order::store::Store::open(&order::Database::Sqlite(file.clone()))
        .await
        .expect("opens");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&shm), 0o600);
    store.migrate().await.expect("an empty file is an empty database");
    store.close().await;
}

/// The binary's settler, configured by its environment: an order left
/// PENDING by a provider that was down is charged once the provider is
/// back, with a JSON line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settler_settles_a_pending_order_and_logs_a_json_line() {
    let product = common::start_product().await;
    let mut cfg = payment::Config::for_test();
    cfg.error_percent = 100.0;
    let payment = payment::spawn(cfg, common::registry()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = order(&[
        ("DATA_DIR", tmp.path().to_str().unwrap()),
        ("PRODUCT_SERVICE_ADDR", &product.url()),
        ("PAYMENT_URL", &payment.url()),
        ("PAYMENT_TIMEOUT_MS", "500"),
        ("ORDER_SETTLE_INTERVAL", "100ms"),
        ("ORDER_SETTLE_AFTER", "600ms"),
        ("ORDER_SETTLE_BATCH", "10"),
        ("ORDER_SETTLE_LEASE", "5s"),
    ])
    .spawn()
    .unwrap();
    let (addr, mut logs) = listening(&mut child).await;
    let mut client = OrderServiceClient::new(common::channel(&format!("http://{addr}")).await);
    let e = client
        .create_order(common::create("k-settle", "c-1", &[("123", 1)]))
        .await
        .unwrap_err();
    let id = e.metadata().get("x-order-id").unwrap().to_str().unwrap().to_owned();

    // While the provider answers 503 the order stays PENDING, logged as such.
    let line = |want: &'static str| {
        let id = id.clone();
        move |v: &Value| v["message"].as_str().is_some_and(|m| m.starts_with(want)) && v["order_id"] == id.as_str()
    };
    let unsettled = next_matching(&mut logs, line("pending order still unsettled")).await;
    assert_eq!(unsettled["outcome"], "still_unknown");
    assert_eq!(unsettled["level"], "WARN", "{unsettled}");
    assert!(unsettled["why"].as_str().unwrap().contains("503"), "{unsettled}");

    payment.faults().set_error_percent(0.0);
    let settled = next_matching(&mut logs, line("pending order settled")).await;
    assert_eq!(settled["outcome"], "charged", "{settled}");
    assert_eq!(settled["status"], "PAID");
    assert!(settled["charge_id"].as_str().unwrap().starts_with("ch_"), "{settled}");
    assert!(settled["age_ms"].as_i64().unwrap() >= 600, "{settled}");
    assert!(settled["attempt"].as_i64().unwrap() >= 2, "{settled}");
    let o = client
        .get_order(proto::order::GetOrderRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert_eq!(settled["charge_id"], o.payment_reference.as_str());
    child.kill().await.unwrap();
}

/// The next log line that `matches`, within ten seconds.
async fn next_matching(logs: &mut mpsc::UnboundedReceiver<Value>, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = tokio::time::timeout_at(deadline, logs.recv())
            .await
            .expect("the log line within 10 s")
            .expect("stdout open");
        if matches(&v) {
            return v;
        }
    }
}
