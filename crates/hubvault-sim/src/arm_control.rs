//! The control API's ARM routes (documented in `control`): the whole simulated ARM state, the
//! failover window and clock, the region outage switch, the caller's permissions and the
//! consumers' health URLs.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use serde_json::{Map, Value, json};

use super::arm::ArmState;
use super::shared::lock;
use super::state::json_response;

type Slot = Arc<OnceLock<Arc<ArmState>>>;

pub fn router(slot: Slot) -> Router {
    Router::new()
        .route("/arm/state", get(state))
        .route("/arm/failover", patch(failover))
        .route("/arm/regions/{region}", put(region))
        .route("/arm/permissions", put(permissions))
        .route("/arm/approval", put(approval))
        .route("/consumers/{name}/health", get(health))
        .with_state(slot)
}

fn fail(status: StatusCode, text: &str) -> Response {
    json_response(status, &json!({"error": text}))
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn arm(slot: &Slot) -> Result<Arc<ArmState>, Response> {
    slot.get()
        .cloned()
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "ARM is not served by this simulator"))
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response"
)]
fn body_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, &format!("expected JSON: {e}")))
}

async fn state(State(slot): State<Slot>) -> Response {
    let arm = match arm(&slot) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let hubs: Map<String, Value> = arm
        .hubs()
        .iter()
        .map(|h| (h.name.clone(), lock(&h.resource).clone()))
        .collect();
    let network = lock(&arm.network).dump();
    json_response(StatusCode::OK, &json!({"network": network, "hubs": hubs}))
}

async fn failover(State(slot): State<Slot>, body: Bytes) -> Response {
    let (arm, body) = match (arm(&slot), body_json(&body)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(ms) = body.get("window_ms").and_then(Value::as_i64) {
        arm.set_failover_duration(time::Duration::milliseconds(ms));
    }
    if let Some(s) = body.get("clock_skew_secs").and_then(Value::as_i64) {
        arm.set_clock_skew(time::Duration::seconds(s));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn region(State(slot): State<Slot>, Path(region): Path<String>, body: Bytes) -> Response {
    let (arm, body) = match (arm(&slot), body_json(&body)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(down) = body.get("down").and_then(Value::as_bool) else {
        return fail(StatusCode::BAD_REQUEST, "expected {\"down\": true|false}");
    };
    lock(&arm.network).set_region_down(&region, down);
    StatusCode::NO_CONTENT.into_response()
}

async fn permissions(State(slot): State<Slot>, body: Bytes) -> Response {
    let (arm, body) = match (arm(&slot), body_json(&body)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Ok(actions) = serde_json::from_value::<Vec<String>>(body) else {
        return fail(StatusCode::BAD_REQUEST, "expected a list of action strings");
    };
    lock(&arm.network).actions = actions;
    StatusCode::NO_CONTENT.into_response()
}

async fn approval(State(slot): State<Slot>, body: Bytes) -> Response {
    let (arm, body) = match (arm(&slot), body_json(&body)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(manual) = body.get("manual").and_then(Value::as_bool) else {
        return fail(StatusCode::BAD_REQUEST, "expected {\"manual\": true|false}");
    };
    lock(&arm.network).manual_approval = manual;
    StatusCode::NO_CONTENT.into_response()
}

async fn health(State(slot): State<Slot>, Path(name): Path<String>) -> Response {
    let arm = match arm(&slot) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match arm.consumer_health(&name) {
        None => fail(
            StatusCode::NOT_FOUND,
            &format!("no consumer named '{name}'"),
        ),
        Some(Ok(())) => json_response(StatusCode::OK, &json!({"healthy": true})),
        Some(Err(reason)) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"healthy": false, "reason": reason}),
        ),
    }
}
