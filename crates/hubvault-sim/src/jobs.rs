//! Import/export jobs (docs/azure.md): the REST handlers and each job's life,
//! `enqueued → running (progress) → completed | failed | cancelled`.
//!
//! Owns: the one-active-job rule (403 with a configurable code), the queue wait, cancellation,
//! taking the "fail the next job" fault, the identity check, and recording how a job ended.
//! The job records are in `job_table`; the work itself is in `export` and `import`, with the
//! pacing and progress they share in `work`.
//! Must not: read blobs or registry lines itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use time::OffsetDateTime;

use super::blob::Container;
use super::error::HubError;
// The job records and the work's shared types used to live here: their old paths keep working.
pub use super::job_table::{Job, JobTable, Status};
use super::state::{Hub, body_json, json_response, lock};
pub use super::work::{JobEnd, Progress, storage_failure};
use super::{export, import};

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
    let mut progress = Progress::new(hub.clone(), id.clone(), fail_half_way, rate);
    let outcome = match identity_problem(&hub, &request) {
        Some(reason) => Err(JobEnd::Failed(reason)),
        None if export => export::run(&hub, &request, &mut progress).await,
        None => import::run(&hub, &request, &mut progress).await,
    };
    finish(&hub, &id, outcome.and_then(|()| progress.ended()));
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
