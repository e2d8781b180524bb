//! Durations in configuration: `500ms`, `30s`, `5m`, `1h`.

/// Milliseconds in `text`, or why it is not a duration.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (write 500ms, 30s, 5m or 1h)");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_units() {
        assert_eq!(super::parse_ms("500ms"), Ok(500));
        assert_eq!(super::parse_ms("30s"), Ok(30_000));
        assert_eq!(super::parse_ms("5m"), Ok(300_000));
        assert_eq!(super::parse_ms("1h"), Ok(3_600_000));
        assert!(super::parse_ms("5").is_err());
        assert!(super::parse_ms("s").is_err());
        assert!(super::parse_ms("5 parsecs").is_err());
    }
}
