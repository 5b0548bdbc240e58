//! Services: their ports, the workloads they select, and the span names of their backends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[cfg(doc)]
use super::Mesh;
use super::{Key, Origin};

#[derive(Debug, Clone)]
pub struct Service {
    pub origin: Origin,
    pub key: Key,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// Indexes into [`Mesh::workloads`] whose pod template the selector matches.
    pub workloads: Vec<usize>,
    /// The span and cluster names of its backends, made on first use (the model does not change).
    pub span_names: SpanNames,
}

/// The names a sampled request's spans take from the backend it goes to.
#[derive(Debug)]
pub struct BackendNames {
    /// The hop span's `upstream_cluster`: `outbound|<port>|<subset>|<FQDN>`.
    pub outbound_cluster: Arc<str>,
    /// The inbound attempt span's name: `<FQDN>:<service port>/*`.
    pub inbound_operation: Arc<str>,
    /// The inbound attempt span's `upstream_cluster`: `inbound|<container port>||`.
    pub inbound_cluster: Arc<str>,
}

/// A Service's [`BackendNames`] by subset and dialled port (a handful per Service: a list).
#[derive(Debug, Default)]
pub struct SpanNames(pub Mutex<Vec<SpanNamesEntry>>);

/// One [`SpanNames`] entry: the backend's subset, the port dialled, the names.
pub type SpanNamesEntry = (Option<String>, u16, Arc<BackendNames>);

impl Clone for SpanNames {
    /// A copy of the model starts with an empty cache.
    fn clone(&self) -> Self {
        SpanNames::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target: TargetPort,
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether upstream traffic is HTTP/2 (`appProtocol: grpc`/`http2`/`h2c`, or a `grpc`/`http2` port name).
    pub fn is_http2(&self) -> bool {
        let proto = self.app_protocol.as_deref().or(self.name.as_deref()).unwrap_or("");
        let base = proto.split('-').next().unwrap_or("");
        matches!(base, "grpc" | "http2" | "h2c" | "kubernetes.io/h2c")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}
