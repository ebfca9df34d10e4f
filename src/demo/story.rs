//! The demo's steps after the world is up, in the order a user would take them.

use std::net::{IpAddr, Ipv4Addr};

use super::world::{self, World};
use super::{Error, OTHER_CALLER, Story};
use hubvault::preflight::{self, ArmAccess, Checks, Report};
use hubvault::snapshot::catalog;

/// This machine, as the simulated hubs see it.
const THIS_CALLER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Steps 2…: returns the snapshot id the story made.
pub(super) async fn tell(story: &mut Story<'_>, world: &World) -> Result<Option<String>, Error> {
    let snapshot = story
        .step("backup", async {
            let report = Box::pin(steps::backup(world)).await?;
            let detail = format!(
                "backed up hub-a with an export job ({}) into snapshot {}: {} devices, {} modules, {} configurations, \
                 {} bytes encrypted with age; the job's {} plaintext staging blob(s) were deleted",
                report.job_id.as_deref().unwrap_or("no job id"),
                report.snapshot,
                report.devices,
                report.modules,
                report.configurations,
                report.bytes,
                report.staging_deleted
            );
            Ok((true, detail, report.snapshot))
        })
        .await?;
    story
        .step("snapshots", async {
            let list = catalog::list(world.store.as_ref(), &world.trusted()).await?;
            let found = list
                .iter()
                .any(|m| m.id == snapshot && m.trust.accepted(false));
            let lines: Vec<String> = list
                .iter()
                .map(|m| {
                    format!(
                        "{} of {} ({} devices, {}, {})",
                        m.id,
                        m.hub,
                        m.counts.devices,
                        m.created,
                        m.trust.describe()
                    )
                })
                .collect();
            let detail = format!(
                "`hubvault snapshots` lists {} snapshot(s) in {}: {}",
                list.len(),
                world.store_dir.display(),
                lines.join("; ")
            );
            Ok((found, detail, ()))
        })
        .await?;
    firewall(story, world).await?;
    let source = world.registry("hub-a").await?;
    story
        .step("clone", async {
            let (ok, detail) = Box::pin(steps::clone(world)).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    story
        .step("verify", async {
            let (ok, detail) = steps::verify(world, &snapshot).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    story
        .step("check", async {
            let target = world.registry("hub-b").await?;
            let (ok, detail) = compare(&source, &target);
            Ok((ok, detail, ()))
        })
        .await?;
    story
        .step("devices", async {
            let (ok, detail) = devices_authenticate(world, &source).await?;
            Ok((ok, detail, ()))
        })
        .await?;
    Box::pin(super::dps_act::tell(story, world)).await?;
    Ok(Some(snapshot))
}

/// Steps 4–6: a firewall that blocks this machine, preflight naming the rule, the fix.
async fn firewall(story: &mut Story<'_>, world: &World) -> Result<(), Error> {
    story
        .step("firewall", async {
            world
                .set_firewall("hub-b", Some(&[("branch-office", &format!("{OTHER_CALLER}/32"))]))
                .await?;
            let detail = format!(
                "set hub-b's IP firewall through ARM to allow only {OTHER_CALLER} (rule 'branch-office'); \
                 this machine is {THIS_CALLER}"
            );
            Ok((true, detail, ()))
        })
        .await?;
    story
        .step("preflight-blocked", async {
            let report = preflight_hub_b(world).await?;
            let names_rule = report
                .findings
                .iter()
                .any(|f| !f.ok && f.detail.contains("branch-office"));
            let detail = format!(
                "`hubvault preflight --to hub-b` {} before any long step:\n{}",
                if report.ok {
                    "passed (unexpected)"
                } else {
                    "fails"
                },
                indent(&report.table())
            );
            Ok((!report.ok && names_rule, detail, ()))
        })
        .await?;
    story
        .step("firewall-fix", async {
            world
                .set_firewall(
                    "hub-b",
                    Some(&[
                        ("branch-office", &format!("{OTHER_CALLER}/32")),
                        ("hubvault-runner", &format!("{THIS_CALLER}/32")),
                    ]),
                )
                .await?;
            let report = preflight_hub_b(world).await?;
            let detail = format!(
                "applied the fix through ARM (rule 'hubvault-runner' allows {THIS_CALLER}); preflight again:\n{}",
                indent(&report.table())
            );
            Ok((report.ok, detail, ()))
        })
        .await?;
    Ok(())
}

/// `hubvault preflight --to hub-b --caller-ip 127.0.0.1`, as the command runs it.
async fn preflight_hub_b(world: &World) -> Result<Report, Error> {
    let arm = world.arm_client()?;
    let client = world.client("hub-b")?;
    let resource_id = world.resource_id("hub-b")?;
    let staging = world.staging(&client)?;
    let mut checks = Checks::new("hub-b", &client);
    checks.arm = Some(ArmAccess {
        client: &arm,
        resource_id: &resource_id,
    });
    checks.caller_ip = Some(THIS_CALLER);
    checks.staging = Some(&staging);
    checks.hub_is_local = true;
    Ok(preflight::run(&checks).await)
}

/// Compare hub-b with hub-a as the simulator reads them back: ids, keys, status, twins, modules.
fn compare(source: &[serde_json::Value], target: &[serde_json::Value]) -> (bool, String) {
    let key = |l: &serde_json::Value| {
        (
            l["id"].as_str().unwrap_or_default().to_owned(),
            l["moduleId"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let view = |l: &serde_json::Value| {
        serde_json::json!([
            l["authentication"],
            l["status"],
            l["tags"],
            l["properties"]["desired"]
        ])
    };
    let wanted: std::collections::BTreeMap<_, _> = source
        .iter()
        .filter(|l| !hubvault::restore::lines::is_system_module(l["moduleId"].as_str()))
        .map(|l| (key(l), view(l)))
        .collect();
    let have: std::collections::BTreeMap<_, _> = target.iter().map(|l| (key(l), view(l))).collect();
    let missing = wanted.keys().filter(|k| !have.contains_key(*k)).count();
    let differ = wanted
        .iter()
        .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
        .count();
    let ok = missing == 0 && differ == 0;
    let detail = format!(
        "read hub-b back from the simulator: {} of {} identities present, {missing} missing, {differ} differing \
         in keys/auth/status/tags/desired properties",
        wanted.len().saturating_sub(missing),
        wanted.len()
    );
    (ok, detail)
}

/// A few devices send one message each to hub-b with the keys they had on hub-a; a wrong key is
/// refused (so the check can fail). The simulator's message counts are the evidence.
async fn devices_authenticate(
    world: &World,
    source: &[serde_json::Value],
) -> Result<(bool, String), Error> {
    let sample = world::sample_sas_devices(source, 5);
    let mut accepted = Vec::new();
    for (id, key) in &sample {
        if world.device_send("hub-b", id, key).await? == 204 {
            accepted.push(id.clone());
        }
    }
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let refused = match sample.first() {
        Some((id, _)) => world.device_send("hub-b", id, wrong).await? == 401,
        None => false,
    };
    let counts = world.messages("hub-b").await?;
    let counted = sample
        .iter()
        .filter(|(id, _)| counts.get(id).copied().unwrap_or(0) >= 1)
        .count();
    let ok =
        !sample.is_empty() && accepted.len() == sample.len() && counted == sample.len() && refused;
    let detail = format!(
        "{} of {} devices ({}) sent a message to hub-b signed with their original keys and hub-b accepted it \
         (simulator counts {counted} of them); a wrong key was {}",
        accepted.len(),
        sample.len(),
        sample
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if refused {
            "refused (401)"
        } else {
            "NOT refused"
        }
    );
    Ok((ok, detail))
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The steps that call the other use cases.
mod steps {
    use time::OffsetDateTime;

    use super::{ArmAccess, Checks, Error, World, world};
    use hubvault::backup::{self, BackupOptions, HubBackupOptions};
    use hubvault::clone;
    use hubvault::restore::{self, Engine, RestoreOptions};

    pub struct Backup {
        pub snapshot: String,
        pub job_id: Option<String>,
        pub devices: u64,
        pub modules: u64,
        pub configurations: u64,
        pub bytes: u64,
        pub staging_deleted: usize,
    }

    /// `hubvault backup --hub hub-a`: export job → file:// staging → sealed snapshot.
    pub async fn backup(world: &World) -> Result<Backup, Error> {
        let client = world.client("hub-a")?;
        let staging = world.staging(&client)?;
        let mut options = HubBackupOptions::new(BackupOptions::new(
            OffsetDateTime::now_utc(),
            world.signing_key.clone(),
        ));
        options.poll = world::fast_poll();
        let report = backup::from_hub(
            world.store.clone(),
            &client,
            &staging,
            std::slice::from_ref(&world.recipient),
            options,
        )
        .await
        .map_err(|e| Error::Step {
            step: "backup",
            detail: e.to_string(),
        })?;
        let b = report.backup;
        Ok(Backup {
            snapshot: b.snapshot,
            job_id: b.job_id,
            devices: b.devices,
            modules: b.modules,
            configurations: b.configurations,
            bytes: b.bytes,
            staging_deleted: report.staging_deleted,
        })
    }

    /// `hubvault clone --from hub-a --to hub-b`: preflight of hub-b, an ephemeral backup of
    /// hub-a (sealed in memory), restore into hub-b, verify.
    pub async fn clone(world: &World) -> Result<(bool, String), Error> {
        let source = world.client("hub-a")?;
        let target = world.client("hub-b")?;
        let staging = world.staging(&source)?;
        let target_staging = world.staging(&target)?;
        let arm = world.arm_client()?;
        let resource_id = world.resource_id("hub-b")?;
        let mut checks = Checks::new("hub-b", &target);
        checks.arm = Some(ArmAccess {
            client: &arm,
            resource_id: &resource_id,
        });
        checks.caller_ip = Some(super::THIS_CALLER);
        checks.hub_is_local = true;
        checks.staging = Some(&target_staging);
        // Like `hubvault clone` without --keep: a throw-away key signs the ephemeral snapshot.
        let mut backup = HubBackupOptions::new(BackupOptions::new(
            OffsetDateTime::now_utc(),
            std::sync::Arc::new(hubvault::keys::SigningKey::generate()?),
        ));
        backup.poll = world::fast_poll();
        let request = clone::Request {
            source: &source,
            target: &target,
            staging: &staging,
            target_staging: Some(&target_staging),
            preflight: Some(checks),
            keep: clone::Keep::No,
        };
        let options = RestoreOptions {
            engine: Engine::Job,
            poll: world::fast_poll(),
            ..RestoreOptions::default()
        };
        let report = clone::run(request, backup, &options)
            .await
            .map_err(|e| Error::Step {
                step: "clone",
                detail: e.to_string(),
            })?;
        let Some(r) = &report.restore else {
            return Ok((false, "the clone stopped at its preflight".into()));
        };
        let ok = r.failed.is_empty() && r.verified == Some(true);
        let detail = format!(
            "cloned hub-a into hub-b: preflight passed, hub-a exported again into an ephemeral snapshot (encrypted, \
             in memory only), then {} devices/modules created, {} updated, {} edge parent/child links and {} \
             configurations set with the {} engine; {} failed; hub-b re-read and compared with the snapshot: {}",
            r.applied.create,
            r.applied.update,
            r.applied.links,
            r.applied.configurations,
            r.engine.as_str(),
            r.failed.len(),
            match r.verified {
                Some(true) => "equal".to_owned(),
                Some(false) => format!("{} difference(s)", r.differences.len()),
                None => "not checked".to_owned(),
            }
        );
        Ok((ok, detail))
    }

    /// `hubvault restore SNAPSHOT --to hub-b --dry-run`: the vault's snapshot against hub-b.
    pub async fn verify(world: &World, snapshot: &str) -> Result<(bool, String), Error> {
        let target = world.client("hub-b")?;
        let manifest = hubvault::snapshot::catalog::list(world.store.as_ref(), &world.trusted())
            .await?
            .into_iter()
            .find(|m| m.id == snapshot && m.trust.accepted(false))
            .ok_or_else(|| Error::Step {
                step: "verify",
                detail: format!("snapshot {snapshot} is not in the vault"),
            })?;
        let identities = hubvault::keys::load_identities(&world.identity_path)?;
        let options = RestoreOptions {
            dry_run: true,
            ..RestoreOptions::default()
        };
        let r = restore::run(
            world.store.clone(),
            &manifest,
            std::sync::Arc::new(identities.into_boxed()),
            &target,
            None,
            &options,
        )
        .await
        .map_err(|e| Error::Step {
            step: "verify",
            detail: e.to_string(),
        })?;
        let c = r.plan.counts();
        let ok = c.create == 0 && c.update == 0 && c.delete == 0;
        let detail = format!(
            "compared hub-b with snapshot {snapshot} from the vault (decrypted with the demo's identity): \
             {} unchanged, {} missing, {} different",
            c.unchanged, c.create, c.update
        );
        Ok((ok, detail))
    }
}
