//! `demo` and `clone`: argument resolution and rendering only.
//!
//! `clone` honours the test-only environment of `backup --hub` (`HUBVAULT_FAULT_PAUSE=export-running`,
//! `HUBVAULT_STAGING_LEFTOVER_SECS`, `HUBVAULT_JOB_POLL_MS`); never set them in production.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::demo::{self, DemoOptions, Step};
use hubvault::backup::{BackupOptions, HubBackupOptions};
use hubvault::clone::{self, CloneReport, Keep, Request};
use hubvault::config::Config;
use hubvault::keys::SigningKey;
use hubvault::shutdown::Shutdown;
use hubvault::staging::Staging;

use super::{Result, env_number, identities, live, open_store, recipients, to_json};
use crate::Outcome;
use crate::cli::{CloneArgs, DemoArgs, Global, RestoreEngine};

pub async fn demo(global: &Global, args: &DemoArgs) -> Result<Outcome> {
    let options = DemoOptions {
        dir: args.dir.clone(),
        devices: args.devices,
    };
    let json = global.json;
    // Steps are printed as they finish (the story takes a while); with --json the narration goes
    // to stderr and stdout carries only the summary.
    let progress = move |s: &Step| {
        let text = render_step(s);
        if json {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    };
    let report = Box::pin(demo::run(&options, &progress)).await?;
    let human = if report.ok {
        format!(
            "demo finished: every step came out as expected. The vault is {} (`hubvault snapshots --store {}` \
             lists it; its identity and signing key were throw-away, so its data cannot be decrypted again \
             and its snapshot shows as signed by an untrusted key). Next: \
             `hubvault key init`, then `hubvault backup --hub HUB` against your own hub.\n",
            report.vault, report.vault
        )
    } else {
        let failed: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.step)
            .collect();
        format!(
            "demo finished with unexpected results in: {}; please report this\n",
            failed.join(", ")
        )
    };
    Ok(Outcome {
        json: to_json(&report)?,
        human,
        found_something: !report.ok,
        warnings: Vec::new(),
        failed: false,
    })
}

fn render_step(s: &Step) -> String {
    let mark = if s.ok { "ok  " } else { "FAIL" };
    format!("{mark} [{:>5.1}s] {}: {}", s.seconds, s.step, s.detail)
}

/// `clone --from A --to B`: resolve both hubs, the staging, the preflight of B and the keys.
pub async fn clone(
    config: &Config,
    global: &Global,
    args: CloneArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    match (
        super::restore::names_dps(config, &args.from),
        super::restore::names_dps(config, &args.to),
    ) {
        (true, true) => return clone_dps(config, global, &args).await,
        (false, false) if !args.map_hub.is_empty() => {
            return Err(hubvault::Error::usage(
                "--map-hub retargets DPS enrollments: it applies to a clone of DPS, not of a hub",
                "drop --map-hub, or clone DPS instances (`clone --from dps-a --to dps-b --map-hub hub-a=hub-b`)",
            ));
        }
        (false, false) => {}
        _ => {
            return Err(hubvault::Error::usage(
                format!(
                    "clone --from {} --to {}: one is a DPS instance and the other a hub",
                    args.from, args.to
                ),
                "clone a hub into a hub or a DPS into a DPS; a hub's devices become enrollments with \
                 `hubvault restore latest --hub HUB --to-dps DPS --iot-hub HUB`",
            ));
        }
    }
    let (_, source) = live::resolve(&args.from, config, &args.live)?;
    let (target_hub, target) = live::resolve(&args.to, config, &args.live)?;
    let staging = Staging::open(args.live.staging.as_deref(), config, source.host())?;
    // The import job needs a staging area of its own (blob names carry the target hub).
    let target_staging = if matches!(args.apply.engine, RestoreEngine::Bulk) {
        None
    } else {
        Some(Staging::open(
            args.live.staging.as_deref(),
            config,
            target.host(),
        )?)
    };
    let arm = live::arm_client(config)?;
    let poll = live::poll_policy()?;
    let preflight = (!args.apply.no_preflight).then(|| {
        let mut checks = live::checks_for(&target_hub, &target, arm.as_ref(), &args.live, poll);
        checks.staging = target_staging.as_ref();
        checks.needs_jobs = true;
        checks
    });
    let (keep, signing_key) = keep_and_key(config, global, &args).await?;
    let mut backup =
        HubBackupOptions::new(BackupOptions::new(OffsetDateTime::now_utc(), signing_key));
    backup.poll = poll;
    backup.wait_for_slot = args.live.wait;
    // Before preflight: a killed run's job on either hub would fail its job-slot check. Both
    // stagings are the same container; one sweep with both hubs' credentials covers it.
    backup.swept_before = match staging.sweep_dead_runs(&[&source, &target]).await {
        Ok(swept) => swept,
        Err(e) => {
            tracing::warn!("could not look for killed runs in the staging journal: {e}");
            Vec::new()
        }
    };
    test_hooks(&mut backup)?;
    let mut restore = super::restore::restore_options(&args.apply)?;
    restore.poll = poll;
    if restore.engine == hubvault::restore::Engine::Auto {
        restore.rates = super::drill::hub_rates(arm.as_ref(), &target_hub).await;
    }
    restore.shutdown = shutdown;
    let request = Request {
        source: &source,
        target: &target,
        staging: &staging,
        target_staging: target_staging.as_ref(),
        preflight,
        keep,
    };
    let report = clone::run(request, backup, &restore).await?;
    let verbose = global.verbose > 0;
    Ok(Outcome {
        json: report.to_json(verbose),
        human: human(&report, args.keep, verbose),
        found_something: report.found_something(),
        warnings: Vec::new(),
        failed: false,
    })
}

/// A kept snapshot is signed with this host's key; an ephemeral one with a throw-away key,
/// trusted for this run only.
async fn keep_and_key(
    config: &Config,
    global: &Global,
    args: &CloneArgs,
) -> Result<(Keep, Arc<SigningKey>)> {
    Ok(if args.keep {
        let keep = Keep::Yes {
            store: open_store(config, global)?,
            recipients: recipients(config, &args.keys)?,
            identities: identities(config, &args.keys).await?,
        };
        (keep, super::signing_key(config, global).await?)
    } else {
        (Keep::No, Arc::new(SigningKey::generate()?))
    })
}

/// `clone --from DPS --to DPS`: every enrollment and group of one instance, keys included, into
/// another, through a snapshot kept (`--keep`) or ephemeral.
async fn clone_dps(config: &Config, global: &Global, args: &CloneArgs) -> Result<Outcome> {
    use hubvault::services::resolve_dps;
    let source = hubvault::dps::DpsClient::new(resolve_dps(&args.from, config)?)?;
    let target = hubvault::dps::DpsClient::new(resolve_dps(&args.to, config)?)?;
    let restore = super::restore::restore_options(&args.apply)?;
    let map_hubs = super::restore::map_hubs(config, &args.map_hub)?;
    if restore.preflight && !map_hubs.is_empty() {
        let targets = map_hubs.iter().map(|(_, new)| new.clone()).collect();
        if let Some(stopped) = super::restore::dps_preflight_stops(
            config,
            (&args.to, &target),
            &args.live,
            !args.apply.dry_run,
            targets,
            "clone",
        )
        .await?
        {
            return Ok(stopped);
        }
    }
    let (keep, signing_key) = keep_and_key(config, global, args).await?;
    let options = hubvault::enroll::EnrollOptions {
        mode: restore.mode,
        max_delete: restore.max_delete,
        dry_run: args.apply.dry_run,
        map_hubs,
        iot_hub: None,
    };
    let backup = BackupOptions::new(OffsetDateTime::now_utc(), signing_key);
    let report = hubvault::clone_dps::run(&source, &target, keep, backup, &options).await?;
    let mut human = format!(
        "backed up {}: {} enrollments, {} enrollment groups, keys included; {}\n",
        report.backup.hub,
        report.backup.enrollments,
        report.backup.enrollment_groups,
        if report.kept {
            format!("kept as snapshot {}", report.backup.snapshot)
        } else {
            "ephemeral snapshot, encrypted in memory and dropped".to_owned()
        }
    );
    human.push_str(&super::restore::enroll_human(
        &report.restore,
        args.apply.dry_run,
    ));
    Ok(Outcome {
        json: to_json(&report)?,
        human,
        found_something: report.found_something(),
        warnings: Vec::new(),
        failed: false,
    })
}

/// Test-only environment shared with `backup --hub` (see `commands::live`): pause once the
/// export job runs, and the age after which a killed run's staging blobs are swept.
fn test_hooks(options: &mut HubBackupOptions) -> Result<()> {
    if let Some(secs) = env_number("HUBVAULT_STAGING_LEFTOVER_SECS", "whole seconds")? {
        options.leftover_age = Some(Duration::from_secs(secs));
    }
    if let Some(pause) = live::export_running_pause("clone")? {
        options.export_running = Some(pause);
    }
    Ok(())
}

fn human(report: &CloneReport, keep: bool, verbose: bool) -> String {
    let mut out = String::new();
    if let Some(p) = &report.preflight {
        out.push_str(&p.table());
        if !p.ok {
            out.push_str("clone not started; fix the findings above (or pass --no-preflight)\n");
            return out;
        }
    }
    if let Some(b) = &report.backup {
        for d in &b.dead_runs {
            let _ = writeln!(out, "{}", d.sentence());
        }
        let _ = writeln!(
            out,
            "backed up {} with export job {}: {} devices, {} modules, {} configurations; {} ({} plaintext staging blob(s) deleted)",
            b.backup.hub,
            b.backup.job_id.as_deref().unwrap_or("?"),
            b.backup.devices,
            b.backup.modules,
            b.backup.configurations,
            if keep {
                format!("kept as snapshot {}", b.backup.snapshot)
            } else {
                "ephemeral snapshot, encrypted in memory and dropped".to_owned()
            },
            b.staging_deleted
        );
    }
    if let Some(r) = &report.restore {
        out.push_str(&r.human(verbose));
    }
    out
}
