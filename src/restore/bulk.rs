//! The bulk engine: import lines through `POST /devices`, at most 100 per call, no staging.
//!
//! Throttling: the hub client already honours `Retry-After` within one call's retry budget. On
//! top of that the engine adapts how many calls it keeps in flight (additive increase,
//! multiplicative decrease): a call that still ends throttled halves the window and goes back in
//! the queue, so a 429 storm slows the restore down instead of failing it. Entries that fail on
//! their own are retried only when the error is transient (429/5xx codes); any other per-entry
//! error is reported with its id and code. A fatal error (401002, a bad credential, the hub gone)
//! stops the engine and hands back what was applied so far, so nothing is left unreported.
//!
//! Must not: decide what to write (the plan and `apply` do), print.

use std::collections::VecDeque;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;

use crate::hub::registry::{BULK_MAX, DeviceRegistryOperationError, ExportImportDevice};
use crate::hub::{self, HubClient};

/// Calls in flight at the start and at most.
const START_WINDOW: usize = 2;
const MAX_WINDOW: usize = 8;
/// How often one batch may come back throttled, and one entry be retried after a transient error.
const MAX_REQUEUES: u32 = 30;
const MAX_ITEM_RETRIES: u32 = 5;

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
    /// Calls that came back throttled (after the client's own retries).
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
}

/// Apply import lines (each with its `importMode`) in calls of ≤100.
pub async fn apply(client: &HubClient, lines: Vec<Value>) -> Result<Outcome, Stopped> {
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut pending: Vec<(Value, u32)> = lines.into_iter().map(|l| (l, 0)).collect();
    let mut outcome = Outcome::default();
    let mut window = START_WINDOW;
    let mut successes = 0usize;
    loop {
        for chunk in std::mem::take(&mut pending).chunks(BULK_MAX) {
            queue.push_back(Batch {
                entries: chunk.to_vec(),
                requeues: 0,
            });
        }
        if queue.is_empty() {
            return Ok(outcome);
        }
        let mut running = FuturesUnordered::new();
        while !queue.is_empty() || !running.is_empty() {
            while running.len() < window
                && let Some(batch) = queue.pop_front()
            {
                running.push(send(client, batch));
            }
            let Some((batch, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(errors) => {
                    successes += 1;
                    if successes.is_multiple_of(window) {
                        window = (window + 1).min(MAX_WINDOW);
                    }
                    settle(batch, &errors, &mut outcome, &mut pending);
                }
                Err(hub::Error::Throttled { .. }) if batch.requeues < MAX_REQUEUES => {
                    outcome.throttled += 1;
                    window = (window / 2).max(1);
                    tracing::debug!(window, "bulk call throttled; slowing down");
                    queue.push_back(Batch {
                        requeues: batch.requeues + 1,
                        ..batch
                    });
                }
                Err(error) => {
                    // Let the calls already in flight finish so their results are reported.
                    while let Some((b, r)) = running.next().await {
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

async fn send(
    client: &HubClient,
    batch: Batch,
) -> (Batch, Result<Vec<DeviceRegistryOperationError>, hub::Error>) {
    let devices: Vec<ExportImportDevice> = batch
        .entries
        .iter()
        .filter_map(|(v, _)| serde_json::from_value(v.clone()).ok())
        .collect();
    let result = client.bulk(&devices).await.map(|r| r.errors);
    (batch, result)
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
