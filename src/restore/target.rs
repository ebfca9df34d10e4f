//! Reading the live target hub as records comparable with a snapshot's.
//!
//! Twin queries (`SELECT * FROM devices`, `SELECT * FROM devices.modules`) give everything a
//! restore compares except symmetric keys, in large pages (queries are throttled per minute, so
//! few big pages beat many small ones). Keys come from `GET /devices/{id}` (or the module GET),
//! and only for the records that need them ([`fetch_keys`]) — never for a whole big hub by default.
//!
//! Must not: decide anything (the plan does), write to the hub.

use futures::StreamExt;
use serde_json::Value;

use super::canonical;
use super::lines::is_system_module;
use super::plan::{TargetRecord, order};
use crate::hub::{self, HubClient};

/// Largest query page asked for; the hub may cap it lower.
const PAGE: u32 = 1000;
/// Concurrent single-record reads when fetching keys.
const KEY_READS: usize = 16;
/// Rounds of key reads before a throttled hub is reported.
const THROTTLED_ROUNDS: u32 = 20;

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
    if wanted.is_empty() {
        return Ok(());
    }
    let mut pending: Vec<(String, Option<String>)> = wanted.to_vec();
    let mut found = Vec::new();
    let mut window = KEY_READS;
    // Single reads count against the registry throttle: a round that still ends throttled (after
    // the client's own retries) is re-run with fewer reads in flight, a bounded number of times.
    for round in 0..THROTTLED_ROUNDS {
        let results: Vec<_> = futures::stream::iter(pending.drain(..))
            .map(|(id, module_id)| read_auth(client, id, module_id))
            .buffer_unordered(window)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Some(hit)) => found.push(hit),
                Ok(None) => {}
                Err((hub::Error::Throttled { .. }, key)) if round + 1 < THROTTLED_ROUNDS => {
                    pending.push(key);
                }
                Err((e, _)) => return Err(e),
            }
        }
        if pending.is_empty() {
            break;
        }
        window = (window / 4).max(1);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
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

type Key = (String, Option<String>);

async fn read_auth(
    client: &HubClient,
    id: String,
    module_id: Option<String>,
) -> Result<Option<(String, Option<String>, Value)>, (hub::Error, Key)> {
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
        Err(e) => Err((e, (id, module_id))),
    }
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
