//! Every saved fuzz input, replayed on stable through the same target bodies cargo-fuzz runs
//! (`fuzz/targets.rs`): the seeds (`fuzz/seeds/<target>/`, made from `fixtures/`) and every
//! input that once crashed a target (`fuzz/regressions/<target>/`, each kept as a regression
//! test). `scripts/fuzz` does the fuzzing itself (nightly).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

#[path = "../../../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn inputs(folder: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).expect("readable input"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_and_every_former_crash_runs_clean() {
    let mut seeds = 0;
    for (name, target) in targets::TARGETS {
        let mine = inputs("seeds", name);
        assert!(!mine.is_empty(), "fuzz/seeds/{name} holds no seed");
        seeds += mine.len();
        for (path, data) in mine.iter().chain(&inputs("regressions", name)) {
            let ran = std::panic::catch_unwind(|| target(data));
            assert!(ran.is_ok(), "{name} panicked on {path}");
        }
    }
    assert!(seeds >= 30, "{seeds} seeds");
}

/// The harness can fail: a target whose property does not hold panics, and the replay would
/// report it.
#[test]
fn a_broken_property_is_caught() {
    targets::export_line(br#"{"id":"a","moduleId":"m","capabilities":{"iotEdge":true}}"#);
    targets::export_line(br#"{"id":"a","id":"b"}"#);
    let caught = std::panic::catch_unwind(|| {
        targets::import_errors(br#"{"errorCode":""}"#);
    });
    assert!(
        caught.is_err(),
        "an empty error code breaks import_errors' property"
    );
}
