//! No overlap, anywhere: one lease per hub on the store, so two runs of one hub never overlap —
//! across tasks, processes and machines — and the hub's [`HubStatus`] record next to it.
//!
//! - **Azure Blob:** a blob lease (`x-ms-lease-action: acquire/renew/release`) on
//!   `<prefix>/.hubvault-serve/<hub>.json`, renewed in the background while the run lives. The
//!   leased blob's content *is* the status record, so only the holder can write it. A killed
//!   holder stops renewing and the lease lapses after its duration (15–60 s).
//! - **Local folder:** a lock file `.hubvault-serve/<hub>.lock` created exclusively, holding its
//!   owner (host, pid, a random token); the heartbeat is the file's modification time, touched
//!   while the run lives. A lock whose heartbeat is older than the lease duration belonged to a
//!   dead run and is taken over, under a second exclusive guard file so two takers cannot both
//!   win. The status record is `.hubvault-serve/<hub>.json`, replaced atomically (rename).
//!
//! A lease alone is not "once": the holder checks the status record's slot before it runs.
//!
//! Must not: hold a lease past the run (release on every path), or write the status record
//! without holding the lease.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Error;
use super::status::HubStatus;
use crate::snapshot::catalog::SERVICE_PREFIX;
use crate::store::azure::{AzureStore, LeaseOutcome};

/// Azure's limits for a finite blob lease.
const AZURE_MIN_SECS: u64 = 15;
const AZURE_MAX_SECS: u64 = 60;

/// Who holds a lease (the local lock file's content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// Random per process: tells this process's lock from an earlier one with the same pid.
    pub token: String,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Owner {
        Owner {
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned()),
            pid: std::process::id(),
            token: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// The leases and status records of one store.
#[derive(Debug, Clone)]
pub enum Leases {
    Local { dir: PathBuf },
    Azure { store: AzureStore, prefix: String },
}

impl Leases {
    /// The leases of the store at `location` (as `--store` names it).
    pub fn open(location: &str) -> Result<Leases, Error> {
        if crate::store::azure::AzureLocation::looks_like(location) {
            let store = crate::store::open_azure(location)?;
            let prefix = store.azure_location().prefix.clone();
            let prefix = if prefix.is_empty() {
                SERVICE_PREFIX.to_owned()
            } else {
                format!("{prefix}/{SERVICE_PREFIX}")
            };
            return Ok(Leases::Azure { store, prefix });
        }
        let root = location.strip_prefix("file://").unwrap_or(location);
        Ok(Leases::Local {
            dir: Path::new(root).join(SERVICE_PREFIX.trim_end_matches('/')),
        })
    }

    /// The lease duration this backend can hold (Azure: 15–60 s).
    pub fn duration(&self, wanted: Duration) -> Duration {
        match self {
            Leases::Local { .. } => wanted.max(Duration::from_secs(1)),
            Leases::Azure { .. } => {
                Duration::from_secs(wanted.as_secs().clamp(AZURE_MIN_SECS, AZURE_MAX_SECS))
            }
        }
    }

    /// Take `hub`'s lease for `ttl` (renewed every third of it while held), or `None` when a
    /// live run holds it.
    pub async fn try_acquire(
        &self,
        hub: &str,
        owner: &Owner,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        crate::store::check_name(hub)?;
        let ttl = self.duration(ttl);
        let held = match self {
            Leases::Azure { store, prefix } => {
                let name = format!("{prefix}{hub}.json");
                let lease_id = uuid::Uuid::new_v4().to_string();
                if !azure_acquire(store, &name, ttl, &lease_id).await? {
                    return Ok(None);
                }
                Held::Azure {
                    store: store.clone(),
                    name,
                    lease_id,
                }
            }
            Leases::Local { dir } => {
                let lock = dir.join(format!("{hub}.lock"));
                if !local_acquire(dir, &lock, owner, ttl).await? {
                    return Ok(None);
                }
                Held::Local {
                    lock,
                    status: dir.join(format!("{hub}.json")),
                    owner: owner.clone(),
                }
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        let renew = tokio::spawn(renew_loop(held.clone(), ttl, lost.clone()));
        Ok(Some(Lease { held, renew, lost }))
    }

    /// `hub`'s status record, read without the lease (for gauges); default when none exists.
    pub async fn read_status(&self, hub: &str) -> Result<HubStatus, Error> {
        let bytes = match self {
            Leases::Azure { store, prefix } => store
                .read_root(&format!("{prefix}{hub}.json"))
                .await?
                .map(|b| b.to_vec()),
            Leases::Local { dir } => read_optional(&dir.join(format!("{hub}.json"))).await?,
        };
        parse_status(hub, bytes.as_deref())
    }

    /// Is the store's lease area reachable (`/readyz`)?
    pub async fn reachable(&self) -> bool {
        match self {
            Leases::Azure { store, prefix } => store
                .read_root(&format!("{prefix}readyz-probe"))
                .await
                .is_ok(),
            // The store folder is there, or the first write can make it (its parent is there).
            Leases::Local { dir } => dir.parent().is_some_and(|store| {
                store.is_dir()
                    || store
                        .parent()
                        .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
            }),
        }
    }
}

fn parse_status(hub: &str, bytes: Option<&[u8]>) -> Result<HubStatus, Error> {
    match bytes {
        None => Ok(HubStatus::default()),
        Some(b) => HubStatus::from_bytes(b).map_err(|e| Error::Status {
            hub: hub.to_owned(),
            detail: e.to_string(),
        }),
    }
}

async fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// A held lease of one hub.
#[derive(Debug, Clone)]
enum Held {
    Azure {
        store: AzureStore,
        name: String,
        lease_id: String,
    },
    Local {
        lock: PathBuf,
        status: PathBuf,
        owner: Owner,
    },
}

/// One hub's lease, held by this run. End it with [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    held: Held,
    renew: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Lease {
    /// Whether a renewal failed (another run may have taken over): the run should not record.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Also raise `flag` when the lease is lost (the run's stop signal watches it).
    pub fn watch_lost(&self, flag: Arc<AtomicBool>) {
        let lost = self.lost.clone();
        tokio::spawn(async move {
            while !lost.load(Ordering::Relaxed) {
                if Arc::strong_count(&lost) == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            flag.store(true, Ordering::Relaxed);
        });
    }

    /// The hub's status record, read under the lease.
    pub async fn read_status(&self, hub: &str) -> Result<HubStatus, Error> {
        let bytes = match &self.held {
            Held::Azure { store, name, .. } => store.read_root(name).await?.map(|b| b.to_vec()),
            Held::Local { status, .. } => read_optional(status).await?,
        };
        parse_status(hub, bytes.as_deref())
    }

    /// Replace the hub's status record (only the holder can).
    pub async fn write_status(&self, status: &HubStatus) -> Result<(), Error> {
        let bytes = status.to_bytes();
        match &self.held {
            Held::Azure {
                store,
                name,
                lease_id,
            } => {
                store
                    .put_root(name, Bytes::from(bytes), Some(lease_id))
                    .await?;
            }
            Held::Local { status: path, .. } => {
                let tmp = path.with_extension(format!("json.{}", uuid::Uuid::new_v4().simple()));
                tokio::fs::write(&tmp, &bytes)
                    .await
                    .map_err(|e| Error::io(&tmp, e))?;
                tokio::fs::rename(&tmp, path)
                    .await
                    .map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(())
    }

    /// End the lease: stop renewing and free it for the next run.
    pub async fn release(self) -> Result<(), Error> {
        self.renew.abort();
        match &self.held {
            Held::Azure {
                store,
                name,
                lease_id,
            } => store.release_root_lease(name, lease_id).await?,
            Held::Local { lock, owner, .. } => {
                if read_owner(lock).await.as_ref() == Some(owner) {
                    tokio::fs::remove_file(lock)
                        .await
                        .or_else(not_found_is_ok)
                        .map_err(|e| Error::io(lock, e))?;
                }
            }
        }
        Ok(())
    }
}

fn not_found_is_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Create the lease blob if missing, then try to lease it.
async fn azure_acquire(
    store: &AzureStore,
    name: &str,
    ttl: Duration,
    lease_id: &str,
) -> Result<bool, Error> {
    let secs = i32::try_from(ttl.as_secs()).unwrap_or(60);
    for _ in 0..3 {
        store.put_root(name, Bytes::new(), None).await?;
        match store.acquire_root_lease(name, secs, lease_id).await? {
            LeaseOutcome::Acquired => return Ok(true),
            LeaseOutcome::Held => return Ok(false),
            LeaseOutcome::Missing => {}
        }
    }
    Ok(false)
}

/// Create the lock exclusively; or take over a lock whose heartbeat is older than `ttl`.
async fn local_acquire(
    dir: &Path,
    lock: &Path,
    owner: &Owner,
    ttl: Duration,
) -> Result<bool, Error> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    if create_exclusive(lock, owner).await? {
        return Ok(true);
    }
    if !is_stale(lock, ttl).await? {
        return Ok(false);
    }
    // Stale: its holder died. Only the taker that creates the guard may replace it; a guard
    // left by a taker that died in these few lines is itself stale after `ttl`.
    let guard = lock.with_extension("lock.takeover");
    if !create_exclusive(&guard, owner).await? {
        if is_stale(&guard, ttl).await? {
            let _ = tokio::fs::remove_file(&guard).await;
        }
        return Ok(false);
    }
    let taken = async {
        if !is_stale(lock, ttl).await? {
            return Ok(false);
        }
        tokio::fs::remove_file(lock)
            .await
            .or_else(not_found_is_ok)
            .map_err(|e| Error::io(lock, e))?;
        create_exclusive(lock, owner).await
    }
    .await;
    let _ = tokio::fs::remove_file(&guard).await;
    taken
}

/// Create `path` with `owner` in it, failing (false) if it exists.
async fn create_exclusive(path: &Path, owner: &Owner) -> Result<bool, Error> {
    #[allow(
        clippy::expect_used,
        reason = "derived Serialize over strings and an integer: serde_json cannot fail on it"
    )]
    let text = serde_json::to_vec(owner).expect("an owner serialises");
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await;
    match opened {
        Ok(mut f) => {
            use tokio::io::AsyncWriteExt as _;
            f.write_all(&text).await.map_err(|e| Error::io(path, e))?;
            f.sync_all().await.map_err(|e| Error::io(path, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Is the heartbeat (modification time) of `path` older than `ttl`? A missing file is stale.
async fn is_stale(path: &Path, ttl: Duration) -> Result<bool, Error> {
    match tokio::fs::metadata(path).await {
        Ok(m) => {
            let modified = m.modified().map_err(|e| Error::io(path, e))?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO);
            Ok(age > ttl)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(path, e)),
    }
}

async fn read_owner(lock: &Path) -> Option<Owner> {
    let bytes = tokio::fs::read(lock).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Renew every third of `ttl` until aborted; a failed renewal (or a lock no longer ours) marks
/// the lease lost.
async fn renew_loop(held: Held, ttl: Duration, lost: Arc<AtomicBool>) {
    let every = ttl.checked_div(3).unwrap_or(ttl);
    loop {
        tokio::time::sleep(every).await;
        let renewed = match &held {
            Held::Azure {
                store,
                name,
                lease_id,
            } => store.renew_root_lease(name, lease_id).await.is_ok(),
            Held::Local { lock, owner, .. } => {
                read_owner(lock).await.as_ref() == Some(owner) && touch(lock).await
            }
        };
        if !renewed {
            tracing::warn!("a hub lease could not be renewed; another run may take it over");
            lost.store(true, Ordering::Relaxed);
        }
    }
}

/// Set `path`'s modification time to now (the heartbeat).
async fn touch(path: &Path) -> bool {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn owner(token: &str) -> Owner {
        Owner {
            host: "h".into(),
            pid: 1,
            token: token.into(),
        }
    }

    const TTL: Duration = Duration::from_millis(600);

    /// A temp folder's leases, and hub-a's lease held by "a".
    async fn held_by_a() -> (tempfile::TempDir, Leases, Lease) {
        let tmp = tempfile::tempdir().unwrap();
        let leases = Leases::open(&tmp.path().display().to_string()).unwrap();
        let a = leases.try_acquire("hub-a", &owner("a"), TTL).await.unwrap();
        (tmp, leases, a.expect("free"))
    }

    /// One holder at a time; a live holder's heartbeat keeps others out; a dead holder's lock is
    /// taken over after the lease duration; the status record is the holder's to write.
    #[tokio::test]
    async fn local_lock_is_exclusive_renewed_and_taken_over_when_stale() {
        let (tmp, leases, a) = held_by_a().await;
        let ttl = TTL;
        assert!(
            leases
                .try_acquire("hub-a", &owner("b"), ttl)
                .await
                .unwrap()
                .is_none()
        );
        // renewed: still held well past one lease duration
        tokio::time::sleep(ttl * 2).await;
        assert!(
            leases
                .try_acquire("hub-a", &owner("b"), ttl)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!a.lost());
        let mut status = a.read_status("hub-a").await.unwrap();
        status
            .slots
            .insert("p".into(), "2026-12-01T00:00:00Z".parse().unwrap());
        a.write_status(&status).await.unwrap();
        assert_eq!(leases.read_status("hub-a").await.unwrap(), status);
        // another hub is independent
        let other = leases.try_acquire("hub-b", &owner("b"), ttl).await.unwrap();
        other.unwrap().release().await.unwrap();
        // the holder dies (no more heartbeats): after the duration, b takes over
        a.renew.abort();
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let b = leases.try_acquire("hub-a", &owner("b"), ttl).await.unwrap();
        let b = b.expect("a dead holder's lock is taken over");
        assert_eq!(b.read_status("hub-a").await.unwrap(), status);
        b.release().await.unwrap();
        let entries: Vec<_> = std::fs::read_dir(tmp.path().join(".hubvault-serve"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, ["hub-a.json"], "lock and guard gone");
    }

    /// A lock taken from under its holder (it looked dead elsewhere): the holder's next renewal
    /// finds another owner, marks the lease lost and raises the run's flag.
    #[tokio::test]
    async fn a_lease_taken_from_under_its_holder_is_marked_lost() {
        let (tmp, _leases, a) = held_by_a().await;
        let flag = Arc::new(AtomicBool::new(false));
        a.watch_lost(flag.clone());
        let lock = tmp.path().join(".hubvault-serve/hub-a.lock");
        std::fs::write(&lock, serde_json::to_vec(&owner("b")).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(a.lost());
        assert!(flag.load(Ordering::Relaxed));
        a.release().await.unwrap();
        assert!(lock.exists(), "release leaves another owner's lock alone");
    }
}
