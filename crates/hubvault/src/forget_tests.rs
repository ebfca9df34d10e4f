//! Tests for `forget`: the pure plan on hand-made lists, and `scan`/`apply` against the memory
//! store, which records the order of deletions, can be told to fail one and has a set clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::path::Path;
use time::OffsetDateTime;

use super::*;
use crate::store::memory::MemoryStore;

/// A memory store whose clock reads the tests' decision time.
fn new_store() -> MemoryStore {
    let store = MemoryStore::new();
    store.faults(|f| f.clock = Some(at("2026-11-26T12:00:00Z")));
    store
}

fn at(t: &str) -> OffsetDateTime {
    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Put an object last written at `modified` (RFC 3339).
fn insert(store: &MemoryStore, name: &str, data: &[u8], modified: &str) {
    store.insert(name, data, at(modified));
}

/// A committed snapshot as the engine writes it: data objects, then a manifest.
fn snapshot(store: &MemoryStore, hub: &str, id: &str, created: &str) {
    insert(
        store,
        &format!("{hub}/{id}/devices.jsonl.zst.age"),
        b"sealed",
        created,
    );
    insert(
        store,
        &format!("{hub}/{id}/configurations.jsonl.zst.age"),
        b"sealed",
        created,
    );
    let manifest = serde_json::json!({
        "format": 1, "id": id, "hub": hub, "created": created,
        "source": {"kind": "file", "path": "devices.txt"},
        "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
        "objects": [], "recipients": [], "tool": "hubvault test"
    });
    insert(
        store,
        &format!("{hub}/{id}/{MANIFEST}"),
        manifest.to_string().as_bytes(),
        created,
    );
}

fn deleted(store: &MemoryStore) -> Vec<String> {
    store.faults(|f| f.deleted.clone())
}

const S0: &str = "20261001T020000Z-00000000";
const S1: &str = "20261101T020000Z-00000001";
const S2: &str = "20261102T020000Z-00000002";
const OLD_ORPHAN: &str = "20261001T020000Z-0000000a";
const IN_FLIGHT: &str = "20261126T110000Z-0000000b";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn policy(name: &str, text: &str) -> Policy {
    Policy::parse(text, Path::new(&format!("policies/{name}.toml"))).unwrap()
}

fn snap(hub: &str, id: &str, created: &str) -> SnapshotRef {
    SnapshotRef {
        id: id.into(),
        hub: hub.into(),
        created: utc(created),
    }
}

fn ids(list: &[SnapshotRef]) -> Vec<&str> {
    list.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn plan_judges_each_hub_by_its_policies_and_keeps_uncovered_hubs() {
    let list = [
        snap("hub-a", "a1", "2026-11-01T02:00:00Z"),
        snap("hub-a", "a2", "2026-11-02T02:00:00Z"),
        snap("hub-a", "a3", "2026-11-03T02:00:00Z"),
        snap("hub-b", "b1", "2026-11-01T02:00:00Z"),
        snap("hub-b", "b2", "2026-11-02T02:00:00Z"),
    ];
    let keep_one = policy("last", "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 1\n");
    let p = plan(&list, &[keep_one], utc("2026-11-26T00:00:00Z"));
    assert_eq!(ids(&p.forget), vec!["a1", "a2"]);
    let kept: Vec<(&str, &str)> = p
        .keep
        .iter()
        .map(|(s, r)| (s.id.as_str(), r[0].as_str()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("a3", "last: last snapshot"),
            ("b1", "no policy applies to hub hub-b"),
            ("b2", "no policy applies to hub hub-b")
        ]
    );
}

#[test]
fn plan_keeps_what_any_covering_policy_keeps() {
    let list = [
        snap("hub-a", "old", "2026-10-01T02:00:00Z"),
        snap("hub-a", "mid", "2026-11-01T02:00:00Z"),
        snap("hub-a", "new", "2026-11-02T02:00:00Z"),
    ];
    let keep_one = policy("last", "[retention]\nkeep-last = 1\n");
    let monthly = policy(
        "monthly",
        "hubs = [\"hub-a\"]\n[retention]\nkeep-monthly = 1\n",
    );
    let p = plan(&list, &[keep_one, monthly], utc("2026-11-26T00:00:00Z"));
    assert_eq!(ids(&p.forget), vec!["old", "mid"]);
    assert_eq!(
        p.keep[0].1,
        vec!["last: last snapshot", "monthly: monthly snapshot"]
    );
}

#[test]
fn orphans_wait_for_the_longest_grace_of_their_hub() {
    let orphan = |hub: &str, modified: &str| Orphan {
        hub: hub.into(),
        id: format!("o-{modified}"),
        objects: vec![],
        last_modified: utc(modified),
    };
    let now = utc("2026-11-26T12:00:00Z");
    let list = [
        orphan("hub-a", "2026-11-25T13:00:00Z"), // 23 h: in flight, maybe
        orphan("hub-a", "2026-11-25T11:00:00Z"), // 25 h: due under the default 24 h
        orphan("hub-b", "2026-11-25T11:00:00Z"), // 25 h, but hub-b's policy waits 2 days
    ];
    let careful = policy("careful", "hubs = [\"hub-b\"]\norphan-grace = \"2d\"\n");
    let due = orphans_due(&list, &[careful], now);
    assert_eq!(
        due.iter().map(Orphan::path).collect::<Vec<_>>(),
        vec!["hub-a/o-2026-11-25T11:00:00Z"]
    );
}

#[tokio::test]
async fn scan_finds_snapshots_orphans_and_leaves_bad_manifests_alone() {
    let store = new_store();
    snapshot(
        &store,
        "hub-a",
        "20261101T020000Z-00000001",
        "2026-11-01T02:00:00Z",
    );
    insert(
        &store,
        "hub-a/20261102T020000Z-00000002/devices.jsonl.zst.age",
        b"x",
        "2026-11-02T02:00:00Z",
    );
    insert(
        &store,
        "hub-a/20261103T020000Z-00000003/manifest.json",
        b"{not json",
        "2026-11-03T02:00:00Z",
    );
    insert(
        &store,
        "hub-a/20261103T020000Z-00000003/devices.jsonl.zst.age",
        b"x",
        "2026-11-03T02:00:00Z",
    );
    insert(
        &store,
        "README.txt",
        b"not a snapshot",
        "2026-11-03T02:00:00Z",
    );
    let inv = scan(&store).await.unwrap();
    assert_eq!(
        inv.snapshots,
        vec![snap(
            "hub-a",
            "20261101T020000Z-00000001",
            "2026-11-01T02:00:00Z"
        )]
    );
    assert_eq!(inv.orphans.len(), 1);
    assert_eq!(inv.orphans[0].path(), "hub-a/20261102T020000Z-00000002");
    assert_eq!(inv.orphans[0].last_modified, utc("2026-11-02T02:00:00Z"));
    assert_eq!(inv.problems.len(), 1);
    assert!(
        inv.problems[0].contains("20261103T020000Z-00000003/manifest.json"),
        "{:?}",
        inv.problems
    );
}

#[tokio::test]
async fn apply_removes_manifest_first_then_data_then_due_orphans() {
    let store = new_store();
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    insert(
        &store,
        &format!("hub-a/{S0}/devices.jsonl.zst.age"),
        b"x",
        "2026-10-01T02:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let now = utc("2026-11-26T12:00:00Z");
    let inv = scan(&store).await.unwrap();
    let p = plan(&inv.snapshots, &policies, now);
    let due = orphans_due(&inv.orphans, &policies, now);
    let temporaries_before = temporaries_grace(&policies).before(now).unwrap();
    let done = apply(&store, &p, &due, temporaries_before).await.unwrap();

    assert_eq!(
        done,
        Applied {
            snapshots_removed: 1,
            orphans_removed: 1,
            objects_removed: 4,
            temporaries_removed: 0
        }
    );
    let deleted = deleted(&store);
    assert_eq!(
        deleted[0],
        format!("hub-a/{S1}/manifest.json"),
        "the commit point goes first: {deleted:?}"
    );
    assert_eq!(deleted.len(), 4);
    assert_eq!(
        store.names(),
        vec![
            format!("hub-a/{S2}/configurations.jsonl.zst.age"),
            format!("hub-a/{S2}/devices.jsonl.zst.age"),
            format!("hub-a/{S2}/manifest.json")
        ]
    );
    let swept = store.faults(|f| f.swept_before).unwrap();
    assert_eq!(
        swept,
        OffsetDateTime::parse(
            "2026-11-25T12:00:00Z",
            &time::format_description::well_known::Rfc3339
        )
        .unwrap()
    );
}

#[tokio::test]
async fn interrupted_forget_leaves_an_orphan_that_the_next_run_removes() {
    let store = new_store();
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    store.faults(|f| f.fail_delete = Some(format!("hub-a/{S1}/devices.jsonl.zst.age")));
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let now = utc("2026-11-26T12:00:00Z");
    let inv = scan(&store).await.unwrap();
    let err = apply(&store, &plan(&inv.snapshots, &policies, now), &[], now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forget_incomplete");
    assert!(
        err.to_string()
            .contains(&format!("hub-a/{S1}/devices.jsonl.zst.age")),
        "{err}"
    );

    // s1 is no longer a snapshot (its manifest went first), only an orphan, and an old one.
    store.faults(|f| f.fail_delete = None);
    let inv = scan(&store).await.unwrap();
    assert_eq!(ids(&inv.snapshots), vec![S2]);
    let due = orphans_due(&inv.orphans, &policies, now);
    assert_eq!(
        due.iter().map(Orphan::path).collect::<Vec<_>>(),
        vec![format!("hub-a/{S1}")]
    );
    apply(&store, &plan(&inv.snapshots, &policies, now), &due, now)
        .await
        .unwrap();
    assert!(
        store
            .names()
            .iter()
            .all(|n| n.starts_with(&format!("hub-a/{S2}/"))),
        "{:?}",
        store.names()
    );
}

#[tokio::test]
async fn a_failed_manifest_delete_leaves_the_snapshot_whole() {
    let store = new_store();
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    store.faults(|f| f.fail_delete = Some(format!("hub-a/{S1}/manifest.json")));
    let p = ForgetPlan {
        keep: vec![],
        forget: vec![snap("hub-a", S1, "2026-11-01T02:00:00Z")],
    };
    assert!(
        apply(&store, &p, &[], utc("2026-11-26T12:00:00Z"))
            .await
            .is_err()
    );
    assert_eq!(store.names().len(), 3);
}

#[tokio::test]
async fn dry_run_decides_the_same_and_changes_nothing() {
    let store = new_store();
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    insert(
        &store,
        &format!("hub-a/{OLD_ORPHAN}/devices.jsonl.zst.age"),
        b"x",
        "2026-10-01T02:00:00Z",
    );
    insert(
        &store,
        &format!("hub-a/{IN_FLIGHT}/devices.jsonl.zst.age"),
        b"x",
        "2026-11-26T11:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let now = utc("2026-11-26T12:00:00Z");
    let before = store.names();
    let dry = run(&store, &policies, now, true).await.unwrap();
    assert_eq!(store.names(), before);
    assert!(store.faults(|f| f.swept_before.is_none()));
    let json = dry.to_json();
    assert_eq!(json["keep"], serde_json::json!([S2]));
    assert_eq!(json["forget"], serde_json::json!([S1]));
    assert_eq!(
        json["orphans"],
        serde_json::json!([format!("hub-a/{OLD_ORPHAN}")])
    );
    assert_eq!(
        json["orphans_waiting"],
        serde_json::json!([format!("hub-a/{IN_FLIGHT}")])
    );
    assert_eq!(json["removed"], serde_json::Value::Null);
    assert_eq!(json["at"], "2026-11-26T12:00:00Z");

    let real = run(&store, &policies, now, false).await.unwrap();
    assert_eq!(real.to_json()["forget"], json["forget"]);
    assert_eq!(real.applied.unwrap().snapshots_removed, 1);
    let mut left = store.names();
    left.retain(|n| !n.starts_with(&format!("hub-a/{S2}/")));
    assert_eq!(
        left,
        vec![format!("hub-a/{IN_FLIGHT}/devices.jsonl.zst.age")]
    );
}

/// The review: `forget --store ~` deleted `projects/website/*` and `Documents/taxes/return.pdf`
/// as "orphans". Only hubvault's own names in snapshot-id folders are ever deleted.
#[tokio::test]
async fn forget_never_deletes_what_hubvault_did_not_write() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    let foreign = [
        "projects/website/index.html".to_owned(),
        "projects/website/src/main.js".to_owned(),
        "Documents/taxes/return.pdf".to_owned(),
        format!("hub-a/{S1}/notes.txt"),
        format!("hub-a/{OLD_ORPHAN}/photo.jpg"),
        format!("hub-a/{OLD_ORPHAN}/devices.jsonl.zst.age/x"),
        format!("hub-a/{S0}/devices.jsonl.zst.age"),
        format!("hub-a/{S0}/holiday.mov"),
    ];
    for f in &foreign {
        insert(&store, f, b"mine", "2020-01-01T00:00:00Z");
    }
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = run(&store, &policies, utc("2026-11-26T12:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(ids(&report.plan.forget), vec![S1]);
    let names = store.names();
    for f in &foreign {
        assert!(names.contains(f), "{f} was deleted");
    }
    let mut unknown = report.unknown.clone();
    unknown.sort();
    let mut expected = foreign.to_vec();
    expected.sort();
    assert_eq!(unknown, expected, "each is listed as unknown");
    assert!(report.orphans.is_empty(), "{:?}", report.orphans);
}

#[tokio::test]
async fn forget_refuses_a_location_that_is_not_a_store() {
    let store = new_store();
    insert(
        &store,
        "Documents/taxes/return.pdf",
        b"mine",
        "2020-01-01T00:00:00Z",
    );
    insert(
        &store,
        &format!("hub-a/{OLD_ORPHAN}/devices.jsonl.zst.age"),
        b"x",
        "2020-01-01T00:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    for dry_run in [true, false] {
        let err = run(&store, &policies, utc("2026-11-26T12:00:00Z"), dry_run)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "store_not_marked");
        assert!(err.to_string().contains("hubvault store init"), "{err}");
    }
    assert_eq!(store.names().len(), 2, "nothing deleted");
    assert!(deleted(&store).is_empty());
}

/// The review: `forget --at <future>` removed an in-flight backup's data. Orphans age on the
/// store's clock, whatever `--at` says.
#[tokio::test]
async fn a_future_at_never_ages_a_backup_in_flight() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    insert(
        &store,
        &format!("hub-a/{IN_FLIGHT}/devices.jsonl.zst.age"),
        b"x",
        "2026-11-26T11:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = run(&store, &policies, utc("2027-06-01T00:00:00Z"), true)
        .await
        .unwrap();
    assert!(report.orphans.is_empty());
    assert_eq!(report.orphans_waiting.len(), 1);
    let report = run(&store, &policies, utc("2027-06-01T00:00:00Z"), false)
        .await
        .unwrap();
    assert_eq!(report.applied.unwrap().orphans_removed, 0);
    assert_eq!(store.names().len(), 2);
}

/// The review: a snapshot committed after its data was removed was kept, and the last good one
/// forgotten. A snapshot whose objects are missing takes no retention slot.
#[tokio::test]
async fn a_snapshot_with_missing_objects_takes_no_retention_slot() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    let broken = "20261103T020000Z-00000003";
    let manifest = serde_json::json!({
        "format": 1, "id": broken, "hub": "hub-a", "created": "2026-11-03T02:00:00Z",
        "source": {"kind": "file"},
        "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
        "objects": [{"name": "devices.jsonl.zst.age", "kind": "devices", "bytes": 6, "sha256": "00", "records": 1}],
        "recipients": [], "tool": "t"
    });
    insert(
        &store,
        &format!("hub-a/{broken}/{MANIFEST}"),
        manifest.to_string().as_bytes(),
        "2026-11-03T02:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = run(&store, &policies, utc("2026-11-26T12:00:00Z"), false)
        .await
        .unwrap();
    assert!(report.plan.forget.is_empty(), "the last good one is kept");
    assert_eq!(report.plan.keep.len(), 1);
    assert_eq!(report.plan.keep[0].0.id, S1);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(broken) && p.contains("missing")),
        "{:?}",
        report.problems
    );
    assert!(
        store.names().iter().any(|n| n.contains(broken)),
        "left alone"
    );
}
