use std::fmt;

use manifests::{LoadError, Object, Source};

/// One manifest field the model cannot use, named the way `manifests` names load errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
    /// e.g. `spec.rules[0].matches[0].headers[0].value`.
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub(crate) fn new(o: &Object, field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            source: o.source.clone(),
            object: o.id(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: field `{}`: {}",
            self.source, self.object, self.field, self.message
        )
    }
}

/// Why the routing model could not be built. Startup stops on either.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A file could not be read or parsed (names the file, document, kind/name and field).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Every field that parsed but cannot be routed with, all at once so one run shows them all.
    #[error("{}", list(.0))]
    Invalid(Vec<Invalid>),
}

fn list(all: &[Invalid]) -> String {
    let mut s = format!("{} invalid manifest field(s):", all.len());
    for i in all {
        s.push_str("\n  ");
        s.push_str(&i.to_string());
    }
    s
}
