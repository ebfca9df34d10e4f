//! Named phases of one run, timed on the wall clock: a restore marks where its preflight, plan,
//! apply, links and verification begin; a drill adds its probe. Each phase ends where the next
//! begins, so the phases of a run tile its duration with no gap a reader must explain. Phases
//! built elsewhere (a failover's, from its journal) may overlap; [`Phase`] does not mind.
//!
//! Owns: the recorder ([`Timeline`]) and what it yields ([`Phase`]). Clones share one record, so
//! a use case hands a clone to the parts it runs.
//! Must not: decide anything from the times (the drill does), print.

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One phase: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl Phase {
    pub fn seconds(&self) -> f64 {
        between(self.start, self.end).max(0.0)
    }

    /// `{"name", "start", "end"}`, RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "seconds": round3(self.seconds()),
        })
    }
}

/// Seconds from `from` to `to` (negative when `to` is earlier), without overflow.
pub fn between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "nanoseconds of a run fit an f64 well"
    )]
    let nanos = to
        .unix_timestamp_nanos()
        .saturating_sub(from.unix_timestamp_nanos()) as f64;
    nanos / 1e9
}

/// RFC 3339 text of a moment (UTC).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Seconds rounded to milliseconds, for documents people read.
pub fn round3(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The recorder. A fresh one records nothing until a phase begins.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    marks: Arc<Mutex<Vec<(String, OffsetDateTime)>>>,
}

impl Timeline {
    /// Phase `name` begins now (and the one before it ends). Beginning the phase that is already
    /// under way changes nothing.
    pub fn begin(&self, name: &str) {
        self.begin_at(name, OffsetDateTime::now_utc());
    }

    /// [`Timeline::begin`] at a given moment (tests, and phases measured elsewhere).
    pub fn begin_at(&self, name: &str, at: OffsetDateTime) {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.last().is_some_and(|(last, _)| last == name) {
            return;
        }
        marks.push((name.to_owned(), at));
    }

    /// When the first phase began, if one did.
    pub fn first(&self) -> Option<OffsetDateTime> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.first().map(|(_, at)| *at)
    }

    /// When phase `name` began, if it did.
    pub fn began(&self, name: &str) -> Option<OffsetDateTime> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.iter().find(|(n, _)| n == name).map(|(_, at)| *at)
    }

    /// The phases so far, the last one ending at `end`.
    pub fn phases(&self, end: OffsetDateTime) -> Vec<Phase> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks
            .iter()
            .enumerate()
            .map(|(i, (name, start))| Phase {
                name: name.clone(),
                start: *start,
                end: marks
                    .get(i.saturating_add(1))
                    .map_or(end, |(_, next)| *next)
                    .max(*start),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn phases_tile_the_run_and_a_repeated_begin_is_one_phase() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let t = Timeline::default();
        t.begin_at("preflight", t0);
        t.clone().begin_at("apply", t0 + Duration::seconds(2));
        t.begin_at("apply", t0 + Duration::seconds(3));
        t.begin_at("verification", t0 + Duration::seconds(5));
        let p = t.phases(t0 + Duration::seconds(9));
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["preflight", "apply", "verification"]);
        assert_eq!(p[1].start, t0 + Duration::seconds(2));
        assert_eq!(p[1].end, p[2].start);
        assert!((p[2].seconds() - 4.0).abs() < 1e-9);
        assert_eq!(p[0].to_json()["start"], "1970-01-01T00:00:00Z");
        assert_eq!(t.began("apply"), Some(t0 + Duration::seconds(2)));
    }
}
