//! The import/export jobs a hub keeps: each job's record, its status, and the JSON a client
//! reads back (`GET /jobs`, docs/azure.md).
//!
//! Owns: `Job`, `Status` (`enqueued → running → completed | failed | cancelled`) and
//! `JobTable`. Must not: run jobs (that is `jobs`) or depend on the hub's state (the state holds
//! a `JobTable`).

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::{HubError, timestamp};

/// Where a job is in its life.
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

/// Every job of one hub, oldest first.
#[derive(Debug, Default)]
pub struct JobTable {
    pub jobs: Vec<Job>,
}

impl JobTable {
    /// The job with this id; 404002 `JobNotFound` when there is none.
    pub(crate) fn find(&mut self, id: &str) -> Result<&mut Job, HubError> {
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
