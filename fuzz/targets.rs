//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`) and the
//! stable regression test that replays every saved input (`crates/hubvault/tests/fuzz_inputs.rs`).
//!
//! Each takes any bytes and must not panic; where a property can be checked cheaply it is:
//! the export line check agrees with `serde_json` (its oracle), what parses re-serialises to
//! itself, and nothing secret comes back out of `Debug`, `Display` or an error.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "fuzz properties: a failed assertion is the finding"
)]

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;

/// A target: any bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay test and `scripts/fuzz`.
pub const TARGETS: [(&str, Target); 10] = [
    ("export_line", export_line),
    ("manifest", manifest),
    ("signature", signature),
    ("config", config),
    ("policy", policy),
    ("import_errors", import_errors),
    ("hub_error", hub_error),
    ("arm_rules", arm_rules),
    ("keyvault_error", keyvault_error),
    ("credentials_text", credentials_text),
];

/// The export line check (`json_line::scan`, and `record::classify` over it) against
/// `serde_json` reading the three fields it replaced; the differences chosen in its docs aside.
pub fn export_line(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Oracle<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(rename = "moduleId", borrow, default)]
        module_id: Option<Cow<'a, str>>,
        #[serde(default)]
        capabilities: Option<Caps>,
    }
    #[derive(serde::Deserialize)]
    struct Caps {
        #[serde(rename = "iotEdge", default)]
        iot_edge: Option<bool>,
    }
    let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let scanned = hubvault::snapshot::json_line::scan(line).ok().map(|f| {
        (
            f.id.into_owned(),
            f.module_id.map(Cow::into_owned),
            f.iot_edge,
        )
    });
    let oracle = serde_json::from_slice::<Oracle<'_>>(line).ok().map(|o| {
        (
            o.id.into_owned(),
            o.module_id.map(Cow::into_owned),
            o.capabilities.and_then(|c| c.iot_edge),
        )
    });
    if scanned != oracle {
        let chosen = std::str::from_utf8(line).is_err()
            || line.trim_ascii_start().first() != Some(&b'{')
            || serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
                v.get("capabilities")
                    .is_some_and(serde_json::Value::is_array)
            });
        assert!(
            scanned.is_none() && chosen,
            "scanner {scanned:?} vs serde_json {oracle:?}"
        );
    }
    // The record classifier never panics, whatever it is given.
    let _ = hubvault::snapshot::record::classify(line, 1, "fuzz");
}

/// A manifest that parses serialises to bytes that parse to the same manifest; the stream
/// header parser takes anything.
pub fn manifest(data: &[u8]) {
    let _ = hubvault::snapshot::Header::parse(data);
    let Ok(m) = hubvault::snapshot::Manifest::parse(data, "manifest.g1.json") else {
        return;
    };
    let again = hubvault::snapshot::Manifest::parse(&m.to_bytes(), "manifest.g1.json")
        .expect("what parsed re-parses after writing");
    assert_eq!(again.to_bytes(), m.to_bytes());
    let _ = m.bytes();
    let _ = m.check_not_refused();
}

/// A signature object judged against a fixed manifest: never trusted unless it is the real
/// signature (which random bytes are not).
pub fn signature(data: &[u8]) {
    let manifest = fixed_manifest();
    let bytes = manifest.to_bytes();
    let trusted = hubvault::keys::TrustedSigners::new([fixed_signer()]);
    let trust = hubvault::snapshot::signature::judge(
        &manifest,
        "manifest.g1.json",
        &bytes,
        Some(data),
        &trusted,
    );
    assert!(
        !matches!(trust, hubvault::snapshot::trust::Trust::Signed(_)),
        "random bytes verified as a signature"
    );
    // And the manifest's own bytes from the input, with no signature, are never trusted.
    if let Ok(m) = hubvault::snapshot::Manifest::parse(data, "manifest.g1.json") {
        let t = hubvault::snapshot::signature::judge(&m, "manifest.g1.json", data, None, &trusted);
        assert!(!matches!(t, hubvault::snapshot::trust::Trust::Signed(_)));
    }
}

fn fixed_signer() -> hubvault::keys::Signer {
    "hvsig1r29ae2ezkrztkngxfguca2wshmtt6nzhxkfu7s0ywryelhnqecqswh73mz"
        .parse()
        .expect("the golden v2 signer")
}

fn fixed_manifest() -> hubvault::snapshot::Manifest {
    let text = format!(
        r#"{{"format":2,"id":"20261206T072125Z-9889d1b7","hub":"golden-hub","created":"2026-12-06T07:21:25Z","source":{{"kind":"file"}},"counts":{{"devices":1,"modules":0,"edge_devices":0,"configurations":0,"skipped_lines":0}},"objects":[],"recipients":[],"tool":"hubvault 0.2.0","generation":1,"signer":"{}"}}"#,
        fixed_signer()
    );
    hubvault::snapshot::Manifest::parse(text.as_bytes(), "manifest.g1.json").expect("fixed")
}

/// `hubvault.toml`: any text parses or fails with a message; a connection string in it never
/// shows in `Debug` (found by fuzzing: the first form of this property took a signer that held
/// the same text for a leak).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hubvault::config::Config::parse(text, Path::new("hubvault.toml")) {
        Ok(mut c) => {
            // Every connection string the file set, replaced by a marker no other field can hold
            // by chance: `Debug` must not show it (a value in the text could also appear in a
            // public field, such as a signer, which is no leak).
            const MARK: &str = "\u{1}connection-string-marker\u{1}";
            for entry in c.hubs.values_mut().chain(c.dps.values_mut()) {
                if entry.connection_string.is_some() {
                    entry.connection_string = Some(MARK.to_owned());
                }
            }
            if let Some(s) = c.staging.as_mut().filter(|s| s.connection_string.is_some()) {
                s.connection_string = Some(MARK.to_owned());
            }
            assert!(
                !format!("{c:?}").contains(MARK),
                "a connection string in Debug"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A policy file: parses or fails with a message; its schedule and spans parse on their own.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ =
        hubvault::policy::Policy::parse(text, Path::new("policy.toml")).map_err(|e| e.to_string());
    let _ = hubvault::policy::schedule::CronExpr::parse(text);
    let _ = hubvault::policy::span::Span::parse(text);
    let _ = hubvault::staging::parse_lifetime(text);
}

/// An `importErrors.log` as the hub writes it (or anything else in its place).
pub fn import_errors(data: &[u8]) {
    for (code, status) in hubvault::restore::job::parse_error_log(data) {
        assert!(!code.is_empty());
        let _ = status;
    }
}

/// An IoT Hub error answer: any status, header and body; and a `Retry-After`.
pub fn hub_error(data: &[u8]) {
    let (head, body) = data.split_at(data.len().min(4));
    let status = head
        .iter()
        .fold(0u16, |a, b| a.wrapping_mul(31).wrapping_add(u16::from(*b)));
    let header = std::str::from_utf8(head).ok();
    let e = hubvault::hub::ServiceError::parse(status % 600, header, body);
    let _ = format!("{e:?}");
    if let Ok(text) = std::str::from_utf8(data) {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        if let Some(d) = hubvault::hub::retry::parse_retry_after(text, now) {
            assert!(
                d <= std::time::Duration::from_secs(300),
                "Retry-After over the cap"
            );
        }
    }
}

/// ARM's hub networking rules, judged for a few callers.
pub fn arm_rules(data: &[u8]) {
    let Ok(rules) = serde_json::from_slice::<hubvault::arm::NetworkRules>(data) else {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = hubvault::arm::mask_contains(text, IpAddr::from([10, 0, 0, 1]));
        }
        return;
    };
    for caller in ["127.0.0.1", "10.1.2.3", "::1", "203.0.113.7"] {
        let _ = rules.verdict(caller.parse().unwrap());
    }
}

/// A Key Vault refusal, any status and body: classified without panic, and the body's text is
/// never taken for a value to show beyond its first line.
pub fn keyvault_error(data: &[u8]) {
    let url: hubvault::keys::SecretUrl = "https://kv.vault.azure.net/secrets/id".parse().unwrap();
    let status = data.first().map_or(403, |b| 400 + u16::from(*b % 110));
    let e = hubvault::keys::keyvault::classify_answer(status, data, &url, "get");
    let _ = e.to_string();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<hubvault::keys::SecretUrl>();
    }
}

/// Connection strings, store locations, recipients and signers: parsed or refused, and the
/// key of a connection string never in what is shown of it.
pub fn credentials_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cs) = hubvault::hub::auth::ConnectionString::parse(text) {
        let _ = cs.signer().token("hub/devices/x", 1);
        let shown = format!("{cs} {cs:?}");
        assert!(
            !shown.contains("SharedAccessKey=") || shown.contains("SharedAccessKey=<redacted>")
        );
    }
    if let Err(e) = hubvault::hub::auth::ConnectionString::parse(text) {
        let _ = e.to_string();
    }
    let _ = hubvault::store::azure::AzureLocation::parse(text).map(|l| format!("{l:?}"));
    let _ = hubvault::store::azure::AzureLocation::from_connection_string(text, "c");
    let _ = hubvault::keys::parse_recipient(text, 1).map_err(|e| {
        // Echoed: the message holds the input, and not merely because every message of its
        // kind says so (a secret key's is named by its prefix, `AGE-SECRET-KEY-…`).
        let template = [
            "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
            "age1qqqqqq",
            "a=b;c",
            "plain",
        ]
        .iter()
        .filter_map(|t| hubvault::keys::parse_recipient(t, 1).err())
        .map(|e| e.to_string())
        .any(|m| m.contains(text));
        let echoed = text.len() >= 12 && !template && e.to_string().contains(text);
        assert!(!echoed, "a refused recipient echoed");
    });
    let _ = text.parse::<hubvault::keys::Signer>();
}
