//! Container-root blobs and blob leases: what the staging import lock needs beyond [`Store`].
//!
//! An import job writes `importErrors.log` at the **root** of its output container, whatever
//! the location's prefix (docs/azure.md), so the staging module reads and deletes those blobs
//! by their root names here, and serialises imports per container with a lease on a lock blob.
//!
//! Must not: be used for vault objects (they go through [`Store`] and the location's prefix),
//! or show a SAS signature (errors go through `map_err`).
//!
//! [`Store`]: crate::store::Store

use azure_core::http::{Etag, RequestContent};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions, BlobClientDeleteOptions,
    BlockBlobClientUploadOptions,
};
use bytes::Bytes;
use futures::TryStreamExt as _;

use super::{AzureStore, error_code, status};
use crate::store::Result;

/// What an attempt to lease a root blob found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold the lease now.
    Acquired,
    /// Someone else holds it.
    Held,
    /// The blob does not exist (deleted meanwhile): create it and try again.
    Missing,
}

impl AzureStore {
    fn root_client(&self, name: &str) -> azure_storage_blob::BlobClient {
        self.inner.container.blob_client(name)
    }

    /// Read a container-root blob; `None` when it does not exist.
    pub async fn read_root(&self, name: &str) -> Result<Option<Bytes>> {
        let resp = match self.root_client(name).download(None).await {
            Ok(r) => r,
            Err(e) if status(&e) == Some(404) && !container_missing(&e) => return Ok(None),
            Err(e) => return Err(self.map_err(Some(name), "read", &e)),
        };
        let chunks: Vec<Bytes> = resp
            .body
            .map_err(|e| self.map_err(Some(name), "read", &e))
            .try_collect()
            .await?;
        Ok(Some(chunks.concat().into()))
    }

    /// Delete a container-root blob (absent is fine). With `lease`, the delete names it, as a
    /// leased blob requires (and the lease ends with the blob).
    pub async fn delete_root(&self, name: &str, lease: Option<&str>) -> Result<()> {
        let options = BlobClientDeleteOptions {
            lease_id: lease.map(str::to_owned),
            ..Default::default()
        };
        match self.root_client(name).delete(Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) && !container_missing(&e) => Ok(()),
            Err(e) => Err(self.map_err(Some(name), "delete", &e)),
        }
    }

    /// Write a container-root blob. `lease`: the blob is leased by us (the write must name it);
    /// without it, only create (`If-None-Match: *`): `Ok(false)` when it already exists.
    pub async fn put_root(&self, name: &str, data: Bytes, lease: Option<&str>) -> Result<bool> {
        let options = BlockBlobClientUploadOptions {
            lease_id: lease.map(str::to_owned),
            if_none_match: lease.is_none().then(|| Etag::from("*")),
            ..Default::default()
        };
        let content: RequestContent<Bytes, _> = data.into();
        match self.root_client(name).upload(content, Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if lease.is_none() && matches!(status(&e), Some(409 | 412)) => Ok(false),
            Err(e) => Err(self.map_err(Some(name), "write", &e)),
        }
    }

    /// Try to lease a container-root blob for `secs` seconds (15–60) under our own `lease_id`.
    pub async fn acquire_root_lease(
        &self,
        name: &str,
        secs: i32,
        lease_id: &str,
    ) -> Result<LeaseOutcome> {
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(lease_id.to_owned()),
            ..Default::default()
        };
        match self
            .root_client(name)
            .acquire_lease(secs, Some(options))
            .await
        {
            Ok(_) => Ok(LeaseOutcome::Acquired),
            Err(e) if status(&e) == Some(409) => Ok(LeaseOutcome::Held),
            Err(e) if status(&e) == Some(404) && !container_missing(&e) => {
                Ok(LeaseOutcome::Missing)
            }
            Err(e) => Err(self.map_err(Some(name), "lease", &e)),
        }
    }

    /// Renew our lease on a container-root blob.
    pub async fn renew_root_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        self.root_client(name)
            .renew_lease(lease_id.to_owned(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(Some(name), "renew lease", &e))
    }

    /// End whatever lease a container-root blob has, at once (break period 0), so it can be
    /// leased again. Only for a lease whose holder is known to be gone.
    pub async fn break_root_lease(&self, name: &str) -> Result<()> {
        let options = BlobClientBreakLeaseOptions {
            break_period: Some(0),
            ..Default::default()
        };
        match self.root_client(name).break_lease(Some(options)).await {
            Ok(_) => Ok(()),
            // No lease to break, or the blob is gone meanwhile: nothing holds it.
            Err(e) if matches!(status(&e), Some(404 | 409)) && !container_missing(&e) => Ok(()),
            Err(e) => Err(self.map_err(Some(name), "break lease", &e)),
        }
    }

    /// Release our lease without deleting the blob.
    pub async fn release_root_lease(&self, name: &str, lease_id: &str) -> Result<()> {
        match self
            .root_client(name)
            .release_lease(lease_id.to_owned(), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) && !container_missing(&e) => Ok(()),
            Err(e) => Err(self.map_err(Some(name), "release lease", &e)),
        }
    }
}

fn container_missing(e: &azure_core::Error) -> bool {
    error_code(e).as_deref() == Some("ContainerNotFound")
}
