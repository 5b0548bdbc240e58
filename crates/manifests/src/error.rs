use std::path::PathBuf;

/// Why manifests could not be loaded. Every variant names where: the file (or rendered
/// kustomization), the document, and for typed decoding the kind/name and the failing field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: not valid YAML: {message}")]
    Yaml { location: String, message: String },
    #[error("{location}: {kind}/{name}: field `{field}`: {message}")]
    Field {
        location: String,
        kind: String,
        name: String,
        field: String,
        message: String,
    },
    #[error("{location}: {message}")]
    Header { location: String, message: String },
    #[error("`kubectl kustomize {dir}` failed: {message}")]
    Render { dir: PathBuf, message: String },
    #[error("{path}: {message}")]
    Missing { path: PathBuf, message: String },
}
