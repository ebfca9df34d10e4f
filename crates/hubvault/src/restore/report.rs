//! What a restore did, as `--json` (docs/architecture.md#configuration conventions) and as plain words.
//!
//! Holds ids, counts, codes and service messages only — never a line, a key or a URL.
//!
//! Must not: decide anything.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::apply::Applied;
use super::bulk::Failure;
use super::outcome::{Difference, KeyCheck};
use super::{Engine, Mode, Plan, RestoreOptions, Verify};
use crate::preflight;
use crate::snapshot::Manifest;
use crate::timeline::{between, rfc3339, round3};
use time::OffsetDateTime;

#[derive(Debug)]
pub struct RestoreReport {
    pub snapshot: String,
    pub hub: String,
    pub mode: Mode,
    /// The engine that applied (`bulk`, `job`), or the one asked for on a dry run.
    pub engine: Engine,
    pub dry_run: bool,
    pub plan: Plan,
    pub configurations: Option<Value>,
    pub preflight: Option<preflight::Report>,
    pub applied: Applied,
    pub failed: Vec<Failure>,
    /// Bulk calls that came back throttled and were slowed down and re-sent.
    pub throttled: u64,
    /// `None` when not verified (dry run, `--no-verify`, or stopped by preflight).
    pub verified: Option<bool>,
    pub differences: Vec<Difference>,
    /// How much of the restore the key comparison covered (set when verified).
    pub keys: Option<KeyCheck>,
    /// What happened to staging blobs (job engine).
    pub staging: Option<String>,
    /// The import job (job engine).
    pub job_id: Option<String>,
    /// The second import job that set many edge links (job engine), if one ran.
    pub link_job_id: Option<String>,
    /// Lines the import job's log named as failed, retried through the bulk engine.
    pub retried: usize,
    /// On a dry run: why a real run would be refused by the mirror brake.
    pub brake: Option<String>,
    /// Killed runs through the staging container found and cleaned up (see `Staging`).
    pub dead_runs: Vec<crate::staging::SweptRun>,
    /// What verification was asked to prove (`--verify`).
    pub verify: Verify,
    /// When the restore began (its first phase).
    pub started_at: OffsetDateTime,
    /// When the writes were done (import and edge links): devices can connect from here.
    pub usable_at: Option<OffsetDateTime>,
    /// When verification finished (or, with `--verify none`, was skipped).
    pub verified_at: Option<OffsetDateTime>,
    /// `--engine auto`: both estimates and why the engine was chosen.
    pub estimate: Option<super::estimate::Estimate>,
    /// Seconds the writes took (apply and links), to set against the estimate.
    pub applied_seconds: Option<f64>,
}

impl RestoreReport {
    pub fn new(manifest: &Manifest, hub: &str, options: &RestoreOptions, plan: &Plan) -> Self {
        RestoreReport {
            snapshot: manifest.id.clone(),
            hub: hub.to_owned(),
            mode: options.mode,
            engine: options.engine,
            dry_run: options.dry_run,
            plan: plan.clone(),
            configurations: None,
            preflight: None,
            applied: Applied::default(),
            failed: Vec::new(),
            throttled: 0,
            verified: None,
            differences: Vec::new(),
            keys: None,
            staging: None,
            job_id: None,
            link_job_id: None,
            retried: 0,
            brake: None,
            dead_runs: Vec::new(),
            verify: options.verify,
            started_at: options
                .timeline
                .first()
                .unwrap_or_else(OffsetDateTime::now_utc),
            usable_at: None,
            verified_at: None,
            estimate: None,
            applied_seconds: None,
        }
    }

    /// Seconds from the start to `at`.
    fn after(&self, at: Option<OffsetDateTime>) -> Option<f64> {
        at.map(|t| round3(between(self.started_at, t)))
    }

    /// `all`, `sample of N` or `none`: what the key comparison proved.
    pub fn verified_keys(&self) -> Option<String> {
        match (&self.keys, self.verify) {
            (Some(k), _) => Some(k.label()),
            (None, Verify::None) if self.usable_at.is_some() => Some("none".into()),
            _ => None,
        }
    }

    /// Preflight stopped the restore before anything was written.
    pub fn blocked(&self) -> bool {
        self.preflight.as_ref().is_some_and(|p| !p.ok)
    }

    /// Exit 1: a finding, a failed record, a difference after verification, or (dry run) a
    /// plan the mirror brake would refuse.
    pub fn found_something(&self) -> bool {
        self.blocked()
            || !self.failed.is_empty()
            || self.verified == Some(false)
            || self.brake.is_some()
    }

    pub fn to_json(&self, with_items: bool) -> Value {
        let mut v = json!({
            "snapshot": self.snapshot,
            "hub": self.hub,
            "mode": self.mode.as_str(),
            "engine": self.engine.as_str(),
            "dry_run": self.dry_run,
            "plan": self.plan.counts_json(),
            "applied": self.applied,
            "failed": self.failed,
            "verified": self.verified,
            "differences": self.differences,
            "throttled": self.throttled,
        });
        if with_items {
            v["plan_items"] = self.plan.items_json();
        }
        if let Some(c) = &self.configurations {
            v["configurations"] = c.clone();
        }
        if let Some(p) = &self.preflight {
            v["preflight"] = serde_json::to_value(p).unwrap_or(Value::Null);
        }
        if let Some(s) = &self.staging {
            v["staging"] = json!(s);
        }
        if let Some(k) = &self.keys {
            v["key_check"] = serde_json::to_value(k).unwrap_or(Value::Null);
        }
        // What was proven: `all`, `sample of N` (then `key_check.of` says of how many), `none`.
        if let Some(label) = self.verified_keys() {
            v["verified_keys"] = json!(label);
        }
        if let Some(e) = &self.estimate {
            v["engine_choice"] = serde_json::to_value(e).unwrap_or(Value::Null);
            v["engine_choice"]["actual_seconds"] = json!(self.applied_seconds);
        }
        if self.usable_at.is_some() {
            v["verify"] = json!(self.verify.label());
            v["started_at"] = json!(rfc3339(self.started_at));
            v["usable_at"] = json!(self.usable_at.map(rfc3339));
            v["usable_after_seconds"] = json!(self.after(self.usable_at));
            v["verified_at"] = json!(self.verified_at.map(rfc3339));
            v["verified_after_seconds"] = json!(self.after(self.verified_at));
        }
        if let Some(j) = &self.job_id {
            v["job_id"] = json!(j);
            v["retried"] = json!(self.retried);
        }
        if let Some(j) = &self.link_job_id {
            v["link_job_id"] = json!(j);
        }
        if let Some(b) = &self.brake {
            v["brake"] = json!(b);
        }
        if !self.dead_runs.is_empty() {
            v["dead_runs"] = serde_json::to_value(&self.dead_runs).unwrap_or(Value::Null);
        }
        v
    }

    /// Plain words for people.
    pub fn human(&self, with_items: bool) -> String {
        let mut out = String::new();
        if let Some(p) = &self.preflight
            && !p.ok
            && self.plan.items.is_empty()
            && self.plan.conflicts.is_empty()
        {
            // Stopped before planning (credentials, firewall, job slot, staging).
            let _ = write!(out, "{}", p.table());
            let _ = writeln!(
                out,
                "nothing was read or changed on {}: fix the findings above, or pass --no-preflight",
                self.hub
            );
            return out;
        }
        let c = self.plan.counts();
        let _ = writeln!(
            out,
            "plan for {} from snapshot {} ({}): {} to create, {} to update, {} to delete, {} unchanged{}",
            self.hub,
            self.snapshot,
            self.mode.as_str(),
            c.create,
            c.update,
            c.delete,
            c.unchanged,
            if self.plan.conflicts.is_empty() {
                String::new()
            } else {
                format!(", {} already exist (conflicts)", self.plan.conflicts.len())
            }
        );
        if with_items {
            for i in self
                .plan
                .items
                .iter()
                .filter(|i| i.action != super::plan::Action::Unchanged)
            {
                let aspects: Vec<&str> = i.aspects.iter().map(|a| a.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  {} {} {}",
                    i.action.as_str(),
                    i.key(),
                    aspects.join(",")
                );
            }
        }
        if let Some(p) = &self.preflight
            && !p.ok
        {
            let _ = write!(out, "{}", p.table());
            let _ = writeln!(
                out,
                "nothing was changed: fix the findings above, or pass --no-preflight"
            );
            return out;
        }
        if self.dry_run {
            if let Some(b) = &self.brake {
                let _ = writeln!(out, "a real run would be refused: {b}");
            }
            let _ = writeln!(out, "dry run: nothing was changed");
            return out;
        }
        self.outcome_text(&mut out);
        out
    }

    /// What was applied, failed and verified.
    fn outcome_text(&self, out: &mut String) {
        if let Some(e) = &self.estimate {
            let _ = writeln!(out, "engine auto → {}", e.reason);
        }
        let a = self.applied;
        let _ = writeln!(
            out,
            "applied with the {} engine: {} created, {} updated, {} deleted, {} edge links, {} configurations",
            self.engine.as_str(),
            a.create,
            a.update,
            a.delete,
            a.links,
            a.configurations
        );
        if let Some(j) = &self.job_id {
            let _ = writeln!(
                out,
                "import job {j}; {} failed line(s) retried through the registry API",
                self.retried
            );
        }
        if let Some(j) = &self.link_job_id {
            let _ = writeln!(out, "edge links set by import job {j}");
        }
        if self.throttled > 0 {
            let _ = writeln!(
                out,
                "the hub throttled {} call(s); they were slowed down and re-sent",
                self.throttled
            );
        }
        for f in &self.failed {
            let _ = writeln!(out, "failed: {} ({}): {}", f.id, f.code, f.message);
        }
        if let Some(s) = &self.staging {
            let _ = writeln!(out, "{s}");
        }
        match self.verified {
            Some(true) => {
                let _ = writeln!(out, "verified: the target matches the snapshot");
            }
            Some(false) => {
                let _ = writeln!(
                    out,
                    "verification found {} difference(s):",
                    self.differences.len()
                );
                for d in &self.differences {
                    let _ = writeln!(
                        out,
                        "  {} {} {}",
                        d.problem.as_str(),
                        d.id,
                        d.aspects.join(",")
                    );
                }
            }
            None => {}
        }
        if let Some(k) = &self.keys {
            let _ = writeln!(out, "{}", k.sentence());
        }
        if let Some(usable) = self.after(self.usable_at) {
            let _ = write!(
                out,
                "usable after {} (import and links done)",
                crate::report::duration_text(usable)
            );
            match (self.verify, self.after(self.verified_at)) {
                (Verify::None, _) => {
                    let _ = writeln!(out, "; not verified (--verify none)");
                }
                (_, Some(verified)) => {
                    let _ = writeln!(
                        out,
                        "; verified ({}) after {}",
                        self.verify.label(),
                        crate::report::duration_text(verified)
                    );
                }
                (_, None) => out.push('\n'),
            }
        }
    }
}
