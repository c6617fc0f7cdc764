//! Durations as written in definitions: `500ms`, `90s`, `2h`, `7d`, `1h30m`.

use std::time::Duration;

/// Why a duration string was refused; the message is shown to the author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parse a duration: one or more `<number><unit>` groups, unit one of ms, s, m, h, d.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError("a duration cannot be empty".into()));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationError(format!(
                "`{text}` is not a duration: expected a number at `{rest}`"
            )));
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| DurationError(format!("`{text}`: the number is too large")))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" if rest.is_empty() => {
                return Err(DurationError(format!(
                    "`{text}` has no unit: write e.g. `{number}s`"
                )));
            }
            "" => {
                return Err(DurationError(format!(
                    "`{text}` is not a duration: expected a unit (ms, s, m, h, d) right after `{number}`"
                )));
            }
            other => {
                return Err(DurationError(format!(
                    "`{other}` is not a duration unit (use ms, s, m, h or d)"
                )));
            }
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(number.saturating_mul(millis_per_unit))
            .ok_or_else(|| DurationError(format!("`{text}` is too long")))?;
    }
    // A hundred years is plenty for a durable timer and keeps arithmetic on instants safe.
    const MAX_MILLIS: u128 = 100 * 365 * 86_400_000;
    if total > MAX_MILLIS {
        return Err(DurationError(format!("`{text}` is longer than 100 years")));
    }
    let millis =
        u64::try_from(total).map_err(|_| DurationError(format!("`{text}` is too long")))?;
    Ok(Duration::from_millis(millis))
}

/// Render a duration the way authors write them (`1h30m`, `250ms`).
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_groups() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert!(parse("").is_err());
        assert!(parse("10").unwrap_err().to_string().contains("no unit"));
        assert!(parse("5 weeks").is_err());
        assert!(
            parse("3w")
                .unwrap_err()
                .to_string()
                .contains("not a duration unit")
        );
        assert!(parse("99999999999999999999999999999999999999999d").is_err());
        assert!(parse("200y").is_err());
    }

    #[test]
    fn formats_back() {
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}
