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
//! Unknown outcomes: when a call had to be sent again after a try whose answer was lost (or a
//! batch went back in the queue), "already exists" for a create and "not found" for a delete may
//! describe our own earlier write. Such entries are settled by reading the target: a create is
//! applied when the identity is there with the keys and status we sent, a delete when the
//! identity is gone; anything else is a real failure, reported with its code. A line that cannot
//! be sent at all (it does not convert to the service's `ExportImportDevice`) is a named
//! failure, never counted as applied.
//!
//! Must not: decide what to write (the plan and `apply` do), print.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::pace::Pacer;
use crate::hub::registry::{
    AuthenticationMechanism, BULK_MAX, DeviceRegistryOperationError, ExportImportDevice,
    X509Thumbprint,
};
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
/// The code of a line that could not be sent (it is not a valid `ExportImportDevice`).
pub const UNCONVERTIBLE: &str = "hubvault_unconvertible";

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

/// One import line, as sent, and how often it was retried.
#[derive(Clone)]
struct Entry {
    line: Value,
    device: ExportImportDevice,
    tries: u32,
}

struct Batch {
    entries: Vec<Entry>,
    requeues: u32,
    /// Not to be resent before this (a throttled batch's `Retry-After`).
    not_before: Option<Instant>,
}

/// Apply import lines (each with its `importMode`) in calls of ≤100.
pub async fn apply(client: &HubClient, lines: Vec<Value>) -> Result<Outcome, Stopped> {
    let client = client.pacing_throttles();
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut outcome = Outcome::default();
    let mut pending: Vec<Entry> = Vec::with_capacity(lines.len());
    for line in lines {
        match serde_json::from_value::<ExportImportDevice>(line.clone()) {
            Ok(device) => pending.push(Entry {
                line,
                device,
                tries: 0,
            }),
            // The serde message may quote a value (a key): it is not passed on.
            Err(_) => outcome.failed.push(Failure {
                id: entry_key(&line),
                code: UNCONVERTIBLE.to_owned(),
                message: "the import line does not fit the service's ExportImportDevice shape \
                          (a field of the wrong type); it was not sent"
                    .to_owned(),
            }),
        }
    }
    let mut unknown: Vec<(Entry, Failure)> = Vec::new();
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
            return match resolve_unknown(&client, unknown, &mut outcome).await {
                Ok(()) => Ok(outcome),
                Err(error) => Err(Stopped { error, outcome }),
            };
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
                Ok(reply) => {
                    pacer.accepted(Instant::now());
                    let ambiguous = reply.resent || batch.requeues > 0;
                    let settled = settle(batch, &reply.result.errors, ambiguous, &mut outcome);
                    pending.extend(settled.retry);
                    unknown.extend(settled.unknown);
                }
                Err(error @ hub::Error::Throttled { retry_after, .. })
                    if batch.requeues < MAX_REQUEUES =>
                {
                    let now = Instant::now();
                    outcome.throttled = outcome.throttled.saturating_add(1);
                    if pacer.throttled(sent_at, now) {
                        let rate = pacer.rate();
                        tracing::debug!(rate, "bulk call throttled ({error}); slowing down");
                    }
                    queue.push_back(Batch {
                        requeues: batch.requeues.saturating_add(1),
                        not_before: now.checked_add(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
                        ..batch
                    });
                }
                Err(error) => {
                    // Let the calls already in flight finish so their results are reported.
                    while let Some((b, _, r)) = running.next().await {
                        if let Ok(reply) = r {
                            let ambiguous = reply.resent || b.requeues > 0;
                            let settled = settle(b, &reply.result.errors, ambiguous, &mut outcome);
                            unknown.extend(settled.unknown);
                        }
                    }
                    // What stays unknown is reported as failed with its code: the restore's
                    // rerun plans against the target and settles it.
                    outcome.failed.extend(unknown.into_iter().map(|(_, f)| f));
                    return Err(Stopped { error, outcome });
                }
            }
        }
    }
}

type Sent = (Batch, Instant, Result<hub::registry::BulkReply, hub::Error>);

async fn send(client: &HubClient, batch: Batch, sent_at: Instant) -> Sent {
    let devices: Vec<ExportImportDevice> = batch.entries.iter().map(|e| e.device.clone()).collect();
    let result = client.bulk(&devices).await;
    (batch, sent_at, result)
}

/// How a batch's entries came out beyond applied and failed (which go into the outcome).
#[derive(Default)]
struct Settled {
    /// Transient errors: sent again.
    retry: Vec<Entry>,
    /// Errors that may describe our own earlier write: settled by reading the target.
    unknown: Vec<(Entry, Failure)>,
}

/// Sort a batch's entries into applied, failed, retried (transient errors) and unknown (an
/// error that, after a try whose outcome is unknown, may be our own earlier write).
fn settle(
    batch: Batch,
    errors: &[DeviceRegistryOperationError],
    ambiguous: bool,
    outcome: &mut Outcome,
) -> Settled {
    let mut out = Settled::default();
    for entry in batch.entries {
        let key = entry_key(&entry.line);
        let error = errors.iter().find(|e| {
            e.device_id.as_deref() == Some(entry.device.id.as_str())
                && e.module_id.as_deref() == entry.device.module_id.as_deref()
        });
        let Some(error) = error else {
            outcome.applied.push(key);
            continue;
        };
        let code = code_of(error);
        let failure = Failure {
            id: key,
            code,
            message: error.error_status.clone().unwrap_or_default(),
        };
        if ambiguous && may_be_our_own_write(&entry.line, &failure.code) {
            out.unknown.push((entry, failure));
        } else if transient(&failure.code) && entry.tries < MAX_ITEM_RETRIES {
            out.retry.push(Entry {
                tries: entry.tries.saturating_add(1),
                ..entry
            });
        } else {
            outcome.failed.push(failure);
        }
    }
    out
}

/// Whether `code`, answered to `line` after an earlier try may have been carried out, could be
/// that try's own effect: "exists" for a create, "not found" for a delete or update, "precondition
/// failed" for an etag-guarded write (our write changed the etag).
fn may_be_our_own_write(line: &Value, code: &str) -> bool {
    let mode = line.get("importMode").and_then(Value::as_str).unwrap_or("");
    let exists = code.starts_with("409")
        || code.ends_with("AlreadyExists")
        || code == "ModuleAlreadyExistsOnDevice";
    let missing = code.starts_with("404") || code.ends_with("NotFound");
    let precondition = code.starts_with("412") || code == "PreconditionFailed";
    if mode.starts_with("delete") {
        missing || precondition
    } else {
        exists || precondition || (missing && mode.starts_with("update"))
    }
}

/// Settle entries whose outcome is unknown by reading each identity on the target.
async fn resolve_unknown(
    client: &HubClient,
    unknown: Vec<(Entry, Failure)>,
    outcome: &mut Outcome,
) -> Result<(), hub::Error> {
    if !unknown.is_empty() {
        tracing::info!(
            entries = unknown.len(),
            "a bulk call was resent after its outcome was unknown: reading the target to settle its entries"
        );
    }
    let mut left = unknown.into_iter();
    while let Some((entry, failure)) = left.next() {
        let d = &entry.device;
        let found = match &d.module_id {
            Some(m) => client
                .get_module(&d.id, m)
                .await
                .map(|m| (m.authentication, None)),
            None => client
                .get_device(&d.id)
                .await
                .map(|dev| (dev.authentication, dev.status)),
        };
        let deleting = matches!(
            d.import_mode,
            Some(hub::registry::ImportMode::Delete | hub::registry::ImportMode::DeleteIfMatchEtag)
        );
        let applied = match found {
            Err(hub::Error::NotFound { .. }) => deleting,
            Ok(_) if deleting => false,
            Ok((auth, status)) => {
                same_identity(d.authentication.as_ref(), auth.as_ref())
                    && (d.module_id.is_some() || d.status.is_none() || d.status == status)
            }
            Err(e) => {
                // Cannot settle: what is left is reported failed with its code; a rerun of the
                // restore plans against the target and finds out.
                outcome.failed.push(failure);
                outcome.failed.extend(left.map(|(_, f)| f));
                return Err(e);
            }
        };
        if applied {
            outcome.applied.push(failure.id);
        } else {
            outcome.failed.push(failure);
        }
    }
    Ok(())
}

/// Whether the identity read back carries the authentication an entry sent (absent parts and
/// empty parts are the same thing; the service fills in what a create left out only when the
/// entry gave none, so an entry without authentication matches anything).
fn same_identity(
    sent: Option<&AuthenticationMechanism>,
    found: Option<&AuthenticationMechanism>,
) -> bool {
    let Some(sent) = sent else { return true };
    let norm = |a: Option<&AuthenticationMechanism>| {
        let a = a.cloned().unwrap_or_default();
        let keys = a
            .symmetric_key
            .filter(|k| k.primary_key.is_some() || k.secondary_key.is_some());
        let thumbs = a
            .x509_thumbprint
            .filter(|t| *t != X509Thumbprint::default());
        (a.auth_type, keys, thumbs)
    };
    let (sent_type, sent_keys, sent_thumbs) = norm(Some(sent));
    let (found_type, found_keys, found_thumbs) = norm(found);
    sent_keys == found_keys
        && sent_thumbs == found_thumbs
        && (sent_type.is_none() || sent_type == found_type)
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
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
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

    fn entry(line: Value, tries: u32) -> Entry {
        Entry {
            device: serde_json::from_value(line.clone()).unwrap(),
            line,
            tries,
        }
    }

    #[test]
    fn transient_entries_are_retried_and_others_reported() {
        let batch = Batch {
            entries: vec![
                entry(json!({"id": "ok", "importMode": "create"}), 0),
                entry(json!({"id": "busy", "importMode": "create"}), 0),
                entry(json!({"id": "dup", "importMode": "create"}), 0),
                entry(
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
        let mut outcome = Outcome::default();
        let settled = settle(batch, &errors, false, &mut outcome);
        assert_eq!(outcome.applied, ["ok"]);
        assert_eq!(settled.retry.len(), 1);
        assert_eq!(settled.retry[0].line["id"], "busy");
        assert!(settled.unknown.is_empty());
        let failed: Vec<(&str, &str)> = outcome
            .failed
            .iter()
            .map(|f| (f.id.as_str(), f.code.as_str()))
            .collect();
        assert_eq!(failed, [("dup", "409001"), ("tired", "ServerError")]);
    }

    #[test]
    fn after_an_unknown_outcome_exists_and_not_found_are_checked_not_believed() {
        let batch = Batch {
            entries: vec![
                entry(json!({"id": "new", "importMode": "create"}), 0),
                entry(json!({"id": "gone", "importMode": "delete"}), 0),
                entry(json!({"id": "bad", "importMode": "create"}), 0),
            ],
            requeues: 0,
            not_before: None,
        };
        let errors = [
            error("new", Some(409_001), "DeviceAlreadyExists"),
            error("gone", Some(404_001), "DeviceNotFound"),
            error("bad", Some(400_004), "ArgumentInvalid"),
        ];
        let mut outcome = Outcome::default();
        let settled = settle(batch, &errors, true, &mut outcome);
        let unknown: Vec<&str> = settled.unknown.iter().map(|(_, f)| f.id.as_str()).collect();
        assert_eq!(unknown, ["new", "gone"]);
        assert_eq!(outcome.failed.len(), 1, "a real error stays an error");
        assert!(outcome.applied.is_empty());
    }

    #[test]
    fn an_identity_read_back_matches_what_was_sent_only_with_the_same_keys() {
        let auth = |p: &str| AuthenticationMechanism {
            symmetric_key: Some(hub::registry::SymmetricKey {
                primary_key: Some(p.into()),
                secondary_key: Some("s".into()),
            }),
            x509_thumbprint: Some(X509Thumbprint::default()),
            auth_type: Some("sas".into()),
        };
        let sent = auth("p");
        let mut found = auth("p");
        found.x509_thumbprint = None;
        assert!(same_identity(Some(&sent), Some(&found)));
        assert!(!same_identity(Some(&sent), Some(&auth("other"))));
        assert!(!same_identity(Some(&sent), None));
        assert!(same_identity(None, Some(&found)));
    }
}
