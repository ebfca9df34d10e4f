//! `hubvault-sim --private-endpoints HUB`: a two-region world around a hub reached only through
//! private endpoints. Per region (the hub's primary and secondary): a resource group
//! `{rg}-{region}` with a `VNet` (subnet `pe`), the two Private DNS zones (`privatelink.azure-devices.net`,
//! `privatelink.servicebus.windows.net`) linked to it, and a private endpoint to the hub whose
//! zone group `default` writes the A records. A clients' `VNet` (`{rg}/vnet-clients`) is linked to
//! the primary region's zones, and a consumer of the Event Hub-compatible endpoint lives there.

use serde_json::json;

use super::ArmState;
use super::failover::region_with_role;
use super::network::{Consumer, EVENTS_ZONE, HUB_ZONE, HubView, events_host};
use super::resource::normalize_region;
use crate::shared::{HubShared, lock};

/// What was built, for `--write-config`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub hub: String,
    pub regions: Vec<Region>,
    pub clients_vnet: String,
    pub consumer: String,
}

/// One region's network: where endpoints go and which zones they register in.
#[derive(Debug, Clone)]
pub struct Region {
    /// ARM spelling (`westus`).
    pub name: String,
    pub resource_group: String,
    pub vnet: String,
    pub subnet: String,
    pub zones: Vec<String>,
    pub endpoint: String,
}

/// Build the topology for `hub` in `subscription`/`resource_group`.
pub fn build(state: &ArmState, hub: &HubShared, subscription: &str, rg: &str) -> Topology {
    let doc = lock(&hub.resource).clone();
    let primary = normalize_region(&region_with_role(&doc, "primary").unwrap_or_default());
    let secondary = normalize_region(&region_with_role(&doc, "secondary").unwrap_or_default());
    let net_prefix = |group: &str| {
        format!("/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Network")
    };
    let clients_vnet = format!("{}/virtualNetworks/vnet-clients", net_prefix(rg));
    let mut net = lock(&state.network);
    net.put_vnet(&clients_vnet, &primary, "10.100.0.0/24");
    let mut regions = Vec::new();
    for (i, region) in [&primary, &secondary].into_iter().enumerate() {
        let group = format!("{rg}-{region}");
        let base = net_prefix(&group);
        let vnet = format!("{base}/virtualNetworks/vnet-{region}");
        net.put_vnet(
            &vnet,
            region,
            &format!("10.{}.0.0/24", i.saturating_add(10)),
        );
        let zones: Vec<String> = [HUB_ZONE, EVENTS_ZONE]
            .iter()
            .map(|z| format!("{base}/privateDnsZones/{z}"))
            .collect();
        for zone in &zones {
            net.put_zone(zone);
            let link = json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet}, "registrationEnabled": false}});
            let _ = net.put_link(&format!("{zone}/virtualNetworkLinks/vnet-{region}"), &link);
            if i == 0 {
                let link = json!({"location": "global", "properties": {"virtualNetwork": {"id": clients_vnet}, "registrationEnabled": false}});
                let _ = net.put_link(&format!("{zone}/virtualNetworkLinks/vnet-clients"), &link);
            }
        }
        let endpoint = format!("{base}/privateEndpoints/pe-{}-{region}", hub.name);
        let body = json!({"location": region, "properties": {
            "subnet": {"id": format!("{vnet}/subnets/pe")},
            "privateLinkServiceConnections": [{"name": format!("pe-{}-{region}", hub.name),
                "properties": {"privateLinkServiceId": hub.resource_id, "groupIds": ["iotHub"]}}]}});
        let view = HubView {
            id: &hub.resource_id,
            host: &hub.host,
            events_host: events_host(&doc),
        };
        if net.put_endpoint(&endpoint, &body, Some(&view)).is_ok() {
            super::network_api::connect(&mut lock(&hub.resource), &endpoint, "Approved");
        }
        let configs: Vec<serde_json::Value> = zones
            .iter()
            .map(|z| json!({"name": z.rsplit('/').next().unwrap_or("").replace('.', "-"), "properties": {"privateDnsZoneId": z}}))
            .collect();
        let _ = net.put_zone_group(
            &format!("{endpoint}/privateDnsZoneGroups/default"),
            &json!({"properties": {"privateDnsZoneConfigs": configs}}),
        );
        regions.push(Region {
            name: region.clone(),
            resource_group: group,
            subnet: format!("{vnet}/subnets/pe"),
            vnet,
            zones,
            endpoint,
        });
    }
    let consumer = format!("{}-reader", hub.name);
    net.consumers.push(Consumer {
        name: consumer.clone(),
        hub: hub.name.clone(),
        vnet: clients_vnet.clone(),
    });
    Topology {
        hub: hub.name.clone(),
        regions,
        clients_vnet,
        consumer,
    }
}
