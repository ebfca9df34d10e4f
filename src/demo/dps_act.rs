//! The demo's DPS act: a fleet provisioned through DPS survives the loss of its hub. dps-a's
//! enrollments point at hub-a and a few devices are provisioned there; dps-a is backed up (keys
//! included); hub-a is "lost"; the snapshot's enrollments are retargeted at hub-b (`restore
//! --dps dps-a --to-dps dps-a --map-hub hub-a=hub-b --mode upsert`); the devices register
//! again with the keys they always had, land on hub-b and send a message hub-b accepts.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::world::World;
use super::{Error, Story};
use hubvault::backup::{self, BackupOptions};
use hubvault::device::register::{self, DeviceKey, Registration};
use hubvault::dps::{BulkMode, Kind};
use hubvault::enroll::{self, EnrollOptions};
use hubvault::restore::plan::Mode;

const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";
/// Enrollments of the act, and how many of them act as devices.
const ENROLLED: usize = 120;
const DEVICES: usize = 5;

/// Where the act's keys come from (base64 of "hubvault-demo-dps-act-seed-key!").
const SEED: &str = "aHVidmF1bHQtZGVtby1kcHMtYWN0LXNlZWQta2V5IQ==";

/// A key a device of the act was given: 32 bytes, base64, the same every time it is asked for.
fn key(n: usize) -> String {
    register::derive_group_key(SEED, &format!("demo-key-{n}")).unwrap_or_default()
}

fn meter(n: usize) -> String {
    format!("meter-{n:04}")
}

fn step_error(step: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Step {
        step,
        detail: e.to_string(),
    }
}

pub(super) async fn tell(story: &mut Story<'_>, world: &World) -> Result<(), Error> {
    story
        .step("dps-enroll", async {
            let (ok, detail) = enroll_at_hub_a(world).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    let snapshot = story
        .step("dps-backup", async {
            let client = world.dps_client()?;
            let options =
                BackupOptions::new(OffsetDateTime::now_utc(), world.signing_key.clone());
            let report = backup::from_dps(
                world.store.clone(),
                &client,
                std::slice::from_ref(&world.recipient),
                options,
            )
            .await
            .map_err(|e| step_error("dps-backup", e))?;
            let detail = format!(
                "`hubvault backup --dps dps-a`: snapshot {} holds {} enrollments and {} enrollment group, \
                 keys included (read through attestationmechanism), sealed with age",
                report.snapshot, report.enrollments, report.enrollment_groups
            );
            Ok((report.enrollments == ENROLLED as u64, detail, report.snapshot))
        })
        .await?;
    story
        .step("dps-retarget", async {
            let (ok, detail) = retarget(world, &snapshot).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    story
        .step("dps-reregister", async {
            let (ok, detail) = reregister(world).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    Ok(())
}

/// dps-a enrolls `ENROLLED` meters and one group at hub-a; a few meters register and land there.
async fn enroll_at_hub_a(world: &World) -> Result<(bool, String), Error> {
    let client = world.dps_client()?;
    let meters: Vec<Value> = (0..ENROLLED)
        .map(|n| {
            json!({"registrationId": meter(n), "iotHubHostName": HUB_A,
                   "initialTwin": {"tags": {"site": "plant-7"}},
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(n), "secondaryKey": key(n.saturating_add(1000))}}})
        })
        .collect();
    let group = json!({"enrollmentGroupId": "line-1", "iotHubs": [HUB_A], "allocationPolicy": "static",
        "attestation": {"type": "symmetricKey",
            "symmetricKey": {"primaryKey": key(2000), "secondaryKey": key(2001)}}});
    let mut refused = client
        .bulk(Kind::Individual, BulkMode::Create, &meters)
        .await?;
    refused.extend(client.bulk(Kind::Group, BulkMode::Create, &[group]).await?);
    let mut on_a = 0_usize;
    for n in 0..DEVICES {
        if assigned_to(world, &meter(n), DeviceKey::Own(&key(n))).await? == Some(HUB_A.into()) {
            on_a = on_a.saturating_add(1);
        }
    }
    let detail = format!(
        "dps-a (ID scope {}) enrolled {ENROLLED} meters with their own symmetric keys and group line-1, all \
         pointing at hub-a; {on_a} of {DEVICES} meters registered through the device API and were assigned hub-a",
        world.dps.id_scope
    );
    Ok((refused.is_empty() && on_a == DEVICES, detail))
}

async fn assigned_to(world: &World, id: &str, key: DeviceKey<'_>) -> Result<Option<String>, Error> {
    let got = register::register(&world.http, &world.provisioning()?, id, key).await?;
    Ok(match got {
        Registration::Assigned(a) => Some(a.hub),
        _ => None,
    })
}

/// hub-a is lost: the snapshot's enrollments and group are pointed at hub-b, keys unchanged.
async fn retarget(world: &World, snapshot: &str) -> Result<(bool, String), Error> {
    let client = world.dps_client()?;
    let manifest = hubvault::snapshot::catalog::list(world.store.as_ref(), &world.trusted())
        .await?
        .into_iter()
        .find(|m| m.id == snapshot && m.trust.accepted(false))
        .ok_or_else(|| {
            step_error(
                "dps-retarget",
                format!("snapshot {snapshot} is not in the vault"),
            )
        })?;
    let identities = hubvault::keys::load_identities(&world.identity_path)?;
    let options = EnrollOptions {
        mode: Mode::Upsert,
        max_delete: None,
        dry_run: false,
        map_hubs: vec![(HUB_A.to_owned(), HUB_B.to_owned())],
        iot_hub: None,
    };
    let report = enroll::run(
        world.store.clone(),
        &manifest,
        std::sync::Arc::new(identities.into_boxed()),
        &client,
        &options,
    )
    .await
    .map_err(|e| step_error("dps-retarget", e))?;
    let now_b = client
        .query_all(Kind::Individual)
        .await?
        .iter()
        .filter(|e| e["iotHubHostName"] == HUB_B)
        .count();
    let detail = format!(
        "hub-a is lost. `hubvault restore {snapshot} --dps dps-a --to-dps dps-a --map-hub hub-a=hub-b --mode upsert`: \
         {} enrollments and {} group updated with their keys sent explicitly (a PUT without them would make DPS mint \
         new ones); {now_b} of {ENROLLED} enrollments now name hub-b",
        report.enrollments.update, report.enrollment_groups.update
    );
    Ok((report.ok() && now_b == ENROLLED, detail))
}

/// The meters register again with their original keys (and two devices of group line-1 with
/// keys derived from the group's), land on hub-b and send; a wrong key is refused.
async fn reregister(world: &World) -> Result<(bool, String), Error> {
    let mut landed = Vec::new();
    for n in 0..DEVICES {
        let id = meter(n);
        if assigned_to(world, &id, DeviceKey::Own(&key(n))).await? == Some(HUB_B.into())
            && world.device_send("hub-b", &id, &key(n)).await? == 204
        {
            landed.push(id);
        }
    }
    let group_key = key(2000);
    for id in ["line-1-m1", "line-1-m2"] {
        let derived = register::derive_group_key(&group_key, id)?;
        if assigned_to(world, id, DeviceKey::Group(&group_key)).await? == Some(HUB_B.into())
            && world.device_send("hub-b", id, &derived).await? == 204
        {
            landed.push(id.to_owned());
        }
    }
    let wrong = assigned_to(world, &meter(0), DeviceKey::Own(&key(2500))).await?;
    let ok = landed.len() == DEVICES + 2 && wrong.is_none();
    let detail = format!(
        "{} devices ({}) registered again with the keys they always had (two with keys derived from group \
         line-1's), were assigned hub-b and sent a message hub-b accepted; a wrong key was {}",
        landed.len(),
        landed.join(", "),
        if wrong.is_none() {
            "refused"
        } else {
            "NOT refused"
        }
    );
    Ok((ok, detail))
}
