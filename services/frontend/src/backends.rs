//! What the handlers call: the [`Backends`] trait, and [`GrpcBackends`], its implementation over
//! the gRPC clients of product-service and order-service. Tests put a fake behind the trait and
//! call the router in-process, without servers.
//!
//! One long-lived channel per backend, made lazily so the frontend starts
//! (and answers `/healthz`) while its backends are still coming up. Every
//! call: a client span, the caller's trace context and routing headers
//! (`user-type`, `x-user-id`, `x-request-id`) passed on, a deadline of
//! `BACKEND_TIMEOUT_MS`, and a count in `frontend_backend_calls_total` by the
//! answering version. Product calls are also remembered for `/mesh`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use axum::http::HeaderMap;
use proto::{
    order::{CreateOrderRequest, GetOrderRequest, Order, order_service_client::OrderServiceClient},
    product::{
        GetProductRequest, ListProductsRequest, ListProductsResponse, Product,
        product_service_client::ProductServiceClient,
    },
};
use telemetry::{
    grpc::{SERVED_BY, VERSION},
    prometheus::{IntCounterVec, Opts, Registry},
    propagation,
};
use tonic::{
    Code,
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tracing::{Instrument, field::Empty};

use crate::{
    config::Config,
    errors::{AppError, Hop, code_name},
    mesh::{self, MeshHistory, ProductCall},
};

/// TCP connect to a backend; a pod that is gone is found out fast, well
/// inside the call's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `/readyz` asks both backends; a kubelet probe must not hang on either.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 PINGs find a dead peer on an idle long-lived channel.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Label for a failure no pod answered (so no `x-version`).
const NO_VERSION: &str = mesh::NO_ANSWER;

/// A backend call's answer. Boxed so that [`Backends`] can be a trait object (`async fn` in a
/// trait is not).
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, AppError>> + Send + 'a>>;

/// The calls the pages and the API make. `headers` are the caller's request headers (which of
/// them travel on is the implementation's choice); failures are [`AppError`]s naming the hop,
/// which the handlers map to HTTP statuses.
pub trait Backends: Send + Sync {
    fn get_product<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Product>>;
    /// `page_size` 0 asks for the product service's default; `page_number` is 1-based.
    fn list_products<'a>(
        &'a self,
        headers: &'a HeaderMap,
        page_size: i32,
        page_number: Option<i32>,
    ) -> Call<'a, Reply<ListProductsResponse>>;
    fn create_order<'a>(&'a self, headers: &'a HeaderMap, msg: CreateOrderRequest) -> Call<'a, Reply<Order>>;
    fn get_order<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Order>>;
    /// Whether `hop` is ready to serve (`/readyz`).
    fn check(&self, hop: Hop) -> Call<'_, ()>;
}

pub struct GrpcBackends {
    product: ProductServiceClient<Channel>,
    order: OrderServiceClient<Channel>,
    product_health: HealthClient<Channel>,
    order_health: HealthClient<Channel>,
    timeout: Duration,
    calls: IntCounterVec,
    mesh: Arc<MeshHistory>,
}

/// A backend's answer and who gave it (`x-version` / `x-served-by`).
pub struct Reply<T> {
    pub message: T,
    pub version: String,
    pub pod: String,
}

/// What one call produced, success or not, with the answering pod when any.
struct Outcome<T> {
    result: Result<T, AppError>,
    version: Option<String>,
    pod: Option<String>,
    elapsed: Duration,
}

impl GrpcBackends {
    pub fn new(cfg: &Config, registry: &Registry, mesh: Arc<MeshHistory>) -> anyhow::Result<Self> {
        let product = channel(&cfg.product_addr, "PRODUCT_SERVICE_ADDR")?;
        let order = channel(&cfg.order_addr, "ORDER_SERVICE_ADDR")?;
        let calls = IntCounterVec::new(
            Opts::new(
                "frontend_backend_calls_total",
                "gRPC calls from the frontend to its backends, by hop, method, status code and answering version.",
            ),
            &["hop", "method", "code", "version"],
        )?;
        registry
            .register(Box::new(calls.clone()))
            .context("registering frontend_backend_calls_total")?;
        Ok(Self {
            product: ProductServiceClient::new(product.clone()),
            order: OrderServiceClient::new(order.clone()),
            product_health: HealthClient::new(product),
            order_health: HealthClient::new(order),
            timeout: cfg.backend_timeout,
            calls,
            mesh,
        })
    }
}

impl Backends for GrpcBackends {
    fn get_product<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Product>> {
        Box::pin(async move {
            let mut client = self.product.clone();
            let msg = GetProductRequest {
                product_id: id.to_owned(),
            };
            let out = self
                .unary(Hop::Product, "GetProduct", headers, msg, |req| async move {
                    client.get_product(req).await
                })
                .await;
            let served = out.result.as_ref().ok().and_then(|p| p.served_by.clone());
            self.remember(headers, "GetProduct", id.to_owned(), &out, served);
            self.finish(out)
        })
    }

    fn list_products<'a>(
        &'a self,
        headers: &'a HeaderMap,
        page_size: i32,
        page_number: Option<i32>,
    ) -> Call<'a, Reply<ListProductsResponse>> {
        Box::pin(async move {
            let mut client = self.product.clone();
            let msg = ListProductsRequest { page_size, page_number };
            let out = self
                .unary(Hop::Product, "ListProducts", headers, msg, |req| async move {
                    client.list_products(req).await
                })
                .await;
            let served = out.result.as_ref().ok().and_then(|r| r.served_by.clone());
            let target = format!("page {}", page_number.unwrap_or(1));
            self.remember(headers, "ListProducts", target, &out, served);
            self.finish(out)
        })
    }

    fn create_order<'a>(&'a self, headers: &'a HeaderMap, msg: CreateOrderRequest) -> Call<'a, Reply<Order>> {
        Box::pin(async move {
            let mut client = self.order.clone();
            let out = self
                .unary(Hop::Order, "CreateOrder", headers, msg, |req| async move {
                    client.create_order(req).await
                })
                .await;
            self.finish(out)
        })
    }

    fn get_order<'a>(&'a self, headers: &'a HeaderMap, id: &'a str) -> Call<'a, Reply<Order>> {
        Box::pin(async move {
            let mut client = self.order.clone();
            let msg = GetOrderRequest { id: id.to_owned() };
            let out = self
                .unary(Hop::Order, "GetOrder", headers, msg, |req| async move {
                    client.get_order(req).await
                })
                .await;
            self.finish(out)
        })
    }

    /// grpc.health.v1 `Check` of the backend's overall status (`""`, which
    /// every server of the suite sets, and turns NOT_SERVING when draining).
    fn check(&self, hop: Hop) -> Call<'_, ()> {
        Box::pin(async move {
            let mut client = match hop {
                Hop::Product => self.product_health.clone(),
                Hop::Order => self.order_health.clone(),
                Hop::Frontend => return Ok(()),
            };
            let timeout = READY_TIMEOUT.min(self.timeout);
            let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
            req.set_timeout(timeout);
            match tokio::time::timeout(timeout, client.check(req)).await {
                Err(_) => Err(AppError::new(
                    hop,
                    Code::DeadlineExceeded,
                    &format!("health check got no answer within {} ms", timeout.as_millis()),
                )),
                Ok(Err(status)) => Err(AppError::from_status(hop, &status)),
                Ok(Ok(res)) => match res.get_ref().status() {
                    ServingStatus::Serving => Ok(()),
                    other => Err(AppError::new(
                        hop,
                        Code::Unavailable,
                        &format!("health check answered {}", other.as_str_name()),
                    )),
                },
            }
        })
    }
}

impl GrpcBackends {
    /// One unary call with everything the module doc promises.
    async fn unary<Req, Resp, Fut>(
        &self,
        hop: Hop,
        method: &'static str,
        headers: &HeaderMap,
        msg: Req,
        call: impl FnOnce(tonic::Request<Req>) -> Fut,
    ) -> Outcome<Resp>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let service = match hop {
            Hop::Product => "product.ProductService",
            Hop::Order => "order.OrderService",
            Hop::Frontend => "frontend",
        };
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            peer.service = hop.name(),
        );
        let mut req = tonic::Request::new(msg);
        // Sent as grpc-timeout so the backend (and the sidecars) know the
        // budget; tonic's client enforces it too.
        req.set_timeout(self.timeout);
        propagation::forward_headers(headers, req.metadata_mut());
        // Inside the client span, so the backend's span is its child.
        span.in_scope(|| propagation::inject_metadata(req.metadata_mut()));

        let start = Instant::now();
        // The outer timer also bounds what grpc-timeout cannot: a connect
        // attempt stuck in the lazy channel's queue.
        let result = tokio::time::timeout(self.timeout, call(req).instrument(span.clone())).await;
        let elapsed = start.elapsed();
        let deadline_detail = || {
            format!(
                "{} did not answer {method} within {} ms (BACKEND_TIMEOUT_MS)",
                hop.name(),
                self.timeout.as_millis()
            )
        };
        let out = match result {
            Err(_) => Outcome {
                result: Err(AppError::new(hop, Code::DeadlineExceeded, &deadline_detail())),
                version: None,
                pod: None,
                elapsed,
            },
            Ok(Ok(res)) => {
                let (version, pod) = identity(res.metadata());
                Outcome {
                    result: Ok(res.into_inner()),
                    version,
                    pod,
                    elapsed,
                }
            }
            Ok(Err(status)) => {
                let (version, pod) = identity(status.metadata());
                // tonic reports its own expired deadline as CANCELLED
                // ("Timeout expired"); to the user it is a deadline.
                let err = if status.code() == Code::Cancelled && elapsed >= self.timeout {
                    AppError::new(hop, Code::DeadlineExceeded, &deadline_detail())
                } else {
                    AppError::from_status(hop, &status)
                };
                Outcome {
                    result: Err(err),
                    version,
                    pod,
                    elapsed,
                }
            }
        };

        let code = match &out.result {
            Ok(_) => Code::Ok,
            Err(e) => e.code,
        };
        let version = out.version.as_deref().unwrap_or(NO_VERSION);
        self.calls
            .with_label_values(&[hop.name(), method, code_name(code), version])
            .inc();
        span.record("rpc.grpc.status_code", code as i32);
        if let Err(e) = &out.result {
            if e.http_status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            tracing::warn!(
                parent: &span,
                hop = hop.name(),
                method,
                code = code_name(e.code),
                detail = %e.detail,
                // Not `version`: every log line already carries the frontend's own.
                backend_version = version,
                "{} {method} failed",
                hop.name()
            );
        }
        out
    }

    /// Adds a product call to the `/mesh` history.
    fn remember<T>(
        &self,
        headers: &HeaderMap,
        method: &'static str,
        target: String,
        out: &Outcome<T>,
        served: Option<proto::common::ServedBy>,
    ) {
        // The message's ServedBy is the authority; metadata covers failures.
        let version = served
            .as_ref()
            .map(|s| s.version.clone())
            .filter(|v| !v.is_empty())
            .or_else(|| out.version.clone())
            .unwrap_or_else(|| NO_VERSION.to_owned());
        let pod = served
            .as_ref()
            .map(|s| s.pod.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| out.pod.clone())
            .unwrap_or_else(|| "(no answer)".to_owned());
        self.mesh.record(ProductCall {
            time: mesh::clock(SystemTime::now()),
            method,
            target,
            version,
            pod,
            code: match &out.result {
                Ok(_) => "OK",
                Err(e) => code_name(e.code),
            },
            latency_ms: (out.elapsed.as_secs_f64() * 10_000.0).round() / 10.0,
            request_id: propagation::request_id(headers).unwrap_or_default().to_owned(),
        });
    }

    fn finish<T>(&self, out: Outcome<T>) -> Result<Reply<T>, AppError> {
        out.result.map(|message| Reply {
            message,
            version: out.version.unwrap_or_else(|| NO_VERSION.to_owned()),
            pod: out.pod.unwrap_or_default(),
        })
    }
}

/// `x-version` and `x-served-by`, which every server of the suite sets.
fn identity(md: &MetadataMap) -> (Option<String>, Option<String>) {
    let get = |k: &str| {
        md.get(k)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    (get(VERSION), get(SERVED_BY))
}

fn channel(addr: &str, variable: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("{variable}={addr:?} is not a usable URL"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .user_agent("frontend")
        .context("user agent")?;
    Ok(endpoint.connect_lazy())
}
