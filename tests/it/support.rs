//! Shared harness for end-to-end tests of live paths: the simulator started in-process (hubs plus
//! ARM), a fresh Azurite container for staging, a `hubvault.toml` pointing at both, and the real
//! `hubvault` binary run against them. Tests judge hubs by what the simulator's control API reads
//! back, never by hubvault's own output.
//!
//! Must not: decide what a test asserts (helpers return data; tests check it).

#![allow(
    dead_code,
    reason = "shared by several test modules; not each uses every helper"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use hubvault::store::Store as _;
use hubvault::store::azure::{AzureLocation, AzureStore};
use hubvault_sim::{self as sim, HubOptions, Options, Running};

/// A simulator running inside the test process. Dropping it stops every server.
pub struct Sim {
    pub running: Running,
    stop: Option<oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start the simulator with `hubs` (name, seeded device count) and ARM plugged in.
pub async fn start_sim(hubs: &[(&str, usize)], seed: u64) -> Sim {
    let (stop, stopped) = oneshot::channel::<()>();
    let options = Options {
        hubs: hubs
            .iter()
            .map(|(name, devices)| HubOptions {
                name: (*name).to_owned(),
                devices: *devices,
            })
            .collect(),
        seed,
        arm: Some(Box::new(|hubs: &sim::shared::Hubs| {
            sim::arm::router(sim::arm::ArmState::new(hubs.clone()))
        })),
        ..Options::default()
    };
    let running = sim::run(options, async move {
        let _ = stopped.await;
    })
    .await
    .expect("simulator starts");
    Sim {
        running,
        stop: Some(stop),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
}

impl Sim {
    fn control(&self, path: &str) -> String {
        format!("{}{path}", self.running.control)
    }

    pub fn connection_string(&self, hub: &str) -> String {
        self.running
            .hub(hub)
            .and_then(|h| h.connection_string("iothubowner"))
            .expect("hub exists")
    }

    async fn get_text(&self, path: &str) -> String {
        let r = self.http.get(self.control(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().await.unwrap()
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let r = self
            .http
            .request(method, self.control(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The hub's registry as the control API reads it back: devices.txt lines, keys included.
    pub async fn registry(&self, hub: &str) -> Vec<Value> {
        ndjson(&self.get_text(&format!("/hubs/{hub}/registry")).await)
    }

    pub async fn configurations(&self, hub: &str) -> Vec<Value> {
        ndjson(&self.get_text(&format!("/hubs/{hub}/configurations")).await)
    }

    pub async fn seed(&self, hub: &str, count: usize, seed: u64) -> u64 {
        let v = self
            .send_json(
                reqwest::Method::POST,
                &format!("/hubs/{hub}/seed"),
                &json!({"count": count, "seed": seed}),
            )
            .await;
        v["created"].as_u64().unwrap_or(0)
    }

    pub async fn limits(&self, hub: &str, patch: Value) -> Value {
        self.send_json(
            reqwest::Method::PATCH,
            &format!("/hubs/{hub}/limits"),
            &patch,
        )
        .await
    }

    pub async fn faults(&self, hub: &str, patch: Value) -> Value {
        self.send_json(
            reqwest::Method::PATCH,
            &format!("/hubs/{hub}/faults"),
            &patch,
        )
        .await
    }

    pub async fn firewall(&self, hub: &str, doc: Value) -> Value {
        self.send_json(reqwest::Method::PUT, &format!("/hubs/{hub}/firewall"), &doc)
            .await
    }

    pub async fn jobs(&self, hub: &str) -> Vec<Value> {
        serde_json::from_str(&self.get_text(&format!("/hubs/{hub}/jobs")).await).unwrap()
    }

    pub async fn messages(&self, hub: &str) -> BTreeMap<String, u64> {
        serde_json::from_str(&self.get_text(&format!("/hubs/{hub}/messages")).await).unwrap()
    }

    /// Every secret a test run could leak: the fleet keys of `hubs`, every hub policy key, and
    /// the Azurite account key.
    pub async fn secrets(&self, hubs: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for h in hubs {
            out.extend(fleet_keys(&self.registry(h).await));
        }
        for h in &self.running.hubs {
            for p in &h.shared.policies {
                out.push(p.primary_key.clone());
                out.push(p.secondary_key.clone());
            }
        }
        if let Ok(cs) = std::env::var("HUBVAULT_TEST_AZURITE")
            && let Some(key) = cs.split(';').find_map(|kv| kv.strip_prefix("AccountKey="))
        {
            out.push(key.to_owned());
        }
        out
    }

    /// Send one device-to-cloud message as device `id`, signed with `key` (its own SAS key).
    /// Returns the HTTP status the hub answered.
    pub async fn device_send(&self, hub: &str, id: &str, key: &str) -> u16 {
        let h = self.running.hub(hub).expect("hub exists");
        let signer = hubvault::hub::auth::SasSigner::new("", key).expect("base64 key");
        let expiry = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        let token = signer.token(&format!("{}/devices/{id}", h.host), expiry);
        let url = format!(
            "{}/devices/{}/messages/events?api-version={}",
            h.endpoint,
            urlencoding(id),
            hubvault::hub::DEFAULT_API_VERSION
        );
        let r = self
            .http
            .post(url)
            .header("authorization", token)
            .body("{\"t\":1}")
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Every secret a fleet's registry holds: symmetric keys of devices and modules.
pub fn fleet_keys(registry: &[Value]) -> Vec<String> {
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

/// The Azurite connection string, or `None` (with a visible message) when it is not configured.
pub fn azurite() -> Option<String> {
    match std::env::var("HUBVAULT_TEST_AZURITE") {
        Ok(cs) if !cs.trim().is_empty() => Some(cs),
        _ => {
            assert!(
                std::env::var("HUBVAULT_REQUIRE_AZURITE").as_deref() != Ok("1"),
                "HUBVAULT_REQUIRE_AZURITE=1 but HUBVAULT_TEST_AZURITE is not set; run scripts/test"
            );
            let msg = "skipped: set HUBVAULT_TEST_AZURITE (an Azurite connection string) to run this test";
            match std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
                Ok(mut f) => drop(writeln!(f, "{msg}")),
                Err(_) => eprintln!("{msg}"),
            }
            None
        }
    }
}

/// A fresh Azurite container for one test's staging.
pub struct StagingContainer {
    pub connection_string: String,
    pub container: String,
    pub store: Arc<AzureStore>,
}

pub async fn staging_container(cs: &str, tag: &str) -> StagingContainer {
    let container = format!(
        "st-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let store = AzureStore::new(
        AzureLocation::from_connection_string(cs, &container).unwrap(),
        None,
    )
    .unwrap();
    store.ensure_container().await.unwrap();
    StagingContainer {
        connection_string: cs.to_owned(),
        container,
        store: Arc::new(store),
    }
}

impl StagingContainer {
    /// Every blob left in the container.
    pub async fn leftovers(&self) -> Vec<String> {
        self.store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A work folder with a `hubvault.toml` naming the simulated hubs, ARM, the staging container
/// (through `HUBVAULT_STAGING_CS`), a local store and an identity file path.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub staging_cs: Option<String>,
}

impl Workdir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hubvault.toml")
    }
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("identity.txt")
    }
}

pub fn workdir(sim: &Sim, staging: Option<&StagingContainer>) -> Workdir {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "store = {}\nidentity = {}\n",
        toml_str(&dir.path().join("store").display().to_string()),
        toml_str(&dir.path().join("identity.txt").display().to_string())
    );
    for h in &sim.running.hubs {
        let _ = write!(
            text,
            "\n[hubs.{}]\nconnection-string = {}\nendpoint = {}\nresource-id = {}\n",
            h.name,
            toml_str(&sim.connection_string(&h.name)),
            toml_str(&h.endpoint),
            toml_str(&h.resource_id)
        );
    }
    if let Some(arm) = &sim.running.arm {
        let _ = write!(
            text,
            "\n[arm]\nendpoint = {}\ntoken-env = \"HUBVAULT_ARM_TOKEN\"\n",
            toml_str(arm)
        );
    }
    if let Some(s) = staging {
        let _ = write!(
            text,
            "\n[staging]\nconnection-string-env = \"HUBVAULT_STAGING_CS\"\ncontainer = {}\n",
            toml_str(&s.container)
        );
    }
    std::fs::write(dir.path().join("hubvault.toml"), text).unwrap();
    Workdir {
        dir,
        staging_cs: staging.map(|s| s.connection_string.clone()),
    }
}

/// The real binary, in `wd`, with its config and a throwaway ARM token.
pub fn hubvault(wd: &Workdir) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubvault"));
    c.current_dir(wd.path())
        .env("HUBVAULT_CONFIG", wd.config())
        .env("HOME", wd.path())
        .env("HUBVAULT_ARM_TOKEN", "sim-arm-token")
        .env_remove("HUBVAULT_STORE")
        .env_remove("HUBVAULT_IDENTITY")
        .env_remove("HUBVAULT_RECIPIENTS")
        .env_remove("HUBVAULT_LOG")
        .kill_on_drop(true);
    if let Some(cs) = &wd.staging_cs {
        c.env("HUBVAULT_STAGING_CS", cs);
    }
    c
}

/// Run to completion within `limit`; panics (test failure) when it takes longer.
pub async fn run(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("hubvault binary starts");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("hubvault did not finish within {limit:?}"))
        .unwrap()
}

/// stdout + stderr as text, for scans and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fails naming the kind of secret (never the secret itself) if `text` contains one.
pub fn assert_no_secrets(text: &str, secrets: &[String], what: &str) {
    for (n, s) in secrets.iter().enumerate() {
        assert!(
            !text.contains(s.as_str()),
            "{what}: output contains secret #{n} of {}",
            secrets.len()
        );
    }
    for line in text.lines() {
        if let Some(pos) = line.find("sig=") {
            let value: String = line[pos + 4..]
                .chars()
                .take_while(|c| !"&\" ',;)".contains(*c))
                .collect();
            assert!(
                value.is_empty() || value.contains("redacted") || value == "…" || value == "***",
                "{what}: a sig= value is printed unredacted"
            );
        }
        assert!(
            !line.contains("SharedAccessKey=") || line.contains("SharedAccessKey=<redacted>"),
            "{what}: a connection-string key is printed"
        );
        assert!(
            !line.contains("AccountKey=") || line.contains("AccountKey=<redacted>"),
            "{what}: an account key is printed"
        );
    }
}

pub fn write_private(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
