//! Blobs that have only uncommitted blocks: blocks uploaded with Put Block and never committed
//! with Put Block List (an export job cancelled half-way, an upload killed). A plain List Blobs
//! does not show them and Azure keeps them for about a week; in a staging container they can
//! hold device keys in plaintext, so staging lists them (`include=uncommittedblobs`) and
//! discards them here (docs/azure.md, "Uncommitted blocks").
//!
//! Must not: be used on a blob whose writer may still commit it (a live job's output): the
//! caller decides that, as for any other staging delete.

use azure_core::http::Etag;
use azure_storage_blob::models::{BlockBlobClientCommitBlockListOptions, BlockLookupList};
use time::OffsetDateTime;

use super::{AzureStore, status};
use crate::store::{ObjectMeta, Result, Store as _};

/// One blob of a listing, as the service described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub name: String,
    pub size: u64,
    pub last_modified: Option<OffsetDateTime>,
}

impl Listed {
    /// As an [`ObjectMeta`], with `unknown` standing in for a missing `Last-Modified`.
    pub fn meta(self, unknown: OffsetDateTime) -> ObjectMeta {
        ObjectMeta {
            name: self.name,
            size: self.size,
            last_modified: self.last_modified.unwrap_or(unknown),
        }
    }
}

/// The blobs of a listing with `include=uncommittedblobs` that a plain listing of the same
/// prefix does not show: those with only uncommitted blocks. (The service marks them in no
/// other way.) A missing `Last-Modified` counts as `now`: young, so an age rule never takes a
/// blob for abandoned on a guess.
fn only_uncommitted(
    all: Vec<Listed>,
    committed: &[Listed],
    now: OffsetDateTime,
) -> Vec<ObjectMeta> {
    all.into_iter()
        .filter(|b| committed.binary_search_by(|c| c.name.cmp(&b.name)).is_err())
        .map(|b| b.meta(now))
        .collect()
}

impl AzureStore {
    /// Blobs under `prefix`, each sorted by name: the committed ones (as [`Store::list`] shows
    /// them) and those that have only uncommitted blocks. A blob whose writer commits it
    /// between the two listings looks uncommitted; [`AzureStore::discard_uncommitted`] deletes
    /// it all the same.
    ///
    /// [`Store::list`]: crate::store::Store::list
    pub async fn list_with_uncommitted(
        &self,
        prefix: &str,
    ) -> Result<(Vec<ObjectMeta>, Vec<ObjectMeta>)> {
        let committed = self.list_blobs(prefix, false).await?;
        let all = self.list_blobs(prefix, true).await?;
        let uncommitted = only_uncommitted(all, &committed, OffsetDateTime::now_utc());
        let committed = committed
            .into_iter()
            .map(|b| b.meta(OffsetDateTime::UNIX_EPOCH))
            .collect();
        Ok((committed, uncommitted))
    }

    /// Discard a blob's uncommitted blocks and the blob. Azure answers Delete Blob on a blob
    /// that has only uncommitted blocks with 404 `BlobNotFound`, and committing a block list
    /// garbage-collects every block not in it; so commit an empty list (a 0-byte blob), then
    /// delete that. `If-None-Match: *` keeps the commit from emptying a blob someone committed
    /// meanwhile: that one is deleted as it is.
    pub async fn discard_uncommitted(&self, name: &str) -> Result<()> {
        let full = self.full_name(name)?;
        let empty = BlockLookupList {
            committed: None,
            latest: None,
            uncommitted: None,
        };
        let content = empty
            .try_into()
            .map_err(|e: azure_core::Error| self.map_err(Some(name), "discard blocks", &e))?;
        let options = BlockBlobClientCommitBlockListOptions {
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        let client = self.inner.container.blob_client(&full).block_blob_client();
        match client.commit_block_list(content, Some(options)).await {
            Ok(_) => {}
            Err(e) if matches!(status(&e), Some(409 | 412)) => {}
            Err(e) => return Err(self.map_err(Some(name), "discard blocks", &e)),
        }
        self.delete(name).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn listed(name: &str, at: Option<i64>) -> Listed {
        Listed {
            name: name.into(),
            size: 0,
            last_modified: at.map(|t| OffsetDateTime::from_unix_timestamp(t).unwrap()),
        }
    }

    #[test]
    fn uncommitted_are_the_names_only_the_inclusive_listing_shows() {
        let now = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        let all = vec![
            listed("staging/h/r1/configurations.txt", Some(10)),
            listed("staging/h/r1/devices.txt", Some(20)),
            listed("staging/h/r2/devices.txt", None),
            listed("staging/h/r3/devices.txt", Some(30)),
        ];
        let committed = vec![
            listed("staging/h/r1/configurations.txt", Some(10)),
            listed("staging/h/r3/devices.txt", Some(30)),
        ];
        let got = only_uncommitted(all, &committed, now);
        let names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["staging/h/r1/devices.txt", "staging/h/r2/devices.txt"]
        );
        assert_eq!(got[0].last_modified.unix_timestamp(), 20);
        assert_eq!(
            got[1].last_modified, now,
            "no Last-Modified: taken as young"
        );
        assert!(only_uncommitted(Vec::new(), &committed, now).is_empty());
    }
}
