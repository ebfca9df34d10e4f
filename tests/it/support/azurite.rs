//! Real Azurite for the tests where storage matters: its connection string, and a fresh
//! container per test for staging.

use std::io::Write as _;

use hubvault::store::Store as _;
use hubvault::store::azure::{AzureLocation, AzureStore};

/// The Azurite connection string from `HUBVAULT_TEST_AZURITE` (set by `scripts/test`), or `None`
/// with a visible "skipped" line. With `HUBVAULT_REQUIRE_AZURITE=1` a missing Azurite fails the
/// test instead.
pub fn azurite() -> Option<String> {
    match std::env::var("HUBVAULT_TEST_AZURITE") {
        Ok(cs) if !cs.trim().is_empty() => Some(cs),
        _ => {
            assert!(
                std::env::var("HUBVAULT_REQUIRE_AZURITE").as_deref() != Ok("1"),
                "HUBVAULT_REQUIRE_AZURITE=1 but HUBVAULT_TEST_AZURITE is not set; run scripts/test"
            );
            let msg = "skipped: set HUBVAULT_TEST_AZURITE (an Azurite connection string) to run this test";
            // Past the test harness's capture, so a skip is seen.
            match std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
                Ok(mut f) => drop(writeln!(f, "{msg}")),
                Err(_) => eprintln!("{msg}"),
            }
            None
        }
    }
}

/// The `AccountKey=` of a storage connection string.
pub(super) fn account_key(cs: &str) -> Option<&str> {
    cs.split(';').find_map(|kv| kv.strip_prefix("AccountKey="))
}

/// A fresh Azurite container (for one test's staging, or as a vault).
pub struct Staging {
    pub connection_string: String,
    pub container: String,
    /// The whole container, at its root.
    pub store: AzureStore,
}

impl Staging {
    /// A new, empty container named after `tag` (unique per call).
    pub async fn fresh(cs: &str, tag: &str) -> Staging {
        let container = format!(
            "st-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let store = AzureStore::new(
            AzureLocation::from_connection_string(cs, &container).unwrap(),
            None,
        )
        .unwrap();
        store.ensure_container().await.unwrap();
        Staging {
            connection_string: cs.to_owned(),
            container,
            store,
        }
    }

    /// Every blob left in the container.
    pub async fn leftovers(&self) -> Vec<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    }

    /// [`Staging::leftovers`] that can hold device keys: everything but run journals (a dead
    /// run's, left for the next run's sweep, holds no secret).
    pub async fn plaintext_leftovers(&self) -> Vec<String> {
        self.leftovers()
            .await
            .into_iter()
            .filter(|n| !n.starts_with("hubvault-runs/"))
            .collect()
    }

    /// A store under `prefix` in the container.
    pub fn under(&self, prefix: &str) -> AzureStore {
        let location = format!("{}/{prefix}", self.container);
        AzureStore::new(
            AzureLocation::from_connection_string(&self.connection_string, &location).unwrap(),
            None,
        )
        .unwrap()
    }

    pub async fn delete(&self) {
        self.store.delete_container().await.unwrap();
    }

    /// The container's URL with a container SAS granting `perms`, valid for an hour (from five
    /// minutes ago).
    pub fn sas_url(&self, perms: hubvault::store::sas::SasPermissions) -> url::Url {
        let now = time::OffsetDateTime::now_utc();
        let sas = self
            .store
            .container_sas(
                perms,
                now - time::Duration::minutes(5),
                now + time::Duration::hours(1),
            )
            .unwrap();
        sas.on(&self.store.azure_location().container_url())
    }

    /// The container through the SDK itself (a container SAS with every right), not through
    /// hubvault's store: what Azurite holds, seen independently of the code under test.
    fn sdk(&self) -> azure_storage_blob::BlobContainerClient {
        let url = self.sas_url(hubvault::store::sas::SasPermissions::all());
        azure_storage_blob::BlobContainerClient::new(url, None, None).unwrap()
    }

    /// Upload `data` as one block of blob `name` (Put Block) and never commit it: what an
    /// export job cancelled half-way leaves.
    pub async fn put_uncommitted(&self, name: &str, data: &'static [u8]) {
        let id = format!("planted-{:08}", rand::random::<u32>()).into_bytes();
        self.sdk()
            .blob_client(name)
            .block_blob_client()
            .stage_block(
                &id,
                data.len() as u64,
                bytes::Bytes::from_static(data).into(),
                None,
            )
            .await
            .unwrap();
    }

    /// Every blob in the container as List Blobs with `include=uncommittedblobs` shows it:
    /// committed ones and those with only uncommitted blocks, sorted.
    pub async fn everything(&self) -> Vec<String> {
        use azure_storage_blob::models::{
            BlobContainerClientListBlobsOptions, ListBlobsIncludeItem,
        };
        use futures::TryStreamExt as _;
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::UncommittedBlobs]),
            ..Default::default()
        };
        let mut pager = self.sdk().list_blobs(Some(options)).unwrap();
        let mut names = Vec::new();
        while let Some(item) = pager.try_next().await.unwrap() {
            names.extend(item.name);
        }
        names.sort();
        names
    }
}
