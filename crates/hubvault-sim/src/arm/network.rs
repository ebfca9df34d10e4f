//! Simulated `Microsoft.Network` resources a hub behind private endpoints depends on: virtual
//! networks, private endpoints (one private link service connection to a hub, group `iotHub`),
//! their `privateDnsZoneGroups`, Private DNS zones, their virtual network links and the A records
//! the zone groups own. Plus what a failover test needs around them: a region outage switch and
//! simulated consumers of a hub's Event Hub-compatible endpoint whose health follows DNS.
//!
//! Minimal real shapes (`privateEndpoint.json` 2024-05-01, `privatedns.json` 2024-06-01; see
//! hubvault's docs/azure.md). Simplifications, each UNCERTAIN against Azure: writes complete
//! synchronously (201/200 with `provisioningState: Succeeded`, no `Azure-AsyncOperation`);
//! connections are auto-approved; a PUT on an existing private endpoint keeps its IPs and DNS
//! configuration (so a changed Event Hub namespace needs delete + create, as in the field);
//! writes in a region that is down answer 503 `ServiceUnavailable`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::resource::normalize_region;

/// Private DNS zone of the IoT Hub host and of the Event Hub-compatible endpoint.
pub const HUB_ZONE: &str = "privatelink.azure-devices.net";
pub const EVENTS_ZONE: &str = "privatelink.servicebus.windows.net";

/// A refusal, as ARM's `{"error":{"code","message"}}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

/// A consumer of a hub's Event Hub-compatible endpoint, inside `vnet`.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: String,
    pub hub: String,
    pub vnet: String,
}

/// Every network resource by lower-cased id, the records' owners, regions that are down.
#[derive(Debug, Default)]
pub struct Network {
    resources: BTreeMap<String, Value>,
    /// A record id → the zone group that wrote it.
    record_owner: BTreeMap<String, String>,
    down: BTreeSet<String>,
    next_ip: u32,
    pub consumers: Vec<Consumer>,
    /// The caller's actions `…/Microsoft.Authorization/permissions` answers (empty: `*`).
    pub actions: Vec<String>,
    /// New connections wait for approval on the hub (`Pending`) instead of being auto-approved.
    pub manual_approval: bool,
}

/// What the network needs to know of a hub when an endpoint to it is created.
pub struct HubView<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub events_host: String,
}

/// `sb://ns.servicebus.windows.net/` → `ns.servicebus.windows.net`.
pub fn events_host(doc: &Value) -> String {
    doc["properties"]["eventHubEndpoints"]["events"]["endpoint"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("sb://")
        .trim_end_matches('/')
        .to_string()
}

fn key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The zone a fully qualified name registers in, and its record name.
fn zone_for(fqdn: &str) -> Option<(&'static str, &str)> {
    for (zone, public) in [
        (HUB_ZONE, ".azure-devices.net"),
        (EVENTS_ZONE, ".servicebus.windows.net"),
    ] {
        if let Some(label) = fqdn.strip_suffix(public) {
            return Some((zone, label));
        }
    }
    None
}

impl Network {
    pub fn get(&self, id: &str) -> Option<Value> {
        self.resources.get(&key(id)).cloned()
    }

    /// Every resource, sorted by id (the control API's view, for before/after comparisons).
    pub fn dump(&self) -> Value {
        json!({
            "resources": self.resources,
            "down_regions": self.down,
        })
    }

    /// Children of `parent` of one type (`privateDnsZoneGroups`, `virtualNetworkLinks`, `A`).
    pub fn children(&self, parent: &str, kind: &str) -> Vec<Value> {
        let prefix = format!("{}/{}/", key(parent), kind.to_ascii_lowercase());
        self.resources
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The hub approved, rejected or disconnected `pe_id`'s connection: the endpoint shows it
    /// (a `Pending` endpoint serves nothing; `consumer_reaches` needs `Approved`).
    pub fn set_connection_state(&mut self, pe_id: &str, state: &Value) {
        if let Some(pe) = self.resources.get_mut(&key(pe_id))
            && let Some(c) = pe
                .pointer_mut("/properties/privateLinkServiceConnections/0/properties")
                .and_then(Value::as_object_mut)
        {
            c.insert("privateLinkServiceConnectionState".into(), state.clone());
        }
    }

    /// Whether the caller may do `action` (the control API's action list; empty: everything).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.is_empty()
            || self.actions.iter().any(|a| {
                a == "*"
                    || a.eq_ignore_ascii_case(action)
                    || a.strip_suffix('*').is_some_and(|p| {
                        action
                            .to_ascii_lowercase()
                            .starts_with(&p.to_ascii_lowercase())
                    })
            })
    }

    pub fn set_region_down(&mut self, region: &str, down: bool) {
        let r = normalize_region(region);
        if down {
            self.down.insert(r);
        } else {
            self.down.remove(&r);
        }
    }

    pub fn is_down(&self, region: &str) -> bool {
        self.down.contains(&normalize_region(region))
    }

    fn check_up(&self, location: &str) -> Result<(), Refused> {
        if self.is_down(location) {
            return Err(refused(
                503,
                "ServiceUnavailable",
                format!("The region '{location}' is currently unavailable (simulated outage)."),
            ));
        }
        Ok(())
    }

    pub fn put_vnet(&mut self, id: &str, location: &str, prefix: &str) -> Value {
        let doc = json!({
            "id": id, "name": name_of(id), "type": "Microsoft.Network/virtualNetworks",
            "location": normalize_region(location),
            "properties": {"provisioningState": "Succeeded",
                "addressSpace": {"addressPrefixes": [prefix]},
                "subnets": [{"id": format!("{id}/subnets/pe"), "name": "pe",
                    "properties": {"addressPrefix": prefix, "privateEndpointNetworkPolicies": "Disabled"}}]}
        });
        self.resources.insert(key(id), doc.clone());
        doc
    }

    /// `PUT …/privateDnsZones/{zone}` (location `global`).
    pub fn put_zone(&mut self, id: &str) -> Value {
        let doc = self.resources.get(&key(id)).cloned().unwrap_or_else(|| {
            json!({"id": id, "name": name_of(id), "type": "Microsoft.Network/privateDnsZones",
                "location": "global", "etag": uuid::Uuid::new_v4().to_string(),
                "properties": {"provisioningState": "Succeeded", "numberOfRecordSets": 1,
                    "numberOfVirtualNetworkLinks": 0}})
        });
        self.resources.insert(key(id), doc.clone());
        doc
    }

    /// `PUT …/privateDnsZones/{zone}/virtualNetworkLinks/{link}`. A virtual network can be
    /// linked to only one zone of a given name.
    pub fn put_link(&mut self, id: &str, body: &Value) -> Result<(bool, Value), Refused> {
        let zone_id = id
            .rsplit_once("/virtualNetworkLinks/")
            .map_or(id, |(z, _)| z);
        let Some(zone) = self.get(zone_id) else {
            return Err(refused(
                404,
                "ParentResourceNotFound",
                format!("The private DNS zone '{}' was not found.", name_of(zone_id)),
            ));
        };
        let Some(vnet) = body["properties"]["virtualNetwork"]["id"].as_str() else {
            return Err(refused(
                400,
                "InvalidRequestFormat",
                "properties.virtualNetwork.id is required.",
            ));
        };
        if self.get(vnet).is_none() {
            return Err(refused(
                400,
                "InvalidVirtualNetworkId",
                format!("The virtual network '{vnet}' was not found."),
            ));
        }
        let zone_name = zone["name"].as_str().unwrap_or("").to_ascii_lowercase();
        let clash = self.links().into_iter().find(|l| {
            key(l["properties"]["virtualNetwork"]["id"]
                .as_str()
                .unwrap_or(""))
                == key(vnet)
                && key(l["id"].as_str().unwrap_or("")) != key(id)
                && zone_name_of_link(l) == zone_name
        });
        if let Some(other) = clash {
            return Err(refused(
                409,
                "Conflict",
                format!(
                    "A virtual network cannot be linked to multiple zones with overlapping namespaces. The virtual network is already linked by '{}'.",
                    other["id"].as_str().unwrap_or("")
                ),
            ));
        }
        let created = !self.resources.contains_key(&key(id));
        let doc = json!({
            "id": id, "name": name_of(id),
            "type": "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
            "location": "global", "etag": uuid::Uuid::new_v4().to_string(),
            "properties": {"virtualNetwork": {"id": vnet},
                "registrationEnabled": body["properties"]["registrationEnabled"].as_bool().unwrap_or(false),
                "virtualNetworkLinkState": "Completed", "provisioningState": "Succeeded"}
        });
        self.resources.insert(key(id), doc.clone());
        Ok((created, doc))
    }

    fn links(&self) -> Vec<Value> {
        self.resources
            .iter()
            .filter(|(k, _)| k.contains("/virtualnetworklinks/"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `PUT …/privateEndpoints/{name}` to a hub; `hub` is the hub its connection names.
    pub fn put_endpoint(
        &mut self,
        id: &str,
        body: &Value,
        hub: Option<&HubView>,
    ) -> Result<(bool, Value), Refused> {
        if let Some(existing) = self.get(id) {
            self.check_up(existing["location"].as_str().unwrap_or(""))?;
            return Ok((false, existing));
        }
        let location = body["location"].as_str().unwrap_or("");
        let subnet = body["properties"]["subnet"]["id"].as_str().unwrap_or("");
        let Some((vnet_id, _)) = subnet.rsplit_once("/subnets/") else {
            return Err(refused(
                400,
                "InvalidRequestFormat",
                "properties.subnet.id must name a subnet.",
            ));
        };
        let Some(vnet) = self.get(vnet_id) else {
            return Err(refused(
                400,
                "InvalidResourceReference",
                format!("Resource {subnet} referenced by resource {id} was not found."),
            ));
        };
        let vnet_location = vnet["location"].as_str().unwrap_or("").to_string();
        if normalize_region(location) != vnet_location {
            return Err(refused(
                400,
                "InvalidResourceLocation",
                format!(
                    "The private endpoint must be in the virtual network's region '{vnet_location}'."
                ),
            ));
        }
        self.check_up(location)?;
        let Some(hub) = hub else {
            return Err(refused(
                400,
                "PrivateLinkServiceNotFound",
                "properties.privateLinkServiceConnections[0].properties.privateLinkServiceId must name an existing IoT hub.",
            ));
        };
        let doc = self.new_endpoint(id, location, subnet, body, hub);
        self.resources.insert(key(id), doc.clone());
        Ok((true, doc))
    }

    fn new_endpoint(
        &mut self,
        id: &str,
        location: &str,
        subnet: &str,
        body: &Value,
        hub: &HubView,
    ) -> Value {
        let connection = &body["properties"]["privateLinkServiceConnections"][0];
        let (status, description) = if self.manual_approval {
            ("Pending", "Awaiting approval")
        } else {
            ("Approved", "Auto-Approved")
        };
        let mut dns = Vec::new();
        for fqdn in [hub.host.to_string(), hub.events_host.clone()] {
            self.next_ip = self.next_ip.saturating_add(1);
            let ip = format!(
                "10.0.{}.{}",
                self.next_ip.checked_div(250).unwrap_or(0),
                self.next_ip.checked_rem(250).unwrap_or(0).saturating_add(4)
            );
            dns.push(json!({"fqdn": fqdn, "ipAddresses": [ip]}));
        }
        json!({
            "id": id, "name": name_of(id), "type": "Microsoft.Network/privateEndpoints",
            "location": normalize_region(location), "etag": format!("W/\"{}\"", uuid::Uuid::new_v4()),
            "properties": {
                "provisioningState": "Succeeded",
                "subnet": {"id": subnet},
                "networkInterfaces": [{"id": format!("{id}.nic.{}", uuid::Uuid::new_v4().simple())}],
                "privateLinkServiceConnections": [{
                    "id": format!("{id}/privateLinkServiceConnections/{}", connection["name"].as_str().unwrap_or("connection")),
                    "name": connection["name"].as_str().unwrap_or("connection"),
                    "properties": {
                        "provisioningState": "Succeeded",
                        "privateLinkServiceId": hub.id,
                        "groupIds": connection["properties"]["groupIds"].clone(),
                        "privateLinkServiceConnectionState": {"status": status, "description": description, "actionsRequired": "None"}
                    }
                }],
                "manualPrivateLinkServiceConnections": [],
                "customDnsConfigs": dns,
            }
        })
    }

    /// `DELETE …/privateEndpoints/{name}`: its zone groups (and their records) go with it.
    /// Returns whether it existed.
    pub fn delete_endpoint(&mut self, id: &str) -> Result<bool, Refused> {
        let Some(existing) = self.get(id) else {
            return Ok(false);
        };
        self.check_up(existing["location"].as_str().unwrap_or(""))?;
        for group in self.children(id, "privateDnsZoneGroups") {
            self.remove_group(group["id"].as_str().unwrap_or(""));
        }
        self.resources.remove(&key(id));
        Ok(true)
    }

    /// `PUT …/privateEndpoints/{pe}/privateDnsZoneGroups/{group}`: writes one A record per DNS
    /// name of the endpoint in the matching zone (replacing what the group wrote before).
    pub fn put_zone_group(&mut self, id: &str, body: &Value) -> Result<(bool, Value), Refused> {
        let pe_id = id
            .rsplit_once("/privateDnsZoneGroups/")
            .map_or(id, |(p, _)| p);
        let Some(pe) = self.get(pe_id) else {
            return Err(refused(
                404,
                "ParentResourceNotFound",
                format!("The private endpoint '{}' was not found.", name_of(pe_id)),
            ));
        };
        self.check_up(pe["location"].as_str().unwrap_or(""))?;
        let mut zones = Vec::new();
        for cfg in body["properties"]["privateDnsZoneConfigs"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let zone_id = cfg["properties"]["privateDnsZoneId"].as_str().unwrap_or("");
            if self.get(zone_id).is_none() {
                return Err(refused(
                    400,
                    "InvalidPrivateDnsZoneIds",
                    format!("Private DNS zone {zone_id} was not found."),
                ));
            }
            zones.push((
                cfg["name"].as_str().unwrap_or("config").to_string(),
                zone_id.to_string(),
            ));
        }
        let created = !self.resources.contains_key(&key(id));
        self.remove_group(id);
        let configs = self.write_records(id, &pe, &zones);
        let doc = json!({
            "id": id, "name": name_of(id),
            "type": "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
            "properties": {"provisioningState": "Succeeded", "privateDnsZoneConfigs": configs}
        });
        self.resources.insert(key(id), doc.clone());
        Ok((created, doc))
    }

    fn write_records(&mut self, group: &str, pe: &Value, zones: &[(String, String)]) -> Vec<Value> {
        let mut configs = Vec::new();
        for (name, zone_id) in zones {
            let zone_name = name_of(zone_id).to_ascii_lowercase();
            let mut sets = Vec::new();
            for dns in pe["properties"]["customDnsConfigs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let fqdn = dns["fqdn"].as_str().unwrap_or("");
                let Some((zone, label)) = zone_for(fqdn) else {
                    continue;
                };
                if zone != zone_name {
                    continue;
                }
                let record_id = format!("{zone_id}/A/{label}");
                let ips = dns["ipAddresses"].clone();
                let records: Vec<Value> = ips
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|ip| json!({"ipv4Address": ip}))
                    .collect();
                self.resources.insert(key(&record_id), json!({
                    "id": record_id, "name": label, "type": "Microsoft.Network/privateDnsZones/A",
                    "etag": uuid::Uuid::new_v4().to_string(),
                    "properties": {"ttl": 10, "fqdn": format!("{label}.{zone}."), "isAutoRegistered": false, "aRecords": records}
                }));
                self.record_owner.insert(key(&record_id), key(group));
                sets.push(json!({"recordType": "A", "recordSetName": label,
                    "fqdn": format!("{label}.{zone}"), "provisioningState": "Succeeded", "ttl": 10, "ipAddresses": ips}));
            }
            configs.push(json!({"name": name, "properties": {"privateDnsZoneId": zone_id, "recordSets": sets}}));
        }
        configs
    }

    fn remove_group(&mut self, id: &str) {
        let owned: Vec<String> = self
            .record_owner
            .iter()
            .filter(|(_, g)| **g == key(id))
            .map(|(r, _)| r.clone())
            .collect();
        for r in owned {
            self.record_owner.remove(&r);
            self.resources.remove(&r);
        }
        self.resources.remove(&key(id));
    }

    /// `DELETE` of a link, zone group or zone: whether it existed.
    pub fn delete_plain(&mut self, id: &str) -> bool {
        if key(id).contains("/privatednszonegroups/") {
            let existed = self.resources.contains_key(&key(id));
            self.remove_group(id);
            return existed;
        }
        self.resources.remove(&key(id)).is_some()
    }

    /// Whether `consumer` reaches the hub's current Event Hub-compatible endpoint: a zone named
    /// `privatelink.servicebus.windows.net` linked to its `VNet` holds an A record for the
    /// namespace, and that address belongs to a private endpoint of a region that is up whose
    /// DNS configuration names the current namespace. `Err` says why not.
    pub fn consumer_reaches(&self, consumer: &Consumer, events_host: &str) -> Result<(), String> {
        let Some((_, label)) = zone_for(events_host) else {
            return Err(format!(
                "{events_host} is not a servicebus.windows.net name"
            ));
        };
        let link = self.links().into_iter().find(|l| {
            key(l["properties"]["virtualNetwork"]["id"]
                .as_str()
                .unwrap_or(""))
                == key(&consumer.vnet)
                && zone_name_of_link(l) == EVENTS_ZONE
        });
        let Some(link) = link else {
            return Err(format!(
                "no {EVENTS_ZONE} zone is linked to {}",
                consumer.vnet
            ));
        };
        let link_id = link["id"].as_str().unwrap_or("");
        let zone_id = link_id
            .rsplit_once("/virtualNetworkLinks/")
            .map_or("", |(z, _)| z);
        let Some(record) = self.get(&format!("{zone_id}/A/{label}")) else {
            return Err(format!(
                "{events_host} does not resolve: no A record {label} in {zone_id}"
            ));
        };
        let ip = record["properties"]["aRecords"][0]["ipv4Address"]
            .as_str()
            .unwrap_or("");
        let serving = self.resources.values().find(|r| {
            r["type"] == "Microsoft.Network/privateEndpoints"
                && r["properties"]["privateLinkServiceConnections"][0]["properties"]
                    ["privateLinkServiceConnectionState"]["status"]
                    == "Approved"
                && r["properties"]["customDnsConfigs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| {
                        d["fqdn"] == events_host
                            && d["ipAddresses"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|i| i == ip)
                    })
        });
        match serving {
            None => Err(format!(
                "{events_host} resolves to {ip}, which no private endpoint of the current namespace holds"
            )),
            Some(pe) if self.is_down(pe["location"].as_str().unwrap_or("")) => Err(format!(
                "{events_host} resolves to {ip}, a private endpoint in a region that is down"
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The zone name of a link id (`…/privateDnsZones/{zone}/virtualNetworkLinks/{link}`).
fn zone_name_of_link(link: &Value) -> String {
    let id = link["id"].as_str().unwrap_or("");
    id.rsplit_once("/virtualNetworkLinks/")
        .map_or("", |(z, _)| name_of(z))
        .to_ascii_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const RG: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network";

    fn hub(events: &str) -> HubView<'static> {
        HubView {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/h",
            host: "h.azure-devices.net",
            events_host: events.to_string(),
        }
    }

    fn world() -> (Network, Consumer) {
        let mut n = Network::default();
        n.put_vnet(&format!("{RG}/virtualNetworks/a"), "West US", "10.0.0.0/24");
        n.put_vnet(&format!("{RG}/virtualNetworks/c"), "West US", "10.1.0.0/24");
        n.put_zone(&format!("{RG}/privateDnsZones/{EVENTS_ZONE}"));
        let link =
            json!({"properties": {"virtualNetwork": {"id": format!("{RG}/virtualNetworks/c")}}});
        n.put_link(
            &format!("{RG}/privateDnsZones/{EVENTS_ZONE}/virtualNetworkLinks/c"),
            &link,
        )
        .unwrap();
        let c = Consumer {
            name: "r".into(),
            hub: "h".into(),
            vnet: format!("{RG}/virtualNetworks/c"),
        };
        (n, c)
    }

    fn endpoint(n: &mut Network, events: &str) {
        let body = json!({"location": "westus", "properties": {"subnet": {"id": format!("{RG}/virtualNetworks/a/subnets/pe")},
            "privateLinkServiceConnections": [{"name": "c", "properties": {"privateLinkServiceId": "x", "groupIds": ["iotHub"]}}]}});
        n.put_endpoint(
            &format!("{RG}/privateEndpoints/pe"),
            &body,
            Some(&hub(events)),
        )
        .unwrap();
        let group = json!({"properties": {"privateDnsZoneConfigs": [{"name": "eh", "properties": {"privateDnsZoneId": format!("{RG}/privateDnsZones/{EVENTS_ZONE}")}}]}});
        n.put_zone_group(
            &format!("{RG}/privateEndpoints/pe/privateDnsZoneGroups/default"),
            &group,
        )
        .unwrap();
    }

    #[test]
    fn consumer_follows_the_endpoint_that_names_the_current_namespace() {
        let (mut n, c) = world();
        assert!(
            n.consumer_reaches(&c, "ns1.servicebus.windows.net")
                .is_err()
        );
        endpoint(&mut n, "ns1.servicebus.windows.net");
        assert_eq!(n.consumer_reaches(&c, "ns1.servicebus.windows.net"), Ok(()));
        // A failover moves the namespace: the old endpoint does not serve it.
        assert!(
            n.consumer_reaches(&c, "ns2.servicebus.windows.net")
                .is_err()
        );
        assert!(
            n.delete_endpoint(&format!("{RG}/privateEndpoints/pe"))
                .unwrap()
        );
        assert!(
            n.children(&format!("{RG}/privateDnsZones/{EVENTS_ZONE}"), "A")
                .is_empty()
        );
        endpoint(&mut n, "ns2.servicebus.windows.net");
        assert_eq!(n.consumer_reaches(&c, "ns2.servicebus.windows.net"), Ok(()));
        n.set_region_down("West US", true);
        assert!(
            n.consumer_reaches(&c, "ns2.servicebus.windows.net")
                .is_err()
        );
        assert_eq!(
            n.delete_endpoint(&format!("{RG}/privateEndpoints/pe"))
                .unwrap_err()
                .status,
            503
        );
    }

    #[test]
    fn a_vnet_links_to_one_zone_of_a_name() {
        let (mut n, _) = world();
        n.put_zone(&format!("/subscriptions/s/resourceGroups/other/providers/Microsoft.Network/privateDnsZones/{EVENTS_ZONE}"));
        let link =
            json!({"properties": {"virtualNetwork": {"id": format!("{RG}/virtualNetworks/c")}}});
        let err = n
            .put_link(&format!("/subscriptions/s/resourceGroups/other/providers/Microsoft.Network/privateDnsZones/{EVENTS_ZONE}/virtualNetworkLinks/c"), &link)
            .unwrap_err();
        assert_eq!(err.status, 409);
    }
}
