//! The value parsers behind every service's flags and variables, and the error for a setting
//! refused after parsing. A parser's error is the reason clap prints after the flag and the
//! variable (`invalid value '200' for '--fault-abort-percent <FAULT_ABORT_PERCENT>': must be
//! from 0 to 100`), so the wording is what an operator reads.

use std::{fmt, net::IpAddr, ops::RangeInclusive, str::FromStr, time::Duration};

/// Defined in telemetry, which reads the pod identity and `OTEL_*` variables itself and cannot
/// depend on this crate; re-exported here for the services' settings.
pub use telemetry::var::{ConfigError, optional};

/// A number (or any `FromStr`) within `range`.
pub fn number_in<T>(range: RangeInclusive<T>) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
{
    move |raw| {
        let v: T = raw
            .trim()
            .parse()
            .map_err(|_| format!("expected a number from {} to {}", range.start(), range.end()))?;
        if !range.contains(&v) {
            return Err(format!("must be from {} to {}", range.start(), range.end()));
        }
        Ok(v)
    }
}

/// A port number; 0 lets the kernel choose.
pub fn port(raw: &str) -> Result<u16, String> {
    number_in(0..=u16::MAX)(raw)
}

/// An IP address to bind on.
pub fn ip_addr(raw: &str) -> Result<IpAddr, String> {
    raw.parse()
        .map_err(|_| "expected an IP address such as 0.0.0.0 or 127.0.0.1".to_owned())
}

/// Whole seconds, from 0 to `max`.
pub fn seconds_up_to(max: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let secs = number_in(0..=max);
    move |raw| secs(raw).map(Duration::from_secs)
}

/// Milliseconds within `range`.
pub fn millis_in(
    range: RangeInclusive<u64>,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let millis = number_in(range);
    move |raw| millis(raw).map(Duration::from_millis)
}

/// A duration ([`parse_duration`]) of at most `max`, written by `show` in the message.
pub fn duration_at_most(
    max: Duration,
    show: fn(Duration) -> String,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |raw| {
        let d = parse_duration(raw)?;
        if d > max {
            return Err(format!("must be at most {}", show(max)));
        }
        Ok(d)
    }
}

/// A duration such as `5s`, `250ms` or `1m`, greater than zero; a bare number means seconds.
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
    fn numbers_say_the_range() {
        let percent = number_in(0.0f64..=100.0);
        assert_eq!(percent(" 12.5 "), Ok(12.5));
        assert_eq!(percent("200").unwrap_err(), "must be from 0 to 100");
        assert_eq!(percent("lots").unwrap_err(), "expected a number from 0 to 100");
        assert_eq!(port("80000").unwrap_err(), "expected a number from 0 to 65535");
        assert_eq!(
            seconds_up_to(3600)("-1").unwrap_err(),
            "expected a number from 0 to 3600"
        );
        assert_eq!(millis_in(1..=600_000)("0").unwrap_err(), "must be from 1 to 600000");
        let at_most = duration_at_most(Duration::from_secs(3600), |d| format!("{}s", d.as_secs()));
        assert_eq!(at_most("2h").unwrap_err(), "must be at most 3600s");
        assert!(ip_addr("localhost").is_err());
    }
}
