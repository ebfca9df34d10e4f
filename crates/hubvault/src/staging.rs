//! One run's staging area for IoT Hub import/export jobs (docs/azure.md).
//!
//! IoT Hub's only bulk path writes every device key in **plaintext** into a blob container. This
//! module owns that container's use by one run: where it is (`--staging URL` or config
//! `[staging]`), a fresh run id, the blob names `staging/<hub>/<run-id>/<file>`, a least-privilege
//! container SAS minted per job (never reused, expiring after `sas-lifetime`), deleting the run's
//! blobs ([`Staging::cleanup`]) and removing leftovers of killed runs of the same hub
//! ([`Staging::sweep_leftovers`]). Every delete also discards blobs with only uncommitted blocks
//! (a half-written export: `staging/purge.rs`). Import jobs write their error logs at the
//! container root, so imports through one container take turns under a lease
//! ([`Staging::lock_imports`], see `staging/lock.rs`).
//!
//! Must not: know snapshots or the sealing pipeline, or show a SAS signature or account key
//! (every URL leaves this module as a [`SecretUrl`], whose `Debug`/`Display` redact `sig=`).

mod journal;
mod lock;
mod owner;
mod purge;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use url::Url;

use crate::config::Config;
use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::{HubClient, JobProperties};
use crate::store::azure::{AzureAuth, AzureLocation, AzureStore};
use crate::store::local::LocalStore;
use crate::store::sas::SasPermissions;
use crate::store::{self, Store};

/// Default `sas-lifetime`: the longest job we allow (docs/azure.md).
pub const DEFAULT_SAS_LIFETIME: Duration = Duration::from_secs(6 * 3600);
/// The longest `sas-lifetime` accepted: a job that has not ended after two days will not, and a
/// longer-lived SAS would keep a dead run's plaintext reachable that much longer.
pub const MAX_SAS_LIFETIME: Duration = Duration::from_secs(48 * 3600);
/// How far back a SAS starts, so a hub whose clock runs a little behind ours accepts it.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// How long a sweep waits for a dead run's cancelled job to stop before deleting its blobs (a
/// job still running after that is swept again by later runs).
const JOB_SETTLE: Duration = Duration::from_secs(30);
/// How long a run stopped by a shutdown waits for its cancelled job to stop (a service manager
/// allows some 30 s for the whole exit); if it has not, the next run sweeps what it writes.
const ABANDON_SETTLE: Duration = Duration::from_secs(10);
/// The folder under the container that holds every run's blobs.
const ROOT: &str = "staging";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no staging storage: {}", fix_text(self))]
    NotConfigured { config: String },
    #[error("invalid staging setting {key}: {detail}")]
    Invalid { key: String, detail: String },
    #[error(
        "staging container {container} is still in use by {holder} after waiting {waited}; the hub writes importErrors.log at the container root, so imports through one container take turns: {}",
        fix_text(self)
    )]
    ImportLockBusy {
        container: String,
        holder: String,
        waited: String,
    },
    #[error(
        "staging container {container}: an import into {hub} (run {run}) was interrupted while its job could still write importErrors.log at the container root (until {until}), where this restore would read it as its own; {}",
        fix_text(self)
    )]
    ImportLockStale {
        container: String,
        hub: String,
        run: String,
        until: String,
    },
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotConfigured { .. } => "staging_not_configured",
            Error::Invalid { .. } => "staging_invalid",
            Error::ImportLockBusy { .. } => "staging_import_lock_busy",
            Error::ImportLockStale { .. } => "staging_import_lock_stale",
            Error::Config(e) => e.code(),
            Error::Store(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::NotConfigured { config } => Some(format!(
                "pass --staging URL (a container URL with SAS) or add [staging] to {config}"
            )),
            Error::Invalid { .. } => None,
            Error::ImportLockBusy { .. } => Some(
                "run again when that import has ended, or give this restore its own staging \
                 container (--staging)"
                    .to_owned(),
            ),
            Error::ImportLockStale { .. } => Some(
                "give this restore another staging container (--staging), wait until then, or \
                 delete blob hubvault-import.lock if that import job has ended"
                    .to_owned(),
            ),
            Error::Config(e) => e.fix(),
            Error::Store(e) => e.fix(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A URL that may carry a SAS signature: `Debug` and `Display` show `sig=<redacted>`; only
/// [`SecretUrl::expose`] gives the real value (for the wire, never for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", crate::redact::redact(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::redact(&self.0))
    }
}

/// How the hub is given access to the container.
#[derive(Clone)]
enum Access {
    /// We hold the account key: mint a fresh least-privilege container SAS per job.
    AccountKey(AzureStore),
    /// The user gave a SAS URL: it is used as given (we cannot mint a narrower one).
    GivenSas(AzureStore),
    /// https without SAS: the hub reaches the container with its own identity (`identityBased`).
    Identity(AzureStore),
    /// A local folder as `file://` (simulator-only demo; no real hub can write there).
    File(Url),
}

/// One run's staging area. Cheap to clone.
#[derive(Clone)]
pub struct Staging {
    access: Access,
    store: Arc<dyn Store>,
    /// Path segment for the hub (its host name).
    hub: String,
    run_id: String,
    sas_lifetime: Duration,
    /// The container's import lock while this run holds it (shared by clones of this value,
    /// so the Ctrl-C path releases what the import took).
    import_lock: Arc<tokio::sync::Mutex<Option<lock::Held>>>,
    /// This run's journal while it has handed out a SAS and not yet cleaned up.
    journal: Arc<tokio::sync::Mutex<Option<(journal::Held, journal::Record)>>>,
}

impl SweptRun {
    /// One sentence for people.
    pub fn sentence(&self) -> String {
        let mut out = format!(
            "a killed run of {} (run {}) had left its staging: deleted {} plaintext blob(s)",
            self.hub, self.run, self.blobs_deleted
        );
        if let Some(j) = &self.cancelled_job {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("; cancelled its job {j}"));
        }
        if !self.finished {
            out.push_str(
                "; its job may still write until its SAS expires, so later runs check its folder again",
            );
        }
        out
    }
}

/// What a sweep did about one dead run found through its journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SweptRun {
    pub hub: String,
    pub run: String,
    /// The dead run's job this sweep cancelled (it held that hub's credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_job: Option<String>,
    /// Its plaintext blobs deleted now.
    pub blobs_deleted: usize,
    /// Whether nothing of that run can write any more (its journal is gone); else later runs
    /// sweep its names again until its job ends or its SAS expires.
    pub finished: bool,
}

impl fmt::Debug for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging")
            .field("location", &self.store.location())
            .field("hub", &self.hub)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// The staging area named by `spec` (`--staging`) or, without it, by config `[staging]`,
    /// for `hub` (a host name: it becomes a path segment), with a fresh run id.
    pub fn open(spec: Option<&str>, config: &Config, hub: &str) -> Result<Staging> {
        let entry = config.staging.as_ref();
        let sas_lifetime = match entry.and_then(|e| e.sas_lifetime.as_deref()) {
            Some(text) => parse_lifetime(text).map_err(|detail| Error::Invalid {
                key: "staging.sas-lifetime".into(),
                detail,
            })?,
            None => DEFAULT_SAS_LIFETIME,
        };
        let access = match spec {
            Some(s) => access_from_spec(s)?,
            None => access_from_config(config)?,
        };
        Self::with_access(access, hub, sas_lifetime)
    }

    fn with_access(access: Access, hub: &str, sas_lifetime: Duration) -> Result<Staging> {
        let segment = hub_segment(hub)?;
        let store: Arc<dyn Store> = match &access {
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                Arc::new(s.clone())
            }
            Access::File(url) => Arc::new(LocalStore::new(url.path())),
        };
        Ok(Staging {
            access,
            store,
            hub: segment,
            run_id: store::time_id(OffsetDateTime::now_utc(), rand::random()),
            sas_lifetime,
            import_lock: Arc::default(),
            journal: Arc::default(),
        })
    }

    /// This run's id (`20261126T020000Z-3f9a1c2e`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn sas_lifetime(&self) -> Duration {
        self.sas_lifetime
    }

    /// Until when a SAS handed out at `now` lets a job write: `now + sas-lifetime` (at most
    /// [`MAX_SAS_LIFETIME`]; `now` itself at the end of the calendar).
    fn sas_until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now.checked_add(time::Duration::try_from(self.sas_lifetime).unwrap_or(time::Duration::DAY))
            .unwrap_or(now)
    }

    /// Where the staging container is, for messages (no secrets).
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The store over the container, to read, write and delete staging blobs by
    /// [`Staging::object`] names.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A store-relative name of one of this run's files: `staging/<hub>/<run-id>/<file>`.
    pub fn object(&self, file: &str) -> String {
        format!("{}{file}", self.run_prefix())
    }

    /// The blob name a job is given for `file` (relative to the container; includes the
    /// location's prefix, if any).
    pub fn blob(&self, file: &str) -> String {
        match &self.access {
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                s.azure_location().blob_name(&self.object(file))
            }
            Access::File(_) => self.object(file),
        }
    }

    fn hub_prefix(&self) -> String {
        format!("{ROOT}/{}/", self.hub)
    }

    fn run_prefix(&self) -> String {
        format!("{}{}/", self.hub_prefix(), self.run_id)
    }

    /// Why a hub in Azure could not reach this staging container (`None`: plausibly it can):
    /// a `file://` folder, or a loopback or private address.
    pub fn unreachable_by_cloud(&self) -> Option<String> {
        let url = match &self.access {
            Access::File(_) => return Some("a file:// folder exists only on this machine".into()),
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                s.azure_location().container_url()
            }
        };
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let local = host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
                std::net::IpAddr::V4(v4) => {
                    v4.is_loopback() || v4.is_private() || v4.is_link_local()
                }
                std::net::IpAddr::V6(v6) => v6.is_loopback(),
            });
        local.then(|| format!("{host} is a local or private address"))
    }

    /// Whether a job reads or writes this run's blobs (its blob names carry our run id).
    pub fn owns_job(&self, job: &JobProperties) -> bool {
        let ours = |name: &Option<String>| {
            name.as_deref()
                .is_some_and(|n| n.contains(&self.run_prefix()))
        };
        ours(&job.output_blob_name) || ours(&job.input_blob_name)
    }

    /// The container URI a job is given, minted now (see [`Staging::job_container_uri_at`]).
    pub fn job_container_uri(&self, perms: SasPermissions) -> Result<SecretUrl> {
        self.job_container_uri_at(perms, OffsetDateTime::now_utc())
    }

    /// The container URI a job is given: with the account key, the container URL plus a fresh
    /// container SAS (`sr=c`) with exactly `perms`, valid from a little before `now` until
    /// `now + sas-lifetime`; a user-given SAS URL as is; the bare URL for identity-based access;
    /// the `file://` URL for a local folder.
    pub fn job_container_uri_at(
        &self,
        perms: SasPermissions,
        now: OffsetDateTime,
    ) -> Result<SecretUrl> {
        Ok(SecretUrl(match &self.access {
            Access::AccountKey(s) => {
                let sas =
                    s.container_sas(perms, now.saturating_sub(CLOCK_SKEW), self.sas_until(now))?;
                sas.on(&s.azure_location().container_url()).to_string()
            }
            Access::GivenSas(s) => match &s.azure_location().auth {
                AzureAuth::Sas(t) => t.on(&s.azure_location().container_url()).to_string(),
                _ => s.azure_location().container_url().to_string(),
            },
            Access::Identity(s) => s.azure_location().container_url().to_string(),
            Access::File(url) => {
                // The simulator writes `file://` blobs without creating folders: make the
                // run's folder now (cleanup removes it).
                let dir = std::path::Path::new(url.path()).join(self.run_prefix());
                std::fs::create_dir_all(&dir).map_err(|source| store::Error::Io {
                    store: url.path().to_owned(),
                    context: "create the run's staging folder".into(),
                    source,
                })?;
                url.to_string()
            }
        }))
    }

    /// The container URI to give a job: first records the run in its journal (created on first
    /// use, kept alive until [`Staging::cleanup`]) with until when this SAS lets a job write, so
    /// a later run can clean up after this one if it is killed. Use this, not
    /// [`Staging::job_container_uri`], for every URI a hub receives.
    pub async fn hand_out(&self, perms: SasPermissions) -> Result<SecretUrl> {
        let now = OffsetDateTime::now_utc();
        let until = self.sas_until(now).unix_timestamp();
        let mut slot = self.journal.lock().await;
        if let Some((held, record)) = slot.as_mut() {
            if until > record.until {
                record.until = until;
                journal::update(held, record).await?;
            }
        } else {
            let record = journal::Record {
                hub: self.hub.clone(),
                run: self.run_id.clone(),
                prefix: self.run_prefix(),
                jobs: Vec::new(),
                until,
                found_dead: None,
                owner: owner::Owner::this(),
                beat: None,
            };
            let held = match &self.access {
                Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                    journal::open_lease(s, &record).await?
                }
                Access::File(url) => journal::open_file(std::path::Path::new(url.path()), &record)?,
            };
            *slot = Some((held, record));
        }
        drop(slot);
        self.job_container_uri_at(perms, now)
    }

    /// Note a job this run created in its journal (a later run cancels it if this one dies).
    pub async fn record_job(&self, job_id: &str) -> Result<()> {
        let mut slot = self.journal.lock().await;
        if let Some((held, record)) = slot.as_mut() {
            record.jobs.push(job_id.to_owned());
            journal::update(held, record).await?;
        }
        Ok(())
    }

    /// Stop this run because a shutdown was asked for: cancel the job of this run that one of
    /// `clients` still runs (it would write plaintext after we are gone), delete the run's
    /// blobs, end its journal and import lock ([`Staging::finish_failed`], waiting at most
    /// [`ABANDON_SETTLE`] for the job to stop). Returns what was done, each part starting with
    /// "; ", for the `Interrupted` error of a use case. The one place this is done, for every use case.
    pub async fn abandon(&self, clients: &[&HubClient]) -> String {
        use std::fmt::Write as _;
        let mut said = String::new();
        let cleaned = self
            .finish_failed_within(clients, ABANDON_SETTLE, &mut said)
            .await;
        match cleaned {
            Ok(n) => {
                let _ = write!(
                    said,
                    "; deleted {n} plaintext staging blob(s) of this run for {}",
                    self.hub
                );
            }
            Err(e) => {
                let _ = write!(
                    said,
                    "; staging blobs for {} not deleted ({e}), the next run through this container removes them",
                    self.hub
                );
            }
        }
        said
    }

    /// End a run that failed: a job of it that one of `clients` still runs (a recorded one, or
    /// the hub's active job writing under this run's folder) is cancelled (it would write
    /// plaintext after we are gone) and awaited for at most [`JOB_SETTLE`]; then as
    /// [`Staging::cleanup`]. If the job has not stopped by then, the run's committed blobs go
    /// now, and its journal and import lock are left (no longer kept alive) for the next run's
    /// dead-run sweep, which keeps sweeping its names until the job has ended. Returns how many
    /// blobs were deleted.
    pub async fn finish_failed(&self, clients: &[&HubClient]) -> Result<usize> {
        self.finish_failed_within(clients, JOB_SETTLE, &mut String::new())
            .await
    }

    /// [`Staging::finish_failed`] waiting at most `settle`; what it did to a job is appended
    /// to `said` ("; job … cancelled").
    async fn finish_failed_within(
        &self,
        clients: &[&HubClient],
        settle: Duration,
        said: &mut String,
    ) -> Result<usize> {
        use std::fmt::Write as _;
        let record = self.journal.lock().await.as_ref().map(|(_, r)| r.clone());
        let client = record.as_ref().and_then(|r| {
            clients
                .iter()
                .find(|c| c.host().eq_ignore_ascii_case(&r.hub))
        });
        let (Some(record), Some(client)) = (record, client) else {
            return self.cleanup().await;
        };
        // Whether or not a job id was recorded: a job created just before a shutdown cut the
        // run short is found by its blob names on the hub's active job. Every hub read here is
        // bounded by `settle` (a hub failing over retries for minutes).
        let bounded = async |f| tokio::time::timeout(settle, f).await.ok().flatten();
        match bounded(self.job_state(client, &record)).await {
            Some(true) => return self.cleanup().await,
            // The hub cannot be read (a firewall, a failover, the network): whether a job of
            // this run exists cannot be known (a job-creation request whose answer was lost may
            // have made one), so its journal is left to the next run's dead-run sweep, which
            // closes it as soon as it can read the hub. With no job recorded the import lock is
            // released (holding it would keep other hubs' restores out for the SAS lifetime).
            None => {
                let _ = write!(
                    said,
                    "; {} could not be read, so whether a job of this run still writes is not \
                     known: the next run through this staging container sweeps its folder",
                    client.name()
                );
                return self.leave_to_sweep(&record, !record.jobs.is_empty()).await;
            }
            Some(false) => {}
        }
        let active = tokio::time::timeout(settle, client.active_job()).await;
        if let Ok(Ok(Some(job))) = active
            && self.owns_job(&job)
        {
            let cancelled = tokio::time::timeout(settle, client.cancel_job(job.id()))
                .await
                .is_ok_and(|r| r.is_ok());
            let _ = write!(
                said,
                "; job {} on {} {}",
                job.id(),
                client.name(),
                if cancelled {
                    "cancelled"
                } else {
                    "could not be cancelled"
                }
            );
        }
        let ended = tokio::time::timeout(
            settle.saturating_add(Duration::from_secs(1)),
            self.jobs_ended_within(client, &record, settle),
        )
        .await
        .unwrap_or(false);
        if ended {
            return self.cleanup().await;
        }
        let _ = write!(
            said,
            "; a job of this run had not stopped: the next run through this staging container \
             sweeps what it still writes"
        );
        self.leave_to_sweep(&record, true).await
    }

    /// A job of this run may still write: delete the run's committed blobs now and leave its
    /// journal (no longer kept alive) to the next run's dead-run sweep; with `keep_lock`, its
    /// import lock and holder record too (the job may still write its logs), else the lock is
    /// released.
    async fn leave_to_sweep(&self, record: &journal::Record, keep_lock: bool) -> Result<usize> {
        tracing::warn!(
            hub = %record.hub,
            run = %record.run,
            "this run's job may still be writing: its plaintext blobs are deleted now and the next run through this staging container sweeps what the job still writes"
        );
        let deleted = self.delete_under(&self.run_prefix(), false).await;
        if let Some((held, _)) = self.journal.lock().await.take() {
            journal::leave(held).await;
        }
        if let Some(held) = self.import_lock.lock().await.take() {
            if keep_lock {
                lock::leave(held).await;
            } else {
                lock::release(held, &*self.store).await?;
            }
        }
        deleted
    }

    /// Find runs through this container that died without cleaning up (their journal is no
    /// longer kept alive), whatever their hub: cancel a dead run's job when one of `clients` is
    /// that hub's, delete its plaintext blobs now (its uncommitted ones once its job has ended
    /// or its SAS expired), and keep sweeping its names on later runs until then (a job can
    /// write after its runner died).
    pub async fn sweep_dead_runs(&self, clients: &[&HubClient]) -> Result<Vec<SweptRun>> {
        let mut swept = Vec::new();
        for dead in journal::find_dead(&self.access, &self.run_id).await? {
            let mut record = dead.record;
            let client = clients
                .iter()
                .find(|c| c.host().eq_ignore_ascii_case(&record.hub));
            let mut cancelled_job = None;
            let mut job_ended = false;
            if let Some(client) = client {
                if let Ok(Some(job)) = client.active_job().await {
                    let ours = [&job.output_blob_name, &job.input_blob_name]
                        .iter()
                        .any(|n| n.as_deref().is_some_and(|n| n.contains(&record.prefix)));
                    if ours && client.cancel_job(job.id()).await.is_ok() {
                        cancelled_job = Some(job.id().to_owned());
                    }
                }
                // Delete only once its job has stopped (within a bound), so what the job
                // writes between our look and its end goes too.
                job_ended = self.jobs_ended_within(client, &record, JOB_SETTLE).await;
            }
            let expired = record.until <= OffsetDateTime::now_utc().unix_timestamp();
            let finished = job_ended || expired;
            // Its committed blobs go now; its uncommitted ones once nothing of it can write
            // (an empty commit under a job still writing would race it), else on a later sweep.
            let mut blobs_deleted = self.delete_under(&record.prefix, finished).await?;
            // A dead import's logs sit at the container root under its import lock.
            if finished
                && let Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) =
                    &self.access
            {
                blobs_deleted =
                    blobs_deleted.saturating_add(lock::clear_dead(s, &record.run).await?);
            }
            if record.found_dead.is_none() {
                record.found_dead = OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok();
            }
            journal::release(dead.claim, (!finished).then_some(&record)).await?;
            if blobs_deleted > 0 || cancelled_job.is_some() {
                tracing::warn!(
                    hub = %record.hub,
                    run = %record.run,
                    blobs = blobs_deleted,
                    cancelled = cancelled_job.as_deref().unwrap_or("-"),
                    "a killed run's staging: plaintext removed"
                );
            }
            swept.push(SweptRun {
                hub: record.hub,
                run: record.run,
                cancelled_job,
                blobs_deleted,
                finished,
            });
        }
        Ok(swept)
    }

    /// [`Staging::job_state`], asked every half second until the jobs have ended or `bound` has
    /// passed; `false` at once when the hub cannot be read.
    async fn jobs_ended_within(
        &self,
        client: &HubClient,
        record: &journal::Record,
        bound: Duration,
    ) -> bool {
        let start = std::time::Instant::now();
        loop {
            match self.job_state(client, record).await {
                Some(true) => return true,
                // A hub that cannot be read is not waited on: a later run looks again.
                None => return false,
                Some(false) => {}
            }
            if start.elapsed() >= bound {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether every job a run recorded has ended (and none of its still runs), as the hub
    /// tells it: `Some(ended)`, or `None` when a job's state or the hub's active job could not
    /// be read.
    async fn job_state(&self, client: &HubClient, record: &journal::Record) -> Option<bool> {
        for id in &record.jobs {
            match client.get_job(id).await {
                Ok(job) if job.status().is_terminal() => {}
                Ok(_) => return Some(false),
                Err(crate::hub::Error::NotFound { .. }) => {}
                Err(_) => return None,
            }
        }
        match client.active_job().await {
            Ok(Some(job)) => Some(
                ![&job.output_blob_name, &job.input_blob_name]
                    .iter()
                    .any(|n| n.as_deref().is_some_and(|n| n.contains(&record.prefix))),
            ),
            Ok(None) => Some(true),
            Err(_) => None,
        }
    }

    /// The job's `storageAuthenticationType` for [`Staging::job_container_uri`]: `keyBased` for a
    /// SAS (and for `file://`, which the simulator treats alike), `identityBased` without one.
    /// Set it on every job request: a `file://` URI has no `sig=` to infer it from.
    pub fn authentication_type(&self) -> &'static str {
        match self.access {
            Access::Identity(_) => "identityBased",
            _ => "keyBased",
        }
    }

    /// Take the container's import lock before creating an import job, waiting (polling every
    /// `poll`, up to `sas-lifetime`, the longest job) while another run's import holds it; a
    /// clear error when a killed run of another hub may still write its log here. Held until
    /// [`Staging::cleanup`]. Stale error logs of a killed holder are deleted on the way in.
    pub async fn lock_imports(&self, poll: Duration) -> Result<()> {
        let mut slot = self.import_lock.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let held = match &self.access {
            Access::File(_) => lock::Held::Local,
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                let me = lock::Holder {
                    hub: self.hub.clone(),
                    run: self.run_id.clone(),
                    until: self.sas_until(OffsetDateTime::now_utc()).unix_timestamp(),
                };
                lock::acquire(s, &me, poll, self.sas_lifetime).await?
            }
        };
        *slot = Some(held);
        Ok(())
    }

    /// An import job's error log (`importErrors.log` or `importConfigErrors.log`, written at the
    /// container root whatever the location's prefix); `None` when absent, which means no
    /// errors (docs/azure.md). Only while holding the import lock is it this run's log.
    pub async fn job_log(&self, name: &str) -> Result<Option<bytes::Bytes>> {
        debug_assert!(lock::JOB_LOGS.contains(&name));
        Ok(match &self.access {
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => {
                s.read_root(name).await?
            }
            Access::File(_) => match self.store.get_bytes(name).await {
                Ok(b) => Some(b),
                Err(store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// Delete the import jobs' error logs before this run's next import job, so its log is
    /// read alone. Needs the import lock (taken by [`Staging::lock_imports`]).
    pub async fn clear_job_logs(&self) -> Result<usize> {
        match self.import_lock.lock().await.as_ref() {
            Some(held) => lock::delete_logs(held, &*self.store).await,
            None => Ok(0),
        }
    }

    /// Delete this run's blobs (call on success, failure and Ctrl-C) and, when this run holds
    /// the import lock, the job's error logs, then end the lock. Returns how many blobs.
    pub async fn cleanup(&self) -> Result<usize> {
        // Uncommitted blobs too: the run's job has ended or been cancelled by now, and a
        // cancelled export leaves its half-written devices.txt as uncommitted blocks.
        let run_blobs = self.delete_under(&self.run_prefix(), true).await;
        // The journal goes only once the run's blobs are gone: if they could not all be
        // deleted, it stays (no longer kept alive, so the next run through the container finds
        // it dead and sweeps them); a process that lives on (`serve`) must not keep it alive.
        let journal = self.journal.lock().await.take();
        let closed = match (journal, run_blobs.is_ok()) {
            (Some((held, _)), true) => journal::close(held).await,
            (Some((held, _)), false) => {
                journal::leave(held).await;
                Ok(())
            }
            (None, _) => Ok(()),
        };
        // The lock ends even when the run's blobs or journal could not all be removed (the next
        // run sweeps those); holding it would only make other runs wait.
        let logs = match self.import_lock.lock().await.take() {
            Some(held) => lock::release(held, &*self.store).await?,
            None => 0,
        };
        closed?;
        let deleted = run_blobs?.saturating_add(logs);
        if let Access::File(url) = &self.access {
            // Empty folders only (best effort): a blob that appeared meanwhile stays visible.
            let dir = std::path::Path::new(url.path()).join(self.run_prefix());
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_dir(dir.parent().unwrap_or(&dir));
            let _ = std::fs::remove_dir(std::path::Path::new(url.path()).join(ROOT));
        }
        Ok(deleted)
    }

    /// Remove blobs of this hub's earlier runs whose newest blob is older than `older_than`
    /// (pass now minus the longest allowed job), except this run's, a live job's and any run
    /// that still has a journal (alive, or left to the dead-run sweep). Another
    /// hub's folder is never listed. If the hub's active job cannot be read, nothing is removed:
    /// a live job's input must never vanish under it.
    pub async fn sweep_leftovers(
        &self,
        client: &HubClient,
        older_than: OffsetDateTime,
    ) -> Result<usize> {
        let live = match client.active_job().await {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(
                    "not sweeping staging leftovers: cannot see the hub's active job: {e}"
                );
                return Ok(0);
            }
        };
        // With the uncommitted ones: the same age and live-job rules apply to them.
        let listed = self.blobs_under(&self.hub_prefix(), true).await?;
        let mut runs: std::collections::BTreeMap<String, Vec<purge::Blob>> =
            std::collections::BTreeMap::new();
        for blob in listed {
            let rest = &blob.meta.name[self.hub_prefix().len()..];
            if let Some((run, _)) = rest.split_once('/') {
                runs.entry(run.to_owned()).or_default().push(blob);
            }
        }
        // A run with a journal is alive (its blobs are its own, however old) or dead (the
        // dead-run sweep's, which waits for its job): never a leftover.
        let journalled = journal::runs(&self.access).await?;
        let mut removed: usize = 0;
        for (run, blobs) in runs {
            if journalled.contains(&run) {
                continue;
            }
            let prefix = format!("{}{run}/", self.hub_prefix());
            let live_here = live.as_ref().is_some_and(|j| {
                [&j.output_blob_name, &j.input_blob_name]
                    .iter()
                    .any(|n| n.as_deref().is_some_and(|n| n.contains(&prefix)))
            });
            let newest = blobs.iter().map(|b| b.meta.last_modified).max();
            if run == self.run_id || live_here || newest.is_none_or(|t| t >= older_than) {
                continue;
            }
            for blob in &blobs {
                self.remove(blob).await?;
                removed = removed.saturating_add(1);
            }
            tracing::info!(
                run,
                blobs = blobs.len(),
                "removed a killed run's staging leftovers"
            );
        }
        Ok(removed)
    }
}

/// Access from `[staging]`: an account-key connection string (+ `container`) or a container URL.
fn access_from_config(config: &Config) -> Result<Access> {
    let Some(entry) = config.staging.as_ref() else {
        return Err(Error::NotConfigured {
            config: config.describe(),
        });
    };
    let container = entry.container.as_deref().unwrap_or("hubvault-staging");
    let cs = match (&entry.connection_string, &entry.connection_string_env) {
        (Some(cs), _) => Some(cs.clone()),
        (None, Some(var)) => {
            Some(
                std::env::var(var).map_err(|_| crate::config::Error::MissingEnv {
                    var: var.clone(),
                    key: "staging.connection-string-env".into(),
                })?,
            )
        }
        (None, None) => None,
    };
    match (cs, &entry.container_url) {
        (Some(cs), _) => {
            access_from_location(AzureLocation::from_connection_string(&cs, container)?)
        }
        (None, Some(url)) => access_from_spec(url),
        (None, None) => Err(Error::Invalid {
            key: "staging".into(),
            detail: "set connection-string-env (+ container) or container-url".into(),
        }),
    }
}

fn access_from_spec(spec: &str) -> Result<Access> {
    if let Some(rest) = spec.strip_prefix("file://") {
        let url = Url::parse(spec).map_err(|e| Error::Invalid {
            key: "--staging".into(),
            detail: format!("not a file:// URL: {e}"),
        })?;
        if rest.is_empty() || url.path().len() <= 1 {
            return Err(Error::Invalid {
                key: "--staging".into(),
                detail: "file:// needs an absolute folder, e.g. file:///tmp/staging".into(),
            });
        }
        return Ok(Access::File(url));
    }
    if !AzureLocation::looks_like(spec) {
        return Err(Error::Invalid {
            key: "--staging".into(),
            detail: "expected a container URL (with SAS), an account-key connection string with Container=, or file:///folder".into(),
        });
    }
    access_from_location(AzureLocation::parse(spec)?)
}

fn access_from_location(location: AzureLocation) -> Result<Access> {
    Ok(match location.auth.clone() {
        AzureAuth::SharedKey(_) => Access::AccountKey(AzureStore::new(location, None)?),
        AzureAuth::Sas(_) => Access::GivenSas(AzureStore::new(location, None)?),
        AzureAuth::Entra => {
            // The hub reaches the container with its own identity; our own reads (ingest,
            // cleanup) go through the developer-tools credential.
            let credential =
                crate::services::entra_credential(crate::config::Credential::DeveloperTools)
                    .map_err(|e| Error::Invalid {
                        key: "staging".into(),
                        detail: e.to_string(),
                    })?;
            Access::Identity(AzureStore::new(location, Some(credential))?)
        }
    })
}

/// The hub's path segment: its host name, checked to be one plain segment.
fn hub_segment(hub: &str) -> Result<String> {
    let ok = !hub.is_empty()
        && hub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && hub != "."
        && hub != "..";
    if ok {
        Ok(hub.to_ascii_lowercase())
    } else {
        Err(Error::Invalid {
            key: "hub".into(),
            detail: format!("{hub:?} cannot name a staging folder; use the hub's host name"),
        })
    }
}

/// `sas-lifetime`: a number and a unit, `s`, `min`, `h` or `d` (`6h`, `90min`, `30s`), at most
/// [`MAX_SAS_LIFETIME`].
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} has no number; write e.g. \"6h\", \"90min\", \"30s\""))?;
    let per = match unit {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use s, min, h or d (e.g. \"6h\")"
            ));
        }
    };
    let secs = n.saturating_mul(per);
    if secs == 0 {
        return Err("a SAS lifetime must be longer than zero".into());
    }
    if secs > MAX_SAS_LIFETIME.as_secs() {
        return Err(format!(
            "{text:?} is longer than the {}h a SAS may live: a job that runs longer will not finish, \
             and a long-lived SAS keeps a killed run's plaintext reachable; write at most \"48h\"",
            MAX_SAS_LIFETIME.as_secs() / 3600
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;
    use crate::store::sas::{AZURITE_ACCOUNT, AZURITE_KEY};

    fn azurite_cs() -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:1/{AZURITE_ACCOUNT}"
        )
    }

    fn staging(lifetime: &str) -> Staging {
        let config: Config = Config::parse(
            &format!(
                "[staging]\nconnection-string = {:?}\ncontainer = \"stage-1\"\nsas-lifetime = {lifetime:?}\n",
                azurite_cs()
            ),
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        Staging::open(None, &config, "hub-a.azure-devices.net").unwrap()
    }

    #[test]
    fn blob_names_are_per_hub_and_run() {
        let s = staging("6h");
        let name = s.blob("devices.txt");
        assert_eq!(
            name,
            format!("staging/hub-a.azure-devices.net/{}/devices.txt", s.run_id())
        );
        assert_ne!(s.run_id(), staging("6h").run_id(), "a fresh run id per run");
        assert!(hub_segment("../x").is_err() && hub_segment("a/b").is_err());
    }

    #[test]
    fn minted_sas_is_least_privilege_expires_and_is_redacted() {
        let s = staging("2h");
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let uri = s
            .job_container_uri_at(SasPermissions::export_output(), now)
            .unwrap();
        let url = Url::parse(uri.expose()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["sp"], "rwd");
        assert_eq!(q["sr"], "c", "container SAS, never account-level");
        assert!(!q.contains_key("ss") && !q.contains_key("srt"));
        assert_eq!(q["se"], "2027-01-15T10:00:00Z", "now + 2h");
        assert!(url.path().ends_with("/stage-1"));
        let sig = &q["sig"];
        for shown in [uri.to_string(), format!("{uri:?}"), format!("{s:?}")] {
            assert!(!shown.contains(sig.as_str()), "{shown}");
            assert!(!shown.contains(AZURITE_KEY), "{shown}");
        }
        assert!(uri.to_string().contains("sig=<redacted>"));
        let again = s
            .job_container_uri_at(SasPermissions::import_input(), now)
            .unwrap();
        assert!(again.expose().contains("sp=r&"), "{again}");
    }

    #[test]
    fn lifetimes_parse_with_clear_errors() {
        assert_eq!(parse_lifetime("6h").unwrap(), Duration::from_secs(21_600));
        assert_eq!(parse_lifetime("90min").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_lifetime("3s").unwrap(), Duration::from_secs(3));
        assert!(
            parse_lifetime("6m")
                .unwrap_err()
                .contains("use s, min, h or d")
        );
        assert!(parse_lifetime("0h").is_err() && parse_lifetime("h").is_err());
        // Bounded, and no value panics (the review overflowed `n * 3600`).
        assert_eq!(parse_lifetime("48h").unwrap(), MAX_SAS_LIFETIME);
        for huge in [
            "49h",
            "3d",
            "18446744073709551615d",
            "99999999999999999999s",
        ] {
            let err = parse_lifetime(huge).unwrap_err();
            assert!(
                err.contains("48h") || err.contains("no number"),
                "{huge}: {err}"
            );
        }
    }

    #[test]
    fn missing_staging_says_how_to_configure_it() {
        let e = Staging::open(None, &Config::default(), "hub-a.azure-devices.net").unwrap_err();
        assert_eq!(e.code(), "staging_not_configured");
        assert!(e.to_string().contains("--staging"), "{e}");
    }
}
