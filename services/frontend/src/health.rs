//! `/healthz` (liveness: the process answers) and `/readyz` (readiness:
//! both backends answer a grpc.health.v1 Check with SERVING).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::{
    errors::{ApiError, AppError, Hop},
    state::AppState,
};

/// 200 while the process runs: a backend outage must not get the frontend
/// restarted, only taken out of rotation (that is `/readyz`).
pub async fn healthz(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "service": s.frontend.service,
        "version": s.frontend.version,
        "pod": s.frontend.pod,
    }))
}

pub async fn readyz(State(s): State<AppState>) -> Response {
    if s.draining.is_cancelled() {
        let e = AppError::new(Hop::Frontend, Code::Unavailable, "the frontend is shutting down");
        return ApiError(e).into_response();
    }
    let (product, order) = tokio::join!(s.backends.check(Hop::Product), s.backends.check(Hop::Order));
    let mut checks = Map::new();
    let mut first_failure = None;
    for (hop, result) in [(Hop::Product, product), (Hop::Order, order)] {
        let state = match result {
            Ok(()) => "SERVING".to_owned(),
            Err(e) => {
                let text = format!("{}: {}", crate::errors::code_name(e.code), e.detail);
                first_failure.get_or_insert(e);
                text
            }
        };
        checks.insert(hop.name().to_owned(), Value::String(state));
    }
    match first_failure {
        None => (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks }))).into_response(),
        Some(e) => {
            let mut body = json!(e.body());
            body["checks"] = Value::Object(checks);
            body["advice"] = Value::String(e.advice());
            // Whatever the backend's code, "not ready" is 503 for the probe.
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
