//! Reading the target hub through one export job of it: its keys for the records planning could
//! not tell apart ([`read_target_keys`]), or all of it for verification ([`read_target`]) — a job
//! reads thousands of records a second where registry reads are throttled to a few, and paging
//! twins would still miss the keys.
//!
//! The export blob holds every key of the target in **plaintext**: it is streamed (never held
//! whole, never on local disk) and deleted with the run's other staging blobs as soon as it is
//! read, on failure too.
//!
//! Must not: decide what differs (the plan does), write to the hub.

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::Value;

use super::outcome::JobError;
use super::plan::TargetRecord;
use crate::hub::{HubClient, JobProperties, PollPolicy};
use crate::staging::Staging;
use crate::store::ByteStream;
use crate::store::sas::SasPermissions;

const TARGET_EXPORT_FILE: &str = "target-devices.txt";

/// Read the target's keys for `wanted` records with one export job instead of one registry read
/// each (hubs throttle those to ~100 a minute per unit; a job reads thousands a second). The
/// export blob holds every key of the target in plaintext: it is read once and deleted with the
/// run's other staging blobs, on failure too. Returns the job id.
pub async fn read_target_keys(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    target: &mut [TargetRecord],
    wanted: &[(String, Option<String>)],
) -> Result<String, JobError> {
    let wanted: HashSet<(&str, Option<&str>)> = wanted
        .iter()
        .map(|(i, m)| (i.as_str(), m.as_deref()))
        .collect();
    let (job_id, ()) = export_target(client, staging, poll, async |mut stream| {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            whole_lines(&mut pending, &chunk?, |line| {
                fold_key_line(line, &wanted, target);
            });
        }
        fold_key_line(&pending, &wanted, target);
        Ok(())
    })
    .await?;
    Ok(job_id)
}

/// Read the whole target through one export job: every device and (non-system) module with its
/// keys, canonical, sorted by `(id, moduleId)` like [`super::live::read`]. An export line holds
/// all a twin read does (status, auth, tags, desired properties, capabilities, scopes) plus the
/// keys, so one job replaces paging every twin and reading keys after. Returns the job id and
/// the records; the plaintext export blob is deleted as in [`read_target_keys`].
pub async fn read_target(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
) -> Result<(String, Vec<TargetRecord>), JobError> {
    let (job_id, mut out) = export_target(client, staging, poll, records_of).await?;
    out.sort_by(|a, b| {
        super::plan::order(
            (&a.id, a.module_id.as_deref()),
            (&b.id, b.module_id.as_deref()),
        )
    });
    out.dedup_by(|a, b| a.id == b.id && a.module_id == b.module_id);
    Ok((job_id, out))
}

/// Bytes of export lines parsed at once (over threads) while the next ones download.
const PARSE_BATCH: usize = 4 * 1024 * 1024;

/// The target records of an export stream, parsed on blocking threads while it downloads.
/// Chunk by chunk: a big hub's export (keys included) is never held whole, and never touches
/// the local disk.
async fn records_of(mut stream: ByteStream) -> Result<Vec<TargetRecord>, JobError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let parser = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            pending.extend_from_slice(&chunk);
            if pending.len() >= PARSE_BATCH {
                parse_lines(&mut pending, &mut out, false);
            }
        }
        parse_lines(&mut pending, &mut out, true);
        out
    });
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let out = parser.await.map_err(|e| JobError::Task(e.to_string()))?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Parse the whole lines in `pending` (all of it when `last`) into `out`, leaving a cut line.
fn parse_lines(pending: &mut Vec<u8>, out: &mut Vec<TargetRecord>, last: bool) {
    let end = if last {
        pending.len()
    } else {
        match pending.iter().rposition(|b| *b == b'\n') {
            #[allow(clippy::arithmetic_side_effects, reason = "i < pending.len()")]
            Some(i) => i + 1,
            None => return,
        }
    };
    let lines: Vec<&[u8]> = pending[..end].split(|b| *b == b'\n').collect();
    out.extend(
        super::in_parallel(&lines, |l| export_record(l))
            .into_iter()
            .flatten(),
    );
    pending.drain(..end);
}

/// Run an export job of the target (keys, no configurations) and hand its blob to `consume`;
/// the blob is deleted afterwards, on failure too. Returns the job id and what `consume` made.
async fn export_target<T>(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
    consume: impl AsyncFnOnce(ByteStream) -> Result<T, JobError>,
) -> Result<(String, T), JobError> {
    let result = async {
        let (job_id, stream) = export_blob(client, staging, poll).await?;
        Ok((job_id, consume(stream).await?))
    }
    .await;
    let cleaned = if result.is_ok() {
        staging.cleanup().await
    } else {
        // The export job may still be writing keys in plaintext: cancelled and awaited first.
        staging.finish_failed(&[client]).await
    };
    if let Err(e) = cleaned {
        tracing::warn!(
            "the target's export staging could not all be removed ({e}); the next run through this staging container sweeps what is left"
        );
    }
    result
}

/// Run the export job and open its blob.
async fn export_blob(
    client: &HubClient,
    staging: &Staging,
    poll: &PollPolicy,
) -> Result<(String, ByteStream), JobError> {
    let uri = staging.hand_out(SasPermissions::export_output()).await?;
    let mut job = JobProperties::export(
        uri.expose(),
        &staging.blob(TARGET_EXPORT_FILE),
        &staging.blob("target-configurations.txt"),
    );
    job.include_configurations = Some(false);
    job.configurations_blob_name = None;
    let created = client.create_job(&job).await?;
    let job_id = created.id().to_owned();
    staging.record_job(&job_id).await?;
    tracing::info!(hub = client.name(), job_id, "export job reading the target");
    let done = client.wait_for_job(&job_id, poll, |_| {}).await?;
    JobError::unless_completed(client.name(), &job_id, &done)?;
    let stream = staging
        .store()
        .get(&staging.object(TARGET_EXPORT_FILE))
        .await?;
    Ok((job_id, stream))
}

/// Append `chunk` to `pending` and hand every complete line to `each`; a line cut by the chunk
/// boundary stays in `pending` for the next chunk (or the end).
fn whole_lines(pending: &mut Vec<u8>, chunk: &[u8], mut each: impl FnMut(&[u8])) {
    pending.extend_from_slice(chunk);
    let Some(last) = pending.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    pending[..last].split(|b| *b == b'\n').for_each(&mut each);
    pending.drain(..=last);
}

/// An export line as JSON; `None` for the service's non-JSON lines (comments, warnings, blank
/// lines; docs/azure.md). A UTF-8 BOM and a `\r` before the newline are accepted.
fn export_value(line: &[u8]) -> Option<Value> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    if line[start] != b'{' {
        return None;
    }
    serde_json::from_slice(&line[start..]).ok()
}

/// A target record from one export line (keys known); `None` for a system module or a line
/// that is not a record.
pub(super) fn export_record(line: &[u8]) -> Option<TargetRecord> {
    let v = export_value(line)?;
    let id = v.get("id")?.as_str()?.to_owned();
    let module_id = v.get("moduleId").and_then(Value::as_str).map(str::to_owned);
    if super::lines::is_system_module(module_id.as_deref()) {
        return None;
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let etag = text("eTag");
    let own_scope = if module_id.is_none() {
        text("deviceScope")
    } else {
        None
    };
    Some(TargetRecord {
        etag,
        own_scope,
        canonical: super::canonical::from_export_value(v, true),
        keys_known: true,
        id,
        module_id,
    })
}

/// Fold the keys of one export line into `target` when it is one of the `wanted` records.
fn fold_key_line(line: &[u8], wanted: &HashSet<(&str, Option<&str>)>, target: &mut [TargetRecord]) {
    let Some(v) = export_value(line) else {
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_streamed_in_odd_chunks_gives_every_record_once() {
        let mut text = String::from("\u{feff}a comment the hub wrote\r\n");
        for i in 0..20_000 {
            let line = json!({"id": format!("dev-{i:05}"), "eTag": "MQ==", "status": "enabled",
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "cHJp", "secondaryKey": "c2Vj"}},
                "tags": {"pad": "x".repeat(200)}});
            text.push_str(&line.to_string());
            text.push_str("\r\n");
        }
        text.push_str(r#"{"id":"dev-00000","moduleId":"$edgeHub","status":"enabled"}"#);
        text.push('\n');
        text.push_str(r#"{"id":"last","status":"enabled"}"#);
        let bytes = Bytes::from(text);
        assert!(bytes.len() > PARSE_BATCH, "more than one batch");
        let chunks: Vec<Result<Bytes, crate::store::Error>> = bytes
            .chunks(65_521)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stream: ByteStream = Box::pin(futures::stream::iter(chunks));
        let got = records_of(stream).await.unwrap();
        assert_eq!(got.len(), 20_001, "no comment, no system module");
        assert_eq!(got[0].id, "dev-00000");
        assert_eq!(got[19_999].id, "dev-19999");
        assert_eq!(got[20_000].id, "last", "the unterminated last line counts");
        assert!(
            got.iter()
                .all(|r| r.keys_known && r.etag.as_deref() != Some(""))
        );
        assert!(canonical_has_keys(&got[5]));
    }

    fn canonical_has_keys(r: &TargetRecord) -> bool {
        super::super::canonical::has_keys(&r.canonical)
    }
}
