//! Per-hub limits, throttling rates and injected faults — the knobs the control API turns.
//!
//! Owns: the `Limits` and `Faults` documents (JSON, `snake_case`; the control API merges partial
//! documents into them), and the token buckets that decide a 429. Pure: bucket decisions take
//! `now` as an `Instant` parameter.
//! Must not: write responses (the hub router does).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Operation classes with their own throttle, after the service's quota table (§2.3, §5, §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Device and module identity operations, including bulk `POST /devices` (one request each).
    Registry,
    Twins,
    Query,
    Jobs,
    Configurations,
    Statistics,
    /// Device-to-cloud messages.
    Telemetry,
}

impl OpClass {
    /// The "Operation type" text of the legacy throttling message.
    pub fn label(self) -> &'static str {
        match self {
            OpClass::Registry => "CRUD",
            OpClass::Twins => "TwinOperations",
            OpClass::Query => "Query",
            OpClass::Jobs => "Jobs",
            OpClass::Configurations => "Configurations",
            OpClass::Statistics => "Statistics",
            OpClass::Telemetry => "D2C",
        }
    }
}

/// Limits of one hub. Every field has a default, so a partial JSON document is a valid update.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "a flat settings document the control API merges"
)]
pub struct Limits {
    /// Maximum devices in the hub (403002 `IotHubQuotaExceeded` beyond). `None`: the service cap.
    pub device_quota: Option<usize>,
    /// Import/export job speed in devices (lines) per second; 0 means as fast as possible.
    pub job_rate: f64,
    /// How long a new job stays `enqueued` before it runs, in milliseconds.
    pub job_queue_ms: u64,
    /// Error code of a second concurrent import/export job: 403003 (`JobQuotaExceeded`, default) or
    /// 403001 (observed by CLI maintainers); docs/azure.md leaves it UNCERTAIN.
    pub job_quota_code: u32,
    /// Requests per second per operation class; a class not listed is not throttled.
    pub rates: BTreeMap<OpClass, f64>,
    /// `Retry-After` seconds on 429 (none when `None`; the service's header is UNCERTAIN §6.4).
    pub retry_after_secs: Option<u64>,
    /// Write throttling errors in the legacy `ErrorCode:…;…` body (true, as seen in the wild) or shape A.
    pub throttle_legacy_body: bool,
    /// Largest query page the hub returns, whatever `x-ms-max-item-count` asks.
    pub query_max_page: usize,
    /// A non-JSON first line written at the top of `devices.txt` exports (as the service sometimes does).
    pub export_warning: Option<String>,
    /// Reject leaf `deviceScope`s that name no edge device of this hub (400028).
    pub strict_scopes: bool,
    /// Apply `properties.reported` from import lines (UNCERTAIN §4.2; default: ignored).
    pub import_reported: bool,
    /// Accept `Authorization: Bearer …` (Entra ID). With `bearer_token` set, only that token.
    pub accept_bearer: bool,
    pub bearer_token: Option<String>,
    /// Put Block size for job outputs written to Azure Blob (bytes).
    pub block_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            device_quota: None,
            job_rate: 5000.0,
            job_queue_ms: 50,
            job_quota_code: 403_003,
            rates: BTreeMap::new(),
            retry_after_secs: Some(10),
            throttle_legacy_body: true,
            query_max_page: 1000,
            export_warning: None,
            strict_scopes: true,
            import_reported: false,
            accept_bearer: false,
            bearer_token: None,
            block_size: 4 << 20,
        }
    }
}

/// Faults to inject. Counters count down as they fire.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next import/export job fails half-way with a `failureReason`; a job with nothing
    /// to process fails at its end.
    pub fail_next_job: bool,
    /// The next N data-plane requests get `error_status` (500 → 500001 `ServerError`, else 503001).
    pub error_burst: u32,
    pub error_status: Option<u16>,
    /// The next `slow_count` requests are delayed by `slow_ms`.
    pub slow_ms: u64,
    pub slow_count: u32,
    /// The next N requests lose their connection before a response arrives.
    pub drop_count: u32,
    /// The next export job silently leaves out this many devices (and their modules): a
    /// service losing records, which only a count against the registry can notice.
    pub export_skip_devices: u32,
    /// The next N bulk writes (`POST /devices`) that are carried out (200, or 400 with a bulk
    /// result) lose their connection before the response arrives: writes whose outcome the
    /// client cannot know. A bulk call refused (firewall, auth, throttling, a batch refused
    /// whole) is answered and does not count.
    pub lose_bulk_responses: u32,
    /// Tokens are treated as expired this many seconds before their `se`.
    pub expire_tokens_early_secs: u64,
    /// Set to N: the data plane answers every request with 404012 `IotHubFailingOver` for the
    /// next N milliseconds (a failover in progress, docs/azure.md). The control API turns it
    /// into `failing_over_until_ms` and reads back 0.
    pub failing_over_ms: u64,
    /// Unix time in milliseconds until which the hub is failing over (see `failing_over_ms`).
    pub failing_over_until_ms: Option<u64>,
    /// The next import-job or bulk write of this device id silently stores a different primary
    /// key than the line carried (a hub losing a key; tests verification). Cleared once fired.
    pub wrong_key_for: Option<String>,
    /// This percentage of device identities written by import jobs and bulk calls is silently
    /// not stored (answered as applied, logged as nothing): a hub losing imports. Which ids
    /// are lost follows from the id alone (a hash), so every run loses the same ones. Edge
    /// devices are never lost (their children would then fail loudly). Stays until cleared.
    pub drop_imports_percent: f64,
}

/// A valid symmetric key no restore ever writes (base64 of 32 bytes).
const WRONG_KEY: &str = "d3Jvbmcta2V5LXN0b3JlZC1ieS10aGUtc2ltdWxhdG9y";

impl Faults {
    /// Turn a freshly set `failing_over_ms` into a deadline from `now_ms` (Unix milliseconds).
    pub fn start_failover_window(&mut self, now_ms: u64) {
        if self.failing_over_ms > 0 {
            self.failing_over_until_ms = Some(now_ms.saturating_add(self.failing_over_ms));
            self.failing_over_ms = 0;
        }
    }

    /// Whether the hub answers 404012 at `now_ms`.
    pub fn failing_over(&self, now_ms: u64) -> bool {
        self.failing_over_until_ms
            .is_some_and(|until| now_ms < until)
    }

    /// Apply the `wrong_key_for` fault to one line about to be stored: returns the line with a
    /// replaced primary key when it is that device's identity line (and clears the fault).
    pub fn corrupt_key(&mut self, mut line: serde_json::Value) -> serde_json::Value {
        let hit = self.wrong_key_for.as_deref().is_some_and(|id| {
            line.get("id").and_then(serde_json::Value::as_str) == Some(id)
                && line.get("moduleId").is_none_or(serde_json::Value::is_null)
        });
        if let Some(key) = line
            .pointer_mut("/authentication/symmetricKey/primaryKey")
            .filter(|_| hit)
        {
            *key = serde_json::Value::String(WRONG_KEY.into());
            self.wrong_key_for = None;
        }
        line
    }
}

impl Faults {
    /// Whether `drop_imports_percent` loses this import line: a device line (not a module, not
    /// an edge device) whose id hashes into the lost share.
    pub fn drops_import(&self, line: &serde_json::Value) -> bool {
        if self.drop_imports_percent <= 0.0
            || line.get("moduleId").is_some_and(|m| !m.is_null())
            || line.pointer("/capabilities/iotEdge") == Some(&serde_json::Value::Bool(true))
        {
            return false;
        }
        let Some(id) = line.get("id").and_then(serde_json::Value::as_str) else {
            return false;
        };
        // FNV-1a: stable across runs and platforms.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        #[allow(clippy::cast_precision_loss, reason = "a bucket below 10,000")]
        let bucket = (hash % 10_000) as f64;
        bucket < self.drop_imports_percent * 100.0
    }
}

/// Merge a partial JSON document into a serializable settings struct; unknown keys are errors.
pub fn merge<T: Serialize + serde::de::DeserializeOwned>(
    current: &T,
    patch: &serde_json::Value,
) -> Result<T, String> {
    let mut doc = serde_json::to_value(current).map_err(|e| e.to_string())?;
    let (Some(obj), Some(p)) = (doc.as_object_mut(), patch.as_object()) else {
        return Err("expected a JSON object".into());
    };
    for (k, v) in p {
        obj.insert(k.clone(), v.clone());
    }
    serde_json::from_value(doc).map_err(|e| e.to_string())
}

/// A token bucket: `rate` tokens per second, holding at most `max(rate, 1)`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.max(1.0),
            last: now,
        }
    }

    /// Take one token; false when the caller must be throttled.
    pub fn take(&mut self, rate: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
    use std::time::Duration;

    #[test]
    fn a_failover_window_starts_when_set_and_ends_on_time() {
        let mut f: Faults = merge(
            &Faults::default(),
            &serde_json::json!({"failing_over_ms": 500}),
        )
        .unwrap();
        f.start_failover_window(10_000);
        assert_eq!(f.failing_over_ms, 0);
        assert!(f.failing_over(10_000) && f.failing_over(10_499));
        assert!(!f.failing_over(10_500));
        assert!(!Faults::default().failing_over(0));
    }

    #[test]
    fn wrong_key_fault_hits_only_its_device_line_once() {
        let mut f = Faults {
            wrong_key_for: Some("d2".into()),
            ..Faults::default()
        };
        let line = |id: &str, module: Option<&str>| {
            serde_json::json!({"id": id, "moduleId": module,
                "authentication": {"symmetricKey": {"primaryKey": "a2V5LWtleS1rZXkta2V5LQ==", "secondaryKey": "c2Vjb25kYXJ5LWtleS0xMg=="}}})
        };
        let key = |v: &serde_json::Value| v["authentication"]["symmetricKey"]["primaryKey"].clone();
        assert_eq!(
            key(&f.corrupt_key(line("d1", None))),
            key(&line("d1", None))
        );
        assert_eq!(
            key(&f.corrupt_key(line("d2", Some("m")))),
            key(&line("d2", None))
        );
        let hit = f.corrupt_key(line("d2", None));
        assert_ne!(key(&hit), key(&line("d2", None)));
        assert_eq!(
            hit["authentication"]["symmetricKey"]["secondaryKey"],
            line("d2", None)["authentication"]["symmetricKey"]["secondaryKey"]
        );
        assert!(f.wrong_key_for.is_none());
        assert_eq!(
            key(&f.corrupt_key(line("d2", None))),
            key(&line("d2", None))
        );
    }

    #[test]
    fn dropped_imports_are_about_the_share_asked_and_always_the_same_ids() {
        let f = Faults {
            drop_imports_percent: 1.0,
            ..Faults::default()
        };
        let line = |id: String| serde_json::json!({"id": id});
        let lost: Vec<String> = (0..10_000)
            .map(|i| format!("dev-{i:07}"))
            .filter(|id| f.drops_import(&line(id.clone())))
            .collect();
        assert!((60..=140).contains(&lost.len()), "{}", lost.len());
        assert!(f.drops_import(&line(lost[0].clone())));
        let edge = serde_json::json!({"id": lost[0], "capabilities": {"iotEdge": true}});
        assert!(!f.drops_import(&edge));
        let module = serde_json::json!({"id": lost[0], "moduleId": "m"});
        assert!(!f.drops_import(&module));
        assert!(!Faults::default().drops_import(&line(lost[0].clone())));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1.0, t0);
        assert!(b.take(1.0, t0));
        assert!(!b.take(1.0, t0 + Duration::from_millis(500)));
        assert!(b.take(1.0, t0 + Duration::from_millis(1600)));
    }

    #[test]
    fn merge_keeps_other_fields_and_rejects_unknown_keys() {
        let l = Limits::default();
        let m = merge(
            &l,
            &serde_json::json!({"device_quota": 5, "rates": {"registry": 2.0}}),
        )
        .unwrap();
        assert_eq!(m.device_quota, Some(5));
        assert!((m.rates[&OpClass::Registry] - 2.0).abs() < f64::EPSILON);
        assert_eq!(m.job_quota_code, 403_003);
        assert!(merge(&l, &serde_json::json!({"devcie_quota": 5})).is_err());
    }
}
