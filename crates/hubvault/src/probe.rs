//! The device probe: proof that restored identities work, by acting as their devices. A sample
//! of each kind (SAS devices, X.509 devices where a test certificate is given, edge devices,
//! children of edge devices) authenticates with the keys the snapshot holds and sends one
//! message (`device::telemetry`). Drills use it; the failover runbook will too.
//!
//! X.509 devices authenticate with their certificate in the TLS handshake, and the snapshot
//! holds only their thumbprints: the probe acts as one only with a certificate the user gives
//! (`device::certificate`), matched to its device by thumbprint or named. Without one that kind
//! is reported "not measured", never counted as passed. A device authenticated by an X.509 CA
//! chain cannot be probed: IoT Hub does not accept X.509 CA authentication over HTTPS, the
//! probe's protocol.
//!
//! Owns: choosing the sample ([`choose`]), sending and the per-kind result ([`ProbeReport`]).
//! Must not: write the registry, print, or let a key out of a [`Candidate`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::device::certificate::DeviceCertificate;
use crate::device::telemetry::{self, DeviceTarget};
use crate::restore::plan::SnapshotRecord;
use crate::restore::sample::{Kind, kind_of};

/// The kinds a probe reports, in order.
pub const KINDS: [Kind; 4] = [Kind::Sas, Kind::X509, Kind::Edge, Kind::Child];

/// A device to try, with its own primary key or the certificate given for it (neither shown by
/// `Debug`).
#[derive(Clone)]
pub struct Candidate {
    pub id: String,
    pub kind: Kind,
    credential: Credential,
}

#[derive(Clone)]
enum Credential {
    Key(String),
    Certificate(Arc<DeviceCertificate>),
}

impl Candidate {
    /// The device's own primary key (for a sender of this crate; never printed); `None` for a
    /// device that authenticates with a certificate.
    pub(crate) fn key(&self) -> Option<&str> {
        match &self.credential {
            Credential::Key(k) => Some(k),
            Credential::Certificate(_) => None,
        }
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = match &self.credential {
            Credential::Key(_) => "key redacted".to_owned(),
            Credential::Certificate(c) => format!("certificate {}", c.file.display()),
        };
        write!(f, "Candidate({} {}, {with})", self.kind.as_str(), self.id)
    }
}

/// A certificate that no device of the snapshot can be probed with, and why.
#[derive(Debug, Clone)]
pub struct Unusable {
    /// `FILE` or `DEVICE=FILE`, as given.
    pub certificate: String,
    pub kind: Kind,
    pub why: String,
}

/// What the snapshot holds of each kind, and why a kind is not tried.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub candidates: Vec<Candidate>,
    /// Enabled devices of each kind in the snapshot.
    pub available: BTreeMap<Kind, usize>,
    /// Certificates given that match no device that can be probed with one (a failed try).
    pub unusable: Vec<Unusable>,
    /// Whether any certificate was given (the X.509 note says how to give one otherwise).
    pub certificates_given: bool,
}

/// Up to `per_kind` enabled devices of each SAS-authenticated kind, at random, and every device
/// a certificate in `certificates` is for. Modules and disabled devices are left out (a disabled
/// device is refused by design).
pub fn choose(
    records: &[SnapshotRecord],
    per_kind: usize,
    certificates: &[Arc<DeviceCertificate>],
    rng: &mut impl Rng,
) -> Choice {
    let mut choice = Choice {
        certificates_given: !certificates.is_empty(),
        ..Choice::default()
    };
    let devices: Vec<&SnapshotRecord> = records.iter().filter(|r| r.module_id.is_none()).collect();
    let mut by_certificate = HashSet::new();
    for cert in certificates {
        match for_certificate(&devices, cert) {
            Ok(r) => {
                by_certificate.insert(r.id.clone());
                choice.candidates.push(Candidate {
                    id: r.id.clone(),
                    kind: kind_of(&r.canonical),
                    credential: Credential::Certificate(cert.clone()),
                });
            }
            Err((kind, why)) => choice.unusable.push(Unusable {
                certificate: cert.label(),
                kind,
                why,
            }),
        }
    }
    let mut by_kind: BTreeMap<Kind, Vec<Candidate>> = BTreeMap::new();
    for r in devices {
        let c = &r.canonical;
        if c.get("status").and_then(Value::as_str) == Some("disabled") {
            continue;
        }
        let kind = kind_of(c);
        let n = choice.available.entry(kind).or_default();
        *n = n.saturating_add(1);
        let key = c
            .get("authentication")
            .and_then(|a| a.get("symmetricKey"))
            .and_then(|k| k.get("primaryKey"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        if let Some(key) = key.filter(|_| !by_certificate.contains(&r.id)) {
            by_kind.entry(kind).or_default().push(Candidate {
                id: r.id.clone(),
                kind,
                credential: Credential::Key(key.to_owned()),
            });
        }
    }
    for list in by_kind.values_mut() {
        list.shuffle(rng);
        choice.candidates.extend(list.drain(..).take(per_kind));
    }
    choice
}

/// The device `cert` is for: the one it names, else the one whose thumbprint it is; refused
/// (with the kind to report it under) when there is none, or it cannot be probed with it.
fn for_certificate<'r>(
    devices: &[&'r SnapshotRecord],
    cert: &DeviceCertificate,
) -> Result<&'r SnapshotRecord, (Kind, String)> {
    let auth = |r: &'r SnapshotRecord| r.canonical.get("authentication");
    let found = match &cert.device {
        Some(id) => devices.iter().find(|r| &r.id == id).ok_or_else(|| {
            (
                Kind::X509,
                format!("device {id} is not in the snapshot (modules cannot be probed)"),
            )
        })?,
        None => devices
            .iter()
            .find(|r| {
                auth(r).is_some_and(|a| {
                    ["primaryThumbprint", "secondaryThumbprint"]
                        .iter()
                        .any(|k| {
                            a["x509Thumbprint"][k]
                                .as_str()
                                .is_some_and(|t| cert.matches(t))
                        })
                })
            })
            .ok_or_else(|| {
                (
                    Kind::X509,
                    format!(
                        "its thumbprint (SHA-1 {}) is no device's in the snapshot; name the \
                         device it is for: --x509-cert DEVICE={}",
                        cert.sha1,
                        cert.file.display()
                    ),
                )
            })?,
    };
    let kind = kind_of(&found.canonical);
    let auth_type = auth(found)
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if found.canonical.get("status").and_then(Value::as_str) == Some("disabled") {
        return Err((
            kind,
            format!(
                "device {} is disabled in the snapshot, and a disabled device is refused by design",
                found.id
            ),
        ));
    }
    if auth_type == "certificateAuthority" {
        return Err((
            kind,
            format!(
                "device {} authenticates with an X.509 CA chain, which IoT Hub does not accept \
                 over HTTPS (the probe's protocol)",
                found.id
            ),
        ));
    }
    Ok(found)
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
            let sent = match &c.credential {
                Credential::Key(key) => telemetry::send(http, target, &c.id, key, body).await,
                Credential::Certificate(cert) => {
                    telemetry::send_with_certificate(&cert.http, target, &c.id, body).await
                }
            };
            let attempt = match sent {
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
        for u in choice.unusable.iter().filter(|u| u.kind == kind) {
            result.tried = result.tried.saturating_add(1);
            result.devices.push(Tried {
                id: u.certificate.clone(),
                status: None,
                accepted: false,
                error: Some(format!("certificate not used: {}", u.why)),
                assigned_hub: None,
                assigned_device_id: None,
            });
        }
        let available = choice.available.get(&kind).copied().unwrap_or(0);
        if result.tried == 0 {
            result.note = Some(if kind == Kind::X509 && available > 0 {
                format!(
                    "not measured: {available} X.509 device(s) restored; they authenticate with \
                     their own certificate, which the snapshot does not hold: give one with \
                     --x509-cert [DEVICE=]FILE to probe them"
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
        let choice = choose(&records, 3, &[], &mut rng);
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
