//! `hubvault restore` against the in-process simulator, judged by what the simulator's control
//! API reads back from the target — never by hubvault's own diff.
//!
//! Each test: seed hub-a, snapshot it through `backup --from-export` of the control API's
//! registry dump, then restore into hub-b with the real binary and compare the registries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::support::{Out, Staging, Workdir, World, assert_no_secrets, azurite};

/// hub-a with seeded devices and an empty hub-b (no ARM), a work folder whose config names both
/// and an identity to seal snapshots to; a staging container in Azurite when the test uses the
/// job engine.
struct Fixture {
    world: World,
    wd: Workdir,
    recipient: String,
    staging: Option<Staging>,
}

impl Fixture {
    /// hub-a with `devices` seeded devices, an empty hub-b, a key and a config naming both hubs.
    async fn new(devices: usize) -> Fixture {
        Fixture::start(devices, None).await
    }

    /// The same, with a fresh staging container in Azurite named in `[staging]`.
    async fn with_staging(devices: usize, cs: &str) -> Fixture {
        Fixture::start(devices, Some(cs)).await
    }

    async fn start(devices: usize, cs: Option<&str>) -> Fixture {
        let world = World::builder()
            .hubs(&[("hub-a", devices), ("hub-b", 0)])
            .arm(false)
            .start()
            .await;
        let wd = Workdir::new();
        let recipient = wd.write_identity();
        wd.set_env("HUBVAULT_JOB_POLL_MS", "20");
        let staging = match cs {
            Some(cs) => Some(Staging::fresh(cs, "restore").await),
            None => None,
        };
        let config = wd.config(&world);
        match &staging {
            Some(staging) => config.staging(staging).write(),
            None => config.write(),
        }
        Fixture {
            world,
            wd,
            recipient,
            staging,
        }
    }

    async fn staging_blobs(&self) -> Vec<String> {
        self.staging.as_ref().unwrap().leftovers().await
    }

    /// Snapshot hub-a as it is now (export with keys and configurations → sealed snapshot).
    async fn snapshot(&self) {
        let export = self.wd.join("export");
        self.world.write_export("hub-a", &export).await;
        let out = self.backup_from(&export).await;
        assert_eq!(out.code, 0, "backup: {}", out.stderr);
        std::fs::remove_dir_all(&export).unwrap();
    }

    /// `backup --from-export` of `export` as hub-a's snapshot.
    async fn backup_from(&self, export: &Path) -> Out {
        self.run(&[
            "backup",
            "--from-export",
            export.to_str().unwrap(),
            "--hub-name",
            "hub-a",
            "--recipient",
            &self.recipient,
        ])
        .await
    }

    /// Run the `hubvault` binary in the test folder.
    async fn run(&self, args: &[&str]) -> Out {
        self.wd.hubvault().args(args).run().await
    }

    async fn restore(&self, extra: &[&str]) -> (Out, Value) {
        let mut args = vec!["--json", "restore", "latest", "--to", "hub-b"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        let doc = out.doc();
        (out, doc)
    }
}

/// What a restore must carry over, as the test reads it: per `id[/moduleId]`, the status, auth
/// type, keys, thumbprints, tags, desired properties, edge flag and the parent's **id** (scopes
/// embed per-hub generation ids). System modules are the hub's own.
fn comparable(lines: &[Value]) -> BTreeMap<String, Value> {
    let parent = |scope: Option<&str>| {
        scope
            .and_then(|s| s.strip_prefix("ms-azure-iot-edge://"))
            .and_then(|s| s.rsplit_once('-'))
            .map(|(d, _)| d.to_owned())
    };
    let desired = |l: &Value| {
        let mut d = l
            .pointer("/properties/desired")
            .cloned()
            .unwrap_or(json!({}));
        if let Some(m) = d.as_object_mut() {
            m.remove("$metadata");
            m.remove("$version");
        }
        d
    };
    lines
        .iter()
        .filter(|l| !matches!(l["moduleId"].as_str(), Some("$edgeAgent" | "$edgeHub")))
        .map(|l| {
            let id = l["id"].as_str().unwrap();
            let key = match l["moduleId"].as_str() {
                Some(m) => format!("{id}/{m}"),
                None => id.to_owned(),
            };
            let edge = l.pointer("/capabilities/iotEdge") == Some(&json!(true));
            let link = if edge {
                l["parentScopes"]
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .and_then(|s| parent(Some(s)))
                    .filter(|p| p != id)
            } else {
                parent(l["deviceScope"].as_str())
            };
            let v = json!({
                "status": l["status"], "statusReason": l.get("statusReason"),
                "auth": l["authentication"], "tags": l["tags"], "desired": desired(l),
                "edge": edge, "parent": link,
            });
            (key, v)
        })
        .collect()
}

fn differences(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("missing {k}")),
            Some(w) if w != v => out.push(format!("differs {k}: {v} vs {w}")),
            Some(_) => {}
        }
    }
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("extra {k}")),
    );
    out
}

async fn assert_same_registry(f: &Fixture) {
    let a = comparable(&f.world.registry("hub-a").await);
    let b = comparable(&f.world.registry("hub-b").await);
    let diff = differences(&a, &b);
    assert!(
        diff.is_empty(),
        "{} differences, first: {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
    let configs = |hub: &'static str| async move {
        let mut out: Vec<Value> = f
            .world
            .configurations(hub)
            .await
            .iter()
            .map(|v| {
                json!({"id": v["id"], "content": v["content"], "targetCondition": v["targetCondition"], "priority": v["priority"], "labels": v["labels"]})
            })
            .collect();
        out.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
        out
    };
    let (ca, cb) = (configs("hub-a").await, configs("hub-b").await);
    assert!(!ca.is_empty());
    assert_eq!(ca, cb, "configurations");
}

/// A device-side send to hub-b with the key the device had on hub-a.
async fn device_sends(f: &Fixture, device: &Value) -> reqwest::StatusCode {
    let id = device["id"].as_str().unwrap();
    let key = device
        .pointer("/authentication/symmetricKey/primaryKey")
        .and_then(Value::as_str)
        .unwrap();
    let status = f.world.device_send("hub-b", id, key).await;
    reqwest::StatusCode::from_u16(status).unwrap()
}

fn plan(doc: &Value) -> (u64, u64, u64, u64) {
    let p = &doc["plan"];
    let n = |k: &str| p[k].as_u64().unwrap_or(u64::MAX);
    (n("create"), n("update"), n("delete"), n("unchanged"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_an_empty_hub_carries_everything_and_keys_work() {
    let f = Fixture::new(120).await;
    f.snapshot().await;
    let source = f.world.registry("hub-a").await;
    let records = comparable(&source).len() as u64;

    let (dry, doc) = f.restore(&["--dry-run", "--engine", "bulk"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(plan(&doc), (records, 0, 0, 0));
    assert!(
        f.world.registry("hub-b").await.is_empty(),
        "a dry run changes nothing"
    );

    let (out, doc) = f.restore(&["--engine", "bulk"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["failed"], json!([]));
    assert_eq!(doc["applied"]["create"].as_u64(), Some(records));
    assert!(
        doc["applied"]["links"].as_u64().unwrap() > 0,
        "children linked after their gateways"
    );
    assert_same_registry(&f).await;

    for device in source
        .iter()
        .filter(|d| d["authentication"]["type"] == "sas" && d.get("moduleId").is_none())
        .step_by(17)
    {
        assert_eq!(
            device_sends(&f, device).await,
            reqwest::StatusCode::NO_CONTENT,
            "{}",
            device["id"]
        );
    }

    let (again, doc) = f.restore(&["--engine", "bulk"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        plan(&doc),
        (0, 0, 0, records),
        "a second restore finds nothing to do"
    );
    let diff = f.run(&["--json", "diff", "latest", "--hub", "hub-b"]).await;
    assert_eq!(diff.code, 0, "{}\n{}", diff.stdout, diff.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_updates_what_changed_and_mirror_deletes_extras() {
    let f = Fixture::new(60).await;
    f.snapshot().await;
    assert_eq!(f.restore(&["--engine", "bulk"]).await.0.code, 0);
    // Someone changes a device's tags and status on hub-b, and adds a device of their own.
    let mut changed = f
        .world
        .registry("hub-b")
        .await
        .into_iter()
        .find(|d| d["id"] == "dev-0000003" && d.get("moduleId").is_none())
        .unwrap();
    changed["tags"] = json!({"moved": "elsewhere"});
    changed["status"] = json!("disabled");
    changed.as_object_mut().unwrap().remove("eTag");
    changed.as_object_mut().unwrap().remove("twinETag");
    let extra = json!({"id": "intruder-1", "status": "enabled", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": B64.encode([7u8; 32]), "secondaryKey": B64.encode([8u8; 32])}}});
    f.world.load("hub-b", &[changed, extra]).await;
    let diff = f.run(&["--json", "diff", "latest", "--hub", "hub-b"]).await;
    assert_eq!(diff.code, 1, "{}", diff.stderr);
    let diff: Value = serde_json::from_str(&diff.stdout).unwrap();
    assert_eq!(diff["added"], json!(["intruder-1"]));
    assert_eq!(diff["changed"], json!(["dev-0000003"]));

    let (out, doc) = f
        .restore(&["--mode", "upsert", "--engine", "bulk", "-v"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(plan(&doc).1, 1, "one update: {}", doc["plan_items"]);
    assert_eq!(doc["plan_items"]["update"][0]["id"], "dev-0000003");
    let after = comparable(&f.world.registry("hub-b").await);
    assert!(after.contains_key("intruder-1"), "upsert never deletes");
    assert_eq!(
        after["dev-0000003"],
        comparable(&f.world.registry("hub-a").await)["dev-0000003"]
    );

    let (dry, doc) = f.restore(&["--mode", "mirror", "--dry-run", "-v"]).await;
    assert_eq!(dry.code, 0);
    assert_eq!(plan(&doc).2, 1);
    assert_eq!(doc["plan_items"]["delete"], json!(["intruder-1"]));
    assert!(comparable(&f.world.registry("hub-b").await).contains_key("intruder-1"));

    let (out, doc) = f.restore(&["--mode", "mirror", "--engine", "bulk"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["applied"]["delete"], 1);
    assert_same_registry(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_restores_the_matching_devices() {
    let f = Fixture::new(100).await;
    f.snapshot().await;
    let (out, doc) = f.restore(&["--only", "gw-*", "--engine", "bulk"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["verified"], true);
    let b = comparable(&f.world.registry("hub-b").await);
    let a = comparable(&f.world.registry("hub-a").await);
    let gateways: Vec<&String> = a.keys().filter(|k| k.starts_with("gw-")).collect();
    assert!(!gateways.is_empty());
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        gateways,
        "gateways and their modules, nothing else"
    );
    for k in gateways {
        assert_eq!(a[k], b[k]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_stops_on_conflicts_and_leaves_them_alone() {
    let f = Fixture::new(30).await;
    f.snapshot().await;
    let mut existing = f
        .world
        .registry("hub-a")
        .await
        .into_iter()
        .find(|d| d.get("deviceScope").is_none() && d.get("moduleId").is_none())
        .unwrap();
    existing["tags"] = json!({"owner": "someone else"});
    existing.as_object_mut().unwrap().remove("eTag");
    existing.as_object_mut().unwrap().remove("twinETag");
    let id = existing["id"].as_str().unwrap().to_owned();
    f.world.load("hub-b", &[existing.clone()]).await;

    let (out, doc) = f.restore(&["--mode", "create", "--engine", "bulk"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let finding = doc["preflight"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["check"] == "id-conflicts")
        .unwrap();
    assert_eq!(finding["ok"], false);
    assert!(finding["detail"].as_str().unwrap().contains(&id));
    assert_eq!(
        f.world.registry("hub-b").await.len(),
        1,
        "nothing applied after a finding"
    );

    let (out, doc) = f
        .restore(&["--mode", "create", "--engine", "bulk", "--no-preflight"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["plan"]["conflicts"], 1);
    let b = comparable(&f.world.registry("hub-b").await);
    assert_eq!(
        b[&id]["tags"],
        json!({"owner": "someone else"}),
        "a conflict is left alone"
    );
    assert_eq!(b.len(), comparable(&f.world.registry("hub-a").await).len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_storm_slows_the_bulk_engine_down_without_losing_devices() {
    let f = Fixture::new(250).await;
    f.snapshot().await;
    f.world
        .limits(
            "hub-b",
            json!({"rates": {"registry": 3.0}, "retry_after_secs": 1}),
        )
        .await;
    f.world
        .faults("hub-b", json!({"error_burst": 3, "error_status": 503}))
        .await;
    let (out, doc) = f.restore(&["--engine", "bulk", "-vv"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("kept throttling"),
        "the hub did throttle"
    );
    assert_eq!(doc["failed"], json!([]));
    assert_eq!(doc["verified"], true);
    f.world.limits("hub-b", json!({"rates": {}})).await;
    assert_same_registry(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewalled_target_without_preflight_fails_with_the_explained_401002() {
    let f = Fixture::new(20).await;
    f.snapshot().await;
    f.world.firewall(
        "hub-b",
        json!({"publicNetworkAccess": "Enabled", "networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": false, "ipRules": [{"filterName": "office", "action": "Allow", "ipMask": "127.0.0.2"}]}}),
    )
    .await;
    let (out, doc) = f.restore(&["--no-preflight", "--engine", "bulk"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("401002") && message.contains("firewall"),
        "{message}"
    );
    assert!(f.world.registry("hub-b").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_in_any_output_at_the_highest_verbosity() {
    let f = Fixture::new(40).await;
    f.snapshot().await;
    let out = f
        .run(&[
            "-vvv", "--json", "restore", "latest", "--to", "hub-b", "--engine", "bulk",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.text();
    let secrets = f.world.secrets(&["hub-a"]).await;
    assert!(secrets.len() > 10);
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a key leaked into the output");
    }
    assert!(!text.contains("sig="), "a signature leaked into the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_engine_restores_through_staging_and_leaves_it_empty() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(150, &cs).await;
    f.snapshot().await;
    let source = f.world.registry("hub-a").await;
    let (out, doc) = f.restore(&["--engine", "job", "-vvv"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_no_secrets(
        &out.text(),
        &f.world.secrets(&["hub-a"]).await,
        "restore -vvv",
    );
    assert_eq!(doc["engine"], "job");
    assert!(doc["job_id"].is_string());
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["failed"], json!([]));
    assert!(doc["staging"].as_str().unwrap().contains("deleted"));
    assert_same_registry(&f).await;
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging: {:?}",
        f.staging_blobs().await
    );
    let device = source
        .iter()
        .find(|d| d["authentication"]["type"] == "sas" && d.get("moduleId").is_none())
        .unwrap();
    assert_eq!(
        device_sends(&f, device).await,
        reqwest::StatusCode::NO_CONTENT
    );

    // A rerun compares keys; with many to compare, one export job reads them (plaintext blob
    // deleted at once) instead of one registry read per device.
    f.wd.set_env("HUBVAULT_KEY_READ_JOB_MIN", "1");
    let (again, doc) = f.restore(&["--engine", "job"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(plan(&doc).0 + plan(&doc).1 + plan(&doc).2, 0);
    assert_eq!(plan(&doc).3, comparable(&source).len() as u64);
    let jobs = Value::from(f.world.jobs("hub-b").await);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["type"] == "export"),
        "keys were read by an export job: {jobs}"
    );
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging: {:?}",
        f.staging_blobs().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_edge_links_are_set_by_a_second_import_job() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(150, &cs).await;
    f.snapshot().await;
    f.wd.set_env("HUBVAULT_LINK_JOB_MIN", "1");
    let (out, doc) = f.restore(&["--engine", "job"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(doc["applied"]["links"].as_u64().unwrap() > 0, "{doc}");
    assert!(doc["link_job_id"].is_string(), "{doc}");
    assert_ne!(doc["link_job_id"], doc["job_id"]);
    assert_eq!(doc["failed"], json!([]));
    assert_eq!(doc["verified"], true);
    let jobs = Value::from(f.world.jobs("hub-b").await);
    let imports = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["type"] == "import" && j["status"] == "completed")
        .count();
    assert_eq!(imports, 2, "{jobs}");
    // Judged by what the hub holds: every child points at its parent's new scope.
    assert_same_registry(&f).await;
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging: {:?}",
        f.staging_blobs().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_half_way_is_reported_and_a_rerun_completes() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(200, &cs).await;
    f.snapshot().await;
    f.world
        .faults("hub-b", json!({"fail_next_job": true}))
        .await;
    f.world.limits("hub-b", json!({"job_rate": 2000.0})).await;
    let (out, doc) = f.restore(&["--engine", "job"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("import job") && message.contains("run the same restore again"),
        "{message}"
    );
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging after a failed job: {:?}",
        f.staging_blobs().await
    );

    let (out, doc) = f.restore(&["--engine", "job"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["verified"], true);
    assert_same_registry(&f).await;
    assert!(f.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_import_job_cancels_it_and_empties_staging() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(200, &cs).await;
    f.snapshot().await;
    f.world.limits("hub-b", json!({"job_rate": 20.0})).await;
    let child =
        f.wd.hubvault()
            .args(["restore", "latest", "--to", "hub-b", "--engine", "job"])
            .within(Duration::from_secs(60))
            .spawn();
    let running = |jobs: &Value| {
        jobs.as_array()
            .is_some_and(|a| a.iter().any(|j| j["status"] == "running"))
    };
    let seen = f
        .world
        .job_where("hub-b", Duration::from_secs(10), |j| {
            j["status"] == "running"
        })
        .await
        .is_some();
    assert!(seen, "the import job never ran");
    child.interrupt();
    let out = child.finish().await.expect("the restore ends after Ctrl-C");
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("cancelled"),
        "{stderr}"
    );
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging: {:?}",
        f.staging_blobs().await
    );
    let jobs = Value::from(f.world.jobs("hub-b").await);
    assert!(!running(&jobs), "{jobs}");

    f.world.limits("hub-b", json!({"job_rate": 5000.0})).await;
    let (out, doc) = f.restore(&["--engine", "job"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(doc["verified"], true);
    assert_same_registry(&f).await;
}

/// Ids of SAS devices (not modules) of `lines`, in the order a restore sorts records, with each
/// one's position among all records (devices and modules).
fn sas_devices_by_position(lines: &[Value]) -> Vec<(usize, String)> {
    let all = comparable(lines);
    all.iter()
        .enumerate()
        .filter(|(_, (k, v))| !k.contains('/') && v["auth"]["type"] == "sas")
        .map(|(i, (k, _))| (i, k.clone()))
        .collect()
}

/// The primary key a hub's registry holds for device `id`, read through the control API.
async fn primary_key(f: &Fixture, hub: &str, id: &str) -> String {
    f.world
        .registry(hub)
        .await
        .iter()
        .find(|d| d["id"] == id && d.get("moduleId").is_none())
        .and_then(|d| d.pointer("/authentication/symmetricKey/primaryKey"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reads_every_key_through_an_export_job_and_catches_one_wrong_key() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(300, &cs).await;
    f.snapshot().await;
    f.wd.set_env("HUBVAULT_KEY_READ_JOB_MIN", "1");
    let source = f.world.registry("hub-a").await;
    let candidates = sas_devices_by_position(&source);
    // Far outside the first 100 records (and not where an evenly spread sample starts).
    let (position, wrong) = candidates[candidates.len() - 2].clone();
    assert!(position > 200, "device {wrong} sits at {position}");

    // The hub silently stores another key for that one device during the import job.
    f.world
        .faults("hub-b", json!({"wrong_key_for": wrong}))
        .await;
    let (out, doc) = f.restore(&["--engine", "job", "--verify", "full"]).await;
    assert_ne!(
        primary_key(&f, "hub-b", &wrong).await,
        primary_key(&f, "hub-a", &wrong).await,
        "the fault fired"
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["verified"], false);
    assert_eq!(
        doc["differences"],
        json!([{"id": wrong, "problem": "differs", "aspects": ["keys"]}])
    );
    assert_eq!(doc["verified_keys"], "all");
    assert_eq!(doc["key_check"]["via"], "export-job");
    assert_eq!(
        doc["key_check"]["of"].as_u64(),
        Some(doc["key_check"]["checked"].as_u64().unwrap())
    );
    assert!(doc["key_check"]["of"].as_u64().unwrap() >= candidates.len() as u64);
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging after verification: {:?}",
        f.staging_blobs().await
    );
    let human = f.run(&["diff", "latest", "--hub", "hub-b"]).await;
    assert_eq!(human.code, 1, "{}", human.stderr);
    assert!(human.stdout.contains(&wrong), "{}", human.stdout);

    // The next restore repairs exactly that device, and proves every key again.
    let (out, doc) = f
        .restore(&["--engine", "job", "--verify", "full", "-v"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        doc["plan_items"]["update"],
        json!([{"id": wrong, "aspects": ["keys"]}])
    );
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["verified_keys"], "all");
    assert_same_registry(&f).await;

    // Someone changes one device's key on the target: a dry run finds it among all the others.
    let (_, other) = candidates[candidates.len() - 1].clone();
    let mut changed = f
        .world
        .registry("hub-b")
        .await
        .into_iter()
        .find(|d| d["id"] == other.as_str() && d.get("moduleId").is_none())
        .unwrap();
    changed["authentication"]["symmetricKey"]["primaryKey"] = json!(B64.encode([9u8; 32]));
    changed.as_object_mut().unwrap().remove("eTag");
    changed.as_object_mut().unwrap().remove("twinETag");
    f.world.load("hub-b", &[changed]).await;
    let (dry, doc) = f.restore(&["--engine", "job", "--dry-run", "-v"]).await;
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert_eq!(
        doc["plan_items"]["update"],
        json!([{"id": other, "aspects": ["keys"]}])
    );
    assert!(f.staging_blobs().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stored_by_the_hub_fails_bulk_verification_with_every_key_read() {
    let f = Fixture::new(150).await;
    f.snapshot().await;
    let candidates = sas_devices_by_position(&f.world.registry("hub-a").await);
    let (position, wrong) = candidates[candidates.len() - 1].clone();
    assert!(position > 100, "device {wrong} sits at {position}");
    f.world
        .faults("hub-b", json!({"wrong_key_for": wrong}))
        .await;

    let (out, doc) = f.restore(&["--engine", "bulk", "--verify", "full"]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["verified"], false);
    assert_eq!(
        doc["differences"],
        json!([{"id": wrong, "problem": "differs", "aspects": ["keys"]}])
    );
    assert_eq!(doc["verified_keys"], "all");
    assert_eq!(doc["key_check"]["via"], "registry-reads");

    let human = f
        .run(&[
            "restore", "latest", "--to", "hub-b", "--engine", "bulk", "--verify", "full",
        ])
        .await;
    assert_eq!(human.code, 0, "{}\n{}", human.stdout, human.stderr);
    assert!(
        human.stdout.contains("keys: all"),
        "the text says what was proven: {}",
        human.stdout
    );
    assert_same_registry(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_with_staging_verifies_through_an_export_job_and_says_when_it_fell_back() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::with_staging(120, &cs).await;
    f.snapshot().await;
    f.wd.set_env("HUBVAULT_KEY_READ_JOB_MIN", "1");
    // The verification's export job fails half-way: keys are then read one by one, and the
    // report says so; the half-written export blob is gone all the same.
    f.world
        .faults("hub-b", json!({"fail_next_job": true}))
        .await;
    let (out, doc) = f.restore(&["--engine", "bulk", "--verify", "full"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["engine"], "bulk");
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["verified_keys"], "all");
    assert_eq!(doc["key_check"]["via"], "registry-reads");
    let note = doc["key_check"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("export job") && note.contains("failed"),
        "{note}"
    );
    assert!(
        f.staging_blobs().await.is_empty(),
        "staging after a failed export: {:?}",
        f.staging_blobs().await
    );
    assert_same_registry(&f).await;

    // A key changed on the target is planned and, after the bulk write, proven by an export job.
    let candidates = sas_devices_by_position(&f.world.registry("hub-a").await);
    let (_, other) = candidates[candidates.len() - 1].clone();
    let mut changed = f
        .world
        .registry("hub-b")
        .await
        .into_iter()
        .find(|d| d["id"] == other.as_str() && d.get("moduleId").is_none())
        .unwrap();
    changed["authentication"]["symmetricKey"]["primaryKey"] = json!(B64.encode([5u8; 32]));
    changed.as_object_mut().unwrap().remove("eTag");
    changed.as_object_mut().unwrap().remove("twinETag");
    f.world.load("hub-b", &[changed]).await;
    let human = f
        .run(&[
            "restore", "latest", "--to", "hub-b", "--engine", "bulk", "--verify", "full",
        ])
        .await;
    assert_eq!(human.code, 0, "{}\n{}", human.stdout, human.stderr);
    assert!(
        human.stdout.contains("1 to update") && human.stdout.contains("through export job"),
        "{}",
        human.stdout
    );
    assert_eq!(
        primary_key(&f, "hub-b", &other).await,
        primary_key(&f, "hub-a", &other).await
    );
    assert!(f.staging_blobs().await.is_empty());
}

/// The review's careless operator: a one-record snapshot restored with `--mode mirror` deleted
/// 1,800 of 1,800 devices and reported success. The brake refuses, names the counts and the
/// flag, and changes nothing; `--max-delete` lets a meant deletion through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_brake_stops_a_one_record_snapshot_from_emptying_the_target() {
    let f = Fixture::new(60).await;
    f.snapshot().await;
    assert_eq!(f.restore(&["--engine", "bulk"]).await.0.code, 0);
    let before = comparable(&f.world.registry("hub-b").await);
    // hub-a now holds one device; its snapshot becomes `latest`.
    f.world.wipe("hub-a").await;
    let one = json!({"id": "lonely-1", "status": "enabled", "authentication": {"type": "sas",
        "symmetricKey": {"primaryKey": B64.encode([3u8; 32]), "secondaryKey": B64.encode([4u8; 32])}}});
    f.world.load("hub-a", &[one]).await;
    f.snapshot().await;

    let (dry, doc) = f.restore(&["--mode", "mirror", "--dry-run"]).await;
    assert_eq!(
        dry.code, 1,
        "a dry run shows the plan and flags it: {}",
        dry.stderr
    );
    assert!(
        doc["brake"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-delete"),
        "{doc:#}"
    );

    let (out, doc) = f.restore(&["--mode", "mirror", "--engine", "bulk"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["error"]["code"], "restore_mirror_brake", "{doc:#}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    let total = before.len();
    for part in [
        format!("would delete {total} of its {total} identities"),
        "the snapshot holds 1".to_owned(),
        "Nothing was changed".to_owned(),
        format!("--max-delete {total}"),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
    assert_eq!(
        comparable(&f.world.registry("hub-b").await),
        before,
        "nothing deleted"
    );

    let (out, doc) = f
        .restore(&[
            "--mode",
            "mirror",
            "--engine",
            "bulk",
            "--max-delete",
            "100%",
        ])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        doc["applied"]["delete"].as_u64(),
        Some(60),
        "60 devices (their modules go with them): {doc:#}"
    );
    let after = comparable(&f.world.registry("hub-b").await);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["lonely-1"]);
}

/// A bulk call whose answer is lost after the hub carried it out: the retry answers "already
/// exists" (create) or "not found" (delete) for our own writes. The review saw 100 false
/// 409001 failures and "0 deleted" with exit 1; they are settled by reading the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_bulk_responses_are_settled_by_reading_the_target_not_reported_failed() {
    let f = Fixture::new(120).await;
    f.snapshot().await;
    let records = comparable(&f.world.registry("hub-a").await).len() as u64;
    f.world
        .faults("hub-b", json!({"lose_bulk_responses": 2}))
        .await;
    let (out, doc) = f.restore(&["--engine", "bulk", "-v"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("reading the target to settle"),
        "the lost answers were noticed: {}",
        out.stderr
    );
    assert_eq!(doc["failed"], json!([]), "{doc:#}");
    assert_eq!(doc["applied"]["create"].as_u64(), Some(records), "{doc:#}");
    assert_eq!(doc["verified"], true);
    assert_same_registry(&f).await;

    // 50 identities of someone else's on hub-b, deleted by a mirror whose answers are lost.
    let extras: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("extra-{i:03}"), "status": "enabled", "authentication": {"type": "sas",
            "symmetricKey": {"primaryKey": B64.encode([5u8; 32]), "secondaryKey": B64.encode([6u8; 32])}}}))
        .collect();
    f.world.load("hub-b", &extras).await;
    f.world
        .faults("hub-b", json!({"lose_bulk_responses": 1}))
        .await;
    let (out, doc) = f
        .restore(&["--mode", "mirror", "--engine", "bulk", "--max-delete", "50"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(doc["failed"], json!([]), "{doc:#}");
    assert_eq!(doc["applied"]["delete"].as_u64(), Some(50), "{doc:#}");
    assert_same_registry(&f).await;
}

/// The review: the bulk engine counted a record it could not convert (`"status": 0`) as
/// created; it was never sent, and only verification noticed. It is a named failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_bulk_engine_cannot_send_is_a_named_failure() {
    let f = Fixture::new(10).await;
    let export = f.wd.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let good = json!({"id": "fine-1", "status": "enabled", "authentication": {"type": "sas",
        "symmetricKey": {"primaryKey": B64.encode([1u8; 32]), "secondaryKey": B64.encode([2u8; 32])}}});
    let odd = json!({"id": "odd-1", "status": 0, "authentication": {"type": "sas",
        "symmetricKey": {"primaryKey": B64.encode([1u8; 32]), "secondaryKey": B64.encode([2u8; 32])}}});
    std::fs::write(export.join("devices.txt"), format!("{good}\n{odd}\n")).unwrap();
    let out = f.backup_from(&export).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (out, doc) = f.restore(&["--engine", "bulk"]).await;
    assert_eq!(
        out.code, 1,
        "a failed record is a finding: {}\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(doc["applied"]["create"], 1, "{doc:#}");
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{doc:#}");
    assert_eq!(failed[0]["id"], "odd-1");
    assert_eq!(failed[0]["code"], "hubvault_unconvertible");
}
