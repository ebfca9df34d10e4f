//! One simulated `IoT` Hub's data plane: the route table and the per-request gate.
//!
//! Owns: the gate, in the order a real hub applies it — injected faults, IP firewall (from the
//! ARM resource document), `api-version`, authentication and rights, throttling — and the route
//! table. The hub's state is in `state`; handlers live in `devices`, `twins`, `query`, `jobs`.
//! Must not: be depended on by a handler (handlers depend on `state`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use time::OffsetDateTime;

use crate::access::{Need, classify};
use crate::devices::BulkCarriedOut;
use crate::error::HubError;
use crate::net::{ClientCert, Peer};
use crate::registry::Auth;
use crate::sas;
// The hub's state used to live here: its old paths (`hub::Hub`, `hub::lock`, …) keep working.
pub use crate::state::{Hub, body_json, if_match, json_response, lock, now_ms, now_secs};
use crate::{devices, firewall, jobs, query, twins};

/// The data-plane router of one hub.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/devices", get(devices::list).post(devices::bulk))
        .route("/devices/query", post(query::run))
        .route(
            "/devices/{id}",
            get(devices::get_device)
                .put(devices::put_device)
                .delete(devices::delete_device),
        )
        .route("/devices/{id}/modules", get(devices::list_modules))
        .route(
            "/devices/{id}/modules/{mid}",
            get(devices::get_module)
                .put(devices::put_module)
                .delete(devices::delete_module),
        )
        .route("/devices/{id}/messages/events", post(devices::telemetry))
        .route(
            "/twins/{id}",
            get(twins::get_twin)
                .put(twins::put_twin)
                .patch(twins::patch_twin),
        )
        .route(
            "/twins/{id}/modules/{mid}",
            get(twins::get_module_twin)
                .put(twins::put_module_twin)
                .patch(twins::patch_module_twin),
        )
        .route("/statistics/devices", get(devices::statistics))
        .route("/statistics/service", get(devices::service_statistics))
        .route("/configurations", get(devices::list_configurations))
        .route(
            "/configurations/{id}",
            put(devices::put_configuration)
                .get(devices::get_configuration)
                .delete(devices::delete_configuration),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/create", post(jobs::create))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .fallback(|| async {
            HubError::new(
                404_000,
                "NotFound",
                "The requested resource does not exist on this hub.",
            )
        })
        .layer(middleware::from_fn_with_state(hub.clone(), gate))
        .with_state(hub)
}

async fn gate(
    State(hub): State<Arc<Hub>>,
    ConnectInfo(Peer(peer, cert)): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(early) = faults(&hub, peer).await {
        return early;
    }
    let response = admitted(hub.clone(), (peer, cert), req, next).await;
    // `lose_bulk_responses`: a bulk call that was carried out loses its answer (the connection is
    // cut instead); one refused by the firewall, auth, throttling or the handler is answered and
    // leaves the counter alone.
    if response.extensions().get::<BulkCarriedOut>().is_some() && lose_bulk_response(&hub) {
        hub.drops.arm(peer);
    }
    response
}

/// Consume one `lose_bulk_responses`; `true` when one was left.
fn lose_bulk_response(hub: &Hub) -> bool {
    let mut f = lock(&hub.faults);
    let lose = f.lose_bulk_responses > 0;
    f.lose_bulk_responses = f.lose_bulk_responses.saturating_sub(1);
    lose
}

/// The rest of [`gate`] once injected faults have had their say.
async fn admitted(
    hub: Arc<Hub>,
    (peer, cert): (std::net::SocketAddr, Option<ClientCert>),
    req: Request,
    next: Next,
) -> Response {
    let resource_allows = firewall::allows(&lock(&hub.shared.resource), peer.ip());
    if !resource_allows {
        return HubError::unauthorized().into_response();
    }
    let has_version = req.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "api-version" && !v.is_empty())
    });
    if !has_version {
        return HubError::new(
            400_001,
            "InvalidProtocolVersion",
            "The api-version query parameter is required.",
        )
        .into_response();
    }
    let (need, class) = classify(req.method(), req.uri().path());
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let authorized = match (&need, header.as_deref(), cert) {
        // A device over TLS with a client certificate and no token: X.509 authentication.
        (Need::Device(id), None, Some(cert)) => check_device_cert(&hub, id, cert),
        _ => authorize(&hub, header.as_deref(), &need, req.uri().path()),
    };
    if let Err(e) = authorized {
        return e.into_response();
    }
    if let Some(e) = hub.throttled(class, Instant::now()) {
        return e.into_response();
    }
    next.run(req).await
}

/// Apply injected faults; `Some` ends the request early.
async fn faults(hub: &Hub, peer: std::net::SocketAddr) -> Option<Response> {
    let (delay, burst, drop, failing_over) = {
        let mut f = lock(&hub.faults);
        let failing_over = f.failing_over(now_ms()) || hub.shared.failing_over(now_ms());
        let delay = (f.slow_count > 0).then(|| {
            f.slow_count = f.slow_count.saturating_sub(1);
            Duration::from_millis(f.slow_ms)
        });
        let burst = (f.error_burst > 0).then(|| {
            f.error_burst = f.error_burst.saturating_sub(1);
            f.error_status.unwrap_or(503)
        });
        let drop = f.drop_count > 0;
        if drop {
            f.drop_count = f.drop_count.saturating_sub(1);
        }
        (delay, burst, drop, failing_over)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if failing_over {
        return Some(
            HubError::new(
                404_012,
                "IotHubFailingOver",
                "The IoT hub is failing over. Retry the request later.",
            )
            .into_response(),
        );
    }
    if drop {
        hub.drops.arm(peer);
        return Some(HubError::new(503_001, "ServiceUnavailable", "dropped").into_response());
    }
    burst.map(|status| match status {
        500 => HubError::new(500_001, "ServerError", "An internal server error occurred.")
            .into_response(),
        _ => HubError::new(
            503_001,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Retry the request.",
        )
        .into_response(),
    })
}

/// Check the `Authorization` header against what the operation on `path` needs.
fn authorize(hub: &Hub, header: Option<&str>, need: &Need, path: &str) -> Result<(), HubError> {
    let Some(header) = header.filter(|h| !h.trim().is_empty()) else {
        return Err(HubError::forbidden_right(
            "The Authorization header is missing.",
        ));
    };
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let skew = lock(&hub.faults).expire_tokens_early_secs;
    let resource_flag = |name: &str| {
        lock(&hub.shared.resource)["properties"][name]
            .as_bool()
            .unwrap_or(false)
    };
    if let Some(token) = header.strip_prefix("Bearer ") {
        let limits = lock(&hub.limits);
        let ok = limits.accept_bearer
            && limits
                .bearer_token
                .as_deref()
                .is_none_or(|t| t == token.trim());
        // An Entra principal is taken to hold every data action; RBAC is not simulated.
        return if ok && !matches!(need, Need::Device(_)) {
            Ok(())
        } else {
            Err(HubError::unauthorized())
        };
    }
    let token = sas::parse(header).ok_or_else(HubError::unauthorized)?;
    if resource_flag("disableLocalAuth") {
        return Err(HubError::unauthorized());
    }
    if let Need::Device(id) = need
        && token.skn.is_none()
    {
        if resource_flag("disableDeviceSAS") {
            return Err(HubError::unauthorized());
        }
        return check_device_token(hub, &token, id, now, skew);
    }
    let rights =
        sas::check_service_token(&token, &hub.shared.host, &hub.shared.policies, now, skew)?;
    // A policy token may be scoped below the hub (`{host}/devices/{id}`): it then covers only
    // that device's paths (§1.1: `sr` is the host name or a prefix of the requested path).
    if let Some(scoped) = token.device_scope(&hub.shared.host) {
        let covered = match need {
            Need::Device(id) => scoped == id,
            _ => [format!("/devices/{scoped}"), format!("/twins/{scoped}")]
                .iter()
                .any(|p| {
                    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
                    decoded == p.as_str() || decoded.starts_with(&format!("{p}/"))
                }),
        };
        if !covered {
            return Err(HubError::unauthorized());
        }
    }
    if need.satisfied_by(rights) {
        Ok(())
    } else {
        Err(HubError::forbidden_right(format!(
            "The policy '{}' does not grant the rights this operation needs.",
            token.skn.as_deref().unwrap_or("")
        )))
    }
}

/// A device that authenticates with its certificate (X.509 thumbprint authentication): the
/// certificate the TLS handshake proved the caller holds must be one of the device's two
/// thumbprints. A CA-authenticated device is refused: IoT Hub does not accept X.509 CA
/// authentication over HTTPS (docs/simulator.md).
fn check_device_cert(hub: &Hub, id: &str, cert: ClientCert) -> Result<(), HubError> {
    // `disableLocalAuth` and `disableDeviceSAS` govern SAS tokens; certificates are unaffected.
    let reg = lock(&hub.registry);
    let device = reg.devices.get(id).ok_or_else(HubError::unauthorized)?;
    let matches = match &device.auth {
        Auth::SelfSigned { primary, secondary } => {
            cert.matches(primary) || secondary.as_deref().is_some_and(|s| cert.matches(s))
        }
        _ => false,
    };
    if !matches {
        return Err(HubError::unauthorized());
    }
    if !device.enabled {
        return Err(HubError::new(
            401_002,
            "IotHubUnauthorizedAccess",
            "Unauthorized",
        ));
    }
    Ok(())
}

/// A device-scoped token (no `skn`) must name this device and be signed with one of its keys.
fn check_device_token(
    hub: &Hub,
    token: &sas::SasToken,
    id: &str,
    now: u64,
    skew: u64,
) -> Result<(), HubError> {
    // Module-scoped tokens are signed with the module's key, not the device's.
    let module_scoped = token.sr.contains("/modules/");
    if token.se <= now.saturating_add(skew)
        || module_scoped
        || token.device_scope(&hub.shared.host) != Some(id)
    {
        return Err(HubError::unauthorized());
    }
    let reg = lock(&hub.registry);
    let device = reg.devices.get(id).ok_or_else(HubError::unauthorized)?;
    let signed = match &device.auth {
        Auth::Sas { primary, secondary } => {
            token.signed_with(&primary.text()) || token.signed_with(&secondary.text())
        }
        _ => false,
    };
    if !signed {
        return Err(HubError::unauthorized());
    }
    if !device.enabled {
        return Err(HubError::new(
            401_002,
            "IotHubUnauthorizedAccess",
            "Unauthorized",
        ));
    }
    Ok(())
}
