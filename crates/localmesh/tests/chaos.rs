//! The fault matrix against a real `localmesh up`: each fault replayed under load, then an audit
//! of what the clients were told against what the system holds (orders through `ListOrders`,
//! charges at the payment provider), printed as one table:
//!
//! - lost orders: a client was given an order that does not exist;
//! - duplicate rows: more than one order for one idempotency key;
//! - double charges: more than one succeeded charge for one order;
//! - pending: orders still PENDING once the order service's settler has had its interval;
//! - failed calls: calls that failed although their client retried as docs/order.md tells it to;
//! - abandoned: calls whose client gave up at the first error (as a shopper closes the page):
//!   their orders are the settler's to finish.
//!
//! `make test` runs the short form; `make chaos` runs it with `CHAOS=full` (more orders, longer
//! load) and the table it prints is the one in docs/order.md.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use proto::order::order_service_client::OrderServiceClient;
use proto::order::{CreateOrderRequest, ListOrdersRequest, Order, OrderItem, OrderStatus};
use tonic::Code;

mod common;

use common::Up;

/// How big each scenario is.
#[derive(Clone, Copy)]
struct Scale {
    orders: usize,
    concurrency: usize,
    load: &'static str,
    streams: usize,
}

fn scale() -> Scale {
    match std::env::var("CHAOS").as_deref() {
        Ok("full") => Scale {
            orders: 300,
            concurrency: 16,
            load: "10s",
            streams: 1000,
        },
        _ => Scale {
            orders: 45,
            concurrency: 6,
            load: "3s",
            streams: 200,
        },
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    scenario: String,
    calls: u64,
    failed_calls: u64,
    abandoned: u64,
    lost_orders: u64,
    duplicate_rows: u64,
    double_charges: u64,
    pending: u64,
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<34} {:>7} {:>7} {:>9} {:>6} {:>10} {:>8} {:>8}\n",
        "scenario", "calls", "failed", "abandoned", "lost", "duplicate", "double", "pending"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<34} {:>7} {:>7} {:>9} {:>6} {:>10} {:>8} {:>8}\n",
            r.scenario,
            r.calls,
            r.failed_calls,
            r.abandoned,
            r.lost_orders,
            r.duplicate_rows,
            r.double_charges,
            r.pending
        ));
    }
    out
}

/// The pods `up` runs now: name -> (pid, address).
async fn pods(up: &Up) -> BTreeMap<String, (i32, Option<String>)> {
    let dump = common::config_dump(up.admin).await;
    dump["pods"]
        .as_object()
        .expect("pods")
        .iter()
        .map(|(name, p)| {
            let pid = p["pid"].as_i64().unwrap_or(0) as i32;
            (name.clone(), (pid, p["addr"].as_str().map(str::to_string)))
        })
        .collect()
}

async fn pod_of(up: &Up, prefix: &str) -> (String, i32, Option<String>) {
    pods(up)
        .await
        .into_iter()
        .find(|(name, (pid, _))| name.starts_with(prefix) && *pid > 0)
        .map(|(name, (pid, addr))| (name, pid, addr))
        .unwrap_or_else(|| panic!("a running {prefix}* pod"))
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a child of the `localmesh up` this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to {pid}");
}

/// `localmesh load --json` through the gateway while `during` runs; the summary's (requests,
/// failed).
async fn under_load<F: std::future::Future<Output = ()>>(up: &Up, s: Scale, during: F) -> (u64, u64) {
    under_load_for(up, s.load, during).await
}

/// [`under_load`] for `duration`.
async fn under_load_for<F: std::future::Future<Output = ()>>(up: &Up, duration: &str, during: F) -> (u64, u64) {
    let duration = duration.to_string();
    let root = up.root.clone();
    let gateway = up.gateway;
    let load = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_localmesh"))
            .args(["load", "--target", &format!("127.0.0.1:{gateway}")])
            .arg("--cacert")
            .arg(root.join("gateway/certs/ca.crt"))
            .args(["--duration", &duration, "--concurrency", "8", "--json"])
            .stderr(std::process::Stdio::inherit())
            .output()
    });
    during.await;
    let out = load.await.expect("join").expect("localmesh load ran");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON summary");
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        eprintln!("load errors: {}", v["errors"]);
    }
    (v["requests"].as_u64().unwrap_or(0), v["failed"].as_u64().unwrap_or(0))
}

/// One client's CreateOrder through the gateway at `port`; a `patient` one retries with the same
/// key on the answers docs/order.md says to retry (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED),
/// for up to 20 s.
async fn create_order(
    root: &Path,
    port: u16,
    key: String,
    customer: String,
    patient: bool,
) -> Result<Order, tonic::Status> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut client = OrderServiceClient::new(common::gateway_channel(root, port).await);
        let req = CreateOrderRequest {
            idempotency_key: key.clone(),
            customer_id: customer.clone(),
            items: vec![OrderItem {
                product_id: "123".into(),
                quantity: 1,
            }],
        };
        match client.create_order(req).await {
            Ok(o) => return Ok(o.into_inner()),
            Err(e)
                if patient
                    && matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled)
                    && started.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every order of `customer`, through ListOrders.
async fn orders_of(up: &Up, customer: &str) -> Vec<Order> {
    let mut client = OrderServiceClient::new(common::gateway_channel(&up.root, up.gateway).await);
    let mut out = Vec::new();
    for page in 1.. {
        let resp = client
            .list_orders(ListOrdersRequest {
                customer_id: customer.into(),
                page_size: 100,
                page_number: Some(page),
            })
            .await
            .expect("ListOrders")
            .into_inner();
        let n = resp.orders.len();
        out.extend(resp.orders);
        if n < 100 {
            break;
        }
    }
    out
}

/// Succeeded charges per order id at the payment provider.
async fn charges(up: &Up) -> HashMap<String, u64> {
    let (_, _, addr) = pod_of(up, "payment-").await;
    let addr = addr.expect("the payment pod's address");
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let body = common::admin_get(port, "/v1/charges").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("charges JSON");
    let mut out = HashMap::new();
    for c in v["charges"].as_array().expect("charges") {
        if c["status"] == "succeeded" {
            *out.entry(c["order_id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    out
}

/// A burst of CreateOrder calls for a fresh customer, a third of them reusing the previous call's
/// key, with `fault` run after a third of the calls have started; then the audit.
async fn order_burst<F>(up: &Up, s: Scale, scenario: &str, fault: F) -> Row
where
    F: std::future::Future<Output = ()>,
{
    let customer = format!("chaos-{scenario}-{}", std::process::id());
    let keys: Vec<String> = (0..s.orders)
        .map(|i| format!("{customer}-{}", if i % 3 == 2 { i - 1 } else { i }))
        .collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(s.concurrency));
    let mut calls = tokio::task::JoinSet::new();
    let mut fault = Some(fault);
    for (i, key) in keys.into_iter().enumerate() {
        if i == s.orders / 3
            && let Some(f) = fault.take()
        {
            f.await;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (customer, root, gateway) = (customer.clone(), up.root.clone(), up.gateway);
        // Every third client gives up at its first error; the others retry.
        let patient = i % 3 != 0;
        calls.spawn(async move {
            let r = create_order(&root, gateway, key.clone(), customer, patient).await;
            drop(permit);
            (patient, r)
        });
    }
    let answers: Vec<(bool, Result<Order, tonic::Status>)> = calls.join_all().await;
    // What the settler resolves, it resolves within its age and interval (settle_quickly: about
    // 5 s); 30 s bounds it generously for a loaded machine and an order pod that was itself
    // replaced meanwhile.
    let started = Instant::now();
    let rows = loop {
        let rows = orders_of(up, &customer).await;
        let pending = rows.iter().any(|o| o.status == OrderStatus::Pending as i32);
        if !pending || started.elapsed() > Duration::from_secs(30) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let charged = charges(up).await;
    let mut by_key: HashMap<&str, u64> = HashMap::new();
    for o in &rows {
        *by_key.entry(o.idempotency_key.as_str()).or_default() += 1;
    }
    let ids: std::collections::HashSet<&str> = rows.iter().map(|o| o.id.as_str()).collect();
    Row {
        scenario: scenario.into(),
        calls: answers.len() as u64,
        failed_calls: answers.iter().filter(|(patient, r)| *patient && r.is_err()).count() as u64,
        abandoned: answers.iter().filter(|(patient, r)| !*patient && r.is_err()).count() as u64,
        lost_orders: answers
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(|o| !ids.contains(o.id.as_str())))
            .count() as u64,
        duplicate_rows: by_key.values().map(|n| n - 1).sum(),
        double_charges: rows
            .iter()
            .map(|o| charged.get(&o.id).copied().unwrap_or(0).saturating_sub(1))
            .sum(),
        pending: rows.iter().filter(|o| o.status == OrderStatus::Pending as i32).count() as u64,
    }
}

/// `n` idle premium WatchPrices streams through the gateway, 100 to a connection.
async fn idle_streams(up: &Up, n: usize) -> Vec<tonic::Streaming<proto::product::PriceUpdate>> {
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(100) {
        channels.push(common::gateway_channel(&up.root, up.gateway).await);
    }
    common::idle_premium_streams(&channels, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_loses_no_order_and_charges_each_once() {
    let s = scale();
    let copy = tempfile::tempdir().expect("tempdir");
    let root = common::repo_copy(copy.path(), &settle_quickly());
    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start_with(data.path(), &root, &[]);
    let mut rows = Vec::new();

    let (calls, failed) = under_load(&up, s, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, pid, _) = pod_of(&up, "product-v1-").await;
        signal(pid, libc::SIGKILL);
    })
    .await;
    rows.push(Row {
        scenario: "product-v1 pod killed under load".into(),
        calls,
        failed_calls: failed,
        ..Row::default()
    });
    wait_ready(&up).await;

    let (calls, failed) = under_load(&up, s, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, pid, _) = pod_of(&up, "product-v1-").await;
        signal(pid, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal(pid, libc::SIGCONT);
    })
    .await;
    rows.push(Row {
        scenario: "product-v1 pod hung under load".into(),
        calls,
        failed_calls: failed,
        ..Row::default()
    });

    let streams = idle_streams(&up, s.streams).await;
    let (calls, failed) = under_load(&up, s, async {}).await;
    rows.push(Row {
        scenario: format!("{} idle streams + unary load", streams.len()),
        calls,
        failed_calls: failed,
        ..Row::default()
    });
    drop(streams);

    rows.push(
        order_burst(&up, s, "order-pod-killed", async {
            let (_, pid, _) = pod_of(&up, "order-").await;
            signal(pid, libc::SIGKILL);
        })
        .await,
    );
    wait_ready(&up).await;
    rows.push(
        order_burst(&up, s, "payment-pod-killed", async {
            let (_, pid, _) = pod_of(&up, "payment-").await;
            signal(pid, libc::SIGKILL);
        })
        .await,
    );

    // Every Deployment restarted at once, as `kubectl rollout restart` does it, under unary load
    // and during a burst of orders: the RollingUpdate ones surge a new pod first, payment
    // (Recreate: its volume is ReadWriteOnce) is down while it restarts.
    let before: Vec<String> = pods(&up).await.into_keys().collect();
    let mut burst = Row::default();
    let (calls, failed) = under_load_for(&up, "12s", async {
        burst = order_burst(&up, s, "rolling-restart", async { restart_all(&up.root) }).await;
    })
    .await;
    wait_rolled_out(&up, &before).await;
    rows.push(Row {
        scenario: "rolling restart: unary load".into(),
        calls,
        failed_calls: failed,
        ..Row::default()
    });
    rows.push(burst);

    let printed = table(&rows);
    println!("{printed}");
    eprintln!("{printed}");
    for r in &rows {
        assert_eq!(
            (r.lost_orders, r.duplicate_rows, r.double_charges, r.pending),
            (0, 0, 0, 0),
            "nothing lost, nothing twice, nothing left pending:\n{printed}"
        );
        assert!(r.calls > 0, "every scenario ran calls:\n{printed}");
    }
    // Clients that retry as docs/order.md says see every order through: the order service and
    // the payment provider come back within the retries' 20 s.
    // A rolling restart keeps a ready pod of every RollingUpdate Deployment throughout; a product
    // call held by a pod that dies or hangs is retried on another (the routes' `retry`).
    for r in rows.iter().filter(|r| {
        r.scenario.ends_with("-killed") || r.scenario.starts_with("rolling") || r.scenario.starts_with("product-v1")
    }) {
        assert_eq!(r.failed_calls, 0, "{printed}");
    }
}

/// The order service's settler, quicker than its defaults (10 s, then every 5 s), so that the
/// audit can wait it out: orders PENDING for 4 s (longer than its 3 s payment timeout) are
/// settled within the next second.
fn settle_quickly() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![(
        "manifests/base/order.yaml",
        "        - {name: SHUTDOWN_GRACE_SECS, value: \"10\"}\n",
        "        - {name: SHUTDOWN_GRACE_SECS, value: \"10\"}\n        - {name: ORDER_SETTLE_AFTER, value: \"4s\"}\n        - {name: ORDER_SETTLE_INTERVAL, value: \"1s\"}\n",
    )]
}

/// `kubectl rollout restart` of every Deployment in one change: a `restartedAt` annotation on each
/// pod template.
fn restart_all(root: &std::path::Path) {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    for file in ["product", "order", "payment", "frontend"] {
        let path = root.join(format!("manifests/base/{file}.yaml"));
        let text = std::fs::read_to_string(&path).expect("read");
        let docs: Vec<String> = text
            .split("\n---\n")
            .map(|d| {
                let Some(t) = d
                    .find("\n  template:\n    metadata:\n")
                    .filter(|_| d.contains("kind: Deployment"))
                else {
                    return d.to_string();
                };
                let restarted = format!("        kubectl.kubernetes.io/restartedAt: \"{at}\"\n");
                match d[t..].find("\n      annotations:\n") {
                    Some(a) => {
                        let at = t + a + "\n      annotations:\n".len();
                        format!("{}{restarted}{}", &d[..at], &d[at..])
                    }
                    None => {
                        let at = t + "\n  template:\n    metadata:\n".len();
                        format!("{}      annotations:\n{restarted}{}", &d[..at], &d[at..])
                    }
                }
            })
            .collect();
        common::apply(&path, &docs.join("\n---\n"));
    }
}

/// Every pod of `before` replaced and gone, every new one ready, within 60 s.
async fn wait_rolled_out(up: &Up, before: &[String]) {
    let started = Instant::now();
    loop {
        let dump = common::config_dump(up.admin).await;
        let pods = dump["pods"].as_object().expect("pods");
        let done = pods.keys().all(|n| !before.contains(n)) && pods.values().all(|p| p["ready"] == true);
        if done {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "every pod replaced: {dump}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every pod ready again (after a kill), within 20 s.
async fn wait_ready(up: &Up) {
    let started = Instant::now();
    loop {
        let dump = common::config_dump(up.admin).await;
        let ready = dump["pods"]
            .as_object()
            .is_some_and(|p| p.values().all(|p| p["ready"] == true));
        if ready {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "pods ready again: {dump}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
