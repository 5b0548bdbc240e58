//! CreateOrder, GetOrder and ListOrders as a client sees them, and what
//! lands in the tables, on SQLite and on PostgreSQL.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Backend, Setup, Stack, create};
use proto::{
    order::{GetOrderRequest, ListOrdersRequest, Order, OrderStatus},
    product::{ListProductsRequest, product_service_client::ProductServiceClient},
};
use tonic::{Code, Request, metadata::MetadataMap};
use tonic_health::pb::health_check_response::ServingStatus;

on_both_backends!(
    an_order_is_priced_stored_and_paid_once,
    a_retry_with_the_same_key_returns_the_same_order_and_charges_once,
    the_same_key_for_a_different_request_is_refused,
    two_hundred_racing_calls_on_150_keys_make_150_orders_and_150_charges,
    get_order_and_list_orders_newest_first_by_page,
    bad_requests_name_the_field_and_store_nothing,
    the_next_hops_get_the_trace_request_id_routing_headers_and_a_deadline,
);

/// The catalog's prices in micros, as ProductService reports them.
async fn prices(s: &Stack) -> HashMap<String, (String, i64)> {
    let mut c = ProductServiceClient::new(common::channel(&s.product.as_ref().expect("product").url()).await);
    let r = c
        .list_products(ListProductsRequest {
            page_size: 100,
            page_number: None,
        })
        .await
        .expect("catalog")
        .into_inner();
    r.products
        .into_iter()
        .map(|p| {
            let micros = p.price.as_ref().map_or(0, |m| m.to_micros());
            (p.id, (p.name, micros))
        })
        .collect()
}

async fn an_order_is_priced_stored_and_paid_once(b: Backend) {
    let mut s = Setup::new(b).start().await;
    assert_eq!(s.health().await, ServingStatus::Serving);
    let catalog = prices(&s).await;
    let res = s
        .client
        .create_order(create("k-1", "c-1", &[("123", 1), ("7", 3)]))
        .await
        .expect("order placed");
    assert_eq!(res.metadata().get("x-served-by").unwrap(), "order-test-0");
    assert_eq!(res.metadata().get("x-version").unwrap(), "v1");
    let o = res.into_inner();
    assert_eq!(o.status(), OrderStatus::Paid, "{o:?}");
    assert_eq!((o.customer_id.as_str(), o.idempotency_key.as_str()), ("c-1", "k-1"));
    assert!(o.payment_reference.starts_with("ch_"), "{o:?}");
    assert!(o.failure_reason.is_empty());
    assert!(o.created_at.is_some_and(|t| t.seconds > 1_700_000_000));
    assert_eq!(o.served_by.as_ref().map(|s| s.service.as_str()), Some("order"));

    assert_eq!(o.lines.len(), 2);
    let camera = &o.lines[0];
    assert_eq!(
        (
            camera.product_id.as_str(),
            camera.product_name.as_str(),
            camera.quantity
        ),
        ("123", "Vintage Film Camera", 1)
    );
    let unit = camera.unit_price.as_ref().unwrap();
    assert_eq!((unit.currency_code.as_str(), unit.units, unit.nanos), ("USD", 349, 0));
    let by = camera.priced_by.as_ref().expect("priced_by");
    assert_eq!(
        (by.service.as_str(), by.version.as_str(), by.pod.as_str()),
        ("product", "v1", "product-v1-x")
    );
    let seven = &o.lines[1];
    assert_eq!(seven.quantity, 3);
    assert_eq!(seven.product_name, catalog["7"].0);
    assert_eq!(seven.unit_price.as_ref().unwrap().to_micros(), catalog["7"].1);
    assert_eq!(seven.line_total.as_ref().unwrap().to_micros(), 3 * catalog["7"].1);
    let total = catalog["123"].1 + 3 * catalog["7"].1;
    assert_eq!(o.total.as_ref().unwrap().to_micros(), total);

    // In the tables: one PAID order with its charge, two lines priced by the product pod.
    let rows = s.assert_consistent().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].id.as_str(), rows[0].status.as_str(), rows[0].total),
        (o.id.as_str(), "PAID", total)
    );
    assert_eq!(rows[0].payment_reference, o.payment_reference);
    let lines = s.db.lines().await;
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.priced_by_pod == "product-v1-x"));
    let charges = s.succeeded_charges().await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["order_id"], o.id.as_str());
    assert_eq!(charges[0]["customer_id"], "c-1");

    let got = s
        .client
        .get_order(GetOrderRequest { id: o.id.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, o);
}

async fn a_retry_with_the_same_key_returns_the_same_order_and_charges_once(b: Backend) {
    let mut s = Setup::new(b).start().await;
    let first = s
        .client
        .create_order(create("k-r", "c-1", &[("1", 2), ("2", 1)]))
        .await
        .unwrap()
        .into_inner();
    // The same request, lines listed in another order: still the same request.
    let again = s
        .client
        .create_order(create("k-r", "c-1", &[("2", 1), ("1", 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(s.assert_consistent().await.len(), 1);
    assert_eq!(s.charges().await.len(), 1);
}

async fn the_same_key_for_a_different_request_is_refused(b: Backend) {
    let mut s = Setup::new(b).start().await;
    let first = s
        .client
        .create_order(create("k-1", "c-1", &[("123", 1)]))
        .await
        .unwrap()
        .into_inner();
    for other in [
        create("k-1", "c-1", &[("123", 2)]),
        create("k-1", "c-2", &[("123", 1)]),
        create("k-1", "c-1", &[("123", 1), ("1", 1)]),
    ] {
        let e = s.client.create_order(other).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains("idempotency_key \"k-1\""), "{}", e.message());
        assert!(e.message().contains("different order"), "{}", e.message());
    }
    let rows = s.assert_consistent().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, first.id);
    assert_eq!(s.db.lines().await.len(), 1);
    assert_eq!(s.charges().await.len(), 1);
}

async fn two_hundred_racing_calls_on_150_keys_make_150_orders_and_150_charges(b: Backend) {
    let s = Setup::new(b).start().await;
    let catalog = prices(&s).await;
    let request = |i: usize| {
        let mut items = vec![((i % 20 + 1).to_string(), (i % 5 + 1) as i32)];
        if i.is_multiple_of(3) {
            items.push(("123".to_owned(), 1));
        }
        let items: Vec<(&str, i32)> = items.iter().map(|(p, q)| (p.as_str(), *q)).collect();
        create(&format!("race-{i}"), &format!("c-{}", i % 7), &items)
    };
    // 150 keys, the first 50 sent twice, interleaved so repeats race their originals.
    let mut calls: Vec<usize> = (0..150).chain(0..50).collect();
    calls.sort_by_key(|i| (i * 7919) % 200);
    let mut tasks = tokio::task::JoinSet::new();
    for i in calls {
        let mut client = s.client.clone();
        let req = request(i);
        tasks.spawn(async move { (i, client.create_order(req).await) });
    }
    let mut by_key: HashMap<usize, Vec<Order>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (i, res) = done.expect("task");
        let o = res.unwrap_or_else(|e| panic!("race-{i}: {e:?}")).into_inner();
        by_key.entry(i).or_default().push(o);
    }
    assert_eq!(by_key.len(), 150);
    for (i, orders) in &by_key {
        assert_eq!(orders.len(), if *i < 50 { 2 } else { 1 });
        assert!(orders.iter().all(|o| o.id == orders[0].id), "race-{i}: {orders:#?}");
        assert!(orders.iter().all(|o| o.status() == OrderStatus::Paid), "race-{i}");
        let expected: i64 = request(*i)
            .items
            .iter()
            .map(|it| i64::from(it.quantity) * catalog[&it.product_id].1)
            .sum();
        assert_eq!(orders[0].total.as_ref().unwrap().to_micros(), expected, "race-{i}");
    }
    let rows = s.assert_consistent().await;
    assert_eq!(rows.len(), 150);
    assert_eq!(s.succeeded_charges().await.len(), 150);
    assert_eq!(s.charges().await.len(), 150);
    let expected_lines: usize = (0..150usize).map(|i| if i.is_multiple_of(3) { 2 } else { 1 }).sum();
    assert_eq!(s.db.lines().await.len(), expected_lines);
}

async fn get_order_and_list_orders_newest_first_by_page(b: Backend) {
    let mut s = Setup::new(b).start().await;
    let e = s
        .client
        .get_order(GetOrderRequest { id: "nope-1".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("\"nope-1\""), "{}", e.message());
    let e = s
        .client
        .get_order(GetOrderRequest { id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("id is required"), "{}", e.message());

    let mut ids = Vec::new();
    for n in 0..3 {
        let o = s
            .client
            .create_order(create(&format!("list-{n}"), "c-list", &[("5", n + 1)]))
            .await
            .unwrap()
            .into_inner();
        ids.push(o.id);
        // Distinct creation times, so "newest first" has one answer.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.client
        .create_order(create("list-other", "c-other", &[("5", 1)]))
        .await
        .unwrap();

    let list = |size: i32, number: Option<i32>| ListOrdersRequest {
        customer_id: "c-list".into(),
        page_size: size,
        page_number: number,
    };
    let p1 = s.client.list_orders(list(2, None)).await.unwrap().into_inner();
    assert_eq!(p1.total_count, 3);
    let got: Vec<&str> = p1.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(p1.orders[0].lines[0].quantity, 3, "orders come with their lines");
    let page = p1.page.unwrap();
    assert_eq!(
        (page.page_size, page.page_number, page.total_pages, page.has_next_page),
        (2, 1, 2, true)
    );
    assert_eq!(p1.served_by.map(|s| s.service), Some("order".to_owned()));

    let p2 = s.client.list_orders(list(2, Some(2))).await.unwrap().into_inner();
    assert_eq!(
        p2.orders.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        [ids[0].as_str()]
    );
    assert!(!p2.page.unwrap().has_next_page);

    let all = s.client.list_orders(list(0, None)).await.unwrap().into_inner();
    assert_eq!((all.orders.len(), all.page.unwrap().page_size), (3, 10));
    let past = s.client.list_orders(list(2, Some(9))).await.unwrap().into_inner();
    assert!(past.orders.is_empty());
    assert_eq!(past.total_count, 3);

    for (req, words) in [
        (list(2, Some(0)), "page_number 0 is out of range"),
        (list(101, None), "page_size 101 is out of range"),
        (list(-1, None), "page_size -1 is out of range"),
        (
            ListOrdersRequest {
                customer_id: String::new(),
                page_size: 0,
                page_number: None,
            },
            "customer_id is required",
        ),
    ] {
        let e = s.client.list_orders(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(words), "{}", e.message());
    }
}

async fn bad_requests_name_the_field_and_store_nothing(b: Backend) {
    let mut s = Setup::new(b).start().await;
    let long = "x".repeat(129);
    let many: Vec<(&str, i32)> = (0..51).map(|_| ("1", 1)).collect();
    let cases = [
        (create("", "c", &[("1", 1)]), "idempotency_key is required"),
        (
            create(&long, "c", &[("1", 1)]),
            "idempotency_key is 129 characters long",
        ),
        (
            create("k", "c\n1", &[("1", 1)]),
            "customer_id contains the control character U+000A at character 2 of 3;",
        ),
        (create("k", " ", &[("1", 1)]), "customer_id is required"),
        (create("k", "c", &[]), "items has 0 lines; an order has 1 to 50"),
        (create("k", "c", &many), "items has 51 lines"),
        (
            create("k", "c", &[("1", 1), ("2", 0)]),
            "items[1].quantity 0 is out of range: use 1 to 1000",
        ),
        (
            create("k", "c", &[("1", 1001)]),
            "items[0].quantity 1001 is out of range",
        ),
        (
            create("k", "c", &[("1", 1), ("", 1)]),
            "items[1].product_id is required",
        ),
        (
            create("k", "c", &[(" 1", 1)]),
            "items[0].product_id \" 1\" has leading or trailing spaces",
        ),
        (
            create("k", "c", &[("1", 1), ("999", 1)]),
            "items[1].product_id \"999\": no such product",
        ),
    ];
    for (req, words) in cases {
        let e = s.client.create_order(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{words}: {e:?}");
        assert!(e.message().contains(words), "wanted {words:?} in {:?}", e.message());
    }
    assert!(s.db.orders().await.is_empty());
    assert!(s.db.lines().await.is_empty());
    assert!(s.charges().await.is_empty());
}

/// Every caller-supplied identifier refuses control characters,
/// bidirectional overrides, isolates and marks, and zero-width characters,
/// naming the field, the code point and where it is; nothing is stored or
/// charged. Other scripts and symbols are welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_refuse_control_bidi_and_zero_width_characters_naming_the_code_point() {
    let mut s = Setup::new(Backend::Sqlite).start().await;
    let classes = [
        (
            "the control character",
            &['\u{0}', '\u{7}', '\t', '\u{1B}', '\u{7F}', '\u{9B}'][..],
        ),
        (
            "the bidirectional formatting character",
            &[
                '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
                '\u{2069}', '\u{200E}', '\u{200F}',
            ][..],
        ),
        (
            "the zero-width character",
            &['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'][..],
        ),
    ];
    for (class, chars) in classes {
        for &c in chars {
            let bad = format!("ab{c}c");
            let want = |field: &str| {
                format!(
                    "{field} contains {class} U+{:04X} at character 3 of 4; identifiers may not contain control, \
                     bidirectional formatting or zero-width characters",
                    u32::from(c)
                )
            };
            let calls = [
                (
                    "idempotency_key",
                    s.client.create_order(create(&bad, "c-1", &[("1", 1)])).await.map(drop),
                ),
                (
                    "customer_id",
                    s.client.create_order(create("k-1", &bad, &[("1", 1)])).await.map(drop),
                ),
                (
                    "items[1].product_id",
                    s.client
                        .create_order(create("k-1", "c-1", &[("1", 1), (&bad, 1)]))
                        .await
                        .map(drop),
                ),
                (
                    "id",
                    s.client.get_order(GetOrderRequest { id: bad.clone() }).await.map(drop),
                ),
                (
                    "customer_id",
                    s.client
                        .list_orders(ListOrdersRequest {
                            customer_id: bad.clone(),
                            page_size: 0,
                            page_number: None,
                        })
                        .await
                        .map(drop),
                ),
            ];
            for (field, res) in calls {
                let e = res.expect_err(&format!("{field} with U+{:04X}", u32::from(c)));
                assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
                assert_eq!(e.message(), want(field));
            }
        }
    }
    assert!(s.db.orders().await.is_empty());
    assert!(s.charges().await.is_empty());
    // Letters of any script, accents and emoji are identifiers like any other.
    let o = s
        .client
        .create_order(create("clé-🙂-1", "Zoë Ünal 山田 שלום", &[("1", 1)]))
        .await
        .expect("a non-ASCII customer and key")
        .into_inner();
    assert_eq!(o.status(), OrderStatus::Paid);
    assert_eq!(o.customer_id, "Zoë Ünal 山田 שלום");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn the_next_hops_get_the_trace_request_id_routing_headers_and_a_deadline(b: Backend) {
    // Spans need the OpenTelemetry layer to carry trace ids; each test runs
    // in its own process under nextest, so this global is the test's own.
    let identity = order::Config::for_test(order::Database::Sqlite("unused".into()), "", "").identity;
    let _telemetry = telemetry::init(&telemetry::Settings {
        identity,
        service_name: "order".into(),
        otlp_endpoint: None,
    })
    .expect("telemetry");
    let mut s = Setup::new(b).record_hops().start().await;

    let mut req = Request::new(create("k-trace", "c-1", &[("123", 1), ("7", 2)]));
    for (k, v) in [
        ("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
        ("x-request-id", "req-42".to_owned()),
        ("user-type", "premium".to_owned()),
        ("x-user-id", "u-7".to_owned()),
    ] {
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    req.set_timeout(Duration::from_secs(2));
    let res = s.client.create_order(req).await.expect("order");
    assert_eq!(res.metadata().get("x-request-id").unwrap(), "req-42");
    let o = res.into_inner();

    let product = common::proxy::seen(&s.product_seen);
    assert_eq!(product.len(), 2, "one GetProduct per product");
    for h in &product {
        assert_eq!(h["x-request-id"], "req-42");
        assert_eq!(h["user-type"], "premium");
        assert_eq!(h["x-user-id"], "u-7");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.starts_with(&format!("00-{TRACE_ID}-")), "same trace: {tp}");
        assert!(!tp.contains(CALLER_SPAN), "a child span of the order service: {tp}");
        let left = telemetry::propagation::grpc_timeout(&MetadataMap::from_headers(h.clone())).expect("grpc-timeout");
        assert!(left <= Duration::from_secs(2) && left > Duration::ZERO, "{left:?}");
    }
    let payment = common::proxy::seen(&s.payment_seen);
    assert_eq!(payment.len(), 1);
    let h = &payment[0];
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["idempotency-key"], format!("order-{}", o.id).as_str());
    assert!(
        h["traceparent"]
            .to_str()
            .unwrap()
            .starts_with(&format!("00-{TRACE_ID}-"))
    );
    assert!(
        h.get("user-type").is_none(),
        "mesh routing headers stay inside the mesh"
    );

    // Without a caller deadline, product calls get the 5 s default.
    s.client
        .create_order(create("k-trace-2", "c-1", &[("1", 1)]))
        .await
        .expect("order");
    let product = common::proxy::seen(&s.product_seen);
    let h = product.last().unwrap();
    let left = telemetry::propagation::grpc_timeout(&MetadataMap::from_headers(h.clone())).expect("grpc-timeout");
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(2),
        "{left:?}"
    );
    assert_ne!(h["x-request-id"], "req-42", "a request id of its own");
}
