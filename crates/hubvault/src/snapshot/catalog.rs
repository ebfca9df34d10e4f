//! The catalog: snapshot ids, object names, listing, `latest`, orphans.
//!
//! Layout: `<hub>/<id>/devices.jsonl.zst.age`, `configurations.jsonl.zst.age`, `manifest.json`.
//! Data objects are written first and the manifest last: the manifest is the commit point, so
//! a snapshot without one does not exist for readers. Such leftovers (a killed backup, or one
//! still running) are *orphans*; `forget` removes them once older than a grace period.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::{Error, Manifest};
use crate::store::Store;

pub const MANIFEST: &str = "manifest.json";
pub const DEVICES_OBJECT: &str = "devices.jsonl.zst.age";
pub const CONFIGURATIONS_OBJECT: &str = "configurations.jsonl.zst.age";

/// The object at the root of every store that says "this location is a hubvault store". A
/// command that deletes refuses a location that has neither it nor a valid manifest: pointed at
/// the wrong folder (`--store ~`), it must not take anyone's files for orphans.
pub const MARKER: &str = "hubvault-store.json";

/// The marker's content: what it is, and which hubvault wrote it (no secrets).
pub fn marker_bytes(now: OffsetDateTime) -> Vec<u8> {
    let doc = serde_json::json!({
        "hubvault": "store",
        "format": super::manifest::FORMAT,
        "created": created(now),
        "tool": format!("hubvault {}", env!("CARGO_PKG_VERSION")),
    });
    let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Whether the store carries the marker.
pub async fn is_marked(store: &dyn Store) -> Result<bool, Error> {
    Ok(store.head(MARKER).await?.is_some())
}

/// Write the marker unless it is there (create-only: a concurrent writer wins, which is fine).
pub async fn mark(store: &dyn Store, now: OffsetDateTime) -> Result<bool, Error> {
    if is_marked(store).await? {
        return Ok(false);
    }
    match store.put(MARKER, marker_bytes(now).into()).await {
        Ok(_) => Ok(true),
        Err(crate::store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `id` has the shape of a snapshot id (`20261126T020000Z-3f9a1c2e`): what [`new_id`]
/// makes, and nothing else. Only such folders can be a backup's leftovers.
pub fn is_snapshot_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Whether `file` is a name hubvault writes inside a snapshot folder (data objects and the
/// manifest). Anything else there is not ours and is never deleted.
pub fn is_own_object(file: &str) -> bool {
    matches!(file, MANIFEST | DEVICES_OBJECT | CONFIGURATIONS_OBJECT)
}

/// A new snapshot id (`20261126T020000Z-3f9a1c2e`): see [`crate::store::time_id`].
pub fn new_id(now: OffsetDateTime, random: u32) -> String {
    crate::store::time_id(now, random)
}

/// `now` as the manifest's `created`: RFC 3339, UTC, whole seconds.
pub fn created(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Check a hub name is usable as one path segment of the store.
pub fn check_hub(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadHubName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1 to 255 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return bad("use letters, digits, '-', '_' and '.' (a hub's host name fits)");
    }
    Ok(())
}

/// Full object name of `file` in snapshot `id` of `hub`.
pub fn object_name(hub: &str, id: &str, file: &str) -> String {
    format!("{hub}/{id}/{file}")
}

/// The names one hub goes by, for finding its snapshots: a name from `hubvault.toml`, its host
/// name (what a live backup records), the name given to `--hub-name`. A name also matches a
/// recorded name that extends it with a dot (`hub-a` matches `hub-a.azure-devices.net`) and the
/// reverse; all comparisons ignore case, as DNS does. Never holds a connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubNames {
    names: Vec<String>,
}

impl HubNames {
    /// The names, the first one shown in messages. Empty names are dropped.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> HubNames {
        let mut out = HubNames::default();
        for n in names {
            let n = n.as_ref().trim().to_ascii_lowercase();
            if !n.is_empty() && !out.names.contains(&n) {
                out.names.push(n);
            }
        }
        out
    }

    /// Does a snapshot recorded under `recorded` belong to this hub?
    pub fn matches(&self, recorded: &str) -> bool {
        let r = recorded.to_ascii_lowercase();
        let extends = |long: &str, short: &str| {
            long.strip_prefix(short)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        self.names
            .iter()
            .any(|n| *n == r || extends(&r, n) || extends(n, &r))
    }

    /// How messages name the hub.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A snapshot whose manifest is there but cannot be used: damaged, or from a newer hubvault.
/// Listing skips it (with a warning) so that one bad manifest never hides the others.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub hub: String,
    pub id: String,
    /// The manifest's object name.
    pub name: String,
    /// The format it declares, when that is all that is wrong (a newer hubvault wrote it).
    pub newer_format: Option<u64>,
    /// What is wrong otherwise.
    pub detail: String,
}

impl Unreadable {
    /// The error reading it gave.
    pub fn error(&self) -> Error {
        match self.newer_format {
            Some(found) => Error::NewerFormat {
                name: self.name.clone(),
                found,
            },
            None => Error::BadManifest {
                name: self.name.clone(),
                detail: self.detail.clone(),
            },
        }
    }
}

/// The store's snapshots: the committed ones (those with a manifest) ordered by `created`, then
/// id, and those whose manifest cannot be read.
#[derive(Debug, Default)]
pub struct Listing {
    pub manifests: Vec<Manifest>,
    pub unreadable: Vec<Unreadable>,
}

impl std::ops::Deref for Listing {
    type Target = [Manifest];
    fn deref(&self) -> &[Manifest] {
        &self.manifests
    }
}

impl IntoIterator for Listing {
    type Item = Manifest;
    type IntoIter = std::vec::IntoIter<Manifest>;
    fn into_iter(self) -> Self::IntoIter {
        self.manifests.into_iter()
    }
}

/// Every snapshot in `store`; unreadable manifests are set aside with a warning each.
pub async fn list(store: &dyn Store) -> Result<Listing, Error> {
    let mut out = Listing::default();
    for meta in store.list("").await? {
        let mut parts = meta.name.split('/');
        let (Some(hub), Some(id), Some(MANIFEST), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let bytes = store.get_bytes(&meta.name).await?;
        let parsed = Manifest::parse(&bytes, &meta.name).and_then(|m| {
            if m.hub == hub && m.id == id {
                return Ok(m);
            }
            Err(Error::BadManifest {
                name: meta.name.clone(),
                detail: format!("it names snapshot {}/{}, not its own folder", m.hub, m.id),
            })
        });
        let (newer_format, detail) = match parsed {
            Ok(m) => {
                out.manifests.push(m);
                continue;
            }
            Err(Error::NewerFormat { found, .. }) => (Some(found), String::new()),
            Err(Error::BadManifest { detail, .. }) => (None, detail),
            Err(other) => return Err(other),
        };
        let unreadable = Unreadable {
            hub: hub.to_owned(),
            id: id.to_owned(),
            name: meta.name.clone(),
            newer_format,
            detail,
        };
        tracing::warn!("skipped snapshot {hub}/{id}: {}", unreadable.error());
        out.unreadable.push(unreadable);
    }
    out.manifests
        .sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The hubs the listing holds snapshots of (for messages).
pub fn hubs(listing: &Listing) -> Vec<String> {
    let set: BTreeSet<&str> = listing
        .manifests
        .iter()
        .map(|m| m.hub.as_str())
        .chain(listing.unreadable.iter().map(|u| u.hub.as_str()))
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

/// Find `spec` (an id, `hub/id` or `latest`) in `listing`. `latest` is the newest snapshot of
/// `hub` (every name it goes by), or of the only hub in the store; if a newer snapshot of that
/// hub is unreadable, `latest` is refused rather than quietly meaning an older one (ids begin
/// with their UTC second). A hub with no snapshot is named, with the hubs the store holds.
pub fn resolve<'a>(
    listing: &'a Listing,
    spec: &str,
    hub: Option<&HubNames>,
    store: &str,
) -> Result<&'a Manifest, Error> {
    let not_found = || match hub {
        Some(h) if !listing.manifests.iter().any(|m| h.matches(&m.hub)) => Error::NoSnapshotOfHub {
            hub: h.label().to_owned(),
            store: store.to_owned(),
            held: hubs(listing),
        },
        _ => Error::NotFound {
            spec: spec.to_owned(),
            store: store.to_owned(),
        },
    };
    let in_hub = |h: &str| hub.is_none_or(|want| want.matches(h));
    if spec == "latest" {
        if hub.is_none() {
            let held = hubs(listing);
            if held.len() > 1 {
                return Err(Error::AmbiguousLatest { hubs: held });
            }
        }
        let latest = listing.manifests.iter().rfind(|m| in_hub(&m.hub));
        let newer_unreadable = listing
            .unreadable
            .iter()
            .filter(|u| in_hub(&u.hub))
            .filter(|u| latest.is_none_or(|m| u.id > m.id))
            .max_by(|a, b| a.id.cmp(&b.id));
        if let Some(u) = newer_unreadable {
            return Err(Error::LatestUnreadable {
                hub: u.hub.clone(),
                id: u.id.clone(),
                problem: u.error().to_string(),
                older: latest.map(|m| m.id.clone()),
            });
        }
        return latest.ok_or_else(not_found);
    }
    let (want_hub, id) = match spec.split_once('/') {
        Some((h, id)) => (Some(HubNames::new([h])), id),
        None => (hub.cloned(), spec),
    };
    let wanted = |h: &str, i: &str| i == id && want_hub.as_ref().is_none_or(|w| w.matches(h));
    if let Some(m) = listing.manifests.iter().find(|m| wanted(&m.hub, &m.id)) {
        return Ok(m);
    }
    match listing.unreadable.iter().find(|u| wanted(&u.hub, &u.id)) {
        Some(u) => Err(u.error()),
        None => Err(Error::NotFound {
            spec: spec.to_owned(),
            store: store.to_owned(),
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
mod tests {
    use super::*;
    use crate::diagnostic::Diagnostic as _;
    use crate::snapshot::{Counts, Source};
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;
    use time::macros::datetime;

    fn manifest(hub: &str, id: &str, created: &str) -> Manifest {
        Manifest {
            format: 1,
            id: id.into(),
            hub: hub.into(),
            created: created.into(),
            source: Source {
                kind: "file".into(),
                job_id: None,
                path: None,
            },
            counts: Counts::default(),
            objects: vec![],
            recipients: vec![],
            tool: "t".into(),
        }
    }

    #[test]
    fn ids_sort_by_time() {
        let id = new_id(datetime!(2026-11-26 02:00:00.7 UTC), 0x3f9a_1c2e);
        assert_eq!(id, "20261126T020000Z-3f9a1c2e");
        assert_eq!(
            created(datetime!(2026-11-26 02:00:00.7 +01:00)),
            "2026-11-26T01:00:00Z"
        );
        assert!(new_id(datetime!(2026-11-26 02:00:01 UTC), 0) > id);
    }

    #[test]
    fn only_what_new_id_makes_is_a_snapshot_id() {
        assert!(is_snapshot_id(&new_id(
            datetime!(2026-11-26 02:00:00 UTC),
            0x3f9a_1c2e
        )));
        for not in [
            "website",
            "taxes",
            "20261126T020000Z-3F9A1C2E",
            "20261126T020000Z-3f9a1c2",
            "20261126T020000Z_3f9a1c2e",
            "2026112xT020000Z-3f9a1c2e",
            "",
        ] {
            assert!(!is_snapshot_id(not), "{not}");
        }
        assert!(is_own_object("devices.jsonl.zst.age") && !is_own_object("return.pdf"));
    }

    #[test]
    fn hub_names_are_one_safe_segment() {
        assert!(check_hub("plant-hub.azure-devices.net").is_ok());
        for bad in ["", "a/b", "..", ".hidden", "x y"] {
            assert!(check_hub(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn only_committed_snapshots_are_listed_and_orphans_are_found() {
        use crate::store::Store as _;
        let store = MemoryStore::new();
        let put = |name: String, data: Vec<u8>| {
            let store = store.clone();
            async move { store.put(&name, Bytes::from(data)).await.unwrap() }
        };
        let b = manifest("hub-a", "20261126T030000Z-00000002", "2026-11-26T03:00:00Z");
        let a = manifest("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        for m in [&b, &a] {
            put(object_name(&m.hub, &m.id, DEVICES_OBJECT), vec![1]).await;
            put(object_name(&m.hub, &m.id, MANIFEST), m.to_bytes()).await;
        }
        put(
            object_name("hub-a", "20261126T040000Z-00000003", DEVICES_OBJECT),
            vec![1],
        )
        .await;
        let listed = list(&store).await.unwrap();
        assert_eq!(
            listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            [a.id.as_str(), b.id.as_str()]
        );
        assert_eq!(resolve(&listed, "latest", None, "s").unwrap().id, b.id);
    }

    #[test]
    fn latest_with_several_hubs_is_ambiguous() {
        let ms = Listing {
            manifests: vec![
                manifest("hub-a", "1", "2026-01-01T00:00:00Z"),
                manifest("hub-b", "2", "2026-01-02T00:00:00Z"),
            ],
            unreadable: vec![],
        };
        let err = resolve(&ms, "latest", None, "s").unwrap_err().to_string();
        assert!(
            err.contains("hub-a, hub-b") && err.contains("--hub"),
            "{err}"
        );
        assert_eq!(
            resolve(&ms, "latest", Some(&HubNames::new(["hub-a"])), "s")
                .unwrap()
                .id,
            "1"
        );
        assert_eq!(resolve(&ms, "hub-b/2", None, "s").unwrap().id, "2");
        assert!(matches!(
            resolve(&ms, "3", None, "s"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_config_name_a_host_name_and_a_short_name_find_the_same_snapshots() {
        let ms = Listing {
            manifests: vec![
                manifest("hub-a.azure-devices.net", "20261126T020000Z-00000001", "x"),
                manifest("hub-a", "20261126T030000Z-00000002", "x"),
                manifest("hub-b.azure-devices.net", "20261126T040000Z-00000003", "x"),
            ],
            unreadable: vec![],
        };
        for names in [
            HubNames::new(["hub-a"]),
            HubNames::new(["HUB-A.azure-devices.net"]),
            HubNames::new(["prod", "hub-a.azure-devices.net"]),
        ] {
            let m = resolve(&ms, "latest", Some(&names), "s").unwrap();
            assert_eq!(m.id, "20261126T030000Z-00000002", "{names:?}");
            assert!(resolve(&ms, "20261126T020000Z-00000001", Some(&names), "s").is_ok());
        }
        assert!(!HubNames::new(["hub"]).matches("hub-a.azure-devices.net"));
        let err = resolve(&ms, "latest", Some(&HubNames::new(["hub-c"])), "s").unwrap_err();
        assert_eq!(err.code(), "snapshot_no_snapshot_of_hub");
        let shown = err.to_string();
        assert!(
            shown.contains("hub-c")
                && shown.contains("hub-a.azure-devices.net, hub-b.azure-devices.net"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_manifest_is_set_aside_and_latest_will_not_skip_it() {
        use crate::store::Store as _;
        let store = MemoryStore::new();
        let old = manifest("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        let put = |name: String, data: Vec<u8>| {
            let store = store.clone();
            async move { store.put(&name, Bytes::from(data)).await.unwrap() }
        };
        put(object_name(&old.hub, &old.id, MANIFEST), old.to_bytes()).await;
        let newest = "20261126T030000Z-00000002";
        put(
            object_name("hub-a", newest, MANIFEST),
            b"{not json".to_vec(),
        )
        .await;

        let listed = list(&store).await.unwrap();
        assert_eq!(listed.len(), 1, "the readable one is listed");
        assert_eq!(listed.unreadable[0].id, newest);
        let err = resolve(&listed, "latest", None, "s").unwrap_err();
        assert_eq!(err.code(), "snapshot_latest_unreadable");
        let shown = err.to_string();
        assert!(shown.contains(newest) && shown.contains(&old.id), "{shown}");
        assert_eq!(resolve(&listed, &old.id, None, "s").unwrap().id, old.id);
        assert_eq!(
            resolve(&listed, newest, None, "s").unwrap_err().code(),
            "snapshot_bad_manifest"
        );

        // An older unreadable one does not get in the way of `latest`.
        let later = manifest("hub-a", "20261126T040000Z-00000003", "2026-11-26T04:00:00Z");
        put(
            object_name(&later.hub, &later.id, MANIFEST),
            later.to_bytes(),
        )
        .await;
        let listed = list(&store).await.unwrap();
        assert_eq!(resolve(&listed, "latest", None, "s").unwrap().id, later.id);
    }
}
