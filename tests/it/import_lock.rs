//! Two restores through one staging container at once: the hub writes `importErrors.log` at the
//! container root, so each run must read its own log, never the other's, and leave nothing.
//! Judged by the reports and by what the simulator and Azurite read back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{assert_no_secrets, azurite, fast_world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_restores_sharing_a_prefixed_staging_container_each_read_their_own_error_log() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(
        &cs,
        &[("hub-a", 600), ("hub-b", 0), ("hub-c", 0)],
        31,
        "lock",
    )
    .await;
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

    wd.config(&sim)
        .staging(&staging)
        .staging_prefix("shared/prefix")
        .write();
    let clone = |to: &str| {
        wd.hubvault()
            .args([
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
            .within(Duration::from_secs(180))
            .run()
    };
    let (b, c) = tokio::join!(clone("hub-b"), clone("hub-c"));
    let secrets = sim.secrets(&["hub-a", "hub-b", "hub-c"]).await;
    assert_no_secrets(&b.text(), &secrets, "clone to hub-b");
    assert_no_secrets(&c.text(), &secrets, "clone to hub-c");

    let (rb, rc) = (b.doc(), c.doc());
    assert_eq!(b.status.code(), Some(0), "{}", b.text());
    assert_eq!(rb["failed"], json!([]), "hub-b read no other log: {rb:#}");
    assert_eq!(rb["verified"], true, "{rb:#}");
    assert_eq!(
        rb["retried"], 0,
        "hub-b's import had no failed line: {rb:#}"
    );

    assert_eq!(c.status.code(), Some(1), "{}", c.text());
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
        .filter(|o| o.stderr.contains("take turns"))
        .count();
    assert_eq!(
        waited,
        1,
        "one run said it waited:\n{}\n{}",
        b.text(),
        c.text()
    );

    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "no error log, lock or run blob is left at the root or under the prefix"
    );
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_of_another_hub_blocks_the_container_with_a_clear_fix() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(
        &cs,
        &[("hub-a", 400), ("hub-b", 0), ("hub-c", 0)],
        32,
        "stale",
    )
    .await;
    sim.limits("hub-b", json!({"job_rate": 100.0})).await;
    let clone = |to: &str| {
        wd.hubvault().args([
            "clone", "--from", "hub-a", "--to", to, "--engine", "job", "--json",
        ])
    };

    // SIGKILL a clone into hub-b while its import job runs: its job may still write
    // importErrors.log at the container root.
    let mut child = clone("hub-b").spawn();
    sim.running_job("hub-b", Some("import"), Duration::from_secs(30))
        .await;
    child.kill().await;

    // A clone into hub-c through the same container refuses rather than read that log.
    let out = clone("hub-c").within(Duration::from_secs(120)).run().await;
    assert_no_secrets(
        &out.text(),
        &sim.secrets(&["hub-a", "hub-c"]).await,
        "clone to hub-c",
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    let err = out.doc();
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
    let out = clone("hub-b")
        .env("HUBVAULT_STAGING_LEFTOVER_SECS", "0")
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "the rerun removed the lock and the logs"
    );
    staging.delete().await;
}
