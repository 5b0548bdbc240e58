//! The HTTP API: `POST /v1/charges` (with `Idempotency-Key`), `GET /v1/charges`
//! (all, by `order_id`, or the one charge of an `idempotency_key`),
//! `GET /v1/charges/{id}`, `/healthz` and `/metrics`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use telemetry::http::HttpObserver;
use telemetry::prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tracing::Instrument;

use crate::{
    amount,
    faults::{Fate, Faults},
    store::{self, Charge, ChargeRequest, Recorded, ServedBy, Store, StoreError},
};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_CHARS: usize = 255;
const MAX_ID_CHARS: usize = 128;

pub struct App {
    store: Store,
    /// How long keys are kept, for messages (the store applies it).
    key_retention: Duration,
    faults: Arc<Faults>,
    served_by: ServedBy,
    charges_total: IntCounterVec,
    keys_purged: IntCounter,
    registry: Registry,
}

impl App {
    pub fn new(
        identity: &telemetry::Identity,
        faults: Arc<Faults>,
        store: Store,
        key_retention: Duration,
        registry: &Registry,
    ) -> telemetry::prometheus::Result<Self> {
        let charges_total = IntCounterVec::new(
            Opts::new(
                "payment_charges_total",
                "Charge requests by outcome: succeeded, declined, replayed, conflict, unavailable, storage_error, invalid.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(charges_total.clone()))?;
        let keys_purged = IntCounter::new(
            "payment_keys_purged_total",
            "Idempotency keys deleted with their charges once older than PAYMENT_KEY_RETENTION.",
        )?;
        registry.register(Box::new(keys_purged.clone()))?;
        Ok(Self {
            store,
            key_retention,
            faults,
            served_by: identity.into(),
            charges_total,
            keys_purged,
            registry: registry.clone(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One purge pass: at most `batch` expired keys (and their charges) deleted.
    pub async fn purge_expired(&self, batch: u32) -> Result<u64, StoreError> {
        let purged = self.store.purge(store::now_ms(), batch).await?;
        if purged > 0 {
            self.keys_purged.inc_by(purged);
            tracing::info!(purged, "expired idempotency keys purged");
        }
        Ok(purged)
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
        let declined = fate == Fate::Decline;
        let created_at_ms = store::now_ms();
        let candidate = Charge {
            id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
            status: if declined { "failed" } else { "succeeded" },
            order_id: req.order_id,
            amount: amount::format_micros(req.amount_micros),
            currency: req.currency,
            customer_id: req.customer_id,
            idempotency_key: key,
            created_at: store::format_time(created_at_ms),
            failure_code: declined.then(|| "card_declined".to_owned()),
            failure_message: declined.then(|| {
                format!(
                    "the card was declined (PAYMENT_FAILURE_PERCENT={})",
                    self.faults.failure_percent()
                )
            }),
            served_by: self.served_by.clone(),
            amount_micros: req.amount_micros,
            created_at_ms,
        };
        let key = candidate.idempotency_key.clone();
        let (recorded, expired) = match self.store.record(candidate).await {
            Ok(r) => r,
            Err(e) => {
                self.count("storage_error");
                tracing::error!(error = %e, idempotency_key = %key, "charge not recorded");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    format!("{e}; nothing was charged: retry with the same Idempotency-Key"),
                );
            }
        };
        if expired > 0 {
            self.keys_purged.inc_by(expired);
        }
        match recorded {
            Recorded::Created(charge) => {
                self.count(if charge.succeeded() { "succeeded" } else { "declined" });
                tracing::info!(charge = %charge.id, order_id = %charge.order_id, status = charge.status, "charge recorded");
                charge_response(&charge, false)
            }
            Recorded::Replayed(charge) => {
                self.count("replayed");
                let mut res = charge_response(&charge, true);
                res.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
                res
            }
            Recorded::Conflict(first) => {
                self.count("conflict");
                error(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    format!(
                        "Idempotency-Key {key:?} was first used for a different charge (order_id {:?}, amount {} {}, customer_id {:?}); a new charge needs a new key",
                        first.order_id, first.amount, first.currency, first.customer_id
                    ),
                )
            }
        }
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
                "no such route: the API is POST /v1/charges, GET /v1/charges[?order_id=…|?idempotency_key=…] and GET /v1/charges/{id}".into(),
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
    idempotency_key: Option<String>,
}

/// `GET /v1/charges`: every charge, those of one `order_id`, or the one
/// charge an `idempotency_key` made (answered as `POST` answered it, with 200).
async fn list(State(app): State<Arc<App>>, q: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            return bad_request(
                "invalid_query",
                format!(
                    "the query string is not valid: {} (expected order_id=… or idempotency_key=…, each at most once)",
                    e.body_text()
                ),
            )
            .into_response();
        }
    };
    let now = store::now_ms();
    if let Some(key) = q.idempotency_key {
        return by_key(&app, q.order_id.is_some(), &key, now)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    match app.store.list(q.order_id.as_deref(), now).await {
        Ok(charges) => Json(json!({
            "count": charges.len(),
            "charges": charges,
            "served_by": app.served_by,
        }))
        .into_response(),
        Err(e) => storage_error(&e),
    }
}

async fn by_key(app: &App, with_order_id: bool, key: &str, now: i64) -> Result<Response, ApiError> {
    if with_order_id {
        return Err(invalid_field(
            "order_id",
            "order_id cannot be combined with idempotency_key: a key names one charge, so ask for one or the other"
                .into(),
        ));
    }
    if !valid_key(key) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_idempotency_key",
            detail: format!(
                "the idempotency_key parameter must be 1 to {MAX_KEY_CHARS} visible ASCII characters without spaces (URL-encoded)"
            ),
            field: Some("idempotency_key"),
        });
    }
    Ok(match app.store.by_key(key, now).await {
        Ok(Some(c)) => (StatusCode::OK, Json(charge_body(&c))).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no charge for Idempotency-Key {key:?}: the key was never used here, or it expired (keys are kept {}, PAYMENT_KEY_RETENTION)",
                crate::config::show_duration(app.key_retention)
            ),
        ),
        Err(e) => storage_error(&e),
    })
}

async fn get_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.by_id(&id, store::now_ms()).await {
        Ok(Some(c)) => Json(c).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no charge with id {id:?}")),
        Err(e) => storage_error(&e),
    }
}

fn storage_error(e: &StoreError) -> Response {
    tracing::error!(error = %e, "charge store read failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", e.to_string())
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
        let mut res = (code, Json(charge_body(c))).into_response();
        if let Some(l) = location {
            res.headers_mut().insert(header::LOCATION, l);
        }
        return res;
    }
    (StatusCode::PAYMENT_REQUIRED, Json(charge_body(c))).into_response()
}

/// What `POST` answers for a charge: the charge, and for a decline also
/// `error` and `detail`, as every other error answer has them.
fn charge_body(c: &Charge) -> Value {
    let mut body = match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if !c.succeeded() {
        body.insert(
            "error".into(),
            Value::from(c.failure_code.as_deref().unwrap_or("card_declined")),
        );
        body.insert(
            "detail".into(),
            Value::from(c.failure_message.as_deref().unwrap_or("the card was declined")),
        );
    }
    Value::Object(body)
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
    if !valid_key(key) {
        return Err(bad_request(
            "invalid_idempotency_key",
            format!("the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} visible ASCII characters without spaces"),
        ));
    }
    Ok(key.to_owned())
}

/// 1 to `MAX_KEY_CHARS` visible ASCII characters: the header's and the query parameter's rule.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| b.is_ascii_graphic())
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
