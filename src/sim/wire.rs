//! The simulator's own wire types: registry model ⇄ service JSON (`Device`, `Module`, `Twin`,
//! `ExportImportDevice` lines). Field names and casing follow the 2021-04-12 swagger and contract
//! §3.1/§5; they are written here independently of hubvault's client, on purpose.
//!
//! Must not: apply business rules (registry) or import modes (apply).

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::error::{HubError, timestamp};
use super::registry::{Auth, Device, Identity, Module, Twin, expand, identity_etag};

const NEVER: &str = "0001-01-01T00:00:00Z";

fn unix_ts(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(timestamp)
        .unwrap_or_else(|_| NEVER.to_string())
}

/// `authentication` object. `keys: false` gives the `excludeKeysInExport` shape (`null` keys).
pub fn auth_json(auth: &Auth, keys: bool) -> Value {
    let (pk, sk, pt, st): (Option<&str>, Option<&str>, Option<&str>, Option<&str>) = match auth {
        Auth::Sas { primary, secondary } => (Some(primary), Some(secondary), None, None),
        Auth::SelfSigned { primary, secondary } => {
            (None, None, Some(primary), secondary.as_deref())
        }
        Auth::CertificateAuthority | Auth::None => (None, None, None, None),
    };
    let (pk, sk) = if keys { (pk, sk) } else { (None, None) };
    json!({
        "symmetricKey": {"primaryKey": pk, "secondaryKey": sk},
        "x509Thumbprint": {"primaryThumbprint": pt, "secondaryThumbprint": st},
        "type": auth.type_name(),
    })
}

/// `Device` as `GET /devices/{id}` returns it (with keys).
pub fn device_json(id: &str, d: &Device) -> Value {
    json!({
        "deviceId": id,
        "generationId": d.generation.to_string(),
        "etag": identity_etag(d.etag),
        "connectionState": "Disconnected",
        "status": if d.enabled { "enabled" } else { "disabled" },
        "statusReason": d.status_reason.as_deref(),
        "connectionStateUpdatedTime": NEVER,
        "statusUpdatedTime": unix_ts(d.status_updated),
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authentication": auth_json(&d.auth, true),
        "capabilities": {"iotEdge": d.edge},
        "deviceScope": d.device_scope.as_deref(),
        "parentScopes": d.parent_scopes,
    })
}

pub fn module_json(device_id: &str, m: &Module) -> Value {
    json!({
        "moduleId": &*m.id,
        "managedBy": m.managed_by.as_deref(),
        "deviceId": device_id,
        "generationId": m.generation.to_string(),
        "etag": identity_etag(m.etag),
        "connectionState": "Disconnected",
        "connectionStateUpdatedTime": NEVER,
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authentication": auth_json(&m.auth, true),
    })
}

fn properties_json(t: &Twin) -> Value {
    let mut desired = expand(t.desired.as_deref());
    desired.insert(
        "$metadata".into(),
        json!({"$lastUpdated": unix_ts(t.updated)}),
    );
    desired.insert("$version".into(), json!(t.desired_version));
    let mut reported = expand(t.reported.as_deref());
    reported.insert(
        "$metadata".into(),
        json!({"$lastUpdated": unix_ts(t.updated)}),
    );
    reported.insert("$version".into(), json!(t.reported_version));
    json!({"desired": desired, "reported": reported})
}

/// Twin of a device (query item and `GET /twins/{id}`); never carries keys.
pub fn twin_json(id: &str, d: &Device) -> Value {
    let (pt, st) = match &d.auth {
        Auth::SelfSigned { primary, secondary } => (Some(&**primary), secondary.as_deref()),
        _ => (None, None),
    };
    json!({
        "deviceId": id,
        "etag": d.twin.etag(),
        "deviceEtag": identity_etag(d.etag),
        "status": if d.enabled { "enabled" } else { "disabled" },
        "statusReason": d.status_reason.as_deref(),
        "statusUpdateTime": unix_ts(d.status_updated),
        "connectionState": "Disconnected",
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authenticationType": d.auth.type_name(),
        "x509Thumbprint": {"primaryThumbprint": pt, "secondaryThumbprint": st},
        "modelId": "",
        "version": d.twin.version,
        "capabilities": {"iotEdge": d.edge},
        "deviceScope": d.device_scope.as_deref(),
        "parentScopes": d.parent_scopes,
        "tags": expand(d.twin.tags.as_deref()),
        "properties": properties_json(&d.twin),
    })
}

pub fn module_twin_json(id: &str, d: &Device, m: &Module) -> Value {
    json!({
        "deviceId": id,
        "moduleId": &*m.id,
        "etag": m.twin.etag(),
        "deviceEtag": identity_etag(m.etag),
        "status": if d.enabled { "enabled" } else { "disabled" },
        "connectionState": "Disconnected",
        "lastActivityTime": NEVER,
        "authenticationType": m.auth.type_name(),
        "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
        "modelId": "",
        "version": m.twin.version,
        "tags": expand(m.twin.tags.as_deref()),
        "properties": properties_json(&m.twin),
    })
}

fn twin_fields(line: &mut Map<String, Value>, t: &Twin) {
    line.insert("twinETag".into(), t.etag().into());
    line.insert("tags".into(), Value::Object(expand(t.tags.as_deref())));
    line.insert(
        "properties".into(),
        json!({"desired": expand(t.desired.as_deref()), "reported": expand(t.reported.as_deref())}),
    );
}

/// One `devices.txt` line for a device (§3.1). `keys: false` writes `"authentication": null`,
/// the shape observed in real exports with `excludeKeysInExport` (UNCERTAIN §12.4).
pub fn export_device_line(id: &str, d: &Device, keys: bool) -> String {
    let mut line = Map::new();
    line.insert("id".into(), id.into());
    line.insert("eTag".into(), identity_etag(d.etag).into());
    line.insert(
        "status".into(),
        (if d.enabled { "enabled" } else { "disabled" }).into(),
    );
    if let Some(r) = &d.status_reason {
        line.insert("statusReason".into(), (&**r).into());
    }
    line.insert(
        "authentication".into(),
        if keys {
            auth_json(&d.auth, true)
        } else {
            Value::Null
        },
    );
    twin_fields(&mut line, &d.twin);
    line.insert("capabilities".into(), json!({"iotEdge": d.edge}));
    if let Some(s) = &d.device_scope {
        line.insert("deviceScope".into(), (&**s).into());
    }
    if !d.parent_scopes.is_empty() {
        line.insert("parentScopes".into(), json!(d.parent_scopes));
    }
    Value::Object(line).to_string()
}

/// One `devices.txt` line for a module. System modules have no keys: `authentication` is null.
pub fn export_module_line(id: &str, m: &Module, keys: bool) -> String {
    let mut line = Map::new();
    line.insert("id".into(), id.into());
    line.insert("moduleId".into(), (&*m.id).into());
    line.insert("eTag".into(), identity_etag(m.etag).into());
    line.insert("status".into(), "enabled".into());
    let auth = if keys && m.auth != Auth::None {
        auth_json(&m.auth, true)
    } else {
        Value::Null
    };
    line.insert("authentication".into(), auth);
    twin_fields(&mut line, &m.twin);
    line.insert("capabilities".into(), json!({"iotEdge": false}));
    Value::Object(line).to_string()
}

/// Parse `authentication`. `Ok(None)`: absent or null (SAS with generated keys).
pub fn parse_auth(v: Option<&Value>) -> Result<Option<Auth>, HubError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v["type"].as_str().unwrap_or("sas");
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    // Enum names look case-insensitive on the service (contract §4.1); unknown ones are errors.
    match kind.to_ascii_lowercase().as_str() {
        "sas" => match (
            s("/symmetricKey/primaryKey"),
            s("/symmetricKey/secondaryKey"),
        ) {
            (None, None) => Ok(None),
            (Some(p), Some(q)) => {
                check_key(p)?;
                check_key(q)?;
                Ok(Some(Auth::Sas {
                    primary: p.into(),
                    secondary: q.into(),
                }))
            }
            _ => Err(HubError::argument_invalid(
                "Both primaryKey and secondaryKey must be given, or neither.",
            )),
        },
        "selfsigned" => {
            let p = s("/x509Thumbprint/primaryThumbprint").ok_or_else(|| {
                HubError::argument_null(
                    "x509Thumbprint.primaryThumbprint is required for selfSigned authentication.",
                )
            })?;
            Ok(Some(Auth::SelfSigned {
                primary: p.into(),
                secondary: s("/x509Thumbprint/secondaryThumbprint").map(Into::into),
            }))
        }
        "certificateauthority" => Ok(Some(Auth::CertificateAuthority)),
        "none" => Ok(Some(Auth::None)),
        other => Err(HubError::argument_invalid(format!(
            "Error converting value \"{other}\" to type 'AuthenticationType'. Path 'authentication.type'."
        ))),
    }
}

/// The service accepts base64 keys of 16 to 64 bytes.
fn check_key(k: &str) -> Result<(), HubError> {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::STANDARD
        .decode(k)
        .map(|b| b.len())
        .unwrap_or(0);
    if (16..=64).contains(&n) {
        Ok(())
    } else {
        Err(HubError::argument_invalid(
            "The length of the key must be between 16 and 64 bytes.",
        ))
    }
}

/// Identity fields from a `Device` body or an `ExportImportDevice` line.
pub fn parse_identity(v: &Value) -> Result<Identity, HubError> {
    let enabled = match v["status"].as_str().map(str::to_ascii_lowercase).as_deref() {
        None | Some("enabled") => true,
        Some("disabled") => false,
        Some(other) => {
            return Err(HubError::argument_invalid(format!(
                "Error converting value \"{other}\" to type 'DeviceStatus'. Path 'status'."
            )));
        }
    };
    let parent_scopes = v["parentScopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        enabled,
        status_reason: v["statusReason"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        auth: parse_auth(v.get("authentication"))?,
        edge: v
            .pointer("/capabilities/iotEdge")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        device_scope: v["deviceScope"].as_str().map(String::from),
        parent_scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_lines_parse() {
        // Two lines of `shared/reference/examples/iothub-dataplane/constructed-export-devices.txt`.
        let text = r#"{"id":"pump-0042","eTag":"NzE0MzIwMjE5","status":"enabled","statusReason":"","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeS1rZXktcHVtcC0wMDQyLTAwMDAwMDAwMDA=","secondaryKey":"c2Vjb25kYXJ5LWtleS1wdW1wLTAwNDItMDAwMDAwMDA="},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"twinETag":"AAAAAAAAAAM=","tags":{"site":"plant-7","line":3},"properties":{"desired":{"telemetryIntervalSec":30},"reported":{"fwVersion":"2.4.1"}},"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-berlin-01-638512345678901234"}
{"id":"cam-7","eTag":"Mg==","status":"disabled","statusReason":"retired","authentication":{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"6E5A1C3F9B0D2E4F6A8C0B1D3E5F7A9C1B3D5E7F","secondaryThumbprint":"0F1E2D3C4B5A69788796A5B4C3D2E1F001122334"},"type":"selfSigned"},"twinETag":"AAAAAAAAAAI=","tags":{},"properties":{"desired":{},"reported":{}},"capabilities":{"iotEdge":false}}"#;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line).unwrap();
            parse_identity(&v).unwrap();
        }
    }

    #[test]
    fn bad_auth_type_and_short_keys_are_rejected() {
        let v = json!({"type": "SELF_SIGNED"});
        assert_eq!(parse_auth(Some(&v)).unwrap_err().code, 400_004);
        let v = json!({"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ=", "secondaryKey": "c2hvcnQ="}});
        assert_eq!(parse_auth(Some(&v)).unwrap_err().code, 400_004);
    }
}
