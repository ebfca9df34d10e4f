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

/// Run `target` on every input; the first that panics is named.
fn replay(name: &str, target: targets::Target, inputs: &[(String, Vec<u8>)]) -> Result<(), String> {
    for (path, data) in inputs {
        if std::panic::catch_unwind(|| target(data)).is_err() {
            return Err(format!("{name} panicked on {path}"));
        }
    }
    Ok(())
}

#[test]
fn every_seed_and_every_former_crash_runs_clean() {
    let mut seeds = 0;
    for (name, target) in targets::TARGETS {
        let mut all = inputs("seeds", name);
        assert!(!all.is_empty(), "fuzz/seeds/{name} holds no seed");
        seeds += all.len();
        all.extend(inputs("regressions", name));
        replay(name, target, &all).unwrap();
    }
    assert!(seeds >= 30, "{seeds} seeds");
}

/// The replay can fail: a target whose property breaks on an input is named with that input.
#[test]
fn a_broken_property_is_caught() {
    fn broken(data: &[u8]) {
        assert!(!data.starts_with(b"boom"), "property broken");
    }
    let inputs = vec![
        ("fine".to_owned(), b"fine".to_vec()),
        ("bad".to_owned(), b"boom".to_vec()),
    ];
    assert_eq!(
        replay("broken", broken, &inputs),
        Err("broken panicked on bad".to_owned())
    );
    // And an empty error code, the first crash the fuzzer found, is now named "unknown".
    targets::import_errors(br#"{"errorCode":"","errorStatus":"x"}"#);
}
