//! `/mesh`: the last product calls by version and pod, so a person sees the
//! canary split. Here the split comes from replacing product v2 with v1 on
//! the same address halfway, as a rollout would.

mod common;

use std::collections::BTreeMap;

use common::*;

#[tokio::test]
async fn mesh_page_is_sensible_before_any_call() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, html) = get_text(&format!("{}/mesh", fe.url())).await;
    assert_eq!(status, 200);
    assert!(html.contains("No product calls yet"), "{html}");
    assert!(html.contains("curl -s -o"), "the empty page says how to make traffic");
    assert!(!html.contains("<svg"), "no empty chart");
}

/// Calls `/api/products/{id}` and returns the version that answered, or
/// `none` when no pod did.
async fn call(fe: &frontend::Handle, id: u32) -> String {
    let (status, body) = get_json(&format!("{}/api/products/{id}", fe.url())).await;
    if status == 200 {
        body["served_by"]["version"].as_str().unwrap().to_owned()
    } else {
        assert_error(&body, "product-service");
        "none".to_owned()
    }
}

#[tokio::test]
async fn mesh_page_shows_versions_and_pods_after_fifty_calls() {
    let v2 = start_product("v2", "product-v2-mesh").await;
    let port = v2.addr.port();
    let fe = frontend_over(&v2).await;

    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        *answered.entry(call(&fe, i % 20 + 1).await).or_default() += 1;
    }
    assert_eq!(answered.get("v2"), Some(&30));

    // v1 replaces v2 on the same address; the frontend's channel reconnects.
    v2.shutdown().await.unwrap();
    let mut cfg = product::Config::for_test("v1", "product-v1-mesh");
    cfg.port = port;
    let _v1 = start_product_with(cfg).await;
    for i in 0..20 {
        *answered.entry(call(&fe, i + 1).await).or_default() += 1;
    }
    let total: usize = answered.values().sum();
    assert_eq!(total, 50);
    assert!(answered.get("v1").copied().unwrap_or(0) >= 15, "{answered:?}");

    let (status, html) = get_text(&format!("{}/mesh", fe.url())).await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg"), "a chart is drawn");
    assert!(html.contains("The last 50 of up to 200 calls"), "{html}");
    for (version, n) in &answered {
        let percent = format!("{:.1}%", *n as f64 * 100.0 / total as f64);
        assert!(
            html.contains(&format!("{percent} · {n} calls")),
            "{version}: {percent} of {n} calls missing from {html}"
        );
    }
    for pod in ["product-v2-mesh", "product-v1-mesh"] {
        assert!(html.contains(pod), "pod {pod} missing");
    }
    // The table lists the newest call first.
    let first_row = html.split("<tbody>").nth(1).unwrap();
    let v1_at = first_row.find("product-v1-mesh").unwrap();
    let v2_at = first_row.find("product-v2-mesh").unwrap_or(usize::MAX);
    assert!(v1_at < v2_at, "newest first");
}

#[tokio::test]
async fn mesh_history_keeps_only_the_last_calls() {
    let product = start_product("v2", "product-v2-t").await;
    let mut cfg = frontend::Config::for_test(product.url(), refused_addr().await);
    cfg.mesh_history = 5;
    let fe = start_frontend(cfg).await;
    for _ in 0..12 {
        assert_eq!(call(&fe, 1).await, "v2");
    }
    let (_, html) = get_text(&format!("{}/mesh", fe.url())).await;
    assert!(html.contains("The last 5 of up to 5 calls"), "{html}");
    assert!(html.contains("100.0% · 5 calls"), "{html}");
}
