//! Pod identity, read once from the Downward-API style environment.

use crate::var::{self, ConfigError};

/// Who is answering: copied into every `ServedBy` and the `x-served-by` /
/// `x-version` response metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub node: String,
    pub zone: String,
    pub namespace: String,
}

impl Identity {
    /// `SERVICE_VERSION`, `POD_NAME`, `POD_NAMESPACE`, `NODE_NAME` and `ZONE`,
    /// with the defaults of docs/architecture.md, "Ports and pod identity" (host name, `default`, host name, empty).
    pub fn from_env(service: &str) -> Result<Self, ConfigError> {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let version = var::string("SERVICE_VERSION", "v1")?;
        validate_version(&version)?;
        Ok(Self {
            service: service.to_owned(),
            version,
            pod: var::string("POD_NAME", &host)?,
            node: var::string("NODE_NAME", &host)?,
            zone: var::string("ZONE", "")?,
            namespace: var::string("POD_NAMESPACE", "default")?,
        })
    }

    /// A fixed identity for in-process servers in tests and tools.
    pub fn for_test(service: &str, version: &str, pod: &str) -> Self {
        Self {
            service: service.to_owned(),
            version: version.to_owned(),
            pod: pod.to_owned(),
            node: "test-node".to_owned(),
            zone: String::new(),
            namespace: "default".to_owned(),
        }
    }
}

/// `SERVICE_VERSION` as Istio's `version` label wants it; the error names the variable.
pub fn validate_version(v: &str) -> Result<(), ConfigError> {
    let ok = v.len() <= 63
        && v.starts_with('v')
        && v.len() > 1
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "SERVICE_VERSION",
            v,
            "expected a version label such as v1 or v2 (a 'v', then letters, digits, '.' or '-', at most 63 characters)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels() {
        assert!(validate_version("v1").is_ok());
        assert!(validate_version("v2.1-canary").is_ok());
        for bad in ["", "v", "1", "v 1", "v1/x"] {
            let e = validate_version(bad).unwrap_err().to_string();
            assert!(e.contains("SERVICE_VERSION"), "{e}");
        }
    }
}
