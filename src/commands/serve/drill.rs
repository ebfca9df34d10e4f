//! A policy's `[drill]` as `serve` and `run` act on it: for each hub the policy covers, the
//! newest trusted snapshot is drilled into the scratch hub `to` exactly as `hubvault drill latest
//! --to TO --cleanup` would (the scratch hub must be empty: a drill that finds it not empty
//! fails), under the scratch hub's lease (`hubvault::service::drill_run`). A failed verdict or a
//! breached target fails the run; the HTML report goes where `report` says.

use std::time::Duration;

use hubvault::config::Config;
use hubvault::device::telemetry::DeviceTarget;
use hubvault::drill::{self, Targets};
use hubvault::policy::DrillSection;
use hubvault::restore::{Engine, RestoreOptions};
use hubvault::service::drill_run::{self, DrillDone, DrillFigures};
use hubvault::service::hub_run::{Context, Events, Report, RunError};
use hubvault::service::slots::Due;
use hubvault::shutdown::Shutdown;

use super::super::{Result, identities, live};
use crate::cli::{Global, LiveArgs, ScheduleArgs};

/// What a scheduled drill needs from the command line and config.
#[derive(Clone)]
pub struct DrillEnv {
    pub config: Config,
    pub global: Global,
    pub args: ScheduleArgs,
}

/// The plan's policy name of `policy`'s drills (`drill:NAME`), beside its backups' `NAME`.
pub fn plan_name(policy: &str) -> String {
    format!("{PLAN_PREFIX}{policy}")
}

/// The policy whose drills a plan entry named `name` schedules, if it is a drill entry.
pub fn drill_policy(name: &str) -> Option<&str> {
    name.strip_prefix(PLAN_PREFIX)
}

const PLAN_PREFIX: &str = "drill:";

/// Run the drill of `due` (its policy's `[drill]` is `section`) under the scratch hub's lease.
pub async fn run(
    ctx: &Context,
    env: &DrillEnv,
    section: &DrillSection,
    due: &Due,
    timeout: Duration,
    shutdown: &Shutdown,
    events: Events<'_>,
) -> Report {
    let (env, section_owned, hub) = (env.clone(), section.clone(), due.hub.clone());
    let drill = move |stop: Shutdown| async move {
        // On a blocking thread of its own that drives the drill on the runtime: rustc cannot
        // prove the drill's future `Send` for the scheduler's higher-ranked task bound
        // (rust-lang/rust#64552). Boxing await sites as `dyn Future + Send` moves the error down
        // into `restore` (`&HubClient` and `&Shutdown` held in its inner futures), so the
        // thread stays until that is untangled; its cost is one pool thread per running drill.
        let to = section_owned.to.clone();
        let handle = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let mut figures = DrillFigures {
                    to: section_owned.to.clone(),
                    ..DrillFigures::default()
                };
                match attempt(&env, &section_owned, &hub, stop, &mut figures).await {
                    Ok((snapshot, error)) => DrillDone {
                        figures,
                        snapshot: Some(snapshot),
                        error,
                    },
                    Err(e) => DrillDone {
                        figures,
                        snapshot: None,
                        error: Some(RunError::of(&e)),
                    },
                }
            })
        });
        task.await.unwrap_or_else(|e| DrillDone {
            figures: DrillFigures {
                to,
                ..DrillFigures::default()
            },
            snapshot: None,
            error: Some(RunError::new(
                "drill_panicked",
                format!("the drill ended early: {e}"),
            )),
        })
    };
    drill_run::run(ctx, due, &section.to, timeout, shutdown, events, drill).await
}

/// One drill of `hub`: the snapshot drilled, and the error that failed it (a failed verdict or a
/// breached target), with `figures` filled in as far as the drill got.
async fn attempt(
    env: &DrillEnv,
    section: &DrillSection,
    hub: &str,
    stop: Shutdown,
    figures: &mut DrillFigures,
) -> Result<(String, Option<RunError>)> {
    let (config, args) = (&env.config, &env.args);
    let repo =
        super::super::open_repository(config, &env.global, args.trust.allow_unsigned).await?;
    let hub_filter = super::super::hub_names(config, Some(hub));
    let manifest = repo.resolve_trusted("latest", hub_filter.as_ref())?.clone();
    let newest = repo
        .listing()
        .manifests
        .iter()
        .filter(|m| m.hub == manifest.hub)
        .filter_map(|m| {
            time::OffsetDateTime::parse(&m.created, &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .max();
    let live_args = LiveArgs {
        local: args.local,
        ..LiveArgs::default()
    };
    let (target, client) = live::resolve(&section.to, config, &live_args)?;
    let staging = super::super::drill::open_staging(config, None, &client, section.engine)?;
    let poll = live::poll_policy()?;
    let arm = live::arm_client(config)?;
    let rates = match section.engine {
        Engine::Auto => super::super::drill::hub_rates(arm.as_ref(), &target).await,
        _ => None,
    };
    let options = RestoreOptions {
        engine: section.engine,
        rates,
        verify: section.verify,
        preflight: true,
        poll,
        shutdown: stop,
        ..RestoreOptions::default()
    };
    let checks = live::checks_for(&target, &client, arm.as_ref(), &live_args, poll);
    let via_dps = match &section.via_dps {
        Some(name) => Some(super::super::drill::via_dps(config, name, arm.as_ref())?),
        None => None,
    };
    super::super::drill::refuse_x509_via_dps(via_dps.is_some(), &section.x509_certs)?;
    let certificates = super::super::drill::load_certificates(&section.x509_certs, &client)?;
    let request = drill::Request {
        store: repo.store().clone(),
        manifest: &manifest,
        newest,
        identities: identities(config, &args.keys).await?,
        client: &client,
        staging: staging.as_ref(),
        checks,
        options,
        allow_nonempty: false,
        cleanup: section.cleanup,
        targets: Targets {
            rto: section.rto_target,
            rpo: section.rpo_target,
        },
        probe_per_kind: section.probe_devices,
        http: client.http().clone(),
        device_target: DeviceTarget {
            host: client.host().to_owned(),
            endpoint: client.endpoint().clone(),
        },
        via_dps,
        certificates,
    };
    let report = drill::run(request).await.map_err(hubvault::Error::app)?;
    figures.rto_seconds = report.rto_seconds;
    figures.rpo_seconds = Some(report.rpo_seconds);
    figures.expected = u64::try_from(report.expected).ok();
    figures.restored = report
        .counted
        .then(|| u64::try_from(report.restored).ok())
        .flatten();
    figures.left_on_target = report.cleanup.as_ref().map(|c| c.left_on_target);
    if let Some(path) = section.report_path(hub, chrono::Utc::now()) {
        figures.report = write_report(&report, &path, &manifest.id, section);
    }
    let error = verdict_error(&report, section, hub);
    Ok((manifest.id.clone(), error))
}

/// The error that fails a scheduled drill: its verdict's reasons and the targets it breached.
fn verdict_error(
    report: &drill::DrillReport,
    section: &DrillSection,
    hub: &str,
) -> Option<RunError> {
    report.found_something().then(|| {
        let mut why = report.reasons.clone();
        let secs = |v: f64| format!("{v:.3}s");
        if let (Some(t), Some(rto)) = (section.rto_target, report.rto_seconds)
            && rto > t
        {
            why.push(format!("RTO {} breached its target {}", secs(rto), secs(t)));
        }
        if let Some(t) = section.rpo_target.filter(|t| report.rpo_seconds > *t) {
            why.push(format!(
                "RPO {} breached its target {}",
                secs(report.rpo_seconds),
                secs(t)
            ));
        }
        why.dedup();
        RunError::new(
            "drill_failed",
            hubvault::redact::redact(&format!(
                "the drill of {hub} into {} failed: {}",
                section.to,
                why.join("; ")
            )),
        )
    })
}

/// Write the drill's HTML report; its path, or `None` (said in the log) when it cannot be written.
fn write_report(
    report: &drill::DrillReport,
    path: &std::path::Path,
    snapshot: &str,
    section: &DrillSection,
) -> Option<String> {
    let mut command = format!(
        "hubvault drill {snapshot} --to {} --verify {}",
        section.to,
        section.verify.label()
    );
    if section.cleanup {
        command.push_str(" --cleanup");
    }
    let page = report
        .document(vec![hubvault::redact::redact(&command)])
        .html();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(path, page) {
        Ok(()) => Some(path.display().to_string()),
        Err(e) => {
            tracing::error!("cannot write the drill report to {}: {e}", path.display());
            None
        }
    }
}
