//! The failover plan as a pure function of what ARM shows, the journal of past operations, the
//! configuration and `now`: findings (what will break, what is missing), a refusal (Azure's
//! limits, named with the time the operation becomes possible) and the step list with every ARM
//! call it makes.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub use super::Variant;
pub use super::limits::{PastOperation, check_limits};
pub use super::observe::{EndpointSpec, EventHubEndpoint, LinkFact, Observed, Permissions};
use super::steps::{self, Inputs};
pub use super::steps::{Step, StepKind};
use super::{name_of, region_key};
use crate::config::FailoverEntry;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Block,
}

/// One precondition, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

/// Where a failover goes: the hub, the variant, the regions, and the endpoint it starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub hub_id: String,
    pub variant: Variant,
    pub from: String,
    pub to: String,
    /// Back to the hub's original primary region (counted apart in Azure's limits).
    pub failback: bool,
    pub events_before: EventHubEndpoint,
}

/// What `failover plan` shows and `failover run` journals and executes.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub hub: String,
    #[serde(flatten)]
    pub route: Route,
    pub findings: Vec<Finding>,
    pub refusal: Option<String>,
    pub steps: Vec<Step>,
}

/// Everything the plan is decided from.
pub struct PlanInput<'a> {
    pub hub: &'a str,
    pub entry: &'a FailoverEntry,
    pub observed: &'a Observed,
    pub past: &'a [PastOperation],
    /// The hub's original primary region (the first `from` in the journal), if known.
    pub original_primary: Option<&'a str>,
    pub variant: Variant,
    pub now: OffsetDateTime,
}

/// Decide the plan.
pub fn decide(input: &PlanInput) -> Plan {
    let o = input.observed;
    let to = region_key(&o.secondary);
    let from = region_key(&o.primary);
    let failback = input.original_primary.is_some_and(|p| region_key(p) == to);
    let mut findings = findings(input);
    let refusal = check_limits(input.past, failback, input.now).err();
    if let Some(r) = &refusal {
        findings.push(block(r.clone()));
    }
    let steps = steps::build(
        &Inputs {
            hub: input.hub,
            entry: input.entry,
            observed: o,
            variant: input.variant,
        },
        &from,
        &to,
    );
    Plan {
        hub: input.hub.to_owned(),
        route: Route {
            hub_id: o.hub_id.clone(),
            variant: input.variant,
            from,
            to,
            failback,
            events_before: o.events.clone(),
        },
        findings,
        refusal,
        steps,
    }
}

fn ok(text: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        text: text.into(),
    }
}

fn warn(text: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warn,
        text: text.into(),
    }
}

fn block(text: impl Into<String>) -> Finding {
    Finding {
        level: Level::Block,
        text: text.into(),
    }
}

/// Parse `30m`, `24h`, `7d`.
pub fn parse_age(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (n, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    match unit {
        "m" => Some(Duration::minutes(n)),
        "h" => Some(Duration::hours(n)),
        "d" => Some(Duration::days(n)),
        _ => None,
    }
}

/// Actions the run needs (checked against `Microsoft.Authorization/permissions`).
pub const NEEDED_ACTIONS: [&str; 7] = [
    "Microsoft.Devices/IotHubs/failover/action",
    "Microsoft.Devices/IotHubs/privateEndpointConnections/write",
    "Microsoft.Network/privateEndpoints/write",
    "Microsoft.Network/privateEndpoints/delete",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/privateDnsZones/join/action",
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks/write",
];

/// Reading a policy's key, for consumers whose settings go to a Key Vault secret.
pub const LISTKEYS_ACTION: &str = "Microsoft.Devices/IotHubs/IotHubKeys/listkeys/action";

/// `*` matches any run of characters; case is ignored, as ARM does.
fn glob(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos.saturating_add(part.len())..];
        } else {
            return false;
        }
    }
    parts.len() > 1 || rest.is_empty()
}

fn allowed(p: &Permissions, action: &str) -> bool {
    p.actions.iter().any(|a| glob(a, action)) && !p.not_actions.iter().any(|a| glob(a, action))
}

fn findings(input: &PlanInput) -> Vec<Finding> {
    let o = input.observed;
    let mut out = vec![ok(format!(
        "hub {} is in {} (primary); its paired region is {} (secondary)",
        input.hub, o.primary, o.secondary
    ))];
    out.extend(rights(o, input.entry));
    out.push(backup_age(input));
    if input.entry.regions.contains_key(&region_key(&o.secondary)) {
        out.push(ok(format!(
            "[failover.{}.regions.{}] is configured",
            input.hub,
            region_key(&o.secondary)
        )));
    } else {
        out.push(block(format!(
            "no [failover.{}.regions.{}]: hubvault does not know where the secondary region's private endpoint goes",
            input.hub,
            region_key(&o.secondary)
        )));
    }
    for e in &o.endpoints {
        out.push(warn(format!(
            "private endpoint {} ({}, subnet {}) will stop carrying the Event Hub-compatible endpoint: it is deleted and re-created after the failover",
            name_of(&e.id),
            e.location,
            name_of(e.subnet.rsplit_once("/subnets/").map_or("", |(v, _)| v))
        )));
    }
    if o.endpoints.is_empty() {
        out.push(warn("the hub has no private endpoints"));
    }
    for p in &o.pending {
        out.push(warn(format!(
            "private endpoint connection {p} is not Approved"
        )));
    }
    if input.entry.approve_connections {
        out.push(ok(
            "approve-connections: a re-created endpoint's Pending connection is approved on the hub (PUT …/privateEndpointConnections/{name})",
        ));
    }
    for z in &o.missing_zones {
        out.push(block(format!(
            "Private DNS zone {z} (from the config) does not exist"
        )));
    }
    for l in &o.links {
        out.push(ok(format!(
            "zone {} is linked to {}",
            name_of(&l.zone),
            name_of(&l.vnet)
        )));
    }
    out.extend(config_against_arm(input));
    for c in &input.entry.consumers {
        if c.health_url.is_none() && c.health_command.is_none() {
            out.push(warn(format!(
                "consumer {} has no health check: the report says \"not measured\"",
                c.name
            )));
        } else {
            out.push(ok(format!("consumer {} has a health check", c.name)));
        }
        match super::settings::secret_url(c) {
            Some(Err(e)) => out.push(block(e)),
            Some(Ok(url)) => out.push(ok(format!(
                "consumer {}: the new connection string goes to {url} (a new version)",
                c.name
            ))),
            None => {}
        }
    }
    out.push(warn(
        "device timings mean something only when hubvault runs where the devices are (inside the clients' VNet, for private endpoints)",
    ));
    out
}

/// What the config expects that ARM does not show: endpoints in regions the config does not
/// describe, client virtual networks linked to none of the configured zones.
fn config_against_arm(input: &PlanInput) -> Vec<Finding> {
    let o = input.observed;
    let mut out = Vec::new();
    for e in &o.endpoints {
        if !input.entry.regions.contains_key(&region_key(&e.location)) {
            out.push(warn(format!(
                "private endpoint {} is in {}, which [failover.{}.regions] does not describe",
                name_of(&e.id),
                e.location,
                input.hub
            )));
        }
    }
    for vnet in &input.entry.client_vnets {
        if !o.links.iter().any(|l| l.vnet.eq_ignore_ascii_case(vnet)) {
            out.push(warn(format!(
                "client VNet {} is linked to none of the configured zones: its clients do not resolve the hub's private addresses",
                name_of(vnet)
            )));
        }
    }
    if input.entry.client_vnets.is_empty() {
        out.push(warn(format!(
            "[failover.{}] names no client-vnets: the network-failure variant has no DNS links to move",
            input.hub
        )));
    }
    out
}

fn rights(o: &Observed, entry: &FailoverEntry) -> Vec<Finding> {
    if o.permissions.is_empty() {
        return vec![warn(
            "the caller's permissions could not be read (Microsoft.Authorization/permissions)",
        )];
    }
    let mut missing: Vec<&str> = NEEDED_ACTIONS
        .iter()
        .copied()
        .chain(
            // The key of a consumer's connection string (`settings-secret`).
            entry
                .consumers
                .iter()
                .any(|c| c.settings_secret.is_some())
                .then_some(LISTKEYS_ACTION),
        )
        .filter(|action| !o.permissions.iter().any(|p| allowed(p, action)))
        .collect();
    missing.dedup();
    if missing.is_empty() {
        vec![ok(
            "the caller may fail the hub over, write private endpoints, approve their connections and link Private DNS zones",
        )]
    } else {
        vec![block(format!(
            "the caller lacks {}: ask for IoT Hub Contributor on the hub, Network Contributor on the VNets and Private DNS Zone Contributor on the zones (without approval rights a new endpoint stays Pending)",
            missing.join(", ")
        ))]
    }
}

fn backup_age(input: &PlanInput) -> Finding {
    let max = input
        .entry
        .max_backup_age
        .as_deref()
        .and_then(parse_age)
        .unwrap_or(Duration::hours(24));
    let Some(t) = input.observed.newest_backup else {
        return warn(format!(
            "no backup of the hub in the store: run `hubvault backup --hub {}` first",
            input.hub
        ));
    };
    let age = input
        .now
        .unix_timestamp()
        .saturating_sub(t.unix_timestamp());
    if age <= max.whole_seconds() {
        ok(format!(
            "a backup of the hub is {} minutes old",
            age.checked_div(60).unwrap_or(0)
        ))
    } else {
        warn(format!(
            "the newest backup of the hub is {} hours old (more than {} hours): run `hubvault backup --hub {}` first",
            age.checked_div(3600).unwrap_or(0),
            max.whole_hours(),
            input.hub
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    /// The plan of hub `h` with no past operations (tests of the findings and steps).
    pub(crate) fn decide_fresh(
        entry: &FailoverEntry,
        observed: &Observed,
        variant: Variant,
        now: OffsetDateTime,
    ) -> Plan {
        decide(&PlanInput {
            hub: "h",
            entry,
            observed,
            past: &[],
            original_primary: None,
            variant,
            now,
        })
    }

    const T0: OffsetDateTime = datetime!(2026-11-26 00:00 UTC);

    fn op(hours: i64, failback: bool) -> PastOperation {
        PastOperation {
            at: T0 + Duration::hours(hours),
            failback,
        }
    }

    #[test]
    fn limits_name_the_time_it_becomes_possible() {
        assert_eq!(check_limits(&[], false, T0), Ok(()));
        let err = check_limits(&[op(0, false)], true, T0 + Duration::minutes(30)).unwrap_err();
        assert!(err.contains("possible from 2026-11-26T01:00:00Z"), "{err}");
        let day = [op(0, false), op(1, true), op(2, false), op(3, true)];
        let err = check_limits(&day, false, T0 + Duration::hours(5)).unwrap_err();
        assert!(err.contains("2 failovers per day"), "{err}");
        assert!(err.contains("possible from 2026-11-27T00:00:00Z"), "{err}");
        assert_eq!(check_limits(&day, false, T0 + Duration::hours(24)), Ok(()));
    }

    #[test]
    fn action_wildcards() {
        assert!(glob("*", "Microsoft.Network/privateEndpoints/write"));
        assert!(glob(
            "Microsoft.Network/*",
            "microsoft.network/privateEndpoints/write"
        ));
        assert!(!glob(
            "Microsoft.Network/*/read",
            "Microsoft.Network/privateEndpoints/write"
        ));
        assert!(glob(
            "Microsoft.Devices/IotHubs/failover/action",
            "Microsoft.Devices/IotHubs/failover/action"
        ));
    }

    #[test]
    fn the_plan_says_what_the_config_expects_that_arm_does_not_show() {
        let entry = FailoverEntry {
            client_vnets: vec!["/s/vnet-clients".into()],
            ..FailoverEntry::default()
        };
        let observed = Observed {
            primary: "West US".into(),
            secondary: "East US".into(),
            endpoints: vec![EndpointSpec {
                id: "/s/privateEndpoints/pe-c".into(),
                location: "centralus".into(),
                subnet: "/s/v/subnets/pe".into(),
                connection: "c".into(),
                group_ids: vec![],
                zone_group: "default".into(),
                zones: vec![],
            }],
            ..Observed::default()
        };
        let plan = decide_fresh(&entry, &observed, Variant::Normal, T0);
        let texts: Vec<&str> = plan.findings.iter().map(|f| f.text.as_str()).collect();
        assert!(
            texts.iter().any(|t| t
                .contains("pe-c is in centralus, which [failover.h.regions] does not describe")),
            "{texts:#?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("client VNet vnet-clients is linked to none")),
            "{texts:#?}"
        );
        assert!(
            plan.findings
                .iter()
                .any(|f| f.level == Level::Block
                    && f.text.contains("no [failover.h.regions.eastus]"))
        );
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("24h"), Some(Duration::hours(24)));
        assert_eq!(parse_age("7d"), Some(Duration::days(7)));
        assert_eq!(parse_age("x"), None);
    }
}
