//! `hubvault serve` and `hubvault run`: the scheduled exporter.
//!
//! ```text
//! policies ──► slots (pure: what is due at `now`) ──► scheduler (sleeps, bounded concurrency)
//!          ──► per hub, under the store's lease: slot record checked ──► backup ──► forget
//!              (every policy covering the hub) ──► status record ──► metrics, run log
//! ```
//!
//! - [`slots`]: the pure core, a function of `now`: missed slots coalesce, DST as the schedule says;
//! - [`scheduler`]: the async loop over [`slots::Plan`] on an injected [`scheduler::Clock`]
//!   (tokio's paused time in tests), bounded concurrency, jitter, reload, shutdown;
//! - [`lease`]: one lease per hub on the store (blob lease, or a lock file with a heartbeat)
//!   and the hub's [`status::HubStatus`] record beside it;
//! - [`hub_run`]: one run of one hub: lease → slot check → backup → forget → record;
//! - [`drill_run`]: one scheduled drill (a policy's `[drill]`) under the scratch hub's lease;
//! - [`metrics`]: the Prometheus registry (`/metrics`).
//!
//! Must not: know clap, or read the wall clock outside [`scheduler::Clock`] and [`hub_run`]
//! (which stamps what it records).

pub mod drill_run;
pub mod hub_run;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod scheduler;
pub mod slots;
pub mod status;
pub mod targets;

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, fix_text};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store error in the scheduler: {0}")]
    Store(#[from] crate::store::Error),
    #[error("cannot use the lease file {path}: {source}; {}", fix_text(self))]
    LeaseIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the status record of hub {hub} is damaged ({detail}); {}",
        fix_text(self)
    )]
    Status { hub: String, detail: String },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::LeaseIo {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Store(e) => e.code(),
            Error::LeaseIo { .. } => "lease_io",
            Error::Status { .. } => "status_damaged",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Store(e) => e.fix(),
            Error::LeaseIo { .. } => Some(
                "the store's folder must be writable by hubvault (it keeps .hubvault-serve/ there)"
                    .to_owned(),
            ),
            Error::Status { .. } => Some(
                "delete that hub's .hubvault-serve/<hub>.json in the store; the next run writes a new one"
                    .to_owned(),
            ),
        }
    }
}
