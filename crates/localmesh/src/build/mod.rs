//! Manifests → [`Mesh`]: validates every field the model uses and collects all errors at once, each
//! naming file, kind/name and field. Nothing here touches the network or the filesystem.

mod core;
mod gateway;
mod matches;
mod mesh_config;
mod policy;
mod telemetry;
mod virtual_service;

use std::path::PathBuf;

use manifests::{Manifests, Object};
use serde::de::DeserializeOwned;

use crate::error::{Invalid, MeshError};
use crate::model::{Key, Mesh, Origin};
use crate::unsupported::{self, NotEmulated};

pub use mesh_config::KIND as MESH_CONFIG_KIND;

/// Inputs that are not in the YAML.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the files standing in for TLS Secrets live (`gateway/certs.sh` writes `tls.crt` and
    /// `tls.key` there for the Secret `tcex-cert`). Every certificateRef maps to these two files.
    pub cert_dir: PathBuf,
}

/// Compiles loaded manifests into the routing model.
pub fn build(m: &Manifests, options: &Options) -> Result<Mesh, MeshError> {
    let mut cx = Ctx::new(m);
    let mut mesh = Mesh {
        workloads: core::workloads(&mut cx),
        default_retry: mesh_config::default_retry(&mut cx),
        ..Mesh::default()
    };
    mesh.services = core::services(&mut cx, &mesh.workloads);
    mesh.destination_rules = policy::destination_rules(&mut cx, &mesh.services);
    mesh.virtual_services = virtual_service::virtual_services(&mut cx, &mesh);
    mesh.listeners = gateway::listeners(&mut cx, &mesh, options);
    mesh.telemetry = telemetry::telemetry(&mut cx);
    mesh.access_log_default = mesh_config::access_log(&mut cx);
    if !cx.errors.is_empty() {
        return Err(MeshError::Invalid(cx.errors));
    }
    mesh.not_emulated = unsupported::scan(m);
    mesh.not_emulated.extend(cx.notes);
    Ok(mesh)
}

/// Build state: the input and what went wrong or is not emulated so far.
pub(crate) struct Ctx<'m> {
    pub m: &'m Manifests,
    pub errors: Vec<Invalid>,
    pub notes: Vec<NotEmulated>,
}

impl<'m> Ctx<'m> {
    fn new(m: &'m Manifests) -> Self {
        Ctx {
            m,
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn err(&mut self, o: &Object, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Invalid::new(o, field, message));
    }

    pub fn note(&mut self, o: &Object, field: impl Into<String>, message: impl Into<String>) {
        self.notes.push(NotEmulated::new(o, field, message));
    }

    /// Decodes a part the `manifests` crate keeps as raw JSON, naming the failing field.
    pub fn decode<T: DeserializeOwned>(&mut self, o: &Object, field: &str, v: &serde_json::Value) -> Option<T> {
        match serde_path_to_error::deserialize(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{field}.{path}")
                };
                self.err(o, full, e.into_inner().to_string());
                None
            }
        }
    }

    /// Parses a duration field; `0s` means "none" where the APIs say so, which callers decide.
    pub fn duration(&mut self, o: &Object, field: &str, text: &str) -> Option<std::time::Duration> {
        crate::duration::parse(text).map_err(|e| self.err(o, field, e)).ok()
    }

    pub fn port(&mut self, o: &Object, field: &str, n: i64) -> Option<u16> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.err(o, field, format!("{n} is not a port (1-65535)"));
                None
            }
        }
    }
}

pub(crate) fn origin(o: &Object) -> Origin {
    Origin {
        source: o.source.clone(),
        object: o.id(),
    }
}

pub(crate) fn key(o: &Object) -> Key {
    Key::new(o.namespace(), o.name())
}

/// Resolves an Istio host (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`) written in
/// namespace `ns` to a Service key. Other names (external hosts) give `None`.
pub(crate) fn resolve_host(host: &str, ns: &str) -> Option<Key> {
    let host = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [name] => Some(Key::new(ns, *name)),
        [name, namespace] => Some(Key::new(*namespace, *name)),
        _ => None,
    }
}
