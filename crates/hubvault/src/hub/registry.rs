//! Registry REST (docs/azure.md): devices, modules, bulk writes, query paging, statistics and
//! configurations.
//!
//! Wire types keep fields they do not name in `extra`, so a verbatim export line can be sent
//! back through [`ExportImportDevice`] without losing anything. Symmetric keys are secrets: the
//! types that hold them redact them in `Debug`.

use std::fmt;

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::auth::url_encode;
use super::error::{Error, Result, code_from_json};
use super::{Call, HubClient};

/// Most devices one `POST /devices` accepts.
pub const BULK_MAX: usize = 100;

/// The answer to a bulk call, and whether an earlier try of it may have been carried out.
#[derive(Debug)]
pub struct BulkReply {
    pub result: BulkRegistryOperationResult,
    pub resent: bool,
}

/// Primary and secondary symmetric keys (secrets; `Debug` redacts).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("SymmetricKey")
            .field("primary_key", &r(&self.primary_key))
            .field("secondary_key", &r(&self.secondary_key))
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
}

/// `authentication` of a device or module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationMechanism {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<SymmetricKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509_thumbprint: Option<X509Thumbprint>,
    /// `sas`, `selfSigned`, `certificateAuthority` or `none`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
}

/// A device identity as `GET/PUT /devices/{id}` carry it (keys included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_scopes: Vec<String>,
    /// Fields we do not name (kept on a round trip).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A module identity (`/devices/{id}/modules/{mid}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub module_id: String,
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `importMode` of a bulk entry or an import line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImportMode {
    Create,
    CreateOrUpdate,
    #[serde(rename = "createOrUpdateIfMatchETag")]
    CreateOrUpdateIfMatchEtag,
    Update,
    #[serde(rename = "updateIfMatchETag")]
    UpdateIfMatchEtag,
    Delete,
    #[serde(rename = "deleteIfMatchETag")]
    DeleteIfMatchEtag,
    UpdateTwin,
    #[serde(rename = "updateTwinIfMatchETag")]
    UpdateTwinIfMatchEtag,
}

/// One line of an export / import blob, or one entry of a bulk call (docs/azure.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportImportDevice {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    #[serde(rename = "eTag", skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_mode: Option<ImportMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationMechanism>,
    #[serde(rename = "twinETag", skip_serializing_if = "Option::is_none")]
    pub twin_e_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_scopes: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `errorCode` of a bulk error: the service may send a number or a name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryErrorCode {
    pub number: Option<u32>,
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for RegistryErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let (number, name) = code_from_json(&v);
        Ok(RegistryErrorCode { number, name })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationError {
    pub device_id: Option<String>,
    pub module_id: Option<String>,
    #[serde(default)]
    pub error_code: RegistryErrorCode,
    pub error_status: Option<String>,
    pub operation: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistryOperationWarning {
    pub device_id: Option<String>,
    pub warning_code: Option<String>,
    pub warning_status: Option<String>,
}

/// Result of `POST /devices` (200 when all succeeded, 400 with the same body when some failed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRegistryOperationResult {
    #[serde(default)]
    pub is_successful: bool,
    #[serde(default)]
    pub errors: Vec<DeviceRegistryOperationError>,
    #[serde(default)]
    pub warnings: Vec<DeviceRegistryOperationWarning>,
}

/// An ADM configuration or edge deployment (docs/azure.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /statistics/devices`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    #[serde(default)]
    pub total_device_count: u64,
    #[serde(default)]
    pub enabled_device_count: u64,
    #[serde(default)]
    pub disabled_device_count: u64,
}

/// One page of a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryPage {
    pub items: Vec<Value>,
    /// `x-ms-continuation`; `None` on the last page.
    pub continuation: Option<String>,
    /// `x-ms-item-type` (`twin`, `raw`, …).
    pub item_type: Option<String>,
}

/// The `If-Match` of a write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: a PUT creates (409 if it exists).
    Absent,
    /// `*`: unconditional update or delete.
    Any,
    /// Only if the item still has this etag (quoted on the wire).
    Etag(String),
}

impl IfMatch {
    fn header(&self) -> Option<(&'static str, String)> {
        match self {
            IfMatch::Absent => None,
            IfMatch::Any => Some(("if-match", "*".into())),
            IfMatch::Etag(e) => Some(("if-match", format!("\"{}\"", e.trim_matches('"')))),
        }
    }
}

fn with_if_match(mut call: Call, m: &IfMatch) -> Call {
    call.headers.extend(m.header());
    call
}

fn device_path(id: &str) -> String {
    format!("/devices/{}", url_encode(id))
}

fn module_path(id: &str, module_id: &str) -> String {
    format!(
        "/devices/{}/modules/{}",
        url_encode(id),
        url_encode(module_id)
    )
}

impl HubClient {
    pub async fn get_device(&self, id: &str) -> Result<Device> {
        let reply = self.call(Call::new(Method::GET, device_path(id))).await?;
        self.decode("device", &reply.body)
    }

    /// Create (`IfMatch::Absent`) or update a device.
    pub async fn put_device(&self, device: &Device, if_match: &IfMatch) -> Result<Device> {
        let call = Call::new(Method::PUT, device_path(&device.device_id)).json(device);
        let reply = self.call(with_if_match(call, if_match)).await?;
        self.decode("device", &reply.body)
    }

    /// Delete a device; `IfMatch::Absent` is sent as `*` (behaviour without it is unclear).
    pub async fn delete_device(&self, id: &str, if_match: &IfMatch) -> Result<()> {
        let m = if *if_match == IfMatch::Absent {
            &IfMatch::Any
        } else {
            if_match
        };
        self.call(with_if_match(Call::new(Method::DELETE, device_path(id)), m))
            .await?;
        Ok(())
    }

    pub async fn list_modules(&self, id: &str) -> Result<Vec<Module>> {
        let reply = self
            .call(Call::new(
                Method::GET,
                format!("{}/modules", device_path(id)),
            ))
            .await?;
        self.decode("module list", &reply.body)
    }

    pub async fn get_module(&self, id: &str, module_id: &str) -> Result<Module> {
        let reply = self
            .call(Call::new(Method::GET, module_path(id, module_id)))
            .await?;
        self.decode("module", &reply.body)
    }

    pub async fn put_module(&self, module: &Module, if_match: &IfMatch) -> Result<Module> {
        let call = Call::new(
            Method::PUT,
            module_path(&module.device_id, &module.module_id),
        )
        .json(module);
        let reply = self.call(with_if_match(call, if_match)).await?;
        self.decode("module", &reply.body)
    }

    pub async fn delete_module(&self, id: &str, module_id: &str, if_match: &IfMatch) -> Result<()> {
        let m = if *if_match == IfMatch::Absent {
            &IfMatch::Any
        } else {
            if_match
        };
        self.call(with_if_match(
            Call::new(Method::DELETE, module_path(id, module_id)),
            m,
        ))
        .await?;
        Ok(())
    }

    /// `POST /devices` with at most [`BULK_MAX`] entries. A partial failure is not an error: the
    /// result lists each failed device (a 400 with a result body). When the call had to be sent
    /// again after a try whose outcome is unknown ([`BulkReply::resent`]), its errors may
    /// describe that earlier try's own writes ("already exists" for a create, "not found" for a
    /// delete): the caller resolves those by reading the hub.
    pub async fn bulk(&self, devices: &[ExportImportDevice]) -> Result<BulkReply> {
        if devices.len() > BULK_MAX {
            return Err(Error::TooManyDevices {
                count: devices.len(),
            });
        }
        let mut call = Call::new(Method::POST, "/devices".into()).json(&devices);
        call.accept = &[400];
        let reply = self.call(call).await?;
        let resent = reply.resent;
        let result = if reply.status.as_u16() == 400 {
            // A 400 that is not a bulk result is a real bad request.
            match serde_json::from_slice::<BulkRegistryOperationResult>(&reply.body) {
                Ok(r) if !r.errors.is_empty() => r,
                _ => {
                    return Err(super::ServiceError::parse(400, None, &reply.body)
                        .into_error(self.name(), None));
                }
            }
        } else {
            self.decode("bulk result", &reply.body)?
        };
        Ok(BulkReply { result, resent })
    }

    /// One page of `POST /devices/query`.
    pub async fn query_page(
        &self,
        query: &str,
        continuation: Option<&str>,
        page_size: Option<u32>,
    ) -> Result<QueryPage> {
        let mut call = Call::new(Method::POST, "/devices/query".into())
            .json(&serde_json::json!({ "query": query }));
        if let Some(n) = page_size {
            call.headers.push(("x-ms-max-item-count", n.to_string()));
        }
        if let Some(c) = continuation {
            call.headers.push(("x-ms-continuation", c.to_owned()));
        }
        let reply = self.call(call).await?;
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
        };
        Ok(QueryPage {
            items: self.decode("query page", &reply.body)?,
            continuation: header("x-ms-continuation"),
            item_type: header("x-ms-item-type"),
        })
    }

    /// All results of a query, page by page. Stops if the service repeats a continuation token.
    pub async fn query_all(&self, query: &str, page_size: Option<u32>) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.query_page(query, token.as_deref(), page_size).await?;
            items.extend(page.items);
            match page.continuation {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                _ => return Ok(items),
            }
        }
    }

    /// How many devices and modules the hub holds, by `SELECT COUNT()` queries (docs/azure.md;
    /// the statistics endpoint is only approximate). Modules include the system modules of edge
    /// devices, as an export does.
    pub async fn count_identities(&self) -> Result<(u64, u64)> {
        let count = async |from: &str| -> Result<u64> {
            let items = self
                .query_all(&format!("SELECT COUNT() AS n FROM {from}"), None)
                .await?;
            items
                .first()
                .and_then(|v| v.get("n"))
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::Decode {
                    hub: self.name().to_owned(),
                    what: format!("the count of {from}"),
                    detail: "no number in the query result".into(),
                })
        };
        Ok((count("devices").await?, count("devices.modules").await?))
    }

    pub async fn statistics(&self) -> Result<RegistryStatistics> {
        let reply = self
            .call(Call::new(Method::GET, "/statistics/devices".into()))
            .await?;
        self.decode("statistics", &reply.body)
    }

    /// `GET /configurations?top=N` (configurations and edge deployments; a hub holds ≤100).
    pub async fn list_configurations(&self, top: u32) -> Result<Vec<Configuration>> {
        let mut call = Call::new(Method::GET, "/configurations".into());
        call.query.push(("top", top.to_string()));
        let reply = self.call(call).await?;
        self.decode("configuration list", &reply.body)
    }

    pub async fn get_configuration(&self, id: &str) -> Result<Configuration> {
        let reply = self
            .call(Call::new(
                Method::GET,
                format!("/configurations/{}", url_encode(id)),
            ))
            .await?;
        self.decode("configuration", &reply.body)
    }

    pub async fn put_configuration(
        &self,
        config: &Configuration,
        if_match: &IfMatch,
    ) -> Result<Configuration> {
        let call = Call::new(
            Method::PUT,
            format!("/configurations/{}", url_encode(&config.id)),
        )
        .json(config);
        let reply = self.call(with_if_match(call, if_match)).await?;
        self.decode("configuration", &reply.body)
    }

    pub async fn delete_configuration(&self, id: &str, if_match: &IfMatch) -> Result<()> {
        let m = if *if_match == IfMatch::Absent {
            &IfMatch::Any
        } else {
            if_match
        };
        let call = Call::new(
            Method::DELETE,
            format!("/configurations/{}", url_encode(id)),
        );
        self.call(with_if_match(call, m)).await?;
        Ok(())
    }
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

    const LINE: &str = r#"{"id":"pump-0042","eTag":"NzE0","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeQ==","secondaryKey":"c2Vjb25kYXJ5"},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"type":"sas"},"twinETag":"AAAAAAAAAAM=","tags":{"site":"plant-7"},"properties":{"desired":{"x":1}},"capabilities":{"iotEdge":false},"deviceScope":"ms-azure-iot-edge://gw-1-6385","futureField":[1,2]}"#;

    #[test]
    fn export_line_round_trips_with_unknown_fields() {
        let d: ExportImportDevice = serde_json::from_str(LINE).unwrap();
        assert_eq!(d.id, "pump-0042");
        assert_eq!(d.e_tag.as_deref(), Some("NzE0"));
        assert_eq!(d.extra["futureField"], serde_json::json!([1, 2]));
        let back: Value = serde_json::to_value(&d).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(LINE).unwrap());
    }

    #[test]
    fn import_mode_wire_names() {
        let names: Vec<String> = [
            ImportMode::CreateOrUpdate,
            ImportMode::UpdateIfMatchEtag,
            ImportMode::CreateOrUpdateIfMatchEtag,
        ]
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"createOrUpdate\"",
                "\"updateIfMatchETag\"",
                "\"createOrUpdateIfMatchETag\""
            ]
        );
    }

    #[test]
    fn device_keys_never_show_in_debug() {
        let d: ExportImportDevice = serde_json::from_str(LINE).unwrap();
        let text = format!("{d:?}");
        assert!(
            !text.contains("cHJpbWFyeQ") && !text.contains("c2Vjb25kYXJ5"),
            "{text}"
        );
    }

    #[test]
    fn bulk_error_code_as_number_or_name() {
        let body = r#"{"isSuccessful":false,"errors":[{"deviceId":"d1","errorCode":"DeviceAlreadyExists","errorStatus":"x","operation":"create"},{"deviceId":"d2","errorCode":404001,"errorStatus":"y"}],"warnings":[]}"#;
        let r: BulkRegistryOperationResult = serde_json::from_str(body).unwrap();
        assert_eq!(r.errors[0].error_code.number, Some(409_001));
        assert_eq!(
            r.errors[0].error_code.name.as_deref(),
            Some("DeviceAlreadyExists")
        );
        assert_eq!(r.errors[1].error_code.number, Some(404_001));
    }

    #[test]
    fn if_match_is_quoted() {
        assert_eq!(IfMatch::Etag("MQ==".into()).header().unwrap().1, "\"MQ==\"");
        assert_eq!(
            IfMatch::Etag("\"MQ==\"".into()).header().unwrap().1,
            "\"MQ==\""
        );
        assert_eq!(IfMatch::Any.header().unwrap().1, "*");
        assert_eq!(IfMatch::Absent.header(), None);
    }

    #[test]
    fn ids_are_encoded_in_paths() {
        assert_eq!(
            module_path("gw 1", "$edgeAgent"),
            "/devices/gw%201/modules/%24edgeAgent"
        );
    }
}
