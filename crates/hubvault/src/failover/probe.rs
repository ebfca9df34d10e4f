//! Probes during a failover: dedicated probe devices that hubvault creates on the hub (ids
//! `hubvault-probe-…`, `statusReason` naming them as probes) and removes afterwards — never a
//! real device id — each sending one device-to-cloud message per tick; and the consumers'
//! health checks (an HTTP URL answering 2xx, or a command exiting 0). The samples become the
//! report's timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub ok: bool,
}

/// Everything sampled during a run.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub devices: Vec<Sample>,
    /// By consumer name; absent when the consumer has no health check.
    pub consumers: BTreeMap<String, Vec<Sample>>,
}

impl Samples {
    /// Add `other`'s samples (another process's, from the journal), keeping each series in time order.
    pub fn merge(&mut self, other: &Samples) {
        self.devices.extend_from_slice(&other.devices);
        self.devices.sort_by_key(|s| s.at);
        for (name, series) in &other.consumers {
            let mine = self.consumers.entry(name.clone()).or_default();
            mine.extend_from_slice(series);
            mine.sort_by_key(|s| s.at);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.consumers.values().all(Vec::is_empty)
    }

    /// The samples after the first `seen` of each series that change the series' state (or
    /// start it): what the journal keeps, so a resumed run's report still shows when things
    /// broke and healed before the crash.
    fn changes_since(&self, seen: &Seen) -> Samples {
        let changes = |series: &[Sample], from: usize| -> Vec<Sample> {
            series
                .iter()
                .enumerate()
                .skip(from)
                .filter(|(i, s)| {
                    i.checked_sub(1)
                        .and_then(|p| series.get(p))
                        .is_none_or(|prev| prev.ok != s.ok)
                })
                .map(|(_, s)| *s)
                .collect()
        };
        Samples {
            devices: changes(&self.devices, seen.devices),
            consumers: self
                .consumers
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        changes(s, seen.consumers.get(n).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, s)| !s.is_empty())
                .collect(),
        }
    }
}

/// How many samples of each series were already looked at for changes.
#[derive(Default)]
struct Seen {
    devices: usize,
    consumers: BTreeMap<String, usize>,
}

impl Seen {
    fn of(samples: &Samples) -> Seen {
        Seen {
            devices: samples.devices.len(),
            consumers: samples
                .consumers
                .iter()
                .map(|(n, s)| (n.clone(), s.len()))
                .collect(),
        }
    }
}

/// The id of probe `i` of run `run`: ids carry the run so two runs never share one, and a
/// resumed run finds (and removes) what a killed one left.
pub fn probe_id(run: &str, i: usize) -> String {
    format!("{PROBE_PREFIX}{}-{i}", run.to_ascii_lowercase())
}

/// Create `count` probe devices of `run` (those that cannot be created now are left out).
pub async fn create(hub: &HubClient, run: &str, count: usize) -> Vec<ProbeDevice> {
    let mut out = Vec::new();
    for i in 0..count {
        if let Some(d) = create_one(hub, probe_id(run, i)).await {
            out.push(d);
        }
    }
    out
}

async fn create_one(hub: &HubClient, id: String) -> Option<ProbeDevice> {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
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
        Ok(_) => Some(ProbeDevice { id, key }),
        Err(e) => {
            tracing::warn!("probe device {id} not created (retried while sampling): {e}");
            None
        }
    }
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

/// What samples during a run: the probes (created again while sampling when the hub refused them
/// at the start, as it does mid-failover), the consumers, how often and how long.
pub struct Sampler {
    pub http: reqwest::Client,
    pub target: DeviceTarget,
    /// To create missing probes; `None`: sample the given ones only.
    pub hub: Option<HubClient>,
    pub run: String,
    pub count: usize,
    pub devices: Vec<ProbeDevice>,
    pub consumers: Vec<ConsumerEntry>,
    pub tick: Duration,
    pub limit: Duration,
    /// Each change of state (a series starting, breaking or healing) is sent here, for the journal.
    pub changes: Option<mpsc::UnboundedSender<Samples>>,
}

impl Sampler {
    /// Sample every `tick` until `stop` turns true (or `limit` passes); returns the samples and
    /// the probes that exist now.
    pub async fn sample(mut self, mut stop: watch::Receiver<bool>) -> (Samples, Vec<ProbeDevice>) {
        let mut samples = Samples::default();
        let mut seen = Seen::default();
        let started = tokio::time::Instant::now();
        let mut turn = 0usize;
        loop {
            let last = *stop.borrow() || started.elapsed() >= self.limit;
            if turn.is_multiple_of(5) {
                self.create_missing().await;
            }
            let devices = &self.devices;
            tick_once(
                &self.http,
                &self.target,
                devices,
                &self.consumers,
                turn,
                &mut samples,
            )
            .await;
            if let Some(tx) = &self.changes {
                let changes = samples.changes_since(&seen);
                if !changes.is_empty() {
                    let _ = tx.send(changes);
                }
                seen = Seen::of(&samples);
            }
            // The last look happens after `stop`, so a heal confirmed by the run's last step is
            // on the timeline too.
            if last {
                break;
            }
            turn = turn.wrapping_add(1);
            let _ = tokio::time::timeout(self.tick, stop.changed()).await;
        }
        (samples, self.devices)
    }

    async fn create_missing(&mut self) {
        let Some(hub) = &self.hub else { return };
        for i in 0..self.count {
            let id = probe_id(&self.run, i);
            if self.devices.iter().any(|d| d.id == id) {
                continue;
            }
            if let Some(d) = create_one(hub, id).await {
                self.devices.push(d);
            }
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn series(oks: &[bool], from: OffsetDateTime) -> Vec<Sample> {
        oks.iter()
            .enumerate()
            .map(|(i, ok)| Sample {
                at: from + time::Duration::seconds(i64::try_from(i).unwrap()),
                ok: *ok,
            })
            .collect()
    }

    #[test]
    fn only_changes_are_journalled_and_merging_restores_the_order() {
        let t0 = datetime!(2026-12-06 02:00 UTC);
        let mut s = Samples {
            devices: series(&[true, true, false, false], t0),
            ..Samples::default()
        };
        let first = s.changes_since(&Seen::default());
        assert_eq!(
            first.devices.iter().map(|x| x.ok).collect::<Vec<_>>(),
            [true, false]
        );
        let seen = Seen::of(&s);
        s.devices
            .extend(series(&[false, true], t0 + time::Duration::seconds(4)));
        let second = s.changes_since(&seen);
        assert_eq!(second.devices.len(), 1, "only the heal: {second:?}");
        assert!(second.devices[0].ok);
        // Another process's journal merged into this one's samples: one ordered series.
        let mut resumed = Samples {
            devices: series(&[false, true], t0 + time::Duration::seconds(10)),
            ..Samples::default()
        };
        resumed.merge(&first);
        assert_eq!(resumed.devices[0].at, t0);
        assert!(resumed.devices.windows(2).all(|w| w[0].at <= w[1].at));
    }
}
