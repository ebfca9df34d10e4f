//! The simulated world, started inside the test process: hubs with seeded fleets, ARM (on by
//! default), and — when a test asks — HTTPS on every port, a DPS instance and Key Vault. Its
//! control API is the truth tests read hubs by; [`World::secrets`] is every key a run could leak.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::azurite::Staging;
use super::workdir::Workdir;
use hubvault_sim::dps::DpsState;
use hubvault_sim::{self as sim, HubOptions, Limits, Options, Running, RunningHub, TlsConfig};

/// The bearer token runs of hubvault give the simulated ARM (`[arm] token-env`).
pub const ARM_TOKEN: &str = "sim-arm-token";

/// What to start: see [`World::builder`].
pub struct WorldBuilder {
    hubs: Vec<HubOptions>,
    seed: u64,
    arm: bool,
    tls: bool,
    dps: Option<String>,
    more_dps: Vec<(String, Vec<hubvault_sim::shared::AccessPolicy>)>,
    keyvault: bool,
    limits: Limits,
}

/// A simulator running inside the test process. Dropping it stops every server.
pub struct World {
    pub running: Running,
    /// The DPS instance, when the world serves one (its policies hold its keys).
    pub dps: Option<Arc<DpsState>>,
    stop: Option<oneshot::Sender<()>>,
    http: reqwest::Client,
    /// Secrets a test adds to the scan (a key it made up, a SAS it minted).
    extra_secrets: Mutex<Vec<String>>,
    /// Holds the CA file of a TLS world.
    _ca_dir: Option<tempfile::TempDir>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl WorldBuilder {
    /// Hubs by (name, seeded devices), as [`WorldBuilder::hub`] one by one.
    pub fn hubs(self, hubs: &[(&str, usize)]) -> Self {
        hubs.iter()
            .fold(self, |b, (name, devices)| b.hub(name, *devices))
    }

    /// A hub named `name` (host `{name}.azure-devices.net`) seeded with `devices` synthetic devices.
    pub fn hub(mut self, name: &str, devices: usize) -> Self {
        self.hubs.push(HubOptions {
            name: name.to_owned(),
            devices,
        });
        self
    }

    /// Seed of the policy keys and fleets (same seed, same keys and devices); 1 unless set.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Serve simulated ARM (on unless turned off).
    pub fn arm(mut self, on: bool) -> Self {
        self.arm = on;
        self
    }

    /// Serve HTTPS on every port with a generated CA ([`World::ca_file`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Serve a DPS instance named `name`.
    pub fn dps(mut self, name: &str) -> Self {
        self.dps = Some(name.to_owned());
        self
    }

    /// Serve another DPS instance named `name` (after the one [`WorldBuilder::dps`] names).
    pub fn more_dps(self, name: &str) -> Self {
        self.more_dps_with(name, hubvault_sim::dps::default_policies())
    }

    /// Serve another DPS instance named `name` whose shared access policies are `policies`.
    pub fn more_dps_with(
        mut self,
        name: &str,
        policies: Vec<hubvault_sim::shared::AccessPolicy>,
    ) -> Self {
        self.more_dps.push((name.to_owned(), policies));
        self
    }

    /// Fast jobs on every hub: no per-line pacing, a short queue, a one-second `Retry-After`.
    pub fn fast_jobs(mut self) -> Self {
        self.limits.job_rate = 0.0;
        self.limits.job_queue_ms = 10;
        self.limits.retry_after_secs = Some(1);
        self
    }

    /// Serve simulated Key Vault.
    pub fn keyvault(mut self, on: bool) -> Self {
        self.keyvault = on;
        self
    }

    pub async fn start(self) -> World {
        let ca_dir = self.tls.then(|| tempfile::tempdir().unwrap());
        let options = Options {
            hubs: self.hubs,
            seed: self.seed,
            limits: self.limits,
            tls: ca_dir.as_ref().map(|d| TlsConfig {
                ca_file: Some(d.path().join("sim-ca.pem")),
                extra_hosts: Vec::new(),
            }),
            ..Options::default()
        };
        let (mut options, dps) = sim::with_services(options, self.dps.as_deref());
        for (name, policies) in self.more_dps {
            sim::add_dps_with(&mut options, name.as_str(), policies);
        }
        if !self.arm {
            options.arm = None;
        }
        if !self.keyvault {
            options.keyvault = None;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let running = sim::run(options, async move {
            let _ = stopped.await;
        })
        .await
        .expect("simulator starts");
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(pem) = &running.ca_pem {
            http =
                http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        World {
            running,
            dps,
            stop: Some(stop),
            http: http.build().unwrap(),
            extra_secrets: Mutex::new(Vec::new()),
            _ca_dir: ca_dir,
        }
    }
}

/// The world most live tests stand on: `hubs` (name, seeded devices) from `seed` with fast jobs
/// and ARM, a fresh staging container `tag` in Azurite (`cs`), and a work folder naming them
/// whose runs poll jobs every 50 ms.
pub async fn fast_world(
    cs: &str,
    hubs: &[(&str, usize)],
    seed: u64,
    tag: &str,
) -> (World, Staging, Workdir) {
    let world = World::builder()
        .hubs(hubs)
        .seed(seed)
        .fast_jobs()
        .start()
        .await;
    let staging = Staging::fresh(cs, tag).await;
    let wd = Workdir::new();
    wd.config(&world).staging(&staging).write();
    wd.set_env("HUBVAULT_JOB_POLL_MS", "50");
    (world, staging, wd)
}

impl World {
    /// No hubs yet, seed 1, ARM on, the simulator's default limits; TLS, DPS and Key Vault off.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            hubs: Vec::new(),
            seed: 1,
            arm: true,
            tls: false,
            dps: None,
            more_dps: Vec::new(),
            keyvault: false,
            limits: Limits::default(),
        }
    }

    pub fn hub(&self, name: &str) -> &RunningHub {
        self.running.hub(name).expect("hub exists")
    }

    /// The `iothubowner` connection string of `hub` (holds its key).
    pub fn connection_string(&self, hub: &str) -> String {
        self.hub(hub)
            .connection_string("iothubowner")
            .expect("policy exists")
    }

    /// Where the CA of a TLS world is written.
    pub fn ca_file(&self) -> Option<&Path> {
        self.running.ca_file.as_deref()
    }

    // ---- the control API ----

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<String>) -> String {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.running.control));
        if let Some(body) = body {
            request = request.body(body);
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "control {path}: {status} {text}");
        text
    }

    async fn control_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let text = self.control(method, path, Some(body.to_string())).await;
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The hub's registry as `devices.txt` JSON lines, keys included.
    pub async fn registry_text(&self, hub: &str) -> String {
        self.control(reqwest::Method::GET, &format!("/hubs/{hub}/registry"), None)
            .await
    }

    pub async fn configurations_text(&self, hub: &str) -> String {
        let path = format!("/hubs/{hub}/configurations");
        self.control(reqwest::Method::GET, &path, None).await
    }

    /// The hub's registry as the control API reads it back: devices.txt lines, keys included.
    pub async fn registry(&self, hub: &str) -> Vec<Value> {
        ndjson(&self.registry_text(hub).await)
    }

    pub async fn configurations(&self, hub: &str) -> Vec<Value> {
        ndjson(&self.configurations_text(hub).await)
    }

    /// Write the hub's registry and configurations as an export folder (`devices.txt`,
    /// `configurations.txt`) for `backup --from-export`.
    pub async fn write_export(&self, hub: &str, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("devices.txt"), self.registry_text(hub).await).unwrap();
        let configurations = self.configurations_text(hub).await;
        std::fs::write(dir.join("configurations.txt"), configurations).unwrap();
    }

    /// Add `count` synthetic devices from `seed`; returns how many were created.
    pub async fn seed(&self, hub: &str, count: usize, seed: u64) -> u64 {
        let body = json!({"count": count, "seed": seed});
        let v = self
            .control_json(reqwest::Method::POST, &format!("/hubs/{hub}/seed"), &body)
            .await;
        v["created"].as_u64().unwrap_or(0)
    }

    /// Load registry lines as they are (keys kept); every line must be accepted.
    pub async fn load(&self, hub: &str, lines: &[Value]) {
        let body = lines.iter().fold(String::new(), |mut b, l| {
            let _ = writeln!(b, "{l}");
            b
        });
        let path = format!("/hubs/{hub}/load");
        let text = self.control(reqwest::Method::POST, &path, Some(body)).await;
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["errors"], json!([]), "load into {hub}");
    }

    /// Remove every device and configuration of the hub.
    pub async fn wipe(&self, hub: &str) {
        self.control(
            reqwest::Method::DELETE,
            &format!("/hubs/{hub}/registry"),
            None,
        )
        .await;
    }

    /// Patch the hub's limits; returns the whole document.
    pub async fn limits(&self, hub: &str, patch: Value) -> Value {
        let at = format!("/hubs/{hub}/limits");
        self.control_json(reqwest::Method::PATCH, &at, &patch).await
    }

    /// Patch the hub's injected faults; returns the whole document (`json!({})` reads it).
    pub async fn faults(&self, hub: &str, patch: Value) -> Value {
        let at = format!("/hubs/{hub}/faults");
        self.control_json(reqwest::Method::PATCH, &at, &patch).await
    }

    pub async fn firewall(&self, hub: &str, doc: Value) -> Value {
        let path = format!("/hubs/{hub}/firewall");
        self.control_json(reqwest::Method::PUT, &path, &doc).await
    }

    /// The hub's firewall denies every caller but `ip` (tests call from 127.0.0.1).
    pub async fn allow_only(&self, hub: &str, ip: &str) -> Value {
        let doc = serde_json::json!({"publicNetworkAccess": "Enabled", "networkRuleSets": {
            "defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": true,
            "ipRules": [{"filterName": "only-branch", "action": "Allow", "ipMask": ip}]}});
        self.firewall(hub, doc).await
    }

    pub async fn jobs(&self, hub: &str) -> Vec<Value> {
        let path = format!("/hubs/{hub}/jobs");
        serde_json::from_str(&self.control(reqwest::Method::GET, &path, None).await).unwrap()
    }

    /// Device-to-cloud messages accepted per device.
    pub async fn messages(&self, hub: &str) -> BTreeMap<String, u64> {
        let path = format!("/hubs/{hub}/messages");
        serde_json::from_str(&self.control(reqwest::Method::GET, &path, None).await).unwrap()
    }

    /// The first job of `hub` that `wanted` picks, polled every 25 ms for `within`; `None` if
    /// none showed up.
    pub async fn job_where(
        &self,
        hub: &str,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let started = Instant::now();
        loop {
            if let Some(job) = self.jobs(hub).await.into_iter().find(|j| wanted(j)) {
                return Some(job);
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The job of `hub` (of `kind`: `export`, `import`; any when `None`) that runs within
    /// `within`; panics when none does (the test's moment never came).
    pub async fn running_job(&self, hub: &str, kind: Option<&str>, within: Duration) -> Value {
        self.job_where(hub, within, |j| {
            j["status"] == "running" && kind.is_none_or(|k| j["type"] == k)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no {} job ran on {hub} within {within:?}",
                kind.unwrap_or("")
            )
        })
    }

    /// Wait up to `within` until no job of `hub` is queued or running; false if one still is.
    pub async fn jobs_done(&self, hub: &str, within: Duration) -> bool {
        let started = Instant::now();
        loop {
            let busy = self.jobs(hub).await.iter().any(|j| {
                matches!(
                    j["status"].as_str(),
                    Some("enqueued" | "running" | "queued")
                )
            });
            if !busy {
                return true;
            }
            if started.elapsed() > within {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ---- secrets and devices ----

    /// Count `secret` among those [`World::secrets`] returns.
    pub fn add_secret(&self, secret: &str) {
        self.extra_secrets.lock().unwrap().push(secret.to_owned());
    }

    /// Every secret a run could leak: the fleet keys of `hubs` (as they are now), every policy
    /// key of every hub (and of DPS), the Azurite account key and what tests added.
    pub async fn secrets(&self, hubs: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for h in hubs {
            out.extend(fleet_keys(&self.registry(h).await));
        }
        let dps = self
            .running
            .dps_instances
            .iter()
            .flat_map(|d| &d.state.policies);
        for p in self
            .running
            .hubs
            .iter()
            .flat_map(|h| &h.shared.policies)
            .chain(dps)
        {
            out.push(p.primary_key.clone());
            out.push(p.secondary_key.clone());
        }
        if let Some(key) = std::env::var("HUBVAULT_TEST_AZURITE")
            .ok()
            .as_deref()
            .and_then(super::azurite::account_key)
        {
            out.push(key.to_owned());
        }
        out.extend(self.extra_secrets.lock().unwrap().iter().cloned());
        out
    }

    /// Register `registration_id` with DPS instance `dps` through the device registration API
    /// (hubvault's device client, polling every 20 ms).
    pub async fn device_register(
        &self,
        dps: &str,
        registration_id: &str,
        key: hubvault::device::register::DeviceKey<'_>,
    ) -> hubvault::device::register::Registration {
        let d = self.running.dps_instance(dps).expect("DPS instance exists");
        let mut at =
            hubvault::device::register::Provisioning::at(&d.state.id_scope, &d.endpoint).unwrap();
        at.poll_interval = Duration::from_millis(20);
        hubvault::device::register::register(&self.http, &at, registration_id, key)
            .await
            .expect("DPS answers")
    }

    /// Send one device-to-cloud message as device `id`, signed with `key` (its own SAS key).
    /// Returns the HTTP status the hub answered.
    pub async fn device_send(&self, hub: &str, id: &str, key: &str) -> u16 {
        let h = self.hub(hub);
        let target = hubvault::device::telemetry::DeviceTarget {
            host: h.host.clone(),
            endpoint: url::Url::parse(&h.endpoint).expect("hub endpoint"),
        };
        hubvault::device::telemetry::send(&self.http, &target, id, key, b"{\"t\":1}")
            .await
            .expect("the hub answers")
    }
}

/// The JSON object lines of `text` (other lines are skipped).
pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Every secret a fleet's registry holds: symmetric keys of devices and modules.
fn fleet_keys(registry: &[Value]) -> Vec<String> {
    let mut keys = Vec::new();
    for line in registry {
        let sk = &line["authentication"]["symmetricKey"];
        for k in ["primaryKey", "secondaryKey"] {
            if let Some(s) = sk[k].as_str().filter(|s| !s.is_empty()) {
                keys.push(s.to_owned());
            }
        }
    }
    keys
}
