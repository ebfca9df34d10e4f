//! Signed snapshots through the real binary: the review's forgery (a one-record snapshot built
//! from public data with the stock `age` and `zstd` tools) and its variants are refused by every
//! reader, cannot become `latest`, and cannot reach a hub; a restore host trusts the signers it
//! is told to; a backup without a signing key stores nothing; a backup killed between its
//! signature and its manifest leaves only an orphan.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::Digest as _;

use hubvault::keys::SigningKey;
use hubvault::snapshot::signature::SignatureObject;

use crate::support::{Out, Workdir, World};

/// The attacker's device: in the forged snapshot, not on any hub.
const PLANTED: &str = "attacker-device";

/// A hub-a with devices, an empty hub-b, and a work folder whose config names both, with an
/// identity and a signing key.
struct Setup {
    world: World,
    wd: Workdir,
    recipient: String,
}

impl Setup {
    async fn new() -> Setup {
        let world = World::builder()
            .hubs(&[("hub-a", 5), ("hub-b", 0)])
            .arm(false)
            .start()
            .await;
        let wd = Workdir::new();
        let recipient = wd.write_identity();
        wd.config(&world).write();
        Setup {
            world,
            wd,
            recipient,
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.wd.hubvault().args(args).run().await
    }

    /// `backup --from-export EXPORT` as hub-a's, run in `wd`.
    fn backup_cmd(&self, wd: &Workdir, export: &Path) -> crate::support::Hubvault {
        wd.hubvault()
            .args(["--json", "backup", "--hub-name", "hub-a", "--recipient"])
            .arg(&self.recipient)
            .arg("--from-export")
            .arg(export)
    }

    /// A real snapshot of hub-a (its export, sealed and signed here); its id.
    async fn backup(&self) -> String {
        let export = self.wd.join("export");
        self.world.write_export("hub-a", &export).await;
        let out = self.backup_cmd(&self.wd, &export).run().await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        std::fs::remove_dir_all(&export).unwrap();
        out.json()["snapshot"].as_str().unwrap().to_owned()
    }

    fn folder(&self, id: &str) -> PathBuf {
        self.wd.store().join("hub-a").join(id)
    }
}

/// How the forger signs (or does not).
#[derive(Clone, Copy, Debug)]
enum Forgery {
    /// Format 2, no signature object.
    Unsigned,
    /// Format 2, the signature object of a real snapshot copied beside it.
    CopiedSignature,
    /// Format 2, signed by the forger's own key.
    OwnKey,
    /// Format 1 (`manifest.json`), which has no signature at all.
    FormatOne,
}

/// Plant a forged snapshot of hub-a, newer than everything, from public data only: the real
/// manifest's recipients, the stock `zstd` and `age` CLIs, one device. Its id.
fn forge(setup: &Setup, real: &str, how: Forgery, n: u32) -> String {
    let real_manifest: Value = serde_json::from_slice(
        &std::fs::read(setup.folder(real).join("manifest.g1.json")).unwrap(),
    )
    .unwrap();
    let id = format!("20991231T2359{n:02}Z-0000000{n}");
    let created = format!("2099-12-31T23:59:{n:02}Z");
    let v1 = matches!(how, Forgery::FormatOne);
    let (format, generation) = if v1 { (1, None) } else { (2, Some(1)) };
    let mut header = json!({"hubvault": format, "snapshot": id, "hub": "hub-a",
                            "object": "devices", "created": created});
    if let Some(g) = generation {
        header["generation"] = g.into();
    }
    let record = json!({"id": PLANTED, "status": "enabled", "authentication": {"type": "sas",
        "symmetricKey": {"primaryKey": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
                         "secondaryKey": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="}},
        "capabilities": {"iotEdge": false}});
    let plain = format!("{header}\n{record}\n");
    let compressed = pipe("zstd", &["-q", "-c"], plain.as_bytes());
    let recipient = real_manifest["recipients"][0].as_str().unwrap();
    let sealed = pipe("age", &["-r", recipient], &compressed);
    let folder = setup.folder(&id);
    std::fs::create_dir_all(&folder).unwrap();
    let object = if v1 {
        "devices.jsonl.zst.age"
    } else {
        "devices.g1.jsonl.zst.age"
    };
    std::fs::write(folder.join(object), &sealed).unwrap();
    let forger = SigningKey::generate().unwrap();
    let signer = match how {
        Forgery::OwnKey => forger.signer().to_string(),
        _ => real_manifest["signer"].as_str().unwrap().to_owned(),
    };
    let mut manifest = json!({
        "format": format, "id": id, "hub": "hub-a", "created": created,
        "source": {"kind": "file"},
        "counts": {"devices": 1, "modules": 0, "edge_devices": 0, "configurations": 0, "skipped_lines": 0},
        "objects": [{"name": object, "kind": "devices", "bytes": sealed.len(),
                     "sha256": hex(&sha2::Sha256::digest(&sealed)), "records": 1}],
        "recipients": real_manifest["recipients"], "tool": "hubvault 0.2.0",
    });
    if !v1 {
        manifest["generation"] = 1.into();
        manifest["signer"] = signer.into();
    }
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    match how {
        Forgery::Unsigned | Forgery::FormatOne => {}
        Forgery::CopiedSignature => {
            std::fs::copy(
                setup.folder(real).join("signature.g1.json"),
                folder.join("signature.g1.json"),
            )
            .unwrap();
        }
        Forgery::OwnKey => {
            let sig = SignatureObject::sign(&bytes, "manifest.g1.json", &forger);
            std::fs::write(folder.join("signature.g1.json"), sig.to_bytes()).unwrap();
        }
    }
    let name = if v1 {
        "manifest.json"
    } else {
        "manifest.g1.json"
    };
    std::fs::write(folder.join(name), bytes).unwrap();
    id
}

/// The device and module ids a simulated hub holds.
async fn ids_on(setup: &Setup, hub: &str) -> Vec<String> {
    let registry = setup.world.registry(hub).await;
    registry
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = StdCommand::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (scripts/test installs it): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{program} failed");
    out.stdout
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The review's forgery and its variants (no signature, a copied one, the forger's own key, a
/// format 1 snapshot): `snapshots` flags them, `verify` fails them even with readable data,
/// `dump`, `diff` and `restore` refuse them, and `restore latest` restores the real snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_snapshots_are_refused_everywhere_and_never_become_latest() {
    let setup = Setup::new().await;
    let real = setup.backup().await;
    let forgeries = [
        (Forgery::Unsigned, "bad-signature", "snapshot_untrusted"),
        (
            Forgery::CopiedSignature,
            "bad-signature",
            "snapshot_untrusted",
        ),
        (Forgery::OwnKey, "untrusted-signer", "snapshot_untrusted"),
        (Forgery::FormatOne, "unsigned", "snapshot_unsigned"),
    ];
    let mut forged = Vec::new();
    for (n, (how, _, _)) in (1u32..).zip(forgeries) {
        forged.push(forge(&setup, &real, how, n));
    }
    let identity = setup.wd.identity();
    let identity = identity.to_str().unwrap();

    let listed = setup.run(&["--json", "snapshots"]).await.json();
    let trust_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["trust"]
            .clone()
    };
    assert_eq!(trust_of(&real), "signed");
    let human = setup.run(&["snapshots"]).await.stdout;
    assert!(
        human.contains("BAD SIGNATURE") && human.contains("UNTRUSTED SIGNER"),
        "{human}"
    );
    let shown = setup.run(&["--json", "show", "latest"]).await;
    assert_eq!(shown.json()["id"], real.as_str(), "{}", shown.stderr);

    for ((how, trust, code), id) in forgeries.iter().zip(&forged) {
        assert_eq!(trust_of(id), *trust, "{how:?}");
        assert_refused(&setup, &real, id, *how, trust, code).await;
    }
    assert!(
        setup.world.registry("hub-b").await.is_empty(),
        "nothing reached hub-b"
    );

    // `restore latest` restores the real snapshot: hub-a's devices, not the planted one.
    let out = setup
        .run(&[
            "--json",
            "restore",
            "latest",
            "--to",
            "hub-b",
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("`latest` skips"),
        "the skipped ones are said: {}",
        out.stderr
    );
    let on_b = ids_on(&setup, "hub-b").await;
    let on_a = ids_on(&setup, "hub-a").await;
    assert_eq!(on_b, on_a);
    assert!(!on_b.iter().any(|id| id == PLANTED));

    // The format 1 forgery opens with --allow-unsigned, said loudly; the others never do.
    let out = setup
        .run(&[
            "diff",
            &real,
            &forged[3],
            "--allow-unsigned",
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(out.code, 1, "a difference: {}", out.stderr);
    assert!(out.stdout.contains(PLANTED), "{}", out.stdout);
    assert!(out.stderr.contains("UNSIGNED"), "{}", out.stderr);
    let out = setup
        .run(&[
            "--json",
            "diff",
            &real,
            &forged[2],
            "--allow-unsigned",
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(out.json()["error"]["code"], "snapshot_untrusted");
}

/// `id`, forged `how`, fails verify (with `trust`) although its data reads, and dump, diff and
/// restore refuse it with `code`, writing nothing.
async fn assert_refused(
    setup: &Setup,
    real: &str,
    id: &str,
    how: Forgery,
    trust: &str,
    code: &str,
) {
    let identity = setup.wd.identity();
    let identity = identity.to_str().unwrap();
    // The data reads fine; the origin does not.
    let out = setup
        .run(&[
            "--json",
            "verify",
            id,
            "--read-data",
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(out.code, 1, "{how:?}: {}", out.stderr);
    let check = &out.json()["snapshots"][0];
    assert_eq!(check["trust"], trust, "{how:?}");
    assert_eq!(check["ok"], false, "{how:?}");
    let dump_dir = setup.wd.join(&format!("dump-{id}"));
    let dump = setup
        .run(&[
            "--json",
            "dump",
            id,
            "--out",
            dump_dir.to_str().unwrap(),
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(dump.code, 2, "{how:?}");
    assert_eq!(dump.json()["error"]["code"], code, "{how:?}");
    assert!(!dump_dir.exists(), "{how:?}: dump wrote something");
    let diff = setup
        .run(&["--json", "diff", real, id, "--identity", identity])
        .await;
    assert_eq!(diff.code, 2, "{how:?}");
    assert_eq!(diff.json()["error"]["code"], code, "{how:?}");
    let restore = setup
        .run(&[
            "--json",
            "restore",
            id,
            "--to",
            "hub-b",
            "--identity",
            identity,
        ])
        .await;
    assert_eq!(restore.code, 2, "{how:?}: {}", restore.stdout);
    assert_eq!(restore.json()["error"]["code"], code, "{how:?}");
    let fix = restore.json()["error"]["fix"].as_str().unwrap().to_owned();
    assert!(
        fix.contains("trusted-signers") || fix.contains("--allow-unsigned"),
        "{fix}"
    );
}

type Edit = fn(&mut Value);

/// The manifest-only edits the review found passing `verify`.
const EDITS: [(&str, Edit, &str); 3] = [
    (
        "recipients replaced",
        |m| {
            m["recipients"] =
                json!(["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]);
        },
        "recipients were replaced",
    ),
    (
        "configurations entry removed",
        |m| {
            m["objects"]
                .as_array_mut()
                .unwrap()
                .retain(|o| o["kind"] != "configurations");
            m["counts"]["configurations"] = 0.into();
        },
        "not in its manifest",
    ),
    (
        "object entry duplicated",
        |m| {
            let first = m["objects"][0].clone();
            m["objects"].as_array_mut().unwrap().push(first);
        },
        "more than once",
    ),
];

fn edit_json(path: &Path, edit: Edit) {
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// Editing a signed manifest — the recipients replaced, the configurations entry removed, an
/// object entry duplicated — breaks its signature, and verify names what is wrong. On a format 1
/// snapshot (no signature to break, read with --allow-unsigned) verify still names each edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_only_edits_fail_verify() {
    let setup = Setup::new().await;
    let identity = setup.wd.identity();
    for (what, edit, named) in EDITS {
        let id = setup.backup().await;
        edit_json(&setup.folder(&id).join("manifest.g1.json"), edit);
        let out = setup
            .run(&[
                "--json",
                "verify",
                &id,
                "--read-data",
                "--identity",
                identity.to_str().unwrap(),
            ])
            .await;
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        let check = &out.json()["snapshots"][0];
        assert_eq!(check["trust"], "bad-signature", "{what}: {check}");
        assert!(
            check["problems"].to_string().contains(named),
            "{what}: {check}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden");
    let golden_identity = setup.wd.join("golden-identity.txt");
    crate::support::write_private(
        &golden_identity,
        &std::fs::read_to_string(golden.join("TEST-ONLY-identity.txt")).unwrap(),
    );
    for (n, (what, edit, named)) in EDITS.into_iter().enumerate() {
        let store = setup.wd.join(&format!("v1-{n}"));
        let folder = store.join("golden-hub/20261126T101135Z-47912ca9");
        std::fs::create_dir_all(&folder).unwrap();
        for e in
            std::fs::read_dir(golden.join("store/golden-hub/20261126T101135Z-47912ca9")).unwrap()
        {
            let e = e.unwrap();
            std::fs::copy(e.path(), folder.join(e.file_name())).unwrap();
        }
        edit_json(&folder.join("manifest.json"), edit);
        let out = setup
            .wd
            .hubvault()
            .args(["--json", "--store"])
            .arg(&store)
            .args([
                "verify",
                "--all",
                "--read-data",
                "--allow-unsigned",
                "--identity",
            ])
            .arg(&golden_identity)
            .run()
            .await;
        assert_eq!(out.code, 1, "v1, {what}: {}", out.stderr);
        let check = &out.json()["snapshots"][0];
        assert_eq!(check["trust"], "unsigned", "{what}");
        assert!(
            check["problems"].to_string().contains(named),
            "v1, {what}: {check}"
        );
    }
}

/// A restore host holds no signing key: it trusts the signers its config names, and nothing
/// else; a backup host without a signing key stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_host_trusts_the_signers_it_is_told_to() {
    let setup = Setup::new().await;
    let id = setup.backup().await;
    let signer = setup.wd.signer();
    let store = setup.wd.store();
    let identity = setup.wd.identity();
    let host = Workdir::bare();
    let on_host = async |config: &str, args: &[&str]| {
        std::fs::write(host.config_path(), config).unwrap();
        host.hubvault()
            .args(["--json", "--store"])
            .arg(&store)
            .args(args)
            .arg("--identity")
            .arg(&identity)
            .run()
            .await
    };
    let out = on_host("", &["verify", "--all", "--read-data"])
        .await
        .expect_code(1);
    assert_eq!(out.json()["snapshots"][0]["trust"], "untrusted-signer");
    let out = on_host("", &["dump", "latest", "--out", "d1"])
        .await
        .expect_code(2);
    assert_eq!(out.json()["error"]["code"], "snapshot_no_trusted");
    let trusted = format!("trusted-signers = [\"{signer}\"]\n");
    let out = on_host(&trusted, &["verify", "--all", "--read-data"])
        .await
        .expect_code(0);
    assert_eq!(out.json()["snapshots"][0]["signer"], signer.as_str());
    on_host(&trusted, &["dump", &id, "--out", "d2"])
        .await
        .expect_code(0);
    assert!(host.join("d2/devices.txt").exists());

    // A bad entry is named by position, never echoed.
    let out = on_host(
        "trusted-signers = [\"hvsig1notakey-SECRETLOOKING\"]\n",
        &["verify", "--all"],
    )
    .await
    .expect_code(2);
    assert_eq!(out.json()["error"]["code"], "vault_bad_trusted_signer");
    assert!(!out.stdout.contains("SECRETLOOKING") && !out.stderr.contains("SECRETLOOKING"));

    // A backup without a signing key stores nothing and says how to make one.
    let export = host.join("export");
    setup.world.write_export("hub-a", &export).await;
    let empty = host.join("empty-store");
    let out = setup
        .backup_cmd(&host, &export)
        .arg("--store")
        .arg(&empty)
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let error = &out.json()["error"];
    assert_eq!(error["code"], "vault_no_signing_key");
    assert!(
        error["fix"].as_str().unwrap().contains("key init"),
        "{error}"
    );
    assert!(!empty.exists() || std::fs::read_dir(&empty).unwrap().next().is_none());
}

/// A backup killed between writing its signature and its manifest: no snapshot, and an orphan
/// that `forget` keeps while it may be a backup in flight and removes after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_signature_and_manifest_leaves_an_orphan_forget_removes() {
    let setup = Setup::new().await;
    let real = setup.backup().await;
    let export = setup.wd.join("export");
    setup.world.write_export("hub-a", &export).await;
    let mut child = setup
        .backup_cmd(&setup.wd, &export)
        .env("HUBVAULT_FAULT_PAUSE", "after-signature")
        .spawn();
    assert!(
        child
            .wait_for_stderr(
                "HUBVAULT_FAULT_PAUSE: paused at after-signature",
                Duration::from_secs(60)
            )
            .await,
        "no pause marker"
    );
    child.kill().await;
    let folders: Vec<PathBuf> = std::fs::read_dir(setup.wd.store().join("hub-a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(&real))
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let orphan = &folders[0];
    assert!(orphan.join("signature.g1.json").exists());
    assert!(!orphan.join("manifest.g1.json").exists());
    let listed = setup.run(&["--json", "snapshots"]).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let policy = setup.wd.join("keep-all.toml");
    std::fs::write(&policy, "[retention]\nkeep-last = 10\n").unwrap();
    let forget = async || {
        setup
            .wd
            .hubvault()
            .args(["--json", "forget", "--policy"])
            .arg(&policy)
            .run()
            .await
            .expect_code(0)
            .json()
    };
    let doc = forget().await;
    assert_eq!(doc["orphans"], json!([]), "in flight, maybe: {doc}");
    assert_eq!(doc["orphans_waiting"].as_array().unwrap().len(), 1, "{doc}");
    // Two days later on the store's clock (a local folder's clock is its files' times).
    age_files(orphan, Duration::from_secs(2 * 86_400));
    let doc = forget().await;
    assert_eq!(doc["orphans"].as_array().unwrap().len(), 1, "{doc}");
    assert!(!orphan.exists() || std::fs::read_dir(orphan).unwrap().next().is_none());
    assert_eq!(doc["keep"], json!([real]));
}

fn age_files(dir: &Path, by: Duration) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }
}
