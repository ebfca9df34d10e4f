//! The HTTP side of `network`: routes under `…/providers/Microsoft.Network/…`, the hub's
//! `privateEndpointConnections` kept in step with the endpoints that target it, and
//! `…/providers/Microsoft.Authorization/permissions` (the caller's actions at a scope).

use std::sync::Mutex;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::network::{HubView, Refused, events_host};
use super::{ArmState, Ctx, arm_error, json_response};
use crate::shared::lock;

pub(super) fn route(ctx: &Ctx, method: &Method, segs: &[&str], body: &[u8]) -> Response {
    let id = format!("/{}", segs.join("/"));
    let kinds: Vec<String> = segs[6..]
        .iter()
        .step_by(2)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let complete = segs.len().is_multiple_of(2);
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let state = ctx.state;
    match (method.clone(), kinds.as_slice(), complete) {
        (Method::GET, ["privatednszones", "virtualnetworklinks"], false) => {
            let zone = id.rsplit_once('/').map_or("", |(z, _)| z);
            let value = lock(&state.network).children(zone, "virtualNetworkLinks");
            json_response(StatusCode::OK, &json!({"value": value}))
        }
        (Method::GET, ["privateendpoints", "privatednszonegroups"], false) => {
            let pe = id.rsplit_once('/').map_or("", |(p, _)| p);
            let value = lock(&state.network).children(pe, "privateDnsZoneGroups");
            json_response(StatusCode::OK, &json!({"value": value}))
        }
        (Method::GET, _, true) => match lock(&state.network).get(&id) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => not_found(&id),
        },
        (Method::PUT, ["privateendpoints"], true) => put_endpoint(state, &id, &body),
        (Method::DELETE, ["privateendpoints"], true) => delete_endpoint(state, &id),
        (Method::PUT, ["privateendpoints", "privatednszonegroups"], true) => {
            written(lock(&state.network).put_zone_group(&id, &body))
        }
        (Method::PUT, ["privatednszones"], true) => {
            json_response(StatusCode::OK, &lock(&state.network).put_zone(&id))
        }
        (Method::PUT, ["privatednszones", "virtualnetworklinks"], true) => {
            written(lock(&state.network).put_link(&id, &body))
        }
        (
            Method::DELETE,
            ["privateendpoints", "privatednszonegroups"]
            | ["privatednszones", "virtualnetworklinks"],
            true,
        ) => deleted(Ok(lock(&state.network).delete_plain(&id))),
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found in the namespace 'Microsoft.Network' (simulated: virtualNetworks, privateEndpoints, privateDnsZoneGroups, privateDnsZones, virtualNetworkLinks, A).",
        ),
    }
}

/// The caller may do everything unless the control API narrowed it.
pub(super) fn permissions(ctx: &Ctx) -> Response {
    let actions = lock(&ctx.state.network).actions.clone();
    let actions = if actions.is_empty() {
        vec!["*".to_string()]
    } else {
        actions
    };
    json_response(
        StatusCode::OK,
        &json!({"value": [{"actions": actions, "notActions": [], "dataActions": [], "notDataActions": []}]}),
    )
}

fn not_found(id: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The Resource '{id}' was not found."),
    )
}

fn refusal(r: &Refused) -> Response {
    arm_error(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        r.code,
        &r.message,
    )
}

fn written(result: Result<(bool, Value), Refused>) -> Response {
    match result {
        Ok((true, doc)) => json_response(StatusCode::CREATED, &doc),
        Ok((false, doc)) => json_response(StatusCode::OK, &doc),
        Err(r) => refusal(&r),
    }
}

fn deleted(result: Result<bool, Refused>) -> Response {
    match result {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refusal(&r),
    }
}

fn put_endpoint(state: &ArmState, id: &str, body: &Value) -> Response {
    let target = body["properties"]["privateLinkServiceConnections"][0]["properties"]
        ["privateLinkServiceId"]
        .as_str()
        .unwrap_or("");
    let hub = state
        .hubs
        .iter()
        .find(|h| h.resource_id.eq_ignore_ascii_case(target))
        .cloned();
    let view = hub.as_ref().map(|h| HubView {
        id: &h.resource_id,
        host: &h.host,
        events_host: events_host(&lock(&h.resource)),
    });
    let result = lock(&state.network).put_endpoint(id, body, view.as_ref());
    if let (Ok((true, doc)), Some(h)) = (&result, &hub) {
        let status = doc["properties"]["privateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"]
            .as_str()
            .unwrap_or("Approved");
        connect(&mut lock(&h.resource), id, status);
    }
    written(result)
}

fn delete_endpoint(state: &ArmState, id: &str) -> Response {
    let result = lock(&state.network).delete_endpoint(id);
    if matches!(result, Ok(true)) {
        for h in state.hubs.iter() {
            disconnect(&mut lock(&h.resource), id);
        }
    }
    deleted(result)
}

/// `PUT {hub}/privateEndpointConnections/{name}` (`PrivateEndpointConnections_Update`): the hub
/// owner approves, rejects or disconnects a connection. The body is a `PrivateEndpointConnection`
/// whose `properties.privateLinkServiceConnectionState` needs `status` and `description`. Answers
/// 200 with the connection (the operation is long-running in the spec; done at once here).
pub(super) fn update_connection(
    state: &ArmState,
    hub: &Mutex<Value>,
    name: &str,
    body: &[u8],
) -> Response {
    const ACTION: &str = "Microsoft.Devices/IotHubs/privateEndpointConnections/write";
    let hub_id = lock(hub)["id"].as_str().unwrap_or("").to_string();
    if !lock(&state.network).allows(ACTION) {
        return arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!(
                "The client does not have authorization to perform action '{ACTION}' over scope '{hub_id}/privateEndpointConnections/{name}' or the scope is invalid."
            ),
        );
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let wanted = &body["properties"]["privateLinkServiceConnectionState"];
    let status = wanted["status"].as_str().unwrap_or("");
    if !["Approved", "Rejected", "Disconnected", "Pending"].contains(&status)
        || !wanted["description"].is_string()
    {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "properties.privateLinkServiceConnectionState needs status (Approved, Rejected, Disconnected, Pending) and description.",
        );
    }
    let new_state = json!({"status": status, "description": wanted["description"],
        "actionsRequired": wanted["actionsRequired"].as_str().unwrap_or("None")});
    let mut doc = lock(hub);
    let Some(conn) = doc["properties"]["privateEndpointConnections"]
        .as_array_mut()
        .and_then(|l| {
            l.iter_mut().find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
    else {
        return not_found(&format!("{hub_id}/privateEndpointConnections/{name}"));
    };
    conn["properties"]["privateLinkServiceConnectionState"] = new_state.clone();
    let answer = conn.clone();
    drop(doc);
    if let Some(pe) = answer["properties"]["privateEndpoint"]["id"].as_str() {
        lock(&state.network).set_connection_state(pe, &new_state);
    }
    json_response(StatusCode::OK, &answer)
}

/// `GET {hub}/privateEndpointConnections/{name}`.
pub(super) fn get_connection(hub: &Mutex<Value>, name: &str) -> Response {
    let doc = lock(hub);
    let found = doc["properties"]["privateEndpointConnections"]
        .as_array()
        .and_then(|l| {
            l.iter().find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        });
    match found {
        Some(c) => json_response(StatusCode::OK, c),
        None => not_found(&format!(
            "{}/privateEndpointConnections/{name}",
            doc["id"].as_str().unwrap_or("")
        )),
    }
}

/// The hub's side of an approved connection (`IotHubDescription.properties.privateEndpointConnections`).
pub(super) fn connect(doc: &mut Value, pe_id: &str, status: &str) {
    let hub_id = doc["id"].as_str().unwrap_or("").to_string();
    let name = format!(
        "{}.{}",
        pe_id.rsplit('/').next().unwrap_or("pe"),
        uuid::Uuid::new_v4()
    );
    let entry = json!({
        "id": format!("{hub_id}/privateEndpointConnections/{name}"), "name": name,
        "type": "Microsoft.Devices/IotHubs/PrivateEndpointConnections",
        "properties": {"privateEndpoint": {"id": pe_id},
            "privateLinkServiceConnectionState": {"status": status, "description": "", "actionsRequired": "None"}}
    });
    if let Some(list) = doc["properties"]["privateEndpointConnections"].as_array_mut() {
        list.push(entry);
    } else {
        doc["properties"]["privateEndpointConnections"] = json!([entry]);
    }
}

fn disconnect(doc: &mut Value, pe_id: &str) {
    if let Some(list) = doc["properties"]["privateEndpointConnections"].as_array_mut() {
        list.retain(|c| {
            !c["properties"]["privateEndpoint"]["id"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(pe_id))
        });
    }
}
