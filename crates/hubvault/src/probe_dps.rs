//! The device probe through DPS (`drill --via-dps`): the DR path of DPS fleets. The sampled
//! devices get individual enrollments in the drill's DPS instance (registration id = device id,
//! their own keys, `iotHubs` = the drill hub), register through the device registration API
//! with their original keys, must be assigned to the drill hub, and send one message there.
//!
//! A production DPS stays safe: the probe never modifies an enrollment it did not create. An
//! enrollment with the same id that already points at the drill hub is used as it is (and left
//! in place); one that points elsewhere fails that device's probe, named. `--cleanup` deletes
//! only the enrollments the probe created ([`Enrolled::created`]).
//!
//! Owns: the link check, the probe's enrollments, registration and the per-device verdict.
//! Must not: print, or let a key out (errors carry DPS's status and message, never a key).

use std::collections::BTreeMap;

use base64::Engine as _;
use rand::RngCore as _;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::arm::ArmClient;
use crate::device::register::{self, DeviceKey, Provisioning, Registration};
use crate::device::telemetry::{self, DeviceTarget};
use crate::diagnostic::{Diagnostic, fix_text};
use crate::dps::{BulkMode, DpsClient, Kind};
use crate::enroll::{self, FromDevice};
use crate::hub;
use crate::probe::{self, Attempt, Candidate, Choice, ProbeReport};
use crate::redact::redact;
use crate::restore::plan::SnapshotRecord;

/// The DPS instance the probe goes through.
pub struct ViaDps<'a> {
    /// How messages name it (`dps-drill`).
    pub name: String,
    pub client: DpsClient,
    /// Where devices register (its ID scope and device endpoint).
    pub provisioning: Provisioning,
    /// ARM and the instance's resource id, to read its linked hubs.
    pub arm: Option<(&'a ArmClient, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "DPS {dps} is not linked to the drill hub {hub}: it could not assign the probe devices \
         there ({detail}). Nothing was changed. {}",
        fix_text(self)
    )]
    NotLinked {
        dps: String,
        hub: String,
        detail: String,
    },
    #[error(
        "cannot check DPS {dps}'s linked hubs: {detail}. Nothing was changed. {}",
        fix_text(self)
    )]
    Unreadable { dps: String, detail: String },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotLinked { .. } => "drill_dps_hub_not_linked",
            Error::Unreadable { .. } => "drill_dps_unreadable",
        }
    }

    fn fix(&self) -> Option<String> {
        Some(match self {
            Error::NotLinked { dps, hub, .. } => format!(
                "link the drill hub first: az iot dps linked-hub create --dps-name {dps} \
                 --resource-group … --hub-name {}, or name a DPS linked to it with --via-dps",
                hub.split('.').next().unwrap_or(hub)
            ),
            Error::Unreadable { .. } => "check the [dps.NAME] connection string and that the \
                 DPS instance is reachable (hubvault preflight --to-dps NAME)"
                .to_owned(),
        })
    }
}

/// Whether `hub` (a host name) is linked to the instance, before the drill writes anything:
/// through ARM when `[arm]` and the DPS entry's `resource-id` are configured; else by creating
/// one disabled enrollment naming the hub (which DPS refuses for an unlinked hub) and deleting
/// it at once.
pub async fn check_linked(via: &ViaDps<'_>, hub: &str) -> Result<(), Error> {
    let not_linked = |detail: String| Error::NotLinked {
        dps: via.name.clone(),
        hub: hub.to_owned(),
        detail,
    };
    let unreadable = |e: &dyn std::fmt::Display| Error::Unreadable {
        dps: via.name.clone(),
        detail: redact(&e.to_string()),
    };
    if let Some((arm, id)) = &via.arm {
        let description = arm.dps_description(id).await.map_err(|e| unreadable(&e))?;
        let linked = &description.linked_hubs;
        if linked.iter().any(|l| l.eq_ignore_ascii_case(hub)) {
            return Ok(());
        }
        return Err(not_linked(format!(
            "linked hubs read through ARM: {}",
            if linked.is_empty() {
                "none".to_owned()
            } else {
                linked.join(", ")
            }
        )));
    }
    let id = format!("hubvault-drill-link-check-{:08x}", rand::random::<u32>());
    let check = json!({"registrationId": id, "attestation": symmetric(&random_key(), &random_key()),
        "iotHubs": [hub], "iotHubHostName": hub, "provisioningStatus": "disabled"});
    let refused = via
        .client
        .bulk(
            Kind::Individual,
            BulkMode::Create,
            std::slice::from_ref(&check),
        )
        .await
        .map_err(|e| unreadable(&e))?;
    if let Some(r) = refused.first() {
        return Err(not_linked(format!(
            "DPS refused an enrollment naming it: {} {}",
            r.code, r.status
        )));
    }
    via.client
        .bulk(Kind::Individual, BulkMode::Delete, &[check])
        .await
        .map_err(|e| unreadable(&e))?;
    Ok(())
}

/// What the probe enrolled.
#[derive(Debug, Default)]
pub struct Enrolled {
    /// Enrollments the probe created (what `--cleanup` deletes), as sent.
    created: Vec<(String, Value)>,
    /// Devices that cannot be probed, and why.
    failed: BTreeMap<String, String>,
}

impl Enrolled {
    /// Registration ids of the enrollments the probe created.
    pub fn created(&self) -> Vec<String> {
        self.created.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// Give every candidate an enrollment pointing at `hub` with its own keys (or use one that
/// already does); never touch an enrollment pointing elsewhere.
pub async fn enroll(
    via: &ViaDps<'_>,
    hub: &str,
    records: &[SnapshotRecord],
    choice: &Choice,
) -> Enrolled {
    let mut out = Enrolled::default();
    let mut create = Vec::new();
    for c in &choice.candidates {
        match via.client.get(Kind::Individual, &c.id).await {
            Ok(Some(existing)) => {
                let hubs = hubs_of(&existing);
                if !hubs.iter().any(|h| h.eq_ignore_ascii_case(hub)) {
                    out.failed.insert(c.id.clone(), format!(
                        "DPS {} already has an enrollment {} that points at {}; the drill never \
                         modifies enrollments it did not create: drill through a DPS without it \
                         (a DPS kept for drills), or point that enrollment at {hub} yourself",
                        via.name,
                        c.id,
                        if hubs.is_empty() { "no hub".to_owned() } else { hubs.join(", ") }
                    ));
                }
            }
            Ok(None) => match wanted(records, c, hub) {
                Ok(body) => create.push((c.id.clone(), body)),
                Err(why) => {
                    out.failed.insert(c.id.clone(), why);
                }
            },
            Err(e) => {
                out.failed.insert(c.id.clone(), unreachable(&via.name, &e));
            }
        }
    }
    let bodies: Vec<Value> = create.iter().map(|(_, b)| b.clone()).collect();
    match via
        .client
        .bulk(Kind::Individual, BulkMode::Create, &bodies)
        .await
    {
        Ok(refused) => {
            for (id, body) in create {
                match refused.iter().find(|r| r.id == id) {
                    Some(r) => {
                        out.failed.insert(id, format!(
                            "DPS {} refused its enrollment ({} {}); run hubvault preflight --to-dps {}",
                            via.name, r.code, r.status, via.name
                        ));
                    }
                    None => out.created.push((id, body)),
                }
            }
        }
        Err(e) => {
            for (id, _) in create {
                out.failed.insert(id, unreachable(&via.name, &e));
            }
        }
    }
    out
}

/// The individual enrollment of a candidate: registration id = device id, its own keys,
/// `iotHubs` = the drill hub.
fn wanted(records: &[SnapshotRecord], c: &Candidate, hub: &str) -> Result<Value, String> {
    let line = records
        .iter()
        .find(|r| r.id == c.id && r.module_id.is_none())
        .and_then(|r| serde_json::from_slice::<Value>(&r.line).ok())
        .ok_or_else(|| "its record could not be read from the snapshot".to_owned())?;
    let w = match enroll::device_enrollment(&line, hub) {
        FromDevice::Enrollment(w) | FromDevice::Child(w, _) => w,
        FromDevice::Skipped(s) => return Err(format!("not enrollable: {}", s.reason)),
        FromDevice::Module => return Err("a module is not enrollable".to_owned()),
    };
    let mut body = w.enrollment;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("attestation".into(), w.attestation);
        obj.insert("iotHubs".into(), json!([hub]));
        obj.insert("allocationPolicy".into(), json!("static"));
    }
    Ok(body)
}

/// Host names an enrollment names (`iotHubs`, else `iotHubHostName`).
fn hubs_of(enrollment: &Value) -> Vec<String> {
    let mut hubs: Vec<String> = enrollment
        .get("iotHubs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if hubs.is_empty() {
        hubs.extend(
            enrollment
                .get("iotHubHostName")
                .and_then(Value::as_str)
                .map(str::to_owned),
        );
    }
    hubs
}

fn unreachable(dps: &str, e: &hub::Error) -> String {
    format!(
        "DPS {dps} did not answer: {}; check it is reachable (hubvault preflight --to-dps {dps})",
        redact(&e.to_string())
    )
}

/// Register every enrolled candidate with its own key, check DPS assigned it to the drill hub
/// (`target`), and send one message there; the report per kind, `via_dps` set.
pub async fn run(
    http: &reqwest::Client,
    via: &ViaDps<'_>,
    target: &DeviceTarget,
    choice: &Choice,
    enrolled: &Enrolled,
) -> ProbeReport {
    let tries = choice.candidates.iter().map(|c| async move {
        let attempt = match enrolled.failed.get(&c.id) {
            Some(why) => Attempt {
                error: Some(why.clone()),
                ..Attempt::default()
            },
            None => one(http, via, target, c).await,
        };
        (c, attempt, OffsetDateTime::now_utc())
    });
    let answers = futures::future::join_all(tries).await;
    let mut report = probe::tally(choice, &answers);
    report.via_dps = Some(via.name.clone());
    report
}

/// One device: register, check the assignment, send a message to the assigned hub.
async fn one(
    http: &reqwest::Client,
    via: &ViaDps<'_>,
    target: &DeviceTarget,
    c: &Candidate,
) -> Attempt {
    let dps = &via.name;
    let fail = |why: String| Attempt {
        error: Some(why),
        ..Attempt::default()
    };
    let Some(key) = c.key() else {
        return fail(format!(
            "an X.509 device: registering it through DPS {dps} with its certificate is not built"
        ));
    };
    let registration =
        match register::register(http, &via.provisioning, &c.id, DeviceKey::Own(key)).await {
            Ok(r) => r,
            Err(e) => return fail(unreachable(dps, &e)),
        };
    let assignment = match registration {
        Registration::Assigned(a) => a,
        Registration::NotAssigned {
            status,
            code,
            message,
        } => {
            return fail(format!(
                "DPS {dps} did not assign it: {status}{}{}; check its enrollment is enabled \
                 (a disabled enrollment is never assigned)",
                code.map(|c| format!(" {c}")).unwrap_or_default(),
                message
                    .map(|m| format!(" ({})", redact(&m)))
                    .unwrap_or_default()
            ));
        }
        Registration::Refused {
            http_status,
            code,
            message,
        } => {
            return fail(format!(
                "DPS {dps} refused its registration: {http_status}{} {}; the enrollment's key \
                 must be the device's own (an enrollment the drill did not create may hold another)",
                code.map(|c| format!(" {c}")).unwrap_or_default(),
                redact(&message)
            ));
        }
        Registration::StillAssigning { operation_id } => {
            return fail(format!(
                "DPS {dps} was still assigning it (operation {operation_id}) when the probe \
                 stopped waiting; run the drill again, or check DPS's health"
            ));
        }
    };
    let mut attempt = Attempt {
        assigned_hub: Some(assignment.hub.clone()),
        assigned_device_id: Some(assignment.device_id.clone()),
        ..Attempt::default()
    };
    if !assignment.hub.eq_ignore_ascii_case(&target.host) || assignment.device_id != c.id {
        attempt.error = Some(format!(
            "DPS {dps} assigned it to {} as {}, not to the drill hub {} as {}; check the \
             enrollment's iotHubs and allocation policy",
            assignment.hub, assignment.device_id, target.host, c.id
        ));
        return attempt;
    }
    let body = json!({"hubvault": "probe", "via_dps": dps}).to_string();
    match telemetry::send(http, target, &assignment.device_id, key, body.as_bytes()).await {
        Ok(s) => attempt.status = Some(s),
        Err(e) => attempt.error = Some(redact(&e.to_string())),
    }
    attempt
}

/// Delete the enrollments the probe created; how many were deleted (what could not be is added
/// to `could_not`).
pub async fn cleanup(via: &ViaDps<'_>, enrolled: &Enrolled, could_not: &mut Vec<String>) -> usize {
    let bodies: Vec<Value> = enrolled.created.iter().map(|(_, b)| b.clone()).collect();
    if bodies.is_empty() {
        return 0;
    }
    match via
        .client
        .bulk(Kind::Individual, BulkMode::Delete, &bodies)
        .await
    {
        Ok(refused) => {
            could_not.extend(refused.iter().map(|r| {
                format!(
                    "delete enrollment {} in DPS {}: {} {}",
                    r.id, via.name, r.code, r.status
                )
            }));
            bodies.len().saturating_sub(refused.len())
        }
        Err(e) => {
            could_not.push(format!(
                "delete the {} enrollment(s) the drill created in DPS {}: {}",
                bodies.len(),
                via.name,
                redact(&e.to_string())
            ));
            0
        }
    }
}

fn symmetric(primary: &str, secondary: &str) -> Value {
    json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}})
}

fn random_key() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn an_enrollment_names_its_hubs_by_iot_hubs_else_its_host_name() {
        let both = json!({"iotHubs": ["hub-drill.azure-devices.net"],
                          "iotHubHostName": "hub-a.azure-devices.net"});
        assert_eq!(hubs_of(&both), ["hub-drill.azure-devices.net"]);
        let old = json!({"iotHubHostName": "hub-a.azure-devices.net"});
        assert_eq!(hubs_of(&old), ["hub-a.azure-devices.net"]);
        assert!(hubs_of(&json!({})).is_empty());
    }

    #[test]
    fn an_unlinked_hub_is_refused_with_the_command_that_links_it() {
        let e = Error::NotLinked {
            dps: "dps-drill".into(),
            hub: "hub-drill.azure-devices.net".into(),
            detail: "linked hubs read through ARM: none".into(),
        };
        let text = e.to_string();
        assert!(text.contains("Nothing was changed"), "{text}");
        assert!(
            e.fix().unwrap().contains("--dps-name dps-drill")
                && text.contains("--hub-name hub-drill,"),
            "{text}"
        );
        assert_eq!(e.code(), "drill_dps_hub_not_linked");
    }
}
