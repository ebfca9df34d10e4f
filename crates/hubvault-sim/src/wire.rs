//! The simulator's own wire types: registry model ⇄ service JSON (`Device`, `Module`, `Twin`,
//! `ExportImportDevice` lines). Field names and casing follow the 2021-04-12 swagger and contract
//! §3.1/§5; they are written here independently of hubvault's client, on purpose.
//!
//! Must not: apply business rules (registry) or import modes (apply).

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::error::{HubError, timestamp};
use super::registry::{Auth, Device, Identity, Module, Twin, expand, identity_etag};

const NEVER: &str = "0001-01-01T00:00:00Z";

fn unix_ts(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs).map_or_else(|_| NEVER.to_string(), timestamp)
}

/// `authentication` object. `keys: false` gives the `excludeKeysInExport` shape (`null` keys).
pub fn auth_json(auth: &Auth, keys: bool) -> Value {
    let (pk, sk, pt, st) = match auth {
        Auth::Sas { primary, secondary } => {
            (Some(primary.text()), Some(secondary.text()), None, None)
        }
        Auth::SelfSigned { primary, secondary } => {
            (None, None, Some(&**primary), secondary.as_deref())
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
        "statusReason": d.status_reason(),
        "connectionStateUpdatedTime": NEVER,
        "statusUpdatedTime": unix_ts(d.status_updated),
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authentication": auth_json(&d.auth, true),
        "capabilities": {"iotEdge": d.edge},
        "deviceScope": d.device_scope(),
        "parentScopes": d.parent_scopes(),
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
    let mut desired = expand(t.desired());
    desired.insert(
        "$metadata".into(),
        json!({"$lastUpdated": unix_ts(t.updated)}),
    );
    desired.insert("$version".into(), json!(t.desired_version));
    let mut reported = expand(t.reported());
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
        "statusReason": d.status_reason(),
        "statusUpdateTime": unix_ts(d.status_updated),
        "connectionState": "Disconnected",
        "lastActivityTime": NEVER,
        "cloudToDeviceMessageCount": 0,
        "authenticationType": d.auth.type_name(),
        "x509Thumbprint": {"primaryThumbprint": pt, "secondaryThumbprint": st},
        "modelId": "",
        "version": d.twin.version,
        "capabilities": {"iotEdge": d.edge},
        "deviceScope": d.device_scope(),
        "parentScopes": d.parent_scopes(),
        "tags": expand(d.twin.tags()),
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
        "tags": expand(m.twin.tags()),
        "properties": properties_json(&m.twin),
    })
}

/// Write a JSON object with keys in the given order (`serde_json`'s map sorts keys; export lines
/// keep the service's field order so they read like real exports).
fn ordered(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(*k).to_string());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

fn js(v: impl serde::Serialize) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "null".into())
}

/// `authentication` in the service's field order.
fn auth_text(auth: &Auth) -> String {
    let a = auth_json(auth, true);
    let sym = ordered(&[
        ("primaryKey", js(&a["symmetricKey"]["primaryKey"])),
        ("secondaryKey", js(&a["symmetricKey"]["secondaryKey"])),
    ]);
    let x509 = ordered(&[
        (
            "primaryThumbprint",
            js(&a["x509Thumbprint"]["primaryThumbprint"]),
        ),
        (
            "secondaryThumbprint",
            js(&a["x509Thumbprint"]["secondaryThumbprint"]),
        ),
    ]);
    ordered(&[
        ("symmetricKey", sym),
        ("x509Thumbprint", x509),
        ("type", js(auth.type_name())),
    ])
}

fn twin_fields(line: &mut Vec<(&'static str, String)>, t: &Twin) {
    line.push(("twinETag", js(t.etag())));
    line.push(("tags", t.tags().unwrap_or("{}").to_string()));
    let desired = t.desired().unwrap_or("{}");
    let reported = t.reported().unwrap_or("{}");
    line.push((
        "properties",
        format!("{{\"desired\":{desired},\"reported\":{reported}}}"),
    ));
}

/// One `devices.txt` line for a device (§3.1). `keys: false` writes `"authentication": null`,
/// the shape observed in real exports with `excludeKeysInExport` (UNCERTAIN §12.4).
pub fn export_device_line(id: &str, d: &Device, keys: bool) -> String {
    let mut line = vec![
        ("id", js(id)),
        ("eTag", js(identity_etag(d.etag))),
        ("status", js(if d.enabled { "enabled" } else { "disabled" })),
    ];
    if let Some(r) = &d.status_reason() {
        line.push(("statusReason", js(&**r)));
    }
    line.push((
        "authentication",
        if keys {
            auth_text(&d.auth)
        } else {
            "null".into()
        },
    ));
    twin_fields(&mut line, &d.twin);
    line.push(("capabilities", format!("{{\"iotEdge\":{}}}", d.edge)));
    if let Some(s) = &d.device_scope() {
        line.push(("deviceScope", js(&**s)));
    }
    if !d.parent_scopes().is_empty() {
        line.push(("parentScopes", js(d.parent_scopes())));
    }
    ordered(&line)
}

/// One `devices.txt` line for a module. System modules have no keys: `authentication` is null.
pub fn export_module_line(id: &str, m: &Module, keys: bool) -> String {
    let mut line = vec![
        ("id", js(id)),
        ("moduleId", js(&*m.id)),
        ("eTag", js(identity_etag(m.etag))),
        ("status", js("enabled")),
    ];
    let auth = if keys && m.auth != Auth::None {
        auth_text(&m.auth)
    } else {
        "null".into()
    };
    line.push(("authentication", auth));
    twin_fields(&mut line, &m.twin);
    line.push(("capabilities", "{\"iotEdge\":false}".into()));
    ordered(&line)
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
    // Enum names look case-insensitive on the service (docs/azure.md); unknown ones are errors.
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
        _ => Err(HubError::argument_invalid(format!(
            "Error converting value \"{kind}\" to type 'AuthenticationType'. Path 'authentication.type'."
        ))),
    }
}

/// The service accepts base64 keys of 16 to 64 bytes.
fn check_key(k: &str) -> Result<(), HubError> {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::STANDARD
        .decode(k)
        .map_or(0, |b| b.len());
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
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_lines_parse() {
        // Two export lines in the documented shape (docs/azure.md#devices-txt), constructed by hand.
        let text = r#"{"id":"pump-0042","eTag":"NzE0MzIwMjE5","status":"enabled","statusReason":"","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeS1rZXktcHVtcC0wMDQyLTAwMDAwMDAwMDA=","secondaryKey":"c2Vjb25kYXJ5LWtleS1wdW1wLTAwNDItMDAwMDAwMDA="},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"twinETag":"AAAAAAAAAAM=","tags":{"site":"plant-7","line":3},"properties":{"desired":{"telemetryIntervalSec":30},"reported":{"fwVersion":"2.4.1"}},"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-berlin-01-638512345678901234"}
{"id":"cam-7","eTag":"Mg==","status":"disabled","statusReason":"retired","authentication":{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"6E5A1C3F9B0D2E4F6A8C0B1D3E5F7A9C1B3D5E7F","secondaryThumbprint":"0F1E2D3C4B5A69788796A5B4C3D2E1F001122334"},"type":"selfSigned"},"twinETag":"AAAAAAAAAAI=","tags":{},"properties":{"desired":{},"reported":{}},"capabilities":{"iotEdge":false}}"#;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line).unwrap();
            parse_identity(&v).unwrap();
        }
        let mut d = Device::new(
            1,
            2,
            Auth::Sas {
                primary: "cA==".into(),
                secondary: "cQ==".into(),
            },
            0,
        );
        d.enabled = false;
        d.set_status_reason(Some("retired".into()));
        assert_eq!(
            export_device_line("cam-7", &d, true),
            r#"{"id":"cam-7","eTag":"MQ==","status":"disabled","statusReason":"retired","authentication":{"symmetricKey":{"primaryKey":"cA==","secondaryKey":"cQ=="},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"twinETag":"AAAAAAAAAAE=","tags":{},"properties":{"desired":{},"reported":{}},"capabilities":{"iotEdge":false}}"#
        );
        assert!(export_device_line("cam-7", &d, false).contains(r#""authentication":null"#));
    }

    #[test]
    fn bad_auth_type_and_short_keys_are_rejected() {
        let v = json!({"type": "SELF_SIGNED"});
        assert_eq!(parse_auth(Some(&v)).unwrap_err().code, 400_004);
        let v = json!({"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ=", "secondaryKey": "c2hvcnQ="}});
        assert_eq!(parse_auth(Some(&v)).unwrap_err().code, 400_004);
    }
}
