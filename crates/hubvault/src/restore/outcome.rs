//! What a restore's parts report to each other and to the user: why the job engine stopped
//! ([`JobError`]), what verification still found different ([`Difference`]), and how far the
//! key comparison went ([`KeyCheck`]). Its own module so the engines, verification and the
//! report depend on it rather than on each other.

use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::{self, JobProperties, JobStatus};

/// Why the job engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Hub(#[from] hub::Error),
    #[error(transparent)]
    Staging(#[from] crate::staging::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("reading the target's export stopped: {0}")]
    Task(String),
    #[error(
        "import job {job_id} on {hub} ended {status} ({reason}) and may have applied part of its lines; {}",
        fix_text(self)
    )]
    Failed {
        hub: String,
        job_id: String,
        status: String,
        reason: String,
    },
}

impl JobError {
    /// `Failed` (with the service's reason, SAS signatures redacted) unless `done` completed.
    pub(super) fn unless_completed(
        hub: &str,
        job_id: &str,
        done: &JobProperties,
    ) -> Result<(), JobError> {
        if done.status() == JobStatus::Completed {
            return Ok(());
        }
        Err(JobError::Failed {
            hub: hub.to_owned(),
            job_id: job_id.to_owned(),
            status: format!("{:?}", done.status()).to_ascii_lowercase(),
            reason: crate::redact::redact(
                done.failure_reason.as_deref().unwrap_or("no reason given"),
            ),
        })
    }
}

impl Diagnostic for JobError {
    fn code(&self) -> &'static str {
        match self {
            JobError::Hub(e) => e.code(),
            JobError::Staging(e) => e.code(),
            JobError::Store(e) => e.code(),
            JobError::Failed { .. } => "restore_job_failed",
            JobError::Task(_) => "restore_task",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            JobError::Hub(e) => e.fix(),
            JobError::Staging(e) => e.fix(),
            JobError::Store(e) => e.fix(),
            JobError::Failed { .. } => Some(
                "run the same restore again, it plans against what is on the hub now".to_owned(),
            ),
            JobError::Task(_) => None,
        }
    }
}

/// How verification read the target's keys back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyVia {
    /// One export job of the target.
    ExportJob,
    /// A registry read per record.
    RegistryReads,
}

/// What is wrong with one record after a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// In the snapshot, not on the target.
    Missing,
    /// On the target, not in the snapshot (mirror).
    Extra,
    /// On both, with different contents.
    Differs,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Extra => "extra",
            Problem::Differs => "differs",
        }
    }
}

/// Something the verification still found different after applying.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// `id`, `id/moduleId`, or `configuration:ID`.
    pub id: String,
    pub problem: Problem,
    pub aspects: Vec<&'static str>,
}

/// What the key comparison covered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyCheck {
    /// Records whose keys were read back and compared.
    pub checked: usize,
    /// Records of the restore that carry keys (all of them equal on everything else).
    pub of: usize,
    /// `export-job` or `registry-reads`.
    pub via: KeyVia,
    /// The verification's export job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Why an export job was not used although staging was at hand (it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Whether a staging container was at hand (the advice to configure one is given only when
    /// it was not).
    #[serde(skip)]
    pub staging_at_hand: bool,
    /// For a sample: the smallest share of identities that, had they differed, this sample
    /// would have caught one of with 99 % probability ([`super::sample::power`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detects_share: Option<f64>,
}

impl KeyCheck {
    /// Every key of the restore was compared.
    pub fn all(&self) -> bool {
        self.checked >= self.of
    }

    /// `all` or `sample of N` (the `verified_keys` field of `--json`).
    pub fn label(&self) -> String {
        if self.all() {
            "all".into()
        } else {
            format!("sample of {}", self.checked)
        }
    }

    /// One line for people.
    pub fn sentence(&self) -> String {
        let via = if self.via == KeyVia::ExportJob {
            match &self.job_id {
                Some(j) => format!("through export job {j} of the target"),
                None => "through an export job of the target".into(),
            }
        } else {
            "by single registry reads".into()
        };
        let mut out = if self.all() {
            format!("keys: all {} record(s) with keys compared {via}", self.of)
        } else {
            let power = self.detects_share.map_or_else(String::new, |share| {
                format!(
                    "; had ≥ {:.1} % of them differed, this sample would have found one with \
                     99 % probability",
                    share * 100.0
                )
            });
            format!(
                "keys: a random sample of {} of {} record(s) with keys compared {via}, \
                 stratified by kind{power}; every id and everything but keys was compared for \
                 all (`--verify full` reads every key)",
                self.checked, self.of
            )
        };
        if let Some(n) = &self.note {
            let _ = write!(out, " ({n})");
        }
        out
    }
}
