//! Any ARM request, described before it is made: the failover runbook prints every call it will
//! make (`failover plan`, `--dry-run`) from the same [`ArmCall`] values it later sends.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{ArmClient, Error};

/// `Microsoft.Network/privateEndpoints` (and their `privateDnsZoneGroups`).
pub const NETWORK_API_VERSION: &str = "2024-05-01";
/// `Microsoft.Network/privateDnsZones` (and `virtualNetworkLinks`, record sets).
pub const PRIVATE_DNS_API_VERSION: &str = "2024-06-01";
/// `Microsoft.Authorization/permissions`.
pub const PERMISSIONS_API_VERSION: &str = "2022-04-01";

/// One management-plane request: method, resource path (no host) with its `api-version`, body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmCall {
    pub method: &'static str,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl ArmCall {
    pub fn new(method: &'static str, resource: &str, api_version: &str) -> Self {
        ArmCall {
            method,
            path: format!("{resource}?api-version={api_version}"),
            body: None,
        }
    }

    #[must_use]
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

impl fmt::Display for ArmCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(body) = &self.body {
            write!(f, "\n    {body}")?;
        }
        Ok(())
    }
}

/// What ARM answered: status, the `Azure-AsyncOperation` (else `Location`) URL of a long-running
/// operation, and the JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The method of the call answered (what a refusal's fix depends on).
    pub method: &'static str,
    pub status: u16,
    pub operation: Option<String>,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// ARM's `error.message` (or the resource provider's top-level `message`).
    pub fn message(&self) -> String {
        self.body
            .pointer("/error/message")
            .or_else(|| self.body.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("HTTP {}", self.status), str::to_owned)
    }

    /// `Ok(self)` for 2xx, else [`Error::Refused`] naming `what`.
    pub fn success(self, what: &str) -> Result<Answer, Error> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(Error::Refused {
                method: self.method,
                resource: what.to_owned(),
                status: self.status,
                message: self.message(),
            })
        }
    }
}

impl ArmClient {
    /// Send `call` (any status is an [`Answer`]; only a request without an answer is an error).
    pub async fn send(&self, call: &ArmCall) -> Result<Answer, Error> {
        let resource = call.path.split('?').next().unwrap_or("").to_owned();
        let url = self.endpoint.join(&call.path).map_err(|e| Error::Body {
            resource: resource.clone(),
            detail: e.to_string(),
        })?;
        let method =
            reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|e| Error::Body {
                resource: resource.clone(),
                detail: e.to_string(),
            })?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.bearer(&resource).await?);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let transport = |source: reqwest::Error| Error::Transport {
            resource: resource.clone(),
            source: source.without_url(),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let operation = header("azure-asyncoperation").or_else(|| header("location"));
        // `listkeys` answers with the hub's keys: the text is wiped when dropped.
        let text = Zeroizing::new(response.text().await.map_err(transport)?);
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| Error::Body {
                resource: resource.clone(),
                detail: e.to_string(),
            })?
        };
        Ok(Answer {
            method: call.method,
            status,
            operation,
            body,
        })
    }

    /// `GET` an operation URL ARM handed out; only its path and query are used, sent to this
    /// client's endpoint (a URL naming another host is not followed).
    pub async fn poll(&self, operation_url: &str) -> Result<Answer, Error> {
        let url = url::Url::parse(operation_url).map_err(|e| Error::Body {
            resource: "operation".to_owned(),
            detail: e.to_string(),
        })?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        self.send(&ArmCall {
            method: "GET",
            path,
            body: None,
        })
        .await
    }
}
