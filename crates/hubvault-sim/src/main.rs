//! `hubvault-sim`: a local `IoT` Hub, DPS, ARM and Key Vault simulator (see the `hubvault_sim` library).
//!
//! ```text
//! hubvault-sim --listen 127.0.0.1:0 --hub hub-a --hub hub-b --dps dps-a --devices hub-a=1000 \
//!              --info sim.json --write-config hubvault.toml
//! ```
//! `--dps` is repeatable; `--link DPS=HUB` links hubs to a DPS (one with no `--link` is linked to
//! every hub, and enrollments naming an unlinked hub are refused); `--dps-ops-per-minute N`
//! throttles every DPS's service API. Each DPS port also serves the device registration API.
//! Runs until Ctrl-C (or SIGTERM). `--info` writes where everything is served; `--write-config`
//! writes a `hubvault.toml` (docs/architecture.md#configuration) pointing hubvault at the simulated hubs. Both files hold
//! the simulator's throwaway keys and are written with mode 0600.
//!
//! `--info` also names the Key Vault (`keyvault`: `url`, `host`, `endpoint`) and the default
//! managed identity (`managed_identity`: `endpoint` and `header`, the `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER` of `azure_identity::ManagedIdentityCredential`); `--write-config` writes a
//! `[keyvault]` section (`url`, `endpoint`, `credential = "managed-identity"`).
//!
//! `--tls` serves every port over HTTPS with one self-signed certificate generated at start for
//! all simulated host names (`hub-a.azure-devices.net`, `dps-a.azure-devices-provisioning.net`,
//! `hubvault-sim.vault.azure.net`, `management.azure.com`, `localhost`, `127.0.0.1`). The
//! certificate, which is its own CA, is written to `--ca-file` (default: `sim-ca.pem` next to
//! `--info`, else in the working directory); `--info` then reports `https://127.0.0.1:PORT`
//! endpoints and a `ca_file`, and `--write-config` puts `ca-file = "…"` in every hub and DPS
//! entry (and `[arm]`, `[keyvault]`) so hubvault trusts it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use hubvault_sim::arm::topology::{self, Topology};
use hubvault_sim::dps::DpsState;
use hubvault_sim::{self as sim, HubOptions, Options, Running, TlsConfig};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "hubvault-sim",
    version,
    about = "Local IoT Hub / DPS / ARM / Key Vault simulator for hubvault tests and demos"
)]
struct Cli {
    /// Bind address; port 0 gives every service an OS-chosen port, port P gives hubs P, P+1, …
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A hub to simulate (repeatable); its host name is NAME.azure-devices.net.
    #[arg(long = "hub", value_name = "NAME")]
    hubs: Vec<String>,
    /// A DPS instance to simulate (repeatable); its host name is NAME.azure-devices-provisioning.net.
    #[arg(long = "dps", value_name = "NAME")]
    dps: Vec<String>,
    /// Link a hub to a DPS instance: DPS=HUB (repeatable). A DPS with no --link is linked to every
    /// hub. Enrollments naming a hub that is not linked are refused, as DPS does.
    #[arg(long = "link", value_name = "DPS=HUB")]
    links: Vec<String>,
    /// Limit every DPS instance's service API to N operations a minute (DPS: 1,000), answering
    /// 429 with `Retry-After: 1` beyond it [default: unlimited].
    #[arg(long = "dps-ops-per-minute", value_name = "N")]
    dps_rate: Option<f64>,
    /// Seed synthetic devices into a hub: HUB=COUNT (repeatable).
    #[arg(long = "devices", value_name = "HUB=COUNT")]
    devices: Vec<String>,
    /// Seed for keys and synthetic fleets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write connection strings and endpoints as JSON to this file.
    #[arg(long)]
    info: Option<PathBuf>,
    /// Write a hubvault.toml pointing at the simulated services.
    #[arg(long = "write-config")]
    write_config: Option<PathBuf>,
    /// Serve HTTPS on every port with a generated self-signed certificate covering every
    /// simulated host name, localhost and 127.0.0.1; clients must trust the CA file.
    #[arg(long)]
    tls: bool,
    /// With --tls: where to write the CA certificate (PEM) [default: sim-ca.pem next to --info,
    /// else in the working directory].
    #[arg(long = "ca-file", value_name = "FILE", requires = "tls")]
    ca_file: Option<PathBuf>,
    /// Put HUB behind private endpoints in two regions (virtual networks, endpoints, Private DNS zones and
    /// links, a consumer of its Event Hub-compatible endpoint); `--write-config` then writes its
    /// `[failover.HUB]` section.
    #[arg(long = "private-endpoints", value_name = "HUB")]
    private_endpoints: Vec<String>,
    /// How long a manual failover keeps the hub answering 404012 (milliseconds).
    #[arg(long = "failover-window-ms", default_value_t = 3000)]
    failover_window_ms: i64,
}

/// Where `--tls` writes the CA: `--ca-file`, else next to `--info`, else `./sim-ca.pem`; made
/// absolute so the written config works from any directory.
fn ca_path(cli: &Cli) -> Result<PathBuf> {
    let path = match (&cli.ca_file, &cli.info) {
        (Some(p), _) => p.clone(),
        (None, Some(info)) => info.with_file_name("sim-ca.pem"),
        (None, None) => PathBuf::from("sim-ca.pem"),
    };
    std::path::absolute(&path)
        .with_context(|| format!("cannot resolve the CA file path {}", path.display()))
}

fn parse_devices(specs: &[String], hubs: &[String]) -> Result<Vec<(String, usize)>> {
    specs
        .iter()
        .map(|s| {
            let (hub, n) = s
                .split_once('=')
                .with_context(|| format!("--devices {s:?}: expected HUB=COUNT, e.g. hub-a=1000"))?;
            if !hubs.iter().any(|h| h == hub) {
                bail!("--devices {s:?}: no --hub {hub}; add --hub {hub} first");
            }
            Ok((
                hub.to_string(),
                n.parse()
                    .with_context(|| format!("--devices {s:?}: COUNT must be a whole number"))?,
            ))
        })
        .collect()
}

/// `--link DPS=HUB` pairs, each naming a `--dps` and a `--hub`.
fn parse_links(specs: &[String], dps: &[String], hubs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| {
            let (d, h) = s
                .split_once('=')
                .with_context(|| format!("--link {s:?}: expected DPS=HUB, e.g. dps-a=hub-b"))?;
            if !dps.iter().any(|x| x == d) {
                bail!("--link {s:?}: no --dps {d}; add --dps {d} first");
            }
            if !hubs.iter().any(|x| x == h) {
                bail!("--link {s:?}: no --hub {h}; add --hub {h} first");
            }
            Ok((d.to_string(), h.to_string()))
        })
        .collect()
}

/// The `--info` document.
fn info(running: &Running) -> Value {
    let mut hubs = Map::new();
    for h in &running.hubs {
        hubs.insert(
            h.name.clone(),
            json!({"connection_string": h.connection_string("iothubowner"), "endpoint": h.endpoint, "resource_id": h.resource_id, "host": h.host}),
        );
    }
    json!({
        "hubs": hubs,
        "dps": dps_info(running),
        "arm": running.arm.as_ref().map(|e| json!({"endpoint": e})),
        "keyvault": keyvault_info(running),
        "managed_identity": {
            "endpoint": running.managed_identity_endpoint(),
            "header": running.identities.default_identity().header,
        },
        "control": running.control,
        "ca_file": running.ca_file,
    })
}

/// `{"url", "host", "endpoint"}` of the vault, if served: the URL secret ids are written with, its
/// host name and where it is served.
fn keyvault_info(running: &Running) -> Value {
    match (&running.keyvault_state, &running.keyvault) {
        (Some(kv), Some(endpoint)) => {
            json!({"url": kv.vault_url(), "host": kv.host(), "endpoint": endpoint})
        }
        (None, Some(endpoint)) => json!({"endpoint": endpoint}),
        _ => Value::Null,
    }
}

/// `{"<name>": {"connection_string", "endpoint", "host", "id_scope", "resource_id",
/// "device_endpoint", "linked_hubs"}}` for every DPS instance. The device registration API is
/// served on the same port as the service API (`device_endpoint` = `endpoint`).
fn dps_info(running: &Running) -> Value {
    let mut out = Map::new();
    for d in &running.dps_instances {
        let s = &d.state;
        out.insert(
            s.name.clone(),
            json!({"connection_string": dps_connection_string(s), "endpoint": d.endpoint,
                   "host": s.host, "id_scope": s.id_scope, "resource_id": s.resource_id,
                   "device_endpoint": d.endpoint, "linked_hubs": s.linked_hubs()}),
        );
    }
    Value::Object(out)
}

fn dps_connection_string(d: &DpsState) -> Option<String> {
    let p = d.policies.first()?;
    Some(format!(
        "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
        d.host, p.name, p.primary_key
    ))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The `--write-config` document, in the shape of docs/architecture.md#configuration.
fn config(running: &Running) -> String {
    let mut out = String::from(
        "# Written by hubvault-sim: the keys below are the simulator's throwaway keys.\n",
    );
    out.push_str("store = \"./hubvault-store\"\n");
    for h in &running.hubs {
        let cs = h.connection_string("iothubowner").unwrap_or_default();
        let _ = write!(
            out,
            "\n[hubs.{}]\nconnection-string = {}\n",
            h.name,
            toml_str(&cs)
        );
        let _ = write!(
            out,
            "endpoint = {}\nresource-id = {}\n",
            toml_str(&h.endpoint),
            toml_str(&h.resource_id)
        );
        out.push_str(&ca_line(running));
    }
    for d in &running.dps_instances {
        let cs = dps_connection_string(&d.state).unwrap_or_default();
        let _ = write!(
            out,
            "\n[dps.{}]\nconnection-string = {}\nendpoint = {}\nid-scope = {}\ndevice-endpoint = {}\nresource-id = {}\n",
            d.state.name,
            toml_str(&cs),
            toml_str(&d.endpoint),
            toml_str(&d.state.id_scope),
            toml_str(&d.endpoint),
            toml_str(&d.state.resource_id)
        );
        out.push_str(&ca_line(running));
    }
    if let Some(arm) = &running.arm {
        let _ = write!(
            out,
            "\n[arm]\nendpoint = {}\ntoken-env = \"HUBVAULT_ARM_TOKEN\"\n",
            toml_str(arm)
        );
        out.push_str(&ca_line(running));
    }
    if let (Some(kv), Some(endpoint)) = (&running.keyvault_state, &running.keyvault) {
        let _ = write!(
            out,
            "\n# Key Vault, reached with the managed-identity credential: set IDENTITY_ENDPOINT and\n\
             # IDENTITY_HEADER from --info (managed_identity.endpoint, managed_identity.header).\n\
             [keyvault]\nurl = {}\nendpoint = {}\ncredential = \"managed-identity\"\n",
            toml_str(kv.vault_url()),
            toml_str(endpoint)
        );
        out.push_str(&ca_line(running));
    }
    out.push_str("\n[staging]\nconnection-string-env = \"HUBVAULT_STAGING_CS\"\ncontainer = \"hubvault-staging\"\n");
    out
}

/// Build `--private-endpoints` topologies and set the failover window.
fn private_endpoints(cli: &Cli, running: &Running) -> Result<Vec<Topology>> {
    let Some(arm) = &running.arm_state else {
        return Ok(Vec::new());
    };
    arm.set_failover_duration(time::Duration::milliseconds(cli.failover_window_ms.max(0)));
    cli.private_endpoints
        .iter()
        .map(|name| {
            let hub = running
                .hub(name)
                .with_context(|| format!("--private-endpoints {name}: no --hub {name}; add it"))?;
            Ok(topology::build(
                arm,
                &hub.shared,
                &running.subscription,
                &running.resource_group,
            ))
        })
        .collect()
}

/// The `[failover.HUB]` section for a built topology (docs/failover.md in hubvault).
fn failover_section(t: &Topology, control: &str) -> String {
    let list = |items: &[String]| {
        format!(
            "[{}]",
            items
                .iter()
                .map(|i| toml_str(i))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut out = format!(
        "\n[failover.{}]\nmax-backup-age = \"24h\"\nclient-vnets = {}\n",
        t.hub,
        list(std::slice::from_ref(&t.clients_vnet))
    );
    for r in &t.regions {
        let group = r.vnet.split("/providers/").next().unwrap_or("");
        let _ = write!(
            out,
            "\n[failover.{}.regions.{}]\nresource-group = {}\nvnet = {}\nsubnet = {}\nzones = {}\n",
            t.hub,
            r.name,
            toml_str(group),
            toml_str(&r.vnet),
            toml_str(&r.subnet),
            list(&r.zones)
        );
    }
    let _ = write!(
        out,
        "\n[[failover.{}.consumers]]\nname = {}\nhealth-url = {}\n",
        t.hub,
        toml_str(&t.consumer),
        toml_str(&format!("{control}/consumers/{}/health", t.consumer))
    );
    out
}

/// `ca-file = "…"` for a hub or DPS entry when serving over TLS, else nothing.
fn ca_line(running: &Running) -> String {
    running
        .ca_file
        .as_ref()
        .map(|p| format!("ca-file = {}\n", toml_str(&p.display().to_string())))
        .unwrap_or_default()
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot write {}; check the folder exists and is writable",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubvault-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if cli.hubs.is_empty() {
        bail!("no hubs to simulate; give at least one --hub NAME");
    }
    let counts = parse_devices(&cli.devices, &cli.hubs)?;
    let hubs = cli
        .hubs
        .iter()
        .map(|name| HubOptions {
            name: name.clone(),
            devices: counts
                .iter()
                .filter(|(h, _)| h == name)
                .map(|(_, n)| n)
                .sum(),
        })
        .collect();
    let options = Options {
        listen: cli.listen,
        hubs,
        seed: cli.seed,
        tls: if cli.tls {
            Some(TlsConfig {
                ca_file: Some(ca_path(&cli)?),
                extra_hosts: Vec::new(),
            })
        } else {
            None
        },
        ..Options::default()
    };
    let (mut options, _) = sim::with_services(options, None);
    let links = parse_links(&cli.links, &cli.dps, &cli.hubs)?;
    for name in &cli.dps {
        if cli.dps.iter().filter(|d| *d == name).count() > 1 {
            bail!("--dps {name} is given twice; name each DPS instance once");
        }
        let state = sim::add_dps(&mut options, name);
        state.set_rate(cli.dps_rate, 1);
        let linked: Vec<&str> = links
            .iter()
            .filter(|(d, _)| d == name)
            .map(|(_, h)| h.as_str())
            .collect();
        let linked = if linked.is_empty() {
            cli.hubs.iter().map(String::as_str).collect()
        } else {
            linked
        };
        state.set_linked_hubs(Some(
            linked
                .iter()
                .map(|h| format!("{h}.azure-devices.net"))
                .collect(),
        ));
    }
    let running = sim::run(options, shutdown_signal()).await?;
    let topologies = private_endpoints(&cli, &running)?;
    for h in &running.hubs {
        eprintln!("hub {} ({}) at {}", h.name, h.host, h.endpoint);
    }
    eprintln!("control API at {}", running.control);
    if let Some(ca) = &running.ca_file {
        eprintln!("TLS CA certificate written to {}", ca.display());
    }
    for (what, url) in [("ARM", &running.arm), ("Key Vault", &running.keyvault)] {
        if let Some(url) = url {
            eprintln!("{what} at {url}");
        }
    }
    for d in &running.dps_instances {
        eprintln!(
            "DPS {} ({}, ID scope {}) at {}",
            d.state.name, d.state.host, d.state.id_scope, d.endpoint
        );
    }
    if let Some(path) = &cli.info {
        write_private(path, &format!("{:#}\n", info(&running)))?;
    }
    if let Some(path) = &cli.write_config {
        let mut text = config(&running);
        for t in &topologies {
            text.push_str(&failover_section(t, &running.control));
        }
        write_private(path, &text)?;
    }
    running.wait().await;
    Ok(())
}
