//! Reading what the plan is decided from: the hub (regions, Event Hub-compatible endpoint,
//! private endpoint connections), each private endpoint and its zone groups, the links of the
//! configured zones, the caller's permissions, and the newest backup in the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{Error, name_of};
use crate::arm::{
    API_VERSION, ArmCall, ArmClient, NETWORK_API_VERSION, PERMISSIONS_API_VERSION,
    PRIVATE_DNS_API_VERSION,
};
use crate::config::FailoverEntry;
use crate::snapshot::catalog::HubNames;
use crate::store::Store;

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

/// The hub document's facts.
pub struct HubFacts {
    pub primary: String,
    pub secondary: String,
    pub events: EventHubEndpoint,
    pub connections: Vec<(String, String)>,
}

pub fn hub_facts(doc: &Value) -> HubFacts {
    let role = |r: &str| {
        doc.pointer("/properties/locations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| {
                l["role"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(r))
            })
            .and_then(|l| l["location"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let events = &doc["properties"]["eventHubEndpoints"]["events"];
    let connections = doc["properties"]["privateEndpointConnections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["properties"]["privateEndpoint"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                c["properties"]["privateLinkServiceConnectionState"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    HubFacts {
        primary: role("primary"),
        secondary: role("secondary"),
        events: EventHubEndpoint {
            endpoint: events["endpoint"].as_str().unwrap_or("").to_owned(),
            path: events["path"].as_str().unwrap_or("").to_owned(),
        },
        connections,
    }
}

/// `GET` the hub's ARM document.
pub async fn hub_doc(arm: &ArmClient, hub_id: &str) -> Result<Value, Error> {
    Ok(arm
        .send(&ArmCall::new("GET", hub_id, API_VERSION))
        .await?
        .success(hub_id)?
        .body)
}

/// Everything the plan needs.
pub async fn observe(
    arm: &ArmClient,
    hub_id: &str,
    entry: &FailoverEntry,
    store: &dyn Store,
    names: &HubNames,
) -> Result<Observed, Error> {
    let facts = hub_facts(&hub_doc(arm, hub_id).await?);
    let mut endpoints = Vec::new();
    for (id, _) in &facts.connections {
        if let Some(spec) = endpoint_spec(arm, id).await? {
            endpoints.push(spec);
        }
    }
    let pending = facts
        .connections
        .iter()
        .filter(|(_, s)| !s.eq_ignore_ascii_case("Approved"))
        .map(|(id, s)| format!("{} ({s})", name_of(id)))
        .collect();
    let (links, missing_zones) = links(arm, entry).await?;
    Ok(Observed {
        hub_id: hub_id.to_owned(),
        primary: facts.primary,
        secondary: facts.secondary,
        events: facts.events,
        endpoints,
        pending,
        links,
        missing_zones,
        permissions: permissions(arm, hub_id, entry).await,
        newest_backup: newest_backup(store, names).await?,
    })
}

async fn endpoint_spec(arm: &ArmClient, id: &str) -> Result<Option<EndpointSpec>, Error> {
    let pe = arm
        .send(&ArmCall::new("GET", id, NETWORK_API_VERSION))
        .await?;
    if pe.status == 404 {
        return Ok(None);
    }
    let pe = pe.success(id)?.body;
    let groups = arm
        .send(&ArmCall::new(
            "GET",
            &format!("{id}/privateDnsZoneGroups"),
            NETWORK_API_VERSION,
        ))
        .await?
        .success(id)?
        .body;
    let group = groups["value"].as_array().and_then(|v| v.first()).cloned();
    let connection = &pe["properties"]["privateLinkServiceConnections"][0];
    Ok(Some(EndpointSpec {
        id: id.to_owned(),
        location: pe["location"].as_str().unwrap_or("").to_owned(),
        subnet: pe["properties"]["subnet"]["id"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        connection: connection["name"]
            .as_str()
            .unwrap_or("connection")
            .to_owned(),
        group_ids: connection["properties"]["groupIds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        zone_group: group
            .as_ref()
            .and_then(|g| g["name"].as_str())
            .unwrap_or("default")
            .to_owned(),
        zones: group
            .as_ref()
            .and_then(|g| g["properties"]["privateDnsZoneConfigs"].as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|c| {
                c["properties"]["privateDnsZoneId"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect(),
    }))
}

async fn links(
    arm: &ArmClient,
    entry: &FailoverEntry,
) -> Result<(Vec<LinkFact>, Vec<String>), Error> {
    let mut links = Vec::new();
    let mut missing = Vec::new();
    for zone in entry.regions.values().flat_map(|r| &r.zones) {
        let answer = arm
            .send(&ArmCall::new(
                "GET",
                &format!("{zone}/virtualNetworkLinks"),
                PRIVATE_DNS_API_VERSION,
            ))
            .await?;
        if answer.status == 404 {
            missing.push(zone.clone());
            continue;
        }
        for l in answer.success(zone)?.body["value"]
            .as_array()
            .into_iter()
            .flatten()
        {
            links.push(LinkFact {
                id: l["id"].as_str().unwrap_or("").to_owned(),
                zone: zone.clone(),
                vnet: l["properties"]["virtualNetwork"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            });
        }
    }
    Ok((links, missing))
}

/// The caller's actions on the hub and on each region's resource group; unreadable → empty.
async fn permissions(arm: &ArmClient, hub_id: &str, entry: &FailoverEntry) -> Vec<Permissions> {
    let mut scopes = vec![hub_id.to_owned()];
    scopes.extend(entry.regions.values().map(|r| r.resource_group.clone()));
    let mut out = Vec::new();
    for scope in scopes {
        let call = ArmCall::new(
            "GET",
            &format!("{scope}/providers/Microsoft.Authorization/permissions"),
            PERMISSIONS_API_VERSION,
        );
        let Ok(answer) = arm.send(&call).await else {
            return Vec::new();
        };
        if !answer.is_success() {
            return Vec::new();
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        for p in answer.body["value"].as_array().into_iter().flatten() {
            out.push(Permissions {
                scope: scope.clone(),
                actions: strings(&p["actions"]),
                not_actions: strings(&p["notActions"]),
            });
        }
    }
    out
}

/// When the newest snapshot of the hub was written (its manifest's time in the store).
async fn newest_backup(
    store: &dyn Store,
    names: &HubNames,
) -> Result<Option<OffsetDateTime>, Error> {
    let listed = store.list("").await?;
    Ok(listed
        .iter()
        .filter(|m| {
            let mut parts = m.name.split('/');
            matches!(
                (parts.next(), parts.next(), parts.next(), parts.next()),
                (Some(hub), Some(_), Some(file), None) if names.matches(hub) && file.starts_with("manifest")
            )
        })
        .map(|m| m.last_modified)
        .max())
}
