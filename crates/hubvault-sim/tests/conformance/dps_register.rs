//! The DPS device registration API (docs/azure.md#dps-device-registration), with tokens signed
//! here: register → 202 assigning → operation → assigned; the device then exists in the
//! assigned hub with the enrollment's key (or the group-derived one) and the initial twin, and
//! that hub accepts its telemetry. Wrong keys, foreign `skn`, disabled enrollments and unlinked
//! hubs are refused as DPS refuses them.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hubvault_sim::dps::{DpsState, enrollment::Kind};
use hubvault_sim::{self as sim, HubOptions, Options, Running};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

const API: &str = "api-version=2021-06-01";

struct World {
    running: Running,
    dps: Arc<DpsState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// hub-a and hub-b; dps-a linked to hub-b only.
async fn world() -> World {
    let mut options = Options {
        hubs: ["hub-a", "hub-b"]
            .map(|n| HubOptions {
                name: n.into(),
                devices: 0,
            })
            .to_vec(),
        ..Options::default()
    };
    let dps = sim::add_dps(&mut options, "dps-a");
    dps.set_linked_hubs(Some(vec!["hub-b.azure-devices.net".into()]));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = sim::run(options, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    World {
        running,
        dps,
        _stop: stop,
    }
}

fn key(n: u8) -> String {
    STANDARD.encode([n; 32])
}

fn hmac_b64(key_b64: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&STANDARD.decode(key_b64).unwrap()).unwrap();
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A device token with `sr` spelled `sr_as_sent` (already encoded) and `skn` if given.
fn token(sr_as_sent: &str, key_b64: &str, skn: Option<&str>) -> String {
    let se = OffsetDateTime::now_utc().unix_timestamp() + 600;
    let sig = hmac_b64(key_b64, &format!("{sr_as_sent}\n{se}"));
    let mut t = format!(
        "SharedAccessSignature sr={sr_as_sent}&sig={}&se={se}",
        enc(&sig)
    );
    if let Some(n) = skn {
        t.push_str("&skn=");
        t.push_str(n);
    }
    t
}

impl World {
    fn endpoint(&self) -> String {
        self.running.dps_instance("dps-a").unwrap().endpoint.clone()
    }

    fn sr(&self, reg: &str) -> String {
        format!("{}%2Fregistrations%2F{reg}", self.dps.id_scope)
    }

    /// PUT register then GET the operation; (PUT status, PUT body, final body).
    async fn register(&self, reg: &str, auth: &str) -> (StatusCode, Value, Value) {
        let http = reqwest::Client::new();
        let base = format!(
            "{}/{}/registrations/{reg}",
            self.endpoint(),
            self.dps.id_scope
        );
        let put = http
            .put(format!("{base}/register?{API}"))
            .header("authorization", auth)
            .json(&json!({"registrationId": reg}))
            .send()
            .await
            .unwrap();
        let status = put.status();
        let body: Value = put.json().await.unwrap_or(Value::Null);
        if status != StatusCode::ACCEPTED {
            return (status, body, Value::Null);
        }
        assert_eq!(body["status"], "assigning", "{body}");
        let op = body["operationId"].as_str().unwrap();
        let done: Value = http
            .get(format!("{base}/operations/{op}?{API}"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (status, body, done)
    }

    fn device_key(&self, hub: &str, id: &str) -> Option<String> {
        let hub = self.running.hub(hub).unwrap();
        let reg = hub.state.registry.lock().unwrap();
        match &reg.device(id).ok()?.auth {
            hubvault_sim::records::Auth::Sas { primary, .. } => Some(primary.text().into_owned()),
            _ => None,
        }
    }

    /// POST one message to `hub` as `id` signed with `key`; the status.
    async fn telemetry(&self, hub: &str, id: &str, key_b64: &str) -> StatusCode {
        let hub = self.running.hub(hub).unwrap();
        let sr = format!("{}%2Fdevices%2F{id}", hub.host);
        reqwest::Client::new()
            .post(format!(
                "{}/devices/{id}/messages/events?api-version=2021-04-12",
                hub.endpoint
            ))
            .header("authorization", token(&sr, key_b64, None))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test]
async fn an_individual_enrollment_registers_lands_on_its_hub_and_sends() {
    let w = world().await;
    w.dps
        .seed(
            Kind::Individual,
            &json!({"registrationId": "sensor-1", "attestation": {"type": "symmetricKey",
                     "symmetricKey": {"primaryKey": key(1), "secondaryKey": key(2)}},
                    "iotHubHostName": "hub-b.azure-devices.net", "capabilities": {"iotEdge": false},
                    "initialTwin": {"tags": {"site": "plant-7"}, "properties": {"desired": {"rate": 5}}}}),
        )
        .unwrap();
    // Upper- and lower-case escapes, with and without skn: each signed over sr as sent.
    for (sr, skn) in [
        (w.sr("sensor-1"), Some("registration")),
        (w.sr("sensor-1").replace("%2F", "%2f"), None),
    ] {
        let (status, _, done) = w.register("sensor-1", &token(&sr, &key(1), skn)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(done["status"], "assigned", "{done}");
        let state = &done["registrationState"];
        assert_eq!(state["assignedHub"], "hub-b.azure-devices.net", "{done}");
        assert_eq!(state["deviceId"], "sensor-1");
        assert_eq!(state["status"], "assigned");
    }
    assert_eq!(w.device_key("hub-b", "sensor-1"), Some(key(1)));
    assert_eq!(w.device_key("hub-a", "sensor-1"), None);
    let twin = {
        let hub = w.running.hub("hub-b").unwrap();
        let reg = hub.state.registry.lock().unwrap();
        let d = reg.device("sensor-1").unwrap();
        (
            d.twin.tags().map(str::to_owned),
            d.twin.desired().map(str::to_owned),
        )
    };
    assert!(twin.0.unwrap().contains("plant-7"));
    assert!(twin.1.unwrap().contains("\"rate\":5"));
    assert_eq!(
        w.telemetry("hub-b", "sensor-1", &key(1)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.telemetry("hub-b", "sensor-1", &key(9)).await,
        StatusCode::UNAUTHORIZED
    );
    // The secondary key proves the device too.
    let (_, _, done) = w
        .register("sensor-1", &token(&w.sr("sensor-1"), &key(2), None))
        .await;
    assert_eq!(done["status"], "assigned", "{done}");
}

#[tokio::test]
async fn a_group_device_signs_with_its_derived_key() {
    let w = world().await;
    w.dps
        .seed(
            Kind::Group,
            &json!({"enrollmentGroupId": "line-1", "attestation": {"type": "symmetricKey",
                     "symmetricKey": {"primaryKey": key(5), "secondaryKey": key(6)}},
                    "allocationPolicy": "static", "iotHubs": ["hub-b.azure-devices.net"]}),
        )
        .unwrap();
    let derived = hmac_b64(&key(5), "machine-42");
    let (_, _, done) = w
        .register(
            "machine-42",
            &token(&w.sr("machine-42"), &derived, Some("registration")),
        )
        .await;
    assert_eq!(done["status"], "assigned", "{done}");
    assert_eq!(
        done["registrationState"]["assignedHub"],
        "hub-b.azure-devices.net"
    );
    assert_eq!(
        done["registrationState"]["symmetricKey"]["enrollmentGroupId"],
        "line-1"
    );
    assert_eq!(w.device_key("hub-b", "machine-42"), Some(derived.clone()));
    assert_eq!(
        w.telemetry("hub-b", "machine-42", &derived).await,
        StatusCode::NO_CONTENT
    );
    // The group key itself is not a device key.
    let (status, body, _) = w
        .register("machine-43", &token(&w.sr("machine-43"), &key(5), None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errorCode"], 401_002, "{body}");
}

#[tokio::test]
async fn wrong_keys_foreign_policies_and_disabled_enrollments_are_refused() {
    let w = world().await;
    for (id, status) in [("good", "enabled"), ("off", "disabled")] {
        w.dps
            .seed(
                Kind::Individual,
                &json!({"registrationId": id, "provisioningStatus": status,
                        "attestation": {"type": "symmetricKey",
                         "symmetricKey": {"primaryKey": key(1), "secondaryKey": key(2)}}}),
            )
            .unwrap();
    }
    let (status, body, _) = w
        .register("good", &token(&w.sr("good"), &key(3), None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errorCode"], 401_002, "{body}");
    assert!(
        body["trackingId"].is_string() && body["message"].is_string(),
        "{body}"
    );
    let (status, _, _) = w
        .register(
            "good",
            &token(&w.sr("good"), &key(1), Some("provisioningserviceowner")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A token for another registration does not open this one.
    let (status, _, _) = w
        .register("good", &token(&w.sr("off"), &key(1), None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, done) = w.register("off", &token(&w.sr("off"), &key(1), None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(done["status"], "disabled", "{done}");
    assert!(done["registrationState"].get("assignedHub").is_none());
    assert_eq!(w.device_key("hub-b", "off"), None);
    // No enrollment names hub-b here: every linked hub is a candidate, and only hub-b is linked.
    let (_, _, done) = w
        .register("good", &token(&w.sr("good"), &key(1), None))
        .await;
    assert_eq!(
        done["registrationState"]["assignedHub"],
        "hub-b.azure-devices.net"
    );
}

#[tokio::test]
async fn enrollments_naming_an_unlinked_hub_are_refused() {
    let w = world().await;
    let refused = w.dps.seed(
        Kind::Individual,
        &json!({"registrationId": "x", "attestation": {"type": "symmetricKey"},
                "iotHubHostName": "hub-a.azure-devices.net"}),
    );
    assert!(refused.unwrap_err().contains("not linked"));
    assert_eq!(
        w.dps.linked_hubs().unwrap(),
        vec!["hub-b.azure-devices.net".to_string()]
    );
    assert!(
        w.dps.id_scope.starts_with("0ne") && w.dps.id_scope.len() == 11,
        "{}",
        w.dps.id_scope
    );
    assert!(
        w.dps
            .resource_id
            .ends_with("/providers/Microsoft.Devices/provisioningServices/dps-a")
    );
}

#[tokio::test]
async fn arm_shows_the_dps_resource_and_its_ip_filter_applies_per_api() {
    let options = Options {
        hubs: ["hub-a", "hub-b"]
            .map(|n| HubOptions {
                name: n.into(),
                devices: 0,
            })
            .to_vec(),
        ..Options::default()
    };
    let (mut options, _) = sim::with_services(options, None);
    let dps = sim::add_dps(&mut options, "dps-a");
    dps.set_linked_hubs(Some(vec!["hub-b.azure-devices.net".into()]));
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = sim::run(options, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let arm = running.arm.clone().unwrap();
    let doc: Value = http
        .get(format!("{arm}{}?api-version=2022-02-05", dps.resource_id))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["properties"]["idScope"], dps.id_scope.as_str(), "{doc}");
    assert_eq!(
        doc["properties"]["iotHubs"][0]["name"],
        "hub-b.azure-devices.net"
    );
    assert_eq!(doc["properties"]["iotHubs"].as_array().unwrap().len(), 1);
    assert!(
        !doc.to_string()
            .contains(&running.hub("hub-b").unwrap().shared.policies[0].primary_key)
    );
    let missing = http
        .get(format!("{arm}{}x?api-version=2022-02-05", dps.resource_id))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    dps.seed(
        Kind::Individual,
        &json!({"registrationId": "d1", "attestation": {"type": "symmetricKey",
                 "symmetricKey": {"primaryKey": key(1), "secondaryKey": key(2)}}}),
    )
    .unwrap();
    let endpoint = running.dps_instance("dps-a").unwrap().endpoint.clone();
    let sr = format!("{}%2Fregistrations%2Fd1", dps.id_scope);
    let register = || {
        http.put(format!(
            "{endpoint}/{}/registrations/d1/register?{API}",
            dps.id_scope
        ))
        .header("authorization", token(&sr, &key(1), None))
        .json(&json!({"registrationId": "d1"}))
        .send()
    };
    let owner = &dps.policies[0];
    let service_token = hubvault_sim::dps::sas::token(
        &dps.host,
        &owner.name,
        &owner.primary_key,
        OffsetDateTime::now_utc().unix_timestamp() + 600,
    );
    let service = || {
        http.get(format!("{endpoint}/enrollments/d1?api-version=2021-10-01"))
            .header("authorization", &service_token)
            .send()
    };
    assert_eq!(register().await.unwrap().status(), StatusCode::ACCEPTED);
    dps.set_network(
        "Enabled",
        json!([{"filterName": "no-devices-here", "action": "Reject", "ipMask": "127.0.0.0/8", "target": "deviceApi"}]),
    );
    let blocked = register().await.unwrap();
    assert_eq!(blocked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(blocked.json::<Value>().await.unwrap()["errorCode"], 401_002);
    assert_eq!(
        service().await.unwrap().status(),
        StatusCode::OK,
        "serviceApi not targeted"
    );
    dps.set_network(
        "Enabled",
        json!([{"filterName": "office", "action": "Accept", "ipMask": "10.1.0.0/16", "target": "all"},
               {"filterName": "rest", "action": "Reject", "ipMask": "0.0.0.0/0", "target": "all"}]),
    );
    assert_eq!(service().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    dps.set_network("Disabled", json!([]));
    assert_eq!(service().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    dps.set_network("Enabled", json!([]));
    assert_eq!(service().await.unwrap().status(), StatusCode::OK);
}
