//! Simulated Key Vault secrets data plane, enough for the official `SecretClient`: the 401
//! bearer challenge, set (a new version each time), get latest (`/secrets/{name}/`, trailing
//! slash) or a version, list versions, Key Vault error bodies.
//!
//! Owns the secret store of one vault. It must not log or echo secret values outside the
//! response that returns them. Imports nothing else of hubvault.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::shared::lock;

/// Tenant written into the challenge; any GUID works for clients.
pub const TENANT: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Clone)]
struct Version {
    id: String,
    value: String,
    content_type: Option<String>,
    tags: Value,
    created: i64,
}

/// One simulated vault.
pub struct KvState {
    /// The vault URL ids are written with (`https://myvault.vault.azure.net`).
    vault_url: String,
    required_token: Mutex<Option<String>>,
    secrets: Mutex<BTreeMap<String, Vec<Version>>>,
}

/// Secret values never print.
impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = lock(&self.secrets).keys().cloned().collect();
        f.debug_struct("KvState")
            .field("vault_url", &self.vault_url)
            .field("secrets", &names)
            .finish_non_exhaustive()
    }
}

impl KvState {
    pub fn new(vault_url: &str) -> Arc<Self> {
        Arc::new(KvState {
            vault_url: vault_url.trim_end_matches('/').to_string(),
            required_token: Mutex::new(None),
            secrets: Mutex::new(BTreeMap::new()),
        })
    }

    /// Accept only `Bearer {token}` (default: any bearer token).
    pub fn require_token(&self, token: Option<String>) {
        *lock(&self.required_token) = token;
    }

    /// The latest value of a secret (for the control API and tests).
    pub fn latest(&self, name: &str) -> Option<String> {
        let secrets = lock(&self.secrets);
        secrets
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.last())
            .map(|v| v.value.clone())
    }

    fn bundle(&self, name: &str, v: &Version, with_value: bool) -> Value {
        let mut out = json!({
            "id": format!("{}/secrets/{name}/{}", self.vault_url, v.id),
            "attributes": {"enabled": true, "created": v.created, "updated": v.created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": v.tags,
        });
        if let Some(ct) = &v.content_type {
            out["contentType"] = json!(ct);
        }
        if with_value {
            out["value"] = json!(v.value);
        }
        out
    }
}

pub fn router(state: Arc<KvState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    State(state): State<Arc<KvState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = reject_bearer(&state, &headers) {
        return resp;
    }
    let has_api_version = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "api-version" && !v.is_empty());
    if !has_api_version {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The api-version query parameter is missing.",
        );
    }
    // `/secrets/{name}/` (latest, as the SDK sends it) and `/secrets/{name}` mean the same.
    let segs: Vec<&str> = uri
        .path()
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    match (method, segs.as_slice()) {
        (Method::PUT, ["secrets", name]) => set(&state, name, &body),
        (Method::GET, ["secrets", name, "versions"]) => versions(&state, name),
        (Method::GET, ["secrets", name]) => get(&state, name, None),
        (Method::GET, ["secrets", name, version]) => get(&state, name, Some(version)),
        _ => kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI is not supported by this vault.",
        ),
    }
}

fn set(state: &KvState, name: &str, body: &[u8]) -> Response {
    if !valid_name(name) {
        return bad_name(name);
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "Property 'value' is required.",
        );
    };
    let version = Version {
        id: uuid::Uuid::new_v4().simple().to_string(),
        value: value.to_string(),
        content_type: body
            .get("contentType")
            .and_then(Value::as_str)
            .map(str::to_string),
        tags: body.get("tags").cloned().unwrap_or_else(|| json!({})),
        created: OffsetDateTime::now_utc().unix_timestamp(),
    };
    let bundle = state.bundle(name, &version, true);
    lock(&state.secrets)
        .entry(name.to_ascii_lowercase())
        .or_default()
        .push(version);
    json_response(StatusCode::OK, &bundle)
}

fn get(state: &KvState, name: &str, version: Option<&str>) -> Response {
    let secrets = lock(&state.secrets);
    let versions = secrets.get(&name.to_ascii_lowercase());
    let found = match version {
        None => versions.and_then(|v| v.last()),
        Some(id) => versions.and_then(|v| v.iter().find(|x| x.id.eq_ignore_ascii_case(id))),
    };
    match found {
        Some(v) => json_response(StatusCode::OK, &state.bundle(name, v, true)),
        None => not_found(&version.map_or_else(|| name.to_string(), |v| format!("{name}/{v}"))),
    }
}

fn versions(state: &KvState, name: &str) -> Response {
    let secrets = lock(&state.secrets);
    let Some(versions) = secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let value: Vec<Value> = versions
        .iter()
        .map(|v| state.bundle(name, v, false))
        .collect();
    json_response(StatusCode::OK, &json!({"value": value, "nextLink": null}))
}

/// 1–127 characters of `0-9 a-z A-Z -`.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn bad_name(name: &str) -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        &format!("The request URI contains an invalid name: {name}"),
    )
}

fn not_found(what: &str) -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

/// No `Authorization` ⇒ the challenge that starts the SDK's token flow.
fn reject_bearer(state: &KvState, headers: &HeaderMap) -> Option<Response> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        let mut resp = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""
        )) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return Some(resp);
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    let required = lock(&state.required_token).clone();
    if token.is_empty() || required.is_some_and(|r| r != token) {
        return Some(kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10032: Invalid issuer or token.",
        ));
    }
    None
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_secret_values() {
        let state = KvState::new("https://v.vault.azure.net");
        let _ = set(
            &state,
            "identity",
            br#"{"value":"AGE-SECRET-KEY-1SHOULDNOTPRINT"}"#,
        );
        let shown = format!("{state:?}");
        assert!(shown.contains("identity"));
        assert!(!shown.contains("SHOULDNOTPRINT"));
    }

    #[test]
    fn secret_names_follow_key_vault_rules() {
        assert!(valid_name("hubvault-identity"));
        assert!(!valid_name("has_underscore"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(128)));
    }
}
