//! The DPS device registration API (docs/azure.md#dps-device-registration), served on each DPS
//! instance's port as devices reach it at `global.azure-devices-provisioning.net`:
//!
//! - `PUT /{idScope}/registrations/{registrationId}/register?api-version=…` with
//!   `{"registrationId": …}` → `202 {"operationId", "status": "assigning"}`;
//! - `GET /{idScope}/registrations/{registrationId}/operations/{operationId}?api-version=…` →
//!   `200 {"operationId", "status": "assigned" | "disabled" | "failed", "registrationState": …}`.
//!
//! Both carry a device SAS token, `sr={idScope}/registrations/{registrationId}` (percent-encoded
//! as the SDKs send it), signed with the individual enrollment's key or the group-derived key
//! `base64(HMAC-SHA256(base64decode(groupKey), registrationId))`, `skn=registration` or none.
//! A wrong key is 401 401002; a disabled enrollment ends in status `disabled`. Assignment
//! (hashed or static over the enrollment's hubs, else every linked hub) creates the device in
//! the assigned hub with the same key and the initial twin, or gives an existing one that key.
//!
//! The work happens at the PUT; the operation is already final when first read.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::enrollment::Kind;
use super::{DpsState, error, json_response, now_text};
use crate::records::{Auth, Key};
use crate::registry::Identity;
use crate::shared::lock;
use crate::state::{Hub, now_secs};

/// Operations kept for reading back; the oldest go first beyond this.
const MAX_OPERATIONS: usize = 100_000;

/// The attestation a request proved: the enrollment (individual or group) and the device's keys.
struct Proven {
    kind: Kind,
    enrollment: Value,
    primary: String,
    secondary: String,
}

/// `segs` = `[idScope, "registrations", registrationId, …]`.
pub(super) fn dispatch(
    state: &DpsState,
    method: &axum::http::Method,
    segs: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let (scope, reg_id) = (segs[0], segs[2]);
    if !scope.eq_ignore_ascii_case(&state.id_scope) {
        return error(
            StatusCode::NOT_FOUND,
            404_000,
            &format!("The ID scope '{scope}' is not this Device Provisioning Service's."),
        );
    }
    let Some(proven) = prove(state, headers, reg_id) else {
        return error(StatusCode::UNAUTHORIZED, 401_002, "Unauthorized");
    };
    match (method, &segs[3..]) {
        (&axum::http::Method::PUT, ["register"]) => register(state, reg_id, &proven, body),
        (&axum::http::Method::GET, ["operations", op]) => operation(state, reg_id, op),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            405_000,
            "The method is not allowed on this registration path.",
        ),
    }
}

/// Check the device SAS and find the enrollment whose key signed it (`None`: 401).
fn prove(state: &DpsState, headers: &HeaderMap, reg_id: &str) -> Option<Proven> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let token = DeviceToken::parse(header)?;
    let expected = format!("{}/registrations/{reg_id}", state.id_scope);
    if !token.audience.eq_ignore_ascii_case(&expected) || token.expiry <= now_secs() {
        return None;
    }
    let lower = reg_id.to_ascii_lowercase();
    if let Some(doc) = lock(&state.individual).get(&lower) {
        let (primary, secondary) = symmetric_keys(doc)?;
        return [primary.as_str(), secondary.as_str()]
            .iter()
            .any(|k| token.signed_with(k))
            .then(|| Proven {
                kind: Kind::Individual,
                enrollment: doc.clone(),
                primary: primary.clone(),
                secondary: secondary.clone(),
            });
    }
    let groups = lock(&state.groups);
    groups.values().find_map(|doc| {
        let (gp, gs) = symmetric_keys(doc)?;
        let (p, s) = (derive_key(&gp, reg_id)?, derive_key(&gs, reg_id)?);
        (token.signed_with(&p) || token.signed_with(&s)).then(|| Proven {
            kind: Kind::Group,
            enrollment: doc.clone(),
            primary: p,
            secondary: s,
        })
    })
}

fn symmetric_keys(doc: &Value) -> Option<(String, String)> {
    let sk = &doc["attestation"]["symmetricKey"];
    (doc["attestation"]["type"] == "symmetricKey").then_some(())?;
    Some((
        sk["primaryKey"].as_str()?.to_string(),
        sk["secondaryKey"].as_str()?.to_string(),
    ))
}

/// `base64(HMAC-SHA256(base64decode(group_key), registration_id))`.
pub fn derive_key(group_key_b64: &str, registration_id: &str) -> Option<String> {
    let key = STANDARD.decode(group_key_b64).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(registration_id.as_bytes());
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// A device SAS as sent: `sr` kept exactly as it came (still percent-encoded) for the
/// signature check, and decoded for the audience check.
struct DeviceToken {
    sr_as_sent: String,
    audience: String,
    signature: Vec<u8>,
    expiry: i64,
    expiry_text: String,
}

impl DeviceToken {
    fn parse(header: &str) -> Option<DeviceToken> {
        let fields = header.strip_prefix("SharedAccessSignature ")?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in fields.split('&') {
            let (k, v) = pair.split_once('=')?;
            match k {
                "sr" => sr = Some(v),
                "sig" => sig = Some(v),
                "se" => se = Some(v),
                "skn" => skn = Some(v),
                _ => {}
            }
        }
        if skn.is_some_and(|n| n != "registration") {
            return None;
        }
        let decode = |v: &str| {
            percent_decode_str(v)
                .decode_utf8()
                .ok()
                .map(std::borrow::Cow::into_owned)
        };
        let (sr, se) = (sr?, se?);
        Some(DeviceToken {
            sr_as_sent: sr.to_string(),
            audience: decode(sr)?,
            signature: STANDARD.decode(decode(sig?)?).ok()?,
            expiry: se.parse().ok()?,
            expiry_text: se.to_string(),
        })
    }

    /// HMAC-SHA256 over `{sr as sent}\n{se}` with `key_b64`.
    fn signed_with(&self, key_b64: &str) -> bool {
        let Ok(key) = STANDARD.decode(key_b64) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{}\n{}", self.sr_as_sent, self.expiry_text).as_bytes());
        mac.verify_slice(&self.signature).is_ok()
    }
}

fn register(state: &DpsState, reg_id: &str, proven: &Proven, body: &[u8]) -> Response {
    let named = serde_json::from_slice::<Value>(body).ok().and_then(|b| {
        b.get("registrationId")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if !named.is_some_and(|n| n.eq_ignore_ascii_case(reg_id)) {
        return error(
            StatusCode::BAD_REQUEST,
            400_004,
            "The body must be {\"registrationId\": …} naming the registration in the path.",
        );
    }
    let operation_id = format!("4.{}.{}", state.id_scope, uuid::Uuid::new_v4());
    let result = outcome(state, reg_id, proven);
    let mut ops = lock(&state.operations);
    if ops.len() >= MAX_OPERATIONS {
        ops.clear();
    }
    ops.insert(operation_id.clone(), (reg_id.to_ascii_lowercase(), result));
    json_response(
        StatusCode::ACCEPTED,
        &json!({"operationId": operation_id, "status": "assigning"}),
    )
}

fn operation(state: &DpsState, reg_id: &str, op: &str) -> Response {
    let ops = lock(&state.operations);
    match ops.get(op) {
        Some((owner, result)) if owner.eq_ignore_ascii_case(reg_id) => {
            let mut body = result.clone();
            body["operationId"] = json!(op);
            json_response(StatusCode::OK, &body)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            404_000,
            &format!("The operation '{op}' was not found."),
        ),
    }
}

/// The final operation status: `disabled`, `failed` (no hub to assign) or `assigned`.
fn outcome(state: &DpsState, reg_id: &str, proven: &Proven) -> Value {
    let now = now_text();
    let mut reg_state = json!({
        "registrationId": reg_id,
        "createdDateTimeUtc": now,
        "lastUpdatedDateTimeUtc": now,
    });
    if proven.kind == Kind::Group {
        reg_state["symmetricKey"] =
            json!({"enrollmentGroupId": proven.enrollment["enrollmentGroupId"]});
    }
    if proven.enrollment["provisioningStatus"] == "disabled" {
        reg_state["status"] = json!("disabled");
        return json!({"status": "disabled", "registrationState": reg_state});
    }
    let Some(hub) = allocate(state, reg_id, &proven.enrollment) else {
        reg_state["status"] = json!("failed");
        reg_state["errorCode"] = json!(400_207);
        reg_state["errorMessage"] =
            json!("No linked IoT hub is available to assign this device to.");
        return json!({"status": "failed", "registrationState": reg_state});
    };
    let device_id = match proven.kind {
        Kind::Individual => proven.enrollment["deviceId"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or(reg_id)
            .to_string(),
        Kind::Group => reg_id.to_string(),
    };
    if let Err(message) = provision(&hub, &device_id, proven) {
        reg_state["status"] = json!("failed");
        reg_state["errorCode"] = json!(500_000);
        reg_state["errorMessage"] = json!(message);
        return json!({"status": "failed", "registrationState": reg_state});
    }
    reg_state["status"] = json!("assigned");
    reg_state["substatus"] = json!("initialAssignment");
    reg_state["assignedHub"] = json!(hub.shared.host);
    reg_state["deviceId"] = json!(device_id);
    json!({"status": "assigned", "registrationState": reg_state})
}

/// The hub the enrollment's allocation policy picks: its `iotHubs` (else `iotHubHostName`, else
/// every linked hub), hashed on the registration id, or the first for `static`.
fn allocate(state: &DpsState, reg_id: &str, enrollment: &Value) -> Option<Arc<Hub>> {
    let hubs = lock(&state.hubs).clone();
    let linked = lock(&state.linked_hubs).clone();
    let is_linked = |host: &str| {
        linked
            .as_ref()
            .is_none_or(|l| l.iter().any(|h| h.eq_ignore_ascii_case(host)))
    };
    let mut named: Vec<String> = enrollment["iotHubs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if named.is_empty()
        && let Some(h) = enrollment["iotHubHostName"].as_str()
    {
        named.push(h.to_string());
    }
    let mut candidates: Vec<Arc<Hub>> = hubs
        .into_iter()
        .filter(|h| is_linked(&h.shared.host))
        .filter(|h| {
            named.is_empty() || named.iter().any(|n| n.eq_ignore_ascii_case(&h.shared.host))
        })
        .collect();
    candidates.sort_by(|a, b| a.shared.host.cmp(&b.shared.host));
    if candidates.is_empty() {
        return None;
    }
    let index = if enrollment["allocationPolicy"] == "static" {
        0
    } else {
        let digest = Sha256::digest(reg_id.to_ascii_lowercase().as_bytes());
        usize::from(digest[0])
            .checked_rem(candidates.len())
            .unwrap_or(0)
    };
    candidates.get(index).cloned()
}

/// Create the device with the enrollment's keys, edge capability and initial twin; an existing
/// device (a re-registration) takes the keys and keeps its twin.
fn provision(hub: &Hub, device_id: &str, proven: &Proven) -> Result<(), String> {
    let auth = Auth::Sas {
        primary: Key::new(&proven.primary),
        secondary: Key::new(&proven.secondary),
    };
    let rules = hub.rules();
    let mut reg = lock(&hub.registry);
    if let Ok(device) = reg.device_mut(device_id) {
        device.auth = auth;
        return Ok(());
    }
    let identity = Identity {
        enabled: true,
        status_reason: None,
        auth: Some(auth),
        edge: proven.enrollment["capabilities"]["iotEdge"] == true,
        device_scope: None,
        parent_scopes: Vec::new(),
    };
    let device = reg
        .create_device(device_id, identity, rules, now_secs())
        .map_err(|e| format!("the hub refused the device: {e:?}"))?;
    let twin = &proven.enrollment["initialTwin"];
    if let Some(tags) = twin
        .get("tags")
        .filter(|t| t.as_object().is_some_and(|o| !o.is_empty()))
    {
        device.twin.set_tags(Some(&tags.to_string()));
    }
    if let Some(desired) = twin
        .pointer("/properties/desired")
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
    {
        device.twin.set_desired(Some(&desired.to_string()));
        device.twin.desired_version = device.twin.desired_version.saturating_add(1);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn group_keys_derive_as_the_sdks_do() {
        // az iot dps enrollment-group compute-device-key --key "$(printf 'k' | base64)" … : the
        // HMAC of the registration id under the decoded group key.
        let group = STANDARD.encode(b"0123456789abcdef0123456789abcdef");
        let derived = derive_key(&group, "sensor-1").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"sensor-1");
        assert_eq!(derived, STANDARD.encode(mac.finalize().into_bytes()));
        assert_ne!(derived, derive_key(&group, "sensor-2").unwrap());
    }

    #[test]
    fn the_signature_is_checked_over_sr_exactly_as_sent() {
        let key = STANDARD.encode([7u8; 32]);
        for sr in [
            "0ne00000001%2Fregistrations%2Fd1",
            "0ne00000001%2fregistrations%2fd1",
        ] {
            let mut mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).unwrap();
            mac.update(format!("{sr}\n2000000000").as_bytes());
            let sig = STANDARD.encode(mac.finalize().into_bytes());
            let sig = sig
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            let header =
                format!("SharedAccessSignature sr={sr}&sig={sig}&se=2000000000&skn=registration");
            let token = DeviceToken::parse(&header).unwrap();
            assert_eq!(
                token.audience.to_ascii_lowercase(),
                "0ne00000001/registrations/d1"
            );
            assert!(token.signed_with(&key), "{sr}");
            // The other spelling of the escapes is another string to sign.
            let other = if sr.contains("%2F") {
                sr.replace("%2F", "%2f")
            } else {
                sr.replace("%2f", "%2F")
            };
            let swapped = DeviceToken::parse(&header.replace(sr, &other)).unwrap();
            assert!(!swapped.signed_with(&key), "{other}");
        }
        assert!(DeviceToken::parse("SharedAccessSignature sr=a&sig=b&se=1&skn=owner").is_none());
    }
}
