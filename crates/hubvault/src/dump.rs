//! Use case: decrypt a snapshot to import-ready files (`devices.txt`, `configurations.txt`).
//!
//! The output holds every device key in plaintext: files are created 0600, never over an
//! existing file, and removed again if the dump fails half-way. The header line is checked
//! (it binds the payload to this snapshot) and dropped; records are written verbatim.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::diagnostic::{Diagnostic, fix_text};
use crate::integrity::WRONG_IDENTITY_FIX;
use crate::pipeline::bridge::StreamReader;
use crate::pipeline::{self, Identities};
use crate::snapshot::{Header, Manifest, ObjectEntry, catalog};
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} already exists; dump never overwrites: {}", fix_text(self))]
    Exists { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the identity cannot decrypt snapshot {snapshot}: it was sealed to {}; {}", .expected.join(", "), fix_text(self))]
    WrongKey {
        snapshot: String,
        expected: Vec<String>,
    },
    #[error(
        "{object} of snapshot {snapshot} is damaged: {detail}; {}",
        fix_text(self)
    )]
    Damaged {
        snapshot: String,
        object: String,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Snapshot(e) => e.code(),
            Error::Exists { .. } => "dump_file_exists",
            Error::Write { .. } => "dump_write",
            Error::WrongKey { .. } => "wrong_identity",
            Error::Damaged { .. } => "snapshot_damaged",
            Error::Store(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Exists { .. } => {
                Some("choose an empty --out folder or remove the file".to_owned())
            }
            Error::Write { .. } => None,
            Error::WrongKey { .. } => Some(WRONG_IDENTITY_FIX.to_owned()),
            Error::Damaged { snapshot, .. } => {
                Some(format!("run `hubvault verify {snapshot} --read-data`"))
            }
            Error::Store(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub snapshot: String,
    pub hub: String,
    pub files: Vec<DumpedFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DumpedFile {
    pub path: String,
    pub records: u64,
}

/// Decrypt snapshot `m` into `out_dir` (created if missing).
pub async fn dump(
    store: Arc<dyn Store>,
    m: &Manifest,
    identities: Identities,
    out_dir: &Path,
) -> Result<DumpReport, Error> {
    m.check_not_refused()?;
    // `devices.txt`, `configurations.txt`: the names an import job reads. A kind is one word
    // (catalog::is_kind); any other could name a path outside `out_dir`.
    let mut targets: Vec<(ObjectEntry, PathBuf)> = Vec::new();
    for o in &m.objects {
        if !catalog::is_kind(&o.kind) {
            return Err(Error::Damaged {
                snapshot: m.id.clone(),
                object: o.name.clone(),
                detail: format!("its kind {:?} is not a hubvault object kind", o.kind),
            });
        }
        targets.push((o.clone(), out_dir.join(format!("{}.txt", o.kind))));
    }
    // Refuse before writing anything.
    if let Some((_, path)) = targets.iter().find(|(_, p)| p.exists()) {
        return Err(Error::Exists { path: path.clone() });
    }
    create_private_dir(out_dir)?;
    let mut created = Vec::new();
    let result = async {
        let mut files = Vec::new();
        for (object, path) in &targets {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_private()
                .open(path)
                .map_err(|source| match source.kind() {
                    io::ErrorKind::AlreadyExists => Error::Exists { path: path.clone() },
                    _ => Error::Write {
                        path: path.clone(),
                        source,
                    },
                })?;
            created.push(path.clone());
            let stream = store
                .get(&catalog::object_name(&m.hub, &m.id, &object.name))
                .await?;
            let reader = StreamReader::new(tokio::runtime::Handle::current(), stream);
            let (m2, object2, ids, path2) =
                (m.clone(), object.clone(), identities.clone(), path.clone());
            // A panic in the task goes on unwinding here, as if the work had run inline; a task
            // cancelled before it finished (the runtime shutting down) is an error.
            let records = tokio::task::spawn_blocking(move || {
                write_object(reader, file, &m2, &object2, &ids, &path2)
            })
            .await
            .unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(Error::Write {
                    path: path.clone(),
                    source: io::Error::other(e),
                }),
            })?;
            files.push(DumpedFile {
                path: path.display().to_string(),
                records,
            });
        }
        Ok(files)
    }
    .await;
    match result {
        Ok(files) => Ok(DumpReport {
            snapshot: m.id.clone(),
            hub: m.hub.clone(),
            files,
        }),
        Err(e) => {
            for path in created {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for OpenOptions {
    #[cfg(unix)]
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(0o600)
    }
    #[cfg(not(unix))]
    fn mode_private(&mut self) -> &mut Self {
        self
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })
}

fn write_object(
    reader: StreamReader,
    file: File,
    m: &Manifest,
    object: &ObjectEntry,
    ids: &Identities,
    path: &Path,
) -> Result<u64, Error> {
    let damaged = |detail: String| Error::Damaged {
        snapshot: m.id.clone(),
        object: object.name.clone(),
        detail,
    };
    let plain = pipeline::open(reader, ids).map_err(|e| match e {
        pipeline::Error::WrongKey => Error::WrongKey {
            snapshot: m.id.clone(),
            expected: m.recipients.clone(),
        },
        other => damaged(other.to_string()),
    })?;
    let mut r = BufReader::with_capacity(256 * 1024, plain);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| damaged(e.to_string()))?;
    match Header::parse(line.strip_suffix(b"\n").unwrap_or(&line)) {
        Some(h) => {
            if let Some(mismatch) = h.mismatch(m, &object.kind) {
                return Err(damaged(mismatch));
            }
        }
        None => {
            return Err(damaged(
                "the first line is not a hubvault header".to_owned(),
            ));
        }
    }
    let write_err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut records = 0;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| damaged(e.to_string()))?
            == 0
        {
            break;
        }
        out.write_all(&line).map_err(write_err)?;
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "one per record read; 2^64 records cannot be read"
        )]
        {
            records += 1;
        }
    }
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    if records != object.records {
        return Err(damaged(format!(
            "it holds {records} records, the manifest says {}",
            object.records
        )));
    }
    Ok(records)
}
