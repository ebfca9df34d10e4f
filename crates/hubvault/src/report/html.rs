//! Rendering a [`Document`] as one HTML page (inline CSS, inline SVG, no script). Hand-written:
//! the page is small and fixed, and one escaping function that every value passes through is
//! easier to audit than a template engine's rules.

use std::fmt::Write as _;

use super::{Document, Figure, Status, Table, Verdict, duration_text};
use crate::timeline::{Phase, between, rfc3339};

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;\
color:#1a202c;background:#ffffff;max-width:1000px}\
header{height:96px}h1{font-size:22px;margin:0 0 6px}h2{font-size:16px;margin:24px 0 8px}\
.sub{color:#4a5568;font-size:13px}.badge{display:inline-block;padding:2px 10px;border-radius:4px;\
color:#fff;font-weight:600;margin-left:8px;font-size:14px}.passed{background:#2f855a}\
.failed{background:#c53030}.figs{display:flex;flex-wrap:wrap;gap:12px}\
.fig{border:1px solid #cbd5e0;border-radius:6px;padding:10px 14px;min-width:180px}\
.fig .label{font-size:12px;color:#4a5568}.fig .value{font-size:24px;font-weight:600}\
.fig .target{font-size:12px}.met{color:#2f855a}.breached{color:#c53030}.none{color:#718096}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #cbd5e0;padding:3px 8px;\
text-align:left}th{background:#edf2f7}pre{background:#f7fafc;border:1px solid #cbd5e0;\
padding:8px;font-size:12px;white-space:pre-wrap}ul{margin:4px 0}";

/// Bar colours, one per phase in turn (dark enough to read white text against).
const PALETTE: [&str; 6] = [
    "#2b6cb0", "#6b46c1", "#2c7a7b", "#b7791f", "#c05621", "#4a5568",
];

pub(super) fn render(doc: &Document) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let verdict = doc.verdict.as_str();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<header><h1>{}\
         <span class=\"badge {verdict}\" id=\"verdict\">{}</span></h1>\
         <div class=\"sub\">{}</div></header>\n",
        escape(&doc.title),
        escape(&doc.title),
        escape(&verdict.to_uppercase()),
        escape(&doc.subtitle),
    );
    out.push_str("<section id=\"timeline\">");
    out.push_str(&timeline_svg(&doc.phases));
    out.push_str("</section>\n");
    figures(&mut out, &doc.figures);
    if !doc.reasons.is_empty() {
        let title = if doc.verdict == Verdict::Passed {
            "Why it passed"
        } else {
            "Why it failed"
        };
        let _ = write!(out, "<h2>{title}</h2><ul id=\"reasons\">");
        for r in &doc.reasons {
            let _ = write!(out, "<li>{}</li>", escape(r));
        }
        out.push_str("</ul>\n");
    }
    for t in &doc.tables {
        table(&mut out, t);
    }
    phase_table(&mut out, &doc.phases);
    if !doc.commands.is_empty() {
        out.push_str("<h2>Reproduce</h2><pre id=\"commands\">");
        for c in &doc.commands {
            let _ = writeln!(out, "{}", escape(c));
        }
        out.push_str("</pre>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn figures(out: &mut String, figures: &[Figure]) {
    if figures.is_empty() {
        return;
    }
    out.push_str("<h2>Figures</h2><div class=\"figs\" id=\"figures\">");
    for f in figures {
        let class = match f.status {
            Status::Met => "met",
            Status::Breached => "breached",
            Status::NoTarget => "none",
        };
        let target = match &f.target {
            Some(t) => format!("target {} — {}", escape(t), f.status.as_str()),
            None => f.status.as_str().to_owned(),
        };
        let _ = write!(
            out,
            "<div class=\"fig\"><div class=\"label\">{}</div><div class=\"value\">{}</div>\
             <div class=\"target {class}\">{target}</div>",
            escape(&f.label),
            escape(&f.value),
        );
        if let Some(n) = &f.note {
            let _ = write!(out, "<div class=\"label\">{}</div>", escape(n));
        }
        out.push_str("</div>");
    }
    out.push_str("</div>\n");
}

fn table(out: &mut String, t: &Table) {
    let _ = write!(out, "<h2>{}</h2><table><tr>", escape(&t.title));
    for c in &t.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr>");
    for row in &t.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

fn phase_table(out: &mut String, phases: &[Phase]) {
    let rows = phases
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                rfc3339(p.start),
                rfc3339(p.end),
                duration_text(p.seconds()),
            ]
        })
        .collect();
    table(
        out,
        &Table {
            title: "Phases".into(),
            columns: vec!["phase".into(), "start".into(), "end".into(), "took".into()],
            rows,
        },
    );
}

/// Width of the SVG, of its label column, and the height of one phase's row, in pixels.
const WIDTH: f64 = 960.0;
const LABELS: f64 = 190.0;
const ROW: f64 = 30.0;

/// One row per phase: its name, a bar placed on the run's time axis, its duration. Phases may
/// overlap (a failover's "devices cannot send" lies inside its "failover operation"): the axis
/// runs from the earliest start to the latest end, each phase on its own row.
fn timeline_svg(phases: &[Phase]) -> String {
    let mut svg = String::new();
    let (Some(first), Some(last)) = (
        phases.iter().map(|p| p.start).min(),
        phases.iter().map(|p| p.end).max(),
    ) else {
        return "<p>No phase was recorded.</p>".into();
    };
    let total = between(first, last).max(1e-3);
    let axis = WIDTH - LABELS - 90.0;
    #[allow(clippy::cast_precision_loss, reason = "a handful of phases")]
    let height = ROW * (phases.len() as f64) + 44.0;
    let _ = write!(
        svg,
        "<h2>Timeline ({})</h2><svg width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         font-family=\"system-ui,sans-serif\" font-size=\"13\">",
        escape(&duration_text(total)),
    );
    for (i, p) in phases.iter().enumerate() {
        #[allow(clippy::cast_precision_loss, reason = "a handful of phases")]
        let y = ROW * i as f64;
        let x = LABELS + axis * between(first, p.start) / total;
        // At least a few pixels, so a phase of milliseconds still shows where it was.
        let w = (axis * p.seconds() / total).max(4.0);
        let colour = PALETTE
            .get(i.checked_rem(PALETTE.len()).unwrap_or(0))
            .copied()
            .unwrap_or("#4a5568");
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" \
             height=\"{:.1}\" fill=\"{colour}\" rx=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"#1a202c\">{}</text>",
            y + 19.0,
            escape(&p.name),
            y + 4.0,
            ROW - 8.0,
            x + w + 6.0,
            y + 19.0,
            escape(&duration_text(p.seconds())),
        );
    }
    let base = height - 40.0;
    let _ = write!(
        svg,
        "<line x1=\"{LABELS}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"#718096\"/>",
        LABELS + axis,
    );
    svg.push_str(&ticks(base, axis, total));
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{:.1}\" fill=\"#4a5568\">{}</text></svg>",
        base + 34.0,
        escape(&format!("start {}", rfc3339(first))),
    );
    svg
}

/// Five ticks under the axis, labelled with the time since the first phase began.
fn ticks(base: f64, axis: f64, total: f64) -> String {
    let mut out = String::new();
    for k in 0..=4_u32 {
        let at = total * f64::from(k) / 4.0;
        let x = LABELS + axis * f64::from(k) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{base:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#718096\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" fill=\"#4a5568\" font-size=\"11\" \
             text-anchor=\"middle\" class=\"tick\">{}</text>",
            base + 4.0,
            base + 16.0,
            escape(&format!("+{}", duration_text(at))),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use time::{Duration, OffsetDateTime};

    fn doc() -> Document {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        Document {
            title: "Drill <hub-drill>".into(),
            subtitle: "snapshot 'x' & co".into(),
            verdict: Verdict::Failed,
            reasons: vec!["missing <script>alert(1)</script>".into()],
            phases: vec![
                Phase {
                    name: "apply".into(),
                    start: t0,
                    end: t0 + Duration::seconds(3),
                },
                Phase {
                    name: "probe".into(),
                    start: t0 + Duration::seconds(3),
                    end: t0 + Duration::seconds(4),
                },
            ],
            figures: vec![Figure {
                label: "RTO".into(),
                value: "4.0 s".into(),
                target: Some("30m".into()),
                status: Status::Met,
                note: None,
            }],
            tables: vec![Table {
                title: "t".into(),
                columns: vec!["id".into()],
                rows: vec![vec!["a\"b".into()]],
            }],
            commands: vec!["hubvault drill latest --to 'x'".into()],
        }
    }

    #[test]
    fn every_value_is_escaped_and_nothing_is_fetched() {
        let html = doc().html();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("Drill &lt;hub-drill&gt;"));
        assert!(html.contains("a&quot;b") && html.contains("&#39;x&#39;"));
        // Inline SVG in HTML5 needs no namespace: the page names no URL at all.
        for external in ["src=", "href=", "@import", "url(", "http://", "https://"] {
            assert!(!html.contains(external), "{external} in the page");
        }
        assert_eq!(html.matches("<rect").count(), 2);
        assert!(html.contains("target 30m — met"));
    }

    #[test]
    fn no_phase_says_so_instead_of_an_empty_picture() {
        let mut d = doc();
        d.phases.clear();
        assert!(d.html().contains("No phase was recorded."));
    }

    #[test]
    fn overlapping_phases_share_one_axis_from_the_earliest_start() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut d = doc();
        d.phases = vec![
            Phase {
                name: "failover operation".into(),
                start: t0 + Duration::seconds(2),
                end: t0 + Duration::seconds(42),
            },
            Phase {
                name: "devices cannot send".into(),
                start: t0 + Duration::seconds(10),
                end: t0 + Duration::seconds(20),
            },
            Phase {
                name: "whole run".into(),
                start: t0,
                end: t0 + Duration::seconds(40),
            },
        ];
        let html = d.html();
        assert!(html.contains("Timeline (42.0 s)"), "{html}");
        assert!(html.contains("start 1970-01-01T00:00:00Z"));
        // The ticks of the seconds axis, from +0 to the whole span.
        for tick in ["+0 ms", "+10.5 s", "+21.0 s", "+31.5 s", "+42.0 s"] {
            assert!(html.contains(tick), "{tick} missing");
        }
        // "whole run" starts at the axis' origin, the operation 2 s of 42 s into it.
        let axis = WIDTH - LABELS - 90.0;
        assert!(html.contains(&format!("<rect x=\"{LABELS:.1}\" y=\"64.0\"")));
        let op = LABELS + axis * 2.0 / 42.0;
        assert!(html.contains(&format!("<rect x=\"{op:.1}\" y=\"4.0\"")));
    }
}
