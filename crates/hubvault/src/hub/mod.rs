//! IoT Hub service REST client over reqwest (no Rust SDK covers the service API).
//!
//! Owns: SAS / Entra authentication ([`auth`]), import/export jobs ([`jobs`]), registry reads and
//! bulk writes ([`registry`]), and typed errors ([`Error`]; `401002` explained as the firewall trap
//! it usually is). Requests that fail with 429, 5xx or a transport error are retried within a
//! bounded budget ([`RetryPolicy`]), honouring `Retry-After`.
//!
//! Must not: know stores, snapshots or the simulator. Wire types are this module's own and are
//! named as the service names them (`JobProperties`, `ExportImportDevice`, …); the simulator keeps
//! its own copies, so a shared mistake cannot hide. There is no trait in front of the client:
//! tests point it at an HTTP server (the simulator, or a tiny axum server) through
//! [`Connection::endpoint`].
//!
//! Real Azure (`https://{host}`) is the default; anything else only through an explicit endpoint.

pub mod auth;
pub mod error;
pub mod jobs;
pub mod registry;
pub mod retry;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use time::OffsetDateTime;
use url::Url;

pub use auth::{ConnectionString, HubCredential, SasSigner};
pub use error::{Error, Result, ServiceError};
pub use jobs::{JobProperties, JobStatus, JobType, PollPolicy};
pub use registry::{
    BulkRegistryOperationResult, Configuration, Device, ExportImportDevice, IfMatch, Module,
};
pub use retry::RetryPolicy;

use auth::TokenSource;

/// The api-version every call sends (docs/azure.md).
pub const DEFAULT_API_VERSION: &str = "2021-04-12";

/// Which hub to talk to, and how.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The hub's host name (`hub-a.azure-devices.net`): the SAS audience and the default URL.
    pub host: String,
    /// How messages call the hub (the config name, e.g. `hub-b`); the host name when `None`.
    pub name: Option<String>,
    /// Send requests here instead of `https://{host}` (the simulator's base URL).
    pub endpoint: Option<Url>,
    pub credential: HubCredential,
    /// An extra PEM trust root (the simulator's `--tls` certificate).
    pub ca_file: Option<PathBuf>,
    /// Bind the client socket to this address (tests act as another caller, e.g. 127.0.0.2).
    pub local_address: Option<IpAddr>,
    pub api_version: String,
    /// Lifetime of minted SAS tokens; they are renewed before they expire.
    pub sas_ttl: Duration,
    pub retry: RetryPolicy,
    /// Per-request timeout (one try).
    pub request_timeout: Duration,
}

impl Connection {
    /// A target for real Azure with defaults.
    pub fn new(host: &str, credential: HubCredential) -> Self {
        Connection {
            host: host.to_owned(),
            name: None,
            endpoint: None,
            credential,
            ca_file: None,
            local_address: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            sas_ttl: auth::DEFAULT_SAS_TTL,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(100),
        }
    }

    /// From a hub service connection string (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`).
    pub fn from_connection_string(cs: &str) -> Result<Self> {
        let cs = ConnectionString::parse(cs)?;
        Ok(Self::new(&cs.host_name, HubCredential::Sas(cs.signer())))
    }

    /// Entra (`azure_identity`) credential for `host`.
    pub fn entra(
        host: &str,
        credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        Self::new(host, HubCredential::Entra(credential))
    }

    /// Builder-style endpoint override.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Url) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// A client for one hub. Cheap to clone (shares the connection pool and the token cache).
#[derive(Debug, Clone)]
pub struct HubClient {
    inner: std::sync::Arc<Inner>,
    /// False for a [`HubClient::pacing_throttles`] client: 429s are returned, not slept on.
    retry_throttled: bool,
}

#[derive(Debug)]
struct Inner {
    host: String,
    name: String,
    base: Url,
    api_version: String,
    http: reqwest::Client,
    /// How `http` reaches the hub (trust roots, source address), for a device's own client.
    reach: Reach,
    tokens: TokenSource,
    retry: RetryPolicy,
    observer: std::sync::OnceLock<JobObserver>,
}

/// The trust roots (`ca-file`) and source address a client of this hub uses.
#[derive(Clone, Debug, Default)]
struct Reach {
    roots: Vec<reqwest::Certificate>,
    local_address: Option<std::net::IpAddr>,
}

impl Reach {
    fn builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hubvault/", env!("CARGO_PKG_VERSION")));
        if let Some(addr) = self.local_address {
            builder = builder.local_address(addr);
        }
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        builder
    }
}

/// Told about every poll of every job this client waits for (the binary draws progress bars
/// with it). It sees job properties, which carry SAS URIs: an observer must not print them.
#[derive(Clone)]
pub struct JobObserver(pub std::sync::Arc<dyn Fn(&JobProperties) + Send + Sync>);

impl std::fmt::Debug for JobObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobObserver")
    }
}

/// A successful (or explicitly accepted) response.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// An earlier try of this call may have been carried out (its answer was lost, or a 5xx
    /// came back) before this one: a write's result can then describe our own earlier write
    /// ("already exists", "not found") and must be checked by reading the hub.
    pub resent: bool,
}

/// One logical request; retried as a whole.
pub(crate) struct Call {
    pub method: Method,
    /// Already percent-encoded path, starting with `/`.
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    /// Non-2xx statuses returned as a [`Reply`] instead of an error (bulk: 400 with a result).
    pub accept: &'static [u16],
}

impl Call {
    pub(crate) fn new(method: Method, path: String) -> Self {
        Call {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            accept: &[],
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "used with the hub's wire types only: derived Serialize over strings, numbers, options, vectors, string-keyed maps and serde_json values, on which serde_json cannot fail"
    )]
    pub(crate) fn json<T: serde::Serialize>(mut self, body: &T) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("wire types serialize"));
        self
    }
}

impl HubClient {
    pub fn new(target: Connection) -> Result<Self> {
        let bad = |reason: String| Error::InvalidTarget { reason };
        let base = match &target.endpoint {
            Some(u) => u.clone(),
            None => Url::parse(&format!("https://{}", target.host))
                .map_err(|e| bad(format!("host {:?}: {e}", target.host)))?,
        };
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!(
                "endpoint must be http(s), got {}",
                base.scheme()
            )));
        }
        let mut reach = Reach {
            roots: Vec::new(),
            local_address: target.local_address,
        };
        if let Some(path) = &target.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read ca-file {}: {e}", path.display())))?;
            reach.roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("ca-file {}: {e}", path.display())))?;
        }
        let builder = reach.builder().timeout(target.request_timeout);
        let http = builder
            .build()
            .map_err(|e| bad(format!("HTTP client: {}", e.without_url())))?;
        let tokens = TokenSource::new(&target.host, target.credential, target.sas_ttl);
        Ok(HubClient {
            inner: std::sync::Arc::new(Inner {
                name: target.name.unwrap_or_else(|| target.host.clone()),
                host: target.host,
                base,
                api_version: target.api_version,
                http,
                reach,
                tokens,
                retry: target.retry,
                observer: std::sync::OnceLock::new(),
            }),
            retry_throttled: true,
        })
    }

    /// Report every job poll of this client (and its clones) to `observer`; set once.
    pub fn observe_jobs(&self, observer: JobObserver) {
        let _ = self.inner.observer.set(observer);
    }

    pub(crate) fn job_observer(&self) -> Option<&JobObserver> {
        self.inner.observer.get()
    }

    /// The same client (same connections and tokens) for a caller that paces its own calls: a
    /// 429 comes back at once as [`Error::Throttled`] instead of being waited out here, so the
    /// caller's rate limiter sees it. 5xx and network errors are still retried.
    #[must_use]
    pub fn pacing_throttles(&self) -> HubClient {
        HubClient {
            inner: self.inner.clone(),
            retry_throttled: false,
        }
    }

    /// The hub's host name (used in messages).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Where requests go: `https://{host}`, or the configured endpoint (the simulator).
    pub fn endpoint(&self) -> &Url {
        &self.inner.base
    }

    /// The HTTP client this hub is reached with (its trust roots and local address): a
    /// device-side call to the same hub (a drill's probe) goes the same way.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A client builder that reaches this hub as [`HubClient::http`] does (same trust roots and
    /// source address), for a device's own connection: an X.509 device adds its certificate.
    pub fn device_client_builder(&self) -> reqwest::ClientBuilder {
        self.inner.reach.builder().timeout(Duration::from_secs(60))
    }

    /// How messages name the hub ([`Connection::name`], else the host name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn url(&self, call: &Call) -> Url {
        let mut url = self.inner.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{}", call.path));
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &call.query {
                q.append_pair(k, v);
            }
            q.append_pair("api-version", &self.inner.api_version);
        }
        url
    }

    /// Send with auth and retries. Non-success statuses become typed errors.
    ///
    /// A 401 to a token reused from the cache is retried once with a freshly signed one: a
    /// cached token can expire on the hub's clock before ours (clock skew, or a long run's token
    /// reaching its `se`), and the hub says only 401002 then. A 401 to a fresh token is the
    /// caller's problem (key, rights or firewall) and is not retried.
    pub(crate) async fn call(&self, call: Call) -> Result<Reply> {
        let host = &self.inner.name;
        let url = self.url(&call);
        let start = tokio::time::Instant::now();
        let mut attempt: u32 = 0;
        let mut resigned = false;
        let mut told_failover = false;
        let mut resent = false;
        loop {
            attempt = attempt.saturating_add(1);
            let (auth, fresh) = self.inner.tokens.header(OffsetDateTime::now_utc()).await?;
            let (error, retry_after) = match self.try_once(&call, url.clone(), &auth).await {
                Ok(Ok(reply)) => return Ok(Reply { resent, ..reply }),
                Ok(Err((status, headers, body))) => {
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::parse_retry_after(v, OffsetDateTime::now_utc()));
                    let header = headers
                        .get("iothub-errorcode")
                        .and_then(|v| v.to_str().ok());
                    let service = ServiceError::parse(status.as_u16(), header, &body);
                    let retryable = retry::retryable(status.as_u16(), service.code);
                    let err = service.into_error(host, retry_after);
                    if matches!(err, Error::Unauthorized { .. }) && !fresh && !resigned {
                        resigned = true;
                        self.inner.tokens.invalidate(&auth).await;
                        tracing::debug!(hub = %host, path = %call.path, "401: retrying once with a freshly signed token");
                        continue;
                    }
                    if !retryable {
                        if resent
                            && call.method == Method::DELETE
                            && matches!(err, Error::NotFound { .. })
                        {
                            // The earlier try, whose answer was lost, deleted it.
                            tracing::debug!(hub = %host, path = %call.path, "a resent delete found nothing left: the first try did it");
                            return Ok(Reply {
                                status: StatusCode::NO_CONTENT,
                                headers: HeaderMap::new(),
                                body: Bytes::new(),
                                resent,
                            });
                        }
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(err) => (err, None),
            };
            if !matches!(
                error,
                Error::Throttled { .. }
                    | Error::Server { .. }
                    | Error::Transport { .. }
                    | Error::FailingOver { .. }
            ) || (!self.retry_throttled && matches!(error, Error::Throttled { .. }))
            {
                return Err(error);
            }
            let failing_over = matches!(error, Error::FailingOver { .. });
            // A lost answer or a server error may follow a write that was carried out; a 429 or
            // a failover answer says it was not.
            resent |= matches!(error, Error::Transport { .. } | Error::Server { .. });
            let Some(wait) = self.inner.retry.delay(
                attempt,
                start.elapsed(),
                retry_after,
                rand::random::<f64>(),
            ) else {
                return Err(match error {
                    Error::FailingOver { hub, .. } => Error::FailingOver {
                        hub,
                        attempts: attempt,
                        waited: start.elapsed(),
                    },
                    other => other,
                });
            };
            if failing_over && !told_failover {
                told_failover = true;
                tracing::warn!(
                    "{host} is failing over (404012 IotHubFailingOver); retrying for up to {}s",
                    self.inner.retry.max_total.as_secs()
                );
            }
            tracing::debug!(hub = %host, path = %call.path, attempt, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "retrying: {error}");
            tokio::time::sleep(wait).await;
        }
    }

    /// One try: `Ok(Ok(reply))`, `Ok(Err(non-success response))`, or a transport error.
    async fn try_once(
        &self,
        call: &Call,
        url: Url,
        auth: &str,
    ) -> Result<Result<Reply, (StatusCode, HeaderMap, Bytes)>> {
        let host = &self.inner.name;
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), url)
            .header("authorization", auth)
            .header("accept", "application/json");
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(body) = &call.body {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body(body.clone());
        }
        let resp = req.send().await.map_err(|e| Error::transport(host, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| Error::transport(host, e))?;
        tracing::debug!(hub = %host, method = %call.method, path = %call.path, status = status.as_u16(), "hub call");
        if status.is_success() || call.accept.contains(&status.as_u16()) {
            Ok(Ok(Reply {
                status,
                headers,
                body,
                resent: false,
            }))
        } else {
            Ok(Err((status, headers, body)))
        }
    }

    /// Decode a JSON reply body.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::Decode {
            hub: self.inner.name.clone(),
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }
}
