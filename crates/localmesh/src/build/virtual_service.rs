//! Mesh VirtualServices: what the callers' sidecars apply east-west.

use manifests::Object;
use manifests::model::istio::{HttpMatchRequest, HttpRetry, HttpRoute};
use serde::Deserialize;
use serde_json::Value;

use super::matches::{istio_string, istio_uri};
use super::{Ctx, origin, resolve_host};
use crate::model::{
    AbortStatus, Backend, Fault, FaultAbort, FaultDelay, HeaderMatch, Mesh, MeshRoute, RequestMatch, RetryOn,
    RetryPolicy, VirtualService,
};

pub(super) fn virtual_services(cx: &mut Ctx, mesh: &Mesh) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for (o, vs) in cx.m.virtual_services() {
        let spec = &vs.spec;
        // A VirtualService bound to a classic Istio Gateway never applies to the Gateway-API gateway.
        if spec.gateways.iter().any(|g| g != "mesh") {
            cx.note(
                o,
                "spec.gateways",
                "bound to a classic Istio Gateway: not emulated (localmesh's gateway follows the HTTPRoutes)",
            );
            if !spec.gateways.iter().any(|g| g == "mesh") {
                continue;
            }
        }
        if !spec.tcp.is_empty() || !spec.tls.is_empty() {
            cx.note(o, "spec.tcp/spec.tls", "TCP and TLS routes are not emulated");
        }
        let routes = spec
            .http
            .iter()
            .enumerate()
            .filter_map(|(i, r)| route(cx, o, mesh, &format!("spec.http[{i}]"), r))
            .collect();
        out.push(VirtualService {
            origin: origin(o),
            namespace: o.namespace().to_string(),
            hosts: spec.hosts.clone(),
            routes,
        });
    }
    out
}

fn route(cx: &mut Ctx, o: &Object, mesh: &Mesh, field: &str, r: &HttpRoute) -> Option<MeshRoute> {
    for (set, name) in [
        (r.redirect.is_some(), "redirect"),
        (r.direct_response.is_some(), "directResponse"),
        (r.mirror.is_some(), "mirror"),
        (r.headers.is_some(), "headers"),
    ] {
        if set {
            cx.note(o, format!("{field}.{name}"), "not emulated");
        }
    }
    let matches = r
        .match_
        .iter()
        .enumerate()
        .filter_map(|(i, m)| request_match(cx, o, &format!("{field}.match[{i}]"), m))
        .collect::<Vec<_>>();
    if matches.len() != r.match_.len() {
        return None;
    }
    let backends = backends(cx, o, mesh, field, r)?;
    let timeout = match &r.timeout {
        Some(t) => cx.duration(o, &format!("{field}.timeout"), t).filter(|d| !d.is_zero()),
        None => None,
    };
    let retry = match &r.retries {
        None => mesh.default_retry.clone(),
        Some(h) => retry(cx, o, &format!("{field}.retries"), h)?,
    };
    let fault = match &r.fault {
        Some(v) => Some(fault(cx, o, &format!("{field}.fault"), v)?),
        None => None,
    };
    Some(MeshRoute {
        name: r.name.clone(),
        field: field.to_string(),
        matches,
        backends,
        timeout,
        retry,
        fault,
    })
}

fn request_match(cx: &mut Ctx, o: &Object, field: &str, m: &HttpMatchRequest) -> Option<RequestMatch> {
    for (set, name) in [
        (m.scheme.is_some(), "scheme"),
        (!m.source_labels.is_empty(), "sourceLabels"),
        (!m.gateways.is_empty(), "gateways"),
        (m.ignore_uri_case.is_some(), "ignoreUriCase"),
    ] {
        if set {
            cx.note(o, format!("{field}.{name}"), "not emulated: the match ignores it");
        }
    }
    let mut ok = true;
    let mut one = |cx: &mut Ctx, name: &str, s: &manifests::model::istio::StringMatch| {
        let r = istio_string(cx, o, &format!("{field}.{name}"), s);
        ok &= r.is_some();
        r
    };
    let method = m.method.as_ref().and_then(|s| one(cx, "method", s));
    let authority = m.authority.as_ref().and_then(|s| one(cx, "authority", s));
    let mut headers = Vec::new();
    for (k, s) in &m.headers {
        // Istio ignores these keys under `headers` (they have their own fields).
        if matches!(k.as_str(), "uri" | "scheme" | "method" | "authority") {
            cx.note(o, format!("{field}.headers.{k}"), "ignored by Istio under `headers`");
            continue;
        }
        if let Some(value) = one(cx, &format!("headers.{k}"), s) {
            headers.push(HeaderMatch {
                name: k.to_ascii_lowercase(),
                value,
            });
        }
    }
    let mut without_headers = Vec::new();
    for (k, s) in &m.without_headers {
        if let Some(value) = one(cx, &format!("withoutHeaders.{k}"), s) {
            without_headers.push(HeaderMatch {
                name: k.to_ascii_lowercase(),
                value,
            });
        }
    }
    let mut query_params = Vec::new();
    for (k, s) in &m.query_params {
        if let Some(value) = one(cx, &format!("queryParams.{k}"), s) {
            query_params.push(HeaderMatch { name: k.clone(), value });
        }
    }
    let path = match &m.uri {
        Some(u) => {
            let p = istio_uri(cx, o, &format!("{field}.uri"), u);
            ok &= p.is_some();
            p
        }
        None => None,
    };
    let port = match m.port {
        Some(p) => Some(cx.port(o, &format!("{field}.port"), i64::from(p))?),
        None => None,
    };
    ok.then_some(RequestMatch {
        path,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port,
    })
}

fn backends(cx: &mut Ctx, o: &Object, mesh: &Mesh, field: &str, r: &HttpRoute) -> Option<Vec<Backend>> {
    let single = r.route.len() == 1;
    let mut out = Vec::new();
    let mut ok = true;
    for (i, d) in r.route.iter().enumerate() {
        let dfield = format!("{field}.route[{i}]");
        let dest = &d.destination;
        let key = resolve_host(&dest.host, o.namespace()).filter(|k| mesh.service(k).is_some());
        let Some(service) = key else {
            cx.err(
                o,
                format!("{dfield}.destination.host"),
                format!("`{}` is not a Service of the manifests", dest.host),
            );
            ok = false;
            continue;
        };
        if let Some(subset) = &dest.subset {
            let known = mesh
                .destination_rule(&service)
                .is_some_and(|dr| dr.subsets.iter().any(|s| &s.name == subset));
            if !known {
                cx.err(
                    o,
                    format!("{dfield}.destination.subset"),
                    format!("no DestinationRule for {service} defines subset `{subset}`"),
                );
                ok = false;
            }
        }
        // Istio: a lone destination takes all traffic; otherwise an unset weight is 0.
        let weight = match d.weight {
            None if single => 100,
            None => 0,
            Some(w) => match u32::try_from(w) {
                Ok(w) => w,
                Err(_) => {
                    cx.err(o, format!("{dfield}.weight"), "must not be negative");
                    ok = false;
                    continue;
                }
            },
        };
        let port = match &dest.port {
            Some(p) => Some(cx.port(o, &format!("{dfield}.destination.port.number"), i64::from(p.number))?),
            None => None,
        };
        out.push(Backend {
            service,
            port,
            subset: dest.subset.clone(),
            weight,
        });
    }
    if ok && !out.is_empty() && out.iter().all(|b| b.weight == 0) {
        cx.err(
            o,
            format!("{field}.route"),
            "the weights add up to 0: nothing would be routed",
        );
        ok = false;
    }
    ok.then_some(out)
}

pub(super) fn retry(cx: &mut Ctx, o: &Object, field: &str, h: &HttpRetry) -> Option<RetryPolicy> {
    let attempts = h.attempts.unwrap_or(0);
    // Istio: `attempts` 0 (or unset) disables retries, and then nothing else may be set.
    if attempts <= 0 {
        if h.retry_on.is_some() || h.per_try_timeout.is_some() {
            cx.err(
                o,
                format!("{field}.attempts"),
                "0 disables retries, so retryOn and perTryTimeout must not be set",
            );
            return None;
        }
        return Some(RetryPolicy::none());
    }
    let Ok(attempts) = u32::try_from(attempts) else {
        cx.err(o, format!("{field}.attempts"), "too large");
        return None;
    };
    let per_try_timeout = match &h.per_try_timeout {
        Some(t) => Some(cx.duration(o, &format!("{field}.perTryTimeout"), t)?),
        None => None,
    };
    let retry_on = match &h.retry_on {
        // An unset retryOn keeps Istio's default list.
        None => RetryPolicy::mesh_default().retry_on,
        Some(list) => {
            let mut out = Vec::new();
            // Istio splits on `,` without trimming: `unavailable, cancelled` is invalid there too.
            for token in list.split(',') {
                match RetryOn::parse(token) {
                    Some(r @ RetryOn::Status(_)) => {
                        out.push(r);
                        if !out.contains(&RetryOn::RetriableStatusCodes) {
                            out.push(RetryOn::RetriableStatusCodes);
                        }
                    }
                    Some(r) => out.push(r),
                    None => {
                        cx.err(
                            o,
                            format!("{field}.retryOn"),
                            format!("unknown retry condition `{token}` (comma-separated, no spaces)"),
                        );
                        return None;
                    }
                }
            }
            out
        }
    };
    Some(RetryPolicy {
        attempts,
        per_try_timeout,
        retry_on,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFault {
    delay: Option<RawDelay>,
    abort: Option<RawAbort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDelay {
    percentage: Option<RawPercent>,
    /// Deprecated integer form.
    percent: Option<u32>,
    fixed_delay: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAbort {
    percentage: Option<RawPercent>,
    http_status: Option<u16>,
    grpc_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPercent {
    value: f64,
}

fn fault(cx: &mut Ctx, o: &Object, field: &str, v: &Value) -> Option<Fault> {
    let raw: RawFault = cx.decode(o, field, v)?;
    // An unset percentage injects into every request.
    let pct = |p: &Option<RawPercent>, legacy: Option<u32>| {
        p.as_ref().map(|p| p.value).or(legacy.map(f64::from)).unwrap_or(100.0)
    };
    let delay = match raw.delay {
        Some(d) => {
            let Some(fixed) = &d.fixed_delay else {
                cx.err(
                    o,
                    format!("{field}.delay.fixedDelay"),
                    "required (exponentialDelay is not emulated)",
                );
                return None;
            };
            Some(FaultDelay {
                percent: pct(&d.percentage, d.percent),
                fixed: cx.duration(o, &format!("{field}.delay.fixedDelay"), fixed)?,
            })
        }
        None => None,
    };
    let abort = match raw.abort {
        Some(a) => {
            let status = match (a.http_status, a.grpc_status) {
                (Some(h), None) => AbortStatus::Http(h),
                (None, Some(g)) => match crate::grpc::code_from_name(&g) {
                    Some(code) => AbortStatus::Grpc(code),
                    None => {
                        let why = format!("{g:?} is not a gRPC status name (OK, CANCELLED, ..., UNAVAILABLE, ...)");
                        cx.err(o, format!("{field}.abort.grpcStatus"), why);
                        return None;
                    }
                },
                _ => {
                    cx.err(o, format!("{field}.abort"), "set exactly one of httpStatus, grpcStatus");
                    return None;
                }
            };
            Some(FaultAbort {
                percent: pct(&a.percentage, None),
                status,
            })
        }
        None => None,
    };
    Some(Fault { delay, abort })
}
