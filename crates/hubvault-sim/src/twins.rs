//! Twin handlers: `GET/PUT/PATCH /twins/{id}` and `/twins/{id}/modules/{mid}`.
//!
//! The service side may write tags and desired properties only; reported properties belong to
//! the device and are left alone. Every write bumps the twin version (so the etag changes);
//! desired writes bump `properties.desired.$version`. `If-Match` is checked against the twin etag.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::error::HubError;
use super::registry::{Twin, compact, expand};
use super::state::{Hub, body_json, if_match, json_response, lock, now_secs};
use super::wire::{module_twin_json, twin_json};

type Handled = Result<Response, HubError>;

/// How a body is written into a twin.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Replace,
    Merge,
}

/// RFC 7386 merge: `null` deletes a key, objects merge recursively.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

fn write(twin: &mut Twin, body: &Value, how: Write, now: i64) -> Result<(), HubError> {
    if !body.is_object() {
        return Err(HubError::argument_invalid(
            "The twin body must be a JSON object.",
        ));
    }
    let apply = |current: Option<&str>, new: Option<&Value>| -> Option<Option<String>> {
        let new = new?;
        Some(match (how, new.as_object()) {
            (Write::Merge, Some(p)) => {
                let mut m = expand(current);
                merge_patch(&mut m, p);
                compact(Some(&Value::Object(m)))
            }
            _ => compact(Some(new)),
        })
    };
    if let Some(tags) = apply(twin.tags(), body.get("tags")) {
        twin.set_tags(tags.as_deref());
    }
    if let Some(desired) = apply(twin.desired(), body.pointer("/properties/desired")) {
        twin.set_desired(desired.as_deref());
        twin.desired_version = twin.desired_version.saturating_add(1);
        twin.updated = now;
    }
    twin.version = twin.version.saturating_add(1);
    Ok(())
}

pub async fn get_twin(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Handled {
    let reg = lock(&hub.registry);
    Ok(json_response(
        StatusCode::OK,
        &twin_json(&id, reg.device(&id)?),
    ))
}

fn device_write(hub: &Hub, id: &str, headers: &HeaderMap, body: &[u8], how: Write) -> Handled {
    let body = body_json(body)?;
    let mut reg = lock(&hub.registry);
    let d = reg.device_mut(id)?;
    if !d.twin.matches(if_match(headers).as_deref()) {
        return Err(HubError::precondition_failed(&format!(
            "the twin of device '{id}'"
        )));
    }
    write(&mut d.twin, &body, how, now_secs())?;
    Ok(json_response(StatusCode::OK, &twin_json(id, d)))
}

pub async fn put_twin(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    device_write(&hub, &id, &headers, &body, Write::Replace)
}

pub async fn patch_twin(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    device_write(&hub, &id, &headers, &body, Write::Merge)
}

pub async fn get_module_twin(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
) -> Handled {
    let reg = lock(&hub.registry);
    let d = reg.device(&id)?;
    let m = d
        .modules()
        .iter()
        .find(|m| *m.id == *mid)
        .ok_or_else(|| HubError::module_not_found(&id, &mid))?;
    Ok(json_response(StatusCode::OK, &module_twin_json(&id, d, m)))
}

fn module_write(
    hub: &Hub,
    id: &str,
    mid: &str,
    headers: &HeaderMap,
    body: &[u8],
    how: Write,
) -> Handled {
    let body = body_json(body)?;
    let mut reg = lock(&hub.registry);
    let m = reg.module_mut(id, mid)?;
    if !m.twin.matches(if_match(headers).as_deref()) {
        return Err(HubError::precondition_failed(&format!(
            "the twin of module '{id}/{mid}'"
        )));
    }
    write(&mut m.twin, &body, how, now_secs())?;
    let d = reg.device(id)?;
    let m = d
        .modules()
        .iter()
        .find(|m| &*m.id == mid)
        .ok_or_else(|| HubError::module_not_found(id, mid))?;
    Ok(json_response(StatusCode::OK, &module_twin_json(id, d, m)))
}

pub async fn put_module_twin(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    module_write(&hub, &id, &mid, &headers, &body, Write::Replace)
}

pub async fn patch_module_twin(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    module_write(&hub, &id, &mid, &headers, &body, Write::Merge)
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
    fn patch_merges_and_null_deletes_replace_overwrites() {
        let mut t = Twin::new(0);
        write(
            &mut t,
            &json!({"tags": {"a": 1, "b": {"c": 2}}, "properties": {"desired": {"x": 1}}}),
            Write::Replace,
            0,
        )
        .unwrap();
        let e1 = t.etag();
        write(
            &mut t,
            &json!({"tags": {"a": null, "b": {"d": 3}}}),
            Write::Merge,
            0,
        )
        .unwrap();
        assert_ne!(e1, t.etag());
        assert_eq!(
            Value::Object(expand(t.tags())),
            json!({"b": {"c": 2, "d": 3}})
        );
        assert_eq!(t.desired_version, 2);
        write(&mut t, &json!({"tags": {"z": 0}}), Write::Replace, 0).unwrap();
        assert_eq!(Value::Object(expand(t.tags())), json!({"z": 0}));
    }
}
