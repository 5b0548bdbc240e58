//! localmesh: the Istio ingress gateway and sidecars played on one machine, from the repo's own
//! `gateway/` and `manifests/` (docs/architecture.md, "localmesh").
//!
//! This crate's first layer is the routing model: [`load`] reads the YAML once (through the shared
//! `manifests` loader), [`build()`] validates it and compiles it into a [`Mesh`], and [`select`] picks
//! routes, backends and endpoints with pure functions, so every routing decision is testable without
//! sockets. What the model does not emulate is listed in [`Mesh::not_emulated`].

pub mod admin;
pub mod build;
pub mod cli;
pub mod console;
pub mod duration;
mod error;
pub mod gateway_client;
pub mod grpc;
pub mod identity;
pub mod logs;
pub mod model;
pub mod outlier;
pub mod pods;
pub mod proxy;
pub mod push;
pub mod select;
pub mod size;
pub mod stats;
mod summary;
pub mod tap;
pub mod trace;
pub mod unsupported;
pub mod up;
pub mod verify;
pub mod viz;

use std::path::Path;

pub use build::{Options, build};
pub use error::{Invalid, MeshError};
pub use model::Mesh;
pub use outlier::{Outcome, Outlier};
pub use select::Request;
pub use unsupported::NotEmulated;

/// Loads `gateway/` and `manifests/{base,istio}` under `root` as files (no kustomize rendering, so
/// the result never depends on a kubectl being installed) and compiles them. Certificates are
/// looked up where `gateway/certs.sh` writes them: `<root>/gateway/certs`.
pub fn load(root: &Path) -> Result<Mesh, MeshError> {
    let manifests = manifests::load_repo(root, &manifests::Render::Never)?;
    build(
        &manifests,
        &Options {
            cert_dir: root.join("gateway/certs"),
        },
    )
}

/// Locks `m`, going on after a panic elsewhere poisoned it: every value guarded here stays
/// consistent between statements (counters, maps), so the data is still good.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The one formatter for error chains (tonic's transport error alone says only "transport
/// error", hyper's client error only "client error").
pub use telemetry::error_chain;
