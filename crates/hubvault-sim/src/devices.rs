//! Registry handlers: devices, modules, bulk, statistics, configurations, and the device-side
//! telemetry endpoint (docs/azure.md).
//!
//! Handlers only translate HTTP ⇄ registry calls; rules live in `registry` and `apply`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::apply::{ApplyOptions, ImportMode, apply_line, line_mode};
use super::error::{HubError, timestamp};
use super::registry::identity_etag;
use super::state::{Hub, body_json, if_match, json_response, lock, now_secs};
use super::wire::{device_json, module_json, parse_auth, parse_identity};

type Handled = Result<Response, HubError>;

#[derive(serde::Deserialize)]
pub struct Top {
    top: Option<usize>,
}

/// `GET /devices?top=N` (deprecated listing; at most 1000).
pub async fn list(State(hub): State<Arc<Hub>>, Query(q): Query<Top>) -> Handled {
    let reg = lock(&hub.registry);
    let n = q.top.unwrap_or(1000).min(1000);
    let items: Vec<Value> = reg
        .devices
        .iter()
        .take(n)
        .map(|(id, d)| device_json(id, d))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(items)))
}

pub async fn get_device(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Handled {
    let reg = lock(&hub.registry);
    Ok(json_response(
        StatusCode::OK,
        &device_json(&id, reg.device(&id)?),
    ))
}

/// `PUT /devices/{id}`: create without `If-Match` (409001 if present), replace with it.
pub async fn put_device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    let body = body_json(&body)?;
    if body
        .get("deviceId")
        .and_then(Value::as_str)
        .is_some_and(|b| b != id)
    {
        return Err(HubError::argument_invalid(
            "The deviceId in the body does not match the device id in the URI.",
        ));
    }
    let identity = parse_identity(&body)?;
    let rules = hub.rules();
    let mut reg = lock(&hub.registry);
    let device = match if_match(&headers) {
        None => reg.create_device(&id, identity, rules, now_secs())?,
        Some(tag) => reg.replace_device(&id, identity, Some(&tag), rules, now_secs())?,
    };
    Ok(json_response(StatusCode::OK, &device_json(&id, device)))
}

pub async fn delete_device(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    lock(&hub.registry).delete_device(&id, if_match(&headers).as_deref())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_modules(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Handled {
    let reg = lock(&hub.registry);
    let d = reg.device(&id)?;
    let items: Vec<Value> = d.modules().iter().map(|m| module_json(&id, m)).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(items)))
}

pub async fn get_module(
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
    Ok(json_response(StatusCode::OK, &module_json(&id, m)))
}

/// `PUT /devices/{id}/modules/{mid}`: 201 on create, 200 on update.
pub async fn put_module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    let body = body_json(&body)?;
    let auth = parse_auth(body.get("authentication"))?;
    let managed_by = body
        .get("managedBy")
        .and_then(Value::as_str)
        .map(String::from);
    let tag = if_match(&headers);
    let mut reg = lock(&hub.registry);
    let m = reg.put_module(&id, &mid, auth, managed_by, tag.as_deref(), now_secs())?;
    let status = if tag.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(status, &module_json(&id, m)))
}

pub async fn delete_module(
    State(hub): State<Arc<Hub>>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Handled {
    lock(&hub.registry).delete_module(&id, &mid, if_match(&headers).as_deref())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Marks the answer of a bulk `POST /devices` that was carried out (its entries were applied:
/// 200, or 400 with a bulk result), as opposed to one refused whole. Only such an answer can be
/// lost to the `lose_bulk_responses` fault (the gate in `hub` looks for it).
#[derive(Clone, Copy, Debug)]
pub struct BulkCarriedOut;

/// Bulk `POST /devices` (§5.2): ≤100 entries, unique ids, per-entry result; 400 on any failure.
pub async fn bulk(State(hub): State<Arc<Hub>>, body: Bytes) -> Handled {
    let body = body_json(&body)?;
    let entries = body.as_array().ok_or_else(|| {
        HubError::argument_invalid("The request body must be a JSON array of devices.")
    })?;
    if entries.len() > 100 {
        return Err(HubError::new(
            413_002,
            "TooManyDevices",
            "A maximum of 100 devices can be specified per invocation.",
        ));
    }
    let mut seen = HashSet::new();
    for e in entries {
        let key = (
            e.get("id").and_then(Value::as_str),
            e.get("moduleId").and_then(Value::as_str),
        );
        if !seen.insert(key) {
            let id = key.0.unwrap_or_default();
            return Err(HubError::new(
                400_011,
                "DeviceDefinedMultipleTimes",
                format!("The device '{id}' is defined multiple times in the request."),
            ));
        }
    }
    let opts = ApplyOptions {
        rules: hub.rules(),
        apply_reported: false,
    };
    let now = now_secs();
    let mut errors = Vec::new();
    let mut reg = lock(&hub.registry);
    for e in entries {
        let mode = line_mode(e, ImportMode::CreateOrUpdate);
        if lock(&hub.faults).drops_import(e) {
            continue;
        }
        let stored = lock(&hub.faults).corrupt_key(e.clone());
        let result = mode
            .clone()
            .and_then(|m| apply_line(&mut reg, &stored, m, opts, now));
        if let Err(err) = result {
            errors.push(json!({
                "deviceId": e.get("id"),
                "moduleId": e.get("moduleId"),
                "errorCode": err.name,
                "errorStatus": err.message,
                "operation": mode.map(ImportMode::name).unwrap_or_default(),
            }));
        }
    }
    let ok = errors.is_empty();
    let result = json!({"isSuccessful": ok, "errors": errors, "warnings": []});
    let mut response = json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        &result,
    );
    response.extensions_mut().insert(BulkCarriedOut);
    Ok(response)
}

pub async fn statistics(State(hub): State<Arc<Hub>>) -> Handled {
    let reg = lock(&hub.registry);
    let total = reg.devices.len();
    let enabled = reg.devices.values().filter(|d| d.enabled).count();
    let body = json!({"totalDeviceCount": total, "enabledDeviceCount": enabled, "disabledDeviceCount": total.saturating_sub(enabled)});
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn service_statistics() -> Handled {
    Ok(json_response(
        StatusCode::OK,
        &json!({"connectedDeviceCount": 0}),
    ))
}

/// `POST /devices/{id}/messages/events` (device side): counted per device.
pub async fn telemetry(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Handled {
    let mut messages = lock(&hub.messages);
    let count = messages.entry(id).or_default();
    *count = count.saturating_add(1);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Configuration ids are lower case (sdk-cs e2e note, docs/azure.md).
fn valid_configuration_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "-:+%_#*?!(),=@;$'".contains(c)
        })
}

pub async fn list_configurations(State(hub): State<Arc<Hub>>, Query(q): Query<Top>) -> Handled {
    let reg = lock(&hub.registry);
    let items: Vec<Value> = reg
        .configurations
        .values()
        .take(q.top.unwrap_or(100))
        .cloned()
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(items)))
}

pub async fn get_configuration(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Handled {
    let reg = lock(&hub.registry);
    let c = reg
        .configurations
        .get(&id)
        .ok_or_else(|| configuration_not_found(&id))?;
    Ok(json_response(StatusCode::OK, c))
}

fn configuration_not_found(id: &str) -> HubError {
    HubError::new(
        404_007,
        "ConfigurationNotFound",
        format!("Configuration '{id}' not found."),
    )
}

/// Create (201; 409401 if it exists) or, with `If-Match`, replace (200; 412001 on mismatch).
pub async fn put_configuration(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Handled {
    let mut body = body_json(&body)?;
    if !body.is_object()
        || body
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|b| b != id)
    {
        return Err(HubError::argument_invalid(
            "The configuration body must be an object whose id matches the URI.",
        ));
    }
    if !valid_configuration_id(&id) {
        return Err(HubError::argument_invalid(format!(
            "Configuration id '{id}' is invalid: use lower-case letters, digits and -:+%_#*?!(),=@;$'."
        )));
    }
    let tag = if_match(&headers);
    let mut reg = lock(&hub.registry);
    let status = upsert_configuration(
        &mut reg.configurations,
        &id,
        &mut body,
        tag.as_deref(),
        time::OffsetDateTime::now_utc(),
    )?;
    Ok(json_response(status, &body))
}

/// Shared by the REST handler and the configurations import.
pub fn upsert_configuration(
    store: &mut std::collections::BTreeMap<String, Value>,
    id: &str,
    body: &mut Value,
    tag: Option<&str>,
    now: time::OffsetDateTime,
) -> Result<StatusCode, HubError> {
    let existing = store.get(id);
    let status = match (existing, tag) {
        (Some(_), None) => {
            return Err(HubError::new(
                409_401,
                "ConfigurationAlreadyExists",
                format!("Configuration '{id}' already exists."),
            ));
        }
        (None, Some(t)) if t.trim() != "*" => return Err(configuration_not_found(id)),
        (Some(c), Some(t))
            if !super::registry::etag_matches(c["etag"].as_str().unwrap_or(""), Some(t)) =>
        {
            return Err(HubError::precondition_failed(&format!(
                "configuration '{id}'"
            )));
        }
        (Some(_), Some(_)) => StatusCode::OK,
        (None, _) if store.len() >= 100 => {
            return Err(HubError::new(
                403_002,
                "IotHubQuotaExceeded",
                "The hub already holds the maximum of 100 configurations.",
            ));
        }
        (None, _) => StatusCode::CREATED,
    };
    let created = existing
        .and_then(|c| c.get("createdTimeUtc").cloned())
        .unwrap_or_else(|| timestamp(now).into());
    let Some(obj) = body.as_object_mut() else {
        return Err(HubError::argument_invalid(
            "The configuration body must be an object.",
        ));
    };
    obj.insert("id".into(), id.into());
    obj.insert("createdTimeUtc".into(), created);
    obj.insert("lastUpdatedTimeUtc".into(), timestamp(now).into());
    obj.insert(
        "etag".into(),
        identity_etag(u64::try_from(now.unix_timestamp_nanos() % 1_000_000_000_000).unwrap_or(1))
            .into(),
    );
    obj.entry("schemaVersion").or_insert_with(|| "1.0".into());
    obj.entry("priority").or_insert_with(|| 0.into());
    for metrics in ["systemMetrics", "metrics"] {
        obj.entry(metrics)
            .or_insert_with(|| json!({"results": {}, "queries": {}}));
    }
    store.insert(id.to_string(), body.clone());
    Ok(status)
}

pub async fn delete_configuration(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Handled {
    let mut reg = lock(&hub.registry);
    let c = reg
        .configurations
        .get(&id)
        .ok_or_else(|| configuration_not_found(&id))?;
    if !super::registry::etag_matches(
        c["etag"].as_str().unwrap_or(""),
        if_match(&headers).as_deref(),
    ) {
        return Err(HubError::precondition_failed(&format!(
            "configuration '{id}'"
        )));
    }
    reg.configurations.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
