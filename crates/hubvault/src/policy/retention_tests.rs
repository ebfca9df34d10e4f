//! Table tests for retention, in the spirit of restic's `snapshot_policy_test.go`: each case lists
//! snapshot times, rules, and the ids that must survive, worked out by hand from the semantics in
//! the module doc.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Snapshots of hub `h` with ids equal to their timestamps, so expectations read as times.
fn snaps(hub: &str, times: &[&str]) -> Vec<SnapshotRef> {
    times
        .iter()
        .map(|t| SnapshotRef {
            id: (*t).to_owned(),
            hub: hub.to_owned(),
            created: utc(t),
        })
        .collect()
}

fn kept(decisions: &[Decision]) -> Vec<&str> {
    let mut v: Vec<&str> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect();
    v.sort_unstable();
    v
}

const NOW: &str = "2027-01-01T00:00:00Z";

#[test]
#[allow(clippy::too_many_lines)] // one row per case reads better than split helpers
fn table() {
    let day_gaps = [
        "2026-03-01T02:00:00Z",
        "2026-03-01T14:00:00Z",
        "2026-03-03T02:00:00Z",
        "2026-03-04T02:00:00Z",
        "2026-03-04T20:00:00Z",
        "2026-03-05T02:00:00Z",
    ];
    let rules = |f: &dyn Fn(&mut Rules)| {
        let mut r = Rules::default();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, &[&str], Rules, Vec<&str>)> = vec![
        ("no rule keeps everything", &day_gaps, Rules::default(), {
            let mut all = day_gaps.to_vec();
            all.sort_unstable();
            all
        }),
        (
            "keep-last 2",
            &day_gaps,
            rules(&|r| r.keep_last = Some(2)),
            vec!["2026-03-04T20:00:00Z", "2026-03-05T02:00:00Z"],
        ),
        (
            // newest per day for the 3 most recent days that have snapshots (03-02 has none)
            "keep-daily 3 skips empty days",
            &day_gaps,
            rules(&|r| r.keep_daily = Some(3)),
            vec![
                "2026-03-03T02:00:00Z",
                "2026-03-04T20:00:00Z",
                "2026-03-05T02:00:00Z",
            ],
        ),
        (
            // 4 days have snapshots; a slot is left so the oldest snapshot is kept too
            "keep-daily 5 also keeps the oldest",
            &day_gaps,
            rules(&|r| r.keep_daily = Some(5)),
            vec![
                "2026-03-01T02:00:00Z",
                "2026-03-01T14:00:00Z",
                "2026-03-03T02:00:00Z",
                "2026-03-04T20:00:00Z",
                "2026-03-05T02:00:00Z",
            ],
        ),
        (
            "keep-daily unlimited",
            &day_gaps,
            rules(&|r| r.keep_daily = Some(-1)),
            vec![
                "2026-03-01T02:00:00Z",
                "2026-03-01T14:00:00Z",
                "2026-03-03T02:00:00Z",
                "2026-03-04T20:00:00Z",
                "2026-03-05T02:00:00Z",
            ],
        ),
        (
            // ISO weeks: Sun 2025-12-28 is 2025-W52; Tue 2025-12-30 and Sat 2026-01-03 are 2026-W01
            "keep-weekly uses ISO weeks across the new year",
            &[
                "2025-12-28T02:00:00Z",
                "2025-12-30T02:00:00Z",
                "2026-01-03T02:00:00Z",
            ],
            rules(&|r| r.keep_weekly = Some(2)),
            vec!["2025-12-28T02:00:00Z", "2026-01-03T02:00:00Z"],
        ),
        (
            // 23:30 at -02:00 is 01:30 UTC the next day: UTC buckets put it on 03-02
            "buckets are UTC days",
            &[
                "2026-03-01T22:00:00Z",
                "2026-03-01T23:30:00-02:00",
                "2026-03-02T03:00:00Z",
            ],
            rules(&|r| r.keep_daily = Some(2)),
            vec!["2026-03-01T22:00:00Z", "2026-03-02T03:00:00Z"],
        ),
        (
            "keep-hourly 2",
            &[
                "2026-03-01T10:05:00Z",
                "2026-03-01T10:55:00Z",
                "2026-03-01T11:10:00Z",
                "2026-03-01T11:20:00Z",
            ],
            rules(&|r| r.keep_hourly = Some(2)),
            vec!["2026-03-01T10:55:00Z", "2026-03-01T11:20:00Z"],
        ),
        (
            "keep-monthly and keep-yearly",
            &[
                "2024-06-01T00:00:00Z",
                "2025-01-31T00:00:00Z",
                "2025-12-01T00:00:00Z",
                "2026-01-15T00:00:00Z",
                "2026-01-20T00:00:00Z",
            ],
            rules(&|r| {
                r.keep_monthly = Some(2);
                r.keep_yearly = Some(2);
            }),
            // monthly: 2026-01 (01-20), 2025-12; yearly: 2026 (01-20), 2025 (12-01)
            vec!["2025-12-01T00:00:00Z", "2026-01-20T00:00:00Z"],
        ),
        (
            // relative to the newest snapshot (03-05 02:00), not to NOW, a year later
            "keep-within is relative to the newest snapshot",
            &day_gaps,
            rules(&|r| r.keep_within = Some(Span::parse("1d12h").unwrap())),
            vec![
                "2026-03-04T02:00:00Z",
                "2026-03-04T20:00:00Z",
                "2026-03-05T02:00:00Z",
            ],
        ),
        (
            "rules combine: kept if any rule keeps it",
            &day_gaps,
            rules(&|r| {
                r.keep_last = Some(1);
                r.keep_daily = Some(2);
                r.keep_within = Some(Span::hours(1));
            }),
            vec!["2026-03-04T20:00:00Z", "2026-03-05T02:00:00Z"],
        ),
    ];
    for (name, times, rules, want) in cases {
        let list = snaps("hub-a", times);
        let got = decide(&list, &rules, utc(NOW));
        assert_eq!(kept(&got), want, "case: {name}");
        // input order never matters
        let mut reversed = list.clone();
        reversed.reverse();
        assert_eq!(
            kept(&decide(&reversed, &rules, utc(NOW))),
            want,
            "case (reversed input): {name}"
        );
        for d in &got {
            assert_eq!(d.keep, !d.reasons.is_empty(), "case {name}: {d:?}");
        }
    }
}

#[test]
fn gfs_default_policy_on_100_nightly_backups() {
    let start = utc("2026-01-01T02:00:00Z");
    let times: Vec<String> = (0..100)
        .map(|d| (start + chrono::TimeDelta::days(d)).to_rfc3339())
        .collect();
    let list: Vec<SnapshotRef> = times
        .iter()
        .map(|t| SnapshotRef {
            id: t[..10].to_owned(),
            hub: "hub-a".into(),
            created: utc(t),
        })
        .collect();
    assert_eq!(list.last().unwrap().id, "2026-04-10");
    let rules = Rules {
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        ..Rules::default()
    };
    let got = decide(&list, &rules, utc(NOW));
    // daily: 04-04..04-10; weekly (ISO, Mondays 04-06, 03-30, 03-23, 03-16): 04-10, 04-05, 03-29,
    // 03-22; monthly: 04-10, 03-31, 02-28, 01-31, then slots left: the oldest, 01-01.
    let want = vec![
        "2026-01-01",
        "2026-01-31",
        "2026-02-28",
        "2026-03-22",
        "2026-03-29",
        "2026-03-31",
        "2026-04-04",
        "2026-04-05",
        "2026-04-06",
        "2026-04-07",
        "2026-04-08",
        "2026-04-09",
        "2026-04-10",
    ];
    assert_eq!(kept(&got), want);
    let oldest = got.iter().find(|d| d.id == "2026-01-01").unwrap();
    assert_eq!(
        oldest.reasons,
        vec!["oldest snapshot, monthly slots left".to_owned()]
    );
    let newest = got.iter().find(|d| d.id == "2026-04-10").unwrap();
    assert_eq!(
        newest.reasons,
        vec!["daily snapshot", "weekly snapshot", "monthly snapshot"]
    );
}

#[test]
fn each_hub_is_decided_alone() {
    let mut list = snaps("hub-a", &["2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"]);
    list.extend(snaps(
        "hub-b",
        &["2026-02-01T02:00:00Z", "2026-02-02T02:00:00Z"],
    ));
    list[2].id = "b-old".into();
    list[3].id = "b-new".into();
    let got = decide(
        &list,
        &Rules {
            keep_last: Some(1),
            ..Rules::default()
        },
        utc(NOW),
    );
    assert_eq!(kept(&got), vec!["2026-03-02T02:00:00Z", "b-new"]);
    // one decision per input, in input order
    assert_eq!(
        got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()
    );
}

#[test]
fn snapshots_after_now_are_kept_and_take_no_slot() {
    let list = snaps(
        "hub-a",
        &[
            "2026-03-01T02:00:00Z",
            "2026-03-02T02:00:00Z",
            "2026-03-03T02:00:00Z",
        ],
    );
    let rules = Rules {
        keep_last: Some(1),
        ..Rules::default()
    };
    let got = decide(&list, &rules, utc("2026-03-02T12:00:00Z"));
    assert_eq!(
        kept(&got),
        vec!["2026-03-02T02:00:00Z", "2026-03-03T02:00:00Z"]
    );
    assert_eq!(
        got[2].reasons,
        vec!["created after the decision time".to_owned()]
    );
}

#[test]
fn zero_keep_within_is_no_rule() {
    let list = snaps("h", &["2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"]);
    let rules = Rules {
        keep_within: Some(Span::default()),
        ..Rules::default()
    };
    assert!(rules.is_empty());
    assert!(decide(&list, &rules, utc(NOW)).iter().all(|d| d.keep));
}

#[test]
fn empty_list_and_empty_policy_reason() {
    assert!(
        decide(
            &[],
            &Rules {
                keep_last: Some(1),
                ..Rules::default()
            },
            utc(NOW)
        )
        .is_empty()
    );
    let got = decide(
        &snaps("h", &["2026-03-01T02:00:00Z"]),
        &Rules::default(),
        utc(NOW),
    );
    assert!(got[0].keep);
    assert!(
        got[0].reasons[0].contains("keeping everything"),
        "{:?}",
        got[0]
    );
}
