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
    write_policy(
        &wd,
        "all",
        "hubs = \"*\"\n[schedule]\ncron = \"0 2 * * *\"\n[retention]\nkeep-last = 5\n",
    );
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
    // hub-b could not be read: its run's journal is left for the next run's sweep, no plaintext.
    assert_eq!(staging.plaintext_leftovers().await, Vec::<String>::new());
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

/// hub-a in the simulator, staging and a vault (under `v/`) in Azurite, one policy on `cron`:
/// what replicas of `serve` share.
struct Replicated {
    sim: World,
    staging: crate::support::Staging,
    wd: Workdir,
    vault: crate::support::Staging,
    /// The vault as `--store` names it: an account-key connection string with the container.
    store: String,
}

impl Replicated {
    async fn start(cs: &str, seed: u64, tag: &str, cron: &str) -> Replicated {
        let (sim, staging, wd) = fast_world(cs, &[("hub-a", 20)], seed, tag).await;
        wd.write_identity();
        write_policy(
            &wd,
            "often",
            &format!("hubs = \"*\"\n[schedule]\ncron = \"{cron}\"\n[retention]\nkeep-last = 50\n"),
        );
        let vault = crate::support::Staging::fresh(cs, &format!("{tag}-vault")).await;
        let sep = if cs.ends_with(';') { "" } else { ";" };
        let store = format!("{cs}{sep}Container={}/v", vault.container);
        Replicated {
            sim,
            staging,
            wd,
            vault,
            store,
        }
    }
}

/// The manifests in the vault (under `v/`): one per committed snapshot.
async fn manifests(vault: &crate::support::Staging) -> Vec<String> {
    let listed = vault.under("v").list("").await.unwrap();
    listed
        .into_iter()
        .map(|m| m.name)
        .filter(|n| n.ends_with("/manifest.g1.json"))
        .collect()
}

/// `serve` of every policy in the folder on `store`, logging JSON lines.
fn serve_on(wd: &Workdir, store: &str) -> crate::support::Hubvault {
    wd.hubvault()
        .args(["serve", "--policy", "policies", "--log-format", "json"])
        .args(["--store", store])
}

/// Two `serve` replicas on one store in Azurite, a policy every 5 seconds: each slot is backed
/// up exactly once (one replica runs it, the other finds it handled under the lease), `/metrics`
/// of each says so from the store's status record, and SIGTERM ends both with exit 0 and no
/// staging left.
#[tokio::test]
async fn two_serve_replicas_back_up_each_slot_once() {
    let Some(cs) = azurite() else { return };
    let Replicated {
        sim,
        staging,
        wd,
        vault,
        store,
    } = Replicated::start(&cs, 33, "serve-two", "*/5 * * * * *").await;
    let ports = [free_port(), free_port()];
    let mut replicas = Vec::new();
    for port in ports {
        let metrics = format!("127.0.0.1:{port}");
        replicas.push(
            serve_on(&wd, &store)
                .args(["--metrics", &metrics])
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
    let names = manifests(&vault).await;
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

/// healthchecks-style pings: at least this many starts, failures and successes.
fn assert_pings(seen: &[(String, Value)], starts: usize, fails: usize, successes: usize) {
    let pings: Vec<&str> = seen
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| p.starts_with("/ping"))
        .collect();
    let count = |p: &str| pings.iter().filter(|x| **x == p).count();
    assert!(count("/ping/start") >= starts, "{pings:?}");
    assert!(count("/ping/fail") >= fails, "{pings:?}");
    assert!(count("/ping") >= successes, "{pings:?}");
}

/// Write `policies/NAME.toml` in the work folder.
fn write_policy(wd: &Workdir, name: &str, text: &str) {
    std::fs::create_dir_all(wd.join("policies")).unwrap();
    std::fs::write(wd.join(&format!("policies/{name}.toml")), text).unwrap();
}

/// A webhook and ping receiver on loopback: every request's path and JSON body, in order.
pub(crate) struct Receiver {
    pub(crate) url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        use axum::extract::State;
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;
        async fn record(
            State(seen): State<Seen>,
            uri: axum::http::Uri,
            body: String,
        ) -> &'static str {
            let json = serde_json::from_str(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push((uri.path().to_owned(), json));
            "ok"
        }
        let seen: Seen = std::sync::Arc::default();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            seen,
            _server: server,
        }
    }

    pub(crate) fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A hub that starts failing (its firewall shuts us out) and heals: exactly one failure and one
/// recovery notification, healthchecks pings for each run, and `/metrics` shows the failure's
/// code and the last success time while it fails.
#[tokio::test]
async fn a_failing_hub_notifies_once_and_once_more_when_it_heals() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 10)], 34, "serve-notify").await;
    wd.write_identity();
    let hook = Receiver::start().await;
    wd.set_env("HOOK_URL", &format!("{}/hook/T0K3N", hook.url));
    wd.set_env("PING_URL", &format!("{}/ping", hook.url));
    write_policy(
        &wd,
        "often",
        "hubs = \"*\"\n[schedule]\ncron = \"*/3 * * * * *\"\n[retention]\nkeep-last = 50\n\
         [notifications]\nwebhook-url-env = \"HOOK_URL\"\nping-url-env = \"PING_URL\"\non = [\"failure\"]\n",
    );
    let port = free_port();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let mut serve = wd
        .hubvault()
        .args(["serve", "--policy", "policies", "--log-format", "json"])
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .within(Duration::from_secs(60))
        .spawn();
    let wait = Duration::from_secs(20);
    assert!(
        serve.wait_for_stderr("\"outcome\":\"ok\"", wait).await,
        "a first success"
    );
    sim.allow_only("hub-a", "127.0.0.2").await;
    for _ in 0..2 {
        assert!(
            serve.wait_for_stderr("\"outcome\":\"failed\"", wait).await,
            "failures"
        );
    }
    let (_, text) = get(&metrics_url).await;
    assert!(
        text.contains("hubvault_backup_last_status{hub=\"hub-a\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("hubvault_backup_failure_total{hub=\"hub-a\",code=\"hub_"),
        "{text}"
    );
    assert!(
        text.contains("hubvault_backup_last_success_timestamp_seconds{hub=\"hub-a\"} 1"),
        "{text}"
    );
    sim.firewall(
        "hub-a",
        serde_json::json!({"publicNetworkAccess": "Enabled", "networkRuleSets": {
            "defaultAction": "Allow", "applyToBuiltInEventHubEndpoint": true, "ipRules": []}}),
    )
    .await;
    for _ in 0..2 {
        assert!(
            serve.wait_for_stderr("\"outcome\":\"ok\"", wait).await,
            "healed"
        );
    }
    serve.terminate();
    let out = serve.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(
        !out.text().contains("T0K3N"),
        "the webhook URL's token is never shown"
    );
    secrets_free(&sim, &["hub-a"], &out).await;
    let seen = hook.seen();
    let events: Vec<&Value> = seen
        .iter()
        .filter(|(path, _)| path.starts_with("/hook/"))
        .map(|(_, body)| body)
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["failure", "recovery"], "{events:?}");
    let failure = events[0];
    assert_eq!(failure["policy"], "often");
    assert_eq!(failure["hub"], "hub-a");
    assert!(
        failure["error"]["code"]
            .as_str()
            .unwrap()
            .starts_with("hub_"),
        "{failure}"
    );
    assert!(failure["error"]["message"].as_str().is_some());
    for key in ["snapshot", "started_at", "finished_at"] {
        assert!(failure.get(key).is_some(), "{key}: {failure}");
    }
    assert!(events[1]["snapshot"].as_str().is_some(), "{:?}", events[1]);
    assert_pings(&seen, 5, 2, 3);
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
}

/// The lease holder is killed in the middle of a backup (its export job running, plaintext in
/// staging): the other replica takes the hub over once the blob lease has lapsed (15 s), backs
/// it up, and the killed run's staging is gone.
#[tokio::test]
async fn a_killed_lease_holder_is_taken_over_after_the_lease_lapses() {
    let Some(cs) = azurite() else { return };
    let Replicated {
        sim,
        staging,
        wd,
        vault,
        store,
    } = Replicated::start(&cs, 35, "serve-kill", "*/20 * * * * *").await;
    let serve = |pause: bool| {
        let cmd = serve_on(&wd, &store)
            .env("HUBVAULT_LEASE_SECS", "15")
            .within(Duration::from_secs(90));
        if pause {
            cmd.env("HUBVAULT_FAULT_PAUSE", "export-running").spawn()
        } else {
            cmd.spawn()
        }
    };
    let mut holder = serve(true);
    let paused = holder
        .wait_for_stderr("paused at export-running", Duration::from_secs(40))
        .await;
    assert!(paused, "the first replica's backup is running");
    holder.kill().await;
    let killed_at = std::time::Instant::now();
    let mut taker = serve(false);
    let took_over = taker
        .wait_for_stderr("\"outcome\":\"ok\"", Duration::from_secs(60))
        .await;
    assert!(took_over, "the second replica backs the hub up");
    assert!(
        killed_at.elapsed() >= Duration::from_secs(10),
        "not before the killed holder's lease lapsed: {:?}",
        killed_at.elapsed()
    );
    taker.terminate();
    let out = taker.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    secrets_free(&sim, &["hub-a"], &out).await;
    let manifests = manifests(&vault).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    sim.jobs_done("hub-a", Duration::from_secs(15)).await;
    assert_eq!(
        staging.leftovers().await,
        Vec::<String>::new(),
        "the killed run's plaintext is gone"
    );
    vault.delete().await;
}

/// SIGHUP re-reads the policies: a policy added meanwhile starts running, a broken one is
/// reported and the others keep running; a policy for another store is not run here.
#[tokio::test]
async fn sighup_rereads_policies_and_a_broken_one_does_not_stop_the_others() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 10)], 36, "serve-hup").await;
    wd.write_identity();
    write_policy(
        &wd,
        "nightly",
        "hubs = \"*\"\n[schedule]\ncron = \"0 2 * * *\"\n[retention]\nkeep-last = 5\n",
    );
    write_policy(
        &wd,
        "elsewhere",
        "hubs = \"*\"\nstore = \"/some/other/store\"\n[schedule]\ncron = \"* * * * * *\"\n",
    );
    let mut serve = wd
        .hubvault()
        .args(["serve", "--policy", "policies", "--log-format", "json"])
        .within(Duration::from_secs(60))
        .spawn();
    let wait = Duration::from_secs(20);
    assert!(serve.wait_for_stderr("serving 1 scheduled run", wait).await);
    write_policy(
        &wd,
        "often",
        "hubs = \"*\"\n[schedule]\ncron = \"*/3 * * * * *\"\n[retention]\nkeep-last = 5\n",
    );
    write_policy(&wd, "broken", "[schedule]\ncron = \"0 2 * *\"\n");
    serve.hangup();
    assert!(
        serve
            .wait_for_stderr("SIGHUP: 2 scheduled run(s)", wait)
            .await,
        "nightly and often, not broken or elsewhere"
    );
    assert!(serve.wait_for_stderr("\"outcome\":\"ok\"", wait).await);
    serve.terminate();
    let out = serve.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    assert!(out.stderr.contains("broken.toml"), "{}", out.stderr);
    let done: Vec<Value> = ndjson(&out.stderr)
        .into_iter()
        .filter(|e| e["phase"] == "done")
        .collect();
    assert!(done.iter().all(|e| e["policy"] == "often"), "{done:?}");
    secrets_free(&sim, &["hub-a"], &out).await;
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
}

/// A backup of the slot already in the store (a run killed after its manifest, before its
/// status record; here a manual backup after the slot): `run` of the due policy makes no second
/// snapshot, and records the slot as handled.
#[tokio::test]
async fn a_snapshot_made_since_the_slot_counts_as_the_slots_backup() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 10)], 37, "run-once").await;
    wd.write_identity();
    // the slot: two minutes ago, every day (UTC)
    let slot = chrono::Utc::now() - chrono::TimeDelta::minutes(2);
    let cron = slot.format("%M %H * * *").to_string();
    write_policy(
        &wd,
        "nightly",
        &format!("hubs = \"*\"\n[schedule]\ncron = \"{cron}\"\n[retention]\nkeep-last = 5\n"),
    );
    let backup = wd
        .hubvault()
        .args(["backup", "--hub", "hub-a", "--json"])
        .within(Duration::from_secs(60))
        .run()
        .await;
    assert_eq!(backup.code, 0, "{}", backup.text());
    let id = backup.json()["snapshot"].as_str().unwrap().to_owned();
    // first found by the snapshot, then by the status record it wrote
    for found in [Value::String(id.clone()), Value::Null] {
        let out = wd
            .hubvault()
            .args(["run", "--json"])
            .within(Duration::from_secs(60))
            .run()
            .await;
        secrets_free(&sim, &["hub-a"], &out).await;
        assert_eq!(out.code, 0, "{}", out.text());
        let run = &out.json()["runs"][0];
        assert_eq!(run["outcome"], "skipped", "{run}");
        assert_eq!(run["snapshot"], found, "{run}");
    }
    assert_eq!(wd.snapshot_ids("hub-a.azure-devices.net"), [id]);
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
}

/// A policy naming a DPS instance backs its enrollments up on `run`, and retention covers the
/// DPS snapshots too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_backs_up_the_dps_instances_a_policy_names() {
    let (world, wd, _client, keys) = crate::dps::dps_world(12).await;
    world.add_secret(&keys[0]);
    write_policy(
        &wd,
        "enrollments",
        "hubs = [\"none-*\"]\ndps = [\"dps-a\"]\n[schedule]\ncron = \"@daily\"\n[retention]\nkeep-last = 1\n",
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = wd
            .hubvault()
            .args(["run", "--policy", "policies/enrollments.toml", "--json"])
            .within(Duration::from_secs(60))
            .run()
            .await;
        assert_no_secrets(&out.text(), &keys, "run of a DPS policy");
        assert_eq!(out.code, 0, "{}", out.text());
        let run = out.json()["runs"][0].clone();
        assert_eq!(run["hub"], "dps-a", "{run}");
        assert_eq!(run["outcome"], "ok", "{run}");
        ids.push(run["snapshot"].as_str().unwrap().to_owned());
    }
    let host = world.dps.as_ref().unwrap().host.clone();
    // (two snapshots made in one second order by their random suffix: either may be "last")
    let left = wd.snapshot_ids(&host);
    assert_eq!(
        left.len(),
        1,
        "keep-last = 1 covers the DPS snapshots: {left:?}"
    );
    assert!(ids.contains(&left[0]), "{left:?} {ids:?}");
}

/// SIGTERM in the middle of a backup: the export job is cancelled, its staging deleted, the run
/// is `stopped` (not a failure), no snapshot is left, and `serve` exits 0. The job writes
/// 256-byte blocks, so the cancelled export leaves `devices.txt` as uncommitted blocks: those
/// go too (Azurite's listing with uncommitted blobs is empty).
#[tokio::test]
async fn sigterm_mid_backup_abandons_it_cleanly_and_exits_0() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 20)], 38, "serve-term").await;
    wd.write_identity();
    sim.limits(
        "hub-a",
        serde_json::json!({"job_rate": 2, "block_size": 256}),
    )
    .await;
    write_policy(
        &wd,
        "often",
        "hubs = \"*\"\n[schedule]\ncron = \"*/2 * * * * *\"\n[retention]\nkeep-last = 5\n",
    );
    let mut serve = wd
        .hubvault()
        .args(["serve", "--policy", "policies", "--log-format", "json"])
        .within(Duration::from_secs(60))
        .spawn();
    let started = serve
        .wait_for_stderr("\"phase\":\"backup\"", Duration::from_secs(20))
        .await;
    assert!(started, "a backup started");
    let job = sim
        .running_job("hub-a", Some("export"), Duration::from_secs(10))
        .await;
    assert!(job.get("jobId").is_some(), "{job}");
    serve.terminate();
    let out = serve.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    secrets_free(&sim, &["hub-a"], &out).await;
    let done: Vec<Value> = ndjson(&out.stderr)
        .into_iter()
        .filter(|e| e["phase"] == "done")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["outcome"], "stopped", "{done:?}");
    assert_eq!(done[0]["error_code"], "interrupted", "{done:?}");
    assert!(wd.snapshot_ids("hub-a.azure-devices.net").is_empty());
    assert!(sim.jobs_done("hub-a", Duration::from_secs(15)).await);
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
    assert_eq!(staging.everything().await, Vec::<String>::new());
}

/// `serve` down for a while: on restart the missed slots of a hub run once (for the latest of
/// them, read from the store's status record), not once per missed slot.
#[tokio::test]
async fn missed_slots_after_downtime_run_once_on_restart() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) = fast_world(&cs, &[("hub-a", 10)], 39, "serve-missed").await;
    wd.write_identity();
    write_policy(
        &wd,
        "often",
        "hubs = \"*\"\n[schedule]\ncron = \"*/2 * * * * *\"\n[retention]\nkeep-last = 50\n",
    );
    let serve = || {
        wd.hubvault()
            .args(["serve", "--policy", "policies", "--log-format", "json"])
            .within(Duration::from_secs(60))
            .spawn()
    };
    let mut first = serve();
    let ran = first
        .wait_for_stderr("\"outcome\":\"ok\"", Duration::from_secs(20))
        .await;
    assert!(ran, "a first backup");
    first.terminate();
    let out = first.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    // down for about three slots
    tokio::time::sleep(Duration::from_secs(7)).await;
    let restarted_at = chrono::Utc::now();
    let mut second = serve();
    let ran = second
        .wait_for_stderr("\"outcome\":\"ok\"", Duration::from_secs(20))
        .await;
    assert!(ran, "the missed slot ran");
    second.terminate();
    let out = second.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    secrets_free(&sim, &["hub-a"], &out).await;
    let slots: Vec<chrono::DateTime<chrono::Utc>> = ndjson(&out.stderr)
        .into_iter()
        .filter(|e| e["phase"] == "done" && e["outcome"] == "ok")
        .map(|e| e["slot"].as_str().unwrap().parse().unwrap())
        .collect();
    let missed: Vec<_> = slots.iter().filter(|s| **s < restarted_at).collect();
    assert_eq!(missed.len(), 1, "one run for the missed slots: {slots:?}");
    assert!(
        restarted_at - *missed[0] <= chrono::TimeDelta::seconds(2),
        "for the latest of them: {slots:?} (restarted at {restarted_at})"
    );
    assert_eq!(staging.leftovers().await, Vec::<String>::new());
}

/// Identities on `hub`, without the hub's own system modules.
async fn identities_on(sim: &World, hub: &str) -> usize {
    sim.registry(hub)
        .await
        .iter()
        .filter(|l| !matches!(l["moduleId"].as_str(), Some("$edgeAgent" | "$edgeHub")))
        .count()
}

/// A policy's `[drill]` on a seconds-level schedule under `serve`: hub-a's snapshot is drilled
/// into hub-drill, the cleanup leaves hub-drill empty, the HTML report lands in the report
/// folder, `/metrics` shows the drill gauges and counters, and the JSON run log has the drill's
/// events with its figures.
#[tokio::test]
async fn serve_runs_a_scheduled_drill_and_cleans_the_scratch_hub() {
    let Some(cs) = azurite() else { return };
    let (sim, staging, wd) =
        fast_world(&cs, &[("hub-a", 12), ("hub-drill", 0)], 61, "serve-drill").await;
    wd.write_identity();
    // A snapshot of hub-a first, by a policy outside the served folder.
    std::fs::create_dir_all(wd.join("once")).unwrap();
    std::fs::write(
        wd.join("once/once.toml"),
        "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 50\n",
    )
    .unwrap();
    let out = wd
        .hubvault()
        .args(["run", "--policy", "once/once.toml", "--json"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    write_policy(
        &wd,
        "drill",
        "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 50\n[drill]\ncron = \"*/4 * * * * *\"\n\
         to = \"hub-drill\"\nverify = \"sample\"\nrto-target = \"10m\"\nreport = \"reports/\"\n\
         engine = \"job\"\nprobe-devices = 1\n",
    );
    let check = wd
        .hubvault()
        .args(["policy", "check", "policies"])
        .run()
        .await;
    assert!(
        check
            .stdout
            .contains("engine job, 1 probe device(s) per kind"),
        "{}",
        check.stdout
    );
    let port = free_port();
    let mut serve = wd
        .hubvault()
        .args(["serve", "--policy", "policies", "--log-format", "json"])
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .within(Duration::from_secs(120))
        .spawn();
    assert!(
        serve
            .wait_for_stderr("\"outcome\":\"ok\"", Duration::from_secs(60))
            .await,
        "a drill passed"
    );
    let (_, text) = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    for want in [
        "hubvault_drill_last_success_timestamp_seconds{hub=\"hub-a\"} 1",
        "hubvault_drill_rto_seconds{hub=\"hub-a\"} ",
        "hubvault_drill_rpo_seconds{hub=\"hub-a\"} ",
        "hubvault_drill_attempts_total{hub=\"hub-a\"} ",
        "hubvault_drill_success_total{hub=\"hub-a\"} ",
        "hubvault_drill_last_status{hub=\"hub-a\"} 1",
    ] {
        assert!(text.contains(want), "want {want}: {text}");
    }
    serve.terminate();
    let out = serve.finish().await.expect("serve ends on SIGTERM");
    assert_eq!(out.code, 0, "{}", out.text());
    let lines = ndjson(&out.stderr);
    let drill_phase = lines
        .iter()
        .any(|l| l["phase"] == "drill" && l["hub"] == "hub-a" && l["policy"] == "drill");
    assert!(drill_phase, "{}", out.stderr);
    let done = lines
        .iter()
        .find(|l| l["phase"] == "done" && l["outcome"] == "ok")
        .expect("a finished drill in the log");
    let d = &done["drill"];
    assert_eq!(d["to"], "hub-drill", "{done}");
    assert_eq!(d["expected"], d["restored"], "{done}");
    assert!(d["expected"].as_u64().unwrap() >= 12, "{done}");
    assert_eq!(d["left_on_target"], 0, "{done}");
    assert!(d["rto_seconds"].as_f64().unwrap() > 0.0, "{done}");
    let report = d["report"].as_str().expect("a report path");
    let page = std::fs::read_to_string(wd.join(report)).unwrap();
    assert!(page.contains("<svg"), "the report has its timeline");
    // What the simulator holds: hub-drill empty again, hub-a untouched; the policy's engine
    // wrote it (auto would pick bulk calls for 12 devices; `job` runs an import job).
    assert_eq!(identities_on(&sim, "hub-drill").await, 0);
    assert!(
        sim.jobs("hub-drill")
            .await
            .iter()
            .any(|j| j["type"] == "import"),
        "engine = \"job\" was used"
    );
    assert!(identities_on(&sim, "hub-a").await >= 12);
    secrets_free(&sim, &["hub-a", "hub-drill"], &out).await;
    drop(staging);
}

/// A drill that breaches its RTO target fails the pass (exit 3: the backup made it, the drill
/// failed), is named in `--json` with its figures, and sends `drill_failure` to the webhook.
/// A scratch hub that is not empty fails the drill too, and nothing on it is changed.
#[tokio::test]
async fn a_breached_rto_target_fails_the_drill_and_notifies() {
    let Some(cs) = azurite() else { return };
    let (sim, _staging, wd) = fast_world(
        &cs,
        &[("hub-a", 8), ("hub-drill", 0), ("hub-busy", 3)],
        62,
        "serve-drill-rto",
    )
    .await;
    wd.write_identity();
    let hook = Receiver::start().await;
    wd.set_env("HOOK_URL", &format!("{}/hook/T0K3N", hook.url));
    write_policy(
        &wd,
        "strict",
        "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 50\n[notifications]\nwebhook-url-env = \"HOOK_URL\"\n\
         [drill]\ncron = \"0 4 * * 0\"\nto = \"hub-drill\"\nrto-target = \"0.001s\"\n",
    );
    let check = wd
        .hubvault()
        .args(["policy", "check", "policies/strict.toml"])
        .run()
        .await;
    assert_eq!(check.code, 0, "{}", check.text());
    for want in [
        "drill:     hub-a restored into hub-drill (must be empty), at 04:00 on Sundays, UTC time",
        "RTO target 0.001s",
        "scratch hub emptied afterwards",
    ] {
        assert!(check.stdout.contains(want), "want {want}: {}", check.stdout);
    }
    let out = wd
        .hubvault()
        .args(["run", "--policy", "policies/strict.toml", "--json"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs[0]["outcome"], "ok", "the backup: {json}");
    let drill = &runs[1];
    assert_eq!(drill["outcome"], "failed", "{json}");
    assert_eq!(drill["error"]["code"], "drill_failed", "{json}");
    assert!(
        drill["error"]["message"].as_str().unwrap().contains("RTO"),
        "{json}"
    );
    assert_eq!(drill["drill"]["left_on_target"], 0, "cleaned up: {json}");
    assert_eq!(identities_on(&sim, "hub-drill").await, 0);
    let seen = hook.seen();
    let events: Vec<&str> = seen
        .iter()
        .filter_map(|(_, b)| b["event"].as_str())
        .collect();
    assert_eq!(events, ["drill_failure"], "{seen:?}");
    assert_eq!(seen[0].1["drill"]["to"], "hub-drill");
    // Into a hub that holds devices: refused, reported, nothing changed there.
    write_policy(
        &wd,
        "strict",
        "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 50\n[drill]\ncron = \"0 4 * * 0\"\nto = \"hub-busy\"\n",
    );
    let before = sim.registry_text("hub-busy").await;
    let out = wd
        .hubvault()
        .args(["run", "--policy", "policies/strict.toml", "--json"])
        .within(Duration::from_secs(120))
        .run()
        .await;
    assert_eq!(out.code, 3, "{}", out.text());
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json["runs"][1]["error"]["code"], "drill_target_not_empty",
        "{json}"
    );
    assert_eq!(sim.registry_text("hub-busy").await, before);
    secrets_free(&sim, &["hub-a", "hub-drill", "hub-busy"], &out).await;
}

/// `policy check` names what makes every drill of a `[drill]` fail before it starts: X.509
/// certificates with `via-dps`, a certificate file that is not there, a DPS the config lacks,
/// no device to probe; a good one shows the DPS it probes through.
#[test]
fn policy_check_names_drills_that_cannot_run() {
    let wd = Workdir::bare();
    let cs = |host: &str, policy: &str| {
        format!("HostName={host};SharedAccessKeyName={policy};SharedAccessKey=AAAA")
    };
    std::fs::create_dir_all(wd.config_path().parent().unwrap()).unwrap();
    std::fs::write(
        wd.config_path(),
        format!(
            "[hubs.hub-a]\nconnection-string = {:?}\n[hubs.hub-drill]\nconnection-string = {:?}\n\
             [dps.dps-drill]\nconnection-string = {:?}\n",
            cs("hub-a.azure-devices.net", "iothubowner"),
            cs("hub-drill.azure-devices.net", "iothubowner"),
            cs(
                "dps-drill.azure-devices-provisioning.net",
                "provisioningserviceowner"
            ),
        ),
    )
    .unwrap();
    let drill = |extra: &str| {
        format!(
            "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 5\n[drill]\ncron = \"0 4 * * 0\"\n\
             to = \"hub-drill\"\n{extra}"
        )
    };
    write_policy(
        &wd,
        "certs",
        &drill("via-dps = \"dps-drill\"\nx509-certs = [\"nope.pem\"]\n"),
    );
    write_policy(
        &wd,
        "nodps",
        &drill("via-dps = \"dps-x\"\nprobe-devices = 0\n"),
    );
    write_policy(&wd, "good", &drill("via-dps = \"dps-drill\"\n"));
    let out = wd
        .hubvault()
        .args(["--json", "policy", "check", "policies"])
        .run_blocking();
    assert_eq!(out.code, 1, "{}", out.text());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let problems = |name: &str| -> Vec<String> {
        doc["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {doc:#}"))["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let certs = problems("certs");
    assert!(
        certs.iter().any(|p| p.contains("x509-certs with via-dps")),
        "{certs:?}"
    );
    assert!(
        certs.iter().any(|p| p.contains("nope.pem is not a file")),
        "{certs:?}"
    );
    let nodps = problems("nodps");
    assert!(
        nodps
            .iter()
            .any(|p| p.contains("\"dps-x\" is not in the config")),
        "{nodps:?}"
    );
    assert!(
        nodps.iter().any(|p| p.contains("probe-devices = 0")),
        "{nodps:?}"
    );
    assert!(problems("good").is_empty());
    let text = wd
        .hubvault()
        .args(["policy", "check", "policies/good.toml"])
        .run_blocking();
    assert_eq!(text.code, 0, "{}", text.text());
    assert!(
        text.stdout.contains("through DPS dps-drill"),
        "{}",
        text.stdout
    );
}
