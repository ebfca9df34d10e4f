//! `backup --hub` and `preflight`: the commands that talk to a live hub through jobs.
//!
//! Test-only environment (never set in production):
//! - `HUBVAULT_FAULT_PAUSE=export-running`: once the export job is created, print
//!   `HUBVAULT_FAULT_PAUSE: paused at export-running` on stderr and sleep, so a test can kill
//!   the process while the job runs.
//! - `HUBVAULT_JOB_POLL_MS`: first job poll interval in milliseconds (the cap is 4×).
//! - `HUBVAULT_STAGING_LEFTOVER_SECS`: age after which a killed run's staging blobs are swept
//!   (default: the staging SAS lifetime, the longest job we allow).
//! - `HUBVAULT_SAS_TTL_SECS`: lifetime of the hub SAS tokens we sign (default 1 h), so a test
//!   can outlive several tokens in one run.
//! - `HUBVAULT_RETRY_MAX_SECS`: time budget of one hub request's retries (default 300 s), so a
//!   test can see a persistent failover or 5xx give up.
//! - `--local-address` / `HUBVAULT_LOCAL_ADDRESS` (hidden flag): bind the hub client's socket,
//!   to act as another caller against the simulator's firewall.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use hubvault::arm::{ArmAuth, ArmClient, ArmToken};
use hubvault::backup::{self, BackupOptions, HubBackupOptions};
use hubvault::config::Config;
use hubvault::hub::{HubClient, PollPolicy};
use hubvault::preflight::{self, ArmAccess, Checks, Report};
use hubvault::services::{self, ResolvedHub};
use hubvault::shutdown::Shutdown;
use hubvault::staging::Staging;

use super::{
    Result, env_number, open_store, recipients, signing_key, to_json, unknown_pause_point,
};
use crate::Outcome;
use crate::cli::{BackupArgs, Global, LiveArgs, PreflightArgs};

const FAULT_PAUSE_ENV: &str = "HUBVAULT_FAULT_PAUSE";
const POLL_ENV: &str = "HUBVAULT_JOB_POLL_MS";
const LEFTOVER_ENV: &str = "HUBVAULT_STAGING_LEFTOVER_SECS";
const SAS_TTL_ENV: &str = "HUBVAULT_SAS_TTL_SECS";
const RETRY_MAX_ENV: &str = "HUBVAULT_RETRY_MAX_SECS";

/// A test-only duration in whole seconds from `var`, when set.
fn env_secs(var: &str) -> Result<Option<Duration>> {
    let secs: Option<u64> = env_number(var, "whole seconds")?;
    Ok(secs.map(|secs| Duration::from_secs(secs.max(1))))
}

/// A hub from the config or a connection string, bound to `--local-address` if given.
pub(super) fn resolve(
    spec: &str,
    config: &Config,
    live: &LiveArgs,
) -> Result<(ResolvedHub, HubClient)> {
    let mut resolved = services::resolve_hub(spec, config)?;
    resolved.target.local_address = live.local.local_address;
    if let Some(ttl) = env_secs(SAS_TTL_ENV)? {
        resolved.target.sas_ttl = ttl;
    }
    if let Some(budget) = env_secs(RETRY_MAX_ENV)? {
        resolved.target.retry.max_total = budget;
    }
    let client = HubClient::new(resolved.target.clone())?;
    if let Some(observer) = super::progress::job_observer() {
        client.observe_jobs(observer);
    }
    Ok((resolved, client))
}

/// The test-only pause once the export job runs (`HUBVAULT_FAULT_PAUSE=export-running`), for
/// `command` (named in the error for another pause point).
pub(super) fn export_running_pause(command: &str) -> Result<Option<Arc<dyn Fn() + Send + Sync>>> {
    let Ok(point) = std::env::var(FAULT_PAUSE_ENV) else {
        return Ok(None);
    };
    if point != "export-running" {
        return Err(unknown_pause_point(
            FAULT_PAUSE_ENV,
            &point,
            command,
            "export-running",
        ));
    }
    Ok(Some(Arc::new(|| {
        eprintln!("{FAULT_PAUSE_ENV}: paused at export-running");
        std::thread::sleep(Duration::from_secs(3600));
    })))
}

pub(super) fn poll_policy() -> Result<PollPolicy> {
    let mut poll = PollPolicy::default();
    if let Some(ms) = env_number::<u64>(POLL_ENV, "whole milliseconds")? {
        poll.interval = Duration::from_millis(ms.max(1));
        poll.max_backoff = poll.interval.saturating_mul(4);
    }
    if let Some(secs) = env_number::<u64>("HUBVAULT_JOB_TIMEOUT_SECS", "whole seconds")? {
        poll.timeout = Duration::from_secs(secs.max(1));
    }
    Ok(poll)
}

/// The ARM client from `[arm]` (`token-env`), when configured.
pub(super) fn arm_client(config: &Config) -> Result<Option<ArmClient>> {
    let Some(arm) = &config.arm else {
        return Ok(None);
    };
    let auth = match (&arm.token_env, arm.credential) {
        (Some(var), _) => {
            let token = std::env::var(var).map_err(|_| hubvault::config::Error::MissingEnv {
                var: var.clone(),
                key: "arm.token-env".into(),
            })?;
            ArmAuth::Token(ArmToken::new(token))
        }
        (None, Some(kind)) => ArmAuth::Entra(hubvault::services::entra_credential(kind)?),
        (None, None) => {
            tracing::warn!("[arm] has neither token-env nor credential: ARM checks are skipped");
            return Ok(None);
        }
    };
    Ok(Some(ArmClient::new(
        arm.endpoint.as_deref(),
        auth,
        arm.ca_file.as_deref(),
    )?))
}

async fn run_preflight(
    resolved: &ResolvedHub,
    client: &HubClient,
    staging: Option<&Staging>,
    config: &Config,
    live: &LiveArgs,
) -> Result<Report> {
    let arm = arm_client(config)?;
    let mut checks = checks_for(resolved, client, arm.as_ref(), live, poll_policy()?);
    checks.staging = staging;
    Ok(preflight::run(&checks).await)
}

/// Preflight checks of `hub` with what the command line and config give: its ARM rules when
/// both an ARM client and the hub's resource id are known, the caller's public address,
/// whether to wait for the job slot, and how to poll.
pub(super) fn checks_for<'a>(
    hub: &'a ResolvedHub,
    client: &'a HubClient,
    arm: Option<&'a ArmClient>,
    live: &LiveArgs,
    poll: PollPolicy,
) -> Checks<'a> {
    let mut checks = Checks::new(&hub.name, client);
    checks.arm = arm
        .zip(hub.resource_id.as_deref())
        .map(|(client, resource_id)| ArmAccess {
            client,
            resource_id,
        });
    checks.caller_ip = live.caller_ip;
    checks.hub_is_local = hub.target.endpoint.is_some();
    checks.wait_for_slot = live.wait;
    checks.poll = poll;
    checks
}

fn report_outcome(report: &Report) -> Result<Outcome> {
    Ok(Outcome {
        json: to_json(report)?,
        human: report.table(),
        found_something: !report.ok,
        warnings: Vec::new(),
        failed: false,
    })
}

pub async fn preflight(config: &Config, global: &Global, args: &PreflightArgs) -> Result<Outcome> {
    if let Some(dps) = &args.to_dps {
        return preflight_dps(config, args, dps).await;
    }
    let to = args.to.as_deref().unwrap_or_default();
    let (resolved, client) = resolve(to, config, &args.live)?;
    // Staging is checked when one is named or configured; without either the jobs cannot run,
    // which is a finding only for the commands that need staging.
    let staging = if args.live.staging.is_some() || config.staging.is_some() {
        Some(Staging::open(
            args.live.staging.as_deref(),
            config,
            client.host(),
        )?)
    } else {
        None
    };
    let mut report =
        run_preflight(&resolved, &client, staging.as_ref(), config, &args.live).await?;
    if let Some(finding) = least_privilege(config, global).await? {
        report.findings.push(finding);
        report.ok = report.findings.iter().all(|f| f.ok);
    }
    report_outcome(&report)
}

/// `preflight --to-dps DPS [--iot-hub HUB]…`: rights, limits and, with `[arm]` and the DPS
/// entry's `resource-id`, its IP filter and linked hubs.
async fn preflight_dps(config: &Config, args: &PreflightArgs, dps: &str) -> Result<Outcome> {
    let client = hubvault::dps::DpsClient::new(hubvault::services::resolve_dps(dps, config)?)?;
    let mut target_hubs = Vec::new();
    for hub in &args.iot_hub {
        target_hubs.push(hub_host(config, hub)?);
    }
    let report =
        dps_preflight(config, dps, &client, args.live.caller_ip, true, target_hubs).await?;
    report_outcome(&report)
}

/// A hub a DPS enrollment will name, as its host name: a config name resolved, else as given.
pub(super) fn hub_host(config: &Config, hub: &str) -> Result<String> {
    Ok(if config.hubs.contains_key(hub) {
        hubvault::services::resolve_hub(hub, config)?.target.host
    } else {
        hub.to_owned()
    })
}

/// The DPS checks of instance `spec` (`write`: a restore's target; `target_hubs`: host names the
/// enrollments will name), with its IP filter and linked hubs when `[arm]` and its
/// `resource-id` are configured.
pub(super) async fn dps_preflight(
    config: &Config,
    spec: &str,
    client: &hubvault::dps::DpsClient,
    caller_ip: Option<std::net::IpAddr>,
    write: bool,
    target_hubs: Vec<String>,
) -> Result<Report> {
    let name = if spec.contains('=') {
        client.host().to_owned()
    } else {
        spec.to_owned()
    };
    let arm = arm_client(config)?;
    let resource_id = config.dps.get(spec).and_then(|e| e.resource_id.clone());
    let checks = preflight::dps::DpsChecks {
        name: &name,
        client,
        write,
        arm: arm.as_ref().zip(resource_id.as_deref()),
        caller_ip,
        target_hubs,
    };
    Ok(preflight::dps::run(&checks).await)
}

/// The outcome of a run its preflight stopped: the findings and what to do.
pub(super) fn stopped_by_preflight(report: &Report, what: &str) -> Result<Outcome> {
    let mut outcome = report_outcome(report)?;
    let _ = writeln!(
        outcome.human,
        "{what} not started; fix the findings above (or pass --no-preflight)"
    );
    Ok(outcome)
}

/// The least-privilege finding of a host that holds a signing key, when the identity is in Key
/// Vault (see `preflight::least_privilege_finding`).
async fn least_privilege(
    config: &Config,
    global: &Global,
) -> Result<Option<hubvault::preflight::Finding>> {
    let identity = hubvault::keys::IdentityLocation::resolve(None, config)?;
    let signing = super::signing_key_location(config, global)?;
    let holds = signing.vault.is_some() || signing.path.exists();
    Ok(hubvault::preflight::least_privilege_finding(
        &super::vaults(config)?,
        identity.vault.as_ref(),
        holds,
    )
    .await)
}

pub async fn backup(
    config: &Config,
    global: &Global,
    args: BackupArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    // `commands::run` sends only `backup --hub` here.
    let spec = args
        .hub
        .as_deref()
        .ok_or_else(|| hubvault::Error::usage("backup needs a hub", "pass --hub HUB"))?;
    let (resolved, client) = resolve(spec, config, &args.live)?;
    let staging = Staging::open(args.live.staging.as_deref(), config, client.host())?;
    let store = open_store(config, global)?;
    let recipients = recipients(config, &args.keys)?;
    let signing_key = signing_key(config, global).await?;
    let mut options =
        HubBackupOptions::new(BackupOptions::new(OffsetDateTime::now_utc(), signing_key));
    options.backup.include_configurations = !args.no_configurations;
    options.poll = poll_policy()?;
    options.wait_for_slot = args.live.wait;
    options.shutdown = shutdown;
    if let Some(secs) = env_number(LEFTOVER_ENV, "whole seconds")? {
        options.leftover_age = Some(Duration::from_secs(secs));
    }
    options.export_running = export_running_pause("backup --hub")?;
    let arm = arm_client(config)?;
    let checks = (!args.no_preflight)
        .then(|| checks_for(&resolved, &client, arm.as_ref(), &args.live, options.poll));
    let done = backup::run(store, &client, &staging, &recipients, options, checks).await?;
    let Some(report) = done.backup else {
        let preflight = done.preflight.unwrap_or_else(|| Report::new(Vec::new()));
        return stopped_by_preflight(&preflight, "backup");
    };
    let b = &report.backup;
    let mut human = format!(
        "snapshot {} of {}: {} devices ({} edge), {} modules, {} configurations; export job {}\n",
        b.snapshot,
        b.hub,
        b.devices,
        b.edge_devices,
        b.modules,
        b.configurations,
        b.job_id.as_deref().unwrap_or("?"),
    );
    let _ = writeln!(
        human,
        "deleted {} plaintext staging blob(s) of this run from {}",
        report.staging_deleted,
        staging.location()
    );
    for d in &report.dead_runs {
        let _ = writeln!(human, "{}", d.sentence());
    }
    if report.leftovers_removed > 0 {
        let _ = writeln!(
            human,
            "removed {} staging blob(s) left by an earlier, interrupted run of this hub",
            report.leftovers_removed
        );
    }
    Ok(Outcome::ok(to_json(&report)?, human))
}
