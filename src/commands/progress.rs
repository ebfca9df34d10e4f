//! Progress bars for long steps (import/export jobs), drawn on stderr only when it is a terminal:
//! scripts and `--json` consumers see no escape codes.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use hubvault::hub::{JobObserver, JobProperties};

/// An observer that draws one bar per job, or `None` when stderr is not a terminal.
pub fn job_observer() -> Option<JobObserver> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Some(JobObserver(Arc::new(move |job: &JobProperties| {
        let mut bars = bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bar = bars.entry(job.id().to_owned()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(100));
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos:>3}% {elapsed}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        // Only the type, status and progress: job properties also carry SAS URIs.
        let kind = job
            .job_type
            .map_or_else(|| "job".to_owned(), |t| format!("{t:?}").to_lowercase());
        let short: String = job.id().chars().take(8).collect();
        bar.set_message(format!(
            "{kind} job {short} {}",
            format!("{:?}", job.status()).to_lowercase()
        ));
        bar.set_position(u64::try_from(job.progress.unwrap_or(0).clamp(0, 100)).unwrap_or(0));
        if job.status().is_terminal() {
            bar.finish();
        }
    })))
}
