//! The pages in a real browser: headless Chromium renders `/` (its DOM must
//! hold the products) and screenshots `/` and `/mesh`. The screenshots are
//! kept under target/ so a person can look at them.

mod common;

use common::*;

/// Where the screenshots go: target/frontend-screenshots/, kept after the run.
async fn screenshot(url: &str, name: &str, min_bytes: usize) -> Vec<u8> {
    testkit::browser::screenshot(
        url,
        &testkit::browser::screenshot_dir("frontend-screenshots"),
        name,
        min_bytes,
    )
    .await
}

async fn run_chromium(args: &[String]) -> String {
    testkit::browser::run(args).await
}

#[tokio::test]
async fn chromium_renders_the_products_and_the_mesh_chart() {
    let v2 = start_product("v2", "product-v2-7c9f8d6b5-x2k4q").await;
    let port = v2.addr.port();
    let fe = frontend_over(&v2).await;
    let home = format!("{}/", fe.url());

    let dom = run_chromium(&["--dump-dom".to_owned(), home.clone()]).await;
    assert!(
        dom.contains("data-product-id=\"123\""),
        "product 123 is not in the DOM: {dom}"
    );
    assert!(dom.contains("Vintage Film Camera") && dom.contains("Espresso Machine"));
    assert!(dom.contains("served by product v2 · pod product-v2-7c9f8d6b5-x2k4q"));
    assert_eq!(
        dom.matches("class=\"card product\"").count(),
        21,
        "every product is rendered"
    );

    screenshot(&home, "home.png", 60_000).await;
    screenshot(&format!("{}/products/123", fe.url()), "product.png", 20_000).await;

    // Traffic for the chart: some calls to v2, then v1 takes over the
    // address (as in a rollout), so the chart has two versions to split.
    for id in 1..=9 {
        assert_eq!(get(&format!("{}/api/products/{id}", fe.url())).await.status(), 200);
    }
    v2.shutdown().await.unwrap();
    let mut cfg = product::Config::for_test("v1", "product-v1-5d8c7b9f4-q7m2z");
    cfg.port = port;
    let v1 = start_product_with(cfg).await;
    for id in 1..=40 {
        get(&format!("{}/api/products/{}", fe.url(), id % 20 + 1)).await;
    }
    let dom = run_chromium(&["--dump-dom".to_owned(), format!("{}/mesh", fe.url())]).await;
    assert!(dom.contains("product-v1-5d8c7b9f4-q7m2z") && dom.contains("product-v2-7c9f8d6b5-x2k4q"));
    assert!(dom.contains("<svg"), "the chart is in the DOM");
    screenshot(&format!("{}/mesh", fe.url()), "mesh.png", 40_000).await;

    // With product-service gone, the page names the hop and what to check.
    v1.shutdown().await.unwrap();
    // A connection the frontend already had may serve a last call while the server drains: wait
    // until product-service is gone for the frontend too.
    let started = std::time::Instant::now();
    while get(&format!("{}/api/products/1", fe.url())).await.status() == 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "product-service gone"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let dom = run_chromium(&["--dump-dom".to_owned(), home.clone()]).await;
    assert!(dom.contains("product-service is unavailable"), "{dom}");
    screenshot(&home, "error.png", 10_000).await;
}

#[tokio::test]
async fn chromium_renders_an_order_page() {
    let shop = Shop::start().await;
    let res = http()
        .post(shop.url("/api/orders"))
        .header("Idempotency-Key", "browser-order-1")
        .json(&serde_json::json!({
            "customer_id": "browser-customer",
            "items": [{"product_id": "123", "quantity": 1}, {"product_id": "4", "quantity": 2}],
        }))
        .send()
        .await
        .unwrap();
    let (status, order) = json_of(res).await;
    assert_eq!(status, 201, "{order}");
    let url = shop.url(&format!("/orders/{}", order["id"].as_str().unwrap()));

    let dom = run_chromium(&["--dump-dom".to_owned(), url.clone()]).await;
    assert!(dom.contains("Vintage Film Camera") && dom.contains("Cast Iron Skillet"));
    assert!(dom.contains("$428.90"), "the total: {dom}");
    screenshot(&url, "order.png", 20_000).await;
}
