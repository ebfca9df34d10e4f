//! One step's ARM calls and waits. Every step is idempotent: a DELETE of what is gone is fine, a
//! PUT of what exists converges, a failover request is skipped when the hub is already in the
//! target region — so a run killed anywhere is finished by the next one.

use std::time::Duration;

use serde_json::{Value, json};

use super::journal::{Outcome, RunRecord};
use super::observe::{EventHubEndpoint, hub_doc, hub_facts};
use super::probe::{self, ProbeDevice};
use super::request::RunRequest;
use super::steps::{Step, StepKind};
use super::{Error, region_key};
use crate::arm::{Answer, ArmCall};
use crate::device::telemetry;

pub(super) type StepDone = (Outcome, String, Value);

pub(super) async fn do_step(
    req: &RunRequest<'_>,
    run: &RunRecord,
    step: &Step,
    probe: Option<&(String, String)>,
) -> Result<StepDone, Error> {
    let hub_id = run.plan.route.hub_id.as_str();
    match &step.kind {
        StepKind::RecordEndpoint => {
            let events = hub_facts(&hub_doc(req.arm, hub_id).await?).events;
            Ok((Outcome::Ok, describe(&events), json!(events)))
        }
        StepKind::RequestFailover { region } => request_failover(req, step, hub_id, region).await,
        StepKind::WaitFailover => wait_operation(req, run).await,
        StepKind::WaitHub => wait_hub(req, hub_id, probe).await,
        StepKind::ReadEndpoint => {
            let facts = hub_facts(&hub_doc(req.arm, hub_id).await?);
            if region_key(&facts.primary) != run.plan.route.to {
                return Err(Error::Hub {
                    hub: req.hub.to_owned(),
                    message: format!(
                        "after the failover the primary region is {}, not {}",
                        facts.primary, run.plan.route.to
                    ),
                });
            }
            Ok((Outcome::Ok, describe(&facts.events), json!(facts.events)))
        }
        StepKind::CreateEndpoint { spec } => create_endpoint(req, step, hub_id, &spec.id).await,
        StepKind::DeleteEndpoint { .. } | StepKind::Unlink { .. } | StepKind::Link { .. } => {
            for call in step.calls(hub_id) {
                let answer = req.arm.send(&call).await?;
                settle(req, answer, &call).await?;
            }
            Ok((
                Outcome::Ok,
                format!("{} call(s) made", step.calls(hub_id).len()),
                Value::Null,
            ))
        }
        StepKind::RemoveWhenPossible { id } => {
            let call = &step.calls(hub_id)[..];
            let answer = req.arm.send(&call[0]).await?;
            if answer.is_success() {
                Ok((Outcome::Ok, format!("removed {id}"), Value::Null))
            } else {
                Ok((
                    Outcome::Skipped,
                    format!(
                        "not removed now ({}): delete {id} when its region is back",
                        answer.message()
                    ),
                    Value::Null,
                ))
            }
        }
        StepKind::ConsumerSettings { .. } => {
            let after = run.data_of("read-endpoint").cloned().unwrap_or(Value::Null);
            let (detail, data) = super::settings::write(req, &after).await?;
            Ok((Outcome::Ok, detail, data))
        }
        StepKind::WaitConsumers => wait_consumers(req).await,
    }
}

/// PUT the endpoint and its zone group. A connection the hub has not approved leaves the
/// endpoint `Pending` (the caller lacks approval rights on the hub): said, not hidden.
async fn create_endpoint(
    req: &RunRequest<'_>,
    step: &Step,
    hub_id: &str,
    id: &str,
) -> Result<StepDone, Error> {
    let mut pending = None;
    for call in step.calls(hub_id) {
        let answer = req.arm.send(&call).await?;
        let state = answer.body.pointer(
            "/properties/privateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status",
        );
        if let Some(status) = state.and_then(Value::as_str)
            && !status.eq_ignore_ascii_case("Approved")
        {
            pending = Some(status.to_owned());
        }
        settle(req, answer, &call).await?;
    }
    let name = super::name_of(id);
    let Some(status) = pending else {
        return Ok((
            Outcome::Ok,
            format!("created {name} with its zone group"),
            Value::Null,
        ));
    };
    if !req.entry.approve_connections {
        return Ok((
            Outcome::Failed,
            format!(
                "created {name}, but its connection is {status}: approve it on the hub (Private endpoint connections), or set approve-connections = true in [failover.{}] with Microsoft.Devices/IotHubs/privateEndpointConnections/write, and run again",
                req.hub
            ),
            Value::Null,
        ));
    }
    let connection = approve(req, hub_id, id).await?;
    Ok((
        Outcome::Ok,
        format!("created {name}; its {status} connection {connection} approved on the hub"),
        Value::Null,
    ))
}

/// `PUT {hub}/privateEndpointConnections/{name}` with `status: Approved`
/// (`PrivateEndpointConnections_Update`), for the hub's connection from endpoint `pe_id`; then
/// the endpoint must show `Approved`. Returns the connection's name.
async fn approve(req: &RunRequest<'_>, hub_id: &str, pe_id: &str) -> Result<String, Error> {
    let hub = hub_doc(req.arm, hub_id).await?;
    let connection = hub["properties"]["privateEndpointConnections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| {
            c["properties"]["privateEndpoint"]["id"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(pe_id))
        })
        .and_then(|c| c["name"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::Hub {
            hub: req.hub.to_owned(),
            message: format!(
                "the hub lists no connection from {pe_id}; approve it in the portal (Networking, Private endpoint connections) and run again"
            ),
        })?;
    let call = super::steps::approve_call(hub_id, &connection, req.hub);
    let answer = req.arm.send(&call).await?;
    settle(req, answer, &call).await?;
    let pe = req
        .arm
        .send(&ArmCall::new("GET", pe_id, crate::arm::NETWORK_API_VERSION))
        .await?
        .success(pe_id)?;
    let now = pe.body.pointer(
        "/properties/privateLinkServiceConnections/0/properties/privateLinkServiceConnectionState/status",
    );
    match now.and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("Approved") => Ok(connection),
        other => Err(Error::Hub {
            hub: req.hub.to_owned(),
            message: format!(
                "connection {connection} was approved on the hub, but {} still shows {}; run `hubvault failover run` again",
                super::name_of(pe_id),
                other.unwrap_or("no state")
            ),
        }),
    }
}

fn describe(e: &EventHubEndpoint) -> String {
    format!("endpoint {} path {}", e.endpoint, e.path)
}

/// A 2xx answer; a long-running one is polled to its end.
async fn settle(req: &RunRequest<'_>, answer: Answer, call: &ArmCall) -> Result<(), Error> {
    let answer = answer.success(&call.path)?;
    if answer.status == 202
        && let Some(op) = &answer.operation
    {
        poll_operation(req, op).await?;
    }
    Ok(())
}

async fn request_failover(
    req: &RunRequest<'_>,
    step: &Step,
    hub_id: &str,
    region: &str,
) -> Result<StepDone, Error> {
    let facts = hub_facts(&hub_doc(req.arm, hub_id).await?);
    if region_key(&facts.primary) == region_key(region) {
        return Ok((
            Outcome::Skipped,
            format!("the hub is already in {region}"),
            Value::Null,
        ));
    }
    let call = &step.calls(hub_id)[0];
    let answer = req
        .arm
        .send(call)
        .await?
        .success(&format!("{hub_id}/failover"))?;
    Ok((
        Outcome::Ok,
        format!("failover to {region} accepted (HTTP {})", answer.status),
        json!({"operation": answer.operation}),
    ))
}

/// Poll an `Azure-AsyncOperation` URL with backoff until it ends.
async fn poll_operation(req: &RunRequest<'_>, url: &str) -> Result<String, Error> {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        let answer = req.arm.poll(url).await?;
        let status = answer.body["status"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| (answer.status == 200).then(|| "Succeeded".to_owned()));
        match status.as_deref() {
            Some("Succeeded") => return Ok("Succeeded".into()),
            Some(s @ ("Failed" | "Canceled")) => {
                return Err(Error::Hub {
                    hub: req.hub.to_owned(),
                    message: format!("the operation ended {s}: {}", answer.message()),
                });
            }
            _ => {}
        }
        if started.elapsed() > req.timeouts.operation {
            return Err(Error::Hub {
                hub: req.hub.to_owned(),
                message: format!(
                    "the operation did not end within {:?}; run `hubvault failover run` again to keep waiting",
                    req.timeouts.operation
                ),
            });
        }
        tokio::time::sleep(wait).await;
        // Backoff, but never so slow that the timeline's "failover operation" overshoots the
        // operation by much: at most four sampling ticks (4 s by default), at least 1 s.
        let cap = req
            .timeouts
            .tick
            .saturating_mul(4)
            .max(Duration::from_secs(1));
        wait = wait.saturating_mul(2).min(cap);
    }
}

async fn wait_operation(req: &RunRequest<'_>, run: &RunRecord) -> Result<StepDone, Error> {
    let url = run
        .data_of("request-failover")
        .and_then(|d| d["operation"].as_str())
        .map(str::to_owned);
    let Some(url) = url else {
        return Ok((
            Outcome::Skipped,
            "no operation to wait for (the request was skipped)".into(),
            Value::Null,
        ));
    };
    let status = poll_operation(req, &url).await?;
    Ok((Outcome::Ok, format!("operation {status}"), Value::Null))
}

/// Until the data plane answers again (a probe's message is accepted), or the hub is `Active`.
async fn wait_hub(
    req: &RunRequest<'_>,
    hub_id: &str,
    probe: Option<&(String, String)>,
) -> Result<StepDone, Error> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < req.timeouts.operation {
        let up = match (probe, &req.device_target) {
            (Some((id, key)), Some(target)) => {
                matches!(telemetry::send(&req.http, target, id, key, br#"{"probe":"wait"}"#).await, Ok(s) if (200..300).contains(&s))
            }
            _ => hub_doc(req.arm, hub_id).await?["properties"]["state"] == "Active",
        };
        if up {
            return Ok((
                Outcome::Ok,
                format!(
                    "the hub answered after {:.1}s",
                    started.elapsed().as_secs_f64()
                ),
                Value::Null,
            ));
        }
        tokio::time::sleep(req.timeouts.tick.min(Duration::from_millis(250))).await;
    }
    Err(Error::Hub {
        hub: req.hub.to_owned(),
        message: "the hub did not answer again in time; run `hubvault failover run` again".into(),
    })
}

async fn wait_consumers(req: &RunRequest<'_>) -> Result<StepDone, Error> {
    let mut details = Vec::new();
    let mut worst = Outcome::Ok;
    for c in &req.entry.consumers {
        let started = tokio::time::Instant::now();
        let healthy = loop {
            match probe::consumer_healthy(&req.http, c).await {
                None => break None,
                Some(true) => break Some(true),
                Some(false) if started.elapsed() > req.timeouts.consumers => break Some(false),
                Some(false) => {
                    tokio::time::sleep(req.timeouts.tick.min(Duration::from_millis(250))).await;
                }
            }
        };
        match healthy {
            None => {
                details.push(format!("{}: not measured (no health check)", c.name));
                worst = Outcome::Skipped.max_with(worst);
            }
            Some(true) => details.push(format!("{}: healthy", c.name)),
            Some(false) => {
                details.push(format!(
                    "{}: still unhealthy after {:?}",
                    c.name, req.timeouts.consumers
                ));
                worst = Outcome::Failed;
            }
        }
    }
    Ok((worst, details.join("; "), Value::Null))
}

impl Outcome {
    fn max_with(self, other: Outcome) -> Outcome {
        if other == Outcome::Failed {
            other
        } else {
            self
        }
    }
}

impl ProbeDevice {
    /// The probe's id and key, for `wait-hub`.
    pub(super) fn key_for_wait(&self) -> String {
        self.key.clone()
    }
}
