//! Durations as the Gateway API (`5s`, `1h30m`, `500ms`) and Istio (`5s`, `0.5s`) write them.

use std::time::Duration;

/// Parses a sequence of `<number><unit>` (units `h`, `m`, `s`, `ms`, `us`, `ns`; decimals allowed).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut secs = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("`{t}` is not a duration (expected e.g. 5s, 500ms, 1m30s)"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            "" => return Err(format!("`{t}` lacks a unit (e.g. 5s)")),
            u => return Err(format!("`{t}`: unknown unit `{u}`")),
        };
        secs += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{t}`: {e}"))
}

/// [`parse`], refusing zero (for limits that must bound something).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(d)
}

/// `5s`, `1.5s`, `250ms`: how the summary prints durations.
pub fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_and_istio_forms_parse() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_say_why() {
        assert!(parse("5").unwrap_err().contains("lacks a unit"));
        assert!(parse("5x").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn show_round_trips_whole_and_sub_second_values() {
        assert_eq!(show(Duration::from_secs(10)), "10s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
    }
}
