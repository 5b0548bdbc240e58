//! What telemetry needs to read its own variables (the pod identity, `OTEL_*`): the error that
//! names a bad variable, and the read where an empty value means unset. The services' settings
//! are parsed in service-runtime, which re-exports both: it depends on this crate, so they are
//! defined here.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(variable: &str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}={:?}: {}", self.variable, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The variable's value when set and not empty.
pub fn optional(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(ConfigError::new(name, &v.to_string_lossy(), "not valid UTF-8")),
    }
}

pub(crate) fn string(name: &str, default: &str) -> Result<String, ConfigError> {
    Ok(optional(name)?.unwrap_or_else(|| default.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_the_variable() {
        let e = ConfigError::new("FAULT_ABORT_PERCENT", "200", "must be from 0 to 100");
        assert_eq!(
            e.to_string(),
            "invalid FAULT_ABORT_PERCENT=\"200\": must be from 0 to 100"
        );
    }
}
