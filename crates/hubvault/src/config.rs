//! `hubvault.toml`: the lasting settings (store, keys, hubs, DPS, ARM, Key Vault, staging).
//!
//! Precedence is flags > `HUBVAULT_*` environment > this file > built-in defaults. Flags and
//! environment are resolved by the binary's clap structs; this module parses the file and applies
//! the last two layers. Keys are kebab-case and unknown keys are rejected with file and line, so a
//! typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diagnostic::{Diagnostic, fix_text};

/// The default store when neither flag, environment nor file names one.
pub const DEFAULT_STORE: &str = "./hubvault-store";
/// The config file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "hubvault.toml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("hub {name:?} is not in {config}; {}", fix_text(self))]
    UnknownHub { name: String, config: String },
    #[error("DPS instance {name:?} is not in {config} and is not a connection string")]
    UnknownDps { name: String, config: String },
    #[error("environment variable {var} (named by {key}) is not set")]
    MissingEnv { var: String, key: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Read { .. } => "config_read",
            Error::Parse { .. } => "config_parse",
            Error::UnknownHub { .. } => "config_unknown_hub",
            Error::UnknownDps { .. } => "config_unknown_dps",
            Error::MissingEnv { .. } => "config_missing_env",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Read { .. } | Error::Parse { .. } | Error::MissingEnv { .. } => None,
            Error::UnknownHub { name, .. } => {
                Some(format!("add [hubs.{name}] or pass a connection string"))
            }
            Error::UnknownDps { name, .. } => Some(format!(
                "add [dps.{name}] or pass a DPS connection string (HostName=….azure-devices-provisioning.net;…)"
            )),
        }
    }
}

/// A setting that is accepted (so configs written for a later release keep working) but that
/// nothing acts on yet: said on stderr and in `--json`'s `warnings`, never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    /// 1-based line of the setting, when it could be found.
    pub line: Option<usize>,
    /// The setting as written (`[keyvault]`, `[dps.dps-a]`).
    pub setting: String,
    /// What will act on it.
    pub acted_on_by: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(
            f,
            ": {} does nothing yet ({}); it is accepted and ignored",
            self.setting, self.acted_on_by
        )
    }
}

/// The 1-based line of the TOML table `[name]` or `[name.…]` in `text` (or of a `name = …` key),
/// for messages about a setting.
pub fn setting_line(text: &str, name: &str) -> Option<usize> {
    let header = |l: &str| {
        let l = l.trim_start();
        let Some(inner) = l.strip_prefix('[') else {
            return false;
        };
        let inner = inner.trim_start_matches('[').trim_start();
        inner.strip_prefix(name).is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.starts_with(']') || rest.starts_with('.')
        })
    };
    let key = |l: &str| {
        l.trim_start()
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
    };
    text.lines()
        .position(header)
        .or_else(|| text.lines().position(key))
        .map(|i| i.saturating_add(1))
}

/// The parsed `hubvault.toml`. Every field is optional: the file may be absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub store: Option<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    pub identity: Option<PathBuf>,
    /// The backup host's signing key (PEM, 0600).
    pub signing_key: Option<PathBuf>,
    /// Signers (`hvsig1…`) whose snapshots restore, dump, diff and verify accept.
    #[serde(default)]
    pub trusted_signers: Vec<String>,
    #[serde(default)]
    pub hubs: BTreeMap<String, ServiceEntry>,
    #[serde(default)]
    pub dps: BTreeMap<String, ServiceEntry>,
    pub arm: Option<ArmEntry>,
    pub keyvault: Option<KeyVaultEntry>,
    pub staging: Option<StagingEntry>,
    /// `[failover.HUB]`: the network around a hub that `hubvault failover` moves with it.
    #[serde(default)]
    pub failover: BTreeMap<String, FailoverEntry>,
    /// Where the file was read from (not a key of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Settings nothing acts on yet (found while loading).
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

/// A hub or a DPS instance, by connection string or by host + Entra credential.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceEntry {
    pub connection_string: Option<String>,
    pub connection_string_env: Option<String>,
    /// A Key Vault secret URL holding the connection string (read once per run, before use:
    /// see `services::read_connection_secrets`).
    pub connection_string_secret: Option<String>,
    pub host: Option<String>,
    pub credential: Option<Credential>,
    pub endpoint: Option<String>,
    pub resource_id: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// DPS only: the ID scope devices register under (`0ne…`).
    pub id_scope: Option<String>,
    /// DPS only: where devices register, instead of `global.azure-devices-provisioning.net`
    /// (as `endpoint` stands in for the service host).
    pub device_endpoint: Option<String>,
}

impl fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceEntry")
            .field(
                "connection_string",
                &self.connection_string.as_ref().map(|_| "<redacted>"),
            )
            .field("connection_string_env", &self.connection_string_env)
            .field("connection_string_secret", &self.connection_string_secret)
            .field("host", &self.host)
            .field("credential", &self.credential)
            .field("endpoint", &self.endpoint)
            .field("resource_id", &self.resource_id)
            .field("ca_file", &self.ca_file)
            .field("id_scope", &self.id_scope)
            .field("device_endpoint", &self.device_endpoint)
            .finish()
    }
}

impl ServiceEntry {
    /// The connection string, from the file or from the environment variable it names.
    pub fn connection_string(&self, key: &str) -> Result<Option<String>, Error> {
        if let Some(cs) = &self.connection_string {
            return Ok(Some(cs.clone()));
        }
        match &self.connection_string_env {
            Some(var) => std::env::var(var).map(Some).map_err(|_| Error::MissingEnv {
                var: var.clone(),
                key: format!("{key}.connection-string-env"),
            }),
            None => Ok(None),
        }
    }
}

/// Entra ID credential kinds (`azure_identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credential {
    DeveloperTools,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArmEntry {
    pub endpoint: Option<String>,
    pub token_env: Option<String>,
    pub credential: Option<Credential>,
    /// Extra trust root (the simulator's `--tls`).
    pub ca_file: Option<PathBuf>,
}

/// `[failover.HUB]` (docs/failover.md): per region where private endpoints go and which Private
/// DNS zones they register in; the clients' virtual networks whose zone links move in the network-failure
/// variant; the consumers of the Event Hub-compatible endpoint and their health checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailoverEntry {
    /// A backup of the hub must be younger than this (`24h`, `7d`); default 24h.
    pub max_backup_age: Option<String>,
    /// Virtual networks (ARM ids) where devices and consumers resolve the hub's names.
    #[serde(default)]
    pub client_vnets: Vec<String>,
    /// Keyed by ARM region name (`westus`).
    #[serde(default)]
    pub regions: BTreeMap<String, FailoverRegion>,
    #[serde(default)]
    pub consumers: Vec<ConsumerEntry>,
    /// Approve a new private endpoint's `Pending` connection on the hub (needs
    /// `Microsoft.Devices/IotHubs/privateEndpointConnections/write`); default false.
    #[serde(default)]
    pub approve_connections: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailoverRegion {
    /// `/subscriptions/…/resourceGroups/NAME`: where a new private endpoint is created.
    pub resource_group: String,
    pub vnet: String,
    pub subnet: String,
    /// Private DNS zone ids (`privatelink.azure-devices.net`, `privatelink.servicebus.windows.net`).
    #[serde(default)]
    pub zones: Vec<String>,
}

/// A consumer of the Event Hub-compatible endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConsumerEntry {
    pub name: String,
    /// Healthy when a GET answers 2xx.
    pub health_url: Option<String>,
    /// Healthy when the command (run by `sh -c`) exits 0.
    pub health_command: Option<String>,
    /// Where the new endpoint and path are written (JSON) after a failover.
    pub settings_file: Option<PathBuf>,
    /// A Key Vault secret (`https://VAULT.vault.azure.net/secrets/NAME`, no version) that gets
    /// the consumer's new Event Hub-compatible connection string (a new version) after a failover.
    pub settings_secret: Option<String>,
    /// The hub's shared access policy whose key goes in that connection string (default `service`).
    pub settings_key_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyVaultEntry {
    /// The vault (`https://NAME.vault.azure.net`) that `endpoint` stands for; with `secret`, it
    /// also names the identity when `identity` does not.
    pub url: Option<String>,
    /// The identity's secret name in `url`'s vault.
    pub secret: Option<String>,
    pub credential: Option<Credential>,
    /// A bearer token for Key Vault from this environment variable instead of `credential`.
    pub token_env: Option<String>,
    /// Send requests for `url`'s vault here (the simulator); the URLs keep the vault's host.
    pub endpoint: Option<String>,
    /// Extra trust root (the simulator's `--tls`).
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StagingEntry {
    pub connection_string_env: Option<String>,
    pub connection_string: Option<String>,
    /// A Key Vault secret URL holding the account-key connection string.
    pub connection_string_secret: Option<String>,
    pub container_url: Option<String>,
    pub container: Option<String>,
    pub sas_lifetime: Option<String>,
}

impl fmt::Debug for StagingEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingEntry")
            .field("connection_string_env", &self.connection_string_env)
            .field(
                "connection_string",
                &self.connection_string.as_ref().map(|_| "<redacted>"),
            )
            .field("connection_string_secret", &self.connection_string_secret)
            .field(
                "container_url",
                &self
                    .container_url
                    .as_ref()
                    .map(|u| crate::redact::redact(u)),
            )
            .field("container", &self.container)
            .field("sas_lifetime", &self.sas_lifetime)
            .finish()
    }
}

impl Config {
    /// Load the config: `explicit` must exist; otherwise `hubvault.toml` in the working
    /// directory is read if present, and an absent file gives the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, Error> {
        let path = if let Some(p) = explicit {
            p.to_path_buf()
        } else {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            if !p.exists() {
                return Ok(Config::default());
            }
            p
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = Self::parse(&text, &path)?;
        config.source = Some(path);
        Ok(config)
    }

    /// Parse config text; errors name the file and line.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })
    }

    /// The store: flag or environment (already merged by clap), else file, else default.
    pub fn store(&self, flag_or_env: Option<&str>) -> String {
        flag_or_env
            .map(str::to_owned)
            .or_else(|| self.store.clone())
            .unwrap_or_else(|| DEFAULT_STORE.to_owned())
    }

    /// Recipients: flag or environment if any were given, else the file's.
    pub fn recipients(&self, flag_or_env: &[String]) -> Vec<String> {
        if flag_or_env.is_empty() {
            self.recipients.clone()
        } else {
            flag_or_env.to_vec()
        }
    }

    /// Trusted signers: flag or environment if any were given, else the file's.
    pub fn trusted_signers(&self, flag_or_env: &[String]) -> Vec<String> {
        if flag_or_env.is_empty() {
            self.trusted_signers.clone()
        } else {
            flag_or_env.to_vec()
        }
    }

    /// Identity file: flag or environment, else the file's (with `~/` expanded).
    pub fn identity(&self, flag_or_env: Option<&Path>) -> Option<PathBuf> {
        flag_or_env
            .map(Path::to_path_buf)
            .or_else(|| self.identity.clone())
            .map(|p| expand_home(&p))
    }

    /// Name of the file for messages.
    pub fn describe(&self) -> String {
        self.source.as_ref().map_or_else(
            || "(no config file)".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Render a TOML error as "line L, column C: message" (the toml crate reports a byte span).
pub fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().to_owned();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.split('\n').count();
            let column = before
                .rsplit('\n')
                .next()
                .map_or(0, str::len)
                .saturating_add(1);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Expand a leading `~/` to `$HOME/`.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = "store = \"x\"\n\n[hubs.hub-a]\nconection-string = \"HostName=h\"\n";
        let err = Config::parse(text, Path::new("hubvault.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hubvault.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("conection-string"), "{err}");
    }

    #[test]
    fn precedence_flag_then_file_then_default() {
        let c = Config::parse("store = \"/from/file\"\n", Path::new("f")).unwrap();
        assert_eq!(c.store(Some("/flag")), "/flag");
        assert_eq!(c.store(None), "/from/file");
        assert_eq!(Config::default().store(None), DEFAULT_STORE);
    }

    #[test]
    fn dps_and_keyvault_sections_are_acted_on_and_warn_nothing() {
        let text = "store = \"x\"\n\n[dps.dps-a]\nconnection-string-env = \"D\"\n\n[keyvault]\nurl = \"https://kv.vault.azure.net\"\nsecret = \"s\"\n";
        let path =
            std::env::temp_dir().join(format!("hubvault-config-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let c = Config::load(Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.dps.contains_key("dps-a"));
    }

    #[test]
    fn debug_redacts_connection_strings() {
        let text = "[hubs.a]\nconnection-string = \"HostName=a;SharedAccessKeyName=p;SharedAccessKey=SECRETKEY=\"\n";
        let c = Config::parse(text, Path::new("f")).unwrap();
        assert!(!format!("{c:?}").contains("SECRETKEY"));
    }
}
