//! When a policy's backup runs: a 5-field cron expression read in an IANA time zone.
//!
//! Parsed with `croner` (the `cron` crate wants 6 fields and skips runs in a DST gap) and
//! `chrono-tz`. [`Schedule::next_fire`] is a pure function of `now`.
//!
//! Daylight saving time, documented because it decides whether a nightly backup happens:
//! - **Gap** (clocks jump forward, e.g. 02:00 → 03:00 in Europe/Berlin): a run whose local time does
//!   not exist that day is **shifted forward** to the first real instant after the gap (02:30 runs
//!   at 03:00), never skipped.
//! - **Overlap** (clocks fall back, 03:00 → 02:00): a fixed-time run (`30 2 * * *`) runs **once**, at
//!   the earlier of the two instants. Interval expressions (`*/15 * * * *`) run on both passes.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer};

/// The `[schedule]` table of a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Schedule {
    /// Minute, hour, day of month, month, day of week (`0 2 * * *`: 02:00 every day); a
    /// nickname (`@daily`, `@hourly`, `@weekly`…); or 6 fields with seconds first
    /// (`*/20 * * * * *`), which tests use so a real process need not wait minutes.
    pub cron: CronExpr,
    /// IANA zone the expression is read in (`Europe/Berlin`); default UTC.
    #[serde(default)]
    pub time_zone: TimeZone,
}

impl Schedule {
    /// Build from text, with the same checks as a policy file.
    pub fn new(cron: &str, time_zone: &str) -> Result<Schedule, String> {
        Ok(Schedule {
            cron: CronExpr::parse(cron)?,
            time_zone: TimeZone::parse(time_zone)?,
        })
    }

    /// The first run strictly after `now`, in UTC. `None` only if the expression can never fire
    /// again (e.g. 30 February).
    pub fn next_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.time_zone.0);
        self.cron
            .cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// [`Schedule::next_fire`], guarded so it always moves forward (strictly after `t`, even
    /// if the expression answered `t` itself): loops over it always end.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self.next_fire(t)?;
        if next > t {
            return Some(next);
        }
        self.next_fire(t.checked_add_signed(chrono::TimeDelta::seconds(1))?)
    }
}

/// A validated 5-field cron expression (the text is kept for display).
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl CronExpr {
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(text).map_err(|e| {
            format!("invalid cron expression {text:?}: {e}; write 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" (or a nickname like \"@daily\", or 6 fields with seconds first)")
        })?;
        Ok(CronExpr {
            text: text.trim().to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CronExpr, D::Error> {
        CronExpr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A validated IANA time zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub Tz);

impl Default for TimeZone {
    fn default() -> TimeZone {
        TimeZone(Tz::UTC)
    }
}

impl TimeZone {
    pub fn parse(name: &str) -> Result<TimeZone, String> {
        name.parse::<Tz>().map(TimeZone).map_err(|_| {
            format!(
                "unknown time zone {name:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""
            )
        })
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
        TimeZone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
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
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_fire_table_including_dst() {
        // (cron, zone, now, the next two runs)
        let cases = [
            // plain nightly run in UTC
            (
                "0 2 * * *",
                "UTC",
                "2026-11-26T10:00:00Z",
                ["2026-11-27T02:00:00Z", "2026-11-28T02:00:00Z"],
            ),
            // Berlin winter time is UTC+1
            (
                "0 2 * * *",
                "Europe/Berlin",
                "2026-11-26T10:00:00Z",
                ["2026-11-27T01:00:00Z", "2026-11-28T01:00:00Z"],
            ),
            // DST gap: 2027-03-28 02:30 does not exist in Berlin; shifted to 03:00 CEST, not skipped
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2027-03-27T11:00:00Z",
                ["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
            ),
            // DST gap in New York (2027-03-14 02:00 → 03:00): 02:00 runs at 03:00 EDT
            (
                "0 2 * * *",
                "America/New_York",
                "2027-03-13T17:00:00Z",
                ["2027-03-14T07:00:00Z", "2027-03-15T06:00:00Z"],
            ),
            // DST overlap: 2026-10-25 02:30 happens twice in Berlin; runs once, at the first (CEST)
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T10:00:00Z",
                ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            // weekdays only: Friday 2026-11-27 → Monday
            (
                "0 3 * * 1-5",
                "UTC",
                "2026-11-27T04:00:00Z",
                ["2026-11-30T03:00:00Z", "2026-12-01T03:00:00Z"],
            ),
            // every 15 minutes; strictly after `now`
            (
                "*/15 * * * *",
                "UTC",
                "2026-11-26T10:15:00Z",
                ["2026-11-26T10:30:00Z", "2026-11-26T10:45:00Z"],
            ),
            // hourly at :05 in a half-hour zone
            (
                "5 * * * *",
                "Asia/Kolkata",
                "2026-11-26T10:00:00Z",
                ["2026-11-26T10:35:00Z", "2026-11-26T11:35:00Z"],
            ),
        ];
        for (cron, zone, now, want) in cases {
            let s = Schedule::new(cron, zone).unwrap();
            let first = s.next_fire(utc(now)).unwrap();
            let second = s.next_fire(first).unwrap();
            assert_eq!(
                [first, second],
                want.map(utc),
                "{cron} in {zone} from {now}"
            );
        }
    }

    #[test]
    fn rejects_non_five_field_expressions_and_bad_zones() {
        for bad in ["0 2 * *", "61 2 * * *", "0 2 * * * 2027", "", "every night"] {
            let err = Schedule::new(bad, "UTC").unwrap_err();
            assert!(err.contains("5 fields"), "{bad}: {err}");
        }
        let err = Schedule::new("0 2 * * *", "Europe/Berlinn").unwrap_err();
        assert!(
            err.contains("Europe/Berlinn") && err.contains("IANA"),
            "{err}"
        );
    }

    #[test]
    fn never_firing_expression_has_no_next_run() {
        let s = Schedule::new("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(s.next_fire(utc("2026-01-01T00:00:00Z")), None);
    }
}
