//! Memory of the serve loop over a simulated day (run by `scripts/bench-serve`, not a test).
//!
//! 50 policies (every 5, 10, 15, 30 or 60 minutes, over 4 hubs each: 200 scheduled pairs) run
//! through the real [`scheduler::serve`] on tokio's paused clock, each run a stand-in that takes
//! 30 simulated seconds (16 at once) and records a report in the real [`Metrics`] registry. The resident set
//! size is read from `/proc/self/statm` every simulated hour; the baseline is the first hour's
//! (once every pair has run and every label exists). Flat: the last hour within 10 % of it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "a benchmark"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hubvault::policy::Schedule;
use hubvault::service::hub_run::{Outcome, Report};
use hubvault::service::metrics::Metrics;
use hubvault::service::scheduler::{self, Clock, Settings};
use hubvault::service::slots::{Due, Plan};

const POLICIES: usize = 50;
const HUBS_PER_POLICY: usize = 4;

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

fn report(due: &Due, now: DateTime<Utc>) -> Report {
    Report {
        run_id: format!("{}-{}", due.hub, now.timestamp()),
        policy: due.policy.clone(),
        hub: due.hub.clone(),
        slot: due.slot,
        started_at: now,
        finished_at: now + TimeDelta::seconds(30),
        outcome: Outcome::Ok,
        snapshot: Some(format!("{}", now.timestamp())),
        devices: Some(1000),
        bytes: Some(1 << 20),
        forget_removed: 1,
        error: None,
        transition: None,
        status: None,
        drill: None,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let start: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        let clock = Clock::tokio(start);
        let mut plan = Plan::default();
        for p in 0..POLICIES {
            let every = [5, 10, 15, 30, 60][p % 5];
            let cron = if every == 60 {
                format!("{} * * * *", p % 60)
            } else {
                format!("*/{every} * * * *")
            };
            let schedule = Schedule::new(&cron, "Europe/Berlin").unwrap();
            for h in 0..HUBS_PER_POLICY {
                plan.add(&format!("policy-{p}"), &format!("hub-{p}-{h}"), &schedule, start);
            }
        }
        let metrics = Arc::new(Metrics::new());
        let runs = Arc::new(Mutex::new(0u64));
        let samples: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (trigger, shutdown) = hubvault::shutdown::channel();
        let (_reload_tx, reload) = tokio::sync::mpsc::channel(1);
        let hourly = {
            let samples = samples.clone();
            tokio::spawn(async move {
                for _ in 0..24 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    samples.lock().unwrap().push(rss_kib());
                }
                trigger.fire();
            })
        };
        let (m, r) = (metrics.clone(), runs.clone());
        let settings = Settings {
            concurrency: 16,
            ..Settings::default()
        };
        scheduler::serve(plan, clock, settings, reload, shutdown, &(), move |due| {
            let (m, r) = (m.clone(), r.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                m.record(&report(&due, clock.now()));
                *r.lock().unwrap() += 1;
            }
        })
        .await;
        hourly.await.unwrap();
        let samples = samples.lock().unwrap().clone();
        let baseline = samples[0];
        let last = *samples.last().unwrap();
        let peak = *samples.iter().max().unwrap();
        let kib = |v: u64| f64::from(u32::try_from(v).unwrap());
        let ratio = kib(last) / kib(baseline);
        println!(
            "serve memory over a simulated day: {POLICIES} policies x {HUBS_PER_POLICY} hubs, {} runs, {} bytes of metrics text",
            runs.lock().unwrap(),
            metrics.encode().len()
        );
        println!("RSS by hour (KiB): {samples:?}");
        println!(
            "baseline (hour 1) {baseline} KiB, peak {peak} KiB, last (hour 24) {last} KiB: ratio last/baseline {ratio:.3} ({})",
            if ratio <= 1.10 { "flat" } else { "GROWING" }
        );
    });
}
