//! Executing a failover: the plan is journalled first, then each step runs and is journalled
//! after its ARM calls. Every step is idempotent (a DELETE of what is gone is fine, a PUT of what
//! exists converges, a failover request is skipped when the hub is already in the target region),
//! so a run killed anywhere is finished by the next `run`, which resumes the journalled plan.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::journal::{self, Journal, Outcome, RunPlan, RunRecord, StepRecord};
use super::observe::{hub_doc, hub_facts, observe};
use super::plan::{self, EventHubEndpoint, Level, Plan, PlanInput, Step, StepKind, Variant};
use super::probe::{self, ProbeDevice, Samples};
use super::{Error, region_key};
use crate::arm::{Answer, ArmCall, ArmClient};
use crate::config::FailoverEntry;
use crate::device::telemetry::{self, DeviceTarget};
use crate::hub::HubClient;
use crate::snapshot::catalog::HubNames;
use crate::store::Store;

/// A test-only pause: called after a step's ARM calls, before it is journalled.
pub type Pause = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a run needs.
pub struct RunRequest<'a> {
    pub hub: &'a str,
    pub hub_id: &'a str,
    pub entry: &'a FailoverEntry,
    pub variant: Variant,
    /// `failover back`: refused unless the journal holds a completed failover to undo.
    pub back: bool,
    pub dry_run: bool,
    pub arm: &'a ArmClient,
    pub store: Arc<dyn Store>,
    pub names: HubNames,
    /// The hub's data plane, for probe devices (`None`: no probes, "not measured").
    pub hub_client: Option<&'a HubClient>,
    pub device_target: Option<DeviceTarget>,
    pub probe_devices: usize,
    pub http: reqwest::Client,
    pub now: OffsetDateTime,
    pub timeouts: Timeouts,
    pub pause: Option<(String, Pause)>,
}

/// How long each wait may last, and how often things are sampled.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub operation: Duration,
    pub consumers: Duration,
    pub tick: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operation: Duration::from_secs(3600),
            consumers: Duration::from_secs(1800),
            tick: Duration::from_secs(2),
        }
    }
}

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
    }
}

type StepDone = (Outcome, String, Value);

async fn do_step(
    req: &RunRequest<'_>,
    run: &RunRecord,
    step: &Step,
    probe: Option<&(String, String)>,
) -> Result<StepDone, Error> {
    let hub_id = run.plan.route.hub_id.as_str();
    match &step.kind {
        StepKind::RecordEndpoint => {
            let events = hub_facts(&hub_doc(req.arm, hub_id).await?).events;
            Ok((Outcome::Ok, describe(&events), json!(events)))
        }
        StepKind::RequestFailover { region } => request_failover(req, step, hub_id, region).await,
        StepKind::WaitFailover => wait_operation(req, run).await,
        StepKind::WaitHub => wait_hub(req, hub_id, probe).await,
        StepKind::ReadEndpoint => {
            let facts = hub_facts(&hub_doc(req.arm, hub_id).await?);
            if region_key(&facts.primary) != run.plan.route.to {
                return Err(Error::Hub {
                    hub: req.hub.to_owned(),
                    message: format!(
                        "after the failover the primary region is {}, not {}",
                        facts.primary, run.plan.route.to
                    ),
                });
            }
            Ok((Outcome::Ok, describe(&facts.events), json!(facts.events)))
        }
        StepKind::CreateEndpoint { spec } => create_endpoint(req, step, hub_id, &spec.id).await,
        StepKind::DeleteEndpoint { .. } | StepKind::Unlink { .. } | StepKind::Link { .. } => {
            for call in step.calls(hub_id) {
                let answer = req.arm.send(&call).await?;
                settle(req, answer, &call).await?;
            }
            Ok((
                Outcome::Ok,
                format!("{} call(s) made", step.calls(hub_id).len()),
                Value::Null,
            ))
        }
        StepKind::RemoveWhenPossible { id } => {
            let call = &step.calls(hub_id)[..];
            let answer = req.arm.send(&call[0]).await?;
            if answer.is_success() {
                Ok((Outcome::Ok, format!("removed {id}"), Value::Null))
            } else {
                Ok((
                    Outcome::Skipped,
                    format!(
                        "not removed now ({}): delete {id} when its region is back",
                        answer.message()
                    ),
                    Value::Null,
                ))
            }
        }
        StepKind::ConsumerSettings => consumer_settings(req, run),
        StepKind::WaitConsumers => wait_consumers(req).await,
    }
}

/// PUT the endpoint and its zone group. A connection the hub has not approved leaves the
/// endpoint `Pending` (the caller lacks approval rights on the hub): said, not hidden.
async fn create_endpoint(
    req: &RunRequest<'_>,
    step: &Step,
    hub_id: &str,
    id: &str,
) -> Result<StepDone, Error> {
    let mut pending = None;
    for call in step.calls(hub_id) {
        let answer = req.arm.send(&call).await?;
        let state = answer.body.pointer(
            "/properties/privateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status",
        );
        if let Some(status) = state.and_then(Value::as_str)
            && !status.eq_ignore_ascii_case("Approved")
        {
            pending = Some(status.to_owned());
        }
        settle(req, answer, &call).await?;
    }
    Ok(match pending {
        None => (
            Outcome::Ok,
            format!("created {} with its zone group", super::name_of(id)),
            Value::Null,
        ),
        Some(status) => (
            Outcome::Failed,
            format!(
                "created {}, but its connection is {status}: approve it on the hub (Private endpoint connections) or grant Microsoft.Devices/IotHubs/privateEndpointConnections/write",
                super::name_of(id)
            ),
            Value::Null,
        ),
    })
}

fn describe(e: &EventHubEndpoint) -> String {
    format!("endpoint {} path {}", e.endpoint, e.path)
}

/// A 2xx answer; a long-running one is polled to its end.
async fn settle(req: &RunRequest<'_>, answer: Answer, call: &ArmCall) -> Result<(), Error> {
    let answer = answer.success(&call.path)?;
    if answer.status == 202
        && let Some(op) = &answer.operation
    {
        poll_operation(req, op).await?;
    }
    Ok(())
}

async fn request_failover(
    req: &RunRequest<'_>,
    step: &Step,
    hub_id: &str,
    region: &str,
) -> Result<StepDone, Error> {
    let facts = hub_facts(&hub_doc(req.arm, hub_id).await?);
    if region_key(&facts.primary) == region_key(region) {
        return Ok((
            Outcome::Skipped,
            format!("the hub is already in {region}"),
            Value::Null,
        ));
    }
    let call = &step.calls(hub_id)[0];
    let answer = req
        .arm
        .send(call)
        .await?
        .success(&format!("{hub_id}/failover"))?;
    Ok((
        Outcome::Ok,
        format!("failover to {region} accepted (HTTP {})", answer.status),
        json!({"operation": answer.operation}),
    ))
}

/// Poll an `Azure-AsyncOperation` URL with backoff until it ends.
async fn poll_operation(req: &RunRequest<'_>, url: &str) -> Result<String, Error> {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        let answer = req.arm.poll(url).await?;
        let status = answer.body["status"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| (answer.status == 200).then(|| "Succeeded".to_owned()));
        match status.as_deref() {
            Some("Succeeded") => return Ok("Succeeded".into()),
            Some(s @ ("Failed" | "Canceled")) => {
                return Err(Error::Hub {
                    hub: req.hub.to_owned(),
                    message: format!("the operation ended {s}: {}", answer.message()),
                });
            }
            _ => {}
        }
        if started.elapsed() > req.timeouts.operation {
            return Err(Error::Hub {
                hub: req.hub.to_owned(),
                message: format!(
                    "the operation did not end within {:?}; run `hubvault failover run` again to keep waiting",
                    req.timeouts.operation
                ),
            });
        }
        tokio::time::sleep(wait).await;
        // Backoff, but never so slow that the timeline's "failover operation" overshoots the
        // operation by much: at most four sampling ticks (4 s by default), at least 1 s.
        let cap = req
            .timeouts
            .tick
            .saturating_mul(4)
            .max(Duration::from_secs(1));
        wait = wait.saturating_mul(2).min(cap);
    }
}

async fn wait_operation(req: &RunRequest<'_>, run: &RunRecord) -> Result<StepDone, Error> {
    let url = run
        .data_of("request-failover")
        .and_then(|d| d["operation"].as_str())
        .map(str::to_owned);
    let Some(url) = url else {
        return Ok((
            Outcome::Skipped,
            "no operation to wait for (the request was skipped)".into(),
            Value::Null,
        ));
    };
    let status = poll_operation(req, &url).await?;
    Ok((Outcome::Ok, format!("operation {status}"), Value::Null))
}

/// Until the data plane answers again (a probe's message is accepted), or the hub is `Active`.
async fn wait_hub(
    req: &RunRequest<'_>,
    hub_id: &str,
    probe: Option<&(String, String)>,
) -> Result<StepDone, Error> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < req.timeouts.operation {
        let up = match (probe, &req.device_target) {
            (Some((id, key)), Some(target)) => {
                matches!(telemetry::send(&req.http, target, id, key, br#"{"probe":"wait"}"#).await, Ok(s) if (200..300).contains(&s))
            }
            _ => hub_doc(req.arm, hub_id).await?["properties"]["state"] == "Active",
        };
        if up {
            return Ok((
                Outcome::Ok,
                format!(
                    "the hub answered after {:.1}s",
                    started.elapsed().as_secs_f64()
                ),
                Value::Null,
            ));
        }
        tokio::time::sleep(req.timeouts.tick.min(Duration::from_millis(250))).await;
    }
    Err(Error::Hub {
        hub: req.hub.to_owned(),
        message: "the hub did not answer again in time; run `hubvault failover run` again".into(),
    })
}

fn consumer_settings(req: &RunRequest, run: &RunRecord) -> Result<StepDone, Error> {
    let after = run.data_of("read-endpoint").cloned().unwrap_or(Value::Null);
    let settings = json!({"hub": req.hub, "eventHubEndpoint": after["endpoint"], "eventHubPath": after["path"]});
    let mut written = Vec::new();
    for c in &req.entry.consumers {
        if let Some(path) = &c.settings_file {
            let text = serde_json::to_string_pretty(&settings).unwrap_or_default();
            std::fs::write(path, text).map_err(|source| Error::Write {
                path: path.display().to_string(),
                source,
            })?;
            written.push(path.display().to_string());
        }
    }
    let detail = if written.is_empty() {
        format!(
            "new settings: endpoint {} path {} (the key is unchanged)",
            after["endpoint"], after["path"]
        )
    } else {
        format!("new settings written to {}", written.join(", "))
    };
    Ok((Outcome::Ok, detail, settings))
}

async fn wait_consumers(req: &RunRequest<'_>) -> Result<StepDone, Error> {
    let mut details = Vec::new();
    let mut worst = Outcome::Ok;
    for c in &req.entry.consumers {
        let started = tokio::time::Instant::now();
        let healthy = loop {
            match probe::consumer_healthy(&req.http, c).await {
                None => break None,
                Some(true) => break Some(true),
                Some(false) if started.elapsed() > req.timeouts.consumers => break Some(false),
                Some(false) => {
                    tokio::time::sleep(req.timeouts.tick.min(Duration::from_millis(250))).await;
                }
            }
        };
        match healthy {
            None => {
                details.push(format!("{}: not measured (no health check)", c.name));
                worst = Outcome::Skipped.max_with(worst);
            }
            Some(true) => details.push(format!("{}: healthy", c.name)),
            Some(false) => {
                details.push(format!(
                    "{}: still unhealthy after {:?}",
                    c.name, req.timeouts.consumers
                ));
                worst = Outcome::Failed;
            }
        }
    }
    Ok((worst, details.join("; "), Value::Null))
}

impl Outcome {
    fn max_with(self, other: Outcome) -> Outcome {
        if other == Outcome::Failed {
            other
        } else {
            self
        }
    }
}

impl ProbeDevice {
    /// The probe's id and key, for `wait-hub`.
    fn key_for_wait(&self) -> String {
        self.key.clone()
    }
}
