//! `serve --metrics ADDR`: `/metrics` (Prometheus), `/healthz` (the process is up) and `/readyz`
//! (policies loaded and the store reachable).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hubvault::service::lease::Leases;
use hubvault::service::metrics::Metrics;
use hubvault::shutdown::Shutdown;

use super::super::Result;

/// What the endpoints read.
pub struct Probe {
    pub metrics: Arc<Metrics>,
    pub leases: Leases,
    /// At least one policy is loaded and scheduled.
    pub loaded: AtomicBool,
    /// The hubs scheduled now (whose store-state gauges are refreshed).
    pub hubs: std::sync::Mutex<Vec<String>>,
}

/// Bind `addr` and serve until `shutdown`. Binding errors are returned at once.
pub async fn start(
    addr: SocketAddr,
    probe: Arc<Probe>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        hubvault::Error::usage(
            format!("cannot listen on --metrics {addr}: {e}"),
            "pick a free port, or another address",
        )
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(probe);
    Ok(tokio::spawn(async move {
        let stop = async move { shutdown.requested().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("the metrics server stopped: {e}");
        }
    }))
}

async fn metrics(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.metrics.encode(),
    )
}

async fn readyz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    if !probe.loaded.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n");
    }
    if !probe.leases.reachable().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "store not reachable\n");
    }
    (StatusCode::OK, "ready\n")
}
