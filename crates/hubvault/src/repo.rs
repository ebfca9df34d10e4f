//! The repository handle: a store opened once with its catalog read, which every read command
//! asks for snapshots by id, `hub/id` or `latest` — so the rules for finding a snapshot (every
//! name a hub goes by, an unreadable newest snapshot never skipped quietly) live in one place.
//!
//! Must not: hide an error of the catalog behind a fallback (the one fallback it has, for a
//! live hub without snapshots of its own, is said in [`Repository::resolve_for_live`]).

use std::sync::Arc;

use crate::snapshot::catalog::{self, HubNames, Listing, Unreadable};
use crate::snapshot::signature::{Trust, TrustedSigners};
use crate::snapshot::{Error, Manifest};
use crate::store::Store;

/// Which snapshots a reader accepts: those signed by one of `trusted`, and, with
/// `allow_unsigned`, format 1 snapshots (which have no signature).
#[derive(Debug, Clone, Default)]
pub struct ReadPolicy {
    pub trusted: TrustedSigners,
    pub allow_unsigned: bool,
}

/// A store and its catalog, read once.
#[derive(Debug)]
pub struct Repository {
    store: Arc<dyn Store>,
    listing: Listing,
    policy: ReadPolicy,
}

impl Repository {
    /// Read the catalog of `store`, each snapshot judged by `policy` (unreadable manifests are
    /// set aside, never fatal).
    pub async fn open(store: Arc<dyn Store>, policy: ReadPolicy) -> Result<Repository, Error> {
        let listing = catalog::list(store.as_ref(), &policy.trusted).await?;
        Ok(Repository {
            store,
            listing,
            policy,
        })
    }

    pub fn policy(&self) -> &ReadPolicy {
        &self.policy
    }

    /// `m`, if this reader may use its data; else why not (unsigned, untrusted signer, bad
    /// signature), with what to do.
    pub fn accept<'a>(&self, m: &'a Manifest) -> Result<&'a Manifest, Error> {
        if m.trust.accepted(self.policy.allow_unsigned) {
            return Ok(m);
        }
        Err(Error::Untrusted {
            hub: m.hub.clone(),
            id: m.id.clone(),
            trust: m.trust.describe(),
            unsigned: m.trust == Trust::Unsigned,
        })
    }

    /// [`Repository::resolve`], then [`Repository::accept`]: the snapshot a command that reads
    /// data (restore, dump, diff) may use.
    pub fn resolve_trusted(&self, spec: &str, hub: Option<&HubNames>) -> Result<&Manifest, Error> {
        self.resolve(spec, hub).and_then(|m| self.accept(m))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where the store is (no secrets).
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Every committed snapshot, oldest first.
    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    /// The snapshots of `hub` (every name it goes by), or all, oldest first.
    pub fn snapshots<'a>(
        &'a self,
        hub: Option<&'a HubNames>,
    ) -> impl Iterator<Item = &'a Manifest> {
        self.listing
            .manifests
            .iter()
            .filter(move |m| hub.is_none_or(|h| h.matches(&m.hub)))
    }

    /// The snapshots of `hub` (or all) whose manifest cannot be read.
    pub fn unreadable<'a>(
        &'a self,
        hub: Option<&'a HubNames>,
    ) -> impl Iterator<Item = &'a Unreadable> {
        self.listing
            .unreadable
            .iter()
            .filter(move |u| hub.is_none_or(|h| h.matches(&u.hub)))
    }

    /// The hubs the store holds snapshots of.
    pub fn hubs(&self) -> Vec<String> {
        catalog::hubs(&self.listing)
    }

    /// `spec` (an id, `hub/id` or `latest`) among the snapshots of `hub`, or of the store's
    /// only hub (see [`catalog::resolve`]).
    pub fn resolve(&self, spec: &str, hub: Option<&HubNames>) -> Result<&Manifest, Error> {
        catalog::resolve(
            &self.listing,
            spec,
            hub,
            &self.location(),
            self.policy.allow_unsigned,
        )
    }

    /// The snapshot to compare a live hub with: `latest` is the newest snapshot of that hub (any
    /// name it goes by) when the store has one, else — and only when the store holds no snapshot
    /// of it at all — of the store's only hub (a clone's target compared with its source's
    /// snapshot). Any other error is not hidden. An id names its snapshot whatever its hub.
    pub fn resolve_for_live(&self, spec: &str, live: &HubNames) -> Result<&Manifest, Error> {
        if spec != "latest" {
            return self.resolve(spec, None);
        }
        match self.resolve(spec, Some(live)) {
            Err(Error::NoSnapshotOfHub { .. }) => self.resolve(spec, None),
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::diagnostic::Diagnostic as _;
    use crate::store::memory::MemoryStore;

    fn unsigned() -> ReadPolicy {
        ReadPolicy {
            allow_unsigned: true,
            ..ReadPolicy::default()
        }
    }

    fn manifest(hub: &str, id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": 1, "id": id, "hub": hub, "created": "2026-11-26T02:00:00Z",
            "source": {"kind": "file"},
            "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
            "objects": [], "recipients": [], "tool": "t"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_live_hub_without_snapshots_compares_with_the_only_hub_but_nothing_else_is_hidden() {
        let store = MemoryStore::new();
        let id = "20261126T020000Z-00000001";
        store.insert(
            &format!("hub-a/{id}/manifest.json"),
            &manifest("hub-a", id),
            time::OffsetDateTime::now_utc(),
        );
        let repo = Repository::open(Arc::new(store.clone()), unsigned())
            .await
            .unwrap();
        let hub_b = HubNames::new(["hub-b"]);
        assert_eq!(repo.resolve_for_live("latest", &hub_b).unwrap().id, id);
        // A newer, unreadable snapshot of hub-a is not skipped for an older one.
        let newer = "20261126T030000Z-00000002";
        store.insert(
            &format!("hub-a/{newer}/manifest.json"),
            b"{broken",
            time::OffsetDateTime::now_utc(),
        );
        let repo = Repository::open(Arc::new(store), unsigned()).await.unwrap();
        let err = repo.resolve_for_live("latest", &hub_b).unwrap_err();
        assert_eq!(err.code(), "snapshot_latest_unreadable");
    }
}
