//! Live backup and preflight against the in-process simulator, with staging in real Azurite.
//!
//! Each test starts its own simulator (hub-a, hub-b, ARM) on 127.0.0.1, writes a hubvault.toml
//! pointing at it, and drives the real `hubvault` binary. The truth is read from the
//! simulator's control API (registry, jobs) and from Azurite's listing (staging must be empty),
//! never from hubvault's own account of what it did.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use super::support::azurite;
use age::secrecy::ExposeSecret as _;
use hubvault::store::Store as _;
use hubvault::store::azure::{AzureLocation, AzureStore};
use hubvault_sim::{self as sim, HubOptions, Options, Running};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const ARM_TOKEN: &str = "test-arm-token";

struct World {
    sim: Running,
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: tempfile::TempDir,
    cs: String,
    staging: AzureStore,
    http: reqwest::Client,
    /// Secrets that must never appear in any output.
    secrets: Vec<String>,
}

/// Which extra config the test wants.
#[derive(Clone, Copy)]
struct Setup {
    devices: usize,
    arm: bool,
    sas_lifetime: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            devices: 120,
            arm: true,
            sas_lifetime: "6h",
        }
    }
}

impl World {
    async fn start(cs: &str, setup: Setup) -> World {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = Options {
            hubs: vec![
                HubOptions {
                    name: "hub-a".into(),
                    devices: setup.devices,
                },
                HubOptions {
                    name: "hub-b".into(),
                    devices: 0,
                },
            ],
            arm: Some(Box::new(|hubs: &sim::shared::Hubs| {
                sim::arm::router(sim::arm::ArmState::new(hubs.clone()))
            })),
            ..Options::default()
        };
        let sim = sim::run(options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let container = format!("stage-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let staging = AzureStore::new(
            AzureLocation::from_connection_string(cs, &container).unwrap(),
            None,
        )
        .unwrap();
        staging.ensure_container().await.unwrap();
        let id = age::x25519::Identity::generate();
        std::fs::write(
            dir.path().join("identity.txt"),
            format!("{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        let mut perms = std::fs::metadata(dir.path().join("identity.txt"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(dir.path().join("identity.txt"), perms).unwrap();
        let account_key = cs
            .split(';')
            .find_map(|s| s.strip_prefix("AccountKey="))
            .unwrap()
            .to_owned();
        let mut secrets = vec![account_key];
        for h in &sim.hubs {
            let hub_cs = h.connection_string("iothubowner").unwrap();
            secrets.push(hub_cs.rsplit("SharedAccessKey=").next().unwrap().to_owned());
        }
        let world = World {
            sim,
            _stop: stop,
            dir,
            cs: cs.to_owned(),
            staging,
            http: reqwest::Client::new(),
            secrets,
        };
        world.write_config(&container, setup, None);
        world
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// hubvault.toml; `hub_b_cs` replaces hub-b's connection string (a wrong key, a weak policy).
    fn write_config(&self, container: &str, setup: Setup, hub_b_cs: Option<&str>) {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let mut text = format!(
            "store = {}\nidentity = {}\n",
            q(&self.path("store").display().to_string()),
            q(&self.path("identity.txt").display().to_string())
        );
        for h in &self.sim.hubs {
            let cs = match (h.name.as_str(), hub_b_cs) {
                ("hub-b", Some(cs)) => cs.to_owned(),
                _ => h.connection_string("iothubowner").unwrap(),
            };
            let _ = write!(
                text,
                "\n[hubs.{}]\nconnection-string = {}\nendpoint = {}\nresource-id = {}\n",
                h.name,
                q(&cs),
                q(&h.endpoint),
                q(&h.resource_id)
            );
        }
        if setup.arm {
            let _ = write!(
                text,
                "\n[arm]\nendpoint = {}\ntoken-env = \"HUBVAULT_ARM_TOKEN\"\n",
                q(self.sim.arm.as_deref().unwrap())
            );
        }
        let _ = write!(
            text,
            "\n[staging]\nconnection-string-env = \"HUBVAULT_STAGING_CS\"\ncontainer = {}\nsas-lifetime = {}\n",
            q(container),
            q(setup.sas_lifetime)
        );
        std::fs::write(self.path("hubvault.toml"), text).unwrap();
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubvault"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HUBVAULT_STAGING_CS", &self.cs)
            .env("HUBVAULT_ARM_TOKEN", ARM_TOKEN)
            .env("HUBVAULT_JOB_POLL_MS", "40")
            .current_dir(self.dir.path())
            .arg("--config")
            .arg(self.path("hubvault.toml"))
            .args(args)
            .kill_on_drop(true);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = tokio::time::timeout(Duration::from_secs(120), self.command(args, env).output())
            .await
            .expect("hubvault finished within 2 minutes")
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.assert_no_secrets(&text).await;
        out
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.sim.control));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "control {path}: {}",
            resp.status()
        );
        let text = resp.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// The hub's registry as the simulator holds it: (id, moduleId) → primary key.
    async fn registry(&self, hub: &str) -> BTreeSet<(String, String, String)> {
        let text = self
            .http
            .get(format!("{}/hubs/{hub}/registry", self.sim.control))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        triples(&text)
    }

    async fn staging_blobs(&self) -> Vec<String> {
        self.staging
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    }

    async fn jobs(&self, hub: &str) -> Vec<Value> {
        match self
            .control(reqwest::Method::GET, &format!("/hubs/{hub}/jobs"), None)
            .await
        {
            Value::Array(a) => a,
            other => panic!("jobs: {other}"),
        }
    }

    /// Wait (bounded) until the hub has no queued or running job.
    async fn wait_jobs_done(&self, hub: &str) {
        for _ in 0..300 {
            let busy = self.jobs(hub).await.iter().any(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("enqueued" | "running" | "queued")
                )
            });
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jobs of {hub} did not finish");
    }

    /// Snapshot ids of a hub in the local store, read from the folder.
    fn snapshots(&self, hub: &str) -> Vec<String> {
        let dir = self.path("store").join(hub);
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("manifest.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    async fn assert_no_secrets(&self, text: &str) {
        for s in &self.secrets {
            assert!(
                !text.contains(s.as_str()),
                "a key leaked into the output:\n{text}"
            );
        }
        for (i, _) in text.match_indices("sig=") {
            assert!(
                text[i + 4..].starts_with("<redacted>"),
                "a SAS signature leaked into the output:\n{text}"
            );
        }
        // Device keys: the simulator's registry of both hubs.
        for hub in ["hub-a", "hub-b"] {
            for (_, _, key) in self.registry(hub).await.iter().take(50) {
                if !key.is_empty() {
                    assert!(!text.contains(key.as_str()), "a device key leaked:\n{text}");
                }
            }
        }
    }
}

/// (id, moduleId, primaryKey) of every export line.
fn triples(text: &str) -> BTreeSet<(String, String, String)> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("id").is_some())
        .map(|v| {
            let s = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            (
                s("/id"),
                s("/moduleId"),
                s("/authentication/symmetricKey/primaryKey"),
            )
        })
        .collect()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn dump_latest(w: &World, out: &str) -> BTreeSet<(String, String, String)> {
    let o = w
        .run(
            &[
                "dump",
                "latest",
                "--hub",
                "hub-a.azure-devices.net",
                "--out",
                out,
            ],
            &[],
        )
        .await;
    assert!(o.status.success(), "dump: {}", stderr(&o));
    triples(&std::fs::read_to_string(w.path(out).join("devices.txt")).unwrap())
}

const HUB_A: &str = "hub-a.azure-devices.net";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_from_hub_seals_the_registry_and_empties_staging() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    let out = w
        .run(&["--json", "-vvv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_of(&out);
    let job_id = report["job_id"].as_str().expect("job_id in --json");
    let jobs = w.jobs("hub-a").await;
    assert!(
        jobs.iter()
            .any(|j| j["jobId"] == job_id && j["status"] == "completed"),
        "the simulator ran export job {job_id}: {jobs:?}"
    );
    for key in [
        "snapshot",
        "hub",
        "created",
        "devices",
        "modules",
        "edge_devices",
        "configurations",
        "skipped_lines",
        "bytes",
    ] {
        assert!(report.get(key).is_some(), "--json lacks {key}: {report}");
    }
    assert_eq!(report["hub"], HUB_A);
    let truth = w.registry("hub-a").await;
    let devices = truth.iter().filter(|t| t.1.is_empty()).count() as u64;
    assert_eq!(report["devices"].as_u64().unwrap(), devices);
    assert_eq!(
        report["modules"].as_u64().unwrap(),
        truth.len() as u64 - devices
    );
    let configurations = w
        .http
        .get(format!("{}/hubs/hub-a/configurations", w.sim.control))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config_count = configurations
        .lines()
        .filter(|l| l.starts_with('{'))
        .count() as u64;
    assert!(config_count > 0, "the seeded hub has configurations");
    assert_eq!(report["configurations"].as_u64().unwrap(), config_count);
    assert!(
        w.staging_blobs().await.is_empty(),
        "staging must be empty: {:?}",
        w.staging_blobs().await
    );
    assert!(
        stderr(&out).contains("deleted 2 plaintext staging blob(s)"),
        "{}",
        stderr(&out)
    );

    // The snapshot holds every identity with its key, and records the job.
    assert_eq!(dump_latest(&w, "dump1").await, truth);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            w.path("store")
                .join(HUB_A)
                .join(report["snapshot"].as_str().unwrap())
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["source"],
        json!({"kind": "export-job", "job_id": job_id})
    );

    assert_fresh_least_privilege_sas(&w, job_id).await;
}

/// What the hub was given, as the simulator recorded it.
async fn assert_fresh_least_privilege_sas(w: &World, job_id: &str) {
    // What the hub was given, as the simulator recorded it: keys and configurations, blob names
    // under staging/<hub>/<run>/, a container SAS with r, w, d only, expiring after 6 h.
    let jobs = w.jobs("hub-a").await;
    let job = jobs.iter().find(|j| j["jobId"] == job_id).unwrap();
    assert_eq!(job["excludeKeysInExport"], false);
    assert_eq!(job["includeConfigurations"], true);
    assert!(
        job["outputBlobName"]
            .as_str()
            .unwrap()
            .starts_with("staging/hub-a.azure-devices.net/")
    );
    let sas = sas_of(job);
    assert_eq!(sas["sp"], "rwd", "least privilege: {sas:?}");
    assert_eq!(sas["sr"], "c", "a container SAS, never account-level");
    let expiry =
        time::OffsetDateTime::parse(&sas["se"], &time::format_description::well_known::Rfc3339)
            .unwrap();
    let lifetime = expiry - time::OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::minutes(355) && lifetime <= time::Duration::hours(6),
        "expires after sas-lifetime (6h): {lifetime}"
    );
    // A second run mints its own SAS, never reusing the first. A SAS is a pure function of its
    // fields, whose times have one-second resolution: let the clock tick so a fresh one differs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let second = json_of(&out)["job_id"].clone();
    let jobs = w.jobs("hub-a").await;
    let again = sas_of(jobs.iter().find(|j| j["jobId"] == second).unwrap());
    assert_ne!(again["sig"], sas["sig"]);
    assert!(w.staging_blobs().await.is_empty());
}

/// The query of a job's output container URI.
fn sas_of(job: &Value) -> std::collections::HashMap<String, String> {
    let uri = url::Url::parse(job["outputBlobContainerUri"].as_str().unwrap()).unwrap();
    uri.query_pairs().into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_into_an_azure_store_by_connection_string() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            devices: 30,
            ..Setup::default()
        },
    )
    .await;
    let container = format!("vault-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let vault = AzureStore::new(
        AzureLocation::from_connection_string(&cs, &format!("{container}/p")).unwrap(),
        None,
    )
    .unwrap();
    vault.ensure_container().await.unwrap();
    let store = format!(
        "{}Container={container}/p",
        if cs.ends_with(';') {
            cs.clone()
        } else {
            format!("{cs};")
        }
    );
    let out = w
        .run(
            &["--json", "--store", &store, "backup", "--hub", "hub-a"],
            &[],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = vault
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let snap = json_of(&out)["snapshot"].as_str().unwrap().to_owned();
    assert!(
        names.contains(&format!("{HUB_A}/{snap}/manifest.json")),
        "{names:?}"
    );
    let listed = w
        .run(&["--json", "--store", &store, "snapshots"], &[])
        .await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&snap));
    assert!(w.staging_blobs().await.is_empty());
    vault.delete_container().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_leave_no_snapshot_and_no_staging() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    let ok = w.run(&["backup", "--hub", "hub-a"], &[]).await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before = w.snapshots(HUB_A);
    assert_eq!(before.len(), 1);

    // A job that fails half-way (simulator fault).
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/faults",
        Some(json!({"fail_next_job": true})),
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = json_of(&out);
    assert_eq!(err["error"]["code"], "export_job_failed");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "the job's failureReason is shown: {err}"
    );
    assert!(stderr(&out).contains("deleted"), "{}", stderr(&out));
    assert!(
        w.staging_blobs().await.is_empty(),
        "{:?}",
        w.staging_blobs().await
    );
    assert_eq!(w.snapshots(HUB_A), before, "no snapshot on failure");
    let verify = w.run(&["verify", "--all", "--read-data"], &[]).await;
    assert!(
        verify.status.success(),
        "earlier snapshot intact: {}",
        stderr(&verify)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_retried_and_the_backup_completes() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"rates": {"jobs": 2.0, "statistics": 1.0, "registry": 1.0}, "retry_after_secs": 1})),
    )
    .await;
    let out = w
        .run(&["--json", "-vv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "throttled: {}", stderr(&out));
    assert!(
        stderr(&out).contains("retrying"),
        "the hub did throttle: {}",
        stderr(&out)
    );
    assert_eq!(w.snapshots(HUB_A).len(), 1);
    assert!(w.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_is_retried_and_the_backup_completes() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/faults",
        Some(json!({"error_burst": 3, "error_status": 503})),
    )
    .await;
    let out = w
        .run(&["--json", "-vv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "5xx burst: {}", stderr(&out));
    assert!(
        stderr(&out).contains("retrying"),
        "the hub did fail: {}",
        stderr(&out)
    );
    let faults = w
        .control(reqwest::Method::GET, "/hubs/hub-a/faults", None)
        .await;
    assert_eq!(faults["error_burst"], 0, "the whole burst was spent");
    assert_eq!(w.snapshots(HUB_A).len(), 1);
    assert!(w.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sas_fails_the_job_with_its_reason() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            sas_lifetime: "1s",
            ..Setup::default()
        },
    )
    .await;
    // The job waits in the queue longer than the SAS lives.
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"job_queue_ms": 2500})),
    )
    .await;
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a", "--no-preflight"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = json_of(&out);
    assert_eq!(err["error"]["code"], "export_job_failed", "{err}");
    let failure = w.jobs("hub-a").await[0]["failureReason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!failure.is_empty(), "the simulator's job failed on storage");
    assert!(w.staging_blobs().await.is_empty());
    assert!(w.snapshots(HUB_A).is_empty());
}

/// Start an export job on hub-a that holds the slot for a while (slow job rate).
async fn occupy_slot(w: &World) -> (String, tokio::process::Child) {
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"job_rate": 60.0})),
    )
    .await;
    let child = w
        .command(&["backup", "--hub", "hub-a"], &[])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(j) = w
            .jobs("hub-a")
            .await
            .iter()
            .find(|j| j["status"] == "running")
        {
            let id = j["jobId"].as_str().unwrap().to_owned();
            return (id, child);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no job started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_job_slot_is_named_or_waited_for() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    let (running, mut holder) = occupy_slot(&w).await;
    let out = w.run(&["--json", "preflight", "--to", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    let slot = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "job-slot")
        .unwrap()
        .clone();
    assert_eq!(slot["code"], "job_slot_busy");
    assert!(
        slot["detail"].as_str().unwrap().contains(&running),
        "{slot}"
    );

    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a", "--no-preflight"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&running),
        "names the running job: {}",
        stderr(&out)
    );

    let out = w
        .run(&["--json", "backup", "--hub", "hub-a", "--wait"], &[])
        .await;
    assert!(out.status.success(), "--wait waits: {}", stderr(&out));
    assert!(
        holder.wait().await.unwrap().success(),
        "the first backup completed too"
    );
    assert_eq!(w.snapshots(HUB_A).len(), 2);
    assert!(
        w.staging_blobs().await.is_empty(),
        "{:?}",
        w.staging_blobs().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_leaves_staging_that_the_next_run_removes() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    // A legacy leftover of another hub (no journal): younger than the longest job, it stays.
    let other = "staging/hub-b.azure-devices.net/20200101T000000Z-00000000/devices.txt";
    w.staging
        .put(other, bytes::Bytes::from_static(b"{}\n"))
        .await
        .unwrap();

    w.control(
        reqwest::Method::POST,
        "/hubs/hub-b/seed",
        Some(json!({"count": 5, "seed": 7})),
    )
    .await;
    let killed_at = kill_backup_while_its_job_runs(&w).await;
    w.wait_jobs_done("hub-a").await;
    let left = w.staging_blobs().await;
    let run_blobs: Vec<&String> = left
        .iter()
        .filter(|n| n.starts_with("staging/hub-a.azure-devices.net/"))
        .collect();
    assert!(
        run_blobs.iter().any(|n| n.ends_with("/devices.txt")),
        "the job wrote its plaintext export after its runner died: {left:?}"
    );
    let journals: Vec<&String> = left
        .iter()
        .filter(|n| n.starts_with("hubvault-runs/"))
        .collect();
    assert_eq!(journals.len(), 1, "the dead run's journal: {left:?}");
    assert!(w.snapshots(HUB_A).is_empty());

    // Once its lease has lapsed, the next run through the container — of another hub, which
    // cannot cancel hub-a's job — deletes the plaintext at once and says so.
    let lapse = Duration::from_secs(17).saturating_sub(killed_at.elapsed());
    tokio::time::sleep(lapse).await;
    let out = w.run(&["--json", "backup", "--hub", "hub-b"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = &json_of(&out)["dead_runs"];
    assert_eq!(dead[0]["hub"], HUB_A, "{dead:#}");
    assert!(dead[0]["blobs_deleted"].as_u64().unwrap() >= 1, "{dead:#}");
    assert_eq!(
        dead[0]["finished"], false,
        "hub-b cannot tell whether hub-a's job ended"
    );
    assert!(
        stderr(&out).contains("a killed run of hub-a.azure-devices.net"),
        "{}",
        stderr(&out)
    );
    let now = w.staging_blobs().await;
    assert!(
        !now.iter()
            .any(|n| n.starts_with("staging/hub-a.azure-devices.net/")),
        "no plaintext of the dead run is left: {now:?}"
    );
    assert!(
        now.iter().any(|n| n.starts_with("hubvault-runs/")),
        "its journal stays: {now:?}"
    );

    // A run of hub-a can see that the job ended: the journal goes too.
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = &json_of(&out)["dead_runs"];
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert_eq!(
        w.staging_blobs().await,
        vec![other.to_owned()],
        "only the legacy leftover of another hub is left"
    );
    assert_eq!(w.snapshots(HUB_A).len(), 1);
}

/// Start `backup --hub hub-a`, let it create its export job, SIGKILL it; returns when.
async fn kill_backup_while_its_job_runs(w: &World) -> std::time::Instant {
    let mut child = w
        .command(
            &["backup", "--hub", "hub-a"],
            &[("HUBVAULT_FAULT_PAUSE", "export-running")],
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let paused = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("paused at export-running") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(paused);
    let pid = child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = child.wait().await;
    std::time::Instant::now()
}

/// A dead run's journal while its lease has not lapsed is a live run for everyone else: a run
/// right after the kill leaves it alone (and a run of the same hub waits its turn for the slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_still_alive_is_left_alone() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            devices: 20,
            ..Setup::default()
        },
    )
    .await;
    w.control(
        reqwest::Method::POST,
        "/hubs/hub-b/seed",
        Some(json!({"count": 5, "seed": 7})),
    )
    .await;
    kill_backup_while_its_job_runs(&w).await;
    w.wait_jobs_done("hub-a").await;
    let before = w.staging_blobs().await;
    let out = w.run(&["--json", "backup", "--hub", "hub-b"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["dead_runs"], json!([]));
    assert_eq!(
        w.staging_blobs().await,
        before,
        "nothing of a possibly live run was touched"
    );
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {report}"))
}

async fn firewall_allowing_only_127_0_0_2(w: &World) {
    w.control(
        reqwest::Method::PUT,
        "/hubs/hub-b/firewall",
        Some(json!({"networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": false,
            "ipRules": [{"filterName": "office", "action": "Allow", "ipMask": "127.0.0.2"}]}})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_the_firewall_rule_and_passes_an_allowed_caller() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    firewall_allowing_only_127_0_0_2(&w).await;

    let out = w
        .run(
            &[
                "--json",
                "preflight",
                "--to",
                "hub-b",
                "--caller-ip",
                "127.0.0.1",
            ],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["ok"], false);
    let fw = finding(&report, "ip-firewall");
    assert_eq!(fw["ok"], false);
    assert_eq!(fw["code"], "401002");
    assert!(
        fw["detail"].as_str().unwrap().contains("office 127.0.0.2"),
        "{fw}"
    );
    assert!(fw["fix"].as_str().unwrap().contains("127.0.0.1"), "{fw}");
    for f in report["findings"].as_array().unwrap() {
        for k in ["check", "ok", "code", "detail", "fix"] {
            assert!(f.get(k).is_some(), "finding lacks {k}: {f}");
        }
    }

    // From the allowed address, everything passes.
    let out = w
        .run(
            &[
                "--json",
                "preflight",
                "--to",
                "hub-b",
                "--caller-ip",
                "127.0.0.2",
                "--local-address",
                "127.0.0.2",
            ],
            &[],
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json_of(&out)["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_without_arm_explains_401002_as_the_likely_firewall() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            arm: false,
            ..Setup::default()
        },
    )
    .await;
    firewall_allowing_only_127_0_0_2(&w).await;
    let out = w.run(&["--json", "preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    let cred = finding(&report, "credentials");
    assert_eq!(cred["code"], "401002");
    assert!(
        cred["detail"].as_str().unwrap().contains("IP firewall"),
        "{cred}"
    );
    // A table without --json, same verdict.
    let out = w.run(&["preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_tells_a_wrong_key_and_a_missing_permission() {
    let Some(cs) = azurite() else { return };
    let mut w = World::start(&cs, Setup::default()).await;
    let hub_b = w.sim.hub("hub-b").unwrap().clone();
    let read_only = hub_b.connection_string("registryRead").unwrap();
    w.secrets
        .push("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into());
    w.secrets.push(
        read_only
            .rsplit("SharedAccessKey=")
            .next()
            .unwrap()
            .to_owned(),
    );
    let container = w.staging.azure_location().container.clone();

    // Wrong key, firewall open to everyone: ARM says the caller is allowed ⇒ the key is wrong.
    let wrong = "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    w.write_config(&container, Setup::default(), Some(wrong));
    let out = w
        .run(
            &[
                "--json",
                "-vvv",
                "preflight",
                "--to",
                "hub-b",
                "--caller-ip",
                "127.0.0.1",
            ],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    let cred = finding(&report, "credentials");
    assert_eq!(cred["code"], "bad_credential", "{cred}");
    assert!(
        cred["detail"].as_str().unwrap().contains("key is wrong"),
        "{cred}"
    );
    assert_eq!(finding(&report, "ip-firewall")["ok"], true);

    // registryRead cannot run export jobs.
    w.write_config(&container, Setup::default(), Some(&read_only));
    let out = w.run(&["--json", "preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(finding(&report, "credentials")["ok"], true);
    let perm = finding(&report, "permissions");
    assert_eq!(perm["ok"], false);
    assert!(
        perm["detail"].as_str().unwrap().contains("RegistryWrite"),
        "{perm}"
    );
    assert!(w.jobs("hub-b").await.is_empty(), "the probe created no job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_job_and_deletes_staging() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"job_rate": 20.0})),
    )
    .await;
    let child = w
        .command(&["backup", "--hub", "hub-a"], &[])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = None;
    for _ in 0..400 {
        running = w
            .jobs("hub-a")
            .await
            .into_iter()
            .find(|j| j["status"] == "running");
        if running.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let job_id = running.expect("export job running")["jobId"].clone();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = stderr(&out);
    w.assert_no_secrets(&text).await;
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("interrupted") && text.contains("cancelled"),
        "{text}"
    );
    assert!(
        text.contains("deleted"),
        "the run says it cleaned staging: {text}"
    );
    let job = w
        .jobs("hub-a")
        .await
        .into_iter()
        .find(|j| j["jobId"] == job_id)
        .unwrap();
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(
        w.staging_blobs().await.is_empty(),
        "{:?}",
        w.staging_blobs().await
    );
    assert!(w.snapshots(HUB_A).is_empty());
}

/// The sweep never removes what a live job reads, and removes it once the job is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_spares_a_live_jobs_blobs() {
    use hubvault::config::Config;
    use hubvault::hub::{Connection, HubClient, JobProperties};
    use hubvault::staging::Staging;
    use hubvault::store::sas::SasPermissions;

    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    let hub_b = w.sim.hub("hub-b").unwrap();
    let client = HubClient::new(
        Connection::from_connection_string(&hub_b.connection_string("iothubowner").unwrap())
            .unwrap()
            .with_endpoint(hub_b.endpoint.parse().unwrap()),
    )
    .unwrap();
    let container = w.staging.azure_location().container.clone();
    let config = Config::parse(
        &format!("[staging]\nconnection-string = {cs:?}\ncontainer = {container:?}\n"),
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    // An earlier run of hub-b whose import job still runs (slowly) over its input blob.
    let earlier = Staging::open(None, &config, "hub-b.azure-devices.net").unwrap();
    let registry = w
        .http
        .get(format!("{}/hubs/hub-a/registry", w.sim.control))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    earlier
        .store()
        .put(&earlier.object("devices.txt"), bytes::Bytes::from(registry))
        .await
        .unwrap();
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-b/limits",
        Some(json!({"job_rate": 60.0})),
    )
    .await;
    let input = earlier
        .job_container_uri(SasPermissions::import_input())
        .unwrap();
    let output = earlier
        .job_container_uri(SasPermissions::import_output())
        .unwrap();
    let job = client
        .create_job(&JobProperties::import(
            input.expose(),
            &earlier.blob("devices.txt"),
            None,
            output.expose(),
        ))
        .await
        .unwrap();

    let now = Staging::open(None, &config, "hub-b.azure-devices.net").unwrap();
    let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert_eq!(now.sweep_leftovers(&client, future).await.unwrap(), 0);
    assert!(
        w.staging_blobs()
            .await
            .contains(&earlier.object("devices.txt")),
        "a live job's input is kept"
    );
    let poll = hubvault::hub::PollPolicy {
        interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(60),
    };
    client.wait_for_job(job.id(), &poll, |_| {}).await.unwrap();
    assert!(now.sweep_leftovers(&client, future).await.unwrap() >= 1);
    // The hub writes importErrors.log at the container root: not a run's blob, not swept.
    let left = w.staging_blobs().await;
    assert!(!left.iter().any(|n| n.starts_with("staging/")), "{left:?}");
}

/// Files under `dir`, recursively (relative paths).
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out
}

/// The simulator-only `file://` staging (the embedded demo) works end to end and is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_staging_for_the_simulator_is_emptied_too() {
    let Some(cs) = azurite() else { return };
    let w = World::start(&cs, Setup::default()).await;
    let folder = w.path("file-staging");
    std::fs::create_dir_all(&folder).unwrap();
    let url = format!("file://{}", folder.display());
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a", "--staging", &url],
            &[],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["staging_deleted"], 2);
    assert!(
        files_under(&folder).is_empty(),
        "{:?}",
        files_under(&folder)
    );
    assert_eq!(
        dump_latest(&w, "dump-file").await,
        w.registry("hub-a").await
    );
}

/// `--staging` with a container URL and a SAS made elsewhere: used as given, never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_by_sas_url_on_the_command_line() {
    use hubvault::store::sas::SasPermissions;
    let Some(cs) = azurite() else { return };
    let mut w = World::start(&cs, Setup::default()).await;
    let now = time::OffsetDateTime::now_utc();
    let sas = w
        .staging
        .container_sas(
            SasPermissions::all(),
            now - time::Duration::minutes(5),
            now + time::Duration::hours(1),
        )
        .unwrap();
    let url = sas
        .on(&w.staging.azure_location().container_url())
        .to_string();
    let sig: std::collections::HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    w.secrets.push(sig["sig"].clone());
    w.secrets
        .push(url::form_urlencoded::byte_serialize(sig["sig"].as_bytes()).collect());
    let out = w
        .run(
            &[
                "--json",
                "-vvv",
                "backup",
                "--hub",
                "hub-a",
                "--staging",
                &url,
            ],
            &[("HUBVAULT_STAGING_CS", "")],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["staging_deleted"], 2);
    assert!(w.staging_blobs().await.is_empty());
    assert_eq!(w.snapshots(HUB_A).len(), 1);
}

/// The review: `backup --hub hub-a` records the snapshot under the host name, and `restore
/// latest --hub hub-a` then answered "no snapshot latest". A config name, a host name and a
/// connection string naming one hub find the same snapshots; an unknown name lists what the
/// store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_finds_a_live_backup_by_config_name_host_name_or_connection_string() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            devices: 30,
            ..Setup::default()
        },
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = json_of(&out)["snapshot"].as_str().unwrap().to_owned();
    let hub_cs = w
        .sim
        .hub("hub-a")
        .unwrap()
        .connection_string("iothubowner")
        .unwrap();
    for name in ["hub-a", HUB_A, "HUB-A.azure-devices.net", hub_cs.as_str()] {
        let out = w.run(&["--json", "snapshots", "--hub", name], &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let listed = json_of(&out);
        assert_eq!(listed[0]["id"], id.as_str(), "snapshots --hub {name:.12}…");
        let out = w
            .run(&["--json", "show", "latest", "--hub", name], &[])
            .await;
        assert!(
            out.status.success(),
            "show latest --hub {name:.12}…: {}",
            stderr(&out)
        );
        assert_eq!(json_of(&out)["id"], id.as_str());
    }
    let out = w
        .run(
            &[
                "--json",
                "restore",
                "latest",
                "--hub",
                "hub-a",
                "--to",
                "hub-b",
                "--dry-run",
            ],
            &[],
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["snapshot"], id.as_str());

    let out = w
        .run(&["--json", "show", "latest", "--hub", "hub-z"], &[])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let err = json_of(&out);
    assert_eq!(
        err["error"]["code"], "snapshot_no_snapshot_of_hub",
        "{err:#}"
    );
    assert!(
        err["error"]["message"].as_str().unwrap().contains(HUB_A),
        "the hubs the store holds are listed: {err:#}"
    );
}

/// A dead run whose job still runs: the next run of the same hub holds its credentials, so it
/// cancels that job (it would otherwise write every key into staging later) and cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_job_is_cancelled_by_the_next_run_of_its_hub() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            devices: 60,
            ..Setup::default()
        },
    )
    .await;
    // A slow export: still running long after its runner is killed.
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"job_rate": 1.0})),
    )
    .await;
    let killed_at = kill_backup_while_its_job_runs(&w).await;
    tokio::time::sleep(Duration::from_secs(17).saturating_sub(killed_at.elapsed())).await;
    assert!(
        w.jobs("hub-a")
            .await
            .iter()
            .any(|j| j["status"] == "running"),
        "the dead run's job still runs"
    );
    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/limits",
        Some(json!({"job_rate": 0.0})),
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = &json_of(&out)["dead_runs"];
    let cancelled = dead[0]["cancelled_job"].as_str().expect("a cancelled job");
    assert!(
        w.jobs("hub-a")
            .await
            .iter()
            .any(|j| j["jobId"] == cancelled && j["status"] == "cancelled"),
        "the simulator saw job {cancelled} cancelled"
    );
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert!(
        w.staging_blobs().await.is_empty(),
        "{:?}",
        w.staging_blobs().await
    );
}

/// A device missing from the export (the service lost it, or a line was damaged) used to go
/// unnoticed: the snapshot held one device less, and a mirror restore would delete it. The hub's
/// own count is compared before the snapshot is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_lost_a_device_is_not_committed() {
    let Some(cs) = azurite() else { return };
    let w = World::start(
        &cs,
        Setup {
            devices: 40,
            ..Setup::default()
        },
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let counts = &json_of(&out)["hub_counts"];
    assert_eq!(counts["devices_before"], 40, "{counts:#}");
    assert_eq!(counts["devices_after"], 40, "{counts:#}");

    w.control(
        reqwest::Method::PATCH,
        "/hubs/hub-a/faults",
        Some(json!({"export_skip_devices": 1})),
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = json_of(&out);
    assert_eq!(err["error"]["code"], "backup_count_mismatch", "{err:#}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("holds 39 devices, but the hub counted 40"),
        "{err:#}"
    );
    assert_eq!(w.snapshots(HUB_A).len(), 1, "nothing committed");
    assert!(
        w.staging_blobs().await.is_empty(),
        "{:?}",
        w.staging_blobs().await
    );
}
