//! Simulated Key Vault secrets data plane, speaking the service's wire shapes to the official
//! `SecretClient` (`azure_security_keyvault_secrets`) and to raw callers.
//!
//! | method | path | answer |
//! |---|---|---|
//! | PUT | `/secrets/{name}` | `{"value","contentType"?,"tags"?,"attributes"?:{"enabled","exp","nbf"}}` → `SecretBundle` with value (a new version each time); 409 `Conflict`/`ObjectIsDeletedButRecoverable` while the name is soft-deleted |
//! | GET | `/secrets/{name}[/]`, `/secrets/{name}/{version}` | `SecretBundle` with value; 403 `Forbidden`/`SecretDisabled` for a disabled version; 404 `SecretNotFound` |
//! | PATCH | `/secrets/{name}[/]`, `/secrets/{name}/{version}` | `{"contentType","tags","attributes":{"enabled","exp","nbf"}}` (any subset) → `SecretBundle` without value |
//! | GET | `/secrets` | `{"value":[SecretItem],"nextLink"}` (latest version's attributes, no values) |
//! | GET | `/secrets/{name}/versions` | `{"value":[SecretItem with version id],"nextLink"}` |
//! | DELETE | `/secrets/{name}` | `DeletedSecretBundle` (`recoveryId`, `deletedDate`, `scheduledPurgeDate`; no value) |
//! | GET | `/deletedsecrets`, `/deletedsecrets/{name}` | `{"value":[DeletedSecretItem],"nextLink"}`, `DeletedSecretBundle` |
//! | POST | `/deletedsecrets/{name}/recover` | `SecretBundle` of the latest version, without value |
//! | DELETE | `/deletedsecrets/{name}` | 204 (purge) |
//!
//! Lists take `maxresults` (1–25, default 25) and answer an absolute `nextLink` carrying a
//! `$skiptoken` until the last page (`wire`). Every request passes a gate, in this order:
//! `Authorization` (none → 401 with the `WWW-Authenticate` challenge that starts the SDK's token
//! flow; a token issued by the simulator's managed-identity endpoint (`identity`) stands for its
//! identity and must have been issued for `https://vault.azure.net`, else 401 `AKV10022`; any
//! other non-empty bearer token stands for the principal `anonymous`, unless
//! [`KvState::require_token`] names the only foreign token accepted); the firewall (`access`,
//! 403 `ForbiddenByFirewall`); `api-version` (400 `BadParameter`); the route (400); RBAC when a
//! role-assignment list is set (`access`, 403 `ForbiddenByRbac`). Error bodies are
//! `{"error":{"code","message","innererror"?:{"code"}}}`.
//!
//! Real-service texts confirmed from public error reports: `SecretDisabled`, the deleted-name
//! conflict, the RBAC denial (`Caller: appid=…;oid=…;iss=…`, `Action: '…'`, `Resource: '…'` in
//! lower case, `Assignment: (not found)`, `DenyAssignmentId: null`, `DecisionReason:
//! 'DeniedWithNoValidRBAC'`, `Vault: name;location=…`). UNCERTAIN (best effort): the firewall
//! message's layout after its first sentence, the deleted-secret 404 message, the `maxresults`
//! message, `Caller:` for the `anonymous` principal (`appid=anonymous;oid=anonymous`), the
//! `:443` in `nextLink`, no value in the recover answer.
//!
//! For clients: the RBAC and firewall messages hold `\r\n`, which `azure_core` 1.1 cannot read
//! (it borrows error strings from the body); its error then says code `"403"` with the raw body as
//! the message — as against the real service. Look for `ForbiddenByRbac` / `ForbiddenByFirewall`
//! in the body.
//!
//! Owns the secret store of one vault (`store`), its JSON (`wire`), which operation a request is
//! (`route`), its role assignments and network ACLs (`access`). It must not log or echo secret
//! values outside the response that returns them; `Debug` shows names only. Imports nothing
//! else of hubvault.

pub mod access;
mod model;
mod route;
mod store;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use time::OffsetDateTime;

use super::identity::{Identities, Principal, same_audience};
use super::net::Peer;
use super::shared::lock;
use access::{NetworkAcls, RoleAssignment};
use route::Op;
use store::Store;
use wire::{KvError, PageRequest, json_response};

/// Tenant written into the challenge and the `iss` of callers; any GUID works for clients.
pub const TENANT: &str = "00000000-0000-0000-0000-000000000000";

/// The audience Key Vault tokens are issued for.
pub const RESOURCE: &str = "https://vault.azure.net";

/// Where a simulated vault lives and whose tokens it trusts.
pub struct KvOptions {
    /// The vault URL ids are written with (`https://myvault.vault.azure.net`).
    pub vault_url: String,
    /// Its ARM coordinates, for the `Resource:` of RBAC denials.
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    /// Whose tokens stand for named principals.
    pub identities: Arc<Identities>,
}

impl KvOptions {
    /// A vault at `vault_url` in the simulator's default subscription and resource group, with
    /// identities of its own.
    pub fn new(vault_url: &str) -> Self {
        KvOptions {
            vault_url: vault_url.to_string(),
            subscription: "00000000-0000-4000-8000-000000000001".into(),
            resource_group: "hubvault-sim".into(),
            location: "westus".into(),
            identities: Identities::new(),
        }
    }
}

/// One simulated vault.
pub struct KvState {
    vault_url: String,
    /// `myvault` of `https://myvault.vault.azure.net`.
    name: String,
    resource_id: String,
    location: String,
    identities: Arc<Identities>,
    required_token: Mutex<Option<String>>,
    store: Mutex<Store>,
    rbac: Mutex<Option<Vec<RoleAssignment>>>,
    acls: Mutex<NetworkAcls>,
}

/// Secret values never print.
impl std::fmt::Debug for KvState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvState")
            .field("vault_url", &self.vault_url)
            .field("secrets", &*lock(&self.store))
            .finish_non_exhaustive()
    }
}

impl KvState {
    pub fn new(vault_url: &str) -> Arc<Self> {
        Self::with_options(KvOptions::new(vault_url))
    }

    pub fn with_options(o: KvOptions) -> Arc<Self> {
        let vault_url = o.vault_url.trim_end_matches('/').to_string();
        let host = vault_url
            .split_once("://")
            .map_or(vault_url.as_str(), |(_, h)| h);
        let name = host.split(['.', ':']).next().unwrap_or(host).to_string();
        Arc::new(KvState {
            resource_id: format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{name}",
                o.subscription, o.resource_group
            ),
            name,
            vault_url,
            location: o.location,
            identities: o.identities,
            required_token: Mutex::new(None),
            store: Mutex::new(Store::default()),
            rbac: Mutex::new(None),
            acls: Mutex::new(NetworkAcls::default()),
        })
    }

    /// The vault URL (`https://hubvault-sim.vault.azure.net`).
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// Its host name (`hubvault-sim.vault.azure.net`).
    pub fn host(&self) -> &str {
        self.vault_url
            .split_once("://")
            .map_or(self.vault_url.as_str(), |(_, h)| h)
    }

    /// The ARM id (`/subscriptions/…/providers/Microsoft.KeyVault/vaults/{name}`).
    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    pub fn identities(&self) -> &Arc<Identities> {
        &self.identities
    }

    /// Accept only `Bearer {token}` among tokens the simulator did not issue (default: any).
    pub fn require_token(&self, token: Option<String>) {
        *lock(&self.required_token) = token;
    }

    /// The latest value of a live secret (for in-process checks).
    pub fn latest(&self, name: &str) -> Option<String> {
        lock(&self.store).latest_value(name)
    }

    /// `None`: RBAC off (everything allowed).
    pub fn role_assignments(&self) -> Option<Vec<RoleAssignment>> {
        lock(&self.rbac).clone()
    }

    pub fn set_role_assignments(&self, assignments: Option<Vec<RoleAssignment>>) {
        *lock(&self.rbac) = assignments;
    }

    pub fn network_acls(&self) -> NetworkAcls {
        lock(&self.acls).clone()
    }

    pub fn set_network_acls(&self, acls: NetworkAcls) {
        *lock(&self.acls) = acls;
    }

    /// One secret (live or deleted) with its versions' attributes, no values; `None` if unknown.
    pub fn secret_view(&self, name: &str) -> Option<Value> {
        lock(&self.store).view(name)
    }

    /// Every secret, as [`KvState::secret_view`].
    pub fn secrets_view(&self) -> Value {
        lock(&self.store).views()
    }

    fn caller(p: &Principal) -> String {
        let app = p.client_id.as_deref().unwrap_or(&p.name);
        let oid = p.principal_id.as_deref().unwrap_or(&p.name);
        format!("appid={app};oid={oid};iss=https://sts.windows.net/{TENANT}/")
    }

    fn forbidden_by_rbac(&self, p: &Principal, action: &str, secret: Option<&str>) -> KvError {
        let resource = match secret {
            Some(s) => format!("{}/secrets/{s}", self.resource_id),
            None => self.resource_id.clone(),
        }
        .to_ascii_lowercase();
        KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {}\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
                Self::caller(p),
                self.name,
                self.location
            ),
        )
        .inner("ForbiddenByRbac")
    }

    fn forbidden_by_firewall(&self, p: &Principal, ip: Option<IpAddr>) -> KvError {
        let address = ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Client address is not authorized and caller is not a trusted service.\r\nClient address: {address}\r\nCaller: {}\r\nVault: {};location={}",
                Self::caller(p),
                self.name,
                self.location
            ),
        )
        .inner("ForbiddenByFirewall")
    }
}

pub fn router(state: Arc<KvState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// The caller's address when the router is served with connect info (`sim::run` always is).
struct PeerIp(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        let ip = ext
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.0.ip())
            .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        Ok(PeerIp(ip))
    }
}

async fn dispatch(
    State(state): State<Arc<KvState>>,
    PeerIp(ip): PeerIp,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&state, ip, &method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn handle(
    state: &KvState,
    ip: Option<IpAddr>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Response> {
    let principal = authenticate(state, headers)?;
    if !lock(&state.acls).allows(ip) {
        return Err(state.forbidden_by_firewall(&principal, ip).into_response());
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if !query
        .iter()
        .any(|(k, v)| k == "api-version" && !v.is_empty())
    {
        return Err(
            KvError::bad_parameter("The api-version query parameter is missing.").into_response(),
        );
    }
    let path = uri.path();
    let Some(op) = Op::route(method, path) else {
        return Err(
            KvError::bad_parameter("The request URI is not supported by this vault.")
                .into_response(),
        );
    };
    if let Some(name) = op.secret().filter(|n| !valid_name(n)) {
        return Err(KvError::bad_parameter(format!(
            "The request URI contains an invalid name: {name}"
        ))
        .into_response());
    }
    if let Some(assignments) = lock(&state.rbac).as_deref() {
        let (action, secret) = op.action();
        if !access::grants(assignments, &principal, action, secret) {
            return Err(state
                .forbidden_by_rbac(&principal, action, secret)
                .into_response());
        }
    }
    run(state, &op, &query, body).map_err(IntoResponse::into_response)
}

fn run(
    state: &KvState,
    op: &Op<'_>,
    query: &[(String, String)],
    body: &[u8],
) -> Result<Response, KvError> {
    let vault = state.vault_url.as_str();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let json_body = || -> Result<Value, KvError> {
        serde_json::from_slice(body)
            .map_err(|e| KvError::bad_parameter(format!("The request body is not valid JSON: {e}")))
    };
    let mut store = lock(&state.store);
    let out = match *op {
        Op::List => store.list(vault, &PageRequest::parse(query)?),
        Op::Versions(name) => store.versions(vault, name, &PageRequest::parse(query)?)?,
        Op::ListDeleted => store.list_deleted(vault, &PageRequest::parse(query)?),
        Op::Set(name) => store.set(vault, name, &json_body()?, now)?,
        Op::Get(name, version) => store.get(vault, name, version)?,
        Op::Update(name, version) => store.update(vault, name, version, &json_body()?, now)?,
        Op::Delete(name) => store.delete(vault, name, now)?,
        Op::GetDeleted(name) => store.get_deleted(vault, name)?,
        Op::Recover(name) => store.recover(vault, name)?,
        Op::Purge(name) => return Ok(store.purge(name)?.into_response()),
    };
    Ok(json_response(StatusCode::OK, &out))
}

/// 1–127 characters of `0-9 a-z A-Z -`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Who the request is from, or the 401 to answer.
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn authenticate(state: &KvState, headers: &HeaderMap) -> Result<Principal, Response> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        let mut resp = KvError::unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"{RESOURCE}\""
        )) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return Err(resp);
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or("").trim();
    if let Some(issued) = state.identities.resolve(token) {
        if !same_audience(&issued.resource, RESOURCE) {
            return Err(KvError::unauthorized(&format!(
                "AKV10022: Invalid audience. Expected {RESOURCE}, found: {}.",
                issued.resource
            ))
            .into_response());
        }
        return Ok(issued.principal);
    }
    let required = lock(&state.required_token).clone();
    if token.is_empty() || required.is_some_and(|r| r != token) {
        return Err(KvError::unauthorized("AKV10032: Invalid issuer or token.").into_response());
    }
    Ok(Principal::anonymous())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_secret_values() {
        let state = KvState::new("https://v.vault.azure.net");
        lock(&state.store)
            .set(
                "https://v.vault.azure.net",
                "identity",
                &serde_json::json!({"value": "AGE-SECRET-KEY-1SHOULDNOTPRINT"}),
                1,
            )
            .unwrap();
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

    #[test]
    fn the_vault_knows_its_name_and_arm_id() {
        let state = KvState::new("https://hubvault-sim.vault.azure.net/");
        assert_eq!(state.host(), "hubvault-sim.vault.azure.net");
        assert!(
            state
                .resource_id()
                .ends_with("/providers/Microsoft.KeyVault/vaults/hubvault-sim")
        );
    }
}
