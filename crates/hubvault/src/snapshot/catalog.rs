//! The catalog: snapshot ids, object names, listing, `latest`, orphans.
//!
//! Layout: `<hub>/<id>/devices.jsonl.zst.age`, `configurations.jsonl.zst.age`, `manifest.json`.
//! Data objects are written first and the manifest last: the manifest is the commit point, so
//! a snapshot without one does not exist for readers. Such leftovers (a killed backup, or one
//! still running) are *orphans*; `forget` removes them once older than a grace period.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::signature::{Trust, TrustedSigners};
use super::{Error, Manifest};
use crate::store::{ObjectMeta, Store};

pub const MANIFEST: &str = "manifest.json";
pub const DEVICES_OBJECT: &str = "devices.jsonl.zst.age";
pub const CONFIGURATIONS_OBJECT: &str = "configurations.jsonl.zst.age";

/// The object at the root of every store that says "this location is a hubvault store". A
/// command that deletes refuses a location that has neither it nor a valid manifest: pointed at
/// the wrong folder (`--store ~`), it must not take anyone's files for orphans.
pub const MARKER: &str = "hubvault-store.json";

/// Where `hubvault serve` keeps its per-hub leases and status records inside a store: hubvault's
/// own objects that are not snapshots (listings and `forget` skip them).
pub const SERVICE_PREFIX: &str = ".hubvault-serve/";

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

/// What a file in a snapshot folder is (docs/vault-format.md#v2-layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// `manifest.json` (format 1).
    ManifestV1,
    /// `devices.jsonl.zst.age`, `configurations.jsonl.zst.age` (format 1).
    DataV1,
    /// `manifest.g<N>.json`.
    Manifest(u64),
    /// `signature.g<N>.json`.
    Signature(u64),
    /// `<kind>.g<N>.jsonl.zst.age`.
    Data(u64),
}

/// The file name of generation `g`'s manifest.
pub fn manifest_file(g: u64) -> String {
    format!("manifest.g{g}.json")
}

/// The file name of generation `g`'s signature object.
pub fn signature_file(g: u64) -> String {
    format!("signature.g{g}.json")
}

/// The file name of generation `g`'s data object of `kind`.
pub fn data_file(kind: &str, g: u64) -> String {
    format!("{kind}.g{g}.jsonl.zst.age")
}

/// What `file` is, if hubvault writes such a name inside a snapshot folder. Object kinds are an
/// open list of lower-case words (`devices`, `configurations`, later more).
pub fn file_kind(file: &str) -> Option<FileKind> {
    match file {
        MANIFEST => return Some(FileKind::ManifestV1),
        DEVICES_OBJECT | CONFIGURATIONS_OBJECT => return Some(FileKind::DataV1),
        _ => {}
    }
    let generation = |s: &str| {
        let n = s.strip_prefix('g')?;
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
            .then(|| n.parse::<u64>().ok())
            .flatten()
    };
    if let Some(g) = file
        .strip_prefix("manifest.")
        .and_then(|r| r.strip_suffix(".json"))
        .and_then(generation)
    {
        return Some(FileKind::Manifest(g));
    }
    if let Some(g) = file
        .strip_prefix("signature.")
        .and_then(|r| r.strip_suffix(".json"))
        .and_then(generation)
    {
        return Some(FileKind::Signature(g));
    }
    let stem = file.strip_suffix(".jsonl.zst.age")?;
    let (kind, g) = stem.rsplit_once('.')?;
    let g = generation(g)?;
    is_kind(kind).then_some(FileKind::Data(g))
}

/// Whether `kind` is an object kind's shape: one word of lower-case letters, digits and `-`
/// (`devices`, `configurations`, `enrollment-groups`), at most 64 characters.
pub fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `file` is a name hubvault writes inside a snapshot folder (data objects, signatures,
/// manifests). Anything else there is not ours and is never deleted.
pub fn is_own_object(file: &str) -> bool {
    file_kind(file).is_some()
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

/// Every snapshot in `store`, each judged against `trusted` ([`Manifest::trust`]); unreadable
/// manifests are set aside with a warning each.
pub async fn list(store: &dyn Store, trusted: &TrustedSigners) -> Result<Listing, Error> {
    let mut folders: BTreeMap<(String, String), Vec<ObjectMeta>> = BTreeMap::new();
    for meta in store.list("").await? {
        let mut parts = meta.name.split('/');
        if let (Some(hub), Some(id), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            folders
                .entry((hub.to_owned(), id.to_owned()))
                .or_default()
                .push(meta);
        }
    }
    let mut out = Listing::default();
    for ((hub, id), objects) in folders {
        match read_snapshot(store, &hub, &id, &objects, trusted).await? {
            Read::Snapshot(m) => out.manifests.push(*m),
            Read::Unreadable(u) => {
                tracing::warn!("skipped snapshot {hub}/{id}: {}", u.error());
                out.unreadable.push(u);
            }
            Read::NoManifest => {}
        }
    }
    out.manifests
        .sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// What one snapshot folder holds for readers.
#[derive(Debug)]
pub enum Read {
    /// The manifest to use (the best generation), judged.
    Snapshot(Box<Manifest>),
    /// A manifest is there but none can be used.
    Unreadable(Unreadable),
    /// No manifest: an orphan (or not a snapshot folder at all).
    NoManifest,
}

/// Read the snapshot folder `hub/id` whose objects are `objects` (as listed): of its format 2
/// generations the highest whose signature verifies for a trusted signer and whose objects are
/// all present; else the highest validly signed one; else a format 1 manifest; else the highest
/// generation, marked with what is wrong (docs/vault-format.md#reading-rules).
pub async fn read_snapshot(
    store: &dyn Store,
    hub: &str,
    id: &str,
    objects: &[ObjectMeta],
    trusted: &TrustedSigners,
) -> Result<Read, Error> {
    let file_of = |m: &ObjectMeta| m.name.rsplit('/').next().map(str::to_owned);
    let mut generations: Vec<u64> = objects
        .iter()
        .filter_map(|m| match file_of(m).as_deref().and_then(file_kind) {
            Some(FileKind::Manifest(g)) => Some(g),
            _ => None,
        })
        .collect();
    generations.sort_unstable_by(|a, b| b.cmp(a));
    let has_v1 = objects
        .iter()
        .any(|m| file_of(m).as_deref() == Some(MANIFEST));
    if generations.is_empty() && !has_v1 {
        return Ok(Read::NoManifest);
    }
    let mut candidates: Vec<Manifest> = Vec::new();
    let mut first_problem: Option<Unreadable> = None;
    for g in generations {
        match read_generation(store, hub, id, g, objects, trusted).await? {
            Ok(m) => candidates.push(m),
            Err(u) => {
                first_problem.get_or_insert(u);
            }
        }
    }
    let rank = |m: &Manifest| match (&m.trust, missing_objects(m, objects).is_none()) {
        (Trust::Signed(_), true) => 0,
        (Trust::UntrustedSigner(_), true) => 1,
        _ => 3,
    };
    if let Some(best) = candidates
        .iter()
        .filter(|m| rank(m) < 2)
        .min_by_key(|m| rank(m))
    {
        return Ok(Read::Snapshot(Box::new(best.clone())));
    }
    if has_v1 {
        let name = object_name(hub, id, MANIFEST);
        let bytes = store.get_bytes(&name).await?;
        match Manifest::parse(&bytes, &name).and_then(|m| own_folder(m, hub, id, &name)) {
            Ok(mut m) if m.format == super::manifest::FORMAT_V1 => {
                m.trust = Trust::Unsigned;
                return Ok(Read::Snapshot(Box::new(m)));
            }
            Ok(_) => {
                first_problem.get_or_insert(unreadable(
                    hub,
                    id,
                    &name,
                    None,
                    "manifest.json is format 1's name, but it declares another format".into(),
                ));
            }
            Err(e) => {
                first_problem.get_or_insert(unreadable_from(hub, id, &name, e)?);
            }
        }
    }
    if let Some(m) = candidates.into_iter().next() {
        return Ok(Read::Snapshot(Box::new(m)));
    }
    Ok(first_problem.map_or(Read::NoManifest, Read::Unreadable))
}

/// Read and judge generation `g` of `hub/id`: `Err` holds why it cannot be used at all.
async fn read_generation(
    store: &dyn Store,
    hub: &str,
    id: &str,
    g: u64,
    objects: &[ObjectMeta],
    trusted: &TrustedSigners,
) -> Result<Result<Manifest, Unreadable>, Error> {
    let file = manifest_file(g);
    let name = object_name(hub, id, &file);
    let bytes = store.get_bytes(&name).await?;
    let parsed = Manifest::parse(&bytes, &name).and_then(|m| own_folder(m, hub, id, &name));
    let mut m = match parsed {
        Ok(m) if m.format == super::manifest::FORMAT && m.generation == Some(g) => m,
        Ok(_) => {
            return Ok(Err(unreadable(
                hub,
                id,
                &name,
                None,
                format!("it is not a format 2 manifest of generation {g}"),
            )));
        }
        Err(e) => return Ok(Err(unreadable_from(hub, id, &name, e)?)),
    };
    let signature_name = object_name(hub, id, &signature_file(g));
    let signature = if objects.iter().any(|o| o.name == signature_name) {
        Some(store.get_bytes(&signature_name).await?)
    } else {
        None
    };
    m.trust = super::signature::judge(&m, &file, &bytes, signature.as_deref(), trusted);
    Ok(Ok(m))
}

fn own_folder(m: Manifest, hub: &str, id: &str, name: &str) -> Result<Manifest, Error> {
    if m.hub == hub && m.id == id {
        return Ok(m);
    }
    Err(Error::BadManifest {
        name: name.to_owned(),
        detail: format!("it names snapshot {}/{}, not its own folder", m.hub, m.id),
    })
}

fn unreadable(hub: &str, id: &str, name: &str, newer: Option<u64>, detail: String) -> Unreadable {
    Unreadable {
        hub: hub.to_owned(),
        id: id.to_owned(),
        name: name.to_owned(),
        newer_format: newer,
        detail,
    }
}

fn unreadable_from(hub: &str, id: &str, name: &str, e: Error) -> Result<Unreadable, Error> {
    match e {
        Error::NewerFormat { found, .. } => {
            Ok(unreadable(hub, id, name, Some(found), String::new()))
        }
        Error::BadManifest { detail, .. } => Ok(unreadable(hub, id, name, None, detail)),
        other => Err(other),
    }
}

/// What of `m`'s objects is not among `present` (missing, or of another size), if anything.
pub fn missing_objects(m: &Manifest, present: &[ObjectMeta]) -> Option<String> {
    let mut wrong = Vec::new();
    for o in &m.objects {
        let name = object_name(&m.hub, &m.id, &o.name);
        match present.iter().find(|p| p.name == name) {
            None => wrong.push(format!("{} is missing", o.name)),
            Some(p) if p.size != o.bytes => wrong.push(format!(
                "{} is {} bytes, the manifest says {}",
                o.name, p.size, o.bytes
            )),
            Some(_) => {}
        }
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
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
/// `hub` (every name it goes by), or of the only hub in the store, that a reader may use: signed
/// by a trusted signer, or (with `allow_unsigned`) a format 1 snapshot. Newer snapshots that are
/// not accepted (forged, untrusted, unreadable) are skipped with a warning, so a planted file
/// can neither block nor hijack `restore latest`; with `allow_unsigned` (the format 1 world,
/// where a damaged newest manifest cannot be told from a planted one) an unreadable newer
/// snapshot still refuses `latest` rather than quietly meaning an older one. An id or `hub/id`
/// is found whatever its trust (callers that read data check [`Manifest::trust`]). A hub with no
/// snapshot is named, with the hubs the store holds.
pub fn resolve<'a>(
    listing: &'a Listing,
    spec: &str,
    hub: Option<&HubNames>,
    store: &str,
    allow_unsigned: bool,
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
        let latest = listing
            .manifests
            .iter()
            .rfind(|m| in_hub(&m.hub) && m.trust.accepted(allow_unsigned));
        for skipped in listing.manifests.iter().filter(|m| {
            in_hub(&m.hub)
                && !m.trust.accepted(allow_unsigned)
                && latest.is_none_or(|l| m.id > l.id)
        }) {
            tracing::warn!(
                "`latest` skips {}/{}: {}",
                skipped.hub,
                skipped.id,
                skipped.trust.describe()
            );
        }
        let newer_unreadable = listing
            .unreadable
            .iter()
            .filter(|u| in_hub(&u.hub))
            .filter(|u| latest.is_none_or(|m| u.id > m.id))
            .max_by(|a, b| a.id.cmp(&b.id));
        if let Some(u) = newer_unreadable {
            if allow_unsigned {
                return Err(Error::LatestUnreadable {
                    hub: u.hub.clone(),
                    id: u.id.clone(),
                    problem: u.error().to_string(),
                    older: latest.map(|m| m.id.clone()),
                });
            }
            tracing::warn!("`latest` skips {}/{}: {}", u.hub, u.id, u.error());
        }
        return match latest {
            Some(m) => Ok(m),
            None => match listing.manifests.iter().rfind(|m| in_hub(&m.hub)) {
                Some(newest) => Err(Error::NoTrustedSnapshot {
                    hub: newest.hub.clone(),
                    newest: newest.id.clone(),
                    trust: newest.trust.describe(),
                }),
                None => Err(not_found()),
            },
        };
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
    use crate::keys::SigningKey;
    use crate::snapshot::signature::SignatureObject;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;
    use std::sync::OnceLock;
    use time::macros::datetime;

    fn key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate().unwrap())
    }

    fn trusted() -> TrustedSigners {
        TrustedSigners::new([key().signer()])
    }

    /// A format 2 manifest of generation 1, as the catalog hands out a trusted one.
    fn manifest(hub: &str, id: &str, created: &str) -> Manifest {
        Manifest {
            trust: Trust::Signed(key().signer()),
            ..crate::snapshot::manifest::sample_v2(hub, id, created, &key().signer())
        }
    }

    fn v1(hub: &str, id: &str, created: &str) -> Manifest {
        Manifest {
            format: 1,
            generation: None,
            signer: None,
            trust: Trust::Unsigned,
            ..manifest(hub, id, created)
        }
    }

    async fn put(store: &MemoryStore, name: String, data: Vec<u8>) {
        store.put(&name, Bytes::from(data)).await.unwrap();
    }

    /// Commit `m` as a writer does: signature (by `by`), then manifest.
    async fn commit(store: &MemoryStore, m: &Manifest, by: &SigningKey) {
        let g = m.generation.unwrap();
        let bytes = m.to_bytes();
        let sig = SignatureObject::sign(&bytes, &manifest_file(g), by);
        put(
            store,
            object_name(&m.hub, &m.id, &signature_file(g)),
            sig.to_bytes(),
        )
        .await;
        put(store, object_name(&m.hub, &m.id, &manifest_file(g)), bytes).await;
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
    }

    #[test]
    fn own_object_names_of_both_formats_and_nothing_else() {
        for (name, kind) in [
            ("manifest.json", Some(FileKind::ManifestV1)),
            ("devices.jsonl.zst.age", Some(FileKind::DataV1)),
            ("configurations.jsonl.zst.age", Some(FileKind::DataV1)),
            ("manifest.g1.json", Some(FileKind::Manifest(1))),
            ("signature.g12.json", Some(FileKind::Signature(12))),
            ("devices.g1.jsonl.zst.age", Some(FileKind::Data(1))),
            (
                "enrollment-groups.g3.jsonl.zst.age",
                Some(FileKind::Data(3)),
            ),
            ("manifest.g0.json", None),
            ("manifest.g01.json", None),
            ("manifest.g.json", None),
            ("Devices.g1.jsonl.zst.age", None),
            ("../x.g1.jsonl.zst.age", None),
            ("devices.g1.jsonl.zst", None),
            ("return.pdf", None),
        ] {
            assert_eq!(file_kind(name), kind, "{name}");
        }
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
        let store = MemoryStore::new();
        let b = manifest("hub-a", "20261126T030000Z-00000002", "2026-11-26T03:00:00Z");
        let a = manifest("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        for m in [&b, &a] {
            put(
                &store,
                object_name(&m.hub, &m.id, "devices.g1.jsonl.zst.age"),
                vec![1],
            )
            .await;
            commit(&store, m, key()).await;
        }
        // Killed between the signature and the manifest: no snapshot.
        let killed = "20261126T040000Z-00000003";
        put(
            &store,
            object_name("hub-a", killed, "devices.g1.jsonl.zst.age"),
            vec![1],
        )
        .await;
        put(
            &store,
            object_name("hub-a", killed, &signature_file(1)),
            vec![1],
        )
        .await;
        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(
            listed.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            [a.id.as_str(), b.id.as_str()]
        );
        assert!(
            listed
                .iter()
                .all(|m| m.trust == Trust::Signed(key().signer()))
        );
        assert_eq!(
            resolve(&listed, "latest", None, "s", false).unwrap().id,
            b.id
        );
    }

    #[tokio::test]
    async fn latest_is_the_newest_trusted_snapshot_whatever_is_planted_after_it() {
        let store = MemoryStore::new();
        let real = manifest("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        commit(&store, &real, key()).await;
        // Newer: a forged one (manifest without signature), one signed by a stranger, a
        // damaged manifest, and a format 1 one.
        let forged = manifest("hub-a", "20261126T030000Z-00000002", "2026-11-26T03:00:00Z");
        put(
            &store,
            object_name("hub-a", &forged.id, &manifest_file(1)),
            forged.to_bytes(),
        )
        .await;
        let stranger = SigningKey::generate().unwrap();
        let mut theirs = manifest("hub-a", "20261126T040000Z-00000003", "2026-11-26T04:00:00Z");
        theirs.signer = Some(stranger.signer().to_string());
        commit(&store, &theirs, &stranger).await;
        put(
            &store,
            object_name("hub-a", "20261126T050000Z-00000004", &manifest_file(1)),
            b"{broken".to_vec(),
        )
        .await;
        let old = v1("hub-a", "20261126T060000Z-00000005", "2026-11-26T06:00:00Z");
        put(
            &store,
            object_name("hub-a", &old.id, MANIFEST),
            old.to_bytes(),
        )
        .await;

        let listed = list(&store, &trusted()).await.unwrap();
        let trust = |id: &str| listed.iter().find(|m| m.id == id).unwrap().trust.clone();
        assert!(matches!(trust(&forged.id), Trust::BadSignature(_)));
        assert_eq!(trust(&theirs.id), Trust::UntrustedSigner(stranger.signer()));
        assert_eq!(trust(&old.id), Trust::Unsigned);
        assert_eq!(
            resolve(&listed, "latest", None, "s", false).unwrap().id,
            real.id
        );
        // With --allow-unsigned the format 1 one counts; a damaged newest manifest then blocks
        // `latest` only when it is newer than the one chosen.
        assert_eq!(
            resolve(&listed, "latest", None, "s", true).unwrap().id,
            old.id
        );
        // Named by id, every one is found: readers check its trust.
        assert_eq!(
            resolve(&listed, &forged.id, None, "s", false).unwrap().id,
            forged.id
        );
        // Nothing trusted at all: the error says what the newest is.
        let err = resolve(&listed, "latest", None, "s", false).map(|_| ());
        assert!(err.is_ok());
        let none = list(&store, &TrustedSigners::default()).await.unwrap();
        let err = resolve(&none, "latest", None, "s", false).unwrap_err();
        assert_eq!(err.code(), "snapshot_no_trusted");
        assert!(err.to_string().contains(&old.id), "{err}");
    }

    #[tokio::test]
    async fn a_copied_signature_or_an_edited_manifest_does_not_verify() {
        let store = MemoryStore::new();
        let a = manifest("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        commit(&store, &a, key()).await;
        // b's manifest with a's signature object copied beside it.
        let b = manifest("hub-a", "20261126T030000Z-00000002", "2026-11-26T03:00:00Z");
        let sig = store
            .get_bytes(&object_name(&a.hub, &a.id, &signature_file(1)))
            .await
            .unwrap();
        put(
            &store,
            object_name(&b.hub, &b.id, &signature_file(1)),
            sig.to_vec(),
        )
        .await;
        put(
            &store,
            object_name(&b.hub, &b.id, &manifest_file(1)),
            b.to_bytes(),
        )
        .await;
        // a's manifest edited after signing (recipients replaced).
        let mut edited = a.clone();
        edited.recipients = vec!["age1attacker".into()];
        store.insert(
            &object_name(&a.hub, &a.id, &manifest_file(1)),
            &edited.to_bytes(),
            time::OffsetDateTime::now_utc(),
        );
        let listed = list(&store, &trusted()).await.unwrap();
        for m in listed.iter() {
            assert!(
                matches!(m.trust, Trust::BadSignature(_)),
                "{}: {:?}",
                m.id,
                m.trust
            );
        }
    }

    #[tokio::test]
    async fn the_highest_generation_whose_signature_verifies_and_objects_are_present_is_read() {
        let store = MemoryStore::new();
        let id = "20261126T020000Z-00000001";
        let mut g1 = manifest("hub-a", id, "2026-11-26T02:00:00Z");
        g1.objects = vec![crate::snapshot::ObjectEntry {
            name: data_file("devices", 1),
            kind: "devices".into(),
            bytes: 1,
            sha256: "00".into(),
            records: 0,
        }];
        put(
            &store,
            object_name("hub-a", id, &data_file("devices", 1)),
            vec![1],
        )
        .await;
        commit(&store, &g1, key()).await;
        // Generation 2 committed, but its object is missing: generation 1 is read.
        let mut g2 = g1.clone();
        g2.generation = Some(2);
        g2.objects[0].name = data_file("devices", 2);
        commit(&store, &g2, key()).await;
        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(listed[0].generation, Some(1));
        // Its object arrives: generation 2 is read.
        put(
            &store,
            object_name("hub-a", id, &data_file("devices", 2)),
            vec![2],
        )
        .await;
        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(listed[0].generation, Some(2));
        // A generation 3 by a stranger is never preferred to a trusted one.
        let stranger = SigningKey::generate().unwrap();
        let mut g3 = g2.clone();
        g3.generation = Some(3);
        g3.objects[0].name = data_file("devices", 3);
        g3.signer = Some(stranger.signer().to_string());
        put(
            &store,
            object_name("hub-a", id, &data_file("devices", 3)),
            vec![3],
        )
        .await;
        commit(&store, &g3, &stranger).await;
        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(listed[0].generation, Some(2));
        assert_eq!(listed.len(), 1, "one snapshot, whatever its generations");
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
        let err = resolve(&ms, "latest", None, "s", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hub-a, hub-b") && err.contains("--hub"),
            "{err}"
        );
        assert_eq!(
            resolve(&ms, "latest", Some(&HubNames::new(["hub-a"])), "s", false)
                .unwrap()
                .id,
            "1"
        );
        assert_eq!(resolve(&ms, "hub-b/2", None, "s", false).unwrap().id, "2");
        assert!(matches!(
            resolve(&ms, "3", None, "s", false),
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
            let m = resolve(&ms, "latest", Some(&names), "s", false).unwrap();
            assert_eq!(m.id, "20261126T030000Z-00000002", "{names:?}");
            assert!(resolve(&ms, "20261126T020000Z-00000001", Some(&names), "s", false).is_ok());
        }
        assert!(!HubNames::new(["hub"]).matches("hub-a.azure-devices.net"));
        let err = resolve(&ms, "latest", Some(&HubNames::new(["hub-c"])), "s", false).unwrap_err();
        assert_eq!(err.code(), "snapshot_no_snapshot_of_hub");
        let shown = err.to_string();
        assert!(
            shown.contains("hub-c")
                && shown.contains("hub-a.azure-devices.net, hub-b.azure-devices.net"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn with_allow_unsigned_an_unreadable_newer_manifest_blocks_latest() {
        let store = MemoryStore::new();
        let old = v1("hub-a", "20261126T020000Z-00000001", "2026-11-26T02:00:00Z");
        put(
            &store,
            object_name(&old.hub, &old.id, MANIFEST),
            old.to_bytes(),
        )
        .await;
        let newest = "20261126T030000Z-00000002";
        put(
            &store,
            object_name("hub-a", newest, MANIFEST),
            b"{not json".to_vec(),
        )
        .await;

        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(listed.len(), 1, "the readable one is listed");
        assert_eq!(listed.unreadable[0].id, newest);
        let err = resolve(&listed, "latest", None, "s", true).unwrap_err();
        assert_eq!(err.code(), "snapshot_latest_unreadable");
        let shown = err.to_string();
        assert!(shown.contains(newest) && shown.contains(&old.id), "{shown}");
        assert_eq!(
            resolve(&listed, &old.id, None, "s", true).unwrap().id,
            old.id
        );
        assert_eq!(
            resolve(&listed, newest, None, "s", true)
                .unwrap_err()
                .code(),
            "snapshot_bad_manifest"
        );

        // An older unreadable one does not get in the way of `latest`.
        let later = v1("hub-a", "20261126T040000Z-00000003", "2026-11-26T04:00:00Z");
        put(
            &store,
            object_name(&later.hub, &later.id, MANIFEST),
            later.to_bytes(),
        )
        .await;
        let listed = list(&store, &trusted()).await.unwrap();
        assert_eq!(
            resolve(&listed, "latest", None, "s", true).unwrap().id,
            later.id
        );
    }
}
