//! Management-plane (ARM) requests: a hub's networking rules (IP filter, public network access),
//! a DPS instance's (`ipFilterRules` with their `target`) with its linked hubs
//! ([`ArmClient::dps_description`]), and any call described as an [`ArmCall`] and sent with
//! [`ArmClient::send`] (the failover runbook).
//!
//! Preflight uses these to tell a firewall rejection from a bad credential: IoT Hub answers both
//! with `401002 Unauthorized`, and its message never mentions the IP rule (docs/azure.md). The
//! decision itself ([`NetworkRules::verdict`]) is a pure function of the rules and the caller's
//! public address.
//!
//! Must not: know stores or snapshots. Real ARM (`https://management.azure.com`) is the default;
//! the simulator is reached only through an explicit endpoint.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use crate::diagnostic::{Diagnostic, fix_text};

mod call;
mod refusal;
pub use call::{
    Answer, ArmCall, NETWORK_API_VERSION, PERMISSIONS_API_VERSION, PRIVATE_DNS_API_VERSION,
};

/// ARM api-version for `Microsoft.Devices/IotHubs` (docs/azure.md).
pub const API_VERSION: &str = "2023-06-30";
/// ARM api-version for `Microsoft.Devices/provisioningServices` (DPS).
pub const DPS_API_VERSION: &str = "2022-02-05";
/// The public ARM endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
/// The Entra scope of ARM tokens.
pub const SCOPE: &str = "https://management.azure.com/.default";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ARM refused the request for {resource} (HTTP {status}): {message}; {}",
        fix_text(self)
    )]
    Refused {
        /// The HTTP method asked (`GET` reads; the rest write or act).
        method: &'static str,
        resource: String,
        status: u16,
        message: String,
    },
    #[error("ARM request for {resource} failed: {source}")]
    Transport {
        resource: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("ARM answered for {resource} with a body hubvault cannot read: {detail}")]
    Body { resource: String, detail: String },
    #[error("no ARM token: {detail}")]
    NoToken { detail: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Refused { .. } => "arm_refused",
            Error::Transport { .. } => "arm_transport",
            Error::Body { .. } => "arm_body",
            Error::NoToken { .. } => "arm_no_token",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Refused {
                method,
                resource,
                status,
                ..
            } => Some(refusal::fix(method, resource, *status)),
            Error::Transport { .. } | Error::Body { .. } | Error::NoToken { .. } => None,
        }
    }
}

/// A bearer token for ARM. Debug never shows it.
#[derive(Clone)]
pub struct ArmToken(SecretString);

impl ArmToken {
    pub fn new(token: String) -> Self {
        ArmToken(SecretString::from(token))
    }
}

impl fmt::Debug for ArmToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArmToken(<redacted>)")
    }
}

/// How ARM requests authenticate: a bearer token handed in (`[arm] token-env`), or an Entra
/// credential (`[arm] credential`) asked for a token per request (it caches).
#[derive(Clone)]
pub enum ArmAuth {
    Token(ArmToken),
    Entra(Arc<dyn TokenCredential>),
}

impl fmt::Debug for ArmAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArmAuth::Token(t) => t.fmt(f),
            ArmAuth::Entra(_) => f.write_str("ArmAuth::Entra"),
        }
    }
}

/// Reads hub resources from ARM.
#[derive(Debug, Clone)]
pub struct ArmClient {
    endpoint: Url,
    auth: ArmAuth,
    http: reqwest::Client,
}

impl ArmClient {
    /// `endpoint` defaults to the public ARM; `ca_file` adds a trust root (the simulator's `--tls`).
    pub fn new(
        endpoint: Option<&str>,
        auth: ArmAuth,
        ca_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let raw = endpoint.unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = Url::parse(raw).map_err(|e| Error::Body {
            resource: raw.to_owned(),
            detail: e.to_string(),
        })?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(path) = ca_file {
            let bad = |detail: String| Error::Body {
                resource: path.display().to_string(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read ca-file: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("ca-file: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| Error::Transport {
            resource: raw.to_owned(),
            source: source.without_url(),
        })?;
        Ok(ArmClient {
            endpoint,
            auth,
            http,
        })
    }

    async fn bearer(&self, resource: &str) -> Result<String, Error> {
        match &self.auth {
            ArmAuth::Token(t) => Ok(t.0.expose_secret().to_owned()),
            ArmAuth::Entra(credential) => credential
                .get_token(&[SCOPE], None)
                .await
                .map(|t| t.token.secret().to_owned())
                .map_err(|e| Error::NoToken {
                    detail: format!("{resource}: {e}"),
                }),
        }
    }

    /// `GET {resource_id}?api-version=…`: the hub's networking rules.
    pub async fn hub_network_rules(&self, resource_id: &str) -> Result<NetworkRules, Error> {
        Ok(self.hub_description(resource_id).await?.properties)
    }

    /// The hub's pricing tier (`sku`, docs/azure.md), which sets its device cap.
    pub async fn hub_sku(&self, resource_id: &str) -> Result<Option<Sku>, Error> {
        Ok(self.hub_description(resource_id).await?.sku)
    }

    /// `GET {resource_id}` of a DPS instance: its IP filter as it applies to the service API
    /// (rules whose `target` is `all` or `serviceApi`) and the host names of its linked hubs.
    pub async fn dps_description(&self, resource_id: &str) -> Result<DpsDescription, Error> {
        let mut doc: DpsResource = self.get(resource_id, DPS_API_VERSION).await?;
        doc.properties.rules.ip_filter_rules = doc
            .properties
            .ip_filter_rules
            .into_iter()
            .filter(|r| {
                r.target.as_deref().is_none_or(|t| {
                    t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case("serviceApi")
                })
            })
            .map(|r| r.rule)
            .collect();
        Ok(DpsDescription {
            rules: doc.properties.rules,
            linked_hubs: doc
                .properties
                .iot_hubs
                .into_iter()
                .map(|h| h.name)
                .collect(),
        })
    }

    async fn hub_description(&self, resource_id: &str) -> Result<HubDescription, Error> {
        self.get(resource_id, API_VERSION).await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        resource_id: &str,
        api_version: &str,
    ) -> Result<T, Error> {
        let resource = resource_id.to_owned();
        let mut url = self.endpoint.clone();
        url.set_path(resource_id);
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        let response = self
            .http
            .get(url)
            .bearer_auth(self.bearer(&resource).await?)
            .send()
            .await
            .map_err(|source| Error::Transport {
                resource: resource.clone(),
                source: source.without_url(),
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|source| Error::Transport {
            resource: resource.clone(),
            source: source.without_url(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(Error::Refused {
                method: "GET",
                resource,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_str(&body).map_err(|e| Error::Body {
            resource,
            detail: e.to_string(),
        })
    }
}

/// What preflight reads of a DPS instance through ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsDescription {
    /// `publicNetworkAccess` and the `ipFilterRules` that apply to the service API.
    pub rules: NetworkRules,
    /// Host names of the linked hubs (`properties.iotHubs[].name`).
    pub linked_hubs: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DpsResource {
    #[serde(default)]
    properties: DpsProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DpsProperties {
    #[serde(flatten)]
    rules: NetworkRules,
    #[serde(default, rename = "ipFilterRules")]
    ip_filter_rules: Vec<DpsIpFilterRule>,
    #[serde(default)]
    iot_hubs: Vec<LinkedHub>,
}

/// A DPS IP filter rule: a classic rule plus the API it guards.
#[derive(Debug, Deserialize)]
struct DpsIpFilterRule {
    #[serde(flatten)]
    rule: IpFilterRule,
    #[serde(default)]
    target: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LinkedHub {
    name: String,
}

#[derive(Debug, Deserialize)]
struct HubDescription {
    #[serde(default)]
    properties: NetworkRules,
    #[serde(default)]
    sku: Option<Sku>,
}

/// `IotHubDescription.sku`: `F1` (Free), `S1`–`S3` (Standard), `B1`–`B3` (Basic).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Sku {
    pub name: String,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub capacity: Option<u64>,
}

impl Sku {
    /// Devices (and modules) the tier allows in one hub: 500 on the Free tier, 1,000,000 on
    /// every other (docs/azure.md, Learn iot-hub-devguide-quotas-throttling).
    pub fn device_cap(&self) -> u64 {
        if self.name.eq_ignore_ascii_case("F1") {
            FREE_TIER_DEVICE_CAP
        } else {
            HUB_DEVICE_CAP
        }
    }
}

/// The device cap of every paid tier.
pub const HUB_DEVICE_CAP: u64 = 1_000_000;
/// The device cap of the Free tier (F1).
pub const FREE_TIER_DEVICE_CAP: u64 = 500;

/// The networking part of `IotHubDescription.properties` (docs/azure.md).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRules {
    pub public_network_access: Option<String>,
    pub network_rule_sets: Option<NetworkRuleSet>,
    #[serde(default)]
    pub ip_filter_rules: Vec<IpFilterRule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRuleSet {
    pub default_action: Option<String>,
    #[serde(default)]
    pub ip_rules: Vec<IpRule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IpRule {
    pub filter_name: String,
    #[serde(default)]
    pub action: Option<String>,
    pub ip_mask: String,
}

/// Classic (retired) IP filter rule: ordered, first match wins.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IpFilterRule {
    pub filter_name: String,
    pub action: String,
    pub ip_mask: String,
}

/// Whether a caller address gets through a hub's public endpoint, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed { reason: String },
    Blocked { reason: String },
}

impl NetworkRules {
    /// Decide for `caller` exactly as docs/azure.md orders it: public access off blocks everyone;
    /// "selected IP ranges" allows only addresses inside an allow rule; else classic rules in order
    /// (first match wins, default accept); else allowed.
    pub fn verdict(&self, caller: IpAddr) -> Verdict {
        if self
            .public_network_access
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case("Disabled"))
        {
            return Verdict::Blocked {
                reason: "public network access is Disabled (only private endpoints reach this hub)"
                    .to_owned(),
            };
        }
        if let Some(set) = &self.network_rule_sets
            && set
                .default_action
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case("Deny"))
        {
            return match set
                .ip_rules
                .iter()
                .find(|r| mask_contains(&r.ip_mask, caller))
            {
                Some(rule) => Verdict::Allowed {
                    reason: format!(
                        "allowed by IP rule {:?} ({})",
                        rule.filter_name, rule.ip_mask
                    ),
                },
                None => Verdict::Blocked {
                    reason: describe_deny(caller, &set.ip_rules),
                },
            };
        }
        if let Some(rule) = self
            .ip_filter_rules
            .iter()
            .find(|r| mask_contains(&r.ip_mask, caller))
        {
            let allowed = rule.action.eq_ignore_ascii_case("Accept");
            let reason = format!(
                "classic IP filter rule {:?} ({}) says {}",
                rule.filter_name, rule.ip_mask, rule.action
            );
            return if allowed {
                Verdict::Allowed { reason }
            } else {
                Verdict::Blocked { reason }
            };
        }
        Verdict::Allowed {
            reason: "the hub accepts all networks".to_owned(),
        }
    }
}

fn describe_deny(caller: IpAddr, rules: &[IpRule]) -> String {
    if rules.is_empty() {
        return format!(
            "the hub allows only selected IP ranges, none are listed, so {caller} is not allowed"
        );
    }
    let listed: Vec<String> = rules
        .iter()
        .map(|r| format!("{} {}", r.filter_name, r.ip_mask))
        .collect();
    format!(
        "the hub allows only selected IP ranges ({}); {caller} is in none of them",
        listed.join(", ")
    )
}

/// Whether `ip` falls inside `mask` (`a.b.c.d` or `a.b.c.d/n`). IoT Hub IP rules are IPv4 only;
/// an unparsable mask matches nothing.
pub fn mask_contains(mask: &str, ip: IpAddr) -> bool {
    let IpAddr::V4(ip) = ip else { return false };
    // The bits of the host part: more than 32 network bits is malformed.
    let (base, host_bits) = match mask.trim().split_once('/') {
        Some((base, bits)) => match bits.parse::<u32>().ok().and_then(|b| 32u32.checked_sub(b)) {
            Some(h) => (base, h),
            None => return false,
        },
        None => (mask.trim(), 0),
    };
    let Ok(base) = base.parse::<Ipv4Addr>() else {
        return false;
    };
    // A shift by 32 (a /0 mask) is `None`: the mask then covers every address.
    let net = u32::MAX.checked_shl(host_bits).unwrap_or(0);
    (u32::from(base) & net) == (u32::from(ip) & net)
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
    fn a_dps_description_keeps_the_service_api_rules_and_the_linked_hub_names() {
        let doc: DpsResource = serde_json::from_str(
            r#"{"properties": {"publicNetworkAccess": "Enabled", "ipFilterRules": [
                {"filterName": "devices", "action": "Reject", "ipMask": "10.0.0.0/8", "target": "deviceApi"},
                {"filterName": "ops", "action": "Reject", "ipMask": "192.0.2.0/24", "target": "serviceApi"},
                {"filterName": "all", "action": "Accept", "ipMask": "0.0.0.0/0"}],
              "iotHubs": [{"name": "hub-b.azure-devices.net", "connectionString": "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=****", "location": "westus"}]}}"#,
        )
        .unwrap();
        let names: Vec<&str> = doc
            .properties
            .ip_filter_rules
            .iter()
            .map(|r| r.rule.filter_name.as_str())
            .collect();
        assert_eq!(names, ["devices", "ops", "all"]);
        assert_eq!(doc.properties.iot_hubs[0].name, "hub-b.azure-devices.net");
        assert_eq!(
            doc.properties.rules.public_network_access.as_deref(),
            Some("Enabled")
        );
    }

    fn rules(json: &str) -> NetworkRules {
        serde_json::from_str(json).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn masks() {
        assert!(mask_contains("127.0.0.2", ip("127.0.0.2")));
        assert!(!mask_contains("127.0.0.2", ip("127.0.0.1")));
        assert!(mask_contains("10.0.0.0/8", ip("10.200.1.1")));
        assert!(!mask_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(mask_contains("0.0.0.0/0", ip("8.8.8.8")));
        assert!(!mask_contains("garbage", ip("8.8.8.8")));
        assert!(!mask_contains("1.2.3.4/33", ip("1.2.3.4")));
    }

    #[test]
    fn verdict_cases() {
        let all = rules("{}");
        assert!(matches!(
            all.verdict(ip("1.2.3.4")),
            Verdict::Allowed { .. }
        ));

        let off = rules(
            r#"{"publicNetworkAccess":"Disabled","networkRuleSets":{"defaultAction":"Allow","ipRules":[]}}"#,
        );
        assert!(matches!(
            off.verdict(ip("1.2.3.4")),
            Verdict::Blocked { .. }
        ));

        let selected = rules(
            r#"{"publicNetworkAccess":"Enabled","networkRuleSets":{"defaultAction":"Deny","ipRules":[{"filterName":"ops","action":"Allow","ipMask":"127.0.0.2"}]}}"#,
        );
        let Verdict::Blocked { reason } = selected.verdict(ip("127.0.0.1")) else {
            panic!("127.0.0.1 must be blocked")
        };
        assert!(reason.contains("ops 127.0.0.2"), "{reason}");
        assert!(matches!(
            selected.verdict(ip("127.0.0.2")),
            Verdict::Allowed { .. }
        ));

        let classic = rules(
            r#"{"ipFilterRules":[{"filterName":"block","action":"Reject","ipMask":"127.0.0.0/24"},{"filterName":"all","action":"Accept","ipMask":"0.0.0.0/0"}]}"#,
        );
        assert!(matches!(
            classic.verdict(ip("127.0.0.9")),
            Verdict::Blocked { .. }
        ));
        assert!(matches!(
            classic.verdict(ip("127.0.1.9")),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = ArmToken::new("eyJsecret".to_owned());
        assert!(!format!("{t:?}").contains("eyJ"));
    }
}
