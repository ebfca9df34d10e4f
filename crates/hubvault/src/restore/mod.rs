//! Restore: replay a snapshot into a hub.
//!
//! Flow: store ──► age ──► zstd ──► records ──► plan (diff against the live target)
//! ──► preflight findings ──► apply (import job | bulk registry API) ──► verify.
//!
//! | module | owns |
//! |---|---|
//! | [`lines`] | import-line preparation (etags, reported, scopes, system modules) |
//! | [`canonical`] | the comparable form of snapshot and live records |
//! | [`plan`] | the pure plan: create / update / delete / unchanged per `(id, moduleId)`; the mirror brake |
//! | [`live`] | reading the live target (twin queries, keys only where needed) |
//! | [`export`] | reading the target through one export job (its keys, or all of it) |
//! | [`apply`], [`bulk`] | passes of import lines and the bulk engine |
//! | [`configurations`] | configurations: plan and `PUT`/`DELETE` |
//! | [`readback`] | re-reading the target after apply; which keys were proven (all or a sample) |
//! | [`estimate`] | `--engine auto`: import job against bulk calls, estimated from the hub's tier and units and the documented throttles |
//! | [`sample`] | `--verify full / sample[=N] / none`, kinds of identity, stratified samples and their power |
//! | [`outcome`] | what the parts report: job errors, differences, key checks |
//! | [`job`], [`pace`], [`report`] | the import-job engine, the bulk engine's pacing, the report |
//! | `run` (here) | the use case: read, plan, preflight, apply (the target is usable), verify, report |
//!
//! Must not: know clap, print. A fatal error during apply ([`Error::Stopped`]) still says what
//! was applied before it, so nothing half-imported goes unreported.

pub mod apply;
pub mod bulk;
pub mod canonical;
pub mod configurations;
pub mod estimate;
pub mod export;
pub mod job;
pub mod lines;
pub mod live;
pub mod outcome;
pub mod pace;
pub mod plan;
pub mod readback;
pub mod report;
pub mod sample;

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::{self, HubClient, PollPolicy};
use crate::pipeline::Identities;
use crate::preflight::{self, Checks};
use crate::snapshot::{self, Manifest, reader::ObjectReader};
use crate::staging::Staging;
use crate::store::Store;

pub use apply::Applied;
pub use outcome::{Difference, JobError, KeyCheck, Problem};
pub use plan::{MaxDelete, Mode, Plan, Scope};
pub use readback::verify;
pub use report::RestoreReport;
pub use sample::Verify;

/// Which engine writes to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Import job through a staging container (scale).
    Job,
    /// `POST /devices`, ≤100 per call (no staging).
    Bulk,
    /// Whichever [`estimate`] says is faster for the plan on this hub's tier (the job only
    /// when staging is configured).
    Auto,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Job => "job",
            Engine::Bulk => "bulk",
            Engine::Auto => "auto",
        }
    }
}

/// From how many key comparisons an export job beats single registry reads (default).
pub const KEY_READ_JOB_MIN: usize = 2_000;

/// From how many edge links the job engine sets them with a second import job instead of bulk
/// calls (default).
pub const LINK_JOB_MIN: usize = 5_000;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub mode: Mode,
    pub only: Option<glob::Pattern>,
    pub engine: Engine,
    pub dry_run: bool,
    /// What the re-read of the target after applying proves (`--verify`).
    pub verify: Verify,
    /// Where the restore marks its phases (preflight, open + plan, apply, links, verification).
    pub timeline: crate::timeline::Timeline,
    /// The target's throttles, for `auto` (`None`: S1 with one unit is assumed, and said).
    pub rates: Option<estimate::HubRates>,
    /// Check findings (id conflicts, …) before applying; a failed finding stops the restore.
    pub preflight: bool,
    /// How the import job is polled.
    pub poll: PollPolicy,
    /// From how many key comparisons an export job reads the target's keys (with staging).
    pub key_read_job_min: usize,
    /// From how many edge links the job engine sets them with a second import job.
    pub link_job_min: usize,
    /// How many deletes a `mirror` may make (`--max-delete`); `None`: the default brake.
    pub max_delete: Option<MaxDelete>,
    /// Asks the restore to stop: it then cancels its import job and deletes its staging blobs.
    pub shutdown: crate::shutdown::Shutdown,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            mode: Mode::Upsert,
            only: None,
            engine: Engine::Bulk,
            dry_run: false,
            verify: Verify::Full,
            timeline: crate::timeline::Timeline::default(),
            rates: None,
            preflight: true,
            poll: PollPolicy::default(),
            key_read_job_min: KEY_READ_JOB_MIN,
            link_job_min: LINK_JOB_MIN,
            max_delete: None,
            shutdown: crate::shutdown::Shutdown::never(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Interrupted(#[from] crate::shutdown::Interrupted),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error("cannot read the target hub: {0}")]
    Target(hub::Error),
    #[error(
        "restore into {hub} stopped: {cause}. Before that it had applied {created} create(s), \
         {updated} update(s), {deleted} delete(s), {links} edge link(s) and {configurations} \
         configuration(s); {failed} record(s) failed. {}",
        fix_text(self)
    )]
    Stopped {
        hub: String,
        /// Not `#[source]`: the message already says it, and a chain would say it twice.
        cause: JobError,
        created: u64,
        updated: u64,
        deleted: u64,
        links: u64,
        configurations: u64,
        failed: usize,
    },
    #[error("the job engine needs a staging container; {}", fix_text(self))]
    NoStaging,
    #[error(
        "mirror into {hub} would delete {deletes} of its {target} identities, {why}; the snapshot \
         holds {in_snapshot}. Nothing was changed. {}",
        fix_text(self)
    )]
    MirrorBrake {
        hub: String,
        deletes: u64,
        target: u64,
        in_snapshot: u64,
        why: String,
    },
    #[error("restore task failed: {0}")]
    Task(String),
    #[error(
        "snapshot {id} is of the DPS instance {dps} (enrollments, not devices): it cannot be \
         restored into or compared with an IoT hub. {}",
        fix_text(self)
    )]
    DpsSnapshot { id: String, dps: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Interrupted(e) => e.code(),
            Error::Snapshot(e) => e.code(),
            Error::Target(e) => e.code(),
            Error::Stopped { cause, .. } => cause.code(),
            Error::NoStaging => "restore_no_staging",
            Error::MirrorBrake { .. } => "restore_mirror_brake",
            Error::Task(_) => "restore_task",
            Error::DpsSnapshot { .. } => "restore_dps_snapshot",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Interrupted(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
            Error::Target(e) => e.fix(),
            Error::Stopped { .. } => Some(
                "Fix the cause and run the same restore again: it plans against what is now on \
                 the hub"
                    .to_owned(),
            ),
            Error::NoStaging => {
                Some("pass --staging URL or configure [staging], or use --engine bulk".to_owned())
            }
            Error::MirrorBrake { deletes, .. } => Some(format!(
                "Check the plan with --dry-run -v, and if those deletes are meant, pass \
                 --max-delete {deletes} (or a share, e.g. --max-delete 100%)"
            )),
            Error::Task(_) => None,
            Error::DpsSnapshot { .. } => Some(
                "name a snapshot of the hub (`hubvault snapshots --hub HUB`); restores into DPS \
                 come with a later release"
                    .to_owned(),
            ),
        }
    }
}

impl Error {
    fn stopped(hub: &str, source: JobError, progress: &apply::Progress) -> Error {
        let a = progress.applied;
        Error::Stopped {
            hub: hub.to_owned(),
            cause: source,
            created: a.create,
            updated: a.update,
            deleted: a.delete,
            links: a.links,
            configurations: a.configurations,
            failed: progress.failed.len(),
        }
    }
}

/// Up to how many threads the CPU-heavy steps (parsing and canonicalising every record) use.
const PARALLEL_MAX: usize = 4;
/// Below this many items one thread does it all.
const PARALLEL_MIN: usize = 2_048;

/// `f` over `items` on up to [`PARALLEL_MAX`] threads (as many as the machine has), results in
/// order. A restore parses every record of the snapshot and of the target's export: hundreds of
/// thousands of JSON lines, each on its own, so the work splits evenly.
pub(crate) fn in_parallel<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(PARALLEL_MAX);
    if threads < 2 || items.len() < PARALLEL_MIN {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<U>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Free a large collection on a thread of its own: dropping hundreds of thousands of parsed
/// records takes a good part of a second that the caller need not wait for. (If no thread can
/// be started, it is dropped here.)
pub(crate) fn drop_aside<T: Send + 'static>(big: T) {
    let _ = std::thread::Builder::new()
        .name("drop-aside".into())
        .spawn(move || drop(big));
}

/// Read a snapshot's device records (canonical, sorted) on blocking threads.
#[allow(
    clippy::result_large_err,
    reason = "snapshot errors are rare and carry their details"
)]
pub async fn snapshot_records(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
) -> Result<Vec<plan::SnapshotRecord>, Error> {
    if manifest.is_dps() {
        return Err(Error::DpsSnapshot {
            id: manifest.id.clone(),
            dps: manifest.hub.clone(),
        });
    }
    let m = manifest.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<Vec<plan::SnapshotRecord>, Error> {
        let reader = ObjectReader::open(store.as_ref(), &handle, &m, "devices", &identities)?;
        let raw = reader.collect::<Result<Vec<_>, _>>()?;
        // Decrypting and splitting is quick; parsing each line is the work, spread over threads.
        let canonical = in_parallel(&raw, |r| {
            let value: Value = serde_json::from_slice(&r.line).unwrap_or(Value::Null);
            canonical::from_export_value(value, true)
        });
        Ok(raw
            .into_iter()
            .zip(canonical)
            .map(|(r, canonical)| plan::SnapshotRecord {
                canonical,
                id: r.id,
                module_id: r.module_id,
                line: r.line,
            })
            .collect())
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// `diff SNAPSHOT --hub HUB`: the snapshot is the older side, the live hub the newer. It is the
/// plan a mirror restore would make, read the other way round: what the restore would create is
/// only in the snapshot (removed on the hub), what it would delete only on the hub (added), what
/// it would update changed. Keys are read where only keys could tell records apart.
pub async fn diff_live(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
) -> Result<crate::diff::DiffReport, Error> {
    let records = snapshot_records(store, manifest, identities).await?;
    let (plan, _) = plan_against(
        client,
        &records,
        Mode::Mirror,
        &Scope::default(),
        KeyReads::direct(),
    )
    .await?;
    let mut report = crate::diff::DiffReport::default();
    for item in &plan.items {
        match item.action {
            plan::Action::Create => report.removed.push(item.key()),
            plan::Action::Delete => report.added.push(item.key()),
            plan::Action::Update => report.changed.push((item.key(), item.aspects.clone())),
            plan::Action::Unchanged => report.unchanged = report.unchanged.saturating_add(1),
        }
    }
    drop_aside((records, plan));
    Ok(report)
}

/// How the keys of records that only keys could tell apart are read.
#[derive(Clone, Copy)]
pub struct KeyReads<'a> {
    /// With staging, an export job reads them when at least `job_min` are needed.
    pub staging: Option<&'a Staging>,
    pub job_min: usize,
    pub poll: PollPolicy,
}

impl KeyReads<'_> {
    /// One registry read per record (no staging).
    pub fn direct() -> Self {
        KeyReads {
            staging: None,
            job_min: usize::MAX,
            poll: PollPolicy::default(),
        }
    }
}

/// Plan against the live target: twin read, then keys for the records only keys could tell apart
/// (by single reads, or by an export job when many are needed and staging is at hand).
pub async fn plan_against(
    client: &HubClient,
    snapshot: &[plan::SnapshotRecord],
    mode: Mode,
    scope: &Scope,
    keys: KeyReads<'_>,
) -> Result<(Plan, Vec<plan::TargetRecord>), Error> {
    let mut live = live::read(client).await.map_err(Error::Target)?;
    let first = plan::plan(snapshot, &live, mode, scope);
    if first.needs_keys.is_empty() {
        return Ok((first, live));
    }
    match keys.staging {
        Some(staging) if first.needs_keys.len() >= keys.job_min => {
            // Boxed: the export job's future is large, and callers nest this one deep.
            Box::pin(export::read_target_keys(
                client,
                staging,
                &keys.poll,
                &mut live,
                &first.needs_keys,
            ))
            .await
            .map_err(|e| Error::stopped(client.name(), e, &apply::Progress::default()))?;
        }
        _ => live::fetch_keys(client, &mut live, &first.needs_keys)
            .await
            .map_err(Error::Target)?,
    }
    Ok((plan::plan(snapshot, &live, mode, scope), live))
}

/// Restore `manifest` into the hub behind `client`, with the default preflight checks.
pub async fn run(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
) -> Result<RestoreReport, Error> {
    let checks = Checks::new(client.name(), client);
    run_with_checks(
        store, manifest, identities, client, staging, options, checks,
    )
    .await
}

/// Restore with preflight `checks` prepared by the caller (ARM access, caller ip, `--wait`);
/// the restore adds what only its plan knows (job use, creates, id conflicts). When
/// `options.shutdown` fires, its import job is cancelled, its staging blobs deleted, and it ends
/// with [`Error::Interrupted`]; what was already applied stays. The report says when the target
/// was usable (import and links done) apart from when verification finished.
pub async fn run_with_checks(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
    checks: Checks<'_>,
) -> Result<RestoreReport, Error> {
    let (mut report, usable) = until_usable(
        store, manifest, identities, client, staging, options, checks,
    )
    .await?;
    if let Some(usable) = usable {
        usable.verify(client, staging, options, &mut report).await?;
    }
    Ok(report)
}

/// The restore up to the moment the target is usable: preflight, plan, apply, links. The
/// [`Usable`] (none on a dry run or when preflight stopped it) holds what verification needs,
/// so a caller can prove devices connect first (a drill) and verify after.
pub async fn until_usable(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
    checks: Checks<'_>,
) -> Result<(RestoreReport, Option<Usable>), Error> {
    let work = Box::pin(restore_with_checks(
        store, manifest, identities, client, staging, options, checks,
    ));
    interruptible(work, client, staging, options).await
}

/// `work`, unless `options.shutdown` fires first: then this run's job is cancelled and its
/// staging blobs deleted.
async fn interruptible<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
) -> Result<T, Error> {
    tokio::select! {
        r = work => r,
        () = options.shutdown.requested() => {
            let done = match staging {
                Some(s) => s.abandon(&[client]).await,
                None => String::new(),
            };
            Err(crate::shutdown::Interrupted {
                done,
                next: "a rerun of the same restore plans against what was already applied",
            }
            .into())
        }
    }
}

/// A restore whose writes are done: the target is usable. Holds the snapshot's records (with
/// their keys: never printed) for verification and for a drill's probe.
pub struct Usable {
    records: Vec<plan::SnapshotRecord>,
    conflicts: Vec<String>,
    configurations: Option<Vec<Value>>,
    /// Identities this restore created (`id` or `id/moduleId`), and configurations.
    created: Vec<(String, Option<String>)>,
    created_configurations: Vec<String>,
}

impl Usable {
    /// The snapshot's records, canonical, keys included.
    pub fn records(&self) -> &[plan::SnapshotRecord] {
        &self.records
    }

    /// What this restore created: devices and modules `(id, moduleId)`, then configuration ids.
    pub fn created(&self) -> (&[(String, Option<String>)], &[String]) {
        (&self.created, &self.created_configurations)
    }

    /// Verify as `options.verify` says, into `report` (its `verified_at` is set even for
    /// `none`: the moment nothing more was to be proven).
    pub async fn verify(
        self,
        client: &HubClient,
        staging: Option<&Staging>,
        options: &RestoreOptions,
        report: &mut RestoreReport,
    ) -> Result<(), Error> {
        if options.verify != Verify::None {
            options.timeline.begin("verification");
            // The same staging as the apply (the job engine's, or bulk's when configured): with
            // it, `full` proves every key through one export job.
            let found = interruptible(
                Box::pin(verify(
                    client,
                    &self.records,
                    options,
                    &self.conflicts,
                    staging,
                )),
                client,
                staging,
                options,
            )
            .await?;
            let mut differences = found.differences;
            if let Some(wanted) = &self.configurations {
                differences.extend(configurations::verify(client, wanted, options.mode).await?);
            }
            report.verified = Some(differences.is_empty());
            report.differences = differences;
            report.keys = Some(found.keys);
        }
        report.verified_at = Some(time::OffsetDateTime::now_utc());
        drop_aside(self.records);
        Ok(())
    }
}

async fn restore_with_checks(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
    mut checks: Checks<'_>,
) -> Result<(RestoreReport, Option<Usable>), Error> {
    if options.engine == Engine::Job && staging.is_none() {
        return Err(Error::NoStaging);
    }
    let may_use_job = options.engine != Engine::Bulk && staging.is_some();
    if options.preflight {
        options.timeline.begin("preflight");
        checks.needs_jobs = may_use_job;
        checks.staging = if may_use_job { staging } else { None };
        let early = preflight::run(&checks).await;
        if !early.ok {
            let mut report = RestoreReport::new(manifest, client.name(), options, &Plan::default());
            report.preflight = Some(early);
            return Ok((report, None));
        }
        checks.staging = None;
        options.timeline.begin("open + plan");
        let prepared = prepare(
            store.clone(),
            manifest,
            identities,
            client,
            staging,
            options,
        )
        .await?;
        let mut findings = early.findings;
        if options.mode == Mode::Create {
            findings.push(preflight::conflicts_finding(
                client.name(),
                &prepared.plan.conflicts,
            ));
        }
        // The early check knew no plan: count the plan's creates against the cap now.
        findings.retain(|f| f.check != preflight::Check::DeviceQuota);
        let (quota, source) = preflight::device_cap(&checks).await;
        let existing = client.statistics().await.map_err(Error::Target)?;
        findings.push(preflight::quota_finding(
            client.name(),
            existing.total_device_count,
            prepared.plan.counts().create,
            quota,
            &source,
        ));
        let report = preflight::Report::new(findings);
        // Boxed (both calls): apply and verify make a large future, and callers (clone, demo)
        // nest this one deep.
        return Box::pin(finish(
            prepared,
            manifest,
            client,
            staging,
            options,
            Some(report),
        ))
        .await;
    }
    options.timeline.begin("open + plan");
    let prepared = prepare(store, manifest, identities, client, staging, options).await?;
    Box::pin(finish(prepared, manifest, client, staging, options, None)).await
}

/// The snapshot read and planned against the live target.
struct Prepared {
    records: Vec<plan::SnapshotRecord>,
    plan: Plan,
    live: Vec<plan::TargetRecord>,
    configs: Option<(Vec<Value>, configurations::Plan)>,
}

async fn prepare(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
) -> Result<Prepared, Error> {
    let scope = Scope {
        only: options.only.clone(),
    };
    let records = snapshot_records(store.clone(), manifest, identities.clone()).await?;
    let keys = KeyReads {
        staging,
        job_min: options.key_read_job_min,
        poll: options.poll,
    };
    let (plan, live) = plan_against(client, &records, options.mode, &scope, keys).await?;
    // Configurations are hub-wide: a partial (`--only`) restore leaves them alone.
    let configs = if options.only.is_none()
        && manifest
            .object(snapshot::manifest::CONFIGURATIONS)
            .is_some()
    {
        let wanted = configurations::from_snapshot(store, manifest, identities).await?;
        let have = live::configurations(client).await.map_err(Error::Target)?;
        let cp = configurations::plan(&wanted, &have, options.mode);
        Some((wanted, cp))
    } else {
        None
    };
    Ok(Prepared {
        records,
        plan,
        live,
        configs,
    })
}

/// The mirror brake's refusal of `plan`, if it deletes more than allowed (see [`plan::brake`]).
fn mirror_brake(
    plan: &Plan,
    live: &[plan::TargetRecord],
    records: &[plan::SnapshotRecord],
    hub: &str,
    options: &RestoreOptions,
) -> Option<Error> {
    let scope = Scope {
        only: options.only.clone(),
    };
    let deletes = plan::identities_removed(plan, live);
    let target = plan::identities(
        live.iter().map(|r| (r.id.as_str(), r.module_id.as_deref())),
        &Scope::default(),
    );
    let in_snapshot = plan::identities(
        records
            .iter()
            .map(|r| (r.id.as_str(), r.module_id.as_deref())),
        &scope,
    );
    let why = plan::brake(deletes, target, in_snapshot, options.max_delete)?;
    Some(Error::MirrorBrake {
        hub: hub.to_owned(),
        deletes,
        target,
        in_snapshot,
        why,
    })
}

async fn finish(
    prepared: Prepared,
    manifest: &Manifest,
    client: &HubClient,
    staging: Option<&Staging>,
    options: &RestoreOptions,
    preflight: Option<preflight::Report>,
) -> Result<(RestoreReport, Option<Usable>), Error> {
    let Prepared {
        records,
        plan,
        live,
        configs,
    } = prepared;
    let mut report = RestoreReport::new(manifest, client.name(), options, &plan);
    report.configurations = configs.as_ref().map(|(_, cp)| cp.counts());
    let blocked = preflight.as_ref().is_some_and(|p| !p.ok);
    report.preflight = preflight;
    if let Some(refused) = mirror_brake(&plan, &live, &records, client.name(), options) {
        if !options.dry_run {
            return Err(refused);
        }
        report.brake = Some(refused.to_string());
    }
    if blocked || options.dry_run {
        return Ok((report, None));
    }
    options.timeline.begin("apply");
    let apply_started = time::OffsetDateTime::now_utc();
    let writes = plan
        .items
        .len()
        .saturating_sub(usize::try_from(plan.counts().unchanged).unwrap_or(0));
    let passes = apply::passes(&plan, &records, &live);
    let (estimate, job_staging) = engine_for(options, staging, writes, passes.links.len());
    report.estimate = estimate;
    let mut progress = apply::Progress::default();
    let config_plan = configs.as_ref().map(|(_, cp)| cp);
    let applied: Result<(), JobError> = if let Some(staging) = job_staging {
        report.engine = Engine::Job;
        let job = JobRun {
            client,
            staging,
            options,
            config_plan,
            records: &records,
        };
        Box::pin(job.apply(passes, &mut progress, &mut report)).await
    } else {
        report.engine = Engine::Bulk;
        let mut result =
            apply::run_bulk(client, passes, &records, &mut progress, &options.timeline).await;
        if result.is_ok()
            && let Some(cp) = config_plan
        {
            result = configurations::apply(client, cp, &mut progress).await;
        }
        result.map_err(JobError::from)
    };
    if let Err(e) = applied {
        if let Some(s) = &report.staging {
            tracing::warn!("{s}");
        }
        return Err(Error::stopped(client.name(), e, &progress));
    }
    report.applied = progress.applied;
    report.failed = progress.failed;
    report.throttled = progress.throttled;
    let usable_at = time::OffsetDateTime::now_utc();
    report.usable_at = Some(usable_at);
    report.applied_seconds = Some(crate::timeline::round3(crate::timeline::between(
        apply_started,
        usable_at,
    )));
    let created = plan
        .items
        .iter()
        .filter(|i| i.action == plan::Action::Create)
        .map(|i| (i.id.clone(), i.module_id.clone()))
        .collect();
    let created_configurations = config_plan
        .map(|cp| {
            cp.put
                .iter()
                .filter(|(_, etag)| etag.is_none())
                .filter_map(|(c, _)| c.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let usable = Usable {
        records,
        conflicts: plan.conflicts.clone(),
        configurations: configs.map(|(wanted, _)| wanted),
        created,
        created_configurations,
    };
    drop_aside((plan, live));
    Ok((report, Some(usable)))
}

/// The staging the job engine uses (`None`: bulk), and for `auto` the estimate that chose it.
fn engine_for<'a>(
    options: &RestoreOptions,
    staging: Option<&'a Staging>,
    writes: usize,
    links: usize,
) -> (Option<estimate::Estimate>, Option<&'a Staging>) {
    match (options.engine, staging) {
        (Engine::Job, s) => (None, s),
        (Engine::Bulk, _) => (None, None),
        (Engine::Auto, s) => {
            let rates = options
                .rates
                .clone()
                .unwrap_or_else(|| estimate::HubRates::from_sku(None));
            let e = estimate::estimate(writes, links, &rates, s.is_some(), options.link_job_min);
            let job = if e.chosen == Engine::Job { s } else { None };
            (Some(e), job)
        }
    }
}

/// One apply through the job engine, and what it reports about staging.
struct JobRun<'a> {
    client: &'a HubClient,
    staging: &'a Staging,
    options: &'a RestoreOptions,
    config_plan: Option<&'a configurations::Plan>,
    records: &'a [plan::SnapshotRecord],
}

impl JobRun<'_> {
    async fn apply(
        self,
        passes: apply::Passes,
        progress: &mut apply::Progress,
        report: &mut RestoreReport,
    ) -> Result<(), JobError> {
        let JobRun {
            client,
            staging,
            options,
            config_plan,
            records,
        } = self;
        let (job_report, result) = job::run(
            client,
            staging,
            options,
            passes,
            config_plan,
            records,
            progress,
        )
        .await;
        report.job_id = job_report.job_id;
        report.link_job_id = job_report.link_job_id;
        let mut said = format!(
            "deleted {} plaintext staging blob(s) of this run from {}",
            job_report.staging_deleted,
            staging.location()
        );
        for d in &job_report.dead_runs {
            let _ = write!(said, "; {}", d.sentence());
        }
        report
            .dead_runs
            .extend(job_report.dead_runs.iter().cloned());
        if job_report.leftovers_removed > 0 {
            let _ = write!(
                said,
                "; removed {} blob(s) left by an earlier, interrupted run of this hub",
                job_report.leftovers_removed
            );
        }
        report.staging = Some(said);
        report.retried = job_report.retried;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_work_keeps_the_order() {
        let items: Vec<usize> = (0..10_000).collect();
        let doubled: Vec<usize> = items.iter().map(|i| i * 2).collect();
        assert_eq!(in_parallel(&items, |i| i * 2), doubled);
        assert_eq!(in_parallel(&items[..3], |i| *i), [0, 1, 2]);
        assert!(in_parallel(&items[..0], |i| *i).is_empty());
    }

    #[test]
    fn a_stop_says_what_was_already_applied_and_why() {
        let mut progress = apply::Progress::default();
        progress.applied.create = 3;
        progress.applied.links = 1;
        progress.failed.push(bulk::Failure {
            id: "d".into(),
            code: "409001".into(),
            message: "exists".into(),
        });
        let source = JobError::Hub(hub::Error::Unauthorized {
            hub: "hub-b".into(),
            code: 401_002,
        });
        let e = Error::stopped("hub-b", source, &progress);
        let text = e.to_string();
        assert_eq!(e.code(), "hub_unauthorized");
        for part in [
            "401002",
            "firewall",
            "3 create(s)",
            "1 edge link(s)",
            "1 record(s) failed",
            "run the same restore again",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }
}
