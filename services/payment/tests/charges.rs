//! The stand-in over real HTTP, as the order service and a person with curl use it.

use std::time::Duration;

use payment::{Config, Handle};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn start(cfg: Config) -> Handle {
    payment::spawn(cfg, telemetry::prometheus::Registry::new())
        .await
        .expect("payment starts")
}

fn body(order: &str, amount: &str) -> Value {
    json!({"order_id": order, "amount": amount, "currency": "USD", "customer_id": "c-1"})
}

async fn charge(h: &Handle, key: Option<&str>, body: &Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = Client::new().post(format!("{}/v1/charges", h.url())).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("payment answers");
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.expect("JSON body"))
}

async fn get(h: &Handle, path: &str) -> (StatusCode, Value) {
    let res = reqwest::get(format!("{}{path}", h.url()))
        .await
        .expect("payment answers");
    (res.status(), res.json().await.expect("JSON body"))
}

async fn charges(h: &Handle) -> Vec<Value> {
    let (status, v) = get(h, "/v1/charges").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["count"].as_u64(), v["charges"].as_array().map(|a| a.len() as u64));
    v["charges"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_charge_is_made_once_and_replayed_for_the_same_key() {
    let h = start(Config::for_test()).await;
    let (status, headers, first) = charge(&h, Some("order-o1"), &body("o1", "19.99")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("ch_"), "{id}");
    assert_eq!(first["status"], "succeeded");
    assert_eq!(
        (
            &first["order_id"],
            &first["amount"],
            &first["currency"],
            &first["customer_id"]
        ),
        (&json!("o1"), &json!("19.99"), &json!("USD"), &json!("c-1"))
    );
    assert!(first["created_at"].as_str().unwrap_or("").ends_with('Z'), "{first}");
    assert_eq!(first["served_by"]["service"], "payment");
    assert_eq!(first["served_by"]["pod"], "payment-test-0");
    assert_eq!(headers["x-served-by"], "payment-test-0");
    assert_eq!(headers["location"], format!("/v1/charges/{id}").as_str());
    assert!(headers.get("idempotent-replayed").is_none());

    // "19.990" is the same amount: the same request, so the same charge.
    let (status, headers, again) = charge(&h, Some("order-o1"), &body("o1", "19.990")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again, first);

    let all = charges(&h).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], id.as_str());
    let (status, one) = get(&h, &format!("/v1/charges/{id}")).await;
    assert_eq!((status, &one), (StatusCode::OK, &first));
    let (_, filtered) = get(&h, "/v1/charges?order_id=other").await;
    assert_eq!(filtered["count"], 0);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_same_key_for_a_different_charge_is_a_conflict() {
    let h = start(Config::for_test()).await;
    let (status, _, _) = charge(&h, Some("k-1"), &body("o1", "10.00")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, err) = charge(&h, Some("k-1"), &body("o1", "11.00")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"], "idempotency_key_reused");
    let detail = err["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("\"k-1\"") && detail.contains("10.00") && detail.contains("new key"),
        "{detail}"
    );
    assert_eq!(charges(&h).await.len(), 1, "no second charge");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_charge() {
    let mut cfg = Config::for_test();
    // Long enough that all requests overlap.
    cfg.latency = Duration::from_millis(100);
    let h = start(cfg).await;
    let b = body("o-race", "5.00");
    let calls = (0..40).map(|_| charge(&h, Some("race-key"), &b));
    let results = futures_util::future::join_all(calls).await;
    let created = results.iter().filter(|(s, _, _)| *s == StatusCode::CREATED).count();
    let replayed = results
        .iter()
        .filter(|(s, h, _)| *s == StatusCode::OK && h["idempotent-replayed"] == "true")
        .count();
    assert_eq!((created, replayed), (1, 39));
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, _, b)| b["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(charges(&h).await.len(), 1);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_400_naming_the_header_or_field() {
    let h = start(Config::for_test()).await;
    let (status, _, err) = charge(&h, None, &body("o1", "1.00")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "missing_idempotency_key");
    assert!(
        err["detail"].as_str().unwrap_or("").contains("Idempotency-Key"),
        "{err}"
    );

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"amount": "1.00", "currency": "USD", "customer_id": "c"}),
            "order_id",
            "order_id is required",
        ),
        (
            json!({"order_id": "o", "currency": "USD", "customer_id": "c"}),
            "amount",
            "amount is required",
        ),
        (
            json!({"order_id": "o", "amount": 19.99, "currency": "USD", "customer_id": "c"}),
            "amount",
            "decimal string",
        ),
        (
            json!({"order_id": "o", "amount": "-5", "currency": "USD", "customer_id": "c"}),
            "amount",
            "\"-5\"",
        ),
        (
            json!({"order_id": "o", "amount": "0.00", "currency": "USD", "customer_id": "c"}),
            "amount",
            "greater than zero",
        ),
        (
            json!({"order_id": "o", "amount": "1.1234567", "currency": "USD", "customer_id": "c"}),
            "amount",
            "7 decimal places",
        ),
        (
            json!({"order_id": "o", "amount": "1", "currency": "usd", "customer_id": "c"}),
            "currency",
            "ISO 4217",
        ),
        (
            json!({"order_id": "o", "amount": "1", "customer_id": "c"}),
            "currency",
            "currency is required",
        ),
        (
            json!({"order_id": "o", "amount": "1", "currency": "USD", "customer_id": 7}),
            "customer_id",
            "must be a string",
        ),
        (
            json!({"order_id": " ", "amount": "1", "currency": "USD", "customer_id": "c"}),
            "order_id",
            "printable",
        ),
    ];
    for (b, field, words) in cases {
        let (status, _, err) = charge(&h, Some("k"), &b).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(err["error"], "invalid_request", "{b}: {err}");
        assert_eq!(err["field"], field, "{b}: {err}");
        assert!(err["detail"].as_str().unwrap_or("").contains(words), "{b}: {err}");
    }

    for raw in ["{not json", "[1,2]"] {
        let res = Client::new()
            .post(format!("{}/v1/charges", h.url()))
            .header("Idempotency-Key", "k")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"], "invalid_json", "{raw}: {err}");
    }
    // A rejected request is not remembered: the key is still free.
    let (status, _, _) = charge(&h, Some("k"), &body("o1", "1.00")).await;
    assert_eq!(status, StatusCode::CREATED);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn declines_are_402_and_remembered_under_their_key() {
    let mut cfg = Config::for_test();
    cfg.failure_percent = 100.0;
    let h = start(cfg).await;
    let (status, _, declined) = charge(&h, Some("k-d"), &body("o-d", "3.50")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined["error"], "card_declined");
    assert_eq!(declined["status"], "failed");
    assert!(
        declined["detail"].as_str().unwrap_or("").contains("declined"),
        "{declined}"
    );

    // Cards work again, but the key's answer stays the decline.
    h.faults().set_failure_percent(0.0);
    let (status, headers, again) = charge(&h, Some("k-d"), &body("o-d", "3.50")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["id"], declined["id"]);
    let (status, _, ok) = charge(&h, Some("k-new"), &body("o-d", "3.50")).await;
    assert_eq!(status, StatusCode::CREATED);

    let all = charges(&h).await;
    let statuses: Vec<_> = all.iter().map(|c| c["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["failed", "succeeded"]);
    assert_eq!(all[1]["id"], ok["id"]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn outages_are_503_and_record_nothing() {
    let mut cfg = Config::for_test();
    cfg.error_percent = 100.0;
    let h = start(cfg).await;
    let (status, _, err) = charge(&h, Some("k-o"), &body("o-o", "1.00")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"], "provider_unavailable");
    assert!(charges(&h).await.is_empty());
    h.faults().set_error_percent(0.0);
    let (status, _, _) = charge(&h, Some("k-o"), &body("o-o", "1.00")).await;
    assert_eq!(status, StatusCode::CREATED, "the key was not used up by the outage");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_gives_up_finds_its_charge_on_retry() {
    let mut cfg = Config::for_test();
    cfg.latency = Duration::from_millis(300);
    let h = start(cfg).await;
    let impatient = Client::builder().timeout(Duration::from_millis(50)).build().unwrap();
    let err = impatient
        .post(format!("{}/v1/charges", h.url()))
        .header("Idempotency-Key", "k-slow")
        .json(&body("o-slow", "8.00"))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");

    // The provider finishes the charge although the client hung up.
    let mut made = Vec::new();
    for _ in 0..100 {
        made = charges(&h).await;
        if !made.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(made.len(), 1, "the charge completed");
    h.faults().set_latency(Duration::ZERO);
    let (status, headers, again) = charge(&h, Some("k-slow"), &body("o-slow", "8.00")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["id"], made[0]["id"]);
    assert_eq!(charges(&h).await.len(), 1);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_charges_by_outcome_and_requests_by_route() {
    let h = start(Config::for_test()).await;
    charge(&h, Some("m-1"), &body("o-m", "1.00")).await;
    charge(&h, Some("m-1"), &body("o-m", "1.00")).await;
    charge(&h, Some("m-1"), &body("o-m", "2.00")).await;
    charge(&h, None, &body("o-m", "1.00")).await;
    let (status, _) = get(&h, "/v1/charges/ch_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = get(&h, "/nope").await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, health) = get(&h, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));

    for url in [
        format!("{}/metrics", h.url()),
        format!("http://{}/metrics", h.metrics_addr),
    ] {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        for outcome in ["succeeded", "replayed", "conflict", "invalid"] {
            assert!(
                text.contains(&format!("payment_charges_total{{outcome=\"{outcome}\"}} 1")),
                "{outcome} in {text}"
            );
        }
        assert!(
            text.contains(
                r#"http_server_requests_total{method="POST",route="/v1/charges",status="201",version="v1"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"route="/v1/charges/{id}",status="404""#), "{text}");
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_charge_is_found_by_its_idempotency_key() {
    let h = start(Config::for_test()).await;
    let (status, _, made) = charge(&h, Some("order-o7"), &body("o7", "7.00")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, found) = get(&h, "/v1/charges?idempotency_key=order-o7").await;
    assert_eq!((status, &found), (StatusCode::OK, &made), "what POST answered");

    // A declined charge is found too, with the decline's error and detail as POST gave them.
    h.faults().set_failure_percent(100.0);
    let (status, _, declined) = charge(&h, Some("order-o8"), &body("o8", "8.00")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let (status, found) = get(&h, "/v1/charges?idempotency_key=order-o8").await;
    assert_eq!((status, &found), (StatusCode::OK, &declined));
    assert_eq!(found["error"], "card_declined");

    // Keys are sent URL-encoded.
    h.faults().set_failure_percent(0.0);
    let (status, _, odd) = charge(&h, Some("k&=+%/?#"), &body("o9", "9.00")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, found) = get(&h, "/v1/charges?idempotency_key=k%26%3D%2B%25%2F%3F%23").await;
    assert_eq!((status, &found), (StatusCode::OK, &odd));

    let (status, err) = get(&h, "/v1/charges?idempotency_key=never-sent").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"], "not_found");
    let detail = err["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("\"never-sent\"") && detail.contains("expired") && detail.contains("24h"),
        "{detail}"
    );
    // The list without a key is unchanged.
    assert_eq!(charges(&h).await.len(), 3);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_idempotency_key_parameter_is_400_naming_it() {
    let h = start(Config::for_test()).await;
    let long = "k".repeat(256);
    for query in [
        "idempotency_key=".to_owned(),
        "idempotency_key".to_owned(),
        "idempotency_key=has%20space".to_owned(),
        format!("idempotency_key={long}"),
    ] {
        let (status, err) = get(&h, &format!("/v1/charges?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {err}");
        assert_eq!(err["error"], "invalid_idempotency_key", "{query}: {err}");
        assert_eq!(err["field"], "idempotency_key", "{query}: {err}");
        assert!(
            err["detail"].as_str().unwrap_or("").contains("1 to 255"),
            "{query}: {err}"
        );
    }
    // The longest valid key is a plain 404.
    let (status, _) = get(&h, &format!("/v1/charges?idempotency_key={}", &long[..255])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, err) = get(&h, "/v1/charges?idempotency_key=k&order_id=o").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(
        (&err["error"], &err["field"]),
        (&json!("invalid_request"), &json!("order_id"))
    );
    assert!(
        err["detail"].as_str().unwrap_or("").contains("idempotency_key"),
        "{err}"
    );

    let (status, err) = get(&h, "/v1/charges?idempotency_key=a&idempotency_key=b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"], "invalid_query", "{err}");
    assert!(
        err["detail"].as_str().unwrap_or("").contains("idempotency_key"),
        "{err}"
    );
    h.shutdown().await.unwrap();
}
