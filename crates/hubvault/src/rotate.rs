//! `key rotate`: re-seal snapshots to a new recipient set, as a new generation of each
//! (docs/vault-format.md#generations), without plaintext on disk.
//!
//! Per snapshot: judge its signature (never re-seal what no trusted signer vouches for: that
//! would turn a forgery into a signed snapshot) → open each object with the identities, checking
//! it as a reader does (header, order, count) → seal its records again to the new recipients as
//! generation `g` (above every generation the folder holds, leftovers included) → check the new
//! objects are whole → signature `g` → manifest `g` (the commit point) → remove the older
//! generations, manifest first. Killed at any point, every snapshot is readable by the old or
//! the new set: before the new manifest readers use the old generation; after it, the new one.
//! A re-run finishes the job: a snapshot already sealed to the new set only has its older
//! generations removed.
//!
//! Must not: write plaintext anywhere but memory; delete anything of a snapshot before its new
//! generation is committed; touch a snapshot it could not open or does not trust.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::keys::SigningKey;
use crate::pipeline::bridge;
use crate::pipeline::{Identities, SealOptions, SealWriter};
use crate::snapshot::catalog::{self, FileKind, HubNames};
use crate::snapshot::manifest::FORMAT;
use crate::snapshot::reader::ObjectReader;
use crate::snapshot::signature::SignatureObject;
use crate::snapshot::trust::Trust;
use crate::snapshot::{self, Header, Manifest, ObjectEntry};
use crate::store::{self, Store};

/// A test-only pause: run at one named point of each snapshot's rotation.
pub type Pause = Arc<dyn Fn() + Send + Sync>;

/// The named points a test can stop a rotation at (`HUBVAULT_FAULT_PAUSE` in the binary).
pub const PAUSE_POINTS: [&str; 4] = [
    "after-objects",
    "after-signature",
    "after-manifest",
    "after-cleanup",
];

pub struct RotateOptions {
    /// The new recipient set (`age1…`), at least one.
    pub to: Vec<age::x25519::Recipient>,
    /// Only snapshots of this hub.
    pub hub: Option<HubNames>,
    pub dry_run: bool,
    /// Also re-seal unsigned (format 1) snapshots, which then carry this host's signature.
    pub allow_unsigned: bool,
    pub signing_key: Arc<SigningKey>,
    pub identities: Identities,
    /// Test-only: `(point, pause)` from [`PAUSE_POINTS`].
    pub pause: Option<(String, Pause)>,
}

/// One snapshot rotation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub hub: String,
    pub id: String,
    /// The generation read (0: format 1).
    pub from_generation: u64,
    pub to_generation: u64,
    /// Objects of older generations removed once this generation was committed.
    #[serde(skip)]
    removed: usize,
}

/// A snapshot left as it is, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Left {
    pub hub: String,
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RotateReport {
    pub dry_run: bool,
    pub recipients: Vec<String>,
    /// Re-sealed now (with `--dry-run`: would be).
    pub resealed: Vec<Rotated>,
    /// Sealed to the new set already (an earlier run); only older generations were removed.
    pub already: Vec<Left>,
    /// Not trusted (a bad or untrusted signature, or unsigned without `--allow-unsigned`).
    pub untrusted: Vec<Left>,
    /// The identities could not open them (or they are damaged): left sealed as they are.
    pub not_opened: Vec<Left>,
    /// Objects of older generations removed.
    pub removed_objects: usize,
}

impl RotateReport {
    /// Whether every snapshot in scope is now sealed to the new set.
    pub fn complete(&self) -> bool {
        self.untrusted.is_empty() && self.not_opened.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error("no recipients to rotate to; pass --to age1… (one or more)")]
    NoRecipients,
}

impl crate::diagnostic::Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Store(e) => e.code(),
            Error::Snapshot(e) => e.code(),
            Error::NoRecipients => "rotate_no_recipients",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Store(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
            Error::NoRecipients => None,
        }
    }
}

/// Re-seal every snapshot in scope (`manifests`, as the catalog judged them) to `options.to`.
/// `progress` is told each snapshot as it is done (`done`, `of`, the snapshot).
pub async fn run(
    store: &Arc<dyn Store>,
    manifests: Vec<Manifest>,
    options: &RotateOptions,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<RotateReport, Error> {
    if options.to.is_empty() {
        return Err(Error::NoRecipients);
    }
    let wanted: BTreeSet<String> = options.to.iter().map(ToString::to_string).collect();
    let mut report = RotateReport {
        dry_run: options.dry_run,
        recipients: wanted.iter().cloned().collect(),
        ..RotateReport::default()
    };
    let scope: Vec<Manifest> = manifests
        .into_iter()
        .filter(|m| options.hub.as_ref().is_none_or(|h| h.matches(&m.hub)))
        .collect();
    let of = scope.len();
    for (i, m) in scope.into_iter().enumerate() {
        let left = |reason: String| Left {
            hub: m.hub.clone(),
            id: m.id.clone(),
            reason,
        };
        match rotate_one(store, &m, &wanted, options).await? {
            One::Resealed(r) => {
                report.removed_objects = report.removed_objects.saturating_add(r.removed);
                report.resealed.push(r);
            }
            One::Already(removed) => {
                report.removed_objects = report.removed_objects.saturating_add(removed);
                report
                    .already
                    .push(left("sealed to the new set already".to_owned()));
            }
            One::Untrusted(reason) => report.untrusted.push(left(reason)),
            One::NotOpened(reason) => report.not_opened.push(left(reason)),
        }
        progress(i.saturating_add(1), of, &format!("{}/{}", m.hub, m.id));
    }
    Ok(report)
}

/// What became of one snapshot.
enum One {
    Resealed(Rotated),
    /// Sealed to the set already; this many objects of older generations removed.
    Already(usize),
    Untrusted(String),
    NotOpened(String),
}

/// Rotate one snapshot (see the module docs for the order of its steps).
async fn rotate_one(
    store: &Arc<dyn Store>,
    m: &Manifest,
    wanted: &BTreeSet<String>,
    options: &RotateOptions,
) -> Result<One, Error> {
    if !m.trust.accepted(options.allow_unsigned) {
        return Ok(One::Untrusted(match m.trust {
            Trust::Unsigned => "unsigned (format 1); re-sealing would sign it as this host: pass \
                                --allow-unsigned if you know it is yours"
                .to_owned(),
            ref t => t.describe(),
        }));
    }
    let sealed_to: BTreeSet<String> = m.recipients.iter().cloned().collect();
    let folder = folder_objects(store.as_ref(), m).await?;
    let current = m.generation.unwrap_or(0);
    if sealed_to == *wanted {
        if options.dry_run {
            return Ok(One::Already(0));
        }
        return Ok(One::Already(
            remove_older(store.as_ref(), m, &folder, current).await?,
        ));
    }
    let next = folder
        .iter()
        .filter_map(|f| generation_of(f))
        .max()
        .unwrap_or(0)
        .max(current)
        .saturating_add(1);
    let mut rotated = Rotated {
        hub: m.hub.clone(),
        id: m.id.clone(),
        from_generation: current,
        to_generation: next,
        removed: 0,
    };
    if options.dry_run {
        return Ok(One::Resealed(rotated));
    }
    match reseal(store, m, next, options).await {
        Ok(()) => {}
        Err(Resealing::NotOpened(reason)) => return Ok(One::NotOpened(reason)),
        Err(Resealing::Failed(e)) => return Err(e),
    }
    pause(options, "after-manifest");
    let folder = folder_objects(store.as_ref(), m).await?;
    rotated.removed = remove_older(store.as_ref(), m, &folder, next).await?;
    pause(options, "after-cleanup");
    tracing::info!(snapshot = %format!("{}/{}", m.hub, m.id), generation = next, "re-sealed to the new recipients");
    Ok(One::Resealed(rotated))
}

fn pause(options: &RotateOptions, point: &str) {
    if let Some((at, f)) = &options.pause
        && at == point
    {
        f();
    }
}

/// The file names in the snapshot's folder.
async fn folder_objects(store: &dyn Store, m: &Manifest) -> Result<Vec<String>, Error> {
    let prefix = catalog::object_name(&m.hub, &m.id, "");
    Ok(store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| o.name.strip_prefix(&prefix).map(str::to_owned))
        .filter(|f| !f.contains('/'))
        .collect())
}

/// The generation a file of ours belongs to (0: format 1).
fn generation_of(file: &str) -> Option<u64> {
    match catalog::file_kind(file)? {
        FileKind::ManifestV1 | FileKind::DataV1 => Some(0),
        FileKind::Manifest(g) | FileKind::Signature(g) | FileKind::Data(g) => Some(g),
    }
}

/// Remove every object of ours of a generation below `keep`: manifests first (so no reader ever
/// meets a committed generation with its data gone), then signatures and data.
async fn remove_older(
    store: &dyn Store,
    m: &Manifest,
    folder: &[String],
    keep: u64,
) -> Result<usize, Error> {
    let older: Vec<&String> = folder
        .iter()
        .filter(|f| generation_of(f).is_some_and(|g| g < keep))
        .collect();
    let is_manifest = |f: &str| {
        matches!(
            catalog::file_kind(f),
            Some(FileKind::Manifest(_) | FileKind::ManifestV1)
        )
    };
    let (manifests, rest): (Vec<&String>, Vec<&String>) =
        older.into_iter().partition(|f| is_manifest(f));
    let mut removed: usize = 0;
    for file in manifests.into_iter().chain(rest) {
        store
            .delete(&catalog::object_name(&m.hub, &m.id, file))
            .await?;
        removed = removed.saturating_add(1);
    }
    Ok(removed)
}

enum Resealing {
    NotOpened(String),
    Failed(Error),
}

impl<E: Into<Error>> From<E> for Resealing {
    fn from(e: E) -> Self {
        Resealing::Failed(e.into())
    }
}

/// Write generation `g` of `m` sealed to the new set, then its signature and manifest.
async fn reseal(
    store: &Arc<dyn Store>,
    m: &Manifest,
    g: u64,
    options: &RotateOptions,
) -> Result<(), Resealing> {
    let mut next = Manifest {
        format: FORMAT,
        generation: Some(g),
        recipients: options.to.iter().map(ToString::to_string).collect(),
        signer: Some(options.signing_key.signer().to_string()),
        tool: format!("hubvault {}", env!("CARGO_PKG_VERSION")),
        objects: Vec::new(),
        trust: Trust::Unchecked,
        ..m.clone()
    };
    for object in &m.objects {
        match reseal_object(store, m, &next, &object.kind, options).await {
            Ok(entry) => next.objects.push(entry),
            Err(e) => {
                // Nothing of generation g is committed: what was written is an orphan; remove it.
                for written in &next.objects {
                    let _ = store
                        .delete(&catalog::object_name(&m.hub, &m.id, &written.name))
                        .await;
                }
                return Err(e);
            }
        }
    }
    pause(options, "after-objects");
    for o in &next.objects {
        let name = catalog::object_name(&m.hub, &m.id, &o.name);
        match store.head(&name).await? {
            Some(meta) if meta.size == o.bytes => {}
            _ => {
                return Err(Resealing::Failed(Error::Snapshot(
                    snapshot::Error::Damaged {
                        snapshot: m.id.clone(),
                        object: o.name.clone(),
                        detail: "the re-sealed object vanished before its manifest was written"
                            .to_owned(),
                    },
                )));
            }
        }
    }
    let manifest_file = catalog::manifest_file(g);
    let bytes = next.to_bytes();
    let signature = SignatureObject::sign(&bytes, &manifest_file, &options.signing_key);
    store
        .put(
            &catalog::object_name(&m.hub, &m.id, &catalog::signature_file(g)),
            Bytes::from(signature.to_bytes()),
        )
        .await?;
    pause(options, "after-signature");
    store
        .put(
            &catalog::object_name(&m.hub, &m.id, &manifest_file),
            Bytes::from(bytes),
        )
        .await?;
    Ok(())
}

/// Read `kind` of `m` as a reader does and seal its records again into `next`'s object.
async fn reseal_object(
    store: &Arc<dyn Store>,
    m: &Manifest,
    next: &Manifest,
    kind: &str,
    options: &RotateOptions,
) -> Result<ObjectEntry, Resealing> {
    let file = catalog::data_file(kind, next.generation.unwrap_or(1));
    let name = catalog::object_name(&m.hub, &m.id, &file);
    let writer = store.create(&name).await?;
    let (sender, rx) = bridge::channel();
    let upload = tokio::spawn(bridge::upload(rx, writer, None));
    let handle = tokio::runtime::Handle::current();
    let (store2, m2, kind2) = (store.clone(), m.clone(), kind.to_owned());
    let header = Header::for_object(next, kind);
    let identities = options.identities.clone();
    let recipients = options.to.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        let reader = match ObjectReader::open(store2.as_ref(), &handle, &m2, &kind2, &identities) {
            Ok(r) => r,
            Err(e @ (snapshot::Error::WrongKey { .. } | snapshot::Error::Damaged { .. })) => {
                return Err(Resealing::NotOpened(e.to_string()));
            }
            Err(e) => return Err(Resealing::Failed(e.into())),
        };
        let seal_error =
            |e: std::io::Error| Resealing::Failed(Error::Snapshot(snapshot::Error::Output(e)));
        let mut seal = SealWriter::new(sender, &recipients, SealOptions::archive())
            .map_err(|e| seal_error(std::io::Error::other(e.to_string())))?;
        seal.write_all(&header.to_line()).map_err(seal_error)?;
        let mut records: u64 = 0;
        for record in reader {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    seal.abandon();
                    return Err(Resealing::NotOpened(e.to_string()));
                }
            };
            seal.write_all(&record.line).map_err(seal_error)?;
            seal.write_all(b"\n").map_err(seal_error)?;
            records = records.saturating_add(1);
        }
        let (sender, stats) = seal.finish().map_err(seal_error)?;
        sender.finish().map_err(seal_error)?;
        Ok((stats, records))
    })
    .await
    .unwrap_or_else(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => Err(Resealing::Failed(Error::Snapshot(snapshot::Error::Output(
            std::io::Error::other(e),
        )))),
    });
    let uploaded = upload.await.unwrap_or_else(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => Err(store::Error::Io {
            store: store.location(),
            context: format!("writing {name}"),
            source: std::io::Error::other(e),
        }),
    });
    match (sealed, uploaded) {
        (Ok((stats, records)), Ok(Some(_))) => Ok(ObjectEntry {
            name: file,
            kind: kind.to_owned(),
            bytes: stats.stored_bytes,
            sha256: stats.sha256,
            records,
        }),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
        (Ok(_), Ok(None)) => Err(Resealing::Failed(Error::Snapshot(snapshot::Error::Output(
            std::io::Error::other("the upload ended before the object was complete"),
        )))),
    }
}
