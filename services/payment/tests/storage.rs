//! The stand-in on a database file, over real HTTP: what the file keeps and
//! what it guarantees when several servers share it.

use std::{path::Path, time::Duration};

use payment::{Config, Handle, Storage};
use reqwest::{Client, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

fn on_file(path: &Path) -> Config {
    let mut cfg = Config::for_test();
    cfg.storage = Storage::File(path.to_owned());
    cfg
}

async fn start(cfg: Config) -> Handle {
    payment::spawn(cfg, telemetry::prometheus::Registry::new())
        .await
        .expect("payment starts")
}

async fn charge(h: &Handle, key: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    let res = Client::new()
        .post(format!("{}/v1/charges", h.url()))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("payment answers");
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.expect("JSON body"))
}

async fn list(h: &Handle) -> Value {
    let res = reqwest::get(format!("{}/v1/charges", h.url())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn body(order: &str) -> Value {
    json!({"order_id": order, "amount": "5.00", "currency": "USD", "customer_id": "c-1"})
}

/// Counts (created, replayed) and the distinct charge ids among the answers.
fn tally(results: &[(StatusCode, HeaderMap, Value)]) -> ((usize, usize), usize) {
    let created = results.iter().filter(|(s, _, _)| *s == StatusCode::CREATED).count();
    let replayed = results
        .iter()
        .filter(|(s, h, _)| *s == StatusCode::OK && h["idempotent-replayed"] == "true")
        .count();
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, _, b)| b["id"].clone()).collect();
    ((created, replayed), ids.len())
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_charge_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = on_file(&dir.path().join("payment.db"));
    cfg.latency = Duration::from_millis(100);
    let h = start(cfg).await;
    let b = body("o-race");
    let results = futures_util::future::join_all((0..40).map(|_| charge(&h, "race-key", &b))).await;
    assert_eq!(tally(&results), ((1, 39), 1), "{results:?}");
    assert_eq!(list(&h).await["count"], 1);
    h.shutdown().await.unwrap();
}

/// Two servers with their own connections and locks, one file: only the
/// database stands between a key and a second charge.
#[tokio::test]
async fn two_servers_on_one_file_make_one_charge_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payment.db");
    let mut cfg = on_file(&db);
    cfg.latency = Duration::from_millis(50);
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    for round in 0..5 {
        let key = format!("shared-{round}");
        let req = body(&format!("o-{round}"));
        let calls = (0..40).map(|i| charge(if i % 2 == 0 { &a } else { &b }, &key, &req));
        let results = futures_util::future::join_all(calls).await;
        let bad: Vec<_> = results
            .iter()
            .filter(|(s, _, _)| *s != StatusCode::CREATED && *s != StatusCode::OK)
            .collect();
        assert!(bad.is_empty(), "round {round}: {bad:?}");
        assert_eq!(tally(&results), ((1, 39), 1), "round {round}");
    }
    assert_eq!(list(&a).await["count"], 5);
    assert_eq!(list(&b).await["count"], 5);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_server_started_again_on_the_file_replays_and_lists_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("payment.db");
    let h = start(on_file(&db)).await;
    let (status, _, first) = charge(&h, "k-1", &body("o-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, second) = charge(&h, "k-2", &body("o-2")).await;
    assert_eq!(status, StatusCode::CREATED);
    h.shutdown().await.unwrap();

    let h = start(on_file(&db)).await;
    let (status, headers, again) = charge(&h, "k-2", &body("o-2")).await;
    assert_eq!((status, &again), (StatusCode::OK, &second));
    assert_eq!(headers["idempotent-replayed"], "true");
    let all = list(&h).await;
    assert_eq!(all["charges"], json!([first, second]), "oldest first");
    h.shutdown().await.unwrap();
}
