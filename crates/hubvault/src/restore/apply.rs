//! Turning a plan into import lines, pass by pass, and applying them with the bulk engine.
//!
//! Passes, in order, each for a reason:
//! 1. devices (creates and updates) — a module needs its device, a child's link needs its parent;
//! 2. modules;
//! 3. edge links still missing: a child whose parent was only just created gets the parent's
//!    scope **as the target hub generated it** (read back after pass 1; a scope copied from the
//!    source names another generation and is invalid here);
//! 4. deletes (`mirror`), last, so an interrupted restore has removed as little as possible.
//!
//! Updates and deletes are ETag-safe (`…IfMatchETag`) against the etag the plan read from the
//! target: something that changed on the target since planning fails visibly instead of being
//! overwritten blind. Link updates in pass 3 follow our own pass-1 write and carry no etag.
//!
//! Must not: read the snapshot or decide what differs (the plan did).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::bulk::{self, Failure};
use super::canonical;
use super::lines::{self, ImportMode};
use super::plan::{Action, Plan, SnapshotRecord, TargetRecord};
use crate::hub::HubClient;

/// What was applied, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    /// Edge parent/child links set after their parents existed.
    pub links: u64,
    pub configurations: u64,
}

impl Applied {
    pub fn total(&self) -> u64 {
        self.create
            .saturating_add(self.update)
            .saturating_add(self.delete)
            .saturating_add(self.links)
            .saturating_add(self.configurations)
    }
}

/// A child to link once its parent exists on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Index into the snapshot records.
    pub snapshot: usize,
    pub parent: String,
    pub is_edge: bool,
}

/// The import lines of each pass (lines hold keys: never print them).
#[derive(Default)]
pub struct Passes {
    pub devices: Vec<Value>,
    pub modules: Vec<Value>,
    pub links: Vec<Link>,
    pub deletes: Vec<Value>,
}

/// Build the passes for a plan (pure). `target` is the pre-restore read.
pub fn passes(plan: &Plan, snapshot: &[SnapshotRecord], target: &[TargetRecord]) -> Passes {
    let scopes: HashMap<&str, &str> = target
        .iter()
        .filter(|t| t.module_id.is_none())
        .filter_map(|t| Some((t.id.as_str(), t.own_scope.as_deref()?)))
        .collect();
    let deleted: std::collections::HashSet<&str> = plan
        .items
        .iter()
        .filter(|i| i.action == Action::Delete && i.module_id.is_none())
        .map(|i| i.id.as_str())
        .collect();
    // Each import line parses its record's export line: the heavy part, spread over threads.
    let mut prepared = super::in_parallel(&plan.items, |item| {
        let mode = match item.action {
            Action::Create => ImportMode::Create,
            Action::Update => ImportMode::Update,
            Action::Delete | Action::Unchanged => return None,
        };
        let record = &snapshot[item.snapshot?];
        lines::import_line(&record.line, mode).ok()
    });
    let mut out = Passes::default();
    for (item, prepared) in plan.items.iter().zip(prepared.iter_mut()) {
        match item.action {
            Action::Unchanged => {}
            Action::Delete => {
                let mut line = json!({"id": item.id, "importMode": "deleteIfMatchETag"});
                if let Some(m) = &item.module_id {
                    line["moduleId"] = json!(m);
                }
                if let Some(e) = &item.target_etag {
                    line["eTag"] = json!(e);
                } else {
                    line["importMode"] = json!("delete");
                }
                out.deletes.push(line);
            }
            Action::Create | Action::Update => {
                let Some(index) = item.snapshot else { continue };
                let record = &snapshot[index];
                let Some(mut line) = prepared.take() else {
                    continue;
                };
                if item.action == Action::Update
                    && let Some(e) = &item.target_etag
                {
                    line["importMode"] = json!("updateIfMatchETag");
                    line["eTag"] = json!(e);
                }
                if item.module_id.is_some() {
                    out.modules.push(line);
                    continue;
                }
                // The canonical form already holds the edge flag and the parent's id (the
                // export line is parsed once per record, not again here).
                let is_edge = canonical::is_edge(&record.canonical);
                if let Some(parent) = canonical::parent(&record.canonical).map(str::to_owned) {
                    match scopes.get(parent.as_str()) {
                        Some(scope) if !deleted.contains(parent.as_str()) => {
                            let keep = line["importMode"].clone();
                            line = lines::with_parent_scope(line, scope, is_edge);
                            line["importMode"] = keep;
                        }
                        _ => out.links.push(Link {
                            snapshot: index,
                            parent,
                            is_edge,
                        }),
                    }
                }
                out.devices.push(line);
            }
        }
    }
    out
}

/// Everything applied and failed so far; `stopped` carries a fatal error.
#[derive(Debug, Default)]
pub struct Progress {
    pub applied: Applied,
    pub failed: Vec<Failure>,
    pub throttled: u64,
}

/// Apply the passes with the bulk engine. On a fatal error, returns it with the progress so far.
pub async fn run_bulk(
    client: &HubClient,
    passes: Passes,
    snapshot: &[SnapshotRecord],
    progress: &mut Progress,
    timeline: &crate::timeline::Timeline,
) -> Result<(), crate::hub::Error> {
    let Passes {
        devices,
        modules,
        links,
        deletes,
    } = passes;
    for batch in [devices, modules] {
        let kinds: HashMap<String, Kind> = batch
            .iter()
            .map(|l| (bulk::entry_key(l), kind_of(l)))
            .collect();
        settle(bulk::apply(client, batch).await, progress, |k| {
            kinds.get(k).copied().unwrap_or(Kind::Update)
        })?;
    }
    if !links.is_empty() {
        timeline.begin("links");
    }
    let lines = link_lines(client, &links, snapshot, &mut progress.failed).await?;
    settle(bulk::apply(client, lines).await, progress, |_| Kind::Link)?;
    settle(bulk::apply(client, deletes).await, progress, |_| {
        Kind::Delete
    })?;
    Ok(())
}

/// Read each new parent's scope as the target generated it, and build the child's link line.
pub async fn link_lines(
    client: &HubClient,
    links: &[Link],
    snapshot: &[SnapshotRecord],
    failed: &mut Vec<Failure>,
) -> Result<Vec<Value>, crate::hub::Error> {
    let mut parents: Vec<String> = links.iter().map(|l| l.parent.clone()).collect();
    parents.sort_unstable();
    parents.dedup();
    // One query for many parents, paced single reads for a few (see `live::parent_scopes`).
    let scopes = super::live::parent_scopes(client, &parents).await?;
    let mut out = Vec::new();
    for link in links {
        let record = &snapshot[link.snapshot];
        let Some(Some(scope)) = scopes.get(&link.parent) else {
            failed.push(Failure {
                id: record.id.clone(),
                code: "parent_missing".into(),
                message: format!(
                    "parent edge device {} is not on the target; restore it too (check --only)",
                    link.parent
                ),
            });
            continue;
        };
        if let Ok(line) = lines::import_line(&record.line, ImportMode::Update) {
            out.push(lines::with_parent_scope(line, scope, link.is_edge));
        }
    }
    Ok(out)
}

/// What an import line does, by its `importMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Update,
    Link,
    Delete,
}

pub fn kind_of(line: &Value) -> Kind {
    match line["importMode"].as_str().unwrap_or_default() {
        "create" => Kind::Create,
        m if m.starts_with("delete") => Kind::Delete,
        _ => Kind::Update,
    }
}

/// Count one applied line.
pub fn count(applied: &mut Applied, kind: Kind) {
    match kind {
        Kind::Create => applied.create = applied.create.saturating_add(1),
        Kind::Update => applied.update = applied.update.saturating_add(1),
        Kind::Link => applied.links = applied.links.saturating_add(1),
        Kind::Delete => applied.delete = applied.delete.saturating_add(1),
    }
}

/// Fold a bulk outcome into the progress; a fatal error is passed on after counting.
pub fn settle(
    result: Result<bulk::Outcome, bulk::Stopped>,
    progress: &mut Progress,
    kind: impl Fn(&str) -> Kind,
) -> Result<(), crate::hub::Error> {
    let (outcome, error) = match result {
        Ok(o) => (o, None),
        Err(s) => (s.outcome, Some(s.error)),
    };
    for key in &outcome.applied {
        count(&mut progress.applied, kind(key));
    }
    progress.failed.extend(outcome.failed);
    progress.throttled = progress.throttled.saturating_add(outcome.throttled);
    error.map_or(Ok(()), Err)
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
    use crate::restore::plan::{Mode, Scope, plan};

    #[allow(
        clippy::needless_pass_by_value,
        reason = "test helper taking json! literals"
    )]
    fn snap(line: Value) -> SnapshotRecord {
        SnapshotRecord {
            id: line["id"].as_str().unwrap().into(),
            module_id: line
                .get("moduleId")
                .and_then(Value::as_str)
                .map(str::to_owned),
            line: serde_json::to_vec(&line).unwrap(),
            canonical: canonical::from_export_line(&line, true),
        }
    }

    #[test]
    fn children_link_to_the_targets_own_scopes() {
        let s = vec![
            snap(
                json!({"id": "gw-new", "status": "enabled", "capabilities": {"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://gw-new-1"}),
            ),
            snap(
                json!({"id": "gw-old", "status": "enabled", "capabilities": {"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://gw-old-1"}),
            ),
            snap(
                json!({"id": "leaf-a", "status": "enabled", "deviceScope": "ms-azure-iot-edge://gw-new-1", "eTag": "c3Jj"}),
            ),
            snap(
                json!({"id": "leaf-b", "status": "enabled", "deviceScope": "ms-azure-iot-edge://gw-old-1"}),
            ),
            snap(
                json!({"id": "nested", "status": "enabled", "capabilities": {"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://nested-1", "parentScopes": ["ms-azure-iot-edge://gw-new-1"]}),
            ),
        ];
        let t = vec![TargetRecord {
            id: "gw-old".into(),
            module_id: None,
            canonical: canonical::from_twin(
                &json!({"deviceId": "gw-old", "status": "enabled", "capabilities": {"iotEdge": true}}),
            ),
            keys_known: false,
            etag: Some("T1".into()),
            own_scope: Some("ms-azure-iot-edge://gw-old-777".into()),
        }];
        let p = plan(&s, &t, Mode::Upsert, &Scope::default());
        let passes = passes(&p, &s, &t);
        let by_id: HashMap<&str, &Value> = passes
            .devices
            .iter()
            .map(|l| (l["id"].as_str().unwrap(), l))
            .collect();
        assert_eq!(
            by_id["leaf-b"]["deviceScope"],
            "ms-azure-iot-edge://gw-old-777"
        );
        assert_eq!(by_id["leaf-b"]["importMode"], "create");
        assert!(by_id["leaf-a"].get("deviceScope").is_none());
        assert!(
            by_id["leaf-a"].get("eTag").is_none(),
            "source etags never travel"
        );
        assert_eq!(
            passes.links,
            [
                Link {
                    snapshot: 2,
                    parent: "gw-new".into(),
                    is_edge: false
                },
                Link {
                    snapshot: 4,
                    parent: "gw-new".into(),
                    is_edge: true
                }
            ]
        );
        assert!(
            by_id["nested"].get("parentScopes").is_none(),
            "linked in the second pass"
        );
    }

    #[test]
    fn updates_and_deletes_carry_the_targets_etags() {
        let s = vec![snap(
            json!({"id": "a", "status": "disabled", "eTag": "source"}),
        )];
        let live = |id: &str| TargetRecord {
            id: id.into(),
            module_id: None,
            canonical: canonical::from_twin(&json!({"deviceId": id, "status": "enabled"})),
            keys_known: false,
            etag: Some(format!("target-{id}")),
            own_scope: None,
        };
        let t = vec![live("a"), live("z")];
        let p = plan(&s, &t, Mode::Mirror, &Scope::default());
        let passes = passes(&p, &s, &t);
        assert_eq!(passes.devices[0]["importMode"], "updateIfMatchETag");
        assert_eq!(passes.devices[0]["eTag"], "target-a");
        assert_eq!(
            passes.deletes,
            [json!({"id": "z", "importMode": "deleteIfMatchETag", "eTag": "target-z"})]
        );
    }
}
