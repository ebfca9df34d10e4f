//! The staging journal: one small record per run in the staging container, so that a run killed
//! without cleaning up (SIGKILL, a lost VM) leaves a trail the next run can follow.
//!
//! A run writes `hubvault-runs/<run-id>.json` before it hands the hub its first SAS, and holds it
//! alive: on Azure Blob with a 15 s lease renewed every 5 s, on a `file://` folder with a
//! heartbeat (the file is touched every 5 s). The record holds no secrets: the hub (its host
//! name), the run id, the run's blob folder, the ids of the jobs it created and until when a job
//! of it could still write (its SAS expiry). The run deletes it in [`super::Staging::cleanup`].
//!
//! Each renewal also writes a heartbeat (`beat`) into the record, which names its owner process
//! (`staging/owner.rs`). Both fields are optional: an earlier version reads these journals (it
//! ignores unknown fields) and this one reads its journals.
//!
//! Any later run through the container, of any hub, looks for dead runs ([`find_dead`]): on
//! Azure, a journal whose lease it can take, or whose owner ran on this machine and is gone (its
//! lease is broken at once), or whose heartbeat stopped (its lease is waited out, for that run
//! only); on a folder, one whose heartbeat stopped or whose owner is gone. For each,
//! the caller cancels the dead run's job when it holds that hub's credentials, deletes its blobs
//! (every device key in plaintext) at once, and keeps the journal — so the runs after it sweep
//! the same names again — until that job has ended or its SAS has expired: a job can still write
//! `devices.txt` after its runner died.
//!
//! Must not: hold a secret, or treat a journal as dead while a live run could still renew it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::owner::Owner;
use crate::store::Store as _;
use crate::store::azure::{AzureStore, LeaseOutcome};

/// Where journals live in the container (under the location's prefix).
pub const DIR: &str = "hubvault-runs";
/// Lease length: the shortest Azure allows, so a dead run is found soon.
const LEASE_SECS: i32 = 15;
/// Renewal and heartbeat period: three chances per lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A folder journal whose heartbeat is older than this belongs to a dead run.
const FILE_STALE: Duration = Duration::from_secs(30);
/// A leased journal whose heartbeat is older than this (two missed beats and some slack) may
/// belong to a dead run: its lease lapses at most a lease length after that beat.
const BEAT_STALE: i64 = 12;
/// A journal without content yet is a run being born (it writes the record right after taking
/// the lease); only an older empty one is a leftover.
const BIRTH_GRACE: Duration = Duration::from_secs(60);
/// How often, and how far apart, a run tries to take its own newborn journal's lease while a
/// sweeper looks at it (a sweeper holds it for one read).
const BIRTH_TRIES: u32 = 50;
const BIRTH_RETRY: Duration = Duration::from_millis(100);

/// What a journal says about its run. No secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The hub's host name (its staging folder's name).
    pub hub: String,
    pub run: String,
    /// The run's blob folder, relative to the staging location (`staging/<hub>/<run>/`).
    pub prefix: String,
    /// Jobs the run created, in order.
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Until when (Unix seconds) a job of this run could still write: its latest SAS expiry.
    pub until: i64,
    /// When a later run first found it dead (RFC 3339), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_dead: Option<String>,
    /// The run's process, when known (a journal of an earlier version has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The run's heartbeat (Unix seconds): written at each lease renewal while it lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat: Option<i64>,
}

/// A journal this process holds alive.
pub(super) enum Held {
    Lease {
        store: AzureStore,
        /// The journal's full blob name (with the location's prefix).
        blob: String,
        lease_id: String,
        /// The record as last written; the renewal writes it again with a fresh heartbeat.
        latest: std::sync::Arc<tokio::sync::Mutex<Record>>,
        renew: tokio::task::JoinHandle<()>,
    },
    File {
        path: PathBuf,
        beat: tokio::task::JoinHandle<()>,
    },
}

/// A dead run's journal, as found: the record and, on Azure, the lease this process now holds
/// on it (so no other run sweeps it at the same time).
pub(super) struct Dead {
    pub record: Record,
    pub(super) claim: Claim,
}

pub(super) enum Claim {
    Lease {
        store: AzureStore,
        blob: String,
        lease_id: String,
    },
    File(PathBuf),
}

/// The journal's name, relative to the staging location.
pub fn name(run: &str) -> String {
    format!("{DIR}/{run}.json")
}

fn encode(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

/// Start the journal of a run on Azure Blob: create it, take its lease, write the record, keep
/// renewing.
pub(super) async fn open_lease(store: &AzureStore, record: &Record) -> super::Result<Held> {
    let blob = store.azure_location().blob_name(&name(&record.run));
    let lease_id = uuid::Uuid::new_v4().to_string();
    store.put_root(&blob, Bytes::new(), None).await?;
    // Another run's sweep may hold the lease of this newborn (still empty) journal for the
    // moment it takes to read it and see a run being born: wait for it to let go.
    let mut outcome = LeaseOutcome::Held;
    for _ in 0..BIRTH_TRIES {
        outcome = store
            .acquire_root_lease(&blob, LEASE_SECS, &lease_id)
            .await?;
        if outcome != LeaseOutcome::Held {
            break;
        }
        tokio::time::sleep(BIRTH_RETRY).await;
    }
    match outcome {
        LeaseOutcome::Acquired => {}
        other => {
            return Err(super::Error::Invalid {
                key: "staging".into(),
                detail: format!(
                    "the run journal {blob} could not be leased ({other:?}); is another process using run id {}?",
                    record.run
                ),
            });
        }
    }
    let mut first = record.clone();
    first.beat = Some(OffsetDateTime::now_utc().unix_timestamp());
    store
        .put_root(&blob, encode(&first), Some(&lease_id))
        .await?;
    let latest = std::sync::Arc::new(tokio::sync::Mutex::new(first));
    let renew = {
        let (store, blob, lease_id) = (store.clone(), blob.clone(), lease_id.clone());
        let latest = latest.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = store.renew_root_lease(&blob, &lease_id).await {
                    tracing::warn!("the staging run journal's lease could not be renewed: {e}");
                    continue;
                }
                // The heartbeat: only a renewed lease earns one.
                let mut record = latest.lock().await;
                record.beat = Some(OffsetDateTime::now_utc().unix_timestamp());
                if let Err(e) = store
                    .put_root(&blob, encode(&record), Some(&lease_id))
                    .await
                {
                    tracing::warn!("the staging run journal's heartbeat failed: {e}");
                }
            }
        })
    };
    Ok(Held::Lease {
        store: store.clone(),
        blob,
        lease_id,
        latest,
        renew,
    })
}

/// Start the journal of a run in a `file://` folder: write it and keep touching it.
pub(super) fn open_file(root: &Path, record: &Record) -> super::Result<Held> {
    let path = root.join(name(&record.run));
    write_file(&path, record)?;
    let beat = {
        let path = path.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if let Err(e) = touched {
                    tracing::warn!("the staging run journal's heartbeat failed: {e}");
                }
            }
        })
    };
    Ok(Held::File { path, beat })
}

fn write_file(path: &Path, record: &Record) -> super::Result<()> {
    let io = |source| {
        super::Error::Store(crate::store::Error::Io {
            store: path.display().to_string(),
            context: "write the staging run journal".into(),
            source,
        })
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, encode(record)).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

/// Write a new version of a held journal's record.
pub(super) async fn update(held: &Held, record: &Record) -> super::Result<()> {
    match held {
        Held::Lease {
            store,
            blob,
            lease_id,
            latest,
            ..
        } => {
            let mut written = latest.lock().await;
            let mut next = record.clone();
            next.beat = Some(OffsetDateTime::now_utc().unix_timestamp());
            store.put_root(blob, encode(&next), Some(lease_id)).await?;
            *written = next;
            Ok(())
        }
        Held::File { path, .. } => write_file(path, record),
    }
}

/// End a run's journal: it finished and cleaned up after itself.
pub(super) async fn close(held: Held) -> super::Result<()> {
    match held {
        Held::Lease {
            store,
            blob,
            lease_id,
            renew,
            ..
        } => {
            renew.abort();
            if let Err(e) = store.delete_root(&blob, Some(&lease_id)).await {
                let _ = store.release_root_lease(&blob, &lease_id).await;
                return Err(e.into());
            }
            Ok(())
        }
        Held::File { path, beat } => {
            beat.abort();
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(super::Error::Store(crate::store::Error::Io {
                        store: path.display().to_string(),
                        context: "remove the staging run journal".into(),
                        source: e,
                    }))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Stop keeping this run's journal alive without deleting it: the run ends while a job of it may
/// still write, so the next run through the container finds it dead and keeps sweeping its
/// names until that job has ended (on Azure its lease is released, so that is at once).
pub(super) async fn leave(held: Held) {
    match held {
        Held::Lease {
            store,
            blob,
            lease_id,
            renew,
            ..
        } => {
            renew.abort();
            let _ = store.release_root_lease(&blob, &lease_id).await;
        }
        Held::File { beat, .. } => beat.abort(),
    }
}

/// The run ids that have a journal in the container, live or dead: their blobs are the
/// journal's runner's, or [`find_dead`]'s to sweep, never a leftover sweep's.
pub(super) async fn runs(
    access: &super::Access,
) -> super::Result<std::collections::HashSet<String>> {
    Ok(match access {
        super::Access::AccountKey(s) | super::Access::GivenSas(s) | super::Access::Identity(s) => s
            .list(&format!("{DIR}/"))
            .await?
            .iter()
            .filter_map(|m| run_of(&m.name).map(str::to_owned))
            .collect(),
        super::Access::File(url) => std::fs::read_dir(Path::new(url.path()).join(DIR))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".json")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The journals of dead runs in the container, other than `ours`, each claimed by this
/// process (on Azure: we hold its lease until [`settle`]).
pub(super) async fn find_dead(access: &super::Access, ours: &str) -> super::Result<Vec<Dead>> {
    let mut out = Vec::new();
    match access {
        super::Access::AccountKey(s) | super::Access::GivenSas(s) | super::Access::Identity(s) => {
            for meta in s.list(&format!("{DIR}/")).await? {
                if run_of(&meta.name).is_some_and(|run| run != ours)
                    && let Some(dead) = claim_leased(s, &meta).await?
                {
                    out.push(dead);
                }
            }
        }
        super::Access::File(url) => {
            let dir = Path::new(url.path()).join(DIR);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(out);
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(run) = file.strip_suffix(".json") else {
                    continue;
                };
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > FILE_STALE);
                if run == ours {
                    continue;
                }
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                if let Ok(record) = serde_json::from_slice::<Record>(&bytes)
                    && (stale || record.owner.as_ref().is_some_and(Owner::known_gone))
                {
                    out.push(Dead {
                        record,
                        claim: Claim::File(entry.path()),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Claim a leased journal if its run is dead: its lease is free; or its owner ran on this
/// machine and its process is gone (the lease is broken at once); or its heartbeat stopped and
/// its lease lapsed since (waiting at most one lease length, for that run only). A run with a
/// fresh heartbeat is never waited for nor touched.
async fn claim_leased(
    s: &AzureStore,
    meta: &crate::store::ObjectMeta,
) -> super::Result<Option<Dead>> {
    let blob = s.azure_location().blob_name(&meta.name);
    let lease_id = uuid::Uuid::new_v4().to_string();
    let mut outcome = s.acquire_root_lease(&blob, LEASE_SECS, &lease_id).await?;
    if outcome == LeaseOutcome::Held {
        // Held: a live run, or a dead one whose lease has not lapsed yet. Its record says which.
        let bytes = s.read_root(&blob).await?.unwrap_or_default();
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let stale_for = record.beat.map(|b| now.saturating_sub(b));
        // A record already found dead is held by another sweeper: leave it to that one.
        if record.found_dead.is_none() && record.owner.as_ref().is_some_and(Owner::known_gone) {
            tracing::info!(run = %record.run, "a run's process is gone: breaking its journal's lease");
            s.break_root_lease(&blob).await?;
        } else if let Some(age) = stale_for.filter(|a| *a > BEAT_STALE) {
            let left = i64::from(LEASE_SECS)
                .saturating_add(1)
                .saturating_sub(age)
                .max(0);
            tokio::time::sleep(Duration::from_secs(left.unsigned_abs())).await;
        } else {
            return Ok(None); // alive
        }
        outcome = s.acquire_root_lease(&blob, LEASE_SECS, &lease_id).await?;
    }
    if outcome != LeaseOutcome::Acquired {
        return Ok(None); // alive, or gone meanwhile
    }
    let claim = Claim::Lease {
        store: s.clone(),
        blob: blob.clone(),
        lease_id: lease_id.clone(),
    };
    let bytes = s.read_root(&blob).await?.unwrap_or_default();
    if let Ok(mut record) = serde_json::from_slice::<Record>(&bytes) {
        if record.found_dead.is_none() {
            // Said at once, so a concurrent sweep does not break this claim's lease.
            record.found_dead = OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .ok();
            s.put_root(&blob, encode(&record), Some(&lease_id)).await?;
        }
        return Ok(Some(Dead { record, claim }));
    }
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "two times within the calendar (±9999 years) are far less apart than a time::Duration holds"
    )]
    let age = OffsetDateTime::now_utc() - meta.last_modified;
    if bytes.is_empty() && age < BIRTH_GRACE {
        let _ = s.release_root_lease(&blob, &lease_id).await;
    } else if bytes.is_empty() {
        // The leftover of a run killed while it was born: it handed out no SAS yet, so there
        // is nothing to sweep but the journal itself.
        release(claim, None).await?;
    } else {
        // Not a journal of ours: leave it as it is.
        let _ = s.release_root_lease(&blob, &lease_id).await;
    }
    Ok(None)
}

fn run_of(name: &str) -> Option<&str> {
    name.strip_prefix(DIR)?
        .strip_prefix('/')?
        .strip_suffix(".json")
}

/// After sweeping a dead run: delete its journal when `done` is `None` (nothing of it can write
/// any more), else keep it with `done` as its new record (so later runs sweep its names again)
/// and let go of it.
pub(super) async fn release(claim: Claim, keep: Option<&Record>) -> super::Result<()> {
    match (claim, keep) {
        (
            Claim::Lease {
                store,
                blob,
                lease_id,
            },
            None,
        ) => {
            store.delete_root(&blob, Some(&lease_id)).await?;
        }
        (
            Claim::Lease {
                store,
                blob,
                lease_id,
            },
            Some(record),
        ) => {
            store
                .put_root(&blob, encode(record), Some(&lease_id))
                .await?;
            store.release_root_lease(&blob, &lease_id).await?;
        }
        (Claim::File(path), None) => {
            let _ = std::fs::remove_file(path);
        }
        (Claim::File(path), Some(record)) => {
            write_file(&path, record)?;
            // Back-date it so the next run finds it dead again at once.
            let back = std::time::SystemTime::now()
                .checked_sub(FILE_STALE.saturating_mul(2))
                .unwrap_or(std::time::UNIX_EPOCH);
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(back));
        }
    }
    Ok(())
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

    #[test]
    fn the_record_round_trips_and_holds_no_secret_fields() {
        let r = Record {
            hub: "hub-a.azure-devices.net".into(),
            run: "20261126T020000Z-3f9a1c2e".into(),
            prefix: "staging/hub-a.azure-devices.net/20261126T020000Z-3f9a1c2e/".into(),
            jobs: vec!["job-1".into()],
            until: 1_800_000_000,
            found_dead: None,
            owner: Owner::this(),
            beat: Some(1_800_000_000),
        };
        let text = String::from_utf8(encode(&r).to_vec()).unwrap();
        assert!(!text.contains("sig") && !text.contains("Key"), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert_eq!(run_of(&name(&r.run)), Some(r.run.as_str()));
        assert_eq!(run_of("hubvault-runs/x.txt"), None);
        // A journal of the previous version (no owner, no heartbeat) still reads.
        let old = r#"{"hub":"h","run":"r","prefix":"staging/h/r/","jobs":[],"until":5}"#;
        let read: Record = serde_json::from_str(old).unwrap();
        assert_eq!((read.owner, read.beat), (None, None));
    }
}
