//! Configurations (ADM configurations and edge deployments): plan, apply, verify.
//!
//! A hub holds at most 100, so they are handled whole, in memory, with `PUT /configurations/{id}`
//! (create without `If-Match`, update with the **target's** etag) and, in `mirror` mode, `DELETE`.
//! They are compared in canonical form ([`super::live::canonical_configuration`]): timestamps,
//! system metrics and etags are the hub's own and never restored.
//!
//! Must not: touch devices.

use std::sync::Arc;

use serde_json::Value;

use super::apply::Progress;
use super::bulk::Failure;
use super::live::{self, canonical_configuration};
use super::outcome::{Difference, Problem};
use super::{Error, Mode};
use crate::diagnostic::Diagnostic as _;
use crate::hub::registry::{Configuration, IfMatch};
use crate::hub::{self, HubClient};
use crate::pipeline::Identities;
use crate::snapshot::{self, Manifest, reader::ObjectReader};
use crate::store::Store;

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `(canonical configuration, target etag)`: `None` creates.
    pub put: Vec<(Value, Option<String>)>,
    /// `(id, target etag)`.
    pub delete: Vec<(String, Option<String>)>,
    pub unchanged: u64,
    pub conflicts: u64,
}

impl Plan {
    pub fn counts(&self) -> Value {
        let create = self.put.iter().filter(|(_, e)| e.is_none()).count();
        serde_json::json!({
            "create": create,
            "update": self.put.len().saturating_sub(create),
            "delete": self.delete.len(),
            "unchanged": self.unchanged,
        })
    }
}

/// The snapshot's configurations, canonical, sorted by id.
#[allow(
    clippy::result_large_err,
    reason = "snapshot errors are rare and carry their details"
)]
pub async fn from_snapshot(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    identities: Identities,
) -> Result<Vec<Value>, Error> {
    let m = manifest.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> Result<Vec<Value>, Error> {
        let reader = ObjectReader::open(
            store.as_ref(),
            &handle,
            &m,
            snapshot::manifest::CONFIGURATIONS,
            &identities,
        )?;
        let mut out = Vec::new();
        for r in reader {
            let v: Value = serde_json::from_slice(&r?.line).unwrap_or(Value::Null);
            out.push(canonical_configuration(&v));
        }
        out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(out)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Plan (pure): what to put and delete so the target's configurations equal the snapshot's.
pub fn plan(wanted: &[Value], have: &[(Value, Option<String>)], mode: Mode) -> Plan {
    let mut out = Plan::default();
    let find = |id: &str| have.iter().find(|(c, _)| c["id"].as_str() == Some(id));
    for w in wanted {
        let id = w["id"].as_str().unwrap_or_default();
        match find(id) {
            None => out.put.push((w.clone(), None)),
            Some((c, _)) if c == w => out.unchanged = out.unchanged.saturating_add(1),
            Some(_) if mode == Mode::Create => out.conflicts = out.conflicts.saturating_add(1),
            Some((_, etag)) => out
                .put
                .push((w.clone(), Some(etag.clone().unwrap_or_else(|| "*".into())))),
        }
    }
    if mode == Mode::Mirror {
        for (c, etag) in have {
            let id = c["id"].as_str().unwrap_or_default();
            if !wanted.iter().any(|w| w["id"].as_str() == Some(id)) {
                out.delete.push((id.to_owned(), etag.clone()));
            }
        }
    }
    out
}

/// Apply a configuration plan. Per-configuration refusals are failures; fatal errors stop.
pub async fn apply(
    client: &HubClient,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(), hub::Error> {
    for (config, etag) in &plan.put {
        let body: Configuration = match serde_json::from_value(config.clone()) {
            Ok(c) => c,
            Err(e) => {
                progress.failed.push(failure(
                    config["id"].as_str(),
                    "bad_configuration",
                    e.to_string(),
                ));
                continue;
            }
        };
        let if_match = match etag.as_deref() {
            None => IfMatch::Absent,
            Some("*") => IfMatch::Any,
            Some(e) => IfMatch::Etag(e.to_owned()),
        };
        let mut result = client.put_configuration(&body, &if_match).await.map(drop);
        if matches!(
            result,
            Err(hub::Error::AlreadyExists { .. } | hub::Error::PreconditionFailed { .. })
        ) && already_there(client, config).await
        {
            // An earlier try whose answer was lost made it (or it was made meanwhile): the
            // target holds what was wanted.
            result = Ok(());
        }
        record(result, &body.id, progress)?;
    }
    for (id, etag) in &plan.delete {
        let if_match = etag.clone().map_or(IfMatch::Any, IfMatch::Etag);
        record(
            client.delete_configuration(id, &if_match).await,
            id,
            progress,
        )?;
    }
    Ok(())
}

/// Whether the target already holds `wanted` as the restore would write it (read back and
/// compared in canonical form).
async fn already_there(client: &HubClient, wanted: &Value) -> bool {
    let Some(id) = wanted["id"].as_str() else {
        return false;
    };
    match client.get_configuration(id).await {
        Ok(found) => {
            serde_json::to_value(&found).is_ok_and(|v| canonical_configuration(&v) == *wanted)
        }
        Err(_) => false,
    }
}

fn record(
    result: Result<(), hub::Error>,
    id: &str,
    progress: &mut Progress,
) -> Result<(), hub::Error> {
    match result {
        Ok(()) => {
            progress.applied.configurations = progress.applied.configurations.saturating_add(1);
            Ok(())
        }
        Err(
            e @ (hub::Error::AlreadyExists { .. }
            | hub::Error::PreconditionFailed { .. }
            | hub::Error::NotFound { .. }
            | hub::Error::BadRequest { .. }
            | hub::Error::QuotaExceeded { .. }),
        ) => {
            progress
                .failed
                .push(failure(Some(id), e.code(), e.to_string()));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn failure(id: Option<&str>, code: &str, message: String) -> Failure {
    Failure {
        id: format!("configuration:{}", id.unwrap_or("<no id>")),
        code: code.to_owned(),
        message,
    }
}

/// Re-read the target's configurations and list what differs from `wanted`.
pub async fn verify(
    client: &HubClient,
    wanted: &[Value],
    mode: Mode,
) -> Result<Vec<Difference>, Error> {
    let have = live::configurations(client).await.map_err(Error::Target)?;
    let left = plan(
        wanted,
        &have,
        if mode == Mode::Mirror {
            Mode::Mirror
        } else {
            Mode::Upsert
        },
    );
    let mut out: Vec<Difference> = left
        .put
        .iter()
        .map(|(c, etag)| Difference {
            id: format!("configuration:{}", c["id"].as_str().unwrap_or_default()),
            problem: if etag.is_none() {
                Problem::Missing
            } else {
                Problem::Differs
            },
            aspects: vec!["configuration"],
        })
        .collect();
    out.extend(left.delete.iter().map(|(id, _)| Difference {
        id: format!("configuration:{id}"),
        problem: Problem::Extra,
        aspects: vec!["configuration"],
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configurations_plan_by_mode() {
        let wanted = vec![
            json!({"id": "a", "priority": 1}),
            json!({"id": "b", "priority": 2}),
            json!({"id": "c", "priority": 3}),
        ];
        let have = vec![
            (json!({"id": "b", "priority": 2}), Some("eb".to_owned())),
            (json!({"id": "c", "priority": 9}), Some("ec".to_owned())),
            (json!({"id": "z", "priority": 1}), Some("ez".to_owned())),
        ];
        let up = plan(&wanted, &have, Mode::Upsert);
        assert_eq!(up.put.len(), 2);
        assert_eq!(up.put[1].1.as_deref(), Some("ec"));
        assert_eq!(up.unchanged, 1);
        assert!(up.delete.is_empty());
        let mirror = plan(&wanted, &have, Mode::Mirror);
        assert_eq!(mirror.delete, [("z".to_owned(), Some("ez".to_owned()))]);
        // create: b, equal to the snapshot's, is done (a re-run after a half-failed create
        // converges); c differs: a conflict.
        let create = plan(&wanted, &have, Mode::Create);
        assert_eq!(create.put.len(), 1);
        assert_eq!(create.conflicts, 1);
        assert_eq!(create.unchanged, 1);
    }
}
