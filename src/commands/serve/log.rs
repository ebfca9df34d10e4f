//! The run log: one line per run event, as text for people or JSON for machines
//! (`--log-format json`): `ts`, `run_id`, `policy`, `hub`, `phase`, `outcome`, `snapshot`,
//! `error_code`, and `drill` (a scheduled drill's figures; `null` for backups). On stderr, or appended to `--log-file`. Never a secret: error messages are
//! redacted by the run, and the JSON form carries codes only.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use hubvault::service::hub_run::{Outcome, Phase, Report};
use serde_json::json;

use super::super::Result;

pub struct RunLog {
    json: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl RunLog {
    pub fn open(format: &str, file: Option<&Path>) -> Result<RunLog> {
        let out: Box<dyn Write + Send> = match file {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        hubvault::Error::usage(
                            format!("cannot open the run log {}: {e}", path.display()),
                            "pass a --log-file in a writable folder",
                        )
                    })?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Ok(RunLog {
            json: format == "json",
            out: Mutex::new(out),
        })
    }

    /// Log one event of a run (text mode: only its end, and failures in full).
    pub fn event(&self, phase: Phase, r: &Report) {
        let line = if self.json {
            Some(Self::json_line(phase, r))
        } else if phase == Phase::Done {
            Some(Self::text_line(r))
        } else {
            None
        };
        if let Some(line) = line {
            let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn json_line(phase: Phase, r: &Report) -> String {
        let done = phase == Phase::Done;
        json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "run_id": r.run_id,
            "policy": r.policy,
            "hub": r.hub,
            "slot": r.slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "phase": phase,
            "outcome": done.then_some(r.outcome),
            "snapshot": r.snapshot,
            "error_code": r.error.as_ref().map(|e| e.code.clone()),
            "drill": r.drill,
        })
        .to_string()
    }

    fn text_line(r: &Report) -> String {
        let ts = r
            .finished_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let what = match (r.outcome, &r.error) {
            (Outcome::Ok, _) if r.drill.is_some() => format!(
                "drill passed, snapshot {}{}",
                r.snapshot.as_deref().unwrap_or("?"),
                r.drill.as_ref().map(super::drill_words).unwrap_or_default()
            ),
            (Outcome::Ok, _) => format!(
                "ok, snapshot {} ({} devices), {} removed by retention",
                r.snapshot.as_deref().unwrap_or("?"),
                r.devices.unwrap_or(0),
                r.forget_removed
            ),
            (Outcome::Skipped, _) => "skipped: this slot was handled already".to_owned(),
            (Outcome::Stopped, _) => {
                "stopped by shutdown (nothing left behind); the slot runs again later".to_owned()
            }
            (Outcome::Failed, Some(e)) => format!("FAILED [{}] {}", e.code, e.message),
            (Outcome::Failed, None) => "FAILED".to_owned(),
        };
        format!(
            "{ts} {} (policy {}, slot {}): {what}",
            r.hub,
            r.policy,
            r.slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }
}
