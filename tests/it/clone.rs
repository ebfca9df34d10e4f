//! End-to-end: `hubvault demo`, `clone`, `preflight` and restore failure paths against the
//! in-process simulator and Azurite staging. Hubs are judged by what the simulator's control API
//! reads back, never by hubvault's own diff.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hubvault, Workdir, World, assert_no_secrets, azurite, fast_world};

/// An identity's comparable content: everything a clone must carry over, without what the
/// target hub assigns itself (etags, versions, generated scopes).
fn view(line: &Value) -> Value {
    json!({
        "authentication": line["authentication"],
        "status": line["status"],
        "statusReason": line["statusReason"],
        "tags": line["tags"],
        "desired": line["properties"]["desired"],
        "iotEdge": line["capabilities"]["iotEdge"],
    })
}

/// The parent (edge device id) of each device, from the scopes of one hub.
fn parents(registry: &[Value]) -> BTreeMap<String, String> {
    let owner: BTreeMap<&str, &str> = registry
        .iter()
        .filter(|l| l.get("moduleId").is_none() && l["capabilities"]["iotEdge"] == true)
        .filter_map(|l| Some((l["deviceScope"].as_str()?, l["id"].as_str()?)))
        .collect();
    registry
        .iter()
        .filter(|l| l.get("moduleId").is_none() && l["capabilities"]["iotEdge"] != true)
        .filter_map(|l| {
            let scope = l["deviceScope"].as_str()?;
            Some((
                l["id"].as_str()?.to_owned(),
                (*owner.get(scope)?).to_owned(),
            ))
        })
        .collect()
}

fn key(line: &Value) -> (String, String) {
    (
        line["id"].as_str().unwrap_or_default().to_owned(),
        line["moduleId"].as_str().unwrap_or_default().to_owned(),
    )
}

fn is_system_module(line: &Value) -> bool {
    line["moduleId"]
        .as_str()
        .is_some_and(|m| m == "$edgeAgent" || m == "$edgeHub")
}

/// Assert hub-b equals hub-a on ids, keys, auth types, status, tags, desired properties,
/// modules (system modules: present, keys are the target's own), scopes by parent id.
fn assert_same_registry(source: &[Value], target: &[Value]) {
    let want: BTreeMap<_, _> = source.iter().map(|l| (key(l), l)).collect();
    let have: BTreeMap<_, _> = target.iter().map(|l| (key(l), l)).collect();
    let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
    let extra: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} identities missing on the target, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        extra.is_empty(),
        "{} unexpected identities on the target, e.g. {:?}",
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    let differing: Vec<_> = want
        .iter()
        .filter(|(_, l)| !is_system_module(l))
        .filter(|(k, l)| view(l) != view(have[*k]))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        differing.is_empty(),
        "{} identities differ, e.g. {:?}: source {} target {}",
        differing.len(),
        &differing[..differing.len().min(5)],
        view(want[&differing[0]]),
        view(have[&differing[0]])
    );
    let (pa, pb) = (parents(source), parents(target));
    assert!(!pa.is_empty(), "the source fleet has child devices");
    assert_eq!(pa, pb, "parent/child relations differ");
}

/// Configurations equal on id, labels, content, target condition and priority.
fn assert_same_configurations(source: &[Value], target: &[Value]) {
    let pick = |c: &Value| {
        json!([
            c["id"],
            c["labels"],
            c["content"],
            c["targetCondition"],
            c["priority"]
        ])
    };
    let mut a: Vec<Value> = source.iter().map(pick).collect();
    let mut b: Vec<Value> = target.iter().map(pick).collect();
    a.sort_by_key(ToString::to_string);
    b.sort_by_key(ToString::to_string);
    assert!(!a.is_empty(), "the source has configurations");
    assert_eq!(a, b, "configurations differ");
}

/// A sample of SAS devices sends one message each to `hub` with the keys read from `source`;
/// all are accepted and counted by the simulator.
async fn assert_devices_authenticate(sim: &World, hub: &str, source: &[Value], n: usize) {
    let sample: Vec<(String, String)> = source
        .iter()
        .filter(|l| l.get("moduleId").is_none() && l["status"] == "enabled")
        .filter_map(|l| {
            Some((
                l["id"].as_str()?.to_owned(),
                l["authentication"]["symmetricKey"]["primaryKey"]
                    .as_str()?
                    .to_owned(),
            ))
        })
        .step_by(211)
        .take(n)
        .collect();
    assert_eq!(sample.len(), n, "enough SAS devices to sample");
    for (id, k) in &sample {
        assert_eq!(sim.device_send(hub, id, k).await, 204, "{id} on {hub}");
    }
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(sim.device_send(hub, &sample[0].0, wrong).await, 401);
    let counts = sim.messages(hub).await;
    for (id, _) in &sample {
        assert!(counts.get(id).copied().unwrap_or(0) >= 1, "{id} counted");
    }
}

/// `clone --from hub-a --to hub-b --json` and `extra`, run in `wd`.
fn clone_a_to_b(wd: &Workdir, extra: &[&str]) -> Hubvault {
    wd.hubvault()
        .args(["clone", "--from", "hub-a", "--to", "hub-b", "--json"])
        .args(extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_to_exit_0_and_prints_no_secret() {
    let wd = Workdir::new();
    let out = wd
        .hubvault()
        .args(["demo", "--json", "-vvv", "--devices", "1200"])
        .within(Duration::from_secs(180))
        .run()
        .await;
    let all = out.text();
    assert_eq!(out.status.code(), Some(0), "{all}");
    let report: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true, "{report:#}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for wanted in [
        "backup",
        "snapshots",
        "preflight-blocked",
        "firewall-fix",
        "clone",
        "check",
        "devices",
        "dps-enroll",
        "dps-backup",
        "dps-retarget",
        "dps-reregister",
    ] {
        assert!(steps.contains(&wanted), "step {wanted} missing: {steps:?}");
    }
    assert!(
        wd.join("hubvault-demo").is_dir(),
        "vault left where it says"
    );
    // The demo's fleet is the simulator's deterministic one (seed 7): regenerate its keys to scan.
    // Same seed, same hub names: the same policy keys too.
    let sim = World::builder()
        .hub("hub-a", 1200)
        .hub("hub-b", 0)
        .seed(7)
        .start()
        .await;
    let mut keys = sim.secrets(&["hub-a"]).await;
    assert!(keys.len() > 1000);
    // The DPS act's enrollment keys (src/demo/dps_act.rs derives them from its seed).
    keys.extend((0..120).chain(1000..1120).chain(2000..2002).map(|n| {
        hubvault::device::register::derive_group_key(
            "aHVidmF1bHQtZGVtby1kcHMtYWN0LXNlZWQta2V5IQ==",
            &format!("demo-key-{n}"),
        )
        .unwrap()
    }));
    assert_no_secrets(&all, &keys, "demo -vvv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_of_10k_devices_makes_the_target_equal_the_source() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) =
        fast_world(&cs, &[("hub-a", 10_000), ("hub-b", 0)], 11, "clone10k").await;
    let out = clone_a_to_b(&wd, &["-vvv"])
        .within(Duration::from_secs(240))
        .run()
        .await;
    let all = out.text();
    let source = sim.registry("hub-a").await;
    assert_no_secrets(&all, &sim.secrets(&["hub-a", "hub-b"]).await, "clone -vvv");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let devices = source
        .iter()
        .filter(|l| l.get("moduleId").is_none())
        .count();
    assert!(devices >= 10_000);
    // Identities the clone writes: devices and custom modules ($edgeAgent/$edgeHub come with
    // each edge device).
    let identities = source.iter().filter(|l| !is_system_module(l)).count();
    assert_eq!(report["plan"]["create"], identities, "{report:#}");
    assert_eq!(report["applied"]["create"], identities, "{report:#}");
    assert_eq!(report["failed"], json!([]), "{report:#}");
    assert_eq!(report["verified"], true, "{report:#}");

    let target = sim.registry("hub-b").await;
    assert_same_registry(&source, &target);
    assert_same_configurations(
        &sim.configurations("hub-a").await,
        &sim.configurations("hub-b").await,
    );
    assert_devices_authenticate(&sim, "hub-b", &source, 8).await;
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    // Without --keep the intermediate snapshot was ephemeral: nothing in the store.
    let store = wd.store();
    let kept = std::fs::read_dir(&store).map_or(0, Iterator::count);
    assert_eq!(kept, 0, "no snapshot kept without --keep");
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_preflight_names_the_rule_and_a_blind_restore_explains_401002() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 300), ("hub-b", 0)], 12, "firewall").await;
    sim.firewall(
        "hub-b",
        json!({"publicNetworkAccess": "Enabled", "networkRuleSets": {"defaultAction": "Deny",
            "applyToBuiltInEventHubEndpoint": true,
            "ipRules": [{"filterName": "only-branch", "action": "Allow", "ipMask": "127.0.0.2"}]}}),
    )
    .await;

    let out = wd
        .hubvault()
        .args([
            "preflight",
            "--to",
            "hub-b",
            "--caller-ip",
            "127.0.0.1",
            "--json",
        ])
        .within(Duration::from_secs(60))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.text());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let failing: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .collect();
    assert!(
        failing
            .iter()
            .any(|f| f["detail"].as_str().unwrap_or("").contains("only-branch")),
        "a failing finding names the rule: {report:#}"
    );

    let out = clone_a_to_b(&wd, &["--no-preflight"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    let all = out.text();
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("401002"), "{all}");
    assert!(all.to_lowercase().contains("firewall"), "explained: {all}");
    // Nothing half-imported left unreported: either the hub is untouched or the output says
    // how many devices were applied.
    let target = sim.registry("hub-b").await;
    assert!(
        target.is_empty() || all.contains("applied"),
        "{} devices on hub-b and no report of them: {all}",
        target.len()
    );
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    staging.delete().await;
}

/// SIGKILL the clone while a job of `kind` runs on `hub`, then rerun it: it completes, the target
/// equals the source and the staging container is empty.
async fn killed_and_rerun(tag: &str, slow_hub: &str, kind: &str) {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 2000), ("hub-b", 0)], 21, tag).await;
    // About four seconds per job on the slowed hub: time to kill the process mid-job.
    sim.limits(slow_hub, json!({"job_rate": 500.0})).await;
    let clone = || clone_a_to_b(&wd, &["--engine", "job"]);
    let mut child = clone().spawn();
    sim.running_job(slow_hub, Some(kind), Duration::from_secs(15))
        .await;
    child.kill().await;
    let killed_at = std::time::Instant::now();
    // As a user rerunning later would find it: no job of the hub active any more.
    assert!(
        sim.jobs_done(slow_hub, Duration::from_secs(30)).await,
        "jobs of {slow_hub} still active after 30 s"
    );
    assert!(
        !staging.leftovers().await.is_empty(),
        "the killed run left plaintext staging blobs (else this test proves nothing)"
    );

    sim.limits(slow_hub, json!({"job_rate": 0.0})).await;
    // Well inside the killed run's 15 s lease: the rerun sees from its journal that its process
    // is gone (same machine), finds it dead at once and cleans up.
    eprintln!("rerun {:?} after the kill", killed_at.elapsed());
    let out = clone()
        .arg("-vvv")
        .within(Duration::from_secs(120))
        .run()
        .await;
    let all = out.text();
    let source = sim.registry("hub-a").await;
    assert_no_secrets(&all, &sim.secrets(&["hub-a", "hub-b"]).await, "rerun -vvv");
    assert_eq!(out.status.code(), Some(0), "{all}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["verified"], true, "{report:#}");
    let dead = &report["backup"]["dead_runs"];
    assert!(
        dead.as_array().is_some_and(|d| !d.is_empty()) && all.contains("a killed run of"),
        "the rerun says it cleaned up after the killed one: {dead:#}"
    );
    assert_same_registry(&source, &sim.registry("hub-b").await);
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_killed_during_export_completes_on_rerun_and_leaves_staging_empty() {
    killed_and_rerun("killexport", "hub-a", "export").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_killed_during_import_completes_on_rerun_and_leaves_staging_empty() {
    killed_and_rerun("killimport", "hub-b", "import").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_rides_out_5xx_bursts_on_both_hubs() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 1500), ("hub-b", 0)], 22, "burst").await;
    for h in ["hub-a", "hub-b"] {
        sim.faults(h, json!({"error_burst": 3, "error_status": 503}))
            .await;
    }
    let out = clone_a_to_b(&wd, &["-vvv"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_no_secrets(
        &out.text(),
        &sim.secrets(&["hub-a"]).await,
        "5xx clone -vvv",
    );
    for h in ["hub-a", "hub-b"] {
        assert_eq!(
            sim.faults(h, json!({})).await["error_burst"],
            0,
            "{h} served its 503 burst"
        );
    }
    assert_same_registry(&sim.registry("hub-a").await, &sim.registry("hub-b").await);
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_sas_expiring_mid_export_fails_cleanly_and_a_rerun_completes() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) =
        fast_world(&cs, &[("hub-a", 2000), ("hub-b", 0)], 23, "sasexpiry").await;
    // The export takes about five seconds; the staging SAS the hub gets lives two.
    sim.limits("hub-a", json!({"job_rate": 400.0})).await;
    let config = std::fs::read_to_string(wd.config_path()).unwrap();
    assert!(
        config
            .trim_end()
            .ends_with(&format!("container = \"{}\"", staging.container))
    );
    std::fs::write(wd.config_path(), format!("{config}sas-lifetime = \"2s\"\n")).unwrap();

    let clone = || clone_a_to_b(&wd, &["-vvv"]);
    let out = clone().within(Duration::from_secs(120)).run().await;
    let all = out.text();
    assert_no_secrets(
        &all,
        &sim.secrets(&["hub-a"]).await,
        "expired SAS clone -vvv",
    );
    assert_eq!(out.status.code(), Some(2), "{all}");
    let err: Value = serde_json::from_str(&out.stdout).unwrap();
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("export job"), "{err:#}");
    assert!(!all.contains("sig="), "no signature shown: {all}");
    assert!(sim.registry("hub-b").await.is_empty(), "nothing imported");
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );

    std::fs::write(wd.config_path(), &config).unwrap();
    sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    let out = clone().within(Duration::from_secs(120)).run().await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_same_registry(&sim.registry("hub-a").await, &sim.registry("hub-b").await);
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_job_holding_the_source_slot_is_reported_then_waited_for() {
    use hubvault::hub::{Connection, HubClient, JobProperties};
    use hubvault::store::sas::SasPermissions;

    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 1000), ("hub-b", 0)], 24, "slot").await;
    sim.limits("hub-a", json!({"job_rate": 250.0})).await; // the other job takes ~4 s

    // Someone else's export job on hub-a, writing outside hubvault's staging folder.
    let hub = sim.hub("hub-a");
    let target = Connection::from_connection_string(&sim.connection_string("hub-a"))
        .unwrap()
        .with_endpoint(hub.endpoint.parse().unwrap());
    let client = HubClient::new(target).unwrap();
    let uri = staging.sas_url(SasPermissions::export_output());
    let other = client
        .create_job(&JobProperties::export(
            uri.as_str(),
            "other/devices.txt",
            "other/configurations.txt",
        ))
        .await
        .unwrap();
    let other_id = other.id().to_owned();

    let out = clone_a_to_b(&wd, &[])
        .within(Duration::from_secs(60))
        .run()
        .await;
    let all = out.text();
    assert_eq!(out.status.code(), Some(2), "{all}");
    let err: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "hub_job_slot_busy", "{err:#}");
    assert!(all.contains(&other_id), "names the running job: {all}");
    assert!(sim.registry("hub-b").await.is_empty(), "nothing imported");

    let out = clone_a_to_b(&wd, &["--wait"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", out.text());
    assert_same_registry(&sim.registry("hub-a").await, &sim.registry("hub-b").await);
    // Only the other job's output is left: hubvault deleted its own blobs and none of theirs.
    let left = staging.leftovers().await;
    assert!(!left.is_empty(), "the other job's output is still there");
    assert!(left.iter().all(|b| b.starts_with("other/")), "{left:?}");
    staging.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_export_cancels_the_job_and_empties_staging() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 2000), ("hub-b", 0)], 25, "ctrlc").await;
    sim.limits("hub-a", json!({"job_rate": 300.0})).await;
    let child = clone_a_to_b(&wd, &[])
        .within(Duration::from_secs(30))
        .spawn();
    sim.running_job("hub-a", Some("export"), Duration::from_secs(15))
        .await;
    child.interrupt();
    let out = child.finish().await.expect("exits soon after Ctrl-C");
    let all = out.text();
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("interrupted") && all.contains("cancelled"),
        "{all}"
    );
    let jobs = sim.jobs("hub-a").await;
    assert!(
        jobs.iter().any(|j| j["status"] == "cancelled"),
        "the export job was cancelled: {jobs:?}"
    );
    assert!(sim.registry("hub-b").await.is_empty(), "nothing imported");
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "staging emptied"
    );
    staging.delete().await;
}
