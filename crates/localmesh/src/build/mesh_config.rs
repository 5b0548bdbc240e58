//! The IstioOperator that installs Istio (`observability/istio/istio-operator.yaml`): of its
//! `meshConfig`, what changes localmesh: `accessLogFile` (whether proxies log by default) and
//! `defaultHttpRetryPolicy`. Istio gives a
//! route without its own `retries` the mesh's default policy (`routeDestination`:
//! `policy := in.Retries; if policy == nil { policy = push.Mesh.GetDefaultHttpRetryPolicy() }`,
//! pilot/pkg/networking/core/route), and every Gateway-API route is such a route, since
//! `HTTPRoute.retry` is experimental-channel only.

use manifests::model::istio::HttpRetry;

use super::{Ctx, virtual_service};
use crate::model::RetryPolicy;

pub const KIND: &str = "IstioOperator";

/// The default retry policy: the first IstioOperator's, else Istio's own.
pub(super) fn default_retry(cx: &mut Ctx) -> RetryPolicy {
    let m = cx.m;
    let Some((o, value)) = m.objects.iter().find_map(|o| match &o.resource {
        manifests::Resource::Other(v) if o.kind == KIND => Some((o, v)),
        _ => None,
    }) else {
        return RetryPolicy::mesh_default();
    };
    const FIELD: &str = "spec.meshConfig.defaultHttpRetryPolicy";
    let Some(raw) = value.pointer("/spec/meshConfig/defaultHttpRetryPolicy") else {
        return RetryPolicy::mesh_default();
    };
    let Some(h) = cx.decode::<HttpRetry>(o, FIELD, raw) else {
        return RetryPolicy::mesh_default();
    };
    virtual_service::retry(cx, o, FIELD, &h).unwrap_or_else(RetryPolicy::mesh_default)
}

/// Whether a proxy writes its access log when no Telemetry resource says: the first
/// IstioOperator's `meshConfig.accessLogFile` names a file (Istio's default profile leaves it
/// empty: no log). Without an IstioOperator, on, as Istio's demo profile (`/dev/stdout`).
pub(super) fn access_log(cx: &mut Ctx) -> bool {
    let Some(value) = cx.m.objects.iter().find_map(|o| match &o.resource {
        manifests::Resource::Other(v) if o.kind == KIND => Some(v),
        _ => None,
    }) else {
        return true;
    };
    value
        .pointer("/spec/meshConfig/accessLogFile")
        .and_then(|v| v.as_str())
        .is_some_and(|f| !f.is_empty())
}
