//! When a grant ends, as people type it: `--for 8h` or `--until 2026-12-31T18:00:00Z`.

use super::{ParseError, Timestamp};

/// Parses a duration such as `90s`, `30m`, `8h`, `7d` or `1d12h` (units s, m, h, d).
pub fn parse_duration(raw: &str) -> Result<chrono::Duration, ParseError> {
    let bad = || {
        ParseError::new(format!(
            "invalid duration {raw:?}: use a number and a unit, e.g. 30m, 8h, 7d or 1d12h"
        ))
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    chrono::Duration::try_seconds(total).ok_or_else(bad)
}

/// The end of a grant from `--for` (relative to `now`) or `--until` (RFC 3339); at most one.
pub fn grant_end(
    for_: Option<&str>,
    until: Option<&str>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ParseError> {
    match (for_, until) {
        (Some(_), Some(_)) => Err(ParseError::new("give either --for or --until, not both")),
        (Some(d), None) => Ok(Some(now + parse_duration(d)?)),
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t.trim())
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                ParseError::new(format!(
                    "invalid time {t:?}: use RFC 3339, e.g. 2026-12-31T18:00:00Z"
                ))
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_refuse() {
        assert_eq!(parse_duration("8h").unwrap(), chrono::Duration::hours(8));
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            chrono::Duration::hours(36)
        );
        assert_eq!(
            parse_duration("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
        for bad in ["", "8", "h", "8x", "0m", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ends_come_from_one_flag() {
        let now = chrono::Utc::now();
        assert_eq!(grant_end(None, None, now).unwrap(), None);
        assert_eq!(
            grant_end(Some("1h"), None, now).unwrap(),
            Some(now + chrono::Duration::hours(1))
        );
        assert!(grant_end(Some("1h"), Some("2030-01-01T00:00:00Z"), now).is_err());
        assert!(grant_end(None, Some("tomorrow"), now).is_err());
    }
}
