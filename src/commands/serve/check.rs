//! `policy check FILE_OR_DIR`: each policy explained in words — hubs (as found in the config),
//! schedule and its next five runs (the zone's abbreviation shows DST), retention, jitter,
//! timeout, and its `[drill]` (what is drilled into which scratch hub, its next runs, targets) —
//! and what is wrong with it. Exit 1 when a policy has a problem, 2 when none loads.

use std::fmt::Write as _;

use chrono::Utc;
use hubvault::config::Config;
use hubvault::policy::{Policy, words};
use serde_json::{Value, json};

use super::super::Result;
use super::Loaded;
use crate::Outcome;
use crate::cli::PolicyCheckArgs;

pub fn policy_check(config: &Config, args: &PolicyCheckArgs) -> Result<Outcome> {
    let loaded = Loaded::read(std::slice::from_ref(&args.path), config)?;
    let now = Utc::now();
    let mut human = String::new();
    let mut docs: Vec<Value> = Vec::new();
    let mut problems_total: usize = 0;
    for p in &loaded.run {
        let (doc, text, problems) = explain(p, config, now);
        problems_total = problems_total.saturating_add(problems);
        docs.push(doc);
        human.push_str(&text);
    }
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    for e in &errors {
        let _ = writeln!(human, "error: {e}\n");
    }
    let mut outcome = Outcome::ok(json!({"policies": docs, "errors": errors}), human);
    outcome.found_something = problems_total > 0 || !errors.is_empty();
    outcome.warnings = loaded
        .run
        .iter()
        .flat_map(|p| p.warnings.iter().map(ToString::to_string))
        .collect();
    Ok(outcome)
}

/// One policy: its JSON document, its text, and how many problems it has.
fn explain(p: &Policy, config: &Config, now: chrono::DateTime<Utc>) -> (Value, String, usize) {
    let f = &p.file;
    let (picked_hubs, unknown) = super::hubs_of(p, config);
    // Without hubs in the config there is nothing to match against: say so, find no problem.
    let configured = !config.hubs.is_empty() || !config.dps.is_empty();
    let mut problems: Vec<String> = unknown
        .iter()
        .filter(|_| configured)
        .map(|h| {
            format!("{h:?} is not in the config ([hubs.{h}] or [dps.{h}]): serve and run cannot back it up")
        })
        .collect();
    if configured && picked_hubs.is_empty() && unknown.is_empty() {
        problems.push("no hub of the config matches `hubs`".to_owned());
    }
    let mut text = format!("{} ({})\n", p.name, p.path.display());
    if let Some(d) = &f.description {
        let _ = writeln!(text, "  {d}");
    }
    let hubs = if configured {
        list(&picked_hubs)
    } else {
        "(no [hubs] in the config to match against)".to_owned()
    };
    let _ = writeln!(text, "  hubs:      {hubs}");
    let (schedule_words, runs) = if let Some(s) = &f.schedule {
        (words::schedule(s), words::next_runs(s, now, 5))
    } else if f.drill.is_some() {
        // A drills-only policy: serve runs its [drill]; its backups run with `run --policy`.
        (
            "backups not scheduled (only its [drill] is)".to_owned(),
            Vec::new(),
        )
    } else {
        problems
            .push("no [schedule]: `serve` never runs it (`run --policy` still does)".to_owned());
        ("not scheduled".to_owned(), Vec::new())
    };
    let _ = writeln!(text, "  schedule:  {schedule_words}");
    for r in &runs {
        let utc = r.utc.format("%Y-%m-%d %H:%M:%S UTC");
        let note = r
            .note
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default();
        let _ = writeln!(text, "             {}  = {utc}{note}", r.local);
    }
    let _ = writeln!(text, "  retention: {}", words::retention(&f.retention));
    let jitter = f.jitter.map(|j| j.to_string());
    let timeout = f.timeout.map_or_else(
        || {
            format!(
                "{} (default)",
                hubvault::policy::Interval::secs(
                    hubvault::service::hub_run::DEFAULT_TIMEOUT.as_secs()
                )
            )
        },
        |t| t.to_string(),
    );
    let _ = writeln!(
        text,
        "  jitter:    {}; timeout: {timeout}",
        jitter.as_deref().unwrap_or("none")
    );
    let drill = f.drill.as_ref().map(|d| {
        let (doc, words) = explain_drill(d, &picked_hubs, config, now);
        text.push_str(&words);
        if configured && !config.hubs.contains_key(&d.to) {
            problems.push(format!(
                "[drill] to = {:?} is not in the config ([hubs.{}]): the drills cannot run",
                d.to, d.to
            ));
        }
        problems.extend(drill_problems(d, config));
        doc
    });
    for problem in &problems {
        let _ = writeln!(text, "  problem:   {problem}");
    }
    text.push('\n');
    let doc = json!({
        "name": p.name,
        "path": p.path.display().to_string(),
        "hubs": picked_hubs,
        "schedule": schedule_words,
        "next_runs": runs,
        "retention": words::retention(&f.retention),
        "jitter": jitter,
        "timeout": timeout,
        "drill": drill,
        "problems": problems,
    });
    (doc, text, problems.len())
}

/// What makes every drill of a `[drill]` fail before it starts.
fn drill_problems(d: &hubvault::policy::DrillSection, config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(dps) = &d.via_dps {
        if !d.x509_certs.is_empty() {
            problems.push(
                "[drill] x509-certs with via-dps: registering X.509 devices through DPS with \
                 their certificate is not built, so every drill is refused; drop one"
                    .to_owned(),
            );
        }
        if !config.dps.contains_key(dps) {
            problems.push(format!(
                "[drill] via-dps = {dps:?} is not in the config ([dps.{dps}]): the drills cannot run"
            ));
        }
    }
    if d.probe_devices == 0 && d.x509_certs.is_empty() {
        problems.push(
            "[drill] probe-devices = 0 and no x509-certs: no device is probed, so every drill \
             fails; use 1 or more"
                .to_owned(),
        );
    }
    for spec in &d.x509_certs {
        let (_, file) = hubvault::device::certificate::parse_spec(spec);
        if !file.is_file() {
            problems.push(format!(
                "[drill] x509-certs: {} is not a file here (a relative path is read from the \
                 working directory of the serve or run that drills)",
                file.display()
            ));
        }
    }
    problems
}

/// `[drill]` in words: what is drilled into which scratch hub, when (next three runs), how.
fn explain_drill(
    d: &hubvault::policy::DrillSection,
    hubs: &[String],
    config: &Config,
    now: chrono::DateTime<Utc>,
) -> (Value, String) {
    let schedule = d.schedule();
    let when = words::schedule(&schedule);
    let runs = words::next_runs(&schedule, now, 3);
    let drilled = super::drilled(hubs, d, config);
    let target = |t: Option<f64>| t.map_or_else(|| "none".to_owned(), |s| format!("{s}s"));
    let mut text = format!(
        "  drill:     {} restored into {} (must be empty), {when}\n",
        list(&drilled),
        d.to
    );
    for r in &runs {
        let _ = writeln!(
            text,
            "             {}  = {}",
            r.local,
            r.utc.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let _ = writeln!(
        text,
        "             engine {}, {} probe device(s) per kind{}{}; verify {}; {}; RTO target {}, RPO target {}; report {}",
        d.engine.as_str(),
        d.probe_devices,
        if d.x509_certs.is_empty() {
            String::new()
        } else {
            format!(", {} X.509 certificate(s)", d.x509_certs.len())
        },
        d.via_dps
            .as_ref()
            .map_or_else(String::new, |dps| format!(", through DPS {dps}")),
        d.verify.label(),
        if d.cleanup {
            "scratch hub emptied afterwards"
        } else {
            "no cleanup"
        },
        target(d.rto_target),
        target(d.rpo_target),
        d.report
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    );
    let doc = json!({
        "to": d.to,
        "hubs": drilled,
        "schedule": when,
        "next_runs": runs,
        "verify": d.verify.label(),
        "engine": d.engine.as_str(),
        "probe_devices": d.probe_devices,
        "via_dps": d.via_dps,
        "x509_certs": d.x509_certs,
        "cleanup": d.cleanup,
        "rto_target_seconds": d.rto_target,
        "rpo_target_seconds": d.rpo_target,
        "report": d.report,
    });
    (doc, text)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}
