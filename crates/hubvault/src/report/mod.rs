//! A run's report as one self-contained HTML page: a verdict, an inline SVG timeline of named
//! phases, figures against their targets (met / breached), tables and the commands that
//! reproduce the run. No external asset, no script: it opens from a mail attachment or an
//! artifact store years later and reads the same.
//!
//! Generic on purpose: the drill and the failover runbook both fill it. Phases may overlap (a
//! failover's device outage lies inside its operation): the timeline's axis runs from the
//! earliest start to the latest end, with ticks in time since then. Every value is
//! HTML-escaped on the way out ([`html::escape`]), so a device id or a service message cannot
//! become markup.
//!
//! Owns: the document model ([`Document`]) and its rendering ([`Document::html`]).
//! Must not: decide verdicts or targets (the caller does), read the clock, hold a secret.

mod html;

pub use html::escape;

use crate::timeline::Phase;

/// Passed or failed, as the caller judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
        }
    }
}

/// A figure against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Breached,
    /// No target was set, or nothing was measured.
    NoTarget,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Breached => "breached",
            Status::NoTarget => "no target",
        }
    }
}

/// One figure: `RTO 4m 12s`, target `30m`, met.
#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub value: String,
    pub target: Option<String>,
    pub status: Status,
    /// One line under the figure (how it was measured).
    pub note: Option<String>,
}

/// A table: a title, column names and rows of text.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The whole page.
#[derive(Debug, Clone)]
pub struct Document {
    pub title: String,
    /// One line under the title (what, where, when).
    pub subtitle: String,
    pub verdict: Verdict,
    /// Why the verdict is what it is (each reason one line).
    pub reasons: Vec<String>,
    pub phases: Vec<Phase>,
    pub figures: Vec<Figure>,
    pub tables: Vec<Table>,
    /// Commands that reproduce the run.
    pub commands: Vec<String>,
}

impl Document {
    /// The page: HTML5, inline CSS and SVG, every value escaped.
    pub fn html(&self) -> String {
        html::render(self)
    }
}

/// A duration for people: `850 ms`, `42.1 s`, `12m 05s`, `3h 02m`, `2d 4h`.
pub fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "finite, non-negative, far below u64::MAX seconds"
    )]
    let s = seconds.round() as u64;
    match s {
        0..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_text(0.25), "250 ms");
        assert_eq!(duration_text(42.14), "42.1 s");
        assert_eq!(duration_text(725.0), "12m 05s");
        assert_eq!(duration_text(10_920.0), "3h 02m");
        assert_eq!(duration_text(187_200.0), "2d 4h");
        assert_eq!(duration_text(f64::NAN), "—");
    }
}
