//! `hubvault restore` and `hubvault diff SNAPSHOT --hub HUB`: argument resolution and output.

use std::fmt::Write as _;

use hubvault::config::Config;
use hubvault::hub::HubClient;
use hubvault::restore::{self, Engine, Mode, RestoreOptions};
use hubvault::services;
use hubvault::shutdown::Shutdown;

use super::{Result, diff_needs_two_sides, env_number, identities, live};
use crate::Outcome;
use crate::cli::{ApplyArgs, DiffArgs, Global, RestoreArgs, RestoreEngine, RestoreMode};

/// `diff SNAPSHOT --dps DPS`: a DPS snapshot against the live instance (exit 1 if they differ):
/// the restore's own plan, as a dry run.
async fn diff_dps(
    config: &Config,
    global: &Global,
    args: &DiffArgs,
    spec: &str,
) -> Result<Outcome> {
    let repo = super::open_repository(config, global, args.trust.allow_unsigned).await?;
    let names = services::hub_names(spec, config);
    let manifest = repo.resolve_for_live(&args.from, &names)?;
    let manifest = repo.accept(manifest)?.clone();
    let client = hubvault::dps::DpsClient::new(services::resolve_dps(spec, config)?)?;
    let options = hubvault::enroll::EnrollOptions {
        mode: Mode::Upsert,
        max_delete: None,
        dry_run: true,
        map_hubs: Vec::new(),
        iot_hub: None,
    };
    let identities = identities(config, &args.keys).await?;
    let report = hubvault::enroll::run(
        repo.store().clone(),
        &manifest,
        identities,
        &client,
        &options,
    )
    .await?;
    let mut human = String::new();
    for (what, c) in [
        ("enrollments", &report.enrollments),
        ("enrollment groups", &report.enrollment_groups),
    ] {
        let _ = writeln!(
            human,
            "{what}: {} only in the snapshot, {} differ (fields or keys), {} unchanged",
            c.create, c.update, c.unchanged
        );
    }
    if !report.only_live.is_empty() {
        let _ = writeln!(
            human,
            "{} only on {}: {}",
            report.only_live.len(),
            report.dps,
            report.only_live.join(", ")
        );
    }
    let _ = writeln!(human, "{} → {} (live)", manifest.id, report.dps);
    Ok(Outcome {
        found_something: report.differs(),
        ..Outcome::ok(super::to_json(&report)?, human)
    })
}

/// `restore SNAPSHOT --to-dps DPS`: a DPS snapshot's enrollments and groups back into DPS.
async fn enroll(
    config: &Config,
    args: &RestoreArgs,
    dps: &str,
    store: std::sync::Arc<dyn hubvault::store::Store>,
    manifest: &hubvault::snapshot::Manifest,
) -> Result<Outcome> {
    let client = hubvault::dps::DpsClient::new(services::resolve_dps(dps, config)?)?;
    let map_hubs = map_hubs(config, &args.map_hub)?;
    let iot_hub = match &args.iot_hub {
        Some(name) if config.hubs.contains_key(name) => {
            Some(services::resolve_hub(name, config)?.target.host)
        }
        Some(name) if name.contains("HostName=") => Some(
            hubvault::hub::ConnectionString::parse(name)
                .map_err(hubvault::Error::from)?
                .host_name,
        ),
        other => other.clone(),
    };
    let restore = restore_options(&args.apply)?;
    if restore.preflight {
        let targets: Vec<String> = map_hubs
            .iter()
            .map(|(_, new)| new.clone())
            .chain(iot_hub.clone())
            .collect();
        let write = !args.apply.dry_run;
        if let Some(stopped) = dps_preflight_stops(
            config,
            (dps, &client),
            &args.live,
            write,
            targets,
            "restore",
        )
        .await?
        {
            return Ok(stopped);
        }
    }
    let options = hubvault::enroll::EnrollOptions {
        mode: restore.mode,
        max_delete: restore.max_delete,
        dry_run: args.apply.dry_run,
        map_hubs,
        iot_hub,
    };
    let identities = identities(config, &args.keys).await?;
    let report = hubvault::enroll::run(store, manifest, identities, &client, &options).await?;
    let human = enroll_human(&report, options.dry_run);
    let ok = report.ok();
    let mut outcome = Outcome::ok(super::to_json(&report)?, human);
    outcome.found_something = !ok;
    Ok(outcome)
}

/// `--map-hub OLD=NEW` pairs as host names (a config name resolves to its hub's host).
pub(super) fn map_hubs(config: &Config, pairs: &[String]) -> Result<Vec<(String, String)>> {
    let host = |name: &str| -> Result<String> {
        Ok(match config.hubs.get(name) {
            Some(_) => services::resolve_hub(name, config)?.target.host,
            None => name.to_owned(),
        })
    };
    pairs
        .iter()
        .map(|pair| {
            let Some((old, new)) = pair.split_once('=') else {
                return Err(hubvault::Error::usage(
                    format!("--map-hub {pair:?} is not OLD=NEW"),
                    "pass --map-hub hub-a=hub-b (config names or host names)",
                ));
            };
            Ok((host(old.trim())?, host(new.trim())?))
        })
        .collect()
}

/// The DPS preflight of a write into `dps` whose enrollments will name `targets`; `Some` with
/// the outcome to return when it stops the write.
pub(super) async fn dps_preflight_stops(
    config: &Config,
    (dps, client): (&str, &hubvault::dps::DpsClient),
    live: &crate::cli::LiveArgs,
    write: bool,
    targets: Vec<String>,
    command: &str,
) -> Result<Option<Outcome>> {
    let report =
        super::live::dps_preflight(config, dps, client, live.caller_ip, write, targets).await?;
    if report.ok {
        return Ok(None);
    }
    super::live::stopped_by_preflight(&report, command).map(Some)
}

/// The human lines of a restore into DPS (also `clone` of DPS).
pub(super) fn enroll_human(report: &hubvault::enroll::EnrollReport, dry_run: bool) -> String {
    let verb = if dry_run { "would restore" } else { "restored" };
    let mut human = String::new();
    for (what, c) in [
        ("enrollments", &report.enrollments),
        ("enrollment groups", &report.enrollment_groups),
    ] {
        let _ = writeln!(
            human,
            "{what}: {} to create, {} to update, {} unchanged, {} conflicts",
            c.create, c.update, c.unchanged, c.conflicts
        );
    }
    for f in &report.failed {
        let _ = writeln!(human, "failed: {} ({}): {}", f.id, f.code, f.message);
    }
    if !report.failed.is_empty() {
        let _ = writeln!(
            human,
            "{} refused by {}: DPS refuses an enrollment naming a hub not linked to it, an \
             attestation it cannot take, or a body it rejects; `hubvault preflight --to-dps DPS \
             --iot-hub HUB` checks the linked hubs (or retarget with --map-hub OLD=NEW)",
            report.failed.len(),
            report.dps
        );
    }
    for s in &report.skipped {
        let _ = writeln!(human, "skipped: {}: {}", s.id, s.reason);
    }
    if report.modules > 0 {
        let _ = writeln!(
            human,
            "{} module identities are not enrollable: their devices re-create them after registering",
            report.modules
        );
    }
    if !report.children.is_empty() {
        let _ = writeln!(
            human,
            "{} edge children enrolled: once they register, make their parent links on the hub \
             (`hubvault restore SNAPSHOT --to HUB --mode upsert` sets them from the snapshot)",
            report.children.len()
        );
    }
    if !report.conflicts.is_empty() {
        let _ = writeln!(
            human,
            "conflicts (exist and differ; left alone — use --mode upsert to update them): {}",
            report.conflicts.join(", ")
        );
    }
    let _ = writeln!(
        human,
        "{verb} snapshot {} into {}",
        report.snapshot, report.dps
    );
    human
}

/// Whether `spec` names a DPS instance: a `[dps.NAME]` of the config or a DPS host.
pub(super) fn names_dps(config: &Config, spec: &str) -> bool {
    config.dps.contains_key(spec) || spec.contains(".azure-devices-provisioning.net")
}

/// Tuning: from how many key comparisons an export job reads the target's keys.
const KEY_READ_JOB_MIN_ENV: &str = "HUBVAULT_KEY_READ_JOB_MIN";
/// Tuning: from how many edge links the job engine sets them with a second import job.
const LINK_JOB_MIN_ENV: &str = "HUBVAULT_LINK_JOB_MIN";

pub async fn run(
    config: &Config,
    global: &Global,
    args: RestoreArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let repo = super::open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub_filter = super::hub_names(config, args.hub.hub.as_deref());
    let manifest = repo
        .resolve_trusted(&args.snapshot, hub_filter.as_ref())?
        .clone();
    let store = repo.store().clone();
    if let Some(dps) = &args.to_dps {
        return enroll(config, &args, dps, store, &manifest).await;
    }
    let to = args.to.as_deref().unwrap_or_default();
    let (hub, client) = live::resolve(to, config, &args.live)?;
    let mut options = restore_options(&args.apply)?;
    options.shutdown = shutdown;
    let staging = super::drill::open_staging(
        config,
        args.live.staging.as_deref(),
        &client,
        options.engine,
    )?;
    let identities = identities(config, &args.keys).await?;
    let arm = live::arm_client(config)?;
    if options.engine == Engine::Auto {
        options.rates = super::drill::hub_rates(arm.as_ref(), &hub).await;
    }
    let checks = live::checks_for(&hub, &client, arm.as_ref(), &args.live, options.poll);
    // Before preflight: a killed run's job would fail its job-slot check.
    let swept_before = match &staging {
        Some(s) if !options.dry_run => hubvault::backup::sweep_dead_runs(s, &client).await,
        _ => Vec::new(),
    };
    let mut report = restore::run_with_checks(
        store,
        &manifest,
        identities,
        &client,
        staging.as_ref(),
        &options,
        checks,
    )
    .await?;
    report.dead_runs.splice(0..0, swept_before);
    let verbose = global.verbose > 0;
    Ok(Outcome {
        json: report.to_json(verbose),
        human: report.human(verbose),
        found_something: report.found_something(),
        warnings: super::unsigned_warning(&manifest).into_iter().collect(),
        failed: false,
    })
}

/// The options of `restore` and `clone` from their shared flags (and the test-only tuning
/// variables, which `clone` honours too).
pub(super) fn restore_options(apply: &ApplyArgs) -> Result<RestoreOptions> {
    let only = apply
        .only
        .as_deref()
        .map(|only| {
            glob::Pattern::new(only).map_err(|e| {
                hubvault::Error::usage(
                    format!("--only {only:?} is not a valid glob ({e})"),
                    "use * ? [abc], and quote the pattern so the shell leaves it alone",
                )
            })
        })
        .transpose()?;
    let count = |var: &str, default: usize| -> Result<usize> {
        Ok(env_number(var, "a count")?.unwrap_or(default))
    };
    Ok(RestoreOptions {
        mode: match apply.mode {
            RestoreMode::Create => Mode::Create,
            RestoreMode::Upsert => Mode::Upsert,
            RestoreMode::Mirror => Mode::Mirror,
        },
        only,
        engine: match apply.engine {
            RestoreEngine::Job => Engine::Job,
            RestoreEngine::Bulk => Engine::Bulk,
            RestoreEngine::Auto => Engine::Auto,
        },
        dry_run: apply.dry_run,
        max_delete: apply.max_delete,
        verify: super::drill::restore_default_verify(apply.verify),
        timeline: hubvault::timeline::Timeline::default(),
        rates: None,
        preflight: !apply.no_preflight,
        poll: live::poll_policy()?,
        key_read_job_min: count(KEY_READ_JOB_MIN_ENV, restore::KEY_READ_JOB_MIN)?,
        link_job_min: count(LINK_JOB_MIN_ENV, restore::LINK_JOB_MIN)?,
        shutdown: Shutdown::never(),
    })
}

/// `diff SNAPSHOT --hub HUB`: the snapshot is the older side, the live hub the newer.
pub async fn diff_hub(config: &Config, global: &Global, args: DiffArgs) -> Result<Outcome> {
    let spec = args.hub.hub.as_deref().ok_or_else(diff_needs_two_sides)?;
    if names_dps(config, spec) {
        return diff_dps(config, global, &args, spec).await;
    }
    let repo = super::open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub = services::resolve_hub(spec, config)?;
    let names = services::hub_names(spec, config);
    let manifest = repo.resolve_for_live(&args.from, &names)?;
    let manifest = repo.accept(manifest)?.clone();
    let client = HubClient::new(hub.target)?;
    let identities = identities(config, &args.keys).await?;
    let report = restore::diff_live(repo.store().clone(), &manifest, identities, &client).await?;
    let mut human =
        super::snapshots::diff_lines(&report, " (only on the hub)", " (only in the snapshot)");
    let _ = writeln!(
        human,
        "{} → {} (live): {} added, {} removed, {} changed, {} unchanged",
        manifest.id,
        client.name(),
        report.added.len(),
        report.removed.len(),
        report.changed.len(),
        report.unchanged
    );
    Ok(Outcome {
        json: report.to_json(),
        human,
        found_something: !report.is_empty(),
        warnings: super::unsigned_warning(&manifest).into_iter().collect(),
        failed: false,
    })
}
