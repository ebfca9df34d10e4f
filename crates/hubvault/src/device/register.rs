//! DPS device registration over HTTPS (docs/azure.md#dps-device-registration): what a device
//! does to be assigned a hub by the Device Provisioning Service, with its symmetric key.
//!
//! `PUT {endpoint}/{idScope}/registrations/{registrationId}/register` with
//! `{"registrationId": …}` → `202 {"operationId", "status": "assigning"}`, then
//! `GET …/operations/{operationId}` until the status is final (`assigned`, `disabled`, `failed`).
//! Both are signed with a device SAS token, `sr={idScope}/registrations/{registrationId}`,
//! `skn=registration`, keyed with the individual enrollment's key or the key a group derives for
//! the device ([`derive_group_key`]). Polling is bounded ([`Provisioning::max_polls`]).
//!
//! Owns: the registration requests and the group key derivation. Does not own: which devices to
//! register (the callers: drills, the demo) nor the hub the device lands on.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use url::Url;

use crate::hub::auth::SasSigner;
use crate::hub::{Error, Result};

/// Where devices reach DPS unless told otherwise.
pub const GLOBAL_ENDPOINT: &str = "https://global.azure-devices-provisioning.net";
/// The device registration API version the SDKs speak.
pub const API_VERSION: &str = "2021-06-01";
/// How long a registration token lives.
const TOKEN_LIFETIME_SECS: i64 = 600;

/// A DPS instance as a device sees it: its ID scope and the endpoint registrations go to.
#[derive(Debug, Clone)]
pub struct Provisioning {
    pub id_scope: String,
    /// [`GLOBAL_ENDPOINT`] on Azure; the simulator's DPS port in tests (config `device-endpoint`).
    pub endpoint: Url,
    /// Wait between operation polls when DPS sends no `Retry-After`.
    pub poll_interval: Duration,
    /// Operation reads before the registration is reported as still assigning.
    pub max_polls: u32,
}

impl Provisioning {
    /// The global endpoint, polling every 2 s up to 30 times (a minute).
    pub fn global(id_scope: &str) -> Result<Provisioning> {
        Provisioning::at(id_scope, GLOBAL_ENDPOINT)
    }

    /// `endpoint` instead of the global one (a `device-endpoint` override).
    pub fn at(id_scope: &str, endpoint: &str) -> Result<Provisioning> {
        let endpoint = Url::parse(endpoint).map_err(|e| Error::InvalidTarget {
            reason: format!("device endpoint {endpoint:?} is not a URL ({e})"),
        })?;
        Ok(Provisioning {
            id_scope: id_scope.to_owned(),
            endpoint,
            poll_interval: Duration::from_secs(2),
            max_polls: 30,
        })
    }
}

/// The key a device signs with.
#[derive(Clone, Copy)]
pub enum DeviceKey<'a> {
    /// The individual enrollment's own key (base64).
    Own(&'a str),
    /// An enrollment group's key (base64): the device signs with the key derived from it.
    Group(&'a str),
}

impl std::fmt::Debug for DeviceKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKey::Own(_) => "Own(<redacted>)",
            DeviceKey::Group(_) => "Group(<redacted>)",
        })
    }
}

/// Where DPS put the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The assigned hub's host name (`hub-b.azure-devices.net`).
    pub hub: String,
    pub device_id: String,
}

/// DPS's answer to a registration. Refusals are answers the caller judges, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Assigned(Assignment),
    /// The operation ended `disabled` or `failed` (with DPS's error code and message, if any).
    NotAssigned {
        status: String,
        code: Option<i64>,
        message: Option<String>,
    },
    /// The request itself was refused: HTTP status and DPS's `errorCode` / `message`
    /// (401 401002 for a wrong key).
    Refused {
        http_status: u16,
        code: Option<i64>,
        message: String,
    },
    /// Still `assigning` after [`Provisioning::max_polls`] reads.
    StillAssigning {
        operation_id: String,
    },
}

impl Registration {
    /// The assignment, if DPS made one.
    pub fn assigned(&self) -> Option<&Assignment> {
        match self {
            Registration::Assigned(a) => Some(a),
            _ => None,
        }
    }
}

/// `base64(HMAC-SHA256(base64decode(group_key), registration_id))`: the key a device of an
/// enrollment group signs with.
pub fn derive_group_key(group_key_b64: &str, registration_id: &str) -> Result<String> {
    let key = STANDARD
        .decode(group_key_b64.trim())
        .map_err(|_| Error::InvalidTarget {
            reason: "the enrollment group key is not base64".into(),
        })?;
    #[allow(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length, new_from_slice never fails"
    )]
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(registration_id.as_bytes());
    Ok(STANDARD.encode(mac.finalize().into_bytes()))
}

/// Register `registration_id` with `key`; polls the operation until it is final or
/// `max_polls` reads were made. `Err` only when DPS gave no usable answer.
pub async fn register(
    http: &reqwest::Client,
    dps: &Provisioning,
    registration_id: &str,
    key: DeviceKey<'_>,
) -> Result<Registration> {
    let key = match key {
        DeviceKey::Own(k) => k.to_owned(),
        DeviceKey::Group(g) => derive_group_key(g, registration_id)?,
    };
    let signer = SasSigner::new("registration", &key)?;
    let expiry = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_add(TOKEN_LIFETIME_SECS);
    let token = signer.token(
        &format!("{}/registrations/{registration_id}", dps.id_scope),
        expiry,
    );
    let host = dps.endpoint.host_str().unwrap_or("DPS").to_owned();
    let url = dps_url(dps, registration_id, &["register"])?;
    let answer = http
        .put(url)
        .header("authorization", &token)
        .json(&json!({ "registrationId": registration_id }))
        .send()
        .await
        .map_err(|e| Error::transport(&host, e))?;
    let (status, retry, body) = read(answer, &host).await?;
    if status != 200 && status != 202 {
        return Ok(refused(status, &body));
    }
    let mut doc = body;
    for _ in 0..dps.max_polls {
        if let Some(done) = finished(&doc) {
            return Ok(done);
        }
        let operation = doc["operationId"].as_str().unwrap_or_default().to_owned();
        tokio::time::sleep(retry.unwrap_or(dps.poll_interval)).await;
        let url = dps_url(dps, registration_id, &["operations", &operation])?;
        let answer = http
            .get(url)
            .header("authorization", &token)
            .send()
            .await
            .map_err(|e| Error::transport(&host, e))?;
        let (status, _, body) = read(answer, &host).await?;
        if status != 200 && status != 202 {
            return Ok(refused(status, &body));
        }
        doc = body;
    }
    Ok(
        finished(&doc).unwrap_or_else(|| Registration::StillAssigning {
            operation_id: doc["operationId"].as_str().unwrap_or_default().to_owned(),
        }),
    )
}

fn dps_url(dps: &Provisioning, registration_id: &str, tail: &[&str]) -> Result<Url> {
    let mut url = dps.endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| Error::InvalidTarget {
            reason: format!("endpoint {} cannot hold a path", dps.endpoint),
        })?
        .pop_if_empty()
        .extend([dps.id_scope.as_str(), "registrations", registration_id])
        .extend(tail);
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    Ok(url)
}

async fn read(answer: reqwest::Response, host: &str) -> Result<(u16, Option<Duration>, Value)> {
    let status = answer.status().as_u16();
    let retry = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(10)));
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| Error::transport(host, e))?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, retry, body))
}

fn refused(status: u16, body: &Value) -> Registration {
    Registration::Refused {
        http_status: status,
        code: body["errorCode"].as_i64(),
        message: body["message"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The operation's final answer, or `None` while it is still `assigning` (or `unassigned`).
fn finished(doc: &Value) -> Option<Registration> {
    let state = &doc["registrationState"];
    match doc["status"].as_str()? {
        "assigned" => Some(Registration::Assigned(Assignment {
            hub: state["assignedHub"].as_str()?.to_owned(),
            device_id: state["deviceId"].as_str()?.to_owned(),
        })),
        "assigning" | "unassigned" => None,
        other => Some(Registration::NotAssigned {
            status: other.to_owned(),
            code: state["errorCode"].as_i64(),
            message: state["errorMessage"].as_str().map(str::to_owned),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_group_key_derives_per_registration_id() {
        // The documented derivation: HMAC-SHA256 of the registration id under the decoded key.
        let group = STANDARD.encode([3u8; 64]);
        let one = derive_group_key(&group, "sensor-1").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&[3u8; 64]).unwrap();
        mac.update(b"sensor-1");
        assert_eq!(one, STANDARD.encode(mac.finalize().into_bytes()));
        assert_ne!(one, derive_group_key(&group, "sensor-2").unwrap());
        assert!(derive_group_key("not base64!", "x").is_err());
    }

    #[test]
    fn the_token_names_the_registration_and_the_registration_policy() {
        let signer = SasSigner::new("registration", &STANDARD.encode([1u8; 32])).unwrap();
        let token = signer.token("0ne0000ABCD/registrations/d-1", 2_000_000_000);
        assert!(
            token.starts_with("SharedAccessSignature sr=0ne0000ABCD%2Fregistrations%2Fd-1&sig="),
            "{token}"
        );
        assert!(
            token.ends_with("&se=2000000000&skn=registration"),
            "{token}"
        );
    }

    #[test]
    fn operation_states_read_as_answers() {
        let assigned = json!({"status": "assigned", "registrationState": {"assignedHub": "h.azure-devices.net", "deviceId": "d"}});
        assert_eq!(
            finished(&assigned).unwrap().assigned().unwrap().hub,
            "h.azure-devices.net"
        );
        assert!(finished(&json!({"status": "assigning"})).is_none());
        let disabled = finished(&json!({"status": "disabled", "registrationState": {}})).unwrap();
        assert!(
            matches!(disabled, Registration::NotAssigned { status, .. } if status == "disabled")
        );
    }
}
