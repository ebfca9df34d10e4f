//! Conformance tests for the simulated Key Vault and the managed-identity token endpoint: the
//! official `SecretClient` and `ManagedIdentityCredential` wherever they have the call, raw HTTP
//! for the exact status and body of every rejection. Everything runs on loopback; a second caller
//! is a client bound to 127.0.0.2, a second principal an identity made through the control API.
//!
//! `ManagedIdentityCredential` reads `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the process
//! environment only (its in-memory environment is test-private, and `unsafe_code` is forbidden
//! here, so `set_var` is out): the test that uses it runs this test binary again as a child
//! process with the variables set, once per principal, and judges its outcome.

#![allow(
    clippy::too_many_lines,
    reason = "each test walks one scenario end to end"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, Transport};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
    SecretClientListSecretPropertiesVersionsOptions, SecretClientUpdateSecretPropertiesOptions,
    SecretProperties, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt as _, SecretClient, SecretClientOptions};
use futures::TryStreamExt as _;
use hubvault_sim::keyvault::{self, KvState};
use hubvault_sim::{self as sim, Options, Running};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VAULT: &str = "https://hubvault-sim.vault.azure.net";
const API: &str = "api-version=2025-07-01";
const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The vault's ARM id, lower-cased as Key Vault writes it in RBAC denials.
const VAULT_ID: &str = "/subscriptions/00000000-0000-4000-8000-000000000001/resourcegroups/hubvault-sim/providers/microsoft.keyvault/vaults/hubvault-sim";

mod kv_client {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
    use azure_core::http::{AsyncRawResponse, HttpClient, Request};

    /// Hands the SDK one fixed bearer token.
    #[derive(Debug)]
    pub struct StaticCredential(pub String);

    #[async_trait]
    impl TokenCredential for StaticCredential {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let expires =
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
            Ok(AccessToken::new(self.0.clone(), expires))
        }
    }

    /// Sends `https://hubvault-sim.vault.azure.net/…` to the simulator's `http://127.0.0.1:port/…`,
    /// remembering every URL the SDK asked for.
    #[derive(Debug)]
    pub struct Redirect {
        pub base: url::Url,
        pub inner: reqwest::Client,
        pub seen: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl HttpClient for Redirect {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
            self.seen.lock().unwrap().push(request.url().to_string());
            let mut r = request.clone();
            let u = r.url_mut();
            u.set_scheme(self.base.scheme()).expect("http scheme");
            u.set_host(self.base.host_str()).expect("host");
            u.set_port(self.base.port()).expect("port");
            self.inner.execute_request(&r).await
        }
    }
}

type Seen = Arc<Mutex<Vec<String>>>;

/// The official client for the vault's real URL, sent to `endpoint`.
fn secret_client(endpoint: &str, credential: Arc<dyn TokenCredential>) -> (SecretClient, Seen) {
    let seen = Seen::default();
    let redirect = kv_client::Redirect {
        base: endpoint.parse().unwrap(),
        inner: reqwest::Client::new(),
        seen: seen.clone(),
    };
    let options = SecretClientOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(redirect))),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = SecretClient::new(VAULT, credential, Some(options)).unwrap();
    (client, seen)
}

fn anonymous_client(endpoint: &str) -> (SecretClient, Seen) {
    secret_client(
        endpoint,
        Arc::new(kv_client::StaticCredential("any-token".into())),
    )
}

/// Set a secret through the SDK; its new version id.
async fn set(client: &SecretClient, name: &str, value: &str) -> String {
    let params = SetSecretParameters {
        value: Some(value.into()),
        content_type: Some("application/x-age-identity".into()),
        ..Default::default()
    };
    let secret = client
        .set_secret(name, RequestContent::try_from(params).unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some(value));
    secret.resource_id().unwrap().version.unwrap()
}

async fn get(
    client: &SecretClient,
    name: &str,
    version: Option<&str>,
) -> azure_core::Result<String> {
    let options = SecretClientGetSecretOptions {
        secret_version: version.map(str::to_string),
        ..Default::default()
    };
    let secret = client.get_secret(name, Some(options)).await?.into_model()?;
    Ok(secret.value.unwrap_or_default())
}

/// The HTTP status and the body's `error.code` of an SDK error.
fn status_and_code(e: &azure_core::Error) -> (u16, String) {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (u16::from(*status), error_code.clone().unwrap_or_default()),
        other => panic!("not an HTTP error: {other:?} ({e})"),
    }
}

struct Sim {
    running: Running,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The simulator as the binary runs it (ARM, Key Vault, control API, token endpoint), no hubs.
async fn start() -> Sim {
    start_with(sim::with_services(Options::default(), None).0).await
}

async fn start_with(options: Options) -> Sim {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = sim::run(options, async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    Sim {
        running,
        stop: Some(stop),
    }
}

fn client() -> reqwest::Client {
    from(1)
}

/// A client whose connections come from 127.0.0.`last`.
fn from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"))
    };
    (status, body)
}

impl Sim {
    fn kv(&self) -> &str {
        self.running.keyvault.as_deref().unwrap()
    }

    /// `{kv}/{path}?api-version=…` (`path` may carry more query).
    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}{API}", self.kv())
    }

    async fn kv_call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        send(&client(), method, &self.url(path), Some(token), body).await
    }

    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.running.control);
        send(&client(), method, &url, None, body).await
    }

    fn default_header(&self) -> String {
        self.running.identities.default_identity().header
    }

    /// A new identity through the control API: `{"name","header","principal_id","client_id"}`.
    async fn identity(&self, name: &str) -> Value {
        let (status, body) = self
            .control(Method::POST, "/identities", Some(json!({"name": name})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A token from the managed-identity endpoint for `resource`, as App Service hands it out.
    async fn mi_token(&self, header: &str, resource: &str) -> String {
        let resp = client()
            .get(self.running.managed_identity_endpoint())
            .query(&[("api-version", "2019-08-01"), ("resource", resource)])
            .header("x-identity-header", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn vault_token(&self, header: &str) -> String {
        self.mi_token(header, VAULT_RESOURCE).await
    }

    async fn rbac(&self, assignments: Value) -> Value {
        let (status, body) = self
            .control(Method::PUT, "/keyvault/role-assignments", Some(assignments))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

// ------------------------------------------------------------------------------- data plane

#[tokio::test]
async fn kv_answers_an_unauthenticated_request_with_the_challenge() {
    let base = serve(keyvault::router(KvState::new(
        "https://myvault.vault.azure.net",
    )))
    .await;
    let resp = client()
        .put(format!("{base}/secrets/x?{API}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
}

/// One refused request of `kv_rejects_bad_requests_like_key_vault`.
struct Case {
    method: Method,
    path: String,
    token: &'static str,
    body: Option<Value>,
    want: StatusCode,
    /// The error code, or "" for any.
    code: &'static str,
}

#[tokio::test]
async fn kv_rejects_bad_requests_like_key_vault() {
    let state = KvState::new("https://myvault.vault.azure.net");
    state.require_token(Some("right".into()));
    let base = serve(keyvault::router(state)).await;
    let c = client();
    let case = |method, path: String, token, body, want, code| Case {
        method,
        path,
        token,
        body,
        want,
        code,
    };
    let cases = [
        case(
            Method::GET,
            format!("/secrets/x/?{API}"),
            "wrong",
            None,
            StatusCode::UNAUTHORIZED,
            "",
        ),
        case(
            Method::GET,
            "/secrets/x/".into(),
            "right",
            None,
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        case(
            Method::GET,
            format!("/secrets/missing/?{API}"),
            "right",
            None,
            StatusCode::NOT_FOUND,
            "SecretNotFound",
        ),
        case(
            Method::PUT,
            format!("/secrets/bad_name?{API}"),
            "right",
            Some(json!({"value": "v"})),
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
        case(
            Method::GET,
            format!("/secrets?{API}&maxresults=26"),
            "right",
            None,
            StatusCode::BAD_REQUEST,
            "BadParameter",
        ),
    ];
    for c2 in cases {
        let (status, got) = send(
            &c,
            c2.method,
            &format!("{base}{}", c2.path),
            Some(c2.token),
            c2.body,
        )
        .await;
        assert_eq!(status, c2.want, "{}", c2.path);
        if !c2.code.is_empty() {
            assert_eq!(got["error"]["code"], c2.code, "{}", c2.path);
        }
    }
}

#[tokio::test]
async fn secret_client_runs_the_whole_secret_lifecycle() {
    use azure_security_keyvault_secrets::models::{
        DeletedSecretProperties, SecretClientListDeletedSecretPropertiesOptions,
    };

    let sim = start().await;
    let (client, seen) = anonymous_client(sim.kv());
    let mut versions = Vec::new();
    for value in [
        "AGE-SECRET-KEY-1ONE",
        "AGE-SECRET-KEY-1TWO",
        "AGE-SECRET-KEY-1THREE",
    ] {
        versions.push(set(&client, "hubvault-identity", value).await);
    }
    for name in ["charlie", "alpha", "bravo"] {
        set(&client, name, "x").await;
    }
    assert_eq!(
        get(&client, "hubvault-identity", None).await.unwrap(),
        "AGE-SECRET-KEY-1THREE"
    );
    assert_eq!(
        get(&client, "hubvault-identity", Some(&versions[0]))
            .await
            .unwrap(),
        "AGE-SECRET-KEY-1ONE"
    );
    let kv_state = sim.running.keyvault_state.as_ref().unwrap();
    assert_eq!(
        kv_state.latest("hubvault-identity").as_deref(),
        Some("AGE-SECRET-KEY-1THREE")
    );
    let (missing, _) = status_and_code(&client.get_secret("missing", None).await.unwrap_err());
    assert_eq!(missing, 404);

    // Versions, two per page: the pager follows nextLink.
    let options = SecretClientListSecretPropertiesVersionsOptions {
        maxresults: Some(2),
        ..Default::default()
    };
    let pages: Vec<_> = client
        .list_secret_properties_versions("hubvault-identity", Some(options))
        .unwrap()
        .into_pages()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2, "three versions, two per page");
    let mut listed = Vec::new();
    for page in pages {
        for p in page.into_model().unwrap().value {
            assert_eq!(
                p.content_type.as_deref(),
                Some("application/x-age-identity")
            );
            listed.push(p.resource_id().unwrap().version.unwrap());
        }
    }
    let mut expected = versions.clone();
    expected.sort();
    assert_eq!(listed, expected, "every version once, in version-id order");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|u| u.contains("/versions?") && u.contains("skiptoken=")),
        "the second page came from nextLink: {:?}",
        seen.lock().unwrap()
    );

    // Secrets, one per page, by name.
    let options = SecretClientListSecretPropertiesOptions {
        maxresults: Some(1),
        ..Default::default()
    };
    let all: Vec<SecretProperties> = client
        .list_secret_properties(Some(options))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = all.iter().map(|p| p.resource_id().unwrap().name).collect();
    assert_eq!(names, ["alpha", "bravo", "charlie", "hubvault-identity"]);
    assert!(
        all.iter()
            .all(|p| p.resource_id().unwrap().version.is_none())
    );

    // Disable the first version: its value is refused, the latest still reads.
    let params = UpdateSecretPropertiesParameters {
        secret_attributes: Some(SecretAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = SecretClientUpdateSecretPropertiesOptions {
        secret_version: Some(versions[0].clone()),
        ..Default::default()
    };
    let updated = client
        .update_secret_properties(
            "hubvault-identity",
            RequestContent::try_from(params).unwrap(),
            Some(options),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.attributes.unwrap().enabled, Some(false));
    assert!(updated.value.is_none(), "an update answers no value");
    let refused = get(&client, "hubvault-identity", Some(&versions[0]))
        .await
        .unwrap_err();
    assert_eq!(status_and_code(&refused), (403, "Forbidden".into()));
    assert!(
        refused
            .to_string()
            .contains("Operation get is not allowed on a disabled secret."),
        "{refused}"
    );
    assert_eq!(
        get(&client, "hubvault-identity", None).await.unwrap(),
        "AGE-SECRET-KEY-1THREE"
    );

    // Soft delete, read the deleted secret, recover it.
    let deleted = client
        .delete_secret("hubvault-identity", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        deleted.recovery_id.as_deref(),
        Some("https://hubvault-sim.vault.azure.net/deletedsecrets/hubvault-identity")
    );
    assert!(deleted.value.is_none());
    let (when, purge) = (
        deleted.deleted_date.unwrap(),
        deleted.scheduled_purge_date.unwrap(),
    );
    assert_eq!(purge.unix_timestamp() - when.unix_timestamp(), 90 * 86_400);
    let (gone, code) = status_and_code(
        &client
            .get_secret("hubvault-identity", None)
            .await
            .unwrap_err(),
    );
    assert_eq!((gone, code.as_str()), (404, "SecretNotFound"));
    let got = client
        .get_deleted_secret("hubvault-identity", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.recovery_id, deleted.recovery_id);
    let listed: Vec<DeletedSecretProperties> = client
        .list_deleted_secret_properties(Some(SecretClientListDeletedSecretPropertiesOptions {
            maxresults: Some(5),
            ..Default::default()
        }))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].recovery_id, deleted.recovery_id);
    let recovered = client
        .recover_deleted_secret("hubvault-identity", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(recovered.id.unwrap().ends_with(&versions[2]));
    assert_eq!(
        get(&client, "hubvault-identity", None).await.unwrap(),
        "AGE-SECRET-KEY-1THREE"
    );

    // Delete and purge: the name is free again, with no history.
    client
        .delete_secret("hubvault-identity", None)
        .await
        .unwrap();
    let purged = client
        .purge_deleted_secret("hubvault-identity", None)
        .await
        .unwrap();
    assert_eq!(u16::from(purged.status()), 204);
    let (status, _) = status_and_code(
        &client
            .get_deleted_secret("hubvault-identity", None)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 404);
    set(&client, "hubvault-identity", "AGE-SECRET-KEY-1FOUR").await;
    let (_, view) = sim
        .control(Method::GET, "/keyvault/secrets/hubvault-identity", None)
        .await;
    assert_eq!(view["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rejections_carry_key_vault_error_bodies() {
    let sim = start().await;
    let t = "any-token";
    let (status, _) = sim
        .kv_call(Method::PUT, "/secrets/a", t, Some(json!({"value": "one"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, patched) = sim
        .kv_call(
            Method::PATCH,
            "/secrets/a/",
            t,
            Some(json!({"attributes": {"enabled": false}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["attributes"]["enabled"], false);
    assert!(patched.get("value").is_none());
    let (status, body) = sim.kv_call(Method::GET, "/secrets/a/", t, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}})
    );

    // Expired and not-yet-valid secrets still read (Key Vault does not enforce exp/nbf on get).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, attrs) in [
        ("expired", json!({"exp": now - 3600})),
        ("early", json!({"nbf": now + 3600})),
    ] {
        let (status, set) = sim
            .kv_call(
                Method::PUT,
                &format!("/secrets/{name}"),
                t,
                Some(json!({"value": "v", "attributes": attrs})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(set["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        let (status, got) = sim
            .kv_call(Method::GET, &format!("/secrets/{name}"), t, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {got}");
        assert_eq!(got["value"], "v");
    }

    // A soft-deleted name cannot be set again.
    let (status, _) = sim
        .kv_call(Method::DELETE, "/secrets/expired", t, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = sim
        .kv_call(
            Method::PUT,
            "/secrets/expired",
            t,
            Some(json!({"value": "w"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"error": {"code": "Conflict", "message": "Secret expired is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", "innererror": {"code": "ObjectIsDeletedButRecoverable"}}})
    );
    let (status, body) = sim.kv_call(Method::GET, "/secrets/expired", t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    let (status, _) = sim
        .kv_call(Method::DELETE, "/secrets/expired", t, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleting twice");
    for (method, path) in [
        (Method::GET, "/deletedsecrets/a"),
        (Method::POST, "/deletedsecrets/a/recover"),
        (Method::DELETE, "/deletedsecrets/a"),
    ] {
        let (status, body) = sim.kv_call(method.clone(), path, t, None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("SecretNotFound")),
            "{method} {path}"
        );
    }
    let (status, body) = sim
        .kv_call(
            Method::PATCH,
            "/secrets/a/0123456789abcdef0123456789abcdef",
            t,
            Some(json!({"tags": {}})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("SecretNotFound"))
    );
    let (status, body) = sim
        .kv_call(
            Method::PATCH,
            "/secrets/a",
            t,
            Some(json!({"tags": ["not", "a", "map"]})),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("BadParameter"))
    );
}

// ------------------------------------------------------------------------------------- RBAC

#[tokio::test]
async fn rbac_grants_by_principal_role_and_scope() {
    let sim = start().await;
    let mi = sim.running.identities.default_identity();
    let host = sim.identity("backup-host").await;
    let mi_token = sim.vault_token(&mi.header).await;
    let host_token = sim.vault_token(host["header"].as_str().unwrap()).await;
    // RBAC off: anyone may write.
    for name in ["hubvault-identity", "other"] {
        let (status, _) = sim
            .kv_call(
                Method::PUT,
                &format!("/secrets/{name}"),
                &host_token,
                Some(json!({"value": "v"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    sim.rbac(json!([{"principal": "hubvault-sim-mi", "role": "Key Vault Secrets Officer", "scope": "/"}])).await;
    let (status, _) = sim
        .kv_call(Method::GET, "/secrets/hubvault-identity", &mi_token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = sim
        .kv_call(Method::GET, "/secrets/hubvault-identity", &host_token, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
    assert_eq!(
        body["error"]["message"],
        format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss=https://sts.windows.net/00000000-0000-0000-0000-000000000000/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '{VAULT_ID}/secrets/hubvault-identity'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: hubvault-sim;location=westus\r\n",
            host["client_id"].as_str().unwrap(),
            host["principal_id"].as_str().unwrap()
        )
    );

    // Secrets User on one secret: that secret's value, nothing else.
    let list = sim
        .rbac(json!([
            {"principal": "hubvault-sim-mi", "role": "Key Vault Secrets Officer"},
            {"principal": host["principal_id"].clone(), "role": "key vault secrets user", "scope": "/secrets/hubvault-identity"},
        ]))
        .await;
    assert_eq!(list[0]["scope"], "/");
    assert_eq!(list[1]["role"], "Key Vault Secrets User");
    let (status, got) = sim
        .kv_call(Method::GET, "/secrets/hubvault-identity", &host_token, None)
        .await;
    assert_eq!((status, &got["value"]), (StatusCode::OK, &json!("v")));
    let (status, _) = sim
        .kv_call(
            Method::GET,
            "/secrets/hubvault-identity/versions",
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let denied = |body: &Value, action: &str, resource: &str| {
        assert_eq!(
            body["error"]["innererror"]["code"], "ForbiddenByRbac",
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("\r\nAction: '{action}'\r\n")),
            "{message}"
        );
        assert!(
            message.contains(&format!("\r\nResource: '{resource}'\r\n")),
            "{message}"
        );
    };
    let (status, body) = sim
        .kv_call(Method::GET, "/secrets/other", &host_token, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    denied(
        &body,
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &format!("{VAULT_ID}/secrets/other"),
    );
    let (status, body) = sim
        .kv_call(
            Method::PUT,
            "/secrets/hubvault-identity",
            &host_token,
            Some(json!({"value": "w"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    denied(
        &body,
        "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        &format!("{VAULT_ID}/secrets/hubvault-identity"),
    );
    let (status, body) = sim
        .kv_call(Method::GET, "/secrets", &host_token, None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a secret-scoped role does not list the vault"
    );
    denied(
        &body,
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        VAULT_ID,
    );
    let (status, body) = sim
        .kv_call(
            Method::DELETE,
            "/secrets/hubvault-identity",
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    denied(
        &body,
        "Microsoft.KeyVault/vaults/secrets/delete",
        &format!("{VAULT_ID}/secrets/hubvault-identity"),
    );

    // A token the simulator did not issue is the principal "anonymous".
    let (status, body) = sim
        .kv_call(Method::GET, "/secrets/other", "foreign-token", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\r\nCaller: appid=anonymous;oid=anonymous;iss=")
    );

    // Key Vault Reader lists metadata but reads no value.
    sim.rbac(json!([{"principal": "backup-host", "role": "Key Vault Reader"}]))
        .await;
    let (status, listed) = sim
        .kv_call(Method::GET, "/secrets", &host_token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["value"].as_array().unwrap().len(), 2);
    let (status, _) = sim
        .kv_call(Method::GET, "/secrets/other", &host_token, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = sim
        .kv_call(Method::GET, "/secrets/other", &mi_token, None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the assignments replace each other"
    );

    // A bad list changes nothing; null turns RBAC off.
    let (status, err) = sim
        .control(
            Method::PUT,
            "/keyvault/role-assignments",
            Some(json!([{"principal": "x", "role": "Owner"}])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("unknown role"));
    let (_, current) = sim
        .control(Method::GET, "/keyvault/role-assignments", None)
        .await;
    assert_eq!(
        current,
        json!([{"principal": "backup-host", "role": "Key Vault Reader", "scope": "/"}])
    );
    assert_eq!(sim.rbac(Value::Null).await, Value::Null);
    let (status, _) = sim
        .kv_call(
            Method::PUT,
            "/secrets/other",
            &host_token,
            Some(json!({"value": "w"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

// --------------------------------------------------------------------------------- firewall

#[tokio::test]
async fn firewall_admits_listed_addresses_only() {
    let sim = start().await;
    let (status, acls) = sim
        .control(
            Method::PUT,
            "/keyvault/network-acls",
            Some(json!({"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.1"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        acls,
        json!({"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "127.0.0.1"}], "virtualNetworkRules": []})
    );
    let list = sim.url("/secrets");
    let (status, _) = send(&from(1), Method::GET, &list, Some("t"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&from(2), Method::GET, &list, Some("t"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"error": {"code": "Forbidden", "innererror": {"code": "ForbiddenByFirewall"},
            "message": "Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.2\r\nCaller: appid=anonymous;oid=anonymous;iss=https://sts.windows.net/00000000-0000-0000-0000-000000000000/\r\nVault: hubvault-sim;location=westus"}})
    );
    // Without a token the challenge still comes first.
    let (status, _) = send(&from(2), Method::GET, &list, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A managed identity is named in the denial.
    let mi = sim.running.identities.default_identity();
    let token = sim.vault_token(&mi.header).await;
    let (_, body) = send(&from(2), Method::GET, &list, Some(&token), None).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "Caller: appid={};oid={};",
            mi.client_id, mi.principal_id
        )),
        "{message}"
    );

    // CIDR ranges.
    sim.control(
        Method::PUT,
        "/keyvault/network-acls",
        Some(json!({"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.0/30"}]})),
    )
    .await;
    let (status, _) = send(&from(2), Method::GET, &list, Some("t"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&from(5), Method::GET, &list, Some("t"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad rules are refused; null opens the vault again.
    let (status, _) = sim
        .control(
            Method::PUT,
            "/keyvault/network-acls",
            Some(json!({"ipRules": [{"value": "::1"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, acls) = sim
        .control(Method::PUT, "/keyvault/network-acls", Some(Value::Null))
        .await;
    assert_eq!(
        (status, &acls["defaultAction"]),
        (StatusCode::OK, &json!("Allow"))
    );
    let (status, _) = send(&from(5), Method::GET, &list, Some("t"), None).await;
    assert_eq!(status, StatusCode::OK);
}

// ------------------------------------------------------------------------ managed identity

#[tokio::test]
async fn token_endpoint_speaks_app_service_managed_identity() {
    let sim = start().await;
    let endpoint = sim.running.managed_identity_endpoint();
    assert_eq!(endpoint, format!("{}/msi/token", sim.running.control));
    let mi = sim.running.identities.default_identity();
    let ask = |header: Option<String>, query: Vec<(&'static str, String)>| {
        let endpoint = endpoint.clone();
        async move {
            let mut req = client().get(endpoint).query(&query);
            if let Some(h) = header {
                req = req.header("x-identity-header", h);
            }
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let good = || {
        vec![
            ("api-version", "2019-08-01".to_string()),
            ("resource", VAULT_RESOURCE.to_string()),
        ]
    };

    let (status, body) = ask(Some(mi.header.clone()), good()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], VAULT_RESOURCE);
    assert_eq!(body["client_id"], mi.client_id.as_str());
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .unwrap();
    assert!(expires_on > time::OffsetDateTime::now_utc().unix_timestamp() + 3600);
    assert!(!body["access_token"].as_str().unwrap().is_empty());

    for header in [None, Some("not-the-header".to_string())] {
        let (status, body) = ask(header, good()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["statusCode"], 401);
        assert!(body["correlationId"].is_string());
    }
    let (status, _) = ask(
        Some(mi.header.clone()),
        vec![("api-version", "2019-08-01".into())],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no resource");
    let (status, _) = ask(
        Some(mi.header.clone()),
        vec![
            ("api-version", "2017-09-01".into()),
            ("resource", VAULT_RESOURCE.into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the old protocol");

    // Identities: created by the control API, each its own header and ids.
    let host = sim.identity("backup-host").await;
    assert_ne!(host["header"], json!(mi.header));
    let (status, _) = sim
        .control(
            Method::POST,
            "/identities",
            Some(json!({"name": "backup-host"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = sim
        .control(
            Method::POST,
            "/identities",
            Some(json!({"name": "bad name"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, all) = sim.control(Method::GET, "/identities", None).await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hubvault-sim-mi", "backup-host"]);

    // A user-assigned selector must name the header's own identity.
    let mut other = good();
    other.push(("client_id", host["client_id"].as_str().unwrap().to_string()));
    let (status, body) = ask(Some(mi.header.clone()), other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Unable to load the proper Managed Identity."
    );
    let mut own = good();
    own.push(("object_id", mi.principal_id.clone()));
    assert_eq!(ask(Some(mi.header.clone()), own).await.0, StatusCode::OK);

    // Key Vault takes only tokens issued for it.
    let arm_token = sim
        .mi_token(&mi.header, "https://management.azure.com/")
        .await;
    let (status, body) = sim.kv_call(Method::GET, "/secrets", &arm_token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("AKV10022: Invalid audience.")
    );
    // ARM takes any bearer token, issued here or not.
    let rid = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/hubvault-sim/providers/Microsoft.Devices/IotHubs/none";
    let arm = sim.running.arm.as_deref().unwrap();
    let (status, _) = send(
        &client(),
        Method::GET,
        &format!("{arm}{rid}?api-version=2023-06-30"),
        Some(&arm_token),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "authenticated, the hub just does not exist"
    );
}

const CHILD_KV: &str = "HUBVAULT_SIM_TEST_KV_ENDPOINT";
const CHILD_ROLE: &str = "HUBVAULT_SIM_TEST_KV_ROLE";

/// The half of `managed_identity_credential_reaches_key_vault_as_two_principals` that runs in a
/// child process, where `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set.
#[tokio::test]
#[ignore = "run as a child process by managed_identity_credential_reaches_key_vault_as_two_principals"]
async fn managed_identity_child() {
    let (Ok(kv), Ok(role)) = (std::env::var(CHILD_KV), std::env::var(CHILD_ROLE)) else {
        return;
    };
    let credential = azure_identity::ManagedIdentityCredential::new(None).unwrap();
    let (client, _) = secret_client(&kv, credential);
    match role.as_str() {
        "officer" => {
            for name in ["hubvault-identity", "other"] {
                set(&client, name, "AGE-SECRET-KEY-1CHILD").await;
            }
            assert_eq!(
                get(&client, "other", None).await.unwrap(),
                "AGE-SECRET-KEY-1CHILD"
            );
        }
        "user" => {
            assert_eq!(
                get(&client, "hubvault-identity", None).await.unwrap(),
                "AGE-SECRET-KEY-1CHILD"
            );
            let denied = get(&client, "other", None).await.unwrap_err();
            // Key Vault's RBAC message holds `\r\n`; azure_core 1.1 reads error bodies with
            // borrowed strings, cannot borrow an escaped one, and so reports the code "403" with
            // the raw body as the message — as it would against the real service.
            assert_eq!(status_and_code(&denied), (403, "403".into()));
            assert!(denied.to_string().contains("ForbiddenByRbac"), "{denied}");
            assert!(
                denied
                    .to_string()
                    .contains("Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"),
                "{denied}"
            );
            let params = SetSecretParameters {
                value: Some("AGE-SECRET-KEY-1NOTALLOWED".into()),
                ..Default::default()
            };
            let refused = client
                .set_secret(
                    "hubvault-identity",
                    RequestContent::try_from(params).unwrap(),
                    None,
                )
                .await
                .unwrap_err();
            assert_eq!(status_and_code(&refused).0, 403);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Run `managed_identity_child` as `role` with the App Service variables of `header`.
async fn run_child(sim: &Sim, header: &str, role: &str) {
    let exe = std::env::current_exe().unwrap();
    let run = tokio::process::Command::new(exe)
        .args([
            "keyvault::managed_identity_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IDENTITY_ENDPOINT", sim.running.managed_identity_endpoint())
        .env("IDENTITY_HEADER", header)
        .env(CHILD_KV, sim.kv())
        .env(CHILD_ROLE, role)
        .env_remove("IDENTITY_SERVER_THUMBPRINT")
        .env_remove("MSI_ENDPOINT")
        .env_remove("MSI_SECRET")
        .env_remove("IMDS_ENDPOINT")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the child finishes within two minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{role}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn managed_identity_credential_reaches_key_vault_as_two_principals() {
    let sim = start().await;
    let host = sim.identity("backup-host").await;
    sim.rbac(json!([
        {"principal": "hubvault-sim-mi", "role": "Key Vault Secrets Officer", "scope": "/"},
        {"principal": "backup-host", "role": "Key Vault Secrets User", "scope": "/secrets/hubvault-identity"},
    ]))
    .await;
    run_child(&sim, &sim.default_header(), "officer").await;
    run_child(&sim, host["header"].as_str().unwrap(), "user").await;
    let (status, view) = sim
        .control(Method::GET, "/keyvault/secrets/hubvault-identity", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["versions"].as_array().unwrap().len(),
        1,
        "the user could not set: {view}"
    );
}

// ------------------------------------------------------------------------------ control API

#[tokio::test]
async fn control_shows_versions_with_attributes_never_values() {
    let sim = start().await;
    let t = "t";
    for value in ["AGE-SECRET-KEY-1FIRSTVALUE", "AGE-SECRET-KEY-1SECONDVALUE"] {
        sim.kv_call(
            Method::PUT,
            "/secrets/a",
            t,
            Some(json!({"value": value, "tags": {"k": "v"}})),
        )
        .await;
    }
    let (_, a) = sim.control(Method::GET, "/keyvault/secrets/a", None).await;
    let first = a["versions"][0]["version"].as_str().unwrap().to_string();
    sim.kv_call(
        Method::PATCH,
        &format!("/secrets/a/{first}"),
        t,
        Some(json!({"attributes": {"enabled": false, "exp": 2_000_000_000}})),
    )
    .await;
    let (status, a) = sim.control(Method::GET, "/keyvault/secrets/a", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a["name"], "a");
    assert_eq!(a["deleted"], false);
    let versions = a["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["enabled"], false);
    assert_eq!(versions[0]["exp"], 2_000_000_000);
    assert_eq!(versions[1]["enabled"], true);
    assert_eq!(versions[1]["tags"], json!({"k": "v"}));
    assert!(!a.to_string().contains("VALUE"), "no values: {a}");
    sim.kv_call(Method::DELETE, "/secrets/a", t, None).await;
    let (_, all) = sim.control(Method::GET, "/keyvault/secrets", None).await;
    assert_eq!(all[0]["deleted"], true);
    assert!(
        all[0]["scheduledPurgeDate"].as_i64().unwrap() > all[0]["deletedDate"].as_i64().unwrap()
    );
    let (status, _) = sim
        .control(Method::GET, "/keyvault/secrets/missing", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Without a vault, its routes are 404; identities are still served.
    let bare = start_with(Options::default()).await;
    let (status, _) = bare
        .control(Method::GET, "/keyvault/role-assignments", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = bare.control(Method::GET, "/identities", None).await;
    assert_eq!(status, StatusCode::OK);
}
