//! Turning a snapshot record into an import line for another hub (pure).
//!
//! A snapshot keeps the source hub's lines verbatim. Replaying one elsewhere needs a few changes,
//! each for a reason the service gives:
//! - `eTag` / `twinETag` are the *source* hub's etags; on the target they mean nothing and would
//!   fail an `…IfMatchETag` mode, so they are removed.
//! - `properties.reported` is device-owned; a service import cannot set it (docs/azure.md), and
//!   desired `$metadata` / `$version` are service-managed.
//! - `deviceScope` / `parentScopes` embed the edge device's generation id, which differs on the
//!   target hub: a copied scope is invalid there. Edges and children are created without scopes,
//!   and the links are set in a second pass from the target's own edge scopes ([`with_parent_scope`]).
//! - `$edgeAgent` / `$edgeHub` module lines are not importable; the hub recreates them with the edge
//!   device ([`is_system_module`]).

use serde_json::{Map, Value};

/// `importMode` values of docs/azure.md that a restore uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    Create,
    CreateOrUpdate,
    Update,
    Delete,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::CreateOrUpdate => "createOrUpdate",
            ImportMode::Update => "update",
            ImportMode::Delete => "delete",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("record {id} is not a JSON object: {detail}")]
pub struct LineError {
    pub id: String,
    pub detail: String,
}

/// Whether a module id is a system module the hub manages (`$edgeAgent`, `$edgeHub`).
pub fn is_system_module(module_id: Option<&str>) -> bool {
    matches!(module_id, Some("$edgeAgent" | "$edgeHub"))
}

/// The id of the edge device a scope names: `ms-azure-iot-edge://{edgeId}-{generationId}`.
/// The generation id is the part after the last `-` (device ids may contain `-` themselves).
pub fn scope_device(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix("ms-azure-iot-edge://")?;
    let (device, generation) = rest.rsplit_once('-')?;
    (!device.is_empty() && !generation.is_empty()).then_some(device)
}

/// The parent edge device of a record, if it is a child: a non-edge device whose `deviceScope`
/// names another device, or a nested edge device with `parentScopes`.
pub fn parent_of(record: &Value) -> Option<String> {
    let id = record.get("id")?.as_str()?;
    if record.get("moduleId").is_some() {
        return None;
    }
    let scope_parent = record
        .get("deviceScope")
        .and_then(Value::as_str)
        .and_then(scope_device);
    let is_edge = record
        .get("capabilities")
        .and_then(|c| c.get("iotEdge"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !is_edge {
        return scope_parent.filter(|p| *p != id).map(str::to_owned);
    }
    let parents = record.get("parentScopes").and_then(Value::as_array)?;
    parents
        .iter()
        .filter_map(Value::as_str)
        .filter_map(scope_device)
        .find(|p| *p != id)
        .map(str::to_owned)
}

/// The import line for `record` (a verbatim export line) in `mode`, without scopes.
pub fn import_line(record: &[u8], mode: ImportMode) -> Result<Value, LineError> {
    let value: Value = serde_json::from_slice(record).map_err(|e| LineError {
        id: guess_id(record),
        detail: e.to_string(),
    })?;
    let Value::Object(mut map) = value else {
        return Err(LineError {
            id: guess_id(record),
            detail: "not an object".to_owned(),
        });
    };
    map.remove("eTag");
    map.remove("twinETag");
    map.remove("deviceScope");
    map.remove("parentScopes");
    if mode == ImportMode::Delete {
        keep_only(&mut map, &["id", "moduleId"]);
    } else if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.remove("reported");
        if let Some(Value::Object(desired)) = props.get_mut("desired") {
            desired.remove("$metadata");
            desired.remove("$version");
        }
    }
    map.insert(
        "importMode".to_owned(),
        Value::String(mode.as_str().to_owned()),
    );
    Ok(Value::Object(map))
}

/// The second-pass line linking a child to its parent's scope on the target hub.
pub fn with_parent_scope(mut line: Value, parent_scope: &str, is_edge: bool) -> Value {
    if let Value::Object(map) = &mut line {
        if !is_edge {
            map.insert(
                "deviceScope".to_owned(),
                Value::String(parent_scope.to_owned()),
            );
        }
        map.insert(
            "parentScopes".to_owned(),
            Value::Array(vec![Value::String(parent_scope.to_owned())]),
        );
        map.insert(
            "importMode".to_owned(),
            Value::String(ImportMode::Update.as_str().to_owned()),
        );
    }
    line
}

fn keep_only(map: &mut Map<String, Value>, keys: &[&str]) {
    map.retain(|k, _| keys.contains(&k.as_str()));
}

fn guess_id(record: &[u8]) -> String {
    serde_json::from_slice::<Value>(record)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "<unknown>".to_owned())
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

    const LEAF: &str = r#"{"id":"pump-1","eTag":"MQ==","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"cHJp","secondaryKey":"c2Vj"},"type":"sas"},"twinETag":"AAAAAAAAAAE=","tags":{"site":"p7"},"properties":{"desired":{"x":1,"$version":4,"$metadata":{}},"reported":{"fw":"2"}},"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-01-638512345678901234","parentScopes":["ms-azure-iot-edge://gw-01-638512345678901234"]}"#;
    const EDGE: &str = r#"{"id":"gw-01","status":"enabled","capabilities":{"iotEdge":true},"deviceScope":"ms-azure-iot-edge://gw-01-638512345678901234"}"#;

    #[test]
    fn import_line_drops_what_the_target_cannot_take() {
        let line = import_line(LEAF.as_bytes(), ImportMode::CreateOrUpdate).unwrap();
        assert_eq!(line["importMode"], "createOrUpdate");
        assert!(line.get("eTag").is_none() && line.get("twinETag").is_none());
        assert!(line.get("deviceScope").is_none() && line.get("parentScopes").is_none());
        assert!(line.pointer("/properties/reported").is_none());
        assert!(line.pointer("/properties/desired/$version").is_none());
        assert_eq!(line.pointer("/properties/desired/x"), Some(&Value::from(1)));
        assert_eq!(
            line.pointer("/authentication/symmetricKey/primaryKey"),
            Some(&Value::from("cHJp"))
        );
        assert_eq!(line["tags"]["site"], "p7");
    }

    #[test]
    fn delete_lines_carry_only_ids() {
        let line = import_line(LEAF.as_bytes(), ImportMode::Delete).unwrap();
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "importMode"]);
    }

    #[test]
    fn parents_and_scopes() {
        assert_eq!(
            scope_device("ms-azure-iot-edge://gw-berlin-01-638512345678901234"),
            Some("gw-berlin-01")
        );
        assert_eq!(scope_device("nonsense"), None);
        let leaf: Value = serde_json::from_str(LEAF).unwrap();
        assert_eq!(parent_of(&leaf).as_deref(), Some("gw-01"));
        let edge: Value = serde_json::from_str(EDGE).unwrap();
        assert_eq!(
            parent_of(&edge),
            None,
            "an edge device's own scope is not a parent"
        );
        let linked = with_parent_scope(
            import_line(LEAF.as_bytes(), ImportMode::Update).unwrap(),
            "ms-azure-iot-edge://gw-01-9",
            false,
        );
        assert_eq!(linked["deviceScope"], "ms-azure-iot-edge://gw-01-9");
        assert_eq!(linked["parentScopes"][0], "ms-azure-iot-edge://gw-01-9");
        assert_eq!(linked["importMode"], "update");
    }

    #[test]
    fn system_modules() {
        assert!(is_system_module(Some("$edgeAgent")));
        assert!(is_system_module(Some("$edgeHub")));
        assert!(!is_system_module(Some("filter")));
        assert!(!is_system_module(None));
    }
}
