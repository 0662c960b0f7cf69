//! Durations as the configuration language writes them: `250ms`, `30s`,
//! `5m`, `1h`, `7d`, and sums such as `1m30s`.
//!
//! A word of the configuration file, not of any one part of it: `config`
//! reads `keep_sent`, `stall_after` and `schedule = "every …"` with it, and
//! each endpoint kind's settings (`connectors`) deserialize theirs with
//! `duration_opt`. It is a leaf (it imports nothing of sluice) because
//! `config` imports `connectors` to read endpoint settings: were it in
//! `config`, the two would import each other.

use std::time::Duration;

/// Parses durations such as `250ms`, `30s`, `5m`, `1h`, `7d`, `1m30s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
    }
    Some(total)
}

/// Serde helper for optional duration strings in endpoint settings.
pub(crate) mod duration_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => super::parse_duration(&s).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "'{s}' is not a duration (use e.g. 250ms, 30s, 5m, 1h)"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["", "s", "10", "10x", "ms10", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
