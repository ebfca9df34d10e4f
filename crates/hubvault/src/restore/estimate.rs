//! `--engine auto`: which engine writes the plan sooner, estimated from the hub's tier and units
//! (ARM `sku`) and the documented throttles (docs/azure.md §8), and why.
//!
//! - **bulk**: each entry of a bulk call counts as one identity-registry operation: 100 per
//!   minute per unit on F1/S1/S2 (B1/B2), 5,000 per minute per unit on S3 (B3);
//! - **import job**: Microsoft's clone guide quotes about two hours to move 500,000 devices with
//!   an export and an import job, so one job runs about 500,000 lines an hour (≈139/s); a job
//!   also waits in the hub's queue, which is not documented: [`JOB_QUEUE_SECS`] is assumed. Many
//!   edge links take a second job ([`super::LINK_JOB_MIN`]), few go through bulk calls.
//!
//! Pure: rates in, estimate out.
//! Must not: do I/O.

use super::Engine;
use crate::arm::Sku;

/// Import-job lines per second (500,000 per hour, from the clone guide's two hours for export
/// plus import).
pub const JOB_LINES_PER_SEC: f64 = 500_000.0 / 3_600.0;
/// Seconds an import job is assumed to queue before it runs (not documented).
pub const JOB_QUEUE_SECS: f64 = 30.0;

/// The throttles of one hub.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRates {
    /// `S1`, …, or `unknown`.
    pub tier: String,
    pub units: u64,
    /// Registry operations per second (each bulk entry is one).
    pub registry_per_sec: f64,
    /// Where the tier came from, in words.
    pub source: String,
}

impl HubRates {
    /// The rates of a hub's ARM `sku`; without one (ARM not configured), S1 with one unit is
    /// assumed and said.
    pub fn from_sku(sku: Option<&Sku>) -> HubRates {
        let Some(sku) = sku else {
            return HubRates {
                source: "tier unknown (ARM not configured or not readable): S1, 1 unit assumed"
                    .into(),
                ..HubRates::of("S1", 1)
            };
        };
        let mut rates = HubRates::of(&sku.name, sku.capacity.unwrap_or(1).max(1));
        rates.source = format!(
            "{} with {} unit(s), read through ARM",
            rates.tier, rates.units
        );
        rates
    }

    fn of(tier: &str, units: u64) -> HubRates {
        let per_minute = if tier.eq_ignore_ascii_case("S3") || tier.eq_ignore_ascii_case("B3") {
            5_000.0
        } else {
            100.0
        };
        #[allow(clippy::cast_precision_loss, reason = "a handful of units")]
        let registry_per_sec = per_minute * units as f64 / 60.0;
        HubRates {
            tier: tier.to_owned(),
            units,
            registry_per_sec,
            source: String::new(),
        }
    }
}

/// The two estimates and the choice.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// `None`: no staging, so no import job.
    pub job_seconds: Option<f64>,
    pub bulk_seconds: f64,
    #[serde(skip)]
    pub chosen: Engine,
    pub reason: String,
}

/// Estimate writing `writes` import lines and `links` edge links both ways; pick the faster.
pub fn estimate(
    writes: usize,
    links: usize,
    rates: &HubRates,
    staging: bool,
    link_job_min: usize,
) -> Estimate {
    #[allow(clippy::cast_precision_loss, reason = "identity counts")]
    let (w, l) = (writes as f64, links as f64);
    let bulk = (w + l) / rates.registry_per_sec.max(1e-9);
    let job = staging.then(|| {
        let links = if links >= link_job_min.max(1) {
            JOB_QUEUE_SECS + l / JOB_LINES_PER_SEC
        } else {
            l / rates.registry_per_sec.max(1e-9)
        };
        JOB_QUEUE_SECS + w / JOB_LINES_PER_SEC + links
    });
    let text = crate::report::duration_text;
    let (chosen, reason) = match job {
        None => (
            Engine::Bulk,
            format!(
                "bulk: no staging for an import job ({} at {:.1} registry operations/s, {})",
                text(bulk),
                rates.registry_per_sec,
                rates.source
            ),
        ),
        Some(j) if j < bulk => (
            Engine::Job,
            format!(
                "job: an import job takes about {} against {} for bulk calls at {:.1} registry \
                 operations/s ({}; jobs ≈{:.0} lines/s plus {:.0} s queueing)",
                text(j),
                text(bulk),
                rates.registry_per_sec,
                rates.source,
                JOB_LINES_PER_SEC,
                JOB_QUEUE_SECS
            ),
        ),
        Some(j) => (
            Engine::Bulk,
            format!(
                "bulk: bulk calls take about {} at {:.1} registry operations/s against {} for an \
                 import job ({}; jobs ≈{:.0} lines/s plus {:.0} s queueing)",
                text(bulk),
                rates.registry_per_sec,
                text(j),
                rates.source,
                JOB_LINES_PER_SEC,
                JOB_QUEUE_SECS
            ),
        ),
    };
    Estimate {
        job_seconds: job.map(crate::timeline::round3),
        bulk_seconds: crate::timeline::round3(bulk),
        chosen,
        reason,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn sku(name: &str, units: u64) -> Sku {
        Sku {
            name: name.into(),
            tier: None,
            capacity: Some(units),
        }
    }

    #[test]
    fn the_faster_engine_is_chosen_and_the_reason_names_the_rates() {
        let s1 = HubRates::from_sku(Some(&sku("S1", 1)));
        assert!((s1.registry_per_sec - 100.0 / 60.0).abs() < 1e-9);
        // 10,000 devices on S1: bulk needs 100 minutes, a job about two.
        let e = estimate(10_000, 200, &s1, true, 5_000);
        assert_eq!(e.chosen, Engine::Job);
        assert!(
            e.bulk_seconds > 6_000.0 && e.job_seconds.unwrap() < 300.0,
            "{e:?}"
        );
        assert!(
            e.reason.contains("S1 with 1 unit(s), read through ARM"),
            "{}",
            e.reason
        );
        // A handful of devices: bulk beats the job's queueing.
        assert_eq!(estimate(20, 0, &s1, true, 5_000).chosen, Engine::Bulk);
        // S3 × 2: 10,000 bulk entries take 60 s, as fast as the job.
        let s3 = HubRates::from_sku(Some(&sku("S3", 2)));
        assert!((estimate(10_000, 0, &s3, true, 5_000).bulk_seconds - 60.0).abs() < 1e-6);
        // No staging: bulk, and said why.
        let none = estimate(10_000, 0, &s1, false, 5_000);
        assert_eq!(none.chosen, Engine::Bulk);
        assert!(none.reason.contains("no staging"));
        assert!(HubRates::from_sku(None).source.contains("assumed"));
    }
}
