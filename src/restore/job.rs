//! The job engine: one import job through the run's staging container.
//!
//! The import blob holds every device key in **plaintext**, so it lives only as long as the job:
//! written under `staging/<hub>/<run-id>/`, handed to the hub with a freshly minted,
//! least-privilege SAS, and deleted as soon as the job has ended — on success, on failure, and
//! (from the command) on Ctrl-C — together with the job's `importErrors.log` /
//! `importConfigErrors.log`, which the service writes at the container **root** and which may
//! quote a failed line (keys included). Because those logs are per container, not per run, the
//! job is created only under the container's import lock ([`Staging::lock_imports`]), held until
//! the logs are read and deleted: another restore through the same container waits its turn.
//!
//! The log says which lines failed; only those are retried, through the bulk engine, which then
//! reports each one that still fails with its own code. Edge links follow as in the bulk engine
//! (they need the scopes the job just generated). Configurations go in the job's configurations
//! blob (`createOrUpdateIfMatchETag`, the only mode the service has for them); deleting one is
//! not something a job can do, so `mirror` deletes them through the API afterwards.
//!
//! Must not: decide what to write (the plan and `apply` do), print.

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::apply::{self, Kind, Passes, Progress};
use super::configurations;
use super::plan::SnapshotRecord;
use crate::hub::{self, HubClient, JobProperties, JobStatus, PollPolicy};
use crate::staging::Staging;
use crate::store::sas::{SasPermissions, redact_sas};

const DEVICES_FILE: &str = "import-devices.txt";
const CONFIGURATIONS_FILE: &str = "import-configurations.txt";
/// Written by the service at the root of the output container (contract §4.3).
const ERROR_LOGS: [&str; 2] = ["importErrors.log", "importConfigErrors.log"];

/// Why the job engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Hub(#[from] hub::Error),
    #[error(transparent)]
    Staging(#[from] crate::staging::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(
        "import job {job_id} on {hub} ended {status} ({reason}) and may have applied part of its lines; run the same restore again, it plans against what is on the hub now"
    )]
    Failed {
        hub: String,
        job_id: String,
        status: String,
        reason: String,
    },
}

impl JobError {
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Hub(e) => e.code(),
            JobError::Staging(e) => e.code(),
            JobError::Store(e) => e.code(),
            JobError::Failed { .. } => "restore_job_failed",
        }
    }
}

/// What the job engine did, besides the progress counts.
#[derive(Debug, Default)]
pub struct JobReport {
    pub job_id: Option<String>,
    /// Lines the log named as failed, retried through the bulk engine.
    pub retried: usize,
    /// Staging blobs deleted after the job.
    pub staging_deleted: usize,
    /// Blobs of this hub's earlier, killed runs removed first.
    pub leftovers_removed: usize,
}

/// Run the passes as an import job; staging is cleaned up whatever happens.
pub async fn run(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    passes: Passes,
    configs: Option<&configurations::Plan>,
    snapshot: &[SnapshotRecord],
    progress: &mut Progress,
) -> (JobReport, Result<(), JobError>) {
    let mut report = JobReport::default();
    // Blobs of this hub's killed runs (SIGKILL leaves them) go before we add our own.
    let older_than = time::OffsetDateTime::now_utc() - staging.sas_lifetime();
    match staging.sweep_leftovers(client, older_than).await {
        Ok(n) => report.leftovers_removed = n,
        Err(e) => tracing::warn!("staging leftovers of earlier runs not removed: {e}"),
    }
    let result = import(
        client,
        staging,
        poll,
        passes,
        configs,
        snapshot,
        progress,
        &mut report,
    )
    .await;
    let cleaned = cleanup(staging).await;
    match cleaned {
        Ok(n) => report.staging_deleted = n,
        Err(e) => {
            tracing::warn!(
                "staging blobs of this run could not be deleted ({e}); the next run of this hub removes them"
            );
            if result.is_ok() {
                return (report, Err(e));
            }
        }
    }
    (report, result)
}

/// Delete this run's blobs and the job's error logs, and end the import lock.
pub async fn cleanup(staging: &Staging) -> Result<usize, JobError> {
    Ok(staging.cleanup().await?)
}

#[allow(clippy::too_many_arguments, reason = "one engine run's whole context")]
async fn import(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    passes: Passes,
    configs: Option<&configurations::Plan>,
    snapshot: &[SnapshotRecord],
    progress: &mut Progress,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let Passes {
        devices,
        modules,
        links,
        deletes,
    } = passes;
    let lines: Vec<Value> = devices.into_iter().chain(modules).chain(deletes).collect();
    let config_lines = configs.map(config_lines).unwrap_or_default();
    if !lines.is_empty() || !config_lines.is_empty() {
        staging
            .store()
            .put(&staging.object(DEVICES_FILE), ndjson(&lines))
            .await?;
        let config_blob = if config_lines.is_empty() {
            None
        } else {
            staging
                .store()
                .put(&staging.object(CONFIGURATIONS_FILE), ndjson(&config_lines))
                .await?;
            Some(staging.blob(CONFIGURATIONS_FILE))
        };
        let input = staging.job_container_uri(SasPermissions::import_input())?;
        let output = staging.job_container_uri(SasPermissions::import_output())?;
        // The job's error logs land at the container root: from here until cleanup, this run
        // is the container's only importer.
        staging.lock_imports(poll.interval).await?;
        let job = JobProperties::import(
            input.expose(),
            &staging.blob(DEVICES_FILE),
            config_blob.as_deref(),
            output.expose(),
        );
        let created = client.create_job(&job).await?;
        let job_id = created.id().to_owned();
        report.job_id = Some(job_id.clone());
        tracing::info!(hub = client.name(), job_id, "import job created");
        let done = client
            .wait_for_job(&job_id, poll, |j| {
                tracing::info!(job_id = j.id(), status = ?j.status(), progress = j.progress, "import job");
            })
            .await?;
        if done.status() != JobStatus::Completed {
            return Err(JobError::Failed {
                hub: client.name().to_owned(),
                job_id,
                status: format!("{:?}", done.status()).to_ascii_lowercase(),
                reason: redact_sas(done.failure_reason.as_deref().unwrap_or("no reason given")),
            });
        }
        let log = read_log(staging, ERROR_LOGS[0]).await?;
        let failed = failed_lines(&lines, &log, progress);
        for (i, line) in lines.iter().enumerate() {
            if !failed.contains(&i) {
                apply::count(&mut progress.applied, apply::kind_of(line));
            }
        }
        let retry: Vec<Value> = failed.iter().map(|&i| lines[i].clone()).collect();
        report.retried = retry.len();
        if !retry.is_empty() {
            let kinds: std::collections::HashMap<String, Kind> = retry
                .iter()
                .map(|l| (super::bulk::entry_key(l), apply::kind_of(l)))
                .collect();
            apply::settle(super::bulk::apply(client, retry).await, progress, |k| {
                kinds.get(k).copied().unwrap_or(Kind::Update)
            })?;
        }
        if let Some(c) = configs {
            let config_log = read_log(staging, ERROR_LOGS[1]).await?;
            let failures = config_log.len();
            progress.applied.configurations += (c.put.len().saturating_sub(failures)) as u64;
            for entry in config_log {
                progress.failed.push(super::bulk::Failure {
                    id: "configuration".into(),
                    code: entry.0,
                    message: entry.1,
                });
            }
        }
    }
    let link_lines = apply::link_lines(client, &links, snapshot, &mut progress.failed).await?;
    apply::settle(
        super::bulk::apply(client, link_lines).await,
        progress,
        |_| Kind::Link,
    )?;
    if let Some(c) = configs {
        let deletes = configurations::Plan {
            delete: c.delete.clone(),
            ..configurations::Plan::default()
        };
        configurations::apply(client, &deletes, progress).await?;
    }
    Ok(())
}

const TARGET_EXPORT_FILE: &str = "target-devices.txt";

/// Read the target's keys for `wanted` records with one export job instead of one registry read
/// each (hubs throttle those to ~100 a minute per unit; a job reads thousands a second). The
/// export blob holds every key of the target in plaintext: it is read once and deleted with the
/// run's other staging blobs, on failure too. Returns the job id.
pub async fn read_target_keys(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    target: &mut [super::plan::TargetRecord],
    wanted: &[(String, Option<String>)],
) -> Result<String, JobError> {
    let result = export_keys(client, staging, poll, target, wanted).await;
    if let Err(e) = staging.cleanup().await {
        tracing::warn!(
            "the target's export blob could not be deleted ({e}); the next run of this hub removes it"
        );
    }
    result
}

async fn export_keys(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    target: &mut [super::plan::TargetRecord],
    wanted: &[(String, Option<String>)],
) -> Result<String, JobError> {
    let uri = staging.job_container_uri(SasPermissions::export_output())?;
    let mut job = JobProperties::export(
        uri.expose(),
        &staging.blob(TARGET_EXPORT_FILE),
        &staging.blob("target-configurations.txt"),
    );
    job.include_configurations = Some(false);
    job.configurations_blob_name = None;
    let created = client.create_job(&job).await?;
    let job_id = created.id().to_owned();
    tracing::info!(
        hub = client.name(),
        job_id,
        "export job reading the target's keys"
    );
    let done = client.wait_for_job(&job_id, poll, |_| {}).await?;
    if done.status() != JobStatus::Completed {
        return Err(JobError::Failed {
            hub: client.name().to_owned(),
            job_id,
            status: format!("{:?}", done.status()).to_ascii_lowercase(),
            reason: redact_sas(done.failure_reason.as_deref().unwrap_or("no reason given")),
        });
    }
    // Streamed chunk by chunk: a big hub's export (keys included) is never held whole, and
    // never touches the local disk.
    let mut stream = staging
        .store()
        .get(&staging.object(TARGET_EXPORT_FILE))
        .await?;
    let wanted: HashSet<(&str, Option<&str>)> = wanted
        .iter()
        .map(|(i, m)| (i.as_str(), m.as_deref()))
        .collect();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        whole_lines(&mut pending, &chunk?, |line| {
            fold_key_line(line, &wanted, target);
        });
    }
    fold_key_line(&pending, &wanted, target);
    Ok(job_id)
}

/// Append `chunk` to `pending` and hand every complete line to `each`; a line cut by the chunk
/// boundary stays in `pending` for the next chunk (or the end).
fn whole_lines(pending: &mut Vec<u8>, chunk: &[u8], mut each: impl FnMut(&[u8])) {
    pending.extend_from_slice(chunk);
    let mut start = 0;
    while let Some(n) = pending[start..].iter().position(|b| *b == b'\n') {
        each(&pending[start..start + n]);
        start += n + 1;
    }
    pending.drain(..start);
}

/// Fold the keys of one export line into `target` when it is one of the `wanted` records.
fn fold_key_line(
    line: &[u8],
    wanted: &HashSet<(&str, Option<&str>)>,
    target: &mut [super::plan::TargetRecord],
) {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return;
    };
    let (Some(id), module) = (v["id"].as_str(), v["moduleId"].as_str()) else {
        return;
    };
    if !wanted.contains(&(id, module)) {
        return;
    }
    let at = target
        .binary_search_by(|t| super::plan::order((&t.id, t.module_id.as_deref()), (id, module)));
    if let Ok(i) = at {
        let record = &mut target[i];
        record.canonical =
            super::canonical::with_keys(record.canonical.clone(), &v["authentication"]);
        record.keys_known = true;
    }
}

fn ndjson(lines: &[Value]) -> Bytes {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.to_string().as_bytes());
        out.push(b'\n');
    }
    Bytes::from(out)
}

fn config_lines(plan: &configurations::Plan) -> Vec<Value> {
    plan.put
        .iter()
        .map(|(c, etag)| {
            let mut line = c.clone();
            line["importMode"] = json!("createOrUpdateIfMatchETag");
            if let Some(e) = etag.as_deref().filter(|e| *e != "*") {
                line["etag"] = json!(e);
            }
            line
        })
        .collect()
}

/// `(code, message)` per log line; a missing log means no errors (contract §4.3). A message
/// that quotes the line (400012 quotes it whole, keys included) is replaced by a safe one.
async fn read_log(staging: &Staging, name: &str) -> Result<Vec<(String, String)>, JobError> {
    let Some(bytes) = staging.job_log(name).await? else {
        return Ok(Vec::new());
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let code = match &v["errorCode"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => "unknown".into(),
            };
            let status = v["errorStatus"].as_str().unwrap_or_default();
            (code, status.to_owned())
        })
        .collect())
}

/// The single-quoted names in a log message (`A device with ID 'pump-1' …`).
fn quoted(message: &str) -> Vec<&str> {
    message.split('\'').skip(1).step_by(2).collect()
}

/// Indexes of the lines the log names. A module line matches when its device and module are
/// both named in one log line; a device line when its id is named and none of its modules is.
/// Log lines that name nothing we sent become failures of their own (with a safe message).
fn failed_lines(
    lines: &[Value],
    log: &[(String, String)],
    progress: &mut Progress,
) -> HashSet<usize> {
    let mut out = HashSet::new();
    for (code, message) in log {
        let names = quoted(message);
        let mut hit = None;
        for (i, line) in lines.iter().enumerate() {
            let id = line["id"].as_str().unwrap_or_default();
            if !names.contains(&id) {
                continue;
            }
            match line["moduleId"].as_str() {
                Some(m) if names.contains(&m) => hit = Some(i),
                None if hit.is_none() => hit = Some(i),
                _ => {}
            }
        }
        match hit {
            Some(i) => {
                out.insert(i);
            }
            None => progress.failed.push(super::bulk::Failure {
                id: "<unknown line>".into(),
                code: code.clone(),
                message: if message.contains('{') {
                    "the hub could not read an import line".into()
                } else {
                    message.clone()
                },
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_cut_by_chunk_boundaries_arrive_whole() {
        let text = b"{\"id\":\"a\"}\n{\"id\":\"b\",\"moduleId\":\"m\"}\n{\"id\":\"c\"}";
        for size in [1, 3, 7, 64] {
            let mut pending = Vec::new();
            let mut got: Vec<String> = Vec::new();
            for chunk in text.chunks(size) {
                whole_lines(&mut pending, chunk, |l| {
                    got.push(String::from_utf8_lossy(l).into_owned());
                });
            }
            assert_eq!(
                got,
                [r#"{"id":"a"}"#, r#"{"id":"b","moduleId":"m"}"#],
                "{size}"
            );
            assert_eq!(
                pending, br#"{"id":"c"}"#,
                "the unterminated last line is left over"
            );
        }
    }

    #[test]
    fn log_lines_name_the_lines_to_retry() {
        let lines = vec![
            json!({"id": "pump-1", "importMode": "create"}),
            json!({"id": "gw-1", "importMode": "create"}),
            json!({"id": "gw-1", "moduleId": "filter", "importMode": "create"}),
            json!({"id": "cam-9", "importMode": "deleteIfMatchETag"}),
        ];
        let log = vec![
            ("409001".into(), "A device with ID 'pump-1' is already registered.".into()),
            ("409301".into(), "Module 'filter' already exists on device 'gw-1'.".into()),
            ("400012".into(), "Invalid device format in line: {\"id\":\"x\",\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"c2VjcmV0\"}}}. bad".into()),
        ];
        let mut progress = Progress::default();
        let failed = failed_lines(&lines, &log, &mut progress);
        let mut got: Vec<usize> = failed.into_iter().collect();
        got.sort_unstable();
        assert_eq!(got, [0, 2]);
        assert_eq!(progress.failed.len(), 1);
        assert!(
            !progress.failed[0].message.contains("c2VjcmV0"),
            "a quoted line never shows"
        );
    }

    #[test]
    fn configuration_lines_use_the_targets_etag() {
        let plan = configurations::Plan {
            put: vec![
                (json!({"id": "new"}), None),
                (json!({"id": "old"}), Some("T9".into())),
            ],
            ..configurations::Plan::default()
        };
        let lines = config_lines(&plan);
        assert_eq!(
            lines[0],
            json!({"id": "new", "importMode": "createOrUpdateIfMatchETag"})
        );
        assert_eq!(lines[1]["etag"], "T9");
    }
}
