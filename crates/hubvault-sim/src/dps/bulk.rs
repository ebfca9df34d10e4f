//! DPS bulk enrollment operations (`POST /enrollments`, `POST /enrollmentGroups`): modes
//! create / update / updateIfMatchETag / delete, at most [`MAX_BULK`] items, per-item errors.
//!
//! Owns only the bulk decision flow; storage and validation stay in `DpsState` and `enrollment`.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::enrollment::{Kind, Refused, bad_request};
use super::{DpsState, MAX_BULK, Outcome, delete, not_found, with_status};
use crate::shared::lock;

/// Bulk: the whole request is refused (400) when malformed or over the limit; otherwise each item
/// is applied on its own and failures are listed (partial success, as the service does).
pub(super) fn run(state: &DpsState, kind: Kind, body: &[u8]) -> Outcome {
    let refuse = |m: String| (StatusCode::BAD_REQUEST, bad_request(m));
    let body: Value = serde_json::from_slice(body)
        .map_err(|_| refuse("The request body is not valid JSON.".into()))?;
    let mode = body.get("mode").and_then(Value::as_str).unwrap_or("");
    if !["create", "update", "updateIfMatchETag", "delete"].contains(&mode) {
        return Err(refuse(format!("Invalid bulk operation mode '{mode}'.")));
    }
    let items = body
        .get(kind.bulk_field())
        .and_then(Value::as_array)
        .ok_or_else(|| refuse(format!("'{}' is required.", kind.bulk_field())))?;
    if items.len() > MAX_BULK {
        return Err(refuse(format!(
            "A bulk operation may hold at most {MAX_BULK} items; this one has {}.",
            items.len()
        )));
    }
    let mut errors = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        let id = item
            .get(kind.id_field())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let outcome = if seen.contains(&id.to_ascii_lowercase()) {
            Err((
                StatusCode::BAD_REQUEST,
                bad_request(format!("'{id}' appears more than once.")),
            ))
        } else {
            seen.push(id.to_ascii_lowercase());
            bulk_item(state, kind, mode, item, &id)
        };
        if let Err((status, refused)) = outcome {
            errors.push(json!({kind.id_field(): id, "errorCode": refused.code,
                               "errorStatus": status.canonical_reason().unwrap_or("")}));
        }
    }
    let lie = state
        .lie_bulk_success
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let mut result = json!({"isSuccessful": errors.is_empty() || lie});
    if !errors.is_empty() {
        result["errors"] = Value::Array(errors);
    }
    Ok((StatusCode::OK, result))
}

fn bulk_item(state: &DpsState, kind: Kind, mode: &str, item: &Value, id: &str) -> Outcome {
    let exists = lock(state.store(kind)).contains_key(&id.to_ascii_lowercase());
    let etag = item.get("etag").and_then(Value::as_str);
    match mode {
        "delete" => delete(state, kind, id, etag),
        "create" if exists => Err((
            StatusCode::CONFLICT,
            Refused {
                code: 409_201,
                message: format!("The {} '{id}' already exists.", kind.label()),
            },
        )),
        "updateIfMatchETag" if !exists => Err(not_found(kind, id)),
        "updateIfMatchETag" => {
            let doc = state
                .upsert(kind, item, Some(etag.unwrap_or("")))
                .map_err(with_status)?;
            Ok((StatusCode::OK, doc))
        }
        _ => {
            let doc = state.upsert(kind, item, None).map_err(with_status)?;
            Ok((StatusCode::OK, doc))
        }
    }
}
