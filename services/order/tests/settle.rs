//! PENDING orders settle themselves: the settler asks the payment provider
//! what became of each old PENDING order's charge (`GET /v1/charges?
//! idempotency_key=…`) and records it, or charges the order when the
//! provider never saw it, with one charge per order at the provider however
//! many order replicas settle at once. Also the store's claims underneath:
//! one settler per order, leases that run out, give-backs by the claim's
//! owner only.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{Backend, Setup, Stack, create};
use order::store::{Claimed, Line, Order, Settlement, Status, Store};
use proto::{
    common::ServedBy,
    order::{GetOrderRequest, Order as OrderMsg, OrderStatus, order_service_client::OrderServiceClient},
};
use tonic::{Code, Status as GrpcStatus, transport::Channel};

on_both_backends!(
    a_pending_order_whose_charge_succeeded_is_settled_paid_without_a_second_charge,
    a_pending_order_whose_charge_was_declined_is_settled_payment_failed,
    a_pending_order_the_provider_never_saw_is_charged_once_by_the_settler,
    two_replicas_settle_a_batch_each_order_once_and_charged_at_most_once,
    claims_are_exclusive_among_many_settlers_on_two_pools,
    a_claim_is_the_oldest_old_enough_order_nobody_holds_until_its_lease_ends,
);

/// The settler's pace in these tests: a pass every 100 ms.
const PASS: Duration = Duration::from_millis(100);

/// The order id of a CreateOrder that left its order PENDING.
fn pending_id(e: &GrpcStatus) -> String {
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("stored as PENDING"), "{}", e.message());
    e.metadata()
        .get("x-order-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-order-id")
        .to_owned()
}

/// A sample without labels (`name value`), or with all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    if labels.is_empty() {
        return text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    }
    testkit::sample(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
}

fn settled(text: &str, outcome: &str) -> f64 {
    metric(text, "order_settled_total", &[("outcome", outcome)])
}

/// `payment_charges_total{outcome}` at the payment stand-in.
async fn provider_count(s: &Stack, outcome: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", s.payment().url()))
        .await
        .expect("payment metrics")
        .text()
        .await
        .expect("text");
    testkit::sample(&text, "payment_charges_total", &[("outcome", outcome)]).unwrap_or(0.0)
}

async fn get_order(client: &mut OrderServiceClient<Channel>, id: &str) -> OrderMsg {
    client
        .get_order(GetOrderRequest { id: id.into() })
        .await
        .expect("GetOrder")
        .into_inner()
}

/// Waits (up to 10 s) for the order to leave PENDING.
async fn settled_order(s: &Stack, id: &str) -> OrderMsg {
    let mut client = s.client.clone();
    common::eventually("the settler settles the order", async || {
        let o = get_order(&mut client, id).await;
        (o.status() != OrderStatus::Pending).then_some(o)
    })
    .await
}

/// Waits for the gauges of a pass that found no PENDING order.
async fn no_pending_left(s: &Stack) {
    common::eventually("the gauges show no PENDING order", async || {
        let m = s.order_metrics().await;
        (metric(&m, "order_pending_orders", &[]) == 0.0 && metric(&m, "order_pending_oldest_age_seconds", &[]) == 0.0)
            .then_some(())
    })
    .await;
}

async fn a_pending_order_whose_charge_succeeded_is_settled_paid_without_a_second_charge(b: Backend) {
    // The provider takes 800 ms, the order service waits 200: the charge is
    // made after CreateOrder gave up. The settler waits until orders are 1.5 s old.
    let mut s = Setup::new(b)
        .payment(|p| p.latency = Duration::from_millis(800))
        .payment_timeout(Duration::from_millis(200))
        .settle(PASS, Duration::from_millis(1500), 50)
        .start()
        .await;
    let e = s
        .client
        .create_order(create("k-late", "c-1", &[("123", 1)]))
        .await
        .unwrap_err();
    let id = pending_id(&e);
    // The gauges see it, young and PENDING.
    common::eventually("the gauges count the PENDING order", async || {
        let m = s.order_metrics().await;
        (metric(&m, "order_pending_orders", &[]) == 1.0 && metric(&m, "order_pending_oldest_age_seconds", &[]) > 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(s.db.orders().await[0].status, "PENDING");
    s.payment().faults().set_latency(Duration::ZERO);

    let o = settled_order(&s, &id).await;
    assert_eq!(o.status(), OrderStatus::Paid, "{o:?}");
    let charges = s.charges().await;
    assert_eq!(charges.len(), 1, "{charges:#?}");
    assert_eq!(charges[0]["id"], o.payment_reference.as_str());
    assert_eq!(charges[0]["status"], "succeeded");
    let rows = s.assert_consistent().await;
    assert_eq!((rows.len(), rows[0].status.as_str()), (1, "PAID"));
    // The settler found the charge: it sent none (a second POST would replay).
    assert_eq!(provider_count(&s, "succeeded").await, 1.0);
    assert_eq!(provider_count(&s, "replayed").await, 0.0);
    let m = s.order_metrics().await;
    assert_eq!(settled(&m, "paid"), 1.0);
    for other in ["payment_failed", "charged", "already_settled"] {
        assert_eq!(settled(&m, other), 0.0, "{other}");
    }
    no_pending_left(&s).await;

    // CreateOrder's retry now finds the settled order; nothing is charged again.
    let again = s
        .client
        .create_order(create("k-late", "c-1", &[("123", 1)]))
        .await
        .expect("the retry gets the settled order")
        .into_inner();
    assert_eq!((again.id, again.payment_reference), (id, o.payment_reference));
    assert_eq!(s.charges().await.len(), 1);
}

async fn a_pending_order_whose_charge_was_declined_is_settled_payment_failed(b: Backend) {
    let mut s = Setup::new(b)
        .payment(|p| {
            p.latency = Duration::from_millis(800);
            p.failure_percent = 100.0;
        })
        .payment_timeout(Duration::from_millis(200))
        .settle(PASS, Duration::from_millis(1500), 50)
        .start()
        .await;
    let e = s
        .client
        .create_order(create("k-dec", "c-1", &[("7", 2)]))
        .await
        .unwrap_err();
    let id = pending_id(&e);
    s.payment().faults().set_latency(Duration::ZERO);

    let o = settled_order(&s, &id).await;
    assert_eq!(o.status(), OrderStatus::PaymentFailed, "{o:?}");
    assert!(o.failure_reason.starts_with("card_declined"), "{}", o.failure_reason);
    assert!(o.payment_reference.is_empty());
    let charges = s.charges().await;
    assert_eq!(charges.len(), 1, "{charges:#?}");
    assert_eq!(charges[0]["status"], "failed");
    let rows = s.assert_consistent().await;
    assert_eq!(rows[0].status, "PAYMENT_FAILED");
    assert_eq!(provider_count(&s, "declined").await, 1.0);
    assert_eq!(provider_count(&s, "replayed").await, 0.0);
    let m = s.order_metrics().await;
    assert_eq!(settled(&m, "payment_failed"), 1.0);
    assert_eq!(settled(&m, "paid") + settled(&m, "charged"), 0.0);
    no_pending_left(&s).await;
}

async fn a_pending_order_the_provider_never_saw_is_charged_once_by_the_settler(b: Backend) {
    // Every request answered 503 and nothing recorded: the provider never saw it.
    let mut s = Setup::new(b)
        .payment(|p| p.error_percent = 100.0)
        .settle(PASS, Duration::from_millis(300), 50)
        .start()
        .await;
    let e = s
        .client
        .create_order(create("k-503", "c-1", &[("3", 1)]))
        .await
        .unwrap_err();
    let id = pending_id(&e);
    assert!(e.message().contains("HTTP 503"), "{}", e.message());

    // While the provider stays down the settler settles nothing, and says so.
    common::eventually("a pass that settles nothing", async || {
        (settled(&s.order_metrics().await, "still_unknown") >= 2.0).then_some(())
    })
    .await;
    assert_eq!(get_order(&mut s.client, &id).await.status(), OrderStatus::Pending);
    assert!(s.charges().await.is_empty());

    // Back: the provider has no record of the key, so the settler charges it.
    s.payment().faults().set_error_percent(0.0);
    let o = settled_order(&s, &id).await;
    assert_eq!(o.status(), OrderStatus::Paid, "{o:?}");
    let charges = s.succeeded_charges().await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["id"], o.payment_reference.as_str());
    assert_eq!(charges[0]["idempotency_key"], format!("order-{id}").as_str());
    // The body CreateOrder sends: the order, its total, currency and customer.
    assert_eq!(charges[0]["order_id"], id.as_str());
    assert_eq!(charges[0]["customer_id"], "c-1");
    assert_eq!(
        charges[0]["amount"],
        order::payments::format_micros(o.total.unwrap().to_micros()).as_str()
    );
    s.assert_consistent().await;
    assert_eq!(provider_count(&s, "succeeded").await, 1.0);
    assert_eq!(provider_count(&s, "replayed").await, 0.0);
    let m = s.order_metrics().await;
    assert_eq!(settled(&m, "charged"), 1.0);
    assert_eq!(settled(&m, "paid") + settled(&m, "already_settled"), 0.0);
    // The settler's charge counts among the charge attempts too.
    assert_eq!(metric(&m, "order_payment_attempts_total", &[("outcome", "paid")]), 1.0);
    no_pending_left(&s).await;
}

async fn two_replicas_settle_a_batch_each_order_once_and_charged_at_most_once(b: Backend) {
    const ORDERS: usize = 24;
    // Provider down while the orders are placed; 20 ms a request once back,
    // so that passes of 3 orders overlap on the two replicas.
    let mut s = Setup::new(b)
        .payment(|p| p.error_percent = 100.0)
        .settle(Duration::from_millis(50), Duration::from_millis(300), 3)
        .start()
        .await;
    let replica = s.spawn_replica("order-test-1").await;
    let mut other = OrderServiceClient::new(common::channel(&replica.url()).await);
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let req = create(
            &format!("k-batch-{i}"),
            &format!("c-{}", i % 5),
            &[("123", 1), ("7", (i % 3 + 1) as i32)],
        );
        // Half the orders come through each replica.
        let e = if i % 2 == 0 {
            s.client.create_order(req).await.unwrap_err()
        } else {
            other.create_order(req).await.unwrap_err()
        };
        ids.push(pending_id(&e));
    }
    s.payment().faults().set_latency(Duration::from_millis(20));
    s.payment().faults().set_error_percent(0.0);

    let rows = common::eventually("every order settled", async || {
        let rows = s.db.orders().await;
        rows.iter().all(|r| r.status != "PENDING").then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), ORDERS);
    assert!(rows.iter().all(|r| r.status == "PAID"), "{rows:#?}");
    s.assert_consistent().await;
    // One charge per order, each made once: a second POST under a key
    // would show as a replay at the provider.
    let charges = s.succeeded_charges().await;
    assert_eq!(charges.len(), ORDERS);
    let keys: HashSet<&str> = charges.iter().filter_map(|c| c["idempotency_key"].as_str()).collect();
    assert_eq!(keys.len(), ORDERS);
    assert_eq!(provider_count(&s, "succeeded").await, ORDERS as f64);
    assert_eq!(provider_count(&s, "replayed").await, 0.0);
    // Each order settled once, between them: no order found settled already.
    let mine = s.order_metrics().await;
    let theirs = testkit::scrape(replica.metrics_addr).await;
    let (a, b2) = (settled(&mine, "charged"), settled(&theirs, "charged"));
    assert_eq!(a + b2, ORDERS as f64, "charged: {a} here, {b2} on the replica");
    for m in [&mine, &theirs] {
        for other in ["paid", "payment_failed", "already_settled"] {
            assert_eq!(settled(m, other), 0.0, "{other}");
        }
    }
    assert!(a > 0.0 && b2 > 0.0, "both replicas settle: {a} and {b2}");
    let mut ids_sorted = ids.clone();
    ids_sorted.sort();
    let mut rows_sorted: Vec<String> = rows.into_iter().map(|r| r.id).collect();
    rows_sorted.sort();
    assert_eq!(ids_sorted, rows_sorted);
    replica.shutdown().await.expect("replica stops");
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A PENDING order with one line, created at `created_at_ms`.
fn pending_order(n: usize, created_at_ms: i64) -> Order {
    let id = format!("o-{n:03}");
    Order {
        idempotency_key: format!("k-{id}"),
        request_hash: "h".into(),
        customer_id: "c-1".into(),
        status: Status::Pending,
        currency: "USD".into(),
        total_micros: 1_000_000,
        payment_reference: String::new(),
        failure_reason: String::new(),
        created_at_ms,
        lines: vec![Line {
            line_no: 0,
            product_id: "1".into(),
            product_name: "p".into(),
            quantity: 1,
            unit_price_micros: 1_000_000,
            line_total_micros: 1_000_000,
            priced_by: ServedBy::default(),
        }],
        id,
    }
}

/// A stack whose own settler leaves these tests' orders alone (orders
/// must be a week old for it), and a second pool on its database.
async fn quiet_stack(b: Backend) -> (Stack, Store) {
    let s = Setup::new(b)
        .settle(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600), 50)
        .start()
        .await;
    let store = Store::open(&s.database).await.expect("store");
    (s, store)
}

async fn claims_are_exclusive_among_many_settlers_on_two_pools(b: Backend) {
    const ORDERS: usize = 40;
    let (s, first) = quiet_stack(b).await;
    let second = Store::open(&s.database).await.expect("second pool");
    let t0 = now_ms();
    for n in 0..ORDERS {
        first
            .insert(&pending_order(n, t0 - 60_000 + n as i64))
            .await
            .expect("insert");
    }
    // Eight settlers, four a pool, all claiming at once until nothing is left.
    let stores = [Arc::new(first), Arc::new(second)];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<Claimed> = Vec::new();
            while let Some(c) = store
                .claim_pending(t0, t0 - 3_600_000..=t0, t0 + 60_000)
                .await
                .expect("claim")
            {
                got.push(c);
            }
            got
        }));
    }
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut busy = 0;
    for t in tasks {
        let got = t.await.expect("task");
        busy += usize::from(!got.is_empty());
        for c in got {
            assert_eq!(c.attempt, 1, "{c:?}");
            *by_id.entry(c.id).or_default() += 1;
        }
    }
    assert_eq!(by_id.len(), ORDERS, "every order claimed");
    assert!(by_id.values().all(|&n| n == 1), "an order claimed twice: {by_id:?}");
    assert!(busy >= 2, "the settlers shared the work");
    let stats = stores[0].pending_stats().await.expect("stats");
    assert_eq!(stats.count, ORDERS as i64);
    assert_eq!(stats.oldest_created_at_ms, Some(t0 - 60_000));
}

async fn a_claim_is_the_oldest_old_enough_order_nobody_holds_until_its_lease_ends(b: Backend) {
    let (_s, store) = quiet_stack(b).await;
    assert_eq!(
        store.pending_stats().await.unwrap(),
        order::store::PendingStats {
            count: 0,
            oldest_created_at_ms: None
        }
    );
    let t0 = now_ms();
    let lease = 10_000;
    let (o1, o2, o3) = (
        pending_order(1, t0 - 3000),
        pending_order(2, t0 - 2000),
        pending_order(3, t0),
    );
    // Older than the settler's window (ORDER_SETTLE_MAX_AGE): never taken.
    let o0 = pending_order(0, t0 - 100_000);
    for o in [&o3, &o2, &o1, &o0] {
        store.insert(o).await.unwrap();
    }
    let claim = async |now: i64| {
        store
            .claim_pending(now, t0 - 50_000..=t0 - 1000, now + lease)
            .await
            .unwrap()
    };
    let c = |id: &str, attempt| Some(Claimed { id: id.into(), attempt });

    // Oldest first within the window; o3 is too young, o0 too old; a held
    // order is not taken.
    assert_eq!(claim(t0).await, c(&o1.id, 1));
    assert_eq!(claim(t0).await, c(&o2.id, 1));
    assert_eq!(claim(t0).await, None);
    // A lease that ran out: the order is anyone's again.
    assert_eq!(claim(t0 + lease).await, c(&o1.id, 2));
    // The first, expired claim gives nothing back: o1 stays held by claim 2.
    store.release_pending(&o1.id, 1, 0).await.unwrap();
    assert_eq!(claim(t0 + lease + 1).await, c(&o2.id, 2));
    assert_eq!(claim(t0 + lease + 1).await, None);
    // Claim 2 gives o1 back, not to be taken before t0 + 30 s.
    store.release_pending(&o1.id, 2, t0 + 30_000).await.unwrap();
    assert_eq!(claim(t0 + 2 * lease + 1).await, c(&o2.id, 3));
    assert_eq!(claim(t0 + 2 * lease + 1).await, None);
    assert_eq!(claim(t0 + 30_000).await, c(&o1.id, 3));
    // A settled order is never claimed again, nor counted as PENDING.
    assert!(
        store
            .settle(
                &o1.id,
                &Settlement::Paid {
                    charge_id: "ch_1".into()
                },
                t0
            )
            .await
            .unwrap()
    );
    assert_eq!(claim(t0 + 100_000).await, c(&o2.id, 4));
    assert_eq!(claim(t0 + 200_000).await, c(&o2.id, 5));
    // The gauges' numbers: every PENDING order, the too old one too.
    let stats = store.pending_stats().await.unwrap();
    assert_eq!((stats.count, stats.oldest_created_at_ms), (3, Some(t0 - 100_000)));
    // A settled order cannot be settled again: the update is for PENDING orders only.
    assert!(
        !store
            .settle(&o1.id, &Settlement::Failed { reason: "x".into() }, t0)
            .await
            .unwrap()
    );
}
