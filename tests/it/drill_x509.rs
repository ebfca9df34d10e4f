//! `hubvault drill --x509-cert`: X.509 devices probed with their own certificates, made with the
//! `openssl` CLI as a user makes them, against the simulator over TLS, which authenticates a
//! device by the certificate its TLS handshake presents (docs/simulator.md). The simulator's
//! message counts are the truth for which devices got through.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::drill::Fixture;
use crate::support::{assert_no_secrets, azurite};

/// A self-signed device certificate made by `openssl req -x509`.
struct DeviceCert {
    /// The certificate (with the key in `<stem>.key` beside it, or inside it when `combined`).
    file: PathBuf,
    sha1: String,
    sha256: String,
    /// The private key's base64 lines: never to be shown.
    key_lines: Vec<String>,
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `openssl x509 -fingerprint`: `… Fingerprint=AB:CD:…` as bare upper-case hex.
fn fingerprint(cert: &Path, digest: &str) -> String {
    let out = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        digest,
    ]);
    out.trim()
        .split_once('=')
        .unwrap()
        .1
        .replace(':', "")
        .to_uppercase()
}

/// `cn`'s certificate in `dir`: EC P-256 or RSA, the key beside it or in the same file.
fn make_cert(dir: &Path, cn: &str, rsa: bool, combined: bool) -> DeviceCert {
    let crt = dir.join(format!("{cn}.crt"));
    let key = dir.join(format!("{cn}.key"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj"];
    let subject = format!("/CN={cn}");
    args.push(&subject);
    if rsa {
        args.extend(["-newkey", "rsa:2048"]);
    } else {
        args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    }
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ]);
    openssl(&args);
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_lines = key_text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_owned)
        .collect();
    let file = if combined {
        let pem = dir.join(format!("{cn}.pem"));
        let cert_text = std::fs::read_to_string(&crt).unwrap();
        std::fs::write(&pem, format!("{cert_text}{key_text}")).unwrap();
        std::fs::remove_file(&key).unwrap();
        pem
    } else {
        crt.clone()
    };
    DeviceCert {
        sha1: fingerprint(&crt, "-sha1"),
        sha256: fingerprint(&crt, "-sha256"),
        file,
        key_lines,
    }
}

/// An enabled device of `auth`, as an export line.
fn device(id: &str, auth: &Value) -> Value {
    json!({"id": id, "eTag": "MQ==", "status": "enabled", "authentication": auth,
           "capabilities": {"iotEdge": false}})
}

fn self_signed(primary: &str, secondary: Option<&str>) -> Value {
    json!({"type": "selfSigned", "symmetricKey": {"primaryKey": null, "secondaryKey": null},
           "x509Thumbprint": {"primaryThumbprint": primary, "secondaryThumbprint": secondary}})
}

fn x509_of(doc: &Value) -> &Value {
    &doc["probe"]["by_kind"]["x509"]
}

/// The x509 kind's device entries by id (or certificate label).
fn tried(doc: &Value) -> Vec<(String, Value)> {
    x509_of(doc)["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// hub-a with 30 seeded devices plus cam-a (its SHA-1 thumbprint), cam-b (its SHA-256 as the
/// secondary, lower case) and cam-ca (X.509 CA), in a snapshot; hub-drill empty; over TLS.
async fn fixture(cs: &str, dir: &Path, tag: &str) -> (Fixture, DeviceCert, DeviceCert) {
    let a = make_cert(dir, "cam-a", false, false);
    let b = make_cert(dir, "cam-b", true, true);
    let world = Fixture::world(30, &["hub-drill"]).tls(true).start().await;
    world
        .load(
            "hub-a",
            &[
                device("cam-a", &self_signed(&a.sha1, None)),
                device(
                    "cam-b",
                    &self_signed(
                        "0000000000000000000000000000000000000000",
                        Some(&b.sha256.to_lowercase()),
                    ),
                ),
                device(
                    "cam-ca",
                    &json!({"type": "certificateAuthority",
                    "symmetricKey": {"primaryKey": null, "secondaryKey": null},
                    "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null}}),
                ),
            ],
        )
        .await;
    (Fixture::over(world, cs, tag).await, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_probes_x509_devices_with_their_own_certificates() {
    let Some(cs) = azurite() else { return };
    let certs = tempfile::tempdir().unwrap();
    let (f, a, b) = fixture(&cs, certs.path(), "drill-x509").await;
    let report = f.wd.join("drill.html");
    // At trace level: the private keys must not reach any log line either.
    f.wd.set_env("HUBVAULT_LOG", "trace");
    let out = f
        .run(&[
            "-vvv",
            "--json",
            "drill",
            "latest",
            "--to",
            "hub-drill",
            "--x509-cert",
            a.file.to_str().unwrap(),
            "--x509-cert",
            b.file.to_str().unwrap(),
            "--cleanup",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("TRACE"), "traced");
    let doc = out.doc();
    assert_eq!(doc["verdict"], "passed", "{doc:#}");
    let x509 = x509_of(&doc);
    assert_eq!(
        (x509["tried"].as_u64(), x509["accepted"].as_u64()),
        (Some(2), Some(2)),
        "{x509}"
    );
    let ids: Vec<String> = tried(&doc).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["cam-a", "cam-b"]);
    // The hub counted one message from each, sent with nothing but the certificate.
    let counted = f.world.messages("hub-drill").await;
    assert_eq!(
        (counted.get("cam-a"), counted.get("cam-b")),
        (Some(&1), Some(&1))
    );
    assert_eq!(counted.get("cam-ca"), None);
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(
        page.contains("cam-b"),
        "the report names the X.509 devices probed"
    );
    let mut keys = a.key_lines.clone();
    keys.extend(b.key_lines.iter().cloned());
    for (text, what) in [
        (&out.stdout, "stdout"),
        (&out.stderr, "stderr"),
        (&page, "report"),
    ] {
        assert_no_secrets(text, &keys, what);
    }

    wrong_certificates_fail_the_drill(&f, certs.path(), &b).await;
}

/// The wrong certificate named for a device, one that is no device's, a CA device: each a
/// failed try with its reason; the drill fails and cam-a sent nothing more.
async fn wrong_certificates_fail_the_drill(f: &Fixture, dir: &Path, b: &DeviceCert) {
    let stray = make_cert(dir, "stray", false, true);
    let wrong = format!("cam-a={}", b.file.display());
    let ca = format!("cam-ca={}", stray.file.display());
    let out = f
        .drill(&[
            "--to",
            "hub-drill",
            "--x509-cert",
            stray.file.to_str().unwrap(),
            "--x509-cert",
            &wrong,
            "--x509-cert",
            &ca,
            "--cleanup",
        ])
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let doc = out.doc();
    assert_eq!(doc["verdict"], "failed");
    let tried = tried(&doc);
    let entry = |id: &str| {
        tried
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("{id} in {tried:?}"))
            .1
            .clone()
    };
    assert_eq!(
        entry("cam-a")["status"],
        401,
        "a certificate that is not cam-a's"
    );
    assert_eq!(entry("cam-a")["accepted"], false);
    let no_device = entry(stray.file.to_str().unwrap());
    assert!(
        no_device["error"]
            .as_str()
            .unwrap()
            .contains("is no device's in the snapshot"),
        "{no_device}"
    );
    assert!(
        entry(&ca)["error"].as_str().unwrap().contains("X.509 CA"),
        "{tried:?}"
    );
    assert_eq!(f.world.messages("hub-drill").await.get("cam-a"), Some(&1));
    // In words: the X.509 kind's count, and why each try failed.
    let human = f
        .run(&[
            "drill",
            "latest",
            "--to",
            "hub-drill",
            "--x509-cert",
            &wrong,
            "--cleanup",
        ])
        .await;
    assert_eq!(human.code, 1, "{}", human.stderr);
    assert!(
        human.stdout.contains("x509   0 of 1 accepted"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("cam-a refused by the hub: HTTP 401"),
        "{}",
        human.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificates_are_refused_before_the_drill_changes_anything() {
    let Some(cs) = azurite() else { return };
    let certs = tempfile::tempdir().unwrap();
    let (f, a, _) = fixture(&cs, certs.path(), "drill-x509-refused").await;
    let lonely = certs.path().join("lonely.crt");
    std::fs::copy(&a.file, &lonely).unwrap();
    let missing = format!("cam-a={}", certs.path().join("nope.pem").display());
    for (spec, says) in [
        (missing.as_str(), "cannot read"),
        (lonely.to_str().unwrap(), "holds no private key"),
    ] {
        let out = f.drill(&["--to", "hub-drill", "--x509-cert", spec]).await;
        assert_eq!(out.code, 2, "{spec}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{spec}: {}", out.stderr);
        assert!(
            out.stderr.contains("--x509-cert [DEVICE=]FILE"),
            "{}",
            out.stderr
        );
    }
    assert!(f.world.registry("hub-drill").await.is_empty());
    assert!(f.world.jobs("hub-drill").await.is_empty());

    // Over plain HTTP no certificate can be presented: refused, nothing changed.
    let plain = Fixture::over(
        Fixture::world(5, &["hub-drill"]).start().await,
        &cs,
        "drill-x509-http",
    )
    .await;
    let out = plain
        .drill(&["--to", "hub-drill", "--x509-cert", a.file.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not over https"), "{}", out.stderr);
    assert!(plain.world.registry("hub-drill").await.is_empty());
}
