//! `hubvault failover` against `hubvault-sim --private-endpoints hub-a`: a hub in West US with
//! private endpoints in West US and East US, Private DNS zones per region, the clients' virtual network
//! linked to West US's zones, and a consumer of the Event Hub-compatible endpoint whose health
//! follows DNS. The simulator's failover keeps the hub at 404012 for a short window (seconds),
//! so each run takes a few seconds. Everything is judged on the simulator's ARM state
//! (`/arm/state`), its consumer health URL and its registry.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hubvault, Out, SimProcess, Spawned};

const HUB_ID_SUFFIX: &str = "/providers/Microsoft.Devices/IotHubs/hub-a";

struct Pe {
    sim: SimProcess,
    work: tempfile::TempDir,
    control: String,
    http: reqwest::Client,
}

impl Pe {
    fn start(window_ms: u64) -> Pe {
        let window = window_ms.to_string();
        let sim = SimProcess::start(&[
            "--hub",
            "hub-a",
            "--private-endpoints",
            "hub-a",
            "--failover-window-ms",
            &window,
        ]);
        let info: Value =
            serde_json::from_slice(&std::fs::read(sim.dir().join("sim.json")).unwrap()).unwrap();
        Pe {
            control: info["control"].as_str().unwrap().to_owned(),
            sim,
            work: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// `hubvault` on the written config, with the test-only clock skew (limits) of `skew` s.
    fn hv(&self, skew: i64) -> Hubvault {
        Hubvault::new(self.work.path())
            .arg("--config")
            .arg(self.sim.config())
            .env("HUBVAULT_ARM_TOKEN", "test-token")
            .env("HUBVAULT_FAILOVER_TICK_MS", "100")
            .env("HUBVAULT_FAILOVER_CONSUMER_TIMEOUT_SECS", "20")
            .env("HUBVAULT_FAILOVER_CLOCK_SKEW_SECS", skew.to_string())
            // A killed run's lock lapses after 1 s, so a resume need not wait 30 s.
            .env("HUBVAULT_LEASE_SECS", "1")
            .within(Duration::from_secs(90))
    }

    async fn failover(&self, verb: &str, skew: i64, extra: &[&str]) -> Out {
        self.skew(skew).await;
        self.hv(skew)
            .args(["failover", verb, "--hub", "hub-a", "--json"])
            .args(extra)
            .run()
            .await
    }

    async fn skew(&self, secs: i64) {
        self.control_write(
            reqwest::Method::PATCH,
            "/arm/failover",
            json!({"clock_skew_secs": secs}),
        )
        .await;
    }

    /// A write to the simulator's control API that must succeed.
    async fn control_write(&self, method: reqwest::Method, path: &str, body: Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    async fn state(&self) -> Value {
        self.get("/arm/state").await.1
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.control))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn consumer_healthy(&self) -> bool {
        self.get("/consumers/hub-a-reader/health").await.0 == 200
    }

    async fn region_down(&self, region: &str, down: bool) {
        let path = format!("/arm/regions/{region}");
        self.control_write(reqwest::Method::PUT, &path, json!({"down": down}))
            .await;
    }

    async fn probe_devices_left(&self) -> usize {
        let r = self
            .http
            .get(format!("{}/hubs/hub-a/registry", self.control))
            .send()
            .await
            .unwrap();
        r.text()
            .await
            .unwrap()
            .lines()
            .filter(|l| l.contains("hubvault-probe-"))
            .count()
    }

    fn report(&self) -> PathBuf {
        self.work.path().join("failover.html")
    }
}

/// Start `failover run` with `hv`, paused after `step`'s ARM calls (before its journal entry),
/// and after `linger` more, kill it (`SIGKILL`).
async fn run_killed_at(hv: Hubvault, step: &str, linger: Duration) {
    let mut killed = run_paused_at(hv, step).await;
    tokio::time::sleep(linger).await;
    killed.kill().await;
}

/// `failover run` with `hv`, alive and paused after `step`'s ARM calls.
async fn run_paused_at(hv: Hubvault, step: &str) -> Spawned {
    let mut paused = hv
        .env("HUBVAULT_FAULT_PAUSE", step)
        .args(["failover", "run", "--hub", "hub-a"])
        .spawn();
    assert!(
        paused
            .wait_for_stderr("paused at", Duration::from_secs(30))
            .await,
        "never paused at {step}"
    );
    paused
}

/// The `other_writes` lines `failover plan --json` lists for the step named `step`.
fn other_writes(plan: &Value, step: &str) -> Vec<String> {
    plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == step)
        .flat_map(|s| s["other_writes"].as_array().cloned().unwrap_or_default())
        .map(|w| w.as_str().unwrap().to_owned())
        .collect()
}

/// `failover plan` exits 1 with a blocking finding that names the missing `action`.
async fn plan_blocks_for(pe: &Pe, action: &str) {
    let plan = pe
        .hv(0)
        .args(["failover", "plan", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(plan.code, 1, "{}", plan.stderr);
    let blocked: Vec<String> = plan.doc()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["level"] == "block")
        .map(|f| f["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(blocked.iter().any(|t| t.contains(action)), "{blocked:?}");
}

/// The hub's primary region and Event Hub-compatible endpoint host, and every private endpoint's
/// DNS names, as the simulator holds them.
fn hub_view(state: &Value) -> (String, String, Vec<Vec<String>>) {
    let hub = &state["hubs"]["hub-a"];
    let primary = hub["properties"]["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "primary")
        .unwrap()["location"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = hub["properties"]["eventHubEndpoints"]["events"]["endpoint"]
        .as_str()
        .unwrap()
        .trim_start_matches("sb://")
        .trim_end_matches('/')
        .to_owned();
    let endpoints = state["network"]["resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["type"] == "Microsoft.Network/privateEndpoints")
        .map(|r| {
            r["properties"]["customDnsConfigs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["fqdn"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    (primary, events, endpoints)
}

fn time(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

fn phase<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no phase {name}: {doc:#}"))
}

fn seconds(p: &Value) -> f64 {
    (time(&p["end"]) - time(&p["start"])).as_seconds_f64()
}

/// The run document's shape and the timeline's order; returns the measured device outage.
fn check_run(doc: &Value, region: &str) -> f64 {
    assert_eq!(doc["status"], "completed", "{doc:#}");
    assert_eq!(doc["failover_region"], region);
    let (before, after) = (
        &doc["eventhub_endpoint_before"],
        &doc["eventhub_endpoint_after"],
    );
    assert!(before["endpoint"].is_string() && before["path"].is_string());
    assert_ne!(
        before["endpoint"], after["endpoint"],
        "the endpoint changes"
    );
    assert_ne!(before["path"], after["path"]);
    for s in doc["steps"].as_array().unwrap() {
        assert!(["ok", "skipped", "failed"].contains(&s["outcome"].as_str().unwrap()));
    }
    let op = phase(doc, "failover operation");
    let devices = phase(doc, "devices cannot send");
    let network = phase(doc, "private endpoints and DNS");
    let consumer = phase(doc, "consumer hub-a-reader broken");
    assert!(time(&op["start"]) <= time(&devices["start"]), "{doc:#}");
    // Devices send again once the hub answers, before the network steps; the probes sample
    // every tick, so on a loaded machine their first success may land a little later.
    let sampling = time::Duration::milliseconds(500);
    assert!(
        time(&devices["end"]) <= time(&network["start"]) + sampling,
        "{doc:#}"
    );
    assert!(
        time(&consumer["start"]) < time(&network["start"]),
        "{doc:#}"
    );
    // The consumer heals once the endpoint its network resolves through is back, which may be
    // before the other endpoint is: never before the network steps begin.
    assert!(time(&consumer["end"]) > time(&network["start"]), "{doc:#}");
    seconds(devices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_failback_with_two_private_endpoints_heal_the_consumer() {
    let pe = Pe::start(2000);
    assert!(pe.consumer_healthy().await, "healthy before");
    let out = pe
        .failover("run", 0, &["--report", pe.report().to_str().unwrap()])
        .await;
    let doc = out.doc();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let outage = check_run(&doc, "eastus");
    assert!(
        (outage - 2.0).abs() < 0.75,
        "measured outage {outage}s, window 2s"
    );
    let (primary, events, endpoints) = hub_view(&pe.state().await);
    assert_eq!(primary, "East US");
    assert_eq!(endpoints.len(), 2, "both private endpoints re-created");
    assert!(
        endpoints.iter().all(|dns| dns.contains(&events)),
        "{endpoints:?}"
    );
    assert!(pe.consumer_healthy().await, "healed after the run");
    assert_eq!(pe.probe_devices_left().await, 0, "probe devices removed");
    let page = std::fs::read_to_string(pe.report()).unwrap();
    assert!(page.contains("<svg"));
    let info: Value =
        serde_json::from_slice(&std::fs::read(pe.sim.dir().join("sim.json")).unwrap()).unwrap();
    let cs = info["hubs"]["hub-a"]["connection_string"].as_str().unwrap();
    let key = cs.split("SharedAccessKey=").nth(1).unwrap().to_owned();
    for text in [&out.stdout, &out.stderr, &page] {
        crate::support::assert_no_secrets(text, std::slice::from_ref(&key), "failover run output");
    }

    let back = pe.failover("back", 3700, &[]).await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    check_run(&back.doc(), "westus");
    let (primary, events, endpoints) = hub_view(&pe.state().await);
    assert_eq!(primary, "West US");
    assert!(endpoints.iter().all(|dns| dns.contains(&events)));
    assert!(pe.consumer_healthy().await);
    let status = pe
        .hv(3700)
        .args(["failover", "status", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(status.doc()["runs"], 2);
    assert_eq!(status.doc()["state"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_failure_moves_dns_to_the_secondary_region() {
    let pe = Pe::start(1000);
    // The consumer's settings go to a file too (the last table of the written config is its entry).
    let settings = pe.work.path().join("reader-eventhub.json");
    let config = std::fs::read_to_string(pe.sim.config()).unwrap();
    let config = format!(
        "{config}settings-file = {:?}\n",
        settings.display().to_string()
    );
    std::fs::write(pe.sim.config(), config).unwrap();
    pe.region_down("westus", true).await;
    assert!(
        !pe.consumer_healthy().await,
        "the primary region's endpoint is down"
    );
    let out = pe.failover("run", 0, &["--network-failure"]).await;
    let doc = out.doc();
    assert_eq!(
        out.code, 1,
        "completed with the primary endpoint left: {}",
        out.stderr
    );
    assert_eq!(doc["status"], "completed");
    let step = |name: &str| {
        doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {doc:#}"))
            .clone()
    };
    assert_eq!(
        step("remove-endpoint:pe-hub-a-westus")["outcome"],
        "skipped"
    );
    assert_eq!(
        step("link-dns:privatelink.servicebus.windows.net")["outcome"],
        "ok"
    );
    assert!(
        pe.consumer_healthy().await,
        "DNS now resolves to East US's endpoint"
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    assert_eq!(
        written["eventHubEndpoint"],
        doc["eventhub_endpoint_after"]["endpoint"]
    );
    assert_eq!(
        written["eventHubPath"],
        doc["eventhub_endpoint_after"]["path"]
    );
    let state = pe.state().await;
    let ids: Vec<String> = state["network"]["resources"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let linked = |region: &str| {
        ids.iter().any(|id| {
            id.contains(&format!("hubvault-sim-{region}/"))
                && id.ends_with(
                    "privatelink.servicebus.windows.net/virtualnetworklinks/vnet-clients",
                )
        })
    };
    assert!(linked("eastus") && !linked("westus"), "{ids:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_refused_with_the_time_it_becomes_possible() {
    let pe = Pe::start(300);
    let nothing = pe.failover("back", 0, &[]).await;
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);
    assert!(
        nothing.doc()["reason"]
            .as_str()
            .unwrap()
            .contains("no completed failover"),
        "{}",
        nothing.stdout
    );
    assert_eq!(pe.failover("run", 0, &[]).await.code, 0);
    let soon = pe.failover("back", 60, &[]).await;
    assert_eq!(soon.code, 2, "{}", soon.stderr);
    assert_eq!(soon.doc()["status"], "refused");
    let reason = soon.doc()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("one manual failover or failback per hour")
            && reason.contains("possible from"),
        "{reason}"
    );
    assert_eq!(pe.failover("back", 3700, &[]).await.code, 0);
    assert_eq!(pe.failover("run", 7400, &[]).await.code, 0);
    assert_eq!(pe.failover("back", 11_100, &[]).await.code, 0);
    let before = pe.state().await;
    let third = pe.failover("run", 14_800, &[]).await;
    assert_eq!(third.code, 2, "{}", third.stderr);
    let reason = third.doc()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("2 failovers per day") && reason.contains("possible from"),
        "{reason}"
    );
    assert_eq!(pe.state().await, before, "a refusal changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_calls_and_changes_nothing() {
    let pe = Pe::start(300);
    let before = pe.state().await;
    let out = pe
        .failover("run", 0, &["--dry-run", "--network-failure"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let calls: Vec<Value> = out.doc()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["calls"].as_array().unwrap().clone())
        .collect();
    assert!(calls.iter().any(|c| {
        c["method"] == "POST"
            && c["path"]
                .as_str()
                .unwrap()
                .contains(&format!("{HUB_ID_SUFFIX}/failover?api-version="))
            && c["body"]["failoverRegion"] == "eastus"
    }));
    assert!(calls.iter().any(|c| {
        c["method"] == "PUT"
            && c["path"]
                .as_str()
                .unwrap()
                .contains("/privateDnsZoneGroups/")
    }));
    assert!(calls.iter().any(|c| {
        c["method"] == "PUT"
            && c["path"]
                .as_str()
                .unwrap()
                .contains("/virtualNetworkLinks/")
    }));
    assert_eq!(
        pe.state().await,
        before,
        "the simulator's ARM state is unchanged"
    );
    let status = pe
        .hv(0)
        .args(["failover", "status", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(status.doc()["runs"], 0, "nothing journalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_any_step_converges_on_the_next_run() {
    let names: Vec<String> = {
        let pe = Pe::start(300);
        let plan = pe
            .hv(0)
            .args(["failover", "plan", "--hub", "hub-a", "--json"])
            .run()
            .await;
        plan.doc()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names.len() >= 9, "{names:?}");
    for step in &names {
        let pe = Pe::start(300);
        run_killed_at(pe.hv(0), step, Duration::ZERO).await;
        let status = pe
            .hv(0)
            .args(["failover", "status", "--hub", "hub-a", "--json"])
            .run()
            .await;
        assert!(
            status.doc()["state"]
                .as_str()
                .unwrap()
                .starts_with("in progress"),
            "{step}: {}",
            status.stdout
        );
        let out = pe.failover("run", 0, &[]).await;
        assert_eq!(out.doc()["status"], "completed", "{step}: {}", out.stderr);
        assert!(out.code <= 1, "{step}: {}", out.stderr);
        let (primary, events, endpoints) = hub_view(&pe.state().await);
        assert_eq!(primary, "East US", "{step}");
        assert_eq!(endpoints.len(), 2, "{step}");
        assert!(
            endpoints.iter().all(|dns| dns.contains(&events)),
            "{step}: {endpoints:?}"
        );
        assert!(pe.consumer_healthy().await, "{step}");
        assert_eq!(pe.probe_devices_left().await, 0, "{step}");
    }
}

/// Two operators at once: while one `failover run` of the hub is alive (paused mid-run), a
/// second `run` or `back` waits for its lock, then is refused with nothing changed; once the
/// first is killed, its lock lapses and the next run resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_hub_is_refused_while_one_is_alive() {
    let pe = Pe::start(300);
    let mut first = run_paused_at(pe.hv(0), "record-endpoint").await;
    // Paused after its first step (a read): the ARM state is still, so any change is theirs.
    let before = pe.state().await;
    for verb in ["run", "back"] {
        let second = pe.failover(verb, 0, &[]).await;
        assert_eq!(second.code, 2, "{verb}: {}", second.stderr);
        let err = &second.doc()["error"];
        assert!(
            err["message"].as_str().unwrap().contains("holds its lock"),
            "{err}"
        );
        assert!(
            err["fix"]
                .as_str()
                .unwrap()
                .contains("failover status --hub hub-a"),
            "{err}"
        );
    }
    assert_eq!(pe.state().await, before, "the refused runs changed nothing");
    first.kill().await;
    let out = pe.failover("run", 0, &[]).await;
    assert_eq!(out.doc()["status"], "completed", "{}", out.stderr);
    assert_eq!(hub_view(&pe.state().await).0, "East US");
}

/// `failover abandon`: a killed run is ended as abandoned (`status` says so, with what was and
/// was not done), its probe devices are removed, and abandoning again finds nothing in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_run_is_ended_and_its_probe_devices_removed() {
    let pe = Pe::start(300);
    run_killed_at(pe.hv(0), "request-failover", Duration::ZERO).await;
    assert!(
        pe.probe_devices_left().await > 0,
        "the killed run left its probes"
    );
    let out = pe
        .hv(0)
        .args(["failover", "abandon", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.doc();
    assert_eq!(doc["state"], "abandoned");
    let done: Vec<&str> = doc["steps_done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["record-endpoint"], "{doc:#}");
    assert_eq!(doc["steps_left"][0], "request-failover", "{doc:#}");
    assert_eq!(pe.probe_devices_left().await, 0);
    let status = pe
        .hv(0)
        .args(["failover", "status", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(status.doc()["state"], "abandoned", "{}", status.stdout);
    let again = pe
        .hv(0)
        .args(["failover", "abandon", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(again.code, 2);
    let message = again.doc()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("nothing to abandon"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rights_block_the_plan_and_a_pending_connection_is_reported() {
    let pe = Pe::start(300);
    let narrow = json!([
        "Microsoft.Devices/IotHubs/failover/action",
        "Microsoft.Network/*"
    ]);
    let put = |path: &str, body: Value| {
        pe.http
            .put(format!("{}{path}", pe.control))
            .json(&body)
            .send()
    };
    assert!(
        put("/arm/permissions", narrow)
            .await
            .unwrap()
            .status()
            .is_success()
    );
    plan_blocks_for(
        &pe,
        "Microsoft.Devices/IotHubs/privateEndpointConnections/write",
    )
    .await;
    let before = pe.state().await;
    let refused = pe.failover("run", 0, &[]).await;
    assert_eq!(refused.code, 2);
    assert_eq!(refused.doc()["status"], "refused");
    assert_eq!(pe.state().await, before);

    assert!(
        put("/arm/permissions", json!([]))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(
        put("/arm/approval", json!({"manual": true}))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let out = pe
        .hv(0)
        .env("HUBVAULT_FAILOVER_CONSUMER_TIMEOUT_SECS", "2")
        .args(["failover", "run", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(out.code, 1, "completed with failed checks: {}", out.stderr);
    let doc = out.doc();
    assert_eq!(doc["status"], "completed");
    let created: Vec<&Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("create-endpoint:"))
        .collect();
    assert_eq!(created.len(), 2);
    for s in created {
        assert_eq!(s["outcome"], "failed");
        assert!(s["detail"].as_str().unwrap().contains("Pending"), "{s}");
    }
    assert!(
        !pe.consumer_healthy().await,
        "a Pending endpoint does not serve"
    );
}

/// The consumer's new settings go to Key Vault as a new version of its secret: an Event Hub
/// connection string naming the new endpoint and path with the `service` policy's key, written
/// by a caller that holds `Key Vault Secrets Officer` on that secret alone (RBAC on). Only the
/// secret's URL and version are printed; the key appears nowhere in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_settings_are_written_to_a_key_vault_secret() {
    let pe = Pe::start(300);
    let (secret, info) = secret_consumer(&pe).await;
    let identity = &info["managed_identity"];
    let hv = |skew: i64| {
        pe.hv(skew)
            .env("IDENTITY_ENDPOINT", identity["endpoint"].as_str().unwrap())
            .env("IDENTITY_HEADER", identity["header"].as_str().unwrap())
    };
    let plan = hv(0)
        .args(["failover", "plan", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert!(
        plan.doc()["calls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["calls"].as_array().cloned().unwrap_or_default())
            .any(|c| c["path"]
                .as_str()
                .unwrap()
                .contains("/IotHubKeys/service/listkeys?api-version=")),
        "the plan names the listkeys call: {}",
        plan.stdout
    );
    assert!(
        other_writes(&plan.doc(), "consumer-settings")
            .iter()
            .any(|w| w.contains("Key Vault, not ARM") && w.contains(&secret)),
        "the plan names the Key Vault write: {}",
        plan.stdout
    );
    let out = hv(0)
        .args(["failover", "run", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.doc();
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "consumer-settings")
        .unwrap()
        .clone();
    let detail = step["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{secret}/")) && detail.contains("version"),
        "{detail}"
    );

    let value = read_secret(&pe, &info, "hub-a-reader-eventhub").await;
    let after = &doc["eventhub_endpoint_after"];
    assert!(
        value.starts_with(&format!(
            "Endpoint={};SharedAccessKeyName=service;SharedAccessKey=",
            after["endpoint"].as_str().unwrap()
        )),
        "the secret names the new endpoint"
    );
    assert!(value.ends_with(&format!(";EntityPath={}", after["path"].as_str().unwrap())));
    let key = value
        .split("SharedAccessKey=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(key.len() >= 20);
    for text in [&out.stdout, &out.stderr, &plan.stdout, &plan.stderr] {
        crate::support::assert_no_secrets(text, &[key.clone(), value.clone()], "failover output");
    }
    // Failback writes a new version naming the endpoint after it.
    pe.skew(3700).await;
    let back = hv(3700)
        .args(["failover", "back", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(back.code, 0, "{}", back.stderr);
    let again = read_secret(&pe, &info, "hub-a-reader-eventhub").await;
    assert!(again.starts_with(&format!(
        "Endpoint={};",
        back.doc()["eventhub_endpoint_after"]["endpoint"]
            .as_str()
            .unwrap()
    )));
    let listed = pe.get("/keyvault/secrets/hub-a-reader-eventhub").await.1;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2, "{listed}");
}

/// The written consumer with `settings-secret`, and the default managed identity holding
/// `Key Vault Secrets Officer` on that secret alone (RBAC on). Returns the secret URL and sim.json.
async fn secret_consumer(pe: &Pe) -> (String, Value) {
    let secret = format!(
        "{}/secrets/hub-a-reader-eventhub",
        hubvault_sim::KEYVAULT_URL
    );
    let config = std::fs::read_to_string(pe.sim.config()).unwrap();
    std::fs::write(
        pe.sim.config(),
        format!("{config}settings-secret = \"{secret}\"\n"),
    )
    .unwrap();
    let info: Value =
        serde_json::from_slice(&std::fs::read(pe.sim.dir().join("sim.json")).unwrap()).unwrap();
    let principal = pe.get("/identities").await.1[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    pe.control_write(
        reqwest::Method::PUT,
        "/keyvault/role-assignments",
        json!([{"principal": principal, "role": "Key Vault Secrets Officer",
                 "scope": "/secrets/hub-a-reader-eventhub"}]),
    )
    .await;
    (secret, info)
}

/// The latest value of a secret, read from the simulated vault with the managed identity's token.
async fn read_secret(pe: &Pe, info: &Value, name: &str) -> String {
    let identity = &info["managed_identity"];
    let token: Value = pe
        .http
        .get(identity["endpoint"].as_str().unwrap())
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net"),
        ])
        .header("x-identity-header", identity["header"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Value = pe
        .http
        .get(format!(
            "{}/secrets/{name}?api-version=2025-07-01",
            info["keyvault"]["endpoint"].as_str().unwrap()
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    got["value"].as_str().unwrap().to_owned()
}

/// A run killed (`SIGKILL`) in the middle of the outage (the failover requested, the hub answering 404012)
/// and resumed: the probes' observations before the kill are in the store's journal, so the
/// resumed run's report shows the device outage from its start, within a tolerance of the
/// simulator's window, not just the part after the resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_reports_the_outage_from_before_the_crash() {
    let window = 4.0;
    let pe = Pe::start(4000);
    // The paused process keeps sampling the 404012s for a while, then dies without warning.
    run_killed_at(pe.hv(0), "request-failover", Duration::from_millis(1500)).await;
    let killed_at = time::OffsetDateTime::now_utc();
    let out = pe
        .failover("run", 0, &["--report", pe.report().to_str().unwrap()])
        .await;
    assert!(out.code <= 1, "{}", out.stderr);
    let doc = out.doc();
    assert_eq!(doc["status"], "completed", "{doc:#}");
    let devices = phase(&doc, "devices cannot send");
    assert!(
        time(&devices["start"]) < killed_at - time::Duration::seconds(1),
        "the outage starts before the kill ({killed_at}): {devices}"
    );
    // Nobody watched between the kill and the resume: the outage ends at the resumed run's first
    // good observation, so it is at least the window (and more when the resume came late).
    let outage = seconds(devices);
    assert!(
        outage > window - 0.75 && time(&devices["end"]) > killed_at,
        "measured outage {outage}s across the crash, window {window}s: {doc:#}"
    );
    let page = std::fs::read_to_string(pe.report()).unwrap();
    assert!(page.contains("devices cannot send"));
    assert_eq!(pe.probe_devices_left().await, 0, "every probe removed");
}

/// The hub owner's approval is part of the run when the config allows it: with manual approval
/// on the hub, each re-created endpoint's `Pending` connection is approved through
/// `PUT …/privateEndpointConnections/{name}` (status `Approved`), and the consumer heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_connections_are_approved_when_the_config_allows_it() {
    let pe = Pe::start(300);
    let config = std::fs::read_to_string(pe.sim.config()).unwrap();
    let config = config.replace(
        "max-backup-age = \"24h\"\n",
        "max-backup-age = \"24h\"\napprove-connections = true\n",
    );
    std::fs::write(pe.sim.config(), config).unwrap();
    // The dry run names the approval each re-created endpoint may need (changing nothing).
    let dry = pe.failover("run", 0, &["--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let approvals: Vec<String> = dry.doc()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("create-endpoint:"))
        .flat_map(|s| s["other_writes"].as_array().cloned().unwrap_or_default())
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(approvals.len(), 2, "{}", dry.stdout);
    assert!(
        approvals
            .iter()
            .all(|w| w.contains("privateEndpointConnections/") && w.contains("Approved")),
        "{approvals:?}"
    );
    pe.control_write(
        reqwest::Method::PUT,
        "/arm/approval",
        json!({"manual": true}),
    )
    .await;
    let out = pe.failover("run", 0, &[]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.doc();
    let created: Vec<&Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("create-endpoint:"))
        .collect();
    assert_eq!(created.len(), 2, "{doc:#}");
    for s in created {
        assert_eq!(s["outcome"], "ok", "{s}");
        assert!(s["detail"].as_str().unwrap().contains("approved"), "{s}");
    }
    let state = pe.state().await;
    let connections = state["hubs"]["hub-a"]["properties"]["privateEndpointConnections"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(connections.len(), 2, "{connections:#?}");
    assert!(
        connections
            .iter()
            .all(|c| c["properties"]["privateLinkServiceConnectionState"]["status"] == "Approved"),
        "{connections:#?}"
    );
    assert!(pe.consumer_healthy().await, "approved endpoints serve");
}

/// At 02:00, after a crash: `failover back` or the other variant must not silently finish (or
/// undo) the run in progress; each is refused, changes nothing and names the command that resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_progress_is_resumed_only_by_its_own_command() {
    let pe = Pe::start(300);
    run_killed_at(pe.hv(0), "read-endpoint", Duration::ZERO).await;
    let before = pe.state().await;
    for (verb, extra, says) in [
        ("back", &[][..], "before failing back"),
        ("run", &["--network-failure"][..], "normal variant"),
    ] {
        let out = pe.failover(verb, 0, extra).await;
        assert_eq!(out.code, 2, "{verb}: {}", out.stderr);
        assert_eq!(out.doc()["status"], "refused");
        let reason = out.doc()["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.contains(says)
                && reason.contains("next step read-endpoint")
                && reason.contains("`hubvault failover run --hub hub-a`"),
            "{reason}"
        );
        assert_eq!(
            pe.state().await,
            before,
            "{verb}: a refusal changes nothing"
        );
    }
    let out = pe.failover("run", 0, &[]).await;
    assert_eq!(out.doc()["status"], "completed", "{}", out.stderr);
}

/// Killed after the secret was written but before the step was journalled: the resumed run finds
/// the same value in the vault and adds no second version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_does_not_pile_up_secret_versions() {
    let pe = Pe::start(300);
    let (_, info) = secret_consumer(&pe).await;
    let identity = &info["managed_identity"];
    let hv = || {
        pe.hv(0)
            .env("IDENTITY_ENDPOINT", identity["endpoint"].as_str().unwrap())
            .env("IDENTITY_HEADER", identity["header"].as_str().unwrap())
    };
    run_killed_at(hv(), "consumer-settings", Duration::ZERO).await;
    let out = hv()
        .args(["failover", "run", "--hub", "hub-a", "--json"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let detail = out.doc()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "consumer-settings")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("already current"), "{detail}");
    let listed = pe.get("/keyvault/secrets/hub-a-reader-eventhub").await.1;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 1, "{listed}");
}

/// A consumer whose settings go to Key Vault needs the hub policy's key: without `listkeys` the
/// plan blocks and names the action, before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_consumer_needs_listkeys_on_the_hub() {
    let pe = Pe::start(300);
    secret_consumer(&pe).await;
    let without_listkeys = json!([
        "Microsoft.Devices/IotHubs/failover/action",
        "Microsoft.Devices/IotHubs/privateEndpointConnections/write",
        "Microsoft.Network/*"
    ]);
    pe.control_write(reqwest::Method::PUT, "/arm/permissions", without_listkeys)
        .await;
    plan_blocks_for(&pe, "Microsoft.Devices/IotHubs/IotHubKeys/listkeys/action").await;
}
