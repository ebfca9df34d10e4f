//! Simulated ARM endpoint (`management.azure.com`) for `Microsoft.Devices/IotHubs`: GET / PUT /
//! PATCH the hub resource, `listkeys`, manual failover with async-operation polling.
//!
//! Owns the HTTP shape of ARM (bearer check, `api-version`, ARM and RP error bodies, LRO
//! headers). It must not evaluate the firewall: it only writes the `IotHubDescription` in
//! `HubShared::resource`, which the data plane reads. Imports nothing else of hubvault.
//!
//! Semantics chosen where Azure is asynchronous: PUT answers 200 synchronously with the new
//! document. PUT is a full replace of the writable properties (see `resource::apply_put`): an
//! omitted networking field falls back to its default (open), `location` must stay the same,
//! and `authorizationPolicies` in the body are ignored (keys live in `HubShared::policies`). A failover is committed at once (roles swapped, new Event Hub endpoint) and its
//! operation reports `Running` until the configured duration has passed on the state's clock.

pub mod failover;
pub mod network;
mod network_api;
pub mod resource;
pub mod topology;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::net::Scheme;
use super::shared::{HubShared, Hubs, lock};
pub use resource::initial_resource;

/// State of the ARM endpoint; shared with the control API (clock, token, base URL).
pub struct ArmState {
    hubs: Hubs,
    dps: super::dps::Directory,
    required_token: Mutex<Option<String>>,
    now_override: Mutex<Option<OffsetDateTime>>,
    base_url: Mutex<Option<String>>,
    failover_duration: Mutex<Duration>,
    history: Mutex<HashMap<String, FailoverBook>>,
    operations: Mutex<HashMap<String, Operation>>,
    clock_skew: Mutex<Duration>,
    /// `Microsoft.Network` resources, the region outage switch and the consumers.
    pub network: Mutex<network::Network>,
}

#[derive(Debug, Default)]
struct FailoverBook {
    original_primary: Option<String>,
    records: Vec<failover::Record>,
}

#[derive(Debug, Clone)]
struct Operation {
    hub: String,
    done_at: OffsetDateTime,
}

/// Hub policies hold keys and the required token is a credential: neither prints.
impl std::fmt::Debug for ArmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hubs: Vec<&str> = self.hubs.iter().map(|h| h.name.as_str()).collect();
        f.debug_struct("ArmState")
            .field("hubs", &hubs)
            .field(
                "required_token",
                &lock(&self.required_token).as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl ArmState {
    pub fn new(hubs: Hubs) -> Arc<Self> {
        Self::with_dps(hubs, super::dps::Directory::default())
    }

    /// As [`ArmState::new`], also serving `Microsoft.Devices/provisioningServices` (GET) for the
    /// DPS instances `dps` holds.
    pub fn with_dps(hubs: Hubs, dps: super::dps::Directory) -> Arc<Self> {
        Arc::new(ArmState {
            hubs,
            dps,
            required_token: Mutex::new(None),
            now_override: Mutex::new(None),
            base_url: Mutex::new(None),
            failover_duration: Mutex::new(Duration::ZERO),
            history: Mutex::new(HashMap::new()),
            operations: Mutex::new(HashMap::new()),
            clock_skew: Mutex::new(Duration::ZERO),
            network: Mutex::new(network::Network::default()),
        })
    }

    /// Accept only `Bearer {token}` (default: any bearer token).
    pub fn require_token(&self, token: Option<String>) {
        *lock(&self.required_token) = token;
    }

    /// Pin the clock used for failover limits and operation status (`None`: real time).
    pub fn set_now(&self, now: Option<OffsetDateTime>) {
        *lock(&self.now_override) = now;
    }

    pub fn now(&self) -> OffsetDateTime {
        lock(&self.now_override)
            .unwrap_or_else(|| OffsetDateTime::now_utc().saturating_add(*lock(&self.clock_skew)))
    }

    /// Move the failover clock this far ahead of real time (tests of the hour between
    /// operations and the daily limits, without waiting hours).
    pub fn set_clock_skew(&self, skew: Duration) {
        *lock(&self.clock_skew) = skew;
    }

    /// The hubs this endpoint serves.
    pub fn hubs(&self) -> &Hubs {
        &self.hubs
    }

    /// A consumer's health: `Err` says why it cannot read its hub's events.
    pub fn consumer_health(&self, name: &str) -> Option<Result<(), String>> {
        let net = lock(&self.network);
        let consumer = net.consumers.iter().find(|c| c.name == name)?.clone();
        let hub = self.hubs.iter().find(|h| h.name == consumer.hub)?;
        if self.is_failing_over(&hub.name) {
            return Some(Err(format!("hub {} is failing over", hub.name)));
        }
        let events = network::events_host(&lock(&hub.resource));
        Some(net.consumer_reaches(&consumer, &events))
    }

    /// Base URL written into `Azure-AsyncOperation` / `Location` (default: `{scheme}://{Host}`,
    /// the scheme being `https` when served over `--tls`).
    pub fn set_base_url(&self, url: Option<String>) {
        *lock(&self.base_url) = url.map(|u| u.trim_end_matches('/').to_string());
    }

    /// How long a failover operation reports `Running` (default 0: done at once).
    pub fn set_failover_duration(&self, d: Duration) {
        *lock(&self.failover_duration) = d;
    }

    /// True while a failover of `hub` (short name) is still running on the state's clock; the
    /// data plane may answer 404012 `IotHubFailingOver` meanwhile.
    pub fn is_failing_over(&self, hub: &str) -> bool {
        let now = self.now();
        lock(&self.operations)
            .values()
            .any(|op| op.hub == hub && now < op.done_at)
    }

    fn hub(&self, path_segments: &[&str]) -> Option<Arc<HubShared>> {
        self.hubs
            .iter()
            .find(|h| {
                let id: Vec<&str> = h.resource_id.trim_matches('/').split('/').collect();
                id.len() == path_segments.len()
                    && id
                        .iter()
                        .zip(path_segments)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .cloned()
    }
}

pub fn router(state: Arc<ArmState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<ArmState>>,
    method: Method,
    uri: Uri,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = reject_bearer(&state, &headers) {
        return resp;
    }
    let query = uri.query().unwrap_or("");
    let Some(api_version) = query_param(query, "api-version") else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    if !plausible_api_version(&api_version) {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{api_version}' is invalid. The supported versions are '2023-06-30,2025-08-01-preview'."
            ),
        );
    }
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let scheme = scheme.map_or("http", |Extension(Scheme(s))| s);
    let base = base_url(&state, &uri, &headers, scheme);
    let ctx = Ctx {
        state: &state,
        api_version: &api_version,
        base: &base,
    };
    route(&ctx, &method, &segs, query, &headers, &body)
}

struct Ctx<'a> {
    state: &'a ArmState,
    api_version: &'a str,
    base: &'a str,
}

fn route(
    ctx: &Ctx,
    method: &Method,
    segs: &[&str],
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // /subscriptions/{s}/providers/Microsoft.Devices/operationResults/{id}
    if segs.len() == 6
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[4].eq_ignore_ascii_case("operationResults")
    {
        return operation_status(ctx.state, segs[5], query.contains("asyncinfo"));
    }
    if segs.len() == 8
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[6].eq_ignore_ascii_case("provisioningServices")
    {
        return dps_resource(ctx.state, method, segs);
    }
    if segs.len() >= 6
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[5].eq_ignore_ascii_case("Microsoft.Network")
    {
        return network_api::route(ctx, method, segs, body);
    }
    if let [.., provider, "permissions" | "Permissions"] = segs
        && provider.eq_ignore_ascii_case("Microsoft.Authorization")
        && method == Method::GET
    {
        return network_api::permissions(ctx);
    }
    let is_hub_path = segs.len() >= 8
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[6].eq_ignore_ascii_case("IotHubs");
    if !is_hub_path {
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace 'Microsoft.Devices' for api version.",
        );
    }
    let Some(hub) = ctx.state.hub(&segs[..8]) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.Devices/IotHubs/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                segs[7], segs[3]
            ),
        );
    };
    let rest: Vec<String> = segs[8..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (method.clone(), rest.as_slice()) {
        (Method::GET, []) => json_response(StatusCode::OK, &lock(&hub.resource)),
        (Method::PUT, []) => put_hub(&hub, headers, body),
        (Method::PATCH, []) => patch_hub(&hub, body),
        (Method::POST, ["listkeys"]) => list_keys(&hub, None),
        (Method::POST, ["iothubkeys", _, "listkeys"]) => list_keys(&hub, Some(segs[9])),
        (Method::POST, ["failover"]) => start_failover(ctx, &hub, segs[1], body),
        (Method::PUT, ["privateendpointconnections", _]) => {
            network_api::update_connection(ctx.state, &hub.resource, segs[9], body)
        }
        (Method::GET, ["privateendpointconnections", _]) => {
            network_api::get_connection(&hub.resource, segs[9])
        }
        (_, [] | ["listkeys" | "failover"] | ["iothubkeys", _, "listkeys"]) => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "HttpMethodNotAllowed",
            &format!("The HTTP method '{method}' is not supported at this path."),
        ),
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace 'Microsoft.Devices'.",
        ),
    }
}

/// `GET …/providers/Microsoft.Devices/provisioningServices/{name}`: the DPS instance's
/// `ProvisioningServiceDescription` (networking, `idScope`, linked `iotHubs`). Read only.
fn dps_resource(state: &ArmState, method: &Method, segs: &[&str]) -> Response {
    let path = segs.join("/");
    let found = lock(&state.dps)
        .iter()
        .find(|d| d.resource_id.trim_matches('/').eq_ignore_ascii_case(&path))
        .cloned();
    match (found, method) {
        (Some(d), &Method::GET) => json_response(StatusCode::OK, &d.resource()),
        (Some(_), _) => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "HttpMethodNotAllowed",
            &format!("The HTTP method '{method}' is not supported at this path."),
        ),
        (None, _) => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.Devices/provisioningServices/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
                segs[7], segs[3]
            ),
        ),
    }
}

fn put_hub(hub: &HubShared, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let mut doc = lock(&hub.resource);
    if let Some(expected) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let expected = expected.trim_matches('"');
        if expected != "*" && doc["etag"].as_str() != Some(expected) {
            return arm_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "The etag in the If-Match header does not match the current etag of the IoT hub.",
            );
        }
    }
    let Some(loc) = body.get("location").and_then(Value::as_str) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        );
    };
    if resource::normalize_region(loc)
        != resource::normalize_region(doc["location"].as_str().unwrap_or(""))
    {
        // UNCERTAIN: status; ARM answers InvalidResourceLocation when a resource moves region.
        return arm_error(
            StatusCode::CONFLICT,
            "InvalidResourceLocation",
            &format!(
                "The resource '{}' already exists in location '{}'. A resource with the same name cannot be created in location '{loc}'.",
                hub.name,
                doc["location"].as_str().unwrap_or("")
            ),
        );
    }
    match resource::apply_put(&doc, &body) {
        Ok(next) => {
            *doc = next;
            json_response(StatusCode::OK, &doc)
        }
        Err(resource::Invalid(why)) => rp_validation_error(&why),
    }
}

fn patch_hub(hub: &HubShared, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let mut doc = lock(&hub.resource);
    match resource::apply_tags(&doc, &body) {
        Ok(next) => {
            *doc = next;
            json_response(StatusCode::OK, &doc)
        }
        Err(resource::Invalid(why)) => rp_validation_error(&why),
    }
}

fn list_keys(hub: &HubShared, key_name: Option<&str>) -> Response {
    let describe = |p: &super::shared::AccessPolicy| {
        json!({"keyName": p.name, "primaryKey": p.primary_key,
               "secondaryKey": p.secondary_key, "rights": p.rights.join(", ")})
    };
    match key_name {
        None => {
            let value: Vec<Value> = hub.policies.iter().map(describe).collect();
            json_response(StatusCode::OK, &json!({"value": value, "nextLink": null}))
        }
        Some(name) => match hub
            .policies
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => json_response(StatusCode::OK, &describe(p)),
            None => rp_error(
                StatusCode::NOT_FOUND,
                "404106",
                "NotFound",
                &format!(
                    "The key name '{name}' was not found on IoT hub '{}'.",
                    hub.name
                ),
            ),
        },
    }
}

fn start_failover(ctx: &Ctx, hub: &HubShared, subscription: &str, body: &[u8]) -> Response {
    let region = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| {
            b.get("failoverRegion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|r| !r.trim().is_empty());
    let Some(region) = region else {
        return rp_validation_error("The 'failoverRegion' property is required");
    };
    let now = ctx.state.now();
    let mut doc = lock(&hub.resource);
    if !failover::target_is_secondary(&doc, &region) {
        return rp_validation_error(&format!(
            "The failover region '{region}' is not the secondary region of IoT hub '{}'",
            hub.name
        ));
    }
    let mut books = lock(&ctx.state.history);
    let book = books.entry(hub.name.clone()).or_default();
    let original = book
        .original_primary
        .get_or_insert_with(|| failover::region_with_role(&doc, "primary").unwrap_or_default())
        .clone();
    let failback = resource::normalize_region(&original) == resource::normalize_region(&region);
    if let Err(refusal) = failover::check(&book.records, failback, now) {
        // UNCERTAIN: the RP's code for this refusal is not documented; 400 with the RP body.
        return rp_error(
            StatusCode::BAD_REQUEST,
            "ManualFailoverLimitExceeded",
            "BadRequest",
            &refusal.message(),
        );
    }
    book.records.push(failover::Record { at: now, failback });
    failover::swap(&mut doc);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let window = *lock(&ctx.state.failover_duration);
    let done_at = now.saturating_add(window);
    hub.fail_over_for(window);
    lock(&ctx.state.operations).insert(
        id.clone(),
        Operation {
            hub: hub.name.clone(),
            done_at,
        },
    );
    let op_url = format!(
        "{}/subscriptions/{subscription}/providers/Microsoft.Devices/operationResults/{id}?api-version={}",
        ctx.base, ctx.api_version
    );
    let mut resp = StatusCode::ACCEPTED.into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        (
            "azure-asyncoperation",
            format!("{op_url}&operationSource=os_ih&asyncinfo"),
        ),
        ("location", format!("{op_url}&operationSource=os_ih")),
        ("retry-after", "1".to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// `Azure-AsyncOperation` polling returns a status body; `Location` polling returns 202 until done.
fn operation_status(state: &ArmState, id: &str, async_info: bool) -> Response {
    let Some(op) = lock(&state.operations).get(id).cloned() else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The operation '{id}' was not found."),
        );
    };
    let done = state.now() >= op.done_at;
    match (async_info, done) {
        (true, true) => json_response(StatusCode::OK, &json!({"status": "Succeeded"})),
        (true, false) => json_response(StatusCode::OK, &json!({"status": "Running"})),
        (false, true) => StatusCode::OK.into_response(),
        (false, false) => StatusCode::ACCEPTED.into_response(),
    }
}

fn reject_bearer(state: &ArmState, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
        let mut resp = arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
            ),
        );
        return Some(resp);
    };
    let required = lock(&state.required_token).clone();
    if token.trim().is_empty() || required.is_some_and(|r| r != token) {
        return Some(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        ));
    }
    None
}

fn base_url(state: &ArmState, uri: &Uri, headers: &HeaderMap, scheme: &str) -> String {
    if let Some(b) = lock(&state.base_url).clone() {
        return b;
    }
    // HTTP/2 (negotiated over TLS) carries the host in `:authority`, which lands in the URI;
    // HTTP/1.1 in the `Host` header.
    let host = uri
        .authority()
        .map(axum::http::uri::Authority::as_str)
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("management.azure.com");
    format!("{scheme}://{host}")
}

/// `YYYY-MM-DD` with an optional `-preview`; anything else is refused as ARM does.
fn plausible_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// ARM-level envelope: `{"error":{"code","message"}}`.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// The hub resource provider's `ErrorDetails`: `{code, httpStatusCode, message, details}`.
/// UNCERTAIN: the layout is inferred from the mgmt schema and CLI output.
fn rp_error(status: StatusCode, code: &str, http_status: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"code": code, "httpStatusCode": http_status, "message": message, "details": null}),
    )
}

fn rp_validation_error(why: &str) -> Response {
    let correlation = uuid::Uuid::new_v4();
    let ts = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    rp_error(
        StatusCode::BAD_REQUEST,
        "400059",
        "BadRequest",
        &format!(
            "Request body validation failed. {why}. If you contact a support representative please include this correlation identifier: {correlation}, timestamp: {ts}, errorcode: IH400059"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_keys_or_token() {
        let hub = HubShared {
            name: "hub-a".into(),
            host: "hub-a.azure-devices.net".into(),
            resource_id: "/x".into(),
            policies: vec![super::super::shared::AccessPolicy {
                name: "iothubowner".into(),
                primary_key: "PRIMARYSECRET=".into(),
                secondary_key: "SECONDARYSECRET=".into(),
                rights: vec![],
            }],
            resource: Mutex::new(Value::Null),
            failing_over_until_ms: std::sync::atomic::AtomicU64::default(),
        };
        let state = ArmState::new(Arc::new(vec![Arc::new(hub)]));
        state.require_token(Some("TOKENSECRET".into()));
        let shown = format!("{state:?}");
        assert!(shown.contains("hub-a"));
        for secret in ["PRIMARYSECRET", "SECONDARYSECRET", "TOKENSECRET"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn api_versions_are_dates() {
        assert!(plausible_api_version("2023-06-30"));
        assert!(plausible_api_version("2025-08-01-preview"));
        assert!(!plausible_api_version("latest"));
        assert!(!plausible_api_version("2023-6-30"));
    }
}
