//! The failover journal, in the store so that `status` and a resume work from another machine.
//! One folder per run, `failover/{hub}/{run}/`: `plan.json` (the step list, fixed when the run
//! starts, so a resume executes the same steps even after an endpoint it re-creates is gone),
//! `step-NNN.json` per finished step (create-only, written after the step's ARM calls), and
//! `end.json` when the run completed. A run without `end.json` is resumed by the next `run`.
//! `samples-{session}-{NNNNN}.json` hold what the probes and health checks saw change (a series
//! starting, breaking, healing), one object per change, so that the report of a run resumed
//! after a crash still shows the outage from its start.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::Error;
use super::plan::{PastOperation, Route, Step, StepKind};
use super::probe::Samples;
use crate::store::Store;

/// What a run set out to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunPlan {
    #[serde(flatten)]
    pub route: Route,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Skipped,
    Failed,
}

/// One finished step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub index: usize,
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// What later steps need (the operation URL, the new endpoint).
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndRecord {
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A run as the journal holds it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub plan: RunPlan,
    pub done: BTreeMap<usize, StepRecord>,
    pub end: Option<EndRecord>,
    /// The changes of state that earlier processes of this run journalled.
    pub observed: Samples,
}

impl RunRecord {
    /// The first step not yet journalled.
    pub fn next_step(&self) -> Option<&Step> {
        self.plan
            .steps
            .iter()
            .enumerate()
            .find(|(i, _)| !self.done.contains_key(i))
            .map(|(_, s)| s)
    }

    pub fn data_of(&self, name: &str) -> Option<&Value> {
        self.done.values().find(|r| r.name == name).map(|r| &r.data)
    }
}

pub struct Journal {
    store: Arc<dyn Store>,
    hub: String,
}

impl Journal {
    pub fn new(store: Arc<dyn Store>, hub: &str) -> Self {
        Journal {
            store,
            hub: hub.to_owned(),
        }
    }

    fn prefix(&self) -> String {
        format!("failover/{}/", self.hub)
    }

    /// Every run of this hub, oldest first.
    pub async fn runs(&self) -> Result<Vec<RunRecord>, Error> {
        let listed = self.store.list(&self.prefix()).await?;
        let mut by_run: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in listed {
            let rest = &m.name[self.prefix().len()..];
            if let Some((run, file)) = rest.split_once('/') {
                by_run
                    .entry(run.to_owned())
                    .or_default()
                    .push(file.to_owned());
            }
        }
        let mut runs = Vec::new();
        for (id, files) in by_run {
            if !files.iter().any(|f| f == "plan.json") {
                continue;
            }
            let plan: RunPlan = self.read(&id, "plan.json").await?;
            let mut done = BTreeMap::new();
            for f in files.iter().filter(|f| f.starts_with("step-")) {
                let r: StepRecord = self.read(&id, f).await?;
                done.insert(r.index, r);
            }
            let mut observed = Samples::default();
            for f in files.iter().filter(|f| f.starts_with("samples-")) {
                observed.merge(&self.read::<Samples>(&id, f).await?);
            }
            let end = if files.iter().any(|f| f == "end.json") {
                Some(self.read(&id, "end.json").await?)
            } else {
                None
            };
            runs.push(RunRecord {
                id,
                plan,
                done,
                end,
                observed,
            });
        }
        Ok(runs)
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        run: &str,
        file: &str,
    ) -> Result<T, Error> {
        let name = format!("{}{run}/{file}", self.prefix());
        let bytes = self.store.get_bytes(&name).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Journal {
            name,
            detail: e.to_string(),
        })
    }

    async fn write<T: Serialize>(&self, run: &str, file: &str, value: &T) -> Result<(), Error> {
        let name = format!("{}{run}/{file}", self.prefix());
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Journal {
            name: name.clone(),
            detail: e.to_string(),
        })?;
        self.store.put(&name, Bytes::from(bytes)).await?;
        Ok(())
    }

    /// Start a run: its plan is written first.
    pub async fn begin(&self, plan: RunPlan) -> Result<RunRecord, Error> {
        let random: u16 = rand::random();
        let stamp = plan
            .started
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
            ))
            .unwrap_or_default();
        let id = format!("{stamp}-{random:04x}");
        self.write(&id, "plan.json", &plan).await?;
        Ok(RunRecord {
            id,
            plan,
            done: BTreeMap::new(),
            end: None,
            observed: Samples::default(),
        })
    }

    /// Journal changes the probes saw: object `seq` of process `session` of `run`.
    pub async fn record_samples(
        &self,
        run: &str,
        session: &str,
        seq: usize,
        changes: &Samples,
    ) -> Result<(), Error> {
        self.write(run, &format!("samples-{session}-{seq:05}.json"), changes)
            .await
    }

    pub async fn record(&self, run: &mut RunRecord, record: StepRecord) -> Result<(), Error> {
        self.write(&run.id, &format!("step-{:03}.json", record.index), &record)
            .await?;
        run.done.insert(record.index, record);
        Ok(())
    }

    pub async fn finish(
        &self,
        run: &mut RunRecord,
        status: &str,
        at: OffsetDateTime,
    ) -> Result<(), Error> {
        let end = EndRecord {
            status: status.to_owned(),
            at,
        };
        self.write(&run.id, "end.json", &end).await?;
        run.end = Some(end);
        Ok(())
    }
}

/// Failovers and failbacks hubvault requested (a journalled `request-failover` that was not
/// skipped), for Azure's limits.
pub fn past_operations(runs: &[RunRecord]) -> Vec<PastOperation> {
    runs.iter()
        .flat_map(|run| {
            run.plan.steps.iter().enumerate().filter_map(move |(i, s)| {
                let rec = run.done.get(&i)?;
                (matches!(s.kind, StepKind::RequestFailover { .. }) && rec.outcome == Outcome::Ok)
                    .then_some(PastOperation {
                        at: rec.start,
                        failback: run.plan.route.failback,
                    })
            })
        })
        .collect()
}

/// The region the hub was in before hubvault's first failover of it.
pub fn original_primary(runs: &[RunRecord]) -> Option<String> {
    runs.first().map(|r| r.plan.route.from.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use crate::failover::plan::{EventHubEndpoint, Variant};
    use crate::store::memory::MemoryStore;
    use time::macros::datetime;

    fn plan(to: &str, failback: bool, at: OffsetDateTime) -> RunPlan {
        let step = |name: &str, kind| Step {
            name: name.into(),
            kind,
        };
        RunPlan {
            route: Route {
                hub_id: "/x".into(),
                variant: Variant::Normal,
                from: "westus".into(),
                to: to.into(),
                failback,
                events_before: EventHubEndpoint::default(),
            },
            started: at,
            steps: vec![
                step("record-endpoint", StepKind::RecordEndpoint),
                step(
                    "request-failover",
                    StepKind::RequestFailover { region: to.into() },
                ),
                step("wait-failover", StepKind::WaitFailover),
            ],
        }
    }

    fn done(index: usize, name: &str, outcome: Outcome, at: OffsetDateTime) -> StepRecord {
        StepRecord {
            index,
            name: name.into(),
            outcome,
            detail: String::new(),
            start: at,
            end: at,
            data: Value::Null,
        }
    }

    #[tokio::test]
    async fn a_run_is_read_back_resumable_and_counts_once_requested() {
        let t0 = datetime!(2026-11-26 00:00 UTC);
        let journal = Journal::new(Arc::new(MemoryStore::new()), "hub-a");
        let mut first = journal.begin(plan("eastus", false, t0)).await.unwrap();
        journal
            .record(&mut first, done(0, "record-endpoint", Outcome::Ok, t0))
            .await
            .unwrap();
        // Killed here: the journal says where to resume, and no operation was requested yet.
        let runs = journal.runs().await.unwrap();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].end.is_none());
        assert_eq!(runs[0].next_step().unwrap().name, "request-failover");
        assert!(past_operations(&runs).is_empty());
        let mut resumed = runs[0].clone();
        let at = t0 + time::Duration::minutes(1);
        journal
            .record(&mut resumed, done(1, "request-failover", Outcome::Ok, at))
            .await
            .unwrap();
        journal
            .record(&mut resumed, done(2, "wait-failover", Outcome::Ok, at))
            .await
            .unwrap();
        journal.finish(&mut resumed, "completed", at).await.unwrap();
        let runs = journal.runs().await.unwrap();
        assert_eq!(runs[0].end.as_ref().unwrap().status, "completed");
        assert_eq!(
            past_operations(&runs),
            [PastOperation {
                at,
                failback: false
            }]
        );
        assert_eq!(original_primary(&runs).as_deref(), Some("westus"));
        // A request that was skipped (the hub was already there) is not an operation of ours.
        let mut second = journal.begin(plan("westus", true, at)).await.unwrap();
        journal
            .record(
                &mut second,
                done(1, "request-failover", Outcome::Skipped, at),
            )
            .await
            .unwrap();
        assert_eq!(past_operations(&journal.runs().await.unwrap()).len(), 1);
    }
}
