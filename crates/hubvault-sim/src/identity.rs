//! Managed identities and the App Service-style token endpoint that issues their tokens: what
//! `azure_identity::ManagedIdentityCredential` calls when `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` are set (its `AppServiceManagedIdentityCredential`, protocol
//! `api-version=2019-08-01`).
//!
//! Owns: the identities of a run (a default one, [`DEFAULT_IDENTITY`], plus those the control API
//! creates), the tokens issued to them, and the endpoint's HTTP shape. Each identity plays one App
//! Service host with its system-assigned identity: its `header` is that host's
//! `IDENTITY_HEADER`, so the header a caller presents selects the principal. Tokens are opaque
//! strings that only the simulator can map back to a principal ([`Identities::resolve`]); Key
//! Vault does, ARM accepts any bearer token anyway. Must not: decide what a principal may do (Key
//! Vault's RBAC does), or print headers or tokens (`Debug` redacts them).
//!
//! The endpoint, served by the control listener at `/msi/token`:
//!
//! ```text
//! GET {control}/msi/token?api-version=2019-08-01&resource=https://vault.azure.net
//! x-identity-header: {header}
//! → 200 {"access_token":"…","expires_on":"1586984735","resource":"https://vault.azure.net",
//!        "token_type":"Bearer","client_id":"…"}
//! ```
//!
//! The success shape, `expires_on` as a string of Unix seconds and the `client_id` field are the
//! documented App Service ones. A `client_id`, `principal_id` / `object_id` or `mi_res_id` query
//! naming anything but the header's identity gets App Service's confirmed
//! `400 {"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"…"}`.
//! UNCERTAIN (not found in any public trace): a missing or wrong `x-identity-header` — answered
//! 401 in that same body shape — and a missing or other `api-version` or a missing `resource`
//! (400, same shape).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::shared::lock;
use super::state::json_response;

/// The identity every run starts with (`--info` `managed_identity` names its header).
pub const DEFAULT_IDENTITY: &str = "hubvault-sim-mi";

/// The only protocol version served (the one `azure_identity` sends).
pub const API_VERSION: &str = "2019-08-01";

/// Where the control listener serves the token endpoint.
pub const TOKEN_PATH: &str = "/msi/token";

/// Tokens live a day, as App Service's do.
const TOKEN_LIFETIME_SECS: i64 = 24 * 60 * 60;

/// A managed identity: its name (what role assignments and tests use), the `IDENTITY_HEADER`
/// value that selects it, and its Entra ids. `Debug` hides the header.
#[derive(Clone)]
pub struct Identity {
    pub name: String,
    pub header: String,
    /// The object id (`oid`) Key Vault's error messages show.
    pub principal_id: String,
    /// The application id (`appid`), also the token response's `client_id`.
    pub client_id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("header", &"<redacted>")
            .field("principal_id", &self.principal_id)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Identity {
    fn new(name: &str) -> Self {
        Identity {
            name: name.to_string(),
            header: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// `{"name","header","principal_id","client_id"}`, as the control API shows it.
    pub fn json(&self) -> Value {
        json!({"name": self.name, "header": self.header, "principal_id": self.principal_id, "client_id": self.client_id})
    }
}

/// Who a bearer token stands for, as a service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The identity's name, or [`Principal::ANONYMOUS`] for a token the simulator did not issue.
    pub name: String,
    pub principal_id: Option<String>,
    pub client_id: Option<String>,
}

impl Principal {
    pub const ANONYMOUS: &'static str = "anonymous";

    /// Any bearer token the simulator did not issue.
    pub fn anonymous() -> Self {
        Principal {
            name: Self::ANONYMOUS.to_string(),
            principal_id: None,
            client_id: None,
        }
    }

    /// True when `who` (a role assignment's `principal`) names this principal: by name, or by
    /// object id (case-insensitive).
    pub fn is(&self, who: &str) -> bool {
        self.name == who
            || self
                .principal_id
                .as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(who))
    }
}

/// What a token issued here carries.
#[derive(Clone, Debug)]
pub struct Issued {
    pub principal: Principal,
    /// The `resource` it was requested for (`https://vault.azure.net`).
    pub resource: String,
    pub expires_on: i64,
}

/// The identities of one run and the tokens issued to them.
pub struct Identities {
    identities: Mutex<Vec<Identity>>,
    tokens: Mutex<HashMap<String, Issued>>,
}

/// Tokens and headers never print.
impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.list().into_iter().map(|i| i.name).collect();
        f.debug_struct("Identities")
            .field("identities", &names)
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

/// Why an identity cannot be created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    BadName,
    Exists,
}

impl Identities {
    /// A registry holding the default identity, [`DEFAULT_IDENTITY`].
    pub fn new() -> Arc<Self> {
        Arc::new(Identities {
            identities: Mutex::new(vec![Identity::new(DEFAULT_IDENTITY)]),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The identity every run starts with.
    pub fn default_identity(&self) -> Identity {
        lock(&self.identities)
            .first()
            .cloned()
            .unwrap_or_else(|| Identity::new(DEFAULT_IDENTITY))
    }

    pub fn list(&self) -> Vec<Identity> {
        lock(&self.identities).clone()
    }

    pub fn get(&self, name: &str) -> Option<Identity> {
        lock(&self.identities)
            .iter()
            .find(|i| i.name == name)
            .cloned()
    }

    /// A new identity with a fresh header and ids. Names are 1–128 letters, digits, `-`, `_`.
    pub fn create(&self, name: &str) -> Result<Identity, CreateError> {
        let ok = (1..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && name != Principal::ANONYMOUS;
        if !ok {
            return Err(CreateError::BadName);
        }
        let mut all = lock(&self.identities);
        if all.iter().any(|i| i.name == name) {
            return Err(CreateError::Exists);
        }
        let identity = Identity::new(name);
        all.push(identity.clone());
        Ok(identity)
    }

    fn by_header(&self, header: &str) -> Option<Identity> {
        lock(&self.identities)
            .iter()
            .find(|i| i.header == header)
            .cloned()
    }

    /// Issue a token for `identity` and `resource`: `(token, expires_on)`.
    pub fn issue(&self, identity: &Identity, resource: &str) -> (String, i64) {
        let token = format!(
            "hubvault-sim-mi.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires_on = OffsetDateTime::now_utc()
            .unix_timestamp()
            .saturating_add(TOKEN_LIFETIME_SECS);
        lock(&self.tokens).insert(
            token.clone(),
            Issued {
                principal: Principal {
                    name: identity.name.clone(),
                    principal_id: Some(identity.principal_id.clone()),
                    client_id: Some(identity.client_id.clone()),
                },
                resource: resource.to_string(),
                expires_on,
            },
        );
        (token, expires_on)
    }

    /// What a token issued here stands for; `None` for any other token.
    pub fn resolve(&self, token: &str) -> Option<Issued> {
        lock(&self.tokens).get(token).cloned()
    }
}

/// `resource` values name the same audience with or without a trailing slash or `/.default`.
pub fn same_audience(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim_end_matches("/.default")
            .trim_end_matches('/')
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

/// The token endpoint alone (the control router merges it in at [`TOKEN_PATH`]).
pub fn router(identities: Arc<Identities>) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(token))
        .with_state(identities)
}

fn failure(status: StatusCode, message: &str) -> Response {
    let correlation = uuid::Uuid::new_v4().to_string();
    let mut r = json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message, "correlationId": correlation}),
    );
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        r.headers_mut().insert("x-correlation-id", v);
    }
    r
}

async fn token(State(ids): State<Arc<Identities>>, uri: Uri, headers: HeaderMap) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let Some(identity) = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| ids.by_header(h))
    else {
        return failure(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    };
    if param("api-version") != Some(API_VERSION) {
        return failure(
            StatusCode::BAD_REQUEST,
            "The api-version query parameter is missing or not supported; use 2019-08-01.",
        );
    }
    let Some(resource) = param("resource").filter(|r| !r.is_empty()) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is required.",
        );
    };
    let selectors: Vec<(&str, &str)> = ["client_id", "principal_id", "object_id", "mi_res_id"]
        .into_iter()
        .filter_map(|k| param(k).map(|v| (k, v)))
        .collect();
    let selects_this = match selectors.as_slice() {
        [] => true,
        [("client_id", v)] => identity.client_id.eq_ignore_ascii_case(v),
        [("principal_id" | "object_id", v)] => identity.principal_id.eq_ignore_ascii_case(v),
        _ => false,
    };
    if !selects_this {
        return failure(
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity.",
        );
    }
    let (access_token, expires_on) = ids.issue(&identity, resource);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_on": expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn headers_and_tokens_never_print() {
        let ids = Identities::new();
        let id = ids.default_identity();
        let (token, _) = ids.issue(&id, "https://vault.azure.net");
        let shown = format!("{ids:?} {id:?}");
        assert!(!shown.contains(&id.header), "{shown}");
        assert!(!shown.contains(&token), "{shown}");
        assert!(shown.contains(DEFAULT_IDENTITY));
    }

    #[test]
    fn tokens_resolve_to_their_principal_only() {
        let ids = Identities::new();
        let other = ids.create("backup-host").unwrap();
        assert_eq!(ids.create("backup-host").err(), Some(CreateError::Exists));
        assert_eq!(ids.create("no spaces").err(), Some(CreateError::BadName));
        assert_eq!(ids.create("anonymous").err(), Some(CreateError::BadName));
        let (token, _) = ids.issue(&other, "https://vault.azure.net");
        let issued = ids.resolve(&token).unwrap();
        assert_eq!(issued.principal.name, "backup-host");
        assert!(issued.principal.is(&other.principal_id.to_uppercase()));
        assert!(!issued.principal.is(DEFAULT_IDENTITY));
        assert!(ids.resolve("someone-elses-token").is_none());
    }

    #[test]
    fn audiences_compare_without_trailing_slash_or_default_scope() {
        assert!(same_audience(
            "https://vault.azure.net/",
            "https://vault.azure.net"
        ));
        assert!(same_audience(
            "https://vault.azure.net/.default",
            "https://VAULT.azure.net"
        ));
        assert!(!same_audience(
            "https://management.azure.com/",
            "https://vault.azure.net"
        ));
    }
}
