//! One simulated `IoT` Hub's state and the helpers every data-plane handler shares.
//!
//! Owns: `Hub` (registry, job table, limits, faults, throttle buckets, telemetry counts, the
//! connections to drop, the blob client), the throttling decision, JSON responses and request
//! helpers, and the clock handlers read. Must not: know the routes or the handlers (that is
//! `hub`), nor hold ARM logic (the ARM module edits `HubShared::resource`; we only read it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{BodyShape, HubError};
use crate::job_table::JobTable;
use crate::limits::{Bucket, Faults, Limits, OpClass};
use crate::net::DropSet;
use crate::registry::{Registry, Rules};
use crate::shared::HubShared;
pub use crate::shared::lock;

/// State of one hub.
pub struct Hub {
    pub shared: Arc<HubShared>,
    pub registry: Mutex<Registry>,
    pub jobs: Mutex<JobTable>,
    pub limits: Mutex<Limits>,
    pub faults: Mutex<Faults>,
    throttle: Mutex<HashMap<OpClass, Bucket>>,
    /// Device-to-cloud messages accepted, per device id.
    pub messages: Mutex<BTreeMap<String, u64>>,
    pub drops: Arc<DropSet>,
    /// Client for job blob I/O (Azure Blob REST).
    pub http: reqwest::Client,
}

impl Hub {
    pub fn new(shared: Arc<HubShared>, limits: Limits, http: reqwest::Client) -> Hub {
        Hub {
            shared,
            registry: Mutex::new(Registry::default()),
            jobs: Mutex::new(JobTable::default()),
            limits: Mutex::new(limits),
            faults: Mutex::new(Faults::default()),
            throttle: Mutex::new(HashMap::new()),
            messages: Mutex::new(BTreeMap::new()),
            drops: Arc::new(DropSet::default()),
            http,
        }
    }

    pub fn rules(&self) -> Rules {
        let l = lock(&self.limits);
        Rules {
            device_quota: l.device_quota,
            strict_scopes: l.strict_scopes,
        }
    }

    /// Take a token from `class`'s bucket; `Some` is the 429 to answer when it is empty.
    pub(crate) fn throttled(&self, class: OpClass, now: Instant) -> Option<HubError> {
        let limits = lock(&self.limits);
        let rate = *limits.rates.get(&class)?;
        let mut buckets = lock(&self.throttle);
        let bucket = buckets
            .entry(class)
            .or_insert_with(|| Bucket::full(rate, now));
        if bucket.take(rate, now) {
            return None;
        }
        // The service's template, "Wait 10 seconds" (docs/azure.md §7.4), kept word for word
        // (even "1 seconds") for clients that read it: the number follows the `Retry-After` we
        // send, and stays the service's 10 when we send none.
        let wait = limits.retry_after_secs.unwrap_or(10);
        let text = format!(
            "The request has been throttled. Wait {wait} seconds and try again. Operation type: {}",
            class.label()
        );
        let mut e = HubError::new(429_001, "ThrottlingException", text);
        e.retry_after = limits.retry_after_secs;
        Some(e.with_shape(if limits.throttle_legacy_body {
            BodyShape::Legacy
        } else {
            BodyShape::Json
        }))
    }
}

/// A JSON response with the service's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Parse a request body as JSON; a malformed body is 400004 `ArgumentInvalid`.
pub fn body_json(body: &[u8]) -> Result<Value, HubError> {
    serde_json::from_slice(body)
        .map_err(|e| HubError::argument_invalid(format!("The request body is not valid JSON: {e}")))
}

/// The `If-Match` header, if any.
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Unix seconds now (handlers are the edge: they read the clock and pass it down).
pub fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix time in milliseconds (fault windows).
pub fn now_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
