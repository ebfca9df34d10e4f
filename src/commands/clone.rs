//! `demo` and `clone`: argument resolution and rendering only.

use std::io::Write as _;

use anyhow::Result;

use hubvault::demo::{self, DemoOptions, Step};

use crate::Outcome;
use crate::cli::{DemoArgs, Global};

pub async fn demo(global: &Global, args: &DemoArgs) -> Result<Outcome> {
    let options = DemoOptions {
        dir: args.dir.clone(),
        devices: args.devices,
    };
    let json = global.json;
    // Steps are printed as they finish (the story takes a while); with --json the narration goes
    // to stderr and stdout carries only the summary.
    let progress = move |s: &Step| {
        let text = render_step(s);
        if json {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    };
    let report = demo::run(&options, &progress).await?;
    let human = if report.ok {
        format!(
            "demo finished: every step came out as expected. The vault is {} (its identity was throw-away, \
             so it cannot be opened again). Next: `hubvault key init`, then `hubvault backup --hub HUB` \
             against your own hub.\n",
            report.vault
        )
    } else {
        let failed: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.step)
            .collect();
        format!(
            "demo finished with unexpected results in: {}; please report this\n",
            failed.join(", ")
        )
    };
    Ok(Outcome {
        json: serde_json::to_value(&report)?,
        human,
        found_something: !report.ok,
    })
}

fn render_step(s: &Step) -> String {
    let mark = if s.ok { "ok  " } else { "FAIL" };
    format!("{mark} [{:>5.1}s] {}: {}", s.seconds, s.step, s.detail)
}
