//! Probes during a failover: dedicated probe devices that hubvault creates on the hub (ids
//! `hubvault-probe-…`, `statusReason` naming them as probes) and removes afterwards — never a
//! real device id — each sending one device-to-cloud message per tick; and the consumers'
//! health checks (an HTTP URL answering 2xx, or a command exiting 0). The samples become the
//! report's timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::ConsumerEntry;
use crate::device::telemetry::{self, DeviceTarget};
use crate::hub::HubClient;
use crate::hub::registry::{AuthenticationMechanism, Device, IfMatch, SymmetricKey};

/// What probe devices say about themselves.
pub const PROBE_PREFIX: &str = "hubvault-probe-";
pub const PROBE_REASON: &str = "hubvault failover probe; removed after the run";

/// One probe device: its id and key (kept in memory only).
pub struct ProbeDevice {
    pub id: String,
    pub(super) key: String,
}

/// One observation: when, and whether it worked.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: OffsetDateTime,
    pub ok: bool,
}

/// Everything sampled during a run.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub devices: Vec<Sample>,
    /// By consumer name; absent when the consumer has no health check.
    pub consumers: BTreeMap<String, Vec<Sample>>,
}

/// Create `count` probe devices; ids carry `run` so two runs never share one.
pub async fn create(hub: &HubClient, run: &str, count: usize) -> Vec<ProbeDevice> {
    let mut out = Vec::new();
    for i in 0..count {
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let id = format!("{PROBE_PREFIX}{}-{i}", run.to_ascii_lowercase());
        let device = Device {
            device_id: id.clone(),
            status: Some("enabled".into()),
            status_reason: Some(PROBE_REASON.into()),
            authentication: Some(AuthenticationMechanism {
                symmetric_key: Some(SymmetricKey {
                    primary_key: Some(key.clone()),
                    secondary_key: Some(key.clone()),
                }),
                x509_thumbprint: None,
                auth_type: Some("sas".into()),
            }),
            ..Device::default()
        };
        // A resumed run re-creates its probes: their keys were only ever in memory.
        let _ = hub.delete_device(&id, &IfMatch::Any).await;
        match hub.put_device(&device, &IfMatch::Absent).await {
            Ok(_) => out.push(ProbeDevice { id, key }),
            Err(e) => tracing::warn!("probe device {id} not created: {e}"),
        }
    }
    out
}

/// Remove the probe devices (and any a killed run left: every `hubvault-probe-` id given).
pub async fn remove(hub: &HubClient, ids: &[String]) -> usize {
    let mut removed = 0usize;
    for id in ids.iter().filter(|i| i.starts_with(PROBE_PREFIX)) {
        if hub.delete_device(id, &IfMatch::Any).await.is_ok() {
            removed = removed.saturating_add(1);
        }
    }
    removed
}

/// Whether one consumer is healthy now; `None` when it has no health check.
pub async fn consumer_healthy(http: &reqwest::Client, c: &ConsumerEntry) -> Option<bool> {
    if let Some(url) = &c.health_url {
        let answer = http.get(url).timeout(Duration::from_secs(2)).send().await;
        return Some(answer.is_ok_and(|r| r.status().is_success()));
    }
    let command = c.health_command.as_ref()?;
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    Some(matches!(
        tokio::time::timeout(Duration::from_secs(10), child).await,
        Ok(Ok(s)) if s.success()
    ))
}

/// Sample devices and consumers every `tick` until `stop` turns true (or `limit` passes).
pub async fn sample(
    http: reqwest::Client,
    target: DeviceTarget,
    devices: Vec<ProbeDevice>,
    consumers: Vec<ConsumerEntry>,
    tick: Duration,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) -> Samples {
    let mut samples = Samples::default();
    let started = tokio::time::Instant::now();
    let mut turn = 0usize;
    while !*stop.borrow() && started.elapsed() < limit {
        tick_once(&http, &target, &devices, &consumers, turn, &mut samples).await;
        turn = turn.wrapping_add(1);
        let _ = tokio::time::timeout(tick, stop.changed()).await;
    }
    // One last look, so a heal confirmed by the run's last step is on the timeline too.
    tick_once(&http, &target, &devices, &consumers, turn, &mut samples).await;
    samples
}

async fn tick_once(
    http: &reqwest::Client,
    target: &DeviceTarget,
    devices: &[ProbeDevice],
    consumers: &[ConsumerEntry],
    turn: usize,
    samples: &mut Samples,
) {
    if let Some(d) = devices.get(turn.checked_rem(devices.len()).unwrap_or(0)) {
        let status = telemetry::send(http, target, &d.id, &d.key, br#"{"probe":1}"#).await;
        samples.devices.push(Sample {
            at: OffsetDateTime::now_utc(),
            ok: matches!(status, Ok(s) if (200..300).contains(&s)),
        });
    }
    for c in consumers {
        if let Some(ok) = consumer_healthy(http, c).await {
            samples
                .consumers
                .entry(c.name.clone())
                .or_default()
                .push(Sample {
                    at: OffsetDateTime::now_utc(),
                    ok,
                });
        }
    }
}
