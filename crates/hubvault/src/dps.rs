//! The Device Provisioning Service's service API (`{dps}.azure-devices-provisioning.net`,
//! `api-version=2021-10-01`, docs/azure.md#dps): individual enrollments and enrollment groups,
//! their keys, bulk writes and queries.
//!
//! Owns: the DPS paths and body shapes, the ≤10-per-call bulk batching (with every per-item error
//! honoured, even under `isSuccessful: true`), query paging by `x-ms-continuation`, and reading
//! attestation keys, which a GET never returns (only `POST …/attestationmechanism` does). The
//! transport — DPS SAS (the same algorithm as the hub's, `sr` = the DPS host) or Entra, retries
//! on 429 and 5xx within a time budget, a lost answer marked as such, and the flat
//! `ProvisioningServiceErrorDetails` errors typed — is the hub client's, on a DPS connection.
//!
//! Must not: know snapshots or stores; print a key (the records it returns hold them).
//!
//! Used by `backup::from_dps`, `enroll` (restores into DPS), `clone_dps` and `preflight::dps`
//! (`write_probe`: the write right checked without writing).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::hub::{self, Call, Connection, HubClient};

/// The DPS service API version hubvault speaks.
pub const API_VERSION: &str = "2021-10-01";
/// Items per bulk call (the service's stated maximum).
pub const BULK_MAX: usize = 10;
/// Items per query page hubvault asks for.
pub const QUERY_PAGE: usize = 100;
/// Pages a query may take before it is refused (a loop guard: 10 M items at 100 a page).
const MAX_PAGES: usize = 100_000;

/// What is enrolled: one device, or a group deriving its devices' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Individual,
    Group,
}

impl Kind {
    /// The collection's path segment.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Individual => "enrollments",
            Kind::Group => "enrollmentGroups",
        }
    }

    /// The field that names one.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Individual => "registrationId",
            Kind::Group => "enrollmentGroupId",
        }
    }
}

/// A bulk write's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    Create,
    Update,
    UpdateIfMatchEtag,
    Delete,
}

impl BulkMode {
    fn wire(self) -> &'static str {
        match self {
            BulkMode::Create => "create",
            BulkMode::Update => "update",
            BulkMode::UpdateIfMatchEtag => "updateIfMatchETag",
            BulkMode::Delete => "delete",
        }
    }
}

/// One item a bulk write refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub id: String,
    pub code: i64,
    pub status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkResult {
    #[serde(default)]
    errors: Vec<Value>,
}

/// A DPS instance's service API.
#[derive(Clone)]
pub struct DpsClient {
    hub: HubClient,
}

impl DpsClient {
    /// A client for the DPS instance `target` names (its host: `dps-a.azure-devices-provisioning.net`).
    pub fn new(mut target: Connection) -> hub::Result<DpsClient> {
        API_VERSION.clone_into(&mut target.api_version);
        Ok(DpsClient {
            hub: HubClient::new(target)?,
        })
    }

    pub fn host(&self) -> &str {
        self.hub.host()
    }

    /// One enrollment or group as GET shows it (without keys); `None` if there is none.
    pub async fn get(&self, kind: Kind, id: &str) -> hub::Result<Option<Value>> {
        let call = Call::new(
            reqwest::Method::GET,
            format!("/{}/{}", kind.collection(), segment(id)),
        );
        match self.hub.call(call).await {
            Ok(reply) => Ok(Some(self.hub.decode("enrollment", &reply.body)?)),
            Err(hub::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The attestation of one enrollment or group, keys included.
    pub async fn attestation(&self, kind: Kind, id: &str) -> hub::Result<Value> {
        let call = Call::new(
            reqwest::Method::POST,
            format!(
                "/{}/{}/attestationmechanism",
                kind.collection(),
                segment(id)
            ),
        );
        let reply = self.hub.call(call).await?;
        self.hub.decode("attestation mechanism", &reply.body)
    }

    /// Whether this credential may write enrollments, without writing one: a `PUT` of an
    /// enrollment that does not exist with an `If-Match` no etag has. The service checks the
    /// caller's rights first (401 without `EnrollmentWrite`), then the precondition (412, or 404):
    /// either of those means the write right is there. Should a service ever create it anyway,
    /// the probe is deleted at once.
    pub async fn write_probe(&self) -> hub::Result<()> {
        const PROBE: &str = "hubvault-preflight-write-probe";
        let path = format!("/{}/{PROBE}", Kind::Individual.collection());
        let mut call = Call::new(reqwest::Method::PUT, path.clone())
            .json(&json!({"registrationId": PROBE, "attestation": {"type": "none"}}));
        call.headers
            .push(("if-match", "\"hubvault-no-such-etag\"".to_owned()));
        match self.hub.call(call).await {
            Err(hub::Error::PreconditionFailed { .. } | hub::Error::NotFound { .. }) => Ok(()),
            Ok(_) => {
                self.hub
                    .call(Call::new(reqwest::Method::DELETE, path))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every enrollment (or group), page by page, as the query returns them (without keys).
    pub async fn query_all(&self, kind: Kind) -> hub::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::new(
                reqwest::Method::POST,
                format!("/{}/query", kind.collection()),
            )
            .json(&json!({"query": format!("SELECT * FROM {}", kind.collection().to_ascii_lowercase())}));
            call.headers
                .push(("x-ms-max-item-count", QUERY_PAGE.to_string()));
            if let Some(c) = &continuation {
                call.headers.push(("x-ms-continuation", c.clone()));
            }
            let reply = self.hub.call(call).await?;
            let page: Vec<Value> = self.hub.decode("enrollment query page", &reply.body)?;
            out.extend(page);
            continuation = reply
                .headers
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if continuation.is_none() {
                return Ok(out);
            }
        }
        Err(hub::Error::Decode {
            hub: self.hub.name().to_owned(),
            what: "enrollment query".to_owned(),
            detail: format!("more than {MAX_PAGES} pages: the continuation never ended"),
        })
    }

    /// Write `items` in calls of at most [`BULK_MAX`]; every item the service refused, whatever
    /// `isSuccessful` says.
    pub async fn bulk(
        &self,
        kind: Kind,
        mode: BulkMode,
        items: &[Value],
    ) -> hub::Result<Vec<ItemError>> {
        let field = match kind {
            Kind::Individual => "enrollments",
            Kind::Group => "enrollmentGroups",
        };
        let mut refused = Vec::new();
        for batch in items.chunks(BULK_MAX) {
            let call = Call::new(reqwest::Method::POST, format!("/{}", kind.collection()))
                .json(&json!({"mode": mode.wire(), field: batch}));
            let reply = self.hub.call(call).await?;
            let result: BulkResult = self.hub.decode("bulk enrollment result", &reply.body)?;
            refused.extend(result.errors.iter().map(|e| {
                ItemError {
                    id: e
                        .get(kind.id_field())
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    code: e.get("errorCode").and_then(Value::as_i64).unwrap_or(0),
                    status: e
                        .get("errorStatus")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }
            }));
        }
        Ok(refused)
    }
}

/// A registration or group id as one path segment.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use std::sync::Arc;

    use hubvault_sim::dps::DpsState;

    use super::*;

    /// The simulator with one DPS instance (and nothing else), and a client of it.
    async fn serve() -> (Arc<DpsState>, DpsClient) {
        let (mut options, state) =
            hubvault_sim::with_services(hubvault_sim::Options::default(), Some("dps-a"));
        options.arm = None;
        options.keyvault = None;
        let state = state.unwrap();
        let running = hubvault_sim::run(options, std::future::pending::<()>())
            .await
            .unwrap();
        let owner = &state.policies[0];
        let cs = format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            state.host, owner.name, owner.primary_key
        );
        let target = Connection::from_connection_string(&cs)
            .unwrap()
            .with_endpoint(running.dps.clone().unwrap().parse().unwrap());
        // The servers live as long as the test's runtime.
        std::mem::forget(running);
        (state, DpsClient::new(target).unwrap())
    }

    fn enrollment(id: &str, key: &str) -> Value {
        json!({"registrationId": id, "attestation": {"type": "symmetricKey",
               "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
               "provisioningStatus": "enabled"})
    }

    #[tokio::test]
    async fn bulk_writes_in_tens_queries_every_page_and_reads_keys_only_through_attestation() {
        let (_state, client) = serve().await;
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let items: Vec<Value> = (0..137)
            .map(|i| enrollment(&format!("dev-{i:03}"), key))
            .collect();
        let refused = client
            .bulk(Kind::Individual, BulkMode::Create, &items)
            .await
            .unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        let listed = client.query_all(Kind::Individual).await.unwrap();
        assert_eq!(listed.len(), 137, "every page followed");
        let got = client
            .get(Kind::Individual, "dev-042")
            .await
            .unwrap()
            .unwrap();
        assert!(
            got["attestation"]["symmetricKey"]["primaryKey"].is_null(),
            "GET never shows keys: {got}"
        );
        let att = client
            .attestation(Kind::Individual, "dev-042")
            .await
            .unwrap();
        assert_eq!(att["symmetricKey"]["primaryKey"], key);
        assert!(
            client
                .get(Kind::Individual, "nobody")
                .await
                .unwrap()
                .is_none()
        );

        // A second create of the same ids: each refused item is named.
        let again = client
            .bulk(Kind::Individual, BulkMode::Create, &items[..12])
            .await
            .unwrap();
        assert_eq!(again.len(), 12, "{again:?}");
        assert_eq!(again[0].id, "dev-000");
        assert!(again[0].code >= 409_000, "{again:?}");
    }

    #[tokio::test]
    async fn a_refused_call_is_a_typed_error() {
        let (_state, client) = serve().await;
        let err = client
            .attestation(Kind::Group, "no-such-group")
            .await
            .unwrap_err();
        assert!(matches!(err, hub::Error::NotFound { .. }), "{err:?}");
    }
}
