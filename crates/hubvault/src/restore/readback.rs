//! Verification after apply: re-read the target and list what still differs from the snapshot.
//!
//! Every record is compared on everything a restore carries over; how the keys were read back is
//! said in the report ([`KeyCheck`]) — a user must know what was proven:
//!
//! - `--verify full`, staging at hand and many records with keys: ONE export job of the target
//!   reads it **all** ([`super::export::read_target`]; its blob is deleted right after, also on
//!   failure). An export line holds what a twin read does plus the keys, so no twins are paged;
//! - `--verify full` otherwise (or when that job failed): twin queries read everything but keys,
//!   and **every** key follows by single registry reads (slow on a big hub: hubs throttle them);
//! - `--verify sample=N`: twin queries list every id and read everything but keys (so missing
//!   and extra identities are always named), and the keys of N identities chosen at random,
//!   stratified by kind ([`super::sample`]), with the power of that N stated.
//!
//! Must not: write to the hub, print.

use std::collections::{HashMap, HashSet};

use super::canonical;
use super::outcome::{Difference, KeyCheck, KeyVia, Problem};
use super::plan::{self, Mode, Scope};
use super::sample::{Kind, Verify, kind_of, power, stratified};
use super::{Error, RestoreOptions, live};
use crate::diagnostic::Diagnostic as _;
use crate::hub::HubClient;
use crate::staging::Staging;

/// Up to how many keys verification reads one by one when no export job reads them.
pub const VERIFY_KEY_READS_MAX: usize = 1_000;

/// How the keys are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWay {
    /// One export job of the target, through staging: every key.
    ExportJob,
    /// A registry read per record: every key.
    ReadAll,
}

/// The way `--verify full` reads `needed` keys (pure): an export job when staging is at hand and
/// at least `job_min` are needed, or more than single reads comfortably cover; else all by
/// single reads.
pub fn key_way(needed: usize, staging: bool, job_min: usize) -> KeyWay {
    if staging && (needed >= job_min.max(1) || needed > VERIFY_KEY_READS_MAX) {
        KeyWay::ExportJob
    } else {
        KeyWay::ReadAll
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
    let with_keys = records
        .iter()
        .filter(|r| {
            scope.includes(&r.id, r.module_id.as_deref()) && canonical::has_keys(&r.canonical)
        })
        .count();
    let mut note = None;
    let full = options.verify == Verify::Full;
    if let (true, KeyWay::ExportJob, Some(staging)) = (
        full,
        key_way(with_keys, staging.is_some(), options.key_read_job_min),
        staging,
    ) {
        // One export job reads everything a twin read would, and every key besides: no paging
        // of twins, one comparison.
        match super::export::read_target(client, staging, &options.poll).await {
            Ok((job_id, live)) => {
                let after = plan::plan(records, &live, mode, &scope);
                let differences = differences(&after, conflicts);
                super::drop_aside((live, after));
                return Ok(Verification {
                    differences,
                    keys: KeyCheck {
                        checked: with_keys,
                        of: with_keys,
                        via: KeyVia::ExportJob,
                        job_id: Some(job_id),
                        note: None,
                        staging_at_hand: true,
                        detects_share: None,
                    },
                });
            }
            Err(e) => {
                tracing::warn!("the export job reading the target failed: {e}");
                note = Some(format!(
                    "the export job reading them failed ({}), so registry reads were used",
                    e.code()
                ));
            }
        }
    }
    let mut live = live::read(client).await.map_err(Error::Target)?;
    let first = plan::plan(records, &live, mode, &scope);
    let sample = match options.verify {
        Verify::Sample(n) => Some(n),
        _ => None,
    };
    let mut keys = read_keys(client, &mut live, records, &first.needs_keys, sample, note).await?;
    keys.staging_at_hand = staging.is_some();
    let after = plan::plan(records, &live, mode, &scope);
    Ok(Verification {
        differences: differences(&after, conflicts),
        keys,
    })
}

/// What a plan made after apply still wants done: the differences (conflicts left out).
fn differences(after: &plan::Plan, conflicts: &[String]) -> Vec<Difference> {
    let conflicting: HashSet<&str> = conflicts.iter().map(String::as_str).collect();
    after
        .items
        .iter()
        .filter(|i| i.action != plan::Action::Unchanged && !conflicting.contains(i.id.as_str()))
        .map(|i| Difference {
            id: i.key(),
            problem: missing_or_extra(i.action),
            aspects: i.aspects.iter().map(|a| a.as_str()).collect(),
        })
        .collect()
}

/// Read the keys of `needed` into `live` by single registry reads: all of them (`--verify full`,
/// or when few), or `sample` of them chosen at random, stratified by kind. `note` says why no
/// export job read them (it failed).
async fn read_keys(
    client: &HubClient,
    live: &mut [plan::TargetRecord],
    records: &[plan::SnapshotRecord],
    needed: &[(String, Option<String>)],
    sample: Option<usize>,
    note: Option<String>,
) -> Result<KeyCheck, Error> {
    let chosen: Vec<_> = match sample {
        Some(n) if n < needed.len() => {
            let kinds: HashMap<(&str, Option<&str>), Kind> = records
                .iter()
                .map(|r| {
                    (
                        (r.id.as_str(), r.module_id.as_deref()),
                        kind_of(&r.canonical),
                    )
                })
                .collect();
            let items: Vec<_> = needed
                .iter()
                .map(|k| {
                    let kind = kinds
                        .get(&(k.0.as_str(), k.1.as_deref()))
                        .copied()
                        .unwrap_or(Kind::Sas);
                    (k.clone(), kind)
                })
                .collect();
            stratified(&items, n, &mut rand::thread_rng())
        }
        _ => needed.to_vec(),
    };
    live::fetch_keys(client, live, &chosen)
        .await
        .map_err(Error::Target)?;
    let detects_share = (chosen.len() < needed.len()).then(|| power(needed.len(), chosen.len()));
    Ok(KeyCheck {
        checked: chosen.len(),
        of: needed.len(),
        via: KeyVia::RegistryReads,
        job_id: None,
        note,
        staging_at_hand: false,
        detects_share,
    })
}

fn missing_or_extra(a: plan::Action) -> Problem {
    match a {
        plan::Action::Create => Problem::Missing,
        plan::Action::Delete => Problem::Extra,
        _ => Problem::Differs,
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

    fn snapshot_record(line: &serde_json::Value) -> plan::SnapshotRecord {
        plan::SnapshotRecord {
            id: line["id"].as_str().unwrap().into(),
            module_id: line["moduleId"].as_str().map(str::to_owned),
            line: serde_json::to_vec(line).unwrap(),
            canonical: canonical::from_export_line(line, true),
        }
    }

    #[test]
    fn the_targets_export_alone_shows_a_wrong_key_a_missing_device_and_a_changed_tag() {
        use serde_json::json;
        let device = |id: &str, key: &str, site: &str| {
            json!({"id": id, "eTag": "MQ==", "status": "enabled",
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": "c2Vj"},
                    "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null}},
                "twinETag": "AAAAAAAAAAE=", "tags": {"site": site},
                "properties": {"desired": {"x": 1}, "reported": {"fw": "1"}},
                "capabilities": {"iotEdge": false}})
        };
        let module = json!({"id": "a", "moduleId": "m", "status": "enabled",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "bW9k", "secondaryKey": "c2Vj"}}});
        let wanted: Vec<_> = [
            device("a", "cHJp", "p7"),
            module.clone(),
            device("b", "cHJp", "p7"),
            device("c", "cHJp", "p7"),
            device("d", "cHJp", "p7"),
        ]
        .iter()
        .map(snapshot_record)
        .collect();
        // The target's export as the hub wrote it: its own etags and reported properties, a
        // system module, a comment line, in its own order, CRLF; `b` has another key, `c` is
        // missing, `d` another tag, and `e` is extra.
        let mut other_etag = device("a", "cHJp", "p7");
        other_etag["eTag"] = json!("OTk=");
        other_etag["properties"]["reported"] = json!({"fw": "2"});
        let system = json!({"id": "a", "moduleId": "$edgeAgent", "status": "enabled", "authentication": null});
        let text = [
            "exported with keys".to_owned(),
            device("d", "cHJp", "p8").to_string(),
            device("b", "b3RoZXI=", "p7").to_string(),
            system.to_string(),
            module.to_string(),
            other_etag.to_string(),
            device("e", "cHJp", "p7").to_string(),
        ]
        .join("\r\n");
        let mut live: Vec<_> = text
            .split('\n')
            .filter_map(|l| super::super::export::export_record(l.as_bytes()))
            .collect();
        live.sort_by(|x, y| {
            plan::order(
                (&x.id, x.module_id.as_deref()),
                (&y.id, y.module_id.as_deref()),
            )
        });
        assert_eq!(live.len(), 5, "no comment, no system module: {live:?}");
        assert!(live.iter().all(|r| r.keys_known));
        let found = |mode| {
            differences(&plan::plan(&wanted, &live, mode, &Scope::default()), &[])
                .iter()
                .map(|d| format!("{} {} {}", d.id, d.problem.as_str(), d.aspects.join(",")))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found(Mode::Upsert),
            ["b differs keys", "c missing ", "d differs tags"]
        );
        assert_eq!(
            found(Mode::Mirror),
            ["b differs keys", "c missing ", "d differs tags", "e extra "]
        );
    }

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
    fn without_staging_full_reads_every_key_one_by_one() {
        assert_eq!(key_way(VERIFY_KEY_READS_MAX, false, 1), KeyWay::ReadAll);
        assert_eq!(
            key_way(VERIFY_KEY_READS_MAX * 50, false, 1),
            KeyWay::ReadAll
        );
    }

    #[test]
    fn with_staging_at_hand_keys_are_never_sampled() {
        // The review's case: 1,755 keyed records, staging configured, the job threshold above.
        for needed in [VERIFY_KEY_READS_MAX + 1, 1_755, 1_999, 2_500] {
            assert_eq!(key_way(needed, true, 5_000), KeyWay::ExportJob, "{needed}");
        }
        assert_eq!(key_way(VERIFY_KEY_READS_MAX, true, 5_000), KeyWay::ReadAll);
    }

    #[test]
    fn the_report_says_whether_all_keys_or_a_sample_were_proven() {
        let all = KeyCheck {
            checked: 300,
            of: 300,
            via: KeyVia::ExportJob,
            job_id: Some("j1".into()),
            note: None,
            staging_at_hand: true,
            detects_share: None,
        };
        assert_eq!(all.label(), "all");
        assert!(all.sentence().contains("all 300"));
        assert!(all.sentence().contains("export job j1"));
        let some = KeyCheck {
            checked: 100,
            of: 2_500,
            via: KeyVia::RegistryReads,
            job_id: None,
            note: Some("the export job reading them failed (job_failed)".into()),
            staging_at_hand: false,
            detects_share: Some(super::power(2_500, 100)),
        };
        assert_eq!(some.label(), "sample of 100");
        let text = some.sentence();
        for part in [
            "a random sample of 100 of 2500",
            "% of them differed",
            "99 % probability",
            "--verify full",
            "failed",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
    }
}
