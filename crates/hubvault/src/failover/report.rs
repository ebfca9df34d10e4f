//! The run's account: the `--json` document (`status`, `failover_region`, the Event
//! Hub-compatible endpoint before and after, `phases`, `steps`) and the HTML page, which is the
//! shared [`crate::report::Document`] filled from the run: overlapping phases on one timeline
//! (the devices' outage inside the failover operation), the outage as a figure, the endpoints and
//! steps as tables.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::journal::{Outcome, RunRecord};
use super::probe::{Sample, Samples};
use crate::report::{self, Document, Figure, Table, Verdict, duration_text};
use crate::timeline::Phase;

/// The first failed sample at or after `from`, and the first good one after it.
fn broken_span(
    samples: &[Sample],
    from: OffsetDateTime,
) -> Option<(OffsetDateTime, Option<OffsetDateTime>)> {
    let first_bad = samples.iter().find(|s| s.at >= from && !s.ok)?;
    let healed = samples
        .iter()
        .find(|s| s.at > first_bad.at && s.ok)
        .map(|s| s.at);
    Some((first_bad.at, healed))
}

fn step_span(
    run: &RunRecord,
    pred: impl Fn(&str) -> bool,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let recs: Vec<_> = run.done.values().filter(|r| pred(&r.name)).collect();
    Some((
        recs.iter().map(|r| r.start).min()?,
        recs.iter().map(|r| r.end).max()?,
    ))
}

fn is_network(name: &str) -> bool {
    [
        "delete-endpoint:",
        "create-endpoint:",
        "unlink-dns:",
        "link-dns:",
        "remove-endpoint:",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The phases, in the order things happen.
pub fn phases(run: &RunRecord, samples: &Samples) -> Vec<Phase> {
    let mut out = Vec::new();
    let mut push = |name: String, span: Option<(OffsetDateTime, OffsetDateTime)>| {
        if let Some((start, end)) = span {
            out.push(Phase { name, start, end });
        }
    };
    let op = step_span(run, |n| n == "request-failover" || n == "wait-failover");
    push("failover operation".into(), op);
    // Breakage is looked for from the run's first journalled step, not the operation's: a run
    // resumed after a crash journals the operation's steps late, but its journalled samples
    // (`RunRecord::observed`) show the outage from when it began.
    let from = run.done.values().map(|r| r.start).min();
    if let (Some(_), Some(from)) = (op, from) {
        let devices = broken_span(&samples.devices, from).map(|(s, e)| (s, e.unwrap_or(s)));
        push("devices cannot send".into(), devices);
    }
    push(
        "private endpoints and DNS".into(),
        step_span(run, is_network),
    );
    if let (Some(_), Some(from)) = (op, from) {
        for (name, s) in &samples.consumers {
            let span = broken_span(s, from).map(|(b, e)| (b, e.unwrap_or(b)));
            push(format!("consumer {name} broken"), span);
        }
    }
    push("whole run".into(), step_span(run, |_| true));
    out
}

/// Seconds the devices could not send (the measured outage), if measured.
pub fn device_outage(phases: &[Phase]) -> Option<f64> {
    phases
        .iter()
        .find(|p| p.name == "devices cannot send")
        .map(Phase::seconds)
}

/// The `--json` document of a run.
pub fn document(status: &str, run: &RunRecord, phases: &[Phase], reason: Option<&str>) -> Value {
    let after = run.data_of("read-endpoint").cloned().unwrap_or(Value::Null);
    let steps: Vec<Value> = run
        .plan
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| run.done.get(&i).map(|r| (s, r)))
        .map(|(s, r)| json!({"name": s.name, "outcome": r.outcome, "detail": r.detail}))
        .collect();
    json!({
        "status": status,
        "run": run.id,
        "failover_region": run.plan.route.to,
        "eventhub_endpoint_before": {"endpoint": run.plan.route.events_before.endpoint, "path": run.plan.route.events_before.path},
        "eventhub_endpoint_after": if after.is_null() { Value::Null } else { json!({"endpoint": after["endpoint"], "path": after["path"]}) },
        "phases": phases.iter().map(Phase::to_json).collect::<Vec<_>>(),
        "steps": steps,
        "reason": reason,
    })
}

/// Whether any step failed or was not measured (exit 1).
pub fn has_findings(run: &RunRecord) -> bool {
    run.done.values().any(|r| {
        r.outcome != Outcome::Ok && r.name != "request-failover" && r.name != "wait-failover"
    })
}

/// What the page needs besides the run: its title, the run's status and why it stopped, and
/// the command that repeats it.
pub struct Page<'a> {
    pub title: String,
    pub status: &'a str,
    pub completed: bool,
    pub reason: Option<&'a str>,
    pub command: String,
}

/// The run as the shared report's document: passed when the run completed.
pub fn page(p: &Page<'_>, run: &RunRecord, phases: &[Phase]) -> Document {
    let mut reasons = vec![format!(
        "the failover {}: primary region {}",
        p.status, run.plan.route.to
    )];
    reasons.extend(p.reason.map(|r| format!("stopped: {r}")));
    reasons.extend(
        run.done
            .values()
            .filter(|r| r.outcome != Outcome::Ok)
            .map(|r| format!("step {} {}: {}", r.name, outcome_text(r.outcome), r.detail)),
    );
    Document {
        title: p.title.clone(),
        subtitle: format!(
            "run {}, from {} to {}",
            run.id, run.plan.route.from, run.plan.route.to
        ),
        verdict: if p.completed {
            Verdict::Passed
        } else {
            Verdict::Failed
        },
        reasons,
        phases: phases.to_vec(),
        figures: figures(phases),
        tables: vec![endpoints(p.status, run), steps(run)],
        commands: vec![p.command.clone()],
    }
}

fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Skipped => "skipped",
        Outcome::Failed => "failed",
    }
}

/// The outages as measured: the devices', then each consumer's.
fn figures(phases: &[Phase]) -> Vec<Figure> {
    let measured = |name: &str, label: String, note: &str| Figure {
        label,
        value: phases
            .iter()
            .find(|p| p.name == name)
            .map_or_else(|| "not measured".to_owned(), |p| duration_text(p.seconds())),
        target: None,
        status: report::Status::NoTarget,
        note: Some(note.to_owned()),
    };
    let mut out = vec![measured(
        "devices cannot send",
        "devices could not send".into(),
        "first refused probe message to the next accepted one",
    )];
    let consumers: Vec<&Phase> = phases
        .iter()
        .filter(|p| p.name.starts_with("consumer "))
        .collect();
    if consumers.is_empty() {
        out.push(Figure {
            label: "consumers".into(),
            value: "not measured".into(),
            target: None,
            status: report::Status::NoTarget,
            note: Some("no consumer has a health check".into()),
        });
    }
    for c in consumers {
        out.push(measured(
            &c.name,
            c.name.clone(),
            "first failed check to the next good one",
        ));
    }
    out
}

fn endpoints(status: &str, run: &RunRecord) -> Table {
    let before = &run.plan.route.events_before;
    let after = run.data_of("read-endpoint");
    let text = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v[key].as_str())
            .unwrap_or("not read")
            .to_owned()
    };
    Table {
        title: "Run".into(),
        columns: vec!["fact".into(), "value".into()],
        rows: vec![
            vec!["status".into(), status.to_owned()],
            vec!["failover region".into(), run.plan.route.to.clone()],
            vec![
                "Event Hub endpoint before".into(),
                format!("{} {}", before.endpoint, before.path),
            ],
            vec![
                "Event Hub endpoint after".into(),
                format!("{} {}", text(after, "endpoint"), text(after, "path")),
            ],
        ],
    }
}

fn steps(run: &RunRecord) -> Table {
    Table {
        title: "Steps".into(),
        columns: vec!["step".into(), "outcome".into(), "detail".into()],
        rows: run
            .done
            .values()
            .map(|r| {
                vec![
                    r.name.clone(),
                    outcome_text(r.outcome).to_owned(),
                    r.detail.clone(),
                ]
            })
            .collect(),
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    fn phase(name: &str, from: i64, to: i64) -> Phase {
        let t = datetime!(2026-01-01 00:00 UTC);
        Phase {
            name: name.into(),
            start: t + Duration::seconds(from),
            end: t + Duration::seconds(to),
        }
    }

    #[test]
    fn the_outages_are_figures_and_an_unmeasured_one_says_so() {
        let phases = [
            phase("failover operation", 0, 40),
            phase("devices cannot send", 5, 17),
            phase("consumer <reader> broken", 6, 30),
        ];
        let f = figures(&phases);
        let shown: Vec<(&str, &str)> = f
            .iter()
            .map(|f| (f.label.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("devices could not send", "12.0 s"),
                ("consumer <reader> broken", "24.0 s")
            ]
        );
        assert_eq!(device_outage(&phases), Some(12.0));
        let none = figures(&phases[..1]);
        assert_eq!(none[0].value, "not measured");
        assert_eq!(none[1].label, "consumers");
    }
}
