//! `clone --from A --to B`: preflight B → back up A → restore into B → verify.
//!
//! Owns: the order of those steps and where the intermediate snapshot lives — kept in the vault
//! (`--keep`), or ephemeral: sealed with a key generated for this run into a memory store and
//! dropped with it, so the fleet's keys never touch the disk in plaintext (the export's staging
//! blobs excepted, which `backup::from_hub` deletes as soon as they are sealed).
//! Must not: implement backup, restore or preflight itself, know clap, or print.

use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::backup::{self, HubBackupOptions, HubBackupReport};
use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::HubClient;
use crate::keys;
use crate::pipeline::Identities;
use crate::preflight::{self, Checks};
use crate::restore::{self, RestoreOptions, RestoreReport};
use crate::snapshot::signature::TrustedSigners;
use crate::snapshot::{Manifest, catalog};
use crate::staging::Staging;
use crate::store::Store;
use crate::store::memory::MemoryStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("clone stopped while backing up the source: {0}")]
    Backup(#[source] backup::Error),
    #[error("clone stopped while restoring into the target: {0}")]
    Restore(#[source] restore::Error),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    #[error(transparent)]
    Interrupted(#[from] crate::shutdown::Interrupted),
    #[error(
        "the backup reported snapshot {id}, but the store does not list it; {}",
        fix_text(self)
    )]
    SnapshotMissing { id: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Backup(e) => e.code(),
            Error::Restore(e) => e.code(),
            Error::Snapshot(e) => e.code(),
            Error::SnapshotMissing { .. } => "clone_snapshot_missing",
            Error::Interrupted(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Backup(e) => e.fix(),
            Error::Restore(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
            Error::SnapshotMissing { .. } => {
                Some("run `hubvault verify --all` on the store and try again".to_owned())
            }
            Error::Interrupted(e) => e.fix(),
        }
    }
}

/// Where the intermediate snapshot goes.
pub enum Keep {
    /// Ephemeral: a memory store and a key made for this run only.
    No,
    /// Into the vault, sealed to `recipients`; `identities` open it again for the restore.
    Yes {
        store: Arc<dyn Store>,
        recipients: Vec<age::x25519::Recipient>,
        identities: Identities,
    },
}

impl Keep {
    /// Where the snapshot goes, whom it is sealed to and what opens it: the vault's, or a
    /// memory store and a key made now.
    pub fn into_parts(self) -> (Arc<dyn Store>, Vec<age::x25519::Recipient>, Identities) {
        match self {
            Keep::Yes {
                store,
                recipients,
                identities,
            } => (store, recipients, identities),
            Keep::No => {
                let key = keys::Identities::generate();
                let recipients = key.recipients().into_inner();
                let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
                (store, recipients, Arc::new(key.into_boxed()))
            }
        }
    }
}

/// The hubs and the staging area of one clone.
pub struct Request<'a> {
    pub source: &'a HubClient,
    pub target: &'a HubClient,
    /// Staging for the source's export job.
    pub staging: &'a Staging,
    /// Staging for the target's import job (`None`: the bulk engine only).
    pub target_staging: Option<&'a Staging>,
    /// Preflight of the target before anything runs (`None`: `--no-preflight`).
    pub preflight: Option<Checks<'a>>,
    pub keep: Keep,
}

/// What a clone did, step by step; a step not reached is `None`.
#[derive(Debug)]
pub struct CloneReport {
    pub preflight: Option<preflight::Report>,
    pub backup: Option<HubBackupReport>,
    pub kept: bool,
    pub restore: Option<RestoreReport>,
}

impl CloneReport {
    /// Preflight failed: nothing was backed up or changed.
    pub fn blocked(&self) -> bool {
        self.preflight.as_ref().is_some_and(|p| !p.ok)
    }

    /// Exit 1: preflight findings, failed records or a target that does not verify.
    pub fn found_something(&self) -> bool {
        self.blocked()
            || self
                .restore
                .as_ref()
                .is_some_and(RestoreReport::found_something)
    }

    /// `--json`: restore's document (`plan`, `applied`, `failed`, `verified`, …) plus the source
    /// backup and whether the snapshot was kept.
    pub fn to_json(&self, with_items: bool) -> Value {
        let mut v = match &self.restore {
            Some(r) => r.to_json(with_items),
            None => json!({"plan": null, "applied": null, "failed": [], "verified": null}),
        };
        v["kept"] = json!(self.kept);
        if let Some(b) = &self.backup {
            v["backup"] = serde_json::to_value(b).unwrap_or(Value::Null);
        }
        if let Some(p) = &self.preflight {
            v["preflight"] = serde_json::to_value(p).unwrap_or(Value::Null);
        }
        v
    }
}

/// Run the clone. Preflight findings end it before the backup (reported, not an error). When
/// `restore_options.shutdown` fires, the job of this run on either hub is cancelled, this run's
/// staging blobs for both hubs deleted, and the clone ends with [`Error::Interrupted`]; what was
/// already applied to the target stays.
pub async fn run(
    request: Request<'_>,
    mut backup_options: HubBackupOptions,
    restore_options: &RestoreOptions,
) -> Result<CloneReport, Error> {
    let shutdown = restore_options.shutdown.clone();
    // The clone cancels for both steps itself, in one place.
    backup_options.shutdown = crate::shutdown::Shutdown::never();
    let mut inner = restore_options.clone();
    inner.shutdown = crate::shutdown::Shutdown::never();
    let (source, target, staging, target_staging) = (
        request.source,
        request.target,
        request.staging,
        request.target_staging,
    );
    tokio::select! {
        r = Box::pin(clone(request, backup_options, &inner)) => r,
        () = shutdown.requested() => {
            let mut done = staging.abandon(&[source]).await;
            if let Some(t) = target_staging {
                done.push_str(&t.abandon(&[target]).await);
            }
            Err(crate::shutdown::Interrupted {
                done,
                next: "run the same clone again: it plans against what is now on the target",
            }
            .into())
        }
    }
}

async fn clone(
    request: Request<'_>,
    backup_options: HubBackupOptions,
    restore_options: &RestoreOptions,
) -> Result<CloneReport, Error> {
    let mut report = CloneReport {
        preflight: None,
        backup: None,
        kept: matches!(request.keep, Keep::Yes { .. }),
        restore: None,
    };
    if let Some(checks) = &request.preflight {
        let found = preflight::run(checks).await;
        let ok = found.ok;
        report.preflight = Some(found);
        if !ok {
            return Ok(report);
        }
    }
    let (store, recipients, identities) = request.keep.into_parts();
    let leftover_age = backup_options.leftover_age;
    // The snapshot this clone restores is the one its own key just signed.
    let trusted = TrustedSigners::new([backup_options.backup.signing_key.signer()]);
    let backup = backup::from_hub(
        store.clone(),
        request.source,
        request.staging,
        &recipients,
        backup_options,
    )
    .await
    .map_err(Error::Backup)?;
    let manifest = find(store.as_ref(), &backup.backup.snapshot, &trusted).await?;
    // A killed clone may have left its import blob (plaintext) for the target; restore sweeps
    // only when it runs a job, and a rerun may have nothing left to import.
    if let Some(staging) = request.target_staging {
        let age = leftover_age.unwrap_or_else(|| staging.sas_lifetime());
        // An age beyond the calendar: nothing is that old.
        let older_than = OffsetDateTime::now_utc()
            .checked_sub(time::Duration::try_from(age).unwrap_or(time::Duration::MAX))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        match staging.sweep_leftovers(request.target, older_than).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                "removed {n} staging blob(s) left for {} by an earlier, interrupted run",
                request.target.name()
            ),
            Err(e) => tracing::warn!("could not sweep the target's staging leftovers: {e}"),
        }
    }
    report.backup = Some(backup);
    // Restore checks the target again once it has a plan (id conflicts, quota).
    let restored = match &request.preflight {
        Some(checks) if restore_options.preflight => {
            restore::run_with_checks(
                store,
                &manifest,
                identities,
                request.target,
                request.target_staging,
                restore_options,
                same_checks(checks),
            )
            .await
        }
        _ => {
            restore::run(
                store,
                &manifest,
                identities,
                request.target,
                request.target_staging,
                restore_options,
            )
            .await
        }
    }
    .map_err(Error::Restore)?;
    report.restore = Some(restored);
    Ok(report)
}

/// `Checks` holds only references and plain values; preflight and restore each take one.
fn same_checks<'a>(c: &Checks<'a>) -> Checks<'a> {
    Checks {
        hub: c.hub,
        client: c.client,
        arm: c.arm.as_ref().map(|a| preflight::ArmAccess {
            client: a.client,
            resource_id: a.resource_id,
        }),
        caller_ip: c.caller_ip,
        staging: c.staging,
        hub_is_local: c.hub_is_local,
        needs_jobs: c.needs_jobs,
        wait_for_slot: c.wait_for_slot,
        poll: c.poll,
        plan_creates: c.plan_creates,
        device_quota: c.device_quota,
        conflicts: c.conflicts,
    }
}

async fn find(store: &dyn Store, id: &str, trusted: &TrustedSigners) -> Result<Manifest, Error> {
    catalog::list(store, trusted)
        .await?
        .into_iter()
        .find(|m| m.id == id && m.trust.accepted(false))
        .ok_or_else(|| Error::SnapshotMissing { id: id.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::CloneReport;
    use crate::preflight::{Finding, Report};

    fn report(preflight_ok: Option<bool>) -> CloneReport {
        CloneReport {
            preflight: preflight_ok.map(|ok| {
                Report::new(vec![if ok {
                    Finding::pass(crate::preflight::Check::IpFirewall, "allowed")
                } else {
                    Finding::fail(
                        crate::preflight::Check::IpFirewall,
                        "401002",
                        "blocked by rule x",
                        "allow it",
                    )
                }])
            }),
            backup: None,
            kept: false,
            restore: None,
        }
    }

    #[test]
    fn a_failed_preflight_blocks_and_is_found_in_json() {
        let r = report(Some(false));
        assert!(r.blocked());
        assert!(r.found_something());
        let v = r.to_json(false);
        assert_eq!(v["preflight"]["ok"], false);
        assert_eq!(v["kept"], false);
        assert!(
            v["plan"].is_null(),
            "nothing planned before preflight passed"
        );
        assert_eq!(v["failed"], serde_json::json!([]));
    }

    #[test]
    fn a_passed_or_skipped_preflight_does_not_block() {
        assert!(!report(Some(true)).blocked());
        assert!(!report(None).blocked());
        assert!(!report(None).found_something());
    }
}
