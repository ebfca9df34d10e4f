//! Short fixed lengths of time for the scheduler's settings: `jitter = "5m"`, `timeout = "2h"`.
//!
//! Unlike [`super::Span`] (calendar spans for retention, where `m` is months), an interval is a
//! number of seconds: units `h`, `m` (**minutes**), `s`, each at most once, largest first
//! (`1h30m`, `90s`). Keeping the two types apart keeps `m` unambiguous in each setting.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A length of time in whole seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(u64);

impl Interval {
    pub const fn secs(secs: u64) -> Interval {
        Interval(secs)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }

    /// Parse `1h30m`, `5m`, `90s` (any non-empty subset of h, m, s, in that order).
    pub fn parse(text: &str) -> Result<Interval, String> {
        let err = |why: &str| {
            format!(
                "invalid length {text:?}: {why}; write e.g. \"90s\", \"5m\" or \"1h30m\" (h hours, m minutes, s seconds)"
            )
        };
        let (mut total, mut last_rank) = (0u64, 0u8);
        for (n, unit) in super::span::number_units(text).map_err(err)? {
            let (rank, unit_secs) = match unit {
                'h' => (1, 3600),
                'm' => (2, 60),
                's' => (3, 1),
                other => return Err(err(&format!("unknown unit {other:?}"))),
            };
            if rank <= last_rank {
                return Err(err("each unit at most once, largest first"));
            }
            last_rank = rank;
            total = n
                .checked_mul(unit_secs)
                .and_then(|s| s.checked_add(total))
                .ok_or_else(|| err("number too large"))?;
        }
        Ok(Interval(total))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 % 3600 / 60, self.0 % 60);
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Interval, D::Error> {
        Interval::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, secs) in [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2h", 7200)] {
            let i = Interval::parse(text).unwrap();
            assert_eq!(i.as_secs(), secs, "{text}");
        }
        assert_eq!(Interval::secs(5400).to_string(), "1h30m");
        assert_eq!(Interval::secs(90).to_string(), "1m30s");
    }

    #[test]
    fn rejects_bad_lengths_with_an_example() {
        for bad in [
            "",
            "5",
            "m",
            "3d",
            "1s2m",
            "1m1m",
            "-3s",
            "99999999999999999999h",
        ] {
            let err = Interval::parse(bad).unwrap_err();
            assert!(err.contains("\"90s\""), "{bad}: {err}");
        }
    }
}
