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
//! (they need the scopes the job just generated) — many of them (`link_job_min`) in a second
//! import job rather than bulk calls, which wait on the registry throttle one after another.
//! Configurations go in the job's configurations blob (`createOrUpdateIfMatchETag`, the only
//! mode the service has for them); deleting one is not something a job can do, so `mirror`
//! deletes them through the API afterwards.
//!
//! Reading the target through an export job (planning's keys, verification) is [`super::export`].
//!
//! Must not: decide what to write (the plan and `apply` do), print.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::{Value, json};

use super::apply::{self, Kind, Passes, Progress};
use super::configurations;
use super::outcome::JobError;
use super::plan::SnapshotRecord;
use crate::hub::{HubClient, JobProperties, PollPolicy};
use crate::staging::Staging;
use crate::store::Store;
use crate::store::sas::SasPermissions;

const DEVICES_FILE: &str = "import-devices.txt";
const CONFIGURATIONS_FILE: &str = "import-configurations.txt";
const LINKS_FILE: &str = "import-links.txt";
/// Written by the service at the root of the output container (docs/azure.md).
const ERROR_LOGS: [&str; 2] = ["importErrors.log", "importConfigErrors.log"];

/// What the job engine did, besides the progress counts.
#[derive(Debug, Default)]
pub struct JobReport {
    pub job_id: Option<String>,
    /// The second import job that set edge links (many of them), if one ran.
    pub link_job_id: Option<String>,
    /// Lines the log named as failed, retried through the bulk engine.
    pub retried: usize,
    /// Staging blobs deleted after the job.
    pub staging_deleted: usize,
    /// Blobs of this hub's earlier, killed runs removed first.
    pub leftovers_removed: usize,
    /// Killed runs (of any hub) found through the staging journal and cleaned up first.
    pub dead_runs: Vec<crate::staging::SweptRun>,
}

/// Run the passes as an import job; staging is cleaned up whatever happens.
pub async fn run(
    client: &HubClient,
    staging: &Staging,
    options: &super::RestoreOptions,
    passes: Passes,
    configs: Option<&configurations::Plan>,
    snapshot: &[SnapshotRecord],
    progress: &mut Progress,
) -> (JobReport, Result<(), JobError>) {
    let mut report = JobReport::default();
    // Blobs of this hub's killed runs (SIGKILL leaves them) go before we add our own.
    match staging.sweep_dead_runs(&[client]).await {
        Ok(swept) => report.dead_runs = swept,
        Err(e) => tracing::warn!("could not look for killed runs in the staging journal: {e}"),
    }
    let older_than = time::OffsetDateTime::now_utc()
        .checked_sub(
            time::Duration::try_from(staging.sas_lifetime()).unwrap_or(time::Duration::DAY),
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    match staging.sweep_leftovers(client, older_than).await {
        Ok(n) => report.leftovers_removed = n,
        Err(e) => tracing::warn!("staging leftovers of earlier runs not removed: {e}"),
    }
    let result = import(
        client,
        staging,
        options,
        passes,
        configs,
        snapshot,
        progress,
        &mut report,
    )
    .await;
    let cleaned = if result.is_ok() {
        cleanup(staging).await
    } else {
        // A job of this run may still write plaintext: cancelled and awaited first.
        staging
            .finish_failed(&[client])
            .await
            .map_err(JobError::from)
    };
    match cleaned {
        Ok(n) => report.staging_deleted = n,
        Err(e) => {
            tracing::warn!(
                "the staging of this run could not all be removed ({e}); the next run through this staging container sweeps what is left"
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
    options: &super::RestoreOptions,
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
    let poll = &options.poll;
    let lines: Vec<Value> = devices.into_iter().chain(modules).chain(deletes).collect();
    let config_lines = configs.map(config_lines).unwrap_or_default();
    if !lines.is_empty() || !config_lines.is_empty() {
        let config_blob = if config_lines.is_empty() {
            None
        } else {
            staging
                .store()
                .put(&staging.object(CONFIGURATIONS_FILE), ndjson(&config_lines))
                .await?;
            Some(staging.blob(CONFIGURATIONS_FILE))
        };
        let job_id = import_job(
            client,
            staging,
            poll,
            DEVICES_FILE,
            &lines,
            config_blob.as_deref(),
        )
        .await?;
        report.job_id = Some(job_id);
        report.retried = settle_log(client, staging, &lines, progress, apply::kind_of).await?;
        if let Some(c) = configs {
            let config_log = read_log(staging, ERROR_LOGS[1]).await?;
            let failures = config_log.len();
            progress.applied.configurations = progress
                .applied
                .configurations
                .saturating_add((c.put.len().saturating_sub(failures)) as u64);
            for entry in config_log {
                progress.failed.push(super::bulk::Failure {
                    id: "configuration".into(),
                    code: entry.0,
                    message: entry.1,
                });
            }
        }
    }
    // Retried and counted: the lines (every key of the restore among them) are done with.
    super::drop_aside(lines);
    if !links.is_empty() {
        options.timeline.begin("links");
    }
    let link_lines = apply::link_lines(client, &links, snapshot, &mut progress.failed).await?;
    if link_lines.len() >= options.link_job_min.max(1) {
        // Many links: a second import job sets them, where bulk calls (100 lines each) would
        // wait on the registry throttle call after call. Its log is its own: the first job's
        // was read above and goes first.
        staging.clear_job_logs().await?;
        let job_id = import_job(client, staging, poll, LINKS_FILE, &link_lines, None).await?;
        report.link_job_id = Some(job_id);
        let retried = settle_log(client, staging, &link_lines, progress, |_| Kind::Link).await?;
        report.retried = report.retried.saturating_add(retried);
    } else {
        apply::settle(
            super::bulk::apply(client, link_lines).await,
            progress,
            |_| Kind::Link,
        )?;
    }
    if let Some(c) = configs {
        let deletes = configurations::Plan {
            delete: c.delete.clone(),
            ..configurations::Plan::default()
        };
        configurations::apply(client, &deletes, progress).await?;
    }
    Ok(())
}

/// Write `lines` to the staging blob `file` and run one import job of it (with the
/// configurations blob, if any) to its end. Returns the job id; a job that did not complete is
/// an error.
async fn import_job(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    file: &str,
    lines: &[Value],
    config_blob: Option<&str>,
) -> Result<String, JobError> {
    put_lines(staging.store().as_ref(), &staging.object(file), lines).await?;
    let input = staging.hand_out(SasPermissions::import_input()).await?;
    let output = staging.hand_out(SasPermissions::import_output()).await?;
    // The job's error logs land at the container root: from here until cleanup, this run
    // is the container's only importer.
    staging.lock_imports(poll.interval).await?;
    let job = JobProperties::import(
        input.expose(),
        &staging.blob(file),
        config_blob,
        output.expose(),
    );
    let created = client.create_job(&job).await?;
    let job_id = created.id().to_owned();
    staging.record_job(&job_id).await?;
    tracing::info!(hub = client.name(), job_id, file, "import job created");
    let done = client
        .wait_for_job(&job_id, poll, |j| {
            tracing::info!(job_id = j.id(), status = ?j.status(), progress = j.progress, "import job");
        })
        .await?;
    JobError::unless_completed(client.name(), &job_id, &done)?;
    Ok(job_id)
}

/// Count the lines a finished import job applied, and retry the ones its `importErrors.log`
/// names through the bulk engine (which reports each one that still fails). Returns how many
/// were retried.
async fn settle_log(
    client: &HubClient,
    staging: &Staging,
    lines: &[Value],
    progress: &mut Progress,
    kind: impl Fn(&Value) -> Kind,
) -> Result<usize, JobError> {
    let log = read_log(staging, ERROR_LOGS[0]).await?;
    let failed = failed_lines(lines, &log, progress);
    for (i, line) in lines.iter().enumerate() {
        if !failed.contains(&i) {
            apply::count(&mut progress.applied, kind(line));
        }
    }
    let retry: Vec<Value> = failed.iter().map(|&i| lines[i].clone()).collect();
    let retried = retry.len();
    if !retry.is_empty() {
        let kinds: std::collections::HashMap<String, Kind> = retry
            .iter()
            .map(|l| (super::bulk::entry_key(l), kind(l)))
            .collect();
        apply::settle(super::bulk::apply(client, retry).await, progress, |k| {
            kinds.get(k).copied().unwrap_or(Kind::Update)
        })?;
    }
    Ok(retried)
}

/// Bytes of JSON lines handed to the store at once while the next ones are serialised.
const PUT_CHUNK: usize = 4 * 1024 * 1024;

/// Write `lines` as JSON lines to `name`, serialising the next chunk while the store uploads the
/// last one (a big import blob is tens of megabytes: serialising all of it first, then
/// uploading, did the two one after the other).
async fn put_lines(store: &dyn Store, name: &str, lines: &[Value]) -> Result<(), JobError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let produce = async move {
        let mut buf = Vec::with_capacity(PUT_CHUNK + 64 * 1024);
        for line in lines {
            // A `Value` always serialises; `to_writer` into a Vec cannot fail on I/O.
            let _ = serde_json::to_writer(&mut buf, line);
            buf.push(b'\n');
            if buf.len() >= PUT_CHUNK {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(PUT_CHUNK + 64 * 1024));
                if tx.send(Bytes::from(full)).await.is_err() {
                    return;
                }
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(Bytes::from(buf)).await;
        }
    };
    let consume = async {
        let mut writer = store.create(name).await?;
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = writer.write(chunk).await {
                rx.close();
                let _ = writer.abort().await;
                return Err(e);
            }
        }
        writer.finish().await
    };
    let ((), written) = tokio::join!(produce, consume);
    written?;
    Ok(())
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

/// `(code, message)` per log line; a missing log means no errors (docs/azure.md). A message
/// that quotes the line (400012 quotes it whole, keys included) is replaced by a safe one.
async fn read_log(staging: &Staging, name: &str) -> Result<Vec<(String, String)>, JobError> {
    let Some(bytes) = staging.job_log(name).await? else {
        return Ok(Vec::new());
    };
    Ok(parse_error_log(&bytes))
}

/// `(errorCode, errorStatus)` of each JSON line of an `importErrors.log` (docs/azure.md); other
/// lines are skipped. Any bytes are accepted (the log is the hub's, read from storage).
pub fn parse_error_log(bytes: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            // A code is what names the failure in reports: an empty one is no code.
            let code = match &v["errorCode"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) if !s.trim().is_empty() => s.clone(),
                _ => "unknown".into(),
            };
            let status = v["errorStatus"].as_str().unwrap_or_default();
            (code, status.to_owned())
        })
        .collect()
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
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_put_in_chunks_arrive_whole_and_in_order() {
        let store = crate::store::memory::MemoryStore::new();
        let lines: Vec<Value> = (0..30_000)
            .map(|i| json!({"id": format!("dev-{i:05}"), "pad": "x".repeat(300)}))
            .collect();
        put_lines(&store, "import.txt", &lines).await.unwrap();
        let got = store.get_bytes("import.txt").await.unwrap();
        assert!(
            got.len() > 2 * PUT_CHUNK,
            "more than one chunk: {}",
            got.len()
        );
        assert_eq!(got, ndjson(&lines));
        put_lines(&store, "empty.txt", &[]).await.unwrap();
        assert!(store.get_bytes("empty.txt").await.unwrap().is_empty());
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
