//! The scheduler's pure core: which (policy, hub) runs are due at `now`, and when to wake next.
//!
//! A **slot** is one instant a policy's schedule fires (UTC). Each (policy, hub) entry remembers
//! the last slot it handled; at `now`, an entry whose next slot has passed is due **once**, for
//! the latest slot at or before `now`: slots missed while the process was down (or asleep)
//! coalesce into one run, never N. Nothing here reads the clock or does I/O, so a simulated week
//! runs in milliseconds (`tests` below) and the async loop in [`super::scheduler`] only sleeps
//! until [`Plan::next_wake`] and starts what [`Plan::take_due`] returns.
//!
//! Daylight saving time follows [`crate::policy::schedule`]: in a gap a run shifts forward; in a
//! fold, interval schedules (`*/15 * * * *`) follow elapsed time and fixed-time ones run once,
//! at the first occurrence. Both come from croner and are pinned by the week test.

use chrono::{DateTime, TimeDelta, Utc};

use crate::policy::Schedule;

/// How many slots [`latest_slot`] steps through before jumping (a seconds-level schedule after
/// a long downtime); bounds the work of one call.
const MAX_STEPS: usize = 10_000;

/// One (policy, hub) pair the scheduler keeps.
#[derive(Debug, Clone)]
pub struct Entry {
    pub policy: String,
    pub hub: String,
    schedule: Schedule,
    /// The last slot handled (or the time the entry started, for a new one).
    last: DateTime<Utc>,
    /// The first slot after `last`; `None` when the schedule never fires again.
    next: Option<DateTime<Utc>>,
}

/// A run to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub policy: String,
    pub hub: String,
    /// The slot this run is for (the latest one passed; earlier missed ones coalesce into it).
    pub slot: DateTime<Utc>,
}

/// Every entry of every loaded policy.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    entries: Vec<Entry>,
}

impl Plan {
    /// Add `hub` under `policy`, its last handled slot `last` (from the store's record of it, or
    /// the start time for a pair never run: a new entry waits for its next slot).
    pub fn add(&mut self, policy: &str, hub: &str, schedule: &Schedule, last: DateTime<Utc>) {
        self.entries.push(Entry {
            policy: policy.to_owned(),
            hub: hub.to_owned(),
            next: next_after(schedule, last),
            schedule: schedule.clone(),
            last,
        });
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The last slot handled for (policy, hub), to carry over when policies are re-read.
    pub fn last(&self, policy: &str, hub: &str) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .find(|e| e.policy == policy && e.hub == hub)
            .map(|e| e.last)
    }

    /// The runs due at `now`, each marked handled: an entry is returned at most once per call,
    /// for its latest passed slot.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut due = Vec::new();
        for e in &mut self.entries {
            if e.next.is_none_or(|n| n > now) {
                continue;
            }
            let slot = latest_slot(&e.schedule, e.last, now).unwrap_or(now);
            e.last = slot;
            e.next = next_after(&e.schedule, slot);
            due.push(Due {
                policy: e.policy.clone(),
                hub: e.hub.clone(),
                slot,
            });
        }
        due
    }

    /// When the next entry is due; `None` when no schedule fires again.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries.iter().filter_map(|e| e.next).min()
    }

    /// The next slot of each policy (for the `next run` gauge), in entry order, one per policy.
    pub fn next_by_policy(&self) -> Vec<(String, Option<DateTime<Utc>>)> {
        let mut out: Vec<(String, Option<DateTime<Utc>>)> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|(p, _)| *p == e.policy) {
                Some((_, next)) => {
                    *next = match (*next, e.next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
                None => out.push((e.policy.clone(), e.next)),
            }
        }
        out
    }
}

/// The first slot strictly after `t`.
pub fn next_after(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.next_after(t)
}

/// The latest slot in `(after, now]`, or `None` if there is none.
pub fn latest_slot(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut from = after;
    let mut found = None;
    for _ in 0..MAX_STEPS {
        match next_after(schedule, from) {
            Some(n) if n <= now => {
                found = Some(n);
                from = n;
            }
            _ => return found,
        }
    }
    // A fine schedule over a long gap: step back from `now` until a slot is found, then forward.
    let mut back = TimeDelta::minutes(1);
    while back < TimeDelta::days(400) {
        let start = now.checked_sub_signed(back)?.max(after);
        if let Some(n) = next_after(schedule, start).filter(|n| *n <= now) {
            return latest_slot(schedule, n, now).or(Some(n));
        }
        back = back.checked_mul(4)?;
    }
    found
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
