//! Import/export jobs (docs/azure.md): the job table, the REST handlers, and the state machine
//! `enqueued → running (progress) → completed | failed | cancelled`.
//!
//! Owns: the one-active-job rule (403 with a configurable code), pacing at `Limits::job_rate`
//! devices per second (so tests can watch a job in `running`), cancellation, the "fail the next
//! job half-way" fault. The work itself is in `export` and `import`.
//! Must not: read blobs or registry lines itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::blob::Container;
use super::error::{HubError, timestamp};
use super::state::{Hub, body_json, json_response, lock};
use super::{export, import};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Enqueued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Enqueued => "enqueued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn active(self) -> bool {
        matches!(self, Status::Enqueued | Status::Running)
    }
}

/// One job. `request` keeps the caller's `JobProperties` so the response echoes its fields.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub export: bool,
    pub status: Status,
    pub progress: u8,
    pub start: OffsetDateTime,
    pub end: Option<OffsetDateTime>,
    pub failure_reason: Option<String>,
    pub request: Value,
}

#[derive(Debug, Default)]
pub struct JobTable {
    pub jobs: Vec<Job>,
}

impl JobTable {
    fn find(&mut self, id: &str) -> Result<&mut Job, HubError> {
        self.jobs
            .iter_mut()
            .find(|j| j.id == id)
            .ok_or_else(|| HubError::new(404_002, "JobNotFound", format!("Job '{id}' not found.")))
    }
}

impl Job {
    pub fn json(&self) -> Value {
        let r = &self.request;
        let s = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
        let mut v = json!({
            "jobId": self.id,
            "startTimeUtc": timestamp(self.start),
            "endTimeUtc": self.end.map(timestamp),
            "type": if self.export { "export" } else { "import" },
            "status": self.status.name(),
            "progress": self.progress,
            "outputBlobContainerUri": s("outputBlobContainerUri"),
            "excludeKeysInExport": r.get("excludeKeysInExport").and_then(Value::as_bool).unwrap_or(false),
            "storageAuthenticationType": r.get("storageAuthenticationType").cloned().unwrap_or_else(|| "keyBased".into()),
            "includeConfigurations": r.get("includeConfigurations").and_then(Value::as_bool).unwrap_or(false),
            "configurationsBlobName": r.get("configurationsBlobName").cloned().unwrap_or_else(|| "configurations.txt".into()),
            "failureReason": self.failure_reason,
            "parentJobId": null,
            "statusMessage": null,
            "useSecondaryStorageAsSource": false,
        });
        // `v` is the object literal above; the `else` cannot happen.
        let Value::Object(obj) = &mut v else {
            return v;
        };
        if self.export {
            obj.insert(
                "outputBlobName".into(),
                r.get("outputBlobName")
                    .cloned()
                    .unwrap_or_else(|| "devices.txt".into()),
            );
        } else {
            obj.insert("inputBlobContainerUri".into(), s("inputBlobContainerUri"));
            obj.insert(
                "inputBlobName".into(),
                r.get("inputBlobName")
                    .cloned()
                    .unwrap_or_else(|| "devices.txt".into()),
            );
        }
        if let Some(identity) = r.get("identity") {
            obj.insert("identity".into(), identity.clone());
        }
        v
    }
}

/// How a job's work ended early.
#[derive(Debug)]
pub enum JobEnd {
    Cancelled,
    Failed(String),
}

/// Progress and pacing of a running job.
pub struct Progress {
    hub: Arc<Hub>,
    id: String,
    total: usize,
    done: usize,
    fail_half_way: bool,
    rate: f64,
}

impl Progress {
    /// Items per step: a twentieth of a second's worth, so progress moves smoothly.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rate is positive and far below usize::MAX"
    )]
    pub fn chunk(&self) -> usize {
        if self.rate <= 0.0 {
            1000
        } else {
            ((self.rate / 20.0).ceil() as usize).max(1)
        }
    }

    pub fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    /// Record `n` more items: update progress, sleep to keep the rate, honour cancel and faults.
    #[allow(
        clippy::cast_precision_loss,
        reason = "a step is at most a few thousand items"
    )]
    pub async fn advance(&mut self, n: usize) -> Result<(), JobEnd> {
        self.done = self.done.saturating_add(n);
        if self.fail_half_way && self.done.saturating_mul(2) >= self.total {
            return Err(JobEnd::Failed(
                "The job failed due to an internal error (injected fault). Retry the job.".into(),
            ));
        }
        if self.rate > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / self.rate)).await;
        } else {
            tokio::task::yield_now().await;
        }
        let mut jobs = lock(&self.hub.jobs);
        let job = jobs.find(&self.id).map_err(|_| JobEnd::Cancelled)?;
        if job.status == Status::Cancelled {
            return Err(JobEnd::Cancelled);
        }
        let pct = self
            .done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(0)
            .min(99);
        job.progress = u8::try_from(pct).unwrap_or(99);
        Ok(())
    }
}

/// `POST /jobs/create`.
pub async fn create(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Response, HubError> {
    let request = body_json(&body)?;
    let kind = request
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let export = match kind.as_str() {
        "export" => true,
        "import" => false,
        "" => {
            return Err(HubError::argument_null(
                "The job type is required: 'export' or 'import'.",
            ));
        }
        other => {
            return Err(HubError::argument_invalid(format!(
                "The job type '{other}' is not supported here: use 'export' or 'import'."
            )));
        }
    };
    let needed: &[&str] = if export {
        &["outputBlobContainerUri"]
    } else {
        &["inputBlobContainerUri", "outputBlobContainerUri"]
    };
    for key in needed {
        let uri = request
            .get(*key)
            .and_then(Value::as_str)
            .ok_or_else(|| HubError::argument_null(format!("{key} is required.")))?;
        Container::parse(uri).map_err(|_| {
            HubError::new(
                400_008,
                "BlobContainerValidationError",
                format!("{key} is not a valid blob container URI."),
            )
        })?;
    }
    let job = {
        let mut jobs = lock(&hub.jobs);
        if jobs.jobs.iter().any(|j| j.status.active()) {
            let code = lock(&hub.limits).job_quota_code;
            return Err(HubError::new(
                code,
                "JobQuotaExceeded",
                "Job quota has been exceeded: only one import/export job may be active. Wait for the active job to finish.",
            ));
        }
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            export,
            status: Status::Enqueued,
            progress: 0,
            start: OffsetDateTime::now_utc(),
            end: None,
            failure_reason: None,
            request,
        };
        jobs.jobs.push(job.clone());
        job
    };
    tokio::spawn(run(hub.clone(), job.id.clone()));
    Ok(json_response(StatusCode::OK, &job.json()))
}

pub async fn get(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
) -> Result<Response, HubError> {
    let mut jobs = lock(&hub.jobs);
    Ok(json_response(StatusCode::OK, &jobs.find(&id)?.json()))
}

pub async fn list(State(hub): State<Arc<Hub>>) -> Result<Response, HubError> {
    let jobs = lock(&hub.jobs);
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(jobs.jobs.iter().map(Job::json).collect()),
    ))
}

/// `DELETE /jobs/{id}`: cancels an active job; a finished job is returned unchanged (UNCERTAIN §2.2).
pub async fn cancel(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
) -> Result<Response, HubError> {
    let mut jobs = lock(&hub.jobs);
    let job = jobs.find(&id)?;
    if job.status.active() {
        job.status = Status::Cancelled;
        job.end = Some(OffsetDateTime::now_utc());
    }
    Ok(json_response(StatusCode::OK, &job.json()))
}

fn finish(hub: &Hub, id: &str, outcome: Result<(), JobEnd>) {
    let mut jobs = lock(&hub.jobs);
    let Ok(job) = jobs.find(id) else { return };
    if job.status == Status::Cancelled {
        return;
    }
    job.end = Some(OffsetDateTime::now_utc());
    match outcome {
        Ok(()) => {
            job.status = Status::Completed;
            job.progress = 100;
        }
        Err(JobEnd::Cancelled) => job.status = Status::Cancelled,
        Err(JobEnd::Failed(reason)) => {
            job.status = Status::Failed;
            job.failure_reason = Some(reason);
        }
    }
}

/// The job's life: wait in the queue, run, record the outcome.
async fn run(hub: Arc<Hub>, id: String) {
    let (queue_ms, rate) = {
        let l = lock(&hub.limits);
        (l.job_queue_ms, l.job_rate)
    };
    tokio::time::sleep(Duration::from_millis(queue_ms)).await;
    let (request, export) = {
        let mut jobs = lock(&hub.jobs);
        let Ok(job) = jobs.find(&id) else { return };
        if job.status != Status::Enqueued {
            return;
        }
        job.status = Status::Running;
        (job.request.clone(), job.export)
    };
    let fail_half_way = std::mem::take(&mut lock(&hub.faults).fail_next_job);
    let mut progress = Progress {
        hub: hub.clone(),
        id: id.clone(),
        total: 0,
        done: 0,
        fail_half_way,
        rate,
    };
    let outcome = match identity_problem(&hub, &request) {
        Some(reason) => Err(JobEnd::Failed(reason)),
        None if export => export::run(&hub, &request, &mut progress).await,
        None => import::run(&hub, &request, &mut progress).await,
    };
    finish(&hub, &id, outcome);
}

/// `identityBased` storage access needs the named identity on the hub (§1.4), else the job fails.
fn identity_problem(hub: &Hub, request: &Value) -> Option<String> {
    let identity_based = request
        .get("storageAuthenticationType")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("identityBased"));
    if !identity_based {
        return None;
    }
    let resource = lock(&hub.shared.resource);
    let kind = resource
        .pointer("/identity/type")
        .and_then(Value::as_str)
        .unwrap_or("None");
    match request
        .pointer("/identity/userAssignedIdentity")
        .and_then(Value::as_str)
    {
        Some(uai) => {
            let known = resource
                .pointer("/identity/userAssignedIdentities")
                .and_then(Value::as_object)
                .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(uai)));
            (!known).then(|| format!("The user-assigned identity '{uai}' is not assigned to the hub; add it to the hub's identities or use keyBased storage access."))
        }
        None => (!kind.contains("SystemAssigned")).then(|| {
            "The hub has no system-assigned identity; enable it or use keyBased storage access."
                .to_string()
        }),
    }
}

/// A storage failure as a job's `failureReason`.
pub fn storage_failure(what: &str, e: &super::blob::BlobError) -> JobEnd {
    JobEnd::Failed(format!(
        "Unable to access the {what}: {e}. errorcode: IH400008"
    ))
}
