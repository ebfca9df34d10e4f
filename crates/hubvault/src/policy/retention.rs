//! Retention: which snapshots to keep, with restic's `forget` semantics. A pure function of the
//! snapshot list, the rules and `now`; no I/O, no clock.
//!
//! Semantics (restic `internal/restic/snapshot_policy.go`, applied to each hub separately):
//! - Snapshots are walked newest first (by `created`, then id).
//! - `keep-last N` keeps the N newest.
//! - `keep-hourly/daily/weekly/monthly/yearly N`: each snapshot falls into a bucket (UTC hour, UTC
//!   day, ISO week, UTC month, UTC year); the newest snapshot of each bucket is kept, for the N most
//!   recent buckets **that have snapshots** (a missed night does not use up a slot).
//!   `-1` means unlimited (every bucket).
//! - If a rule still has slots left when the oldest snapshot is reached, the oldest is kept as well
//!   (restic ≥ 0.14: this maximises the history length kept).
//! - `keep-within SPAN` keeps every snapshot newer than *the newest snapshot* minus SPAN — not `now`
//!   minus SPAN, as in restic — so a hub whose backups stopped never loses its last copies just
//!   because time passed.
//! - A snapshot is kept if any rule keeps it; the reasons list every rule that did.
//! - No rule at all keeps everything (a policy must say what to drop, never drop by omission).
//!
//! Where we differ from restic, deliberately: `now` is the decision time (`forget --at`). Snapshots
//! created after `now` did not exist yet at that time; they are always kept and take no bucket, and
//! the newest snapshot for `keep-within` is the newest one at or before `now` (restic likewise
//! ignores snapshots in the future there).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use serde::{Deserialize, Deserializer};

use super::span::Span;

/// The identity of one snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub id: String,
    pub hub: String,
    pub created: DateTime<Utc>,
}

/// The verdict on one snapshot. `reasons` says which rules kept it (empty when forgotten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// The `[retention]` table of a policy file. Counts are `Some(n)` (n ≥ 1, or -1 for unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rules {
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_last: Option<i64>,
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_hourly: Option<i64>,
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_daily: Option<i64>,
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_weekly: Option<i64>,
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_monthly: Option<i64>,
    #[serde(default, deserialize_with = "keep_count")]
    pub keep_yearly: Option<i64>,
    #[serde(default, deserialize_with = "super::span::non_zero_opt")]
    pub keep_within: Option<Span>,
}

impl Rules {
    /// True when no rule is set: everything is kept.
    pub fn is_empty(&self) -> bool {
        self.counted().iter().all(|(n, _, _)| n.is_none()) && self.within().is_none()
    }

    /// `keep-within`, with a zero span treated as unset (as restic does).
    fn within(&self) -> Option<Span> {
        self.keep_within.filter(|s| !s.is_zero())
    }

    fn counted(&self) -> [(Option<i64>, Bucketer, &'static str); 6] {
        [
            (self.keep_last, Bucketer::Each, "last"),
            (self.keep_hourly, Bucketer::Hour, "hourly"),
            (self.keep_daily, Bucketer::Day, "daily"),
            (self.keep_weekly, Bucketer::IsoWeek, "weekly"),
            (self.keep_monthly, Bucketer::Month, "monthly"),
            (self.keep_yearly, Bucketer::Year, "yearly"),
        ]
    }
}

fn keep_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = i64::deserialize(d)?;
    if n == -1 || n >= 1 {
        Ok(Some(n))
    } else {
        Err(serde::de::Error::custom(format!(
            "keep count {n} is not allowed: use a positive number, -1 for unlimited, or leave the key out"
        )))
    }
}

#[derive(Debug, Clone, Copy)]
enum Bucketer {
    Each,
    Hour,
    Day,
    IsoWeek,
    Month,
    Year,
}

impl Bucketer {
    /// The bucket of a snapshot; `position` makes every snapshot its own bucket for `keep-last`.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "chrono's years fit in 18 bits and months, weeks, days and hours are small, so these stay far inside i64"
    )]
    fn bucket(self, t: DateTime<Utc>, position: usize) -> i64 {
        let ymd = i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day());
        match self {
            Bucketer::Each => i64::try_from(position).unwrap_or(i64::MAX),
            Bucketer::Hour => ymd * 100 + i64::from(t.hour()),
            Bucketer::Day => ymd,
            Bucketer::IsoWeek => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucketer::Month => i64::from(t.year()) * 100 + i64::from(t.month()),
            Bucketer::Year => i64::from(t.year()),
        }
    }
}

/// Decide, per hub, which snapshots the rules keep at time `now`. One decision per input snapshot,
/// in input order.
pub fn decide(snapshots: &[SnapshotRef], rules: &Rules, now: DateTime<Utc>) -> Vec<Decision> {
    let mut by_hub: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        by_hub.entry(s.hub.as_str()).or_default().push(i);
    }
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];
    for indices in by_hub.into_values() {
        decide_one_hub(snapshots, indices, rules, now, &mut reasons);
    }
    snapshots
        .iter()
        .zip(reasons)
        .map(|(s, reasons)| Decision {
            id: s.id.clone(),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

fn decide_one_hub(
    all: &[SnapshotRef],
    mut indices: Vec<usize>,
    rules: &Rules,
    now: DateTime<Utc>,
    reasons: &mut [Vec<String>],
) {
    if rules.is_empty() {
        for i in indices {
            reasons[i].push("policy has no keep rule: keeping everything".to_owned());
        }
        return;
    }
    // Newest first; ties broken by id so the result never depends on input order.
    indices.sort_by(|&a, &b| (all[b].created, &all[b].id).cmp(&(all[a].created, &all[a].id)));
    let (future, past): (Vec<usize>, Vec<usize>) =
        indices.into_iter().partition(|&i| all[i].created > now);
    for i in future {
        reasons[i].push("created after the decision time".to_owned());
    }
    let Some(&newest) = past.first() else { return };
    let within_from = rules
        .within()
        .map(|span| (span, span.before(all[newest].created)));

    let mut counters: Vec<(Option<i64>, Bucketer, &str, Option<i64>)> = rules
        .counted()
        .into_iter()
        .map(|(n, b, name)| (n, b, name, None))
        .collect();
    // `past` is not empty (it has a newest).
    let oldest = past.len().saturating_sub(1);
    for (position, &i) in past.iter().enumerate() {
        let created = all[i].created;
        if let Some((span, from)) = within_from {
            // A span reaching before the representable range covers everything.
            if from.is_none_or(|from| created > from) {
                reasons[i].push(format!("within {span} of the newest snapshot"));
            }
        }
        for (count, bucketer, name, last) in &mut counters {
            let Some(left) = count.filter(|&n| n != 0) else {
                continue;
            };
            let bucket = bucketer.bucket(created, position);
            let new_bucket = *last != Some(bucket);
            if new_bucket || position == oldest {
                reasons[i].push(if new_bucket {
                    format!("{name} snapshot")
                } else {
                    format!("oldest snapshot, {name} slots left")
                });
                *last = Some(bucket);
                if left > 0 {
                    *count = Some(left.saturating_sub(1));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
