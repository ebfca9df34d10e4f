//! One scheduled run of one hub: take the hub's lease on the store, check the slot has not been
//! handled (by this process, another replica, or before a restart), back up, apply `forget` with
//! **every** policy covering the hub in this store, record the outcome, release the lease.
//!
//! Whoever starts work owns its cancellation: a run's timeout and the process's SIGTERM both fire
//! the run's [`Shutdown`]; the backup then cancels its export job and deletes its staging itself.
//! A run that lost its lease (a renewal failed) does not write the status record.
//!
//! Must not: run a hub without holding its lease, or print a secret (errors are reported by code
//! and redacted message; the status record keeps codes only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::lease::{Lease, Leases, Owner};
use super::slots::Due;
use super::status::{HubStatus, LastRun, Transition};
use crate::backup::{self, BackupOptions, HubBackupOptions};
use crate::config::Config;
use crate::diagnostic::{Diagnostic, full_message};
use crate::forget::{self, TrustRules};
use crate::hub::{HubClient, PollPolicy};
use crate::keys::SigningKey;
use crate::policy::Policy;
use crate::shutdown::Shutdown;
use crate::staging::Staging;
use crate::store::Store;

/// A run that was given no `timeout` is abandoned after this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Default lease duration: a killed holder's hub is free again after this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// What every run of this process shares: the configuration, the store and its leases, the keys
/// a backup needs, and every policy of the store (forget applies them all).
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub location: String,
    pub leases: Leases,
    pub owner: Owner,
    pub lease_ttl: Duration,
    pub recipients: Vec<age::x25519::Recipient>,
    pub signing_key: Arc<SigningKey>,
    pub trust: TrustRules,
    pub poll: PollPolicy,
    /// Every policy for this store, hubs bound to the config's names.
    pub policies: Vec<Policy>,
    /// Whether to apply retention after a backup: false when a policy file of the store did not
    /// load (its rules might keep what the others would remove).
    pub forget: bool,
    /// Bind the hub client's socket here (tests act as another caller against a firewall).
    pub local_address: Option<std::net::IpAddr>,
    /// Test-only: called once the export job runs (a test kills the process there).
    pub export_running: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Where each policy's notifications go (by policy name).
    pub notify: std::collections::BTreeMap<String, super::targets::Targets>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    /// The slot had been handled already (by another replica, or before a restart).
    Skipped,
    /// Shutdown came first: while another run held the hub's lease (nothing was started), or
    /// during the backup (its job cancelled, its staging deleted; the slot stays to be run).
    Stopped,
}

/// A run's error: its stable code and a message fit to show (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunError {
    pub code: String,
    pub message: String,
    pub fix: Option<String>,
}

impl RunError {
    pub fn of(e: &(dyn Diagnostic + 'static)) -> RunError {
        RunError {
            code: e.code().to_owned(),
            message: crate::redact::redact(&full_message(e)),
            fix: e.fix(),
        }
    }

    pub fn new(code: &str, message: String) -> RunError {
        RunError {
            code: code.to_owned(),
            message,
            fix: None,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Unique per run (time-sortable), for the run log.
    pub run_id: String,
    pub policy: String,
    pub hub: String,
    pub slot: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub snapshot: Option<String>,
    pub devices: Option<u64>,
    pub bytes: Option<u64>,
    pub forget_removed: usize,
    pub error: Option<RunError>,
    /// How the hub's state changed (for notifications); `None` when nothing was recorded.
    #[serde(skip)]
    pub transition: Option<Transition>,
    /// The status record after the run, when it was read.
    #[serde(skip)]
    pub status: Option<HubStatus>,
    /// A scheduled drill's figures (`None` for a backup run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillFigures>,
}

/// What a drill reached (its figures), for the run log, the report and the status record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillFigures {
    /// The scratch hub drilled into.
    pub to: String,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    /// Identities in the snapshot, and of those on the scratch hub after the restore.
    pub expected: Option<u64>,
    pub restored: Option<u64>,
    /// Identities left on the scratch hub after the cleanup (`None` without cleanup).
    pub left_on_target: Option<u64>,
    /// The HTML report written, if any.
    pub report: Option<String>,
}

/// A step of a run, for the run log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Lease,
    Backup,
    Forget,
    /// A scheduled drill runs (restore, probe, verification, cleanup).
    Drill,
    Done,
}

/// Where a run tells what it is doing (the run log).
impl Report {
    /// A run of `due` starting now: failed until it says otherwise; `drill` for a drill's run.
    pub fn start(due: &Due, drill: Option<DrillFigures>) -> Self {
        let started_at = Utc::now();
        Report {
            run_id: crate::store::time_id(time::OffsetDateTime::now_utc(), rand::random()),
            policy: due.policy.clone(),
            hub: due.hub.clone(),
            slot: due.slot,
            started_at,
            finished_at: started_at,
            outcome: Outcome::Failed,
            snapshot: None,
            devices: None,
            bytes: None,
            forget_removed: 0,
            error: None,
            transition: None,
            status: None,
            drill,
        }
    }
}

pub type Events<'a> = &'a (dyn Fn(Phase, &Report) + Send + Sync);

/// Run `due` for its hub under the hub's lease, within `timeout`; `shutdown` stops it cleanly.
pub async fn run(
    ctx: &Context,
    due: &Due,
    timeout: Duration,
    shutdown: &Shutdown,
    events: Events<'_>,
) -> Report {
    let mut report = Report::start(due, None);
    let stop = RunStop::start(shutdown, timeout);
    events(Phase::Lease, &report);
    match take_lease(ctx, due, &stop.stop).await {
        Ok(Taken::Lease(lease)) => {
            lease.watch_lost(stop.lease_lost.clone());
            under_lease(ctx, due, &lease, &stop, &mut report, events).await;
            if report.outcome == Outcome::Failed
                && let Some(reason) = stop.reason(timeout)
            {
                report.error = Some(reason);
            }
            if let Err(e) = lease.release().await {
                tracing::warn!(hub = %due.hub, "could not release the hub's lease: {e}");
            }
        }
        other => not_leased(&mut report, other),
    }
    stop.end(report, events)
}

/// A wait for a lease that did not end with it, into `report`: the slot handled meanwhile
/// (skipped), a shutdown first (stopped), or an error.
pub(super) fn not_leased(report: &mut Report, taken: Result<Taken, RunError>) {
    match taken {
        Ok(Taken::Lease(_)) => {}
        Ok(Taken::Handled(status)) => {
            report.outcome = Outcome::Skipped;
            report.status = Some(status);
        }
        Ok(Taken::Stopped) => report.outcome = Outcome::Stopped,
        Err(e) => report.error = Some(e),
    }
}

/// The stop signal of one run: fired by the process's shutdown, after `timeout`, or when the
/// run's lease is lost (another replica may take the hub over: this run must not go on).
pub(super) struct RunStop {
    pub(super) stop: Shutdown,
    timed_out: Arc<AtomicBool>,
    pub(super) lease_lost: Arc<AtomicBool>,
    pub(super) watcher: tokio::task::JoinHandle<()>,
}

impl RunStop {
    pub(super) fn start(outer: &Shutdown, timeout: Duration) -> RunStop {
        let (trigger, stop) = crate::shutdown::channel();
        let timed_out = Arc::new(AtomicBool::new(false));
        let lease_lost = Arc::new(AtomicBool::new(false));
        let (outer, timed, lost) = (outer.clone(), timed_out.clone(), lease_lost.clone());
        let watcher = tokio::spawn(async move {
            let lost_watch = async {
                while !lost.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            };
            tokio::select! {
                () = outer.requested() => {}
                () = tokio::time::sleep(timeout) => timed.store(true, Ordering::Relaxed),
                () = lost_watch => {}
            }
            trigger.fire();
        });
        RunStop {
            stop,
            timed_out,
            lease_lost,
            watcher,
        }
    }

    /// The run is over: stop watching, stamp the report's end and say so (`Phase::Done`).
    pub(super) fn end(self, mut report: Report, events: Events<'_>) -> Report {
        self.watcher.abort();
        report.finished_at = Utc::now();
        events(Phase::Done, &report);
        report
    }

    /// Whether the process's shutdown stopped the run (not its timeout or a lost lease).
    pub(super) fn by_shutdown(&self) -> bool {
        self.stop.is_requested()
            && !self.timed_out.load(Ordering::Relaxed)
            && !self.lease_lost.load(Ordering::Relaxed)
    }

    /// What stopped a failed run, when it was the timeout or a lost lease.
    pub(super) fn reason(&self, timeout: Duration) -> Option<RunError> {
        if self.timed_out.load(Ordering::Relaxed) {
            return Some(RunError::new(
                "run_timeout",
                format!(
                    "the run took longer than its timeout ({}s) and was abandoned: export job cancelled, staging deleted",
                    timeout.as_secs()
                ),
            ));
        }
        self.lease_lost.load(Ordering::Relaxed).then(|| {
            RunError::new(
                "lease_lost",
                "the hub's lease could not be renewed, so the run was abandoned (export job cancelled, staging deleted) before another could overlap it".to_owned(),
            )
        })
    }
}

/// What waiting for the lease ended with.
pub(super) enum Taken {
    Lease(Lease),
    /// The slot was handled while we waited (another replica ran it): its status record.
    Handled(HubStatus),
    /// Shutdown came first.
    Stopped,
}

/// Wait for the hub's lease, or until the slot turns out handled by another run.
pub(super) async fn take_lease(
    ctx: &Context,
    due: &Due,
    stop: &Shutdown,
) -> Result<Taken, RunError> {
    let pause = ctx
        .lease_ttl
        .checked_div(4)
        .unwrap_or_default()
        .clamp(Duration::from_millis(200), Duration::from_secs(1));
    loop {
        let lease = ctx
            .leases
            .try_acquire(&due.hub, &ctx.owner, ctx.lease_ttl)
            .await
            .map_err(|e| RunError::of(&e))?;
        if let Some(lease) = lease {
            return Ok(Taken::Lease(lease));
        }
        let status = ctx
            .leases
            .read_status(&due.hub)
            .await
            .map_err(|e| RunError::of(&e))?;
        if status.handled(&due.policy, due.slot) {
            return Ok(Taken::Handled(status));
        }
        tokio::select! {
            () = stop.requested() => return Ok(Taken::Stopped),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The run proper, holding the lease: slot check, backup, forget, status record.
async fn under_lease(
    ctx: &Context,
    due: &Due,
    lease: &Lease,
    stop: &RunStop,
    report: &mut Report,
    events: Events<'_>,
) {
    let mut status = match lease.read_status(&due.hub).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(RunError::of(&e));
            return;
        }
    };
    if status.handled(&due.policy, due.slot) {
        report.outcome = Outcome::Skipped;
        report.status = Some(status);
        return;
    }
    // A run killed after its manifest but before its record: its snapshot is the slot's.
    if let Some(id) = snapshot_since(ctx, &due.hub, due.slot).await {
        tracing::info!(hub = %due.hub, "snapshot {id} was made at or after this slot: not made again");
        status.slots.insert(due.policy.clone(), due.slot);
        if !lease.lost() && lease.write_status(&status).await.is_err() {
            tracing::warn!(hub = %due.hub, "could not write the hub's status record");
        }
        report.outcome = Outcome::Skipped;
        report.snapshot = Some(id);
        report.status = Some(status);
        return;
    }
    events(Phase::Backup, report);
    match backup_hub(ctx, &due.hub, &due.policy, &stop.stop).await {
        Ok(b) => {
            report.snapshot = Some(b.snapshot.clone());
            report.devices = Some(b.devices);
            report.bytes = Some(b.bytes);
            report.outcome = Outcome::Ok;
            events(Phase::Forget, report);
            let forgotten = if ctx.forget {
                forget_hub(ctx, &due.hub).await
            } else {
                Ok(0)
            };
            match forgotten {
                Ok(removed) => report.forget_removed = removed,
                // The snapshot is made: a failed forget is reported, the backup still counts.
                Err(e) => tracing::warn!(hub = %due.hub, "forget after the backup failed: {e}"),
            }
        }
        // Stopped by SIGTERM/SIGINT (not its timeout): not a failure, and the slot stays
        // unhandled, so a restart or another replica runs it.
        Err(e) if e.code == "interrupted" && stop.by_shutdown() => {
            report.outcome = Outcome::Stopped;
            report.error = Some(e);
            return;
        }
        Err(e) => report.error = Some(e),
    }
    if lease.lost() {
        tracing::warn!(hub = %due.hub, "the lease was lost during the run: its status is not recorded");
        return;
    }
    let run = LastRun {
        policy: due.policy.clone(),
        slot: due.slot,
        finished_at: Utc::now(),
        ok: report.outcome == Outcome::Ok,
        snapshot: report.snapshot.clone(),
        error_code: report.error.as_ref().map(|e| e.code.clone()),
    };
    report.transition = Some(status.record(run, report.devices, report.bytes));
    if let Err(e) = lease.write_status(&status).await {
        tracing::warn!(hub = %due.hub, "could not write the hub's status record: {e}");
    }
    report.status = Some(status);
}

/// A live backup of `hub` as `backup --hub` makes it (without preflight: its failures are the
/// run's), staged per the policy's `[staging]` overrides; or, for a name of the config's `[dps]`
/// (and not of its `[hubs]`), as `backup --dps` makes it.
async fn backup_hub(
    ctx: &Context,
    hub: &str,
    policy: &str,
    stop: &Shutdown,
) -> Result<backup::BackupReport, RunError> {
    let err = |e: &(dyn Diagnostic + 'static)| RunError::of(e);
    if !ctx.config.hubs.contains_key(hub) && ctx.config.dps.contains_key(hub) {
        let target = crate::services::resolve_dps(hub, &ctx.config).map_err(|e| err(&e))?;
        let client = crate::dps::DpsClient::new(target).map_err(|e| err(&e))?;
        let options = BackupOptions::new(time::OffsetDateTime::now_utc(), ctx.signing_key.clone());
        return backup::from_dps(ctx.store.clone(), &client, &ctx.recipients, options)
            .await
            .map_err(|e| err(&e));
    }
    let mut resolved = crate::services::resolve_hub(hub, &ctx.config).map_err(|e| err(&e))?;
    resolved.target.local_address = ctx.local_address;
    let client = HubClient::new(resolved.target).map_err(|e| err(&e))?;
    let config = staging_config(ctx, policy);
    let staging = Staging::open(None, &config, client.host()).map_err(|e| err(&e))?;
    let mut options = HubBackupOptions::new(BackupOptions::new(
        time::OffsetDateTime::now_utc(),
        ctx.signing_key.clone(),
    ));
    options.poll = ctx.poll;
    options.shutdown = stop.clone();
    options.export_running.clone_from(&ctx.export_running);
    let done = backup::run(
        ctx.store.clone(),
        &client,
        &staging,
        &ctx.recipients,
        options,
        None,
    )
    .await
    .map_err(|e| err(&e))?;
    done.backup
        .map(|b| b.backup)
        .ok_or_else(|| RunError::new("backup_not_started", "the backup did not start".into()))
}

/// The config with the policy's `[staging]` overrides applied.
fn staging_config(ctx: &Context, policy: &str) -> Config {
    let mut config = ctx.config.clone();
    let overrides = ctx
        .policies
        .iter()
        .find(|p| p.name == policy)
        .and_then(|p| p.file.staging.clone());
    if let (Some(o), Some(entry)) = (overrides, config.staging.as_mut()) {
        if let Some(c) = o.container {
            entry.container = Some(c);
        }
        if let Some(l) = o.sas_lifetime {
            entry.sas_lifetime = Some(l.to_string());
        }
    }
    config
}

/// `forget` for this hub's snapshots with every policy of the store. Returns snapshots removed.
async fn forget_hub(ctx: &Context, hub: &str) -> Result<usize, forget::Error> {
    let names = crate::services::hub_names(hub, &ctx.config);
    let in_scope = move |stored: &str| names.matches(stored);
    let report = forget::run_scoped(
        ctx.store.as_ref(),
        &ctx.policies,
        Utc::now(),
        false,
        &ctx.trust,
        &in_scope,
    )
    .await?;
    Ok(report.applied.map_or(0, |a| a.snapshots_removed))
}

/// A committed snapshot of `hub` whose id (its start time) is at or after `slot`, if any: the
/// durable trace of a run of this slot that died before writing the status record.
async fn snapshot_since(ctx: &Context, hub: &str, slot: DateTime<Utc>) -> Option<String> {
    use crate::snapshot::catalog::{self, FileKind};
    let host = match crate::services::resolve_hub(hub, &ctx.config) {
        Ok(resolved) => resolved.target.host,
        Err(_) => crate::services::resolve_dps(hub, &ctx.config).ok()?.host,
    };
    let listed = ctx.store.list(&format!("{host}/")).await.ok()?;
    listed.into_iter().find_map(|m| {
        let mut parts = m.name.split('/').skip(1);
        let (id, file) = (parts.next()?, parts.next()?);
        let committed = matches!(
            catalog::file_kind(file),
            Some(FileKind::Manifest(_) | FileKind::ManifestV1)
        );
        let started =
            chrono::NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ").ok()?;
        (committed && catalog::is_snapshot_id(id) && started.and_utc() >= slot)
            .then(|| id.to_owned())
    })
}
