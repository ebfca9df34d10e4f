//! Azure's limits on manual failover [Learn iot-hub-ha-dr], judged on hubvault's own journal of
//! past operations: at most 2 failovers and 2 failbacks per day, at least one hour between
//! operations. A failback is a failover back to the hub's original primary region. Pure: takes
//! `now`.

use time::{Duration, OffsetDateTime};

pub const MIN_SPACING: Duration = Duration::hours(1);

pub const WINDOW: Duration = Duration::hours(24);

pub const MAX_PER_DIRECTION: usize = 2;

/// One failover or failback hubvault requested earlier (from the journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastOperation {
    pub at: OffsetDateTime,
    pub failback: bool,
}

/// Refuse when Azure would: within an hour of the last operation, or past 2 per direction in
/// 24 hours. The message names when it becomes possible.
pub fn check_limits(
    past: &[PastOperation],
    failback: bool,
    now: OffsetDateTime,
) -> Result<(), String> {
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if let Some(last) = past.iter().map(|p| p.at).max() {
        let next = last.saturating_add(MIN_SPACING);
        if now < next {
            return Err(format!(
                "Azure allows one manual failover or failback per hour: the last was at {}; possible from {}",
                fmt(last),
                fmt(next)
            ));
        }
    }
    let mut recent: Vec<OffsetDateTime> = past
        .iter()
        .filter(|p| p.failback == failback && p.at > now.saturating_sub(WINDOW))
        .map(|p| p.at)
        .collect();
    recent.sort();
    if let Some(first) = recent.len().checked_sub(MAX_PER_DIRECTION) {
        let next = recent[first].saturating_add(WINDOW);
        return Err(format!(
            "Azure allows {MAX_PER_DIRECTION} {} per day and that many were made in the last 24 hours; possible from {}",
            if failback { "failbacks" } else { "failovers" },
            fmt(next)
        ));
    }
    Ok(())
}
