//! Reading the live target hub as records comparable with a snapshot's.
//!
//! Twin queries (`SELECT * FROM devices`, `SELECT * FROM devices.modules`) give everything a
//! restore compares except symmetric keys, in large pages (queries are throttled per minute, so
//! few big pages beat many small ones). Keys come from `GET /devices/{id}` (or the module GET),
//! and only for the records that need them ([`fetch_keys`]) — never for a whole big hub by default.
//! The edge link pass gets new parents' scopes from here too ([`parent_scopes`]). Single reads
//! count against the registry throttle and are paced ([`super::pace`]).
//!
//! Must not: decide anything (the plan does), write to the hub.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::canonical;
use super::lines::is_system_module;
use super::pace::Pacer;
use super::plan::{TargetRecord, order};
use crate::hub::{self, HubClient};

/// Largest query page asked for; the hub may cap it lower.
const PAGE: u32 = 1000;
/// Single-record reads under way at most when fetching keys (the pacer sets the rate; 16 cover
/// 50 reads/s at 300 ms each).
const KEY_READS: usize = 16;
/// From this many parents on, their scopes come from one query of the edge devices.
const SCOPE_QUERY_MIN: usize = 50;
/// Tries of one read that keeps coming back throttled before the throttle is reported.
const THROTTLED_TRIES: u32 = 20;

/// Every device and (non-system) module of the hub, canonical, sorted by `(id, moduleId)`.
pub async fn read(client: &HubClient) -> Result<Vec<TargetRecord>, hub::Error> {
    let devices = client
        .query_all("SELECT * FROM devices", Some(PAGE))
        .await?;
    let modules = client
        .query_all("SELECT * FROM devices.modules", Some(PAGE))
        .await?;
    let mut out: Vec<TargetRecord> = devices
        .iter()
        .chain(modules.iter())
        .filter_map(record)
        .collect();
    out.sort_by(|a, b| {
        order(
            (&a.id, a.module_id.as_deref()),
            (&b.id, b.module_id.as_deref()),
        )
    });
    out.dedup_by(|a, b| a.id == b.id && a.module_id == b.module_id);
    Ok(out)
}

fn record(twin: &Value) -> Option<TargetRecord> {
    let id = twin.get("deviceId")?.as_str()?.to_owned();
    let module_id = twin
        .get("moduleId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if is_system_module(module_id.as_deref()) {
        return None;
    }
    let text = |k: &str| twin.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(TargetRecord {
        canonical: canonical::from_twin(twin),
        keys_known: false,
        etag: text("deviceEtag"),
        own_scope: if module_id.is_none() {
            text("deviceScope")
        } else {
            None
        },
        id,
        module_id,
    })
}

/// Read symmetric keys for the listed records (devices with `GET /devices/{id}`, modules with
/// their module GET) and fold them into `target`. A record gone meanwhile stays keyless.
pub async fn fetch_keys(
    client: &HubClient,
    target: &mut [TargetRecord],
    wanted: &[(String, Option<String>)],
) -> Result<(), hub::Error> {
    let client = client.pacing_throttles();
    let found = paced(&client, wanted.to_vec(), |(id, module_id): Key| {
        let client = client.clone();
        async move {
            let auth = match &module_id {
                None => client
                    .get_device(&id)
                    .await
                    .map(|d| serde_json::to_value(d.authentication)),
                Some(m) => client
                    .get_module(&id, m)
                    .await
                    .map(|d| serde_json::to_value(d.authentication)),
            };
            match auth {
                Ok(v) => Ok(Some((id, module_id, v.unwrap_or(Value::Null)))),
                Err(hub::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await?;
    for (id, module_id, auth) in found {
        let at = target.binary_search_by(|t| {
            order((&t.id, t.module_id.as_deref()), (&id, module_id.as_deref()))
        });
        if let Ok(i) = at {
            let record = &mut target[i];
            record.canonical = canonical::with_keys(record.canonical.clone(), &auth);
            record.keys_known = true;
        }
    }
    Ok(())
}

/// The scopes the target generated for `parents` (edge devices), `None` for a parent it does not
/// have. Many parents: one twin query of the hub's edge devices (a few pages, where one
/// registry read each would take `parents / throttle` seconds: 2,000 at 50/s = 40 s); the
/// parents it did not return (the query index may lag a fresh import; a parent that is not an
/// edge device) and a few parents: paced single reads.
pub async fn parent_scopes(
    client: &HubClient,
    parents: &[String],
) -> Result<HashMap<String, Option<String>>, hub::Error> {
    let mut out: HashMap<String, Option<String>> = HashMap::new();
    if parents.len() >= SCOPE_QUERY_MIN {
        let wanted: HashSet<&str> = parents.iter().map(String::as_str).collect();
        let edges = client
            .query_all(
                "SELECT deviceId, deviceScope FROM devices WHERE capabilities.iotEdge = true",
                Some(PAGE),
            )
            .await?;
        for twin in &edges {
            let id = twin.get("deviceId").and_then(Value::as_str);
            let scope = twin.get("deviceScope").and_then(Value::as_str);
            if let (Some(id), Some(scope)) = (id, scope)
                && wanted.contains(id)
                && !scope.is_empty()
            {
                out.insert(id.to_owned(), Some(scope.to_owned()));
            }
        }
    }
    let missing: Vec<Key> = parents
        .iter()
        .filter(|p| !out.contains_key(p.as_str()))
        .map(|p| (p.clone(), None))
        .collect();
    let client = client.pacing_throttles();
    let read = paced(&client, missing, |(id, _): Key| {
        let client = client.clone();
        async move {
            match client.get_device(&id).await {
                Ok(d) => Ok(Some((id, d.device_scope))),
                Err(hub::Error::NotFound { .. }) => Ok(Some((id, None))),
                Err(e) => Err(e),
            }
        }
    })
    .await?;
    out.extend(read);
    Ok(out)
}

type Key = (String, Option<String>);

/// Run `read` for every key at the pace the hub allows ([`Pacer`], up to [`KEY_READS`] under
/// way). Single reads count against the registry throttle: a throttled read goes back in the
/// queue, resent no sooner than its `Retry-After`, at most [`THROTTLED_TRIES`] times before the
/// throttle is reported. `read` must hand 429s back (a [`HubClient::pacing_throttles`] client).
async fn paced<T, F, Fut>(client: &HubClient, keys: Vec<Key>, read: F) -> Result<Vec<T>, hub::Error>
where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = Result<Option<T>, hub::Error>>,
{
    let mut queue: VecDeque<(Key, u32, Option<Instant>)> =
        keys.into_iter().map(|k| (k, 0, None)).collect();
    let mut running = FuturesUnordered::new();
    let memory = format!("{} reads", client.name());
    let mut pacer = Pacer::for_hub(&memory, Instant::now());
    let mut found = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        let start = (running.len() < KEY_READS)
            .then(|| queue.front())
            .flatten()
            .map(|(_, _, not_before)| {
                let now = Instant::now();
                pacer.next_start(now).max(not_before.unwrap_or(now))
            });
        let answer = tokio::select! {
            () = tokio::time::sleep_until(start.unwrap_or_else(Instant::now)), if start.is_some() => None,
            Some(done) = running.next(), if !running.is_empty() => Some(done),
        };
        let Some((key, tries, sent_at, result)) = answer else {
            if let Some((key, tries, _)) = queue.pop_front() {
                let now = Instant::now();
                pacer.sent(now);
                let call = read(key.clone());
                running.push(async move { (key, tries, now, call.await) });
            }
            continue;
        };
        match result {
            Ok(hit) => {
                pacer.accepted(Instant::now());
                found.extend(hit);
            }
            Err(hub::Error::Throttled { retry_after, .. })
                if tries.saturating_add(1) < THROTTLED_TRIES =>
            {
                let now = Instant::now();
                pacer.throttled(sent_at, now);
                let not_before = now.checked_add(retry_after.unwrap_or(Duration::from_secs(1)));
                queue.push_back((key, tries.saturating_add(1), not_before));
            }
            Err(e) => return Err(e),
        }
    }
    pacer.remember(&memory);
    Ok(found)
}

/// The hub's configurations, canonical, sorted by id.
pub async fn configurations(
    client: &HubClient,
) -> Result<Vec<(Value, Option<String>)>, hub::Error> {
    let list = client.list_configurations(100).await?;
    let mut out: Vec<(Value, Option<String>)> = list
        .into_iter()
        .map(|c| {
            let etag = c.etag.clone();
            let v = serde_json::to_value(&c).unwrap_or(Value::Null);
            (canonical_configuration(&v), etag)
        })
        .collect();
    out.sort_by(|a, b| a.0["id"].as_str().cmp(&b.0["id"].as_str()));
    Ok(out)
}

/// What a configuration restore carries over: id, schema version, labels, content, target
/// condition, priority and custom metric queries (not timestamps, system metrics or etags).
pub fn canonical_configuration(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "id",
        "schemaVersion",
        "labels",
        "content",
        "targetCondition",
        "priority",
    ] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            out.insert(k.into(), x.clone());
        }
    }
    if let Some(q) = v
        .pointer("/metrics/queries")
        .filter(|q| q.as_object().is_some_and(|m| !m.is_empty()))
    {
        out.insert("metrics".into(), serde_json::json!({ "queries": q }));
    }
    Value::Object(out)
}
