//! Keys the way a security team runs them, through the real binary: `key rotate` re-seals
//! history to a new recipient set as new signed generations (killed at each named step, then run
//! again: nothing lost, nothing half-rotated), never re-seals what no trusted signer vouches for
//! or what it cannot open, and `snapshots --recipients` shows and warns about the sets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::ExposeSecret as _;
use serde_json::Value;

use crate::support::{Out, Workdir, write_private};

/// A store of `count` snapshots of hub-a sealed to the work folder's identity.
struct History {
    wd: Workdir,
    old: String,
    ids: Vec<String>,
}

fn export() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/exports/full")
}

impl History {
    async fn new(count: usize) -> History {
        let wd = Workdir::new();
        let old = wd.write_identity();
        std::fs::write(
            wd.config_path(),
            "store = \"store\"\nidentity = \"identity.txt\"\n",
        )
        .unwrap();
        let mut ids = Vec::new();
        for _ in 0..count {
            let doc = wd
                .hubvault()
                .args([
                    "--json",
                    "backup",
                    "--hub-name",
                    "hub-a",
                    "--recipient",
                    &old,
                ])
                .arg("--from-export")
                .arg(export())
                .run()
                .await
                .expect_code(0)
                .json();
            ids.push(doc["snapshot"].as_str().unwrap().to_owned());
        }
        History { wd, old, ids }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.wd.hubvault().args(args).run().await
    }

    /// `key rotate --to RECIPIENT` that must exit 0: its document.
    async fn rotate_to(&self, recipient: &str) -> Value {
        self.run(&["--json", "key", "rotate", "--to", recipient])
            .await
            .expect_code(0)
            .json()
    }

    /// A new identity file at `name` (0600); returns its recipient.
    fn new_identity(&self, name: &str) -> (PathBuf, String) {
        let id = age::x25519::Identity::generate();
        let path = self.wd.join(name);
        write_private(&path, &format!("{}\n", id.to_string().expose_secret()));
        (path, id.to_public().to_string())
    }

    /// Every snapshot's records, decrypted with `identity` (file names → contents).
    async fn dump_all(&self, identity: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for id in &self.ids {
            let dir = self.wd.join(&format!("dump-{}", rand_suffix()));
            self.wd
                .hubvault()
                .args(["dump", id, "--out"])
                .arg(&dir)
                .arg("--identity")
                .arg(identity)
                .run()
                .await
                .expect_code(0);
            for f in ["devices.txt", "configurations.txt"] {
                out.push((format!("{id}/{f}"), std::fs::read(dir.join(f)).unwrap()));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        out
    }

    /// `verify --all --read-data` with `identity`: its exit code and document.
    async fn verify(&self, identity: &Path) -> (i32, Value) {
        let out = self
            .wd
            .hubvault()
            .args(["--json", "verify", "--all", "--read-data", "--identity"])
            .arg(identity)
            .run()
            .await;
        (out.code, out.json())
    }
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The whole story the issue asks for: 20 snapshots rotated to a new set, the rotation killed
/// at each named step in turn and run again; at every point each snapshot opens with the old or
/// the new identity (never neither), and at the end every one opens with the new identity only,
/// `verify --all --read-data` passes, and every record is what it was.
#[tokio::test]
async fn a_rotation_killed_at_each_step_and_run_again_loses_nothing() {
    let h = History::new(20).await;
    let before = h.dump_all(&h.wd.identity()).await;
    let (new_path, new) = h.new_identity("new-identity.txt");
    let both = h.wd.join("both.txt");
    write_private(
        &both,
        &format!(
            "{}{}",
            std::fs::read_to_string(h.wd.identity()).unwrap(),
            std::fs::read_to_string(&new_path).unwrap()
        ),
    );

    for point in [
        "after-objects",
        "after-signature",
        "after-manifest",
        "after-cleanup",
    ] {
        let mut child =
            h.wd.hubvault()
                .args(["key", "rotate", "--to", &new])
                .env("HUBVAULT_FAULT_PAUSE", point)
                .spawn();
        assert!(
            child
                .wait_for_stderr(
                    &format!("HUBVAULT_FAULT_PAUSE: paused at {point}"),
                    Duration::from_secs(120)
                )
                .await,
            "no pause at {point}"
        );
        child.kill().await;
        // Never half-rotated: every snapshot opens with one of the two sets.
        let (code, doc) = h.verify(&both).await;
        assert_eq!(code, 0, "killed {point}: {doc:#}");
        let listed = h.run(&["--json", "snapshots"]).await.expect_code(0).json();
        assert_eq!(
            listed.as_array().unwrap().len(),
            20,
            "killed {point}: {listed}"
        );
    }

    let doc = h.rotate_to(&new).await;
    assert!(doc["untrusted"].as_array().unwrap().is_empty(), "{doc:#}");
    assert!(doc["not_opened"].as_array().unwrap().is_empty(), "{doc:#}");
    let resealed = doc["resealed"].as_array().unwrap().len();
    let already = doc["already"].as_array().unwrap().len();
    assert_eq!(resealed + already, 20, "{doc:#}");
    assert!(already >= 2, "the killed runs committed some: {doc:#}");

    let (code, report) = h.verify(&new_path).await;
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = h.verify(&h.wd.identity()).await;
    assert_eq!(
        code, 2,
        "the old identity opens nothing any more: {report:#}"
    );
    assert_eq!(report["error"]["code"], "wrong_identity", "{report:#}");
    assert_eq!(h.dump_all(&new_path).await, before, "every record kept");

    // Only the new generation is left in each folder, one generation per snapshot.
    for id in &h.ids {
        let dir = h.wd.store().join("hub-a").join(id);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let g = names[0]
            .split('.')
            .nth(1)
            .unwrap()
            .trim_start_matches('g')
            .to_owned();
        assert_eq!(
            names,
            vec![
                format!("configurations.g{g}.jsonl.zst.age"),
                format!("devices.g{g}.jsonl.zst.age"),
                format!("manifest.g{g}.json"),
                format!("signature.g{g}.json"),
            ],
            "{id}"
        );
    }
    // A run with nothing left to do changes nothing.
    let again = h.rotate_to(&new).await;
    assert_eq!(again["already"].as_array().unwrap().len(), 20, "{again:#}");
    assert_eq!(again["removed_objects"], 0, "{again:#}");
}

/// Rotation never launders a snapshot: one written by another signer (a forger with write access
/// to the store) is left exactly as it is, and the run says so with exit 1.
#[tokio::test]
async fn rotation_never_signs_a_snapshot_no_trusted_signer_wrote() {
    let h = History::new(1).await;
    // The forger: the same public recipient, another signing key.
    let forger = Workdir::bare();
    let forger_key = forger.join("forger.pem");
    hubvault::keys::SigningKey::create(&forger_key).unwrap();
    let backup = forger
        .hubvault()
        .args([
            "--json",
            "backup",
            "--hub-name",
            "hub-a",
            "--recipient",
            &h.old,
        ])
        .arg("--store")
        .arg(h.wd.store())
        .arg("--signing-key")
        .arg(&forger_key)
        .arg("--from-export")
        .arg(export())
        .run()
        .await
        .expect_code(0)
        .json();
    let forged_id = backup["snapshot"].as_str().unwrap().to_owned();
    let folder = h.wd.store().join("hub-a").join(&forged_id);
    let before: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let (_, new) = h.new_identity("new.txt");
    let out = h.run(&["--json", "key", "rotate", "--to", &new]).await;
    assert_eq!(out.code, 1, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["resealed"].as_array().unwrap().len(), 1, "{doc:#}");
    let untrusted = doc["untrusted"].as_array().unwrap();
    assert_eq!(untrusted.len(), 1, "{doc:#}");
    assert_eq!(untrusted[0]["id"], forged_id.as_str());
    assert!(
        untrusted[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not trusted")
            || untrusted[0]["reason"]
                .as_str()
                .unwrap()
                .contains("untrusted"),
        "{doc:#}"
    );
    let after: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the forged snapshot is untouched");
    assert!(out.stderr.contains(&forged_id), "{}", out.stderr);
}

/// A snapshot the given identity cannot open is named and left sealed as it is (still readable
/// with its own key); the rest are rotated; exit 1 says the job is not complete.
#[tokio::test]
async fn a_snapshot_the_identity_cannot_open_is_named_and_left_as_it_is() {
    let h = History::new(1).await;
    // A second snapshot sealed to a key this host does not hold (a config that names no
    // identity, so the backup adds none of its own).
    let bare_config = h.wd.join("no-identity.toml");
    std::fs::write(&bare_config, "store = \"store\"\n").unwrap();
    let stranger = age::x25519::Identity::generate();
    let stranger_path = h.wd.join("stranger.txt");
    write_private(
        &stranger_path,
        &format!("{}\n", stranger.to_string().expose_secret()),
    );
    let other =
        h.wd.hubvault()
            .arg("--config")
            .arg(&bare_config)
            .args(["--json", "backup", "--hub-name", "hub-a", "--recipient"])
            .arg(stranger.to_public().to_string())
            .arg("--from-export")
            .arg(export())
            .run()
            .await
            .expect_code(0)
            .json();
    let other_id = other["snapshot"].as_str().unwrap().to_owned();

    let (new_path, new) = h.new_identity("new.txt");
    let out = h.run(&["--json", "key", "rotate", "--to", &new]).await;
    assert_eq!(out.code, 1, "{}", out.text());
    let doc = out.json();
    let not_opened = doc["not_opened"].as_array().unwrap();
    assert_eq!(not_opened.len(), 1, "{doc:#}");
    assert_eq!(not_opened[0]["id"], other_id.as_str());
    assert!(
        not_opened[0]["reason"]
            .as_str()
            .unwrap()
            .contains("none of the given identities"),
        "{doc:#}"
    );
    assert_eq!(doc["resealed"].as_array().unwrap().len(), 1, "{doc:#}");
    // Still whole, still sealed to its own key; nothing of a new generation left behind.
    let names: Vec<String> = std::fs::read_dir(h.wd.store().join("hub-a").join(&other_id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.contains(".g1.")), "{names:?}");
    h.wd.hubvault()
        .args(["verify", &other_id, "--read-data", "--identity"])
        .arg(&stranger_path)
        .run()
        .await
        .expect_code(0);
    h.wd.hubvault()
        .args(["verify", &h.ids[0], "--read-data", "--identity"])
        .arg(&new_path)
        .run()
        .await
        .expect_code(0);
}

/// A dry run says what it would re-seal and changes nothing; `snapshots --recipients` shows each
/// snapshot's set and warns about every snapshot sealed to another set than the configured one.
#[tokio::test]
async fn a_dry_run_changes_nothing_and_snapshots_show_and_warn_about_recipient_sets() {
    let h = History::new(2).await;
    let (_, escrow) = h.new_identity("escrow.txt");
    let files = |h: &History| {
        let mut all: Vec<String> = walk(&h.wd.store());
        all.sort();
        all
    };
    let before = files(&h);
    let doc = h
        .run(&[
            "--json",
            "key",
            "rotate",
            "--dry-run",
            "--to",
            &h.old,
            "--to",
            &escrow,
        ])
        .await
        .expect_code(0)
        .json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["resealed"].as_array().unwrap().len(), 2, "{doc:#}");
    assert_eq!(files(&h), before, "a dry run writes nothing");

    // The configured set now includes the escrow key: both snapshots are warned about.
    std::fs::write(
        h.wd.config_path(),
        format!(
            "store = \"store\"\nidentity = \"identity.txt\"\nrecipients = [\"{}\", \"{escrow}\"]\n",
            h.old
        ),
    )
    .unwrap();
    let out = h.run(&["snapshots", "--recipients"]).await.expect_code(0);
    assert!(
        out.stdout.contains(&format!("sealed to {}", h.old)),
        "{}",
        out.stdout
    );
    let warned = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: snapshot hub-a/") && l.contains("key rotate"))
        .count();
    assert_eq!(warned, 2, "{}", out.stderr);
    let listed = h.run(&["--json", "snapshots"]).await.expect_code(0).json();
    assert_eq!(
        listed[0]["recipients"],
        serde_json::json!([h.old]),
        "{listed}"
    );

    // Rotating to the configured set (no --to) seals both to old + escrow; the warnings stop.
    h.run(&["key", "rotate"]).await.expect_code(0);
    let out = h.run(&["snapshots", "--recipients"]).await.expect_code(0);
    assert!(!out.stderr.contains("warning: snapshot"), "{}", out.stderr);
    assert_eq!(out.stdout.matches(&escrow).count(), 2, "{}", out.stdout);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
