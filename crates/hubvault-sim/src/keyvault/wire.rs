//! Key Vault's JSON on the wire: secret bundles and list items, deleted-secret bundles, the
//! `{"error":{"code","message","innererror"}}` error body, and paged lists (`maxresults`,
//! `$skiptoken`, `nextLink`).
//!
//! Owns the shapes only; `store` decides what is answered. Secret values appear only in a bundle
//! asked for `with_value`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::model::{Deleted, Version};

/// What every secret's attributes say about deletion: the vault is soft-delete enabled, purge
/// allowed, 90 days of retention (the service default).
pub(super) const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
pub(super) const RECOVERABLE_DAYS: i64 = 90;

/// The largest page, and the page size without `maxresults` (secrets.json: `maximum: 25`).
pub(super) const MAX_PAGE: usize = 25;

/// One Key Vault error response. Real bodies carry `innererror` only for some codes
/// (`SecretDisabled`, `ObjectIsDeletedButRecoverable`, `ForbiddenByRbac`, `ForbiddenByFirewall`).
#[derive(Debug)]
pub struct KvError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub inner: Option<&'static str>,
}

impl KvError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        KvError {
            status,
            code,
            message: message.into(),
            inner: None,
        }
    }

    #[must_use]
    pub fn inner(mut self, code: &'static str) -> Self {
        self.inner = Some(code);
        self
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// `what` is `name` or `name/version`. The message is the service's.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!(
                "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    /// No deleted secret of that name. UNCERTAIN: the code is the service's, the message is the
    /// one most often reported ("Deleted Secret not found").
    pub fn deleted_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            "Deleted Secret not found",
        )
    }

    /// The service's body for a disabled version (confirmed from SDK test logs and issues).
    pub fn disabled() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
        )
        .inner("SecretDisabled")
    }

    /// Setting a secret whose name is soft-deleted (message text confirmed from error reports).
    pub fn deleted_but_recoverable(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        )
        .inner("ObjectIsDeletedButRecoverable")
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(inner) = self.inner {
            error["innererror"] = json!({"code": inner});
        }
        json!({ "error": error })
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn attributes(v: &Version) -> Value {
    let mut a = json!({"enabled": v.enabled, "created": v.created, "updated": v.updated,
                       "recoveryLevel": RECOVERY_LEVEL, "recoverableDays": RECOVERABLE_DAYS});
    if let Some(nbf) = v.nbf {
        a["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        a["exp"] = json!(exp);
    }
    a
}

/// `id`, `attributes`, and `contentType` / `tags` when set.
fn described(id: &str, v: &Version) -> Value {
    let mut out = json!({"id": id, "attributes": attributes(v)});
    if let Some(ct) = &v.content_type {
        out["contentType"] = json!(ct);
    }
    if let Some(tags) = &v.tags {
        out["tags"] = tags.clone();
    }
    out
}

/// A `SecretBundle`: one version, with its value only when `with_value`.
pub fn bundle(vault: &str, name: &str, v: &Version, with_value: bool) -> Value {
    let mut out = described(&format!("{vault}/secrets/{name}/{}", v.id), v);
    if with_value {
        out["value"] = json!(v.value());
    }
    out
}

/// A `SecretItem` of `GET /secrets`: the secret's id without a version, its latest version's
/// attributes.
pub fn item(vault: &str, name: &str, latest: &Version) -> Value {
    described(&format!("{vault}/secrets/{name}"), latest)
}

fn deleted_fields(vault: &str, d: &Deleted, mut out: Value) -> Value {
    out["recoveryId"] = json!(format!("{vault}/deletedsecrets/{}", d.secret.name));
    out["deletedDate"] = json!(d.date);
    out["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    out
}

/// A `DeletedSecretBundle` (answer of `DELETE /secrets/{name}` and `GET /deletedsecrets/{name}`):
/// the latest version's id and attributes, no value.
pub fn deleted_bundle(vault: &str, d: &Deleted) -> Value {
    let out = match d.secret.latest() {
        Some(v) => bundle(vault, &d.secret.name, v, false),
        None => json!({}),
    };
    deleted_fields(vault, d, out)
}

/// A `DeletedSecretItem` of `GET /deletedsecrets`.
pub fn deleted_item(vault: &str, d: &Deleted) -> Value {
    let out = match d.secret.latest() {
        Some(v) => item(vault, &d.secret.name, v),
        None => json!({}),
    };
    deleted_fields(vault, d, out)
}

/// What a list request asks for: the page size and where to start.
pub struct PageRequest {
    pub max: usize,
    /// The sort key of the first item to return (decoded `$skiptoken`).
    pub from: Option<String>,
    pub api_version: String,
}

impl PageRequest {
    /// `maxresults` must be 1–25 (secrets.json); the message is UNCERTAIN. A `$skiptoken` not
    /// written here is refused.
    pub fn parse(query: &[(String, String)]) -> Result<Self, KvError> {
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let max = match get("maxresults") {
            None => MAX_PAGE,
            Some(m) => m
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    KvError::bad_parameter(format!(
                        "Invalid value '{m}' for query parameter maxresults: it must be between 1 and {MAX_PAGE}."
                    ))
                })?,
        };
        let from = match get("$skiptoken") {
            None => None,
            Some(t) => Some(
                URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| KvError::bad_parameter("The skip token is invalid."))?,
            ),
        };
        Ok(PageRequest {
            max,
            from,
            api_version: get("api-version").unwrap_or_default().to_string(),
        })
    }
}

/// One page of `items` (sorted by key) as `{"value":[…],"nextLink":…}`. `nextLink` is absolute,
/// on the vault's real URL with `:443` as the service is reported to write it
/// (`https://v.vault.azure.net:443/secrets?api-version=…&$skiptoken=…&maxresults=…`; the token's
/// content is the simulator's own); `null` on the last page.
pub fn page(vault: &str, path: &str, items: Vec<(String, Value)>, req: &PageRequest) -> Value {
    let start = req.from.as_deref().map_or(0, |from| {
        items
            .iter()
            .position(|(k, _)| k.as_str() >= from)
            .unwrap_or(items.len())
    });
    let mut rest = items.into_iter().skip(start);
    let value: Vec<Value> = rest.by_ref().take(req.max).map(|(_, v)| v).collect();
    let next = rest.next().map(|(key, _)| {
        format!(
            "{}{path}?api-version={}&$skiptoken={}&maxresults={}",
            with_port(vault),
            req.api_version,
            URL_SAFE_NO_PAD.encode(key.as_bytes()),
            req.max
        )
    });
    json!({"value": value, "nextLink": next})
}

/// `https://v.vault.azure.net` → `https://v.vault.azure.net:443`.
fn with_port(vault: &str) -> String {
    match vault.strip_prefix("https://") {
        Some(host) if !host.contains(':') => format!("https://{host}:443"),
        _ => vault.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn req(q: &[(&str, &str)]) -> Result<PageRequest, KvError> {
        let q: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        PageRequest::parse(&q)
    }

    #[test]
    fn pages_follow_the_skip_token_to_the_end() {
        let items: Vec<(String, Value)> = ["a", "b", "c"]
            .iter()
            .map(|k| ((*k).to_string(), json!(k)))
            .collect();
        let first = page(
            "https://v.vault.azure.net",
            "/secrets",
            items.clone(),
            &req(&[("api-version", "7.6"), ("maxresults", "2")]).unwrap(),
        );
        assert_eq!(first["value"], json!(["a", "b"]));
        let next = first["nextLink"].as_str().unwrap();
        assert!(
            next.starts_with("https://v.vault.azure.net:443/secrets?api-version=7.6&$skiptoken="),
            "{next}"
        );
        let url = url::Url::parse(next).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let second = page(
            "https://v.vault.azure.net",
            "/secrets",
            items,
            &PageRequest::parse(&q).unwrap(),
        );
        assert_eq!(second["value"], json!(["c"]));
        assert!(second["nextLink"].is_null());
    }

    #[test]
    fn maxresults_outside_one_to_25_is_a_bad_parameter() {
        for bad in ["0", "26", "x"] {
            let e = req(&[("maxresults", bad)]).err().unwrap();
            assert_eq!(e.code, "BadParameter");
        }
        assert_eq!(req(&[]).unwrap().max, 25);
        assert!(req(&[("$skiptoken", "!!")]).is_err());
    }
}
