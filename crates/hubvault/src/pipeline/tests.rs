#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use super::*;

fn key() -> (age::x25519::Identity, age::x25519::Recipient) {
    let id = age::x25519::Identity::generate();
    let r = id.to_public();
    (id, r)
}

fn identities(ids: Vec<age::x25519::Identity>) -> Identities {
    Arc::new(
        ids.into_iter()
            .map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>)
            .collect(),
    )
}

fn plaintext() -> Vec<u8> {
    (0..20_000)
        .flat_map(|i| format!("{{\"id\":\"dev-{i:06}\",\"status\":\"enabled\"}}\n").into_bytes())
        .collect()
}

#[test]
fn seal_then_open_round_trips_and_reports_what_was_stored() {
    let (id, r) = key();
    let plain = plaintext();
    let mut w = SealWriter::new(Vec::new(), &[r], SealOptions::archive()).unwrap();
    w.write_all(&plain).unwrap();
    let (stored, stats) = w.finish().unwrap();
    assert_eq!(stats.plaintext_bytes, plain.len() as u64);
    assert_eq!(stats.stored_bytes, stored.len() as u64);
    assert_eq!(
        stats.sha256,
        seal::hex(&<sha2::Sha256 as sha2::Digest>::digest(&stored))
    );
    assert!(
        stored.len() < plain.len() / 4,
        "compressed before encryption"
    );
    let mut back = Vec::new();
    open(&stored[..], &identities(vec![id]))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, plain);
}

#[test]
fn every_recipient_can_open() {
    let (a, ra) = key();
    let (b, rb) = key();
    let mut w = SealWriter::new(Vec::new(), &[ra, rb], fast()).unwrap();
    w.write_all(b"hello").unwrap();
    let (stored, _) = w.finish().unwrap();
    for id in [a, b] {
        let mut back = String::new();
        open(&stored[..], &identities(vec![id]))
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "hello");
    }
}

#[test]
fn wrong_key_is_its_own_error() {
    let (_, r) = key();
    let (other, _) = key();
    let mut w = SealWriter::new(Vec::new(), &[r], fast()).unwrap();
    w.write_all(b"secret").unwrap();
    let (stored, _) = w.finish().unwrap();
    let err = open(&stored[..], &identities(vec![other])).err().unwrap();
    assert!(matches!(err, Error::WrongKey), "{err:?}");
    let err = open(&b"not age at all"[..], &identities(vec![key().0]))
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotSealed { .. }), "{err:?}");
}

#[test]
fn a_flipped_byte_or_a_cut_end_fails_while_reading() {
    let (id, r) = key();
    let ids = identities(vec![id]);
    let mut w = SealWriter::new(Vec::new(), &[r], SealOptions::archive()).unwrap();
    w.write_all(&plaintext()).unwrap();
    let (stored, _) = w.finish().unwrap();
    let mut flipped = stored.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    let mut sink = Vec::new();
    assert!(
        open(&flipped[..], &ids)
            .unwrap()
            .read_to_end(&mut sink)
            .is_err()
    );
    let cut = &stored[..stored.len() - 100];
    assert!(
        open(cut, &ids)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err()
    );
}

#[test]
fn dropping_an_unfinished_writer_is_caught() {
    let (_, r) = key();
    let before = unfinished_drops();
    let mut w = SealWriter::new(Vec::new(), std::slice::from_ref(&r), fast()).unwrap();
    w.write_all(b"half").unwrap();
    drop(w);
    assert!(unfinished_drops() > before);
    let counted = unfinished_drops();
    SealWriter::new(Vec::new(), &[r], fast()).unwrap().abandon();
    assert!(unfinished_drops() >= counted);
}

#[test]
fn no_recipients_is_refused() {
    assert!(matches!(
        SealWriter::new(Vec::new(), &[], fast()).err(),
        Some(Error::NoRecipients)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_uploads_complete_objects_and_aborts_incomplete_ones() {
    use crate::store::Store as _;
    let store = Arc::new(crate::store::memory::MemoryStore::new());
    let (id, r) = key();
    let plain = plaintext().repeat(20);
    for complete in [true, false] {
        let name = format!("obj-{complete}");
        let (sender, rx) = bridge::channel();
        let task = tokio::spawn(bridge::upload(rx, store.create(&name).await.unwrap(), None));
        let p = plain.clone();
        let r = r.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = SealWriter::new(sender, &[r], SealOptions::archive()).unwrap();
            w.write_all(&p).unwrap();
            if complete {
                let (sender, _) = w.finish().unwrap();
                sender.finish().unwrap();
            } else {
                w.abandon();
            }
        })
        .await
        .unwrap();
        let meta = task.await.unwrap().unwrap();
        assert_eq!(meta.is_some(), complete);
    }
    assert!(store.head("obj-false").await.unwrap().is_none());
    let stream = store.get("obj-true").await.unwrap();
    let ids = identities(vec![id]);
    let handle = tokio::runtime::Handle::current();
    let back = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        open(bridge::StreamReader::new(handle, stream), &ids)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    })
    .await
    .unwrap();
    assert_eq!(back, plain);
}

/// Quick settings for small test streams: low level, one thread, a small window.
fn fast() -> SealOptions {
    SealOptions {
        level: -3,
        threads: 0,
        window_log: Some(15),
        job_bytes: None,
        overlap_log: None,
    }
}
