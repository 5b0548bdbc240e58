//! Gateway API listeners and the HTTPRoute matches attached to them: where north-south traffic
//! enters the mesh.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{Key, Origin, RequestMatch, RetryPolicy, RouteAction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub origin: Origin,
    pub gateway: Key,
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `None` matches every host.
    pub hostname: Option<String>,
    pub tls: Option<TlsCert>,
    /// One entry per HTTPRoute rule match, in file order; [`crate::select`] applies precedence.
    pub routes: Vec<GatewayRoute>,
}

/// A listener's certificate: the Secret it names, and the local files standing in for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    pub secret: Key,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One `matches[]` entry of one HTTPRoute rule, with the rule's action and policy. The Gateway API
/// ranks matches, not rules, so the model flattens rules into their matches.
#[derive(Debug, Clone)]
pub struct GatewayRoute {
    pub origin: Origin,
    pub route: Key,
    /// e.g. `spec.rules[2].matches[0]`.
    pub field: String,
    /// The route's hostnames (empty: the listener's).
    pub hostnames: Vec<String>,
    pub matcher: RequestMatch,
    pub action: RouteAction,
    /// `timeouts.request`; `None` (or `0s` in YAML) means no timeout.
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    /// Position in load order: the tie-breaker once the Gateway API's precedence is exhausted.
    pub order: usize,
    /// The gateway span's name for this route, made on first use (the model does not change).
    pub span_name: OnceLock<Arc<str>>,
}
