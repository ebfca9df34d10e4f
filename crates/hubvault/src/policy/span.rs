//! Calendar spans written like restic's `--keep-within`: `30d`, `12h`, `1y2m`, `1y2m3d4h`.
//!
//! Units are `y` (years), `m` (**months**, as in restic, not minutes), `d` (days) and `h` (hours),
//! each at most once, largest first. A span is calendar arithmetic, not a fixed number of seconds:
//! going back one month from 31 March lands on the last day of February (chrono clamps; Go's
//! `AddDate`, which restic uses, would normalise to 3 March — the only known difference).

use std::fmt;

use chrono::{DateTime, Days, Months, TimeDelta, Utc};
use serde::{Deserialize, Deserializer};

/// A calendar span: years, months, days, hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    pub const fn hours(hours: u32) -> Span {
        Span {
            years: 0,
            months: 0,
            days: 0,
            hours,
        }
    }

    pub const fn days(days: u32) -> Span {
        Span {
            years: 0,
            months: 0,
            days,
            hours: 0,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// Parse `1y2m3d4h` (any non-empty subset, in that order).
    pub fn parse(text: &str) -> Result<Span, String> {
        let err = |why: &str| {
            format!(
                "invalid span {text:?}: {why}; write e.g. \"30d\", \"12h\" or \"1y2m\" (y years, m months, d days, h hours)"
            )
        };
        let mut span = Span::default();
        let mut last_rank = 0;
        for (n, unit) in number_units(text).map_err(err)? {
            let (rank, slot) = match unit {
                'y' => (1, &mut span.years),
                'm' => (2, &mut span.months),
                'd' => (3, &mut span.days),
                'h' => (4, &mut span.hours),
                _ => return Err(err(&format!("unknown unit {unit:?}"))),
            };
            if rank <= last_rank {
                return Err(err("each unit at most once, largest first"));
            }
            last_rank = rank;
            *slot = u32::try_from(n).map_err(|_| err("number too large"))?;
        }
        Ok(span)
    }

    /// `t` minus this span, or `None` if that is before the representable range.
    pub fn before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        t.checked_sub_months(Months::new(
            self.years.checked_mul(12)?.checked_add(self.months)?,
        ))?
        .checked_sub_days(Days::new(u64::from(self.days)))?
        .checked_sub_signed(TimeDelta::hours(i64::from(self.hours)))
    }

    /// `t` plus this span, or `None` if that is past the representable range.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        t.checked_add_months(Months::new(
            self.years.checked_mul(12)?.checked_add(self.months)?,
        ))?
        .checked_add_days(Days::new(u64::from(self.days)))?
        .checked_add_signed(TimeDelta::hours(i64::from(self.hours)))
    }
}

/// Split `1y2m` into `[(1, 'y'), (2, 'm')]`: numbers, each followed by one unit character. The
/// caller gives the units their meaning (a [`Span`]'s `m` is months, an
/// [`Interval`](super::Interval)'s minutes).
pub(crate) fn number_units(text: &str) -> Result<Vec<(u64, char)>, &'static str> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty");
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or("a number needs a unit")?;
        if digits == 0 {
            return Err("expected a number");
        }
        let (number, after) = rest.split_at(digits);
        let n: u64 = number.parse().map_err(|_| "number too large")?;
        let mut after = after.chars();
        out.push((n, after.next().unwrap_or(' ')));
        rest = after.as_str();
    }
    Ok(out)
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// For fields where a zero span would be dangerous (`keep-within = "0d"` would keep nothing,
/// `orphan-grace = "0h"` would delete backups in flight): reject it while parsing.
pub(crate) fn non_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
    let span = Span::deserialize(d)?;
    if span.is_zero() {
        return Err(serde::de::Error::custom(
            "a zero span is not allowed here; leave the key out to disable it, or give a length like \"30d\"",
        ));
    }
    Ok(span)
}

/// [`non_zero`] for optional fields.
pub(crate) fn non_zero_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Span>, D::Error> {
    non_zero(d).map(Some)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for (text, span) in [
            ("30d", Span::days(30)),
            ("12h", Span::hours(12)),
            (
                "1y2m",
                Span {
                    years: 1,
                    months: 2,
                    days: 0,
                    hours: 0,
                },
            ),
            (
                "1y2m3d4h",
                Span {
                    years: 1,
                    months: 2,
                    days: 3,
                    hours: 4,
                },
            ),
        ] {
            assert_eq!(Span::parse(text).unwrap(), span, "{text}");
            assert_eq!(span.to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_spans_with_an_example() {
        for bad in ["", "30", "d", "3w", "1d2y", "1h1h", "-3d", "99999999999d"] {
            let err = Span::parse(bad).unwrap_err();
            assert!(err.contains("\"30d\""), "{bad}: {err}");
        }
    }

    #[test]
    fn calendar_arithmetic() {
        let t = utc("2026-03-31T10:00:00Z");
        assert_eq!(
            Span::parse("1m").unwrap().before(t),
            Some(utc("2026-02-28T10:00:00Z"))
        );
        assert_eq!(
            Span::parse("1y").unwrap().before(t),
            Some(utc("2025-03-31T10:00:00Z"))
        );
        assert_eq!(
            Span::parse("1d12h").unwrap().before(t),
            Some(utc("2026-03-29T22:00:00Z"))
        );
        assert_eq!(Span::hours(24).after(t), Some(utc("2026-04-01T10:00:00Z")));
    }
}
