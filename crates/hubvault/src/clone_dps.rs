//! `clone --from dps-a --to dps-b`: back up one DPS instance (every enrollment and group, keys
//! included) and restore that snapshot into another, as the hub clone does for hubs.
//!
//! Owns: the two steps' order and where the snapshot lives — kept in the vault (`--keep`), or
//! ephemeral: sealed with a key made for this run into a memory store dropped with it, so the
//! enrollment keys never touch the disk in plaintext.
//! Must not: implement the backup (`backup::from_dps`) or the restore (`enroll::run`), know clap,
//! or print.

use serde::Serialize;

use crate::backup::{self, BackupOptions, BackupReport};
use crate::clone::Keep;
use crate::dps::DpsClient;
use crate::enroll::{self, EnrollOptions, EnrollReport};
use crate::snapshot::catalog;
use crate::snapshot::signature::TrustedSigners;

/// What a DPS clone did. Field names are part of `clone --json`.
#[derive(Debug, Serialize)]
pub struct DpsCloneReport {
    /// Whether the snapshot was kept in the vault (else it was ephemeral and is gone).
    pub kept: bool,
    pub backup: BackupReport,
    pub restore: EnrollReport,
}

impl DpsCloneReport {
    /// A restore item failed or conflicted (exit 1).
    pub fn found_something(&self) -> bool {
        !self.restore.ok()
    }
}

/// Back up `source` and restore the snapshot into `target` with `options`.
pub async fn run(
    source: &DpsClient,
    target: &DpsClient,
    keep: Keep,
    backup_options: BackupOptions,
    options: &EnrollOptions,
) -> Result<DpsCloneReport, crate::Error> {
    let kept = matches!(keep, Keep::Yes { .. });
    let (store, recipients, identities) = keep.into_parts();
    // The snapshot this clone restores is the one its own key just signed.
    let trusted = TrustedSigners::new([backup_options.signing_key.signer()]);
    let backup = backup::from_dps(store.clone(), source, &recipients, backup_options).await?;
    let manifest = catalog::list(store.as_ref(), &trusted)
        .await?
        .into_iter()
        .find(|m| m.id == backup.snapshot && m.trust.accepted(false))
        .ok_or_else(|| crate::clone::Error::SnapshotMissing {
            id: backup.snapshot.clone(),
        })?;
    let restore = enroll::run(store, &manifest, identities, target, options).await?;
    Ok(DpsCloneReport {
        kept,
        backup,
        restore,
    })
}
