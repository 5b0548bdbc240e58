//! The first stage of a request: from its head to a [`Plan`]. At the gateway the request is
//! sanitised as an edge Envoy sanitises external requests ([`super::edge`]); then its route is
//! found (the gateway's HTTPRoutes, or the caller's sidecar view of VirtualServices and
//! Services), a fault is injected where the route asks for one, and a weighted backend is drawn.
//! Redirects and requests no route takes are answered here.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;

use super::headers::header_str;
use super::record::{Ctx, Record, Reply};
use super::reply::LocalReply;
use super::spans::{RequestInfo, RequestTrace};
use super::{Hop, HopKind, Proxy, ProxyBody, edge, names, redirect};
use crate::model::{AbortStatus, Backend, Fault, Listener, Redirect, RetryPolicy, RouteAction};
use crate::select;

/// The downstream request as the forwarding stage reads it: its head, its routing view and its
/// path with the query.
#[derive(Clone, Copy)]
pub(crate) struct Downstream<'a> {
    pub parts: &'a http::request::Parts,
    pub sreq: &'a select::Request,
    pub path_q: &'a str,
}

/// What the matched route asks for.
#[derive(Debug)]
pub(crate) struct Plan {
    pub backends: Vec<Backend>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    /// The port the caller dialled (routes and cluster names resolve Service ports against it).
    pub port: u16,
}

impl Proxy {
    /// Serves one downstream request: sanitised at the edge, routed to a plan, and forwarded.
    pub(super) async fn handle(
        self: Arc<Self>,
        hop: Hop,
        peer: IpAddr,
        req: Request<ProxyBody>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let mesh = self.mesh();
        let (mut parts, body) = req.into_parts();
        if let HopKind::Gateway(l) = &hop.kind {
            edge::sanitize_external(&mut parts.headers, peer, l.tls.is_some());
        }
        let authority = match &hop.kind {
            HopKind::Sidecar(Some(host)) => host.to_string(),
            _ => parts
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| header_str(&parts.headers, "host").map(str::to_string))
                .unwrap_or_default(),
        };
        let path_q = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut sreq = select::Request::new(parts.method.as_str(), &path_q).authority(&authority);
        for (n, v) in &parts.headers {
            if let Ok(v) = v.to_str() {
                sreq.headers.push((n.as_str().to_string(), v.to_string()));
            }
        }
        let grpc = header_str(&parts.headers, "content-type").is_some_and(|c| c.starts_with("application/grpc"));
        let hop_name = match &hop.kind {
            HopKind::Gateway(_) => "gateway",
            HopKind::Sidecar(_) => "sidecar",
        };
        // Envoy makes an x-request-id where a request arrives without one, once for all attempts.
        let request_id = telemetry::propagation::request_id(&parts.headers)
            .map_or_else(telemetry::propagation::new_request_id, str::to_string);
        let tapping = self.recorder.tap.active();
        let mut ctx = Ctx {
            start,
            hop: hop_name,
            trace: RequestTrace::start(
                &parts.headers,
                &hop.source,
                hop.telemetry.tracing,
                telemetry::grpc::is_health_check(&sreq.path) || telemetry::http::is_probe(&sreq.path),
            ),
            source: hop.source.clone(),
            authority: authority.clone(),
            path: sreq.path.clone(),
            method: parts.method.to_string(),
            grpc,
            request_id,
            route: String::new(),
            tap_headers: tapping.then(|| parts.headers.clone()),
            access_log: hop.telemetry.access_log,
            metrics: hop.telemetry.metrics,
        };
        let scheme = match &hop.kind {
            HopKind::Gateway(l) if l.tls.is_some() => "https",
            _ => "http",
        };
        let peer_text = if ctx.trace.recording() {
            peer.to_string()
        } else {
            String::new()
        };
        let info = RequestInfo {
            headers: &parts.headers,
            method: parts.method.as_str(),
            scheme,
            authority: &authority,
            path: &path_q,
            protocol: match parts.version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            peer: &peer_text,
            request_id: &ctx.request_id,
            grpc,
        };

        // Envoy's connection manager serves relative paths only: a `:path` that does not start
        // with `/` (`*`, an absolute URI) is answered 404 (gRPC: UNIMPLEMENTED) before any route
        // or upstream is tried (envoy `source/common/http/conn_manager_impl.cc`,
        // `ActiveStream::decodeHeaders`, details `absolute_path`).
        if !path_q.starts_with('/') {
            ctx.trace.describe(&info, || format!("{authority}:{path_q}").into());
            let msg = format!("the request path {path_q:?} is not a relative path (it must start with \"/\")");
            return self.local(ctx, None, None, LocalReply::NotRelativePath, msg);
        }
        let plan = match &hop.kind {
            HopKind::Gateway(l) => {
                sreq.port = Some(l.port);
                match select::gateway(&mesh, l.port, &authority, &sreq) {
                    Err(_) => {
                        ctx.trace.describe(&info, || format!("egress {authority}").into());
                        return self.no_route(ctx);
                    }
                    Ok((_, route)) => {
                        ctx.trace.describe(&info, || {
                            route
                                .span_name
                                .get_or_init(|| names::gateway_operation(&mesh, l, route).into())
                                .clone()
                        });
                        if tapping {
                            ctx.route = format!("{} {}", route.origin.object, route.field);
                        }
                        match &route.action {
                            RouteAction::Redirect(r) => return self.redirect(ctx, r, &path_q, l),
                            RouteAction::Forward(b) => Plan {
                                backends: b.clone(),
                                timeout: route.timeout,
                                retry: route.retry.clone(),
                                fault: None,
                                port: l.port,
                            },
                        }
                    }
                }
            }
            HopKind::Sidecar(_) => {
                let port = authority
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(80);
                sreq.port = Some(port);
                match select::sidecar(&mesh, &hop.source.namespace, &authority, &sreq) {
                    None => {
                        ctx.trace.describe(&info, || format!("egress {authority}").into());
                        return self.no_route(ctx);
                    }
                    Some(sc) => {
                        ctx.trace
                            .describe(&info, || names::sidecar_operation(&mesh, &sc, &sreq, port).into());
                        if tapping {
                            ctx.route = match &sc {
                                select::Sidecar::Route { vs, route } => format!("{} {}", vs.origin.object, route.field),
                                select::Sidecar::Direct { service, .. } => format!("Service {}", service.key),
                            };
                        }
                        Plan {
                            backends: sc.backends().to_vec(),
                            timeout: sc.timeout(),
                            retry: sc.retry().clone(),
                            fault: sc.fault().cloned(),
                            port,
                        }
                    }
                }
            }
        };

        if let Some(fault) = &plan.fault {
            let (delay, abort) = fault.decide(rand::random_range(0.0..100.0), rand::random_range(0.0..100.0));
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if let Some(abort) = abort {
                let reply = match abort {
                    AbortStatus::Http(s) => LocalReply::FaultAbort {
                        http: *s,
                        grpc: crate::grpc::from_http(*s),
                    },
                    AbortStatus::Grpc(code) => LocalReply::FaultAbort { http: 500, grpc: *code },
                };
                return self.local(ctx, None, None, reply, "fault filter abort".into());
            }
        }

        let Some(backend) = select::pick(&plan.backends, rand::random()).cloned() else {
            let msg = "every backend of the route has weight 0".into();
            return self.local(ctx, None, None, LocalReply::NoWeightedBackend, msg);
        };
        let down = Downstream {
            parts: &parts,
            sreq: &sreq,
            path_q: &path_q,
        };
        self.forward(ctx, &mesh, down, body, backend, &plan).await
    }

    fn no_route(&self, ctx: Ctx) -> Response<ProxyBody> {
        let msg = format!("no route for {} (authority {:?})", ctx.path, ctx.authority);
        self.local(ctx, None, None, LocalReply::NoRoute, msg)
    }

    fn redirect(&self, ctx: Ctx, r: &Redirect, path_q: &str, l: &Listener) -> Response<ProxyBody> {
        let req = redirect::Incoming {
            protocol: l.protocol,
            authority: &ctx.authority,
            path: path_q,
            listener_port: l.port,
        };
        let location = {
            let published = crate::lock(&self.published);
            redirect::location(r, &req, |p| published.get(&p).copied())
        };
        let mut resp = Response::new(Empty::new().map_err(|e: Infallible| match e {}).boxed_unsync());
        *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        let reply = Reply {
            status: resp.status().as_u16(),
            grpc_status: None,
            grpc_message: None,
            flags: "-".into(),
        };
        Record::new(self.recorder.clone(), ctx, None, None, reply).done(None, None);
        resp
    }
}
