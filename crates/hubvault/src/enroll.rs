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
//! A **hub** snapshot becomes individual enrollments ([`device_enrollment`]): registration id =
//! device id, the device's own symmetric keys (devices re-provision without new secrets), the
//! `--iot-hub` target, initial twin = tags + desired properties, the edge flag and the status.
//! Modules are not enrollable (counted); x509 devices (the export holds only thumbprints, DPS
//! needs the certificate or a CA-backed group) and ids DPS does not take are skipped and named;
//! edge children are enrolled, and their parent links must be made on the hub after they
//! register.
//!
//! `mirror` also deletes what the instance has and the snapshot lacks, last, ETag-safe, under
//! the same brake as a hub's mirror (10 % of the instance by default, none when the snapshot
//! holds nothing, `--max-delete` to allow more).
//!
//! Must not: delete before every create and update is done, or past the brake.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::dps::{BulkMode, DpsClient, ItemError, Kind};
use crate::pipeline::Identities;
use crate::restore::plan::Mode;
use crate::snapshot::manifest::{DEVICES, ENROLLMENT_GROUPS, ENROLLMENTS};
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
        "snapshot {id} of {hub} is a hub snapshot: its devices become enrollments that point at \
         a hub, so name it; {}",
        crate::diagnostic::fix_text(self)
    )]
    NoIotHub { id: String, hub: String },
    #[error(
        "mirror into {dps} would delete {deletes} of its {live} enrollments and groups, {why}; \
         the snapshot holds {in_snapshot}. Nothing was changed. {}",
        crate::diagnostic::fix_text(self)
    )]
    MirrorBrake {
        dps: String,
        deletes: u64,
        live: u64,
        in_snapshot: u64,
        why: String,
    },
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
            Error::NoIotHub { .. } => "enroll_no_iot_hub",
            Error::MirrorBrake { .. } => "restore_mirror_brake",
            Error::Snapshot(e) => e.code(),
            Error::Dps(e) => e.code(),
            Error::Task(_) => "enroll_task",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::NoIotHub { .. } => Some(
                "pass --iot-hub HUB: the hub (linked to the DPS) the devices will register into"
                    .to_owned(),
            ),
            Error::MirrorBrake { deletes, .. } => Some(format!(
                "Check the plan with --dry-run, and if those deletes are meant, pass --max-delete \
                 {deletes} (or a share, e.g. --max-delete 100%)"
            )),
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

/// Keys never print.
impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wanted({}, <attestation redacted>)", self.id)
    }
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
        let same_fields = agrees(&comparable(&w.enrollment), &h.enrollment);
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

/// Whether `have` holds every field of `want` with the same value (what DPS adds by default,
/// such as a reprovision policy the snapshot did not name, is not a difference).
fn agrees(want: &Value, have: &Value) -> bool {
    match want.as_object() {
        Some(fields) => fields
            .iter()
            .all(|(k, v)| have.get(k).unwrap_or(&Value::Null) == v),
        None => want == have,
    }
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
    /// Of a hub snapshot: modules (not enrollable), and devices skipped with why.
    pub modules: u64,
    pub skipped: Vec<Skipped>,
    /// Edge children enrolled: their parent links are made on the hub, after they register.
    pub children: Vec<String>,
    /// Ids on the instance that the snapshot lacks (what a `mirror` would delete).
    pub only_live: Vec<String>,
    /// `mirror`: how many of them it deletes (or, in a dry run, would).
    pub deleted: u64,
    /// A dry run whose real run the mirror brake would refuse: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brake: Option<String>,
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

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

impl From<ItemError> for Failed {
    fn from(e: ItemError) -> Failed {
        Failed {
            id: e.id,
            code: e.code.to_string(),
            message: e.status,
        }
    }
}

impl EnrollReport {
    /// Whether the instance differs from the snapshot (for `diff`): something to create or
    /// update, or something only the instance has.
    pub fn differs(&self) -> bool {
        let c = |k: &Counts| {
            k.create
                .saturating_add(k.update)
                .saturating_add(k.conflicts)
        };
        c(&self.enrollments) > 0 || c(&self.enrollment_groups) > 0 || !self.only_live.is_empty()
    }

    /// Nothing failed, conflicted or was skipped (exit 0).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.conflicts.is_empty()
            && self.skipped.is_empty()
            && self.brake.is_none()
    }
}

/// What a hub device line becomes.
#[derive(Debug)]
pub enum FromDevice {
    Enrollment(Wanted),
    Module,
    /// Enrolled, and a child of the edge device named (its link is re-made on the hub).
    Child(Wanted, String),
    Skipped(Skipped),
}

/// A hub export line as an individual enrollment pointing at `hub` (a host name).
pub fn device_enrollment(line: &Value, hub: &str) -> FromDevice {
    let id = line
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if line.get("moduleId").is_some_and(|m| !m.is_null()) {
        return FromDevice::Module;
    }
    let skip = |reason: &str| {
        FromDevice::Skipped(Skipped {
            id: id.clone(),
            reason: reason.to_owned(),
        })
    };
    if let Err(reason) = registration_id(&id) {
        return skip(reason);
    }
    let auth = line.get("authentication").unwrap_or(&Value::Null);
    let keys = auth.get("symmetricKey").unwrap_or(&Value::Null);
    let (Some(primary), Some(secondary)) = (
        keys.get("primaryKey").and_then(Value::as_str),
        keys.get("secondaryKey").and_then(Value::as_str),
    ) else {
        return skip(
            "an x509 (or keyless) device: the export holds only thumbprints, and DPS needs the \
             certificate; enroll it with an enrollment group backed by its CA",
        );
    };
    let mut desired = line
        .pointer("/properties/desired")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(d) = desired.as_object_mut() {
        d.retain(|k, _| !k.starts_with('$'));
    }
    let edge = line
        .pointer("/capabilities/iotEdge")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let status = if line.get("status").and_then(Value::as_str) == Some("disabled") {
        "disabled"
    } else {
        "enabled"
    };
    let wanted = Wanted {
        id: id.clone(),
        enrollment: serde_json::json!({
            "registrationId": id,
            "deviceId": id,
            "attestation": {"type": "symmetricKey"},
            "capabilities": {"iotEdge": edge},
            "iotHubHostName": hub,
            "initialTwin": {
                "tags": line.get("tags").cloned().unwrap_or_else(|| serde_json::json!({})),
                "properties": {"desired": desired},
            },
            "provisioningStatus": status,
        }),
        attestation: serde_json::json!({"type": "symmetricKey",
            "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}}),
    };
    match crate::restore::lines::parent_of(line) {
        Some(parent) => FromDevice::Child(wanted, parent),
        None => FromDevice::Enrollment(wanted),
    }
}

/// Whether DPS takes `id` as a registration id: 1–128 characters of letters, digits and
/// `: . _ -`, beginning and ending with a letter or digit (case-insensitive).
pub fn registration_id(id: &str) -> Result<(), &'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || ":._-".contains(c);
    if id.is_empty() || id.len() > 128 {
        return Err("its id is not a DPS registration id (1 to 128 characters)");
    }
    if !id.chars().all(ok_char) {
        return Err(
            "its id is not a DPS registration id (letters, digits and : . _ - only); enroll it \
             under another id by hand",
        );
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !id.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(
            "its id is not a DPS registration id (it must begin and end with a letter or digit)",
        );
    }
    Ok(())
}

pub struct EnrollOptions {
    pub mode: Mode,
    /// `mirror`: how many enrollments and groups it may delete (default: the brake's).
    pub max_delete: Option<crate::restore::MaxDelete>,
    pub dry_run: bool,
    /// `OLD=NEW` host names.
    pub map_hubs: Vec<(String, String)>,
    /// For a hub snapshot: the host name of the hub its devices will register into.
    pub iot_hub: Option<String>,
}

/// Restore DPS snapshot `m` into the instance behind `client`.
pub async fn run(
    store: Arc<dyn Store>,
    m: &Manifest,
    identities: Identities,
    client: &DpsClient,
    options: &EnrollOptions,
) -> Result<EnrollReport, Error> {
    if !m.is_dps() && options.iot_hub.is_none() {
        return Err(Error::NoIotHub {
            id: m.id.clone(),
            hub: m.hub.clone(),
        });
    }
    m.check_not_refused()?;
    let mut report = EnrollReport {
        dps: client.host().to_owned(),
        snapshot: m.id.clone(),
        dry_run: options.dry_run,
        ..EnrollReport::default()
    };
    let objects: &[(Kind, &str)] = if m.is_dps() {
        &[
            (Kind::Individual, ENROLLMENTS),
            (Kind::Group, ENROLLMENT_GROUPS),
        ]
    } else {
        &[(Kind::Individual, DEVICES)]
    };
    let (mut live_total, mut snapshot_total) = (0u64, 0u64);
    let mut deletes: Vec<(Kind, Value)> = Vec::new();
    // The brake is judged on the whole plan before anything is written.
    let mut plans = Vec::new();
    for &(kind, object) in objects {
        let mut wanted = match &options.iot_hub {
            Some(hub) if !m.is_dps() => {
                let lines = read_lines(&store, m, object, &identities).await?;
                from_devices(&lines, hub, &mut report)
            }
            _ => read_object(&store, m, object, &identities).await?,
        };
        for w in &mut wanted {
            map_hubs(&mut w.enrollment, &options.map_hubs);
        }
        let have = live(client, kind).await?;
        live_total = live_total.saturating_add(have.len() as u64);
        snapshot_total = snapshot_total.saturating_add(wanted.len() as u64);
        let (gone, only_live) = lacking(kind, &wanted, &have);
        if options.mode == Mode::Mirror {
            deletes.extend(gone.into_iter().map(|item| (kind, item)));
        }
        report.only_live.extend(only_live);
        let p = plan_with_keys(client, kind, &wanted, have, options.mode).await?;
        let counts = Counts {
            create: p.create.len() as u64,
            update: p.update.len() as u64,
            unchanged: p.unchanged.len() as u64,
            conflicts: p.conflicts.len() as u64,
        };
        report.conflicts.extend(p.conflicts.iter().cloned());
        match kind {
            Kind::Individual => report.enrollments = counts,
            Kind::Group => report.enrollment_groups = counts,
        }
        plans.push((kind, p));
    }
    let delete_count = deletes.len() as u64;
    if let Some(why) =
        crate::restore::plan::brake(delete_count, live_total, snapshot_total, options.max_delete)
    {
        if options.dry_run {
            report.deleted = delete_count;
            report.brake = Some(format!(
                "a real run would be refused: it would delete {delete_count} of {live_total}, {why}; \
                 pass --max-delete to allow it"
            ));
            return Ok(report);
        }
        return Err(Error::MirrorBrake {
            dps: client.host().to_owned(),
            deletes: delete_count,
            live: live_total,
            in_snapshot: snapshot_total,
            why,
        });
    }
    report.deleted = delete_count;
    if options.dry_run {
        return Ok(report);
    }
    for (kind, p) in &plans {
        report.failed.extend(apply(client, *kind, p).await?);
    }
    // Deletes last, so an interrupted mirror has removed as little as possible.
    for kind in [Kind::Individual, Kind::Group] {
        let items: Vec<Value> = deletes
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect();
        let refused = client.bulk(kind, BulkMode::Delete, &items).await?;
        report.failed.extend(refused.into_iter().map(Failed::from));
    }
    Ok(report)
}

/// What the instance has and `wanted` lacks: delete items (id and etag) and their ids.
fn lacking(
    kind: Kind,
    wanted: &[Wanted],
    have: &BTreeMap<String, Have>,
) -> (Vec<Value>, Vec<String>) {
    let in_snapshot: std::collections::BTreeSet<String> =
        wanted.iter().map(|w| w.id.to_ascii_lowercase()).collect();
    have.iter()
        .filter(|(id, _)| !in_snapshot.contains(*id))
        .filter_map(|(_, h)| {
            let id = h.enrollment.get(kind.id_field())?.as_str()?;
            let mut item = serde_json::json!({kind.id_field(): id});
            if let Some(e) = &h.etag {
                item["etag"] = Value::String(e.clone());
            }
            Some((item, id.to_owned()))
        })
        .unzip()
}

/// Plan `wanted` against `have`, reading the keys of the ids only keys can tell apart.
async fn plan_with_keys(
    client: &DpsClient,
    kind: Kind,
    wanted: &[Wanted],
    mut have: BTreeMap<String, Have>,
    mode: Mode,
) -> Result<KindPlan, Error> {
    let first = plan(wanted, &have, mode);
    if first.needs_keys.is_empty() {
        return Ok(first);
    }
    for id in &first.needs_keys {
        let attestation = client.attestation(kind, id).await?;
        if let Some(h) = have.get_mut(&id.to_ascii_lowercase()) {
            h.attestation = Some(attestation);
        }
    }
    Ok(plan(wanted, &have, mode))
}

/// What the instance holds of `kind`, by lower-cased id (without keys).
async fn live(client: &DpsClient, kind: Kind) -> Result<BTreeMap<String, Have>, Error> {
    Ok(client
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
        .collect())
}

/// Write the plan's creates and updates (keys included); what the service refused.
async fn apply(client: &DpsClient, kind: Kind, p: &KindPlan) -> Result<Vec<Failed>, Error> {
    let mut refused: Vec<ItemError> = client.bulk(kind, BulkMode::Create, &p.create).await?;
    refused.extend(
        client
            .bulk(kind, BulkMode::UpdateIfMatchEtag, &p.update)
            .await?,
    );
    Ok(refused.into_iter().map(Failed::from).collect())
}

/// A hub snapshot's device lines as enrollments; modules, skips and children go in `report`.
fn from_devices(lines: &[Value], hub: &str, report: &mut EnrollReport) -> Vec<Wanted> {
    let mut out = Vec::new();
    for line in lines {
        match device_enrollment(line, hub) {
            FromDevice::Enrollment(w) => out.push(w),
            FromDevice::Child(w, _) => {
                report.children.push(w.id.clone());
                out.push(w);
            }
            FromDevice::Module => report.modules = report.modules.saturating_add(1),
            FromDevice::Skipped(s) => report.skipped.push(s),
        }
    }
    out
}

/// The records of one object of a DPS snapshot (none when the snapshot has no such object).
async fn read_object(
    store: &Arc<dyn Store>,
    m: &Manifest,
    object: &str,
    identities: &Identities,
) -> Result<Vec<Wanted>, Error> {
    Ok(read_lines(store, m, object, identities)
        .await?
        .into_iter()
        .map(|v| Wanted {
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            enrollment: v.get("enrollment").cloned().unwrap_or(Value::Null),
            attestation: v.get("attestation").cloned().unwrap_or(Value::Null),
        })
        .collect())
}

/// The records of one object of a snapshot as JSON (none when it has no such object). They
/// hold keys: in memory only.
async fn read_lines(
    store: &Arc<dyn Store>,
    m: &Manifest,
    object: &str,
    identities: &Identities,
) -> Result<Vec<Value>, Error> {
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
    tokio::task::spawn_blocking(move || -> Result<Vec<Value>, Error> {
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
            out.push(v);
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
