//! Azure-facing integration tests: the IoT Hub client against a tiny scripted axum server (the
//! wire, not a trait mock), and the Azure Blob store against real Azurite.
//!
//! Azurite tests read `HUBVAULT_TEST_AZURITE` (an account-key connection string, set by
//! `scripts/test`). Without it they print a visible "skipped" line — unless
//! `HUBVAULT_REQUIRE_AZURITE=1`, where a missing Azurite fails the test. Each test uses its own
//! container and deletes it at the end.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt as _;
use hubvault::Diagnostic as _;
use hubvault::hub::{
    self, Connection, HubClient, IfMatch, JobProperties, JobStatus, PollPolicy, RetryPolicy,
};
use hubvault::store::azure::AzureStore;
use hubvault::store::sas::SasPermissions;
use hubvault::store::{Error as StoreError, Store};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::support::{Staging, azurite};

// ---------------------------------------------------------------------------------------------
// A scripted IoT Hub double: canned responses per "METHOD /path", every request recorded.

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HUB_CS: &str = "HostName=hub-b.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn canned(status: u16, body: &str) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    peer: SocketAddr,
    body: AxumBytes,
}

#[derive(Default)]
struct Script {
    /// The last canned response of a route repeats forever.
    routes: Mutex<HashMap<String, VecDeque<Canned>>>,
    seen: Mutex<Vec<Seen>>,
}

impl Script {
    fn on(&self, route: &str, responses: Vec<Canned>) {
        self.routes
            .lock()
            .unwrap()
            .insert(route.to_owned(), responses.into());
    }
    fn seen(&self, route: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| format!("{} {}", s.method, s.path) == route)
            .cloned()
            .collect()
    }
}

async fn handle(
    State(script): State<Arc<Script>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let route = format!("{} {}", parts.method, parts.uri.path());
    script.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers.clone(),
        peer,
        body,
    });
    let next = {
        let mut routes = script.routes.lock().unwrap();
        routes.get_mut(&route).and_then(|q| {
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        })
    };
    let c = next.unwrap_or_else(|| canned(404, r#"{"Message":"{\"errorCode\":404001,\"message\":\"not scripted\"}","ExceptionMessage":""}"#));
    let mut resp = (StatusCode::from_u16(c.status).unwrap(), c.body).into_response();
    for (k, v) in c.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    resp
}

async fn serve(script: Arc<Script>) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(handle).with_state(script);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Url::parse(&format!("http://{addr}")).unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_total: Duration::from_secs(20),
    }
}

async fn hub_with(script: &Arc<Script>) -> HubClient {
    let url = serve(script.clone()).await;
    let mut target = Connection::from_connection_string(HUB_CS)
        .unwrap()
        .with_endpoint(url);
    target.retry = fast_retry();
    HubClient::new(target).unwrap()
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains("AAECAwQF"), "key leaked: {text}");
    assert!(
        !text.contains("sig=") || text.contains("sig=<redacted>"),
        "signature leaked: {text}"
    );
    assert!(
        !text.contains("SharedAccessSignature sr="),
        "token leaked: {text}"
    );
}

#[tokio::test]
async fn hub_requests_carry_a_sas_for_the_hub_host_and_the_api_version() {
    let script = Arc::new(Script::default());
    script.on(
        "GET /statistics/devices",
        vec![canned(
            200,
            r#"{"totalDeviceCount":3,"enabledDeviceCount":2,"disabledDeviceCount":1}"#,
        )],
    );
    let hub = hub_with(&script).await;
    let stats = hub.statistics().await.unwrap();
    assert_eq!(
        (stats.total_device_count, stats.disabled_device_count),
        (3, 1)
    );
    let seen = &script.seen("GET /statistics/devices")[0];
    let auth = seen.headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with("SharedAccessSignature sr=hub-b.azure-devices.net&sig="),
        "{auth}"
    );
    assert!(auth.ends_with("&skn=iothubowner"), "{auth}");
    assert_eq!(seen.query, "api-version=2021-04-12");
}

/// An Entra credential double: counts calls, hands out a fixed token.
#[derive(Debug, Default)]
struct FakeEntra(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeEntra {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://iothubs.azure.net/.default"]);
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(azure_core::credentials::AccessToken::new(
            "fake-entra-token",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn hub_entra_credential_sends_a_cached_bearer_token() {
    let script = Arc::new(Script::default());
    script.on("GET /jobs", vec![canned(200, "[]")]);
    let url = serve(script.clone()).await;
    let cred = Arc::new(FakeEntra::default());
    let hub = HubClient::new(
        Connection::entra("hub-a.azure-devices.net", cred.clone()).with_endpoint(url),
    )
    .unwrap();
    hub.list_jobs().await.unwrap();
    hub.list_jobs().await.unwrap();
    let seen = script.seen("GET /jobs");
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer fake-entra-token")
    );
    assert_eq!(
        cred.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "token reused until near expiry"
    );
    assert!(!format!("{hub:?}").contains("fake-entra-token"));
}

#[tokio::test]
async fn hub_retries_429_and_honours_retry_after() {
    let script = Arc::new(Script::default());
    let throttled = Canned {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        body: r#"{"Message":"{\"errorCode\":429001,\"message\":\"throttled\"}","ExceptionMessage":""}"#.into(),
    };
    script.on(
        "GET /statistics/devices",
        vec![throttled, canned(200, r#"{"totalDeviceCount":1}"#)],
    );
    let hub = hub_with(&script).await;
    let started = std::time::Instant::now();
    assert_eq!(hub.statistics().await.unwrap().total_device_count, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After ignored: {:?}",
        started.elapsed()
    );
    assert_eq!(script.seen("GET /statistics/devices").len(), 2);
}

#[tokio::test]
async fn hub_gives_up_after_a_bounded_number_of_5xx() {
    let script = Arc::new(Script::default());
    script.on(
        "GET /devices/d1",
        vec![canned(
            503,
            r#"{"Message":"ErrorCode:ServerBusy;try later","ExceptionMessage":""}"#,
        )],
    );
    let hub = hub_with(&script).await;
    let err = hub.get_device("d1").await.unwrap_err();
    assert_eq!(err.code(), "hub_server");
    assert_eq!(err.service_code(), Some(503_005));
    assert_eq!(script.seen("GET /devices/d1").len(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn hub_401002_is_explained_as_the_firewall_trap_and_not_retried() {
    let script = Arc::new(Script::default());
    let blocked = Canned {
        status: 401,
        headers: vec![("iothub-errorcode", "IotHubUnauthorizedAccess".into())],
        body: r#"{"Message":"{\"errorCode\":401002,\"trackingId\":\"t\",\"message\":\"Unauthorized\",\"timestampUtc\":\"2025-05-01T10:00:00Z\"}","ExceptionMessage":""}"#.into(),
    };
    script.on("POST /jobs/create", vec![blocked]);
    let hub = hub_with(&script).await;
    let err = hub
        .create_job(&JobProperties::export(
            "https://a.blob.core.windows.net/c?sv=1&sig=SECRET",
            "d.txt",
            "c.txt",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, hub::Error::Unauthorized { code: 401_002, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "hub-b.azure-devices.net rejected this caller (401002); if its IP firewall"
        ),
        "{text}"
    );
    assert_no_secret(&text);
    assert_no_secret(&format!("{err:?}"));
    assert_eq!(script.seen("POST /jobs/create").len(), 1);
}

#[tokio::test]
async fn hub_second_job_reports_the_running_job() {
    let script = Arc::new(Script::default());
    script.on(
        "POST /jobs/create",
        vec![Canned {
            status: 403,
            headers: vec![("iothub-errorcode", "JobQuotaExceeded".into())],
            body: r#"{"Message":"{\"errorCode\":403003,\"message\":\"Job quota has been exceeded.\"}","ExceptionMessage":""}"#.into(),
        }],
    );
    script.on(
        "GET /jobs",
        vec![canned(200, r#"[{"jobId":"old","type":"export","status":"completed"},{"jobId":"j-running","type":"import","status":"running","progress":40}]"#)],
    );
    let hub = hub_with(&script).await;
    let err = hub
        .create_job(&JobProperties::export("https://a/c?sig=x", "d", "c"))
        .await
        .unwrap_err();
    match &err {
        hub::Error::JobSlotBusy { running_job, .. } => {
            assert_eq!(running_job.as_deref(), Some("j-running"));
        }
        other => panic!("expected JobSlotBusy, got {other:?}"),
    }
    assert!(err.to_string().contains("(j-running)"), "{err}");
    let sent: serde_json::Value =
        serde_json::from_slice(&script.seen("POST /jobs/create")[0].body).unwrap();
    assert_eq!(sent["excludeKeysInExport"], false);
    assert_eq!(sent["includeConfigurations"], true);
}

#[tokio::test]
async fn hub_wait_for_job_polls_until_terminal_and_reports_progress() {
    let script = Arc::new(Script::default());
    script.on(
        "GET /jobs/j1",
        vec![
            canned(200, r#"{"jobId":"j1","type":"export","status":"enqueued","progress":0}"#),
            canned(429, r#"{"Message":"ErrorCode:ThrottlingException;slow down","ExceptionMessage":""}"#),
            canned(200, r#"{"jobId":"j1","type":"export","status":"running","progress":50,"newField":true}"#),
            canned(200, r#"{"jobId":"j1","type":"export","status":"completed","progress":100,"endTimeUtc":"2026-11-26T02:00:00Z"}"#),
        ],
    );
    let hub = hub_with(&script).await;
    let poll = PollPolicy {
        interval: Duration::from_millis(10),
        max_backoff: Duration::from_millis(30),
        timeout: Duration::from_secs(10),
    };
    let mut progress = Vec::new();
    let job = hub
        .wait_for_job("j1", &poll, |j| progress.push(j.progress.unwrap_or(-1)))
        .await
        .unwrap();
    assert_eq!(job.status(), JobStatus::Completed);
    assert_eq!(progress, [0, 50, 100]);
}

#[tokio::test]
async fn hub_wait_for_job_outlasts_a_5xx_burst_longer_than_one_retry_budget() {
    let script = Arc::new(Script::default());
    let busy = canned(
        503,
        r#"{"Message":"{\"errorCode\":503005,\"message\":\"busy\"}"}"#,
    );
    script.on(
        "GET /jobs/j3",
        vec![
            canned(200, r#"{"jobId":"j3","type":"export","status":"running"}"#),
            busy.clone(),
            busy.clone(),
            busy.clone(),
            busy,
            canned(200, r#"{"jobId":"j3","type":"export","status":"failed","failureReason":"storage unreachable"}"#),
        ],
    );
    let hub = hub_with(&script).await;
    let poll = PollPolicy {
        interval: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
    };
    let job = hub.wait_for_job("j3", &poll, |_| {}).await.unwrap();
    assert_eq!(
        (job.status(), job.failure_reason.as_deref()),
        (JobStatus::Failed, Some("storage unreachable"))
    );
    assert_eq!(script.seen("GET /jobs/j3").len(), 6);
}

#[tokio::test]
async fn hub_job_create_adopts_its_own_job_after_a_lost_response() {
    let script = Arc::new(Script::default());
    script.on(
        "POST /jobs/create",
        vec![
            canned(503, ""),
            canned(403, r#"{"Message":"{\"errorCode\":403003}"}"#),
        ],
    );
    script.on(
        "GET /jobs",
        vec![canned(200, r#"[{"jobId":"mine","type":"export","status":"enqueued","outputBlobName":"staging/hub-b/run-1/devices.txt"}]"#)],
    );
    let hub = hub_with(&script).await;
    let ask = JobProperties::export(
        "https://a/c?sig=x",
        "staging/hub-b/run-1/devices.txt",
        "staging/hub-b/run-1/configurations.txt",
    );
    assert_eq!(hub.create_job(&ask).await.unwrap().id(), "mine");
    let other = JobProperties::export("https://a/c?sig=x", "staging/hub-b/run-2/devices.txt", "c");
    assert_eq!(
        hub.create_job(&other).await.unwrap_err().code(),
        "hub_job_slot_busy"
    );
}

#[tokio::test]
async fn hub_wait_for_job_gives_up_at_the_timeout_without_cancelling() {
    let script = Arc::new(Script::default());
    script.on(
        "GET /jobs/j2",
        vec![canned(
            200,
            r#"{"jobId":"j2","type":"import","status":"running"}"#,
        )],
    );
    let hub = hub_with(&script).await;
    let poll = PollPolicy {
        interval: Duration::from_millis(20),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_millis(150),
    };
    let err = hub.wait_for_job("j2", &poll, |_| {}).await.unwrap_err();
    assert_eq!(err.code(), "hub_job_timed_out");
    assert!(script.seen("DELETE /jobs/j2").is_empty());
}

#[tokio::test]
async fn hub_bulk_partial_failure_is_a_result_not_an_error() {
    let script = Arc::new(Script::default());
    script.on(
        "POST /devices",
        vec![canned(
            400,
            r#"{"isSuccessful":false,"errors":[{"deviceId":"d1","errorCode":"DeviceAlreadyExists","errorStatus":"exists","operation":"create"},{"deviceId":"d2","errorCode":412001,"errorStatus":"etag"}],"warnings":[]}"#,
        )],
    );
    let hub = hub_with(&script).await;
    let line = r#"{"id":"d1","status":"enabled","authentication":{"symmetricKey":{"primaryKey":"cA==","secondaryKey":"cw=="},"type":"sas"},"importMode":"create"}"#;
    let devices = vec![serde_json::from_str(line).unwrap(); 2];
    let reply = hub.bulk(&devices).await.unwrap();
    assert!(!reply.resent, "one try, nothing resent");
    let result = reply.result;
    assert!(!result.is_successful);
    let codes: Vec<_> = result.errors.iter().map(|e| e.error_code.number).collect();
    assert_eq!(codes, [Some(409_001), Some(412_001)]);
    let sent: serde_json::Value =
        serde_json::from_slice(&script.seen("POST /devices")[0].body).unwrap();
    assert_eq!(sent[0]["importMode"], "create");

    let too_many = vec![devices[0].clone(); 101];
    assert_eq!(
        hub.bulk(&too_many).await.unwrap_err().code(),
        "hub_too_many_devices"
    );
    assert_eq!(
        script.seen("POST /devices").len(),
        1,
        "101 devices must not be sent"
    );
}

#[tokio::test]
async fn hub_query_follows_continuation_tokens() {
    let script = Arc::new(Script::default());
    script.on(
        "POST /devices/query",
        vec![
            Canned {
                status: 200,
                headers: vec![
                    ("x-ms-continuation", "tok-2".into()),
                    ("x-ms-item-type", "twin".into()),
                ],
                body: r#"[{"deviceId":"a"},{"deviceId":"b"}]"#.into(),
            },
            canned(200, r#"[{"deviceId":"c"}]"#),
        ],
    );
    let hub = hub_with(&script).await;
    let items = hub
        .query_all("SELECT * FROM devices", Some(2))
        .await
        .unwrap();
    let ids: Vec<_> = items
        .iter()
        .map(|v| v["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let seen = script.seen("POST /devices/query");
    assert!(seen[0].headers.get("x-ms-continuation").is_none());
    assert_eq!(seen[1].headers["x-ms-continuation"], "tok-2");
    assert_eq!(seen[1].headers["x-ms-max-item-count"], "2");
}

#[tokio::test]
async fn hub_device_writes_send_if_match_and_map_409_412() {
    let script = Arc::new(Script::default());
    script.on(
        "PUT /devices/d%241",
        vec![canned(
            409,
            r#"{"Message":"{\"errorCode\":409001,\"message\":\"exists\"}"}"#,
        )],
    );
    script.on(
        "DELETE /devices/d%241",
        vec![canned(
            412,
            r#"{"Message":"{\"errorCode\":412001,\"message\":\"etag\"}"}"#,
        )],
    );
    let hub = hub_with(&script).await;
    let dev = hub::Device {
        device_id: "d$1".into(),
        ..Default::default()
    };
    assert_eq!(
        hub.put_device(&dev, &IfMatch::Absent)
            .await
            .unwrap_err()
            .code(),
        "hub_already_exists"
    );
    assert_eq!(
        hub.delete_device("d$1", &IfMatch::Etag("MQ==".into()))
            .await
            .unwrap_err()
            .code(),
        "hub_precondition_failed"
    );
    assert!(
        script.seen("PUT /devices/d%241")[0]
            .headers
            .get("if-match")
            .is_none()
    );
    assert_eq!(
        script.seen("DELETE /devices/d%241")[0].headers["if-match"],
        "\"MQ==\""
    );
}

#[tokio::test]
async fn hub_local_address_makes_the_client_another_caller() {
    let script = Arc::new(Script::default());
    script.on("GET /jobs", vec![canned(200, "[]")]);
    let url = serve(script.clone()).await;
    let mut target = Connection::from_connection_string(HUB_CS)
        .unwrap()
        .with_endpoint(url);
    target.local_address = Some("127.0.0.2".parse().unwrap());
    HubClient::new(target).unwrap().list_jobs().await.unwrap();
    assert_eq!(
        script.seen("GET /jobs")[0].peer.ip().to_string(),
        "127.0.0.2"
    );
}

#[tokio::test]
async fn hub_transport_errors_carry_no_url_or_secret() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut target = Connection::from_connection_string(HUB_CS)
        .unwrap()
        .with_endpoint(Url::parse(&format!("http://{addr}")).unwrap());
    target.retry = RetryPolicy::none();
    assert_no_secret(&format!("{target:?}"));
    let hub = HubClient::new(target).unwrap();
    let err = hub.get_job("j?sig=abc").await.unwrap_err();
    assert_eq!(err.code(), "hub_transport");
    let text = format!("{err} / {err:?}");
    assert_no_secret(&text);
    assert!(
        !text.contains(&addr.port().to_string()) || !text.contains("http://"),
        "URL in error: {text}"
    );
    let _ = KEY;
}

// ---------------------------------------------------------------------------------------------
// Azure Blob store against Azurite.

/// A store in a fresh container (with a prefix, to exercise prefix handling).
async fn fresh_store(cs: &str, tag: &str) -> AzureStore {
    Staging::fresh(cs, tag).await.under("vault")
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The behaviour suite every backend passes (memory and local run it as unit tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_passes_the_conformance_suite() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "conformance").await;
    hubvault::store::conformance::run(&store).await;
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_is_create_only() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "create").await;
    store
        .put("hub-a/s1/manifest.json", Bytes::from_static(b"first"))
        .await
        .unwrap();
    let err = store
        .put("hub-a/s1/manifest.json", Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        store.get_bytes("hub-a/s1/manifest.json").await.unwrap(),
        Bytes::from_static(b"first")
    );

    // An aborted writer leaves nothing visible.
    let mut w = store.create("hub-a/s1/aborted").await.unwrap();
    w.write(Bytes::from(vec![7u8; 5 * 1024 * 1024]))
        .await
        .unwrap();
    w.abort().await.unwrap();
    assert!(matches!(
        store.get_bytes("hub-a/s1/aborted").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    assert_eq!(store.list("").await.unwrap().len(), 1);
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_keeps_empty_objects_and_unusual_names() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "names").await;
    let names = [
        "empty",
        "with space/ü-ñ #1 %41 +x?y=z&sig=no.txt",
        "a/b/c/d.json",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = if i == 0 {
            Bytes::new()
        } else {
            Bytes::from(format!("data {i}"))
        };
        let meta = store.put(name, data.clone()).await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(store.get_bytes(name).await.unwrap(), data, "{name}");
    }
    let listed: Vec<_> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("a/b/c/d.json".to_owned(), 6),
            ("empty".to_owned(), 0),
            (names[1].to_owned(), 6)
        ]
    );
    store.delete(names[1]).await.unwrap();
    assert_eq!(store.list("with").await.unwrap().len(), 0);
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_concurrent_writers_of_one_name_do_not_mix_blocks() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "race").await;
    let (a, b) = (pseudo_random(5 * 1024 * 1024), vec![1u8; 5 * 1024 * 1024]);
    let mut wa = store.create("x").await.unwrap();
    let mut wb = store.create("x").await.unwrap();
    wa.write(Bytes::from(a.clone())).await.unwrap();
    wb.write(Bytes::from(b)).await.unwrap();
    wa.finish().await.unwrap();
    assert!(matches!(
        wb.finish().await.unwrap_err(),
        StoreError::AlreadyExists { .. }
    ));
    assert!(
        store.get_bytes("x").await.unwrap() == a,
        "the first writer's bytes must be intact"
    );
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_multi_block_round_trip_20_mib() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "big").await;
    let data = pseudo_random(20 * 1024 * 1024 + 12_345);
    let mut w = store
        .create("hub-a/s2/devices.jsonl.zst.age")
        .await
        .unwrap();
    for chunk in data.chunks(3 * 1024 * 1024 + 17) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);

    let chunks: Vec<Bytes> = store
        .get("hub-a/s2/devices.jsonl.zst.age")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let got = chunks.concat();
    assert_eq!(got.len(), data.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
    let listed = store.list("hub-a/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        ("hub-a/s2/devices.jsonl.zst.age", data.len() as u64)
    );
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_lists_by_prefix_and_deletes_idempotently() {
    let Some(cs) = azurite() else { return };
    let store = fresh_store(&cs, "list").await;
    for name in ["hub-b/1", "hub-a/2", "hub-a/1", "hub-ab/1"] {
        store.put(name, Bytes::from(name.to_owned())).await.unwrap();
    }
    let names =
        |v: Vec<hubvault::store::ObjectMeta>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.list("hub-a/").await.unwrap()),
        ["hub-a/1", "hub-a/2"]
    );
    assert_eq!(
        names(store.list("").await.unwrap()),
        ["hub-a/1", "hub-a/2", "hub-ab/1", "hub-b/1"]
    );
    assert_eq!(store.head("hub-a/1").await.unwrap().unwrap().size, 7);
    store.delete("hub-a/1").await.unwrap();
    store.delete("hub-a/1").await.unwrap();
    assert_eq!(names(store.list("hub-a/").await.unwrap()), ["hub-a/2"]);
    assert!(store.head("hub-a/1").await.unwrap().is_none());
    assert!(matches!(
        store.get("hub-a/1").await.err().unwrap(),
        StoreError::NotFound { .. }
    ));
    assert!(matches!(
        store.put("../x", Bytes::new()).await.unwrap_err(),
        StoreError::InvalidName { .. }
    ));
    store.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_through_a_generated_sas_and_a_tampered_one() {
    let Some(cs) = azurite() else { return };
    let keyed = fresh_store(&cs, "sas").await;
    let now = time::OffsetDateTime::now_utc();
    let sas = keyed
        .container_sas(
            SasPermissions::all(),
            now - time::Duration::minutes(5),
            now + time::Duration::hours(1),
        )
        .unwrap();
    let url = sas.on(&keyed.azure_location().container_url());
    let sig = url
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .unwrap()
        .1
        .into_owned();

    let via_sas = AzureStore::open(url.as_str(), None).unwrap();
    via_sas
        .put("hub-a/obj", Bytes::from_static(b"via sas"))
        .await
        .unwrap();
    assert_eq!(
        via_sas.get_bytes("hub-a/obj").await.unwrap(),
        Bytes::from_static(b"via sas")
    );
    assert_eq!(via_sas.list("hub-a/").await.unwrap().len(), 1);
    assert!(via_sas.location().contains("sig=<redacted>"));
    assert!(!via_sas.location().contains(&sig) && !format!("{via_sas:?}").contains(&sig));

    let tampered = url.as_str().replace(
        &url::form_urlencoded::byte_serialize(sig.as_bytes()).collect::<String>(),
        "AAAAtampered",
    );
    let bad = AzureStore::open(&tampered, None).unwrap();
    let err = bad
        .put("hub-a/evil", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
    let err = bad.get_bytes("hub-a/obj").await.unwrap_err();
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("AAAAtampered") && !err.to_string().contains(&sig),
        "{err}"
    );

    // Least privilege: a read-only SAS cannot write.
    let read_only = keyed
        .container_sas(
            SasPermissions::import_input(),
            now - time::Duration::minutes(5),
            now + time::Duration::hours(1),
        )
        .unwrap();
    let ro = AzureStore::open(
        read_only
            .on(&keyed.azure_location().container_url())
            .as_str(),
        None,
    )
    .unwrap();
    assert_eq!(
        ro.get_bytes("hub-a/obj").await.unwrap(),
        Bytes::from_static(b"via sas")
    );
    assert!(matches!(
        ro.put("hub-a/new", Bytes::new()).await.unwrap_err(),
        StoreError::PermissionDenied { .. }
    ));
    keyed.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_opens_from_a_connection_string_and_redacts_it() {
    let Some(cs) = azurite() else { return };
    let fresh = Staging::fresh(&cs, "cs").await;
    let container = &fresh.container;
    let store = AzureStore::open(
        &format!(
            "{}Container={container}/p",
            cs.trim_end_matches(';').to_owned() + ";"
        ),
        None,
    )
    .unwrap();
    store.ensure_container().await.unwrap();
    store.put("o", Bytes::from_static(b"1")).await.unwrap();
    let loc = store.location();
    assert!(loc.ends_with(&format!("/{container}/p")), "{loc}");
    assert!(
        !loc.contains("AccountKey")
            && !loc.contains("Eby8vdM02x")
            && !format!("{store:?}").contains("Eby8vdM02x"),
        "{loc}"
    );
    // The path-style URL of the same container works too (public dev key).
    let by_url = AzureStore::open(
        &format!("{}/p", store.azure_location().container_url()),
        None,
    )
    .unwrap();
    assert_eq!(
        by_url.get_bytes("o").await.unwrap(),
        Bytes::from_static(b"1")
    );
    store.delete_container().await.unwrap();
}
