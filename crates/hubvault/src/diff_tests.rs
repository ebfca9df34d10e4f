//! Diff tests on small hand-written export lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "test code"
)]

use std::convert::Infallible;

use super::*;

const KEY_A: &str = "q1XW0mS7C5tC3m0Yc1bXzR0FJ8s8oZ3y2fH4vQ9pKdA=";
const KEY_B: &str = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGw=";

#[allow(clippy::unnecessary_wraps)] // the diff takes fallible streams, as the snapshot reader yields
fn entry(id: &str, module_id: Option<&str>, line: &str) -> Result<Entry, Infallible> {
    Ok(Entry {
        id: id.into(),
        module_id: module_id.map(Into::into),
        line: line.as_bytes().to_vec(),
    })
}

fn device(id: &str, key: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"{id}","eTag":"MQ==","status":"enabled","authentication":{{"symmetricKey":{{"primaryKey":"{key}","secondaryKey":"{KEY_B}"}},"x509Thumbprint":{{"primaryThumbprint":null,"secondaryThumbprint":null}},"type":"sas"}},"twinETag":"AAAAAAAAAAE=","tags":{{"site":"plant-7"}},"properties":{{"desired":{{"interval":30}},"reported":{{"fw":"1.0"}}}},"capabilities":{{"iotEdge":false}}{extra}}}"#
    )
}

fn aspects_of(old: &str, new: &str) -> Vec<&'static str> {
    let report = compare([entry("d", None, old)], [entry("d", None, new)]).unwrap();
    report
        .changed
        .first()
        .map(|(_, a)| a.iter().map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn added_removed_changed_in_key_order_with_modules() {
    let old = vec![
        entry("a", None, &device("a", KEY_A, "")),
        entry("b", None, &device("b", KEY_A, "")),
        entry("b", Some("m1"), &device("b", KEY_A, r#","moduleId":"m1""#)),
        entry("c", None, &device("c", KEY_A, "")),
    ];
    let new = vec![
        entry("a", None, &device("a", KEY_A, "")),
        entry("b", None, &device("b", KEY_B, "")),
        entry("b", Some("m2"), &device("b", KEY_A, r#","moduleId":"m2""#)),
        entry("d", None, &device("d", KEY_A, "")),
    ];
    let report = compare(old, new).unwrap();
    assert_eq!(report.added, vec!["b/m2", "d"]);
    assert_eq!(report.removed, vec!["b/m1", "c"]);
    assert_eq!(report.changed, vec![("b".to_owned(), vec![Aspect::Keys])]);
    assert_eq!(report.unchanged, 1);
    let json = report.to_json();
    assert_eq!(json["changed"], serde_json::json!(["b"]));
    assert_eq!(json["changes"][0]["aspects"], serde_json::json!(["keys"]));
}

#[test]
fn each_aspect_is_named() {
    let base = device("d", KEY_A, "");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (device("d", KEY_B, ""), vec!["keys"]),
        (
            base.replace(r#""type":"sas""#, r#""type":"selfSigned""#),
            vec!["auth_type"],
        ),
        (
            base.replace(
                r#""status":"enabled""#,
                r#""status":"disabled","statusReason":"stolen""#,
            ),
            vec!["status"],
        ),
        (base.replace("plant-7", "plant-8"), vec!["tags"]),
        (
            base.replace(r#""interval":30"#, r#""interval":60"#),
            vec!["desired_properties"],
        ),
        (
            base.replace(r#""iotEdge":false"#, r#""iotEdge":true"#),
            vec!["capabilities"],
        ),
        (
            device(
                "d",
                KEY_A,
                r#","deviceScope":"ms-azure-iot-edge://gw-1-6385""#,
            ),
            vec!["scopes"],
        ),
        (
            device(
                "d",
                KEY_A,
                r#","parentScopes":["ms-azure-iot-edge://gw-1-6385"]"#,
            ),
            vec!["scopes"],
        ),
        (
            device("d", KEY_A, r#","futureField":{"x":1}"#),
            vec!["other"],
        ),
        (
            base.replace(
                r#""primaryThumbprint":null"#,
                r#""primaryThumbprint":"6E5A1C3F9B0D2E4F6A8C0B1D3E5F7A9C1B3D5E7F""#,
            )
            .replace(r#""type":"sas""#, r#""type":"selfSigned""#),
            vec!["keys", "auth_type"],
        ),
    ];
    for (new, want) in cases {
        assert_eq!(aspects_of(&base, &new), want, "{new}");
    }
}

#[test]
fn volatile_fields_are_ignored() {
    let base = device("d", KEY_A, "");
    let noisy = base
        .replace(r#""eTag":"MQ==""#, r#""eTag":"Mg==""#)
        .replace("AAAAAAAAAAE=", "AAAAAAAAAAk=")
        .replace(
            r#""fw":"1.0""#,
            r#""fw":"2.0","$metadata":{"$lastUpdated":"2026-11-26T10:00:00Z"}"#,
        )
        .replace(
            r#""interval":30"#,
            r#""interval":30,"$version":7,"$metadata":{"$lastUpdated":"2026-11-26T10:00:00Z"}"#,
        )
        .replace(
            r#""status":"enabled""#,
            r#""status":"enabled","statusUpdateTime":"2026-11-26T10:00:00Z""#,
        );
    let report = compare([entry("d", None, &base)], [entry("d", None, &noisy)]).unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(report.unchanged, 1);
    // key order and whitespace do not matter either
    let reordered = r#"{"status":"enabled","id":"d"}"#;
    assert!(aspects_of(r#"{"id":"d", "status":"enabled"}"#, reordered).is_empty());
    // but a tag called "version" inside tags is data, not metadata
    assert_eq!(
        aspects_of(
            r#"{"id":"d","tags":{"version":1}}"#,
            r#"{"id":"d","tags":{"version":2}}"#
        ),
        vec!["tags"]
    );
}

#[test]
fn keys_never_appear_in_the_report_or_errors() {
    let report = compare(
        [entry("d", None, &device("d", KEY_A, ""))],
        [entry("d", None, &device("d", KEY_B, ""))],
    )
    .unwrap();
    let shown = format!("{report:?} {}", report.to_json());
    assert!(!shown.contains(KEY_A) && !shown.contains(KEY_B), "{shown}");
    let broken = format!("{}!!", device("d", KEY_A, ""));
    let err = compare(
        [entry("d", None, &device("d", KEY_B, ""))],
        [entry("d", None, &broken)],
    )
    .unwrap_err();
    assert_eq!(err.code(), "diff_bad_record");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY_A) && !shown.contains(KEY_B), "{shown}");
    let e = entry("d", None, &device("d", KEY_A, "")).unwrap();
    assert!(!format!("{e:?}").contains(KEY_A));
}

#[test]
fn unsorted_or_duplicate_input_is_an_error() {
    let line = r#"{"id":"x"}"#;
    for (old, side) in [
        (
            vec![entry("b", None, line), entry("a", None, line)],
            Side::Old,
        ),
        (
            vec![entry("a", Some("m"), line), entry("a", None, line)],
            Side::Old,
        ),
        (
            vec![entry("a", None, line), entry("a", None, line)],
            Side::Old,
        ),
    ] {
        let err = compare(old, Vec::new()).unwrap_err();
        assert_eq!(err.code(), "diff_unsorted");
        assert!(matches!(err, Error::Unsorted { side: s, .. } if s == side));
    }
    let err = compare(
        Vec::new(),
        vec![entry("b", None, line), entry("a", None, line)],
    )
    .unwrap_err();
    assert!(err.to_string().contains("newer snapshot"), "{err}");
}

#[test]
fn device_sorts_before_its_modules_in_byte_order() {
    let line = r#"{"id":"x"}"#;
    // "$edgeAgent" < "$edgeHub" < "filter" in bytes; the device line has no moduleId and comes first
    let old = vec![
        entry("gw", None, line),
        entry("gw", Some("$edgeAgent"), line),
        entry("gw", Some("$edgeHub"), line),
        entry("gw", Some("filter"), line),
        entry("gw-2", None, line),
    ];
    let report = compare(old.clone(), old).unwrap();
    assert!(report.is_empty());
    assert_eq!(report.unchanged, 5);
}

#[test]
fn read_errors_are_passed_through_with_the_side() {
    let new: Vec<Result<Entry, std::io::Error>> =
        vec![Err(std::io::Error::other("truncated object"))];
    let err = compare(Vec::new(), new).unwrap_err();
    assert_eq!(err.code(), "diff_read");
    assert!(
        err.to_string().contains("newer snapshot") && err.to_string().contains("truncated"),
        "{err}"
    );
}

#[test]
fn streams_with_constant_state() {
    // 100k identical records on both sides: nothing collected but a count.
    let records = || {
        (0..100_000).map(|i| {
            entry(
                &format!("dev-{i:06}"),
                None,
                r#"{"id":"x","status":"enabled"}"#,
            )
        })
    };
    let mut changes = 0;
    let unchanged = for_each_change(records(), records(), |_| changes += 1).unwrap();
    assert_eq!((unchanged, changes), (100_000, 0));
}
