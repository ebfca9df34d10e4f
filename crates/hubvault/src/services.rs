//! Resolving what the user named (`--hub hub-a`, `--to "HostName=…"`) into a client target.
//!
//! `HUB` is either a name from `hubvault.toml` (`[hubs.NAME]`) or a service connection string.
//! Real Azure (`https://{HostName}`, public DNS, system trust roots) is the default; a config
//! `endpoint` (the simulator) or `ca-file` is used only when the config says so.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use url::Url;

use crate::config::{self, Config, Credential, ServiceEntry};
use crate::diagnostic::{Diagnostic, fix_text};
use crate::hub::{self, Connection};
use crate::snapshot::catalog::HubNames;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    /// `kind`: "hub" or "DPS".
    #[error("{kind} {name:?} in {config} has no credential: {}", fix_text(self))]
    NoCredential {
        kind: &'static str,
        name: String,
        config: String,
    },
    #[error("{kind} {name:?}: endpoint {endpoint:?} is not a URL: {detail}")]
    BadEndpoint {
        kind: &'static str,
        name: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "DPS {name:?} has no ID scope for devices to register under: {}",
        fix_text(self)
    )]
    NoIdScope { name: String },
    #[error(transparent)]
    Hub(#[from] hub::Error),
    #[error("cannot create the {kind} Entra credential: {detail}")]
    Credential { kind: String, detail: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Config(e) => e.code(),
            Error::NoCredential { .. } => "hub_no_credential",
            Error::BadEndpoint { .. } => "hub_bad_endpoint",
            Error::NoIdScope { .. } => "dps_no_id_scope",
            Error::Hub(e) => e.code(),
            Error::Credential { .. } => "credential",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Config(e) => e.fix(),
            Error::NoCredential { .. } => Some(
                "set connection-string, connection-string-env, connection-string-secret (a Key Vault secret URL), or host + credential".to_owned(),
            ),
            Error::NoIdScope { name } => Some(format!(
                "add id-scope = \"0ne…\" to [dps.{name}] (the ID scope on the instance's overview page)"
            )),
            Error::BadEndpoint { .. } | Error::Credential { .. } => None,
            Error::Hub(e) => e.fix(),
        }
    }
}

/// A hub, ready for [`hub::HubClient::new`], with what preflight needs to look it up in ARM.
#[derive(Debug, Clone)]
pub struct ResolvedHub {
    /// What messages call it: the config name, or the host name for a connection string.
    pub name: String,
    pub target: Connection,
    /// ARM resource id (`[hubs.NAME] resource-id`), for firewall checks.
    pub resource_id: Option<String>,
}

/// Every name the hub `spec` goes by, for finding its snapshots: `spec` itself (a config name, a
/// host name or a `--hub-name`), the host name of its config entry, the config names whose host
/// it is; a connection string contributes its host name only (never itself: it holds a key).
/// Pure apart from reading a `connection-string-env` variable when one is named (a missing one
/// just adds nothing).
pub fn hub_names(spec: &str, config: &Config) -> HubNames {
    let host_of = |entry: &ServiceEntry, name: &str| -> Option<String> {
        if let Some(h) = &entry.host {
            return Some(h.clone());
        }
        let cs = entry.connection_string(&format!("hubs.{name}")).ok()??;
        hub::ConnectionString::parse(&cs).ok().map(|c| c.host_name)
    };
    let mut names: Vec<String> = Vec::new();
    if spec.contains("HostName=") || spec.contains("hostname=") {
        if let Ok(cs) = hub::ConnectionString::parse(spec) {
            names.push(cs.host_name);
        }
    } else {
        names.push(spec.to_owned());
        if let Some(host) = config
            .hubs
            .get(spec)
            .or_else(|| config.dps.get(spec))
            .and_then(|e| host_of(e, spec))
        {
            names.push(host);
        }
    }
    let known = HubNames::new(&names);
    for (name, entry) in config.hubs.iter().chain(&config.dps) {
        if host_of(entry, name)
            .is_some_and(|h| known.names().iter().any(|n| n.eq_ignore_ascii_case(&h)))
        {
            names.push(name.clone());
        }
    }
    HubNames::new(names)
}

/// Resolve a DPS instance `spec`: a `[dps.NAME]` of the config first, else a DPS service
/// connection string.
pub fn resolve_dps(spec: &str, config: &Config) -> Result<Connection, Error> {
    if let Some(entry) = config.dps.get(spec) {
        return Ok(from_entry(Section::Dps, spec, entry, config)?.target);
    }
    if spec.contains("HostName=") || spec.contains("hostname=") {
        let mut target = Connection::from_connection_string(spec)?;
        target.name = Some(target.host.clone());
        return Ok(target);
    }
    Err(config::Error::UnknownDps {
        name: spec.to_owned(),
        config: config.describe(),
    }
    .into())
}

/// Where devices of the DPS instance `name` (a `[dps.NAME]` of the config) register: its
/// `id-scope`, at its `device-endpoint` or else `global.azure-devices-provisioning.net`.
pub fn dps_provisioning(
    name: &str,
    config: &Config,
) -> Result<crate::device::register::Provisioning, Error> {
    let entry = config
        .dps
        .get(name)
        .ok_or_else(|| config::Error::UnknownDps {
            name: name.to_owned(),
            config: config.describe(),
        })?;
    let scope = entry.id_scope.as_deref().ok_or_else(|| Error::NoIdScope {
        name: name.to_owned(),
    })?;
    let endpoint = entry
        .device_endpoint
        .as_deref()
        .unwrap_or(crate::device::register::GLOBAL_ENDPOINT);
    crate::device::register::Provisioning::at(scope, endpoint).map_err(|e| Error::BadEndpoint {
        kind: "DPS",
        name: name.to_owned(),
        endpoint: endpoint.to_owned(),
        detail: e.to_string(),
    })
}

/// Resolve `spec`: a config name first, else a connection string.
pub fn resolve_hub(spec: &str, config: &Config) -> Result<ResolvedHub, Error> {
    if let Some(entry) = config.hubs.get(spec) {
        return from_entry(Section::Hubs, spec, entry, config);
    }
    if spec.contains("HostName=") || spec.contains("hostname=") {
        let mut target = Connection::from_connection_string(spec)?;
        target.name = Some(target.host.clone());
        return Ok(ResolvedHub {
            name: target.host.clone(),
            target,
            resource_id: None,
        });
    }
    Err(config::Error::UnknownHub {
        name: spec.to_owned(),
        config: config.describe(),
    }
    .into())
}

/// Which table of the config an entry is from: `[hubs.NAME]` or `[dps.NAME]`.
#[derive(Clone, Copy)]
enum Section {
    Hubs,
    Dps,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Hubs => "hubs",
            Section::Dps => "dps",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Section::Hubs => "hub",
            Section::Dps => "DPS",
        }
    }
}

fn from_entry(
    section: Section,
    name: &str,
    entry: &ServiceEntry,
    config: &Config,
) -> Result<ResolvedHub, Error> {
    let mut target = match (
        entry.connection_string(&format!("{}.{name}", section.key()))?,
        &entry.host,
    ) {
        (Some(cs), _) => Connection::from_connection_string(&cs)?,
        (None, Some(host)) => {
            let credential =
                entra_credential(entry.credential.unwrap_or(Credential::DeveloperTools))?;
            Connection::entra(host, credential)
        }
        (None, None) => {
            return Err(Error::NoCredential {
                kind: section.kind(),
                name: name.to_owned(),
                config: config.describe(),
            });
        }
    };
    if let Some(endpoint) = &entry.endpoint {
        let url = Url::parse(endpoint).map_err(|e| Error::BadEndpoint {
            kind: section.kind(),
            name: name.to_owned(),
            endpoint: endpoint.clone(),
            detail: e.to_string(),
        })?;
        target = target.with_endpoint(url);
    }
    target.ca_file.clone_from(&entry.ca_file);
    target.name = Some(name.to_owned());
    Ok(ResolvedHub {
        name: name.to_owned(),
        target,
        resource_id: entry.resource_id.clone(),
    })
}

/// An Entra credential of the configured kind (`azure_identity`; there is no default chain).
pub fn entra_credential(kind: Credential) -> Result<Arc<dyn TokenCredential>, Error> {
    crate::credentials::entra(kind).map_err(|e| Error::Credential {
        kind: e.kind,
        detail: e.detail,
    })
}

/// Read the `connection-string-secret` of the hubs and DPS instances named in `names` (config
/// names) and, with `staging`, of `[staging]`, from Key Vault into their `connection-string`, so
/// no plaintext connection string sits in a file or the environment. Only what this run uses is
/// read (a host may be allowed to read only its own secrets), each once. A value that is not a
/// connection string is an error naming the secret, never showing the value.
pub async fn read_connection_secrets(
    config: &mut Config,
    vaults: &crate::keys::Vaults,
    names: &[String],
    staging: bool,
) -> Result<(), crate::keys::Error> {
    use crate::keys::{Error as KeysError, SecretUrl};
    let read = async |key: String, url: &str| -> Result<String, KeysError> {
        let url: SecretUrl = url.parse()?;
        let latest = vaults
            .read_latest(&url)
            .await?
            .into_iter()
            .next()
            .map(|v| (v.version, v.value));
        let Some((version, value)) = latest else {
            return Err(KeysError::BadVaultKey {
                what: "a connection string",
                secret: format!("{url} ({key})"),
                line: 0,
                reason: "the secret has no value",
            });
        };
        let text = value.trim().to_owned();
        if !text.contains('=') || !text.contains(';') {
            return Err(KeysError::BadVaultKey {
                what: "a connection string",
                secret: format!("{} ({key})", url.with_version(&version)),
                line: 0,
                reason: "expected Key=Value;… (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)",
            });
        }
        tracing::info!(secret = %url, setting = %key, "connection string read from Key Vault");
        Ok(text)
    };
    for (section, entries) in [("hubs", &mut config.hubs), ("dps", &mut config.dps)] {
        for (name, entry) in entries.iter_mut() {
            if !names.iter().any(|n| n == name) || entry.connection_string.is_some() {
                continue;
            }
            if let Some(url) = entry.connection_string_secret.clone() {
                let key = format!("{section}.{name}.connection-string-secret");
                entry.connection_string = Some(read(key, &url).await?);
            }
        }
    }
    if staging
        && let Some(entry) = config.staging.as_mut()
        && entry.connection_string.is_none()
        && let Some(url) = entry.connection_string_secret.clone()
    {
        entry.connection_string =
            Some(read("staging.connection-string-secret".to_owned(), &url).await?);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("hubvault.toml")).unwrap()
    }

    #[test]
    fn devices_register_at_the_global_endpoint_unless_the_dps_entry_says_otherwise() {
        let c = config(
            "store = \"s\"\n[dps.a]\nconnection-string-env = \"X\"\nid-scope = \"0ne00000001\"\n\
             [dps.b]\nconnection-string-env = \"X\"\nid-scope = \"0ne00000002\"\ndevice-endpoint = \"http://127.0.0.1:9\"\n\
             [dps.c]\nconnection-string-env = \"X\"\n",
        );
        let a = dps_provisioning("a", &c).unwrap();
        assert_eq!(
            a.endpoint.as_str(),
            "https://global.azure-devices-provisioning.net/"
        );
        assert_eq!(a.id_scope, "0ne00000001");
        let b = dps_provisioning("b", &c).unwrap();
        assert_eq!(b.endpoint.as_str(), "http://127.0.0.1:9/");
        let none = dps_provisioning("c", &c).unwrap_err();
        assert_eq!(none.code(), "dps_no_id_scope");
        assert!(none.fix().unwrap().contains("[dps.c]"), "{none}");
        assert!(dps_provisioning("zz", &c).is_err());
    }

    #[test]
    fn a_dps_entry_without_a_credential_says_dps() {
        let c = config("store = \"s\"\n[dps.dps-a]\nid-scope = \"0ne1\"\n");
        let e = resolve_dps("dps-a", &c).unwrap_err();
        assert!(e.to_string().starts_with("DPS \"dps-a\""), "{e}");
    }
}
