//! Conformance tests for the simulator's ARM, DPS and TLS services (Key Vault: `keyvault`): each router is
//! served on 127.0.0.1:0 and driven over real HTTP, the way hubvault (and the official SDKs) call
//! Azure. Every rejection the real service gives is checked by status and body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hubvault_sim::arm::{self, ArmState};
use hubvault_sim::dps::{self, DpsState, sas};
use hubvault_sim::shared::{AccessPolicy, HubShared};
use hubvault_sim::tls;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const RID: &str = "/subscriptions/91d12660-3dec-467a-be2a-213b5544ddc0/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub-a";
const API: &str = "api-version=2023-06-30";
const DPS_API: &str = "api-version=2021-10-01";
const DPS_HOST: &str = "dps-a.azure-devices-provisioning.net";

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

// ---------------------------------------------------------------------------------------------
// ARM

fn hub() -> Arc<HubShared> {
    let policy = |name: &str, rights: &[&str]| AccessPolicy {
        name: name.into(),
        primary_key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
        secondary_key: "HxwdHh8AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk=".into(),
        rights: rights.iter().map(|r| (*r).to_string()).collect(),
    };
    Arc::new(HubShared {
        name: "hub-a".into(),
        host: "hub-a.azure-devices.net".into(),
        resource_id: RID.into(),
        policies: vec![
            policy(
                "iothubowner",
                &["RegistryWrite", "ServiceConnect", "DeviceConnect"],
            ),
            policy("registryRead", &["RegistryRead"]),
        ],
        resource: Mutex::new(arm::initial_resource(
            "hub-a",
            "hub-a.azure-devices.net",
            RID,
            "westus",
        )),
        failing_over_until_ms: std::sync::atomic::AtomicU64::default(),
    })
}

struct Arm {
    base: String,
    state: Arc<ArmState>,
    hub: Arc<HubShared>,
}

async fn arm_sim() -> Arm {
    let hub = hub();
    let state = ArmState::new(Arc::new(vec![hub.clone()]));
    let base = serve(arm::router(state.clone())).await;
    Arm { base, state, hub }
}

impl Arm {
    fn url(&self, suffix: &str) -> String {
        format!("{}{RID}{suffix}?{API}", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = client().request(method, url).bearer_auth("any-token");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn failover(&self, region: &str) -> reqwest::Response {
        client()
            .post(self.url("/failover"))
            .bearer_auth("t")
            .json(&json!({"failoverRegion": region}))
            .send()
            .await
            .unwrap()
    }
}

fn networking_put(ip_rules: &Value) -> Value {
    json!({"location": "westus", "sku": {"name": "S1", "capacity": 1}, "properties": {
        "publicNetworkAccess": "Enabled",
        "networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": true, "ipRules": ip_rules}
    }})
}

#[tokio::test]
async fn arm_get_returns_the_hub_document() {
    let arm = arm_sim().await;
    let (status, doc) = arm.send(reqwest::Method::GET, &arm.url(""), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["id"], RID);
    assert_eq!(doc["type"], "Microsoft.Devices/IotHubs");
    assert_eq!(doc["properties"]["hostName"], "hub-a.azure-devices.net");
    assert_eq!(doc["properties"]["locations"][0]["role"], "primary");
    assert_eq!(doc["sku"]["name"], "S1");
}

#[tokio::test]
async fn arm_paths_are_case_insensitive() {
    let arm = arm_sim().await;
    let url = format!("{}{}?{API}", arm.base, RID.to_lowercase());
    let (status, _) = arm.send(reqwest::Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn arm_refuses_a_request_without_bearer_token() {
    let arm = arm_sim().await;
    let resp = client().get(arm.url("")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
}

#[tokio::test]
async fn arm_refuses_a_wrong_token_when_one_is_required() {
    let arm = arm_sim().await;
    arm.state.require_token(Some("right".into()));
    let resp = client()
        .get(arm.url(""))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let ok = client()
        .get(arm.url(""))
        .bearer_auth("right")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn arm_requires_api_version() {
    let arm = arm_sim().await;
    let url = format!("{}{RID}", arm.base);
    let (status, body) = arm.send(reqwest::Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
}

#[tokio::test]
async fn arm_unknown_hub_is_resource_not_found() {
    let arm = arm_sim().await;
    let url = format!("{}{}?{API}", arm.base, RID.replace("hub-a", "hub-zz"));
    let (status, body) = arm.send(reqwest::Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hub-zz")
    );
}

#[tokio::test]
async fn arm_put_replaces_networking_in_the_shared_document() {
    let arm = arm_sim().await;
    let rules = json!([{"filterName": "office", "action": "Allow", "ipMask": "127.0.0.2/32"}]);
    let (status, doc) = arm
        .send(
            reqwest::Method::PUT,
            &arm.url(""),
            Some(networking_put(&rules)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["properties"]["networkRuleSets"]["ipRules"], rules);
    // the data plane reads the same document
    let shared = arm.hub.resource.lock().unwrap().clone();
    assert_eq!(
        shared["properties"]["networkRuleSets"]["defaultAction"],
        "Deny"
    );
    assert_eq!(shared["etag"], doc["etag"]);

    // full replace: a PUT without networkRuleSets opens the hub again
    let open = json!({"location": "westus", "sku": {"name": "S1", "capacity": 1}});
    let (_, doc) = arm
        .send(reqwest::Method::PUT, &arm.url(""), Some(open))
        .await;
    assert_eq!(
        doc["properties"]["networkRuleSets"]["defaultAction"],
        "Allow"
    );
    assert_eq!(doc["properties"]["networkRuleSets"]["ipRules"], json!([]));
}

#[tokio::test]
async fn arm_put_rejects_invalid_ip_rules_with_the_rp_error_body() {
    let arm = arm_sim().await;
    let cases = [
        json!([{"filterName": "r1", "action": "Allow", "ipMask": "300.1.1.1"}]),
        json!([{"filterName": "r1", "action": "Allow", "ipMask": "10.0.0.0/33"}]),
        json!([{"filterName": "r1", "action": "Reject", "ipMask": "10.0.0.1"}]),
        json!([{"filterName": "bad name", "action": "Allow", "ipMask": "10.0.0.1"}]),
        json!([{"filterName": "r1", "action": "Allow", "ipMask": "10.0.0.1"},
               {"filterName": "R1", "action": "Allow", "ipMask": "10.0.0.2"}]),
    ];
    let before = arm.hub.resource.lock().unwrap().clone();
    for rules in cases {
        let (status, body) = arm
            .send(
                reqwest::Method::PUT,
                &arm.url(""),
                Some(networking_put(&rules)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{rules}");
        assert_eq!(body["code"], "400059", "{body}");
        assert_eq!(body["httpStatusCode"], "BadRequest");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Request body validation failed.")
        );
    }
    assert_eq!(
        *arm.hub.resource.lock().unwrap(),
        before,
        "a refused PUT changes nothing"
    );
}

#[tokio::test]
async fn arm_put_rejects_bad_classic_rules_public_access_location_and_sku() {
    let arm = arm_sim().await;
    let rules: Vec<Value> = (0..11)
        .map(|i| json!({"filterName": format!("r{i}"), "action": "Accept", "ipMask": format!("10.0.0.{i}")}))
        .collect();
    let body = json!({"location": "westus", "sku": {"name": "S1"}, "properties": {"ipFilterRules": rules}});
    let (status, _) = arm
        .send(reqwest::Method::PUT, &arm.url(""), Some(body))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = json!({"location": "westus", "sku": {"name": "S1"}, "properties": {"publicNetworkAccess": "Off"}});
    let (status, _) = arm
        .send(reqwest::Method::PUT, &arm.url(""), Some(body))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = arm
        .send(
            reqwest::Method::PUT,
            &arm.url(""),
            Some(json!({"sku": {"name": "S1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "LocationRequired");
    let moved = json!({"location": "northeurope", "sku": {"name": "S1"}});
    let (status, body) = arm
        .send(reqwest::Method::PUT, &arm.url(""), Some(moved))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "InvalidResourceLocation");
    let (status, body) = arm
        .send(
            reqwest::Method::PUT,
            &arm.url(""),
            Some(json!({"location": "westus"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "sku is required");
    assert_eq!(body["code"], "400059");
}

#[tokio::test]
async fn arm_put_honours_if_match() {
    let arm = arm_sim().await;
    let resp = client()
        .put(arm.url(""))
        .bearer_auth("t")
        .header("If-Match", "\"AAAAAAAAAAA=\"")
        .json(&networking_put(&json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PreconditionFailed");
}

#[tokio::test]
async fn arm_patch_updates_tags_only() {
    let arm = arm_sim().await;
    let body = json!({"tags": {"env": "prod"}, "properties": {"publicNetworkAccess": "Disabled"}});
    let (status, doc) = arm
        .send(reqwest::Method::PATCH, &arm.url(""), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["tags"]["env"], "prod");
    assert_eq!(doc["properties"]["publicNetworkAccess"], "Enabled");
}

#[tokio::test]
async fn arm_listkeys_returns_policies_with_comma_space_rights() {
    let arm = arm_sim().await;
    let (status, body) = arm
        .send(reqwest::Method::POST, &arm.url("/listkeys"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let owner = &body["value"][0];
    assert_eq!(owner["keyName"], "iothubowner");
    assert_eq!(
        owner["rights"],
        "RegistryWrite, ServiceConnect, DeviceConnect"
    );
    assert_eq!(owner["primaryKey"], arm.hub.policies[0].primary_key);
    assert_eq!(owner["secondaryKey"], arm.hub.policies[0].secondary_key);
    let (status, one) = arm
        .send(
            reqwest::Method::POST,
            &arm.url("/IotHubKeys/registryRead/listkeys"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["rights"], "RegistryRead");
    let (status, _) = arm
        .send(
            reqwest::Method::POST,
            &arm.url("/IotHubKeys/nobody/listkeys"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = arm
        .send(reqwest::Method::GET, &arm.url("/listkeys"), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn arm_failover_swaps_regions_and_moves_the_event_hub_endpoint() {
    let arm = arm_sim().await;
    let before = arm.hub.resource.lock().unwrap().clone();
    let resp = arm.failover("East US").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let op = resp.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(resp.headers().contains_key("location"));
    assert!(op.starts_with(&arm.base), "{op}");
    let status: Value = client()
        .get(&op)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "Succeeded");

    let (_, after) = arm.send(reqwest::Method::GET, &arm.url(""), None).await;
    let loc = &after["properties"]["locations"];
    assert_eq!(loc[0]["location"], "West US");
    assert_eq!(loc[0]["role"], "secondary");
    assert_eq!(loc[1]["role"], "primary");
    let (old, new) = (
        &before["properties"]["eventHubEndpoints"]["events"],
        &after["properties"]["eventHubEndpoints"]["events"],
    );
    assert_ne!(old["endpoint"], new["endpoint"]);
    assert_ne!(old["path"], new["path"]);
    assert_eq!(
        after["properties"]["hostName"],
        before["properties"]["hostName"]
    );
}

#[tokio::test]
async fn arm_failover_operation_runs_until_its_duration_has_passed() {
    let arm = arm_sim().await;
    let t0 = OffsetDateTime::now_utc();
    arm.state.set_now(Some(t0));
    arm.state.set_failover_duration(Duration::minutes(15));
    let resp = arm.failover("eastus").await;
    let op = resp.headers()["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_string();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let poll = |u: String| async move { client().get(u).bearer_auth("t").send().await.unwrap() };
    let running: Value = poll(op.clone()).await.json().await.unwrap();
    assert_eq!(running["status"], "Running");
    assert!(arm.state.is_failing_over("hub-a"));
    assert_eq!(poll(location.clone()).await.status(), StatusCode::ACCEPTED);
    arm.state.set_now(Some(t0 + Duration::minutes(15)));
    let done: Value = poll(op).await.json().await.unwrap();
    assert_eq!(done["status"], "Succeeded");
    assert!(!arm.state.is_failing_over("hub-a"));
    assert_eq!(poll(location).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn arm_failover_enforces_spacing_and_the_daily_limit() {
    let arm = arm_sim().await;
    let t0 = OffsetDateTime::now_utc();
    let at = |h: i64, m: i64| Some(t0 + Duration::hours(h) + Duration::minutes(m));
    arm.state.set_now(at(0, 0));
    assert_eq!(arm.failover("East US").await.status(), StatusCode::ACCEPTED);

    arm.state.set_now(at(0, 30));
    let resp = arm.failover("West US").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "ManualFailoverLimitExceeded");
    assert!(body["message"].as_str().unwrap().contains("1 hour"));

    // failback, failover, failback: allowed one hour apart
    for (h, region) in [(1, "West US"), (2, "East US"), (3, "West US")] {
        arm.state.set_now(at(h, 0));
        assert_eq!(
            arm.failover(region).await.status(),
            StatusCode::ACCEPTED,
            "hour {h}"
        );
    }
    // a third failover within 24 hours is refused
    arm.state.set_now(at(4, 0));
    let resp = arm.failover("East US").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("2 failovers per day"),
        "{body}"
    );
    // ... and allowed once the first has left the window
    arm.state.set_now(at(24, 0));
    assert_eq!(arm.failover("East US").await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn arm_failover_needs_the_secondary_region() {
    let arm = arm_sim().await;
    let resp = arm.failover("North Europe").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "400059");
    let (status, _) = arm
        .send(
            reqwest::Method::POST,
            &arm.url("/failover"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// DPS

struct Dps {
    base: String,
    state: Arc<DpsState>,
    token: String,
}

async fn dps_sim() -> Dps {
    let mut policies = dps::default_policies();
    policies.push(AccessPolicy {
        name: "reader".into(),
        primary_key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
        secondary_key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
        rights: vec!["EnrollmentRead".into()],
    });
    let state = DpsState::new("dps-a", DPS_HOST, policies);
    let base = serve(dps::router(state.clone())).await;
    let owner = &state.policies[0];
    let token = sas::token(DPS_HOST, &owner.name, &owner.primary_key, far_future());
    Dps { base, state, token }
}

fn far_future() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() + 3600
}

impl Dps {
    fn url(&self, path: &str) -> String {
        format!("{}{path}?{DPS_API}", self.base)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = client()
            .request(method, self.url(path))
            .header("Authorization", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (
            status,
            serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }
}

fn sym(id: &str) -> Value {
    json!({"registrationId": id, "attestation": {"type": "symmetricKey"}})
}

fn assert_flat_error(body: &Value, code: u64) {
    assert_eq!(body["errorCode"], code, "{body}");
    for field in ["trackingId", "message", "timestampUtc"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    assert!(body.get("Message").is_none(), "flat, not wrapped");
}

#[tokio::test]
async fn dps_rejects_bad_sas_tokens_with_401_flat_errors() {
    let dps = dps_sim().await;
    let owner = dps.state.policies[0].clone();
    let past = OffsetDateTime::now_utc().unix_timestamp() - 10;
    let tokens = [
        None,
        Some(sas::token(DPS_HOST, &owner.name, &owner.primary_key, past)),
        Some(sas::token(
            "other.azure-devices-provisioning.net",
            &owner.name,
            &owner.primary_key,
            far_future(),
        )),
        Some(sas::token(
            DPS_HOST,
            &owner.name,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            far_future(),
        )),
        Some(sas::token(
            DPS_HOST,
            "nobody",
            &owner.primary_key,
            far_future(),
        )),
    ];
    for token in tokens {
        let mut req = client().get(dps.url("/enrollments/dev-1"));
        if let Some(t) = &token {
            req = req.header("Authorization", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(resp.headers()["x-ms-error-code"], "401002");
        assert_flat_error(&resp.json().await.unwrap(), 401_002);
    }
}

#[tokio::test]
async fn dps_read_only_policy_cannot_write() {
    let dps = dps_sim().await;
    let reader = dps.state.policies[1].clone();
    let token = sas::token(DPS_HOST, &reader.name, &reader.primary_key, far_future());
    let put = client()
        .put(dps.url("/enrollments/dev-1"))
        .header("Authorization", &token)
        .json(&sym("dev-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::UNAUTHORIZED);
    let get = client()
        .get(dps.url("/enrollments/dev-1"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND, "reads pass auth");
}

#[tokio::test]
async fn dps_requires_api_version() {
    let dps = dps_sim().await;
    let resp = client()
        .get(format!("{}/enrollments/dev-1", dps.base))
        .header("Authorization", &dps.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_flat_error(&resp.json().await.unwrap(), 400_004);
}

#[tokio::test]
async fn dps_get_hides_symmetric_keys_and_attestationmechanism_reveals_them() {
    let dps = dps_sim().await;
    let (status, put) = dps
        .call(
            reqwest::Method::PUT,
            "/enrollments/dev-1",
            Some(sym("dev-1")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert!(put["etag"].is_string());
    let (status, got) = dps
        .call(reqwest::Method::GET, "/enrollments/DEV-1", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "registration ids are case-insensitive"
    );
    assert_eq!(got["attestation"]["type"], "symmetricKey");
    assert!(
        got["attestation"]["symmetricKey"]
            .get("primaryKey")
            .is_none()
    );
    assert_eq!(got["provisioningStatus"], "enabled");

    let (status, att) = dps
        .call(
            reqwest::Method::POST,
            "/enrollments/dev-1/attestationmechanism",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let key = att["symmetricKey"]["primaryKey"].as_str().unwrap();
    assert!(!key.is_empty());
    assert!(!got.to_string().contains(key));
    // the control API reads everything back, keys included
    let all = dps.state.enrollments();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["attestation"]["symmetricKey"]["primaryKey"], key);
}

#[tokio::test]
async fn dps_rejects_invalid_bodies_and_registration_ids() {
    let dps = dps_sim().await;
    for (path, body) in [
        ("/enrollments/-bad", sym("-bad")),
        ("/enrollments/bad.", sym("bad.")),
        ("/enrollments/ok-1", sym("other")),
        ("/enrollments/ok-1", json!({"registrationId": "ok-1"})),
        (
            "/enrollments/ok-1",
            json!({"registrationId": "ok-1", "attestation": {"type": "magic"}}),
        ),
        (
            "/enrollments/ok-1",
            json!({"registrationId": "ok-1", "attestation": {"type": "tpm", "tpm": {}}}),
        ),
    ] {
        let (status, err) = dps
            .call(reqwest::Method::PUT, path, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_flat_error(&err, 400_004);
    }
    let long = "a".repeat(129);
    let (status, _) = dps
        .call(
            reqwest::Method::PUT,
            &format!("/enrollments/{long}"),
            Some(sym(&long)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dps_if_match_mismatch_is_412_and_delete_then_get_is_404() {
    let dps = dps_sim().await;
    let (_, put) = dps
        .call(
            reqwest::Method::PUT,
            "/enrollments/dev-1",
            Some(sym("dev-1")),
        )
        .await;
    let etag = put["etag"].as_str().unwrap().to_string();
    let stale = client()
        .put(dps.url("/enrollments/dev-1"))
        .header("Authorization", &dps.token)
        .header("If-Match", "\"stale\"")
        .json(&sym("dev-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_flat_error(&stale.json().await.unwrap(), 412_001);
    let fresh = client()
        .put(dps.url("/enrollments/dev-1"))
        .header("Authorization", &dps.token)
        .header("If-Match", format!("\"{etag}\""))
        .json(&sym("dev-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    let new: Value = fresh.json().await.unwrap();
    assert_ne!(new["etag"], etag, "etag changes on every write");
    assert_eq!(new["createdDateTimeUtc"], put["createdDateTimeUtc"]);

    let del = client()
        .delete(dps.url("/enrollments/dev-1"))
        .header("Authorization", &dps.token)
        .header("If-Match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::PRECONDITION_FAILED);
    let (status, _) = dps
        .call(reqwest::Method::DELETE, "/enrollments/dev-1", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = dps
        .call(reqwest::Method::GET, "/enrollments/dev-1", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_flat_error(&err, 404_201);
    let (status, _) = dps
        .call(reqwest::Method::DELETE, "/enrollments/dev-1", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dps_bulk_refuses_more_than_ten_and_unknown_modes() {
    let dps = dps_sim().await;
    let eleven: Vec<Value> = (0..11).map(|i| sym(&format!("d{i}"))).collect();
    let (status, err) = dps
        .call(
            reqwest::Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": eleven})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_flat_error(&err, 400_004);
    assert!(dps.state.enrollments().is_empty(), "nothing applied");
    let (status, _) = dps
        .call(
            reqwest::Method::POST,
            "/enrollments",
            Some(json!({"mode": "upsert", "enrollments": []})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let ten: Vec<Value> = (0..10).map(|i| sym(&format!("d{i}"))).collect();
    let (status, ok) = dps
        .call(
            reqwest::Method::POST,
            "/enrollments",
            Some(json!({"mode": "create", "enrollments": ten})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok, json!({"isSuccessful": true}));
    assert_eq!(dps.state.enrollments().len(), 10);
}

#[tokio::test]
async fn dps_bulk_reports_partial_failures_per_item() {
    let dps = dps_sim().await;
    dps.call(
        reqwest::Method::PUT,
        "/enrollments/exists",
        Some(sym("exists")),
    )
    .await;
    let body = json!({"mode": "create", "enrollments": [sym("new-1"), sym("exists"), sym("-bad"), sym("new-2")]});
    let (status, result) = dps
        .call(reqwest::Method::POST, "/enrollments", Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["isSuccessful"], false);
    let errors = result["errors"].as_array().unwrap();
    let ids: Vec<&str> = errors
        .iter()
        .map(|e| e["registrationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["exists", "-bad"]);
    assert_eq!(errors[0]["errorCode"], 409_201);
    assert_eq!(errors[1]["errorCode"], 400_004);
    assert_eq!(dps.state.enrollments().len(), 3, "exists + new-1 + new-2");

    let mut stale = sym("new-1");
    stale["etag"] = json!("stale");
    let body = json!({"mode": "updateIfMatchETag", "enrollments": [stale, sym("ghost")]});
    let (_, result) = dps
        .call(reqwest::Method::POST, "/enrollments", Some(body))
        .await;
    let codes: Vec<u64> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorCode"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [412_001, 404_201]);

    let body = json!({"mode": "delete", "enrollments": [sym("new-1"), sym("ghost")]});
    let (_, result) = dps
        .call(reqwest::Method::POST, "/enrollments", Some(body))
        .await;
    assert_eq!(result["errors"][0]["registrationId"], "ghost");
    assert_eq!(dps.state.enrollments().len(), 2);
}

#[tokio::test]
async fn dps_query_pages_with_continuation() {
    let dps = dps_sim().await;
    for i in 0..5 {
        dps.call(
            reqwest::Method::PUT,
            &format!("/enrollments/d{i}"),
            Some(sym(&format!("d{i}"))),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    for _page in 0..10 {
        let mut req = client()
            .post(dps.url("/enrollments/query"))
            .header("Authorization", &dps.token)
            .header("x-ms-max-item-count", "2")
            .json(&json!({"query": "SELECT * FROM enrollments"}));
        if let Some(c) = &continuation {
            req = req.header("x-ms-continuation", c);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ms-item-type"], "Enrollment");
        continuation = resp
            .headers()
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_string());
        let items: Vec<Value> = resp.json().await.unwrap();
        assert!(items.len() <= 2);
        for item in items {
            assert!(
                item["attestation"]["symmetricKey"]
                    .get("primaryKey")
                    .is_none()
            );
            seen.push(item["registrationId"].as_str().unwrap().to_string());
        }
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["d0", "d1", "d2", "d3", "d4"]);

    let (status, err) = dps
        .call(
            reqwest::Method::POST,
            "/enrollments/query",
            Some(json!({"nope": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_flat_error(&err, 400_004);
}

#[tokio::test]
async fn dps_enrollment_groups_work_like_enrollments() {
    let dps = dps_sim().await;
    let group = json!({"enrollmentGroupId": "fleet", "attestation": {"type": "symmetricKey"}});
    let (status, _) = dps
        .call(reqwest::Method::PUT, "/enrollmentGroups/fleet", Some(group))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, got) = dps
        .call(reqwest::Method::GET, "/enrollmentGroups/fleet", None)
        .await;
    assert!(
        got["attestation"]["symmetricKey"]
            .get("primaryKey")
            .is_none()
    );
    let (_, att) = dps
        .call(
            reqwest::Method::POST,
            "/enrollmentGroups/fleet/attestationmechanism",
            None,
        )
        .await;
    assert!(att["symmetricKey"]["primaryKey"].is_string());
    let tpm = json!({"enrollmentGroupId": "t", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "x"}}});
    let (status, _) = dps
        .call(reqwest::Method::PUT, "/enrollmentGroups/t", Some(tpm))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, err) = dps
        .call(reqwest::Method::GET, "/enrollmentGroups/none", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_flat_error(&err, 404_202);
    let body = json!({"mode": "create", "enrollmentGroups": [{"enrollmentGroupId": "fleet", "attestation": {"type": "none"}}]});
    let (_, result) = dps
        .call(reqwest::Method::POST, "/enrollmentGroups", Some(body))
        .await;
    assert_eq!(result["errors"][0]["enrollmentGroupId"], "fleet");
    assert_eq!(dps.state.enrollment_groups().len(), 1);
}

#[tokio::test]
async fn dps_refuses_enrollments_for_unlinked_hubs() {
    let dps = dps_sim().await;
    dps.state
        .set_linked_hubs(Some(vec!["hub-a.azure-devices.net".into()]));
    let mut body = sym("dev-1");
    body["iotHubHostName"] = json!("hub-b.azure-devices.net");
    let (status, err) = dps
        .call(
            reqwest::Method::PUT,
            "/enrollments/dev-1",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("hub-b.azure-devices.net")
    );
    body["iotHubHostName"] = json!("hub-a.azure-devices.net");
    let (status, _) = dps
        .call(reqwest::Method::PUT, "/enrollments/dev-1", Some(body))
        .await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_router_is_reachable_by_its_real_host_name_with_the_ca_trusted() {
    use axum::extract::ConnectInfo;

    let host = "hub-a.azure-devices.net";
    let (cert, key) = tls::self_signed(&[host.to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("sim-ca.pem");
    tls::write_ca_file(&ca_path, &cert).unwrap();

    let app = axum::Router::new().route(
        "/whoami",
        axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
            peer.ip().to_string()
        }),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let incoming = tls::listener(tcp, &cert, &key).unwrap();
    tokio::spawn(async move {
        axum::serve(
            incoming,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(host, addr)
        .build()
        .unwrap();
    let url = format!("https://{host}:{}/whoami", addr.port());
    let resp = trusting.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "127.0.0.1");

    // a client that does not trust the CA is refused, and the server keeps serving
    let other = tls::self_signed(&[host.to_string()]).unwrap().0;
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.as_bytes()).unwrap()])
        .resolve(host, addr)
        .build()
        .unwrap();
    assert!(stranger.get(&url).send().await.is_err());
    assert_eq!(
        trusting.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
}
