//! The import lock of a staging container: imports through one container take turns.
//!
//! An import job writes `importErrors.log` (and `importConfigErrors.log`) at the **root** of its
//! output container — not under our run folder — so two imports through one container (two
//! target hubs restored at once) would overwrite, read and delete each other's logs. The lock is
//! a 30 s lease on the root blob [`IMPORT_LOCK`], renewed in the background while held: only its
//! holder creates an import job, reads the logs as its own, and deletes them. A run killed while
//! holding it stops renewing, so the lease lapses within 30 s; the lock blob keeps its
//! record (hub, run, until when its job could still write), and a run of **another** hub refuses
//! to take over before then, since that job's log could land under it. The holder deletes the
//! lock blob when done, so an idle container stays empty.
//!
//! A `file://` folder (the simulator demo) has no leases: the lock is local and always granted.
//!
//! Must not: hold the lock past [`super::Staging::cleanup`], or read a log without holding it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::Store as _;
use crate::store::azure::{AzureStore, LeaseOutcome};

/// The lock blob at the container root.
pub const IMPORT_LOCK: &str = "hubvault-import.lock";
/// What the service writes at the container root after an import (docs/azure.md).
pub const JOB_LOGS: [&str; 2] = ["importErrors.log", "importConfigErrors.log"];
/// Lease length (Azure allows 15–60 s): short, so a killed holder frees the container soon;
/// renewed about four times per lease, so one or two failed renewals do not lose it.
const LEASE_SECS: i32 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(8);
/// Waiting polls at least this far apart, whatever the job poll interval.
const MIN_POLL: Duration = Duration::from_millis(200);

/// The lock blob's content: who holds (or last held) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub hub: String,
    pub run: String,
    /// Until when (Unix seconds) the holder's import job could still write to the container
    /// (its SAS expiry).
    pub until: i64,
}

/// A lock held by this run.
pub(super) enum Held {
    Lease {
        store: AzureStore,
        lease_id: String,
        renew: tokio::task::JoinHandle<()>,
    },
    Local,
}

/// Why the previous record forbids taking over (pure): a killed run of another hub whose job
/// could still write its log here.
pub fn blocks_takeover(previous: Option<&Holder>, hub: &str, now: OffsetDateTime) -> bool {
    previous.is_some_and(|p| p.hub != hub && p.until > now.unix_timestamp())
}

fn until_text(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// Take the lock of `store`'s container for `me`, waiting (up to `wait`) while a live run holds
/// it. Stale logs left by a killed holder are deleted before this returns.
pub(super) async fn acquire(
    store: &AzureStore,
    me: &Holder,
    poll: Duration,
    wait: Duration,
) -> super::Result<Held> {
    let lease_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut announced = false;
    loop {
        store.put_root(IMPORT_LOCK, Bytes::new(), None).await?;
        match store
            .acquire_root_lease(IMPORT_LOCK, LEASE_SECS, &lease_id)
            .await?
        {
            LeaseOutcome::Acquired => break,
            LeaseOutcome::Missing => {}
            LeaseOutcome::Held => {
                let holder = read_holder(store).await;
                if started.elapsed() >= wait {
                    return Err(super::Error::ImportLockBusy {
                        container: store.location(),
                        holder: describe(holder.as_ref()),
                        waited: format!("{}s", started.elapsed().as_secs()),
                    });
                }
                if !announced {
                    announced = true;
                    tracing::warn!(
                        "staging container {} is in use by {}; the hub writes importErrors.log at the container root, so imports through one container take turns: waiting (up to {}s)",
                        store.location(),
                        describe(holder.as_ref()),
                        wait.as_secs()
                    );
                }
            }
        }
        tokio::time::sleep(poll.max(MIN_POLL)).await;
    }
    let previous = read_holder(store).await;
    let now = OffsetDateTime::now_utc();
    if let Some(p) = previous.filter(|p| blocks_takeover(Some(p), &me.hub, now)) {
        let _ = store.release_root_lease(IMPORT_LOCK, &lease_id).await;
        return Err(super::Error::ImportLockStale {
            container: store.location(),
            hub: p.hub,
            run: p.run,
            until: until_text(p.until),
        });
    }
    #[allow(
        clippy::expect_used,
        reason = "derived Serialize over strings and an integer: serde_json cannot fail on it"
    )]
    let record = serde_json::to_vec(me).expect("a holder record serialises");
    let taken = async {
        store
            .put_root(IMPORT_LOCK, record.into(), Some(&lease_id))
            .await?;
        // A killed holder's logs (they may quote import lines, keys included) go now.
        for log in JOB_LOGS {
            store.delete_root(log, None).await?;
        }
        Ok::<(), crate::store::Error>(())
    }
    .await;
    if let Err(e) = taken {
        let _ = store.release_root_lease(IMPORT_LOCK, &lease_id).await;
        return Err(e.into());
    }
    let renew = {
        let store = store.clone();
        let lease_id = lease_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = store.renew_root_lease(IMPORT_LOCK, &lease_id).await {
                    tracing::warn!("the staging import lock could not be renewed: {e}");
                }
            }
        })
    };
    Ok(Held::Lease {
        store: store.clone(),
        lease_id,
        renew,
    })
}

/// Delete the job logs (while holding the lock: they are this run's). Returns how many.
pub(super) async fn delete_logs(
    held: &Held,
    local: &dyn crate::store::Store,
) -> super::Result<usize> {
    let mut deleted: usize = 0;
    for log in JOB_LOGS {
        match held {
            Held::Lease { store, .. } => {
                if store.read_root(log).await?.is_some() {
                    store.delete_root(log, None).await?;
                    deleted = deleted.saturating_add(1);
                }
            }
            Held::Local => {
                if local.head(log).await?.is_some() {
                    local.delete(log).await?;
                    deleted = deleted.saturating_add(1);
                }
            }
        }
    }
    Ok(deleted)
}

/// Delete the job logs and end the lock (the lock blob goes with its lease). Returns how many
/// logs were deleted.
pub(super) async fn release(held: Held, local: &dyn crate::store::Store) -> super::Result<usize> {
    let deleted = match delete_logs(&held, local).await {
        Ok(n) => n,
        Err(e) => {
            // Never leave the renewal running (a `serve` process would hold the lock for good):
            // stop it and let the lease go; the lock and logs are the next import's to clear.
            leave(held).await;
            return Err(e);
        }
    };
    if let Held::Lease {
        store,
        lease_id,
        renew,
    } = held
    {
        renew.abort();
        if let Err(e) = store.delete_root(IMPORT_LOCK, Some(&lease_id)).await {
            let _ = store.release_root_lease(IMPORT_LOCK, &lease_id).await;
            return Err(e.into());
        }
    }
    Ok(deleted)
}

/// Stop holding the lock without deleting it: the run ends while its import job may still write
/// its logs. The lock blob and its holder record stay (a restore of another hub is kept out
/// until the record's `until`, as [`blocks_takeover`] says), its lease is released, and a later
/// run's dead-run sweep removes lock and logs once the job has ended ([`clear_dead`]).
pub(super) async fn leave(held: Held) {
    if let Held::Lease {
        store,
        lease_id,
        renew,
    } = held
    {
        renew.abort();
        let _ = store.release_root_lease(IMPORT_LOCK, &lease_id).await;
    }
}

/// The lock (and the logs under it) of `run`, a dead run whose import job has ended: once its
/// lease has lapsed, delete its logs (they may quote import lines, keys included) and the lock
/// blob, so the container does not keep them until the next import. Returns how many blobs went;
/// 0 when the lock is another run's, or still leased (the next run tries again).
pub(super) async fn clear_dead(store: &AzureStore, run: &str) -> super::Result<usize> {
    if read_holder(store).await.is_none_or(|h| h.run != run) {
        return Ok(0);
    }
    let lease_id = uuid::Uuid::new_v4().to_string();
    if store
        .acquire_root_lease(IMPORT_LOCK, LEASE_SECS, &lease_id)
        .await?
        != LeaseOutcome::Acquired
    {
        return Ok(0);
    }
    let mut deleted: usize = 0;
    for log in JOB_LOGS {
        if store.read_root(log).await?.is_some() {
            store.delete_root(log, None).await?;
            deleted = deleted.saturating_add(1);
        }
    }
    if let Err(e) = store.delete_root(IMPORT_LOCK, Some(&lease_id)).await {
        let _ = store.release_root_lease(IMPORT_LOCK, &lease_id).await;
        return Err(e.into());
    }
    Ok(deleted.saturating_add(1))
}

async fn read_holder(store: &AzureStore) -> Option<Holder> {
    let bytes = store.read_root(IMPORT_LOCK).await.ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!("an import into {} (run {})", h.hub, h.run),
        None => "another hubvault import".into(),
    }
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

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    #[test]
    fn until_reads_as_a_utc_time() {
        assert_eq!(until_text(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn only_another_hubs_job_that_could_still_write_blocks_a_takeover() {
        let killed = Holder {
            hub: "hub-b.example".into(),
            run: "r1".into(),
            until: 2_000,
        };
        assert!(blocks_takeover(Some(&killed), "hub-c.example", at(1_000)));
        assert!(
            !blocks_takeover(Some(&killed), "hub-b.example", at(1_000)),
            "the same hub's job holds its job slot; ours waits for that instead"
        );
        assert!(
            !blocks_takeover(Some(&killed), "hub-c.example", at(2_000)),
            "its SAS has expired: it can write nothing more"
        );
        assert!(!blocks_takeover(None, "hub-c.example", at(1_000)));
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let h = Holder {
            hub: "hub-b.example".into(),
            run: "r1".into(),
            until: 1_800_000_000,
        };
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&text).unwrap(), h);
    }
}
