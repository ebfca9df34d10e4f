//! Tests for `forget`: the pure plan on hand-made lists, and `scan`/`apply` against the memory
//! store, which records the order of deletions, can be told to fail one and has a set clock.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::path::Path;
use std::sync::OnceLock;
use time::OffsetDateTime;

use super::*;
use crate::keys::{SigningKey, TrustedSigners};
use crate::snapshot::signature::SignatureObject;
use crate::store::memory::MemoryStore;

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

/// This host trusts `key()`; unsigned snapshots only when `allow_unsigned`.
fn rules(allow_unsigned: bool, forget_untrusted: bool) -> TrustRules {
    TrustRules {
        read: ReadPolicy {
            trusted: TrustedSigners::new([key().signer()]),
            allow_unsigned,
        },
        forget_untrusted,
    }
}

fn trusting() -> ReadPolicy {
    rules(false, false).read
}

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

/// A committed snapshot as the engine writes it: data objects, the signature (by `by`), then
/// the manifest listing `objects`.
fn signed_by(
    store: &MemoryStore,
    hub: &str,
    id: &str,
    created: &str,
    objects: &serde_json::Value,
    by: Option<&SigningKey>,
) {
    let manifest = serde_json::json!({
        "format": 2, "id": id, "hub": hub, "created": created,
        "source": {"kind": "file", "path": "devices.txt"},
        "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
        "objects": objects, "recipients": [], "tool": "hubvault test",
        "generation": 1, "signer": by.unwrap_or(key()).signer().to_string(),
    });
    let bytes = manifest.to_string().into_bytes();
    if let Some(by) = by {
        let sig = SignatureObject::sign(&bytes, "manifest.g1.json", by);
        insert(
            store,
            &format!("{hub}/{id}/signature.g1.json"),
            &sig.to_bytes(),
            created,
        );
    }
    insert(
        store,
        &format!("{hub}/{id}/manifest.g1.json"),
        &bytes,
        created,
    );
}

/// A snapshot of this host's: two data objects, signature, manifest.
fn snapshot(store: &MemoryStore, hub: &str, id: &str, created: &str) {
    for kind in ["devices", "configurations"] {
        insert(
            store,
            &format!("{hub}/{id}/{kind}.g1.jsonl.zst.age"),
            b"sealed",
            created,
        );
    }
    signed_by(store, hub, id, created, &serde_json::json!([]), Some(key()));
}

/// A snapshot of hubvault 0.1 (format 1, unsigned).
fn snapshot_v1(store: &MemoryStore, hub: &str, id: &str, created: &str) {
    insert(
        store,
        &format!("{hub}/{id}/devices.jsonl.zst.age"),
        b"sealed",
        created,
    );
    let manifest = serde_json::json!({
        "format": 1, "id": id, "hub": hub, "created": created,
        "source": {"kind": "file", "path": "devices.txt"},
        "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
        "objects": [], "recipients": [], "tool": "hubvault 0.1.0"
    });
    insert(
        store,
        &format!("{hub}/{id}/manifest.json"),
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

/// `forget` at the tests' decision time (the store's clock reads the same).
async fn forget(
    store: &MemoryStore,
    policies: &[Policy],
    dry_run: bool,
    rules: &TrustRules,
) -> Report {
    run(store, policies, utc(NOW), dry_run, rules)
        .await
        .unwrap()
}

const NOW: &str = "2026-11-26T12:00:00Z";

/// The ids a report keeps.
fn kept(report: &Report) -> Vec<&str> {
    report
        .plan
        .keep
        .iter()
        .map(|(s, _)| s.id.as_str())
        .collect()
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
        generation: None,
    };
    let now = utc(NOW);
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
        "hub-a/20261102T020000Z-00000002/devices.g1.jsonl.zst.age",
        b"x",
        "2026-11-02T02:00:00Z",
    );
    insert(
        &store,
        "hub-a/20261103T020000Z-00000003/manifest.g1.json",
        b"{not json",
        "2026-11-03T02:00:00Z",
    );
    insert(
        &store,
        "hub-a/20261103T020000Z-00000003/devices.g1.jsonl.zst.age",
        b"x",
        "2026-11-03T02:00:00Z",
    );
    insert(
        &store,
        "README.txt",
        b"not a snapshot",
        "2026-11-03T02:00:00Z",
    );
    let inv = scan(&store, &trusting()).await.unwrap();
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
        inv.problems[0].contains("20261103T020000Z-00000003/manifest.g1.json"),
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
        &format!("hub-a/{S0}/devices.g1.jsonl.zst.age"),
        b"x",
        "2026-10-01T02:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let now = utc(NOW);
    let inv = scan(&store, &trusting()).await.unwrap();
    let p = plan(&inv.snapshots, &policies, now);
    let due = orphans_due(&inv.orphans, &policies, now);
    let temporaries_before = temporaries_grace(&policies).before(now).unwrap();
    let done = apply(&store, &p.forget, &due, temporaries_before)
        .await
        .unwrap();

    assert_eq!(
        done,
        Applied {
            snapshots_removed: 1,
            orphans_removed: 1,
            objects_removed: 5,
            temporaries_removed: 0
        }
    );
    let deleted = deleted(&store);
    assert_eq!(
        deleted[0],
        format!("hub-a/{S1}/manifest.g1.json"),
        "the commit point goes first: {deleted:?}"
    );
    assert_eq!(deleted.len(), 5);
    assert_eq!(
        store.names(),
        vec![
            format!("hub-a/{S2}/configurations.g1.jsonl.zst.age"),
            format!("hub-a/{S2}/devices.g1.jsonl.zst.age"),
            format!("hub-a/{S2}/manifest.g1.json"),
            format!("hub-a/{S2}/signature.g1.json"),
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
    store.faults(|f| f.fail_delete = Some(format!("hub-a/{S1}/devices.g1.jsonl.zst.age")));
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let now = utc(NOW);
    let inv = scan(&store, &trusting()).await.unwrap();
    let err = apply(
        &store,
        &plan(&inv.snapshots, &policies, now).forget,
        &[],
        now,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "forget_incomplete");
    assert!(
        err.to_string()
            .contains(&format!("hub-a/{S1}/devices.g1.jsonl.zst.age")),
        "{err}"
    );

    // s1 is no longer a snapshot (its manifest went first), only an orphan, and an old one.
    store.faults(|f| f.fail_delete = None);
    let inv = scan(&store, &trusting()).await.unwrap();
    assert_eq!(ids(&inv.snapshots), vec![S2]);
    let due = orphans_due(&inv.orphans, &policies, now);
    assert_eq!(
        due.iter().map(Orphan::path).collect::<Vec<_>>(),
        vec![format!("hub-a/{S1}")]
    );
    apply(
        &store,
        &plan(&inv.snapshots, &policies, now).forget,
        &due,
        now,
    )
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
    store.faults(|f| f.fail_delete = Some(format!("hub-a/{S1}/manifest.g1.json")));
    let forget = [snap("hub-a", S1, "2026-11-01T02:00:00Z")];
    assert!(
        apply(&store, &forget, &[], utc("2026-11-26T12:00:00Z"))
            .await
            .is_err()
    );
    assert_eq!(store.names().len(), 4);
}

#[tokio::test]
async fn dry_run_decides_the_same_and_changes_nothing() {
    let store = new_store();
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    insert(
        &store,
        &format!("hub-a/{OLD_ORPHAN}/devices.g1.jsonl.zst.age"),
        b"x",
        "2026-10-01T02:00:00Z",
    );
    insert(
        &store,
        &format!("hub-a/{IN_FLIGHT}/devices.g1.jsonl.zst.age"),
        b"x",
        "2026-11-26T11:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let before = store.names();
    let dry = forget(&store, &policies, true, &rules(false, false)).await;
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

    let real = forget(&store, &policies, false, &rules(false, false)).await;
    assert_eq!(real.to_json()["forget"], json["forget"]);
    assert_eq!(real.applied.unwrap().snapshots_removed, 1);
    let mut left = store.names();
    left.retain(|n| !n.starts_with(&format!("hub-a/{S2}/")));
    assert_eq!(
        left,
        vec![format!("hub-a/{IN_FLIGHT}/devices.g1.jsonl.zst.age")]
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
        format!("hub-a/{OLD_ORPHAN}/devices.g1.jsonl.zst.age/x"),
        format!("hub-a/{S0}/devices.g1.jsonl.zst.age"),
        format!("hub-a/{S0}/signature.g1.json"),
        format!("hub-a/{S0}/holiday.mov"),
    ];
    for f in &foreign {
        insert(&store, f, b"mine", "2020-01-01T00:00:00Z");
    }
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = forget(&store, &policies, false, &rules(false, false)).await;
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
        &format!("hub-a/{OLD_ORPHAN}/devices.g1.jsonl.zst.age"),
        b"x",
        "2020-01-01T00:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    for dry_run in [true, false] {
        let err = run(
            &store,
            &policies,
            utc("2026-11-26T12:00:00Z"),
            dry_run,
            &rules(false, false),
        )
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
        &format!("hub-a/{IN_FLIGHT}/devices.g1.jsonl.zst.age"),
        b"x",
        "2026-11-26T11:00:00Z",
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = run(
        &store,
        &policies,
        utc("2027-06-01T00:00:00Z"),
        true,
        &rules(false, false),
    )
    .await
    .unwrap();
    assert!(report.orphans.is_empty());
    assert_eq!(report.orphans_waiting.len(), 1);
    let report = run(
        &store,
        &policies,
        utc("2027-06-01T00:00:00Z"),
        false,
        &rules(false, false),
    )
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
    signed_by(
        &store,
        "hub-a",
        broken,
        "2026-11-03T02:00:00Z",
        &serde_json::json!([{"name": "devices.g1.jsonl.zst.age", "kind": "devices", "bytes": 6, "sha256": "00", "records": 1}]),
        Some(key()),
    );
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = forget(&store, &policies, false, &rules(false, false)).await;
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

/// The review's forgery, at forget's level: snapshots nobody trusted wrote (no signature, a
/// stranger's, a format 1 one) take no retention slot, are listed as untrusted, and are removed
/// only with `--forget-untrusted`.
#[tokio::test]
async fn forged_snapshots_take_no_retention_slot_and_go_only_when_told() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    snapshot(&store, "hub-a", S2, "2026-11-02T02:00:00Z");
    let stranger = SigningKey::generate().unwrap();
    let forged = [
        "20261110T020000Z-0000000c",
        "20261111T020000Z-0000000d",
        "20261112T020000Z-0000000e",
    ];
    signed_by(
        &store,
        "hub-a",
        forged[0],
        "2026-11-10T02:00:00Z",
        &serde_json::json!([]),
        None,
    );
    signed_by(
        &store,
        "hub-a",
        forged[1],
        "2026-11-11T02:00:00Z",
        &serde_json::json!([]),
        Some(&stranger),
    );
    snapshot_v1(&store, "hub-a", forged[2], "2026-11-12T02:00:00Z");
    let policies = [policy("last", "[retention]\nkeep-last = 2\n")];

    let report = forget(&store, &policies, false, &rules(false, false)).await;
    assert_eq!(kept(&report), vec![S1, S2], "real history keeps its slots");
    assert!(report.plan.forget.is_empty());
    let untrusted: Vec<&str> = report
        .untrusted
        .iter()
        .map(|u| u.snapshot.id.as_str())
        .collect();
    assert_eq!(untrusted, forged.to_vec());
    assert!(
        report.untrusted[0].trust.contains("bad signature"),
        "{:?}",
        report.untrusted
    );
    assert!(
        report.untrusted[1].trust.contains("not trusted"),
        "{:?}",
        report.untrusted
    );
    assert!(
        report.untrusted[2].trust.contains("unsigned"),
        "{:?}",
        report.untrusted
    );
    let json = report.to_json();
    assert_eq!(json["untrusted"][0]["removed"], false);
    for id in forged {
        assert!(
            store.names().iter().any(|n| n.contains(id)),
            "{id} left alone"
        );
    }

    // With --allow-unsigned the format 1 snapshot is history: it takes a slot (the newest).
    let report = forget(&store, &policies, true, &rules(true, false)).await;
    assert_eq!(ids(&report.plan.forget), vec![S1]);

    // Told to, forget removes what is not trusted (manifest first), and nothing else.
    let report = forget(&store, &policies, false, &rules(false, true)).await;
    assert_eq!(report.applied.unwrap().snapshots_removed, 3);
    for id in forged {
        assert!(
            store.names().iter().all(|n| !n.contains(id)),
            "{id} removed"
        );
    }
    assert_eq!(
        store
            .names()
            .iter()
            .filter(|n| n.contains(S1) || n.contains(S2))
            .count(),
        8
    );
}

/// A backup killed between its signature and its manifest leaves no snapshot, only an orphan,
/// which forget removes once the grace period is over.
#[tokio::test]
async fn a_signature_without_a_manifest_is_an_orphan() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    for name in ["devices.g1.jsonl.zst.age", "signature.g1.json"] {
        insert(
            &store,
            &format!("hub-a/{OLD_ORPHAN}/{name}"),
            b"x",
            "2026-10-01T02:00:00Z",
        );
        insert(
            &store,
            &format!("hub-a/{IN_FLIGHT}/{name}"),
            b"x",
            "2026-11-26T11:00:00Z",
        );
    }
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = forget(&store, &policies, false, &rules(false, false)).await;
    assert!(report.plan.keep.is_empty() && report.untrusted.is_empty());
    assert_eq!(
        report.orphans.iter().map(Orphan::path).collect::<Vec<_>>(),
        vec![format!("hub-a/{OLD_ORPHAN}")]
    );
    assert_eq!(report.orphans_waiting.len(), 1);
    assert!(store.names().iter().all(|n| !n.contains(OLD_ORPHAN)));
    assert_eq!(
        store
            .names()
            .iter()
            .filter(|n| n.contains(IN_FLIGHT))
            .count(),
        2
    );
}

/// A rotation killed before it committed generation 2 leaves objects of that generation in a
/// snapshot in use: they go after the grace period; the snapshot stays whole.
#[tokio::test]
async fn an_uncommitted_generation_goes_after_the_grace_period() {
    let store = new_store();
    insert(&store, catalog::MARKER, b"{}", "2026-01-01T00:00:00Z");
    snapshot(&store, "hub-a", S1, "2026-11-01T02:00:00Z");
    for name in ["devices.g2.jsonl.zst.age", "signature.g2.json"] {
        insert(
            &store,
            &format!("hub-a/{S1}/{name}"),
            b"x",
            "2026-11-20T02:00:00Z",
        );
    }
    let policies = [policy("last", "[retention]\nkeep-last = 1\n")];
    let report = forget(&store, &policies, false, &rules(false, false)).await;
    assert_eq!(kept(&report), vec![S1]);
    assert_eq!(
        report.orphans.iter().map(Orphan::path).collect::<Vec<_>>(),
        vec![format!("hub-a/{S1} (uncommitted generation 2)")]
    );
    let mut left = store.names();
    left.retain(|n| n.contains(S1));
    assert_eq!(left.len(), 4, "generation 1 whole: {left:?}");
    assert!(left.iter().all(|n| n.contains(".g1.")), "{left:?}");
}

/// A store that records every object read, around the memory store.
#[derive(Debug)]
struct Counting {
    inner: MemoryStore,
    reads: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Store for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(
        &self,
        name: &str,
    ) -> crate::store::Result<Box<dyn crate::store::ObjectWriter>> {
        self.inner.create(name).await
    }
    async fn get(&self, name: &str) -> crate::store::Result<crate::store::ByteStream> {
        self.reads.lock().unwrap().push(name.to_owned());
        self.inner.get(name).await
    }
    async fn list(&self, prefix: &str) -> crate::store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, name: &str) -> crate::store::Result<()> {
        self.inner.delete(name).await
    }
    async fn now(&self) -> crate::store::Result<OffsetDateTime> {
        self.inner.now().await
    }
    async fn sweep_temporaries(&self, older_than: OffsetDateTime) -> crate::store::Result<usize> {
        self.inner.sweep_temporaries(older_than).await
    }
}

/// A scheduled run's forget of one hub reads that hub's manifests only, not every hub's, and
/// decides and deletes as the unscoped forget would for it; another hub's snapshots are neither
/// read nor touched.
#[tokio::test]
async fn a_scoped_forget_reads_only_its_hubs_manifests() {
    let inner = new_store();
    for hub in ["hub-a.example", "hub-b.example"] {
        snapshot(&inner, hub, S0, "2026-10-01T02:00:00Z");
        snapshot(&inner, hub, S1, "2026-11-01T02:00:00Z");
        snapshot(&inner, hub, S2, "2026-11-02T02:00:00Z");
    }
    let store = Counting {
        inner,
        reads: std::sync::Mutex::default(),
    };
    let keep = [policy("p", "[retention]\nkeep-last = 1\n")];
    let report = run_scoped(
        &store,
        &keep,
        utc("2026-11-26T12:00:00Z"),
        false,
        &rules(false, false),
        &|hub| hub == "hub-a.example",
    )
    .await
    .unwrap();
    let reads = store.reads.lock().unwrap().clone();
    assert!(!reads.is_empty(), "hub-a's manifests were read");
    assert!(
        reads.iter().all(|n| n.starts_with("hub-a.example/")),
        "{reads:?}"
    );
    assert_eq!(report.applied.unwrap().snapshots_removed, 2);
    let left = store.inner.list("hub-b.example/").await.unwrap();
    assert_eq!(left.len(), 3 * 4, "hub-b untouched: {left:?}");
}
