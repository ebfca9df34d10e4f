//! Use case: check snapshots.
//!
//! Without reading data: every object the manifest lists is present, has the manifest's size,
//! and its stored bytes hash to the manifest's sha256. With `read_data`: also decrypt and
//! decompress every object, check the header line binds it to this snapshot and object, parse
//! every record, and check order, uniqueness and counts against the manifest.
//! Findings are data (`problems`), not errors; errors are reserved for "cannot check" (the
//! store is unreachable, or the identity does not fit).

use std::cmp::Ordering;
use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::diagnostic::{Diagnostic, fix_text};
use crate::pipeline::bridge::StreamReader;
use crate::pipeline::read_ahead::ReadAhead;
use crate::pipeline::{self, Identities};
use crate::snapshot::catalog;
use crate::snapshot::manifest::{CONFIGURATIONS, DEVICES, ENROLLMENT_GROUPS, ENROLLMENTS};
use crate::snapshot::record::{self, Line, Record, classify};
use crate::snapshot::signature::Trust;
use crate::snapshot::{Header, Manifest, ObjectEntry};
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the identity cannot decrypt snapshot {snapshot}: it was sealed to {}; {}", .expected.join(", "), fix_text(self))]
    WrongKey {
        snapshot: String,
        expected: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What to do when the identity does not fit a snapshot (`verify --read-data`, `dump`).
pub(crate) const WRONG_IDENTITY_FIX: &str =
    "use the identity file of one of these recipients (--identity FILE)";

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::WrongKey { .. } => "wrong_identity",
            Error::Store(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::WrongKey { .. } => Some(WRONG_IDENTITY_FIX.to_owned()),
            Error::Store(e) => e.fix(),
        }
    }
}

/// `verify --json`. Field names are relied on by scripts.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub snapshots: Vec<SnapshotCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotCheck {
    pub id: String,
    pub hub: String,
    pub ok: bool,
    /// `signed`, `untrusted-signer`, `bad-signature`, `unsigned`, or `unreadable`.
    pub trust: &'static str,
    /// The signer whose signature verifies (`hvsig1…`), trusted or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    pub problems: Vec<String>,
}

/// What `verify` reads with and accepts.
#[derive(Clone, Default)]
pub struct VerifyOptions {
    /// Read every record with these (`--read-data`).
    pub identities: Option<Identities>,
    /// The public recipients of those identities: one of them must be among a snapshot's
    /// recipients, or its recipients were replaced.
    pub own_recipients: Vec<String>,
    /// Format 1 snapshots (unsigned) pass.
    pub allow_unsigned: bool,
}

/// Check every snapshot of `hub` (or of the store) in `repo`; with `identities`, also read every
/// record. A snapshot whose manifest cannot be read is a failed check, not a stop: one damaged
/// manifest must not hide the others.
pub async fn verify_all(
    repo: &crate::repo::Repository,
    hub: Option<&crate::snapshot::catalog::HubNames>,
    options: &VerifyOptions,
) -> Result<VerifyReport, Error> {
    let chosen: Vec<Manifest> = repo.snapshots(hub).cloned().collect();
    let mut report = verify(repo.store().clone(), &chosen, options).await?;
    for u in repo.unreadable(hub) {
        report.snapshots.push(SnapshotCheck {
            id: u.id.clone(),
            hub: u.hub.clone(),
            ok: false,
            trust: "unreadable",
            signer: None,
            problems: vec![u.error().to_string()],
        });
        report.ok = false;
    }
    Ok(report)
}

/// Check `manifests` (as the catalog judged them): trust, the manifest's own consistency, and
/// every object; with identities, also read every record.
pub async fn verify(
    store: Arc<dyn Store>,
    manifests: &[Manifest],
    options: &VerifyOptions,
) -> Result<VerifyReport, Error> {
    let mut snapshots = Vec::new();
    for m in manifests {
        let mut problems = trust_problems(m, options.allow_unsigned);
        let folder = store.list(&format!("{}/{}/", m.hub, m.id)).await?;
        problems.extend(manifest_problems(m, &folder));
        if options.identities.is_some()
            && !options.own_recipients.is_empty()
            && !m
                .recipients
                .iter()
                .any(|r| options.own_recipients.contains(r))
        {
            problems.push(
                "none of the identity's recipients is among the manifest's recipients: the \
                 manifest's recipients were replaced, or the snapshot was sealed to other keys"
                    .to_owned(),
            );
        }
        problems.extend(check_snapshot(&store, m, options.identities.as_ref()).await?);
        tracing::info!(snapshot = %m.id, problems = problems.len(), "verified");
        snapshots.push(SnapshotCheck {
            id: m.id.clone(),
            hub: m.hub.clone(),
            ok: problems.is_empty(),
            trust: m.trust.word(),
            signer: m.trust.signer().map(ToString::to_string),
            problems,
        });
    }
    Ok(VerifyReport {
        ok: snapshots.iter().all(|s| s.ok),
        snapshots,
    })
}

/// Whether a reader may use `m`: a bad signature or an untrusted signer is a problem, and so is
/// an unsigned snapshot unless unsigned ones are allowed.
fn trust_problems(m: &Manifest, allow_unsigned: bool) -> Vec<String> {
    if m.trust.accepted(allow_unsigned) {
        return Vec::new();
    }
    let advice = match &m.trust {
        Trust::Unsigned => {
            "; restore, dump and diff refuse it without --allow-unsigned (pass it to verify too \
             if this format 1 snapshot is known to be yours)"
        }
        Trust::UntrustedSigner(_) => {
            "; if that backup host is yours, add its signer to `trusted-signers` in hubvault.toml"
        }
        _ => "; it was not written by a hubvault backup as it is: do not restore it",
    };
    vec![format!("{}{advice}", m.trust.describe())]
}

/// What is wrong with the manifest itself, given the objects in its folder: an object listed
/// twice, a name hubvault does not give that kind of object, record counts that disagree with
/// the counts, and data objects of the snapshot that the manifest leaves out (a removed entry).
fn manifest_problems(m: &Manifest, folder: &[store::ObjectMeta]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen_names = std::collections::BTreeSet::new();
    let mut seen_kinds = std::collections::BTreeSet::new();
    for o in &m.objects {
        if !seen_names.insert(o.name.as_str()) || !seen_kinds.insert(o.kind.as_str()) {
            problems.push(format!(
                "the manifest lists {} ({}) more than once",
                o.name, o.kind
            ));
        }
        let expected = match m.generation {
            Some(g) => catalog::data_file(&o.kind, g),
            None => format!("{}.jsonl.zst.age", o.kind),
        };
        if o.name != expected {
            problems.push(format!(
                "the manifest names its {} object {}, but hubvault names it {expected}",
                o.kind, o.name
            ));
        }
    }
    let records = |kind: &str| m.object(kind).map_or(0, |o| o.records);
    let devices_and_modules = m.counts.devices.saturating_add(m.counts.modules);
    if m.object(DEVICES).is_some() && records(DEVICES) != devices_and_modules {
        problems.push(format!(
            "the devices object holds {} records, but the counts say {} devices and modules",
            records(DEVICES),
            devices_and_modules
        ));
    }
    for (kind, counted) in [
        (ENROLLMENTS, m.counts.enrollments),
        (ENROLLMENT_GROUPS, m.counts.enrollment_groups),
    ] {
        if records(kind) != counted {
            problems.push(format!(
                "the manifest lists {} {kind} records, but its counts say {counted}",
                records(kind)
            ));
        }
    }
    if records(CONFIGURATIONS) != m.counts.configurations {
        problems.push(format!(
            "the manifest lists {} configuration records, but its counts say {}",
            records(CONFIGURATIONS),
            m.counts.configurations
        ));
    }
    for meta in folder {
        let Some(file) = meta.name.rsplit('/').next() else {
            continue;
        };
        let data_of_this_snapshot = match (catalog::file_kind(file), m.generation) {
            (Some(catalog::FileKind::Data(g)), Some(mine)) => g == mine,
            (Some(catalog::FileKind::DataV1), None) => true,
            _ => false,
        };
        if data_of_this_snapshot && !m.objects.iter().any(|o| o.name == file) {
            problems.push(format!(
                "{file} is in the snapshot's folder but not in its manifest (an entry was removed)"
            ));
        }
    }
    problems
}

async fn check_snapshot(
    store: &Arc<dyn Store>,
    m: &Manifest,
    identities: Option<&Identities>,
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let main = if m.is_dps() { ENROLLMENTS } else { DEVICES };
    if m.object(main).is_none() {
        problems.push(format!("the manifest lists no {main} object"));
    }
    for object in &m.objects {
        let name = catalog::object_name(&m.hub, &m.id, &object.name);
        let Some(meta) = store.head(&name).await? else {
            problems.push(format!("{} is missing", object.name));
            continue;
        };
        if meta.size != object.bytes {
            problems.push(format!(
                "{} is {} bytes, the manifest says {}",
                object.name, meta.size, object.bytes
            ));
        }
        let stream = match store.get(&name).await {
            Ok(s) => s,
            Err(store::Error::NotFound { .. }) => {
                problems.push(format!("{} is missing", object.name));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let reader = StreamReader::new(tokio::runtime::Handle::current(), stream);
        let (m2, object2, ids) = (m.clone(), object.clone(), identities.cloned());
        // A panic in the task goes on unwinding here, as if the work had run inline; a task
        // cancelled before it finished (the runtime shutting down) is an error.
        let found =
            tokio::task::spawn_blocking(move || read_object(reader, &m2, &object2, ids.as_ref()))
                .await
                .unwrap_or_else(|e| match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => Err(Error::Store(store::Error::Io {
                        store: store.location(),
                        context: format!("reading {name}"),
                        source: io::Error::other(e),
                    })),
                })?;
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", object.name)));
    }
    Ok(problems)
}

/// Hashes and counts the stored bytes as they are read.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes = self.bytes.saturating_add(n as u64);
        Ok(n)
    }
}

/// The hashing reader is shared so it can be drained and read out after the decoder is done
/// (the decoder runs on a read-ahead thread, hence the mutex; it is never contended).
struct Shared<R>(Arc<Mutex<Hashing<R>>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read(buf)
    }
}

fn read_object(
    reader: StreamReader,
    m: &Manifest,
    object: &ObjectEntry,
    ids: Option<&Identities>,
) -> Result<Vec<String>, Error> {
    let hashing = Arc::new(Mutex::new(Hashing {
        inner: reader,
        hasher: Sha256::new(),
        bytes: 0,
    }));
    let mut problems = Vec::new();
    let mut wrong_key = false;
    if let Some(ids) = ids {
        match pipeline::open(Shared(hashing.clone()), ids) {
            // Decrypting and decompressing run a few blocks ahead, on a thread of their own,
            // while this one checks the records.
            Ok(plain) => match ReadAhead::spawn(plain) {
                Ok(ahead) => problems.extend(check_records(ahead, m, object)),
                Err(e) => problems.push(format!("cannot start reading: {e}")),
            },
            // Either the identity does not fit, or the age header is damaged: the hash of the
            // stored bytes tells them apart below.
            Err(pipeline::Error::WrongKey) => wrong_key = true,
            Err(e) => problems.push(format!("cannot decrypt: {e}")),
        }
    }
    // Hash whatever the decoder did not read (or everything, without read-data).
    if let Err(e) = io::copy(&mut Shared(hashing.clone()), &mut io::sink()) {
        problems.push(format!("cannot read: {e}"));
        return Ok(problems);
    }
    let sha = pipeline::hex(
        &hashing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hasher
            .finalize_reset(),
    );
    if wrong_key && sha == object.sha256 {
        // The object is as written: the identity is not one it was sealed to.
        return Err(Error::WrongKey {
            snapshot: m.id.clone(),
            expected: m.recipients.clone(),
        });
    }
    if wrong_key {
        problems
            .push("cannot decrypt: its age header is damaged (no identity can open it)".to_owned());
    }
    if sha != object.sha256 {
        problems.insert(
            0,
            format!(
                "sha256 is {sha}, the manifest says {} (the object was changed or damaged)",
                object.sha256
            ),
        );
    }
    Ok(problems)
}

/// Header binding, record syntax, order, uniqueness and counts.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "line and record counts, one per line read; 2^64 lines cannot be read"
)]
fn check_records(plain: impl Read, m: &Manifest, object: &ObjectEntry) -> Vec<String> {
    let mut problems = Vec::new();
    let mut r = BufReader::with_capacity(256 * 1024, plain);
    let mut line = Vec::new();
    let mut read_line = |line: &mut Vec<u8>| -> io::Result<bool> {
        line.clear();
        let n = record::read_line(&mut r, line, record::MAX_LINE_BYTES)?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(n > 0)
    };
    match read_line(&mut line) {
        Ok(true) => match Header::parse(&line) {
            Some(h) => problems.extend(h.mismatch(m, &object.kind)),
            None => problems.push("the first line is not a hubvault header".to_owned()),
        },
        Ok(false) => problems.push("the object is empty".to_owned()),
        Err(e) => problems.push(format!("cannot decrypt or decompress: {e}")),
    }
    let (mut records, mut devices, mut modules, mut edge) = (0u64, 0u64, 0u64, 0u64);
    let mut prev: Option<Record> = None;
    let mut line_no = 1u64;
    loop {
        match read_line(&mut line) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                problems.push(format!("cannot decrypt or decompress: {e}"));
                break;
            }
        }
        line_no += 1;
        let rec = match classify(&line, line_no, &object.name) {
            Ok(Line::Record(rec)) => rec,
            Ok(Line::Skipped) => {
                problems.push(format!("line {line_no} is not a record"));
                continue;
            }
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        records += 1;
        if rec.module_id.is_some() {
            modules += 1;
        } else {
            devices += 1;
            edge += u64::from(rec.edge);
        }
        if let Some(p) = &prev
            && p.key_cmp(&rec) != Ordering::Less
        {
            problems.push(format!(
                "record {} on line {line_no} is out of order or repeated",
                rec.key_display()
            ));
        }
        prev = Some(rec);
    }
    let mut expect = |what: &str, found: u64, want: u64| {
        if found != want {
            problems.push(format!("holds {found} {what}, the manifest says {want}"));
        }
    };
    expect("records", records, object.records);
    match object.kind.as_str() {
        DEVICES => {
            expect("devices", devices, m.counts.devices);
            expect("modules", modules, m.counts.modules);
            expect("edge devices", edge, m.counts.edge_devices);
        }
        ENROLLMENTS => expect("enrollments", records, m.counts.enrollments),
        ENROLLMENT_GROUPS => expect("enrollment groups", records, m.counts.enrollment_groups),
        _ => expect("configurations", records, m.counts.configurations),
    }
    problems
}
