//! Who may do what to the vault: Azure RBAC over the secret data actions, and the vault
//! firewall (`networkAcls`).
//!
//! **RBAC.** Off until the control API sets a role-assignment list (then every data-plane call
//! must be granted). An assignment is `{"principal","role","scope"}`: `principal` is an identity's
//! name or object id ([`Principal::is`]), or `anonymous` for bearer tokens the simulator did not
//! issue; `scope` is `/` (the vault) or `/secrets/{name}` (one secret: it grants nothing on
//! vault-level calls such as `GET /secrets`). Roles are Key Vault's built-in ones, by name or
//! role-definition id, with their real `dataActions` (as published in the Azure built-in roles
//! reference; secret actions only matter here):
//!
//! | role | dataActions |
//! |---|---|
//! | Key Vault Administrator (`00482a5a-887f-4fb3-b363-3b7fe8e74483`) | `Microsoft.KeyVault/vaults/*` |
//! | Key Vault Secrets Officer (`b86a8fe4-44ce-4948-aee5-eccb2c155cd7`) | `Microsoft.KeyVault/vaults/secrets/*` |
//! | Key Vault Secrets User (`4633458b-17de-408a-b874-0445c86b69e6`) | `…/secrets/getSecret/action`, `…/secrets/readMetadata/action` |
//! | Key Vault Reader (`21090545-7ca7-4776-b22c-e363652d74d2`) | `Microsoft.KeyVault/vaults/*/read`, `…/secrets/readMetadata/action` |
//!
//! Each operation needs one data action: get → `getSecret/action`; set → `setSecret/action`;
//! update properties → `update/action`; delete → `delete`; recover → `recover/action`; purge →
//! `purge/action`; every list and reading a deleted secret → `readMetadata/action`
//! (UNCERTAIN for the deleted-secret reads, which the reference does not name separately).
//!
//! **Firewall.** `defaultAction: Allow` (the default) lets every address in; `Deny` only the
//! IPv4 addresses and CIDR ranges in `ipRules` (judged on the TCP peer address). `bypass` is kept
//! and shown (no caller here is a trusted Azure service); virtual-network rules are not
//! simulated (a non-empty list is refused).

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::firewall::mask_contains;
use crate::identity::Principal;

pub const READ_METADATA: &str = "Microsoft.KeyVault/vaults/secrets/readMetadata/action";
pub const GET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/getSecret/action";
pub const SET_SECRET: &str = "Microsoft.KeyVault/vaults/secrets/setSecret/action";
pub const UPDATE: &str = "Microsoft.KeyVault/vaults/secrets/update/action";
pub const DELETE: &str = "Microsoft.KeyVault/vaults/secrets/delete";
pub const RECOVER: &str = "Microsoft.KeyVault/vaults/secrets/recover/action";
pub const PURGE: &str = "Microsoft.KeyVault/vaults/secrets/purge/action";

struct Role {
    name: &'static str,
    id: &'static str,
    data_actions: &'static [&'static str],
}

const ROLES: [Role; 4] = [
    Role {
        name: "Key Vault Administrator",
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        data_actions: &["Microsoft.KeyVault/vaults/*"],
    },
    Role {
        name: "Key Vault Secrets Officer",
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
    Role {
        name: "Key Vault Secrets User",
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        data_actions: &[GET_SECRET, READ_METADATA],
    },
    Role {
        name: "Key Vault Reader",
        id: "21090545-7ca7-4776-b22c-e363652d74d2",
        data_actions: &["Microsoft.KeyVault/vaults/*/read", READ_METADATA],
    },
];

/// Azure's action patterns: `*` stands for any run of characters, comparison ignores case.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.split_once('*') {
        None => p == a,
        Some((prefix, suffix)) => {
            a.len() >= prefix.len().saturating_add(suffix.len())
                && a.starts_with(prefix)
                && a.ends_with(suffix)
        }
    }
}

/// One role assignment, normalized: `role` is the built-in role's name, `scope` is `/` or
/// `/secrets/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RoleAssignment {
    pub principal: String,
    pub role: String,
    pub scope: String,
}

impl RoleAssignment {
    fn role(&self) -> Option<&'static Role> {
        ROLES.iter().find(|r| r.name == self.role)
    }

    fn covers(&self, secret: Option<&str>) -> bool {
        match self.scope.strip_prefix("/secrets/") {
            None => true,
            Some(name) => secret.is_some_and(|s| s.eq_ignore_ascii_case(name)),
        }
    }
}

/// The control API's list: `null` or `[]` turn RBAC off (`None`).
pub fn parse_assignments(v: &Value) -> Result<Option<Vec<RoleAssignment>>, String> {
    let list = match v {
        Value::Null => return Ok(None),
        Value::Array(a) if a.is_empty() => return Ok(None),
        Value::Array(a) => a,
        _ => return Err("expected a list of {\"principal\",\"role\",\"scope\"} or null".into()),
    };
    let mut out = Vec::new();
    for a in list {
        let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::trim);
        let principal = field("principal")
            .filter(|p| !p.is_empty())
            .ok_or("each assignment needs a \"principal\" (an identity's name or object id, or \"anonymous\")")?;
        let wanted = field("role").unwrap_or_default();
        let role = ROLES
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(wanted) || r.id.eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = ROLES.iter().map(|r| r.name).collect();
                format!("unknown role {wanted:?}; use one of {}", names.join(", "))
            })?;
        let scope = match field("scope") {
            None | Some("" | "/") => "/".to_string(),
            Some(s) => match s.strip_prefix("/secrets/") {
                Some(name) if super::valid_name(name) => format!("/secrets/{name}"),
                _ => {
                    return Err(format!(
                        "scope {s:?}: use \"/\" (the vault) or \"/secrets/{{name}}\""
                    ));
                }
            },
        };
        out.push(RoleAssignment {
            principal: principal.to_string(),
            role: role.name.to_string(),
            scope,
        });
    }
    Ok(Some(out))
}

/// True when one of `assignments` grants `who` the `action` on the vault (`secret: None`) or on
/// that secret.
pub fn grants(
    assignments: &[RoleAssignment],
    who: &Principal,
    action: &str,
    secret: Option<&str>,
) -> bool {
    assignments.iter().any(|a| {
        who.is(&a.principal)
            && a.covers(secret)
            && a.role()
                .is_some_and(|r| r.data_actions.iter().any(|p| action_matches(p, action)))
    })
}

/// The vault's `networkAcls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAcls {
    pub deny_by_default: bool,
    pub bypass: String,
    pub ip_rules: Vec<String>,
}

impl Default for NetworkAcls {
    fn default() -> Self {
        NetworkAcls {
            deny_by_default: false,
            bypass: "AzureServices".into(),
            ip_rules: Vec::new(),
        }
    }
}

impl NetworkAcls {
    /// ARM's `properties.networkAcls` shape.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = self.ip_rules.iter().map(|r| json!({"value": r})).collect();
        json!({
            "defaultAction": if self.deny_by_default { "Deny" } else { "Allow" },
            "bypass": self.bypass,
            "ipRules": rules,
            "virtualNetworkRules": [],
        })
    }

    /// From ARM's shape (`null`: back to allow-all). `ipRules` values are IPv4 addresses or CIDR
    /// ranges.
    pub fn parse(v: &Value) -> Result<Self, String> {
        if v.is_null() {
            return Ok(Self::default());
        }
        let Some(obj) = v.as_object() else {
            return Err("expected {\"defaultAction\",\"ipRules\":[{\"value\"}]} or null".into());
        };
        if let Some(k) = obj.keys().find(|k| {
            !["defaultAction", "bypass", "ipRules", "virtualNetworkRules"].contains(&k.as_str())
        }) {
            return Err(format!(
                "unknown field {k:?}; use defaultAction, bypass, ipRules"
            ));
        }
        let mut acls = Self::default();
        match obj.get("defaultAction").and_then(Value::as_str) {
            None => {}
            Some(a) if a.eq_ignore_ascii_case("Allow") => acls.deny_by_default = false,
            Some(a) if a.eq_ignore_ascii_case("Deny") => acls.deny_by_default = true,
            Some(a) => return Err(format!("defaultAction {a:?}: use Allow or Deny")),
        }
        if let Some(b) = obj.get("bypass").and_then(Value::as_str) {
            if !["AzureServices", "None"].contains(&b) {
                return Err(format!("bypass {b:?}: use AzureServices or None"));
            }
            acls.bypass = b.to_string();
        }
        if obj
            .get("virtualNetworkRules")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
        {
            return Err("virtualNetworkRules are not simulated; use ipRules".into());
        }
        for rule in obj
            .get("ipRules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let value = rule.get("value").and_then(Value::as_str).ok_or(
                "each ipRules entry is {\"value\":\"1.2.3.4\"} or {\"value\":\"1.2.3.0/24\"}",
            )?;
            if !valid_ipv4_rule(value) {
                return Err(format!(
                    "ipRules value {value:?} is not an IPv4 address or CIDR range"
                ));
            }
            acls.ip_rules.push(value.to_string());
        }
        Ok(acls)
    }

    /// True when a caller at `ip` passes the firewall (`None`: unknown address, allowed only
    /// when nothing is denied).
    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        if !self.deny_by_default {
            return true;
        }
        let Some(ip) = ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        }) else {
            return false;
        };
        self.ip_rules.iter().any(|r| mask_contains(r, ip))
    }
}

fn valid_ipv4_rule(value: &str) -> bool {
    let (addr, bits) = match value.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (value, None),
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok()
        && bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|n| n <= 32))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn who(name: &str) -> Principal {
        Principal {
            name: name.into(),
            principal_id: Some("11111111-2222-3333-4444-555555555555".into()),
            client_id: None,
        }
    }

    #[test]
    fn built_in_roles_grant_their_data_actions_only() {
        let list = parse_assignments(&json!([
            {"principal": "user", "role": "key vault secrets user", "scope": "/secrets/a"},
            {"principal": "reader", "role": "21090545-7ca7-4776-b22c-e363652d74d2"},
            {"principal": "11111111-2222-3333-4444-555555555555", "role": "Key Vault Secrets Officer", "scope": "/"},
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(list[0].role, "Key Vault Secrets User");
        assert_eq!(list[1].scope, "/");
        let user = Principal {
            principal_id: None,
            ..who("user")
        };
        assert!(grants(&list, &user, GET_SECRET, Some("A")));
        assert!(!grants(&list, &user, GET_SECRET, Some("b")));
        assert!(!grants(&list, &user, SET_SECRET, Some("a")));
        assert!(
            !grants(&list, &user, READ_METADATA, None),
            "secret scope is not the vault"
        );
        let reader = Principal {
            principal_id: None,
            ..who("reader")
        };
        assert!(grants(&list, &reader, READ_METADATA, None));
        assert!(!grants(&list, &reader, GET_SECRET, Some("a")));
        let officer = who("by-object-id");
        for action in [
            GET_SECRET,
            SET_SECRET,
            UPDATE,
            DELETE,
            RECOVER,
            PURGE,
            READ_METADATA,
        ] {
            assert!(grants(&list, &officer, action, Some("x")), "{action}");
        }
        assert_eq!(parse_assignments(&json!([])).unwrap(), None);
        assert!(parse_assignments(&json!([{"principal": "p", "role": "Owner"}])).is_err());
        assert!(
            parse_assignments(
                &json!([{"principal": "p", "role": "Key Vault Reader", "scope": "/keys/k"}])
            )
            .is_err()
        );
    }

    #[test]
    fn firewall_denies_by_default_only_when_told() {
        let open = NetworkAcls::default();
        assert!(open.allows(Some("10.0.0.1".parse().unwrap())));
        let acls = NetworkAcls::parse(&json!({"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.1"}, {"value": "10.1.0.0/16"}]})).unwrap();
        assert!(acls.allows(Some("127.0.0.1".parse().unwrap())));
        assert!(acls.allows(Some("::ffff:10.1.2.3".parse().unwrap())));
        assert!(!acls.allows(Some("127.0.0.2".parse().unwrap())));
        assert!(!acls.allows(None));
        assert_eq!(acls.json()["ipRules"][1]["value"], "10.1.0.0/16");
        assert!(NetworkAcls::parse(&json!({"ipRules": [{"value": "::1"}]})).is_err());
        assert!(NetworkAcls::parse(&json!({"defaultAction": "Block"})).is_err());
        assert_eq!(NetworkAcls::parse(&Value::Null).unwrap(), open);
    }
}
