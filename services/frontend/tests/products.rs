//! The product-facing pages and JSON routes over a real frontend in front of
//! a real product server.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn home_page_lists_the_products_with_the_served_by_badge() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let res = get(&format!("{}/", fe.url())).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    // The frontend's own identity comes from the telemetry middleware.
    assert_eq!(res.headers()["x-served-by"], "frontend-t");
    let html = res.text().await.unwrap();
    for name in ["Espresso Machine", "Burr Coffee Grinder", "Vintage Film Camera"] {
        assert!(html.contains(name), "{name} missing from the product list");
    }
    assert!(html.contains("$249.00"), "prices are shown");
    assert!(
        html.contains("served by product v2 · pod product-v2-t"),
        "badge missing: {html}"
    );
    // v2 rates products.
    assert!(html.contains("812 reviews"), "v2 ratings are shown");
    assert!(html.contains("href=\"/products/123\""), "products link to their page");
}

#[tokio::test]
async fn v1_pages_and_json_have_no_ratings() {
    let product = start_product("v1", "product-v1-t").await;
    let fe = frontend_over(&product).await;

    let (status, html) = get_text(&format!("{}/", fe.url())).await;
    assert_eq!(status, 200);
    assert!(html.contains("served by product v1 · pod product-v1-t"), "{html}");
    assert!(!html.contains("reviews"), "v1 must not show ratings");
    assert!(html.contains("no ratings from this version"));

    let (status, body) = get_json(&format!("{}/api/products/1", fe.url())).await;
    assert_eq!(status, 200);
    assert!(body.get("rating").is_none(), "{body}");
    assert_eq!(body["served_by"]["version"], "v1");
}

#[tokio::test]
async fn product_page_has_its_badge_and_an_order_form() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, html) = get_text(&format!("{}/products/123", fe.url())).await;
    assert_eq!(status, 200);
    assert!(html.contains("Vintage Film Camera"));
    assert!(html.contains("$349.00"));
    assert!(html.contains("served by product v2 · pod product-v2-t"), "{html}");
    assert!(html.contains(r#"<form class="order" method="post" action="/orders">"#));
    assert!(html.contains(r#"name="quantity""#) && html.contains(r#"name="customer_id""#));
    assert!(html.contains(r#"name="product_id" value="123""#));
    // One idempotency key per rendered form, so a double submit is one order.
    let key = |html: &str| {
        let start = html.find(r#"name="idempotency_key" value=""#).expect("key field") + 30;
        html[start..start + 36].to_owned()
    };
    let (_, again) = get_text(&format!("{}/products/123", fe.url())).await;
    assert_ne!(key(&html), key(&again));
}

#[tokio::test]
async fn api_product_has_served_by_price_and_v2_rating() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, body) = get_json(&format!("{}/api/products/123", fe.url())).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "123");
    assert_eq!(body["name"], "Vintage Film Camera");
    assert_eq!(body["price"]["currency_code"], "USD");
    assert_eq!(body["price"]["units"], 349);
    assert_eq!(body["price"]["display"], "$349.00");
    assert_eq!(body["served_by"]["service"], "product");
    assert_eq!(body["served_by"]["version"], "v2");
    assert_eq!(body["served_by"]["pod"], "product-v2-t");
    let avg = body["rating"]["average"].as_f64().expect("v2 has a rating");
    assert!((0.0..=5.0).contains(&avg) && avg > 0.0, "{body}");
    assert!(body["rating"]["count"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn api_lists_products_by_page() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, body) = get_json(&format!("{}/api/products?page=2&page_size=5", fe.url())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["products"].as_array().unwrap().len(), 5);
    assert_eq!(body["products"][0]["id"], "6");
    assert_eq!(body["total_count"], 21);
    assert_eq!(body["page"]["page_number"], 2);
    assert_eq!(body["page"]["page_size"], 5);
    assert_eq!(body["page"]["total_pages"], 5);
    assert_eq!(body["page"]["has_next_page"], true);
    assert_eq!(body["served_by"]["pod"], "product-v2-t");

    let (status, body) = get_json(&format!("{}/api/products", fe.url())).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["products"].as_array().unwrap().len(),
        10,
        "the product service's default page"
    );
}

#[tokio::test]
async fn bad_query_values_are_400_naming_the_parameter() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    // Not a number: refused by the frontend itself.
    let (status, body) = get_json(&format!("{}/api/products?page_size=ten", fe.url())).await;
    assert_eq!(status, 400);
    assert_error(&body, "frontend");
    assert!(body["detail"].as_str().unwrap().contains("page_size"), "{body}");

    // A number out of range: the product service's rule and message.
    let (status, body) = get_json(&format!("{}/api/products?page_size=1000", fe.url())).await;
    assert_eq!(status, 400);
    assert_error(&body, "product-service");
    assert!(body["detail"].as_str().unwrap().contains("page_size 1000"), "{body}");
    assert_eq!(body["code"], "INVALID_ARGUMENT");

    let (status, body) = get_json(&format!("{}/api/products?page=0", fe.url())).await;
    assert_eq!(status, 400);
    assert_error(&body, "frontend");
    assert!(body["detail"].as_str().unwrap().starts_with("page must be"), "{body}");

    // The HTML list says the same on a friendly page.
    let (status, html) = get_text(&format!("{}/?page=x", fe.url())).await;
    assert_eq!(status, 400);
    assert!(html.contains("page must be a whole number"), "{html}");
    assert_no_grpc_dump(&html);
}

#[tokio::test]
async fn unknown_product_is_404_in_json_and_on_a_page() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, body) = get_json(&format!("{}/api/products/999", fe.url())).await;
    assert_eq!(status, 404);
    assert_error(&body, "product-service");
    assert_eq!(body["error"], "not found");
    assert!(body["detail"].as_str().unwrap().contains("999"), "{body}");

    let (status, html) = get_text(&format!("{}/products/999", fe.url())).await;
    assert_eq!(status, 404);
    assert!(html.contains("product-service"), "the page names the hop: {html}");
    assert!(html.contains("no product with id"), "{html}");
    assert_no_grpc_dump(&html);
}

#[tokio::test]
async fn unknown_routes_are_404_json_under_api_and_html_elsewhere() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;

    let (status, body) = get_json(&format!("{}/api/nothing-here", fe.url())).await;
    assert_eq!(status, 404);
    assert_error(&body, "frontend");

    let res = get(&format!("{}/nothing-here", fe.url())).await;
    assert_eq!(res.status(), 404);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    // minijinja's HTML escaping also escapes '/', harmless in a page.
    assert!(html.contains("There is no page at this address."), "{html}");
    assert!(html.contains("no page at &#x2f;nothing-here"), "{html}");
}

#[tokio::test]
async fn product_down_is_503_naming_the_hop() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;
    let (status, _) = get_json(&format!("{}/api/products/1", fe.url())).await;
    assert_eq!(status, 200, "works while product-service is up");

    product.shutdown().await.expect("product drains");

    let (status, body) = get_json(&format!("{}/api/products/1", fe.url())).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "product-service");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["code"], "UNAVAILABLE");

    let (status, body) = get_json(&format!("{}/api/products", fe.url())).await;
    assert_eq!(status, 503);
    assert_error(&body, "product-service");

    let (status, html) = get_text(&format!("{}/", fe.url())).await;
    assert_eq!(status, 503);
    assert!(
        html.contains("product-service is unavailable: check the product pods and the PRODUCT_SERVICE_ADDR"),
        "{html}"
    );
    assert_no_grpc_dump(&html);
}

#[tokio::test]
async fn slow_product_is_504_after_the_backend_timeout() {
    let mut cfg = product::Config::for_test("v2", "product-v2-slow");
    cfg.faults.delay = Duration::from_secs(5);
    let product = start_product_with(cfg).await;
    let mut fcfg = frontend::Config::for_test(product.url(), refused_addr().await);
    fcfg.backend_timeout = Duration::from_millis(300);
    let fe = start_frontend(fcfg).await;

    let (status, body) = get_json(&format!("{}/api/products/1", fe.url())).await;
    assert_eq!(status, 504, "{body}");
    assert_error(&body, "product-service");
    assert_eq!(body["code"], "DEADLINE_EXCEEDED");
    assert!(
        body["detail"].as_str().unwrap().contains("300 ms (BACKEND_TIMEOUT_MS)"),
        "{body}"
    );

    let (status, html) = get_text(&format!("{}/products/1", fe.url())).await;
    assert_eq!(status, 504);
    assert!(html.contains("product-service did not answer in time"), "{html}");
}

#[tokio::test]
async fn backend_calls_are_counted_by_hop_method_code_and_version() {
    let product = start_product("v2", "product-v2-t").await;
    let fe = frontend_over(&product).await;
    for _ in 0..3 {
        assert_eq!(get(&format!("{}/api/products/1", fe.url())).await.status(), 200);
    }
    assert_eq!(get(&format!("{}/api/products/999", fe.url())).await.status(), 404);
    assert_eq!(get(&format!("{}/", fe.url())).await.status(), 200);

    let text = metrics(fe.metrics_addr).await;
    let calls = |method, code| {
        sample(
            &text,
            "frontend_backend_calls_total",
            &[
                ("hop", "product-service"),
                ("method", method),
                ("code", code),
                ("version", "v2"),
            ],
        )
    };
    assert_eq!(calls("GetProduct", "OK"), Some(3.0), "{text}");
    assert_eq!(calls("GetProduct", "NOT_FOUND"), Some(1.0), "{text}");
    assert_eq!(calls("ListProducts", "OK"), Some(1.0), "{text}");
    let http = |route, status| {
        sample(
            &text,
            "http_server_requests_total",
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(http("/api/products/{id}", "200"), Some(3.0), "{text}");
    assert_eq!(http("/api/products/{id}", "404"), Some(1.0), "{text}");
    assert_eq!(http("/", "200"), Some(1.0), "{text}");
}
