//! Policies in words, for `hubvault policy check`: the schedule ("every day at 02:00, Europe/Berlin
//! time"), its next runs with the zone's abbreviation (so a DST change shows), and retention.
//! Pure functions of the policy and `now`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::retention::Rules;
use super::schedule::Schedule;

/// The schedule in words. Common shapes get a sentence; anything else is quoted.
pub fn schedule(s: &Schedule) -> String {
    let text = s.cron.as_str();
    let zone = s.time_zone.0.name();
    let when = nickname(text).map_or_else(|| fields(text), str::to_owned);
    format!("{when}, {zone} time")
}

fn nickname(text: &str) -> Option<&'static str> {
    Some(match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "every 1 January at 00:00",
        "@monthly" => "on the 1st of every month at 00:00",
        "@weekly" => "every Sunday at 00:00",
        "@daily" | "@midnight" => "every day at 00:00",
        "@hourly" => "every hour at :00",
        _ => return None,
    })
}

fn fields(text: &str) -> String {
    let f: Vec<&str> = text.split_whitespace().collect();
    let quoted = format!("on cron \"{text}\"");
    let [minute, hour, dom, month, dow] = f[..] else {
        return quoted;
    };
    let num = |s: &str| s.parse::<u32>().ok();
    let step = |s: &str| s.strip_prefix("*/").and_then(num);
    let every_day = dom == "*" && month == "*";
    if !every_day {
        return quoted;
    }
    let days = match dow {
        "*" => String::new(),
        "1-5" => " on Monday to Friday".to_owned(),
        "0,6" | "6,0" => " on Saturday and Sunday".to_owned(),
        d => match num(d).and_then(weekday) {
            Some(name) => format!(" on {name}s"),
            None => return quoted,
        },
    };
    let phrase = match (num(minute), step(minute), hour, num(hour), step(hour)) {
        (Some(m), _, _, Some(h), _) if days.is_empty() => format!("every day at {h:02}:{m:02}"),
        (Some(m), _, _, Some(h), _) => format!("at {h:02}:{m:02}"),
        (Some(m), _, "*", _, _) => format!("every hour at :{m:02}"),
        (Some(m), _, _, _, Some(n)) => format!("every {n} hours at :{m:02}"),
        (None, Some(n), "*", _, _) => format!("every {n} minutes"),
        (None, None, "*", _, _) if minute == "*" => "every minute".to_owned(),
        _ => return quoted,
    };
    format!("{phrase}{days}")
}

fn weekday(n: u32) -> Option<&'static str> {
    [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    .get(usize::try_from(n).ok()?)
    .copied()
}

/// One coming run, in the schedule's zone and in UTC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextRun {
    pub utc: DateTime<Utc>,
    /// `Sun 2027-03-28 03:00 CEST`
    pub local: String,
    /// Set when the zone's offset differs from the run before (a DST change in between).
    pub note: Option<String>,
}

/// The next `n` runs after `now`.
pub fn next_runs(s: &Schedule, now: DateTime<Utc>, n: usize) -> Vec<NextRun> {
    let tz = s.time_zone.0;
    let mut out: Vec<NextRun> = Vec::new();
    let mut t = now;
    let mut previous_abbrev: Option<String> = None;
    for _ in 0..n {
        let Some(next) = s.next_after(t) else {
            break;
        };
        let local = next.with_timezone(&tz);
        let abbrev = local.format("%Z").to_string();
        let note = previous_abbrev
            .as_ref()
            .filter(|p| **p != abbrev)
            .map(|p| format!("clocks change from {p} to {abbrev} before this run"));
        out.push(NextRun {
            utc: next,
            local: local.format("%a %Y-%m-%d %H:%M:%S %Z").to_string(),
            note,
        });
        previous_abbrev = Some(abbrev);
        t = next;
    }
    out
}

/// The retention rules in words.
pub fn retention(r: &Rules) -> String {
    if r.is_empty() {
        return "keeps every snapshot (no rule set)".to_owned();
    }
    let mut parts: Vec<String> = Vec::new();
    let count = |n: i64| {
        if n < 0 {
            "all".to_owned()
        } else {
            n.to_string()
        }
    };
    if let Some(n) = r.keep_last {
        parts.push(format!("the last {}", count(n)));
    }
    for (n, unit) in [
        (r.keep_hourly, "hours"),
        (r.keep_daily, "days"),
        (r.keep_weekly, "ISO weeks"),
        (r.keep_monthly, "months"),
        (r.keep_yearly, "years"),
    ] {
        if let Some(n) = n {
            parts.push(format!(
                "the newest of each of the last {} {unit}",
                count(n)
            ));
        }
    }
    if let Some(w) = r.keep_within {
        parts.push(format!("everything newer than {w}"));
    }
    let mut out = String::from("keeps ");
    let last = parts.len().saturating_sub(1);
    for (i, p) in parts.iter().enumerate() {
        let sep = match i {
            0 => "",
            i if i == last => " and ",
            _ => ", ",
        };
        let _ = write!(out, "{sep}{p}");
    }
    out.push_str(" (per hub, UTC buckets)");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn schedules_in_words() {
        for (cron, zone, words) in [
            (
                "0 2 * * *",
                "Europe/Berlin",
                "every day at 02:00, Europe/Berlin time",
            ),
            ("15 * * * *", "UTC", "every hour at :15, UTC time"),
            ("*/15 * * * *", "UTC", "every 15 minutes, UTC time"),
            (
                "0 3 * * 1-5",
                "UTC",
                "at 03:00 on Monday to Friday, UTC time",
            ),
            ("30 4 * * 0", "UTC", "at 04:30 on Sundays, UTC time"),
            ("@daily", "UTC", "every day at 00:00, UTC time"),
            ("0 0 1 * *", "UTC", "on cron \"0 0 1 * *\", UTC time"),
            (
                "*/20 * * * * *",
                "UTC",
                "on cron \"*/20 * * * * *\", UTC time",
            ),
        ] {
            let s = Schedule::new(cron, zone).unwrap();
            assert_eq!(schedule(&s), words, "{cron}");
        }
    }

    #[test]
    fn next_runs_show_the_dst_change() {
        let s = Schedule::new("30 2 * * *", "Europe/Berlin").unwrap();
        let runs = next_runs(&s, "2027-03-26T12:00:00Z".parse().unwrap(), 3);
        let local: Vec<&str> = runs.iter().map(|r| r.local.as_str()).collect();
        assert_eq!(
            local,
            [
                "Sat 2027-03-27 02:30:00 CET",
                "Sun 2027-03-28 03:00:00 CEST",
                "Mon 2027-03-29 02:30:00 CEST"
            ],
            "the nonexistent 02:30 runs at 03:00"
        );
        assert_eq!(
            runs[1].note.as_deref(),
            Some("clocks change from CET to CEST before this run")
        );
        assert_eq!(runs[2].note, None);
    }

    #[test]
    fn retention_in_words() {
        let r: Rules =
            toml::from_str("keep-last = 3\nkeep-daily = 7\nkeep-within = \"2d\"").unwrap();
        assert_eq!(
            retention(&r),
            "keeps the last 3, the newest of each of the last 7 days and everything newer than 2d (per hub, UTC buckets)"
        );
        assert_eq!(
            retention(&Rules::default()),
            "keeps every snapshot (no rule set)"
        );
    }
}
