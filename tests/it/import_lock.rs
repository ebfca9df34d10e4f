//! Two restores through one staging container at once: the hub writes `importErrors.log` at the
//! container root, so each run must read its own log, never the other's, and leave nothing.
//! Judged by the reports and by what the simulator and Azurite read back.

use std::time::Duration;

use hubvault::store::Store as _;
use hubvault::store::azure::{AzureLocation, AzureStore};
use serde_json::{Value, json};

use crate::support::{self, assert_no_secrets, hubvault, run, text};

/// Every blob of the whole container (the staging location below has a prefix).
async fn whole_container(cs: &str, container: &str) -> Vec<String> {
    let store = AzureStore::new(
        AzureLocation::from_connection_string(cs, container).unwrap(),
        None,
    )
    .unwrap();
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_restores_sharing_a_prefixed_staging_container_each_read_their_own_error_log() {
    let Some(cs) = support::azurite() else { return };
    let sim = support::start_sim(&[("hub-a", 600), ("hub-b", 0), ("hub-c", 0)], 31).await;
    for h in ["hub-a", "hub-b", "hub-c"] {
        sim.limits(
            h,
            json!({"job_rate": 0.0, "job_queue_ms": 10, "retry_after_secs": 1}),
        )
        .await;
    }
    // Slow imports, so the second run reaches its import while the first one's still runs.
    for h in ["hub-b", "hub-c"] {
        sim.limits(h, json!({"job_rate": 400.0})).await;
    }
    // hub-c takes 50 devices fewer than the fleet: its import logs 403002 for the rest.
    let source = sim.registry("hub-a").await;
    let devices = source
        .iter()
        .filter(|l| l.get("moduleId").is_none())
        .count();
    sim.limits("hub-c", json!({"device_quota": devices - 50}))
        .await;

    let mut staging = support::staging_container(&cs, "lock").await;
    let container = staging.container.clone();
    staging.container = format!("{container}/shared/prefix");
    let wd = support::workdir(&sim, Some(&staging));
    let clone = |to: &str| {
        let mut cmd = hubvault(&wd);
        cmd.args([
            "clone",
            "--from",
            "hub-a",
            "--to",
            to,
            "--engine",
            "job",
            "--wait",
            "--no-preflight",
            "--json",
        ])
        .env("HUBVAULT_JOB_POLL_MS", "50");
        run(cmd, Duration::from_secs(180))
    };
    let (b, c) = tokio::join!(clone("hub-b"), clone("hub-c"));
    let secrets = sim.secrets(&["hub-a", "hub-b", "hub-c"]).await;
    assert_no_secrets(&text(&b), &secrets, "clone to hub-b");
    assert_no_secrets(&text(&c), &secrets, "clone to hub-c");

    let rb: Value = serde_json::from_slice(&b.stdout).unwrap_or(Value::Null);
    let rc: Value = serde_json::from_slice(&c.stdout).unwrap_or(Value::Null);
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    assert_eq!(rb["failed"], json!([]), "hub-b read no other log: {rb:#}");
    assert_eq!(rb["verified"], true, "{rb:#}");
    assert_eq!(
        rb["retried"], 0,
        "hub-b's import had no failed line: {rb:#}"
    );

    assert_eq!(c.status.code(), Some(1), "{}", text(&c));
    let failed = rc["failed"].as_array().expect("a failed list");
    let quota: Vec<&Value> = failed.iter().filter(|f| f["code"] == "403002").collect();
    // The service's 403002 log line names no device, so the report counts them without ids;
    // a run that missed its log (under a prefixed location) would report none at all.
    assert!(
        quota.len() >= 50,
        "hub-c's own log named the 50 devices over its quota: {rc:#}"
    );
    assert_eq!(
        sim.registry("hub-c")
            .await
            .iter()
            .filter(|l| l.get("moduleId").is_none())
            .count(),
        devices - 50
    );
    // The two imports overlapped on the container, so one of them waited for the other.
    let waited = [&b, &c]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("take turns"))
        .count();
    assert_eq!(
        waited,
        1,
        "one run said it waited:\n{}\n{}",
        text(&b),
        text(&c)
    );

    assert_eq!(
        whole_container(&cs, &container).await,
        Vec::<String>::new(),
        "no error log, lock or run blob is left at the root or under the prefix"
    );
    staging.store.delete_container().await.unwrap();
}

/// Wait (bounded) until `hub` runs an import job.
async fn wait_for_import(sim: &support::Sim, hub: &str) {
    for _ in 0..600 {
        if sim
            .jobs(hub)
            .await
            .iter()
            .any(|j| j["type"] == "import" && j["status"] == "running")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no import job of {hub} ran within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_of_another_hub_blocks_the_container_with_a_clear_fix() {
    let Some(cs) = support::azurite() else { return };
    let sim = support::start_sim(&[("hub-a", 400), ("hub-b", 0), ("hub-c", 0)], 32).await;
    for h in ["hub-a", "hub-b", "hub-c"] {
        sim.limits(
            h,
            json!({"job_rate": 0.0, "job_queue_ms": 10, "retry_after_secs": 1}),
        )
        .await;
    }
    sim.limits("hub-b", json!({"job_rate": 100.0})).await;
    let staging = support::staging_container(&cs, "stale").await;
    let wd = support::workdir(&sim, Some(&staging));
    let clone = |to: &str| {
        let mut cmd = hubvault(&wd);
        cmd.args([
            "clone", "--from", "hub-a", "--to", to, "--engine", "job", "--json",
        ])
        .env("HUBVAULT_JOB_POLL_MS", "50");
        cmd
    };

    // SIGKILL a clone into hub-b while its import job runs: its job may still write
    // importErrors.log at the container root.
    let mut killed = clone("hub-b");
    killed
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = killed.spawn().unwrap();
    wait_for_import(&sim, "hub-b").await;
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;

    // A clone into hub-c through the same container refuses rather than read that log.
    let out = run(clone("hub-c"), Duration::from_secs(120)).await;
    assert_no_secrets(
        &text(&out),
        &sim.secrets(&["hub-a", "hub-c"]).await,
        "clone to hub-c",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(err["error"]["code"], "staging_import_lock_stale", "{err:#}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("an import into hub-b.azure-devices.net")
            && message.contains("another staging container")
            && message.contains("hubvault-import.lock"),
        "{message}"
    );
    assert!(
        sim.jobs("hub-c")
            .await
            .iter()
            .all(|j| j["type"] != "import"),
        "no import job was started on hub-c"
    );

    // The interrupted hub's own rerun takes the lock over, completes and leaves nothing.
    sim.limits("hub-b", json!({"job_rate": 0.0})).await;
    let mut rerun = clone("hub-b");
    rerun.env("HUBVAULT_STAGING_LEFTOVER_SECS", "0");
    let out = run(rerun, Duration::from_secs(120)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        whole_container(&cs, &staging.container).await,
        Vec::<String>::new(),
        "the rerun removed the lock and the logs"
    );
    staging.store.delete_container().await.unwrap();
}
