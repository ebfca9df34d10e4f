//! Snapshots: the record model, the external sort, the manifest and the catalog.
//!
//! Owns: how export lines become [`record::Record`]s (verbatim bytes plus the few fields we
//! read), their order ([`sort`]: by `(id, moduleId)`, bounded memory), the v1 [`manifest`] and
//! stream header, and the [`catalog`] (snapshot ids, object names, listing, `latest`; orphans are found by `forget::scan`).
//!
//! Must not: talk HTTP or pick keys. It reads and writes through [`crate::store::Store`] and
//! [`crate::pipeline`] only.

pub mod catalog;
pub mod json_line;
pub mod manifest;
pub mod prefetch;
pub mod reader;
pub mod record;
pub mod signature;
pub mod sort;
pub mod trust;

pub use manifest::{Counts, Header, Manifest, ObjectEntry, Source};
pub use record::Record;

use crate::diagnostic::{Diagnostic, fix_text};

/// Errors about export contents, snapshots and the catalog. Messages name the file, line and
/// id where there is one, never a record's contents (they hold device keys).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file} line {line}: not a valid JSON object{}: {detail}; {} (nothing was stored)", id_part(.id.as_deref()), fix_text(self))]
    Malformed {
        file: String,
        line: u64,
        id: Option<String>,
        detail: String,
    },
    #[error(
        "{file} line {line} is longer than {max} bytes, far more than any real record; the file is damaged or not an export (nothing was stored)"
    )]
    LineTooLong { file: String, line: u64, max: usize },
    #[error(
        "{file}: {what} {key} appears twice, on lines {first_line} and {second_line}; an export must list each once (nothing was stored)"
    )]
    Duplicate {
        file: String,
        what: &'static str,
        key: String,
        first_line: u64,
        second_line: u64,
    },
    #[error("{file} holds no records; {} (nothing was stored)", fix_text(self))]
    Empty { file: String },
    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sort's temporary files failed ({})", fix_text(self))]
    Spill(#[source] std::io::Error),
    #[error("writing the sealed stream failed")]
    Output(#[source] std::io::Error),
    #[error(
        "{name} was written by a newer hubvault (format {found}); {}",
        fix_text(self)
    )]
    NewerFormat { name: String, found: u64 },
    #[error("{name} is not a valid hubvault manifest: {detail}")]
    BadManifest { name: String, detail: String },
    #[error("no snapshot {spec} in {store}; {}", fix_text(self))]
    NotFound { spec: String, store: String },
    #[error("the newest snapshot of {hub}, {id}, cannot be read ({problem}); {}{}",
        if older.is_none() { format!("no readable snapshot of {hub} is left; ") } else { String::new() },
        fix_text(self)
    )]
    LatestUnreadable {
        hub: String,
        id: String,
        problem: String,
        older: Option<String>,
    },
    #[error("no snapshot of {hub} in {store}; {}", if held.is_empty() { "the store holds none yet".to_owned() } else { format!("it holds snapshots of: {} ({})", held.join(", "), fix_text(self)) })]
    NoSnapshotOfHub {
        hub: String,
        store: String,
        held: Vec<String>,
    },
    #[error(
        "no snapshot of {hub} can be trusted: the newest, {newest}, is {trust}; {}",
        fix_text(self)
    )]
    NoTrustedSnapshot {
        hub: String,
        newest: String,
        trust: String,
    },
    #[error("snapshot {hub}/{id} is {trust}; {}", fix_text(self))]
    Untrusted {
        hub: String,
        id: String,
        trust: String,
        /// A format 1 snapshot (which `--allow-unsigned` opens).
        unsigned: bool,
    },
    #[error("`latest` is ambiguous: the store holds snapshots of several hubs ({}); {}", .hubs.join(", "), fix_text(self))]
    AmbiguousLatest { hubs: Vec<String> },
    #[error("invalid hub name {name:?}: {reason}")]
    BadHubName { name: String, reason: &'static str },
    #[error("snapshot {snapshot} was sealed to {}; none of the given identities matches: {}", .expected.join(", "), fix_text(self))]
    WrongKey {
        snapshot: String,
        expected: Vec<String>,
    },
    #[error(
        "snapshot {snapshot} object {object} is damaged: {detail}; {}",
        fix_text(self)
    )]
    Damaged {
        snapshot: String,
        object: String,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

fn id_part(id: Option<&str>) -> String {
    id.map(|id| format!(" (id {id:?})")).unwrap_or_default()
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "export_malformed_line",
            Error::LineTooLong { .. } => "export_line_too_long",
            Error::Duplicate { .. } => "export_duplicate_id",
            Error::Empty { .. } => "export_empty",
            Error::Read { .. } => "export_read",
            Error::Spill(_) => "sort_spill",
            Error::Output(_) => "seal_write",
            Error::NewerFormat { .. } => "snapshot_newer_format",
            Error::BadManifest { .. } => "snapshot_bad_manifest",
            Error::NotFound { .. } => "snapshot_not_found",
            Error::NoSnapshotOfHub { .. } => "snapshot_no_snapshot_of_hub",
            Error::AmbiguousLatest { .. } => "snapshot_ambiguous_latest",
            Error::NoTrustedSnapshot { .. } => "snapshot_no_trusted",
            Error::Untrusted { unsigned: true, .. } => "snapshot_unsigned",
            Error::Untrusted { .. } => "snapshot_untrusted",
            Error::LatestUnreadable { .. } => "snapshot_latest_unreadable",
            Error::BadHubName { .. } => "snapshot_bad_hub_name",
            Error::WrongKey { .. } => "snapshot_wrong_key",
            Error::Damaged { .. } => "snapshot_damaged",
            Error::Store(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Malformed { .. } => {
                Some("fix or remove the line and run the backup again".to_owned())
            }
            Error::Empty { .. } => {
                Some("check that the export finished and that this is the right file".to_owned())
            }
            Error::Spill(_) => {
                Some("free space in the temp folder, or point TMPDIR elsewhere".to_owned())
            }
            Error::NewerFormat { .. } => Some("upgrade hubvault to read it".to_owned()),
            Error::NotFound { .. } => {
                Some("run `hubvault snapshots` to see what exists".to_owned())
            }
            Error::LatestUnreadable { id, older, .. } => Some(match older {
                Some(older) => format!(
                    "name an older one explicitly (the newest readable is {older}) or fix or forget {id}"
                ),
                None => format!("fix or forget {id}"),
            }),
            Error::NoSnapshotOfHub { held, .. } => {
                (!held.is_empty()).then(|| "pass one of them with --hub (or --dps)".to_owned())
            }
            Error::AmbiguousLatest { .. } => Some("pass --hub NAME".to_owned()),
            Error::NoTrustedSnapshot { .. } => Some(
                "run `hubvault verify --all` to see each snapshot's signer; add the signer of your \
                 backup host to `trusted-signers`, or pass --allow-unsigned for snapshots of \
                 hubvault 0.1 (format 1)"
                    .to_owned(),
            ),
            Error::Untrusted { unsigned: true, .. } => Some(
                "a format 1 snapshot (hubvault 0.1) carries no signature: anyone who could write to \
                 the store could have made it. If you know it is yours, pass --allow-unsigned"
                    .to_owned(),
            ),
            Error::Untrusted { .. } => Some(
                "only snapshots signed by a trusted signer are read: if this signer is one of your \
                 backup hosts, add it to `trusted-signers` in hubvault.toml; otherwise the \
                 snapshot is not yours — leave it, or remove it with `hubvault forget \
                 --forget-untrusted`"
                    .to_owned(),
            ),
            Error::WrongKey { .. } => {
                Some("pass the identity file of one of those recipients (--identity)".to_owned())
            }
            Error::Damaged { .. } => Some(
                "run `hubvault verify --read-data` and restore from another snapshot".to_owned(),
            ),
            Error::LineTooLong { .. }
            | Error::Duplicate { .. }
            | Error::Read { .. }
            | Error::Output(_)
            | Error::BadManifest { .. }
            | Error::BadHubName { .. } => None,
            Error::Store(e) => e.fix(),
        }
    }
}
