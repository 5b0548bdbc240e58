//! Placing and reading orders through the frontend, over real product,
//! order (SQLite) and payment servers.

mod common;

use common::*;
use serde_json::{Value, json};

async fn post_order(shop: &Shop, key: Option<&str>, body: Value) -> (reqwest::StatusCode, Value, Option<String>) {
    let mut req = http().post(shop.url("/api/orders")).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.unwrap();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = json_of(res).await;
    (status, body, location)
}

fn camera_order(quantity: i64) -> Value {
    json!({"customer_id": "cust-42", "items": [{"product_id": "123", "quantity": quantity}]})
}

#[tokio::test]
async fn an_order_placed_over_the_api_is_paid_and_readable_as_json_and_html() {
    let shop = Shop::start().await;

    let (status, order, location) = post_order(&shop, Some("key-camera-1"), camera_order(2)).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("an order id").to_owned();
    assert_eq!(location.as_deref(), Some(format!("/api/orders/{id}").as_str()));
    assert_eq!(order["status"], "PAID", "{order}");
    assert_eq!(order["customer_id"], "cust-42");
    assert_eq!(order["idempotency_key"], "key-camera-1");
    assert_eq!(order["total"]["display"], "$698.00");
    assert!(!order["payment_reference"].as_str().unwrap().is_empty(), "{order}");
    assert_eq!(order["served_by"]["service"], "order");
    assert_eq!(order["served_by"]["pod"], "order-test-0");
    let line = &order["lines"][0];
    assert_eq!(line["product_name"], "Vintage Film Camera");
    assert_eq!(line["quantity"], 2);
    assert_eq!(line["unit_price"]["display"], "$349.00");
    assert_eq!(line["line_total"]["display"], "$698.00");
    assert_eq!(line["priced_by"]["version"], "v2");
    assert_eq!(line["priced_by"]["pod"], "product-v2-t");

    let (status, again) = get_json(&shop.url(&format!("/api/orders/{id}"))).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], "PAID");
    assert_eq!(again["payment_reference"], order["payment_reference"]);

    let (status, html) = get_text(&shop.url(&format!("/orders/{id}"))).await;
    assert_eq!(status, 200);
    assert!(html.contains(&id));
    assert!(html.contains(r#"class="status PAID""#), "{html}");
    assert!(html.contains("$698.00") && html.contains("$349.00"));
    assert!(html.contains("Vintage Film Camera"));
    assert!(html.contains(order["payment_reference"].as_str().unwrap()));
    assert!(html.contains("served by order v1 · pod order-test-0"), "{html}");
    assert!(
        html.contains("product v2 · pod product-v2-t"),
        "who priced the line: {html}"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_order() {
    let shop = Shop::start().await;

    let (s1, first, _) = post_order(&shop, Some("key-repeat-1"), camera_order(1)).await;
    let (s2, second, _) = post_order(&shop, Some("key-repeat-1"), camera_order(1)).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201), "{first} {second}");
    assert_eq!(first["id"], second["id"], "one order per key");
    assert_eq!(
        first["payment_reference"], second["payment_reference"],
        "one charge per key"
    );

    // The body's key wins over the header.
    let mut body = camera_order(1);
    body["idempotency_key"] = json!("key-in-body-1");
    let (status, order, _) = post_order(&shop, Some("key-repeat-1"), body).await;
    assert_eq!(status, 201);
    assert_eq!(order["idempotency_key"], "key-in-body-1");
    assert_ne!(order["id"], first["id"]);

    // Without any key the frontend makes one: two posts, two orders.
    let (_, a, _) = post_order(&shop, None, camera_order(1)).await;
    let (_, b, _) = post_order(&shop, None, camera_order(1)).await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(a["idempotency_key"].as_str().unwrap().len(), 36);

    // Same key, different order: refused.
    let (status, body, _) = post_order(&shop, Some("key-repeat-1"), camera_order(3)).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "order-service");
    assert_eq!(body["code"], "ALREADY_EXISTS");
}

#[tokio::test]
async fn the_product_page_form_places_an_order_and_redirects_to_it() {
    let shop = Shop::start().await;
    let form = [
        ("product_id", "1"),
        ("quantity", "3"),
        ("customer_id", "form-customer"),
        ("idempotency_key", "form-key-1"),
    ];
    let res = http().post(shop.url("/orders")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/orders/"), "{location}");

    // Submitting the same form again lands on the same order.
    let again = http().post(shop.url("/orders")).form(&form).send().await.unwrap();
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);

    let (status, html) = get_text(&shop.url(&location)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Espresso Machine"));
    assert!(html.contains("form-customer"));
    assert!(html.contains("$747.00"), "3 × $249.00: {html}");
    assert!(html.contains(r#"class="status PAID""#));
}

#[tokio::test]
async fn bad_quantities_are_400_naming_the_field() {
    let shop = Shop::start().await;

    // Out of range: the order service's rule and message.
    let (status, body, _) = post_order(&shop, None, camera_order(0)).await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "order-service");
    assert!(body["detail"].as_str().unwrap().contains("items[0].quantity"), "{body}");

    // Not a number at all: the frontend's JSON parser names the field.
    let (status, body, _) = post_order(
        &shop,
        None,
        json!({"customer_id": "c", "items": [{"product_id": "1", "quantity": "many"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "frontend");
    assert!(body["detail"].as_str().unwrap().contains("quantity"), "{body}");

    // Not JSON.
    let res = http()
        .post(shop.url("/api/orders"))
        .body("quantity=2")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 400);
    assert_error(&body, "frontend");

    // The HTML form.
    let form = [("product_id", "1"), ("quantity", "lots"), ("customer_id", "c")];
    let res = http().post(shop.url("/orders")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("quantity must be a whole number"), "{html}");
    assert_no_grpc_dump(&html);
}

#[tokio::test]
async fn unknown_orders_are_404() {
    let shop = Shop::start().await;
    let (status, body) = get_json(&shop.url("/api/orders/no-such-order")).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "order-service");

    let (status, html) = get_text(&shop.url("/orders/no-such-order")).await;
    assert_eq!(status, 404);
    assert!(html.contains("order-service"), "{html}");
    assert_no_grpc_dump(&html);
}

#[tokio::test]
async fn a_declined_payment_shows_payment_failed_with_the_reason() {
    let mut cfg = payment::Config::for_test();
    cfg.failure_percent = 100.0;
    let shop = Shop::start_with(cfg).await;

    let (status, order, _) = post_order(&shop, Some("key-declined-1"), camera_order(1)).await;
    assert_eq!(
        status, 201,
        "the order is stored even when the card is declined: {order}"
    );
    assert_eq!(order["status"], "PAYMENT_FAILED", "{order}");
    assert!(!order["failure_reason"].as_str().unwrap().is_empty(), "{order}");

    let (_, html) = get_text(&shop.url(&format!("/orders/{}", order["id"].as_str().unwrap()))).await;
    assert!(html.contains(r#"class="status PAYMENT_FAILED""#), "{html}");
    assert!(html.contains("payment failed"));
}

#[tokio::test]
async fn readyz_is_200_with_both_backends_and_503_naming_order_without_it() {
    let shop = Shop::start().await;
    let (status, body) = get_json(&shop.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["product-service"], "SERVING");
    assert_eq!(body["checks"]["order-service"], "SERVING");

    let url = shop.frontend.url();
    shop.order.shutdown().await.unwrap();
    let (status, body) = get_json(&format!("{url}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "order-service");

    // Orders now fail with the hop named; product pages still work.
    let res = http()
        .post(format!("{url}/api/orders"))
        .json(&camera_order(1))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "order-service");
    let (status, html) = get_text(&format!("{url}/orders/anything")).await;
    assert_eq!(status, 503);
    assert!(
        html.contains("order-service is unavailable: check the order pods and the ORDER_SERVICE_ADDR"),
        "{html}"
    );
    assert_eq!(get(&format!("{url}/products/1")).await.status(), 200);
}
