//! The comparable form of a device or module record (pure).
//!
//! A snapshot holds export lines of the *source* hub; the live target is read through twin
//! queries and `GET /devices/{id}`, which name and shape things differently. Both are reduced here
//! to one canonical JSON object holding only what a restore promises to carry over — status,
//! authentication (type, thumbprints, keys when known), tags, desired properties, capabilities
//! and edge links — so that [`crate::diff`] can name the aspects that differ.
//!
//! Edge links are compared **by parent id**: a scope embeds the edge device's generation id,
//! which differs on every hub, so `ms-azure-iot-edge://gw-1-638…` becomes `gw-1`.
//!
//! Must not: do I/O. Canonical lines hold keys when keys are known: they are never printed.

use serde_json::{Map, Value};

use super::lines;
use crate::diff::Entry;

/// Whether a canonical record carries symmetric keys (`None`: unknown, read without keys).
pub fn has_keys(line: &Value) -> bool {
    // `get` chains, not `Value::pointer`, which allocates for every token: these run for every
    // record of a restore.
    line.get("authentication")
        .and_then(|a| a.get("symmetricKey"))
        .is_some_and(|k| !k.is_null())
}

/// Whether a record's `capabilities.iotEdge` is `true`.
pub fn is_edge(line: &Value) -> bool {
    line.get("capabilities")
        .and_then(|c| c.get("iotEdge"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Canonical form of an export line (a snapshot record, or a target device read with keys).
/// `keys: false` leaves symmetric keys out, for comparing against a keyless twin read.
pub fn from_export_line(line: &Value, keys: bool) -> Value {
    let module = line.get("moduleId").is_some_and(|m| !m.is_null());
    let mut out = Map::new();
    copy_ids(line, &mut out);
    if !module {
        copy_status(line, &mut out);
        out.insert(
            "capabilities".into(),
            serde_json::json!({ "iotEdge": is_edge(line) }),
        );
        copy_scopes(line, &mut out);
    }
    let auth = line.get("authentication").filter(|a| !a.is_null());
    let kind = auth.and_then(|a| a.get("type")).cloned();
    let thumbs = auth.and_then(|a| a.get("x509Thumbprint")).cloned();
    let key = if keys {
        auth.and_then(|a| a.get("symmetricKey")).cloned()
    } else {
        None
    };
    insert_auth(&mut out, kind, thumbs, key);
    copy_twin(line, &mut out);
    Value::Object(out)
}

/// [`from_export_line`] of a line not needed afterwards: its tags, desired properties and
/// authentication are moved into the canonical form instead of copied (a restore builds one
/// for every record of the snapshot and of the target's export).
pub fn from_export_value(line: Value, keys: bool) -> Value {
    let Value::Object(mut line) = line else {
        return from_export_line(&line, keys);
    };
    let auth = line.remove("authentication");
    let tags = line.remove("tags");
    let desired = match line.get_mut("properties") {
        Some(Value::Object(p)) => p.remove("desired"),
        _ => None,
    };
    // What is left is small (ids, status, capabilities, scopes): read as before.
    let rest = Value::Object(line);
    let mut out = from_export_line(&rest, false);
    let Value::Object(map) = &mut out else {
        return out;
    };
    let (kind, thumbs, key) = match auth {
        Some(Value::Object(mut a)) => (
            a.remove("type"),
            a.remove("x509Thumbprint"),
            if keys { a.remove("symmetricKey") } else { None },
        ),
        _ => (None, None, None),
    };
    insert_auth(map, kind, thumbs, key);
    if let Some(Value::Object(mut tags)) = tags
        && !tags.is_empty()
    {
        strip_metadata_in_place(&mut tags);
        map.insert("tags".into(), Value::Object(tags));
    }
    if let Some(Value::Object(mut desired)) = desired {
        strip_metadata_in_place(&mut desired);
        if !desired.is_empty() {
            map.insert(
                "properties".into(),
                serde_json::json!({ "desired": Value::Object(desired) }),
            );
        }
    }
    out
}

/// Canonical form of a twin query item (`SELECT * FROM devices` / `devices.modules`): no keys.
pub fn from_twin(twin: &Value) -> Value {
    let module = twin.get("moduleId").is_some_and(|m| !m.is_null());
    let mut out = Map::new();
    if let Some(id) = twin.get("deviceId") {
        out.insert("id".into(), id.clone());
    }
    if module {
        out.insert("moduleId".into(), twin["moduleId"].clone());
    } else {
        copy_status(twin, &mut out);
        out.insert(
            "capabilities".into(),
            serde_json::json!({ "iotEdge": is_edge(twin) }),
        );
        copy_scopes(twin, &mut out);
    }
    insert_auth(
        &mut out,
        twin.get("authenticationType").cloned(),
        twin.get("x509Thumbprint").cloned(),
        None,
    );
    copy_twin(twin, &mut out);
    Value::Object(out)
}

/// Put symmetric keys (from `GET /devices/{id}` or a module GET) into a canonical record.
pub fn with_keys(mut canonical: Value, authentication: &Value) -> Value {
    let key = authentication
        .get("symmetricKey")
        .cloned()
        .filter(symmetric_key_present);
    if let (Some(key), Some(Value::Object(a))) = (key, canonical.get_mut("authentication")) {
        a.insert("symmetricKey".into(), key);
    }
    canonical
}

/// A diff entry for a canonical record.
pub fn entry(canonical: &Value) -> Entry {
    let id = canonical
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let module_id = canonical
        .get("moduleId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Entry {
        id,
        module_id,
        line: serde_json::to_vec(canonical).unwrap_or_default(),
    }
}

/// The parent id a canonical record links to (its `deviceScope` for a leaf, `parentScopes` for
/// a nested edge device), as put there by `copy_scopes`.
pub fn parent(canonical: &Value) -> Option<&str> {
    canonical.get("deviceScope").and_then(Value::as_str)
}

fn copy_ids(line: &Value, out: &mut Map<String, Value>) {
    for k in ["id", "moduleId"] {
        if let Some(v) = line.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
}

fn copy_status(line: &Value, out: &mut Map<String, Value>) {
    if let Some(s) = line.get("status").filter(|v| !v.is_null()) {
        out.insert("status".into(), s.clone());
    }
    if let Some(r) = line
        .get("statusReason")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    {
        out.insert("statusReason".into(), r.clone());
    }
}

/// Edge links as the parent id, under `deviceScope` so that the diff names the aspect "scopes".
/// An edge device's own scope says nothing to compare (it is generated per hub) and is dropped.
fn copy_scopes(line: &Value, out: &mut Map<String, Value>) {
    // A twin names the device `deviceId`; `parent_of` reads export lines (`id`).
    let view = serde_json::json!({
        "id": out.get("id").cloned().unwrap_or(Value::Null),
        "capabilities": line.get("capabilities").cloned().unwrap_or(Value::Null),
        "deviceScope": line.get("deviceScope").cloned().unwrap_or(Value::Null),
        "parentScopes": line.get("parentScopes").cloned().unwrap_or(Value::Null),
    });
    if let Some(parent) = lines::parent_of(&view) {
        out.insert("deviceScope".into(), Value::String(parent));
    }
}

fn symmetric_key_present(k: &Value) -> bool {
    ["primaryKey", "secondaryKey"]
        .iter()
        .any(|f| k.get(*f).is_some_and(|v| !v.is_null()))
}

fn thumbs_present(t: &Value) -> bool {
    ["primaryThumbprint", "secondaryThumbprint"]
        .iter()
        .any(|f| t.get(*f).is_some_and(|v| !v.is_null()))
}

fn insert_auth(
    out: &mut Map<String, Value>,
    kind: Option<Value>,
    thumbs: Option<Value>,
    key: Option<Value>,
) {
    let mut auth = Map::new();
    if let Some(k) = kind.filter(|k| !k.is_null()) {
        auth.insert("type".into(), k);
    }
    if let Some(t) = thumbs.filter(thumbs_present) {
        auth.insert("x509Thumbprint".into(), t);
    }
    if let Some(k) = key.filter(symmetric_key_present) {
        auth.insert("symmetricKey".into(), k);
    }
    out.insert("authentication".into(), Value::Object(auth));
}

/// Tags and desired properties, without twin metadata; empty objects are dropped (a twin read
/// shows `{}` where an export may show nothing).
fn copy_twin(line: &Value, out: &mut Map<String, Value>) {
    if let Some(Value::Object(tags)) = line.get("tags")
        && !tags.is_empty()
    {
        out.insert("tags".into(), Value::Object(strip_metadata(tags)));
    }
    if let Some(Value::Object(desired)) = line.get("properties").and_then(|p| p.get("desired")) {
        let desired = strip_metadata(desired);
        if !desired.is_empty() {
            out.insert(
                "properties".into(),
                serde_json::json!({ "desired": Value::Object(desired) }),
            );
        }
    }
}

fn strip_metadata(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| k.as_str() != "$metadata" && k.as_str() != "$version")
        .map(|(k, v)| {
            let v = match v {
                Value::Object(m) => Value::Object(strip_metadata(m)),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn strip_metadata_in_place(map: &mut Map<String, Value>) {
    map.retain(|k, _| k.as_str() != "$metadata" && k.as_str() != "$version");
    for v in map.values_mut() {
        if let Value::Object(m) = v {
            strip_metadata_in_place(m);
        }
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

    const SNAP: &str = r#"{"id":"pump-1","eTag":"MQ==","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"cHJp","secondaryKey":"c2Vj"},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"twinETag":"AAAAAAAAAAE=","tags":{"site":"p7"},"properties":{"desired":{"x":1},"reported":{"fw":"2"}},"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-01-111"}"#;

    fn twin() -> Value {
        json!({"deviceId":"pump-1","etag":"AAAAAAAAAAk=","deviceEtag":"Nw==","status":"enabled","statusReason":null,
            "authenticationType":"sas","x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},
            "version":9,"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-01-999","parentScopes":["ms-azure-iot-edge://gw-01-999"],
            "tags":{"site":"p7"},"properties":{"desired":{"x":1,"$version":3,"$metadata":{}},"reported":{"fw":"9"}}})
    }

    fn aspects(a: &Value, b: &Value) -> Vec<&'static str> {
        let mut out = Vec::new();
        crate::diff::for_each_change(
            std::iter::once(Ok::<_, std::io::Error>(entry(a))),
            std::iter::once(Ok(entry(b))),
            |c| {
                if let crate::diff::Change::Changed(_, asp) = c {
                    out.extend(asp.iter().map(|x| x.as_str()));
                }
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn a_twin_read_matches_its_export_line_on_another_hub() {
        let snap: Value = serde_json::from_str(SNAP).unwrap();
        let keyless = from_export_line(&snap, false);
        assert_eq!(aspects(&keyless, &from_twin(&twin())), Vec::<&str>::new());
        assert!(!has_keys(&keyless));
        let full = from_export_line(&snap, true);
        assert!(has_keys(&full));
        let got = with_keys(
            from_twin(&twin()),
            &json!({"symmetricKey":{"primaryKey":"b3RoZXI=","secondaryKey":"c2Vj"}}),
        );
        assert_eq!(aspects(&full, &got), ["keys"]);
    }

    #[test]
    fn moving_a_line_into_its_canonical_form_copies_nothing_less() {
        let mut lines: Vec<Value> = vec![serde_json::from_str(SNAP).unwrap()];
        lines.push(json!({"id": "cam-7", "status": "disabled", "statusReason": "retired",
            "authentication": {"symmetricKey": {"primaryKey": null, "secondaryKey": null},
                "x509Thumbprint": {"primaryThumbprint": "6E5A", "secondaryThumbprint": "0F1E"}, "type": "selfSigned"},
            "tags": {}, "properties": {"desired": {}, "reported": {}}, "capabilities": {"iotEdge": false}}));
        lines.push(json!({"id": "gw-1", "moduleId": "filter", "status": "enabled",
            "authentication": {"symmetricKey": {"primaryKey": "bW9k", "secondaryKey": "c2Vj"}, "type": "sas"},
            "properties": {"desired": {"threshold": 5}}}));
        lines.push(json!({"id": "gw-1", "moduleId": "$edgeAgent", "status": "enabled", "authentication": null,
            "tags": {}, "properties": {"desired": {}, "reported": {}}, "capabilities": {"iotEdge": false}}));
        lines.push(json!({"id": "m", "moduleId": "x", "authentication": null,
            "tags": {"a": {"$metadata": {}, "b": 1}, "$version": 2},
            "properties": {"desired": {"$metadata": {"x": 1}, "$version": 4}}}));
        lines.push(json!({"id": "e", "capabilities": {"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://e-1",
            "parentScopes": ["ms-azure-iot-edge://p-7"], "tags": {}, "properties": {"reported": {"r": 1}}}));
        lines.push(json!("not an object"));
        for line in &lines {
            for keys in [true, false] {
                assert_eq!(
                    from_export_value(line.clone(), keys),
                    from_export_line(line, keys),
                    "{keys}"
                );
            }
        }
    }

    #[test]
    fn changed_parent_tags_and_status_are_named() {
        let snap: Value = serde_json::from_str(SNAP).unwrap();
        let mut t = twin();
        t["deviceScope"] = json!("ms-azure-iot-edge://gw-02-5");
        t["parentScopes"] = json!(["ms-azure-iot-edge://gw-02-5"]);
        t["tags"] = json!({"site": "p8"});
        t["status"] = json!("disabled");
        let got = aspects(&from_export_line(&snap, false), &from_twin(&t));
        assert_eq!(got, ["status", "tags", "scopes"]);
        assert_eq!(parent(&from_twin(&t)), Some("gw-02"));
    }
}
