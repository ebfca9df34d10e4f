//! Restore a DPS snapshot into a DPS instance: its enrollments and groups back, keys included,
//! optionally pointed at other hubs (`--map-hub OLD=NEW`: the DR path when a hub is lost).
//!
//! Plan (pure, [`plan`]): each snapshot record against the live instance → create, update,
//! unchanged, or (in `create`) conflict. "Equal" ignores what DPS itself sets (`etag`,
//! timestamps, `registrationState`); keys are compared through `attestationmechanism`, since a
//! GET never shows them. Apply: bulk writes of ten, and **every update sends the attestation
//! keys explicitly** — a PUT of a GET body (which has none) makes DPS mint new keys and locks
//! every device out. Updates are ETag-safe against the etag read while planning.
//!
//! Must not: restore a hub snapshot (devices are not enrollments: that is another path, not
//! built yet), or delete anything (`mirror` into DPS is not built yet).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::dps::{BulkMode, DpsClient, ItemError, Kind};
use crate::pipeline::Identities;
use crate::restore::plan::Mode;
use crate::snapshot::manifest::{ENROLLMENT_GROUPS, ENROLLMENTS};
use crate::snapshot::reader::ObjectReader;
use crate::snapshot::{self, Manifest};
use crate::store::Store;

/// Fields DPS sets itself: never compared, never sent.
const SERVICE_FIELDS: [&str; 4] = [
    "etag",
    "createdDateTimeUtc",
    "lastUpdatedDateTimeUtc",
    "registrationState",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "snapshot {id} of {hub} is a hub snapshot (devices); only DPS snapshots restore into DPS \
         here (a hub's devices as enrollments come with a later release)"
    )]
    NotDps { id: String, hub: String },
    #[error("mirror into DPS is not built yet; use --mode create or --mode upsert")]
    MirrorNotBuilt,
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Dps(#[from] crate::hub::Error),
    #[error("reading the snapshot failed: {0}")]
    Task(String),
}

impl crate::diagnostic::Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotDps { .. } => "enroll_not_a_dps_snapshot",
            Error::MirrorNotBuilt => "enroll_mirror_not_built",
            Error::Snapshot(e) => e.code(),
            Error::Dps(e) => e.code(),
            Error::Task(_) => "enroll_task",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::NotDps { .. } => {
                Some("name a DPS snapshot (`hubvault snapshots --dps DPS`)".to_owned())
            }
            Error::MirrorNotBuilt => Some("pass --mode upsert".to_owned()),
            Error::Snapshot(e) => e.fix(),
            Error::Dps(e) => e.fix(),
            Error::Task(_) => None,
        }
    }
}

/// One snapshot record: the enrollment as it should be (service fields gone, hubs mapped) and
/// its attestation with keys.
#[derive(Clone)]
pub struct Wanted {
    pub id: String,
    pub enrollment: Value,
    pub attestation: Value,
}

/// What the instance has for one id.
#[derive(Clone)]
pub struct Have {
    pub enrollment: Value,
    /// Read only for ids whose other fields are equal (keys decide then).
    pub attestation: Option<Value>,
    pub etag: Option<String>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
    pub conflicts: u64,
}

/// The plan for one kind.
#[derive(Default)]
pub struct KindPlan {
    pub create: Vec<Value>,
    pub update: Vec<Value>,
    pub unchanged: Vec<String>,
    pub conflicts: Vec<String>,
    /// Ids equal but for keys not read yet: read their attestation, plan again.
    pub needs_keys: Vec<String>,
}

/// Plan (pure) `wanted` against `have` (by lower-cased id: DPS ids are case-insensitive).
pub fn plan(wanted: &[Wanted], have: &BTreeMap<String, Have>, mode: Mode) -> KindPlan {
    let mut out = KindPlan::default();
    for w in wanted {
        let full = with_attestation(&w.enrollment, &w.attestation);
        let Some(h) = have.get(&w.id.to_ascii_lowercase()) else {
            out.create.push(full);
            continue;
        };
        let same_fields = comparable(&w.enrollment) == comparable(&h.enrollment);
        let same_keys = match &h.attestation {
            Some(a) => Some(a == &w.attestation),
            None if same_fields => {
                out.needs_keys.push(w.id.clone());
                continue;
            }
            None => None,
        };
        if same_fields && same_keys == Some(true) {
            out.unchanged.push(w.id.clone());
        } else if mode == Mode::Create {
            out.conflicts.push(w.id.clone());
        } else {
            let mut update = full;
            if let (Some(obj), Some(etag)) = (update.as_object_mut(), &h.etag) {
                obj.insert("etag".into(), Value::String(etag.clone()));
            }
            out.update.push(update);
        }
    }
    out
}

/// The enrollment without what DPS sets and without its attestation (keys compared apart).
fn comparable(enrollment: &Value) -> Value {
    let mut v = enrollment.clone();
    if let Some(obj) = v.as_object_mut() {
        for f in SERVICE_FIELDS {
            obj.remove(f);
        }
        obj.remove("attestation");
    }
    v
}

/// What a write sends: the enrollment with the snapshot's attestation, keys included.
fn with_attestation(enrollment: &Value, attestation: &Value) -> Value {
    let mut v = comparable(enrollment);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("attestation".into(), attestation.clone());
    }
    v
}

/// Point an enrollment at other hubs: `iotHubHostName` and every `iotHubs` entry named in
/// `map` (host names, compared without case).
pub fn map_hubs(enrollment: &mut Value, map: &[(String, String)]) {
    let mapped = |h: &str| {
        map.iter()
            .find(|(old, _)| old.eq_ignore_ascii_case(h))
            .map(|(_, new)| new.clone())
    };
    if let Some(new) = enrollment
        .get("iotHubHostName")
        .and_then(Value::as_str)
        .and_then(mapped)
    {
        enrollment["iotHubHostName"] = Value::String(new);
    }
    if let Some(hubs) = enrollment.get_mut("iotHubs").and_then(Value::as_array_mut) {
        for h in hubs.iter_mut() {
            if let Some(new) = h.as_str().and_then(mapped) {
                *h = Value::String(new);
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct EnrollReport {
    pub dps: String,
    pub snapshot: String,
    pub dry_run: bool,
    pub enrollments: Counts,
    pub enrollment_groups: Counts,
    /// Ids each kind's bulk writes refused: `{id, code, message}`.
    pub failed: Vec<Failed>,
    pub conflicts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Failed {
    pub id: String,
    pub code: String,
    pub message: String,
}

impl EnrollReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.conflicts.is_empty()
    }
}

pub struct EnrollOptions {
    pub mode: Mode,
    pub dry_run: bool,
    /// `OLD=NEW` host names.
    pub map_hubs: Vec<(String, String)>,
}

/// Restore DPS snapshot `m` into the instance behind `client`.
pub async fn run(
    store: Arc<dyn Store>,
    m: &Manifest,
    identities: Identities,
    client: &DpsClient,
    options: &EnrollOptions,
) -> Result<EnrollReport, Error> {
    if !m.is_dps() {
        return Err(Error::NotDps {
            id: m.id.clone(),
            hub: m.hub.clone(),
        });
    }
    if options.mode == Mode::Mirror {
        return Err(Error::MirrorNotBuilt);
    }
    m.check_not_refused()?;
    let mut report = EnrollReport {
        dps: client.host().to_owned(),
        snapshot: m.id.clone(),
        dry_run: options.dry_run,
        ..EnrollReport::default()
    };
    for (kind, object) in [
        (Kind::Individual, ENROLLMENTS),
        (Kind::Group, ENROLLMENT_GROUPS),
    ] {
        let mut wanted = read_object(&store, m, object, &identities).await?;
        for w in &mut wanted {
            map_hubs(&mut w.enrollment, &options.map_hubs);
        }
        let mut have: BTreeMap<String, Have> = client
            .query_all(kind)
            .await?
            .into_iter()
            .filter_map(|e| {
                let id = e.get(kind.id_field())?.as_str()?.to_ascii_lowercase();
                let etag = e.get("etag").and_then(Value::as_str).map(str::to_owned);
                Some((
                    id,
                    Have {
                        enrollment: e,
                        attestation: None,
                        etag,
                    },
                ))
            })
            .collect();
        let mut p = plan(&wanted, &have, options.mode);
        if !p.needs_keys.is_empty() {
            for id in &p.needs_keys {
                let attestation = client.attestation(kind, id).await?;
                if let Some(h) = have.get_mut(&id.to_ascii_lowercase()) {
                    h.attestation = Some(attestation);
                }
            }
            p = plan(&wanted, &have, options.mode);
        }
        let counts = Counts {
            create: p.create.len() as u64,
            update: p.update.len() as u64,
            unchanged: p.unchanged.len() as u64,
            conflicts: p.conflicts.len() as u64,
        };
        report.conflicts.extend(p.conflicts.iter().cloned());
        if !options.dry_run {
            let mut refused: Vec<ItemError> =
                client.bulk(kind, BulkMode::Create, &p.create).await?;
            refused.extend(
                client
                    .bulk(kind, BulkMode::UpdateIfMatchEtag, &p.update)
                    .await?,
            );
            report.failed.extend(refused.into_iter().map(|e| Failed {
                id: e.id,
                code: e.code.to_string(),
                message: e.status,
            }));
        }
        match kind {
            Kind::Individual => report.enrollments = counts,
            Kind::Group => report.enrollment_groups = counts,
        }
    }
    Ok(report)
}

/// The records of one object of a DPS snapshot (none when the snapshot has no such object).
async fn read_object(
    store: &Arc<dyn Store>,
    m: &Manifest,
    object: &str,
    identities: &Identities,
) -> Result<Vec<Wanted>, Error> {
    if m.object(object).is_none() {
        return Ok(Vec::new());
    }
    let (store, m, object, identities) = (
        store.clone(),
        m.clone(),
        object.to_owned(),
        identities.clone(),
    );
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<Vec<Wanted>, Error> {
        let reader = ObjectReader::open(store.as_ref(), &handle, &m, &object, &identities)?;
        let mut out = Vec::new();
        for record in reader {
            let record = record?;
            let v: Value =
                serde_json::from_slice(&record.line).map_err(|e| snapshot::Error::Damaged {
                    snapshot: m.id.clone(),
                    object: object.clone(),
                    detail: format!("a record is not JSON: {e}"),
                })?;
            out.push(Wanted {
                id: record.id.clone(),
                enrollment: v.get("enrollment").cloned().unwrap_or(Value::Null),
                attestation: v.get("attestation").cloned().unwrap_or(Value::Null),
            });
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use super::*;

    fn wanted(id: &str, key: &str, hub: &str) -> Wanted {
        Wanted {
            id: id.into(),
            enrollment: json!({"registrationId": id, "iotHubHostName": hub, "etag": "old",
                               "registrationState": {"status": "assigned"},
                               "attestation": {"type": "symmetricKey"}}),
            attestation: json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": key}}),
        }
    }

    fn have(w: &Wanted, key: Option<&str>, etag: &str) -> Have {
        let mut e = w.enrollment.clone();
        e["etag"] = json!(etag);
        e["createdDateTimeUtc"] = json!("2026-12-06T00:00:00Z");
        Have {
            enrollment: e,
            attestation: key
                .map(|k| json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": k}})),
            etag: Some(etag.into()),
        }
    }

    #[test]
    fn updates_carry_keys_and_the_targets_etag_and_equal_needs_keys_first() {
        let a = wanted("a", "k1", "hub-a.azure-devices.net");
        let b = wanted("b", "k2", "hub-a.azure-devices.net");
        let c = wanted("c", "k3", "hub-a.azure-devices.net");
        let mut live = BTreeMap::new();
        live.insert("a".to_owned(), have(&a, None, "e-a"));
        live.insert("b".to_owned(), have(&b, Some("other"), "e-b"));
        let first = plan(&[a.clone(), b.clone(), c.clone()], &live, Mode::Upsert);
        assert_eq!(first.needs_keys, ["a"], "equal fields: keys decide");
        assert_eq!(first.create.len(), 1);
        assert_eq!(first.update.len(), 1, "b's keys differ");
        let update = &first.update[0];
        assert_eq!(update["attestation"]["symmetricKey"]["primaryKey"], "k2");
        assert_eq!(
            update["etag"], "e-b",
            "the target's etag, not the snapshot's"
        );
        assert!(update.get("registrationState").is_none());

        live.get_mut("a").unwrap().attestation =
            Some(json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1"}}));
        let second = plan(&[a, b, c], &live, Mode::Create);
        assert_eq!(second.unchanged, ["a"]);
        assert_eq!(second.conflicts, ["b"]);
    }

    #[test]
    fn map_hubs_retargets_the_host_and_the_list() {
        let mut e = json!({"iotHubHostName": "HUB-A.azure-devices.net",
                           "iotHubs": ["hub-a.azure-devices.net", "hub-c.azure-devices.net"]});
        map_hubs(
            &mut e,
            &[(
                "hub-a.azure-devices.net".into(),
                "hub-b.azure-devices.net".into(),
            )],
        );
        assert_eq!(e["iotHubHostName"], "hub-b.azure-devices.net");
        assert_eq!(
            e["iotHubs"],
            json!(["hub-b.azure-devices.net", "hub-c.azure-devices.net"])
        );
    }
}
