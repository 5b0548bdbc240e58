//! The HTTP API: `POST /v1/charges` (with `Idempotency-Key`), `GET /v1/charges`,
//! `GET /v1/charges/{id}`, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use telemetry::http::HttpObserver;
use telemetry::prometheus::{IntCounterVec, Opts, Registry};
use tracing::Instrument;

use crate::{
    amount,
    faults::{Fate, Faults},
    store::{Charge, ChargeRequest, Recorded, ServedBy, Store},
};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_CHARS: usize = 255;
const MAX_ID_CHARS: usize = 128;

pub struct App {
    store: Store,
    faults: Arc<Faults>,
    served_by: ServedBy,
    charges_total: IntCounterVec,
    registry: Registry,
}

impl App {
    pub fn new(
        identity: &telemetry::Identity,
        faults: Arc<Faults>,
        registry: &Registry,
    ) -> telemetry::prometheus::Result<Self> {
        let charges_total = IntCounterVec::new(
            Opts::new(
                "payment_charges_total",
                "Charge requests by outcome: succeeded, declined, replayed, conflict, unavailable, invalid.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(charges_total.clone()))?;
        Ok(Self {
            store: Store::default(),
            faults,
            served_by: identity.into(),
            charges_total,
            registry: registry.clone(),
        })
    }

    fn count(&self, outcome: &str) {
        self.charges_total.with_label_values(&[outcome]).inc();
    }

    /// One charge attempt, serialised with every other attempt under `key`.
    async fn charge(&self, key: String, req: ChargeRequest) -> Response {
        let latency = self.faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fate = self.faults.draw();
        if fate == Fate::Unavailable {
            self.count("unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                format!(
                    "the provider is unavailable (PAYMENT_ERROR_PERCENT={}); nothing was charged: retry with the same Idempotency-Key",
                    self.faults.error_percent()
                ),
            );
        }
        let slot = self.store.slot(&key);
        let mut recorded = slot.lock().await;
        if let Some(r) = recorded.as_ref() {
            if r.request != req {
                self.count("conflict");
                return error(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    format!(
                        "Idempotency-Key {key:?} was first used for a different charge (order_id {:?}, amount {} {}, customer_id {:?}); a new charge needs a new key",
                        r.request.order_id,
                        amount::format_micros(r.request.amount_micros),
                        r.request.currency,
                        r.request.customer_id
                    ),
                );
            }
            self.count("replayed");
            let mut res = charge_response(&r.charge, true);
            res.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            return res;
        }
        let declined = fate == Fate::Decline;
        let charge = Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            status: if declined { "failed" } else { "succeeded" },
            order_id: req.order_id.clone(),
            amount: amount::format_micros(req.amount_micros),
            currency: req.currency.clone(),
            customer_id: req.customer_id.clone(),
            idempotency_key: key,
            created_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            failure_code: declined.then_some("card_declined"),
            failure_message: declined.then(|| {
                format!(
                    "the card was declined (PAYMENT_FAILURE_PERCENT={})",
                    self.faults.failure_percent()
                )
            }),
            served_by: self.served_by.clone(),
        };
        self.store.insert(charge.clone());
        self.count(if declined { "declined" } else { "succeeded" });
        tracing::info!(charge = %charge.id, order_id = %charge.order_id, status = charge.status, "charge recorded");
        let res = charge_response(&charge, false);
        *recorded = Some(Recorded { request: req, charge });
        res
    }
}

pub fn router(app: Arc<App>, observer: HttpObserver) -> Router {
    Router::new()
        .route("/v1/charges", get(list).post(create))
        .route("/v1/charges/{id}", get(get_one))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: the API is POST/GET /v1/charges and GET /v1/charges/{id}".into(),
            )
        })
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(observer, telemetry::http::observe))
}

async fn create(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => {
            app.count("invalid");
            return e.into_response();
        }
    };
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            app.count("invalid");
            return e.into_response();
        }
    };
    // The charge runs in its own task: a client that hangs up (a timeout on
    // its side) must not cut a charge in half. It completes and is recorded
    // under its key, so the client's retry finds it, as at a real provider.
    let task = {
        let app = app.clone();
        tokio::spawn(async move { app.charge(key, req).await }.instrument(tracing::Span::current()))
    };
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "charge task failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the charge failed inside the provider".into(),
        )
    })
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
}

async fn list(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let charges = app.store.list(q.order_id.as_deref());
    Json(json!({
        "count": charges.len(),
        "charges": charges,
        "served_by": app.served_by,
    }))
    .into_response()
}

async fn get_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.get(&id) {
        Some(c) => Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no charge with id {id:?}")),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        telemetry::metrics::render(&app.registry),
    )
        .into_response()
}

/// 201 for a new charge, 200 for a replayed one, 402 for a decline (new or replayed).
fn charge_response(c: &Charge, replayed: bool) -> Response {
    if c.succeeded() {
        let code = if replayed { StatusCode::OK } else { StatusCode::CREATED };
        let location = HeaderValue::from_str(&format!("/v1/charges/{}", c.id)).ok();
        let mut res = (code, Json(c)).into_response();
        if let Some(l) = location {
            res.headers_mut().insert(header::LOCATION, l);
        }
        return res;
    }
    let mut body = match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    body.insert("error".into(), Value::from(c.failure_code.unwrap_or("card_declined")));
    body.insert(
        "detail".into(),
        Value::from(
            c.failure_message
                .clone()
                .unwrap_or_else(|| "the card was declined".into()),
        ),
    );
    (StatusCode::PAYMENT_REQUIRED, Json(Value::Object(body))).into_response()
}

/// An error answer: `{"error": code, "detail": why}`, plus `field` for bad input.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "detail": self.detail});
        if let Some(f) = self.field {
            body["field"] = Value::from(f);
        }
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, detail: String) -> Response {
    ApiError {
        status,
        code,
        detail,
        field: None,
    }
    .into_response()
}

fn bad_request(code: &'static str, detail: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code,
        detail,
        field: None,
    }
}

fn invalid_field(field: &'static str, detail: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_request",
        detail,
        field: Some(field),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(bad_request("missing_idempotency_key",
            "the Idempotency-Key header is required: send a unique key per charge and the same key on every retry of it"
                .into(),
        ));
    };
    let key = raw.to_str().unwrap_or("");
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_request(
            "invalid_idempotency_key",
            format!("the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters without spaces"),
        ));
    }
    Ok(key.to_owned())
}

fn parse_request(body: &[u8]) -> Result<ChargeRequest, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request("invalid_json", format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad_request(
            "invalid_json",
            "the request body must be a JSON object with order_id, amount, currency and customer_id".into(),
        ));
    };
    let order_id = text_field(&obj, "order_id")?;
    let customer_id = text_field(&obj, "customer_id")?;
    let amount = match obj.get("amount") {
        Some(Value::String(s)) => {
            amount::parse_micros(s).map_err(|why| invalid_field("amount", format!("amount {s:?}: {why}")))?
        }
        None | Some(Value::Null) => {
            return Err(invalid_field(
                "amount",
                "amount is required: a decimal string such as \"19.99\"".into(),
            ));
        }
        Some(other) => {
            return Err(invalid_field(
                "amount",
                format!("amount must be a decimal string such as \"19.99\", not {other} (floats lose cents)"),
            ));
        }
    };
    let currency = match obj.get("currency") {
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => s.clone(),
        Some(other) => {
            return Err(invalid_field(
                "currency",
                format!("currency {other} is not an ISO 4217 code: expected three capital letters such as \"USD\""),
            ));
        }
        None => {
            return Err(invalid_field(
                "currency",
                "currency is required: three capital letters such as \"USD\"".into(),
            ));
        }
    };
    Ok(ChargeRequest {
        order_id,
        amount_micros: amount,
        currency,
        customer_id,
    })
}

fn text_field(obj: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match obj.get(field) {
        Some(Value::String(s))
            if !s.trim().is_empty() && s.chars().count() <= MAX_ID_CHARS && !s.chars().any(char::is_control) =>
        {
            Ok(s.clone())
        }
        Some(Value::String(s)) => Err(invalid_field(
            field,
            format!("{field} {s:?} must be 1 to {MAX_ID_CHARS} printable characters"),
        )),
        None | Some(Value::Null) => Err(invalid_field(field, format!("{field} is required"))),
        Some(other) => Err(invalid_field(field, format!("{field} must be a string, not {other}"))),
    }
}
