//! Where sealed objects live: a narrow, create-only object store.
//!
//! Backends: a local folder (the default), Azure Blob Storage and memory (tests). The trait knows
//! nothing of snapshots: it stores named byte objects. Names are `/`-separated relative paths
//! (`plant-hub/20261126T020000Z-3f9a1c2e/manifest.json`).
//!
//! Writes are **create-only**: an object becomes visible under its name only when
//! [`ObjectWriter::finish`] succeeds, and `finish` fails with [`Error::AlreadyExists`] if the name is
//! taken — never overwrite. A writer dropped or aborted before `finish` leaves nothing visible
//! (at most an invisible temporary that `forget` sweeps).

pub mod azure;
pub mod sas;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use time::OffsetDateTime;

use crate::diagnostic::{Diagnostic, fix_text};

#[doc(hidden)]
pub mod conformance;
pub mod local;
pub mod memory;

/// A stream of an object's bytes, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// What a listing or a finished write reports about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub name: String,
    pub size: u64,
    pub last_modified: OffsetDateTime,
}

/// Errors of every backend. Messages never carry credentials (SAS signatures, account keys).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object {name} does not exist in {store}")]
    NotFound { store: String, name: String },
    #[error("object {name} already exists in {store}; objects are never overwritten")]
    AlreadyExists { store: String, name: String },
    #[error("invalid object name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("permission denied on {store}: {detail}; {}", fix_text(self))]
    PermissionDenied { store: String, detail: String },
    #[error("I/O error on {store} ({context}): {source}")]
    Io {
        store: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{store}: {detail}")]
    Backend { store: String, detail: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "store_not_found",
            Error::AlreadyExists { .. } => "store_already_exists",
            Error::InvalidName { .. } => "store_invalid_name",
            Error::PermissionDenied { .. } => "store_permission_denied",
            Error::Io { .. } => "store_io",
            Error::Backend { .. } => "store_backend",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::PermissionDenied { .. } => {
                Some("check the credential's rights on this store".to_owned())
            }
            Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::InvalidName { .. }
            | Error::Io { .. }
            | Error::Backend { .. } => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A create-only object store.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where this store is, for messages (credentials redacted).
    fn location(&self) -> String;

    /// Start writing a new object. Nothing is visible under `name` until [`ObjectWriter::finish`].
    async fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Read a whole object as a stream.
    async fn get(&self, name: &str) -> Result<ByteStream>;

    /// Objects whose names start with `prefix`, sorted by name. Temporaries are not listed.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Remove an object. Removing a missing object is not an error (deletes are retried).
    async fn delete(&self, name: &str) -> Result<()>;

    /// Metadata of one object, `None` if absent.
    async fn head(&self, name: &str) -> Result<Option<ObjectMeta>> {
        let listed = self.list(name).await?;
        Ok(listed.into_iter().find(|m| m.name == name))
    }

    /// Create an object from bytes in memory (small objects: manifests).
    async fn put(&self, name: &str, data: Bytes) -> Result<ObjectMeta> {
        let mut writer = self.create(name).await?;
        writer.write(data).await?;
        writer.finish().await
    }

    /// Read a whole object into memory (small objects: manifests).
    async fn get_bytes(&self, name: &str) -> Result<Bytes> {
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = self.get(name).await?.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// The store's own clock: the time its objects' `last_modified` is measured on. Ages of
    /// objects (an orphan's grace period) are judged on it, never on a time the user gave.
    /// Backends whose objects carry the local clock's times use it.
    async fn now(&self) -> Result<OffsetDateTime> {
        Ok(OffsetDateTime::now_utc())
    }

    /// Remove temporaries left by writers that never finished (a killed process), if older
    /// than `older_than`. Returns how many were removed. Backends without visible temporaries
    /// (Azure: uncommitted blocks expire by themselves) return 0.
    async fn sweep_temporaries(&self, older_than: OffsetDateTime) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }
}

/// One object being written. Exactly one of `finish` or `abort` ends it.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Append bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Make the object visible under its name, create-only (fails if the name exists).
    async fn finish(self: Box<Self>) -> Result<ObjectMeta>;
    /// Drop what was written; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A name segment that sorts by time: the UTC second of `now`, then 8 random hex digits
/// (`20261126T020000Z-3f9a1c2e`), so two made in one second differ. Snapshot ids and staging run
/// ids both have this shape.
pub fn time_id(now: OffsetDateTime, random: u32) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{random:08x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Check an object name: relative, `/`-separated, no empty, `.` or `..` segments, no control
/// characters. Every backend calls this so a name means the same thing everywhere.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if name.chars().any(char::is_control) || name.contains('\\') {
        return bad("contains a control character or backslash");
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Open the store named by `location`: a folder path or `file://` URL, or an Azure Blob
/// container (docs/architecture.md#configuration `--store`): an `https://acct.blob.core.windows.net/container[/prefix]`
/// URL (with a SAS, or Entra through the developer-tools credential), a path-style
/// `http://127.0.0.1:PORT/devstoreaccount1/container` URL (Azurite), or an account-key
/// connection string with a `Container=NAME[/prefix]` segment. The store's `location()` never
/// shows a key or a SAS signature.
pub fn open(location: &str) -> Result<Arc<dyn Store>> {
    if azure::AzureLocation::looks_like(location) {
        return Ok(Arc::new(open_azure(location)?));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() {
        return Err(Error::InvalidName {
            name: location.to_owned(),
            reason: "empty store path",
        });
    }
    Ok(Arc::new(local::LocalStore::new(path)))
}

/// The Azure Blob store at `location` (a container URL or connection string), as [`open`]
/// opens it, for callers that need its leases too.
pub fn open_azure(location: &str) -> Result<azure::AzureStore> {
    use azure::{AzureAuth, AzureLocation, AzureStore};
    let parsed = AzureLocation::parse(location)?;
    let entra = match parsed.auth {
        AzureAuth::Entra => Some(developer_credential(&parsed.display())?),
        _ => None,
    };
    AzureStore::new(parsed, entra)
}

/// The Entra credential for an https store without SAS (`az login` and friends).
fn developer_credential(shown: &str) -> Result<Arc<dyn azure_core::credentials::TokenCredential>> {
    match azure_identity::DeveloperToolsCredential::new(None) {
        Ok(c) => Ok(c),
        Err(e) => Err(Error::Backend {
            store: shown.to_owned(),
            detail: format!(
                "no Entra credential ({}); sign in with az login, or give a SAS URL or a connection string",
                crate::redact::redact(&e.to_string())
            ),
        }),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod open_tests {
    #[test]
    fn azure_locations_open_and_never_show_secrets() {
        let cs = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=U0VDUkVUS0VZ;BlobEndpoint=http://127.0.0.1:1/a;Container=vault/p";
        let sas =
            "https://acct.blob.core.windows.net/c01/pre?sv=2022-11-02&sr=c&sp=racwdl&sig=SECRETSIG";
        let store = super::open(cs).unwrap();
        assert_eq!(store.location(), "http://127.0.0.1:1/a/vault/p");
        let store = super::open(sas).unwrap();
        let shown = format!("{} {store:?}", store.location());
        assert!(
            shown.contains("sig=<redacted>") && !shown.contains("SECRETSIG"),
            "{shown}"
        );
        let err = super::open("http://127.0.0.1:1/otheraccount/c01").unwrap_err();
        assert!(err.to_string().contains("needs a SAS"), "{err}");
        let err =
            super::open("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=U0VDUkVUS0VZ")
                .unwrap_err();
        assert!(
            err.to_string().contains("Container=") && !err.to_string().contains("U0VDUkVU"),
            "{err}"
        );
        assert_eq!(super::open("file:///tmp/x").unwrap().location(), "/tmp/x");
        assert_eq!(super::open("./rel").unwrap().location(), "./rel");
    }
}
