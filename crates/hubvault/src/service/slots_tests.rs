#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]

use std::collections::BTreeSet;

use super::*;
use crate::policy::{Rules, SnapshotRef, decide};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Run `plan` from `start` to `end` waking exactly when it asks, as the serve loop does; every
/// due run "backs up" at its slot. Returns the slots run, in order.
fn simulate(plan: &mut Plan, end: DateTime<Utc>) -> Vec<Due> {
    let mut ran = Vec::new();
    while let Some(wake) = plan.next_wake().filter(|w| *w <= end) {
        let due = plan.take_due(wake);
        assert!(!due.is_empty(), "woke at {wake} for nothing");
        for d in &due {
            assert_eq!(d.slot, wake, "a run on time is for its own slot");
        }
        ran.extend(due);
    }
    ran
}

fn rules(toml_text: &str) -> Rules {
    toml::from_str(toml_text).unwrap()
}

/// A policy every 15 minutes in Europe/Berlin over a simulated week (the spring-forward week and
/// the fall-back week): exactly one run per 15 minutes of elapsed time (672), none doubled, and
/// retention then keeps exactly what its rules say.
#[test]
fn every_15_minutes_for_a_week_keeps_what_retention_says() {
    // (first day of the week (UTC midnight), rules, kept count, oldest kept, why)
    let weeks = ["2027-03-25T00:00:00Z", "2026-10-22T00:00:00Z"];
    let cases = [
        ("keep-last = 4", 4, "6T23:00:00Z", "the last four"),
        (
            "keep-last = 4\nkeep-hourly = 6",
            9,
            "6T18:45:00Z",
            "last four + newest of each of 6 hours",
        ),
        (
            "keep-daily = 7",
            7,
            "0T23:45:00Z",
            "newest of each of the 7 days",
        ),
        (
            "keep-hourly = 24\nkeep-daily = 3",
            26,
            "4T23:45:00Z",
            "24 hours + 2 more days",
        ),
        (
            "keep-within = \"1d\"",
            96,
            "6T00:00:00Z",
            "everything newer than a day (the one exactly a day old is not)",
        ),
    ];
    let schedule = Schedule::new("*/15 * * * *", "Europe/Berlin").unwrap();
    for week in weeks {
        let start = utc(week);
        let end = start + TimeDelta::days(7) - TimeDelta::minutes(15);
        let mut plan = Plan::default();
        plan.add("quarter", "hub-a", &schedule, start - TimeDelta::seconds(1));
        let ran = simulate(&mut plan, end);
        assert_eq!(
            ran.len(),
            7 * 24 * 4,
            "week of {week}: one run per 15 minutes"
        );
        let unique: BTreeSet<DateTime<Utc>> = ran.iter().map(|d| d.slot).collect();
        assert_eq!(unique.len(), ran.len(), "no slot run twice");
        for pair in ran.windows(2) {
            assert_eq!(
                pair[1].slot - pair[0].slot,
                TimeDelta::minutes(15),
                "elapsed time, through the DST change: {pair:?}"
            );
        }
        let snapshots: Vec<SnapshotRef> = ran
            .iter()
            .map(|d| SnapshotRef {
                id: d.slot.to_rfc3339(),
                hub: d.hub.clone(),
                created: d.slot,
            })
            .collect();
        // the day-of-month digit of the week's first day, to name days relative to it
        let day0: u32 = week[8..10].parse().unwrap();
        for (text, count, oldest, why) in cases {
            let decisions = decide(&snapshots, &rules(text), end);
            let kept: Vec<&SnapshotRef> = snapshots
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| d.keep)
                .map(|(s, _)| s)
                .collect();
            assert_eq!(kept.len(), count, "{week} {text}: {why}");
            let day: u32 = oldest[..1].parse().unwrap();
            let want = format!("{}{:02}{}", &week[..8], day0 + day, &oldest[1..]);
            assert_eq!(kept[0].created, utc(&want), "{week} {text}: {why}");
        }
    }
}

/// Fixed-time schedules across DST in Berlin: the nonexistent 02:30 runs at 03:00 CEST; the
/// twice-occurring 02:30 runs once, at its first (CEST) occurrence.
#[test]
fn fixed_time_runs_once_a_day_through_gap_and_fold() {
    let cases = [
        (
            "2027-03-26T00:00:00Z",
            [
                "2027-03-26T01:30:00Z",
                "2027-03-27T01:30:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-29T00:30:00Z",
            ],
        ),
        (
            "2026-10-23T00:00:00Z",
            [
                "2026-10-23T00:30:00Z",
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ],
        ),
    ];
    let schedule = Schedule::new("30 2 * * *", "Europe/Berlin").unwrap();
    for (start, want) in cases {
        let start = utc(start);
        let mut plan = Plan::default();
        plan.add("nightly", "hub-a", &schedule, start);
        let ran = simulate(
            &mut plan,
            start + TimeDelta::days(4) - TimeDelta::seconds(1),
        );
        let slots: Vec<DateTime<Utc>> = ran.iter().map(|d| d.slot).collect();
        assert_eq!(slots, want.map(utc), "from {start}");
    }
}

/// A process down for hours runs a missed schedule once, for the latest slot, then resumes.
#[test]
fn missed_slots_after_downtime_run_once() {
    let schedule = Schedule::new("*/15 * * * *", "UTC").unwrap();
    let mut plan = Plan::default();
    plan.add("quarter", "hub-a", &schedule, utc("2026-12-01T00:00:00Z"));
    let due = plan.take_due(utc("2026-12-01T05:07:00Z"));
    assert_eq!(
        due,
        vec![Due {
            policy: "quarter".into(),
            hub: "hub-a".into(),
            slot: utc("2026-12-01T05:00:00Z")
        }]
    );
    assert!(plan.take_due(utc("2026-12-01T05:10:00Z")).is_empty());
    assert_eq!(plan.next_wake(), Some(utc("2026-12-01T05:15:00Z")));
    // a seconds-level schedule over a day of downtime (86,400 slots): still one run, quickly
    let every_second = Schedule::new("* * * * * *", "UTC").unwrap();
    let slot = latest_slot(
        &every_second,
        utc("2026-12-01T00:00:00Z"),
        utc("2026-12-02T00:00:00Z"),
    );
    assert_eq!(slot, Some(utc("2026-12-02T00:00:00Z")));
}

/// Many policies and hubs: each entry is due on its own slot; a pair carried over keeps its last.
#[test]
fn entries_are_independent_and_next_run_is_per_policy() {
    let hourly = Schedule::new("0 * * * *", "UTC").unwrap();
    let nightly = Schedule::new("0 2 * * *", "UTC").unwrap();
    let start = utc("2026-12-01T00:30:00Z");
    let mut plan = Plan::default();
    plan.add("hourly", "hub-a", &hourly, start);
    plan.add("hourly", "hub-b", &hourly, start);
    plan.add("nightly", "hub-a", &nightly, start);
    assert_eq!(
        plan.next_by_policy(),
        vec![
            ("hourly".to_owned(), Some(utc("2026-12-01T01:00:00Z"))),
            ("nightly".to_owned(), Some(utc("2026-12-01T02:00:00Z")))
        ]
    );
    let ran = simulate(&mut plan, utc("2026-12-01T02:00:00Z"));
    let got: Vec<(String, String)> = ran
        .iter()
        .map(|d| (d.policy.clone(), d.hub.clone()))
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        plan.last("nightly", "hub-a"),
        Some(utc("2026-12-01T02:00:00Z"))
    );
}

/// A policy's nightly backup and its weekly `[drill]` (Sunday 04:00 Berlin) side by side in one
/// plan, as `serve` builds it: over two weeks the drill runs exactly twice, at 03:00 UTC on the
/// Sundays, and the backups 14 times; a drill missed over a downtime runs once, for its latest
/// slot, on restart (from the slot the scratch hub's record remembers).
#[test]
fn drills_have_slots_of_their_own_beside_the_backups() {
    let policy: crate::policy::Policy = crate::policy::Policy::parse(
        "[schedule]\ncron = \"0 2 * * *\"\ntime-zone = \"Europe/Berlin\"\n\
         [drill]\ncron = \"0 4 * * 0\"\ntime-zone = \"Europe/Berlin\"\nto = \"hub-drill\"\n",
        std::path::Path::new("policies/p.toml"),
    )
    .unwrap();
    let drill = policy.file.drill.as_ref().unwrap().schedule();
    let start = utc("2026-11-30T12:00:00Z"); // a Monday
    let mut plan = Plan::default();
    plan.add("p", "hub-a", policy.file.schedule.as_ref().unwrap(), start);
    plan.add("drill:p", "hub-a", &drill, start);
    let ran = simulate(&mut plan, utc("2026-12-14T12:00:00Z"));
    let drills: Vec<DateTime<Utc>> = ran
        .iter()
        .filter(|d| d.policy == "drill:p")
        .map(|d| d.slot)
        .collect();
    assert_eq!(
        drills,
        [utc("2026-12-06T03:00:00Z"), utc("2026-12-13T03:00:00Z")]
    );
    assert_eq!(ran.iter().filter(|d| d.policy == "p").count(), 14);
    // Down from before the first Sunday until after the second: one drill, the latest slot.
    let mut plan = Plan::default();
    plan.add("drill:p", "hub-a", &drill, utc("2026-12-05T00:00:00Z"));
    let due = plan.take_due(utc("2026-12-14T09:00:00Z"));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].slot, utc("2026-12-13T03:00:00Z"));
    assert!(plan.take_due(utc("2026-12-14T09:00:01Z")).is_empty());
}
