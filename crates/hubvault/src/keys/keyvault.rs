//! Secrets in Azure Key Vault: an age identity, a signing key or a connection string named by a
//! secret URL (`https://NAME.vault.azure.net/secrets/SECRET[/VERSION]`), read and written with the
//! official `azure_security_keyvault_secrets` client.
//!
//! Owns: parsing secret URLs ([`SecretUrl`]), how a vault is reached ([`Vaults`]: the credential,
//! and an `endpoint` override with an extra trust root for the simulator, which keeps the real
//! host name in every URL the client builds), reading a secret (a URL with a version pins it; one
//! without means every enabled version, newest first), creating one (never over an existing one
//! unless asked for a new version), and telling Key Vault's answers apart: not found, disabled,
//! forbidden by RBAC or by an access policy, forbidden by the vault's firewall, a token the vault
//! refused, a secret deleted but recoverable.
//!
//! Must not: let a secret value or a token reach `Debug`, `Display`, an error or a log line; keep
//! a value anywhere but in a [`Zeroizing`] string handed to the caller.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use azure_core::credentials::TokenCredential;
use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RequestContent, StatusCode, Transport,
};
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SecretProperties, SetSecretParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::StreamExt as _;
use url::Url;
use zeroize::Zeroizing;

use crate::config::{Config, Credential};
use crate::diagnostic::{Diagnostic, fix_text};

/// The most versions of one secret read (a rotation every day for years is far below it).
const MAX_VERSIONS: usize = 1000;

/// Errors about Key Vault. They name the vault, the secret and (when known) the version, and what
/// to do; never a value or a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{value:?} is not a Key Vault secret URL ({reason}); {}",
        fix_text(self)
    )]
    BadUrl { value: String, reason: &'static str },
    #[error(
        "secret {secret} was not found in Key Vault {vault}; {}",
        fix_text(self)
    )]
    NotFound { vault: String, secret: String },
    #[error("secret {secret} in Key Vault {vault} is disabled; {}", fix_text(self))]
    Disabled { vault: String, secret: String },
    #[error(
        "Key Vault {vault} refused to {action} secret {secret}: the caller has no role that allows \
         it ({detail}); {}",
        fix_text(self)
    )]
    Forbidden {
        vault: String,
        secret: String,
        action: &'static str,
        /// `read` or `write`: which role the fix names.
        write: bool,
        detail: String,
    },
    #[error(
        "Key Vault {vault}'s firewall refused this caller{} while reading secret {secret}; {}",
        .client_address.as_deref().map(|a| format!(" (client address {a})")).unwrap_or_default(),
        fix_text(self)
    )]
    Firewall {
        vault: String,
        secret: String,
        client_address: Option<String>,
    },
    #[error(
        "Key Vault {vault} did not accept the caller's token ({detail}); {}",
        fix_text(self)
    )]
    Unauthorized { vault: String, detail: String },
    #[error("no token for Key Vault {vault}: {detail}; {}", fix_text(self))]
    Credential { vault: String, detail: String },
    #[error(
        "secret {secret} already exists in Key Vault {vault}; refusing to replace a key that \
         snapshots may need. {}",
        fix_text(self)
    )]
    Exists { vault: String, secret: String },
    #[error(
        "secret {secret} in Key Vault {vault} is deleted but recoverable; its name cannot be \
         reused until it is recovered or purged. {}",
        fix_text(self)
    )]
    Deleted { vault: String, secret: String },
    #[error("Key Vault {vault} could not be reached for secret {secret}: {detail}")]
    Transport {
        vault: String,
        secret: String,
        detail: String,
    },
    #[error("Key Vault {vault} answered {status} ({code}) for secret {secret}: {message}")]
    Service {
        vault: String,
        secret: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("[keyvault] {setting} in {config}: {detail}")]
    BadSetting {
        setting: &'static str,
        config: String,
        detail: String,
    },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::BadUrl { .. } => "keyvault_bad_url",
            Error::NotFound { .. } => "keyvault_not_found",
            Error::Disabled { .. } => "keyvault_disabled",
            Error::Forbidden { .. } => "keyvault_forbidden",
            Error::Firewall { .. } => "keyvault_firewall",
            Error::Unauthorized { .. } => "keyvault_unauthorized",
            Error::Credential { .. } => "keyvault_credential",
            Error::Exists { .. } => "keyvault_secret_exists",
            Error::Deleted { .. } => "keyvault_secret_deleted",
            Error::Transport { .. } => "keyvault_transport",
            Error::Service { .. } => "keyvault_service",
            Error::BadSetting { .. } => "keyvault_bad_setting",
        }
    }

    fn fix(&self) -> Option<String> {
        Some(match self {
            Error::BadUrl { .. } => "name a secret as https://VAULT.vault.azure.net/secrets/NAME \
                 (add /VERSION to pin one version); to reach the simulator keep that URL and set \
                 `endpoint` in [keyvault]"
                .to_owned(),
            Error::NotFound { .. } => "check the vault and secret name (`az keyvault secret list \
                 --vault-name VAULT`); create the identity with `hubvault key init --key-vault URL \
                 --secret NAME`"
                .to_owned(),
            Error::Disabled { .. } => {
                "enable the version that sealed your snapshots (`az keyvault \
                 secret set-attributes --enabled true`), or name an enabled version in the URL"
                    .to_owned()
            }
            Error::Forbidden {
                write: false,
                secret,
                ..
            } => format!(
                "grant this caller `Key Vault Secrets User` on secret {secret} (RBAC vaults), or \
                 `get` and `list` secret permissions in the vault's access policy"
            ),
            Error::Forbidden {
                write: true,
                secret,
                ..
            } => format!(
                "grant this caller `Key Vault Secrets Officer` on secret {secret} or the vault \
                 (RBAC vaults), or `set` secret permission in the vault's access policy"
            ),
            Error::Firewall { .. } => "add this caller's public address to the vault's firewall \
                 (Networking → Firewalls and virtual networks), or reach the vault through its \
                 private endpoint"
                .to_owned(),
            Error::Unauthorized { .. } => {
                "check that the credential belongs to the vault's tenant \
                 and that a token-env token is for https://vault.azure.net"
                    .to_owned()
            }
            Error::Credential { .. } => "set `credential` (or `token-env`) in [keyvault]; \
                 developer-tools needs `az login`, managed-identity runs on Azure, client-secret \
                 reads AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
                .to_owned(),
            Error::Exists { .. } => "use it as it is (`hubvault key show-recipient` prints its \
                 recipient), or add --new-version: older versions stay readable, so snapshots \
                 sealed to them still open"
                .to_owned(),
            Error::Deleted { secret, vault } => format!(
                "recover it (`az keyvault secret recover --vault-name {} --name {secret}`) or, if \
                 it is truly unwanted, purge it",
                vault_name(vault)
            ),
            Error::Transport { .. } => {
                "check the vault's host name, DNS, the network path and `endpoint`".to_owned()
            }
            Error::Service { .. } => return None,
            Error::BadSetting { .. } => "fix the setting in hubvault.toml".to_owned(),
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The vault's short name (`kv-ops` of `https://kv-ops.vault.azure.net`), for `az` commands.
fn vault_name(vault: &str) -> &str {
    let host = vault.trim_start_matches("https://");
    host.split('.').next().unwrap_or(host)
}

/// Whether `value` names a Key Vault secret rather than a file.
pub fn is_secret_url(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// A Key Vault secret, with or without a version.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    /// `https://HOST` (no path).
    vault: Url,
    name: String,
    version: Option<String>,
}

impl SecretUrl {
    /// The secret `name` of the vault at `vault` (`https://NAME.vault.azure.net`).
    pub fn new(vault: &str, name: &str) -> Result<SecretUrl> {
        let base = vault.trim().trim_end_matches('/');
        format!("{base}/secrets/{}", name.trim()).parse()
    }

    /// `https://HOST`.
    pub fn vault(&self) -> String {
        self.vault.as_str().trim_end_matches('/').to_owned()
    }

    pub fn host(&self) -> &str {
        self.vault.host_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The same secret, pinned to `version`.
    #[must_use]
    pub fn with_version(&self, version: &str) -> SecretUrl {
        SecretUrl {
            version: Some(version.to_owned()),
            ..self.clone()
        }
    }

    /// `NAME` or `NAME/VERSION`, for messages that also name the vault.
    fn shown(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/{v}", self.name),
            None => self.name.clone(),
        }
    }
}

impl FromStr for SecretUrl {
    type Err = Error;

    fn from_str(value: &str) -> Result<SecretUrl> {
        let bad = |reason| Error::BadUrl {
            value: value.to_owned(),
            reason,
        };
        let url = Url::parse(value.trim()).map_err(|_| bad("not a URL"))?;
        if url.scheme() != "https" {
            return Err(bad("Key Vault is reached over https only"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("a secret URL has no query, fragment or user"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        let segments: Vec<&str> = url
            .path()
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let (name, version) = match segments.as_slice() {
            ["secrets", name] => (*name, None),
            ["secrets", name, version] => (*name, Some(*version)),
            _ => {
                return Err(bad(
                    "the path must be /secrets/NAME or /secrets/NAME/VERSION",
                ));
            }
        };
        if !(1..=127).contains(&name.len())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad("a secret name is 1 to 127 letters, digits and dashes"));
        }
        if let Some(v) = version
            && (v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(bad("a version is letters and digits"));
        }
        let mut vault = url.clone();
        vault.set_path("");
        if let Some(port) = url.port() {
            let _ = vault.set_port(Some(port));
        }
        Ok(SecretUrl {
            vault,
            name: name.to_owned(),
            version: version.map(str::to_owned),
        })
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/secrets/{}", self.vault(), self.shown())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

/// One version of a secret, its value held only in memory and wiped when dropped.
pub struct SecretVersion {
    /// The version id (the last segment of the secret's id).
    pub version: String,
    pub value: Zeroizing<String>,
}

impl fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretVersion({}, <redacted>)", self.version)
    }
}

/// How Key Vault is reached: the credential of `[keyvault]` (`credential`, `token-env`; default
/// developer-tools) and, for the vault of `[keyvault] url`, an `endpoint` override (the
/// simulator) with an optional `ca-file`.
pub struct Vaults {
    credential_kind: Option<Credential>,
    token_env: Option<String>,
    redirect: Option<(String, Url, Option<PathBuf>)>,
    config: String,
    credential: OnceLock<Arc<dyn TokenCredential>>,
}

impl fmt::Debug for Vaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vaults")
            .field("credential", &self.credential_kind)
            .field("token_env", &self.token_env)
            .field(
                "redirect",
                &self.redirect.as_ref().map(|r| (&r.0, r.1.as_str())),
            )
            .finish_non_exhaustive()
    }
}

impl Vaults {
    /// From `[keyvault]` (absent: real Key Vault with the developer-tools credential).
    pub fn from_config(config: &Config) -> Result<Vaults> {
        let entry = config.keyvault.as_ref();
        let setting = |setting, detail: String| Error::BadSetting {
            setting,
            config: config.describe(),
            detail,
        };
        let redirect = match entry.and_then(|e| e.endpoint.as_deref()) {
            None => None,
            Some(endpoint) => {
                let url = entry.and_then(|e| e.url.as_deref()).ok_or_else(|| {
                    setting(
                        "endpoint",
                        "endpoint needs url (the vault it stands for)".to_owned(),
                    )
                })?;
                let vault = Url::parse(url)
                    .ok()
                    .filter(|u| u.scheme() == "https")
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .ok_or_else(|| {
                        setting(
                            "url",
                            format!("{url:?} is not https://VAULT.vault.azure.net"),
                        )
                    })?;
                let endpoint = Url::parse(endpoint)
                    .map_err(|e| setting("endpoint", format!("{endpoint:?} is not a URL: {e}")))?;
                Some((
                    vault.to_ascii_lowercase(),
                    endpoint,
                    entry.and_then(|e| e.ca_file.clone()),
                ))
            }
        };
        Ok(Vaults {
            credential_kind: entry.and_then(|e| e.credential),
            token_env: entry.and_then(|e| e.token_env.clone()),
            redirect,
            config: config.describe(),
            credential: OnceLock::new(),
        })
    }

    fn credential(&self, url: &SecretUrl) -> Result<Arc<dyn TokenCredential>> {
        if let Some(c) = self.credential.get() {
            return Ok(c.clone());
        }
        let made: Arc<dyn TokenCredential> = match (&self.token_env, self.credential_kind) {
            (Some(var), _) => crate::credentials::TokenFromEnv::new(var),
            (None, kind) => crate::credentials::entra_trusting(
                kind.unwrap_or(Credential::DeveloperTools),
                self.redirect.as_ref().and_then(|r| r.2.as_deref()),
            )
            .map_err(|e| Error::Credential {
                vault: url.vault(),
                detail: e.to_string(),
            })?,
        };
        Ok(self.credential.get_or_init(|| made).clone())
    }

    fn client(&self, url: &SecretUrl) -> Result<SecretClient> {
        let mut options = SecretClientOptions::default();
        if let Some((host, endpoint, ca_file)) = &self.redirect
            && url.host().eq_ignore_ascii_case(host)
        {
            let redirect = Redirect::new(host, endpoint, ca_file.as_deref()).map_err(|detail| {
                Error::BadSetting {
                    setting: "ca-file",
                    config: self.config.clone(),
                    detail,
                }
            })?;
            options.client_options = ClientOptions {
                transport: Some(Transport::new(Arc::new(redirect))),
                ..ClientOptions::default()
            };
        }
        SecretClient::new(&url.vault(), self.credential(url)?, Some(options)).map_err(|_| {
            Error::BadUrl {
                value: url.to_string(),
                reason: "the Key Vault client does not take it",
            }
        })
    }

    /// The versions to try, newest first: the pinned one, or every enabled version. Each value
    /// is read once.
    pub async fn read(&self, url: &SecretUrl) -> Result<Vec<SecretVersion>> {
        let client = self.client(url)?;
        if url.version().is_some() {
            return Ok(vec![self.get(&client, url).await?]);
        }
        let versions = match self.enabled_versions(&client, url).await {
            Ok(v) => v,
            // A role that may read the value but not list versions: the latest alone.
            Err(Error::Forbidden { .. }) => {
                tracing::warn!(
                    secret = %url,
                    "cannot list the secret's versions (the caller may only get it): only its \
                     latest version is used"
                );
                return Ok(vec![self.get(&client, url).await?]);
            }
            Err(e) => return Err(e),
        };
        if versions.is_empty() {
            return Err(Error::Disabled {
                vault: url.vault(),
                secret: url.name().to_owned(),
            });
        }
        let mut out = Vec::with_capacity(versions.len());
        for version in versions {
            match self.get(&client, &url.with_version(&version)).await {
                Ok(v) => out.push(v),
                // Disabled between the listing and the read: skip it, as the listing would.
                Err(Error::Disabled { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The latest version alone (a signing key: a new version is a new key).
    pub async fn read_latest(&self, url: &SecretUrl) -> Result<Vec<SecretVersion>> {
        let client = self.client(url)?;
        Ok(vec![self.get(&client, url).await?])
    }

    /// Whether the caller may read the secret's value (preflight's least-privilege check). The
    /// value, if returned, is dropped at once.
    pub async fn can_read(&self, url: &SecretUrl) -> Result<bool> {
        let client = self.client(url)?;
        match self.get(&client, url).await {
            Ok(_) => Ok(true),
            Err(Error::Forbidden { .. } | Error::Firewall { .. } | Error::NotFound { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Store `value` as secret `url` (no version in it) and return the new version. Without
    /// `new_version`, an existing secret is never replaced.
    pub async fn create(
        &self,
        url: &SecretUrl,
        value: &Zeroizing<String>,
        content_type: &str,
        new_version: bool,
    ) -> Result<String> {
        let client = self.client(url)?;
        if !new_version {
            match self.get(&client, url).await {
                Ok(_) | Err(Error::Disabled { .. }) => {
                    return Err(Error::Exists {
                        vault: url.vault(),
                        secret: url.name().to_owned(),
                    });
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let params = SetSecretParameters {
            value: Some(value.to_string()),
            content_type: Some(content_type.to_owned()),
            ..SetSecretParameters::default()
        };
        let body = RequestContent::try_from(params).map_err(|e| Error::Transport {
            vault: url.vault(),
            secret: url.name().to_owned(),
            detail: e.to_string(),
        })?;
        let set = client
            .set_secret(url.name(), body, None)
            .await
            .map_err(|e| classify(&e, url, "set"))?
            .into_model()
            .map_err(|e| classify(&e, url, "set"))?;
        Ok(set
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or_default()
            .to_owned())
    }

    async fn get(&self, client: &SecretClient, url: &SecretUrl) -> Result<SecretVersion> {
        let options = SecretClientGetSecretOptions {
            secret_version: url.version().map(str::to_owned),
            ..SecretClientGetSecretOptions::default()
        };
        let secret = client
            .get_secret(url.name(), Some(options))
            .await
            .map_err(|e| classify(&e, url, "get"))?
            .into_model()
            .map_err(|e| classify(&e, url, "get"))?;
        let version = secret
            .id
            .as_deref()
            .and_then(|id| id.rsplit('/').next())
            .unwrap_or_default()
            .to_owned();
        if secret
            .attributes
            .as_ref()
            .and_then(|a| a.enabled)
            .is_some_and(|e| !e)
        {
            return Err(Error::Disabled {
                vault: url.vault(),
                secret: url.with_version(&version).shown(),
            });
        }
        Ok(SecretVersion {
            version,
            value: Zeroizing::new(secret.value.unwrap_or_default()),
        })
    }

    /// Enabled versions, newest first.
    async fn enabled_versions(
        &self,
        client: &SecretClient,
        url: &SecretUrl,
    ) -> Result<Vec<String>> {
        let mut pager = client
            .list_secret_properties_versions(url.name(), None)
            .map_err(|e| classify(&e, url, "list"))?;
        let mut found: Vec<(Option<time::OffsetDateTime>, String)> = Vec::new();
        while let Some(item) = pager.next().await {
            let props: SecretProperties = item.map_err(|e| classify(&e, url, "list"))?;
            let attrs = props.attributes.as_ref();
            if attrs.and_then(|a| a.enabled) == Some(false) {
                continue;
            }
            let Some(version) = props.id.as_deref().and_then(|id| id.rsplit('/').next()) else {
                continue;
            };
            found.push((attrs.and_then(|a| a.created), version.to_owned()));
            if found.len() >= MAX_VERSIONS {
                break;
            }
        }
        // Newest first; versions made in the same second (its resolution) keep the reverse of
        // the listing's order, which lists older versions first.
        found.reverse();
        found.sort_by_key(|v| std::cmp::Reverse(v.0));
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }
}

/// Key Vault's answer (`status`, `body`) to `action` (`get`, `set`, `list`) on `url`, as one of
/// our errors: what [`Vaults`] concludes from a refusal (also for tests and fuzzing).
pub fn classify_answer(status: u16, body: &[u8], url: &SecretUrl, action: &'static str) -> Error {
    use azure_core::http::{RawResponse, headers::Headers};
    let status = StatusCode::from(status);
    let e = azure_core::Error::new(
        azure_core::error::ErrorKind::HttpResponse {
            status,
            error_code: None,
            raw_response: Some(Box::new(RawResponse::from_bytes(
                status,
                Headers::new(),
                body.to_vec(),
            ))),
        },
        "refused",
    );
    classify(&e, url, action)
}

/// Key Vault's answer `e` to `action` on `url`, as one of our errors.
fn classify(e: &azure_core::Error, url: &SecretUrl, action: &'static str) -> Error {
    let vault = url.vault();
    let secret = url.shown();
    let azure_core::error::ErrorKind::HttpResponse { status, .. } = e.kind() else {
        return match e.kind() {
            azure_core::error::ErrorKind::Credential => Error::Credential {
                vault,
                detail: e.to_string(),
            },
            _ => Error::Transport {
                vault,
                secret,
                detail: e.to_string(),
            },
        };
    };
    let status = *status;
    let (code, inner, message) = error_body(e);
    // Key Vault's messages name callers and resources, never values; keep the first line.
    let first_line = message.lines().next().unwrap_or_default().trim().to_owned();
    match (status, inner.as_str(), code.as_str()) {
        (StatusCode::NotFound, _, _) => Error::NotFound { vault, secret },
        (StatusCode::Forbidden, "SecretDisabled", _) => Error::Disabled { vault, secret },
        (StatusCode::Forbidden, "ForbiddenByFirewall", _) => Error::Firewall {
            vault,
            secret,
            client_address: message
                .lines()
                .find_map(|l| l.trim().strip_prefix("Client address:"))
                .map(|a| a.trim().to_owned()),
        },
        (StatusCode::Forbidden, _, _) => Error::Forbidden {
            vault,
            secret,
            action: match action {
                "set" => "write",
                "list" => "list the versions of",
                _ => "read",
            },
            write: action == "set",
            detail: if inner.is_empty() {
                first_line
            } else {
                format!("{inner}: {first_line}")
            },
        },
        (StatusCode::Unauthorized, _, _) => Error::Unauthorized {
            vault,
            detail: first_line,
        },
        (StatusCode::Conflict, "ObjectIsDeletedButRecoverable", _) => Error::Deleted {
            vault,
            secret: url.name().to_owned(),
        },
        (status, _, code) => Error::Service {
            vault,
            secret,
            status: u16::from(status),
            code: if inner.is_empty() {
                code.to_owned()
            } else {
                inner.clone()
            },
            message: first_line,
        },
    }
}

/// Key Vault's error body: `(code, innererror code, message)`. Its messages carry `\r\n`
/// (RBAC and firewall denials name caller, action and resource on lines of their own); where a
/// body does not parse as JSON the inner codes are still found in its text.
fn error_body(e: &azure_core::Error) -> (String, String, String) {
    let azure_core::error::ErrorKind::HttpResponse {
        raw_response: Some(raw),
        error_code,
        ..
    } = e.kind()
    else {
        return (String::new(), String::new(), e.to_string());
    };
    let text = String::from_utf8_lossy(raw.body());
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        let field = |p: &str| {
            v.pointer(p)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        return (
            field("/error/code"),
            field("/error/innererror/code"),
            field("/error/message"),
        );
    }
    let inner = [
        "ForbiddenByFirewall",
        "ForbiddenByRbac",
        "SecretDisabled",
        "ObjectIsDeletedButRecoverable",
        "AccessDenied",
    ]
    .into_iter()
    .find(|c| text.contains(c))
    .unwrap_or_default();
    let message = text
        .split_once("\"message\":\"")
        .map_or(text.as_ref(), |(_, m)| m)
        .replace("\\r\\n", "\n");
    (
        error_code.clone().unwrap_or_default(),
        inner.to_owned(),
        message,
    )
}

/// Sends the requests for one vault host to `endpoint` (the simulator) and lets the rest through.
/// Over https the host name stays in the URL (TLS and SNI need it) and only the address changes.
#[derive(Debug)]
struct Redirect {
    host: String,
    endpoint: Url,
    inner: reqwest::Client,
}

impl Redirect {
    fn new(
        host: &str,
        endpoint: &Url,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Redirect, String> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(path) = ca_file {
            builder = crate::credentials::trusting(builder, path)?;
        }
        if endpoint.scheme() == "https"
            && let (Some(ip), Some(port)) = (
                endpoint
                    .host_str()
                    .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok()),
                endpoint.port_or_known_default(),
            )
        {
            builder = builder.resolve(host, std::net::SocketAddr::new(ip, port));
        }
        Ok(Redirect {
            host: host.to_owned(),
            endpoint: endpoint.clone(),
            inner: builder.build().map_err(|e| e.without_url().to_string())?,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Redirect {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut r = request.clone();
        let u = r.url_mut();
        if u.host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
        {
            let moved = if self.endpoint.scheme() == "https" {
                u.set_port(self.endpoint.port_or_known_default())
            } else {
                u.set_scheme(self.endpoint.scheme())
                    .and_then(|()| u.set_host(self.endpoint.host_str()).map_err(|_| ()))
                    .and_then(|()| u.set_port(self.endpoint.port_or_known_default()))
            };
            if moved.is_err() {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Other,
                    "the [keyvault] endpoint cannot stand for the vault's URL",
                ));
            }
        }
        self.inner.execute_request(&r).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_parse_with_and_without_a_version_and_bad_ones_say_why() {
        let u: SecretUrl = "https://kv-ops.vault.azure.net/secrets/hubvault-identity"
            .parse()
            .unwrap();
        assert_eq!(u.vault(), "https://kv-ops.vault.azure.net");
        assert_eq!(u.name(), "hubvault-identity");
        assert_eq!(u.version(), None);
        assert_eq!(
            u.to_string(),
            "https://kv-ops.vault.azure.net/secrets/hubvault-identity"
        );
        let pinned: SecretUrl =
            "https://kv-ops.vault.azure.net/secrets/hubvault-identity/0123abcd/"
                .parse()
                .unwrap();
        assert_eq!(pinned.version(), Some("0123abcd"));
        assert_eq!(
            SecretUrl::new("https://kv-ops.vault.azure.net/", "x").unwrap(),
            "https://kv-ops.vault.azure.net/secrets/x".parse().unwrap()
        );
        for (bad, why) in [
            ("http://kv.vault.azure.net/secrets/x", "https only"),
            ("https://kv.vault.azure.net/keys/x", "the path must be"),
            (
                "https://kv.vault.azure.net/secrets/has_underscore",
                "letters, digits and dashes",
            ),
            ("https://kv.vault.azure.net/secrets/x?sig=1", "no query"),
            ("kv.vault.azure.net/secrets/x", "not a URL"),
        ] {
            let e = bad.parse::<SecretUrl>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(is_secret_url("https://kv.vault.azure.net/secrets/x"));
        assert!(!is_secret_url("~/.config/hubvault/identity.txt"));
    }

    #[test]
    fn key_vault_refusals_are_told_apart_even_when_the_body_is_not_json() {
        let url: SecretUrl = "https://kv.vault.azure.net/secrets/id".parse().unwrap();
        // Literal CR LF inside the message: not JSON, as some clients see Key Vault's denials.
        let firewall = "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Client address is not authorized and caller is not a trusted service.\r\nClient address: 10.1.2.3\r\nVault: kv;location=westus\",\"innererror\":{\"code\":\"ForbiddenByFirewall\"}}}";
        match classify_answer(403, firewall.as_bytes(), &url, "get") {
            Error::Firewall { client_address, .. } => {
                assert_eq!(client_address.as_deref(), Some("10.1.2.3"));
            }
            other => panic!("{other:?}"),
        }
        let rbac = r#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'","innererror":{"code":"ForbiddenByRbac"}}}"#;
        let e = classify_answer(403, rbac.as_bytes(), &url, "get");
        assert!(matches!(e, Error::Forbidden { write: false, .. }), "{e:?}");
        assert!(
            e.fix()
                .unwrap()
                .contains("`Key Vault Secrets User` on secret id"),
            "{e}"
        );
        let disabled = r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#;
        assert!(matches!(
            classify_answer(403, disabled.as_bytes(), &url, "get"),
            Error::Disabled { .. }
        ));
        let gone = r#"{"error":{"code":"Conflict","message":"Secret id is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#;
        let e = classify_answer(409, gone.as_bytes(), &url, "set");
        assert!(matches!(e, Error::Deleted { .. }), "{e:?}");
        assert!(
            e.fix()
                .unwrap()
                .contains("az keyvault secret recover --vault-name kv"),
            "{e}"
        );
        let e = classify_answer(
            404,
            br#"{"error":{"code":"SecretNotFound","message":"x"}}"#,
            &url,
            "get",
        );
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }
}
