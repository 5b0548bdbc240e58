//! The suite's Kubernetes, Istio and Gateway API manifests as typed Rust values, and the
//! cross-object checks that no schema validator can do (subsets, labels, backend refs, weights, ...).
//!
//! The loader is shared with `localmesh`, which applies the same routing on one machine, so the
//! model keeps the YAML's own field names (camelCase in YAML, snake_case in Rust) and only
//! interprets what a consumer asks for. Kinds the model does not know are kept as JSON values.

pub mod check;
mod error;
pub mod load;
pub mod model;

pub use check::{Finding, check_all};
pub use error::LoadError;
pub use load::{MESH_CONFIG_FILE, Render, load_files, load_paths, load_repo, load_str};
pub use model::{Manifests, Object, Resource, Source};
