//! The axum middleware every HTTP service of the suite runs behind: a server
//! span continuing the caller's trace (W3C or B3), `x-request-id` taken or
//! made and echoed, `x-served-by` / `x-version` on every answer, and request
//! counts and latency by route, method, status and version.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Identity, grpc, propagation};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone)]
pub struct HttpObserver {
    requests: IntCounterVec,
    duration: HistogramVec,
    version: String,
    served_by: HeaderValue,
    version_header: HeaderValue,
}

impl HttpObserver {
    pub fn new(identity: &Identity, registry: &Registry) -> prometheus::Result<Self> {
        let labels = ["route", "method", "status", "version"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_server_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("http_server_request_duration_seconds", "Time to the response head.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let header = |v: &str| HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Ok(Self {
            requests,
            duration,
            version: identity.version.clone(),
            served_by: header(&identity.pod),
            version_header: header(&identity.version),
        })
    }
}

/// Liveness and readiness endpoints: probes, not traffic.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez")
}

/// Use as `router.layer(axum::middleware::from_fn_with_state(observer, telemetry::http::observe))`.
pub async fn observe(State(o): State<HttpObserver>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    // The route template ("/products/{id}"), not the path, keeps label sets bounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let request_id = propagation::ensure_request_id(req.headers_mut());
    // Probes are never traced (see `grpc::is_health_check`).
    let probe = is_probe(req.uri().path());
    let span = if probe {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
        request_id = %request_id,
        )
    };
    if !probe {
        let _ = span.set_parent(propagation::extract_http(req.headers()));
    }

    let mut res = next.run(req).instrument(span.clone()).await;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(propagation::REQUEST_ID, v);
    }
    h.insert(grpc::SERVED_BY, o.served_by.clone());
    h.insert(grpc::VERSION, o.version_header.clone());

    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let labels = [route.as_str(), method.as_str(), &status.to_string(), o.version.as_str()];
    o.requests.with_label_values(&labels).inc();
    o.duration.with_label_values(&labels).observe(elapsed.as_secs_f64());
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    tracing::info!(parent: &span, status, duration_ms = elapsed.as_secs_f64() * 1000.0, "{method} {route} {status}");
    res
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn frontend() -> Identity {
        Identity {
            service: "frontend".into(),
            version: "v1".into(),
            pod: "frontend-abc".into(),
            node: String::new(),
            zone: String::new(),
            namespace: "default".into(),
        }
    }

    #[tokio::test]
    async fn labels_use_the_route_template_and_answers_carry_identity() {
        let id = frontend();
        let registry = Registry::new();
        let o = HttpObserver::new(&id, &registry).unwrap();
        let app = Router::new()
            .route("/products/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(o, observe));
        let req = axum::http::Request::get("/products/42")
            .header("x-request-id", "r-9")
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "r-9");
        assert_eq!(res.headers()["x-served-by"], "frontend-abc");
        assert_eq!(res.headers()["x-version"], "v1");
        let res = app
            .oneshot(axum::http::Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["x-request-id"].len(), 36);

        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(
                r#"http_server_requests_total{method="GET",route="/products/{id}",status="200",version="v1"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    }

    #[tokio::test]
    async fn probes_are_answered_without_a_span() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

        struct SpanNames(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> Layer<S> for SpanNames {
            fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
                self.0.lock().unwrap().push(attrs.metadata().name().to_owned());
            }
        }
        let names = Arc::new(Mutex::new(Vec::new()));
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(SpanNames(names.clone())));

        let id = frontend();
        let o = HttpObserver::new(&id, &Registry::new()).unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/products/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(o, observe));
        for path in ["/healthz", "/readyz", "/healthz", "/products/1"] {
            let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
            assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
        }
        assert_eq!(*names.lock().unwrap(), ["http.server"], "only /products/1 is traced");
    }
}
