//! Use case: back up a live hub through an export job (docs/architecture.md#data-flow, §5).
//!
//! Flow: sweep this hub's leftovers of killed runs → export job (keys and configurations) into
//! the run's staging folder through a fresh least-privilege SAS → wait (the slot may be taken:
//! wait for it or report it) → stream `devices.txt` (and `configurations.txt`) from staging
//! straight into the sealing pipeline ([`super::write_snapshot`]; no local plaintext) → manifest
//! with `source {kind: "export-job", job_id}` and the hub's host name → delete the run's staging
//! blobs, on failure too.
//!
//! Must not: know clap, or show the SAS it hands the hub (only [`SecretUrl`] carries it).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{BackupOptions, BackupReport, Error, HubCounts, Input, write_snapshot};
use crate::hub::{self, HubClient, JobProperties, JobStatus, PollPolicy};
use crate::snapshot::Source;
use crate::snapshot::manifest::{CONFIGURATIONS, DEVICES};
use crate::staging::{SecretUrl, Staging};
use crate::store::Store;
use crate::store::sas::SasPermissions;

/// Staging file names of an export (the hub writes them under the run's folder).
pub const DEVICES_FILE: &str = "devices.txt";
pub const CONFIGURATIONS_FILE: &str = "configurations.txt";
/// How many times a busy job slot is waited for before giving up (each wait is one whole job).
const SLOT_WAITS: usize = 5;

/// Settings of one live backup.
#[derive(Clone)]
pub struct HubBackupOptions {
    pub backup: BackupOptions,
    pub poll: PollPolicy,
    /// Another job holds the slot: wait for it (`--wait`) instead of failing with its id.
    pub wait_for_slot: bool,
    /// Leftovers of this hub's killed runs older than this are removed before the export.
    /// Default: the staging SAS lifetime, which is the longest job we allow.
    pub leftover_age: Option<Duration>,
    /// Test-only pause once the export job runs (`HUBVAULT_FAULT_PAUSE=export-running`).
    pub export_running: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Asks the backup to stop: it then cancels its export job and deletes its staging blobs.
    pub shutdown: crate::shutdown::Shutdown,
    /// Killed runs already cleaned up by the caller (before its preflight, whose job-slot check
    /// a dead run's job would otherwise fail): reported with what this backup's own sweep finds.
    pub swept_before: Vec<crate::staging::SweptRun>,
}

impl HubBackupOptions {
    pub fn new(backup: BackupOptions) -> Self {
        HubBackupOptions {
            backup,
            poll: PollPolicy::default(),
            wait_for_slot: false,
            leftover_age: None,
            export_running: None,
            swept_before: Vec::new(),
            shutdown: crate::shutdown::Shutdown::never(),
        }
    }
}

/// What a live backup made: the backup report (with `job_id`) and what it cleaned up.
#[derive(Debug, Clone, Serialize)]
pub struct HubBackupReport {
    #[serde(flatten)]
    pub backup: BackupReport,
    /// Plaintext staging blobs of this run deleted after ingest.
    pub staging_deleted: usize,
    /// Blobs of this hub's earlier killed runs removed before the export.
    pub leftovers_removed: usize,
    /// Killed runs (of any hub) found through the staging journal and cleaned up first.
    pub dead_runs: Vec<crate::staging::SweptRun>,
}

/// Back up the hub behind `client` into `store`, staging through `staging`. When
/// `options.shutdown` fires, the export job is cancelled, the staging blobs deleted, and the
/// backup ends with [`Error::Interrupted`] (no snapshot is made).
pub async fn from_hub(
    store: Arc<dyn Store>,
    client: &HubClient,
    staging: &Staging,
    recipients: &[age::x25519::Recipient],
    options: HubBackupOptions,
) -> Result<HubBackupReport, Error> {
    let shutdown = options.shutdown.clone();
    tokio::select! {
        r = backup_hub(store, client, staging, recipients, options) => r,
        () = shutdown.requested() => Err(crate::shutdown::Interrupted {
            done: staging.abandon(&[client]).await,
            next: "no snapshot was made; run the backup again",
        }
        .into()),
    }
}

async fn backup_hub(
    store: Arc<dyn Store>,
    client: &HubClient,
    staging: &Staging,
    recipients: &[age::x25519::Recipient],
    options: HubBackupOptions,
) -> Result<HubBackupReport, Error> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let hub = client.host().to_ascii_lowercase();
    crate::snapshot::catalog::check_hub(&hub)?;
    // Killed runs through this container (any hub) first: their plaintext goes now.
    let mut dead_runs = options.swept_before.clone();
    dead_runs.extend(sweep_dead_runs(staging, client).await);
    let age = options
        .leftover_age
        .unwrap_or_else(|| staging.sas_lifetime());
    // An age beyond the calendar: nothing is that old.
    let older_than = OffsetDateTime::now_utc()
        .checked_sub(time::Duration::try_from(age).unwrap_or(time::Duration::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // A failed sweep (say, a SAS without list rights) must not stop the backup.
    let leftovers_removed = match staging.sweep_leftovers(client, older_than).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("could not look for leftovers of killed runs in staging: {e}");
            0
        }
    };
    let result = export_and_seal(store, client, staging, &hub, recipients, &options).await;
    let cleaned = if result.is_ok() {
        staging.cleanup().await
    } else {
        // The export job may still be writing keys in plaintext: cancelled and awaited first.
        staging.finish_failed(&[client]).await
    };
    match (result, cleaned) {
        (Ok(backup), Ok(staging_deleted)) => Ok(HubBackupReport {
            backup,
            staging_deleted,
            leftovers_removed,
            dead_runs,
        }),
        (Ok(_), Err(e)) => {
            tracing::warn!("the snapshot is committed, but its staging blobs could not be deleted");
            Err(e.into())
        }
        (Err(e), Ok(n)) => {
            tracing::warn!(
                "backup failed; deleted {n} plaintext staging blob(s) of this run from {}",
                staging.location()
            );
            Err(e)
        }
        (Err(e), Err(cleanup)) => {
            tracing::warn!(
                "backup failed and its staging could not all be removed ({cleanup}); the next run through this staging container sweeps what is left"
            );
            Err(e)
        }
    }
}

/// What `backup --hub` did: the preflight (when it ran) and, unless it found problems, the backup.
#[derive(Debug)]
pub struct LiveBackup {
    pub preflight: Option<crate::preflight::Report>,
    pub backup: Option<HubBackupReport>,
}

/// The whole `backup --hub` use case: clean up after killed runs through the staging container
/// (before preflight, whose job-slot check a dead run's job would fail), preflight with
/// `checks` (when given; findings stop the backup and are reported), then [`from_hub`].
pub async fn run(
    store: Arc<dyn Store>,
    client: &HubClient,
    staging: &Staging,
    recipients: &[age::x25519::Recipient],
    mut options: HubBackupOptions,
    checks: Option<crate::preflight::Checks<'_>>,
) -> Result<LiveBackup, Error> {
    options.swept_before = sweep_dead_runs(staging, client).await;
    let preflight = match checks {
        Some(mut checks) => {
            checks.staging = Some(staging);
            let report = crate::preflight::run(&checks).await;
            if !report.ok {
                return Ok(LiveBackup {
                    preflight: Some(report),
                    backup: None,
                });
            }
            Some(report)
        }
        None => None,
    };
    let backup = from_hub(store, client, staging, recipients, options).await?;
    Ok(LiveBackup {
        preflight,
        backup: Some(backup),
    })
}

/// Clean up after killed runs through `staging` (see [`Staging::sweep_dead_runs`]); a failure
/// only warns: it must not stop the backup.
pub async fn sweep_dead_runs(
    staging: &Staging,
    client: &HubClient,
) -> Vec<crate::staging::SweptRun> {
    match staging.sweep_dead_runs(&[client]).await {
        Ok(swept) => swept,
        Err(e) => {
            tracing::warn!("could not look for killed runs in the staging journal: {e}");
            Vec::new()
        }
    }
}

async fn export_and_seal(
    store: Arc<dyn Store>,
    client: &HubClient,
    staging: &Staging,
    hub: &str,
    recipients: &[age::x25519::Recipient],
    options: &HubBackupOptions,
) -> Result<BackupReport, Error> {
    let include_configurations = options.backup.include_configurations;
    // The hub's own count around the job: an export that lost records is never committed.
    let before = count_identities(client).await;
    let uri = staging.hand_out(SasPermissions::export_output()).await?;
    let job = export_request(&uri, staging, include_configurations);
    let created = create_job(client, &job, options).await?;
    let job_id = created.id().to_owned();
    staging.record_job(&job_id).await?;
    tracing::info!(hub, job_id, staging = %staging.location(), "export job created");
    if let Some(pause) = &options.export_running {
        pause();
    }
    let done = client
        .wait_for_job(&job_id, &options.poll, |j| {
            tracing::info!(job_id = j.id(), status = ?j.status(), progress = j.progress, "export job");
        })
        .await?;
    if done.status() != JobStatus::Completed {
        return Err(Error::JobFailed {
            hub: client.name().to_owned(),
            job_id,
            status: format!("{:?}", done.status()).to_ascii_lowercase(),
            reason: crate::redact::redact(
                done.failure_reason.as_deref().unwrap_or("no reason given"),
            ),
        });
    }
    let after = count_identities(client).await;
    let mut backup = options.backup.clone();
    backup.expect = before.zip(after).map(|(b, a)| HubCounts {
        devices_before: b.0,
        devices_after: a.0,
        modules_before: b.1,
        modules_after: a.1,
    });
    let handle = tokio::runtime::Handle::current();
    let stored = |file: &str| Input::Stored {
        store: staging.store().clone(),
        name: staging.object(file),
        handle: handle.clone(),
    };
    let mut inputs = vec![(DEVICES, stored(DEVICES_FILE))];
    if include_configurations
        && staging
            .store()
            .head(&staging.object(CONFIGURATIONS_FILE))
            .await?
            .is_some()
    {
        inputs.push((CONFIGURATIONS, stored(CONFIGURATIONS_FILE)));
    }
    let source = Source {
        kind: "export-job".into(),
        job_id: Some(job_id),
        path: None,
    };
    let mut report = write_snapshot(store, &inputs, hub, source, recipients, &backup).await?;
    report.hub_counts = backup.expect;
    Ok(report)
}

/// The hub's device and module counts, or `None` (with a warning) when they cannot be read:
/// the check is then skipped, and the report says so by its missing `hub_counts`.
async fn count_identities(client: &HubClient) -> Option<(u64, u64)> {
    match client.count_identities().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                "cannot count the identities of {} ({e}); the export's record count is not checked against the hub",
                client.name()
            );
            None
        }
    }
}

fn export_request(uri: &SecretUrl, staging: &Staging, configurations: bool) -> JobProperties {
    let mut job = JobProperties::export(
        uri.expose(),
        &staging.blob(DEVICES_FILE),
        &staging.blob(CONFIGURATIONS_FILE),
    );
    job.storage_authentication_type = Some(staging.authentication_type().to_owned());
    if !configurations {
        job.include_configurations = Some(false);
        job.configurations_blob_name = None;
    }
    job
}

/// Create the job; a busy slot is waited for (`wait_for_slot`) or reported with the running
/// job's id.
async fn create_job(
    client: &HubClient,
    job: &JobProperties,
    options: &HubBackupOptions,
) -> Result<JobProperties, Error> {
    for _ in 0..SLOT_WAITS {
        match client.create_job(job).await {
            Err(hub::Error::JobSlotBusy {
                running_job: Some(running),
                ..
            }) if options.wait_for_slot => {
                tracing::warn!(
                    "{} runs job {running}; waiting for it to finish (--wait)",
                    client.name()
                );
                client.wait_for_job(&running, &options.poll, |_| {}).await?;
            }
            other => return Ok(other?),
        }
    }
    Ok(client.create_job(job).await?)
}
