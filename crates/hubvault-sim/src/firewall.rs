//! IP firewall decision for a hub, read from its ARM resource document (docs/azure.md).
//!
//! Owns: the decision order (public access disabled → deny; `networkRuleSets` with
//! `defaultAction: Deny` → allow only listed ranges; classic `ipFilterRules` → first match wins,
//! default accept). Pure: takes the document and the caller address.
//! Must not: edit the document (ARM and the control API do) or build the 401 (the hub router does).

use std::net::IpAddr;

use serde_json::Value;

/// True when a caller at `ip` may reach the hub's public endpoint.
///
/// When both the current `networkRuleSets` and classic `ipFilterRules` are present, the service's
/// combination is UNCERTAIN (docs/azure.md); we let `networkRuleSets` decide, since the classic
/// filter is retired and the portal migrates rules into the new model.
pub fn allows(resource: &Value, ip: IpAddr) -> bool {
    let props = &resource["properties"];
    if props["publicNetworkAccess"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("Disabled"))
    {
        return false;
    }
    let ip = canonical(ip);
    if let Some(rules) = props.get("networkRuleSets").filter(|v| v.is_object()) {
        let deny = rules["defaultAction"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("Deny"));
        if !deny {
            return true;
        }
        let empty = Vec::new();
        let ip_rules = rules["ipRules"].as_array().unwrap_or(&empty);
        return ip_rules.iter().any(|r| {
            let allow = r["action"]
                .as_str()
                .is_none_or(|a| a.eq_ignore_ascii_case("Allow"));
            allow && r["ipMask"].as_str().is_some_and(|m| mask_contains(m, ip))
        });
    }
    if let Some(classic) = props["ipFilterRules"].as_array() {
        for rule in classic {
            if rule["ipMask"]
                .as_str()
                .is_some_and(|m| mask_contains(m, ip))
            {
                return rule["action"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case("Accept"));
            }
        }
    }
    true
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// `ipMask` is an address or a CIDR range (`10.0.0.0/8`). A malformed mask matches nothing.
pub fn mask_contains(mask: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match mask.trim().split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().ok()),
        None => (mask.trim(), None),
    };
    match (addr.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(net)), IpAddr::V4(ip)) => {
            // More than 32 bits is malformed; 0 bits (a shift by 32) matches every address.
            let Some(host_bits) = 32u32.checked_sub(bits.unwrap_or(32)) else {
                return false;
            };
            let m = u32::MAX.checked_shl(host_bits).unwrap_or(0);
            u32::from(net) & m == u32::from(ip) & m
        }
        (Ok(IpAddr::V6(net)), IpAddr::V6(ip)) => {
            let Some(host_bits) = 128u32.checked_sub(bits.unwrap_or(128)) else {
                return false;
            };
            let m = u128::MAX.checked_shl(host_bits).unwrap_or(0);
            u128::from(net) & m == u128::from(ip) & m
        }
        _ => false,
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
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decision_order_of_the_contract() {
        let open = json!({"properties": {}});
        assert!(allows(&open, ip("127.0.0.2")));
        let disabled = json!({"properties": {"publicNetworkAccess": "Disabled",
            "networkRuleSets": {"defaultAction": "Allow"}}});
        assert!(!allows(&disabled, ip("127.0.0.1")));
        let selected = json!({"properties": {"publicNetworkAccess": "Enabled",
            "networkRuleSets": {"defaultAction": "Deny", "ipRules": [{"filterName": "me", "action": "Allow", "ipMask": "127.0.0.1"}]}}});
        assert!(allows(&selected, ip("127.0.0.1")));
        assert!(!allows(&selected, ip("127.0.0.2")));
        assert!(allows(&selected, ip("::ffff:127.0.0.1")));
        let empty_deny =
            json!({"properties": {"networkRuleSets": {"defaultAction": "Deny", "ipRules": []}}});
        assert!(!allows(&empty_deny, ip("127.0.0.1")));
    }

    #[test]
    fn classic_rules_first_match_wins() {
        let doc = json!({"properties": {"ipFilterRules": [
            {"filterName": "a", "action": "Accept", "ipMask": "127.0.0.1"},
            {"filterName": "b", "action": "Reject", "ipMask": "127.0.0.0/8"}]}});
        assert!(allows(&doc, ip("127.0.0.1")));
        assert!(!allows(&doc, ip("127.0.0.3")));
        assert!(allows(&doc, ip("10.1.2.3")));
    }

    #[test]
    fn cidr_masks() {
        assert!(mask_contains("10.0.0.0/8", ip("10.200.1.1")));
        assert!(!mask_contains("10.0.0.0/8", ip("11.0.0.1")));
        assert!(mask_contains("0.0.0.0/0", ip("1.2.3.4")));
        assert!(!mask_contains("garbage", ip("1.2.3.4")));
    }
}
