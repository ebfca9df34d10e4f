//! The Prometheus metrics of `serve` (`/metrics`), on the `prometheus-client` registry.
//!
//! Counters are per process, as Prometheus expects. Gauges about the store's state (last
//! success, last status, devices, bytes) are set from the hub's status record in the store, so
//! every replica and a restarted process report the same values.
//!
//! Must not: carry a secret in a label (labels are hub and policy names and error codes).

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::hub_run::{Outcome, Report};
use super::status::HubStatus;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HubLabel {
    pub hub: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub hub: String,
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: String,
}

/// Every metric `serve` exports.
pub struct Metrics {
    registry: Registry,
    attempts: Family<HubLabel, Counter>,
    success: Family<HubLabel, Counter>,
    failure: Family<FailureLabels, Counter>,
    last_success: Family<HubLabel, Gauge>,
    last_status: Family<HubLabel, Gauge>,
    duration: Family<HubLabel, Histogram, fn() -> Histogram>,
    devices: Family<HubLabel, Gauge>,
    bytes: Family<HubLabel, Gauge>,
    forget_removed: Family<HubLabel, Counter>,
    next_run: Family<PolicyLabel, Gauge>,
    lease_held: Family<HubLabel, Gauge>,
    drill: DrillMetrics,
}

/// The metrics of scheduled drills, labelled with the hub drilled.
#[derive(Default)]
struct DrillMetrics {
    attempts: Family<HubLabel, Counter>,
    success: Family<HubLabel, Counter>,
    failure: Family<FailureLabels, Counter>,
    last_success: Family<HubLabel, Gauge>,
    last_status: Family<HubLabel, Gauge>,
    rto: Family<HubLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rpo: Family<HubLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl DrillMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "drill_attempts",
            "Scheduled drills started",
            self.attempts.clone(),
        );
        r.register(
            "drill_success",
            "Scheduled drills that passed",
            self.success.clone(),
        );
        r.register(
            "drill_failure",
            "Scheduled drills that failed (or breached a target), by error code",
            self.failure.clone(),
        );
        r.register(
            "drill_last_success_timestamp_seconds",
            "When the hub's last scheduled drill passed (from the store's status record)",
            self.last_success.clone(),
        );
        r.register(
            "drill_last_status",
            "1 if the hub's last scheduled drill passed, 0 if it failed (from the store)",
            self.last_status.clone(),
        );
        r.register(
            "drill_rto_seconds",
            "The last drill's recovery time: start to the probe's success (from the store)",
            self.rto.clone(),
        );
        r.register(
            "drill_rpo_seconds",
            "The last drill's recovery point: the snapshot's age at its start (from the store)",
            self.rpo.clone(),
        );
    }
}

fn duration_histogram() -> Histogram {
    // 1 s … about 4.5 h: a small hub's export takes seconds, a big one's hours.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 3.0, 10,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("hubvault"),
            attempts: Family::default(),
            success: Family::default(),
            failure: Family::default(),
            last_success: Family::default(),
            last_status: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            devices: Family::default(),
            bytes: Family::default(),
            forget_removed: Family::default(),
            next_run: Family::default(),
            lease_held: Family::default(),
            drill: DrillMetrics::default(),
        };
        m.drill.register(&mut m.registry);
        let r = &mut m.registry;
        r.register(
            "backup_attempts",
            "Scheduled backups started",
            m.attempts.clone(),
        );
        r.register(
            "backup_success",
            "Scheduled backups that made a snapshot",
            m.success.clone(),
        );
        r.register(
            "backup_failure",
            "Scheduled backups that failed, by error code",
            m.failure.clone(),
        );
        r.register(
            "backup_last_success_timestamp_seconds",
            "When the hub's last backup succeeded (from the store's status record)",
            m.last_success.clone(),
        );
        r.register(
            "backup_last_status",
            "1 if the hub's last backup succeeded, 0 if it failed (from the store)",
            m.last_status.clone(),
        );
        r.register(
            "backup_duration_seconds",
            "How long backups took",
            m.duration.clone(),
        );
        r.register(
            "backup_devices",
            "Devices in the hub's last snapshot",
            m.devices.clone(),
        );
        r.register(
            "backup_bytes",
            "Stored bytes of the hub's last snapshot",
            m.bytes.clone(),
        );
        r.register(
            "forget_removed",
            "Snapshots removed by retention after backups",
            m.forget_removed.clone(),
        );
        r.register(
            "schedule_next_run_timestamp_seconds",
            "When the policy next runs",
            m.next_run.clone(),
        );
        r.register(
            "lease_held",
            "1 while this process holds the hub's lease",
            m.lease_held.clone(),
        );
        m
    }

    fn hub(hub: &str) -> HubLabel {
        HubLabel {
            hub: hub.to_owned(),
        }
    }

    /// A run took the hub's lease (or gave it back).
    pub fn lease(&self, hub: &str, held: bool) {
        self.lease_held
            .get_or_create(&Self::hub(hub))
            .set(i64::from(held));
    }

    /// Count a finished run and set the gauges from the status record it left.
    pub fn record(&self, report: &Report) {
        if report.drill.is_some() {
            self.record_drill(report);
            return;
        }
        let hub = Self::hub(&report.hub);
        if let Some(status) = &report.status {
            self.status(&report.hub, status);
        }
        if matches!(report.outcome, Outcome::Skipped | Outcome::Stopped) {
            return;
        }
        self.attempts.get_or_create(&hub).inc();
        let secs = report
            .finished_at
            .signed_duration_since(report.started_at)
            .as_seconds_f64();
        self.duration.get_or_create(&hub).observe(secs.max(0.0));
        match (&report.outcome, &report.error) {
            (Outcome::Ok, _) => {
                self.success.get_or_create(&hub).inc();
                let removed = u64::try_from(report.forget_removed).unwrap_or(u64::MAX);
                self.forget_removed.get_or_create(&hub).inc_by(removed);
            }
            (_, error) => {
                let code = error.as_ref().map_or("unknown", |e| e.code.as_str());
                self.failure
                    .get_or_create(&FailureLabels {
                        hub: report.hub.clone(),
                        code: code.to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// Count a finished scheduled drill; set the drill gauges from the scratch hub's record.
    fn record_drill(&self, report: &Report) {
        if let Some(status) = &report.status {
            self.drill_status(status);
        }
        if matches!(report.outcome, Outcome::Skipped | Outcome::Stopped) {
            return;
        }
        let hub = Self::hub(&report.hub);
        self.drill.attempts.get_or_create(&hub).inc();
        if report.outcome == Outcome::Ok {
            self.drill.success.get_or_create(&hub).inc();
        } else {
            let code = report.error.as_ref().map_or("unknown", |e| e.code.as_str());
            self.drill
                .failure
                .get_or_create(&FailureLabels {
                    hub: report.hub.clone(),
                    code: code.to_owned(),
                })
                .inc();
        }
    }

    /// Set the drill gauges of every hub drilled into the scratch hub whose record is `status`.
    pub fn drill_status(&self, status: &HubStatus) {
        for (hub, d) in &status.drills {
            let label = Self::hub(hub);
            if let Some(t) = d.last_success {
                self.drill
                    .last_success
                    .get_or_create(&label)
                    .set(t.timestamp());
            }
            if d.last_finished.is_some() {
                self.drill
                    .last_status
                    .get_or_create(&label)
                    .set(i64::from(d.last_ok));
            }
            if let Some(v) = d.rto_seconds {
                self.drill.rto.get_or_create(&label).set(v);
            }
            if let Some(v) = d.rpo_seconds {
                self.drill.rpo.get_or_create(&label).set(v);
            }
        }
    }

    /// Set the store-state gauges of `hub` from its status record.
    pub fn status(&self, hub: &str, status: &HubStatus) {
        self.drill_status(status);
        let label = Self::hub(hub);
        if let Some(t) = status.last_success {
            self.last_success.get_or_create(&label).set(t.timestamp());
        }
        if let Some(run) = &status.last_run {
            self.last_status
                .get_or_create(&label)
                .set(i64::from(run.ok));
        }
        let gauge = |g: &Family<HubLabel, Gauge>, v: Option<u64>| {
            if let Some(v) = v {
                g.get_or_create(&label)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        };
        gauge(&self.devices, status.devices);
        gauge(&self.bytes, status.bytes);
    }

    /// The next run of each policy.
    pub fn next_runs(&self, next: &[(String, Option<DateTime<Utc>>)]) {
        for (policy, t) in next {
            let g = self.next_run.get_or_create(&PolicyLabel {
                policy: policy.clone(),
            });
            g.set(t.map_or(0, |t| t.timestamp()));
        }
    }

    /// The text exposition (`OpenMetrics` text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use crate::service::hub_run::RunError;

    fn report(outcome: Outcome) -> Report {
        let t: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
        Report {
            run_id: "r".into(),
            policy: "default".into(),
            hub: "hub-a".into(),
            slot: t,
            started_at: t,
            finished_at: t + chrono::TimeDelta::seconds(3),
            outcome,
            snapshot: None,
            devices: Some(120),
            bytes: Some(4096),
            forget_removed: 2,
            error: (outcome == Outcome::Failed).then(|| RunError {
                code: "hub_unauthorized".into(),
                message: "m".into(),
                fix: None,
            }),
            transition: None,
            status: None,
            drill: None,
        }
    }

    #[test]
    fn every_named_metric_is_exported() {
        let m = Metrics::new();
        let mut ok = report(Outcome::Ok);
        let mut status = HubStatus::default();
        status.record(
            super::super::status::LastRun {
                policy: "default".into(),
                slot: ok.slot,
                finished_at: ok.finished_at,
                ok: true,
                snapshot: None,
                error_code: None,
            },
            Some(120),
            Some(4096),
        );
        ok.status = Some(status);
        m.record(&ok);
        m.record(&report(Outcome::Failed));
        m.lease("hub-a", true);
        m.next_runs(&[("default".into(), Some(ok.slot))]);
        let text = m.encode();
        for line in [
            "hubvault_backup_attempts_total{hub=\"hub-a\"} 2",
            "hubvault_backup_success_total{hub=\"hub-a\"} 1",
            "hubvault_backup_failure_total{hub=\"hub-a\",code=\"hub_unauthorized\"} 1",
            "hubvault_backup_last_success_timestamp_seconds{hub=\"hub-a\"} 1796090403",
            "hubvault_backup_last_status{hub=\"hub-a\"} 1",
            "hubvault_backup_duration_seconds_count{hub=\"hub-a\"} 2",
            "hubvault_backup_devices{hub=\"hub-a\"} 120",
            "hubvault_backup_bytes{hub=\"hub-a\"} 4096",
            "hubvault_forget_removed_total{hub=\"hub-a\"} 2",
            "hubvault_schedule_next_run_timestamp_seconds{policy=\"default\"} 1796090400",
            "hubvault_lease_held{hub=\"hub-a\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    /// A drill's counters and gauges: labelled with the hub drilled, the gauges from the
    /// scratch hub's record, and the backup metrics of that hub untouched.
    #[test]
    fn drills_count_apart_from_backups() {
        let m = Metrics::new();
        let mut passed = report(Outcome::Ok);
        passed.drill = Some(super::super::hub_run::DrillFigures::default());
        let mut scratch = HubStatus::default();
        scratch.drills.entry("hub-a".into()).or_default().record(
            passed.finished_at,
            true,
            Some(12.5),
            Some(3600.0),
            None,
        );
        passed.status = Some(scratch);
        m.record(&passed);
        let mut failed = report(Outcome::Failed);
        failed.drill = Some(super::super::hub_run::DrillFigures::default());
        m.record(&failed);
        let text = m.encode();
        for line in [
            "hubvault_drill_attempts_total{hub=\"hub-a\"} 2",
            "hubvault_drill_success_total{hub=\"hub-a\"} 1",
            "hubvault_drill_failure_total{hub=\"hub-a\",code=\"hub_unauthorized\"} 1",
            "hubvault_drill_last_success_timestamp_seconds{hub=\"hub-a\"} 1796090403",
            "hubvault_drill_last_status{hub=\"hub-a\"} 1",
            "hubvault_drill_rto_seconds{hub=\"hub-a\"} 12.5",
            "hubvault_drill_rpo_seconds{hub=\"hub-a\"} 3600",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("hubvault_backup_attempts_total{"), "{text}");
    }
}
