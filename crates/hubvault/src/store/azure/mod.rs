//! Azure Blob Storage backend of [`Store`], on the official `azure_storage_blob` SDK.
//!
//! Auth: Entra (https only), a SAS URL, or an account key through a Shared Key pipeline policy
//! (Azurite). See [`location`] for the accepted location forms.
//!
//! Create-only writes: an [`ObjectWriter`] stages 4 MiB blocks with Put Block and `finish`
//! commits them with Put Block List and `If-None-Match: *`, so an existing blob is never
//! replaced (409/412 → [`Error::AlreadyExists`]). Uncommitted blocks are invisible to readers and
//! plain listings, and Azure garbage-collects them (after a week), so `abort` has nothing to do and
//! `sweep_temporaries` returns 0 (vault objects are sealed). Staging blobs are plaintext, so the
//! staging module finds and discards such blobs explicitly (`uncommitted.rs`).
//!
//! Must not: know snapshots. Never put a SAS signature or a key in an error or a log: SDK
//! errors about connections carry the request URL, so their text goes through [`crate::redact`].

pub mod location;
mod root;
mod shared_key;
mod uncommitted;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Etag};
use azure_storage_blob::models::{
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientCommitBlockListResultHeaders, BlockListType, BlockLookupList,
    ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use time::OffsetDateTime;

use super::sas::{SasPermissions, SasToken};
use super::{ByteStream, Error, ObjectMeta, ObjectWriter, Result, Store, check_name};
pub use location::{AzureAuth, AzureLocation};
pub use root::LeaseOutcome;
use shared_key::SharedKeyPolicy;
use uncommitted::Listed;

/// Size of a staged block: large enough to keep request counts low (a 1 GiB object is 256
/// blocks, far below the 50,000 limit), small enough to keep one writer's memory modest.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// A container (and optional prefix) in Azure Blob Storage.
#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    location: AzureLocation,
    container: BlobContainerClient,
    shown: String,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("location", &self.inner.shown)
            .finish_non_exhaustive()
    }
}

impl AzureStore {
    /// Open a location string (URL or connection string; see [`location`]). `entra` is needed
    /// only for https URLs without a SAS.
    pub fn open(location: &str, entra: Option<Arc<dyn TokenCredential>>) -> Result<Self> {
        Self::new(AzureLocation::parse(location)?, entra)
    }

    pub fn new(location: AzureLocation, entra: Option<Arc<dyn TokenCredential>>) -> Result<Self> {
        let shown = location.display();
        let sdk_err = |e: azure_core::Error| Error::Backend {
            store: shown.clone(),
            detail: crate::redact::redact(&e.to_string()),
        };
        let container_url = location.container_url();
        let container = match &location.auth {
            AzureAuth::Sas(token) => {
                BlobContainerClient::new(token.on(&container_url), None, None).map_err(sdk_err)?
            }
            AzureAuth::SharedKey(key) => {
                let options = BlobContainerClientOptions {
                    client_options: ClientOptions {
                        per_try_policies: vec![Arc::new(SharedKeyPolicy(key.clone()))],
                        ..Default::default()
                    },
                    ..Default::default()
                };
                BlobContainerClient::new(container_url, None, Some(options)).map_err(sdk_err)?
            }
            AzureAuth::Entra => {
                let Some(credential) = entra else {
                    return Err(Error::Backend {
                        store: shown,
                        detail: "no credential: sign in for Entra (credential = …), or give a SAS URL or a connection string".into(),
                    });
                };
                BlobContainerClient::new(container_url, Some(credential), None).map_err(sdk_err)?
            }
        };
        Ok(AzureStore {
            inner: Arc::new(Inner {
                location,
                container,
                shown,
            }),
        })
    }

    /// The parsed location (account, container, prefix, auth kind).
    pub fn azure_location(&self) -> &AzureLocation {
        &self.inner.location
    }

    /// Create the container if it does not exist (needs an account key or Entra rights; a
    /// container SAS cannot create containers).
    pub async fn ensure_container(&self) -> Result<()> {
        match self.inner.container.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(self.map_err(None, "create container", &e)),
        }
    }

    /// Delete the whole container (test cleanup; staging containers that are never reused).
    pub async fn delete_container(&self) -> Result<()> {
        match self.inner.container.delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.map_err(None, "delete container", &e)),
        }
    }

    /// A service SAS for this container, signed with the account key (only for key-based
    /// locations). Combine with [`AzureLocation::container_url`]; the token is a secret.
    pub fn container_sas(
        &self,
        perms: SasPermissions,
        start: OffsetDateTime,
        expiry: OffsetDateTime,
    ) -> Result<SasToken> {
        match &self.inner.location.auth {
            AzureAuth::SharedKey(key) => Ok(key.container_sas(&self.inner.location.container, perms, start, expiry)),
            _ => Err(Error::Backend {
                store: self.inner.shown.clone(),
                detail: "a SAS can only be generated with an account key; use a connection string with AccountKey".into(),
            }),
        }
    }

    fn full_name(&self, name: &str) -> Result<String> {
        check_name(name)?;
        Ok(self.inner.location.blob_name(name))
    }

    /// Map an SDK error onto a store error; `name` is the object, if the call had one.
    fn map_err(&self, name: Option<&str>, op: &str, e: &azure_core::Error) -> Error {
        let store = self.inner.shown.clone();
        let code = error_code(e);
        match (status(e), name) {
            (Some(404), _) if code.as_deref() == Some("ContainerNotFound") => Error::Backend {
                store,
                detail: format!(
                    "{op}: the container does not exist; create it (or check the name)"
                ),
            },
            (Some(404), Some(name)) => Error::NotFound {
                store,
                name: name.to_owned(),
            },
            (Some(s @ (401 | 403)), _) => Error::PermissionDenied {
                store,
                detail: format!("{op}: HTTP {s} {}", code.unwrap_or_default())
                    .trim_end()
                    .to_owned(),
            },
            (Some(s), _) => Error::Backend {
                store,
                detail: format!("{op} failed: HTTP {s} {}", code.unwrap_or_default()),
            },
            (None, _) => Error::Backend {
                store,
                detail: format!("{op} failed: {}", crate::redact::redact(&e.to_string())),
            },
        }
    }
}

impl AzureStore {
    /// Blobs under `prefix` (store-relative names, sorted); with `uncommitted`, also the blobs
    /// that have only uncommitted blocks (List Blobs `include=uncommittedblobs`).
    async fn list_blobs(&self, prefix: &str, uncommitted: bool) -> Result<Vec<Listed>> {
        let loc = &self.inner.location;
        let strip = if loc.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", loc.prefix)
        };
        // An empty `prefix=` is signed differently by the SDK and Azurite (403): leave it out.
        let full_prefix = format!("{strip}{prefix}");
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!full_prefix.is_empty()).then_some(full_prefix),
            include: uncommitted.then(|| vec![ListBlobsIncludeItem::UncommittedBlobs]),
            ..Default::default()
        };
        let mut pager = self
            .inner
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.map_err(None, "list", &e))?;
        let mut out = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.map_err(None, "list", &e))?
        {
            let Some(name) = item
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(strip.as_str()))
            else {
                continue;
            };
            let props = item.properties.as_ref();
            out.push(Listed {
                name: name.to_owned(),
                size: props.and_then(|p| p.content_length).unwrap_or(0),
                last_modified: props.and_then(|p| p.last_modified),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// An HTTP `Date` (`Sun, 06 Dec 2026 04:22:23 GMT`).
fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), HTTP_DATE)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

fn status(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

fn error_code(e: &azure_core::Error) -> Option<String> {
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

#[async_trait]
impl Store for AzureStore {
    fn location(&self) -> String {
        self.inner.shown.clone()
    }

    /// The storage service's clock, from the `Date` of a container properties read: blobs'
    /// `last_modified` is on that clock, so ages are judged on it. When it cannot be read (a
    /// SAS without that right), the local clock stands in.
    async fn now(&self) -> Result<OffsetDateTime> {
        let date = match self.inner.container.get_properties(None).await {
            Ok(resp) => resp
                .headers()
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static("date"))
                .and_then(parse_http_date),
            Err(e) => {
                tracing::debug!(
                    "the store's clock is not readable ({}); using the local clock",
                    crate::redact::redact(&e.to_string())
                );
                None
            }
        };
        Ok(date.unwrap_or_else(OffsetDateTime::now_utc))
    }

    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let full = self.full_name(name)?;
        Ok(Box::new(AzureWriter {
            store: self.clone(),
            name: name.to_owned(),
            blob: full,
            // Block ids are shared by every writer of the same blob name until a commit; a
            // per-writer nonce keeps two concurrent writers from mixing their blocks. All ids
            // of a blob must have the same length: uuid (36) + '-' + 8 digits.
            nonce: uuid::Uuid::new_v4().to_string(),
            buf: BytesMut::new(),
            blocks: Vec::new(),
            size: 0,
        }))
    }

    async fn get(&self, name: &str) -> Result<ByteStream> {
        let full = self.full_name(name)?;
        let resp = self
            .inner
            .container
            .blob_client(&full)
            .download(None)
            .await
            .map_err(|e| self.map_err(Some(name), "read", &e))?;
        let this = self.clone();
        let name = name.to_owned();
        Ok(resp
            .body
            .map_err(move |e| this.map_err(Some(&name), "read", &e))
            .boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let listed = self.list_blobs(prefix, false).await?;
        Ok(listed
            .into_iter()
            .map(|b| b.meta(OffsetDateTime::UNIX_EPOCH))
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let full = self.full_name(name)?;
        match self.inner.container.blob_client(&full).delete(None).await {
            Ok(_) => Ok(()),
            Err(e)
                if status(&e) == Some(404)
                    && error_code(&e).as_deref() != Some("ContainerNotFound") =>
            {
                Ok(())
            }
            Err(e) => Err(self.map_err(Some(name), "delete", &e)),
        }
    }
}

/// Stages blocks as they fill; commits on `finish`.
struct AzureWriter {
    store: AzureStore,
    name: String,
    blob: String,
    nonce: String,
    buf: BytesMut,
    blocks: Vec<Vec<u8>>,
    size: u64,
}

impl AzureWriter {
    async fn stage(&mut self, data: Bytes) -> Result<()> {
        let id = format!("{}-{:08}", self.nonce, self.blocks.len()).into_bytes();
        let len = data.len() as u64;
        let client = self
            .store
            .inner
            .container
            .blob_client(&self.blob)
            .block_blob_client();
        client
            .stage_block(&id, len, data.into(), None)
            .await
            .map_err(|e| self.store.map_err(Some(&self.name), "write block", &e))?;
        self.blocks.push(id);
        self.size = self.size.saturating_add(len);
        Ok(())
    }
}

impl AzureWriter {
    /// After a 409/412 on commit: is the existing blob our own commit, whose response was lost
    /// and which the SDK retried? Our block ids carry a per-writer nonce, so an identical
    /// committed list proves it. An empty object has no blocks and cannot be told apart: it
    /// stays `AlreadyExists`.
    async fn committed_by_us(&self) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let client = self
            .store
            .inner
            .container
            .blob_client(&self.blob)
            .block_blob_client();
        let Ok(resp) = client.get_block_list(BlockListType::Committed, None).await else {
            return false;
        };
        let Ok(list) = resp.into_model() else {
            return false;
        };
        let committed: Vec<Vec<u8>> = list
            .committed_blocks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| b.name)
            .collect();
        committed == self.blocks
    }
}

#[async_trait]
impl ObjectWriter for AzureWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        while self.buf.len() >= BLOCK_SIZE {
            let block = self.buf.split_to(BLOCK_SIZE).freeze();
            self.stage(block).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<ObjectMeta> {
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.stage(rest).await?;
        }
        let list = BlockLookupList {
            committed: None,
            latest: Some(self.blocks.clone()),
            uncommitted: None,
        };
        let content = list
            .try_into()
            .map_err(|e: azure_core::Error| self.store.map_err(Some(&self.name), "commit", &e))?;
        let options = BlockBlobClientCommitBlockListOptions {
            if_none_match: Some(Etag::from("*")),
            ..Default::default()
        };
        let client = self
            .store
            .inner
            .container
            .blob_client(&self.blob)
            .block_blob_client();
        let resp = match client.commit_block_list(content, Some(options)).await {
            Ok(r) => r,
            Err(e) if matches!(status(&e), Some(409 | 412)) => {
                if self.committed_by_us().await {
                    return Ok(ObjectMeta {
                        name: self.name.clone(),
                        size: self.size,
                        last_modified: OffsetDateTime::now_utc(),
                    });
                }
                return Err(Error::AlreadyExists {
                    store: self.store.location(),
                    name: self.name.clone(),
                });
            }
            Err(e) => return Err(self.store.map_err(Some(&self.name), "commit", &e)),
        };
        let last_modified = resp
            .last_modified()
            .ok()
            .flatten()
            .unwrap_or_else(OffsetDateTime::now_utc);
        Ok(ObjectMeta {
            name: self.name.clone(),
            size: self.size,
            last_modified,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Uncommitted blocks are invisible and expire on their own; nothing to undo.
        Ok(())
    }
}
