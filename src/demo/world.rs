//! The demo's world: the in-process simulator (two hubs, ARM and a DPS instance linked to both),
//! a throw-away age identity and
//! signing key, a local vault and a `file://` staging folder — and the few things the story does to that world
//! from the outside (firewall rules through ARM, device-side sends, reading the simulator back).
//!
//! Must not: back up, restore or judge anything (the story in `demo` does, through the real use
//! cases). Everything here is simulator-only: the fleet is synthetic, so a `file://` staging
//! container is acceptable here and nowhere else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use url::Url;

use super::Error;
use hubvault::arm::{ArmAuth, ArmClient, ArmToken};
use hubvault::config::Config;
use hubvault::device::telemetry::{self, DeviceTarget};
use hubvault::hub::{Connection, HubClient, PollPolicy};
use hubvault::keys::{SigningKey, TrustedSigners};
use hubvault::staging::Staging;
use hubvault::store::Store;
use hubvault::store::local::LocalStore;
use hubvault_sim::{self as sim, HubOptions, Options, Running};

/// How long one HTTP call of the demo's own may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the demo started or created. Dropping it stops the simulator and deletes the
/// identity and staging folders (the vault folder stays, and the story says where it is).
pub struct World {
    pub running: Running,
    stop: Option<oneshot::Sender<()>>,
    pub http: reqwest::Client,
    /// Holds the identity file (0600) and the `file://` staging folder; removed on drop.
    pub scratch: tempfile::TempDir,
    pub identity_path: PathBuf,
    pub recipient: age::x25519::Recipient,
    /// A throw-away signing key (in memory only), trusted for this run.
    pub signing_key: Arc<SigningKey>,
    pub store_dir: PathBuf,
    pub store: Arc<dyn Store>,
    /// The simulated DPS instance `dps-a` (linked to hub-a and hub-b).
    pub dps: Arc<sim::dps::DpsState>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start the simulator (hub-a seeded with `devices`, hub-b empty, ARM plugged in), create the
/// identity and the vault folder `vault_dir`.
pub async fn start(devices: usize, vault_dir: &Path) -> Result<World, Error> {
    let (stop, stopped) = oneshot::channel::<()>();
    let mut options = Options {
        hubs: vec![
            HubOptions {
                name: "hub-a".into(),
                devices,
            },
            HubOptions {
                name: "hub-b".into(),
                devices: 0,
            },
        ],
        seed: 7,
        arm: Some(Box::new(|hubs: &sim::shared::Hubs| {
            sim::arm::router(sim::arm::ArmState::new(hubs.clone()))
        })),
        ..Options::default()
    };
    let dps = sim::add_dps(&mut options, "dps-a");
    let running = sim::run(options, async move {
        let _ = stopped.await;
    })
    .await
    .map_err(|e| Error::Simulator(e.to_string()))?;
    let scratch = tempfile::Builder::new()
        .prefix("hubvault-demo-")
        .tempdir()
        .map_err(|source| Error::io("create a temporary folder", std::env::temp_dir(), source))?;
    let identity_path = scratch.path().join("identity.txt");
    let recipient = hubvault::keys::init_identity(&identity_path)?;
    let signing_key = Arc::new(SigningKey::generate()?);
    std::fs::create_dir_all(vault_dir)
        .map_err(|source| Error::io("create the vault folder", vault_dir, source))?;
    let store_dir = std::path::absolute(vault_dir)
        .map_err(|source| Error::io("resolve the vault folder", vault_dir, source))?;
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(&store_dir));
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| Error::Simulator(e.without_url().to_string()))?;
    Ok(World {
        running,
        stop: Some(stop),
        http,
        scratch,
        identity_path,
        recipient,
        signing_key,
        store_dir,
        store,
        dps,
    })
}

impl World {
    /// The signers this run trusts: its own throw-away key.
    pub fn trusted(&self) -> TrustedSigners {
        TrustedSigners::new([self.signing_key.signer()])
    }

    fn hub(&self, name: &str) -> Result<&sim::RunningHub, Error> {
        self.running
            .hub(name)
            .ok_or_else(|| Error::Simulator(format!("the simulator has no hub named {name}")))
    }

    /// `file://` URL of the staging folder (created on first use).
    pub fn staging_url(&self) -> Result<String, Error> {
        let dir = self.scratch.path().join("staging");
        std::fs::create_dir_all(&dir)
            .map_err(|source| Error::io("create the staging folder", &dir, source))?;
        Url::from_directory_path(&dir)
            .map(|u| u.to_string().trim_end_matches('/').to_owned())
            .map_err(|()| Error::Simulator(format!("{} is not an absolute path", dir.display())))
    }

    /// This run's staging area for `client`'s hub, in the `file://` folder.
    pub fn staging(&self, client: &HubClient) -> Result<Staging, Error> {
        Staging::open(
            Some(&self.staging_url()?),
            &Config::default(),
            client.host(),
        )
        .map_err(|e| Error::Step {
            step: "staging",
            detail: e.to_string(),
        })
    }

    /// A service client for a simulated hub, as `[hubs.NAME]` would configure it.
    pub fn client(&self, name: &str) -> Result<HubClient, Error> {
        let h = self.hub(name)?;
        let cs = h
            .connection_string("iothubowner")
            .ok_or_else(|| Error::Simulator(format!("{name} has no iothubowner policy")))?;
        let endpoint =
            Url::parse(&h.endpoint).map_err(|e| Error::Simulator(format!("{name}: {e}")))?;
        let mut target = Connection::from_connection_string(&cs)?.with_endpoint(endpoint);
        target.name = Some(name.to_owned());
        Ok(HubClient::new(target)?)
    }

    /// A service client for `dps-a`, as `[dps.dps-a]` would configure it.
    pub fn dps_client(&self) -> Result<hubvault::dps::DpsClient, Error> {
        let policy = self
            .dps
            .policies
            .first()
            .ok_or_else(|| Error::Simulator("dps-a has no policy".into()))?;
        let cs = format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.dps.host, policy.name, policy.primary_key
        );
        let endpoint = Url::parse(&self.dps_endpoint()?)
            .map_err(|e| Error::Simulator(format!("dps-a: {e}")))?;
        let mut target = Connection::from_connection_string(&cs)?.with_endpoint(endpoint);
        target.name = Some("dps-a".to_owned());
        Ok(hubvault::dps::DpsClient::new(target)?)
    }

    /// Where devices register with `dps-a` (its `device-endpoint`), under its ID scope.
    pub fn provisioning(&self) -> Result<hubvault::device::register::Provisioning, Error> {
        let mut p = hubvault::device::register::Provisioning::at(
            &self.dps.id_scope,
            &self.dps_endpoint()?,
        )?;
        p.poll_interval = Duration::from_millis(50);
        Ok(p)
    }

    fn dps_endpoint(&self) -> Result<String, Error> {
        self.running
            .dps_instance("dps-a")
            .map(|d| d.endpoint.clone())
            .ok_or_else(|| Error::Simulator("the simulator runs without dps-a".into()))
    }

    pub fn resource_id(&self, name: &str) -> Result<String, Error> {
        Ok(self.hub(name)?.resource_id.clone())
    }

    /// Base URL of the simulated ARM endpoint.
    pub fn arm(&self) -> Result<&str, Error> {
        self.running
            .arm
            .as_deref()
            .ok_or_else(|| Error::Simulator("the simulator runs without ARM".into()))
    }

    /// An ARM client for the simulated ARM endpoint (it takes any bearer token).
    pub fn arm_client(&self) -> Result<ArmClient, Error> {
        ArmClient::new(
            Some(self.arm()?),
            ArmAuth::Token(ArmToken::new("demo".into())),
            None,
        )
        .map_err(|e| Error::Step {
            step: "arm",
            detail: e.to_string(),
        })
    }

    /// Replace hub `name`'s networking through ARM (`PUT` of the resource, as the portal does):
    /// `allowed` = the only IP masks let in, or `None` for all networks.
    pub async fn set_firewall(
        &self,
        name: &str,
        allowed: Option<&[(&str, &str)]>,
    ) -> Result<(), Error> {
        let mut body = json!({"location": "westus", "sku": {"name": "S1", "capacity": 1}});
        if let Some(rules) = allowed {
            let ip_rules: Vec<Value> = rules
                .iter()
                .map(|(filter, mask)| json!({"filterName": filter, "action": "Allow", "ipMask": mask}))
                .collect();
            body["properties"] = json!({"publicNetworkAccess": "Enabled", "networkRuleSets":
                {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": true, "ipRules": ip_rules}});
        }
        let url = format!(
            "{}{}?api-version={}",
            self.arm()?,
            self.resource_id(name)?,
            hubvault::arm::API_VERSION
        );
        let r = self
            .http
            .put(url)
            .bearer_auth("demo")
            .json(&body)
            .send()
            .await
            .map_err(|e| Error::Simulator(format!("ARM PUT {name}: {}", e.without_url())))?;
        if !r.status().is_success() {
            return Err(Error::Simulator(format!(
                "ARM PUT {name}: HTTP {}",
                r.status()
            )));
        }
        Ok(())
    }

    async fn control_get(&self, path: &str) -> Result<String, Error> {
        let r = self
            .http
            .get(format!("{}{path}", self.running.control))
            .send()
            .await
            .map_err(|e| Error::Simulator(format!("control API {path}: {}", e.without_url())))?;
        if !r.status().is_success() {
            return Err(Error::Simulator(format!(
                "control API {path}: HTTP {}",
                r.status()
            )));
        }
        r.text()
            .await
            .map_err(|e| Error::Simulator(format!("control API {path}: {}", e.without_url())))
    }

    /// The hub's registry as the simulator holds it (devices.txt lines, keys included).
    pub async fn registry(&self, name: &str) -> Result<Vec<Value>, Error> {
        let text = self.control_get(&format!("/hubs/{name}/registry")).await?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Device-to-cloud messages the simulator accepted on hub `name`, per device.
    pub async fn messages(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let text = self.control_get(&format!("/hubs/{name}/messages")).await?;
        serde_json::from_str(&text).map_err(|e| Error::Simulator(format!("messages: {e}")))
    }

    /// Send one message as device `id` to hub `name`, signed with `key`, the way a device SDK
    /// does over HTTPS. Returns the HTTP status.
    pub async fn device_send(&self, name: &str, id: &str, key: &str) -> Result<u16, Error> {
        let h = self.hub(name)?;
        let target = DeviceTarget {
            host: h.host.clone(),
            endpoint: Url::parse(&h.endpoint).map_err(|e| Error::Simulator(e.to_string()))?,
        };
        let body = br#"{"temperature":21.5}"#;
        Ok(telemetry::send(&self.http, &target, id, key, body).await?)
    }
}

/// Job polling for the simulator's second-long jobs.
pub fn fast_poll() -> PollPolicy {
    PollPolicy {
        interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..PollPolicy::default()
    }
}

/// The fleet's shape, for the story's first line.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Fleet {
    pub devices: usize,
    pub sas: usize,
    pub x509: usize,
    pub edge: usize,
    pub children: usize,
    pub modules: usize,
    pub disabled: usize,
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "every count goes up at most once per line, so none exceeds registry.len()"
)]
pub fn fleet(registry: &[Value]) -> Fleet {
    let mut f = Fleet::default();
    for line in registry {
        if line.get("moduleId").and_then(Value::as_str).is_some() {
            f.modules += 1;
            continue;
        }
        f.devices += 1;
        match line["authentication"]["type"].as_str() {
            Some("sas") => f.sas += 1,
            Some(_) => f.x509 += 1,
            None => {}
        }
        if line["capabilities"]["iotEdge"].as_bool() == Some(true) {
            f.edge += 1;
        } else if line["deviceScope"].as_str().is_some_and(|s| !s.is_empty()) {
            f.children += 1;
        }
        if line["status"].as_str() == Some("disabled") {
            f.disabled += 1;
        }
    }
    f
}

/// A few enabled SAS devices and their primary keys, to prove they authenticate after the clone.
pub fn sample_sas_devices(registry: &[Value], n: usize) -> Vec<(String, String)> {
    registry
        .iter()
        .filter(|l| l.get("moduleId").is_none())
        .filter(|l| l["status"].as_str() == Some("enabled"))
        .filter_map(|l| {
            let id = l["id"].as_str()?;
            let key = l["authentication"]["symmetricKey"]["primaryKey"].as_str()?;
            Some((id.to_owned(), key.to_owned()))
        })
        .step_by(97)
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{fleet, sample_sas_devices};

    fn line(
        id: &str,
        auth: &str,
        edge: bool,
        scope: Option<&str>,
        status: &str,
    ) -> serde_json::Value {
        json!({"id": id, "status": status, "authentication": {"type": auth,
            "symmetricKey": {"primaryKey": format!("key-of-{id}"), "secondaryKey": "s"}},
            "capabilities": {"iotEdge": edge}, "deviceScope": scope})
    }

    #[test]
    fn fleet_counts_kinds_children_and_modules() {
        let reg = vec![
            line(
                "gw-1",
                "sas",
                true,
                Some("ms-azure-iot-edge://gw-1-1"),
                "enabled",
            ),
            json!({"id": "gw-1", "moduleId": "filter", "authentication": {"type": "sas"}}),
            line(
                "dev-1",
                "sas",
                false,
                Some("ms-azure-iot-edge://gw-1-1"),
                "enabled",
            ),
            line("dev-2", "selfSigned", false, None, "disabled"),
        ];
        let f = fleet(&reg);
        assert_eq!(
            (
                f.devices, f.sas, f.x509, f.edge, f.children, f.modules, f.disabled
            ),
            (3, 2, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn samples_only_enabled_sas_devices_never_modules() {
        let reg = vec![
            line("dev-1", "sas", false, None, "disabled"),
            json!({"id": "dev-2", "moduleId": "m", "status": "enabled",
                "authentication": {"symmetricKey": {"primaryKey": "module-key"}}}),
            line("dev-3", "selfSigned", false, None, "enabled"),
            line("dev-4", "sas", false, None, "enabled"),
        ];
        let mut reg = reg;
        reg[2]["authentication"]["symmetricKey"] = serde_json::Value::Null;
        assert_eq!(
            sample_sas_devices(&reg, 5),
            vec![("dev-4".to_owned(), "key-of-dev-4".to_owned())]
        );
    }
}
