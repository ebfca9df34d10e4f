//! The step list of a run — the same for `plan`, `--dry-run` and `run` — and the ARM calls of
//! each step, described before they are made.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::observe::{EndpointSpec, Observed};
use super::{Variant, name_of, region_key};
use crate::arm::{API_VERSION, ArmCall, NETWORK_API_VERSION, PRIVATE_DNS_API_VERSION};
use crate::config::FailoverEntry;

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
    /// `key_names`: the policies whose keys go in Key Vault secrets (`listkeys` calls).
    ConsumerSettings {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        key_names: Vec<String>,
    },
    WaitConsumers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    #[serde(flatten)]
    pub kind: StepKind,
}

/// What the step list is built from.
pub struct Inputs<'a> {
    pub hub: &'a str,
    pub entry: &'a FailoverEntry,
    pub observed: &'a Observed,
    pub variant: Variant,
}

fn step(name: String, kind: StepKind) -> Step {
    Step { name, kind }
}

pub fn build(input: &Inputs, from: &str, to: &str) -> Vec<Step> {
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
    steps.push(step(
        "consumer-settings".into(),
        StepKind::ConsumerSettings {
            key_names: super::settings::secret_key_names(&input.entry.consumers),
        },
    ));
    steps.push(step("wait-consumers".into(), StepKind::WaitConsumers));
    steps
}

/// A private endpoint for `region` from the config, named `pe-{hub}-{region}`.
fn new_endpoint(input: &Inputs, region: &str, hub_id: &str) -> Option<EndpointSpec> {
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
fn link_swaps(input: &Inputs, from: &str, to: &str) -> Vec<Step> {
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
            StepKind::WaitFailover | StepKind::WaitConsumers => Vec::new(),
            StepKind::ConsumerSettings { key_names } => key_names
                .iter()
                .map(|k| super::settings::list_keys_call(hub_id, k))
                .collect(),
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

impl Step {
    /// Writes this step makes beyond [`Step::calls`]: ARM calls made only in some cases, whose
    /// exact path is known only then (approving a `Pending` connection when the config allows
    /// it), and writes that are not ARM calls (a consumer's settings file or Key Vault secret).
    /// Each is one line, for `plan` and `--dry-run`; no secret is in any.
    pub fn other_writes(&self, hub_id: &str, hub: &str, entry: &FailoverEntry) -> Vec<String> {
        match &self.kind {
            StepKind::CreateEndpoint { spec } if entry.approve_connections => {
                let call = approve_call(
                    hub_id,
                    &format!("{{the connection {} makes}}", name_of(&spec.id)),
                    hub,
                );
                vec![format!(
                    "if its connection is Pending (approve-connections = true): {}",
                    call.to_string().replace('\n', " ")
                )]
            }
            StepKind::ConsumerSettings { .. } => entry
                .consumers
                .iter()
                .flat_map(|c| {
                    let file = c.settings_file.as_ref().map(|f| {
                        format!(
                            "consumer {}: write {} (the new endpoint and path, JSON)",
                            c.name,
                            f.display()
                        )
                    });
                    let secret = c.settings_secret.as_ref().map(|url| {
                        format!(
                            "consumer {}: Key Vault, not ARM: a new version of {url} holding its \
                             new Event Hub-compatible connection string (none when the latest \
                             already holds it)",
                            c.name
                        )
                    });
                    file.into_iter().chain(secret)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `PUT {hub}/privateEndpointConnections/{connection}` approving a `Pending` connection.
pub(super) fn approve_call(hub_id: &str, connection: &str, hub: &str) -> ArmCall {
    ArmCall::new(
        "PUT",
        &format!("{hub_id}/privateEndpointConnections/{connection}"),
        API_VERSION,
    )
    .with_body(json!({"properties": {"privateLinkServiceConnectionState": {
        "status": "Approved",
        "description": format!("Approved by hubvault failover of {hub}"),
        "actionsRequired": "None"
    }}}))
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
#[allow(clippy::unwrap_used, reason = "tests")]
mod step_tests {
    use super::*;
    use crate::config::FailoverRegion;
    use crate::failover::observe::LinkFact;
    use crate::failover::plan::tests::decide_fresh;
    use time::OffsetDateTime;

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
        let plan = decide_fresh(&entry, &observed, variant, OffsetDateTime::UNIX_EPOCH);
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
