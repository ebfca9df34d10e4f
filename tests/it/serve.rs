//! `policy check`, `run` and `serve` through the real binary: the simulator for hubs, Azurite for
//! staging (and as a store for two `serve` replicas), the shipped policies.
//!
//! What is checked is read from the store and the simulator, never from hubvault's account only.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use hubvault::store::Store as _;
use serde_json::Value;

use crate::support::{Out, Workdir, World, assert_no_secrets, azurite, fast_world, ndjson};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");

/// Copy the shipped policies into the work folder's `policies/`.
fn ship_policies(wd: &Workdir) {
    let dir = wd.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["default.toml", "hourly-critical.toml"] {
        std::fs::copy(Path::new(SHIPPED).join(name), dir.join(name)).unwrap();
    }
}

async fn secrets_free(sim: &World, hubs: &[&str], out: &Out) {
    assert_no_secrets(&out.text(), &sim.secrets(hubs).await, "hubvault");
}

#[test]
fn policy_check_explains_each_policy_with_its_next_five_runs() {
    let wd = Workdir::bare();
    ship_policies(&wd);
    let out = wd
        .hubvault()
        .args(["policy", "check", "policies", "--json"])
        .run_blocking()
        .expect_code(0);
    let doc = out.json();
    let policies = doc["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{doc}");
    let default = &policies[0];
    assert_eq!(default["name"], "default");
    assert_eq!(
        default["schedule"],
        "every day at 02:00, Europe/Berlin time"
    );
    let runs = default["next_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    assert!(
        runs[0]["local"].as_str().unwrap().contains(" 02:00:00 CE"),
        "{runs:?}"
    );
    assert!(
        default["retention"]
            .as_str()
            .unwrap()
            .starts_with("keeps the newest of each of the last 7 days"),
        "{default}"
    );
    assert_eq!(policies[1]["schedule"], "every hour at :15, UTC time");
    // a bad file is named with its line; the good ones are still explained (exit 1)
    std::fs::write(
        wd.join("policies/broken.toml"),
        "[schedule]\ncron = \"0 2 * *\"\n",
    )
    .unwrap();
    let out = wd
        .hubvault()
        .args(["policy", "check", "policies", "--json"])
        .run_blocking()
        .expect_code(1);
    let doc = out.json();
    assert_eq!(doc["policies"].as_array().unwrap().len(), 2);
    let err = doc["errors"][0].as_str().unwrap();
    assert!(
        err.contains("broken.toml") && err.contains("line 2"),
        "{err}"
    );
}

/// The two shipped policies: `default` (every hub, one per day) and `hourly-critical`
/// (plant-hub, keeps the last 3 and everything from 2 days). A `CronJob` running only `default`
/// must not delete what `hourly-critical` keeps: after three runs plant-hub keeps all three
/// snapshots, hub-a (covered by `default` alone) one.
#[tokio::test]
async fn run_of_one_policy_forgets_with_every_policy_of_its_folder() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) =
        fast_world(&cs, &[("hub-a", 20), ("plant-hub", 20)], 31, "run-forget").await;
    wd.write_identity();
    ship_policies(&wd);
    for _ in 0..3 {
        let out = wd
            .hubvault()
            .args(["run", "--policy", "policies/default.toml", "--json"])
            .within(Duration::from_secs(120))
            .run()
            .await;
        secrets_free(&sim, &["hub-a", "plant-hub"], &out).await;
        assert_eq!(out.code, 0, "{}", out.text());
        let runs = out.json()["runs"].as_array().unwrap().clone();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(runs.iter().all(|r| r["outcome"] == "ok"), "{runs:?}");
    }
    assert_eq!(wd.snapshot_ids("plant-hub.azure-devices.net").len(), 3);
    let hub_a = wd.snapshot_ids("hub-a.azure-devices.net").len();
    assert!(
        hub_a == 1 || hub_a == 2,
        "default keeps one a day (two if the runs straddled midnight UTC): {hub_a}"
    );
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
}

/// One hub behind a firewall that rejects us, one fine: exit 3 (restic's "incomplete"), each
/// hub's outcome and the failure's code in the JSON document and in the JSON run log.
#[tokio::test]
async fn run_exits_3_when_some_hubs_fail_and_logs_json_lines() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 20), ("hub-b", 10)], 32, "run-3").await;
    wd.write_identity();
    std::fs::create_dir_all(wd.join("policies")).unwrap();
    std::fs::write(
        wd.join("policies/all.toml"),
        "hubs = \"*\"\n[schedule]\ncron = \"0 2 * * *\"\n[retention]\nkeep-last = 5\n",
    )
    .unwrap();
    sim.allow_only("hub-b", "127.0.0.2").await;
    let out = wd
        .hubvault()
        .args([
            "run",
            "--policy",
            "policies/all.toml",
            "--json",
            "--log-format",
            "json",
        ])
        .within(Duration::from_secs(120))
        .run()
        .await;
    secrets_free(&sim, &["hub-a", "hub-b"], &out).await;
    assert_eq!(out.code, 3, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["exit_code"], 3);
    let by_hub = |hub: &str| -> Value {
        doc["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hub"] == hub)
            .unwrap()
            .clone()
    };
    assert_eq!(by_hub("hub-a")["outcome"], "ok");
    let b = by_hub("hub-b");
    assert_eq!(b["outcome"], "failed");
    let code = b["error"]["code"].as_str().unwrap();
    assert!(code.starts_with("hub_"), "{b}");
    // the run log: one JSON line per event, with the fields operators filter on
    let events: Vec<Value> = ndjson(&out.stderr)
        .into_iter()
        .filter(|e| e.get("run_id").is_some())
        .collect();
    let done: Vec<&Value> = events.iter().filter(|e| e["phase"] == "done").collect();
    assert_eq!(done.len(), 2, "{events:?}");
    for e in &events {
        for field in [
            "ts",
            "run_id",
            "policy",
            "hub",
            "phase",
            "outcome",
            "snapshot",
            "error_code",
        ] {
            assert!(e.get(field).is_some(), "{field} missing: {e}");
        }
    }
    let failed = done.iter().find(|e| e["hub"] == "hub-b").unwrap();
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["error_code"], code);
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
    // all hubs failing is an error: exit 2
    sim.allow_only("hub-a", "127.0.0.2").await;
    let out = wd
        .hubvault()
        .args(["run", "--policy", "policies/all.toml", "--json"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.text());
}

/// A free loopback port for `--metrics`.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Two `serve` replicas on one store in Azurite, a policy every 5 seconds: each slot is backed
/// up exactly once (one replica runs it, the other finds it handled under the lease), `/metrics`
/// of each says so from the store's status record, and SIGTERM ends both with exit 0 and no
/// staging left.
#[tokio::test]
async fn two_serve_replicas_back_up_each_slot_once() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 20)], 33, "serve-two").await;
    wd.write_identity();
    std::fs::create_dir_all(wd.join("policies")).unwrap();
    std::fs::write(
        wd.join("policies/often.toml"),
        "hubs = \"*\"\n[schedule]\ncron = \"*/5 * * * * *\"\n[retention]\nkeep-last = 50\n",
    )
    .unwrap();
    let vault = crate::support::Staging::fresh(&cs, "serve-vault").await;
    let store = format!(
        "{}Container={}/v",
        if cs.ends_with(';') {
            cs.clone()
        } else {
            format!("{cs};")
        },
        vault.container
    );
    let ports = [free_port(), free_port()];
    let mut replicas = Vec::new();
    for port in ports {
        let metrics = format!("127.0.0.1:{port}");
        replicas.push(
            wd.hubvault()
                .args(["serve", "--policy", "policies", "--log-format", "json"])
                .args(["--store", &store, "--metrics", &metrics])
                .within(Duration::from_secs(60))
                .spawn(),
        );
    }
    for r in &mut replicas {
        assert!(
            r.wait_for_stderr("serving 1 scheduled run", Duration::from_secs(30))
                .await
        );
    }
    // about four slots
    tokio::time::sleep(Duration::from_secs(21)).await;
    let (status, _) = get(&format!("http://127.0.0.1:{}/healthz", ports[0])).await;
    assert_eq!(status, 200);
    let (status, _) = get(&format!("http://127.0.0.1:{}/readyz", ports[1])).await;
    assert_eq!(status, 200);
    let metrics: Vec<String> = futures::future::join_all(
        ports.map(|p| async move { get(&format!("http://127.0.0.1:{p}/metrics")).await.1 }),
    )
    .await;
    for r in &replicas {
        r.terminate();
    }
    let mut outs = Vec::new();
    for r in replicas {
        let out = r.finish().await.expect("serve ends on SIGTERM");
        secrets_free(&sim, &["hub-a"], &out).await;
        assert_eq!(out.code, 0, "{}", out.text());
        outs.push(out);
    }
    let done: Vec<Value> = outs
        .iter()
        .flat_map(|o| ndjson(&o.stderr))
        .filter(|e| e["phase"] == "done")
        .collect();
    let ok: Vec<&Value> = done.iter().filter(|e| e["outcome"] == "ok").collect();
    let mut slots: Vec<&str> = ok.iter().map(|e| e["slot"].as_str().unwrap()).collect();
    slots.sort_unstable();
    let before = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), before, "a slot was backed up twice: {done:?}");
    assert!(before >= 3, "about four slots in 21 s: {done:?}");
    // SIGTERM may stop a replica waiting for the other's lease: "stopped", never "failed"
    assert!(done.iter().all(|e| e["outcome"] != "failed"), "{done:?}");
    // the store holds exactly those snapshots
    let names: Vec<String> = vault
        .under("v")
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .filter(|n| n.ends_with("/manifest.g1.json"))
        .collect();
    assert_eq!(names.len(), before, "{names:?}");
    // both replicas report the store's state (last status, devices) whoever ran the backups
    for text in &metrics {
        assert!(
            text.contains("hubvault_backup_last_status{hub=\"hub-a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hubvault_backup_devices{hub=\"hub-a\"} 20"),
            "{text}"
        );
        assert!(text.contains("hubvault_schedule_next_run_timestamp_seconds{policy=\"often\"}"));
    }
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
    vault.delete().await;
}
