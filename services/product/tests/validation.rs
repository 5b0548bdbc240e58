//! Bad input gets its gRPC code and a message naming the field and the reason.

mod common;

use proto::product::{GetProductRequest, ListProductsRequest, WatchPricesRequest};
use tonic::Code;

fn assert_status(err: tonic::Status, code: Code, words: &[&str]) {
    assert_eq!(err.code(), code, "{err:?}");
    for w in words {
        assert!(err.message().contains(w), "message {:?} lacks {w:?}", err.message());
    }
}

#[tokio::test]
async fn product_ids_are_checked() {
    let h = common::start("v1", "product-v1-val-0").await;
    let mut c = common::client(&h).await;
    let cases: [(String, Code, &[&str]); 6] = [
        (String::new(), Code::InvalidArgument, &["product_id", "empty"]),
        (
            "x".repeat(65),
            Code::InvalidArgument,
            &["product_id", "65 characters", "at most 64"],
        ),
        (
            "12\u{0}3".into(),
            Code::InvalidArgument,
            &["product_id", "non-printable"],
        ),
        ("1\n".into(), Code::InvalidArgument, &["product_id", "non-printable"]),
        ("999".into(), Code::NotFound, &["product_id", "\"999\""]),
        ("x".repeat(64), Code::NotFound, &["product_id"]),
    ];
    for (id, code, words) in cases {
        let err = c
            .get_product(GetProductRequest { product_id: id.clone() })
            .await
            .unwrap_err();
        assert_status(err, code, words);
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn paging_is_checked() {
    let h = common::start("v1", "product-v1-val-0").await;
    let mut c = common::client(&h).await;
    for (size, number, words) in [
        (-1, Some(1), &["page_size", "-1"][..]),
        (101, Some(1), &["page_size", "101", "1 to 100"][..]),
        (10, Some(0), &["page_number", "0", "from 1"][..]),
        (10, Some(-3), &["page_number", "-3"][..]),
    ] {
        let err = c
            .list_products(ListProductsRequest {
                page_size: size,
                page_number: number,
            })
            .await
            .unwrap_err();
        assert_status(err, Code::InvalidArgument, words);
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_requests_are_checked() {
    let h = common::start("v1", "product-v1-val-0").await;
    let mut c = common::client(&h).await;
    let err = c
        .watch_prices(WatchPricesRequest {
            product_ids: vec!["1".into(), "nope".into()],
            interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, &["product_ids[1]", "\"nope\""]);
    let err = c
        .watch_prices(WatchPricesRequest {
            product_ids: vec![String::new()],
            interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, &["product_ids[0]", "empty"]);
    let err = c
        .watch_prices(WatchPricesRequest {
            product_ids: vec![],
            interval_ms: 10,
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, &["interval_ms", "10"]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_above_4_mib_is_resource_exhausted_and_the_server_lives_on() {
    let h = common::start("v1", "product-v1-val-0").await;
    let mut c = common::client(&h).await;
    let err = c
        .get_product(GetProductRequest {
            product_id: "x".repeat(5 * 1024 * 1024),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::ResourceExhausted, &["bytes", "limit of 4194304"]);
    // just under the limit is decoded (and then refused for its length)
    let err = c
        .get_product(GetProductRequest {
            product_id: "x".repeat(4 * 1024 * 1024 - 16),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, &["product_id", "at most 64"]);
    let ok = c
        .get_product(GetProductRequest { product_id: "1".into() })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().id, "1");
    h.shutdown().await.unwrap();
}
