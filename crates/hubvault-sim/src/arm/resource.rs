//! The ARM `IotHubDescription` document: how a new hub's document looks, how a PUT replaces it,
//! and which networking inputs the resource provider refuses.
//!
//! Pure functions over `serde_json::Value`; no HTTP, no locks, no clock. The document stored in
//! `HubShared::resource` is the single source of truth for a hub's networking (the data plane
//! evaluates its firewall from it), so every write goes through [`apply_put`] or [`apply_tags`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use serde_json::{Map, Value, json};

/// Properties a PUT may set. ARM PUT is a full replace: a writable property missing from the body
/// is reset to its default (so a PUT without `ipFilterRules` clears them, as in Azure).
const WRITABLE_PROPERTIES: &[&str] = &[
    "publicNetworkAccess",
    "ipFilterRules",
    "networkRuleSets",
    "disableLocalAuth",
    "disableDeviceSAS",
    "disableModuleSAS",
    "minTlsVersion",
    "routing",
    "storageEndpoints",
    "messagingEndpoints",
    "enableFileUploadNotifications",
    "cloudToDevice",
    "features",
    "comments",
    "restrictOutboundNetworkAccess",
    "allowedFqdnList",
    "enableDataResidency",
];

/// Classic filter limit [doc ip-filter-classic] and the current model's limit [doc ip-filtering].
const MAX_CLASSIC_RULES: usize = 10;
const MAX_IP_RULES: usize = 100;

/// Build the document of a freshly created S1 hub (shape of `iothub_get.2023-06-30.json`).
///
/// `location` is the ARM region name (`westus`); `locations[]` carry display names and the paired
/// region as secondary. Networking starts open: `publicNetworkAccess: Enabled`, no IP rules,
/// `networkRuleSets.defaultAction: Allow`.
pub fn initial_resource(name: &str, host: &str, resource_id: &str, location: &str) -> Value {
    let (primary, secondary) = region_pair(location);
    json!({
        "id": resource_id,
        "name": name,
        "type": "Microsoft.Devices/IotHubs",
        "location": location,
        "tags": {},
        "etag": etag_of(1),
        "sku": {"name": "S1", "tier": "Standard", "capacity": 1},
        "properties": {
            "state": "Active",
            "provisioningState": "Succeeded",
            "hostName": host,
            "publicNetworkAccess": "Enabled",
            "ipFilterRules": [],
            "networkRuleSets": default_network_rule_sets(),
            "privateEndpointConnections": [],
            "eventHubEndpoints": {"events": {
                "retentionTimeInDays": 1,
                "partitionCount": 4,
                "partitionIds": ["0", "1", "2", "3"],
                "path": event_hub_path(name),
                "endpoint": event_hub_endpoint(name),
            }},
            "authorizationPolicies": [],
            "locations": [
                {"location": primary, "role": "primary"},
                {"location": secondary, "role": "secondary"},
            ],
            "features": "None",
            "minTlsVersion": "1.2",
            "enableFileUploadNotifications": false,
            "disableLocalAuth": false,
        },
        "systemData": {"createdAt": "2026-01-01T00:00:00Z"},
    })
}

fn default_network_rule_sets() -> Value {
    json!({"defaultAction": "Allow", "applyToBuiltInEventHubEndpoint": false, "ipRules": []})
}

/// Defaults a full-replace PUT falls back to for a writable property it omits.
fn default_property(key: &str) -> Option<Value> {
    match key {
        "publicNetworkAccess" => Some(json!("Enabled")),
        "ipFilterRules" => Some(json!([])),
        "networkRuleSets" => Some(default_network_rule_sets()),
        "features" => Some(json!("None")),
        "disableLocalAuth" | "enableFileUploadNotifications" => Some(json!(false)),
        _ => None,
    }
}

/// Display names of a region and its pair; a small table is enough for a simulator.
fn region_pair(location: &str) -> (String, String) {
    const PAIRS: &[(&str, &str, &str)] = &[
        ("westus", "West US", "East US"),
        ("eastus", "East US", "West US"),
        ("westeurope", "West Europe", "North Europe"),
        ("northeurope", "North Europe", "West Europe"),
        ("centralus", "Central US", "East US 2"),
        ("eastus2", "East US 2", "Central US"),
    ];
    let key = normalize_region(location);
    PAIRS.iter().find(|(n, _, _)| *n == key).map_or_else(
        || (location.to_string(), "West US".to_string()),
        |(_, p, s)| ((*p).to_string(), (*s).to_string()),
    )
}

/// `"West US"` and `"westus"` name the same region.
pub fn normalize_region(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The Event Hub-compatible name and namespace change on every failover, so both are random.
pub fn event_hub_path(hub: &str) -> String {
    let short: String = hub.chars().take(14).collect();
    let n: u32 = rand::thread_rng().gen_range(100_000..999_999);
    format!(
        "iothub-ehub-{short}-{n}-{:010x}",
        rand::thread_rng().r#gen::<u64>() >> 24
    )
}

pub fn event_hub_endpoint(hub: &str) -> String {
    let short: String = hub.chars().take(10).collect();
    let n: u32 = rand::thread_rng().gen_range(100_000..999_999);
    format!(
        "sb://iothub-ns-{short}-{n}-{:010x}.servicebus.windows.net/",
        rand::thread_rng().r#gen::<u64>() >> 24
    )
}

/// ARM etags of hubs are base64 of a big-endian counter (`AAAAAAFD6M4=`).
pub fn etag_of(n: u64) -> String {
    STANDARD.encode(n.to_be_bytes())
}

/// Advance the document's etag; every write calls this.
pub fn bump_etag(doc: &mut Value) {
    let current = doc["etag"]
        .as_str()
        .and_then(|e| STANDARD.decode(e).ok())
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    doc["etag"] = json!(etag_of(current.wrapping_add(1)));
}

/// Why the resource provider refuses a PUT body (the text goes into the RP error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Full-replace PUT: returns the new document or why the body is refused. Read-only parts
/// (`hostName`, `state`, `locations`, the Event Hub name/endpoint, `id`, `name`, `type`) stay the
/// server's; the rest comes from the body or falls back to defaults.
pub fn apply_put(current: &Value, body: &Value) -> Result<Value, Invalid> {
    let body = body
        .as_object()
        .ok_or_else(|| Invalid("The request body must be a JSON object".into()))?;
    validate_sku(body.get("sku"))?;
    let empty = Map::new();
    let props = match body.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(Invalid("'properties' must be an object".into())),
    };
    validate_networking(props)?;
    let mut next = current.clone();
    next["sku"] = body["sku"].clone();
    next["tags"] = body.get("tags").cloned().unwrap_or_else(|| json!({}));
    for key in WRITABLE_PROPERTIES {
        // An explicit `null` counts as absent, so the document never holds nulls the data plane must guard against.
        match (
            props.get(*key).filter(|v| !v.is_null()),
            default_property(key),
        ) {
            (Some(v), _) => next["properties"][*key] = v.clone(),
            (None, Some(d)) => next["properties"][*key] = d,
            (None, None) => {
                if let Some(p) = next["properties"].as_object_mut() {
                    p.remove(*key);
                }
            }
        }
    }
    if let Some(days) = props
        .get("eventHubEndpoints")
        .and_then(|e| e.get("events"))
        .and_then(|e| e.get("retentionTimeInDays"))
    {
        next["properties"]["eventHubEndpoints"]["events"]["retentionTimeInDays"] = days.clone();
    }
    bump_etag(&mut next);
    Ok(next)
}

/// PATCH on a hub updates tags only (`TagsResource`); anything else in the body is ignored.
pub fn apply_tags(current: &Value, body: &Value) -> Result<Value, Invalid> {
    let mut next = current.clone();
    match body.get("tags") {
        None => {}
        Some(Value::Object(t)) if t.values().all(Value::is_string) => {
            next["tags"] = Value::Object(t.clone());
        }
        Some(_) => return Err(Invalid("'tags' must be an object of strings".into())),
    }
    bump_etag(&mut next);
    Ok(next)
}

fn validate_sku(sku: Option<&Value>) -> Result<(), Invalid> {
    const NAMES: &[&str] = &["F1", "S1", "S2", "S3", "B1", "B2", "B3"];
    let name = sku
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid("The 'sku' property with a 'name' is required".into()))?;
    if NAMES.contains(&name) {
        Ok(())
    } else {
        Err(Invalid(format!("Invalid sku name '{name}'")))
    }
}

fn validate_networking(props: &Map<String, Value>) -> Result<(), Invalid> {
    match props.get("publicNetworkAccess") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "Enabled" || s == "Disabled" => {}
        Some(other) => {
            return Err(Invalid(format!(
                "Invalid publicNetworkAccess {other}; expected 'Enabled' or 'Disabled'"
            )));
        }
    }
    if let Some(rules) = props.get("ipFilterRules").filter(|v| !v.is_null()) {
        validate_rules(
            rules,
            "ipFilterRules",
            &["Accept", "Reject"],
            MAX_CLASSIC_RULES,
        )?;
    }
    if let Some(set) = props.get("networkRuleSets").filter(|v| !v.is_null()) {
        validate_rule_set(set)?;
    }
    Ok(())
}

fn validate_rule_set(set: &Value) -> Result<(), Invalid> {
    match set.get("defaultAction").and_then(Value::as_str) {
        Some("Allow" | "Deny") => {}
        _ => {
            return Err(Invalid(
                "networkRuleSets.defaultAction is required and must be 'Allow' or 'Deny'".into(),
            ));
        }
    }
    if !set
        .get("applyToBuiltInEventHubEndpoint")
        .is_some_and(Value::is_boolean)
    {
        return Err(Invalid(
            "networkRuleSets.applyToBuiltInEventHubEndpoint is required and must be a boolean"
                .into(),
        ));
    }
    let rules = set.get("ipRules").cloned().unwrap_or_else(|| json!([]));
    validate_rules(&rules, "networkRuleSets.ipRules", &["Allow"], MAX_IP_RULES)
}

fn validate_rules(rules: &Value, what: &str, actions: &[&str], max: usize) -> Result<(), Invalid> {
    let rules = rules
        .as_array()
        .ok_or_else(|| Invalid(format!("{what} must be an array")))?;
    if rules.len() > max {
        return Err(Invalid(format!(
            "{what} has {} rules; at most {max} are allowed",
            rules.len()
        )));
    }
    let mut seen: Vec<String> = Vec::new();
    for rule in rules {
        let name = rule.get("filterName").and_then(Value::as_str).unwrap_or("");
        if !valid_filter_name(name) {
            return Err(Invalid(format!("Invalid filterName '{name}' in {what}")));
        }
        if seen.contains(&name.to_lowercase()) {
            return Err(Invalid(format!("Duplicate filterName '{name}' in {what}")));
        }
        seen.push(name.to_lowercase());
        let action = rule.get("action").and_then(Value::as_str).unwrap_or("");
        if !actions.contains(&action) {
            return Err(Invalid(format!(
                "Invalid action '{action}' for rule '{name}' in {what}; expected one of {actions:?}"
            )));
        }
        let mask = rule.get("ipMask").and_then(Value::as_str).unwrap_or("");
        if !valid_ip_mask(mask) {
            return Err(Invalid(format!(
                "Invalid ipMask '{mask}' for rule '{name}' in {what}"
            )));
        }
    }
    Ok(())
}

/// Unique (checked by the caller), ≤128 chars, ASCII alphanumerics plus `- : . + % _ # * ? ! ( ) , = @ ; '`.
pub fn valid_filter_name(name: &str) -> bool {
    const EXTRA: &str = "-:.+%_#*?!(),=@;'";
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || EXTRA.contains(c))
}

/// An IPv4 address or an IPv4 CIDR block (`157.55.59.128/25`).
pub fn valid_ip_mask(mask: &str) -> bool {
    let (addr, prefix) = match mask.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (mask, None),
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok()
        && prefix.is_none_or(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && p.parse::<u8>().is_ok_and(|n| n <= 32)
        })
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

    fn hub() -> Value {
        initial_resource(
            "hub-a",
            "hub-a.azure-devices.net",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub-a",
            "westus",
        )
    }

    #[test]
    fn initial_resource_is_open_and_has_a_secondary_region() {
        let doc = hub();
        assert_eq!(doc["properties"]["publicNetworkAccess"], "Enabled");
        assert_eq!(
            doc["properties"]["networkRuleSets"]["defaultAction"],
            "Allow"
        );
        assert_eq!(doc["properties"]["locations"][0]["location"], "West US");
        assert_eq!(doc["properties"]["locations"][1]["role"], "secondary");
        assert!(
            doc["properties"]["eventHubEndpoints"]["events"]["endpoint"]
                .as_str()
                .unwrap()
                .starts_with("sb://")
        );
    }

    #[test]
    fn ip_masks_follow_ipv4_and_cidr() {
        for ok in ["10.0.0.1", "157.55.59.128/25", "0.0.0.0/0", "1.2.3.4/32"] {
            assert!(valid_ip_mask(ok), "{ok}");
        }
        for bad in [
            "10.0.0",
            "1.2.3.4/33",
            "1.2.3.4/",
            "::1",
            "a.b.c.d",
            "1.2.3.4/-1",
            "",
        ] {
            assert!(!valid_ip_mask(bad), "{bad}");
        }
    }

    #[test]
    fn filter_names_follow_the_documented_charset() {
        assert!(valid_filter_name("office-1:(main)@hq"));
        assert!(!valid_filter_name(""));
        assert!(!valid_filter_name("has space"));
        assert!(!valid_filter_name(&"x".repeat(129)));
    }

    #[test]
    fn put_is_a_full_replace_that_keeps_read_only_parts() {
        let current = hub();
        let body = json!({"location": "westus", "sku": {"name": "S1", "capacity": 1},
            "properties": {"publicNetworkAccess": "Disabled", "hostName": "evil.example"}});
        let next = apply_put(&current, &body).unwrap();
        assert_eq!(next["properties"]["publicNetworkAccess"], "Disabled");
        assert_eq!(next["properties"]["hostName"], "hub-a.azure-devices.net");
        assert_eq!(next["properties"]["ipFilterRules"], json!([]));
        assert_ne!(next["etag"], current["etag"]);
    }

    #[test]
    fn put_refuses_duplicate_rule_names_case_insensitively() {
        let body = json!({"sku": {"name": "S1"}, "properties": {"networkRuleSets": {
            "defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": true,
            "ipRules": [{"filterName": "A", "action": "Allow", "ipMask": "1.2.3.4"},
                        {"filterName": "a", "action": "Allow", "ipMask": "1.2.3.5"}]}}});
        let err = apply_put(&hub(), &body).unwrap_err();
        assert!(err.0.contains("Duplicate filterName"), "{err:?}");
    }

    #[test]
    fn new_rule_sets_only_allow_allow() {
        let body = json!({"sku": {"name": "S1"}, "properties": {"networkRuleSets": {
            "defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": true,
            "ipRules": [{"filterName": "r", "action": "Reject", "ipMask": "1.2.3.4"}]}}});
        assert!(apply_put(&hub(), &body).is_err());
    }

    #[test]
    fn patch_changes_tags_only() {
        let next = apply_tags(
            &hub(),
            &json!({"tags": {"env": "prod"}, "properties": {"publicNetworkAccess": "Disabled"}}),
        )
        .unwrap();
        assert_eq!(next["tags"]["env"], "prod");
        assert_eq!(next["properties"]["publicNetworkAccess"], "Enabled");
    }
}
