//! Every route of the frontend's router, called in-process with `tower::ServiceExt::oneshot` over
//! fake backends: no server, no socket, no product or order service. What is checked is what a
//! user sees: the status, the content type, the JSON error's fields, the text of the pages, and
//! what the handlers asked the backends for. The real gRPC backends are covered by the other
//! files of `tests/`.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header},
};
use frontend::{
    backends::{Backends, Call, Reply},
    config::{DEFAULT_LINGER_MAX_BYTES, DEFAULT_MAX_BODY_BYTES},
    errors::{AppError, Hop, code_name},
    extract::Linger,
    mesh::{MeshHistory, ProductCall},
    server::router,
    state::AppState,
    templates::Templates,
};
use proto::{
    common::{Money, PageInfo, ServedBy},
    order::{CreateOrderRequest, Order, OrderItem, OrderLine, OrderStatus},
    product::{ListProductsResponse, Product, Rating},
};
use serde_json::{Value, json};
use telemetry::{Identity, http::HttpObserver, metrics::Registry};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tower::ServiceExt as _;

// ---------------------------------------------------------------------------------------------
// The fake backends

/// What a handler asked the backends for.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    GetProduct(String),
    ListProducts { page_size: i32, page_number: Option<i32> },
    CreateOrder(CreateOrderRequest),
    GetOrder(String),
}

/// Backends answering from two products and one order (`ord-42`), or failing every call to one
/// hop, and remembering what they were asked with which headers.
#[derive(Default)]
struct FakeBackends {
    failing: Option<AppError>,
    asked: Mutex<Vec<(Asked, HeaderMap)>>,
}

const ORDER_ID: &str = "ord-42";

impl FakeBackends {
    /// Every call to `hop` fails with `code`, as a backend that answered so would.
    fn failing(hop: Hop, code: Code, detail: &str) -> Self {
        Self {
            failing: Some(AppError::new(hop, code, detail)),
            ..Self::default()
        }
    }

    /// Remembers the call; the failure it is to end in, if any.
    fn call(&self, hop: Hop, asked: Asked, headers: &HeaderMap) -> Result<(), AppError> {
        self.asked.lock().unwrap().push((asked, headers.clone()));
        match &self.failing {
            Some(e) if e.hop == hop => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().iter().map(|(a, _)| a.clone()).collect()
    }

    fn last_headers(&self) -> HeaderMap {
        self.asked.lock().unwrap().last().expect("a backend call").1.clone()
    }
}

fn reply<'a, T: Send + 'a>(message: T, version: &str, pod: &str) -> Call<'a, Reply<T>> {
    let (version, pod) = (version.to_owned(), pod.to_owned());
    Box::pin(async move { Ok(Reply { message, version, pod }) })
}

fn failed<'a, T: Send + 'a>(e: AppError) -> Call<'a, T> {
    Box::pin(async move { Err(e) })
}

impl Backends for FakeBackends {
    fn get_product<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Product>> {
        if let Err(e) = self.call(Hop::Product, Asked::GetProduct(id.to_owned()), headers) {
            return failed(e);
        }
        match catalog().into_iter().find(|p| p.id == id) {
            Some(p) => reply(p, "v2", "product-v2-fake"),
            None => failed(AppError::new(
                Hop::Product,
                Code::NotFound,
                &format!("no product with id {id:?}"),
            )),
        }
    }

    fn list_products<'a>(
        &'a self,
        headers: &'a HeaderMap,
        page_size: i32,
        page_number: Option<i32>,
    ) -> Call<'a, Reply<ListProductsResponse>> {
        let asked = Asked::ListProducts { page_size, page_number };
        if let Err(e) = self.call(Hop::Product, asked, headers) {
            return failed(e);
        }
        let products: Vec<Product> = catalog()
            .into_iter()
            .map(|p| Product { served_by: None, ..p })
            .collect();
        let list = ListProductsResponse {
            total_count: products.len() as i32,
            products,
            page: Some(PageInfo {
                page_size: 10,
                page_number: page_number.unwrap_or(1),
                total_pages: 1,
                has_next_page: false,
            }),
            served_by: Some(served_by("product", "v2", "product-v2-fake")),
        };
        reply(list, "v2", "product-v2-fake")
    }

    fn create_order<'a>(&'a self, headers: &'a HeaderMap, msg: CreateOrderRequest) -> Call<'a, Reply<Order>> {
        if let Err(e) = self.call(Hop::Order, Asked::CreateOrder(msg.clone()), headers) {
            return failed(e);
        }
        let order = Order {
            customer_id: msg.customer_id,
            idempotency_key: msg.idempotency_key,
            ..order()
        };
        reply(order, "v1", "order-fake-0")
    }

    fn get_order<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Order>> {
        if let Err(e) = self.call(Hop::Order, Asked::GetOrder(id.to_owned()), headers) {
            return failed(e);
        }
        if id == ORDER_ID {
            reply(order(), "v1", "order-fake-0")
        } else {
            failed(AppError::new(
                Hop::Order,
                Code::NotFound,
                &format!("order {id:?} not found"),
            ))
        }
    }

    fn check(&self, hop: Hop) -> Call<'_, ()> {
        match &self.failing {
            Some(e) if e.hop == hop => failed(e.clone()),
            _ => Box::pin(async { Ok(()) }),
        }
    }
}

fn served_by(service: &str, version: &str, pod: &str) -> ServedBy {
    ServedBy {
        service: service.into(),
        version: version.into(),
        pod: pod.into(),
        node: "node-a".into(),
        zone: String::new(),
        namespace: "default".into(),
    }
}

fn usd(units: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".into(),
        units,
        nanos: 0,
    })
}

fn catalog() -> Vec<Product> {
    vec![
        Product {
            id: "1".into(),
            name: "Espresso Machine".into(),
            description: "Fifteen bars.".into(),
            price: usd(249),
            stock: 7,
            categories: vec!["kitchen".into()],
            rating: Some(Rating {
                average: 4.5,
                count: 812,
            }),
            served_by: Some(served_by("product", "v2", "product-v2-fake")),
        },
        Product {
            id: "123".into(),
            name: "Vintage Film Camera".into(),
            description: "35 mm.".into(),
            price: usd(349),
            stock: 2,
            categories: vec!["photo".into()],
            rating: None,
            served_by: Some(served_by("product", "v2", "product-v2-fake")),
        },
    ]
}

fn order() -> Order {
    Order {
        id: ORDER_ID.into(),
        customer_id: "cust-42".into(),
        status: OrderStatus::Paid as i32,
        lines: vec![OrderLine {
            product_id: "123".into(),
            product_name: "Vintage Film Camera".into(),
            quantity: 2,
            unit_price: usd(349),
            line_total: usd(698),
            priced_by: Some(served_by("product", "v2", "product-v2-fake")),
        }],
        total: usd(698),
        created_at: None,
        payment_reference: "pay-7".into(),
        failure_reason: String::new(),
        idempotency_key: "key-1".into(),
        served_by: Some(served_by("order", "v1", "order-fake-0")),
    }
}

// ---------------------------------------------------------------------------------------------
// The router over them

struct App {
    router: Router,
    backends: Arc<FakeBackends>,
    mesh: Arc<MeshHistory>,
    draining: CancellationToken,
}

impl App {
    fn new(backends: FakeBackends) -> Self {
        Self::with_body_limit(backends, DEFAULT_MAX_BODY_BYTES)
    }

    fn with_body_limit(backends: FakeBackends, max_body_bytes: usize) -> Self {
        let identity = Identity::for_test("frontend", "v1", "frontend-t");
        let backends = Arc::new(backends);
        let mesh = Arc::new(MeshHistory::new(200));
        let draining = CancellationToken::new();
        let state = AppState::new(
            backends.clone(),
            Templates::new().expect("templates"),
            mesh.clone(),
            &identity,
            draining.clone(),
            max_body_bytes,
        );
        let observer = HttpObserver::new(&identity, &Registry::new()).expect("metrics");
        let linger = Linger {
            max_bytes: DEFAULT_LINGER_MAX_BYTES,
            timeout: std::time::Duration::from_secs(5),
        };
        Self {
            router: router(state, observer, linger),
            backends,
            mesh,
            draining,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let request = format!("{} {}", req.method(), req.uri());
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
        Answer {
            request,
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// `POST /api/orders` with a JSON body.
    async fn post_order(&self, body: &Value, key_header: Option<&str>) -> Answer {
        let mut req = Request::post("/api/orders").header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = key_header {
            req = req.header("idempotency-key", k);
        }
        self.send(req.body(Body::from(body.to_string())).unwrap()).await
    }

    /// `POST /orders` as the product page's form does.
    async fn post_form(&self, form: &str) -> Answer {
        let req = Request::post("/orders")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        self.send(req).await
    }
}

struct Answer {
    /// `GET /path`, for the failure messages.
    request: String,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The request and what came back of it, for failure messages: of a page, its content
    /// without the layout's styles.
    fn context(&self) -> String {
        let shown = match (self.body.find("<main"), self.body.find("</main>")) {
            (Some(start), Some(end)) => &self.body[start..end],
            _ => &self.body,
        };
        format!("{} answered {}: {shown}", self.request, self.status)
    }

    fn json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.context());
        let ct = self.content_type();
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct:?}: {}",
            self.context()
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.context()))
    }

    fn html(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{}", self.context());
        let ct = self.content_type();
        assert!(ct.starts_with("text/html"), "content-type {ct:?}: {}", self.context());
        &self.body
    }

    /// The API's JSON error: exactly `error`, `detail`, `hop` and `code`, the detail without a
    /// raw gRPC status.
    fn json_error(&self, status: u16, hop: &str, code: &str) -> Value {
        let body = self.json(status);
        let keys: BTreeSet<&str> = body
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["code", "detail", "error", "hop"]), "{body}");
        assert_eq!(body["hop"], hop, "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        assert!(body["detail"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        assert_no_grpc_dump(&self.body);
        body
    }

    /// The HTML error page: the status, the hop and code it names, and `advice` (HTML-escaped
    /// text, so without `'`, `"`, `/`, `<`, `>` or `&`).
    fn error_page(&self, status: u16, hop: &str, code: &str, advice: &str) -> String {
        let html = self.html(status);
        assert!(html.contains(&format!(r#"<div class="code">{status}</div>"#)), "{html}");
        assert!(
            html.contains(&format!("</span>{hop}</span> <code>{code}</code>")),
            "{html}"
        );
        assert!(html.contains(advice), "{advice:?} missing from {html}");
        assert_no_grpc_dump(html);
        html.to_owned()
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn assert_no_grpc_dump(text: &str) {
    for raw in ["rpc error", "status:", "Status {", "message:"] {
        assert!(!text.contains(raw), "a raw gRPC status ({raw:?}) leaked: {text}");
    }
}

fn camera_order() -> Value {
    json!({"customer_id": "cust-42", "items": [{"product_id": "123", "quantity": 2}]})
}

/// What `POST /api/orders` with `camera_order()` asks order-service for, with `key`.
fn camera_request(key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: "cust-42".into(),
        items: vec![OrderItem {
            product_id: "123".into(),
            quantity: 2,
        }],
    }
}

fn created_key(backends: &FakeBackends) -> String {
    match backends.asked().last() {
        Some(Asked::CreateOrder(req)) => req.idempotency_key.clone(),
        other => panic!("no CreateOrder: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON API

#[tokio::test]
async fn api_products_lists_the_page_asked_for() {
    let app = App::new(FakeBackends::default());

    let body = app.get("/api/products?page=2&page_size=5").await.json(200);
    let names: Vec<&str> = body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Espresso Machine", "Vintage Film Camera"]);
    assert_eq!(body["total_count"], 2);
    assert_eq!(body["page"]["page_number"], 2);
    assert_eq!(body["served_by"]["pod"], "product-v2-fake");
    assert_eq!(body["products"][0]["price"]["display"], "$249.00");

    app.get("/api/products").await.json(200);
    assert_eq!(
        app.backends.asked(),
        [
            Asked::ListProducts {
                page_size: 5,
                page_number: Some(2)
            },
            // 0: the product service's default page size.
            Asked::ListProducts {
                page_size: 0,
                page_number: None
            },
        ]
    );
}

#[tokio::test]
async fn api_products_refuses_bad_paging_as_400_without_calling_product() {
    let app = App::new(FakeBackends::default());

    let body = app
        .get("/api/products?page_size=ten")
        .await
        .json_error(400, "frontend", "INVALID_ARGUMENT");
    assert_eq!(body["error"], "invalid argument");
    assert_eq!(body["detail"], r#"page_size must be a whole number, got "ten""#);

    let body = app
        .get("/api/products?page=0")
        .await
        .json_error(400, "frontend", "INVALID_ARGUMENT");
    assert!(
        body["detail"].as_str().unwrap().starts_with("page must be 1 or more"),
        "{body}"
    );

    // A query axum cannot deserialize at all: its reason, in the same JSON error.
    let body = app
        .get("/api/products?page=1&page=2")
        .await
        .json_error(400, "frontend", "INVALID_ARGUMENT");
    assert!(
        body["detail"].as_str().unwrap().contains("duplicate field `page`"),
        "{body}"
    );

    assert_eq!(app.backends.asked(), []);
}

#[tokio::test]
async fn api_product_is_its_json_with_who_served_it_and_unknown_ids_are_404() {
    let app = App::new(FakeBackends::default());

    let body = app.get("/api/products/1").await.json(200);
    assert_eq!(body["id"], "1");
    assert_eq!(body["name"], "Espresso Machine");
    assert_eq!(body["price"]["display"], "$249.00");
    assert_eq!(body["rating"]["count"], 812);
    assert_eq!(body["served_by"]["version"], "v2");
    let body = app.get("/api/products/123").await.json(200);
    assert!(body.get("rating").is_none(), "no rating, no field: {body}");

    let body = app
        .get("/api/products/999")
        .await
        .json_error(404, "product-service", "NOT_FOUND");
    assert_eq!(body["error"], "not found");
    assert_eq!(body["detail"], r#"no product with id "999""#);

    // The id is percent-decoded; one that is not UTF-8 is refused before any call.
    let body = app
        .get("/api/products/%FF")
        .await
        .json_error(400, "frontend", "INVALID_ARGUMENT");
    assert!(body["detail"].as_str().unwrap().contains("Invalid UTF-8"), "{body}");
    assert_eq!(
        app.backends.asked(),
        [
            Asked::GetProduct("1".into()),
            Asked::GetProduct("123".into()),
            Asked::GetProduct("999".into())
        ]
    );
}

#[tokio::test]
async fn api_order_is_its_json_and_unknown_orders_are_404() {
    let app = App::new(FakeBackends::default());

    let body = app.get("/api/orders/ord-42").await.json(200);
    assert_eq!(body["id"], ORDER_ID);
    assert_eq!(body["status"], "PAID");
    assert_eq!(body["total"]["display"], "$698.00");
    assert_eq!(body["lines"][0]["priced_by"]["pod"], "product-v2-fake");
    assert_eq!(body["served_by"]["pod"], "order-fake-0");

    let body = app
        .get("/api/orders/nope")
        .await
        .json_error(404, "order-service", "NOT_FOUND");
    assert_eq!(body["detail"], r#"order "nope" not found"#);
}

/// Each backend failure, on each API route, is the status for its gRPC code and the JSON error
/// naming the hop.
#[tokio::test]
async fn api_backend_failures_map_to_http_statuses_and_the_json_error() {
    let cases = [
        (Code::InvalidArgument, 400, "invalid argument"),
        (Code::FailedPrecondition, 400, "failed precondition"),
        (Code::NotFound, 404, "not found"),
        (Code::AlreadyExists, 409, "already exists"),
        (Code::Unavailable, 503, "unavailable"),
        (Code::DeadlineExceeded, 504, "deadline exceeded"),
        (Code::Internal, 502, "internal"),
        (Code::ResourceExhausted, 502, "resource exhausted"),
        (Code::PermissionDenied, 502, "permission denied"),
    ];
    for (code, status, summary) in cases {
        for (hop, route) in [
            (Hop::Product, "GET /api/products"),
            (Hop::Product, "GET /api/products/1"),
            (Hop::Order, "POST /api/orders"),
            (Hop::Order, "GET /api/orders/ord-42"),
        ] {
            let app = App::new(FakeBackends::failing(hop, code, "what the backend said"));
            let answer = match route.split_once(' ').unwrap() {
                ("POST", _) => app.post_order(&camera_order(), None).await,
                (_, uri) => app.get(uri).await,
            };
            let body = answer.json_error(status, hop.name(), code_name(code));
            assert_eq!(body["error"], summary, "{route} {code:?}: {body}");
            assert_eq!(body["detail"], "what the backend said", "{route} {code:?}");
        }
    }
}

#[tokio::test]
async fn unknown_api_paths_are_404_json() {
    let app = App::new(FakeBackends::default());
    for path in ["/api", "/api/nothing-here", "/api/products/1/reviews"] {
        let body = app.get(path).await.json_error(404, "frontend", "NOT_FOUND");
        assert_eq!(body["detail"], format!("no API route at {path}"));
    }
}

// ---------------------------------------------------------------------------------------------
// POST /api/orders

#[tokio::test]
async fn api_create_order_is_201_with_the_order_and_its_location() {
    let app = App::new(FakeBackends::default());

    let answer = app.post_order(&camera_order(), Some("key-camera-1")).await;
    assert_eq!(answer.location(), "/api/orders/ord-42");
    let body = answer.json(201);
    assert_eq!(body["id"], ORDER_ID);
    assert_eq!(body["status"], "PAID");
    assert_eq!(body["customer_id"], "cust-42");
    assert_eq!(body["idempotency_key"], "key-camera-1");
    assert_eq!(
        app.backends.asked(),
        [Asked::CreateOrder(camera_request("key-camera-1"))]
    );
}

#[tokio::test]
async fn api_create_order_takes_the_key_from_the_body_then_the_header_else_makes_one() {
    let app = App::new(FakeBackends::default());

    let mut with_key = camera_order();
    with_key["idempotency_key"] = json!("key-in-body");
    app.post_order(&with_key, Some("key-in-header")).await.json(201);
    assert_eq!(created_key(&app.backends), "key-in-body", "the body's key wins");

    // An empty key in the body counts as none.
    with_key["idempotency_key"] = json!("");
    app.post_order(&with_key, Some("  key-in-header  ")).await.json(201);
    assert_eq!(created_key(&app.backends), "key-in-header", "the header's, trimmed");

    app.post_order(&camera_order(), None).await.json(201);
    let first = created_key(&app.backends);
    app.post_order(&camera_order(), None).await.json(201);
    let second = created_key(&app.backends);
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_ne!(first, second, "a new key per request without one");
}

#[tokio::test]
async fn api_create_order_refuses_an_unusable_idempotency_key_header() {
    let app = App::new(FakeBackends::default());

    let body = app
        .post_order(&camera_order(), Some("   "))
        .await
        .json_error(400, "frontend", "INVALID_ARGUMENT");
    assert_eq!(body["detail"], "the Idempotency-Key header is empty");

    let req = Request::post("/api/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", HeaderValue::from_bytes(b"cl\xe9").unwrap())
        .body(Body::from(camera_order().to_string()))
        .unwrap();
    let body = app.send(req).await.json_error(400, "frontend", "INVALID_ARGUMENT");
    assert_eq!(body["detail"], "the Idempotency-Key header must be printable ASCII");

    assert_eq!(app.backends.asked(), []);
}

/// Whatever axum's `Json` refuses (415, 400 or 422 from axum) is the JSON error, 400, with
/// axum's reason.
#[tokio::test]
async fn api_create_order_refuses_what_is_not_an_order_as_the_400_json_error() {
    let app = App::new(FakeBackends::default());
    let cases: [(Option<&str>, &str, &str); 6] = [
        (None, r#"{"customer_id":"c","items":[]}"#, "Content-Type"),
        (Some("text/plain"), r#"{"customer_id":"c","items":[]}"#, "Content-Type"),
        (Some("application/json"), r#"{"customer_id": "#, "EOF"),
        (
            Some("application/json"),
            r#"{"customer_id":"c"}"#,
            "missing field `items`",
        ),
        (
            Some("application/json"),
            r#"{"customer_id":"c","items":[{"product_id":"1","quantity":"many"}]}"#,
            "items[0].quantity",
        ),
        (
            Some("application/json"),
            r#"{"customer_id":"c","items":[],"coupon":"FREE"}"#,
            "unknown field `coupon`",
        ),
    ];
    for (content_type, body, reason) in cases {
        let mut req = Request::post("/api/orders");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let answer = app.send(req.body(Body::from(body)).unwrap()).await;
        let err = answer.json_error(400, "frontend", "INVALID_ARGUMENT");
        assert_eq!(err["error"], "invalid argument", "{body}");
        assert!(
            err["detail"].as_str().unwrap().contains(reason),
            "{reason:?} for {body}: {err}"
        );
    }
    assert_eq!(app.backends.asked(), []);
}

#[tokio::test]
async fn api_create_order_over_max_body_bytes_is_413_naming_the_limit() {
    let app = App::with_body_limit(FakeBackends::default(), 1 << 10);

    let mut big = camera_order();
    big["customer_id"] = json!("c".repeat(2048));
    let body = app
        .post_order(&big, None)
        .await
        .json_error(413, "frontend", "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"], "payload too large");
    assert_eq!(
        body["detail"],
        "the request body is larger than the frontend's limit of 1 KiB (MAX_BODY_BYTES)"
    );
    assert_eq!(app.backends.asked(), []);

    // Under the limit: placed as usual.
    app.post_order(&camera_order(), None).await.json(201);
}

// ---------------------------------------------------------------------------------------------
// The HTML pages

#[tokio::test]
async fn home_page_lists_the_products_with_the_served_by_badge() {
    let app = App::new(FakeBackends::default());

    let answer = app.get("/").await;
    let html = answer.html(200);
    for text in [
        "Espresso Machine",
        "Vintage Film Camera",
        "$249.00",
        "812 reviews",
        "no ratings from this version",
        "served by product v2 · pod product-v2-fake",
        r#"href="/products/123""#,
        "page by frontend v1 · pod",
    ] {
        assert!(html.contains(text), "{text:?} missing from {html}");
    }
    app.get("/?page=2").await.html(200);
    assert_eq!(
        app.backends.asked(),
        [
            Asked::ListProducts {
                page_size: 24,
                page_number: None
            },
            Asked::ListProducts {
                page_size: 24,
                page_number: Some(2)
            },
        ]
    );
}

#[tokio::test]
async fn home_page_with_a_bad_page_is_the_400_error_page() {
    let app = App::new(FakeBackends::default());

    let answer = app.get("/?page=x").await;
    let html = answer.error_page(400, "frontend", "INVALID_ARGUMENT", "The request was not understood");
    assert!(html.contains("page must be a whole number"), "{html}");
    assert!(html.contains("Invalid argument"), "the summary as a heading: {html}");

    let answer = app.get("/?page=1&page=2").await;
    let html = answer.error_page(400, "frontend", "INVALID_ARGUMENT", "The request was not understood");
    assert!(html.contains("duplicate field `page`"), "{html}");

    assert_eq!(app.backends.asked(), []);
}

#[tokio::test]
async fn product_page_has_the_product_and_an_order_form() {
    let app = App::new(FakeBackends::default());

    let answer = app.get("/products/123").await;
    let html = answer.html(200);
    for text in [
        "Vintage Film Camera",
        "$349.00",
        "served by product v2 · pod product-v2-fake",
        r#"<form class="order" method="post" action="/orders">"#,
        r#"name="product_id" value="123""#,
        r#"name="idempotency_key" value=""#,
    ] {
        assert!(html.contains(text), "{text:?} missing from {html}");
    }
    assert_eq!(app.backends.asked(), [Asked::GetProduct("123".into())]);
}

#[tokio::test]
async fn product_page_of_an_unknown_or_unreadable_id_is_the_error_page() {
    let app = App::new(FakeBackends::default());

    let html = app.get("/products/999").await.error_page(
        404,
        "product-service",
        "NOT_FOUND",
        "product-service does not know it",
    );
    assert!(html.contains("no product with id"), "{html}");

    let html = app.get("/products/%FF").await.error_page(
        400,
        "frontend",
        "INVALID_ARGUMENT",
        "The request was not understood",
    );
    assert!(html.contains("Invalid UTF-8"), "{html}");
}

#[tokio::test]
async fn order_page_shows_the_order_and_unknown_orders_are_404() {
    let app = App::new(FakeBackends::default());

    let answer = app.get("/orders/ord-42").await;
    let html = answer.html(200);
    for text in [
        "ord-42",
        r#"class="status PAID""#,
        "$698.00",
        "$349.00",
        "Vintage Film Camera",
        "pay-7",
        "served by order v1 · pod order-fake-0",
        "product v2 · pod product-v2-fake",
    ] {
        assert!(html.contains(text), "{text:?} missing from {html}");
    }

    app.get("/orders/nope")
        .await
        .error_page(404, "order-service", "NOT_FOUND", "order-service does not know it");
}

/// Each page ends, on a backend failure, in the error page with the status of the gRPC code and
/// advice naming the hop and what to check.
#[tokio::test]
async fn pages_show_backend_failures_on_the_error_page() {
    let cases = [
        (
            Hop::Product,
            Code::Unavailable,
            "GET /",
            503,
            "product-service is unavailable: check the product pods and the PRODUCT_SERVICE_ADDR.",
        ),
        (
            Hop::Product,
            Code::DeadlineExceeded,
            "GET /products/1",
            504,
            "product-service did not answer in time",
        ),
        (
            Hop::Product,
            Code::Internal,
            "GET /products/1",
            502,
            "product-service failed with INTERNAL: check the product pods",
        ),
        (
            Hop::Order,
            Code::Unavailable,
            "GET /orders/ord-42",
            503,
            "order-service is unavailable: check the order pods and the ORDER_SERVICE_ADDR.",
        ),
        (
            Hop::Order,
            Code::AlreadyExists,
            "POST /orders",
            409,
            "order-service refused a conflicting request",
        ),
        (
            Hop::Order,
            Code::InvalidArgument,
            "POST /orders",
            400,
            "order-service refused the request",
        ),
    ];
    for (hop, code, route, status, advice) in cases {
        let app = App::new(FakeBackends::failing(hop, code, "what the backend said"));
        let mut req = match route.split_once(' ').unwrap() {
            ("POST", uri) => Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("product_id=1&quantity=1&customer_id=c"))
                .unwrap(),
            (_, uri) => Request::get(uri).body(Body::empty()).unwrap(),
        };
        req.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("req-router-1"));
        let answer = app.send(req).await;
        let html = answer.error_page(status, hop.name(), code_name(code), advice);
        assert!(html.contains("what the backend said"), "{route}: {html}");
        assert!(
            html.contains("Search the logs for request id <code>req-router-1</code>"),
            "{route}: {html}"
        );
    }
}

#[tokio::test]
async fn unknown_pages_are_the_404_page() {
    let app = App::new(FakeBackends::default());
    let html =
        app.get("/nothing-here")
            .await
            .error_page(404, "frontend", "NOT_FOUND", "There is no page at this address.");
    // minijinja's HTML escaping also escapes '/'.
    assert!(html.contains("no page at &#x2f;nothing-here"), "{html}");
}

// ---------------------------------------------------------------------------------------------
// POST /orders: the product page's form

#[tokio::test]
async fn order_form_places_the_order_and_redirects_to_its_page() {
    let app = App::new(FakeBackends::default());

    let answer = app
        .post_form("product_id=123&quantity=2&customer_id=+cust-42+&idempotency_key=form-key-1")
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.context());
    assert_eq!(answer.location(), "/orders/ord-42");
    assert_eq!(
        app.backends.asked(),
        [Asked::CreateOrder(camera_request("form-key-1"))],
        "quantity parsed, customer trimmed, the form's key"
    );

    // Without a key in the form, the header's.
    let req = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("idempotency-key", "hdr-key-1")
        .body(Body::from("product_id=1&quantity=1&customer_id=c"))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::SEE_OTHER);
    assert_eq!(created_key(&app.backends), "hdr-key-1");
}

#[tokio::test]
async fn order_form_refusals_are_the_error_page() {
    let app = App::with_body_limit(FakeBackends::default(), 1 << 10);
    let not_understood = "The request was not understood";

    let html = app
        .post_form("product_id=1&quantity=lots&customer_id=c")
        .await
        .error_page(400, "frontend", "INVALID_ARGUMENT", not_understood);
    assert!(html.contains("quantity must be a whole number"), "{html}");

    let html = app.post_form("product_id=1&quantity=&customer_id=c").await.error_page(
        400,
        "frontend",
        "INVALID_ARGUMENT",
        not_understood,
    );
    assert!(html.contains("quantity is required"), "{html}");

    let html =
        app.post_form("product_id=1&quantity=1")
            .await
            .error_page(400, "frontend", "INVALID_ARGUMENT", not_understood);
    assert!(html.contains("missing field `customer_id`"), "{html}");

    let req = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"product_id":"1"}"#))
        .unwrap();
    app.send(req)
        .await
        .error_page(400, "frontend", "INVALID_ARGUMENT", not_understood);

    let req = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("idempotency-key", "")
        .body(Body::from("product_id=1&quantity=1&customer_id=c"))
        .unwrap();
    let html = app
        .send(req)
        .await
        .error_page(400, "frontend", "INVALID_ARGUMENT", not_understood);
    assert!(html.contains("the Idempotency-Key header is empty"), "{html}");

    let huge = format!("product_id=1&quantity=1&customer_id={}", "c".repeat(2048));
    let html = app
        .post_form(&huge)
        .await
        .error_page(413, "frontend", "RESOURCE_EXHAUSTED", "The request is too large");
    assert!(html.contains("Payload too large"), "{html}");
    assert!(html.contains("1 KiB (MAX_BODY_BYTES)"), "{html}");

    assert_eq!(app.backends.asked(), []);
}

// ---------------------------------------------------------------------------------------------
// /mesh

fn product_call(version: &str, pod: &str) -> ProductCall {
    ProductCall {
        time: "12:00:00.000".into(),
        method: "GetProduct",
        target: "1".into(),
        version: version.into(),
        pod: pod.into(),
        code: "OK",
        latency_ms: 1.5,
        request_id: "req-mesh".into(),
    }
}

#[tokio::test]
async fn mesh_page_is_empty_before_any_call_then_shows_the_split() {
    let app = App::new(FakeBackends::default());

    let answer = app.get("/mesh").await;
    let html = answer.html(200);
    assert!(html.contains("No product calls yet"), "{html}");
    assert!(!html.contains("<svg"), "no empty chart: {html}");

    for _ in 0..4 {
        app.mesh.record(product_call("v1", "product-v1-a"));
    }
    app.mesh.record(product_call("v2", "product-v2-a"));
    let answer = app.get("/mesh").await;
    let html = answer.html(200);
    for text in [
        "<svg",
        "The last 5 of up to 200 calls",
        "80.0% · 4 calls",
        "20.0% · 1 calls",
        "product-v1-a",
        "product-v2-a",
    ] {
        assert!(html.contains(text), "{text:?} missing from {html}");
    }
    assert_eq!(app.backends.asked(), [], "the page reads the history only");
}

// ---------------------------------------------------------------------------------------------
// /healthz and /readyz

#[tokio::test]
async fn healthz_is_200_with_the_pod_even_when_every_backend_fails() {
    let app = App::new(FakeBackends::failing(Hop::Product, Code::Unavailable, "down"));
    let body = app.get("/healthz").await.json(200);
    assert_eq!(
        body,
        json!({"status": "ok", "service": "frontend", "version": "v1", "pod": "frontend-t"})
    );
}

#[tokio::test]
async fn readyz_is_200_when_both_backends_serve() {
    let app = App::new(FakeBackends::default());
    let body = app.get("/readyz").await.json(200);
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"product-service": "SERVING", "order-service": "SERVING"}})
    );
}

#[tokio::test]
async fn readyz_is_503_naming_the_hop_that_is_not_ready() {
    let app = App::new(FakeBackends::failing(
        Hop::Order,
        Code::Unavailable,
        "connection refused",
    ));
    let body = app.get("/readyz").await.json(503);
    assert_eq!(body["hop"], "order-service");
    assert_eq!(body["code"], "UNAVAILABLE");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["checks"]["product-service"], "SERVING");
    assert_eq!(body["checks"]["order-service"], "UNAVAILABLE: connection refused");
    assert!(
        body["advice"].as_str().unwrap().contains("ORDER_SERVICE_ADDR"),
        "{body}"
    );

    // Whatever the code, not ready is 503 for the probe (a deadline is not a 504 here).
    let app = App::new(FakeBackends::failing(Hop::Product, Code::DeadlineExceeded, "no answer"));
    let body = app.get("/readyz").await.json(503);
    assert_eq!(body["hop"], "product-service");
    assert_eq!(body["code"], "DEADLINE_EXCEEDED");
    assert_eq!(body["checks"]["order-service"], "SERVING");
}

#[tokio::test]
async fn readyz_is_503_from_the_frontend_once_draining() {
    let app = App::new(FakeBackends::default());
    app.draining.cancel();
    let body = app.get("/readyz").await.json_error(503, "frontend", "UNAVAILABLE");
    assert_eq!(body["detail"], "the frontend is shutting down");
}

// ---------------------------------------------------------------------------------------------
// What every answer carries

#[tokio::test]
async fn answers_carry_the_pods_identity_and_backends_get_the_callers_headers() {
    let app = App::new(FakeBackends::default());
    let req = Request::builder()
        .method(Method::GET)
        .uri("/api/products/1")
        .header("x-request-id", "req-router-2")
        .header("user-type", "premium")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-request-id"], "req-router-2");
    assert_eq!(answer.headers["x-served-by"], "frontend-t");
    assert_eq!(answer.headers["x-version"], "v1");

    // The handler passes the request's headers on; backends.rs picks what travels.
    let seen = app.backends.last_headers();
    assert_eq!(seen["x-request-id"], "req-router-2");
    assert_eq!(seen["user-type"], "premium");
}
