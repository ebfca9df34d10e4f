//! The failover plan as a pure function of what ARM shows, the journal of past operations, the
//! configuration and `now`: findings (what will break, what is missing), a refusal (Azure's
//! limits, named with the time the operation becomes possible) and the step list with every ARM
//! call it makes.
//!
//! Limits [Learn iot-hub-ha-dr]: at most 2 failovers and 2 failbacks per day, at least one hour
//! between operations. A failback is a failover back to the hub's original primary region.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::{name_of, region_key};
use crate::arm::{API_VERSION, ArmCall, NETWORK_API_VERSION, PRIVATE_DNS_API_VERSION};
use crate::config::FailoverEntry;

pub const MIN_SPACING: Duration = Duration::hours(1);
pub const WINDOW: Duration = Duration::hours(24);
pub const MAX_PER_DIRECTION: usize = 2;

/// The two runbooks of the seed kit: TEST 1 (the primary region's network still works) and
/// TEST 2 (it does not: the secondary virtual network gets the endpoint and the DNS links move to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Normal,
    NetworkFailure,
}

/// The Event Hub-compatible endpoint: what a consumer connects to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHubEndpoint {
    pub endpoint: String,
    pub path: String,
}

/// A private endpoint to the hub, as needed to re-create it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub id: String,
    pub location: String,
    pub subnet: String,
    pub connection: String,
    pub group_ids: Vec<String>,
    /// Zone group name and the zone ids it registers in (empty: the endpoint has none).
    pub zone_group: String,
    pub zones: Vec<String>,
}

/// A Private DNS zone's link to a virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFact {
    pub id: String,
    pub zone: String,
    pub vnet: String,
}

/// The caller's actions at one scope (`Microsoft.Authorization/permissions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub scope: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}

/// What ARM and the store show before a run.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub hub_id: String,
    pub primary: String,
    pub secondary: String,
    pub events: EventHubEndpoint,
    pub endpoints: Vec<EndpointSpec>,
    /// Connections on the hub that are not `Approved`.
    pub pending: Vec<String>,
    pub links: Vec<LinkFact>,
    pub missing_zones: Vec<String>,
    pub permissions: Vec<Permissions>,
    pub newest_backup: Option<OffsetDateTime>,
}

/// One failover or failback hubvault requested earlier (from the journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastOperation {
    pub at: OffsetDateTime,
    pub failback: bool,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    RecordEndpoint,
    RequestFailover {
        region: String,
    },
    WaitFailover,
    WaitHub,
    ReadEndpoint,
    DeleteEndpoint {
        id: String,
    },
    CreateEndpoint {
        spec: EndpointSpec,
    },
    Unlink {
        link: String,
    },
    Link {
        link: String,
        vnet: String,
    },
    /// Network-failure variant: the primary region's endpoint, removed if its region answers.
    RemoveWhenPossible {
        id: String,
    },
    ConsumerSettings,
    WaitConsumers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    #[serde(flatten)]
    pub kind: StepKind,
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
    let steps = steps(input, &from, &to);
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

/// Refuse when Azure would: within an hour of the last operation, or past 2 per direction in
/// 24 hours. The message names when it becomes possible.
pub fn check_limits(
    past: &[PastOperation],
    failback: bool,
    now: OffsetDateTime,
) -> Result<(), String> {
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if let Some(last) = past.iter().map(|p| p.at).max() {
        let next = last.saturating_add(MIN_SPACING);
        if now < next {
            return Err(format!(
                "Azure allows one manual failover or failback per hour: the last was at {}; possible from {}",
                fmt(last),
                fmt(next)
            ));
        }
    }
    let mut recent: Vec<OffsetDateTime> = past
        .iter()
        .filter(|p| p.failback == failback && p.at > now.saturating_sub(WINDOW))
        .map(|p| p.at)
        .collect();
    recent.sort();
    if let Some(first) = recent.len().checked_sub(MAX_PER_DIRECTION) {
        let next = recent[first].saturating_add(WINDOW);
        return Err(format!(
            "Azure allows {MAX_PER_DIRECTION} {} per day and that many were made in the last 24 hours; possible from {}",
            if failback { "failbacks" } else { "failovers" },
            fmt(next)
        ));
    }
    Ok(())
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
    out.extend(rights(o));
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
    for c in &input.entry.consumers {
        if c.health_url.is_none() && c.health_command.is_none() {
            out.push(warn(format!(
                "consumer {} has no health check: the report says \"not measured\"",
                c.name
            )));
        } else {
            out.push(ok(format!("consumer {} has a health check", c.name)));
        }
    }
    out.push(warn(
        "device timings mean something only when hubvault runs where the devices are (inside the clients' VNet, for private endpoints)",
    ));
    out
}

fn rights(o: &Observed) -> Vec<Finding> {
    if o.permissions.is_empty() {
        return vec![warn(
            "the caller's permissions could not be read (Microsoft.Authorization/permissions)",
        )];
    }
    let mut missing: Vec<&str> = NEEDED_ACTIONS
        .iter()
        .copied()
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

fn step(name: String, kind: StepKind) -> Step {
    Step { name, kind }
}

fn steps(input: &PlanInput, from: &str, to: &str) -> Vec<Step> {
    let o = input.observed;
    let mut steps = vec![
        step("record-endpoint".into(), StepKind::RecordEndpoint),
        step(
            "request-failover".into(),
            StepKind::RequestFailover {
                region: to.to_owned(),
            },
        ),
        step("wait-failover".into(), StepKind::WaitFailover),
        step("wait-hub".into(), StepKind::WaitHub),
        step("read-endpoint".into(), StepKind::ReadEndpoint),
    ];
    let recreate = |steps: &mut Vec<Step>, e: &EndpointSpec| {
        let n = name_of(&e.id);
        steps.push(step(
            format!("delete-endpoint:{n}"),
            StepKind::DeleteEndpoint { id: e.id.clone() },
        ));
        steps.push(step(
            format!("create-endpoint:{n}"),
            StepKind::CreateEndpoint { spec: e.clone() },
        ));
    };
    match input.variant {
        Variant::Normal => {
            for e in &o.endpoints {
                recreate(&mut steps, e);
            }
        }
        Variant::NetworkFailure => {
            let (near, far): (Vec<&EndpointSpec>, Vec<&EndpointSpec>) = o
                .endpoints
                .iter()
                .partition(|e| region_key(&e.location) == to);
            if near.is_empty()
                && let Some(spec) = new_endpoint(input, to, &o.hub_id)
            {
                {
                    steps.push(step(
                        format!("create-endpoint:{}", name_of(&spec.id)),
                        StepKind::CreateEndpoint { spec },
                    ));
                }
            }
            for e in near {
                recreate(&mut steps, e);
            }
            steps.extend(link_swaps(input, from, to));
            for e in far {
                steps.push(step(
                    format!("remove-endpoint:{}", name_of(&e.id)),
                    StepKind::RemoveWhenPossible { id: e.id.clone() },
                ));
            }
        }
    }
    steps.push(step("consumer-settings".into(), StepKind::ConsumerSettings));
    steps.push(step("wait-consumers".into(), StepKind::WaitConsumers));
    steps
}

/// A private endpoint for `region` from the config, named `pe-{hub}-{region}`.
fn new_endpoint(input: &PlanInput, region: &str, hub_id: &str) -> Option<EndpointSpec> {
    let r = input.entry.regions.get(region)?;
    let name = format!("pe-{}-{region}", input.hub);
    let _ = hub_id;
    Some(EndpointSpec {
        id: format!(
            "{}/providers/Microsoft.Network/privateEndpoints/{name}",
            r.resource_group
        ),
        location: region.to_owned(),
        subnet: r.subnet.clone(),
        connection: name,
        group_ids: vec!["iotHub".into()],
        zone_group: "default".into(),
        zones: r.zones.clone(),
    })
}

/// For each client virtual network and each zone name: unlink the `from` region's zone, link `to`'s.
fn link_swaps(input: &PlanInput, from: &str, to: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let (Some(f), Some(t)) = (input.entry.regions.get(from), input.entry.regions.get(to)) else {
        return out;
    };
    for vnet in &input.entry.client_vnets {
        for zone in &t.zones {
            let zone_name = name_of(zone);
            let old = f
                .zones
                .iter()
                .find(|z| name_of(z).eq_ignore_ascii_case(zone_name));
            let linked = input.observed.links.iter().find(|l| {
                old.is_some_and(|z| l.zone.eq_ignore_ascii_case(z))
                    && l.vnet.eq_ignore_ascii_case(vnet)
            });
            if let Some(l) = linked {
                out.push(step(
                    format!("unlink-dns:{zone_name}"),
                    StepKind::Unlink { link: l.id.clone() },
                ));
            }
            out.push(step(
                format!("link-dns:{zone_name}"),
                StepKind::Link {
                    link: format!("{zone}/virtualNetworkLinks/{}", name_of(vnet)),
                    vnet: vnet.clone(),
                },
            ));
        }
    }
    out
}

impl Step {
    /// The ARM calls this step makes (operation polling aside), for `plan` and `--dry-run`.
    pub fn calls(&self, hub_id: &str) -> Vec<ArmCall> {
        match &self.kind {
            StepKind::RecordEndpoint | StepKind::ReadEndpoint | StepKind::WaitHub => {
                vec![ArmCall::new("GET", hub_id, API_VERSION)]
            }
            StepKind::RequestFailover { region } => vec![
                ArmCall::new("POST", &format!("{hub_id}/failover"), API_VERSION)
                    .with_body(json!({"failoverRegion": region})),
            ],
            StepKind::WaitFailover | StepKind::ConsumerSettings | StepKind::WaitConsumers => {
                Vec::new()
            }
            StepKind::DeleteEndpoint { id } | StepKind::RemoveWhenPossible { id } => {
                vec![ArmCall::new("DELETE", id, NETWORK_API_VERSION)]
            }
            StepKind::CreateEndpoint { spec } => create_calls(spec, hub_id),
            StepKind::Unlink { link } => {
                vec![ArmCall::new("DELETE", link, PRIVATE_DNS_API_VERSION)]
            }
            StepKind::Link { link, vnet } => vec![
                ArmCall::new("PUT", link, PRIVATE_DNS_API_VERSION).with_body(json!({
                    "location": "global",
                    "properties": {"virtualNetwork": {"id": vnet}, "registrationEnabled": false}
                })),
            ],
        }
    }
}

fn create_calls(spec: &EndpointSpec, hub_id: &str) -> Vec<ArmCall> {
    let endpoint = json!({
        "location": spec.location,
        "properties": {
            "subnet": {"id": spec.subnet},
            "privateLinkServiceConnections": [{
                "name": spec.connection,
                "properties": {"privateLinkServiceId": hub_id, "groupIds": spec.group_ids}
            }]
        }
    });
    let mut calls = vec![ArmCall::new("PUT", &spec.id, NETWORK_API_VERSION).with_body(endpoint)];
    if !spec.zones.is_empty() {
        let configs: Vec<Value> = spec
            .zones
            .iter()
            .map(|z| json!({"name": name_of(z).replace('.', "-"), "properties": {"privateDnsZoneId": z}}))
            .collect();
        calls.push(
            ArmCall::new(
                "PUT",
                &format!("{}/privateDnsZoneGroups/{}", spec.id, spec.zone_group),
                NETWORK_API_VERSION,
            )
            .with_body(json!({"properties": {"privateDnsZoneConfigs": configs}})),
        );
    }
    calls
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::macros::datetime;

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
    fn ages() {
        assert_eq!(parse_age("24h"), Some(Duration::hours(24)));
        assert_eq!(parse_age("7d"), Some(Duration::days(7)));
        assert_eq!(parse_age("x"), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod step_tests {
    use super::*;
    use crate::config::FailoverRegion;

    const RG: &str = "/subscriptions/s/resourceGroups";

    fn region(name: &str) -> FailoverRegion {
        FailoverRegion {
            resource_group: format!("{RG}/rg-{name}"),
            vnet: format!("{RG}/rg-{name}/providers/Microsoft.Network/virtualNetworks/v-{name}"),
            subnet: format!(
                "{RG}/rg-{name}/providers/Microsoft.Network/virtualNetworks/v-{name}/subnets/pe"
            ),
            zones: [
                "privatelink.azure-devices.net",
                "privatelink.servicebus.windows.net",
            ]
            .iter()
            .map(|z| format!("{RG}/rg-{name}/providers/Microsoft.Network/privateDnsZones/{z}"))
            .collect(),
        }
    }

    fn names(variant: Variant) -> Vec<String> {
        let mut entry = FailoverEntry {
            client_vnets: vec![format!(
                "{RG}/rg/providers/Microsoft.Network/virtualNetworks/clients"
            )],
            ..FailoverEntry::default()
        };
        entry.regions.insert("westus".into(), region("westus"));
        entry.regions.insert("eastus".into(), region("eastus"));
        let we = &entry.regions["westus"];
        let observed = Observed {
            hub_id: format!("{RG}/rg/providers/Microsoft.Devices/IotHubs/h"),
            primary: "West US".into(),
            secondary: "East US".into(),
            endpoints: vec![EndpointSpec {
                id: format!(
                    "{}/providers/Microsoft.Network/privateEndpoints/pe-we",
                    we.resource_group
                ),
                location: "westus".into(),
                subnet: we.subnet.clone(),
                connection: "c".into(),
                group_ids: vec!["iotHub".into()],
                zone_group: "default".into(),
                zones: we.zones.clone(),
            }],
            links: we
                .zones
                .iter()
                .map(|z| LinkFact {
                    id: format!("{z}/virtualNetworkLinks/clients"),
                    zone: z.clone(),
                    vnet: entry.client_vnets[0].clone(),
                })
                .collect(),
            ..Observed::default()
        };
        let plan = decide(&PlanInput {
            hub: "h",
            entry: &entry,
            observed: &observed,
            past: &[],
            original_primary: None,
            variant,
            now: OffsetDateTime::UNIX_EPOCH,
        });
        assert_eq!(
            (plan.route.from.as_str(), plan.route.to.as_str()),
            ("westus", "eastus")
        );
        plan.steps.into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn normal_variant_recreates_every_endpoint() {
        assert_eq!(
            names(Variant::Normal),
            [
                "record-endpoint",
                "request-failover",
                "wait-failover",
                "wait-hub",
                "read-endpoint",
                "delete-endpoint:pe-we",
                "create-endpoint:pe-we",
                "consumer-settings",
                "wait-consumers"
            ]
        );
    }

    #[test]
    fn network_failure_creates_the_secondary_endpoint_moves_links_and_removes_the_primary_last() {
        assert_eq!(
            names(Variant::NetworkFailure),
            [
                "record-endpoint",
                "request-failover",
                "wait-failover",
                "wait-hub",
                "read-endpoint",
                "create-endpoint:pe-h-eastus",
                "unlink-dns:privatelink.azure-devices.net",
                "link-dns:privatelink.azure-devices.net",
                "unlink-dns:privatelink.servicebus.windows.net",
                "link-dns:privatelink.servicebus.windows.net",
                "remove-endpoint:pe-we",
                "consumer-settings",
                "wait-consumers"
            ]
        );
    }
}
