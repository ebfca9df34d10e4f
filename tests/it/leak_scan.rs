//! The leak scan: every command, at `-vvv` with trace logging for every crate
//! (`HUBVAULT_LOG=trace`) and `--json`, against the simulator (hubs, ARM, Key Vault) and real
//! Azurite staging, with known secrets — every device key and hub policy key, the connection
//! strings, the Azurite account key, the ARM token, Key Vault tokens and the managed-identity
//! header, the age identity and the signing key. Each secret is looked for as it is, in base64
//! and URL-encoded, in stdout, stderr (where logs and panics go), every file the runs left in
//! their folder, their temp folder and the store, and every blob left in staging. The scanner is
//! shown to catch each form of a planted secret. A second scan runs the DPS commands against the
//! simulator's DPS instances with known enrollment keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use hubvault::device::register::{DeviceKey, Registration, derive_group_key};

use crate::support::{ARM_TOKEN, Out, Staging, Workdir, World, azurite};

/// Each secret in every form it could leak in; found ones are reported by index and form, never
/// by value.
struct Scanner {
    forms: Vec<(usize, &'static str, Vec<u8>)>,
}

impl Scanner {
    fn new(secrets: &[String]) -> Scanner {
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut forms = Vec::new();
        for (i, s) in secrets.iter().enumerate().filter(|(_, s)| s.len() >= 8) {
            forms.push((i, "as is", s.as_bytes().to_vec()));
            forms.push((i, "base64", b64.encode(s).into_bytes()));
            forms.push((i, "base64url", b64url.encode(s).into_bytes()));
            let url: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            if url != *s {
                forms.push((i, "url-encoded", url.into_bytes()));
            }
            let pct = percent_encode_all(s);
            if pct != *s {
                forms.push((i, "percent-encoded", pct.into_bytes()));
            }
        }
        Scanner { forms }
    }

    /// What of the secrets `bytes` holds: `(secret index, form)`.
    fn find(&self, bytes: &[u8]) -> Vec<(usize, &'static str)> {
        self.forms
            .iter()
            .filter(|(_, _, f)| memchr::memmem::find(bytes, f).is_some())
            .map(|(i, form, _)| (*i, *form))
            .collect()
    }

    fn assert_clean(&self, bytes: &[u8], what: &str) {
        let found = self.find(bytes);
        assert!(
            found.is_empty(),
            "{what} holds secrets (index, form): {found:?}"
        );
        for pattern in [
            &b"SharedAccessSignature sr="[..],
            b"AGE-SECRET-KEY-1",
            b"-----BEGIN PRIVATE KEY-----",
            b"hubvault-sim-mi.",
        ] {
            assert!(
                memchr::memmem::find(bytes, pattern).is_none(),
                "{what} holds {}",
                String::from_utf8_lossy(pattern)
            );
        }
    }

    /// Every file under `dir`, except the paths in `skip` (what the test itself put there).
    fn assert_tree_clean(&self, dir: &Path, skip: &[PathBuf], what: &str) {
        for file in files(dir) {
            if skip.iter().any(|s| file.starts_with(s)) {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap_or_default();
            self.assert_clean(&bytes, &format!("{what}: {}", file.display()));
        }
    }
}

/// `%XX` for every byte outside `A-Z a-z 0-9 - _ . ~` (what a URL query holds).
fn percent_encode_all(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The scanner finds a planted secret in each form, in output and in a file, and says which
/// secret and form without showing it.
#[test]
fn the_scanner_finds_a_secret_planted_in_every_form() {
    let secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned();
    let scanner = Scanner::new(std::slice::from_ref(&secret));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
    let url: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    for (planted, form) in [
        (format!("log line: key={secret}"), "as is"),
        (format!("{{\"blob\":\"{b64}\"}}"), "base64"),
        (format!("GET /x?sig={url}"), "url-encoded"),
    ] {
        let found = scanner.find(planted.as_bytes());
        assert!(found.contains(&(0, form)), "{form}: {found:?}");
        let caught = std::panic::catch_unwind(|| scanner.assert_clean(planted.as_bytes(), "t"));
        let message = *caught.unwrap_err().downcast::<String>().unwrap();
        assert!(!message.contains(&secret), "the report shows no secret");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("deep/er")).unwrap();
    std::fs::write(dir.path().join("deep/er/log.txt"), format!("x {secret} y")).unwrap();
    let caught =
        std::panic::catch_unwind(|| scanner.assert_tree_clean(dir.path(), &[], "temp folder"));
    assert!(caught.is_err(), "a secret in a nested file is found");
    scanner.assert_tree_clean(dir.path(), &[dir.path().join("deep")], "skipped");
    scanner.assert_clean(b"nothing to see", "clean text");
}

/// `hubvault -vvv --json ARGS`, its stdout and stderr scanned before anything else is looked at.
async fn scanned_run(wd: &Workdir, scanner: &Scanner, args: &[&str]) -> Out {
    let out: Out = wd
        .hubvault()
        .args(["-vvv", "--json"])
        .args(args)
        .within(Duration::from_secs(180))
        .run()
        .await;
    let what = args.join(" ");
    scanner.assert_clean(out.stdout.as_bytes(), &format!("{what}: stdout"));
    scanner.assert_clean(out.stderr.as_bytes(), &format!("{what}: stderr"));
    out
}

/// What the scan runs against: the world, staging, a work folder whose config reaches them
/// (and the vault with the managed identity), and every secret they hold.
struct Setup {
    /// Kept alive for the runs.
    _world: World,
    staging: Staging,
    wd: Workdir,
    tmp: PathBuf,
    recipient: String,
    kv_identity: String,
    scanner: Scanner,
}

async fn setup(cs: &str) -> Setup {
    let world = World::builder()
        .hubs(&[("hub-a", 40), ("hub-b", 0)])
        .seed(23)
        .fast_jobs()
        .keyvault(true)
        .start()
        .await;
    let staging = Staging::fresh(cs, "leakscan").await;
    let wd = Workdir::new();
    let recipient = wd.write_identity();
    wd.config(&world).staging(&staging).write();
    let tmp = wd.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    wd.set_env("TMPDIR", tmp.to_str().unwrap());
    wd.set_env("HUBVAULT_JOB_POLL_MS", "50");
    wd.set_env("HUBVAULT_LOG", "trace");
    let header = world.running.identities.default_identity().header;
    wd.set_env(
        "IDENTITY_ENDPOINT",
        &world.running.managed_identity_endpoint(),
    );
    wd.set_env("IDENTITY_HEADER", &header);
    let kv_endpoint = world.running.keyvault.clone().unwrap();
    std::fs::write(
        wd.config_path(),
        format!(
            "{}\n[keyvault]\nurl = \"{}\"\nendpoint = \"{kv_endpoint}\"\ncredential = \"managed-identity\"\n",
            std::fs::read_to_string(wd.config_path()).unwrap(),
            hubvault_sim::KEYVAULT_URL
        ),
    )
    .unwrap();
    // The same identity in Key Vault, put there the way an operator would.
    let identity_text = std::fs::read_to_string(wd.identity()).unwrap();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .get(world.running.managed_identity_endpoint())
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net"),
        ])
        .header("x-identity-header", &header)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let put = http
        .put(format!(
            "{kv_endpoint}/secrets/hubvault-identity?api-version=2025-07-01"
        ))
        .bearer_auth(&token)
        .json(&json!({"value": identity_text}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let mut secrets = world.secrets(&["hub-a"]).await;
    for hub in ["hub-a", "hub-b"] {
        secrets.push(world.connection_string(hub));
    }
    secrets.extend([ARM_TOKEN.to_owned(), header, token]);
    for line in identity_text
        .lines()
        .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
    {
        secrets.push(line.to_owned());
    }
    let pem = std::fs::read_to_string(wd.signing_key()).unwrap();
    secrets.push(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && !l.starts_with('#'))
            .collect(),
    );
    Setup {
        _world: world,
        staging,
        wd,
        tmp,
        recipient,
        kv_identity: format!("{}/secrets/hubvault-identity", hubvault_sim::KEYVAULT_URL),
        scanner: Scanner::new(&secrets),
    }
}

/// The scan over every command. Skips without Azurite unless `HUBVAULT_REQUIRE_AZURITE` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_leaks_a_secret_at_any_verbosity() {
    let Some(cs) = azurite() else { return };
    let s = setup(&cs).await;
    let wd = &s.wd;
    let policy = wd.join("keep.toml");
    std::fs::write(&policy, "[retention]\nkeep-last = 5\n").unwrap();
    let policy = policy.to_str().unwrap();
    let dump = wd.join("dump");
    let recipient = s.recipient.as_str();
    let runs: Vec<Vec<&str>> = vec![
        vec!["backup", "--hub", "hub-a", "--recipient", recipient],
        vec!["snapshots", "--recipients"],
        vec!["show", "latest", "--hub", "hub-a"],
        vec!["verify", "--all", "--read-data"],
        vec![
            "verify",
            "--all",
            "--read-data",
            "--identity",
            &s.kv_identity,
        ],
        vec![
            "dump",
            "latest",
            "--hub",
            "hub-a",
            "--out",
            dump.to_str().unwrap(),
        ],
        vec!["diff", "latest", "--hub", "hub-a"],
        vec!["preflight", "--to", "hub-b"],
        vec![
            "restore", "latest", "--hub", "hub-a", "--to", "hub-b", "--engine", "job", "--mode",
            "upsert",
        ],
        vec![
            "restore", "latest", "--hub", "hub-a", "--to", "hub-b", "--engine", "bulk", "--mode",
            "upsert",
        ],
        vec![
            "clone", "--from", "hub-a", "--to", "hub-b", "--mode", "upsert",
        ],
        vec!["key", "show-recipient"],
        vec!["key", "rotate", "--to", recipient, "--dry-run"],
        vec!["forget", "--dry-run", "--policy", policy],
        vec!["forget", "--policy", policy],
        vec!["policy", "check", policy],
        vec![
            "run",
            "--policy",
            policy,
            "--log-format",
            "json",
            "--recipient",
            recipient,
        ],
    ];
    let mut traced = 0;
    for args in &runs {
        let out = scanned_run(wd, &s.scanner, args).await;
        assert!(out.code == 0 || out.code == 1, "{args:?}: {}", out.text());
        traced += usize::from(out.stderr.contains("TRACE"));
    }
    // Every run that talks to a service logs at trace (local ones may have nothing to say).
    assert!(traced >= 6, "trace logging reached {traced} runs only");
    // Files: everything but what the test wrote itself (config with connection strings, the
    // key files) and what `dump` is for (import-ready plaintext, 0600, by request).
    let skip = [wd.config_path(), wd.identity(), wd.signing_key(), dump];
    s.scanner.assert_tree_clean(wd.path(), &skip, "work folder");
    s.scanner.assert_tree_clean(&s.tmp, &[], "temp folder");
    assert!(
        files(&wd.store()).len() >= 4,
        "the store was written (and scanned)"
    );
    // Staging: every blob left, read back.
    for name in s.staging.leftovers().await {
        let bytes = hubvault::store::Store::get_bytes(&s.staging.store, &name)
            .await
            .unwrap();
        s.scanner
            .assert_clean(&bytes, &format!("staging blob {name}"));
    }
    scan_demo(&s).await;
    s.staging.delete().await;
}

/// The demo, with its own throw-away keys: its fleet is the simulator's deterministic one.
async fn scan_demo(s: &Setup) {
    let demo =
        s.wd.hubvault()
            .args(["-vvv", "--json", "demo", "--devices", "60"])
            .within(Duration::from_secs(180))
            .run()
            .await;
    assert_eq!(demo.code, 0, "{}", demo.text());
    let demo_world = World::builder()
        .hub("hub-a", 60)
        .hub("hub-b", 0)
        .seed(7)
        .start()
        .await;
    let demo_scanner = Scanner::new(&demo_world.secrets(&["hub-a"]).await);
    demo_scanner.assert_clean(demo.text().as_bytes(), "demo");
    s.scanner.assert_clean(demo.text().as_bytes(), "demo");
}

/// Every enrollment key of the DPS world (individual primary and secondary, group keys) and
/// keys derived from the group keys for a device that registered and two that did not.
fn enrollment_keys(count: usize, groups: usize) -> Vec<String> {
    use crate::dps_scale::key;
    let mut out: Vec<String> = (0..count)
        .flat_map(|i| [key(i), key(i + 100_000)])
        .collect();
    for g in 0..groups {
        for group_key in [key(200_000 + g), key(300_000 + g)] {
            for id in ["machine-7", "sensor-00001", "line-device-1"] {
                out.push(derive_group_key(&group_key, id).unwrap());
            }
            out.push(group_key);
        }
    }
    out
}

/// The DPS commands at `-vvv`, trace logging, `--json`: `backup --dps`, `diff --dps`,
/// `preflight --to-dps`, `clone --from dps-a --to dps-b`, `restore --to-dps` from a DPS snapshot
/// and from a hub snapshot (its devices become enrollments). No enrollment key (primary,
/// secondary, group, derived from a group), no DPS or hub policy key and no device key of the
/// hub appears in stdout, stderr, or any file the runs left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dps_command_leaks_a_key_at_any_verbosity() {
    const INDIVIDUAL: usize = 30;
    const GROUPS: usize = 3;
    let (world, wd) = crate::dps_scale::world(0, &["dps-a", "dps-b"]).await;
    crate::dps_scale::enroll(
        &crate::dps_scale::client(&world, "dps-a"),
        INDIVIDUAL,
        GROUPS,
    )
    .await;
    // hub-a's devices, one of them provisioned through a group (its key derived from the
    // group's), exported for a hub snapshot.
    world.seed("hub-a", 60, 11).await;
    let group_key = crate::dps_scale::key(200_000);
    let reg = world
        .device_register("dps-a", "machine-7", DeviceKey::Group(&group_key))
        .await;
    assert!(matches!(reg, Registration::Assigned(_)), "{reg:?}");
    let export = wd.join("export");
    world.write_export("hub-a", &export).await;
    let tmp = wd.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    wd.set_env("TMPDIR", tmp.to_str().unwrap());
    wd.set_env("HUBVAULT_LOG", "trace");

    let mut secrets = world.secrets(&["hub-a"]).await;
    let derived = derive_group_key(&group_key, "machine-7").unwrap();
    assert!(secrets.contains(&derived), "the derived key is on hub-a");
    secrets.extend(enrollment_keys(INDIVIDUAL, GROUPS));
    let scanner = Scanner::new(&secrets);

    let recipient = crate::dps_scale::recipient(&wd);
    let export_arg = export.to_str().unwrap();
    let runs: Vec<(Vec<&str>, i32)> = vec![
        (
            vec!["backup", "--dps", "dps-a", "--recipient", &recipient],
            0,
        ),
        (vec!["diff", "latest", "--dps", "dps-a"], 0),
        (vec!["preflight", "--to-dps", "dps-b"], 0),
        (vec!["clone", "--from", "dps-a", "--to", "dps-b"], 0),
        (
            vec![
                "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-b", "--mode", "upsert",
            ],
            0,
        ),
        (
            vec![
                "backup",
                "--hub-name",
                "hub-a",
                "--recipient",
                &recipient,
                "--from-export",
                export_arg,
            ],
            0,
        ),
        // Exit 1: the hub's x509 devices are skipped and named.
        (
            vec![
                "restore",
                "latest",
                "--hub",
                "hub-a",
                "--to-dps",
                "dps-b",
                "--iot-hub",
                "hub-b.azure-devices.net",
                "--mode",
                "create",
            ],
            1,
        ),
    ];
    let mut traced = 0;
    for (args, code) in &runs {
        let out = scanned_run(&wd, &scanner, args).await;
        assert_eq!(out.code, *code, "{args:?}: {}", out.text());
        traced += usize::from(out.stderr.contains("TRACE"));
    }
    assert!(traced >= 5, "trace logging reached {traced} runs only");
    // The enrollments did reach dps-b with their keys: the scan looked for keys that exist.
    let b = &world.running.dps_instance("dps-b").unwrap().state;
    let held = serde_json::to_string(&b.enrollments()).unwrap();
    assert!(
        held.contains(&crate::dps_scale::key(3)),
        "dps-b holds the enrolled keys"
    );
    // Files: all but the key files and what the test wrote (config with connection strings,
    // the hub's export).
    let skip = [wd.config_path(), wd.identity(), wd.signing_key(), export];
    scanner.assert_tree_clean(wd.path(), &skip, "work folder");
    assert!(
        files(&wd.store()).len() >= 4,
        "the store was written (and scanned)"
    );
}
