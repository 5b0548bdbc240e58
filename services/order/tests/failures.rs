//! What a client sees, and what the tables hold, when a hop fails: the
//! payment provider slow, declining, down or erroring; ProductService down;
//! the database going away (health follows it).

mod common;

use std::time::Duration;

use common::{Backend, Setup, Stack, create};
use proto::order::{Order, OrderStatus};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

on_both_backends!(
    a_payment_timeout_leaves_the_order_pending_and_a_retry_settles_it_with_one_charge,
    a_declined_payment_is_recorded_as_payment_failed,
    payment_down_gives_unavailable_and_a_retry_pays_once_it_is_back,
    payment_errors_leave_the_order_pending_until_a_retry,
    product_service_down_gives_unavailable_and_stores_nothing,
);

fn pending_hint(e: &Status, s: &Stack, key: &str) -> String {
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let m = e.message();
    let payment_url = format!("http://127.0.0.1:{}", s.payment_port);
    let url = s.payment.as_ref().map_or(payment_url, |p| p.url());
    assert!(m.starts_with(&format!("payment ({url})")), "{m}");
    assert!(m.contains("stored as PENDING"), "{m}");
    assert!(
        m.contains(&format!("retry CreateOrder with the same idempotency_key {key:?}")),
        "{m}"
    );
    let id = e
        .metadata()
        .get("x-order-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-order-id")
        .to_owned();
    assert!(m.contains(&id), "{m}");
    id
}

async fn payment_metric(s: &Stack, outcome: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", s.payment().url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("payment_charges_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn a_payment_timeout_leaves_the_order_pending_and_a_retry_settles_it_with_one_charge(b: Backend) {
    let mut s = Setup::new(b)
        .payment(|p| p.latency = Duration::from_millis(1000))
        .payment_timeout(Duration::from_millis(200))
        .start()
        .await;

    // 1. The provider is slower than PAYMENT_TIMEOUT_MS: outcome unknown.
    let e = s
        .client
        .create_order(create("k-slow", "c-1", &[("123", 1)]))
        .await
        .unwrap_err();
    let id = pending_hint(&e, &s, "k-slow");
    assert!(e.message().contains("no answer within 200 ms"), "{}", e.message());
    let rows = s.assert_consistent().await;
    assert_eq!(
        (rows.len(), rows[0].id.as_str(), rows[0].status.as_str()),
        (1, id.as_str(), "PENDING")
    );

    // 2. The provider is fast again; the retry, sent while the first attempt
    // is still in flight there, settles the order with one charge.
    s.payment().faults().set_latency(Duration::ZERO);
    let o: Order = s
        .client
        .create_order(create("k-slow", "c-1", &[("123", 1)]))
        .await
        .expect("the retry settles the order")
        .into_inner();
    assert_eq!((o.id.as_str(), o.status()), (id.as_str(), OrderStatus::Paid));
    // The first attempt reaches the provider late and gets the same charge.
    common::eventually("the late attempt replays", async || {
        (payment_metric(&s, "replayed").await == 1).then_some(())
    })
    .await;
    let charges = s.succeeded_charges().await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["id"], o.payment_reference.as_str());

    // 3. Slow again, but this time the provider completes the charge after
    // the order service gave up: the customer is charged, the order PENDING.
    s.payment().faults().set_latency(Duration::from_millis(600));
    let e = s
        .client
        .create_order(create("k-late", "c-1", &[("1", 1)]))
        .await
        .unwrap_err();
    let late_id = pending_hint(&e, &s, "k-late");
    let charge = common::eventually("the provider completes the charge", async || {
        s.succeeded_charges()
            .await
            .into_iter()
            .find(|c| c["order_id"] == late_id.as_str())
    })
    .await;
    s.assert_consistent().await;
    // The retry finds that charge instead of making another.
    s.payment().faults().set_latency(Duration::ZERO);
    let o = s
        .client
        .create_order(create("k-late", "c-1", &[("1", 1)]))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!((o.id.as_str(), o.status()), (late_id.as_str(), OrderStatus::Paid));
    assert_eq!(charge["id"], o.payment_reference.as_str());
    let rows = s.assert_consistent().await;
    assert!(rows.iter().all(|r| r.status == "PAID"));
    assert_eq!(s.succeeded_charges().await.len(), 2);
}

async fn a_declined_payment_is_recorded_as_payment_failed(b: Backend) {
    let mut s = Setup::new(b).payment(|p| p.failure_percent = 100.0).start().await;
    let o = s
        .client
        .create_order(create("k-d", "c-1", &[("123", 1)]))
        .await
        .expect("the order is stored even though the card was declined")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::PaymentFailed);
    assert!(o.failure_reason.starts_with("card_declined"), "{}", o.failure_reason);
    assert!(o.payment_reference.is_empty());

    // The same key again: the same failed order, and no second attempt.
    s.payment().faults().set_failure_percent(0.0);
    let again = s
        .client
        .create_order(create("k-d", "c-1", &[("123", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, o);
    let rows = s.assert_consistent().await;
    assert_eq!((rows.len(), rows[0].status.as_str()), (1, "PAYMENT_FAILED"));
    assert_eq!(rows[0].failure_reason, o.failure_reason);
    let charges = s.charges().await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["status"], "failed");

    // A new key is a new order, and the card works now.
    let o2 = s
        .client
        .create_order(create("k-d2", "c-1", &[("123", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o2.status(), OrderStatus::Paid);
    s.assert_consistent().await;
}

async fn payment_down_gives_unavailable_and_a_retry_pays_once_it_is_back(b: Backend) {
    let mut s = Setup::new(b).payment_down().start().await;
    let e = s
        .client
        .create_order(create("k-down", "c-1", &[("123", 2)]))
        .await
        .unwrap_err();
    let id = pending_hint(&e, &s, "k-down");
    assert!(e.message().to_lowercase().contains("connect"), "{}", e.message());
    let rows = s.assert_consistent().await;
    assert_eq!((rows.len(), rows[0].status.as_str()), (1, "PENDING"));
    assert_eq!(s.db.lines().await.len(), 1);

    s.start_payment_late().await;
    let o = s
        .client
        .create_order(create("k-down", "c-1", &[("123", 2)]))
        .await
        .expect("retry once payment is back")
        .into_inner();
    assert_eq!((o.id.as_str(), o.status()), (id.as_str(), OrderStatus::Paid));
    s.assert_consistent().await;
    assert_eq!(s.succeeded_charges().await.len(), 1);
}

async fn payment_errors_leave_the_order_pending_until_a_retry(b: Backend) {
    let mut s = Setup::new(b).payment(|p| p.error_percent = 100.0).start().await;
    let e = s
        .client
        .create_order(create("k-503", "c-1", &[("3", 1)]))
        .await
        .unwrap_err();
    pending_hint(&e, &s, "k-503");
    assert!(
        e.message().contains("HTTP 503: provider_unavailable"),
        "{}",
        e.message()
    );
    assert_eq!(s.assert_consistent().await[0].status, "PENDING");
    assert!(s.charges().await.is_empty());

    s.payment().faults().set_error_percent(0.0);
    let o = s
        .client
        .create_order(create("k-503", "c-1", &[("3", 1)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert_eq!(s.assert_consistent().await.len(), 1);
}

async fn product_service_down_gives_unavailable_and_stores_nothing(b: Backend) {
    let mut s = Setup::new(b).product_down().start().await;
    let e = s
        .client
        .create_order(create("k-p", "c-1", &[("123", 1)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().starts_with("product-service (http://127.0.0.1:"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("nothing was stored or charged"), "{}", e.message());
    assert!(s.db.orders().await.is_empty());
    assert!(s.db.lines().await.is_empty());
    assert!(s.charges().await.is_empty());
    // The order service itself stays healthy: its database is fine.
    assert_eq!(s.health().await, ServingStatus::Serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_follows_the_database_and_calls_name_it() {
    let mut s = Setup::new(Backend::Postgres).start().await;
    let pg = s.pg.as_ref().expect("cluster");
    assert_eq!(s.health().await, ServingStatus::Serving);

    pg.stop_server().expect("stop");
    common::eventually("NOT_SERVING", async || {
        (s.health().await == ServingStatus::NotServing).then_some(())
    })
    .await;
    let e = s
        .client
        .create_order(create("k-db", "c-1", &[("1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let url = pg.database_url("test_0");
    assert!(
        e.message()
            .starts_with(&format!("order database ({url}) is unreachable")),
        "{}",
        e.message()
    );

    pg.start_server().expect("start");
    common::eventually("SERVING again", async || {
        (s.health().await == ServingStatus::Serving).then_some(())
    })
    .await;
    let o = s
        .client
        .create_order(create("k-db", "c-1", &[("1", 1)]))
        .await
        .expect("works again")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert_eq!(s.assert_consistent().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_service_starts_before_its_database_and_migrates_when_it_comes() {
    let pg = testkit::PgCluster::start().expect("cluster");
    pg.stop_server().expect("stop");
    let product = common::start_product().await;
    let payment = payment::spawn(payment::Config::for_test(), common::registry())
        .await
        .unwrap();
    let cfg = order::Config::for_test(order::Database::Postgres(pg.url()), product.url(), payment.url());
    let order = order::spawn(cfg, common::grpc_metrics())
        .await
        .expect("starts without its database");
    let mut client = proto::order::order_service_client::OrderServiceClient::new(common::channel(&order.url()).await);
    let mut health = tonic_health::pb::health_client::HealthClient::new(common::channel(&order.url()).await);
    let status = async |h: &mut tonic_health::pb::health_client::HealthClient<_>| {
        h.check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    assert_eq!(status(&mut health).await, ServingStatus::NotServing);
    let e = client.create_order(create("k", "c", &[("1", 1)])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message()
            .starts_with(&format!("order database ({}) is not ready", pg.url())),
        "{}",
        e.message()
    );

    pg.start_server().expect("start");
    common::eventually("SERVING once migrated", async || {
        (status(&mut health).await == ServingStatus::Serving).then_some(())
    })
    .await;
    let o = client
        .create_order(create("k", "c", &[("1", 1)]))
        .await
        .expect("order")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    order.shutdown().await.unwrap();
}
