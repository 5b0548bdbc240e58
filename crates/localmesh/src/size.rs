//! Sizes as the flags take them: a number of bytes, or a number with `KiB`, `MiB` or `GiB` (also
//! written `Ki`/`K`/`KB`, `Mi`/`M`/`MB`, `Gi`/`G`/`GB`; all binary).

/// Parses a size, e.g. `1MiB`, `512KiB` or `1048576`.
pub fn parse(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1MiB or 1048576"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "Ki" | "K" | "KB" => 10,
        "MiB" | "Mi" | "M" | "MB" => 20,
        "GiB" | "Gi" | "G" | "GB" => 30,
        other => return Err(format!("unknown size unit {other:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s} is too large"))
}

/// [`parse`], at least 1 MiB.
pub fn parse_at_least_1mib(s: &str) -> Result<usize, String> {
    let bytes = parse(s)?;
    if bytes < 1 << 20 {
        return Err(format!("{s} is below the minimum of 1MiB"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_in_bytes_or_binary_units() {
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("32KiB"), Ok(32 << 10));
        assert_eq!(parse("32Ki"), Ok(32 << 10));
        assert_eq!(parse("1MiB"), Ok(1 << 20));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("1TB").unwrap_err().contains("KiB, MiB or GiB"));
        assert!(parse("").is_err());
        assert!(parse_at_least_1mib("512KiB").unwrap_err().contains("minimum of 1MiB"));
    }
}
