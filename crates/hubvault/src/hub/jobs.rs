//! Import/export jobs (docs/azure.md): create, get, list, cancel, and wait with backoff.
//!
//! Only one import/export job may run per hub; a second create gets 403, which we turn into
//! [`Error::JobSlotBusy`] naming the running job (looked up with `GET /jobs`), so the caller can
//! wait for it or report it. Resuming a job after a restart is just [`HubClient::wait_for_job`]
//! on its id. `JobProperties` carries container URIs with SAS signatures, so its `Debug` redacts.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::auth::url_encode;
use super::error::{Error, Result};
use super::{Call, HubClient};

/// `type` of a job. Only export and import are created by us; others are listed by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobType {
    Export,
    Import,
    #[serde(other)]
    Other,
}

/// `status` of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    Enqueued,
    Queued,
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
    #[serde(other)]
    Unknown,
}

impl JobStatus {
    /// Completed, failed or cancelled: polling can stop.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Holds the hub's single import/export slot.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobStatus::Enqueued | JobStatus::Queued | JobStatus::Scheduled | JobStatus::Running
        )
    }
}

/// `identity` of an identity-based job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedIdentity {
    pub user_assigned_identity: String,
}

/// The service's `JobProperties` (request and response). Unknown response fields are ignored.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time_utc: Option<String>,
    #[serde(rename = "type")]
    pub job_type: Option<JobType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_blob_container_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_blob_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_blob_container_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_blob_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_keys_in_export: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_authentication_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_configurations: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configurations_blob_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
}

impl fmt::Debug for JobProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = |u: &Option<String>| u.as_deref().map(crate::redact::redact);
        f.debug_struct("JobProperties")
            .field("job_id", &self.job_id)
            .field("job_type", &self.job_type)
            .field("status", &self.status)
            .field("progress", &self.progress)
            .field(
                "input_blob_container_uri",
                &uri(&self.input_blob_container_uri),
            )
            .field("input_blob_name", &self.input_blob_name)
            .field(
                "output_blob_container_uri",
                &uri(&self.output_blob_container_uri),
            )
            .field("output_blob_name", &self.output_blob_name)
            .field("exclude_keys_in_export", &self.exclude_keys_in_export)
            .field("include_configurations", &self.include_configurations)
            .field("failure_reason", &self.failure_reason)
            .finish_non_exhaustive()
    }
}

impl JobProperties {
    /// An export job with keys and configurations (what a backup or clone needs).
    /// `container_uri` is a container URL with a SAS (r, w, d) or, identity-based, without one.
    pub fn export(container_uri: &str, devices_blob: &str, configurations_blob: &str) -> Self {
        JobProperties {
            job_type: Some(JobType::Export),
            output_blob_container_uri: Some(container_uri.to_owned()),
            output_blob_name: Some(devices_blob.to_owned()),
            exclude_keys_in_export: Some(false),
            include_configurations: Some(true),
            configurations_blob_name: Some(configurations_blob.to_owned()),
            storage_authentication_type: Some(storage_auth(container_uri).to_owned()),
            ..Self::default()
        }
    }

    /// An import job reading `devices_blob` (and `configurations_blob`, if given) from `input_uri`
    /// and writing `importErrors.log` to `output_uri`.
    pub fn import(
        input_uri: &str,
        devices_blob: &str,
        configurations_blob: Option<&str>,
        output_uri: &str,
    ) -> Self {
        JobProperties {
            job_type: Some(JobType::Import),
            input_blob_container_uri: Some(input_uri.to_owned()),
            input_blob_name: Some(devices_blob.to_owned()),
            output_blob_container_uri: Some(output_uri.to_owned()),
            include_configurations: Some(configurations_blob.is_some()),
            configurations_blob_name: configurations_blob.map(str::to_owned),
            storage_authentication_type: Some(storage_auth(input_uri).to_owned()),
            ..Self::default()
        }
    }

    pub fn id(&self) -> &str {
        self.job_id.as_deref().unwrap_or("")
    }

    pub fn status(&self) -> JobStatus {
        self.status.unwrap_or(JobStatus::Unknown)
    }
}

/// A URI with a SAS query is key-based; without one the hub's identity reads it.
fn storage_auth(uri: &str) -> &'static str {
    // A `file://` container (simulator-only demo staging) needs no identity: "keyBased" is the
    // mode in which the hub uses the URI as given.
    if uri.contains("sig=") || uri.starts_with("file:") {
        "keyBased"
    } else {
        "identityBased"
    }
}

/// How to poll a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// First wait between polls; grows by half each poll.
    pub interval: Duration,
    /// Longest wait between polls.
    pub max_backoff: Duration,
    /// Give up (the job keeps running; resume by id) after this long.
    pub timeout: Duration,
}

impl Default for PollPolicy {
    /// The SDK samples poll every 5 s; jobs can take hours, so back off to a minute and give up
    /// after the longest job we allow (6 h, the default staging SAS lifetime).
    fn default() -> Self {
        PollPolicy {
            interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(6 * 3600),
        }
    }
}

impl PollPolicy {
    /// The wait after `wait` (pure).
    pub fn next(&self, wait: Duration) -> Duration {
        wait.mul_f64(1.5)
            .min(self.max_backoff)
            .max(self.interval.min(self.max_backoff))
    }
}

/// When a running job should end, from the progress it reports (pure: times are passed in, as
/// time since polling began). Backoff alone polls up to `max_backoff` after a job has ended —
/// time spent doing nothing; a poll timed by the rate seen so far finds the end within one
/// `interval`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eta {
    /// The first progress above zero seen, and when.
    first: Option<(Duration, i64)>,
}

impl Eta {
    /// Note `progress` (percent) seen `at`; returns how long until the job reaches 100 % at the
    /// rate seen since the first progress, or `None` while there is no rate yet.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "progress and p0 are clamped to 0..=100, so their differences fit"
    )]
    pub fn observe(&mut self, at: Duration, progress: i64) -> Option<Duration> {
        let progress = progress.clamp(0, 100);
        let Some((t0, p0)) = self.first else {
            if progress > 0 {
                self.first = Some((at, progress));
            }
            return None;
        };
        let done = progress - p0;
        let took = at.checked_sub(t0)?;
        if done <= 0 || took.is_zero() {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "percentages")]
        let left = took.mul_f64((100 - progress) as f64 / done as f64);
        Some(left)
    }
}

impl HubClient {
    /// `POST /jobs/create`. A 403 (other than a device quota) means the job slot is taken:
    /// [`Error::JobSlotBusy`] names the running job. If the running job is the one we asked for
    /// (same type and blob names, which carry our run id), an earlier try of this call created
    /// it before its response was lost, and it is returned as ours instead of an error.
    pub async fn create_job(&self, job: &JobProperties) -> Result<JobProperties> {
        let call = Call::new(Method::POST, "/jobs/create".into()).json(job);
        match self.call(call).await {
            Ok(reply) => self.decode("job create", &reply.body),
            Err(Error::QuotaExceeded { code, .. }) if code != 403_002 => {
                let running = self.active_job().await.ok().flatten();
                match running {
                    Some(r) if same_request(&r, job) => Ok(r),
                    other => Err(Error::JobSlotBusy {
                        hub: self.name().to_owned(),
                        running_job: other.and_then(|j| j.job_id),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The job holding the import/export slot, if any.
    pub async fn active_job(&self) -> Result<Option<JobProperties>> {
        let jobs = self.list_jobs().await?;
        Ok(jobs.into_iter().find(|j| {
            matches!(j.job_type, Some(JobType::Export | JobType::Import)) && j.status().is_active()
        }))
    }

    /// `GET /jobs/{id}`.
    pub async fn get_job(&self, job_id: &str) -> Result<JobProperties> {
        let reply = self
            .call(Call::new(
                Method::GET,
                format!("/jobs/{}", url_encode(job_id)),
            ))
            .await?;
        self.decode("job", &reply.body)
    }

    /// `GET /jobs`: recent import/export jobs, including the active one.
    pub async fn list_jobs(&self) -> Result<Vec<JobProperties>> {
        let reply = self.call(Call::new(Method::GET, "/jobs".into())).await?;
        self.decode("job list", &reply.body)
    }

    /// `DELETE /jobs/{id}`: cancel a queued or running job.
    pub async fn cancel_job(&self, job_id: &str) -> Result<()> {
        self.call(Call::new(
            Method::DELETE,
            format!("/jobs/{}", url_encode(job_id)),
        ))
        .await?;
        Ok(())
    }

    /// Poll until the job is completed, failed or cancelled, calling `progress` after each poll.
    /// Returns the terminal properties (the caller checks `status` and `failure_reason`).
    /// A `Retry-After` on the job response stretches the next wait. Throttling, 5xx and network
    /// failures do not end the wait (jobs run for hours; the hub keeps working while we cannot
    /// reach it): polling goes on until `poll.timeout`, and the job can be resumed by id later.
    pub async fn wait_for_job(
        &self,
        job_id: &str,
        poll: &PollPolicy,
        mut progress: impl FnMut(&JobProperties) + Send,
    ) -> Result<JobProperties> {
        let start = tokio::time::Instant::now();
        let path = format!("/jobs/{}", url_encode(job_id));
        let mut wait = poll.interval;
        let mut eta = Eta::default();
        loop {
            let mut left = None;
            let asked = match self.call(Call::new(Method::GET, path.clone())).await {
                Ok(reply) => {
                    let job: JobProperties = self.decode("job", &reply.body)?;
                    progress(&job);
                    if let Some(observer) = self.job_observer() {
                        (observer.0)(&job);
                    }
                    if job.status().is_terminal() {
                        return Ok(job);
                    }
                    if job.status() == JobStatus::Running {
                        left = job.progress.and_then(|p| eta.observe(start.elapsed(), p));
                    }
                    reply
                        .headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            super::retry::parse_retry_after(v, time::OffsetDateTime::now_utc())
                        })
                }
                Err(
                    e @ (Error::Throttled { .. } | Error::Server { .. } | Error::Transport { .. }),
                ) => {
                    tracing::warn!(hub = %self.name(), job_id, "job poll failed, will poll again: {e}");
                    None
                }
                Err(e) => return Err(e),
            };
            // A job about to end is polled when it should have ended (never sooner than
            // `interval` apart), not a whole backoff later; a `Retry-After` is always honoured.
            let this_wait = match (asked, left) {
                (Some(a), _) => a.max(wait),
                (None, Some(left)) => wait.min(left.max(poll.interval.min(poll.max_backoff))),
                (None, None) => wait,
            };
            // Saturating: `this_wait` may come from a hub's Retry-After.
            if start.elapsed().saturating_add(this_wait) > poll.timeout {
                return Err(Error::JobTimedOut {
                    hub: self.name().to_owned(),
                    job_id: job_id.to_owned(),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(this_wait).await;
            wait = poll.next(wait);
        }
    }
}

/// Whether a listed job is the one `asked` describes (blob names are unique per run).
fn same_request(listed: &JobProperties, asked: &JobProperties) -> bool {
    listed.job_type == asked.job_type
        && listed.output_blob_name == asked.output_blob_name
        && listed.input_blob_name == asked.input_blob_name
        && (asked.output_blob_name.is_some() || asked.input_blob_name.is_some())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn export_request_has_keys_and_configurations() {
        let job = JobProperties::export(
            "https://a.blob.core.windows.net/c?sv=1&sig=abc",
            "staging/h/r/devices.txt",
            "staging/h/r/configurations.txt",
        );
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["type"], "export");
        assert_eq!(v["excludeKeysInExport"], false);
        assert_eq!(v["includeConfigurations"], true);
        assert_eq!(v["outputBlobName"], "staging/h/r/devices.txt");
        assert_eq!(v["storageAuthenticationType"], "keyBased");
        assert!(v.get("jobId").is_none());
    }

    #[test]
    fn response_with_unknown_fields_and_statuses_parses() {
        let body = r#"{"jobId":"j1","type":"export","status":"enqueued","progress":0,"failureReason":null,"parentJobId":null,"statusMessage":null,"useSecondaryStorageAsSource":false,"somethingNew":1}"#;
        let job: JobProperties = serde_json::from_str(body).unwrap();
        assert_eq!(job.id(), "j1");
        assert_eq!(job.status(), JobStatus::Enqueued);
        let job: JobProperties =
            serde_json::from_str(r#"{"type":"backup","status":"weird"}"#).unwrap();
        assert_eq!(
            (job.job_type, job.status()),
            (Some(JobType::Other), JobStatus::Unknown)
        );
    }

    #[test]
    fn debug_redacts_sas_signatures() {
        let job = JobProperties::export("https://a/c?sv=1&sig=SECRETSIG&se=2", "d", "c");
        let text = format!("{job:?}");
        assert!(!text.contains("SECRETSIG"), "{text}");
        assert!(text.contains("sig=<redacted>&se=2"), "{text}");
    }

    #[test]
    fn the_end_of_a_job_is_told_by_its_rate() {
        let s = Duration::from_secs;
        let mut eta = Eta::default();
        assert_eq!(eta.observe(s(1), 0), None, "queued: no rate");
        assert_eq!(eta.observe(s(2), 10), None, "first progress: no rate yet");
        assert_eq!(eta.observe(s(2), 10), None, "no time passed");
        // 10 % → 30 % in 4 s: 5 %/s, 70 % left = 14 s.
        assert_eq!(eta.observe(s(6), 30), Some(s(14)));
        assert_eq!(eta.observe(s(20), 100), Some(Duration::ZERO));
        assert_eq!(eta.observe(s(21), 250), Some(Duration::ZERO), "clamped");
    }

    #[test]
    fn poll_backoff_grows_to_the_cap() {
        let p = PollPolicy {
            interval: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
        };
        let mut w = p.interval;
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(w.as_secs_f64());
            w = p.next(w);
        }
        assert_eq!(seen, [2.0, 3.0, 4.5, 5.0]);
    }
}
