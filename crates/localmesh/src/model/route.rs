//! What a matched route does: forward to weighted backends, or redirect.

use std::fmt;

use super::Key;

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    Forward(Vec<Backend>),
    Redirect(Redirect),
}

/// A `RequestRedirect` filter. Unset parts keep the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub status: u16,
}

/// A weighted destination: a Service (and for VirtualServices, a DestinationRule subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub service: Key,
    /// The Service port; `None` when the Service has exactly one port.
    pub port: Option<u16>,
    pub subset: Option<String>,
    pub weight: u32,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(s) = &self.subset {
            write!(f, " subset {s}")?;
        }
        Ok(())
    }
}
