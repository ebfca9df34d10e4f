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
    /// `--dry-run`: their other writes, by step ([`Step::other_writes`]).
    pub other_writes: Vec<(String, Vec<String>)>,
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
            other_writes: Vec::new(),
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
        if let Some(reason) = resume_mismatch(req, &record) {
            return Ok(RunResult::refused(None, reason));
        }
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
        other_writes: Vec::new(),
        resumed,
    })
}

/// Why the run in progress must not be resumed by this command: `back` while a failover (not a
/// failback) is half done, or the other variant than the one it started with. `run` with the
/// run's own variant resumes anything.
fn resume_mismatch(req: &RunRequest, run: &RunRecord) -> Option<String> {
    let route = &run.plan.route;
    let next = run.next_step().map_or("none", |s| s.name.as_str());
    let flag = if route.variant == super::Variant::NetworkFailure {
        " --network-failure"
    } else {
        ""
    };
    let what = if route.failback {
        "failback"
    } else {
        "failover"
    };
    let resume = format!("`hubvault failover run --hub {}{flag}`", req.hub);
    if req.back && !route.failback {
        return Some(format!(
            "run {} (a failover of {} to {}) is in progress, next step {next}: finish it with {resume} before failing back",
            run.id, req.hub, route.to
        ));
    }
    (req.variant != route.variant).then(|| {
        format!(
            "run {} (a {what} of {} to {}, {} variant) is in progress, next step {next}: resume it with {resume}",
            run.id,
            req.hub,
            route.to,
            if flag.is_empty() { "normal" } else { "network-failure" }
        )
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
    let other_writes = steps
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.other_writes(req.hub_id, req.hub, req.entry),
            )
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    RunResult {
        status: Status::Completed,
        plan,
        run: record,
        reason: None,
        samples: Samples::default(),
        calls,
        other_writes,
        resumed,
    }
}

/// Run the steps not yet journalled, with probes sampling alongside. `Some(reason)` on failure.
async fn execute(
    req: &RunRequest<'_>,
    journal: &Journal,
    run: &mut RunRecord,
) -> (Samples, Option<String>) {
    let (probing, first) = start_probing(req, run).await;
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
                failure = Some(format!("{}: {}", step.name, e));
                break;
            }
        }
    }
    let mut sampled = run.observed.clone();
    sampled.merge(&probing.end().await);
    if let Some(h) = req.hub_client {
        let ids: Vec<String> = (0..req.probe_devices)
            .map(|i| probe::probe_id(&run.id, i))
            .collect();
        probe::remove(h, &ids).await;
    }
    (sampled, failure)
}

/// The most sample objects one process journals (a flapping probe must not fill the store).
const MAX_SAMPLE_OBJECTS: usize = 500;

/// The sampler and the task journalling what it sees change.
struct Probing {
    stop: tokio::sync::watch::Sender<bool>,
    sampler: Option<tokio::task::JoinHandle<(Samples, Vec<probe::ProbeDevice>)>>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Probing {
    /// Stop sampling; this process's samples, once the journal has their changes.
    async fn end(self) -> Samples {
        let _ = self.stop.send(true);
        let sampled = match self.sampler {
            Some(task) => task.await.map(|(s, _)| s).unwrap_or_default(),
            None => Samples::default(),
        };
        if let Some(writer) = self.writer {
            let _ = writer.await;
        }
        sampled
    }
}

/// Create the probes and start sampling; also returns the first probe (id, key) for `wait-hub`.
async fn start_probing(
    req: &RunRequest<'_>,
    run: &RunRecord,
) -> (Probing, Option<(String, String)>) {
    let devices = match req.hub_client {
        Some(h) if req.probe_devices > 0 => probe::create(h, &run.id, req.probe_devices).await,
        _ => Vec::new(),
    };
    let first = devices.first().map(|d| (d.id.clone(), d.key_for_wait()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Samples>();
    let journal = Journal::new(req.store.clone(), req.hub);
    let (run_id, session) = (run.id.clone(), format!("{:08x}", rand::random::<u32>()));
    let writer = tokio::spawn(async move {
        let mut seq = 0usize;
        while let Some(changes) = rx.recv().await {
            if seq < MAX_SAMPLE_OBJECTS
                && let Err(e) = journal
                    .record_samples(&run_id, &session, seq, &changes)
                    .await
            {
                tracing::warn!("probe samples not journalled: {e}");
            }
            seq = seq.saturating_add(1);
        }
    });
    let sampler = req.device_target.clone().map(|target| {
        let sampler = probe::Sampler {
            http: req.http.clone(),
            target,
            hub: req.hub_client.cloned(),
            run: run.id.clone(),
            count: req.probe_devices,
            devices,
            consumers: req.entry.consumers.iter().map(clone_consumer).collect(),
            tick: req.timeouts.tick,
            limit: req
                .timeouts
                .operation
                .saturating_add(req.timeouts.consumers),
            changes: Some(tx),
        };
        tokio::spawn(sampler.sample(stopped))
    });
    let probing = Probing {
        stop,
        sampler,
        writer: Some(writer),
    };
    (probing, first)
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
