//! The second stage: a [`Plan`]'s backend, tried until one attempt's answer is passed on or the
//! request is answered locally. Per request: the cluster's breaker admits it; per attempt: an
//! endpoint is chosen ([`super::balance`]), the request is sent through the [`Upstream`] seam
//! under the per-try and route deadlines, its end ([`AttemptEnd`]) feeds outlier detection, and
//! one decision ([`retry::should_retry`]) says whether to try again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

use super::balance::Cluster;
use super::body::{Kept, Observed};
use super::endpoints::Endpoint;
use super::headers::{header_str, strip_hop_by_hop, upstream_request};
use super::metrics::{Labels, Reporter, ServiceName};
use super::record::{Answered, Ctx, FinalAttempt, Record, Reply};
use super::reply::LocalReply;
use super::retry::{self, AttemptEnd, Retries};
use super::route::{Downstream, Plan};
use super::spans::{Inbound, Outcome};
use super::upstream::{AttemptError, Dial};
use super::{CONNECT_TIMEOUT, Proxy, ProxyBody, names};
use crate::model::{Backend, Mesh};
use crate::outlier::Outcome as OutlierOutcome;
use crate::select;

impl Proxy {
    pub(super) async fn forward(
        &self,
        mut ctx: Ctx,
        mesh: &Mesh,
        down: Downstream<'_>,
        body: ProxyBody,
        backend: Backend,
        plan: &Plan,
    ) -> Response<ProxyBody> {
        let Some(service) = mesh.service(&backend.service) else {
            let msg = format!("backend {backend} is not a known Service");
            return self.local(ctx, None, None, LocalReply::UnknownService, msg);
        };
        let svc_port = names::service_port(service, &backend, plan.port);
        let http2 = service
            .ports
            .iter()
            .find(|sp| sp.port == svc_port)
            .or(service.ports.first())
            .is_some_and(|p| p.is_http2());
        let policy = select::traffic_policy(mesh, &backend, svc_port).clone();
        // Envoy's clusters are per port (`outbound|<port>|<subset>|<host>`): each has its own
        // breakers and outlier state, and its own `portLevelSettings`.
        let subset = backend.subset.as_deref().unwrap_or("");
        let cluster_name = format!("{}|{subset}|{svc_port}", backend.service);
        let eps = select::endpoints(mesh, &backend, &self.endpoints.all());
        let cluster = Cluster {
            name: &cluster_name,
            policy: &policy,
            endpoints: &eps,
        };
        let name = Arc::new(ServiceName::from(&service.key));
        let fqdn = name.fqdn.clone();
        // The inbound span's name and cluster are the same for every attempt.
        let span_names = ctx
            .trace
            .recording()
            .then(|| names::backend_names(mesh, service, &backend, plan.port));
        if let Some(n) = &span_names {
            ctx.trace.set_upstream_cluster(n.outbound_cluster.clone());
        }
        let inbound_for = |ep: &Endpoint| {
            span_names.as_ref().map(|n| Inbound {
                identity: ep.identity.clone(),
                tracing: mesh.proxy_tracing(&ep.identity.namespace, &ep.labels),
                operation: n.inbound_operation.clone(),
                cluster: n.inbound_cluster.clone(),
            })
        };

        let deadline = plan.timeout.map(|t| ctx.start + t);
        let keep = if plan.retry.is_enabled() {
            self.limits.per_request_buffer
        } else {
            0
        };
        let kept = Kept::new(body, keep);

        let breaker = self.breakers.get(&cluster_name, &policy.pool);
        let admitted = match deadline {
            Some(d) => tokio::time::timeout_at(d, breaker.admit(!http2)).await.ok(),
            None => Some(breaker.admit(!http2).await),
        };
        let admitted = match admitted {
            None => {
                let msg = format!("upstream request timeout ({fqdn}) waiting for a connection");
                return self.local(ctx, Some(name), None, LocalReply::Timeout, msg);
            }
            Some(Err(over)) => {
                let msg = format!("upstream overflow ({fqdn}): {over}");
                return self.local(ctx, Some(name), None, LocalReply::Overflow, msg);
            }
            Some(Ok(a)) => a,
        };

        let mut retries = Retries::new(plan.retry.attempts);
        loop {
            let Some(ep) = self.balance.choose(cluster, down.sreq, &retries.tried) else {
                let msg = format!("no healthy upstream for {fqdn}");
                return self.local(ctx, Some(name), None, LocalReply::NoHealthyUpstream, msg);
            };
            let attempt = ctx.trace.attempt();
            let dial = Dial {
                addr: ep.addr,
                http2,
                connect_timeout: policy.pool.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            };
            let body = kept.attempt().boxed_unsync();
            let upstream = upstream_request(down, &ctx, &attempt, dial, body, retries.tried.len());
            let in_flight = ep.begin();
            let try_deadline = match (deadline, plan.retry.per_try_timeout.map(|p| Instant::now() + p)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sent = self.send(upstream);
            let result = match try_deadline {
                Some(d) => tokio::time::timeout_at(d, sent).await.ok(),
                None => Some(sent.await),
            };
            // How the attempt ended, one way for all three: an answer, an error, a timeout.
            let (end, answer, error) = match result {
                Some(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let grpc_status = header_str(resp.headers(), "grpc-status").and_then(|s| s.parse().ok());
                    (AttemptEnd::Response { status, grpc_status }, Some(resp), None)
                }
                Some(Err(e)) => (e.end(), None, Some(e)),
                None => (AttemptEnd::PerTryTimeout, None, None),
            };
            let outlier = match end {
                AttemptEnd::Response {
                    grpc_status: Some(c), ..
                } if ctx.grpc => OutlierOutcome::Grpc(c),
                AttemptEnd::Response { status, .. } => OutlierOutcome::Http(status),
                AttemptEnd::ConnectFailure | AttemptEnd::Refused | AttemptEnd::Reset => OutlierOutcome::ConnectFailure,
                // A timeout is a gateway error for outlier detection (see OutlierOutcome::Timeout).
                AttemptEnd::PerTryTimeout => OutlierOutcome::Timeout,
            };
            self.balance.record(cluster, &ep, outlier);
            // The route's own deadline ends the request; only a per-try timeout may be retried.
            let expired = end == AttemptEnd::PerTryTimeout && deadline.is_some_and(|d| Instant::now() >= d);
            let retriable = !expired && retry::should_retry(&plan.retry, ctx.grpc, end);
            // A connect failure never reached the pod's sidecar: no inbound span or report.
            let reached = (end != AttemptEnd::ConnectFailure).then(|| inbound_for(&ep)).flatten();
            let final_attempt = FinalAttempt {
                attempt,
                inbound: reached,
                reports_metrics: mesh.reports_metrics(&ep.identity.namespace, &ep.labels),
            };
            if retriable && kept.replayable() && retries.take(&breaker, ep.id) {
                tracing::debug!(pod = %ep.pod, ?end, "retrying");
                self.retried_attempt(&mut ctx, &name, &ep, final_attempt, end, kept.bytes());
                continue;
            }
            let retried_out = retriable && plan.retry.attempts > 0;
            if let Some(resp) = answer {
                let answered = Answered {
                    held: (in_flight, admitted),
                    attempt: final_attempt,
                    flags: if retried_out { "URX" } else { "-" },
                    request_bytes: kept.bytes(),
                    request_counter: Some(kept.counter()),
                };
                return self.respond(ctx, name, &ep, resp, deadline, answered);
            }
            let fa = Some(final_attempt);
            if let Some(why) = kept.failed() {
                let msg = format!("reading the request body: {why}");
                return self.local_after(ctx, Some(name), Some(ep), fa, LocalReply::BadRequestBody, msg);
            }
            return match error {
                Some(e) => {
                    let connect = end == AttemptEnd::ConnectFailure;
                    let reply = LocalReply::UpstreamFailure { connect, retried_out };
                    let msg = format!("upstream connect error to {} ({fqdn}): {e}", ep.pod);
                    let ep = (!connect).then_some(ep);
                    self.local_after(ctx, Some(name), ep, fa, reply, msg)
                }
                None => {
                    let msg = format!("upstream request timeout ({fqdn})");
                    self.local_after(ctx, Some(name), Some(ep), fa, LocalReply::Timeout, msg)
                }
            };
        }
    }

    /// One attempt through the upstream seam. (A named future type: inside `forward`'s own
    /// future, rustc cannot prove the seam's `Send` for every lifetime of the boxed error.)
    fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, AttemptError>> + Send>> {
        Box::pin(self.upstream.clone().oneshot(req))
    }

    /// An attempt that is retried: the destination sidecar's report and span of what it saw (a
    /// connect failure reached no sidecar, so has neither).
    fn retried_attempt(
        &self,
        ctx: &mut Ctx,
        service: &Arc<ServiceName>,
        ep: &Arc<Endpoint>,
        fa: FinalAttempt,
        end: AttemptEnd,
        request_bytes: u64,
    ) {
        let code;
        let outcome = match end {
            AttemptEnd::ConnectFailure => return,
            AttemptEnd::Response { status, grpc_status } => {
                code = grpc_status.map(|c| c.to_string());
                Outcome::retried(status, code.as_deref(), "-", request_bytes)
            }
            AttemptEnd::Refused | AttemptEnd::Reset => {
                Outcome::retried(503, ctx.grpc.then_some("14"), "UC", request_bytes)
            }
            AttemptEnd::PerTryTimeout => Outcome::retried(504, ctx.grpc.then_some("4"), "UT", request_bytes),
        };
        let labels = Labels {
            reporter: Reporter::Destination,
            source: ctx.source.clone(),
            destination: Some(ep.identity.clone()),
            service: Some(service.clone()),
            grpc: ctx.grpc,
            response_code: outcome.status,
            grpc_response_status: outcome.grpc_status.map(str::to_string),
            response_flags: outcome.flags.to_string(),
        };
        if fa.reports_metrics {
            self.recorder.metrics.record(&labels, fa.attempt.elapsed_ms());
        }
        if let Some(inbound) = &fa.inbound {
            ctx.trace
                .finish_attempt(&self.recorder.tracer, fa.attempt, inbound, &outcome);
        }
    }

    /// The pod's answer, passed on: its record (metrics, access log, spans) is written when its
    /// body ends.
    fn respond(
        &self,
        ctx: Ctx,
        service: Arc<ServiceName>,
        ep: &Arc<Endpoint>,
        resp: Response<ProxyBody>,
        deadline: Option<Instant>,
        answered: Answered,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        if let Ok(v) = HeaderValue::from_str(&ep.pod) {
            parts.headers.insert(HeaderName::from_static("x-localmesh-upstream"), v);
        }
        parts.headers.insert(
            HeaderName::from_static("x-envoy-upstream-service-time"),
            HeaderValue::from(ctx.start.elapsed().as_millis() as u64),
        );
        let reply = Reply {
            status: parts.status.as_u16(),
            grpc_status: header_str(&parts.headers, "grpc-status").map(str::to_string),
            grpc_message: header_str(&parts.headers, "grpc-message").map(str::to_string),
            flags: answered.flags.to_string(),
        };
        let mut record = Record::new(self.recorder.clone(), ctx, Some(service), Some(ep.clone()), reply);
        record.held = Some(answered.held);
        record.attempt = Some(answered.attempt);
        record.request_bytes = answered.request_bytes;
        record.request_counter = answered.request_counter;
        Response::from_parts(parts, Observed::new(body, record, deadline).boxed_unsync())
    }
}
