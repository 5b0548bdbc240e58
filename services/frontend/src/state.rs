//! What every handler shares.

use std::sync::Arc;

use axum::http::HeaderMap;
use telemetry::{Identity, propagation};
use tokio_util::sync::CancellationToken;

use crate::{backends::Backends, mesh::MeshHistory, templates::Templates, views::ServedByView};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// gRPC to product and order in the server ([`crate::backends::GrpcBackends`]); a fake in
    /// the router's tests.
    pub backends: Arc<dyn Backends>,
    pub templates: Templates,
    pub mesh: Arc<MeshHistory>,
    /// This pod, for the pages' footer.
    pub frontend: ServedByView,
    /// Cancelled once shutdown starts: `/readyz` turns 503 so the endpoint
    /// is taken out of rotation while in-flight requests finish.
    pub draining: CancellationToken,
    /// `MAX_BODY_BYTES`: the router's body limit, named in the 413 it causes.
    pub max_body_bytes: usize,
}

impl AppState {
    pub fn new(
        backends: Arc<dyn Backends>,
        templates: Templates,
        mesh: Arc<MeshHistory>,
        identity: &Identity,
        draining: CancellationToken,
        max_body_bytes: usize,
    ) -> Self {
        let frontend = ServedByView {
            service: identity.service.clone(),
            version: identity.version.clone(),
            pod: identity.pod.clone(),
            node: identity.node.clone(),
            zone: identity.zone.clone(),
            namespace: identity.namespace.clone(),
        };
        Self(Arc::new(Inner {
            backends,
            templates,
            mesh,
            frontend,
            draining,
            max_body_bytes,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The request id the telemetry middleware took or made for this request.
pub fn request_id(headers: &HeaderMap) -> String {
    propagation::request_id(headers).unwrap_or_default().to_owned()
}
