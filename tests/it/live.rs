//! Live backup and preflight against the in-process simulator, with staging in real Azurite.
//!
//! Each test starts its own simulated world (hub-a, hub-b, ARM) on 127.0.0.1, a fresh staging
//! container and a hubvault.toml pointing at both (the `support` harness), and drives the real
//! `hubvault` binary, every output of which is scanned for secrets. The truth is read from the
//! simulator's control API (registry, jobs) and from Azurite's listing (staging must be empty),
//! never from hubvault's own account of what it did.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use hubvault::store::Store as _;
use serde_json::{Value, json};

use crate::support::{
    Hubvault, Out, Spawned, Staging, Workdir, World, assert_no_secrets, azurite, ndjson,
};

mod uncommitted;

/// hub-a (seeded) and an empty hub-b, a fresh staging container in Azurite, and a work folder
/// whose config names them, with an identity; every run's output is scanned for secrets.
struct Live {
    sim: World,
    staging: Staging,
    wd: Workdir,
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

impl Live {
    async fn start(cs: &str, setup: Setup) -> Live {
        let sim = World::builder()
            .hubs(&[("hub-a", setup.devices), ("hub-b", 0)])
            .arm(setup.arm)
            .start()
            .await;
        let wd = Workdir::new();
        wd.write_identity();
        wd.set_env("HUBVAULT_JOB_POLL_MS", "40");
        let w = Live {
            sim,
            staging: Staging::fresh(cs, "live").await,
            wd,
        };
        w.write_config(setup, None);
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.wd.join(rel)
    }

    /// hubvault.toml; `hub_b_cs` replaces hub-b's connection string (a wrong key, a weak policy).
    fn write_config(&self, setup: Setup, hub_b_cs: Option<&str>) {
        let config = self
            .wd
            .config(&self.sim)
            .arm(setup.arm)
            .staging(&self.staging)
            .sas_lifetime(setup.sas_lifetime);
        match hub_b_cs {
            Some(cs) => config.hub_connection_string("hub-b", cs).write(),
            None => config.write(),
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Hubvault {
        env.iter()
            .fold(self.wd.hubvault().args(args), |c, (k, v)| c.env(k, v))
            .within(Duration::from_secs(120))
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = self.command(args, env).run().await;
        self.assert_no_secrets(&out.text()).await;
        out
    }

    async fn assert_no_secrets(&self, text: &str) {
        let secrets = self.sim.secrets(&["hub-a", "hub-b"]).await;
        assert_no_secrets(text, &secrets, "hubvault");
    }

    /// The hub's registry as the simulator holds it: (id, moduleId) → primary key.
    async fn registry(&self, hub: &str) -> BTreeSet<(String, String, String)> {
        triples(&self.sim.registry(hub).await)
    }

    async fn staging_blobs(&self) -> Vec<String> {
        self.staging.leftovers().await
    }

    async fn jobs(&self, hub: &str) -> Vec<Value> {
        self.sim.jobs(hub).await
    }

    /// Wait (bounded) until the hub has no queued or running job.
    async fn wait_jobs_done(&self, hub: &str) {
        let done = self.sim.jobs_done(hub, Duration::from_secs(15)).await;
        assert!(done, "jobs of {hub} did not finish");
    }

    /// Snapshot ids of a hub in the local store, read from the folder.
    fn snapshots(&self, hub: &str) -> Vec<String> {
        let dir = self.wd.store().join(hub);
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("manifest.g1.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// (id, moduleId, primaryKey) of every export line.
fn triples(lines: &[Value]) -> BTreeSet<(String, String, String)> {
    lines
        .iter()
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

async fn dump_latest(w: &Live, out: &str) -> BTreeSet<(String, String, String)> {
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
    assert!(o.status.success(), "dump: {}", o.stderr);
    triples(&ndjson(
        &std::fs::read_to_string(w.path(out).join("devices.txt")).unwrap(),
    ))
}

const HUB_A: &str = "hub-a.azure-devices.net";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_from_hub_seals_the_registry_and_empties_staging() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    let out = w
        .run(&["--json", "-vvv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
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
    let configurations = w.sim.configurations_text("hub-a").await;
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
        out.stderr.contains("deleted 2 plaintext staging blob(s)"),
        "{}",
        out.stderr
    );

    // The snapshot holds every identity with its key, and records the job.
    assert_eq!(dump_latest(&w, "dump1").await, truth);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            w.path("store")
                .join(HUB_A)
                .join(report["snapshot"].as_str().unwrap())
                .join("manifest.g1.json"),
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
async fn assert_fresh_least_privilege_sas(w: &Live, job_id: &str) {
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
    assert!(out.status.success(), "{}", out.stderr);
    let second = out.json()["job_id"].clone();
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
    let w = Live::start(
        &cs,
        Setup {
            devices: 30,
            ..Setup::default()
        },
    )
    .await;
    let fresh = Staging::fresh(&cs, "vault").await;
    let (container, vault) = (&fresh.container, fresh.under("p"));
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
    assert!(out.status.success(), "{}", out.stderr);
    let names: Vec<String> = vault
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let snap = out.json()["snapshot"].as_str().unwrap().to_owned();
    for file in [
        "manifest.g1.json",
        "signature.g1.json",
        "devices.g1.jsonl.zst.age",
    ] {
        assert!(
            names.contains(&format!("{HUB_A}/{snap}/{file}")),
            "{file}: {names:?}"
        );
    }
    let listed = w
        .run(&["--json", "--store", &store, "snapshots"], &[])
        .await;
    assert!(listed.stdout.contains(&snap));
    assert!(w.staging_blobs().await.is_empty());
    vault.delete_container().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_leave_no_snapshot_and_no_staging() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    let ok = w.run(&["backup", "--hub", "hub-a"], &[]).await;
    assert!(ok.status.success(), "{}", ok.stderr);
    let before = w.snapshots(HUB_A);
    assert_eq!(before.len(), 1);

    // A job that fails half-way (simulator fault).
    w.sim.faults("hub-a", json!({"fail_next_job": true})).await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let err = out.json();
    assert_eq!(err["error"]["code"], "export_job_failed");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "the job's failureReason is shown: {err}"
    );
    assert!(out.stderr.contains("deleted"), "{}", out.stderr);
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
        verify.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_retried_and_the_backup_completes() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    w.sim.limits("hub-a", json!({"rates": {"jobs": 2.0, "statistics": 1.0, "registry": 1.0}, "retry_after_secs": 1}))
    .await;
    let out = w
        .run(&["--json", "-vv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "throttled: {}", out.stderr);
    assert!(
        out.stderr.contains("retrying"),
        "the hub did throttle: {}",
        out.stderr
    );
    assert_eq!(w.snapshots(HUB_A).len(), 1);
    assert!(w.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_is_retried_and_the_backup_completes() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    w.sim
        .faults("hub-a", json!({"error_burst": 3, "error_status": 503}))
        .await;
    let out = w
        .run(&["--json", "-vv", "backup", "--hub", "hub-a"], &[])
        .await;
    assert!(out.status.success(), "5xx burst: {}", out.stderr);
    assert!(
        out.stderr.contains("retrying"),
        "the hub did fail: {}",
        out.stderr
    );
    let faults = w.sim.faults("hub-a", json!({})).await;
    assert_eq!(faults["error_burst"], 0, "the whole burst was spent");
    assert_eq!(w.snapshots(HUB_A).len(), 1);
    assert!(w.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sas_fails_the_job_with_its_reason() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(
        &cs,
        Setup {
            sas_lifetime: "1s",
            ..Setup::default()
        },
    )
    .await;
    // The job waits in the queue longer than the SAS lives.
    w.sim.limits("hub-a", json!({"job_queue_ms": 2500})).await;
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a", "--no-preflight"],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let err = out.json();
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
async fn occupy_slot(w: &Live) -> (String, Spawned) {
    w.sim.limits("hub-a", json!({"job_rate": 60.0})).await;
    let child = w.command(&["backup", "--hub", "hub-a"], &[]).spawn();
    let job = w
        .sim
        .running_job("hub-a", None, Duration::from_secs(5))
        .await;
    (job["jobId"].as_str().unwrap().to_owned(), child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_job_slot_is_named_or_waited_for() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    let (running, holder) = occupy_slot(&w).await;
    let out = w.run(&["--json", "preflight", "--to", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let report = out.json();
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
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&running),
        "names the running job: {}",
        out.stderr
    );

    let out = w
        .run(&["--json", "backup", "--hub", "hub-a", "--wait"], &[])
        .await;
    assert!(out.status.success(), "--wait waits: {}", out.stderr);
    assert!(
        holder.finish().await.unwrap().status.success(),
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
    let w = Live::start(&cs, Setup::default()).await;
    // A legacy leftover of another hub (no journal): younger than the longest job, it stays.
    let other = "staging/hub-b.azure-devices.net/20200101T000000Z-00000000/devices.txt";
    w.staging
        .store
        .put(other, bytes::Bytes::from_static(b"{}\n"))
        .await
        .unwrap();

    w.sim.seed("hub-b", 5, 7).await;
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
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead[0]["hub"], HUB_A, "{dead:#}");
    assert!(dead[0]["blobs_deleted"].as_u64().unwrap() >= 1, "{dead:#}");
    assert_eq!(
        dead[0]["finished"], false,
        "hub-b cannot tell whether hub-a's job ended"
    );
    assert!(
        out.stderr
            .contains("a killed run of hub-a.azure-devices.net"),
        "{}",
        out.stderr
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
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert_eq!(
        w.staging_blobs().await,
        vec![other.to_owned()],
        "only the legacy leftover of another hub is left"
    );
    assert_eq!(w.snapshots(HUB_A).len(), 1);
}

/// Start `backup --hub hub-a`, let it create its export job, SIGKILL it; returns when.
async fn kill_backup_while_its_job_runs(w: &Live) -> std::time::Instant {
    let mut child = w
        .command(
            &["backup", "--hub", "hub-a"],
            &[("HUBVAULT_FAULT_PAUSE", "export-running")],
        )
        .spawn();
    let paused = child
        .wait_for_stderr("paused at export-running", Duration::from_secs(60))
        .await;
    assert!(paused);
    child.kill().await;
    std::time::Instant::now()
}

/// The fault-matrix cell of the open item: a `backup --hub` killed (SIGKILL) while its export runs,
/// its job left to finish (writing every device key in plaintext into staging after the kill),
/// and the same command run again at once, well inside the dead run's 15 s lease. The re-run
/// sees from the journal (same machine, process gone) that the run is dead: after it, staging
/// is empty and the dead run's job had ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_is_swept_by_the_next_run_at_once() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(
        &cs,
        Setup {
            devices: 20,
            ..Setup::default()
        },
    )
    .await;
    let killed_at = kill_backup_while_its_job_runs(&w).await;
    w.wait_jobs_done("hub-a").await;
    assert!(
        w.staging_blobs()
            .await
            .iter()
            .any(|n| n.ends_with("/devices.txt")),
        "the killed run's job wrote its plaintext after the kill"
    );
    let rerun_at = killed_at.elapsed();
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    eprintln!(
        "re-run started {rerun_at:?} after the kill, took {:?}",
        killed_at.elapsed().saturating_sub(rerun_at)
    );
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead:#}");
    assert_eq!(dead[0]["hub"], HUB_A, "{dead:#}");
    assert!(dead[0]["blobs_deleted"].as_u64().unwrap() >= 1, "{dead:#}");
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert_eq!(
        w.staging_blobs().await,
        Vec::<String>::new(),
        "no devices.txt, no journal of the killed run"
    );
    let jobs = w.jobs("hub-a").await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    for job in &jobs {
        assert!(
            matches!(job["status"].as_str(), Some("completed" | "cancelled")),
            "{job:#}"
        );
    }
    assert_eq!(w.snapshots(HUB_A).len(), 1);
}

/// The same kill, but the dead run's export is still running when the next run starts (a slow
/// job: 20 devices at 1 a second, about 20 s). The re-run cancels it through the hub (the
/// simulator marks a cancelled job `cancelled` at once and its work stops at its next step,
/// before committing `devices.txt`), waits for it to stop, then deletes the dead run's blobs;
/// nothing of that run appears in staging afterwards either, and the re-run's own snapshot
/// is committed and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_whose_job_still_runs_is_cancelled_and_swept() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(
        &cs,
        Setup {
            devices: 20,
            ..Setup::default()
        },
    )
    .await;
    w.sim.limits("hub-a", json!({"job_rate": 1.0})).await;
    let killed_at = kill_backup_while_its_job_runs(&w).await;
    // Only the dead run's job is slow: the re-run's own export runs unpaced.
    w.sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    let dead_job = w
        .sim
        .running_job("hub-a", Some("export"), Duration::from_secs(5))
        .await;
    let dead_id = dead_job["jobId"].as_str().unwrap().to_owned();
    let dead_blobs = w.staging_blobs().await;
    assert!(
        !dead_blobs.is_empty(),
        "the killed run's journal is in staging"
    );

    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    eprintln!("re-run took {:?} after the kill", killed_at.elapsed());
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead:#}");
    assert_eq!(dead[0]["hub"], HUB_A, "{dead:#}");
    assert_eq!(dead[0]["cancelled_job"], dead_id.as_str(), "{dead:#}");
    assert_eq!(dead[0]["finished"], true, "{dead:#}");

    let jobs = w.jobs("hub-a").await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    let killed = jobs
        .iter()
        .find(|j| j["jobId"] == dead_id.as_str())
        .unwrap();
    assert_eq!(killed["status"], "cancelled", "{killed:#}");
    assert!(killed["progress"].as_u64().unwrap() < 100, "{killed:#}");
    let own = jobs
        .iter()
        .find(|j| j["jobId"] != dead_id.as_str())
        .unwrap();
    assert_eq!(own["status"], "completed", "{own:#}");

    assert_eq!(w.staging_blobs().await, Vec::<String>::new());
    // Long enough for the cancelled job's worker to take its next step (a second at
    // 1 device a second): it writes nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.staging_blobs().await,
        Vec::<String>::new(),
        "nothing of the killed run appears after the sweep"
    );

    let snapshots = w.snapshots(HUB_A);
    assert_eq!(snapshots.len(), 1);
    assert_eq!(out.json()["snapshot"], snapshots[0].as_str());
    let verify = w.run(&["verify", "--all", "--read-data"], &[]).await;
    assert!(verify.status.success(), "{}", verify.stderr);
}

/// Two runs at once through one staging container: a live run (paused while its export runs,
/// renewing its journal) is never swept by another run of the same hub or of another hub, and
/// is swept by the first run after it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_is_left_alone_by_concurrent_runs() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(
        &cs,
        Setup {
            devices: 20,
            ..Setup::default()
        },
    )
    .await;
    w.sim.seed("hub-b", 5, 7).await;
    let mut live = w
        .command(
            &["backup", "--hub", "hub-a"],
            &[("HUBVAULT_FAULT_PAUSE", "export-running")],
        )
        .spawn();
    assert!(
        live.wait_for_stderr("paused at export-running", Duration::from_secs(60))
            .await
    );
    w.wait_jobs_done("hub-a").await;
    let before = w.staging_blobs().await;
    assert!(
        before.iter().any(|n| n.ends_with("/devices.txt")),
        "{before:?}"
    );
    for hub in ["hub-b", "hub-a"] {
        let out = w
            .run(&["--json", "backup", "--hub", hub, "--wait"], &[])
            .await;
        assert!(out.status.success(), "{hub}: {}", out.stderr);
        assert_eq!(out.json()["dead_runs"], json!([]), "{hub}");
        assert_eq!(
            w.staging_blobs().await,
            before,
            "nothing of the live run was touched"
        );
    }
    live.kill().await;
    live.finish().await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["dead_runs"][0]["finished"], true);
    assert_eq!(w.staging_blobs().await, Vec::<String>::new());
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding: {report}"))
}

async fn firewall_allowing_only_127_0_0_2(w: &Live) {
    w.sim.firewall("hub-b", json!({"networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": false,
            "ipRules": [{"filterName": "office", "action": "Allow", "ipMask": "127.0.0.2"}]}}))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_the_firewall_rule_and_passes_an_allowed_caller() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
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
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let report = out.json();
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
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    assert_eq!(out.json()["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_without_arm_explains_401002_as_the_likely_firewall() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(
        &cs,
        Setup {
            arm: false,
            ..Setup::default()
        },
    )
    .await;
    firewall_allowing_only_127_0_0_2(&w).await;
    let out = w.run(&["--json", "preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let report = out.json();
    let cred = finding(&report, "credentials");
    assert_eq!(cred["code"], "401002");
    assert!(
        cred["detail"].as_str().unwrap().contains("IP firewall"),
        "{cred}"
    );
    // A table without --json, same verdict.
    let out = w.run(&["preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.contains("FAIL  credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_tells_a_wrong_key_and_a_missing_permission() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    let hub_b = w.sim.hub("hub-b").clone();
    let read_only = hub_b.connection_string("registryRead").unwrap();
    w.sim
        .add_secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    w.sim
        .add_secret(read_only.rsplit("SharedAccessKey=").next().unwrap());

    // Wrong key, firewall open to everyone: ARM says the caller is allowed ⇒ the key is wrong.
    let wrong = "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    w.write_config(Setup::default(), Some(wrong));
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
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let report = out.json();
    let cred = finding(&report, "credentials");
    assert_eq!(cred["code"], "bad_credential", "{cred}");
    assert!(
        cred["detail"].as_str().unwrap().contains("key is wrong"),
        "{cred}"
    );
    assert_eq!(finding(&report, "ip-firewall")["ok"], true);

    // registryRead cannot run export jobs.
    w.write_config(Setup::default(), Some(&read_only));
    let out = w.run(&["--json", "preflight", "--to", "hub-b"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let report = out.json();
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
    let w = Live::start(&cs, Setup::default()).await;
    w.sim.limits("hub-a", json!({"job_rate": 20.0})).await;
    let child = w
        .command(&["backup", "--hub", "hub-a"], &[])
        .within(Duration::from_secs(60))
        .spawn();
    let running = w
        .sim
        .job_where("hub-a", Duration::from_secs(10), |j| {
            j["status"] == "running"
        })
        .await;
    let job_id = running.expect("export job running")["jobId"].clone();
    child.interrupt();
    let out = child.finish().await.unwrap();
    let text = out.stderr.clone();
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

/// SIGTERM (a service manager, Kubernetes) stops a run the same way: one place cancels its job
/// and deletes its staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_the_job_and_deletes_staging_like_ctrl_c() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    w.sim.limits("hub-a", json!({"job_rate": 20.0})).await;
    let child = w
        .command(&["backup", "--hub", "hub-a"], &[])
        .within(Duration::from_secs(60))
        .spawn();
    let running = w
        .sim
        .job_where("hub-a", Duration::from_secs(10), |j| {
            j["status"] == "running"
        })
        .await;
    let job_id = running.expect("export job running")["jobId"].clone();
    child.terminate();
    let out = child.finish().await.unwrap();
    let text = out.stderr.clone();
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
    let w = Live::start(&cs, Setup::default()).await;
    let hub_b = w.sim.hub("hub-b");
    let client = HubClient::new(
        Connection::from_connection_string(&hub_b.connection_string("iothubowner").unwrap())
            .unwrap()
            .with_endpoint(hub_b.endpoint.parse().unwrap()),
    )
    .unwrap();
    let container = w.staging.container.clone();
    let config = Config::parse(
        &format!("[staging]\nconnection-string = {cs:?}\ncontainer = {container:?}\n"),
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    // An earlier run of hub-b whose import job still runs (slowly) over its input blob.
    let earlier = Staging::open(None, &config, "hub-b.azure-devices.net").unwrap();
    let registry = w.sim.registry_text("hub-a").await;
    earlier
        .store()
        .put(&earlier.object("devices.txt"), bytes::Bytes::from(registry))
        .await
        .unwrap();
    w.sim.limits("hub-b", json!({"job_rate": 60.0})).await;
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
    let w = Live::start(&cs, Setup::default()).await;
    let folder = w.path("file-staging");
    std::fs::create_dir_all(&folder).unwrap();
    let url = format!("file://{}", folder.display());
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a", "--staging", &url],
            &[],
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["staging_deleted"], 2);
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
    let w = Live::start(&cs, Setup::default()).await;
    let url = w.staging.sas_url(SasPermissions::all()).to_string();
    let sig: std::collections::HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    w.sim.add_secret(&sig["sig"]);
    w.sim.add_secret(
        &url::form_urlencoded::byte_serialize(sig["sig"].as_bytes()).collect::<String>(),
    );
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
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["staging_deleted"], 2);
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
    let w = Live::start(
        &cs,
        Setup {
            devices: 30,
            ..Setup::default()
        },
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let id = out.json()["snapshot"].as_str().unwrap().to_owned();
    let hub_cs = w.sim.connection_string("hub-a");
    for name in ["hub-a", HUB_A, "HUB-A.azure-devices.net", hub_cs.as_str()] {
        let out = w.run(&["--json", "snapshots", "--hub", name], &[]).await;
        assert!(out.status.success(), "{}", out.stderr);
        let listed = out.json();
        assert_eq!(listed[0]["id"], id.as_str(), "snapshots --hub {name:.12}…");
        let out = w
            .run(&["--json", "show", "latest", "--hub", name], &[])
            .await;
        assert!(
            out.status.success(),
            "show latest --hub {name:.12}…: {}",
            out.stderr
        );
        assert_eq!(out.json()["id"], id.as_str());
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
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["snapshot"], id.as_str());

    let out = w
        .run(&["--json", "show", "latest", "--hub", "hub-z"], &[])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let err = out.json();
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
    let w = Live::start(
        &cs,
        Setup {
            devices: 60,
            ..Setup::default()
        },
    )
    .await;
    // A slow export: still running long after its runner is killed.
    w.sim.limits("hub-a", json!({"job_rate": 1.0})).await;
    let killed_at = kill_backup_while_its_job_runs(&w).await;
    tokio::time::sleep(Duration::from_secs(17).saturating_sub(killed_at.elapsed())).await;
    assert!(
        w.jobs("hub-a")
            .await
            .iter()
            .any(|j| j["status"] == "running"),
        "the dead run's job still runs"
    );
    w.sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
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
    let w = Live::start(
        &cs,
        Setup {
            devices: 40,
            ..Setup::default()
        },
    )
    .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let counts = &out.json()["hub_counts"];
    assert_eq!(counts["devices_before"], 40, "{counts:#}");
    assert_eq!(counts["devices_after"], 40, "{counts:#}");

    w.sim
        .faults("hub-a", json!({"export_skip_devices": 1}))
        .await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let err = out.json();
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
