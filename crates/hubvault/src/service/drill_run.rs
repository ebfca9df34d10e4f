//! One scheduled restore drill (a policy's `[drill]`) of one hub: under the **scratch hub's**
//! lease (so a drill never overlaps a backup of that hub or another drill into it), check the
//! slot has not been handled, run the drill (the caller's closure: it restores, probes, verifies,
//! cleans up), and record the outcome and figures in the scratch hub's status record, which the
//! drill gauges and the failure/recovery judgement read.
//!
//! The slot of a drill is recorded as [`slot_key`] (`drill:<policy>:<hub>`), beside the backup
//! slots of the scratch hub's record.
//!
//! Must not: run a drill without holding the scratch hub's lease.

use std::future::Future;
use std::time::Duration;

pub use super::hub_run::DrillFigures;
use super::hub_run::{
    Context, Events, Outcome, Phase, Report, RunError, RunStop, Taken, not_leased, take_lease,
};
use super::slots::Due;
use crate::shutdown::Shutdown;
use chrono::Utc;

/// What the caller's drill ended with: its figures, the snapshot, and an error when it failed
/// (a breached target or a failed verdict is an error too: the drill failed).
#[derive(Debug, Clone, Default)]
pub struct DrillDone {
    pub figures: DrillFigures,
    pub snapshot: Option<String>,
    pub error: Option<RunError>,
}

/// The status record's slot key of `policy`'s drills of `hub`.
pub fn slot_key(policy: &str, hub: &str) -> String {
    format!("drill:{policy}:{hub}")
}

/// Run `due`'s drill into the scratch hub `to`, under its lease, within `timeout`.
pub async fn run<F, Fut>(
    ctx: &Context,
    due: &Due,
    to: &str,
    timeout: Duration,
    shutdown: &Shutdown,
    events: Events<'_>,
    drill: F,
) -> Report
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = DrillDone>,
{
    let mut report = Report::start(
        due,
        Some(DrillFigures {
            to: to.to_owned(),
            ..DrillFigures::default()
        }),
    );
    // The lease and the slot record are the scratch hub's; the slot is keyed per policy and hub.
    let lease_due = Due {
        policy: slot_key(&due.policy, &due.hub),
        hub: to.to_owned(),
        slot: due.slot,
    };
    let stop = RunStop::start(shutdown, timeout);
    events(Phase::Lease, &report);
    match take_lease(ctx, &lease_due, &stop.stop).await {
        Ok(Taken::Lease(lease)) => {
            lease.watch_lost(stop.lease_lost.clone());
            under_lease(&lease, &lease_due, &stop, &mut report, events, drill).await;
            if report.outcome == Outcome::Failed
                && report.error.is_none()
                && let Some(reason) = stop.reason(timeout)
            {
                report.error = Some(reason);
            }
            if let Err(e) = lease.release().await {
                tracing::warn!(hub = %to, "could not release the scratch hub's lease: {e}");
            }
        }
        other => not_leased(&mut report, other),
    }
    stop.end(report, events)
}

async fn under_lease<F, Fut>(
    lease: &super::lease::Lease,
    lease_due: &Due,
    stop: &RunStop,
    report: &mut Report,
    events: Events<'_>,
    drill: F,
) where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = DrillDone>,
{
    let mut status = match lease.read_status(&lease_due.hub).await {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(RunError::of(&e));
            return;
        }
    };
    if status.handled(&lease_due.policy, lease_due.slot) {
        report.outcome = Outcome::Skipped;
        report.status = Some(status);
        return;
    }
    events(Phase::Drill, report);
    let done = drill(stop.stop.clone()).await;
    report.snapshot = done.snapshot;
    report.devices = done.figures.restored;
    let (rto, rpo) = (done.figures.rto_seconds, done.figures.rpo_seconds);
    report.drill = Some(done.figures);
    match done.error {
        None => report.outcome = Outcome::Ok,
        Some(e) if e.code == "interrupted" && stop.by_shutdown() => {
            report.outcome = Outcome::Stopped;
            report.error = Some(e);
            return;
        }
        Some(e) => report.error = Some(e),
    }
    if lease.lost() {
        tracing::warn!(hub = %lease_due.hub, "the lease was lost during the drill: its status is not recorded");
        return;
    }
    status
        .slots
        .insert(lease_due.policy.clone(), lease_due.slot);
    let transition = status.drills.entry(report.hub.clone()).or_default().record(
        Utc::now(),
        report.outcome == Outcome::Ok,
        rto,
        rpo,
        report.error.as_ref().map(|e| e.code.clone()),
    );
    report.transition = Some(transition);
    if let Err(e) = lease.write_status(&status).await {
        tracing::warn!(hub = %lease_due.hub, "could not write the scratch hub's status record: {e}");
    }
    report.status = Some(status);
}
