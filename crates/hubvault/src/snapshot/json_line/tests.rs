//! The scanner against `serde_json` as the oracle: the same lines accepted, the same fields
//! picked out, the same lines refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::borrow::Cow;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::{Problem, scan};

/// What the scanner replaced: `serde_json` reading the line into this struct.
#[derive(Deserialize)]
struct Oracle<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "moduleId", borrow, default)]
    module_id: Option<Cow<'a, str>>,
    #[serde(default)]
    capabilities: Option<OracleCapabilities>,
}

#[derive(Deserialize)]
struct OracleCapabilities {
    #[serde(rename = "iotEdge", default)]
    iot_edge: Option<bool>,
}

type Seen = Option<(String, Option<String>, Option<bool>)>;

fn by_scanner(line: &[u8]) -> Seen {
    scan(line).ok().map(|f| {
        (
            f.id.into_owned(),
            f.module_id.map(Cow::into_owned),
            f.iot_edge,
        )
    })
}

fn by_oracle(line: &[u8]) -> Seen {
    serde_json::from_slice::<Oracle<'_>>(line).ok().map(|o| {
        (
            o.id.into_owned(),
            o.module_id.map(Cow::into_owned),
            o.capabilities.and_then(|c| c.iot_edge),
        )
    })
}

/// The differences we chose (module docs): bytes that are not UTF-8 are refused anywhere, and
/// the line and `capabilities` must be objects (serde would also read an array as a struct).
fn chosen_difference(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_err()
        || line.trim_ascii_start().first() != Some(&b'{')
        || serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
            v.get("capabilities")
                .is_some_and(serde_json::Value::is_array)
        })
}

fn assert_agrees(line: &[u8]) {
    let scanner = by_scanner(line);
    let oracle = by_oracle(line);
    if scanner != oracle {
        assert!(
            scanner.is_none() && chosen_difference(line),
            "scanner {scanner:?} vs serde_json {oracle:?} on {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fn fixture_lines() -> Vec<Vec<u8>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/exports");
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let text = std::fs::read(&path).unwrap();
                out.extend(
                    text.split(|&b| b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                        .filter(|l| l.first() == Some(&b'{')),
                );
            }
        }
    }
    assert!(out.len() > 20, "fixtures not found under {root}");
    out
}

const HAND_WRITTEN: &[&str] = &[
    r#"{"id":"a"}"#,
    r#" { "id" : "a" , "moduleId" : "m" } "#,
    r#"{"id":"a","moduleId":null,"capabilities":null}"#,
    r#"{"id":"a","capabilities":{"iotEdge":true,"x":[1,{"y":null}]}}"#,
    r#"{"id":"a","capabilities":{"iotEdge":null}}"#,
    r#"{"id":"a","capabilities":{}}"#,
    r#"{"id":"a","capabilities":{"iotEdge":"true"}}"#,
    r#"{"id":"a","capabilities":"x"}"#,
    r#"{"id":"a","capabilities":[true]}"#,
    r#"{"id":"a","capabilities":[]}"#,
    r#"{"id":"a","capabilities":{"iotEdge":true,"iotEdge":false}}"#,
    r#"{"id":"a","id":"b"}"#,
    r#"{"id":"a","moduleId":"m","moduleId":"n"}"#,
    r#"{"id":"a","capabilities":null,"capabilities":null}"#,
    r#"{"id":null}"#,
    r#"{"id":1}"#,
    r#"{"id":"a","moduleId":7}"#,
    r#"{"moduleId":"m"}"#,
    "{}",
    r#"{"id":"a",}"#,
    r#"{"id":"a" "x":1}"#,
    r#"{"id":"a"} x"#,
    r#"{"id":"a"}}"#,
    r#"{"id":"\u0061\n\"\\\/\b\f\r\t"}"#,
    r#"{"\u0069d":"escaped key"}"#,
    r#"{"id":"a","\ud800":1}"#,
    r#"{"id":"\ud800"}"#,
    r#"{"id":"\ud83d\ude00"}"#,
    r#"{"id":"a","x":"\ud800"}"#,
    r#"{"id":"a","x":"\u12"}"#,
    r#"{"id":"a","x":"\x"}"#,
    r#"{"id":"a","x":-0.5e+10,"y":0,"z":-1E-2,"w":12345678901234567890123}"#,
    r#"{"id":"a","x":01}"#,
    r#"{"id":"a","x":1.}"#,
    r#"{"id":"a","x":.5}"#,
    r#"{"id":"a","x":-}"#,
    r#"{"id":"a","x":1e}"#,
    r#"{"id":"a","x":+1}"#,
    r#"{"id":"a","x":tru}"#,
    r#"{"id":"a","x":nul}"#,
    r#"{"id":"a","x":[1,2,]}"#,
    r#"{"id":"a","x":[,]}"#,
    r#"{"id":"a","x":[[[[{"a":[{}]}]]]]}"#,
    r#"{"id":"a","x":{"a":1,"a":2}}"#,
    r#"{"id":"a","x":{1:2}}"#,
    r#"{"id":"a","x":"tab	inside"}"#,
    "{\"id\":\"a\",\"x\":\"ctl\u{1}\"}",
    "{\"id\":\"a\",\"x\":\"del\u{7f} and ünïcødé ✓\"}",
    "{\"id\":\"a\"\u{b}}",
    "{\"id\":\"a\",\"x\":1}\u{0}",
    r#"{"id":"a""#,
    r#"{"id":"a"#,
    r#"{"id":"#,
    "{",
    r#"{"id":"a","x":"\"#,
    r#"{"id":"","x":1}"#,
];

#[test]
fn agrees_with_serde_json_on_fixtures_and_edge_cases() {
    for line in fixture_lines() {
        assert_agrees(&line);
        assert!(by_scanner(&line).is_some() || by_oracle(&line).is_none());
    }
    for line in HAND_WRITTEN {
        assert_agrees(line.as_bytes());
    }
}

#[test]
fn picks_out_the_fields() {
    let f = scan(
        br#"{"x":{"id":"inner"},"capabilities":{"iotEdge":true},"moduleId":"m","id":"d\u0031"}"#,
    )
    .unwrap();
    assert_eq!(f.id, "d1");
    assert_eq!(f.module_id.as_deref(), Some("m"));
    assert_eq!(f.iot_edge, Some(true));
    assert!(
        matches!(f.module_id, Some(Cow::Borrowed(_))),
        "no copy without escapes"
    );
}

#[test]
fn problems_name_columns_not_values() {
    assert_eq!(scan(br#"{"x":1}"#), Err(Problem::NoId));
    assert_eq!(
        scan(br#"{"id":"a","key":"SECRET"#),
        Err(Problem::Syntax { column: 24 })
    );
    assert_eq!(
        scan(br#"{"id":"a","id":"b"}"#),
        Err(Problem::Twice {
            field: "id",
            column: 16
        })
    );
    assert_eq!(
        scan(b"{\"id\":\"a\",\"k\":\"\xff\"}"),
        Err(Problem::NotUtf8 { column: 16 })
    );
    let shown = scan(br#"{"id":{"SECRET":1}}"#).unwrap_err().to_string();
    assert!(
        shown.contains("wrong type") && !shown.contains("SECRET"),
        "{shown}"
    );
}

#[test]
fn deep_nesting_costs_no_stack_and_matches_serde_json() {
    for depth in [63, 64, 65, 200, 5000] {
        let line = format!(
            r#"{{"id":"a","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_agrees(line.as_bytes());
        assert!(scan(line.as_bytes()).is_ok(), "depth {depth}");
        let unbalanced = format!(
            r#"{{"id":"a","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth - 1)
        );
        assert!(scan(unbalanced.as_bytes()).is_err(), "depth {depth}");
    }
}

/// Bytes that change JSON structure, for mutations.
const INTERESTING: &[u8] = b"{}[]\",:\\ \t\r0123456789-+.eEtrufalsnu\x01\x1f\x7fid";

fn mutate(rng: &mut StdRng, line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        if out.is_empty() {
            out.push(b'{');
        }
        let at = rng.gen_range(0..out.len());
        let byte = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        match rng.gen_range(0..6) {
            0 => {
                out.remove(at);
            }
            1 => out.insert(at, byte),
            2 => out[at] = byte,
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.gen_range(1..20)).min(out.len());
                let piece = out[at..end].to_vec();
                let to = rng.gen_range(0..=out.len());
                out.splice(to..to, piece);
            }
            _ => {
                // A high byte: sometimes a broken UTF-8 sequence.
                out.insert(at, rng.gen_range(0x80..=0xff));
            }
        }
    }
    out
}

/// A random JSON value, with keys and escapes that matter to the scanner.
fn value(rng: &mut StdRng, depth: u32, out: &mut String) {
    let pick = if depth > 4 {
        rng.gen_range(0..5)
    } else {
        rng.gen_range(0..7)
    };
    match pick {
        0 => out.push_str(["null", "true", "false"][rng.gen_range(0..3)]),
        1 => out.push_str(
            ["0", "-1", "3.25", "1e9", "-0.0E-3", "12345678901234567890"][rng.gen_range(0..6)],
        ),
        2..=4 => {
            let s = [
                "plain",
                "",
                "\\\"q\\\"",
                "\\u00e9t\\u00E9",
                "✓ ünï",
                "a\\/b",
                "\\ud83d\\ude00",
                "id",
                "iotEdge",
            ];
            out.push('"');
            out.push_str(s[rng.gen_range(0..s.len())]);
            out.push('"');
        }
        5 => {
            out.push('[');
            for i in 0..rng.gen_range(0..4) {
                if i > 0 {
                    out.push(',');
                }
                value(rng, depth + 1, out);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.gen_range(0..4) {
                if i > 0 {
                    out.push_str([",", " , "][rng.gen_range(0..2)]);
                }
                let keys = [
                    "id",
                    "moduleId",
                    "capabilities",
                    "iotEdge",
                    "k",
                    "\\u0069d",
                    "tags",
                ];
                out.push('"');
                out.push_str(keys[rng.gen_range(0..keys.len())]);
                out.push_str("\":");
                value(rng, depth + 1, out);
            }
            out.push('}');
        }
    }
}

#[test]
fn agrees_with_serde_json_on_generated_and_mutated_lines() {
    let mut rng = StdRng::seed_from_u64(0x6875_6276_6175_6c74);
    let mut bases: Vec<Vec<u8>> = fixture_lines();
    bases.extend(HAND_WRITTEN.iter().map(|l| l.as_bytes().to_vec()));
    let mut accepted = 0;
    for round in 0..40_000 {
        let line = if round % 2 == 0 {
            let mut s = String::new();
            value(&mut rng, 0, &mut s);
            s.into_bytes()
        } else {
            let base = &bases[rng.gen_range(0..bases.len())];
            mutate(&mut rng, base)
        };
        assert_agrees(&line);
        accepted += usize::from(by_scanner(&line).is_some());
    }
    // The generator must produce both kinds, or the comparison proves little.
    assert!(accepted > 1_000, "only {accepted} accepted lines");
}
