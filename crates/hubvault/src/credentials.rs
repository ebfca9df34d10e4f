//! Entra ID credentials for every Azure service hubvault calls (IoT Hub, ARM, Blob, Key Vault).
//!
//! Owns: turning a configured kind (`developer-tools`, `managed-identity`, `workload-identity`,
//! `client-secret`) into an `azure_identity` credential, and the `token-env` credential (a bearer
//! token read from an environment variable at each use). There is deliberately no default chain:
//! what authenticates is what the config names.
//!
//! Must not: hold or print a token anywhere but in the request that carries it. A leaf module: it
//! depends on the config's kinds only.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

use crate::config::Credential;

/// A credential that could not be created (a variable it needs is missing, a file it reads is
/// bad). Says which kind and why, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the {kind} Entra credential: {detail}")]
pub struct Error {
    pub kind: String,
    pub detail: String,
}

/// The name of a kind as the config spells it.
pub fn kind_name(kind: Credential) -> &'static str {
    match kind {
        Credential::DeveloperTools => "developer-tools",
        Credential::ManagedIdentity => "managed-identity",
        Credential::WorkloadIdentity => "workload-identity",
        Credential::ClientSecret => "client-secret",
    }
}

/// An Entra credential of the configured kind (`azure_identity`).
pub fn entra(kind: Credential) -> Result<Arc<dyn TokenCredential>, Error> {
    entra_trusting(kind, None)
}

/// [`entra`], whose managed-identity token requests also trust the roots in `ca_file` (the
/// simulator's `--tls`, whose token endpoint is served with its own CA).
pub fn entra_trusting(
    kind: Credential,
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<dyn TokenCredential>, Error> {
    if let (Credential::ManagedIdentity, Some(path)) = (kind, ca_file) {
        let failed = |detail: String| Error {
            kind: kind_name(kind).to_owned(),
            detail,
        };
        let client = trusting(reqwest::Client::builder(), path)
            .map_err(failed)?
            .build()
            .map_err(|e| failed(e.without_url().to_string()))?;
        let options = azure_identity::ManagedIdentityCredentialOptions {
            client_options: azure_core::http::ClientOptions {
                transport: Some(azure_core::http::Transport::new(Arc::new(client))),
                ..azure_core::http::ClientOptions::default()
            },
            ..azure_identity::ManagedIdentityCredentialOptions::default()
        };
        return Ok(
            azure_identity::ManagedIdentityCredential::new(Some(options))
                .map_err(|e| failed(e.to_string()))?,
        );
    }
    let failed = |e: azure_core::Error| Error {
        kind: kind_name(kind).to_owned(),
        detail: e.to_string(),
    };
    Ok(match kind {
        Credential::DeveloperTools => {
            azure_identity::DeveloperToolsCredential::new(None).map_err(failed)?
        }
        Credential::ManagedIdentity => {
            azure_identity::ManagedIdentityCredential::new(None).map_err(failed)?
        }
        Credential::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(failed)?
        }
        Credential::ClientSecret => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| Error {
                    kind: "client-secret".to_owned(),
                    detail: format!(
                        "{name} is not set (client-secret reads AZURE_TENANT_ID, AZURE_CLIENT_ID, \
                         AZURE_CLIENT_SECRET)"
                    ),
                })
            };
            let (tenant, client, secret) = (
                var("AZURE_TENANT_ID")?,
                var("AZURE_CLIENT_ID")?,
                var("AZURE_CLIENT_SECRET")?,
            );
            azure_identity::ClientSecretCredential::new(&tenant, client, secret.into(), None)
                .map_err(failed)?
        }
    })
}

/// `builder`, also trusting the PEM roots in `ca_file` (the simulator's `--tls`). The error
/// names the file.
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_file: &std::path::Path,
) -> Result<reqwest::ClientBuilder, String> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| format!("cannot read ca-file {}: {e}", ca_file.display()))?;
    for cert in reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("ca-file {}: {e}", ca_file.display()))?
    {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// A bearer token from an environment variable (`token-env = "VAR"`), read at each use so a
/// refreshed token is picked up. For scripts that already hold a token (`az account
/// get-access-token`) and for tests.
pub struct TokenFromEnv {
    var: String,
}

impl TokenFromEnv {
    pub fn new(var: &str) -> Arc<TokenFromEnv> {
        Arc::new(TokenFromEnv {
            var: var.to_owned(),
        })
    }
}

impl fmt::Debug for TokenFromEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFromEnv({})", self.var)
    }
}

#[async_trait::async_trait]
impl TokenCredential for TokenFromEnv {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = std::env::var(&self.var)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!("token-env names {}, which is not set", self.var),
                )
            })?;
        // The token's own expiry is not read (it is opaque here); a short life makes the SDK ask
        // again, which reads the variable again.
        let expires = azure_core::time::OffsetDateTime::now_utc()
            .saturating_add(azure_core::time::Duration::minutes(5));
        Ok(AccessToken::new(token.trim().to_owned(), expires))
    }
}
