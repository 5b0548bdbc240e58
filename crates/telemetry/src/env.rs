//! Typed reads of environment variables. A bad value stops startup with a
//! message that names the variable, the value and what was expected.

use std::{fmt, str::FromStr, time::Duration};

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

pub fn string(name: &str, default: &str) -> Result<String, ConfigError> {
    Ok(optional(name)?.unwrap_or_else(|| default.to_owned()))
}

/// A number (or any `FromStr`) within `range`, `default` when unset.
pub fn parse<T>(name: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(raw) = optional(name)? else { return Ok(default) };
    let v: T = raw.trim().parse().map_err(|_| {
        ConfigError::new(
            name,
            &raw,
            format!("expected a number from {} to {}", range.start(), range.end()),
        )
    })?;
    if !range.contains(&v) {
        return Err(ConfigError::new(
            name,
            &raw,
            format!("must be from {} to {}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

/// `BIND_ADDR`: the address servers listen on.
pub fn bind_addr() -> Result<std::net::IpAddr, ConfigError> {
    let raw = string("BIND_ADDR", "0.0.0.0")?;
    raw.parse()
        .map_err(|_| ConfigError::new("BIND_ADDR", &raw, "expected an IP address such as 0.0.0.0 or 127.0.0.1"))
}

/// A port number; 0 lets the kernel choose.
pub fn port(name: &str, default: u16) -> Result<u16, ConfigError> {
    parse(name, default, 0..=u16::MAX)
}

/// Whole seconds.
pub fn seconds(name: &str, default: u64, max: u64) -> Result<Duration, ConfigError> {
    parse(name, default, 0..=max).map(Duration::from_secs)
}

/// A duration such as `5s`, `250ms` or `1m`; a bare number means seconds.
pub fn duration(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(raw) = optional(name)? else { return Ok(default) };
    parse_duration(&raw).map_err(|reason| ConfigError::new(name, &raw, reason))
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let d = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(raw).map_err(|e| format!("expected a duration such as 5s, 250ms or 1m ({e})"))?
        }
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1s 500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("0ms").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn error_names_the_variable() {
        let e = ConfigError::new("FAULT_ABORT_PERCENT", "200", "must be from 0 to 100");
        assert_eq!(
            e.to_string(),
            "invalid FAULT_ABORT_PERCENT=\"200\": must be from 0 to 100"
        );
    }
}
