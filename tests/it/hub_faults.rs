//! What a hub does to a long run besides throttling: a failover (404012 for a while), SAS tokens
//! reaching their expiry mid-job, and a device cap too small for the plan. Driven through the
//! real binary against the simulator (+ Azurite staging); judged by exit codes, the report and
//! what the simulator reads back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ARM_TOKEN, World, assert_no_secrets, azurite, fast_world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_rides_through_a_failover_that_starts_mid_job() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 400)], 41, "failover").await;
    wd.write_identity();
    // About four seconds of export: time to start the failover while the run polls the job.
    sim.limits("hub-a", json!({"job_rate": 110.0})).await;

    let backup = tokio::spawn(
        wd.hubvault()
            .args(["--json", "backup", "--hub", "hub-a"])
            .within(Duration::from_secs(120))
            .run(),
    );
    sim.running_job("hub-a", None, Duration::from_secs(15))
        .await;
    let faults = sim.faults("hub-a", json!({"failing_over_ms": 2500})).await;
    assert!(faults["failing_over_until_ms"].is_u64(), "{faults}");
    let out = backup.await.unwrap();

    assert_no_secrets(&out.text(), &sim.secrets(&["hub-a"]).await, "backup");
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    let stderr = &out.stderr;
    assert!(
        stderr.contains("hub-a is failing over (404012 IotHubFailingOver); retrying"),
        "the user is told what the retries are about: {stderr}"
    );
    let report = out.doc();
    let job_id = report["job_id"].as_str().expect("job_id");
    assert!(
        sim.jobs("hub-a")
            .await
            .iter()
            .any(|j| j["jobId"] == job_id && j["status"] == "completed"),
        "the export job completed"
    );
    assert_eq!(report["devices"], 400, "{report:#}");
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_outlasts_the_retries_is_named_with_what_to_do() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 20)], 42, "failoverlong").await;
    wd.write_identity();
    sim.faults("hub-a", json!({"failing_over_ms": 600_000}))
        .await;

    let started = Instant::now();
    let out = wd
        .hubvault()
        .args(["--json", "backup", "--hub", "hub-a", "--no-preflight"])
        .env("HUBVAULT_RETRY_MAX_SECS", "3")
        .within(Duration::from_secs(60))
        .run()
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the retries are bounded in time"
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    let err = out.doc();
    assert_eq!(err["error"]["code"], "hub_failing_over", "{err:#}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("hub-a is failing over (404012 IotHubFailingOver)")
            && message.contains("retry when its failover completes"),
        "{message}"
    );

    // Preflight says the same as a finding with the fix.
    let out = wd
        .hubvault()
        .args(["--json", "preflight", "--to", "hub-a"])
        .env("HUBVAULT_RETRY_MAX_SECS", "2")
        .within(Duration::from_secs(60))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let report = out.doc();
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "hub_failing_over")
        .unwrap_or_else(|| panic!("a failover finding: {report:#}"));
    assert!(
        finding["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("failover to complete"),
        "{finding}"
    );
    assert!(sim.jobs("hub-a").await.is_empty(), "no job was started");
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_several_sas_tokens_of_the_run() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 400)], 43, "sasttl").await;
    wd.write_identity();
    // An export of about seven seconds, tokens of three, and a hub whose clock runs a second
    // ahead of ours: some cached token is refused before we would renew it.
    sim.limits("hub-a", json!({"job_rate": 60.0})).await;
    sim.faults("hub-a", json!({"expire_tokens_early_secs": 1}))
        .await;

    let started = Instant::now();
    let out = wd
        .hubvault()
        .args(["--json", "-vv", "backup", "--hub", "hub-a"])
        .env("HUBVAULT_SAS_TTL_SECS", "3")
        .within(Duration::from_secs(120))
        .run()
        .await;
    let took = started.elapsed();

    assert_no_secrets(&out.text(), &sim.secrets(&["hub-a"]).await, "backup -vv");
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert!(
        took > Duration::from_secs(6),
        "the run outlived two token lifetimes ({took:?})"
    );
    let stderr = &out.stderr;
    assert!(
        stderr.contains("401: retrying once with a freshly signed token"),
        "a token refused before its expiry on our clock was replaced: {stderr}"
    );
    let report = out.doc();
    assert_eq!(report["devices"], 400, "{report:#}");
    assert!(
        sim.jobs("hub-a")
            .await
            .iter()
            .any(|j| j["jobId"] == report["job_id"] && j["status"] == "completed")
    );
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
    staging.delete().await;
}

/// Put hub `name` on the Free tier through the simulated ARM (as the portal would show it).
async fn free_tier(sim: &World, name: &str) {
    let hub = sim.hub(name);
    let url = format!(
        "{}{}?api-version=2023-06-30",
        sim.running.arm.as_deref().unwrap(),
        hub.resource_id
    );
    let http = reqwest::Client::new();
    let mut doc: Value = http
        .get(&url)
        .bearer_auth(ARM_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["sku"] = json!({"name": "F1", "tier": "Free", "capacity": 1});
    let put = http
        .put(&url)
        .bearer_auth(ARM_TOKEN)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "ARM PUT: {}", put.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_free_tier_hub_too_small_for_the_plan_stops_at_preflight() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 600), ("hub-b", 0)], 44, "quota").await;
    wd.write_identity();
    free_tier(&sim, "hub-b").await;
    sim.limits("hub-b", json!({"device_quota": 500})).await;
    let out = wd
        .hubvault()
        .args(["backup", "--hub", "hub-a"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());

    let out = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--to", "hub-b", "--engine", "job",
        ])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let report = out.doc();
    let findings = report["preflight"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("preflight findings: {report:#}"));
    let quota: Vec<&Value> = findings
        .iter()
        .filter(|f| f["check"] == "device-quota")
        .collect();
    assert_eq!(quota.len(), 1, "one quota finding: {findings:#?}");
    let f = quota[0];
    assert_eq!(f["ok"], false, "{f}");
    assert_eq!(f["code"], "403002");
    let creates = report["plan"]["create"].as_u64().unwrap();
    assert!(creates > 500, "{report:#}");
    assert_eq!(
        f["detail"],
        format!(
            "hub-b: 0 existing + {creates} new = {creates}, over the limit of 500 (the cap of its F1 tier)"
        )
    );
    assert!(f["fix"].as_str().unwrap().contains("higher tier"), "{f}");
    assert!(
        sim.registry("hub-b").await.is_empty(),
        "nothing was written"
    );
    assert!(
        sim.jobs("hub-b")
            .await
            .iter()
            .all(|j| j["type"] != "import")
    );
    assert_eq!(staging.leftovers().await, Vec::<String>::new());

    // A paid-tier hub of the same size passes the same check, naming the cap it used.
    let out = wd
        .hubvault()
        .args(["--json", "preflight", "--to", "hub-a"])
        .within(Duration::from_secs(60))
        .run()
        .await;
    let report = out.doc();
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "device-quota")
        .cloned()
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(f["ok"], true, "{f}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .ends_with("of 1000000 allowed (the cap of its S1 tier)"),
        "{f}"
    );
    staging.delete().await;
}
