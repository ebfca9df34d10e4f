#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::policy::Schedule;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Run the loop on tokio's paused clock from `start` for `days`, each run taking `work`.
/// Returns the slots started, and the most runs seen at once.
async fn simulate(
    plan: Plan,
    start: DateTime<Utc>,
    days: i64,
    settings: Settings,
    work: Duration,
) -> (Vec<Due>, usize) {
    let clock = Clock::tokio(start);
    let (trigger, shutdown) = crate::shutdown::channel();
    let (_tx, reload) = mpsc::channel(1);
    let ran: Arc<Mutex<Vec<Due>>> = Arc::default();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, n, p) = (ran.clone(), now.clone(), peak.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::try_from(days).unwrap() * 86_400)).await;
        trigger.fire();
    });
    serve(plan, clock, settings, reload, shutdown, &(), move |due| {
        let (r, n, p) = (r.clone(), n.clone(), p.clone());
        async move {
            let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(at_once, Ordering::SeqCst);
            r.lock().unwrap().push(due);
            tokio::time::sleep(work).await;
            n.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .await;
    stopper.await.unwrap();
    let ran = ran.lock().unwrap().clone();
    (ran, peak.load(Ordering::SeqCst))
}

/// The real loop over the fall-back week in Berlin on tokio's paused clock: one run per 15
/// minutes of elapsed time, none lost or doubled.
#[tokio::test(start_paused = true)]
async fn a_week_every_15_minutes_on_a_paused_clock() {
    let start = utc("2026-10-22T00:00:00Z");
    let mut plan = Plan::default();
    let schedule = Schedule::new("*/15 * * * *", "Europe/Berlin").unwrap();
    plan.add("quarter", "hub-a", &schedule, start - TimeDelta::seconds(1));
    let (ran, _) = simulate(plan, start, 7, Settings::default(), Duration::from_secs(60)).await;
    assert_eq!(ran.len(), 7 * 24 * 4);
    for (i, d) in ran.iter().enumerate() {
        assert_eq!(
            d.slot,
            start + TimeDelta::minutes(15 * i64::try_from(i).unwrap())
        );
    }
}

/// Ten hubs due at once with runs of ten minutes: never more than `concurrency` at once, and
/// every hub still runs each hour.
#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let start = utc("2026-12-01T00:00:00Z");
    let mut plan = Plan::default();
    let hourly = Schedule::new("0 * * * *", "UTC").unwrap();
    for i in 0..10 {
        plan.add("hourly", &format!("hub-{i}"), &hourly, start);
    }
    let settings = Settings {
        concurrency: 3,
        ..Settings::default()
    };
    let (ran, peak) = simulate(plan, start, 1, settings, Duration::from_secs(600)).await;
    assert_eq!(peak, 3);
    // slots 01:00 … 23:00 (the plan starts at 00:00): 23 hours, each hub once an hour
    assert_eq!(ran.len(), 10 * 23);
}

/// A run longer than the interval: the slots it overlaps are not started a second time for the
/// same hub (they coalesce into the next one after it ends).
#[tokio::test(start_paused = true)]
async fn a_hub_never_runs_twice_at_once_in_one_process() {
    let start = utc("2026-12-01T00:00:00Z");
    let mut plan = Plan::default();
    let every_minute = Schedule::new("* * * * *", "UTC").unwrap();
    plan.add("minutely", "hub-a", &every_minute, start);
    let (ran, peak) = simulate(
        plan,
        start,
        1,
        Settings::default(),
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(peak, 1);
    // 150 s runs every minute: one starts every third minute
    assert_eq!(ran.len(), 24 * 60 / 3);
}

#[test]
fn jitter_is_bounded_and_the_same_on_every_replica() {
    let due = Due {
        policy: "p".into(),
        hub: "hub-a".into(),
        slot: utc("2026-12-01T00:00:00Z"),
    };
    let max = Duration::from_secs(300);
    let j = jitter_for(&due, max);
    assert!(j <= max);
    assert_eq!(j, jitter_for(&due.clone(), max));
    assert_eq!(jitter_for(&due, Duration::ZERO), Duration::ZERO);
}
