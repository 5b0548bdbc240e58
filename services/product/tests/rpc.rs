//! Every RPC over a real socket with a tonic client, as a user calls them.

mod common;

use std::time::Duration;

use proto::product::{AgentPing, GetProductRequest, ListProductsRequest, WatchPricesRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request, metadata::MetadataValue};

#[tokio::test]
async fn get_product_names_the_version_and_pod_in_body_and_metadata() {
    let h = common::start("v2", "product-v2-abc-1").await;
    let mut c = common::client(&h).await;
    let mut req = Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    req.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("req-123"));
    let res = c.get_product(req).await.unwrap();
    assert_eq!(res.metadata().get("x-served-by").unwrap(), "product-v2-abc-1");
    assert_eq!(res.metadata().get("x-version").unwrap(), "v2");
    assert_eq!(res.metadata().get("x-request-id").unwrap(), "req-123");
    let p = res.into_inner();
    assert_eq!(p.id, "123");
    assert_eq!(p.name, "Vintage Film Camera");
    let price = p.price.unwrap();
    assert_eq!(
        (price.currency_code.as_str(), price.units, price.nanos),
        ("USD", 349, 0)
    );
    let rating = p.rating.expect("v2 shows ratings");
    assert!(rating.average > 0.0 && rating.count > 0);
    let sb = p.served_by.unwrap();
    assert_eq!(
        (sb.service.as_str(), sb.version.as_str(), sb.pod.as_str()),
        ("product", "v2", "product-v2-abc-1")
    );
    assert_eq!((sb.node.as_str(), sb.namespace.as_str()), ("test-node", "default"));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn v1_has_no_ratings_and_a_request_id_is_made_when_absent() {
    let h = common::start("v1", "product-v1-abc-1").await;
    let mut c = common::client(&h).await;
    let res = c
        .get_product(GetProductRequest { product_id: "7".into() })
        .await
        .unwrap();
    let rid = res
        .metadata()
        .get("x-request-id")
        .expect("generated request id")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(rid.len(), 36, "a UUID: {rid}");
    assert_eq!(res.metadata().get("x-version").unwrap(), "v1");
    let p = res.into_inner();
    assert!(p.rating.is_none());
    assert_eq!(p.price.unwrap().to_micros(), 45_000_000);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_products_pages_through_the_catalog() {
    let h = common::start("v2", "product-v2-abc-1").await;
    let mut c = common::client(&h).await;

    // The seed's request: {"page_size": 10, "page_number": 1}
    let first = c
        .list_products(ListProductsRequest {
            page_size: 10,
            page_number: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.products.len(), 10);
    assert_eq!(first.total_count, 21);
    let page = first.page.unwrap();
    assert_eq!(
        (page.page_size, page.page_number, page.total_pages, page.has_next_page),
        (10, 1, 3, true)
    );
    assert_eq!(first.products[0].id, "1");
    assert!(first.products.iter().all(|p| p.rating.is_some()));
    assert_eq!(first.served_by.unwrap().version, "v2");

    let last = c
        .list_products(ListProductsRequest {
            page_size: 10,
            page_number: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.products.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["123"]);
    assert!(!last.page.unwrap().has_next_page);

    // page_size 0 is the default of 10, an absent page_number is page 1
    let default = c
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default.products.len(), 10);
    assert_eq!(default.page.unwrap().page_number, 1);

    // past the end: an empty page, not an error
    let past = c
        .list_products(ListProductsRequest {
            page_size: 100,
            page_number: Some(9),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past.products.is_empty());
    assert_eq!(past.total_count, 21);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_prices_streams_until_the_client_cancels() {
    let h = common::start("v1", "product-v1-abc-1").await;
    let mut c = common::client(&h).await;
    let mut stream = c
        .watch_prices(WatchPricesRequest {
            product_ids: vec!["1".into(), "123".into()],
            interval_ms: 50,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let u = stream.next().await.expect("stream open").expect("update");
        assert_eq!(u.served_by.as_ref().unwrap().pod, "product-v1-abc-1");
        assert!(u.price.as_ref().unwrap().units > 0 && u.at.is_some());
        seen.push((u.product_id, u.sequence));
    }
    assert_eq!(seen.iter().filter(|(id, _)| id == "123").count(), 3);
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "sequence increases: {seen:?}");

    let open = |text: &str| {
        common::sample(
            text,
            "grpc_server_open_streams",
            &[("grpc_method", "WatchPrices"), ("version", "v1")],
        )
    };
    assert_eq!(open(&common::metrics(&h).await), Some(1.0));
    drop(stream); // the client cancels
    let text = common::eventually(async || {
        let t = common::metrics(&h).await;
        (open(&t) == Some(0.0)).then_some(t)
    })
    .await;
    let cancelled = [("grpc_method", "WatchPrices"), ("grpc_code", "Canceled")];
    assert_eq!(
        common::sample(&text, "grpc_server_handled_total", &cancelled),
        Some(1.0)
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_prices_of_the_whole_catalog_by_default() {
    let h = common::start("v1", "product-v1-abc-1").await;
    let mut c = common::client(&h).await;
    let mut stream = c
        .watch_prices(WatchPricesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..21 {
        ids.insert(stream.next().await.unwrap().unwrap().product_id);
    }
    assert_eq!(ids.len(), 21, "one update per product in the first round");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn agent_sync_pongs_every_ping_from_one_pod() {
    let h = common::start("v2", "product-v2-abc-7").await;
    let mut c = common::client(&h).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("agent-version", MetadataValue::from_static("v2.1"));
    req.metadata_mut()
        .insert("agent-id", MetadataValue::from_static("agent-v2-1-7df8b5c9d-xyzab"));
    let mut pongs = c.agent_sync(req).await.unwrap().into_inner();
    for seq in 1..=20u64 {
        tx.send(AgentPing {
            seq,
            message: "ping".into(),
            sent_at: None,
        })
        .await
        .unwrap();
        let pong = pongs.next().await.unwrap().unwrap();
        assert_eq!((pong.seq, pong.stream_pongs, pong.message.as_str()), (seq, seq, "pong"));
        assert_eq!(pong.agent_id, "agent-v2-1-7df8b5c9d-xyzab");
        assert_eq!(pong.agent_version, "v2.1");
        let sb = pong.served_by.unwrap();
        assert_eq!((sb.version.as_str(), sb.pod.as_str()), ("v2", "product-v2-abc-7"));
    }
    drop(tx); // the agent closes its side: the server ends the stream with OK
    assert!(pongs.next().await.is_none());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_faults_apply_to_unary_calls_only() {
    let mut cfg = product::Config::for_test("v2", "product-v2-faulty-0");
    cfg.faults = product::faults::Faults {
        delay: Duration::from_millis(200),
        abort_percent: 100.0,
        abort_code: Some(Code::Unavailable),
    };
    let h = common::start_with(cfg).await;
    let mut c = common::client(&h).await;
    let started = std::time::Instant::now();
    let err = c
        .get_product(GetProductRequest { product_id: "1".into() })
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200), "the delay comes first");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("fault injected"), "{}", err.message());
    assert_eq!(
        err.metadata().get("x-version").unwrap(),
        "v2",
        "errors name the version too"
    );
    let err = c.list_products(ListProductsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // streams are not faulted
    let mut s = c
        .watch_prices(WatchPricesRequest {
            product_ids: vec!["1".into()],
            interval_ms: 50,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.next().await.unwrap().is_ok());
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_calls_by_method_code_and_version() {
    let h = common::start("v2", "product-v2-abc-1").await;
    let mut c = common::client(&h).await;
    for _ in 0..3 {
        c.get_product(GetProductRequest { product_id: "1".into() })
            .await
            .unwrap();
    }
    c.get_product(GetProductRequest {
        product_id: "999".into(),
    })
    .await
    .unwrap_err();
    let text = common::metrics(&h).await;
    let ok = [("grpc_method", "GetProduct"), ("grpc_code", "OK"), ("version", "v2")];
    let nf = [
        ("grpc_method", "GetProduct"),
        ("grpc_code", "NotFound"),
        ("version", "v2"),
    ];
    assert_eq!(common::sample(&text, "grpc_server_handled_total", &ok), Some(3.0));
    assert_eq!(common::sample(&text, "grpc_server_handled_total", &nf), Some(1.0));
    assert_eq!(
        common::sample(&text, "grpc_server_handling_seconds_count", &ok),
        Some(3.0)
    );
    assert!(text.contains("grpc_server_handling_seconds_bucket{"), "{text}");
    h.shutdown().await.unwrap();
}
