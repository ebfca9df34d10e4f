//! The bulk engine: import lines through `POST /devices`, at most 100 per call, no staging.
//!
//! Throttling: calls are paced by [`Pacer`] (see `pace.rs`), which learns the hub's sustainable
//! rate from its 429s, with up to `MAX_IN_FLIGHT` calls under way so the pipe stays full. The
//! client hands 429s straight back ([`HubClient::pacing_throttles`]) so the pacer sees every one;
//! a throttled batch goes back in the queue and is resent no sooner than its `Retry-After`, while
//! the others carry on at the lowered rate. Bounded: a batch throttled `MAX_REQUEUES` times
//! stops the engine. Entries that fail on their own are retried only when the error is transient
//! (429/5xx codes); any other per-entry error is reported with its id and code. A fatal error
//! (401002, a bad credential, the hub gone) stops the engine and hands back what was applied so
//! far, so nothing is left unreported.
//!
//! Must not: decide what to write (the plan and `apply` do), print.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::pace::Pacer;
use crate::hub::registry::{BULK_MAX, DeviceRegistryOperationError, ExportImportDevice};
use crate::hub::{self, HubClient};

/// Calls under way at most. The pacer sets the rate; this only has to cover rate × latency
/// (50 calls/s × 200 ms of a busy hub = 10) with room to spare, and bounds memory and sockets.
const MAX_IN_FLIGHT: usize = 32;
/// How often one batch may come back throttled, and one entry be retried after a transient error.
/// With pacing a batch is rarely throttled twice; 30 (each ≥ its `Retry-After`) only ends a
/// storm that never lets up.
const MAX_REQUEUES: u32 = 30;
const MAX_ITEM_RETRIES: u32 = 5;
/// Wait before resending a throttled batch when the hub gives no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// One entry that did not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// `id` or `id/moduleId`.
    pub id: String,
    pub code: String,
    pub message: String,
}

/// What a bulk run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Keys of the entries that applied.
    pub applied: Vec<String>,
    pub failed: Vec<Failure>,
    /// Calls that came back throttled.
    pub throttled: u64,
}

/// A fatal error, with what was applied before it.
#[derive(Debug)]
pub struct Stopped {
    pub error: hub::Error,
    pub outcome: Outcome,
}

struct Batch {
    entries: Vec<(Value, u32)>,
    requeues: u32,
    /// Not to be resent before this (a throttled batch's `Retry-After`).
    not_before: Option<Instant>,
}

/// Apply import lines (each with its `importMode`) in calls of ≤100.
pub async fn apply(client: &HubClient, lines: Vec<Value>) -> Result<Outcome, Stopped> {
    let client = client.pacing_throttles();
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut pending: Vec<(Value, u32)> = lines.into_iter().map(|l| (l, 0)).collect();
    let mut outcome = Outcome::default();
    let memory = format!("{} bulk", client.name());
    let mut pacer = Pacer::for_hub(&memory, Instant::now());
    loop {
        for chunk in std::mem::take(&mut pending).chunks(BULK_MAX) {
            queue.push_back(Batch {
                entries: chunk.to_vec(),
                requeues: 0,
                not_before: None,
            });
        }
        if queue.is_empty() {
            pacer.remember(&memory);
            return Ok(outcome);
        }
        let mut running = FuturesUnordered::new();
        while !queue.is_empty() || !running.is_empty() {
            let start = (running.len() < MAX_IN_FLIGHT)
                .then(|| queue.front())
                .flatten()
                .map(|b| {
                    pacer
                        .next_start(Instant::now())
                        .max(b.not_before.unwrap_or(Instant::now()))
                });
            let answer = tokio::select! {
                () = tokio::time::sleep_until(start.unwrap_or_else(Instant::now)), if start.is_some() => None,
                Some(done) = running.next(), if !running.is_empty() => Some(done),
            };
            let Some((batch, sent_at, result)) = answer else {
                if let Some(batch) = queue.pop_front() {
                    let now = Instant::now();
                    pacer.sent(now);
                    running.push(send(&client, batch, now));
                }
                continue;
            };
            match result {
                Ok(errors) => {
                    pacer.accepted(Instant::now());
                    settle(batch, &errors, &mut outcome, &mut pending);
                }
                Err(error @ hub::Error::Throttled { retry_after, .. })
                    if batch.requeues < MAX_REQUEUES =>
                {
                    let now = Instant::now();
                    outcome.throttled += 1;
                    if pacer.throttled(sent_at, now) {
                        let rate = pacer.rate();
                        tracing::debug!(rate, "bulk call throttled ({error}); slowing down");
                    }
                    queue.push_back(Batch {
                        requeues: batch.requeues + 1,
                        not_before: Some(now + retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
                        ..batch
                    });
                }
                Err(error) => {
                    // Let the calls already in flight finish so their results are reported.
                    while let Some((b, _, r)) = running.next().await {
                        if let Ok(errors) = r {
                            settle(b, &errors, &mut outcome, &mut pending);
                        }
                    }
                    return Err(Stopped { error, outcome });
                }
            }
        }
    }
}

type Sent = (
    Batch,
    Instant,
    Result<Vec<DeviceRegistryOperationError>, hub::Error>,
);

async fn send(client: &HubClient, batch: Batch, sent_at: Instant) -> Sent {
    let devices: Vec<ExportImportDevice> = batch
        .entries
        .iter()
        .filter_map(|(v, _)| serde_json::from_value(v.clone()).ok())
        .collect();
    let result = client.bulk(&devices).await.map(|r| r.errors);
    (batch, sent_at, result)
}

/// Sort a batch's entries into applied, failed, and retried (transient errors).
fn settle(
    batch: Batch,
    errors: &[DeviceRegistryOperationError],
    outcome: &mut Outcome,
    pending: &mut Vec<(Value, u32)>,
) {
    for (line, tries) in batch.entries {
        let key = entry_key(&line);
        let error = errors.iter().find(|e| {
            e.device_id.as_deref() == line.get("id").and_then(Value::as_str)
                && e.module_id.as_deref() == line.get("moduleId").and_then(Value::as_str)
        });
        let Some(error) = error else {
            outcome.applied.push(key);
            continue;
        };
        let code = code_of(error);
        let is_create = line.get("importMode").and_then(Value::as_str) == Some("create");
        if is_create && batch.requeues > 0 && code.starts_with("409") {
            // A throttled call may have been applied before its answer was lost: our own create.
            outcome.applied.push(key);
        } else if transient(&code) && tries < MAX_ITEM_RETRIES {
            pending.push((line, tries + 1));
        } else {
            outcome.failed.push(Failure {
                id: key,
                code,
                message: error.error_status.clone().unwrap_or_default(),
            });
        }
    }
}

/// `id` or `id/moduleId` of an import line.
pub fn entry_key(line: &Value) -> String {
    let id = line.get("id").and_then(Value::as_str).unwrap_or("<no id>");
    match line.get("moduleId").and_then(Value::as_str) {
        Some(m) => format!("{id}/{m}"),
        None => id.to_owned(),
    }
}

/// The error's number when known (`409001`), else its name.
fn code_of(e: &DeviceRegistryOperationError) -> String {
    match (&e.error_code.number, &e.error_code.name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => name.clone(),
        (None, None) => "unknown".to_owned(),
    }
}

/// 429xxx, 500xxx and 503xxx (or their names) are worth another try; nothing else is.
fn transient(code: &str) -> bool {
    const NAMES: &[&str] = &[
        "ThrottlingException",
        "ThrottleBacklogLimitExceeded",
        "ThrottlingBacklogTimeout",
        "ServerError",
        "ServiceUnavailable",
        "ServerBusy",
    ];
    code.starts_with("429")
        || code.starts_with("500")
        || code.starts_with("503")
        || NAMES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::registry::RegistryErrorCode;
    use serde_json::json;

    fn error(id: &str, number: Option<u32>, name: &str) -> DeviceRegistryOperationError {
        DeviceRegistryOperationError {
            device_id: Some(id.into()),
            module_id: None,
            error_code: RegistryErrorCode {
                number,
                name: Some(name.into()),
            },
            error_status: Some(format!("{name} for {id}")),
            operation: None,
        }
    }

    #[test]
    fn transient_entries_are_retried_and_others_reported() {
        let batch = Batch {
            entries: vec![
                (json!({"id": "ok", "importMode": "create"}), 0),
                (json!({"id": "busy", "importMode": "create"}), 0),
                (json!({"id": "dup", "importMode": "create"}), 0),
                (
                    json!({"id": "tired", "importMode": "update"}),
                    MAX_ITEM_RETRIES,
                ),
            ],
            requeues: 0,
            not_before: None,
        };
        let errors = [
            error("busy", Some(429_001), "ThrottlingException"),
            error("dup", Some(409_001), "DeviceAlreadyExists"),
            error("tired", None, "ServerError"),
        ];
        let (mut outcome, mut pending) = (Outcome::default(), Vec::new());
        settle(batch, &errors, &mut outcome, &mut pending);
        assert_eq!(outcome.applied, ["ok"]);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0["id"], "busy");
        let failed: Vec<(&str, &str)> = outcome
            .failed
            .iter()
            .map(|f| (f.id.as_str(), f.code.as_str()))
            .collect();
        assert_eq!(failed, [("dup", "409001"), ("tired", "ServerError")]);
    }

    #[test]
    fn a_resent_create_that_exists_counts_as_applied() {
        let batch = Batch {
            entries: vec![(json!({"id": "d", "importMode": "create"}), 0)],
            requeues: 1,
            not_before: None,
        };
        let (mut outcome, mut pending) = (Outcome::default(), Vec::new());
        settle(
            batch,
            &[error("d", Some(409_001), "DeviceAlreadyExists")],
            &mut outcome,
            &mut pending,
        );
        assert_eq!(outcome.applied, ["d"]);
        assert!(outcome.failed.is_empty());
    }
}
