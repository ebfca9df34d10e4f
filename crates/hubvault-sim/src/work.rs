//! What a running import or export job's work shares with the job that runs it: how the work
//! ended early (`JobEnd`), its progress and pacing (`Progress`, which also honours cancellation
//! and the `fail_next_job` fault), and how a storage failure reads as a `failureReason`.
//!
//! Owns: those three. `export` and `import` do the work with them; `jobs` runs the work and
//! records its outcome. Must not: depend on `jobs`, `export` or `import`.

use std::sync::Arc;
use std::time::Duration;

use crate::blob::BlobError;
use crate::job_table::Status;
use crate::state::{Hub, lock};

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
    /// The progress of job `id` of `hub`, paced at `rate` items per second (0: unpaced);
    /// `fail_half_way` is the `fail_next_job` fault, taken for this job.
    pub fn new(hub: Arc<Hub>, id: String, fail_half_way: bool, rate: f64) -> Progress {
        Progress {
            hub,
            id,
            total: 0,
            done: 0,
            fail_half_way,
            rate,
        }
    }

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

    /// The work is over and went well. The `fail_next_job` fault fires in [`Self::advance`],
    /// which a job with nothing to process never calls: such a job fails here, so the fault
    /// keeps its promise that the next job fails.
    pub fn ended(&self) -> Result<(), JobEnd> {
        if self.fail_half_way {
            Err(injected_failure())
        } else {
            Ok(())
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
            return Err(injected_failure());
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

/// The failure the `fail_next_job` fault gives a job.
fn injected_failure() -> JobEnd {
    JobEnd::Failed(
        "The job failed due to an internal error (injected fault). Retry the job.".into(),
    )
}

/// A storage failure as a job's `failureReason`.
pub fn storage_failure(what: &str, e: &BlobError) -> JobEnd {
    JobEnd::Failed(format!(
        "Unable to access the {what}: {e}. errorcode: IH400008"
    ))
}
