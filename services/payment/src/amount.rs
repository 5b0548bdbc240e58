//! Amounts as decimal strings ("19.99"), held as integer micros (10^-6) so
//! nothing is rounded: the same representation the order service stores.

/// Up to 10^12 units: far above any test order, far below i64 overflow.
pub const MAX_MICROS: i64 = 1_000_000_000_000 * 1_000_000;

/// `"19.99"` → 19_990_000. Positive, at most 6 decimal places.
pub fn parse_micros(raw: &str) -> Result<i64, String> {
    const HINT: &str = "expected a positive decimal string such as \"19.99\" (at most 6 decimal places)";
    let (units, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (raw.contains('.') && frac.is_empty())
    {
        return Err(HINT.into());
    }
    if frac.len() > 6 {
        return Err(format!("has {} decimal places; {HINT}", frac.len()));
    }
    let units: i64 = units.parse().map_err(|_| format!("is too large; {HINT}"))?;
    let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| HINT.to_owned())?;
    let micros = units
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(frac_micros))
        .filter(|m| *m <= MAX_MICROS)
        .ok_or_else(|| format!("is too large; {HINT}"))?;
    if micros == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(micros)
}

/// 19_990_000 → `"19.99"`, 349_000_000 → `"349.00"`, 1_500 → `"0.0015"`:
/// two decimals at least, more only when they carry value.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (units, frac) = (m / 1_000_000, m % 1_000_000);
    let mut frac = format!("{frac:06}");
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{units}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(parse_micros("19.99"), Ok(19_990_000));
        assert_eq!(parse_micros("19.990"), Ok(19_990_000));
        assert_eq!(parse_micros("349"), Ok(349_000_000));
        assert_eq!(parse_micros("0.000001"), Ok(1));
        for bad in [
            "",
            "0",
            "0.00",
            "-1",
            "1.",
            ".5",
            "1.2345678",
            "1e3",
            "1,00",
            " 1",
            "NaN",
            "99999999999999999999",
        ] {
            assert!(parse_micros(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for (m, s) in [
            (19_990_000, "19.99"),
            (349_000_000, "349.00"),
            (1_500, "0.0015"),
            (1, "0.000001"),
        ] {
            assert_eq!(format_micros(m), s);
            assert_eq!(parse_micros(s), Ok(m));
        }
    }
}
