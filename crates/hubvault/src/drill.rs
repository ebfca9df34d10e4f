//! `drill`: restore a snapshot into a scratch hub, prove devices connect with their original
//! keys, verify, and report what the drill proved — RTO, RPO, counts restored against expected,
//! differences, the probe per kind — with `--cleanup` removing what it created.
//!
//! The order is the one a real recovery has: devices are probed as soon as the target is usable
//! (import and links done), and verification follows; RTO ends at the probe's success, so the
//! proof is not counted as recovery time. A drill that restored less than the snapshot holds
//! fails, whatever the hub's jobs said: counts come from reading the target.
//!
//! Owns: the scratch-target check, the order of the steps, the verdict, the figures and the
//! report's document ([`DrillReport::document`]).
//! Must not: know clap, print, delete anything the drill did not create (a hub that held no
//! device when the drill began holds only the drill's devices afterwards).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::device::certificate::DeviceCertificate;
use crate::device::telemetry::DeviceTarget;
use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::{self, HubClient};
use crate::pipeline::Identities;
use crate::preflight::Checks;
use crate::probe::{self, ProbeReport};
use crate::probe_dps::{self, ViaDps};
use crate::report::{Document, Figure, Status, Table, Verdict, duration_text};
use crate::restore::outcome::Problem;
use crate::restore::{self, RestoreOptions, RestoreReport, Verify, lines, plan};
use crate::snapshot::Manifest;
use crate::staging::Staging;
use crate::store::Store;
use crate::timeline::{Phase, between, rfc3339, round3};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{hub} holds {identities} device identit(y/ies): a drill restores into a scratch hub \
         only. Nothing was changed. {}",
        fix_text(self)
    )]
    NotScratch { hub: String, identities: u64 },
    #[error(transparent)]
    Restore(#[from] restore::Error),
    /// The restore stopped part-way; what it had written was then removed or left, as said.
    #[error("{source}; {after}")]
    RestoreStopped {
        source: restore::Error,
        after: String,
    },
    #[error("cannot read the drill hub: {0}")]
    Target(#[source] hub::Error),
    #[error(transparent)]
    ViaDps(#[from] probe_dps::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotScratch { .. } => "drill_target_not_empty",
            Error::Restore(e) | Error::RestoreStopped { source: e, .. } => e.code(),
            Error::Target(e) => e.code(),
            Error::ViaDps(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::NotScratch { .. } => Some(
                "name an empty hub with --to, or pass --allow-nonempty-target to drill into this \
                 one (it then mirrors the snapshot: identities the snapshot lacks are deleted)"
                    .to_owned(),
            ),
            Error::Restore(e) | Error::RestoreStopped { source: e, .. } => e.fix(),
            Error::Target(e) => e.fix(),
            Error::ViaDps(e) => e.fix(),
        }
    }
}

/// Targets the figures are judged against (`--rto-target`, `--rpo-target`), in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Targets {
    pub rto: Option<f64>,
    pub rpo: Option<f64>,
}

/// One drill.
pub struct Request<'a> {
    pub store: Arc<dyn Store>,
    pub manifest: &'a Manifest,
    /// When the newest snapshot of the same hub in the store was made.
    pub newest: Option<OffsetDateTime>,
    pub identities: Identities,
    pub client: &'a HubClient,
    pub staging: Option<&'a Staging>,
    pub checks: Checks<'a>,
    /// The restore's options; the drill sets mode `mirror` (and lifts the brake with
    /// `allow_nonempty`). Its timeline is the drill's.
    pub options: RestoreOptions,
    pub allow_nonempty: bool,
    pub cleanup: bool,
    pub targets: Targets,
    /// Devices of each kind the probe tries.
    pub probe_per_kind: usize,
    pub http: reqwest::Client,
    pub device_target: DeviceTarget,
    /// `--via-dps`: the probe registers the devices through this DPS instance.
    pub via_dps: Option<ViaDps<'a>>,
    /// `--x509-cert`: X.509 devices' own certificates; the probe acts as each device one is for.
    pub certificates: Vec<Arc<DeviceCertificate>>,
}

/// What `--cleanup` removed, and what it could not.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cleanup {
    pub deleted_identities: usize,
    pub deleted_configurations: usize,
    /// `--via-dps`: enrollments the drill created in the DPS instance, deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_enrollments: Option<usize>,
    /// Device identities left on the drill hub afterwards (read from the hub).
    pub left_on_target: u64,
    pub could_not: Vec<String>,
}

#[derive(Debug)]
pub struct DrillReport {
    pub hub: String,
    pub snapshot: String,
    pub started: OffsetDateTime,
    pub phases: Vec<Phase>,
    pub restore: RestoreReport,
    pub probe: ProbeReport,
    /// Identities (devices and modules, not the hub's own system modules) in the snapshot.
    pub expected: usize,
    /// Of those, on the drill hub afterwards.
    pub restored: usize,
    /// Whether `restored` and `missing` were read from the hub (false: it could not be read).
    pub counted: bool,
    pub missing: Vec<String>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: f64,
    pub newest_rpo_seconds: Option<f64>,
    pub targets: Targets,
    pub reasons: Vec<String>,
    /// What a reader should know that is not a failure (enrollments left in place).
    pub notes: Vec<String>,
    pub cleanup: Option<Cleanup>,
}

/// Run the drill.
pub async fn run(request: Request<'_>) -> Result<DrillReport, Error> {
    let started = OffsetDateTime::now_utc();
    let mut options = request.options.clone();
    let timeline = options.timeline.clone();
    timeline.begin_at("preflight", started);
    let client = request.client;
    let before = before_anything(&request).await?;
    options.mode = restore::Mode::Mirror;
    if request.allow_nonempty {
        options.max_delete = Some(plan::MaxDelete::Share(10_000));
    }
    let restored = restore::until_usable(
        request.store.clone(),
        request.manifest,
        request.identities.clone(),
        client,
        request.staging,
        &options,
        request.checks,
    )
    .await;
    let (restore_report, usable) = match restored {
        Ok(r) => r,
        Err(e) => return Err(after_a_stopped_restore(client, &before, request.cleanup, e).await),
    };
    let mut drill = DrillReport {
        hub: client.name().to_owned(),
        snapshot: request.manifest.id.clone(),
        started,
        phases: Vec::new(),
        restore: restore_report,
        probe: ProbeReport::default(),
        expected: 0,
        restored: 0,
        counted: false,
        missing: Vec::new(),
        rto_seconds: None,
        rpo_seconds: age(started, &request.manifest.created),
        newest_rpo_seconds: request.newest.map(|n| round3(between(n, started))),
        targets: request.targets,
        reasons: Vec::new(),
        notes: Vec::new(),
        cleanup: None,
    };
    let Some(usable) = usable else {
        drill.reasons.push(
            "preflight stopped the restore before anything was written (see the findings)".into(),
        );
        drill.phases = timeline.phases(OffsetDateTime::now_utc());
        return Ok(drill);
    };
    let choice = probe::choose(
        usable.records(),
        request.probe_per_kind,
        &request.certificates,
        &mut rand::thread_rng(),
    );
    let (report, enrolled) = probe_step(
        (
            &request.http,
            &request.device_target,
            request.via_dps.as_ref(),
        ),
        client.host(),
        usable.records(),
        &choice,
        &timeline,
    )
    .await;
    drill.probe = report;
    if let Some(first) = drill.probe.first_accepted {
        timeline.begin_at("probe", first);
    }
    let probe_done = drill.probe.done.unwrap_or_else(OffsetDateTime::now_utc);
    if drill.probe.passed() {
        drill.rto_seconds = Some(round3(between(started, probe_done)));
    }
    // The probe phase ends where the RTO does; what follows (keys, counts) is verification.
    timeline.begin_at("verification", probe_done);
    let expected = expected_identities(usable.records());
    let created = usable.created().0.to_vec();
    let created_configurations = usable.created().1.to_vec();
    let unfinished = prove(
        (client, request.staging, &options),
        usable,
        &expected,
        &mut drill,
    )
    .await?;
    drill.phases = timeline.phases(OffsetDateTime::now_utc());
    drill.reasons = unfinished;
    drill.reasons.extend(drill.judge());
    clean_up(
        (client, request.cleanup, request.via_dps.as_ref()),
        (&created, &created_configurations),
        enrolled.as_ref(),
        &mut drill,
    )
    .await;
    Ok(drill)
}

/// `--cleanup`: delete what the drill created (and its enrollments); without it, name the
/// enrollments it leaves.
async fn clean_up(
    (client, asked, via_dps): (&HubClient, bool, Option<&ViaDps<'_>>),
    (created, configurations): (&[(String, Option<String>)], &[String]),
    enrolled: Option<&probe_dps::Enrolled>,
    drill: &mut DrillReport,
) {
    if asked {
        let mut done = cleanup(client, created, configurations).await;
        if let (Some(via), Some(e)) = (via_dps, enrolled) {
            done.deleted_enrollments = Some(probe_dps::cleanup(via, e, &mut done.could_not).await);
        }
        drill.cleanup = Some(done);
    } else if let (Some(via), Some(e)) = (via_dps, enrolled) {
        drill.notes.extend(kept_note(&via.name, &e.created()));
    }
}

/// Verification and the count of what was restored. From here on the target holds the drill's
/// writes: a step that cannot finish is returned as a reason the drill fails instead of ending
/// it, so the cleanup still runs. Only a request to stop ends it (what the drill wrote stays: a
/// cleanup can take minutes).
async fn prove(
    (client, staging, options): (&HubClient, Option<&Staging>, &RestoreOptions),
    usable: restore::Usable,
    expected: &HashSet<String>,
    drill: &mut DrillReport,
) -> Result<Vec<String>, Error> {
    let mut unfinished = Vec::new();
    match usable
        .verify(client, staging, options, &mut drill.restore)
        .await
    {
        Ok(()) => {}
        Err(e @ restore::Error::Interrupted(_)) => return Err(e.into()),
        Err(e) => unfinished.push(format!("verification could not finish: {}", one_line(&e))),
    }
    drill.expected = expected.len();
    match missing(client, &drill.restore, expected).await {
        Ok(m) => {
            drill.missing = m;
            drill.restored = drill.expected.saturating_sub(drill.missing.len());
            drill.counted = true;
        }
        Err(e) => unfinished.push(format!(
            "the drill hub could not be read to count what was restored: {}",
            one_line(&e)
        )),
    }
    Ok(unfinished)
}

/// What the target held before the drill wrote anything.
struct Before {
    devices: u64,
    /// Configuration ids already there (`None`: not read).
    configurations: Option<HashSet<String>>,
}

/// The refusals that leave everything as it was: a target holding identities (unless allowed),
/// a `--via-dps` instance not linked to the target. Returns what the target held.
async fn before_anything(request: &Request<'_>) -> Result<Before, Error> {
    let client = request.client;
    // The larger of the statistics and the `COUNT()` query: either may lag a recent import, and
    // a hub taken for empty is one whose every device a failed drill's cleanup deletes.
    let stats = client.statistics().await.map_err(Error::Target)?;
    let counted = client.count_identities().await.map_err(Error::Target)?.0;
    let devices = stats.total_device_count.max(counted);
    if devices > 0 && !request.allow_nonempty {
        return Err(Error::NotScratch {
            hub: client.name().to_owned(),
            identities: devices,
        });
    }
    if let Some(via) = &request.via_dps {
        probe_dps::check_linked(via, client.host()).await?;
    }
    let configurations = client
        .list_configurations(100)
        .await
        .ok()
        .map(|list| list.into_iter().map(|c| c.id).collect());
    Ok(Before {
        devices,
        configurations,
    })
}

/// A restore that stopped part-way may have written part of the snapshot. With `--cleanup`
/// into a hub that held no device at the start, everything on it now is the drill's: its devices
/// (modules go with them) and the configurations that were not there are deleted, in rounds
/// until the hub's counts and its query agree it is empty (both may lag a fresh import: docs/
/// azure.md), within a bound. Otherwise what is left is said, since the next drill into that
/// hub is refused until it is empty.
async fn after_a_stopped_restore(
    client: &HubClient,
    before: &Before,
    cleanup_asked: bool,
    e: restore::Error,
) -> Error {
    if matches!(e, restore::Error::Interrupted(_)) {
        return Error::Restore(e);
    }
    let hub = client.name().to_owned();
    let after = match (&before.configurations, before.devices, cleanup_asked) {
        (Some(had), 0, true) => {
            let (done, left) = empty_scratch(client, had).await;
            let mut after = format!(
                "the drill's cleanup removed what the restore had written to {hub} ({} \
                 identities, {} configuration(s)); {}",
                done.deleted_identities,
                done.deleted_configurations,
                match left {
                    Some(0) => "the hub reads empty".to_owned(),
                    Some(n) => format!(
                        "{n} device(s) still there: the next drill into it is refused until it is \
                         empty"
                    ),
                    None => "what is left could not be counted: check the hub before the next \
                             drill"
                        .to_owned(),
                }
            );
            if !done.could_not.is_empty() {
                let _ = write!(after, "; could not: {}", list(&done.could_not));
            }
            after
        }
        (had, devices, asked) => {
            let left = left_on(client).await;
            let why = match (had, devices, asked) {
                (_, _, false) => " (pass --cleanup to have a failed drill remove its writes)",
                (None, 0, true) => {
                    " (not cleaned up: its configurations could not be read before the drill, so \
                     what the drill added could not be told apart)"
                }
                _ => " (not cleaned up: it held devices before the drill)",
            };
            match left {
                Some(0) => format!(
                    "{hub} reads empty now, but a hub's counts may lag a failed import: check it \
                     before the next drill{why}"
                ),
                Some(n) => format!(
                    "{hub} now holds {n} device(s), part of them written by this drill: the next \
                     drill into it is refused until it is empty{why}"
                ),
                None => format!(
                    "{hub} may hold part of the snapshot and could not be read: the next drill \
                     into it is refused until it is empty{why}"
                ),
            }
        }
    };
    Error::RestoreStopped { source: e, after }
}

/// Rounds [`empty_scratch`] takes at most, and the pause between them.
const EMPTY_ROUNDS: usize = 6;
const EMPTY_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Devices on the hub by the larger of its statistics and its `COUNT()` query (both may lag).
async fn left_on(client: &HubClient) -> Option<u64> {
    let stats = client.statistics().await.ok().map(|s| s.total_device_count);
    let query = client.count_identities().await.ok().map(|(d, _)| d);
    stats.into_iter().chain(query).max()
}

/// Delete every device on the hub (listed by query, in rounds until a round finds none and the
/// counts read 0, at most [`EMPTY_ROUNDS`]) and every configuration not in `had`. Returns what
/// was done and the devices left (`None`: not countable).
async fn empty_scratch(client: &HubClient, had: &HashSet<String>) -> (Cleanup, Option<u64>) {
    let mut done = Cleanup::default();
    for round in 0..EMPTY_ROUNDS {
        if round > 0 {
            tokio::time::sleep(EMPTY_PAUSE).await;
        }
        let devices: Vec<(String, Option<String>)> = match restore::live::read(client).await {
            Ok(records) => records
                .into_iter()
                .filter(|r| r.module_id.is_none())
                .map(|r| (r.id, None))
                .collect(),
            Err(e) => {
                done.could_not
                    .push(format!("could not list the devices: {}", one_line(&e)));
                continue;
            }
        };
        if devices.is_empty() && left_on(client).await == Some(0) {
            break;
        }
        let round_done = cleanup(client, &devices, &[]).await;
        done.deleted_identities = done
            .deleted_identities
            .saturating_add(round_done.deleted_identities);
        done.could_not.extend(round_done.could_not);
    }
    match client.list_configurations(100).await {
        Ok(list) => {
            let added: Vec<String> = list
                .into_iter()
                .map(|c| c.id)
                .filter(|id| !had.contains(id))
                .collect();
            let c = cleanup(client, &[], &added).await;
            done.deleted_configurations = c.deleted_configurations;
            done.could_not.extend(c.could_not);
        }
        Err(e) => done.could_not.push(format!(
            "could not list the configurations: {}",
            one_line(&e)
        )),
    }
    let left = left_on(client).await;
    done.left_on_target = left.unwrap_or_default();
    done.could_not.dedup();
    (done, left)
}

/// An error as one redacted line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    crate::redact::redact(&e.to_string())
}

/// The probe, straight at the hub or through DPS (`--via-dps`: enrolling the sample first, in
/// the "registration" phase); what it enrolled, for the cleanup.
async fn probe_step(
    (http, device_target, via_dps): (&reqwest::Client, &DeviceTarget, Option<&ViaDps<'_>>),
    host: &str,
    records: &[plan::SnapshotRecord],
    choice: &probe::Choice,
    timeline: &crate::timeline::Timeline,
) -> (ProbeReport, Option<probe_dps::Enrolled>) {
    if let Some(via) = via_dps {
        timeline.begin("registration");
        let e = probe_dps::enroll(via, host, records, choice).await;
        let report = probe_dps::run(http, via, device_target, choice, &e).await;
        (report, Some(e))
    } else {
        timeline.begin("first device accepted");
        (probe::run(http, device_target, choice).await, None)
    }
}

/// Without `--cleanup`: the enrollments the drill created stay, named.
fn kept_note(dps: &str, created: &[String]) -> Option<String> {
    (!created.is_empty()).then(|| {
        format!(
            "the drill's {} enrollment(s) stay in DPS {dps} (pass --cleanup to delete them): {}",
            created.len(),
            list(created)
        )
    })
}

/// Seconds from `created` (RFC 3339) to `at`; 0 if unreadable.
fn age(at: OffsetDateTime, created: &str) -> f64 {
    OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .map_or(0.0, |c| round3(between(c, at)))
}

/// The snapshot's identities, as `id` or `id/moduleId`, without the hub's own system modules.
fn expected_identities(records: &[plan::SnapshotRecord]) -> HashSet<String> {
    records
        .iter()
        .filter(|r| !lines::is_system_module(r.module_id.as_deref()))
        .map(|r| plan::key(&r.id, r.module_id.as_deref()))
        .collect()
}

/// The expected identities not on the target: from verification when it ran (it names every
/// missing id under `full` and `sample` alike), else from a twin read of the target.
async fn missing(
    client: &HubClient,
    report: &RestoreReport,
    expected: &HashSet<String>,
) -> Result<Vec<String>, Error> {
    if report.verified.is_some() {
        return Ok(report
            .differences
            .iter()
            .filter(|d| d.problem == Problem::Missing && expected.contains(&d.id))
            .map(|d| d.id.clone())
            .collect());
    }
    let live = restore::live::read(client).await.map_err(Error::Target)?;
    let present: HashSet<String> = live
        .iter()
        .map(|r| plan::key(&r.id, r.module_id.as_deref()))
        .collect();
    let mut out: Vec<String> = expected.difference(&present).cloned().collect();
    out.sort();
    Ok(out)
}

/// Delete what the drill created: devices (their modules go with them), modules it added to
/// devices that were there before, configurations. Says what it could not.
async fn cleanup(
    client: &HubClient,
    created: &[(String, Option<String>)],
    configurations: &[String],
) -> Cleanup {
    let devices: HashSet<&str> = created
        .iter()
        .filter(|(_, m)| m.is_none())
        .map(|(id, _)| id.as_str())
        .collect();
    let lines: Vec<Value> = created
        .iter()
        .filter(|(id, m)| m.is_none() || !devices.contains(id.as_str()))
        .filter(|(_, m)| !lines::is_system_module(m.as_deref()))
        .map(|(id, m)| match m {
            None => json!({"id": id, "importMode": "delete"}),
            Some(m) => json!({"id": id, "moduleId": m, "importMode": "delete"}),
        })
        .collect();
    let mut out = Cleanup::default();
    match restore::bulk::apply(client, lines).await {
        Ok(o) => {
            out.deleted_identities = o.applied.len();
            for f in o.failed {
                out.could_not
                    .push(format!("delete {}: {} {}", f.id, f.code, f.message));
            }
        }
        Err(stopped) => {
            out.deleted_identities = stopped.outcome.applied.len();
            out.could_not.push(format!(
                "deleting identities stopped: {}",
                crate::redact::redact(&stopped.error.to_string())
            ));
        }
    }
    for id in configurations {
        match client.delete_configuration(id, &hub::IfMatch::Absent).await {
            Ok(()) => out.deleted_configurations = out.deleted_configurations.saturating_add(1),
            Err(e) => out.could_not.push(format!(
                "delete configuration {id}: {}",
                crate::redact::redact(&e.to_string())
            )),
        }
    }
    match client.statistics().await {
        Ok(s) => out.left_on_target = s.total_device_count,
        Err(e) => out
            .could_not
            .push(format!("could not count what is left: {e}")),
    }
    out
}

impl DrillReport {
    /// Why the drill failed; empty when it passed.
    fn judge(&self) -> Vec<String> {
        let mut why = Vec::new();
        let r = &self.restore;
        if !r.failed.is_empty() {
            why.push(format!("{} record(s) failed to apply", r.failed.len()));
        }
        if self.counted && self.restored < self.expected {
            why.push(format!(
                "restored {} of the {} identities the snapshot holds; missing: {}",
                self.restored,
                self.expected,
                list(&self.missing)
            ));
        }
        let other: Vec<String> = r
            .differences
            .iter()
            .filter(|d| d.problem != Problem::Missing)
            .map(|d| format!("{} {}", d.problem.as_str(), d.id))
            .collect();
        if !other.is_empty() {
            why.push(format!(
                "verification found {} other difference(s): {}",
                other.len(),
                list(&other)
            ));
        }
        let p = &self.probe;
        if p.tried() == 0 {
            why.push(
                "no device could be probed: the snapshot has no enabled device with a key".into(),
            );
        } else if p.accepted() < p.tried() {
            let refused: Vec<String> = p
                .by_kind
                .iter()
                .flat_map(|k| k.devices.iter())
                .filter(|d| !d.accepted)
                .map(|d| match &d.error {
                    Some(e) => format!("{} ({e})", d.id),
                    None => format!(
                        "{} ({})",
                        d.id,
                        d.status.map_or("no answer".into(), |s| s.to_string())
                    ),
                })
                .collect();
            why.push(format!(
                "{} of {} probe device(s) were refused: {}",
                refused.len(),
                p.tried(),
                list(&refused)
            ));
        }
        why
    }

    pub fn verdict(&self) -> Verdict {
        if self.reasons.is_empty() && self.restore.usable_at.is_some() {
            Verdict::Passed
        } else {
            Verdict::Failed
        }
    }

    fn rto_status(&self) -> Status {
        match (self.targets.rto, self.rto_seconds) {
            (None, _) => Status::NoTarget,
            (Some(t), Some(rto)) if rto <= t => Status::Met,
            _ => Status::Breached,
        }
    }

    fn rpo_status(&self) -> Status {
        match self.targets.rpo {
            None => Status::NoTarget,
            Some(t) if self.rpo_seconds <= t => Status::Met,
            Some(_) => Status::Breached,
        }
    }

    /// Exit 1: the drill failed or a target was breached.
    pub fn found_something(&self) -> bool {
        self.verdict() == Verdict::Failed
            || self.rto_status() == Status::Breached
            || self.rpo_status() == Status::Breached
    }

    pub fn to_json(&self) -> Value {
        let status = |s: Status| json!(s.as_str());
        json!({
            "verdict": self.verdict().as_str(),
            "hub": self.hub,
            "snapshot": self.snapshot,
            "started": rfc3339(self.started),
            "rto_seconds": self.rto_seconds,
            "rpo_seconds": self.rpo_seconds,
            "newest_snapshot_rpo_seconds": self.newest_rpo_seconds,
            "targets": {
                "rto_seconds": self.targets.rto, "rto": status(self.rto_status()),
                "rpo_seconds": self.targets.rpo, "rpo": status(self.rpo_status()),
            },
            "expected": self.expected,
            "restored": self.counted.then_some(self.restored),
            "missing": self.missing,
            "differences": self.restore.differences,
            "phases": self.phases.iter().map(Phase::to_json).collect::<Vec<_>>(),
            "probe": self.probe.to_json(),
            "reasons": self.reasons,
            "notes": self.notes,
            "restore": self.restore.to_json(false),
            "cleanup": self.cleanup,
        })
    }

    /// Plain words for people.
    pub fn human(&self) -> String {
        let mut out = self.restore.human(false);
        for p in &self.phases {
            let _ = writeln!(out, "  {:<22} {}", p.name, duration_text(p.seconds()));
        }
        let _ = writeln!(
            out,
            "probe{}: {} of {} device(s) accepted",
            self.probe
                .via_dps
                .as_ref()
                .map(|d| format!(" through DPS {d}"))
                .unwrap_or_default(),
            self.probe.accepted(),
            self.probe.tried()
        );
        for k in &self.probe.by_kind {
            match &k.note {
                Some(note) if k.tried == 0 => {
                    let _ = writeln!(out, "  {:<6} {note}", k.kind);
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "  {:<6} {} of {} accepted",
                        k.kind, k.accepted, k.tried
                    );
                }
            }
        }
        for d in self.probe.by_kind.iter().flat_map(|k| k.devices.iter()) {
            if let Some(hub) = &d.assigned_hub {
                let _ = writeln!(
                    out,
                    "  {} assigned to {hub} as {}",
                    d.id,
                    d.assigned_device_id.as_deref().unwrap_or("?")
                );
            }
            if d.accepted {
                continue;
            }
            match (&d.error, d.status) {
                (Some(e), _) => {
                    let _ = writeln!(out, "  {} not accepted: {e}", d.id);
                }
                (None, Some(status)) => {
                    let _ = writeln!(out, "  {} refused by the hub: HTTP {status}", d.id);
                }
                (None, None) => {}
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(
            out,
            "restored {} of {} identities; RTO {} ({}); RPO {} ({})",
            if self.counted {
                self.restored.to_string()
            } else {
                "(not counted)".to_owned()
            },
            self.expected,
            self.rto_seconds.map_or("not reached".into(), duration_text),
            self.rto_status().as_str(),
            duration_text(self.rpo_seconds),
            self.rpo_status().as_str()
        );
        for r in &self.reasons {
            let _ = writeln!(out, "failed: {r}");
        }
        if let Some(c) = &self.cleanup {
            let _ = writeln!(
                out,
                "cleanup: deleted {} identities and {} configuration(s); {} device(s) left on {}",
                c.deleted_identities, c.deleted_configurations, c.left_on_target, self.hub
            );
            if let Some(n) = c.deleted_enrollments {
                let _ = writeln!(out, "cleanup: deleted {n} enrollment(s) the drill created");
            }
            for n in &c.could_not {
                let _ = writeln!(out, "cleanup could not: {n}");
            }
        }
        let _ = writeln!(out, "drill {}", self.verdict().as_str());
        out
    }

    /// The HTML report's document; `commands` reproduce the drill (already free of secrets).
    pub fn document(&self, commands: Vec<String>) -> Document {
        let target_text = |t: Option<f64>| t.map(duration_text);
        let mut figures = vec![
            Figure {
                label: "RTO (start → probe success)".into(),
                value: self.rto_seconds.map_or("not reached".into(), duration_text),
                target: target_text(self.targets.rto),
                status: self.rto_status(),
                note: None,
            },
            Figure {
                label: "RPO (snapshot age at start)".into(),
                value: duration_text(self.rpo_seconds),
                target: target_text(self.targets.rpo),
                status: self.rpo_status(),
                note: self
                    .newest_rpo_seconds
                    .map(|n| format!("newest snapshot of the hub: {}", duration_text(n))),
            },
            Figure {
                label: "Identities restored / expected".into(),
                value: if self.counted {
                    format!("{} / {}", self.restored, self.expected)
                } else {
                    format!("not counted / {}", self.expected)
                },
                target: None,
                status: if self.counted && self.restored == self.expected {
                    Status::Met
                } else {
                    Status::Breached
                },
                note: Some("read from the hub, not from its jobs".into()),
            },
            Figure {
                label: "Probe devices accepted".into(),
                value: format!("{} / {}", self.probe.accepted(), self.probe.tried()),
                target: None,
                status: if self.probe.passed() {
                    Status::Met
                } else {
                    Status::Breached
                },
                note: None,
            },
        ];
        if let Some(usable) = self.restore.usable_at {
            figures.push(Figure {
                label: "Usable after".into(),
                value: duration_text(between(self.started, usable)),
                target: None,
                status: Status::NoTarget,
                note: Some(format!(
                    "verification ({}) {}",
                    self.restore.verify.label(),
                    self.restore.verified_keys().unwrap_or_default()
                )),
            });
        }
        Document {
            title: format!("Restore drill into {}", self.hub),
            subtitle: format!(
                "snapshot {} · started {} · engine {}",
                self.snapshot,
                rfc3339(self.started),
                self.restore.engine.as_str()
            ),
            verdict: self.verdict(),
            reasons: self.reasons.clone(),
            phases: self.phases.clone(),
            figures,
            tables: self.tables(),
            commands,
        }
    }

    /// The probe per kind, each device with its answer (and the hub DPS assigned it to).
    fn probe_table(&self) -> Table {
        Table {
            title: match &self.probe.via_dps {
                Some(d) => format!("Probe per device kind, through DPS {d}"),
                None => "Probe per device kind".into(),
            },
            columns: ["kind", "tried", "accepted", "devices", "note"]
                .map(String::from)
                .to_vec(),
            rows: self
                .probe
                .by_kind
                .iter()
                .map(|k| {
                    let devices: Vec<String> = k
                        .devices
                        .iter()
                        .map(|d| {
                            let mut text = format!(
                                "{} {}",
                                d.id,
                                d.status.map_or("no answer".into(), |s| s.to_string())
                            );
                            if let Some(hub) = &d.assigned_hub {
                                let _ = write!(text, " (assigned to {hub})");
                            }
                            text
                        })
                        .collect();
                    vec![
                        k.kind.to_owned(),
                        k.tried.to_string(),
                        k.accepted.to_string(),
                        devices.join(", "),
                        k.note.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        }
    }

    fn tables(&self) -> Vec<Table> {
        let probe = self.probe_table();
        let differences = Table {
            title: "Differences found".into(),
            columns: ["identity", "problem", "aspects"]
                .map(String::from)
                .to_vec(),
            rows: self
                .restore
                .differences
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.problem.as_str().into(),
                        d.aspects.join(", "),
                    ]
                })
                .collect(),
        };
        let mut tables = vec![probe];
        if let Some(e) = &self.restore.estimate {
            let secs = |s: Option<f64>| s.map_or("—".to_owned(), duration_text);
            tables.push(Table {
                title: "Engine (auto): estimate against actual".into(),
                columns: vec!["what".into(), "time".into()],
                rows: vec![
                    vec!["import job, estimated".into(), secs(e.job_seconds)],
                    vec!["bulk calls, estimated".into(), secs(Some(e.bulk_seconds))],
                    vec![
                        format!("{}, actual (apply and links)", self.restore.engine.as_str()),
                        secs(self.restore.applied_seconds),
                    ],
                    vec!["why".into(), e.reason.clone()],
                ],
            });
        }
        if !differences.rows.is_empty() {
            tables.push(differences);
        }
        if let Some(c) = &self.cleanup {
            let mut rows = vec![
                vec![
                    "identities deleted".into(),
                    c.deleted_identities.to_string(),
                ],
                vec![
                    "configurations deleted".into(),
                    c.deleted_configurations.to_string(),
                ],
                vec![
                    "devices left on the hub".into(),
                    c.left_on_target.to_string(),
                ],
            ];
            if let Some(n) = c.deleted_enrollments {
                rows.push(vec!["DPS enrollments deleted".into(), n.to_string()]);
            }
            rows.extend(
                c.could_not
                    .iter()
                    .map(|n| vec!["could not".into(), n.clone()]),
            );
            tables.push(Table {
                title: "Cleanup".into(),
                columns: vec!["what".into(), "count".into()],
                rows,
            });
        }
        tables
    }
}

/// Up to 20 items joined, then how many more.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        let _ = write!(text, " and {} more", items.len().saturating_sub(SHOWN));
    }
    text
}

/// The verification a drill makes unless told otherwise: a drill exists to prove.
pub const DEFAULT_VERIFY: Verify = Verify::Full;

/// A target duration (`--rto-target 30m`): a number and `s`, `m` (or `min`), `h` or `d`, in
/// seconds.
pub fn parse_target(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} has no number; write e.g. 30m, 4h, 1d"))?;
    let per = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use s, m, h or d (e.g. 30m)"
            ));
        }
    };
    if n <= 0.0 || !n.is_finite() {
        return Err(format!("{text:?}: a target must be longer than zero"));
    }
    Ok(n * per)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_written_and_bad_ones_say_how() {
        assert!((parse_target("30m").unwrap() - 1_800.0).abs() < 1e-9);
        assert!((parse_target("24h").unwrap() - 86_400.0).abs() < 1e-9);
        assert!((parse_target("90s").unwrap() - 90.0).abs() < 1e-9);
        assert!((parse_target("1.5d").unwrap() - 129_600.0).abs() < 1e-9);
        assert!(parse_target("30").unwrap_err().contains("unknown unit"));
        assert!(parse_target("m").unwrap_err().contains("no number"));
        assert!(parse_target("0h").unwrap_err().contains("longer than zero"));
    }
}
