//! Deleting staging blobs, committed or not.
//!
//! An export job writes `devices.txt` with Put Block and commits it with Put Block List at the
//! end; cancelled or killed half-way, it leaves a blob with only uncommitted blocks — plaintext
//! device keys that a plain listing does not show and that Azure keeps for about a week. So on
//! Azure Blob every listing here also asks for uncommitted blobs, and such a blob is discarded
//! (an empty commit, then a delete: docs/azure.md, "Uncommitted blocks"). A `file://` folder has
//! no such state.
//!
//! Must not: decide whose blobs may go; the callers in `staging.rs` apply the sweep's rules
//! (never a live job's, never this run's while its job runs).

use super::{Access, Result, Staging};
use crate::store::ObjectMeta;
use crate::store::azure::AzureStore;

/// One staging blob found by [`Staging::blobs_under`].
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub meta: ObjectMeta,
    /// Only uncommitted blocks: invisible to readers and plain listings.
    pub uncommitted: bool,
}

impl Staging {
    fn azure(&self) -> Option<&AzureStore> {
        match &self.access {
            Access::AccountKey(s) | Access::GivenSas(s) | Access::Identity(s) => Some(s),
            Access::File(_) => None,
        }
    }

    /// Every blob under `prefix`: the committed ones, then (with `uncommitted`, on Azure) those
    /// with only uncommitted blocks.
    pub(super) async fn blobs_under(&self, prefix: &str, uncommitted: bool) -> Result<Vec<Blob>> {
        let (committed, only_blocks) = match self.azure() {
            Some(s) if uncommitted => s.list_with_uncommitted(prefix).await?,
            _ => (self.store.list(prefix).await?, Vec::new()),
        };
        let tag = |uncommitted| move |meta| Blob { meta, uncommitted };
        Ok(committed
            .into_iter()
            .map(tag(false))
            .chain(only_blocks.into_iter().map(tag(true)))
            .collect())
    }

    /// Delete one blob found by [`Staging::blobs_under`].
    pub(super) async fn remove(&self, blob: &Blob) -> Result<()> {
        match self.azure() {
            Some(s) if blob.uncommitted => s.discard_uncommitted(&blob.meta.name).await?,
            _ => self.store.delete(&blob.meta.name).await?,
        }
        Ok(())
    }

    /// Delete every blob under `prefix` (with `uncommitted`, also those with only uncommitted
    /// blocks); returns how many.
    pub(super) async fn delete_under(&self, prefix: &str, uncommitted: bool) -> Result<usize> {
        let blobs = self.blobs_under(prefix, uncommitted).await?;
        for blob in &blobs {
            self.remove(blob).await?;
        }
        Ok(blobs.len())
    }
}
