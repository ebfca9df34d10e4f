//! Use case: seal a registry export into a new snapshot.
//!
//! Flow per object (devices, then configurations): read the export line by line → check and
//! sort by `(id, moduleId)` ([`snapshot::sort`]) → [`SealWriter`] (zstd, then age to the
//! recipients) → [`bridge`] → store, create-only, as `<kind>.g1.jsonl.zst.age`. Then the
//! signature of the manifest's exact bytes (`signature.g1.json`), then the manifest
//! (`manifest.g1.json`): it is the commit point, so a failure or a kill before it leaves no
//! visible snapshot, and no committed snapshot is ever unsigned. On an error the objects already
//! written are deleted (best effort; what is left is an orphan `forget` removes).
//!
//! Must not: know clap or where keys come from. It needs public recipients and the signing key
//! only: a stolen backup host cannot read history.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;

use crate::diagnostic::{Diagnostic, fix_text};
use crate::keys::SigningKey;
use crate::pipeline::bridge::{self, ChunkSender, StreamReader};
use crate::pipeline::handoff::Handoff;
use crate::pipeline::{SealOptions, SealStats, SealWriter};
use crate::snapshot::catalog;
use crate::snapshot::manifest::{CONFIGURATIONS, DEVICES, ENROLLMENT_GROUPS, ENROLLMENTS, FORMAT};
use crate::snapshot::prefetch::Prefetched;
use crate::snapshot::record::Lines;
use crate::snapshot::signature::SignatureObject;
use crate::snapshot::sort::{SortOptions, Sorted, sort_into, stream_borrowed};
use crate::snapshot::{self, Counts, Header, Manifest, ObjectEntry, Source};
use crate::store::{self, Store};

mod dps;
mod live;
pub use dps::from_dps;
pub use live::{HubBackupOptions, HubBackupReport, LiveBackup, from_hub, run, sweep_dead_runs};

const READ_BUFFER: usize = 1024 * 1024;
/// A backup writes generation 1; key rotation commits higher ones beside it.
const GENERATION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the export at {path} ({})", fix_text(self))]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a folder without devices.txt; {}", fix_text(self))]
    NoDevicesFile { path: PathBuf },
    #[error("no recipients: {}", fix_text(self))]
    NoRecipients,
    #[error(
        "{name} vanished or changed while the backup ran (is a `forget` with --at in the future, or \
         another tool, deleting from this store?); the snapshot was not committed: {}",
        fix_text(self)
    )]
    ObjectVanished { name: String },
    #[error(
        "the export of {hub} holds {exported} {what}, but the hub counted {before} before the export job and {after} after it; records were lost on the way (the export does not explain the difference), so no snapshot was committed: {}",
        fix_text(self)
    )]
    CountMismatch {
        hub: String,
        what: &'static str,
        exported: u64,
        before: u64,
        after: u64,
    },
    #[error(transparent)]
    Interrupted(#[from] crate::shutdown::Interrupted),
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Seal(#[from] crate::pipeline::Error),
    #[error(transparent)]
    Hub(#[from] crate::hub::Error),
    #[error(transparent)]
    Staging(#[from] crate::staging::Error),
    #[error(
        "export job {job_id} on {hub} ended {status}: {reason}; no snapshot was made, earlier snapshots are intact — {}",
        fix_text(self)
    )]
    JobFailed {
        hub: String,
        job_id: String,
        status: String,
        reason: String,
    },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Input { .. } => "export_read",
            Error::NoDevicesFile { .. } => "export_no_devices_file",
            Error::NoRecipients => "backup_no_recipients",
            Error::ObjectVanished { .. } => "backup_object_vanished",
            Error::CountMismatch { .. } => "backup_count_mismatch",
            Error::Snapshot(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Seal(e) => e.code(),
            Error::Hub(e) => e.code(),
            Error::Staging(e) => e.code(),
            Error::Interrupted(e) => e.code(),
            Error::JobFailed { .. } => "export_job_failed",
        }
    }

    fn fix(&self) -> Option<String> {
        let fix = match self {
            Error::Input { .. } => "check the path",
            Error::NoDevicesFile { .. } => {
                "point --from-export at devices.txt or at the folder that holds it"
            }
            Error::NoRecipients => {
                "pass --recipient age1… (or an --identity file, whose recipient is used)"
            }
            Error::ObjectVanished { .. } => "run the backup again",
            Error::CountMismatch { .. } => {
                "run the backup again, and if it repeats, compare `hubvault diff` with the hub"
            }
            Error::JobFailed { .. } => {
                "check the staging storage (SAS lifetime, reachability from the hub) and run the \
                 backup again"
            }
            Error::Snapshot(e) => return e.fix(),
            Error::Store(e) => return e.fix(),
            Error::Seal(e) => return e.fix(),
            Error::Hub(e) => return e.fix(),
            Error::Staging(e) => return e.fix(),
            Error::Interrupted(e) => return e.fix(),
        };
        Some(fix.to_owned())
    }
}

/// Test-only pauses (see `HUBVAULT_FAULT_PAUSE` in the binary): each runs at one point of a
/// backup so a test can kill the process there deterministically.
#[derive(Clone, Default)]
pub struct Faults {
    pub upload: Option<Arc<dyn Fn() + Send + Sync>>,
    /// After the data objects, before the signature.
    pub before_manifest: Option<Arc<dyn Fn() + Send + Sync>>,
    /// After the signature, before the manifest (the commit point).
    pub after_signature: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// What the hub itself counted around its export job: a snapshot must hold a number of devices
/// and modules between the two counts (identities created or deleted while the job ran explain a
/// difference; nothing else does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HubCounts {
    pub devices_before: u64,
    pub devices_after: u64,
    pub modules_before: u64,
    pub modules_after: u64,
}

impl HubCounts {
    /// Why `counts` cannot be the export of a hub that counted this (pure), or `None`.
    pub fn unexplained(&self, hub: &str, devices: u64, modules: u64) -> Option<Error> {
        let check = |what, exported: u64, before: u64, after: u64| {
            (exported < before.min(after) || exported > before.max(after)).then(|| {
                Error::CountMismatch {
                    hub: hub.to_owned(),
                    what,
                    exported,
                    before,
                    after,
                }
            })
        };
        check("devices", devices, self.devices_before, self.devices_after)
            .or_else(|| check("modules", modules, self.modules_before, self.modules_after))
    }
}

/// Settings of one backup.
#[derive(Clone)]
pub struct BackupOptions {
    pub sort: SortOptions,
    pub include_configurations: bool,
    /// The snapshot's time (id and `created`).
    pub now: OffsetDateTime,
    /// The random part of the id.
    pub random: u32,
    pub faults: Faults,
    /// The hub's own counts around a live export, checked before the snapshot is committed.
    pub expect: Option<HubCounts>,
    /// The writer's key: the manifest is signed with it (vault format 2).
    pub signing_key: Arc<SigningKey>,
}

impl BackupOptions {
    pub fn new(now: OffsetDateTime, signing_key: Arc<SigningKey>) -> Self {
        BackupOptions {
            sort: SortOptions::default(),
            include_configurations: true,
            now,
            random: rand::random(),
            faults: Faults::default(),
            expect: None,
            signing_key,
        }
    }
}

/// What a backup made. Field names are relied on by scripts (`backup --json`).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub snapshot: String,
    pub hub: String,
    pub created: String,
    pub devices: u64,
    pub modules: u64,
    pub edge_devices: u64,
    pub configurations: u64,
    pub skipped_lines: u64,
    /// A DPS snapshot's individual enrollments and groups (absent from hub snapshots).
    #[serde(skip_serializing_if = "crate::snapshot::manifest::is_zero")]
    pub enrollments: u64,
    #[serde(skip_serializing_if = "crate::snapshot::manifest::is_zero")]
    pub enrollment_groups: u64,
    /// Bytes as stored (encrypted), all objects.
    pub bytes: u64,
    /// Sorted runs spilled to temporary files (0 for input already in order).
    pub runs_spilled: usize,
    /// The export job a live backup ran (absent for an ingested file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// What the hub counted around its export job, which the snapshot was checked against
    /// (absent for an ingested file, or when the hub could not be queried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_counts: Option<HubCounts>,
}

/// Ingest an export made elsewhere: `path` is `devices.txt` or a folder holding it (and
/// optionally `configurations.txt`).
pub async fn from_export(
    store: Arc<dyn Store>,
    path: &Path,
    hub: &str,
    recipients: &[age::x25519::Recipient],
    options: BackupOptions,
) -> Result<BackupReport, Error> {
    // Cheap checks first, before touching the input.
    catalog::check_hub(hub)?;
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let inputs = find_inputs(path, options.include_configurations)?
        .into_iter()
        .map(|(kind, file)| (kind, Input::File(file)))
        .collect::<Vec<_>>();
    let source = Source {
        kind: "file".into(),
        job_id: None,
        path: Some(path.display().to_string()),
    };
    write_snapshot(store, &inputs, hub, source, recipients, &options).await
}

/// Where one object's export lines come from: a local file, or an object in a store (a
/// staging blob, streamed: no local plaintext copy).
#[derive(Clone)]
pub enum Input {
    File(PathBuf),
    /// Lines held in memory only (a DPS snapshot's records, keys included), wiped when the last
    /// copy is dropped.
    Memory {
        name: &'static str,
        lines: Arc<zeroize::Zeroizing<Vec<u8>>>,
    },
    Stored {
        store: Arc<dyn Store>,
        name: String,
        /// The runtime that polls the store's stream (the reader runs on a blocking thread).
        handle: tokio::runtime::Handle,
    },
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::File(p) => write!(f, "File({})", p.display()),
            Input::Stored { store, name, .. } => write!(f, "Stored({}, {name})", store.location()),
            Input::Memory { name, lines } => write!(f, "Memory({name}, {} bytes)", lines.len()),
        }
    }
}

impl Input {
    /// A short name for messages (`devices.txt`).
    fn display(&self) -> String {
        match self {
            Input::File(p) => p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            Input::Stored { name, .. } => name.rsplit('/').next().unwrap_or(name).to_owned(),
            Input::Memory { name, .. } => (*name).to_owned(),
        }
    }

    /// Open for reading, from a blocking thread (each pass of a seal opens it again).
    fn open(&self) -> Result<Box<dyn Read + Send>, Error> {
        match self {
            Input::File(p) => File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read + Send>)
                .map_err(|source| Error::Input {
                    path: p.clone(),
                    source,
                }),
            Input::Stored {
                store,
                name,
                handle,
            } => {
                let stream = handle.block_on(store.get(name))?;
                Ok(Box::new(StreamReader::new(handle.clone(), stream)))
            }
            Input::Memory { lines, .. } => Ok(Box::new(MemoryReader {
                lines: lines.clone(),
                at: 0,
            })),
        }
    }
}

/// Reads an [`Input::Memory`] without copying its lines.
struct MemoryReader {
    lines: Arc<zeroize::Zeroizing<Vec<u8>>>,
    at: usize,
}

impl Read for MemoryReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.lines.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.at = self.at.saturating_add(n);
        Ok(n)
    }
}

/// Seal `inputs` (devices first, then configurations if present) into a new snapshot of
/// `hub`, manifest last. On an error the data objects already written are deleted.
pub async fn write_snapshot(
    store: Arc<dyn Store>,
    inputs: &[(&'static str, Input)],
    hub: &str,
    source: Source,
    recipients: &[age::x25519::Recipient],
    options: &BackupOptions,
) -> Result<BackupReport, Error> {
    catalog::check_hub(hub)?;
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let id = catalog::new_id(options.now, options.random);
    let created = catalog::created(options.now);
    let snap = SnapshotTarget {
        store,
        hub: hub.to_owned(),
        id,
        created,
        recipients: recipients.to_vec(),
    };
    tracing::info!(snapshot = %snap.id, hub, "backup started");
    let mut written = Vec::new();
    let result = snap.write_all(inputs, source, options, &mut written).await;
    if result.is_err() {
        for name in &written {
            if let Err(e) = snap.store.delete(name).await {
                tracing::warn!(
                    "could not remove {name} after a failed backup: {e}; `forget` removes it later"
                );
            }
        }
    }
    result
}

fn find_inputs(
    path: &Path,
    include_configurations: bool,
) -> Result<Vec<(&'static str, PathBuf)>, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Input {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![(DEVICES, path.to_owned())]);
    }
    let devices = path.join("devices.txt");
    if !devices.is_file() {
        return Err(Error::NoDevicesFile {
            path: path.to_owned(),
        });
    }
    let mut inputs = vec![(DEVICES, devices)];
    let configurations = path.join("configurations.txt");
    if include_configurations && configurations.is_file() {
        inputs.push((CONFIGURATIONS, configurations));
    }
    Ok(inputs)
}

struct SnapshotTarget {
    store: Arc<dyn Store>,
    hub: String,
    id: String,
    created: String,
    recipients: Vec<age::x25519::Recipient>,
}

/// Counts of one object, taken while reading it.
#[derive(Debug, Default, Clone)]
struct ObjectCounts {
    records: u64,
    devices: u64,
    modules: u64,
    edge_devices: u64,
    skipped: u64,
    runs_spilled: usize,
}

impl SnapshotTarget {
    async fn write_all(
        &self,
        inputs: &[(&'static str, Input)],
        source: Source,
        options: &BackupOptions,
        written: &mut Vec<String>,
    ) -> Result<BackupReport, Error> {
        let mut counts = Counts::default();
        let mut objects = Vec::new();
        let mut runs_spilled: usize = 0;
        for (kind, input) in inputs {
            let (entry, c) = self.write_object(kind, input, options, written).await?;
            match *kind {
                DEVICES => {
                    (counts.devices, counts.modules, counts.edge_devices) =
                        (c.devices, c.modules, c.edge_devices);
                }
                ENROLLMENTS => counts.enrollments = c.records,
                ENROLLMENT_GROUPS => counts.enrollment_groups = c.records,
                _ => counts.configurations = c.records,
            }
            counts.skipped_lines = counts.skipped_lines.saturating_add(c.skipped);
            runs_spilled = runs_spilled.saturating_add(c.runs_spilled);
            objects.push(entry);
        }
        let manifest = Manifest {
            format: FORMAT,
            id: self.id.clone(),
            hub: self.hub.clone(),
            created: self.created.clone(),
            source,
            counts,
            objects,
            recipients: self.recipients.iter().map(ToString::to_string).collect(),
            tool: format!("hubvault {}", env!("CARGO_PKG_VERSION")),
            generation: Some(GENERATION),
            signer: Some(options.signing_key.signer().to_string()),
            trust: snapshot::signature::Trust::Unchecked,
        };
        if let Some(pause) = &options.faults.before_manifest {
            pause();
        }
        if let Some(expected) = &options.expect
            && let Some(e) =
                expected.unexplained(&self.hub, manifest.counts.devices, manifest.counts.modules)
        {
            return Err(e);
        }
        // Never commit a snapshot whose data is gone: check every object is there, whole.
        for o in &manifest.objects {
            let name = catalog::object_name(&self.hub, &self.id, &o.name);
            match self.store.head(&name).await? {
                Some(meta) if meta.size == o.bytes => {}
                _ => return Err(Error::ObjectVanished { name }),
            }
        }
        // A store is marked by its first snapshot, so a command that deletes knows it is one
        // (a backup refused for bad input stores nothing, not even this).
        if catalog::mark(self.store.as_ref(), options.now).await? {
            tracing::info!(store = %self.store.location(), "marked the store as a hubvault store");
        }
        // The signature first, create-only, over the exact bytes the manifest will hold: no
        // committed snapshot is ever unsigned.
        let manifest_file = catalog::manifest_file(GENERATION);
        let manifest_bytes = manifest.to_bytes();
        let signature =
            SignatureObject::sign(&manifest_bytes, &manifest_file, &options.signing_key);
        let signature_name =
            catalog::object_name(&self.hub, &self.id, &catalog::signature_file(GENERATION));
        self.store
            .put(&signature_name, Bytes::from(signature.to_bytes()))
            .await?;
        written.push(signature_name);
        if let Some(pause) = &options.faults.after_signature {
            pause();
        }
        // The commit point: only now does the snapshot exist for readers.
        let name = catalog::object_name(&self.hub, &self.id, &manifest_file);
        self.store.put(&name, Bytes::from(manifest_bytes)).await?;
        tracing::info!(snapshot = %self.id, signer = %options.signing_key.signer(), "manifest written; snapshot committed");
        let c = &manifest.counts;
        Ok(BackupReport {
            snapshot: manifest.id.clone(),
            hub: manifest.hub.clone(),
            created: manifest.created.clone(),
            devices: c.devices,
            modules: c.modules,
            edge_devices: c.edge_devices,
            configurations: c.configurations,
            skipped_lines: c.skipped_lines,
            enrollments: c.enrollments,
            enrollment_groups: c.enrollment_groups,
            bytes: manifest.bytes(),
            runs_spilled,
            job_id: manifest.source.job_id.clone(),
            hub_counts: None,
        })
    }

    /// Seal one export file into one object. Input found in order is streamed; if its order
    /// breaks late, the object is aborted and written again through the external sort.
    async fn write_object(
        &self,
        kind: &'static str,
        input: &Input,
        options: &BackupOptions,
        written: &mut Vec<String>,
    ) -> Result<(ObjectEntry, ObjectCounts), Error> {
        let object_file = catalog::data_file(kind, GENERATION);
        let name = catalog::object_name(&self.hub, &self.id, &object_file);
        for streaming in [true, false] {
            let writer = self.store.create(&name).await?;
            let (sender, rx) = bridge::channel();
            let hook = options
                .faults
                .upload
                .clone()
                .map(|f| Box::new(move || f()) as Box<dyn FnOnce() + Send>);
            let upload = tokio::spawn(bridge::upload(rx, writer, hook));
            let job = SealJob {
                kind,
                input: input.clone(),
                header: Header {
                    hubvault: FORMAT,
                    snapshot: self.id.clone(),
                    hub: self.hub.clone(),
                    object: kind.to_owned(),
                    created: self.created.clone(),
                    generation: Some(GENERATION),
                },
                recipients: self.recipients.clone(),
                sort: options.sort.clone(),
                streaming,
            };
            // A panic in either task goes on unwinding here, as if the work had run inline; a
            // task cancelled before it finished (the runtime shutting down) is an error.
            let sealed = tokio::task::spawn_blocking(move || job.run(sender))
                .await
                .unwrap_or_else(|e| match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => Err(crate::pipeline::Error::Seal(std::io::Error::other(e)).into()),
                });
            let uploaded = upload.await.unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(store::Error::Io {
                    store: self.store.location(),
                    context: format!("writing {name}"),
                    source: std::io::Error::other(e),
                }),
            });
            match (sealed, uploaded) {
                (Ok(Some((stats, counts))), Ok(Some(meta))) => {
                    written.push(name);
                    tracing::info!(
                        object = kind,
                        records = counts.records,
                        stored = meta.size,
                        "object sealed"
                    );
                    let entry = ObjectEntry {
                        name: object_file.clone(),
                        kind: kind.to_owned(),
                        bytes: stats.stored_bytes,
                        sha256: stats.sha256,
                        records: counts.records,
                    };
                    return Ok((entry, counts));
                }
                (Ok(None), Ok(_)) => tracing::info!(
                    object = kind,
                    "the export is not in (id, moduleId) order; sorting it"
                ),
                // A seal that stopped because the upload did: the store's error explains it.
                (Err(Error::Snapshot(snapshot::Error::Output(_))) | Ok(_), Err(store_error)) => {
                    return Err(store_error.into());
                }
                (Err(e), _) => return Err(e),
                (Ok(Some(_)), Ok(None)) => unreachable!("a finished seal always sends Done"),
            }
        }
        unreachable!("the second pass never asks for a restart")
    }
}

/// The blocking half of one object: read, check, sort, seal.
struct SealJob {
    kind: &'static str,
    input: Input,
    header: Header,
    recipients: Vec<age::x25519::Recipient>,
    sort: SortOptions,
    streaming: bool,
}

impl SealJob {
    /// `Ok(None)`: start again without streaming. On any error or restart the seal is
    /// abandoned and the sender dropped without `Done`, so the upload aborts.
    fn run(self, sender: ChunkSender) -> Result<Option<(SealStats, ObjectCounts)>, Error> {
        let input = self.input.open()?;
        let display = self.input.display();
        // Reading and proving each line a JSON object runs on a thread of its own.
        let mut lines = Prefetched::spawn(Lines::new(
            BufReader::with_capacity(READ_BUFFER, input),
            display.clone(),
        ))
        .map_err(snapshot::Error::Output)?;
        let seal = SealWriter::new(sender, &self.recipients, SealOptions::archive())?;
        // Sealing (zstd's input side, age, sha256, upload chunks) runs on a thread of its own,
        // overlapping this thread's order and duplicate checks and sorting.
        let mut out = Handoff::spawn(seal).map_err(snapshot::Error::Output)?;
        let mut counts = ObjectCounts::default();
        let sorted = out
            .write_all(&self.header.to_line())
            .map_err(snapshot::Error::Output)
            .map_err(Error::from)
            .and_then(|()| {
                if self.streaming {
                    // Records in order pass straight through, never made (see `next_ref`).
                    return stream_borrowed(&mut lines, &display, &mut out, |r| {
                        count(&mut counts, r.module_id.is_some(), r.edge);
                    })
                    .map_err(Error::from);
                }
                sort_into(&mut lines, &display, &mut out, &self.sort, |r| {
                    count(&mut counts, r.module_id.is_some(), r.edge);
                })
                .map_err(Error::from)
            });
        counts.skipped = lines.skipped();
        let records = match sorted {
            Ok(Sorted::Done {
                records,
                runs_spilled,
            }) => {
                counts.runs_spilled = runs_spilled;
                records
            }
            Ok(Sorted::Restart) => {
                out.abandon().0.abandon();
                return Ok(None);
            }
            Err(e) => {
                let (seal, sealing) = out.abandon();
                seal.abandon();
                // A write that failed because the sealing thread stopped: its error says why.
                return Err(match (e, sealing) {
                    (Error::Snapshot(snapshot::Error::Output(_)), Err(cause)) => {
                        snapshot::Error::Output(cause).into()
                    }
                    (e, _) => e,
                });
            }
        };
        let (seal, sealing) = out.finish();
        if let Err(e) = sealing {
            seal.abandon();
            return Err(snapshot::Error::Output(e).into());
        }
        if records == 0 && self.kind == DEVICES {
            seal.abandon();
            return Err(snapshot::Error::Empty { file: display }.into());
        }
        let (sender, stats) = seal.finish().map_err(snapshot::Error::Output)?;
        sender.finish().map_err(snapshot::Error::Output)?;
        Ok(Some((stats, counts)))
    }
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "one per record read; 2^64 records cannot be read"
)]
fn count(counts: &mut ObjectCounts, module: bool, edge: bool) {
    counts.records += 1;
    if module {
        counts.modules += 1;
    } else {
        counts.devices += 1;
        counts.edge_devices += u64::from(edge);
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
    use crate::store::memory::MemoryStore;
    use std::fmt::Write as _;

    fn test_key() -> Arc<SigningKey> {
        Arc::new(SigningKey::generate().unwrap())
    }

    fn export(dir: &Path, ids: &[usize]) -> PathBuf {
        let pad = "x".repeat(300);
        let text = ids.iter().fold(String::new(), |mut s, i| {
            let _ = writeln!(
                s,
                "{{\"id\":\"d-{i:06}\",\"authentication\":{{\"k\":\"{pad}\"}}}}"
            );
            s
        });
        let path = dir.join("devices.txt");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn order_breaking_after_upload_began_restarts_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        // In order for 12 000 records (several upload chunks), then one step back.
        let mut ids: Vec<usize> = (0..12_000).collect();
        ids.swap(11_998, 11_999);
        let path = export(dir.path(), &ids);
        let id = age::x25519::Identity::generate();
        let store = Arc::new(MemoryStore::new());
        let mut options = BackupOptions::new(OffsetDateTime::now_utc(), test_key());
        options.sort.run_bytes = 1 << 20;
        options.sort.temp_dir = Some(dir.path().to_owned());
        let report = from_export(store.clone(), &path, "hub", &[id.to_public()], options)
            .await
            .unwrap();
        assert_eq!(report.devices, 12_000);
        assert!(report.runs_spilled > 1);
        let names: Vec<String> = store
            .list("hub/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "hub/".to_owned() + &report.snapshot + "/devices.g1.jsonl.zst.age",
                "hub/".to_owned() + &report.snapshot + "/manifest.g1.json",
                "hub/".to_owned() + &report.snapshot + "/signature.g1.json",
            ],
            "one data object, its signature and the manifest"
        );
        let stored = store.get_bytes(&names[0]).await.unwrap();
        let ids: crate::pipeline::Identities = Arc::new(vec![Box::new(id)]);
        let mut plain = String::new();
        crate::pipeline::open(&stored[..], &ids)
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines.len(), 12_001, "header plus every record once");
        assert!(lines[1..].windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    /// The review: `forget --at <future>` removed an in-flight backup's data, and the backup then
    /// committed a manifest whose data was gone. It checks its objects before it commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_whose_data_vanished_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = export(dir.path(), &[1, 2, 3]);
        let store = Arc::new(MemoryStore::new());
        let mut options = BackupOptions::new(OffsetDateTime::now_utc(), test_key());
        let victim = store.clone();
        options.faults.before_manifest = Some(Arc::new(move || {
            let names: Vec<String> = futures::executor::block_on(victim.list(""))
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .filter(|n| n.ends_with("devices.g1.jsonl.zst.age"))
                .collect();
            for n in names {
                futures::executor::block_on(victim.delete(&n)).unwrap();
            }
        }));
        let r = age::x25519::Identity::generate().to_public();
        let err = from_export(store.clone(), &path, "hub", &[r], options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "backup_object_vanished", "{err}");
        let left: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(
            left.iter()
                .all(|n| !n.contains("manifest") && !n.contains("signature")),
            "no manifest was committed, nothing signed: {left:?}"
        );
        assert!(
            !left.contains(&catalog::MARKER.to_owned()),
            "nothing committed, nothing marked: {left:?}"
        );
    }

    #[test]
    fn only_identities_created_or_deleted_during_the_job_explain_a_count_difference() {
        let c = HubCounts {
            devices_before: 100,
            devices_after: 102,
            modules_before: 10,
            modules_after: 10,
        };
        assert!(c.unexplained("h", 100, 10).is_none());
        assert!(c.unexplained("h", 102, 10).is_none());
        let lost = c.unexplained("h", 99, 10).unwrap();
        assert_eq!(lost.code(), "backup_count_mismatch");
        let text = lost.to_string();
        assert!(
            text.contains("holds 99 devices")
                && text.contains("100 before")
                && text.contains("102 after"),
            "{text}"
        );
        assert!(
            c.unexplained("h", 103, 10).is_some(),
            "more than the hub ever held"
        );
        assert!(
            c.unexplained("h", 101, 9)
                .unwrap()
                .to_string()
                .contains("modules")
        );
    }

    #[tokio::test]
    async fn a_folder_without_devices_txt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let r = age::x25519::Identity::generate().to_public();
        let err = from_export(
            store,
            dir.path(),
            "hub",
            &[r],
            BackupOptions::new(OffsetDateTime::now_utc(), test_key()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::NoDevicesFile { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_upload_reports_the_store_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Random keys do not compress: several chunks of sealed output.
        let text = (0..80_000u32).fold(String::new(), |mut s, i| {
            let _ = writeln!(
                s,
                "{{\"id\":\"d-{i:06}\",\"k\":\"{:032x}{:032x}\"}}",
                rand::random::<u128>(),
                rand::random::<u128>()
            );
            s
        });
        std::fs::write(dir.path().join("devices.txt"), text).unwrap();
        // Writers fail after their first chunk (a full disk, a dropped connection).
        let inner = MemoryStore::new();
        inner.faults(|f| f.fail_write_after = Some(1));
        let store = Arc::new(inner.clone());
        let r = age::x25519::Identity::generate().to_public();
        let mut options = BackupOptions::new(OffsetDateTime::now_utc(), test_key());
        options.sort.temp_dir = Some(dir.path().to_owned());
        let err = from_export(store, &dir.path().join("devices.txt"), "hub", &[r], options)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(
            inner.list("hub/").await.unwrap().is_empty(),
            "no snapshot data is left"
        );
    }
}
