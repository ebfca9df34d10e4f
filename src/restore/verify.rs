//! Verification after apply: re-read the target and list what still differs from the snapshot.
//!
//! Everything but symmetric keys comes from the twin queries and is compared for every record.
//! Keys are not in twins, so they need a second read, and how much of the restore that read
//! covers is said in the report ([`KeyCheck`]) — a user must know what was proven:
//!
//! - staging at hand and many keys: **all** of them through ONE export job of the target
//!   ([`super::job::read_target_keys`], the reader planning uses; its blob is deleted right after,
//!   also on failure);
//! - few keys (≤ [`VERIFY_KEY_READS_MAX`]): **all** of them by single registry reads;
//! - many keys and no staging (or its export job failed): an evenly spread sample of
//!   [`VERIFY_KEY_SAMPLE`] single reads, since hubs throttle registry reads hard.
//!
//! Must not: write to the hub, print.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::plan::{self, Mode, Scope};
use super::{Difference, Error, RestoreOptions, target};
use crate::hub::HubClient;
use crate::staging::Staging;

/// How many records' keys verification reads back when it cannot read them all.
pub const VERIFY_KEY_SAMPLE: usize = 100;

/// Up to how many keys verification reads one by one when no export job reads them.
pub const VERIFY_KEY_READS_MAX: usize = 1_000;

/// How the keys are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWay {
    /// One export job of the target, through staging: every key.
    ExportJob,
    /// A registry read per record: every key.
    ReadAll,
    /// A registry read per sampled record.
    Sample,
}

/// The way to read `needed` keys (pure): an export job when staging is at hand and at least
/// `job_min` are needed, else all by single reads when few, else a sample.
pub fn key_way(needed: usize, staging: bool, job_min: usize) -> KeyWay {
    if staging && needed >= job_min.max(1) {
        KeyWay::ExportJob
    } else if needed <= VERIFY_KEY_READS_MAX {
        KeyWay::ReadAll
    } else {
        KeyWay::Sample
    }
}

/// What the key comparison covered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyCheck {
    /// Records whose keys were read back and compared.
    pub checked: usize,
    /// Records of the restore that carry keys (all of them equal on everything else).
    pub of: usize,
    /// `export-job` or `registry-reads`.
    pub via: &'static str,
    /// The verification's export job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Why an export job was not used although staging was at hand (it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
        let via = if self.via == "export-job" {
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
            format!(
                "keys: only a sample of {} of {} record(s) with keys compared {via}; the other \
                 keys were not read back (configure [staging] or pass --staging to check them all \
                 through an export job)",
                self.checked, self.of
            )
        };
        if let Some(n) = &self.note {
            let _ = write!(out, " ({n})");
        }
        out
    }
}

/// What verification found.
#[derive(Debug)]
pub struct Verification {
    pub differences: Vec<Difference>,
    pub keys: KeyCheck,
}

/// Re-read the target and list what still differs from the snapshot (within the restore's scope;
/// `create` conflicts were left alone on purpose and are not differences).
pub async fn verify(
    client: &HubClient,
    records: &[plan::SnapshotRecord],
    options: &RestoreOptions,
    conflicts: &[String],
    staging: Option<&Staging>,
) -> Result<Verification, Error> {
    let scope = Scope {
        only: options.only.clone(),
    };
    let mode = if options.mode == Mode::Mirror {
        Mode::Mirror
    } else {
        Mode::Upsert
    };
    let mut live = target::read(client).await.map_err(Error::Target)?;
    let first = plan::plan(records, &live, mode, &scope);
    let keys = read_keys(client, &mut live, &first.needs_keys, staging, options).await?;
    let after = plan::plan(records, &live, mode, &scope);
    let conflicting: HashSet<&str> = conflicts.iter().map(String::as_str).collect();
    let differences = after
        .items
        .iter()
        .filter(|i| i.action != plan::Action::Unchanged && !conflicting.contains(i.id.as_str()))
        .map(|i| Difference {
            id: i.key(),
            problem: missing_or_extra(i.action),
            aspects: i.aspects.iter().map(|a| a.as_str()).collect(),
        })
        .collect();
    Ok(Verification { differences, keys })
}

/// Read the keys of `needed` into `live` the way [`key_way`] picks; an export job that fails
/// falls back to registry reads, and the report says so.
async fn read_keys(
    client: &HubClient,
    live: &mut [plan::TargetRecord],
    needed: &[(String, Option<String>)],
    staging: Option<&Staging>,
    options: &RestoreOptions,
) -> Result<KeyCheck, Error> {
    let mut note = None;
    let way = key_way(needed.len(), staging.is_some(), options.key_read_job_min);
    if let (KeyWay::ExportJob, Some(staging)) = (way, staging) {
        match super::job::read_target_keys(client, staging, &options.poll, live, needed).await {
            Ok(job_id) => {
                return Ok(KeyCheck {
                    checked: needed.len(),
                    of: needed.len(),
                    via: "export-job",
                    job_id: Some(job_id),
                    note: None,
                });
            }
            Err(e) => {
                tracing::warn!("the export job reading the target's keys failed: {e}");
                note = Some(format!(
                    "the export job reading them failed ({}), so registry reads were used",
                    e.code()
                ));
            }
        }
    }
    let chosen: Vec<_> = if needed.len() <= VERIFY_KEY_READS_MAX {
        needed.to_vec()
    } else {
        sample(needed, VERIFY_KEY_SAMPLE)
    };
    target::fetch_keys(client, live, &chosen)
        .await
        .map_err(Error::Target)?;
    Ok(KeyCheck {
        checked: chosen.len(),
        of: needed.len(),
        via: "registry-reads",
        job_id: None,
        note,
    })
}

/// At most `n` entries spread evenly over `all` (the first always included).
fn sample<T: Clone>(all: &[T], n: usize) -> Vec<T> {
    let step = all.len().div_ceil(n.max(1)).max(1);
    all.iter().step_by(step).cloned().collect()
}

fn missing_or_extra(a: plan::Action) -> &'static str {
    match a {
        plan::Action::Create => "missing",
        plan::Action::Delete => "extra",
        _ => "differs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_reads_every_key_through_a_job_once_enough_are_needed() {
        assert_eq!(key_way(5_000, true, 2_000), KeyWay::ExportJob);
        assert_eq!(key_way(100_000, true, 2_000), KeyWay::ExportJob);
        assert_eq!(key_way(1, true, 1), KeyWay::ExportJob);
        // Few keys: single reads cover them all without a job.
        assert_eq!(key_way(150, true, 2_000), KeyWay::ReadAll);
        assert_eq!(key_way(0, true, 0), KeyWay::ReadAll);
    }

    #[test]
    fn without_staging_only_a_big_restore_is_sampled() {
        assert_eq!(key_way(VERIFY_KEY_READS_MAX, false, 1), KeyWay::ReadAll);
        assert_eq!(key_way(VERIFY_KEY_READS_MAX + 1, false, 1), KeyWay::Sample);
        assert_eq!(key_way(2_500, true, 5_000), KeyWay::Sample);
    }

    #[test]
    fn the_sample_is_spread_and_bounded() {
        let all: Vec<usize> = (0..2_500).collect();
        let s = sample(&all, VERIFY_KEY_SAMPLE);
        assert!(s.len() <= VERIFY_KEY_SAMPLE && s.len() >= VERIFY_KEY_SAMPLE - 1);
        assert_eq!(s[0], 0);
        assert!(
            *s.last().unwrap() > 2_400,
            "reaches the end: {:?}",
            s.last()
        );
    }

    #[test]
    fn the_report_says_whether_all_keys_or_a_sample_were_proven() {
        let all = KeyCheck {
            checked: 300,
            of: 300,
            via: "export-job",
            job_id: Some("j1".into()),
            note: None,
        };
        assert_eq!(all.label(), "all");
        assert!(all.sentence().contains("all 300"));
        assert!(all.sentence().contains("export job j1"));
        let some = KeyCheck {
            checked: 100,
            of: 2_500,
            via: "registry-reads",
            job_id: None,
            note: Some("the export job reading them failed (job_failed)".into()),
        };
        assert_eq!(some.label(), "sample of 100");
        let text = some.sentence();
        for part in [
            "only a sample of 100 of 2500",
            "not read back",
            "--staging",
            "failed",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }
}
