//! The device probe: proof that restored identities work, by acting as their devices. A sample
//! of each kind (SAS devices, X.509 devices where a test certificate is given, edge devices,
//! children of edge devices) authenticates with the keys the snapshot holds and sends one
//! message (`device::telemetry`). Drills use it; the failover runbook will too.
//!
//! X.509 devices authenticate with a client certificate over TLS, which the probe does not
//! present: that kind is reported "not measured", never counted as passed.
//!
//! Owns: choosing the sample ([`choose`]), sending and the per-kind result ([`ProbeReport`]).
//! Must not: write the registry, print, or let a key out of a [`Candidate`].

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::device::telemetry::{self, DeviceTarget};
use crate::restore::plan::SnapshotRecord;
use crate::restore::sample::{Kind, kind_of};

/// The kinds a probe reports, in order.
pub const KINDS: [Kind; 4] = [Kind::Sas, Kind::X509, Kind::Edge, Kind::Child];

/// A device to try, with its own primary key (redacted from `Debug`).
#[derive(Clone)]
pub struct Candidate {
    pub id: String,
    pub kind: Kind,
    key: String,
}

impl Candidate {
    /// The device's own primary key (for a sender of this crate; never printed).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Candidate({} {}, key redacted)",
            self.kind.as_str(),
            self.id
        )
    }
}

/// What the snapshot holds of each kind, and why a kind is not tried.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub candidates: Vec<Candidate>,
    /// Enabled devices of each kind in the snapshot.
    pub available: BTreeMap<Kind, usize>,
}

/// Up to `per_kind` enabled devices of each SAS-authenticated kind, at random. Modules and
/// disabled devices are left out (a disabled device is refused by design).
pub fn choose(records: &[SnapshotRecord], per_kind: usize, rng: &mut impl Rng) -> Choice {
    let mut by_kind: BTreeMap<Kind, Vec<Candidate>> = BTreeMap::new();
    let mut available: BTreeMap<Kind, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.module_id.is_none()) {
        let c = &r.canonical;
        if c.get("status").and_then(Value::as_str) == Some("disabled") {
            continue;
        }
        let kind = kind_of(c);
        let n = available.entry(kind).or_default();
        *n = n.saturating_add(1);
        let key = c
            .get("authentication")
            .and_then(|a| a.get("symmetricKey"))
            .and_then(|k| k.get("primaryKey"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        if let Some(key) = key {
            by_kind.entry(kind).or_default().push(Candidate {
                id: r.id.clone(),
                kind,
                key: key.to_owned(),
            });
        }
    }
    let mut candidates = Vec::new();
    for list in by_kind.values_mut() {
        list.shuffle(rng);
        candidates.extend(list.drain(..).take(per_kind));
    }
    Choice {
        candidates,
        available,
    }
}

/// One device's try.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tried {
    pub id: String,
    /// The hub's HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Through DPS: the hub DPS assigned the device to (its host name), and under which id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_device_id: Option<String>,
}

/// What one device's try came to (a sender's answer, before it is counted).
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub assigned_hub: Option<String>,
    pub assigned_device_id: Option<String>,
}

/// The result for one kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindResult {
    pub kind: &'static str,
    pub tried: usize,
    pub accepted: usize,
    /// Why nothing was tried ("not measured: …", "none in the snapshot").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub devices: Vec<Tried>,
}

/// The probe's result.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub by_kind: Vec<KindResult>,
    /// When the first device was accepted.
    pub first_accepted: Option<OffsetDateTime>,
    /// When the last answer came.
    pub done: Option<OffsetDateTime>,
    /// The DPS instance the devices registered through (`--via-dps`), if any.
    pub via_dps: Option<String>,
}

impl ProbeReport {
    pub fn tried(&self) -> usize {
        self.by_kind.iter().map(|k| k.tried).sum()
    }

    pub fn accepted(&self) -> usize {
        self.by_kind.iter().map(|k| k.accepted).sum()
    }

    /// Every device tried was accepted, and at least one was tried.
    pub fn passed(&self) -> bool {
        self.tried() > 0 && self.accepted() == self.tried()
    }

    /// `{"tried", "accepted", "by_kind": {"sas": {...}, …}}`.
    pub fn to_json(&self) -> Value {
        let by_kind: serde_json::Map<String, Value> = self
            .by_kind
            .iter()
            .map(|k| {
                (
                    k.kind.to_owned(),
                    serde_json::to_value(k).unwrap_or(Value::Null),
                )
            })
            .collect();
        json!({"tried": self.tried(), "accepted": self.accepted(), "by_kind": by_kind,
               "via_dps": self.via_dps})
    }
}

/// Send one message as each candidate, all at once (a handful of devices), and report per kind.
pub async fn run(http: &reqwest::Client, target: &DeviceTarget, choice: &Choice) -> ProbeReport {
    let body = json!({"hubvault": "probe"}).to_string();
    let tries = choice.candidates.iter().map(|c| {
        let body = body.as_bytes();
        async move {
            let attempt = match telemetry::send(http, target, &c.id, &c.key, body).await {
                Ok(s) => Attempt {
                    status: Some(s),
                    ..Attempt::default()
                },
                Err(e) => Attempt {
                    error: Some(crate::redact::redact(&e.to_string())),
                    ..Attempt::default()
                },
            };
            (c, attempt, OffsetDateTime::now_utc())
        }
    });
    let answers = futures::future::join_all(tries).await;
    tally(choice, &answers)
}

/// Count each candidate's attempt per kind; a kind nobody tried says why.
pub fn tally(choice: &Choice, answers: &[(&Candidate, Attempt, OffsetDateTime)]) -> ProbeReport {
    let mut report = ProbeReport::default();
    for kind in KINDS {
        let mut result = KindResult {
            kind: kind.as_str(),
            tried: 0,
            accepted: 0,
            note: None,
            devices: Vec::new(),
        };
        for (c, attempt, at) in answers.iter().filter(|(c, _, _)| c.kind == kind) {
            let accepted =
                attempt.error.is_none() && attempt.status.is_some_and(|s| (200..300).contains(&s));
            if accepted {
                report.first_accepted = Some(report.first_accepted.map_or(*at, |f| f.min(*at)));
            }
            report.done = Some(report.done.map_or(*at, |d| d.max(*at)));
            result.tried = result.tried.saturating_add(1);
            result.accepted = result.accepted.saturating_add(usize::from(accepted));
            result.devices.push(Tried {
                id: c.id.clone(),
                status: attempt.status,
                accepted,
                error: attempt.error.clone(),
                assigned_hub: attempt.assigned_hub.clone(),
                assigned_device_id: attempt.assigned_device_id.clone(),
            });
        }
        let available = choice.available.get(&kind).copied().unwrap_or(0);
        if result.tried == 0 {
            result.note = Some(if kind == Kind::X509 && available > 0 {
                format!(
                    "not measured: {available} X.509 device(s) restored, but X.509 devices \
                     authenticate with a client certificate, which the probe does not present"
                )
            } else if available == 0 {
                "none in the snapshot (enabled)".to_owned()
            } else {
                "not measured: no key in the snapshot".to_owned()
            });
        }
        report.by_kind.push(result);
    }
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn record(line: &Value) -> SnapshotRecord {
        SnapshotRecord {
            id: line["id"].as_str().unwrap().into(),
            module_id: line["moduleId"].as_str().map(str::to_owned),
            line: serde_json::to_vec(line).unwrap(),
            canonical: crate::restore::canonical::from_export_line(line, true),
        }
    }

    #[test]
    fn a_sample_per_kind_leaves_out_disabled_devices_modules_and_keyless_ones() {
        let sas = |id: &str, status: &str| {
            json!({"id": id, "status": status, "authentication": {"type": "sas",
                "symmetricKey": {"primaryKey": "a2V5LWtleS1rZXkta2V5LQ==", "secondaryKey": "c2Vj"}},
                "capabilities": {"iotEdge": false}})
        };
        let mut lines: Vec<Value> = (0..10).map(|i| sas(&format!("d{i}"), "enabled")).collect();
        lines.push(sas("off", "disabled"));
        let mut edge = sas("gw", "enabled");
        edge["capabilities"]["iotEdge"] = json!(true);
        lines.push(edge);
        lines.push(
            json!({"id": "x", "status": "enabled", "authentication": {"type": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": "AB", "secondaryThumbprint": null}}}),
        );
        lines.push(
            json!({"id": "d1", "moduleId": "m", "authentication": {"type": "sas",
            "symmetricKey": {"primaryKey": "bW9kLWtleQ==", "secondaryKey": "c2Vj"}}}),
        );
        let records: Vec<_> = lines.iter().map(record).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let choice = choose(&records, 3, &mut rng);
        let kinds: Vec<Kind> = choice.candidates.iter().map(|c| c.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Sas).count(), 3);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Edge).count(), 1);
        assert!(
            !choice
                .candidates
                .iter()
                .any(|c| c.id == "off" || c.id == "x")
        );
        assert_eq!(choice.available[&Kind::X509], 1);
        let shown = format!("{:?}", choice.candidates);
        assert!(!shown.contains("a2V5"), "{shown}");
    }
}
