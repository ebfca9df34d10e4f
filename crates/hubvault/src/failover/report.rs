//! The run's account: the `--json` document (`status`, `failover_region`, the Event
//! Hub-compatible endpoint before and after, `phases`, `steps`) and a self-contained HTML
//! timeline (inline SVG, no scripts, no external assets, every value escaped). The renderer
//! takes only a title, facts and a list of phases, so a shared one can replace it.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::journal::{Outcome, RunRecord};
use super::probe::{Sample, Samples};

/// A named span of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
#[allow(
    clippy::cast_precision_loss,
    reason = "spans of a run are far below 2^52 nanoseconds' precision limits that matter here"
)]
pub fn seconds(a: OffsetDateTime, b: OffsetDateTime) -> f64 {
    b.unix_timestamp_nanos()
        .saturating_sub(a.unix_timestamp_nanos()) as f64
        / 1e9
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

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
        .map(|p| seconds(p.start, p.end))
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
        "phases": phases,
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

/// Escape text for HTML (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 5] = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#6b7280"];

/// A self-contained HTML page: title, facts (label, value) and the phases as an SVG timeline.
pub fn html(title: &str, facts: &[(String, String)], phases: &[Phase]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:24px}}td,th{{padding:2px 10px;text-align:left}}</style></head><body>\
         <h1>{t}</h1>\n<table>",
        t = escape(title)
    );
    for (k, v) in facts {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    out.push_str("</table>\n");
    out.push_str(&svg(phases));
    out.push_str("\n<table><tr><th>phase</th><th>start</th><th>end</th><th>seconds</th></tr>");
    for p in phases {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            escape(&p.name),
            escape(&rfc(p.start)),
            escape(&rfc(p.end)),
            seconds(p.start, p.end)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

fn svg(phases: &[Phase]) -> String {
    let (width, label, row) = (900.0_f64, 220.0_f64, 28.0_f64);
    let start = phases.iter().map(|p| p.start).min();
    let end = phases.iter().map(|p| p.end).max();
    let span = match (start, end) {
        (Some(s), Some(e)) => seconds(s, e).max(0.001),
        _ => 1.0,
    };
    let height = row * f64::from(u32::try_from(phases.len()).unwrap_or(0)) + 30.0;
    let mut out = format!(
        "<svg id=\"timeline\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    let scale = (width - label - 40.0) / span;
    for (i, p) in phases.iter().enumerate() {
        let y = row * f64::from(u32::try_from(i).unwrap_or(0)) + 10.0;
        let x0 = start
            .map_or(0.0, |s| seconds(s, p.start))
            .mul_add(scale, label);
        let w = (seconds(p.start, p.end) * scale).max(3.0);
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"13\">{}</text><rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{}\"/>",
            y + 14.0,
            escape(&p.name),
            COLORS
                .get(i.checked_rem(COLORS.len()).unwrap_or(0))
                .unwrap_or(&"#000")
        );
    }
    out.push_str(&axis(phases.len(), span, scale, label, row));
    out.push_str("</svg>");
    out
}

/// Five ticks under the bars, in seconds from the first phase's start.
fn axis(rows: usize, span: f64, scale: f64, label: f64, row: f64) -> String {
    let y = row * f64::from(u32::try_from(rows).unwrap_or(0)) + 14.0;
    let mut out = String::new();
    for k in 0..=4u32 {
        let t = span * f64::from(k) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"11\" fill=\"#555\">{t:.1} s</text>",
            t.mul_add(scale, label)
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_value_is_escaped() {
        let t = datetime!(2026-01-01 00:00 UTC);
        let page = html(
            "<script>x</script>",
            &[("a&b".into(), "\"q\"".into())],
            &[Phase {
                name: "<b>".into(),
                start: t,
                end: t + time::Duration::seconds(3),
            }],
        );
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;x"));
        assert!(
            page.contains("a&amp;b")
                && page.contains("&quot;q&quot;")
                && page.contains("&lt;b&gt;")
        );
        assert!(!page.contains("src=") && !page.contains("href="));
    }
}
