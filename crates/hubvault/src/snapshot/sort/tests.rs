#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use super::runs::sweep_stale;
use super::*;
use crate::snapshot::record::Lines;

fn line(id: &str, module: Option<&str>) -> String {
    match module {
        Some(m) => format!(
            "{{\"id\":\"{id}\",\"moduleId\":\"{m}\",\"pad\":\"{}\"}}",
            "x".repeat(200)
        ),
        None => format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}", "y".repeat(200)),
    }
}

/// A pseudo-random permutation of 0..n (no rand dependency needed for determinism).
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap());
    }
    v
}

fn export(order: &[u64]) -> String {
    order
        .iter()
        .map(|i| line(&format!("dev-{i:05}"), None) + "\n")
        .collect()
}

fn prefetched(text: &str) -> Prefetched {
    Prefetched::spawn(Lines::new(
        std::io::Cursor::new(text.as_bytes().to_vec()),
        "devices.txt",
    ))
    .unwrap()
}

fn run(text: &str, run_bytes: usize, streaming: bool) -> (Result<Sorted, Error>, Vec<u8>) {
    let options = SortOptions {
        run_bytes,
        ..SortOptions::default()
    };
    let mut out = Vec::new();
    let r = if streaming {
        stream_borrowed(&mut prefetched(text), "devices.txt", &mut out, |_| {})
    } else {
        sort_into(
            &mut prefetched(text),
            "devices.txt",
            &mut out,
            &options,
            |_| {},
        )
    };
    (r, out)
}

/// What a backup does: stream first, sort when the order breaks.
fn sort_fully(text: &str, run_bytes: usize) -> (Result<Sorted, Error>, Vec<u8>) {
    match run(text, run_bytes, true) {
        (Ok(Sorted::Restart), _) => run(text, run_bytes, false),
        other => other,
    }
}

fn expected(n: u64) -> Vec<u8> {
    export(&(0..n).collect::<Vec<_>>()).into_bytes()
}

#[test]
fn shuffled_input_spills_and_merges_into_order() {
    let text = export(&shuffled(3000));
    assert_eq!(run(&text, 64 * 1024, true).0.unwrap(), Sorted::Restart);
    let (r, out) = run(&text, 64 * 1024, false);
    match r.unwrap() {
        Sorted::Done {
            records,
            runs_spilled,
        } => {
            assert_eq!(records, 3000);
            assert!(runs_spilled > 5, "{runs_spilled}");
        }
        Sorted::Restart => panic!("only streaming restarts"),
    }
    assert!(out == expected(3000));
}

#[test]
fn many_runs_merge_in_rounds() {
    let text = export(&shuffled(4000));
    let (r, out) = run(&text, 8 * 1024, false);
    assert!(matches!(r.unwrap(), Sorted::Done { runs_spilled, .. } if runs_spilled > MAX_FAN_IN));
    assert!(out == expected(4000));
}

#[test]
fn sorted_input_costs_no_spill() {
    let text = export(&(0..3000).collect::<Vec<_>>());
    let (r, out) = run(&text, 64 * 1024, true);
    assert_eq!(
        r.unwrap(),
        Sorted::Done {
            records: 3000,
            runs_spilled: 0
        }
    );
    assert!(out == expected(3000));
}

#[test]
fn order_breaking_late_asks_for_a_restart_then_sorts() {
    let mut order: Vec<u64> = (0..3000).collect();
    order.swap(2500, 2900);
    let text = export(&order);
    assert_eq!(run(&text, 64 * 1024, true).0.unwrap(), Sorted::Restart);
    let (r, out) = run(&text, 64 * 1024, false);
    assert!(matches!(r.unwrap(), Sorted::Done { records: 3000, .. }));
    assert!(out == expected(3000));
}

#[test]
fn small_input_sorts_in_memory_with_modules_after_their_device() {
    let text = [
        line("b", None),
        line("a", Some("m2")),
        line("a", None),
        line("a", Some("$edgeAgent")),
    ]
    .join("\n");
    let (r, out) = sort_fully(&text, 1 << 20);
    assert_eq!(
        r.unwrap(),
        Sorted::Done {
            records: 4,
            runs_spilled: 0
        }
    );
    let ids: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l[..l.find(",\"pad").unwrap()].to_owned())
        .collect();
    assert_eq!(
        ids,
        [
            "{\"id\":\"a\"",
            "{\"id\":\"a\",\"moduleId\":\"$edgeAgent\"",
            "{\"id\":\"a\",\"moduleId\":\"m2\"",
            "{\"id\":\"b\""
        ]
    );
}

/// Spilled and merged records keep everything: module ids (present or not, record to record,
/// through the merge's reused buffers), the edge flag, line numbers in messages, and a line
/// larger than the whole budget.
#[test]
fn spilled_records_keep_modules_edge_flags_and_oversized_lines() {
    let mut lines = Vec::new();
    for i in shuffled(600) {
        let id = format!("dev-{i:05}");
        lines.push(line(&id, None));
        if i % 3 == 0 {
            lines.push(line(&id, Some("$edgeAgent")));
            lines.push(line(&id, Some("m")));
        }
    }
    let big = format!(
        "{{\"id\":\"dev-00300\",\"moduleId\":\"big\",\"pad\":\"{}\"}}",
        "z".repeat(40_000)
    );
    lines.insert(17, big.clone());
    lines.push("{\"id\":\"edge\",\"capabilities\":{\"iotEdge\":true}}".to_owned());
    let text = lines.join("\n") + "\n";
    let mut expected = lines.clone();
    let key = |l: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["moduleId"].as_str().map(str::to_owned),
        )
    };
    expected.sort_by_key(|l| key(l));
    let mut out = Vec::new();
    let (mut records, mut edges) = (0, 0);
    let options = SortOptions {
        run_bytes: 2 * 1024,
        ..SortOptions::default()
    };
    let r = sort_into(&mut prefetched(&text), "d", &mut out, &options, |r| {
        records += 1;
        edges += usize::from(r.edge);
    });
    assert!(matches!(r.unwrap(), Sorted::Done { runs_spilled, .. } if runs_spilled > MAX_FAN_IN));
    assert_eq!((records, edges), (lines.len(), 1));
    assert!(String::from_utf8(out).unwrap() == expected.join("\n") + "\n");

    // A duplicate found in the merge names both lines.
    let twice = format!("{text}{}\n", line("dev-00006", Some("m")));
    let mut sink = Vec::new();
    let err = sort_into(&mut prefetched(&twice), "d", &mut sink, &options, |_| {}).unwrap_err();
    let at = |needle: &str| 1 + lines.iter().position(|l| l == needle).unwrap();
    let first = at(&line("dev-00006", Some("m")));
    let msg = err.to_string();
    assert!(
        msg.contains("dev-00006/m")
            && msg.contains(&format!("lines {first} and {}", lines.len() + 1)),
        "{msg}"
    );
}

#[test]
fn duplicates_are_found_wherever_they_are() {
    // Adjacent, within one buffer, across spilled runs, and while streaming sorted input.
    let mut far = shuffled(2000);
    far.push(far[3]);
    let mut streamed: Vec<u64> = (0..2000).collect();
    streamed.insert(1500, 1499);
    for (order, run_bytes) in [
        (vec![1, 2, 2], 1 << 20),
        (vec![5, 1, 5], 1 << 20),
        (far, 32 * 1024),
        (streamed, 32 * 1024),
    ] {
        let (r, _) = sort_fully(&export(&order), run_bytes);
        let err = r.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Duplicate { .. }), "{msg}");
        assert!(msg.contains("appears twice, on lines"), "{msg}");
    }
    let (r, _) = sort_fully(&export(&[7, 3, 7]), 1 << 20);
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("dev-00007") && msg.contains("lines 1 and 3"),
        "{msg}"
    );
}

#[test]
fn spilled_runs_are_not_plaintext_and_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = {
        let (seen, dir) = (seen.clone(), tmp.path().to_path_buf());
        Arc::new(move || {
            for entry in walk(&dir) {
                seen.lock().unwrap().push(std::fs::read(entry).unwrap());
            }
        }) as Arc<dyn Fn() + Send + Sync>
    };
    let options = SortOptions {
        run_bytes: 64 * 1024,
        temp_dir: Some(tmp.path().to_path_buf()),
        on_spill: Some(probe),
    };
    let text = export(&shuffled(3000));
    let mut out = Vec::new();
    sort_into(&mut prefetched(&text), "d", &mut out, &options, |_| {}).unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the hook saw the spill folder");
    assert!(
        seen.iter().any(|b| b.len() > 1000),
        "a run was being written"
    );
    for bytes in seen.iter() {
        assert!(
            !bytes.windows(7).any(|w| w == b"dev-000"),
            "plaintext in a spilled run"
        );
    }
    assert!(walk(tmp.path()).is_empty(), "spill folder removed");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn spill_folders_of_killed_processes_are_swept_after_a_day() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join(format!("{SPILL_PREFIX}old"));
    let young = tmp.path().join(format!("{SPILL_PREFIX}young"));
    let other = tmp.path().join("someone-else");
    for d in [&old, &young, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("run-00000"), b"x").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    for d in [&old, &other] {
        std::fs::File::open(d)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    sweep_stale(tmp.path());
    assert!(!old.exists());
    assert!(young.exists() && other.exists());
}

/// The streaming pass writes exactly what the full sort writes for input in order, counts
/// every record, restarts on disorder and names both lines of a duplicate.
#[test]
fn streaming_passes_input_in_order_through_unchanged() {
    let mut in_order: Vec<u64> = (0..3000).collect();
    let mut text = export(&in_order);
    // A device followed by its modules, and an id that needed unescaping.
    text.push_str(&(line("dev-99999", None) + "\n"));
    text.push_str(&(line("dev-99999", Some("$edgeAgent")) + "\n"));
    text.push_str("{\"id\":\"zz\\u0030\"}\n");
    let borrowed = |text: &str| {
        let mut pre = Prefetched::spawn(Lines::new(
            std::io::Cursor::new(text.as_bytes().to_vec()),
            "d",
        ))
        .unwrap();
        let mut out = Vec::new();
        let mut seen = 0;
        let result = stream_borrowed(&mut pre, "d", &mut out, |_| seen += 1);
        (result, out, seen)
    };
    let (sorted, sorted_out) = run(&text, usize::MAX, false);
    let (got, got_out, seen) = borrowed(&text);
    assert_eq!(got.unwrap(), sorted.unwrap());
    assert_eq!(got_out, sorted_out);
    assert_eq!(seen, 3003);

    in_order.swap(10, 11);
    assert_eq!(borrowed(&export(&in_order)).0.unwrap(), Sorted::Restart);

    let duplicated = export(&[1, 2, 2, 3]);
    let message = borrowed(&duplicated).0.unwrap_err().to_string();
    assert!(
        message.contains("dev-00002") && message.contains("lines 2 and 3"),
        "{message}"
    );
}
