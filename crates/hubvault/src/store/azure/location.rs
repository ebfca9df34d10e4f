//! Where an Azure Blob store is, and how we authenticate to it, parsed from what a user types.
//!
//! Accepted forms (docs/architecture.md#configuration `--store`):
//! - `https://acct.blob.core.windows.net/container[/prefix]` — Entra (a credential is supplied
//!   by the caller), or with `?<SAS>` — the SAS is used as is.
//! - `http://127.0.0.1:PORT/devstoreaccount1/container[/prefix]` — path-style (Azurite, or any
//!   host that is an IP address or `localhost`). With a SAS it is used; without one the account
//!   must be `devstoreaccount1`, whose key is public, so Shared Key with that key is used.
//! - An account-key connection string with the container named by an extra `Container=`
//!   segment: `DefaultEndpointsProtocol=http;AccountName=…;AccountKey=…;BlobEndpoint=…;Container=backups/prefix`.
//!   [`AzureLocation::from_connection_string`] takes the container as a separate argument instead
//!   (how `[staging]` in the config names it). `UseDevelopmentStorage=true` means local Azurite.
//!
//! Must not: do I/O. Nothing here prints a key or a SAS signature.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use url::Url;

use super::super::sas::{AZURITE_ACCOUNT, AZURITE_KEY, SasToken, SharedKey};
use super::super::{Error, Result};

/// How requests to the store are authorized.
#[derive(Clone)]
pub enum AzureAuth {
    /// A SAS query (container or account SAS) appended to every request.
    Sas(SasToken),
    /// The account key, signing each request (Shared Key).
    SharedKey(Arc<SharedKey>),
    /// An Entra credential supplied when the store is opened (https only).
    Entra,
}

impl fmt::Debug for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureAuth::Sas(t) => write!(f, "Sas({t})"),
            AzureAuth::SharedKey(k) => write!(f, "SharedKey({k:?})"),
            AzureAuth::Entra => f.write_str("Entra"),
        }
    }
}

/// A parsed Azure Blob store location.
#[derive(Debug, Clone)]
pub struct AzureLocation {
    /// The account's blob endpoint, without a trailing slash (`…/devstoreaccount1` path-style).
    pub account_url: Url,
    /// The storage account name.
    pub account: String,
    pub container: String,
    /// Object-name prefix inside the container, without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub auth: AzureAuth,
}

fn bad(what: &str, detail: impl Into<String>) -> Error {
    Error::Backend {
        store: crate::redact::redact(what),
        detail: detail.into(),
    }
}

/// Hosts addressed path-style (account in the first path segment).
fn is_path_style(url: &Url) -> bool {
    match url.host_str() {
        Some(h) => h == "localhost" || h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok(),
        None => false,
    }
}

/// Split `container[/prefix…]`, checking the container name rules loosely.
fn split_container(what: &str, path: &str) -> Result<(String, String)> {
    let path = path.trim_matches('/');
    let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
    let valid = (3..=63).contains(&container.len())
        && container
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !container.starts_with('-');
    if !valid {
        return Err(bad(
            what,
            format!(
                "container name {container:?} is not valid (3-63 lower-case letters, digits, '-'); name the container after the account"
            ),
        ));
    }
    Ok((container.to_owned(), prefix.trim_matches('/').to_owned()))
}

impl AzureLocation {
    /// Whether a `--store` value names Azure Blob Storage (an http(s) URL or a storage
    /// connection string) rather than a local folder or `file://` URL.
    pub fn looks_like(s: &str) -> bool {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        lower.starts_with("https://")
            || lower.starts_with("http://")
            || [
                "accountname=",
                "blobendpoint=",
                "usedevelopmentstorage=",
                "defaultendpointsprotocol=",
            ]
            .iter()
            .any(|k| lower.starts_with(k) || lower.contains(&format!(";{k}")))
    }

    /// Parse a URL or an account-key connection string (with a `Container=` segment).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.contains("://") && !s.contains(';') {
            Self::from_url(s)
        } else {
            let (cs, container) = take_container_segment(s);
            let container = container.ok_or_else(|| {
                bad(
                    "connection string",
                    "it names no container; append ;Container=NAME[/prefix]",
                )
            })?;
            Self::from_connection_string(&cs, &container)
        }
    }

    /// A container URL, optionally with a SAS query.
    pub fn from_url(s: &str) -> Result<Self> {
        let url = Url::parse(s).map_err(|e| bad(s, format!("not a URL: {e}")))?;
        if url.cannot_be_a_base() {
            return Err(bad(
                s,
                "not an http(s) URL; give the container URL (https://ACCOUNT.blob.core.windows.net/CONTAINER)",
            ));
        }
        let shown = crate::redact::redact(s);
        let sas = url
            .query()
            .filter(|q| q.contains("sig="))
            .map(SasToken::from_query);
        let segments: Vec<&str> = url.path().trim_matches('/').splitn(2, '/').collect();
        let (account_url, account, rest) = if is_path_style(&url) {
            let account = segments
                .first()
                .copied()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad(&shown, "path-style URL has no account segment"))?;
            let mut base = url.clone();
            base.set_query(None);
            base.set_path(account);
            (
                base,
                account.to_owned(),
                segments.get(1).copied().unwrap_or(""),
            )
        } else {
            let host = url.host_str().unwrap_or("");
            let account = host.split('.').next().unwrap_or("").to_owned();
            let mut base = url.clone();
            base.set_query(None);
            base.set_path("");
            (base, account, url.path())
        };
        let (container, prefix) = split_container(&shown, rest)?;
        let auth = match sas {
            Some(t) => AzureAuth::Sas(t),
            None if url.scheme() == "https" => AzureAuth::Entra,
            None if account == AZURITE_ACCOUNT => {
                AzureAuth::SharedKey(Arc::new(SharedKey::new(AZURITE_ACCOUNT, AZURITE_KEY)?))
            }
            None => {
                return Err(bad(
                    &shown,
                    "an http URL needs a SAS (?sv=…&sig=…); Entra credentials need https",
                ));
            }
        };
        Ok(AzureLocation {
            account_url: trim_slash(account_url),
            account,
            container,
            prefix,
            auth,
        })
    }

    /// An account-key (or SAS) connection string plus `container[/prefix]`.
    pub fn from_connection_string(cs: &str, container: &str) -> Result<Self> {
        let what = "connection string";
        let mut fields = std::collections::HashMap::new();
        for seg in cs.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = seg
                .split_once('=')
                .ok_or_else(|| bad(what, "a segment has no '='"))?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let get = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
        let dev = get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let account = get("accountname").or_else(|| dev.then(|| AZURITE_ACCOUNT.to_owned()));
        let endpoint = match (get("blobendpoint"), &account) {
            (Some(e), _) => e,
            (None, _) if dev => format!("http://127.0.0.1:10000/{AZURITE_ACCOUNT}"),
            (None, Some(a)) => {
                let proto = get("defaultendpointsprotocol").unwrap_or_else(|| "https".into());
                let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".into());
                format!("{proto}://{a}.blob.{suffix}")
            }
            (None, None) => return Err(bad(what, "it has neither AccountName nor BlobEndpoint")),
        };
        let account_url = trim_slash(
            Url::parse(&endpoint)
                .map_err(|e| bad(what, format!("BlobEndpoint is not a URL: {e}")))?,
        );
        if account_url.cannot_be_a_base() {
            return Err(bad(
                what,
                "BlobEndpoint is not an http(s) URL; copy it from the storage account's endpoints",
            ));
        }
        let account = match account {
            Some(a) => a,
            None if is_path_style(&account_url) => account_url.path().trim_matches('/').to_owned(),
            None => account_url
                .host_str()
                .unwrap_or("")
                .split('.')
                .next()
                .unwrap_or("")
                .to_owned(),
        };
        let auth =
            if let Some(key) = get("accountkey").or_else(|| dev.then(|| AZURITE_KEY.to_owned())) {
                AzureAuth::SharedKey(Arc::new(SharedKey::new(&account, &key)?))
            } else if let Some(sas) = get("sharedaccesssignature") {
                AzureAuth::Sas(SasToken::from_query(sas.trim_start_matches('?')))
            } else {
                return Err(bad(
                    what,
                    "it has neither AccountKey nor SharedAccessSignature",
                ));
            };
        let (container, prefix) = split_container(what, container)?;
        Ok(AzureLocation {
            account_url,
            account,
            container,
            prefix,
            auth,
        })
    }

    /// The container URL (no query).
    pub fn container_url(&self) -> Url {
        let mut u = self.account_url.clone();
        // `parse` refuses URLs without a path (`mailto:`-like), so this always applies.
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().push(&self.container);
        }
        u
    }

    /// The full blob name of an object name.
    pub fn blob_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The location for messages: container URL and prefix; a SAS shows with `sig=<redacted>`.
    pub fn display(&self) -> String {
        let mut u = self.container_url();
        if !self.prefix.is_empty()
            && let Ok(mut path) = u.path_segments_mut()
        {
            path.extend(self.prefix.split('/'));
        }
        match &self.auth {
            AzureAuth::Sas(t) => format!("{u}?{t}"),
            _ => u.to_string(),
        }
    }
}

/// No trailing slash: the SDK pushes path segments, and `…/devstoreaccount1/` would become
/// `…//container`, which Azurite rejects with a bare 400.
fn trim_slash(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    url
}

/// Remove a `Container=` segment from a connection string.
fn take_container_segment(s: &str) -> (String, Option<String>) {
    let mut container = None;
    let rest: Vec<&str> = s
        .split(';')
        .filter(|seg| match seg.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("container") => {
                container = Some(v.trim().to_owned());
                false
            }
            _ => true,
        })
        .collect();
    (rest.join(";"), container)
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

    const CS: &str = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";

    #[test]
    fn looks_like_tells_azure_from_local_paths() {
        assert!(AzureLocation::looks_like(
            "https://acct.blob.core.windows.net/c"
        ));
        assert!(AzureLocation::looks_like(CS));
        assert!(AzureLocation::looks_like(
            "UseDevelopmentStorage=true;Container=c01"
        ));
        for local in ["./hubvault-store", "file:///var/backups", "/tmp/x=1;y"] {
            assert!(!AzureLocation::looks_like(local), "{local}");
        }
    }

    #[test]
    fn host_style_https_with_and_without_sas() {
        let l = AzureLocation::parse("https://acct.blob.core.windows.net/backups/plant/a").unwrap();
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("acct", "backups", "plant/a")
        );
        assert!(matches!(l.auth, AzureAuth::Entra));
        assert_eq!(
            l.container_url().as_str(),
            "https://acct.blob.core.windows.net/backups"
        );
        let l = AzureLocation::parse(
            "https://acct.blob.core.windows.net/backups?sv=2022-11-02&sr=c&sp=rl&sig=SECRET",
        )
        .unwrap();
        assert!(matches!(l.auth, AzureAuth::Sas(_)));
        assert_eq!(l.prefix, "");
        assert!(!l.display().contains("SECRET") && !format!("{l:?}").contains("SECRET"));
        assert!(l.display().contains("sig=<redacted>"));
    }

    #[test]
    fn path_style_azurite_defaults_to_the_public_dev_key() {
        let l = AzureLocation::parse("http://127.0.0.1:10000/devstoreaccount1/vault/x/").unwrap();
        assert_eq!(
            l.account_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!((l.container.as_str(), l.prefix.as_str()), ("vault", "x"));
        assert!(matches!(l.auth, AzureAuth::SharedKey(_)));
        let e = AzureLocation::parse("http://127.0.0.1:10000/otheraccount/vault").unwrap_err();
        assert!(e.to_string().contains("needs a SAS"), "{e}");
    }

    #[test]
    fn connection_string_with_container_segment_or_argument() {
        let l = AzureLocation::parse(&format!("{CS}Container=backups/hub-a")).unwrap();
        assert_eq!(
            l.account_url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            (l.container.as_str(), l.prefix.as_str()),
            ("backups", "hub-a")
        );
        assert!(matches!(l.auth, AzureAuth::SharedKey(_)));
        let l = AzureLocation::from_connection_string(CS, "staging").unwrap();
        assert_eq!(
            l.container_url().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/staging"
        );
        let e = AzureLocation::parse(CS).unwrap_err().to_string();
        assert!(e.contains("Container=") && !e.contains("Eby8vdM02x"), "{e}");
    }

    #[test]
    fn connection_string_without_blob_endpoint_builds_the_public_one() {
        let l = AzureLocation::from_connection_string("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AAAA;EndpointSuffix=core.windows.net", "c01").unwrap();
        assert_eq!(
            l.container_url().as_str(),
            "https://acct.blob.core.windows.net/c01"
        );
        let l = AzureLocation::from_connection_string("UseDevelopmentStorage=true", "c01").unwrap();
        assert_eq!(
            l.container_url().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/c01"
        );
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        for (input, want) in [
            ("https://acct.blob.core.windows.net/", "container name"),
            (
                "https://acct.blob.core.windows.net/Bad_Name",
                "container name",
            ),
            (
                "AccountKey=AAAA;Container=c01",
                "neither AccountName nor BlobEndpoint",
            ),
            (
                "AccountName=a;Container=c01",
                "neither AccountKey nor SharedAccessSignature",
            ),
            ("mailto:a://b/c01", "not an http(s) URL"),
            (
                "BlobEndpoint=mailto:acct;AccountKey=AAAA;Container=c01",
                "BlobEndpoint is not an http(s) URL",
            ),
        ] {
            let e = AzureLocation::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
        }
    }
}
