//! The behaviour every [`Store`] must show, as one async suite run against each backend (memory
//! and local here; Azure Blob against Azurite). Panics on the first deviation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use bytes::Bytes;
use futures::TryStreamExt as _;

use super::{Error, Store};

/// Run every check against an empty `store`.
pub async fn run(store: &dyn Store) {
    create_only(store).await;
    abort_and_drop_leave_nothing(store).await;
    list_prefix_sorted(store).await;
    delete_is_idempotent(store).await;
    missing_is_not_found(store).await;
    big_object_round_trip(store).await;
    concurrent_creates_one_winner(store).await;
}

async fn create_only(store: &dyn Store) {
    store
        .put("conf/once", Bytes::from_static(b"first"))
        .await
        .expect("first put");
    let err = store
        .put("conf/once", Bytes::from_static(b"second"))
        .await
        .expect_err("second put must fail");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        store.get_bytes("conf/once").await.unwrap(),
        Bytes::from_static(b"first")
    );
    // Invisible until finish.
    let mut w = store.create("conf/pending").await.unwrap();
    w.write(Bytes::from_static(b"x")).await.unwrap();
    assert!(store.head("conf/pending").await.unwrap().is_none());
    let meta = w.finish().await.unwrap();
    assert_eq!((meta.name.as_str(), meta.size), ("conf/pending", 1));
    assert!(store.put("../escape", Bytes::new()).await.is_err());
}

async fn abort_and_drop_leave_nothing(store: &dyn Store) {
    let mut w = store.create("conf/aborted").await.unwrap();
    w.write(Bytes::from_static(b"gone")).await.unwrap();
    w.abort().await.unwrap();
    let mut w = store.create("conf/dropped").await.unwrap();
    w.write(Bytes::from_static(b"gone")).await.unwrap();
    drop(w);
    let names: Vec<String> = store
        .list("conf/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "conf/aborted" || n == "conf/dropped"),
        "{names:?}"
    );
    store
        .put("conf/aborted", Bytes::from_static(b"later"))
        .await
        .expect("an aborted name is free");
}

async fn list_prefix_sorted(store: &dyn Store) {
    for name in ["list/b/2", "list/a", "list/b/1", "listing", "list2/x"] {
        store.put(name, Bytes::from(name.to_owned())).await.unwrap();
    }
    let names: Vec<String> = store
        .list("list/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["list/a", "list/b/1", "list/b/2"]);
    let names: Vec<String> = store
        .list("list")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        ["list/a", "list/b/1", "list/b/2", "list2/x", "listing"]
    );
    let sizes: Vec<u64> = store
        .list("list/b/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.size)
        .collect();
    assert_eq!(sizes, [8, 8]);
    assert!(store.list("nothing-here/").await.unwrap().is_empty());
}

async fn delete_is_idempotent(store: &dyn Store) {
    store.put("del/x", Bytes::from_static(b"x")).await.unwrap();
    store.delete("del/x").await.unwrap();
    store
        .delete("del/x")
        .await
        .expect("deleting a missing object is fine");
    assert!(store.head("del/x").await.unwrap().is_none());
}

async fn missing_is_not_found(store: &dyn Store) {
    let err = match store.get("missing/object").await {
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .expect_err("a missing object must not read"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

async fn big_object_round_trip(store: &dyn Store) {
    // 9 MiB in uneven chunks crosses every backend's block and read-chunk sizes.
    let data: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    let mut w = store.create("big/object").await.unwrap();
    for piece in data.chunks(3 * 1024 * 1024 + 17) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert_eq!(w.finish().await.unwrap().size, data.len() as u64);
    let back = store.get_bytes("big/object").await.unwrap();
    assert!(back == data, "big object differs after a round trip");
    assert_eq!(
        store.head("big/object").await.unwrap().map(|m| m.size),
        Some(data.len() as u64)
    );
}

async fn concurrent_creates_one_winner(store: &dyn Store) {
    // Both writers are open before either finishes: create-only must be decided at finish.
    let mut writers = Vec::new();
    for i in 0..4u8 {
        let mut w = store.create("race/name").await.unwrap();
        w.write(Bytes::from(vec![i; 1000])).await.unwrap();
        writers.push(w);
    }
    let results =
        futures::future::join_all(writers.into_iter().map(super::ObjectWriter::finish)).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::AlreadyExists { .. }))
    );
    let back = store.get_bytes("race/name").await.unwrap();
    assert!(
        back.len() == 1000 && back.iter().all(|b| *b == back[0]),
        "the winner's bytes, whole"
    );
}
