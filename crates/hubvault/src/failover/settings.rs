//! The consumers' new settings after a failover: the Event Hub-compatible endpoint and path,
//! printed, written to a consumer's `settings-file` (JSON, no key), or written as a new version of
//! its `settings-secret` in Key Vault: an Event Hub connection string
//! (`Endpoint=sb://…/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`) with the key of the
//! hub's `settings-key-name` policy, read through ARM `listkeys`.
//!
//! Must not: print, journal or put in an error the connection string or the key; only the
//! secret's URL and version are said. A secret already holding the same value gets no new
//! version (a resumed run does not pile up versions).

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::request::RunRequest;
use super::{Error, name_of};
use crate::arm::{API_VERSION, ArmCall};
use crate::config::ConsumerEntry;
use crate::keys::keyvault::{self, SecretUrl};

/// The policy whose key goes in a consumer's connection string when the config names none.
pub const DEFAULT_KEY_NAME: &str = "service";

/// `POST …/IotHubKeys/{name}/listkeys`: one policy's keys (`SharedAccessSignatureAuthorizationRule`).
pub fn list_keys_call(hub_id: &str, key_name: &str) -> ArmCall {
    ArmCall::new(
        "POST",
        &format!("{hub_id}/IotHubKeys/{key_name}/listkeys"),
        API_VERSION,
    )
}

/// The key names of the consumers whose settings go to Key Vault, once each.
pub fn secret_key_names(consumers: &[ConsumerEntry]) -> Vec<String> {
    let mut names: Vec<String> = consumers
        .iter()
        .filter(|c| c.settings_secret.is_some())
        .map(key_name)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn key_name(c: &ConsumerEntry) -> String {
    c.settings_key_name
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_NAME.to_owned())
}

/// A consumer's `settings-secret` as a secret URL without a version, or what is wrong with it.
pub fn secret_url(c: &ConsumerEntry) -> Option<Result<SecretUrl, String>> {
    let value = c.settings_secret.as_deref()?;
    Some(match value.parse::<SecretUrl>() {
        Err(e) => Err(format!(
            "consumer {}: settings-secret {value:?}: {e}",
            c.name
        )),
        Ok(u) if u.version().is_some() => Err(format!(
            "consumer {}: settings-secret names a version; name the secret alone (https://VAULT.vault.azure.net/secrets/NAME): each failover writes a new version",
            c.name
        )),
        Ok(u) => Ok(u),
    })
}

/// The `consumer-settings` step, given what `read-endpoint` journalled: its detail and data.
pub(super) async fn write(req: &RunRequest<'_>, after: &Value) -> Result<(String, Value), Error> {
    let (endpoint, path) = (
        after["endpoint"].as_str().unwrap_or_default(),
        after["path"].as_str().unwrap_or_default(),
    );
    if endpoint.is_empty() || path.is_empty() {
        return Err(hub_error(
            req,
            "the new Event Hub-compatible endpoint was not journalled by read-endpoint".into(),
        ));
    }
    let settings = json!({"hub": req.hub, "eventHubEndpoint": endpoint, "eventHubPath": path});
    let mut said = Vec::new();
    let mut secrets = Vec::new();
    for c in &req.entry.consumers {
        if let Some(file) = &c.settings_file {
            let text = serde_json::to_string_pretty(&settings).unwrap_or_default();
            std::fs::write(file, text).map_err(|source| Error::Write {
                path: file.display().to_string(),
                source,
            })?;
            said.push(format!("{}: written to {}", c.name, file.display()));
        }
        if let Some(url) = secret_url(c) {
            let url = url.map_err(|m| hub_error(req, m))?;
            let (version, fresh) = write_secret(req, c, &url, endpoint, path).await?;
            let shown = url.with_version(&version);
            said.push(format!(
                "{}: {} secret {shown} (version {version})",
                c.name,
                if fresh {
                    "new version of"
                } else {
                    "already current in"
                }
            ));
            secrets.push(json!({"consumer": c.name, "url": shown.to_string(), "version": version}));
        }
    }
    let detail = if said.is_empty() {
        format!("new settings: endpoint {endpoint} path {path} (the key is unchanged)")
    } else {
        format!(
            "new settings: endpoint {endpoint} path {path}; {}",
            said.join("; ")
        )
    };
    let mut data = settings;
    data["secrets"] = Value::Array(secrets);
    Ok((detail, data))
}

fn hub_error(req: &RunRequest, message: String) -> Error {
    Error::Hub {
        hub: req.hub.to_owned(),
        message,
    }
}

/// Write the connection string as a new version unless the latest already holds it. Returns the
/// version and whether it is new.
async fn write_secret(
    req: &RunRequest<'_>,
    c: &ConsumerEntry,
    url: &SecretUrl,
    endpoint: &str,
    path: &str,
) -> Result<(String, bool), Error> {
    let vaults = req.vaults.as_ref().ok_or_else(|| {
        hub_error(
            req,
            format!(
                "consumer {}: settings-secret needs Key Vault access ([keyvault] in the config)",
                c.name
            ),
        )
    })?;
    let value = connection_string(req, &key_name(c), endpoint, path).await?;
    match vaults.read_latest(url).await {
        Ok(latest) => {
            if let Some(v) = latest.iter().find(|v| v.value == value) {
                return Ok((v.version.clone(), false));
            }
        }
        // A role that may set but not get, or a secret not made yet: write.
        Err(keyvault::Error::NotFound { .. } | keyvault::Error::Forbidden { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let version = vaults
        .create(url, &value, "text/plain; eventhub-connection-string", true)
        .await?;
    Ok((version, true))
}

/// `Endpoint=sb://…/;SharedAccessKeyName=NAME;SharedAccessKey=KEY;EntityPath=PATH`, the form the
/// portal shows under "Built-in endpoints", with the policy's primary key.
async fn connection_string(
    req: &RunRequest<'_>,
    key_name: &str,
    endpoint: &str,
    path: &str,
) -> Result<Zeroizing<String>, Error> {
    let hub_id = req.hub_id;
    let answer = req
        .arm
        .send(&list_keys_call(hub_id, key_name))
        .await?
        .success(&format!("{hub_id}/IotHubKeys/{key_name}/listkeys"))?;
    let key = Zeroizing::new(
        answer.body["primaryKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    drop(answer);
    if key.is_empty() {
        return Err(hub_error(
            req,
            format!(
                "the shared access policy {key_name} of {} has no primary key; set settings-key-name to a policy with ServiceConnect",
                name_of(hub_id)
            ),
        ));
    }
    let endpoint = if endpoint.ends_with('/') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/")
    };
    Ok(Zeroizing::new(format!(
        "Endpoint={endpoint};SharedAccessKeyName={key_name};SharedAccessKey={};EntityPath={path}",
        key.as_str()
    )))
}
