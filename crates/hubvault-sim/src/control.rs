//! The control API: a separate port for tests and demos to shape the simulated world.
//! It has no authentication — bind it to loopback only.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/hubs` | → `[{"name","host","endpoint","resource_id"}]` |
//! | POST | `/hubs/{hub}/seed` | `{"count":N,"seed":S,"start":0}` → `{"created":n}`: a deterministic synthetic fleet (see `seed`) |
//! | POST | `/hubs/{hub}/load` | a `devices.txt` body (JSON lines; `importMode` honoured, default `createOrUpdate`; keys kept; reported properties applied) → `{"applied":n,"errors":[{"line","errorCode","errorStatus"}]}` |
//! | GET | `/hubs/{hub}/registry` | → the whole registry as `devices.txt` JSON lines, keys included (`application/x-ndjson`) |
//! | GET | `/hubs/{hub}/configurations` | → `configurations.txt` JSON lines |
//! | DELETE | `/hubs/{hub}/registry` | → 204; removes every device and configuration |
//! | GET / PUT | `/hubs/{hub}/firewall` | `{"publicNetworkAccess","networkRuleSets","ipFilterRules"}` (any subset; `null` removes) → the three fields as now in the ARM resource document |
//! | GET / PATCH | `/hubs/{hub}/limits` | a partial `Limits` document (`snake_case`; e.g. `{"device_quota":10,"job_rate":50,"rates":{"registry":1},"retry_after_secs":1}`) → the whole document; unknown keys → 400 |
//! | GET / PATCH | `/hubs/{hub}/faults` | a partial `Faults` document (`fail_next_job`, `error_burst`, `error_status`, `slow_ms`, `slow_count`, `drop_count`, `lose_bulk_responses`, `export_skip_devices`, `expire_tokens_early_secs`, `wrong_key_for`, `drop_imports_percent`, `failing_over_ms`: answer 404012 for that many ms from now) → the whole document |
//! | GET | `/hubs/{hub}/messages` | → `{"<deviceId>": count}` of device-to-cloud messages accepted |
//! | GET | `/hubs/{hub}/jobs` | → the job list, as `GET /jobs` on the hub would give it |
//! | GET | `/msi/token` | the App Service-style managed-identity token endpoint (`IDENTITY_ENDPOINT`; see `identity`): `?api-version=2019-08-01&resource=…` with `x-identity-header: {header}` → `{"access_token","expires_on","resource","token_type":"Bearer","client_id"}` |
//! | GET | `/identities` | → `[{"name","header","principal_id","client_id"}]`, the default identity (`hubvault-sim-mi`) first |
//! | POST | `/identities` | `{"name":"backup-host"}` (1–128 of `A-Z a-z 0-9 - _`) → 201 `{"name","header","principal_id","client_id"}`; 409 if the name exists |
//! | GET / PUT | `/keyvault/role-assignments` | `[{"principal","role","scope"}]` (`principal`: identity name or object id, or `anonymous`; `role`: a Key Vault built-in role's name or id; `scope`: `/` or `/secrets/{name}`, default `/`) → the normalized list; `null` or `[]` → `null`: RBAC off (the default, everything allowed) |
//! | GET / PUT | `/keyvault/network-acls` | ARM's `networkAcls`, e.g. `{"defaultAction":"Deny","bypass":"AzureServices","ipRules":[{"value":"127.0.0.1"},{"value":"127.0.0.0/30"}]}` (`defaultAction` `Allow` or `Deny`; IPv4 addresses or CIDR ranges), or `null` (allow all) → the whole document |
//! | GET | `/keyvault/secrets` | → `[{"name","deleted","deletedDate","scheduledPurgeDate","versions":[{"version","enabled","exp","nbf","created","updated","contentType","tags"}]}]`, no values |
//! | GET | `/keyvault/secrets/{name}` | → one such entry (live or soft-deleted); 404 if unknown |
//!
//! | GET | `/arm/state` | → `{"network": {"resources": {id: doc}, "down_regions": […]}, "hubs": {name: IotHubDescription}}`: every simulated ARM resource (compare before and after) |
//! | PATCH | `/arm/failover` | `{"window_ms": N, "clock_skew_secs": S}` (either) → 204: a manual failover keeps the hub's data plane at 404012 and its operation `Running` for N ms; the failover clock (limits) runs S seconds ahead |
//! | PUT | `/arm/regions/{region}` | `{"down": true}` → 204: writes and deletes of network resources in that region answer 503, its private endpoints stop serving |
//! | PUT | `/arm/permissions` | `["Microsoft.Devices/IotHubs/read", …]` → 204: the actions `…/providers/Microsoft.Authorization/permissions` reports (`[]`: `*`) |
//! | PUT | `/arm/approval` | `{"manual": true}` → 204: new private endpoint connections stay `Pending` (not auto-approved) and do not serve |
//! | GET | `/consumers/{name}/health` | → 200 `{"healthy":true}` while the consumer's DNS resolves the hub's current Event Hub-compatible endpoint to a serving private endpoint, else 503 `{"healthy":false,"reason"}` |
//!
//! The `/keyvault/…` routes answer 404 when no Key Vault is served. Errors are `{"error": "…"}`
//! with 400, 404 or 409.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::apply::{ApplyOptions, ImportMode, apply_line, line_mode};
use super::identity::{CreateError, Identities, Identity};
use super::keyvault::KvState;
use super::keyvault::access::{NetworkAcls, parse_assignments};
use super::limits::{Faults, merge};
use super::state::{Hub, json_response, lock, now_ms, now_secs};
use super::wire::{export_device_line, export_module_line};

pub struct Control {
    pub hubs: Vec<(Arc<Hub>, String)>,
    /// The served vault, if any.
    pub keyvault: Option<Arc<KvState>>,
    pub identities: Arc<Identities>,
    /// The ARM state, once ARM is served (`/arm/…`, `/consumers/…`; see `arm_control`).
    pub arm: Arc<std::sync::OnceLock<Arc<super::arm::ArmState>>>,
}

type Shared = Arc<Control>;

fn fail(status: StatusCode, text: impl Into<String>) -> Response {
    json_response(status, &json!({"error": text.into()}))
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn find(c: &Control, name: &str) -> Result<Arc<Hub>, Response> {
    c.hubs
        .iter()
        .find(|(h, _)| h.shared.name == name)
        .map(|(h, _)| h.clone())
        .ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                format!("no hub named '{name}'; GET /hubs lists them"),
            )
        })
}

pub fn router(control: Control) -> Router {
    let tokens = super::identity::router(control.identities.clone());
    let arm = super::arm_control::router(control.arm.clone());
    Router::new()
        .route("/identities", get(identities).post(create_identity))
        .route(
            "/keyvault/role-assignments",
            get(role_assignments).put(set_role_assignments),
        )
        .route(
            "/keyvault/network-acls",
            get(network_acls).put(set_network_acls),
        )
        .route("/keyvault/secrets", get(kv_secrets))
        .route("/keyvault/secrets/{name}", get(kv_secret))
        .route("/hubs", get(hubs))
        .route("/hubs/{hub}/seed", post(seed))
        .route("/hubs/{hub}/load", post(load))
        .route("/hubs/{hub}/registry", get(registry).delete(wipe))
        .route("/hubs/{hub}/configurations", get(configurations))
        .route("/hubs/{hub}/firewall", get(firewall).put(set_firewall))
        .route(
            "/hubs/{hub}/limits",
            get(limits).patch(set_limits).put(set_limits),
        )
        .route(
            "/hubs/{hub}/faults",
            get(faults).patch(set_faults).put(set_faults),
        )
        .route("/hubs/{hub}/messages", get(messages))
        .route("/hubs/{hub}/jobs", get(jobs))
        .with_state(Arc::new(control))
        .merge(tokens)
        .merge(arm)
}

async fn hubs(State(c): State<Shared>) -> Response {
    let list: Vec<Value> = c.hubs.iter().map(|(h, endpoint)| json!({"name": h.shared.name, "host": h.shared.host, "endpoint": endpoint, "resource_id": h.shared.resource_id})).collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

#[derive(serde::Deserialize)]
struct SeedRequest {
    count: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    start: usize,
}

async fn seed(State(c): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let req: SeedRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"count\":N,\"seed\":S}}: {e}"),
            );
        }
    };
    let created = super::seed::seed(
        &mut lock(&hub.registry),
        req.count,
        req.seed,
        req.start,
        now_secs(),
    );
    json_response(StatusCode::OK, &json!({"created": created}))
}

async fn load(State(c): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let opts = ApplyOptions {
        rules: hub.rules(),
        apply_reported: true,
    };
    let text = String::from_utf8_lossy(&body);
    let mut reg = lock(&hub.registry);
    let now = now_secs();
    let (mut applied, mut errors) = (0_usize, Vec::new());
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('{'))
    {
        let result = serde_json::from_str::<Value>(line)
            .map_err(|e| {
                super::error::HubError::new(400_012, "DeserializationError", e.to_string())
            })
            .and_then(|v| {
                line_mode(&v, ImportMode::CreateOrUpdate)
                    .and_then(|m| apply_line(&mut reg, &v, m, opts, now))
            });
        match result {
            Ok(()) => applied = applied.saturating_add(1),
            Err(e) => {
                errors.push(json!({"line": n.saturating_add(1), "errorCode": e.code, "errorStatus": e.message}));
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"applied": applied, "errors": errors}),
    )
}

fn ndjson(text: String) -> Response {
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

async fn registry(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let reg = lock(&hub.registry);
    let mut out = String::new();
    for (id, d) in &reg.devices {
        out.push_str(&export_device_line(id, d, true));
        out.push('\n');
        for m in d.modules() {
            out.push_str(&export_module_line(id, m, true));
            out.push('\n');
        }
    }
    ndjson(out)
}

async fn configurations(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => ndjson(lock(&hub.registry).configuration_lines()),
        Err(r) => r,
    }
}

async fn wipe(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => {
            let mut reg = lock(&hub.registry);
            reg.devices.clear();
            reg.configurations.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

const FIREWALL_FIELDS: [&str; 3] = ["publicNetworkAccess", "networkRuleSets", "ipFilterRules"];

fn firewall_view(hub: &Hub) -> Value {
    let doc = lock(&hub.shared.resource);
    let props = &doc["properties"];
    let mut out = serde_json::Map::new();
    for f in FIREWALL_FIELDS {
        out.insert(f.into(), props.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

async fn firewall(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => json_response(StatusCode::OK, &firewall_view(&hub)),
        Err(r) => r,
    }
}

/// Edit the networking fields of the ARM resource document: the single source of truth that
/// ARM reads and the data plane evaluates.
async fn set_firewall(State(c): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "expected a JSON object with publicNetworkAccess, networkRuleSets and/or ipFilterRules",
        );
    };
    if let Some(k) = patch
        .keys()
        .find(|k| !FIREWALL_FIELDS.contains(&k.as_str()))
    {
        return fail(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown field '{k}'; use publicNetworkAccess, networkRuleSets or ipFilterRules"
            ),
        );
    }
    {
        let mut doc = lock(&hub.shared.resource);
        if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
            for (k, v) in patch {
                if v.is_null() {
                    props.remove(&k);
                } else {
                    props.insert(k, v);
                }
            }
        }
    }
    json_response(StatusCode::OK, &firewall_view(&hub))
}

async fn limits(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => json_response(StatusCode::OK, &json!(*lock(&hub.limits))),
        Err(r) => r,
    }
}

async fn set_limits(State(c): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut current = lock(&hub.limits);
    match merge(&*current, &patch) {
        Ok(new) => {
            *current = new;
            json_response(StatusCode::OK, &json!(*current))
        }
        Err(e) => fail(StatusCode::BAD_REQUEST, format!("limits not changed: {e}")),
    }
}

async fn faults(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => json_response(StatusCode::OK, &json!(*lock(&hub.faults))),
        Err(r) => r,
    }
}

async fn set_faults(State(c): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let hub = match find(&c, &name) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut current = lock(&hub.faults);
    match merge::<Faults>(&*current, &patch) {
        Ok(mut new) => {
            new.start_failover_window(now_ms());
            *current = new;
            json_response(StatusCode::OK, &json!(*current))
        }
        Err(e) => fail(StatusCode::BAD_REQUEST, format!("faults not changed: {e}")),
    }
}

async fn messages(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => json_response(StatusCode::OK, &json!(*lock(&hub.messages))),
        Err(r) => r,
    }
}

async fn jobs(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    match find(&c, &name) {
        Ok(hub) => json_response(
            StatusCode::OK,
            &Value::Array(
                lock(&hub.jobs)
                    .jobs
                    .iter()
                    .map(super::job_table::Job::json)
                    .collect(),
            ),
        ),
        Err(r) => r,
    }
}

async fn identities(State(c): State<Shared>) -> Response {
    let list: Vec<Value> = c.identities.list().iter().map(Identity::json).collect();
    json_response(StatusCode::OK, &Value::Array(list))
}

async fn create_identity(State(c): State<Shared>, body: Bytes) -> Response {
    let name = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
    let Some(name) = name else {
        return fail(
            StatusCode::BAD_REQUEST,
            "expected {\"name\":\"backup-host\"}",
        );
    };
    match c.identities.create(&name) {
        Ok(identity) => json_response(StatusCode::CREATED, &identity.json()),
        Err(CreateError::Exists) => fail(
            StatusCode::CONFLICT,
            format!("an identity named '{name}' exists; GET /identities lists them"),
        ),
        Err(CreateError::BadName) => fail(
            StatusCode::BAD_REQUEST,
            format!(
                "identity name '{name}': use 1-128 letters, digits, '-' or '_' (not 'anonymous')"
            ),
        ),
    }
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn vault(c: &Control) -> Result<Arc<KvState>, Response> {
    c.keyvault.clone().ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "no Key Vault is served by this simulator",
        )
    })
}

fn assignments_json(kv: &KvState) -> Value {
    kv.role_assignments()
        .map_or(Value::Null, |list| json!(list))
}

async fn role_assignments(State(c): State<Shared>) -> Response {
    match vault(&c) {
        Ok(kv) => json_response(StatusCode::OK, &assignments_json(&kv)),
        Err(r) => r,
    }
}

async fn set_role_assignments(State(c): State<Shared>, body: Bytes) -> Response {
    let kv = match vault(&c) {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| parse_assignments(&v));
    match parsed {
        Ok(list) => {
            kv.set_role_assignments(list);
            json_response(StatusCode::OK, &assignments_json(&kv))
        }
        Err(e) => fail(
            StatusCode::BAD_REQUEST,
            format!("role assignments not changed: {e}"),
        ),
    }
}

async fn network_acls(State(c): State<Shared>) -> Response {
    match vault(&c) {
        Ok(kv) => json_response(StatusCode::OK, &kv.network_acls().json()),
        Err(r) => r,
    }
}

async fn set_network_acls(State(c): State<Shared>, body: Bytes) -> Response {
    let kv = match vault(&c) {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| NetworkAcls::parse(&v));
    match parsed {
        Ok(acls) => {
            kv.set_network_acls(acls);
            json_response(StatusCode::OK, &kv.network_acls().json())
        }
        Err(e) => fail(
            StatusCode::BAD_REQUEST,
            format!("network ACLs not changed: {e}"),
        ),
    }
}

async fn kv_secrets(State(c): State<Shared>) -> Response {
    match vault(&c) {
        Ok(kv) => json_response(StatusCode::OK, &kv.secrets_view()),
        Err(r) => r,
    }
}

async fn kv_secret(State(c): State<Shared>, Path(name): Path<String>) -> Response {
    let kv = match vault(&c) {
        Ok(kv) => kv,
        Err(r) => return r,
    };
    match kv.secret_view(&name) {
        Some(v) => json_response(StatusCode::OK, &v),
        None => fail(
            StatusCode::NOT_FOUND,
            format!("no secret named '{name}' in the vault"),
        ),
    }
}
