//! Simulated DPS service API (`{dps}.azure-devices-provisioning.net`, docs/azure.md): individual
//! enrollments and enrollment groups (GET / PUT / DELETE, bulk ≤10, query with continuation,
//! `attestationmechanism`), DPS SAS auth, flat `ProvisioningServiceErrorDetails` errors; the
//! device registration API (`register`) on the same port; its ARM document (networking, ID scope,
//! linked hubs), IP filter, operation rate and a bulk fault.
//!
//! Owns the enrollment store of one DPS instance and its HTTP shape. It knows hubs only as the
//! linked host names it is given and, for registrations, the hub states `sim::run` attaches
//! (devices are created there). Imports nothing else of hubvault.

mod bulk;
pub mod enrollment;
mod query;
pub mod register;
pub mod sas;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::net::Peer;
use super::shared::{AccessPolicy, lock};
use super::state::Hub;
use enrollment::{Kind, Refused, bad_request};

/// The spec's bulk limit ("maximum of 10 enrollments"); UNCERTAIN whether the service enforces it.
pub const MAX_BULK: usize = 10;
/// Page size when the caller sends no `x-ms-max-item-count`. UNCERTAIN: the service default.
pub const DEFAULT_PAGE: usize = 100;

/// One simulated DPS instance.
pub struct DpsState {
    pub name: String,
    /// Real-looking host (`dps-a.azure-devices-provisioning.net`): SAS tokens are signed for it.
    pub host: String,
    pub policies: Vec<AccessPolicy>,
    /// The ID scope devices name in registrations (`0ne` and 8 hex digits, from the name).
    pub id_scope: String,
    /// ARM id: `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Devices/provisioningServices/{name}`.
    pub resource_id: String,
    linked_hubs: Mutex<Option<Vec<String>>>,
    individual: Mutex<BTreeMap<String, Value>>,
    groups: Mutex<BTreeMap<String, Value>>,
    etag_counter: AtomicU64,
    /// The hubs registrations may assign devices to (all the simulator runs; `linked_hubs`
    /// narrows them).
    hubs: Mutex<Vec<Arc<Hub>>>,
    /// Registration operations by id: (registration id, final status document).
    operations: Mutex<BTreeMap<String, (String, Value)>>,
    /// The ARM `ProvisioningServiceDescription` (networking: `publicNetworkAccess`,
    /// `ipFilterRules`); `iotHubs` and `idScope` are filled in when read ([`DpsState::resource`]).
    resource: Mutex<Value>,
    throttle: Mutex<Throttle>,
    /// Bulk calls still to answer `isSuccessful: true` whatever their per-item errors.
    lie_bulk_success: AtomicU64,
}

/// The service API's rate (`None`: unlimited, the default) and its token bucket.
#[derive(Debug, Default)]
struct Throttle {
    per_second: Option<f64>,
    retry_after_secs: u64,
    bucket: Option<crate::limits::Bucket>,
    throttled: u64,
}

/// Every DPS instance of a run, for ARM to find by resource id (filled by `sim::run`).
pub type Directory = Arc<Mutex<Vec<Arc<DpsState>>>>;

/// Default DPS policy with fresh random keys (rights as the portal shows them).
pub fn default_policies() -> Vec<AccessPolicy> {
    let key = || {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        STANDARD.encode(b)
    };
    vec![AccessPolicy {
        name: "provisioningserviceowner".into(),
        primary_key: key(),
        secondary_key: key(),
        rights: ["ServiceConfig", "DeviceConnect", "EnrollmentWrite"]
            .map(String::from)
            .to_vec(),
    }]
}

/// Policy keys and enrollment attestation keys never print.
impl std::fmt::Debug for DpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let policies: Vec<&str> = self.policies.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("DpsState")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("policies", &policies)
            .field("enrollments", &lock(&self.individual).len())
            .field("enrollment_groups", &lock(&self.groups).len())
            .finish_non_exhaustive()
    }
}

impl DpsState {
    pub fn new(name: &str, host: &str, policies: Vec<AccessPolicy>) -> Arc<Self> {
        Self::in_group(
            name,
            host,
            policies,
            "00000000-0000-4000-8000-000000000001",
            "hubvault-sim",
        )
    }

    /// As [`DpsState::new`], its ARM id in `subscription` / `resource_group`.
    pub fn in_group(
        name: &str,
        host: &str,
        policies: Vec<AccessPolicy>,
        subscription: &str,
        resource_group: &str,
    ) -> Arc<Self> {
        let digest = sha2::Sha256::digest(name.as_bytes());
        Arc::new(DpsState {
            name: name.to_string(),
            host: host.to_string(),
            policies,
            id_scope: format!(
                "0ne{:02X}{:02X}{:02X}{:02X}",
                digest[0], digest[1], digest[2], digest[3]
            ),
            resource_id: format!(
                "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Devices/provisioningServices/{name}"
            ),
            linked_hubs: Mutex::new(None),
            individual: Mutex::new(BTreeMap::new()),
            groups: Mutex::new(BTreeMap::new()),
            etag_counter: AtomicU64::new(0),
            hubs: Mutex::new(Vec::new()),
            operations: Mutex::new(BTreeMap::new()),
            throttle: Mutex::new(Throttle::default()),
            lie_bulk_success: AtomicU64::new(0),
            resource: Mutex::new(json!({
                "name": name, "type": "Microsoft.Devices/provisioningServices", "location": "westus",
                "etag": "AAAAAAAAAAE=", "tags": {},
                "sku": {"name": "S1", "tier": "Standard", "capacity": 1},
                "properties": {"state": "Active", "provisioningState": "Succeeded",
                    "publicNetworkAccess": "Enabled", "ipFilterRules": [], "allocationPolicy": "Hashed",
                    "serviceOperationsHostName": host,
                    "deviceProvisioningHostName": "global.azure-devices-provisioning.net"},
            })),
        })
    }

    /// The ARM document as GET shows it: `id`, `idScope` and the linked hubs (`iotHubs`, each
    /// `{name: host, connectionString (key masked), location}`) filled in.
    pub fn resource(&self) -> Value {
        let mut doc = lock(&self.resource).clone();
        let hubs: Vec<String> = self.linked_hubs().unwrap_or_else(|| {
            lock(&self.hubs)
                .iter()
                .map(|h| h.shared.host.clone())
                .collect()
        });
        doc["id"] = json!(self.resource_id);
        doc["properties"]["idScope"] = json!(self.id_scope);
        doc["properties"]["iotHubs"] = hubs
            .iter()
            .map(|h| json!({"name": h, "location": "westus",
                "connectionString": format!("HostName={h};SharedAccessKeyName=iothubowner;SharedAccessKey=****")}))
            .collect();
        doc
    }

    /// Change the ARM document's networking (`publicNetworkAccess`, classic `ipFilterRules`
    /// `{filterName, action: Accept|Reject, ipMask, target: all|serviceApi|deviceApi}`).
    pub fn set_network(&self, public_network_access: &str, ip_filter_rules: Value) {
        let mut doc = lock(&self.resource);
        doc["properties"]["publicNetworkAccess"] = json!(public_network_access);
        doc["properties"]["ipFilterRules"] = ip_filter_rules;
    }

    /// Limit the service API to `ops_per_minute` operations (DPS allows 1,000 a minute per
    /// instance; tests scale it), answering 429 429001 with `Retry-After: retry_after_secs`
    /// beyond it. `None`: unlimited.
    pub fn set_rate(&self, ops_per_minute: Option<f64>, retry_after_secs: u64) {
        let mut t = lock(&self.throttle);
        t.per_second = ops_per_minute.map(|r| r / 60.0);
        t.retry_after_secs = retry_after_secs;
        t.bucket = None;
    }

    /// Requests answered 429 so far.
    pub fn throttled(&self) -> u64 {
        lock(&self.throttle).throttled
    }

    /// The next `n` bulk calls answer `isSuccessful: true` even when items failed (their
    /// `errors` still list them): a client must read `errors`, not the flag.
    pub fn lie_about_bulk_success(&self, n: u64) {
        self.lie_bulk_success.store(n, Ordering::Relaxed);
    }

    /// Take one operation from the bucket; false: answer 429.
    fn admit_operation(&self) -> bool {
        let mut t = lock(&self.throttle);
        let Some(rate) = t.per_second else {
            return true;
        };
        let now = std::time::Instant::now();
        let ok = t
            .bucket
            .get_or_insert_with(|| crate::limits::Bucket::full(rate, now))
            .take(rate, now);
        if !ok {
            t.throttled = t.throttled.saturating_add(1);
        }
        ok
    }

    /// Whether a caller at `ip` may reach the service API (`device`: false) or the device API:
    /// public access, then the first `ipFilterRules` entry whose `target` covers the API and
    /// whose mask holds `ip` (default accept), as `firewall` decides a hub's classic rules.
    fn admits(&self, ip: std::net::IpAddr, device: bool) -> bool {
        let mut doc = lock(&self.resource).clone();
        let wanted = if device { "deviceapi" } else { "serviceapi" };
        if let Some(rules) = doc["properties"]["ipFilterRules"].as_array_mut() {
            rules.retain(|r| {
                r["target"]
                    .as_str()
                    .is_none_or(|t| t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case(wanted))
            });
        }
        crate::firewall::allows(&doc, ip)
    }

    /// The hubs device registrations may be assigned to (the simulator's `run` gives it every
    /// hub it serves; [`DpsState::set_linked_hubs`] narrows them).
    pub fn attach_hubs(&self, hubs: Vec<Arc<Hub>>) {
        *lock(&self.hubs) = hubs;
    }

    /// Host names of the linked hubs, if set.
    pub fn linked_hubs(&self) -> Option<Vec<String>> {
        lock(&self.linked_hubs).clone()
    }

    /// Host names of the linked hubs; enrollments naming another hub get 400.
    /// `None` (the default) checks nothing.
    pub fn set_linked_hubs(&self, hubs: Option<Vec<String>>) {
        *lock(&self.linked_hubs) = hubs;
    }

    /// Every individual enrollment, keys included (for the control API).
    pub fn enrollments(&self) -> Vec<Value> {
        lock(&self.individual).values().cloned().collect()
    }

    /// Every enrollment group, keys included (for the control API).
    pub fn enrollment_groups(&self) -> Vec<Value> {
        lock(&self.groups).values().cloned().collect()
    }

    /// Create or replace one enrollment as a PUT would (for seeding); returns the stored document.
    pub fn seed(&self, kind: Kind, body: &Value) -> Result<Value, String> {
        self.upsert(kind, body, None).map_err(|r| r.message)
    }

    fn store(&self, kind: Kind) -> &Mutex<BTreeMap<String, Value>> {
        match kind {
            Kind::Individual => &self.individual,
            Kind::Group => &self.groups,
        }
    }

    fn next_etag(&self) -> String {
        let n = self
            .etag_counter
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        STANDARD.encode(n.to_be_bytes())
    }

    fn upsert(&self, kind: Kind, body: &Value, if_match: Option<&str>) -> Result<Value, Refused> {
        let linked = lock(&self.linked_hubs).clone();
        let id = enrollment::validate(kind, body, linked.as_deref())?;
        let mut store = lock(self.store(kind));
        let key = id.to_ascii_lowercase();
        precondition(if_match, store.get(&key))?;
        let doc = enrollment::prepare(body, store.get(&key), &self.next_etag(), &now_text());
        store.insert(key, doc.clone());
        Ok(doc)
    }
}

pub fn router(state: Arc<DpsState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<DpsState>>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let device_api = segs.len() >= 4
        && segs[1].eq_ignore_ascii_case("registrations")
        && !segs[0].eq_ignore_ascii_case("registrations");
    // A router served without caller addresses (a bare `axum::serve`) has no firewall.
    let caller = peer.map(|Extension(ConnectInfo(Peer(addr, _)))| addr.ip());
    if caller.is_some_and(|ip| !state.admits(ip, device_api)) {
        // UNCERTAIN: the code DPS gives an IP-filtered caller; we answer as IoT Hub does.
        return error(StatusCode::UNAUTHORIZED, 401_002, "Unauthorized");
    }
    if device_api {
        if !has_api_version(&uri) {
            return missing_api_version();
        }
        return register::dispatch(&state, &method, &segs, &headers, &body);
    }
    let kind = match segs.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("enrollments") => Kind::Individual,
        Some("enrollmentgroups") => Kind::Group,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                404_000,
                "The requested resource was not found.",
            );
        }
    };
    if !state.admit_operation() {
        let retry = lock(&state.throttle).retry_after_secs;
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            429_001,
            "Too many requests: the operation rate of this Device Provisioning Service is exceeded.",
        );
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let write = matches!(method, Method::PUT | Method::DELETE)
        || (method == Method::POST && segs.len() == 1);
    if let Some(resp) = reject_unauthorized(&state, &headers, path, write) {
        return resp;
    }
    if !has_api_version(&uri) {
        return missing_api_version();
    }
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let result = match (&method, &segs[1..]) {
        (&Method::GET, [id]) => get(&state, kind, id),
        (&Method::PUT, [id]) => put(&state, kind, id, &body, if_match),
        (&Method::DELETE, [id]) => delete(&state, kind, id, if_match),
        (&Method::POST, []) => bulk::run(&state, kind, &body),
        (&Method::POST, ["query"]) => return query::page(&state, kind, &headers, &body),
        (&Method::POST, [id, op]) if op.eq_ignore_ascii_case("attestationmechanism") => {
            attestation(&state, kind, id)
        }
        _ => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            Refused {
                code: 405_000,
                message: format!("The method {method} is not allowed on {path}."),
            },
        )),
    };
    match result {
        Ok((status, body)) => json_response(status, &body),
        Err((status, refused)) => error(status, refused.code, &refused.message),
    }
}

fn has_api_version(uri: &Uri) -> bool {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "api-version" && !v.is_empty())
}

fn missing_api_version() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        400_004,
        "The api-version query parameter is required.",
    )
}

type Outcome = Result<(StatusCode, Value), (StatusCode, Refused)>;

fn get(state: &DpsState, kind: Kind, id: &str) -> Outcome {
    let store = lock(state.store(kind));
    match store.get(&id.to_ascii_lowercase()) {
        Some(doc) => Ok((StatusCode::OK, enrollment::public_view(doc))),
        None => Err(not_found(kind, id)),
    }
}

fn put(state: &DpsState, kind: Kind, id: &str, body: &[u8], if_match: Option<&str>) -> Outcome {
    let body: Value = serde_json::from_slice(body).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            bad_request("The request body is not valid JSON."),
        )
    })?;
    let named = body
        .get(kind.id_field())
        .and_then(Value::as_str)
        .unwrap_or("");
    if !named.eq_ignore_ascii_case(id) {
        return Err((
            StatusCode::BAD_REQUEST,
            bad_request(format!(
                "The {} in the body ('{named}') does not match the one in the path ('{id}').",
                kind.id_field()
            )),
        ));
    }
    let doc = state.upsert(kind, &body, if_match).map_err(with_status)?;
    Ok((StatusCode::OK, enrollment::public_view(&doc)))
}

fn delete(state: &DpsState, kind: Kind, id: &str, if_match: Option<&str>) -> Outcome {
    let mut store = lock(state.store(kind));
    let key = id.to_ascii_lowercase();
    if !store.contains_key(&key) {
        return Err(not_found(kind, id));
    }
    precondition(if_match, store.get(&key)).map_err(with_status)?;
    store.remove(&key);
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

fn attestation(state: &DpsState, kind: Kind, id: &str) -> Outcome {
    let store = lock(state.store(kind));
    match store.get(&id.to_ascii_lowercase()) {
        Some(doc) => Ok((StatusCode::OK, doc["attestation"].clone())),
        None => Err(not_found(kind, id)),
    }
}

/// `If-Match`: absent passes; `*` needs an existing item; otherwise the etags must match.
fn precondition(if_match: Option<&str>, current: Option<&Value>) -> Result<(), Refused> {
    let Some(expected) = if_match.map(|e| e.trim().trim_matches('"')) else {
        return Ok(());
    };
    let current = current.and_then(|c| c["etag"].as_str());
    match (expected, current) {
        ("*", Some(_)) => Ok(()),
        (e, Some(c)) if e == c => Ok(()),
        _ => Err(Refused {
            code: 412_001,
            message: "The ETag in the request does not match the ETag of the existing resource."
                .into(),
        }),
    }
}

fn with_status(r: Refused) -> (StatusCode, Refused) {
    let status = StatusCode::from_u16(u16::try_from(r.code / 1000).unwrap_or(400))
        .unwrap_or(StatusCode::BAD_REQUEST);
    (status, r)
}

fn not_found(kind: Kind, id: &str) -> (StatusCode, Refused) {
    (
        StatusCode::NOT_FOUND,
        Refused {
            code: kind.not_found_code(),
            message: format!("The {} '{id}' was not found.", kind.label()),
        },
    )
}

/// Reads need `EnrollmentRead` (or a right that implies it); writes need `EnrollmentWrite`.
/// UNCERTAIN: whether `ServiceConfig` alone grants enrollment access; we say it does not.
fn reject_unauthorized(
    state: &DpsState,
    headers: &HeaderMap,
    path: &str,
    write: bool,
) -> Option<Response> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let policy = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| sas::validate(h, &state.policies, &state.host, path, now).ok());
    let allowed = policy.is_some_and(|p| {
        let has = |r: &str| p.rights.iter().any(|x| x == r);
        has("EnrollmentWrite") || (!write && has("EnrollmentRead"))
    });
    (!allowed).then(|| error(StatusCode::UNAUTHORIZED, 401_002, "Unauthorized"))
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    if body.is_null() {
        return status.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// Flat `ProvisioningServiceErrorDetails` plus the `x-ms-error-code` header.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "errorCode": code,
        "trackingId": uuid::Uuid::new_v4().to_string(),
        "message": message,
        "info": {},
        "timestampUtc": now_text(),
    });
    let mut resp = json_response(status, &body);
    if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
        resp.headers_mut().insert("x-ms-error-code", v);
    }
    resp
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
    fn debug_shows_no_policy_or_enrollment_keys() {
        let state = DpsState::new(
            "dps-a",
            "dps-a.azure-devices-provisioning.net",
            default_policies(),
        );
        let stored = state
            .seed(
                Kind::Individual,
                &json!({"registrationId": "d1", "attestation": {"type": "symmetricKey"}}),
            )
            .unwrap();
        let shown = format!("{state:?}");
        assert!(shown.contains("provisioningserviceowner"));
        let enrollment_key = stored["attestation"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap();
        for secret in [
            enrollment_key,
            &state.policies[0].primary_key,
            &state.policies[0].secondary_key,
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
