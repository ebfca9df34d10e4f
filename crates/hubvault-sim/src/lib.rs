//! `hubvault-sim`: a local `IoT` Hub (plus, from sibling modules, ARM, DPS and Key Vault) that
//! speaks the real wire contract (described in hubvault's `docs/azure.md`) and is strict where
//! Azure is strict. Every test of a live path stands on it.
//!
//! Owns: starting the services — one port per hub on the `listen` address, a control port (which
//! also serves the managed-identity token endpoint, `identity`), and ports for the ARM / DPS /
//! Key Vault routers when they are plugged in — and the hubs' shared state and the run's
//! managed identities. Must not: import anything else of hubvault. Its wire types are its own,
//! so a serde mistake in the client cannot be mirrored here.
//!
//! | module | owns |
//! |---|---|
//! | `state` | one hub's state (`Hub`: registry, jobs, limits, faults, throttle buckets), the throttling decision, JSON and request helpers, the clock |
//! | `hub` | one hub's route table and request gate (faults, firewall, api-version, SAS, throttling); the only module that knows the handlers |
//! | `devices`, `twins`, `query` | registry REST handlers (§5) |
//! | `jobs` | the jobs' REST handlers and each job's life (queue, run, outcome) |
//! | `job_table` | job records (`Job`, `Status`, `JobTable`) and their JSON |
//! | `work` | what a job's work shares: `JobEnd`, `Progress` (pacing, cancel, `fail_next_job`), storage failures |
//! | `export`, `import` | the export and import work (§2–4) |
//! | `blob` | job containers over Azure Blob REST or `file://` |
//! | `registry`, `records` | the compact registry model and its packed device and module records |
//! | `apply`, `wire` | import modes, the service's JSON shapes |
//! | `sas`, `access`, `firewall` | token checks, rights per operation, the IP decision (§1, §6.3, §7.1) |
//! | `error` | error bodies (§6.1) and start-up errors |
//! | `limits` | `Limits` (throttling rates, quotas), `Faults`, token buckets |
//! | `net` | droppable hub connections, the caller's address (`Peer`), the `Scheme` |
//! | `tls` | `--tls`: the generated certificate and the TLS listener |
//! | `serve` | serving a router on a plain or TLS listener until the run stops |
//! | `control`, `seed` | the control API (endpoints documented there) and synthetic fleets |
//! | `identity` | managed identities and their App Service-style token endpoint (served by the control listener at `/msi/token`) |
//! | `shared` | `HubShared`: what the ARM module and the data plane both touch; `lock` |
//! | `arm`, `dps`, `keyvault` | the sibling services, each with its own state and router |
//!
//! In-process use (tests):
//!
//! ```text
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let options = sim::Options { hubs: vec![sim::HubOptions { name: "hub-a".into(), devices: 100 }], ..Default::default() };
//! let running = sim::run(options, async move { let _ = stopped.await; }).await?;
//! let hub = running.hub("hub-a").unwrap();
//! // hub.endpoint = "http://127.0.0.1:PORT", hub.connection_string("iothubowner") = "HostName=hub-a.azure-devices.net;…"
//! // running.control = base URL of the control API (endpoints in `control`)
//! // with `with_services` (and `add_dps` for each more DPS): running.dps_instance("dps-a")
//! // = its state (ID scope, enrollments, linked hubs, set_network, set_rate) and endpoint;
//! // running.keyvault = "http://127.0.0.1:PORT", running.keyvault_state
//! // (vault URL, RBAC, firewall); IDENTITY_ENDPOINT = running.managed_identity_endpoint(),
//! // IDENTITY_HEADER = running.identities.default_identity().header (or a created identity's)
//! stop.send(()).ok();
//! ```
//!
//! HTTPS (`hubvault-sim --tls`): set `Options::tls` to a [`TlsConfig`]. One self-signed
//! certificate is generated per run for every simulated host name (each hub's
//! `{name}.azure-devices.net`, `Options::service_hosts` — which [`with_services`] fills with
//! `management.azure.com`, the Key Vault host and the DPS host — plus `localhost` and
//! `127.0.0.1`); every port (hubs, control, ARM, DPS, Key Vault) then serves HTTPS only, the
//! base URLs read `https://127.0.0.1:PORT`, and the CA (the certificate itself) is in
//! `Running::ca_pem` and, when `TlsConfig::ca_file` is set, written there. The hubs'
//! droppable connections and caller addresses work the same over TLS (`tls::TlsListener`
//! wraps `net::HubListener`).
//!
//! Choices where the contract is UNCERTAIN (each configurable through `Limits` unless noted):
//! second concurrent job → 403003 (`job_quota_code`); `Retry-After: 10` on 429 (`retry_after_secs`);
//! throttling body in the legacy form (`throttle_legacy_body`); reported properties on import
//! ignored (`import_reported`); a leaf `deviceScope` naming no edge device of the hub → 400028
//! (`strict_scopes`); `excludeKeysInExport` → `"authentication": null`; `importErrors.log`
//! always written; missing `api-version` → 400001 `InvalidProtocolVersion` (fixed); classic
//! `ipFilterRules` apply only while `networkRuleSets` is absent (fixed, see `firewall`).

pub mod access;
pub mod apply;
pub mod arm;
pub mod arm_control;
pub mod blob;
pub mod control;
pub mod devices;
pub mod dps;
pub mod error;
pub mod export;
pub mod firewall;
pub mod hub;
pub mod identity;
pub mod import;
pub mod job_table;
pub mod jobs;
pub mod keyvault;
pub mod limits;
pub mod net;
pub mod query;
pub mod records;
pub mod registry;
pub mod sas;
pub mod seed;
pub mod serve;
pub mod shared;
pub mod state;
pub mod tls;
pub mod twins;
pub mod wire;
pub mod work;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::Error;
pub use limits::{Faults, Limits};
pub use tls::TlsConfig;

use net::HubListener;
use serve::Serving;
use shared::{AccessPolicy, HubShared, Hubs};
use state::Hub;
use tokio_rustls::TlsAcceptor;

/// Builds a sibling service's router (ARM, DPS, Key Vault) from the hubs' shared state.
pub type RouterFactory = Box<dyn FnOnce(&Hubs) -> Router + Send>;

/// One hub to simulate.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Short name (`hub-a`); the host is `{name}.azure-devices.net`.
    pub name: String,
    /// Synthetic devices to seed at start.
    pub devices: usize,
}

/// What to start.
pub struct Options {
    /// Address every service binds to. Port 0: each service gets an OS-chosen port; port P: hubs
    /// get P, P+1, …, then control, ARM, DPS, Key Vault, in that order.
    pub listen: SocketAddr,
    pub hubs: Vec<HubOptions>,
    /// Seed for policy keys and synthetic fleets (same seed, same keys and devices).
    pub seed: u64,
    /// Limits every hub starts with (the control API changes them per hub).
    pub limits: Limits,
    pub subscription: String,
    pub resource_group: String,
    /// The sibling services (`sim::arm`, `sim::keyvault`); [`with_services`] plugs them in. Each
    /// `Some` is served on a port of its own.
    pub arm: Option<RouterFactory>,
    pub keyvault: Option<RouterFactory>,
    /// DPS instances ([`add_dps`]), each served on a port of its own (the first between ARM and
    /// Key Vault, the others after Key Vault), its registrations assigned into these hubs.
    pub dps: Vec<Arc<dps::DpsState>>,
    /// Filled by [`run`] with `dps`; ARM ([`with_services`]) finds DPS resources in it.
    pub dps_directory: dps::Directory,
    /// The vault's state, for the control API (`/keyvault/…`); [`with_services`] sets it next to
    /// `keyvault`. Ignored while `keyvault` is `None`.
    pub keyvault_state: Option<Arc<keyvault::KvState>>,
    /// The managed identities whose tokens the token endpoint issues and Key Vault trusts; starts
    /// with [`identity::DEFAULT_IDENTITY`].
    pub identities: Arc<identity::Identities>,
    /// Host names the plugged-in sibling services answer for (`management.azure.com`, …);
    /// [`with_services`] fills it. Only the `tls` certificate uses it.
    pub service_hosts: Vec<String>,
    /// Serve HTTPS on every port (`--tls`); `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The ARM state, once [`with_services`]' ARM router is built: the control API's `/arm/…`
    /// and `/consumers/…` routes and [`Running::arm_state`] read it.
    pub arm_state: Arc<OnceLock<Arc<arm::ArmState>>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            hubs: Vec::new(),
            seed: 1,
            limits: Limits::default(),
            subscription: "00000000-0000-4000-8000-000000000001".into(),
            resource_group: "hubvault-sim".into(),
            arm: None,
            dps: Vec::new(),
            dps_directory: dps::Directory::default(),
            keyvault: None,
            keyvault_state: None,
            identities: identity::Identities::new(),
            service_hosts: Vec::new(),
            tls: None,
            arm_state: Arc::new(OnceLock::new()),
        }
    }
}

/// A started hub, as a client sees it.
#[derive(Clone)]
pub struct RunningHub {
    pub name: String,
    pub host: String,
    /// Base URL where this hub is served (`http://127.0.0.1:PORT`; `https://` with `tls`).
    pub endpoint: String,
    pub resource_id: String,
    pub shared: Arc<HubShared>,
    pub state: Arc<Hub>,
}

impl std::fmt::Debug for RunningHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHub")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RunningHub {
    /// Service connection string for a policy of this hub (`iothubowner` by default). Holds a key.
    pub fn connection_string(&self, policy: &str) -> Option<String> {
        let p = self.shared.policies.iter().find(|p| p.name == policy)?;
        Some(format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host, p.name, p.primary_key
        ))
    }
}

/// A started DPS instance: its state and where it is served (service and device API alike).
#[derive(Clone, Debug)]
pub struct RunningDps {
    pub state: Arc<dps::DpsState>,
    pub endpoint: String,
}

/// Handles of a running simulator.
pub struct Running {
    pub hubs: Vec<RunningHub>,
    /// Base URL of the control API.
    pub control: String,
    /// Base URLs of the sibling services, when plugged in (`dps`: the first DPS instance).
    pub arm: Option<String>,
    pub dps: Option<String>,
    /// Every DPS instance, in the order added.
    pub dps_instances: Vec<RunningDps>,
    pub keyvault: Option<String>,
    /// The vault served at `keyvault` (its URL, secrets, RBAC, firewall), when there is one.
    pub keyvault_state: Option<Arc<keyvault::KvState>>,
    /// The run's managed identities; [`Running::managed_identity_endpoint`] issues their tokens.
    pub identities: Arc<identity::Identities>,
    /// With `tls`: the CA certificate (PEM) clients must trust, and where it was written.
    pub ca_pem: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// The ARM state (private endpoints, DNS, failover), when ARM is served.
    pub arm_state: Option<Arc<arm::ArmState>>,
    pub subscription: String,
    pub resource_group: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn hub(&self, name: &str) -> Option<&RunningHub> {
        self.hubs.iter().find(|h| h.name == name)
    }

    /// The DPS instance named `name`, if served.
    pub fn dps_instance(&self, name: &str) -> Option<&RunningDps> {
        self.dps_instances.iter().find(|d| d.state.name == name)
    }

    /// `IDENTITY_ENDPOINT` for `azure_identity::ManagedIdentityCredential`: the App Service-style
    /// token endpoint on the control port (`{control}/msi/token`). `IDENTITY_HEADER` is an
    /// identity's `header` ([`identity::Identities::default_identity`] or one the control API
    /// created).
    pub fn managed_identity_endpoint(&self) -> String {
        format!("{}{}", self.control, identity::TOKEN_PATH)
    }

    /// Wait until every server has shut down.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn derive_key(seed: u64, hub: &str, policy: &str, which: &str) -> String {
    B64.encode(Sha256::digest(
        format!("hubvault-sim/{seed}/{hub}/{policy}/{which}").as_bytes(),
    ))
}

/// Default hub policies (docs/azure.md).
fn policies(seed: u64, hub: &str) -> Vec<AccessPolicy> {
    let defs: [(&str, &[&str]); 5] = [
        (
            "iothubowner",
            &["RegistryWrite", "ServiceConnect", "DeviceConnect"],
        ),
        ("service", &["ServiceConnect"]),
        ("device", &["DeviceConnect"]),
        ("registryRead", &["RegistryRead"]),
        ("registryReadWrite", &["RegistryWrite"]),
    ];
    defs.iter()
        .map(|(name, rights)| AccessPolicy {
            name: (*name).into(),
            primary_key: derive_key(seed, hub, name, "primary"),
            secondary_key: derive_key(seed, hub, name, "secondary"),
            rights: rights.iter().map(|s| (*s).to_string()).collect(),
        })
        .collect()
}

/// The ARM `IotHubDescription` a hub starts with (docs/azure.md shape). No `networkRuleSets`:
/// "all networks", so classic `ipFilterRules` set later take effect (see `firewall`).
fn resource_doc(name: &str, host: &str, id: &str) -> Value {
    json!({
        "id": id, "name": name, "type": "Microsoft.Devices/IotHubs", "location": "westus", "tags": {},
        "etag": "AAAAAAFD6M4=",
        "sku": {"name": "S1", "tier": "Standard", "capacity": 1},
        "identity": {"type": "None"},
        "properties": {
            "hostName": host, "state": "Active", "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled", "ipFilterRules": [], "privateEndpointConnections": [],
            "eventHubEndpoints": {"events": {"retentionTimeInDays": 1, "partitionCount": 4, "partitionIds": ["0", "1", "2", "3"],
                "path": name, "endpoint": format!("sb://iothub-ns-{name}-1-primary.servicebus.windows.net/")}},
            "locations": [{"location": "West US", "role": "primary"}, {"location": "East US", "role": "secondary"}],
            "disableLocalAuth": false, "disableDeviceSAS": false, "disableModuleSAS": false,
            "minTlsVersion": "1.2", "features": "None", "enableDataResidency": false,
        }
    })
}

fn valid_hub_name(n: &str) -> bool {
    (3..=50).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

async fn bind(listen: SocketAddr, offset: &mut u16) -> Result<TcpListener, Error> {
    let mut addr = listen;
    if listen.port() != 0 {
        addr.set_port(listen.port().saturating_add(*offset));
        *offset = offset.saturating_add(1);
    }
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Serve a plugged-in sibling router on a port of its own.
async fn serve_sibling(
    factory: Option<RouterFactory>,
    shared: &Hubs,
    listen: SocketAddr,
    offset: &mut u16,
    serving: &Serving,
) -> Result<(Option<String>, Option<JoinHandle<()>>), Error> {
    let Some(f) = factory else {
        return Ok((None, None));
    };
    let l = bind(listen, offset).await?;
    let url = serving.base_url(&l);
    Ok((Some(url), Some(serving.spawn(l, f(shared)))))
}

/// The Key Vault URL the simulated vault answers for (its requests arrive at its own port).
pub const KEYVAULT_URL: &str = "https://hubvault-sim.vault.azure.net";

/// The host name clients reach simulated ARM by (`Options::service_hosts`).
pub const ARM_HOST: &str = "management.azure.com";

/// Plug the sibling services into `options`: ARM (over every hub), Key Vault, and — when `dps` names
/// one — a DPS instance, whose state (and policy keys) is returned so callers can print its
/// connection string. Their host names go into `options.service_hosts` (for `tls`).
pub fn with_services(
    mut options: Options,
    dps: Option<&str>,
) -> (Options, Option<Arc<dps::DpsState>>) {
    let slot = options.arm_state.clone();
    let directory = options.dps_directory.clone();
    options.arm = Some(Box::new(move |hubs: &Hubs| {
        let state = arm::ArmState::with_dps(hubs.clone(), directory);
        let _ = slot.set(state.clone());
        arm::router(state)
    }));
    let vault = keyvault::KvState::with_options(keyvault::KvOptions {
        vault_url: KEYVAULT_URL.to_string(),
        subscription: options.subscription.clone(),
        resource_group: options.resource_group.clone(),
        location: "westus".to_string(),
        identities: options.identities.clone(),
    });
    options.keyvault_state = Some(vault.clone());
    options.keyvault = Some(Box::new(move |_: &Hubs| keyvault::router(vault)));
    options.service_hosts.push(ARM_HOST.to_string());
    options
        .service_hosts
        .push(KEYVAULT_URL.trim_start_matches("https://").to_string());
    let dps_state = dps.map(|name| add_dps(&mut options, name));
    (options, dps_state)
}

/// Add a DPS instance named `name` (host `{name}.azure-devices-provisioning.net`, fresh policy
/// keys) to `options`; returns its state (policies, ID scope, enrollments, linked hubs).
pub fn add_dps(options: &mut Options, name: &str) -> Arc<dps::DpsState> {
    add_dps_with(options, name, dps::default_policies())
}

/// As [`add_dps`], with these shared access policies.
pub fn add_dps_with(
    options: &mut Options,
    name: &str,
    policies: Vec<AccessPolicy>,
) -> Arc<dps::DpsState> {
    let host = format!("{name}.azure-devices-provisioning.net");
    options.service_hosts.push(host.clone());
    let state = dps::DpsState::in_group(
        name,
        &host,
        policies,
        &options.subscription,
        &options.resource_group,
    );
    options.dps.push(state.clone());
    state
}

/// Serve every DPS instance (its registrations assigned into `hubs`) and Key Vault, in port
/// order: the first DPS, Key Vault, the other DPS instances.
async fn serve_dps_and_keyvault(
    dps: Vec<Arc<dps::DpsState>>,
    keyvault: Option<RouterFactory>,
    hubs: &[Arc<Hub>],
    (shared, listen, offset, serving): (&Hubs, SocketAddr, &mut u16, &Serving),
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(Vec<RunningDps>, Option<String>), Error> {
    let mut keyvault = Some(keyvault);
    let mut kv_url = None;
    let mut instances = Vec::new();
    for (i, state) in dps.into_iter().enumerate() {
        state.attach_hubs(hubs.to_vec());
        if i == 1
            && let Some(kv) = keyvault.take()
        {
            let (url, t) = serve_sibling(kv, shared, listen, offset, serving).await?;
            kv_url = url;
            tasks.extend(t);
        }
        let router = dps::router(state.clone());
        let factory: RouterFactory = Box::new(move |_: &Hubs| router);
        let (url, t) = serve_sibling(Some(factory), shared, listen, offset, serving).await?;
        tasks.extend(t);
        if let Some(endpoint) = url {
            instances.push(RunningDps { state, endpoint });
        }
    }
    if let Some(kv) = keyvault.take() {
        let (url, t) = serve_sibling(kv, shared, listen, offset, serving).await?;
        kv_url = url;
        tasks.extend(t);
    }
    Ok((instances, kv_url))
}

/// The TLS acceptor and the CA it was issued by (PEM) for every hub and sibling service host,
/// when `tls` asks for TLS.
fn start_tls(
    tls: Option<&TlsConfig>,
    wanted: &[HubOptions],
    service_hosts: Vec<String>,
) -> Result<(Option<TlsAcceptor>, Option<String>), Error> {
    let Some(t) = tls else {
        return Ok((None, None));
    };
    let mut hosts: Vec<String> = wanted.iter().map(|h| hub_host(&h.name)).collect();
    hosts.extend(service_hosts);
    let (acceptor, pem) = tls::start(t, hosts)?;
    Ok((Some(acceptor), Some(pem)))
}

/// Start the simulator. It runs until `shutdown` completes.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, Error> {
    let Options {
        listen,
        hubs: wanted,
        seed,
        limits,
        subscription,
        resource_group,
        arm,
        dps,
        dps_directory,
        keyvault,
        keyvault_state,
        identities,
        service_hosts,
        tls,
        arm_state,
    } = options;
    let keyvault_state = keyvault_state.filter(|_| keyvault.is_some());
    check_hub_names(&wanted)?;
    let (acceptor, ca_pem) = start_tls(tls.as_ref(), &wanted, service_hosts)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })];
    let serving = Serving {
        tls: acceptor,
        stop: stop_rx,
    };
    // Idle pooled connections are dropped before a Node-based storage server (Azurite, 5 s
    // keep-alive) closes them under us.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    let mut offset = 0u16;
    let mut running = Vec::new();
    for h in &wanted {
        let resource_id = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Devices/IotHubs/{}",
            h.name
        );
        let (shared, state) = new_hub(h, &resource_id, seed, &limits, &http);
        let host = shared.host.clone();
        let listener = bind(listen, &mut offset).await?;
        let endpoint = serving.base_url(&listener);
        let listener = HubListener::new(listener, state.drops.clone());
        tasks.push(serving.spawn(listener, hub::router(state.clone())));
        running.push(RunningHub {
            name: h.name.clone(),
            host,
            endpoint,
            resource_id,
            shared,
            state,
        });
    }
    let control_listener = bind(listen, &mut offset).await?;
    let control = serving.base_url(&control_listener);
    let ctl = control::Control {
        hubs: running
            .iter()
            .map(|r| (r.state.clone(), r.endpoint.clone()))
            .collect(),
        keyvault: keyvault_state.clone(),
        identities: identities.clone(),
        arm: arm_state.clone(),
    };
    tasks.push(serving.spawn(control_listener, control::router(ctl)));
    let shared: Hubs = Arc::new(running.iter().map(|r| r.shared.clone()).collect());
    shared::lock(&dps_directory).clone_from(&dps);
    let (arm_url, t1) = serve_sibling(arm, &shared, listen, &mut offset, &serving).await?;
    tasks.extend(t1);
    let hub_states: Vec<Arc<Hub>> = running.iter().map(|r| r.state.clone()).collect();
    let at = (&shared, listen, &mut offset, &serving);
    let (dps_instances, kv_url) =
        serve_dps_and_keyvault(dps, keyvault, &hub_states, at, &mut tasks).await?;
    Ok(Running {
        hubs: running,
        control,
        arm: arm_url,
        dps: dps_instances.first().map(|d| d.endpoint.clone()),
        dps_instances,
        keyvault: kv_url,
        keyvault_state,
        identities,
        ca_pem,
        ca_file: tls.and_then(|t| t.ca_file),
        arm_state: arm_state.get().cloned(),
        subscription,
        resource_group,
        tasks,
    })
}

/// One hub's shared and data-plane state, its synthetic fleet seeded.
fn new_hub(
    h: &HubOptions,
    resource_id: &str,
    seed: u64,
    limits: &Limits,
    http: &reqwest::Client,
) -> (Arc<HubShared>, Arc<Hub>) {
    let host = hub_host(&h.name);
    let shared = Arc::new(HubShared {
        name: h.name.clone(),
        resource: Mutex::new(resource_doc(&h.name, &host, resource_id)),
        failing_over_until_ms: std::sync::atomic::AtomicU64::default(),
        host,
        resource_id: resource_id.to_string(),
        policies: policies(seed, &h.name),
    });
    let state = Arc::new(Hub::new(shared.clone(), limits.clone(), http.clone()));
    if h.devices > 0 {
        seed::seed(
            &mut crate::state::lock(&state.registry),
            h.devices,
            seed,
            0,
            crate::state::now_secs(),
        );
    }
    (shared, state)
}

fn hub_host(name: &str) -> String {
    format!("{name}.azure-devices.net")
}

/// Refuse bad or repeated hub names before anything is bound or generated.
fn check_hub_names(wanted: &[HubOptions]) -> Result<(), Error> {
    for (i, h) in wanted.iter().enumerate() {
        if !valid_hub_name(&h.name) {
            return Err(Error::HubName(h.name.clone()));
        }
        if wanted[..i].iter().any(|o| o.name == h.name) {
            return Err(Error::DuplicateHub(h.name.clone()));
        }
    }
    Ok(())
}
