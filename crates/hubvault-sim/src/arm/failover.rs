//! Manual failover of a simulated hub: the limits Azure enforces and what a failover does to the
//! ARM document. Pure functions that take `now`; the HTTP layer owns the clock and the history.
//!
//! Limits [doc iot-hub-ha-dr]: at most 2 failovers and 2 failbacks per day, at least 1 hour
//! between operations. A failback is a failover back to the hub's original primary region, so the
//! two directions are counted separately over a rolling 24 hours.

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::resource::{bump_etag, event_hub_endpoint, event_hub_path, normalize_region};

pub const MIN_SPACING: Duration = Duration::hours(1);
pub const WINDOW: Duration = Duration::hours(24);
pub const MAX_PER_DIRECTION: usize = 2;

/// One accepted failover of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub at: OffsetDateTime,
    /// True when the hub moved back to its original primary region.
    pub failback: bool,
}

/// Why a failover is refused now, and when it would be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooSoon {
        next_allowed: OffsetDateTime,
    },
    DailyLimit {
        failback: bool,
        next_allowed: OffsetDateTime,
    },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::TooSoon { next_allowed } => format!(
                "Manual failover is not allowed within 1 hour of the previous failover or failback. Try again after {next_allowed}."
            ),
            Refusal::DailyLimit {
                failback,
                next_allowed,
            } => format!(
                "The limit of {MAX_PER_DIRECTION} {} per day has been reached. Try again after {next_allowed}.",
                if *failback { "failbacks" } else { "failovers" }
            ),
        }
    }
}

/// Decide whether a failover in direction `failback` may start at `now`, given earlier ones.
pub fn check(history: &[Record], failback: bool, now: OffsetDateTime) -> Result<(), Refusal> {
    if let Some(last) = history.iter().map(|r| r.at).max()
        && now < last.saturating_add(MIN_SPACING)
    {
        return Err(Refusal::TooSoon {
            next_allowed: last.saturating_add(MIN_SPACING),
        });
    }
    let window_start = now.saturating_sub(WINDOW);
    let mut recent: Vec<OffsetDateTime> = history
        .iter()
        .filter(|r| r.failback == failback && r.at > window_start)
        .map(|r| r.at)
        .collect();
    // `Some` once the window already holds `MAX_PER_DIRECTION` of this direction: the oldest of
    // the last `MAX_PER_DIRECTION` decides when the next one is allowed.
    if let Some(first_counted) = recent.len().checked_sub(MAX_PER_DIRECTION) {
        recent.sort();
        return Err(Refusal::DailyLimit {
            failback,
            next_allowed: recent[first_counted].saturating_add(WINDOW),
        });
    }
    Ok(())
}

/// The region currently holding the given role (`primary` / `secondary`), as displayed.
pub fn region_with_role(doc: &Value, role: &str) -> Option<String> {
    doc["properties"]["locations"]
        .as_array()?
        .iter()
        .find(|l| l["role"] == role)
        .and_then(|l| l["location"].as_str())
        .map(str::to_string)
}

/// `failoverRegion` must name the current secondary region (display or ARM spelling).
/// UNCERTAIN: the service's exact check; the spec example passes a placeholder.
pub fn target_is_secondary(doc: &Value, region: &str) -> bool {
    region_with_role(doc, "secondary")
        .is_some_and(|s| normalize_region(&s) == normalize_region(region))
}

/// Apply a completed failover: swap roles, give the built-in Event Hub endpoint a new namespace
/// and name. The host name stays. UNCERTAIN whether top-level `location` changes; we keep it.
pub fn swap(doc: &mut Value) {
    if let Some(locations) = doc["properties"]["locations"].as_array_mut() {
        for l in locations {
            let role = if l["role"] == "primary" {
                "secondary"
            } else {
                "primary"
            };
            l["role"] = json!(role);
        }
    }
    let name = doc["name"].as_str().unwrap_or("hub").to_string();
    let events = &mut doc["properties"]["eventHubEndpoints"]["events"];
    events["endpoint"] = json!(event_hub_endpoint(&name));
    events["path"] = json!(event_hub_path(&name));
    bump_etag(doc);
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
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-26 00:00 UTC);

    fn rec(hours: i64, failback: bool) -> Record {
        Record {
            at: T0 + Duration::hours(hours),
            failback,
        }
    }

    #[test]
    fn first_failover_is_allowed() {
        assert_eq!(check(&[], false, T0), Ok(()));
    }

    #[test]
    fn a_second_operation_within_an_hour_is_refused() {
        let err = check(&[rec(0, false)], true, T0 + Duration::minutes(59)).unwrap_err();
        assert_eq!(
            err,
            Refusal::TooSoon {
                next_allowed: T0 + Duration::hours(1)
            }
        );
        assert_eq!(
            check(&[rec(0, false)], true, T0 + Duration::hours(1)),
            Ok(())
        );
    }

    #[test]
    fn two_failovers_and_two_failbacks_per_day() {
        let history = [rec(0, false), rec(1, true), rec(2, false), rec(3, true)];
        let err = check(&history, false, T0 + Duration::hours(4)).unwrap_err();
        assert_eq!(
            err,
            Refusal::DailyLimit {
                failback: false,
                next_allowed: T0 + Duration::hours(24)
            }
        );
        assert!(check(&history, true, T0 + Duration::hours(4)).is_err());
        assert_eq!(check(&history, false, T0 + Duration::hours(24)), Ok(()));
    }

    #[test]
    fn swap_changes_roles_and_event_hub_endpoint() {
        let mut doc =
            crate::arm::resource::initial_resource("h", "h.azure-devices.net", "/x", "westus");
        let before = doc["properties"]["eventHubEndpoints"]["events"].clone();
        swap(&mut doc);
        assert_eq!(
            region_with_role(&doc, "primary").as_deref(),
            Some("East US")
        );
        let after = &doc["properties"]["eventHubEndpoints"]["events"];
        assert_ne!(after["endpoint"], before["endpoint"]);
        assert_ne!(after["path"], before["path"]);
        assert_eq!(doc["properties"]["hostName"], "h.azure-devices.net");
    }
}
