//! The per-hub status record kept in the store, next to the hub's lease: which slot of each
//! policy was last handled (the durable "once" under the lease), and how the last run went.
//!
//! Every replica and a restarted process read the same record, so the gauges they export and
//! the failure/recovery judgement agree. It carries no secrets: error codes only, no messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the store remembers about one hub's scheduled runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HubStatus {
    /// Policy name → the last slot handled (run, or tried and failed) for this hub.
    #[serde(default)]
    pub slots: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// Runs failed in a row (0 after a success).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Devices and stored bytes of the last successful snapshot.
    #[serde(default)]
    pub devices: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Scheduled drills into this hub (a scratch hub), by the hub drilled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drills: BTreeMap<String, DrillStatus>,
}

/// How the scheduled drills of one hub went (kept in the scratch hub's record: drills run
/// under its lease).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillStatus {
    pub last_finished: Option<DateTime<Utc>>,
    pub last_ok: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// The figures of the last drill that reached them.
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub error_code: Option<String>,
}

impl DrillStatus {
    /// Record a finished drill; returns how the drills' state changed.
    pub fn record(
        &mut self,
        finished: DateTime<Utc>,
        ok: bool,
        rto: Option<f64>,
        rpo: Option<f64>,
        error_code: Option<String>,
    ) -> Transition {
        let was_failing = self.consecutive_failures > 0;
        self.last_finished = Some(finished);
        self.last_ok = ok;
        self.rto_seconds = rto.or(self.rto_seconds);
        self.rpo_seconds = rpo.or(self.rpo_seconds);
        self.error_code = error_code;
        match (ok, was_failing) {
            (true, was) => {
                self.consecutive_failures = 0;
                self.last_success = Some(finished);
                if was {
                    Transition::Recovered
                } else {
                    Transition::Ok
                }
            }
            (false, was) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if was {
                    Transition::StillFailing
                } else {
                    Transition::Failed
                }
            }
        }
    }
}

/// The last finished run of a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub policy: String,
    pub slot: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub ok: bool,
    /// The snapshot made, when it succeeded.
    pub snapshot: Option<String>,
    /// The error's stable code, when it failed.
    pub error_code: Option<String>,
}

/// What changed with a run, as notifications see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first failure after a success (or ever).
    Failed,
    /// A failure after a failure.
    StillFailing,
    /// The first success after a failure.
    Recovered,
    /// A success after a success (or the first ever).
    Ok,
}

impl HubStatus {
    /// Has the slot `slot` of `policy` been handled (here or by another replica)?
    pub fn handled(&self, policy: &str, slot: DateTime<Utc>) -> bool {
        self.slots.get(policy).is_some_and(|s| *s >= slot)
    }

    /// Record a finished run; returns how the hub's state changed.
    pub fn record(&mut self, run: LastRun, devices: Option<u64>, bytes: Option<u64>) -> Transition {
        let was_failing = self.consecutive_failures > 0;
        self.slots.insert(run.policy.clone(), run.slot);
        let transition = if run.ok {
            self.consecutive_failures = 0;
            self.last_success = Some(run.finished_at);
            self.devices = devices.or(self.devices);
            self.bytes = bytes.or(self.bytes);
            if was_failing {
                Transition::Recovered
            } else {
                Transition::Ok
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if was_failing {
                Transition::StillFailing
            } else {
                Transition::Failed
            }
        };
        self.last_run = Some(run);
        transition
    }

    /// The record as stored (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        #[allow(
            clippy::expect_used,
            reason = "derived Serialize over strings, numbers and times: serde_json cannot fail"
        )]
        serde_json::to_vec_pretty(self).expect("a status record serialises")
    }

    /// Read a stored record; an empty object (a lease blob just created) is the default.
    pub fn from_bytes(bytes: &[u8]) -> Result<HubStatus, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(HubStatus::default());
        }
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn run(ok: bool, slot: &str) -> LastRun {
        LastRun {
            policy: "default".into(),
            slot: slot.parse().unwrap(),
            finished_at: slot.parse().unwrap(),
            ok,
            snapshot: ok.then(|| "s".to_owned()),
            error_code: (!ok).then(|| "hub_unauthorized".to_owned()),
        }
    }

    #[test]
    fn one_failure_and_one_recovery_per_outage() {
        use Transition::{Failed, Ok, Recovered, StillFailing};
        let mut s = HubStatus::default();
        let seen: Vec<Transition> = [true, false, false, false, true, true]
            .iter()
            .enumerate()
            .map(|(i, ok)| s.record(run(*ok, &format!("2026-12-01T0{i}:00:00Z")), Some(3), None))
            .collect();
        assert_eq!(
            seen,
            [Ok, Failed, StillFailing, StillFailing, Recovered, Ok]
        );
        assert!(s.handled("default", "2026-12-01T05:00:00Z".parse().unwrap()));
        assert!(!s.handled("default", "2026-12-01T06:00:00Z".parse().unwrap()));
        assert!(!s.handled("other", "2026-12-01T00:00:00Z".parse().unwrap()));
    }

    #[test]
    fn round_trips_and_reads_an_empty_blob() {
        let mut s = HubStatus::default();
        s.record(run(false, "2026-12-01T00:00:00Z"), None, None);
        assert_eq!(HubStatus::from_bytes(&s.to_bytes()).unwrap(), s);
        assert_eq!(HubStatus::from_bytes(b"").unwrap(), HubStatus::default());
    }
}
