//! East-west routing: mesh VirtualServices, their routes, and the faults those routes inject.

use std::time::Duration;

use super::{Backend, Origin, RequestMatch, RetryPolicy};

/// An east-west VirtualService as the callers' sidecars apply it.
#[derive(Debug, Clone)]
pub struct VirtualService {
    pub origin: Origin,
    /// The VirtualService's namespace: short hosts resolve against it.
    pub namespace: String,
    /// The hosts as written (FQDNs or external names such as `api.payment-provider.com`).
    pub hosts: Vec<String>,
    /// In order: the first matching route wins.
    pub routes: Vec<MeshRoute>,
}

#[derive(Debug, Clone)]
pub struct MeshRoute {
    pub name: Option<String>,
    /// e.g. `spec.http[3]`.
    pub field: String,
    /// Any one matching selects the route (OR); empty matches everything.
    pub matches: Vec<RequestMatch>,
    pub backends: Vec<Backend>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
}

/// Istio fault injection on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    /// 0..=100; unset in YAML means every request.
    pub percent: f64,
    pub fixed: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    pub percent: f64,
    pub status: AbortStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortStatus {
    Http(u16),
    /// A gRPC status (written by name, e.g. `UNAVAILABLE`).
    Grpc(tonic::Code),
}

impl Fault {
    /// What to inject for one request, given two uniform draws in `0.0..100.0` (one per fault kind,
    /// as Envoy draws them independently).
    pub fn decide(&self, delay_draw: f64, abort_draw: f64) -> (Option<Duration>, Option<&AbortStatus>) {
        let delay = self.delay.as_ref().filter(|d| delay_draw < d.percent).map(|d| d.fixed);
        let abort = self
            .abort
            .as_ref()
            .filter(|a| abort_draw < a.percent)
            .map(|a| &a.status);
        (delay, abort)
    }
}
