//! The vault end to end, through the real `hubvault` binary: backup → snapshots/show → verify →
//! dump, bad input, damaged stores, killed backups, concurrent backups, secrets in output, and
//! the golden v1 snapshot that must open forever.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use age::secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::support::{Hubvault, Out, Workdir, blocking, write_private};

/// Every device key in test exports contains this, so a leak is one substring search.
const KEY_MARKER: &str = "c2VjcmV0LWtleS0";

/// A work folder with an identity, a local store (`store/`) and a `tmp/` the binary spills into.
struct Env {
    wd: Workdir,
    recipient: String,
}

impl Env {
    fn new() -> Env {
        let wd = Workdir::new();
        let recipient = wd.write_identity();
        std::fs::create_dir_all(wd.join("tmp")).unwrap();
        wd.set_env("TMPDIR", &wd.join("tmp").display().to_string());
        Env { wd, recipient }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.wd.join(rel)
    }

    fn store(&self) -> PathBuf {
        self.wd.store()
    }

    /// `hubvault --store <store>` in the test folder, with a clean environment.
    fn cmd(&self) -> Hubvault {
        self.wd.hubvault().arg("--store").arg(self.store())
    }

    /// `backup --from-export <export> --hub-name plant-hub --recipient …` with a tiny sort budget.
    fn backup(&self, export: &Path) -> Hubvault {
        self.cmd()
            .env("HUBVAULT_SORT_RUN_BYTES", "16384")
            .args([
                "--json",
                "backup",
                "--hub-name",
                "plant-hub",
                "--recipient",
                &self.recipient,
                "--from-export",
            ])
            .arg(export)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd().arg("--json").args(args).run_blocking();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stderr))
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let v = self.json(&["snapshots"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn identity_args(&self) -> [String; 2] {
        [
            "--identity".to_owned(),
            self.wd.identity().display().to_string(),
        ]
    }

    /// Files under `dir` (recursively), including hidden temporaries.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    out.extend(Self::files(&e.path()));
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    /// Object files of the store (temporaries excluded).
    fn store_objects(&self) -> Vec<PathBuf> {
        Self::files(&self.store())
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".hubvault-tmp"))
            .collect()
    }

    fn assert_no_plaintext_on_disk(&self) {
        for dir in [self.store(), self.path("tmp")] {
            for f in Self::files(&dir) {
                let bytes = std::fs::read(&f).unwrap();
                assert!(
                    !contains(&bytes, KEY_MARKER.as_bytes()),
                    "plaintext device key in {}",
                    f.display()
                );
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A pseudo-random permutation (deterministic).
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap());
    }
    v
}

/// Export lines for `n` devices: every 10th an edge device with two modules, every 7th x509,
/// unicode tags, ids with the punctuation `IoT Hub` allows. Returns the record lines.
fn device_lines(n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..n {
        let id = if i % 11 == 0 {
            format!("dev-{i:05}:a.b+c%_#*?!(),=@;$'")
        } else {
            format!("dev-{i:05}")
        };
        let id_json = serde_json::to_string(&id).unwrap();
        let edge = i % 10 == 0;
        let auth = if i % 7 == 0 {
            r#"{"symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"6E5A1C3F9B0D2E4F6A8C0B1D3E5F7A9C1B3D5E7F","secondaryThumbprint":null},"type":"selfSigned"}"#.to_owned()
        } else {
            format!(
                r#"{{"symmetricKey":{{"primaryKey":"{KEY_MARKER}{i:06}p==","secondaryKey":"{KEY_MARKER}{i:06}s=="}},"type":"sas"}}"#
            )
        };
        lines.push(format!(
            r#"{{"id":{id_json},"eTag":"MQ==","status":"enabled","authentication":{auth},"tags":{{"site":"Zürich-北京","n":1.50}},"properties":{{"desired":{{"i":{i}}},"reported":{{}}}},"capabilities":{{"iotEdge":{edge}}}}}"#
        ));
        if edge {
            for m in ["$edgeAgent", "filter"] {
                lines.push(format!(
                    r#"{{"id":{id_json},"moduleId":"{m}","eTag":"MQ==","status":"enabled","authentication":{{"symmetricKey":{{"primaryKey":"{KEY_MARKER}{i:06}{m}"}},"type":"sas"}},"capabilities":{{"iotEdge":false}}}}"#
                ));
            }
        }
    }
    lines
}

/// Write an export folder: BOM, a warning line, a blank line and CRLF endings included.
fn write_export(dir: &Path, lines: &[String], order: Option<&[usize]>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::from("\u{feff}Warning: this export contains device keys\r\n");
    let ordered: Vec<&String> = match order {
        Some(o) => o.iter().map(|i| &lines[*i]).collect(),
        None => lines.iter().collect(),
    };
    for (k, l) in ordered.iter().enumerate() {
        text.push_str(l);
        text.push_str(if k % 2 == 0 { "\r\n" } else { "\n" });
        if k == 3 {
            text.push('\n');
        }
    }
    std::fs::write(dir.join("devices.txt"), text).unwrap();
    let config = r#"{"id":"thermostat-v2","schemaVersion":"1.0","labels":{"team":"ops"},"content":{"deviceContent":{"properties.desired.setpoint":21}},"targetCondition":"tags.site='plant-7'","priority":10,"etag":"MQ=="}"#;
    std::fs::write(dir.join("configurations.txt"), format!("{config}\n")).unwrap();
    dir.to_owned()
}

/// Record lines in the order the vault stores them: by (id, moduleId), bytewise.
fn sorted_records(lines: &[String]) -> Vec<String> {
    let key = |l: &String| {
        let v: Value = serde_json::from_str(l).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["moduleId"].as_str().map(str::to_owned),
        )
    };
    let mut v = lines.to_vec();
    v.sort_by_key(key);
    v
}

fn standard_export(env: &Env, n: usize, shuffle: bool) -> (PathBuf, Vec<String>) {
    let lines = device_lines(n);
    let order = shuffle.then(|| shuffled(lines.len()));
    let dir = write_export(&env.path("export"), &lines, order.as_deref());
    (dir, lines)
}

fn backup_ok(env: &Env, export: &Path) -> Value {
    let out = env.backup(export).run_blocking();
    assert!(out.status.success(), "backup failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn stderr_of(c: Hubvault) -> (i32, String, String) {
    let out = c.run_blocking();
    (out.code, out.stdout, out.stderr)
}

#[test]
fn round_trip_backup_verify_dump_is_byte_exact() {
    let env = Env::new();
    let (export, lines) = standard_export(&env, 300, true);
    let report = backup_ok(&env, &export);
    for field in [
        "snapshot",
        "hub",
        "devices",
        "modules",
        "configurations",
        "bytes",
    ] {
        assert!(
            report.get(field).is_some(),
            "backup --json lacks {field}: {report}"
        );
    }
    assert_eq!(
        (
            report["devices"].as_u64(),
            report["modules"].as_u64(),
            report["configurations"].as_u64()
        ),
        (Some(300), Some(60), Some(1))
    );
    assert_eq!(report["skipped_lines"], 2, "warning line and blank line");
    assert!(
        report["runs_spilled"].as_u64().unwrap() > 1,
        "a shuffled export spills with a small budget: {report}"
    );
    env.assert_no_plaintext_on_disk();

    let listed = env.json(&["snapshots"]);
    let s = &listed[0];
    for field in [
        "id",
        "hub",
        "created",
        "devices",
        "modules",
        "configurations",
        "bytes",
    ] {
        assert!(
            s.get(field).is_some(),
            "snapshots --json lacks {field}: {s}"
        );
    }
    assert_eq!(s["id"], report["snapshot"]);
    let shown = env.json(&["show", "latest"]);
    assert_eq!(shown["counts"]["edge_devices"], 30);
    assert_eq!(shown["recipients"][0], env.recipient.as_str());

    let out = env
        .cmd()
        .args(["--json", "verify", "--all", "--read-data"])
        .args(env.identity_args())
        .run_blocking();
    assert!(out.status.success(), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["snapshots"][0]["problems"], serde_json::json!([]));

    env.cmd()
        .args(["dump", "latest", "--out"])
        .arg(env.path("restore"))
        .args(env.identity_args())
        .run_blocking()
        .expect_code(0);
    let dumped = std::fs::read_to_string(env.path("restore/devices.txt")).unwrap();
    let expected = sorted_records(&lines)
        .iter()
        .fold(String::new(), |mut s, l| {
            let _ = writeln!(s, "{l}");
            s
        });
    assert!(dumped == expected, "dump differs from the export's records");
    let configs = std::fs::read_to_string(env.path("restore/configurations.txt")).unwrap();
    assert_eq!(
        configs,
        std::fs::read_to_string(export.join("configurations.txt")).unwrap()
    );
    let mode = std::fs::metadata(env.path("restore/devices.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second dump into the same folder refuses to overwrite.
    let (code, _, err) = stderr_of(
        env.cmd()
            .args(["dump", "latest", "--out"])
            .arg(env.path("restore"))
            .args(env.identity_args()),
    );
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn sorted_export_is_stored_without_spilling() {
    let env = Env::new();
    let lines = sorted_records(&device_lines(300));
    let export = write_export(&env.path("export"), &lines, None);
    let report = backup_ok(&env, &export);
    assert_eq!(report["runs_spilled"], 0, "{report}");
    assert!(Env::files(&env.path("tmp")).is_empty());
    env.cmd()
        .args(["verify", "latest", "--read-data"])
        .args(env.identity_args())
        .run_blocking()
        .expect_code(0);
}

fn devices_object(env: &Env) -> PathBuf {
    env.store_objects()
        .into_iter()
        .find(|p| p.ends_with("devices.g1.jsonl.zst.age"))
        .unwrap()
}

#[test]
fn tampered_byte_is_found() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 50, false);
    backup_ok(&env, &export);
    let obj = devices_object(&env);
    let mut bytes = std::fs::read(&obj).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&obj, bytes).unwrap();
    for read_data in [false, true] {
        let mut c = env
            .cmd()
            .args(["--json", "verify", "--all"])
            .args(env.identity_args());
        if read_data {
            c = c.arg("--read-data");
        }
        let (code, out, _) = stderr_of(c);
        assert_eq!(code, 1, "a damaged snapshot is a finding");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], false);
        let problems = v["snapshots"][0]["problems"].to_string();
        assert!(problems.contains("sha256"), "{problems}");
        if read_data {
            assert!(problems.contains("cannot decrypt"), "{problems}");
        }
    }
    let (code, _, err) = stderr_of(
        env.cmd()
            .args(["dump", "latest", "--out"])
            .arg(env.path("r"))
            .args(env.identity_args()),
    );
    assert_eq!(code, 2);
    assert!(err.contains("damaged"), "{err}");
    assert!(
        !env.path("r/devices.txt").exists(),
        "a failed dump leaves no file"
    );
}

/// The review: a damaged age header stopped `verify --all --read-data` with "the identity cannot
/// decrypt", hiding the sha256 mismatch and skipping the snapshots after it.
#[test]
fn a_damaged_age_header_is_reported_as_damage_and_verify_goes_on() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 50, false);
    backup_ok(&env, &export);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup_ok(&env, &export);
    let ids = env.snapshot_ids();
    let older = env
        .store_objects()
        .into_iter()
        .find(|p| p.ends_with("devices.g1.jsonl.zst.age") && p.to_string_lossy().contains(&ids[0]))
        .unwrap();
    let mut bytes = std::fs::read(&older).unwrap();
    // The stanza's ephemeral share sits on the second line, after "-> X25519 ".
    let at = bytes.iter().position(|b| *b == b'\n').unwrap() + 15;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&older, bytes).unwrap();
    let (code, out, err) = stderr_of(
        env.cmd()
            .args(["--json", "verify", "--all", "--read-data"])
            .args(env.identity_args()),
    );
    assert_eq!(code, 1, "a finding, not an error: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let by_id = |id: &str| {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap()
    };
    let damaged = by_id(&ids[0]);
    let problems = damaged["problems"].to_string();
    assert!(
        problems.contains("sha256") && problems.contains("age header is damaged"),
        "{problems}"
    );
    assert_eq!(
        by_id(&ids[1])["ok"],
        true,
        "the next snapshot was still checked"
    );
}

#[test]
fn truncated_object_is_found() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 50, false);
    backup_ok(&env, &export);
    let obj = devices_object(&env);
    let bytes = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &bytes[..bytes.len() - 40]).unwrap();
    let (code, out, _) = stderr_of(
        env.cmd()
            .args(["--json", "verify", "--all", "--read-data"])
            .args(env.identity_args()),
    );
    assert_eq!(code, 1);
    let problems =
        serde_json::from_str::<Value>(&out).unwrap()["snapshots"][0]["problems"].to_string();
    assert!(problems.contains("bytes, the manifest says"), "{problems}");
}

/// A payload moved from one snapshot to another (the manifest edited to agree with it on size
/// and sha256) breaks the signature; and even re-signed by a trusted key (a stolen backup host,
/// a bug), the header inside the payload still names the snapshot it was sealed for.
#[test]
fn payload_swapped_between_snapshots_is_found_by_the_signature_and_the_header() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 30, false);
    let a = backup_ok(&env, &export)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = backup_ok(&env, &export)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let folder = |id: &str| env.store().join("plant-hub").join(id);
    // Same records, so only the header tells them apart: put A's payload under B and make B's
    // manifest agree with it on size and sha256.
    let payload = std::fs::read(folder(&a).join("devices.g1.jsonl.zst.age")).unwrap();
    std::fs::write(folder(&b).join("devices.g1.jsonl.zst.age"), &payload).unwrap();
    let manifest_path = folder(&b).join("manifest.g1.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let a_manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(folder(&a).join("manifest.g1.json")).unwrap(),
    )
    .unwrap();
    manifest["objects"][0] = a_manifest["objects"][0].clone();
    let edited = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(&manifest_path, &edited).unwrap();

    let (code, out, _) = stderr_of(env.cmd().args(["--json", "verify", &b]));
    assert_eq!(code, 1);
    let check = &serde_json::from_str::<Value>(&out).unwrap()["snapshots"][0];
    assert_eq!(check["trust"], "bad-signature", "{check}");
    let (code, out, _) = stderr_of(
        env.cmd()
            .args(["--json", "dump", &b, "--out"])
            .arg(env.path("r"))
            .args(env.identity_args()),
    );
    assert_eq!(code, 2);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["error"]["code"],
        "snapshot_untrusted"
    );

    // Re-signed with the trusted key: the signature holds, the header does not.
    let key = hubvault::keys::SigningKey::load(&env.wd.signing_key()).unwrap();
    let sig =
        hubvault::snapshot::signature::SignatureObject::sign(&edited, "manifest.g1.json", &key);
    std::fs::write(folder(&b).join("signature.g1.json"), sig.to_bytes()).unwrap();
    env.cmd().args(["verify", &b]).run_blocking().expect_code(0);
    let (code, out, _) = stderr_of(
        env.cmd()
            .args(["--json", "verify", &b, "--read-data"])
            .args(env.identity_args()),
    );
    assert_eq!(code, 1);
    let problems =
        serde_json::from_str::<Value>(&out).unwrap()["snapshots"][0]["problems"].to_string();
    assert!(
        problems.contains("header says snapshot") && problems.contains(&a),
        "{problems}"
    );
    let (code, _, err) = stderr_of(
        env.cmd()
            .args(["dump", &b, "--out"])
            .arg(env.path("r"))
            .args(env.identity_args()),
    );
    assert_eq!(code, 2);
    assert!(err.contains("header says snapshot"), "{err}");
}

#[test]
fn snapshot_without_manifest_is_invisible() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 20, false);
    backup_ok(&env, &export);
    let manifest = env
        .store_objects()
        .into_iter()
        .find(|p| p.ends_with("manifest.g1.json"))
        .unwrap();
    std::fs::remove_file(manifest).unwrap();
    assert!(env.snapshot_ids().is_empty());
    let (code, _, err) = stderr_of(env.cmd().args(["show", "latest"]));
    assert_eq!(code, 2);
    assert!(err.contains("no snapshot latest"), "{err}");
}

#[test]
fn wrong_identity_names_the_expected_recipients() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 20, false);
    backup_ok(&env, &export);
    let other = age::x25519::Identity::generate();
    write_private(
        &env.path("other.txt"),
        &format!("{}\n", other.to_string().expose_secret()),
    );
    for args in [
        vec!["verify", "latest", "--read-data"],
        vec!["dump", "latest", "--out", "r"],
    ] {
        let (code, out, err) = stderr_of(
            env.cmd()
                .arg("--json")
                .args(&args)
                .arg("--identity")
                .arg(env.path("other.txt")),
        );
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(&env.recipient), "{args:?}: {err}");
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["error"]["code"],
            "wrong_identity"
        );
    }
    assert!(!env.path("r/devices.txt").exists());
}

#[test]
fn newer_format_asks_for_an_upgrade() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 20, false);
    backup_ok(&env, &export);
    let manifest = env
        .store_objects()
        .into_iter()
        .find(|p| p.ends_with("manifest.g1.json"))
        .unwrap();
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"format\": 2", "\"format\": 3");
    std::fs::write(&manifest, text).unwrap();
    for args in [vec!["show", "latest"], vec!["verify", "--all"]] {
        let (code, out, err) = stderr_of(env.cmd().args(&args));
        assert_ne!(code, 0, "{args:?}");
        let said = format!("{out}{err}");
        assert!(
            said.contains("newer hubvault") && said.contains("upgrade"),
            "{args:?}: {said}"
        );
    }
}

/// One damaged manifest must not hide the other snapshots: `snapshots` lists them and flags
/// it, `verify --all` checks them and fails on it, and `latest` skips it out loud (a damaged
/// manifest cannot be told from a planted one, which must not block `restore latest`).
#[test]
fn a_damaged_manifest_hides_nothing_else_and_latest_skips_it_out_loud() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 20, false);
    let older = backup_ok(&env, &export)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newest = backup_ok(&env, &export)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let damaged = env
        .store_objects()
        .into_iter()
        .find(|p| p.ends_with("manifest.g1.json") && p.to_string_lossy().contains(&newest))
        .unwrap();
    std::fs::write(&damaged, b"{\"format\": 2, \"cut off").unwrap();

    let (code, out, err) = stderr_of(env.cmd().arg("snapshots"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&older), "{out}");
    assert!(out.contains(&newest) && out.contains("UNREADABLE"), "{out}");

    let (code, out, err) = stderr_of(env.cmd().args(["--json", "verify", "--all"]));
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let checks = report["snapshots"].as_array().unwrap();
    let ok_of = |id: &str| checks.iter().find(|c| c["id"] == id).unwrap()["ok"].clone();
    assert_eq!(
        (ok_of(&older), ok_of(&newest)),
        (Value::Bool(true), Value::Bool(false))
    );

    let (code, out, err) = stderr_of(env.cmd().args(["--json", "show", "latest"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["id"],
        older.as_str()
    );
    assert!(
        err.contains("`latest` skips") && err.contains(&newest),
        "said out loud: {err}"
    );

    let (code, _, err) = stderr_of(env.cmd().args(["show", &older]));
    assert_eq!(code, 0, "the older snapshot is still usable by name: {err}");
    let (code, _, err) = stderr_of(
        env.cmd()
            .args(["dump", &older, "--out"])
            .arg(env.path("restored"))
            .arg("--identity")
            .arg(env.path("identity.txt")),
    );
    assert_eq!(code, 0, "{err}");
}

fn assert_refused_and_nothing_stored(env: &Env, export: &Path, expect: &[&str]) {
    let (code, out, err) = stderr_of(env.backup(export).arg("-vvv"));
    assert_eq!(code, 2, "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(serde_json::from_str::<Value>(&out).unwrap()["error"]["code"].is_string());
    assert!(
        !err.contains(KEY_MARKER) && !out.contains(KEY_MARKER),
        "the error shows a key: {err}"
    );
    assert!(
        env.store_objects().is_empty(),
        "something was stored: {:?}",
        env.store_objects()
    );
    assert!(
        Env::files(&env.store().join(".hubvault-tmp")).is_empty(),
        "a temporary was left behind"
    );
    assert!(
        Env::files(&env.path("tmp")).is_empty(),
        "a spill file was left behind"
    );
}

#[test]
fn malformed_line_is_refused_naming_file_line_and_id() {
    let env = Env::new();
    let mut lines = device_lines(200);
    lines[150] = format!(
        r#"{{"id":"broken-1","authentication":{{"symmetricKey":{{"primaryKey":"{KEY_MARKER}XX"}}"#
    );
    let export = write_export(&env.path("export"), &lines, None);
    // Line numbers: 1 warning line, records from line 2, a blank line after the 4th record.
    assert_refused_and_nothing_stored(
        &env,
        &export,
        &["devices.txt line 153", "broken-1", "nothing was stored"],
    );
}

/// The review: a line missing its first byte, or with a NUL or `#` in front, was skipped as a
/// "warning" and the device lost with exit 0 (a mirror would then delete it). Only text lines
/// are skipped; a damaged record is refused with its file and line.
#[test]
fn a_damaged_record_is_refused_not_skipped_as_a_warning() {
    let env = Env::new();
    for (n, damage) in [
        (0, "first byte lost"),
        (1, "NUL in front"),
        (2, "a # in front"),
    ] {
        let mut lines = device_lines(50);
        let line = lines[20].clone();
        lines[20] = match n {
            0 => line[1..].to_owned(),
            1 => format!("\u{0}{line}"),
            _ => format!("#{line}"),
        };
        let export = write_export(&env.path(&format!("export-{n}")), &lines, None);
        let (code, _, err) = stderr_of(env.backup(&export).arg("-vvv"));
        assert_eq!(code, 2, "{damage}: {err}");
        assert!(err.contains("devices.txt line"), "{damage}: {err}");
        assert!(!err.contains(KEY_MARKER), "{damage}: the error shows a key");
        assert!(env.snapshot_ids().is_empty(), "{damage}: nothing stored");
    }
}

#[test]
fn empty_export_is_refused() {
    let env = Env::new();
    let export = write_export(&env.path("export"), &[], None);
    assert_refused_and_nothing_stored(&env, &export, &["holds no records"]);
}

#[test]
fn duplicate_id_is_refused_naming_both_lines() {
    let env = Env::new();
    let mut lines = device_lines(200);
    lines.push(lines[5].clone());
    let order = shuffled(lines.len());
    let export = write_export(&env.path("export"), &lines, Some(&order));
    let last = lines.len() - 1;
    let line_of = |idx: usize| {
        let k = order.iter().position(|o| *o == idx).unwrap();
        k + 2 + usize::from(k > 3)
    };
    let (a, b) = (line_of(5).min(line_of(last)), line_of(5).max(line_of(last)));
    let id = serde_json::from_str::<Value>(&lines[5]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_refused_and_nothing_stored(
        &env,
        &export,
        &[
            "appears twice",
            &format!("id {id} "),
            &format!("lines {a} and {b}"),
        ],
    );
}

/// Start a backup that pauses at `point`, wait for its marker, SIGKILL it.
fn kill_at(env: &Env, export: &Path, point: &str) {
    blocking(async {
        let mut child = env
            .backup(export)
            .env("HUBVAULT_FAULT_PAUSE", point)
            .spawn();
        let marker = format!("HUBVAULT_FAULT_PAUSE: paused at {point}");
        let paused = child
            .wait_for_stderr(&marker, Duration::from_secs(60))
            .await;
        assert!(paused, "no pause marker for {point}");
        child.kill().await;
    });
}

#[test]
fn killed_backups_leave_no_visible_snapshot_and_earlier_ones_intact() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 300, true);
    let first = backup_ok(&env, &export)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    for point in ["spill", "upload", "before-manifest"] {
        kill_at(&env, &export, point);
        assert_eq!(
            env.snapshot_ids(),
            std::slice::from_ref(&first),
            "after a kill at {point}"
        );
        env.cmd()
            .args(["verify", "--all", "--read-data"])
            .args(env.identity_args())
            .run_blocking()
            .expect_code(0);
        env.assert_no_plaintext_on_disk();
    }
    // The kill before the manifest left data objects: an orphan, not a snapshot.
    let snapshot_folders: std::collections::BTreeSet<PathBuf> = env
        .store_objects()
        .iter()
        .filter(|p| !p.ends_with("hubvault-store.json"))
        .map(|p| p.parent().unwrap().to_owned())
        .collect();
    assert_eq!(
        snapshot_folders.len(),
        2,
        "the committed snapshot and one orphan"
    );
    // A later backup still works.
    backup_ok(&env, &export);
    assert_eq!(env.snapshot_ids().len(), 2);
}

#[test]
fn two_backups_at_once_both_commit() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 200, true);
    let (a, b) =
        blocking(async { tokio::join!(env.backup(&export).run(), env.backup(&export).run()) });
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        a.stderr,
        b.stderr
    );
    let id = |o: &Out| {
        serde_json::from_str::<Value>(&o.stdout).unwrap()["snapshot"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(id(&a), id(&b));
    assert_eq!(env.snapshot_ids().len(), 2);
    env.cmd()
        .args(["verify", "--all", "--read-data"])
        .args(env.identity_args())
        .run_blocking()
        .expect_code(0);
}

#[test]
fn device_keys_never_reach_output_at_any_verbosity() {
    let env = Env::new();
    let (export, _) = standard_export(&env, 100, true);
    let mut outputs = Vec::new();
    let mut run = |c: Hubvault| {
        let out = c.run_blocking();
        outputs.push((out.stdout, out.stderr));
    };
    run(env.backup(&export).arg("-vvv"));
    run(env.cmd().args(["-vvv", "snapshots"]));
    run(env.cmd().args(["-vvv", "--json", "show", "latest"]));
    run(env
        .cmd()
        .args(["-vvv", "--json", "verify", "--all", "--read-data"])
        .args(env.identity_args()));
    run(env
        .cmd()
        .args(["-vvv", "--json", "dump", "latest", "--out"])
        .arg(env.path("r"))
        .args(env.identity_args()));
    assert!(
        outputs
            .iter()
            .any(|(_, err)| err.contains("TRACE") || err.contains("DEBUG") || err.contains("INFO")),
        "-vvv logs something"
    );
    for (out, err) in &outputs {
        assert!(
            !out.contains(KEY_MARKER) && !err.contains(KEY_MARKER),
            "a device key was printed:\n{out}\n{err}"
        );
        assert!(!err.contains("AGE-SECRET-KEY") && !out.contains("AGE-SECRET-KEY"));
    }
    assert!(
        std::fs::read_to_string(env.path("r/devices.txt"))
            .unwrap()
            .contains(KEY_MARKER),
        "the dump itself has the keys"
    );
}

// ---- golden snapshots (fixtures/golden, fixtures/golden-v2, see their READMEs) ----

/// Pinned when the fixture was made; never update these to make a failure go away.
const GOLDEN_V1_SHA256: &[(&str, &str)] = &[
    (
        "TEST-ONLY-identity.txt",
        "4966b8e3d5b5fc2e7c409ca56347039f398d2ad14a78e17c18647584cae50529",
    ),
    (
        "export/configurations.txt",
        "e3a0428789e1853d3b74b31c47be98bb55e60f1ddb00344972d8259e122a1824",
    ),
    (
        "export/devices.txt",
        "e3d50910dafd5b9f906cbc928ebc0c086e341c4fe0f3f606336806a1162fd28c",
    ),
    (
        "store/golden-hub/20261126T101135Z-47912ca9/configurations.jsonl.zst.age",
        "567fe918075c9ede4f28c40417560da032028ac0fdba48b550622ce211aee2c3",
    ),
    (
        "store/golden-hub/20261126T101135Z-47912ca9/devices.jsonl.zst.age",
        "59480d068d56e6e6e0b2c2c2e02b20a8dc6430321e7802f7d3825e91a2257e7a",
    ),
    (
        "store/golden-hub/20261126T101135Z-47912ca9/manifest.json",
        "9a1bca23b379b8e48dc8892e78c12af75630df75a591c5f6f09eee71a57bc896",
    ),
];

/// Pinned when the fixture was made (hubvault 0.2.0); never update these either.
const GOLDEN_V2_SHA256: &[(&str, &str)] = &[
    (
        "TEST-ONLY-identity.txt",
        "4966b8e3d5b5fc2e7c409ca56347039f398d2ad14a78e17c18647584cae50529",
    ),
    (
        "TEST-ONLY-signing-key.pem",
        "a05e0ce1fc0d9b2e46eded63b544321f36093f1bc474ba5e4657d23dad119762",
    ),
    (
        "export/configurations.txt",
        "e3a0428789e1853d3b74b31c47be98bb55e60f1ddb00344972d8259e122a1824",
    ),
    (
        "export/devices.txt",
        "e3d50910dafd5b9f906cbc928ebc0c086e341c4fe0f3f606336806a1162fd28c",
    ),
    (
        "store/golden-hub/20261206T072125Z-9889d1b7/configurations.g1.jsonl.zst.age",
        "05a31095a2d26009305069d9a2637cdd6b0f3fcf0e2e64cb4a831628ed617bd2",
    ),
    (
        "store/golden-hub/20261206T072125Z-9889d1b7/devices.g1.jsonl.zst.age",
        "4d5557694751aa2842d0a997d637fec23b8ea4bd43e2b2614b7f7bc76f8839e2",
    ),
    (
        "store/golden-hub/20261206T072125Z-9889d1b7/manifest.g1.json",
        "598e54dc5b885677bed8a0053f52582bf5750c85555240d18a1493515cb7e91c",
    ),
    (
        "store/golden-hub/20261206T072125Z-9889d1b7/signature.g1.json",
        "6587a1033fe63e444ed3f95d99498ef952e5a40cbeb55a15fc12e609555a227e",
    ),
    (
        "store/hubvault-store.json",
        "d9ef26a80649eadd2923ba39bd2c584c435c3c38af7d44c23d8c835498f15d2c",
    ),
];

/// The signer of the v2 fixture's `TEST-ONLY-signing-key.pem`.
const GOLDEN_V2_SIGNER: &str = "hvsig1r29ae2ezkrztkngxfguca2wshmtt6nzhxkfu7s0ywryelhnqecqswh73mz";

/// A golden fixture: its files are exactly the pinned ones, byte for byte.
fn golden_root(name: &str, pins: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut files: Vec<String> = Env::files(&root)
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .filter(|p| p != "README.md" && p != ".gitattributes")
        .collect();
    files.sort();
    let pinned: Vec<String> = pins.iter().map(|(p, _)| (*p).to_owned()).collect();
    assert_eq!(
        files, pinned,
        "the golden fixture's files changed; it must never be regenerated"
    );
    for (rel, sha) in pins {
        let bytes = std::fs::read(root.join(rel)).unwrap();
        assert_eq!(
            &sha256_hex(&bytes),
            sha,
            "{rel} changed; the golden fixture must never be regenerated"
        );
    }
    root
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The fixture's test-only identity, copied to a 0600 file (git does not keep modes).
fn golden_identity(env: &Env, root: &Path) -> PathBuf {
    let identity = env.path("golden-identity.txt");
    write_private(
        &identity,
        &std::fs::read_to_string(root.join("TEST-ONLY-identity.txt")).unwrap(),
    );
    identity
}

/// The records of the fixture's export as a snapshot holds them: sorted by (id, moduleId).
fn golden_records(root: &Path) -> Vec<String> {
    let source = std::fs::read_to_string(root.join("export/devices.txt")).unwrap();
    let mut want: Vec<String> = source
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(str::to_owned)
        .collect();
    want.sort_by_key(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["moduleId"].as_str().map(str::to_owned),
        )
    });
    want
}

/// The stock-tool recipe of docs/vault-format.md (`age -d -i ID OBJ | zstd -d`): the header line
/// and the records. Nobody is locked in to hubvault.
fn read_with_stock_tools(identity: &Path, object: &Path) -> (Value, Vec<String>) {
    let age = StdCommand::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(object)
        .output()
        .expect("the age CLI (scripts/test installs it)");
    assert!(
        age.status.success(),
        "{}",
        String::from_utf8_lossy(&age.stderr)
    );
    let mut zstd = StdCommand::new("zstd")
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd CLI (scripts/test installs it)");
    std::io::Write::write_all(&mut zstd.stdin.take().unwrap(), &age.stdout).unwrap();
    let plain = zstd.wait_with_output().unwrap();
    assert!(plain.status.success());
    let text = String::from_utf8(plain.stdout).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    (header, lines.map(str::to_owned).collect())
}

/// `hubvault --store <the fixture's store>`, run in the test's folder.
fn golden_cmd(env: &Env, root: &Path) -> Hubvault {
    Hubvault::new(env.wd.path())
        .arg("--store")
        .arg(root.join("store"))
}

#[test]
fn golden_v1_snapshot_opens_forever() {
    let root = golden_root("golden", GOLDEN_V1_SHA256);
    let env = Env::new();
    let identity = golden_identity(&env, &root);
    let golden = || golden_cmd(&env, &root);
    let dump = |args: &[&str]| {
        golden()
            .args(["--json", "dump"])
            .args(args)
            .arg("--out")
            .arg(env.path("golden-out"))
            .arg("--identity")
            .arg(&identity)
            .run_blocking()
    };
    // Format 1 has no signature: readers refuse it unless told, and say why.
    let out = golden()
        .args(["--json", "verify", "--all"])
        .run_blocking()
        .expect_code(1);
    assert_eq!(out.json()["snapshots"][0]["trust"], "unsigned");
    let out = dump(&["latest"]).expect_code(2);
    assert_eq!(out.json()["error"]["code"], "snapshot_no_trusted");
    let out = dump(&["20261126T101135Z-47912ca9"]).expect_code(2);
    assert_eq!(out.json()["error"]["code"], "snapshot_unsigned");
    assert!(!env.path("golden-out").exists());

    let out = golden()
        .args([
            "--json",
            "verify",
            "--all",
            "--read-data",
            "--allow-unsigned",
            "--identity",
        ])
        .arg(&identity)
        .run_blocking();
    assert!(out.status.success(), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(v["snapshots"][0]["trust"], "unsigned");
    let out = dump(&["latest", "--allow-unsigned"]).expect_code(0);
    assert!(
        out.stderr.contains("UNSIGNED") && out.stderr.contains("--allow-unsigned"),
        "said loudly: {}",
        out.stderr
    );
    let want = golden_records(&root);
    let got = std::fs::read_to_string(env.path("golden-out/devices.txt")).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);

    let object = root.join("store/golden-hub/20261126T101135Z-47912ca9/devices.jsonl.zst.age");
    let (header, records) = read_with_stock_tools(&identity, &object);
    assert_eq!(header["hubvault"], 1);
    assert_eq!(header["snapshot"], "20261126T101135Z-47912ca9");
    assert_eq!(header["object"], "devices");
    assert_eq!(records, want, "the records, verbatim");
}

#[test]
fn golden_v2_snapshot_opens_forever_and_its_signature_checks_with_openssl() {
    let root = golden_root("golden-v2", GOLDEN_V2_SHA256);
    let folder = root.join("store/golden-hub/20261206T072125Z-9889d1b7");
    let env = Env::new();
    let identity = golden_identity(&env, &root);
    let golden = || golden_cmd(&env, &root);
    // Signed, but not by a key this host trusts: refused, named.
    let out = golden()
        .args(["--json", "verify", "--all"])
        .run_blocking()
        .expect_code(1);
    let check = &out.json()["snapshots"][0];
    assert_eq!(check["trust"], "untrusted-signer", "{check}");
    assert_eq!(check["signer"], GOLDEN_V2_SIGNER);

    let out = golden()
        .args(["--json", "verify", "--all", "--read-data", "--identity"])
        .arg(&identity)
        .args(["--trusted-signer", GOLDEN_V2_SIGNER])
        .run_blocking()
        .expect_code(0);
    assert_eq!(out.json()["snapshots"][0]["trust"], "signed");
    golden()
        .args(["dump", "latest", "--out"])
        .arg(env.path("golden-out"))
        .arg("--identity")
        .arg(&identity)
        .env("HUBVAULT_TRUSTED_SIGNERS", GOLDEN_V2_SIGNER)
        .run_blocking()
        .expect_code(0);
    let want = golden_records(&root);
    let got = std::fs::read_to_string(env.path("golden-out/devices.txt")).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);

    let (header, records) =
        read_with_stock_tools(&identity, &folder.join("devices.g1.jsonl.zst.age"));
    assert_eq!(
        header,
        serde_json::json!({"hubvault": 2, "snapshot": "20261206T072125Z-9889d1b7", "hub": "golden-hub",
                           "object": "devices", "created": "2026-12-06T07:21:25Z", "generation": 1})
    );
    assert_eq!(records, want, "the records, verbatim");

    // The signature recipe of docs/vault-format.md, with openssl alone: the trusted key's PEM
    // comes from the signing key (never from the signature object), the signature from the
    // signature object, the message is the manifest's bytes.
    let recipe = r#"set -eu
openssl pkey -in "$KEY" -pubout > trusted-signer.pem
jq -r .signature "$DIR/signature.g1.json" | base64 -d > manifest.sig
openssl pkeyutl -verify -pubin -inkey trusted-signer.pem -rawin -in "$DIR/manifest.g1.json" -sigfile manifest.sig
"#;
    let run_recipe = |dir: &Path| {
        StdCommand::new("sh")
            .args(["-c", recipe])
            .current_dir(env.path("tmp"))
            .env("KEY", root.join("TEST-ONLY-signing-key.pem"))
            .env("DIR", dir)
            .output()
            .expect("sh, openssl, jq, base64 (scripts/test installs them)")
    };
    let checked = run_recipe(&folder);
    assert!(
        checked.status.success()
            && String::from_utf8_lossy(&checked.stdout).contains("Signature Verified Successfully"),
        "{} {}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // The same recipe on an edited manifest fails.
    let edited = env.path("edited");
    std::fs::create_dir_all(&edited).unwrap();
    std::fs::copy(
        folder.join("signature.g1.json"),
        edited.join("signature.g1.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(folder.join("manifest.g1.json")).unwrap();
    std::fs::write(
        edited.join("manifest.g1.json"),
        text.replace("\"devices\": 4", "\"devices\": 5"),
    )
    .unwrap();
    assert!(
        !run_recipe(&edited).status.success(),
        "an edited manifest verifies"
    );
}

/// Pinned when the DPS fixture was made (vault format 2's DPS objects); never update these.
const GOLDEN_DPS_SHA256: &[(&str, &str)] = &[
    (
        "TEST-ONLY-identity.txt",
        "4966b8e3d5b5fc2e7c409ca56347039f398d2ad14a78e17c18647584cae50529",
    ),
    (
        "TEST-ONLY-signing-key.pem",
        "a05e0ce1fc0d9b2e46eded63b544321f36093f1bc474ba5e4657d23dad119762",
    ),
    (
        "expected/enrollment-groups.jsonl",
        "0b4864ddbb4cdf3e965d55a55f61a6809ab1de31a641d16c48d5653ed663c7a6",
    ),
    (
        "expected/enrollments.jsonl",
        "6effe701627e7dab8cec9bcd2e3ca644c98be70a9ae7d7f8ee232ff0e8cdb7c6",
    ),
    (
        "store/dps-golden.azure-devices-provisioning.net/20261206T113642Z-1b88142e/enrollment-groups.g1.jsonl.zst.age",
        "b708be8fa416fb670e775952ddbd3d074c7e0959a3b7c425c5fb476c6f7deced",
    ),
    (
        "store/dps-golden.azure-devices-provisioning.net/20261206T113642Z-1b88142e/enrollments.g1.jsonl.zst.age",
        "77949f7fa2c73edbf16d1c2b889d1f401e81b54aeb6beaeec333bd181a51fa0c",
    ),
    (
        "store/dps-golden.azure-devices-provisioning.net/20261206T113642Z-1b88142e/manifest.g1.json",
        "fc6a7efa91e5f5dcda40f89b60c4b29b85f7649d11b12598bb34c4efa7914768",
    ),
    (
        "store/dps-golden.azure-devices-provisioning.net/20261206T113642Z-1b88142e/signature.g1.json",
        "21c3263ea76cb7033edec5930e2bdb2941d776b802bb584ab7fdd9970e91a430",
    ),
    (
        "store/hubvault-store.json",
        "01dd6f36159b0eedeff5dd3554cb083bbc3ff570577ebf7b3b75722fc927e827",
    ),
];

/// The DPS golden snapshot (fixtures/golden-dps): verifies with --read-data, dumps and decrypts
/// with stock tools to exactly its committed records (keys from `attestationmechanism`, TPM and
/// X.509 as DPS returned them, groups with custom allocation), and restores into a live DPS
/// whose enrollments then hold those very keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_dps_snapshot_opens_forever_and_restores_its_keys() {
    const HOST: &str = "dps-golden.azure-devices-provisioning.net";
    let root = golden_root("golden-dps", GOLDEN_DPS_SHA256);
    let folder = root.join(format!("store/{HOST}/20261206T113642Z-1b88142e"));
    let env = Env::new();
    let identity = golden_identity(&env, &root);
    let golden = || golden_cmd(&env, &root).env("HUBVAULT_TRUSTED_SIGNERS", GOLDEN_V2_SIGNER);
    let out = golden()
        .args(["--json", "verify", "--all", "--read-data", "--identity"])
        .arg(&identity)
        .run()
        .await
        .expect_code(0);
    assert_eq!(
        out.json()["snapshots"][0]["trust"],
        "signed",
        "{}",
        out.text()
    );
    golden()
        .args(["dump", "latest", "--dps", HOST, "--out"])
        .arg(env.path("golden-dps-out"))
        .arg("--identity")
        .arg(&identity)
        .run()
        .await
        .expect_code(0);
    for object in ["enrollments", "enrollment-groups"] {
        let want = std::fs::read_to_string(root.join(format!("expected/{object}.jsonl"))).unwrap();
        let want: Vec<String> = want.lines().map(str::to_owned).collect();
        let got =
            std::fs::read_to_string(env.path(&format!("golden-dps-out/{object}.txt"))).unwrap();
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{object}");
        let (header, records) = read_with_stock_tools(
            &identity,
            &folder.join(format!("{object}.g1.jsonl.zst.age")),
        );
        assert_eq!(
            header,
            serde_json::json!({"hubvault": 2, "snapshot": "20261206T113642Z-1b88142e", "hub": HOST,
                               "object": object, "created": "2026-12-06T11:36:42Z", "generation": 1})
        );
        assert_eq!(records, want, "{object}: the records, verbatim");
    }

    restores_into_a_live_dps(&env, &root, &identity).await;
}

/// The golden DPS snapshot restored into a live (simulated) DPS from a copy of the store: every
/// enrollment back with the keys the snapshot holds.
async fn restores_into_a_live_dps(env: &Env, root: &Path, identity: &Path) {
    const HOST: &str = "dps-golden.azure-devices-provisioning.net";
    let world = crate::support::World::builder()
        .hubs(&[("hub-a", 0), ("hub-b", 0)])
        .arm(false)
        .dps("dps-target")
        .start()
        .await;
    let store = env.path("golden-dps-store");
    for file in Env::files(&root.join("store")) {
        let to = store.join(file.strip_prefix(root.join("store")).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    let d = world.running.dps_instance("dps-target").unwrap();
    let p = &d.state.policies[0];
    let config = format!(
        "store = {}\n[dps.dps-target]\nconnection-string = {}\nendpoint = {}\n",
        toml::Value::String(store.display().to_string()),
        toml::Value::String(format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            d.state.host, p.name, p.primary_key
        )),
        toml::Value::String(d.endpoint.clone()),
    );
    std::fs::write(env.path("golden-dps.toml"), config).unwrap();
    let out = Hubvault::new(env.wd.path())
        .arg("--config")
        .arg(env.path("golden-dps.toml"))
        .args([
            "--json",
            "restore",
            "latest",
            "--dps",
            HOST,
            "--to-dps",
            "dps-target",
        ])
        .args(["--mode", "create", "--identity"])
        .arg(identity)
        .env("HUBVAULT_TRUSTED_SIGNERS", GOLDEN_V2_SIGNER)
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    let want = std::fs::read_to_string(root.join("expected/enrollments.jsonl")).unwrap();
    let live = d.state.enrollments();
    for line in want.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let held = live
            .iter()
            .find(|e| e["registrationId"] == record["id"])
            .unwrap_or_else(|| panic!("{} not restored", record["id"]));
        if record["attestation"]["type"] == "symmetricKey" {
            assert_eq!(
                held["attestation"]["symmetricKey"], record["attestation"]["symmetricKey"],
                "{}",
                record["id"]
            );
        } else {
            assert_eq!(
                held["attestation"], record["attestation"],
                "{}",
                record["id"]
            );
        }
    }
    assert_eq!(d.state.enrollment_groups().len(), 2);
}
