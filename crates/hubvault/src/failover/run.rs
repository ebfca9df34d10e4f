//! Executing a failover: the plan is journalled first, then each step runs (`execute`) and is
//! journalled after its ARM calls, so a run killed anywhere is finished by the next `run`, which
//! resumes the journalled plan.

use time::OffsetDateTime;

use super::Error;
use super::execute::do_step;
use super::journal::{self, Journal, RunPlan, RunRecord, StepRecord};
use super::observe::observe;
use super::plan::{self, Level, Plan, PlanInput};
use super::probe::{self, Samples};
pub use super::request::{Pause, RunRequest, Timeouts};
use super::steps::Step;
use crate::arm::ArmCall;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Completed,
    Failed,
    Refused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Refused => "refused",
        }
    }
}

/// What a run did.
pub struct RunResult {
    pub status: Status,
    pub plan: Option<Plan>,
    pub run: Option<RunRecord>,
    pub reason: Option<String>,
    pub samples: Samples,
    /// `--dry-run`: the calls the remaining steps would make.
    pub calls: Vec<(String, Vec<ArmCall>)>,
    pub resumed: bool,
}

impl RunResult {
    fn refused(plan: Option<Plan>, reason: String) -> Self {
        RunResult {
            status: Status::Refused,
            plan,
            run: None,
            reason: Some(reason),
            samples: Samples::default(),
            calls: Vec::new(),
            resumed: false,
        }
    }
}

/// Observe, decide and return the plan (what `failover plan` shows).
pub async fn plan(req: &RunRequest<'_>) -> Result<(Plan, Vec<journal::RunRecord>), Error> {
    let journal = Journal::new(req.store.clone(), req.hub);
    let runs = journal.runs().await?;
    let observed = observe(
        req.arm,
        req.hub_id,
        req.entry,
        req.store.as_ref(),
        &req.names,
    )
    .await?;
    let past = journal::past_operations(&runs);
    let original = journal::original_primary(&runs);
    let mut plan = plan::decide(&PlanInput {
        hub: req.hub,
        entry: req.entry,
        observed: &observed,
        past: &past,
        original_primary: original.as_deref(),
        variant: req.variant,
        now: req.now,
    });
    if let Some(active) = runs.iter().rev().find(|r| r.end.is_none()) {
        plan.findings.push(plan::Finding {
            level: Level::Warn,
            text: format!(
                "run {} is in progress (next step: {}); `hubvault failover run` resumes it instead of starting these steps",
                active.id,
                active.next_step().map_or("none", |s| s.name.as_str())
            ),
        });
    }
    Ok((plan, runs))
}

/// Run (or resume) a failover.
pub async fn run(req: &RunRequest<'_>) -> Result<RunResult, Error> {
    let journal = Journal::new(req.store.clone(), req.hub);
    let runs = journal.runs().await?;
    let active = runs.iter().rev().find(|r| r.end.is_none()).cloned();
    if let Some(record) = active {
        if req.dry_run {
            return Ok(dry_run(req, Some(record), None, true));
        }
        return finish(req, &journal, record, None, true).await;
    }
    let (plan, runs) = plan(req).await?;
    if let Some(reason) = refusal(req, &plan, &runs) {
        return Ok(RunResult::refused(Some(plan), reason));
    }
    if req.dry_run {
        return Ok(dry_run(req, None, Some(plan), false));
    }
    let record = journal.begin(run_plan(&plan, req.now)).await?;
    finish(req, &journal, record, Some(plan), false).await
}

/// Execute the remaining steps of `run`, and close it in the journal when all went through.
async fn finish(
    req: &RunRequest<'_>,
    journal: &Journal,
    mut run: RunRecord,
    plan: Option<Plan>,
    resumed: bool,
) -> Result<RunResult, Error> {
    let (samples, failure) = execute(req, journal, &mut run).await;
    let status = if failure.is_some() {
        Status::Failed
    } else {
        Status::Completed
    };
    if failure.is_none() {
        journal
            .finish(&mut run, status.as_str(), OffsetDateTime::now_utc())
            .await?;
    }
    Ok(RunResult {
        status,
        plan,
        run: Some(run),
        reason: failure,
        samples,
        calls: Vec::new(),
        resumed,
    })
}

/// Why a new run must not start: a blocking finding, Azure's limits, or `back` with nothing to undo.
fn refusal(req: &RunRequest, plan: &Plan, runs: &[RunRecord]) -> Option<String> {
    if req.back
        && !runs
            .iter()
            .any(|r| r.end.as_ref().is_some_and(|e| e.status == "completed"))
    {
        return Some(format!(
            "no completed failover of {} in the journal to fail back from; use `hubvault failover run --hub {}`",
            req.hub, req.hub
        ));
    }
    if let Some(r) = &plan.refusal {
        return Some(r.clone());
    }
    plan.findings
        .iter()
        .find(|f| f.level == Level::Block)
        .map(|f| f.text.clone())
}

fn run_plan(p: &Plan, now: OffsetDateTime) -> RunPlan {
    RunPlan {
        route: p.route.clone(),
        started: now,
        steps: p.steps.clone(),
    }
}

fn dry_run(
    req: &RunRequest,
    record: Option<RunRecord>,
    plan: Option<Plan>,
    resumed: bool,
) -> RunResult {
    let steps: Vec<Step> = match (&record, &plan) {
        (Some(r), _) => r
            .plan
            .steps
            .iter()
            .enumerate()
            .filter(|(i, _)| !r.done.contains_key(i))
            .map(|(_, s)| s.clone())
            .collect(),
        (None, Some(p)) => p.steps.clone(),
        (None, None) => Vec::new(),
    };
    let calls = steps
        .iter()
        .map(|s| (s.name.clone(), s.calls(req.hub_id)))
        .collect();
    RunResult {
        status: Status::Completed,
        plan,
        run: record,
        reason: None,
        samples: Samples::default(),
        calls,
        resumed,
    }
}

/// Run the steps not yet journalled, with probes sampling alongside. `Some(reason)` on failure.
async fn execute(
    req: &RunRequest<'_>,
    journal: &Journal,
    run: &mut RunRecord,
) -> (Samples, Option<String>) {
    let devices = match req.hub_client {
        Some(h) if req.probe_devices > 0 => probe::create(h, &run.id, req.probe_devices).await,
        _ => Vec::new(),
    };
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let first = devices.first().map(|d| (d.id.clone(), d.key_for_wait()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probing = req.device_target.clone().map(|target| {
        tokio::spawn(probe::sample(
            req.http.clone(),
            target,
            devices,
            req.entry.consumers.iter().map(clone_consumer).collect(),
            req.timeouts.tick,
            req.timeouts
                .operation
                .saturating_add(req.timeouts.consumers),
            stopped,
        ))
    });
    let mut failure = None;
    let steps = run.plan.steps.clone();
    for (index, step) in steps.iter().enumerate() {
        if run.done.contains_key(&index) {
            continue;
        }
        let start = OffsetDateTime::now_utc();
        match do_step(req, run, step, first.as_ref()).await {
            Ok((outcome, detail, data)) => {
                if let Some((at, pause)) = &req.pause
                    && *at == step.name
                {
                    pause(&step.name);
                }
                let rec = StepRecord {
                    index,
                    name: step.name.clone(),
                    outcome,
                    detail,
                    start,
                    end: OffsetDateTime::now_utc(),
                    data,
                };
                if let Err(e) = journal.record(run, rec).await {
                    failure = Some(format!(
                        "{}: the journal could not be written: {e}",
                        step.name
                    ));
                    break;
                }
            }
            Err(e) => {
                failure = Some(format!("{}: {e}", step.name));
                break;
            }
        }
    }
    let _ = stop.send(true);
    let sampled = match probing {
        Some(task) => task.await.unwrap_or_default(),
        None => Samples::default(),
    };
    if let Some(h) = req.hub_client {
        probe::remove(h, &ids).await;
    }
    (sampled, failure)
}

fn clone_consumer(c: &crate::config::ConsumerEntry) -> crate::config::ConsumerEntry {
    crate::config::ConsumerEntry {
        name: c.name.clone(),
        health_url: c.health_url.clone(),
        health_command: c.health_command.clone(),
        settings_file: c.settings_file.clone(),
        settings_secret: c.settings_secret.clone(),
        settings_key_name: c.settings_key_name.clone(),
    }
}
