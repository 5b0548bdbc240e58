//! Deadlines end to end: when the caller's deadline (or the order service's
//! own bound on a hop) runs out while the order service waits on a slow
//! ProductService or payment provider, a real tonic client gets
//! DEADLINE_EXCEEDED, never CANCELLED, and the order service records
//! DeadlineExceeded too. So does a database that keeps the call past the
//! caller's deadline.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Setup, Stack, create};
use proto::order::OrderStatus;
use tonic::{Code, Request};

on_both_backends!(
    a_caller_deadline_that_expires_while_product_is_slow_is_deadline_exceeded,
    the_order_services_own_product_budget_running_out_is_deadline_exceeded,
    a_caller_deadline_that_expires_at_the_payment_provider_is_deadline_exceeded_and_the_order_pending,
    a_caller_deadline_that_expires_while_the_database_waits_is_deadline_exceeded,
);

/// ProductService sleeps this long per call: far longer than any deadline below.
const PRODUCT_DELAY: Duration = Duration::from_secs(3);

/// `grpc_server_handled_total` of CreateOrder with `code`, from the order
/// service's own /metrics.
async fn handled(s: &Stack, code: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", s.order.metrics_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{")
                && l.contains("grpc_method=\"CreateOrder\"")
                && l.contains(&format!("grpc_code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn a_caller_deadline_that_expires_while_product_is_slow_is_deadline_exceeded(b: Backend) {
    let mut s = Setup::new(b).product_delay(PRODUCT_DELAY).start().await;
    // Several budgets, each a fresh key: one answer is not luck.
    let budgets = [60u64, 200, 300, 500];
    for (i, ms) in budgets.into_iter().enumerate() {
        let budget = Duration::from_millis(ms);
        let mut req = Request::new(create(&format!("k-dl-{i}"), "c-1", &[("123", 1), ("7", 2)]));
        req.set_timeout(budget);
        let started = Instant::now();
        let e = s
            .client
            .create_order(req)
            .await
            .expect_err("product is slower than the deadline");
        let took = started.elapsed();
        assert_eq!(
            e.code(),
            Code::DeadlineExceeded,
            "deadline {ms} ms, after {took:?}: {e:?}"
        );
        let m = e.message();
        assert!(m.starts_with("product-service (http://127.0.0.1:"), "{m}");
        assert!(m.contains("no answer within"), "{m}");
        assert!(m.contains("the caller's deadline"), "{m}");
        assert!(m.contains("nothing was stored or charged"), "{m}");
        assert!(
            took < PRODUCT_DELAY,
            "answered at the deadline, not after product: {took:?}"
        );
    }
    let n = budgets.len() as u64;
    assert_eq!(handled(&s, "DeadlineExceeded").await, n, "the server's own record");
    assert_eq!(handled(&s, "Canceled").await, 0);
    assert!(s.db.orders().await.is_empty());
    assert!(s.db.lines().await.is_empty());
    assert!(s.charges().await.is_empty());
}

async fn the_order_services_own_product_budget_running_out_is_deadline_exceeded(b: Backend) {
    let mut s = Setup::new(b)
        .product_delay(PRODUCT_DELAY)
        .product_timeout(Duration::from_millis(200))
        .start()
        .await;
    // A caller with plenty of time, and one with no deadline at all.
    let mut req = Request::new(create("k-own-1", "c-1", &[("123", 1)]));
    req.set_timeout(Duration::from_secs(10));
    for req in [req, Request::new(create("k-own-2", "c-1", &[("123", 1)]))] {
        let e = s
            .client
            .create_order(req)
            .await
            .expect_err("product is slower than 200 ms");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        let m = e.message();
        assert!(m.starts_with("product-service (http://127.0.0.1:"), "{m}");
        assert!(m.contains("no answer within 200 ms"), "{m}");
        assert!(!m.contains("the caller's deadline"), "{m}");
    }
    assert_eq!(handled(&s, "DeadlineExceeded").await, 2);
    assert!(s.db.orders().await.is_empty());
    assert!(s.charges().await.is_empty());
}

async fn a_caller_deadline_that_expires_at_the_payment_provider_is_deadline_exceeded_and_the_order_pending(b: Backend) {
    // The provider is slower than the caller allows but within PAYMENT_TIMEOUT_MS (3 s).
    let mut s = Setup::new(b)
        .payment(|p| p.latency = Duration::from_secs(2))
        .start()
        .await;
    let mut req = Request::new(create("k-pay-dl", "c-1", &[("123", 1)]));
    req.set_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let e = s
        .client
        .create_order(req)
        .await
        .expect_err("payment is slower than the deadline");
    let took = started.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "after {took:?}: {e:?}");
    let m = e.message();
    assert!(
        m.starts_with(&format!("payment ({}): no answer within", s.payment().url())),
        "{m}"
    );
    assert!(m.contains("the caller's deadline (grpc-timeout 400 ms)"), "{m}");
    assert!(m.contains("stored as PENDING"), "{m}");
    assert!(
        m.contains("retry CreateOrder with the same idempotency_key \"k-pay-dl\""),
        "{m}"
    );
    let id = e
        .metadata()
        .get("x-order-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-order-id")
        .to_owned();
    assert_eq!(handled(&s, "DeadlineExceeded").await, 1);
    let rows = s.assert_consistent().await;
    assert_eq!(
        (rows.len(), rows[0].id.as_str(), rows[0].status.as_str()),
        (1, id.as_str(), "PENDING")
    );

    // The retry, with time enough, settles that order with one charge.
    s.payment().faults().set_latency(Duration::ZERO);
    let o = s
        .client
        .create_order(create("k-pay-dl", "c-1", &[("123", 1)]))
        .await
        .expect("the retry settles the order")
        .into_inner();
    assert_eq!((o.id.as_str(), o.status()), (id.as_str(), OrderStatus::Paid));
    s.assert_consistent().await;
}

async fn a_caller_deadline_that_expires_while_the_database_waits_is_deadline_exceeded(b: Backend) {
    let mut s = Setup::new(b).start().await;
    // The INSERT of the order waits for this lock; the reads before it do not.
    let lock = s.db.lock_writes().await;
    let mut req = Request::new(create("k-db-dl", "c-1", &[("123", 1)]));
    req.set_timeout(Duration::from_millis(600));
    let started = Instant::now();
    let e = s
        .client
        .create_order(req)
        .await
        .expect_err("the order cannot be stored in time");
    let took = started.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "after {took:?}: {e:?}");
    assert_eq!(
        e.message(),
        "the caller's deadline (grpc-timeout 600 ms) ran out before the order was finished; if it was \
         stored, retry CreateOrder with the same idempotency_key to finish it (the customer is charged at most once)"
    );
    assert_eq!(handled(&s, "DeadlineExceeded").await, 1);
    assert_eq!(handled(&s, "Canceled").await, 0);
    lock.release().await;

    // Nothing was half-written: the retry stores the order and charges it once.
    let o = s
        .client
        .create_order(create("k-db-dl", "c-1", &[("123", 1)]))
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert_eq!(s.assert_consistent().await.len(), 1);
    assert_eq!(s.succeeded_charges().await.len(), 1);
}
