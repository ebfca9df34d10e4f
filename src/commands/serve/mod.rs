//! `policy check`, `run` and `serve`: the scheduled exporter's edge. Loading policies, building
//! the run context from flags and config, the run log, the metrics endpoint, signals. What a run
//! does and when is the library's (`hubvault::service`).
//!
//! Which policies: `--policy` files or folders (default `policies/`). A named **file** runs
//! alone, but the `forget` after each backup applies every policy of its folder that covers the
//! hub, so a `CronJob` running one policy never deletes what another keeps. If any policy of that
//! set fails to load, `forget` is skipped (and said so): its rules might have kept something.

mod check;
mod daemon;
mod drill;
mod http;
mod log;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use hubvault::config::Config;
use hubvault::forget::TrustRules;
use hubvault::policy::{self, Policy};
use hubvault::service::hub_run::{self, Context, Outcome as RunOutcome, Phase, Report};
use hubvault::service::lease::{Leases, Owner};
use hubvault::service::notify::{HookUrl, Notifier, Targets};
use hubvault::service::slots::Due;
use hubvault::shutdown::Shutdown;

use super::Result;
use crate::Outcome;
use crate::cli::{Global, RunArgs, ScheduleArgs};

pub use check::policy_check;
pub use daemon::serve;

/// Where policies are looked for when no `--policy` is given.
const DEFAULT_POLICY_DIR: &str = "policies";

/// The policies `--policy` names, bound to the config's hub names.
pub struct Loaded {
    /// The policies to run (or check).
    pub run: Vec<Policy>,
    /// Every policy of the folders involved: what `forget` applies.
    pub all: Vec<Policy>,
    /// Files that did not load (reported; the others keep going).
    pub errors: Vec<policy::Error>,
    /// Whether a file of `all` failed to load (then `forget` must not run).
    pub incomplete: bool,
}

impl Loaded {
    /// Read `paths` (files or folders; default `policies/`), one file at a time so one bad file
    /// does not hide the others. An error only if nothing at all could be read.
    pub fn read(paths: &[PathBuf], config: &Config) -> Result<Loaded> {
        let default = [PathBuf::from(DEFAULT_POLICY_DIR)];
        let paths = if paths.is_empty() {
            &default[..]
        } else {
            paths
        };
        let mut loaded = Loaded {
            run: Vec::new(),
            all: Vec::new(),
            errors: Vec::new(),
            incomplete: false,
        };
        for path in paths {
            let (folder, only) = if path.is_dir() {
                (path.clone(), None)
            } else {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                (parent.unwrap_or(Path::new(".")).to_path_buf(), Some(path))
            };
            if let Some(file) = only {
                match Policy::load(file) {
                    Ok(p) => loaded.run.push(p),
                    Err(e) => return Err(e.into()),
                }
            }
            for file in policy_files(&folder)? {
                match Policy::load(&file) {
                    Ok(p) => {
                        if only.is_none() {
                            loaded.run.push(p.clone());
                        }
                        loaded.all.push(p);
                    }
                    Err(e) => {
                        loaded.incomplete = true;
                        if only.is_none() {
                            loaded.errors.push(e);
                        }
                    }
                }
            }
        }
        for p in loaded.run.iter_mut().chain(loaded.all.iter_mut()) {
            p.bind_hubs(|name| hubvault::services::hub_names(name, config));
        }
        dedupe(&mut loaded.run);
        dedupe(&mut loaded.all);
        if loaded.run.is_empty()
            && let Some(e) = loaded.errors.pop()
        {
            return Err(e.into());
        }
        Ok(loaded)
    }
}

impl Loaded {
    /// Keep only the policies to run that are for the store at `location` (a policy without
    /// `store` is for every store); say which were left out.
    pub fn for_store(&mut self, location: &str) {
        let (keep, other): (Vec<Policy>, Vec<Policy>) = std::mem::take(&mut self.run)
            .into_iter()
            .partition(|p| p.applies_to_store(location));
        for p in &other {
            tracing::warn!(policy = %p.name, "its `store` is another store: not run against {location}");
        }
        self.run = keep;
    }
}

fn dedupe(list: &mut Vec<Policy>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|p| seen.insert(p.path.canonicalize().unwrap_or_else(|_| p.path.clone())));
}

/// The `*.toml` files of `dir`, sorted.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| policy::Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// What every run shares, from flags and config.
async fn context(
    config: &Config,
    global: &Global,
    args: &ScheduleArgs,
    loaded: &Loaded,
) -> Result<Context> {
    let location = config.store(global.store.as_deref());
    let mut policies: Vec<Policy> = loaded.all.clone();
    policies.retain(|p| p.applies_to_store(&location));
    if loaded.incomplete {
        tracing::warn!(
            "a policy file did not load: retention (forget) is skipped after backups until it does, since its rules might keep what the others would remove"
        );
    }
    Ok(Context {
        store: super::open_store(config, global)?,
        leases: Leases::open(&location)?,
        location,
        owner: Owner::this_process(),
        lease_ttl: args
            .lease_secs
            .map_or(hub_run::DEFAULT_LEASE, Duration::from_secs),
        recipients: super::recipients(config, &args.keys)?,
        signing_key: super::signing_key(config, global).await?,
        trust: TrustRules {
            read: super::read_policy(config, global, args.trust.allow_unsigned).await?,
            forget_untrusted: false,
        },
        poll: super::live::poll_policy()?,
        forget: !loaded.incomplete,
        policies,
        local_address: args.local.local_address,
        export_running: super::live::export_running_pause("serve and run")?,
        notify: targets(config, &loaded.run).await,
        config: config.clone(),
    })
}

/// Each policy's notification targets: URLs from the environment or Key Vault. A policy whose
/// URL cannot be read is reported and runs without notifications.
async fn targets(config: &Config, policies: &[Policy]) -> BTreeMap<String, Targets> {
    let mut out = BTreeMap::new();
    for p in policies {
        let Some(n) = &p.file.notifications else {
            continue;
        };
        let from_env = |var: &Option<String>, what: &str| {
            let var = var.as_deref()?;
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(HookUrl::new(v.trim())),
                _ => {
                    tracing::error!(policy = %p.name, "{what}: {var} is not set; no {what} for this policy");
                    None
                }
            }
        };
        let mut webhook = from_env(&n.webhook_url_env, "webhook");
        if let (None, Some(url)) = (&webhook, &n.webhook_url_secret) {
            webhook = match webhook_from_vault(config, url).await {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::error!(policy = %p.name, "webhook-url-secret: {e}; no webhook for this policy");
                    None
                }
            };
        }
        let ping = from_env(&n.ping_url_env, "ping");
        out.insert(
            p.name.clone(),
            Targets {
                webhook,
                ping,
                on: n.on.clone(),
            },
        );
    }
    out
}

async fn webhook_from_vault(config: &Config, url: &str) -> Result<HookUrl> {
    let url: hubvault::keys::SecretUrl = url.parse().map_err(hubvault::keys::Error::from)?;
    let versions = super::vaults(config)?
        .read_latest(&url)
        .await
        .map_err(hubvault::keys::Error::from)?;
    let value = versions
        .into_iter()
        .next()
        .map(|v| v.value.trim().to_owned());
    value
        .filter(|v| !v.is_empty())
        .map(HookUrl::new)
        .ok_or_else(|| {
            hubvault::Error::usage(
                format!("the secret {url} has no value"),
                "store the webhook URL in it",
            )
        })
}

/// A policy's run timeout.
fn timeout_of(policies: &[Policy], name: &str) -> Duration {
    policies
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.file.timeout)
        .map_or(hub_run::DEFAULT_TIMEOUT, policy::Interval::as_duration)
}

/// The hubs and DPS instances of `p` found in the config, and the names it lacks.
fn hubs_of(p: &Policy, config: &Config) -> (Vec<String>, Vec<String>) {
    let mut picked = p.file.hubs.pick(config.hubs.keys().map(String::as_str));
    if let Some(dps) = &p.file.dps {
        let more = dps.pick(config.dps.keys().map(String::as_str));
        picked.hubs.extend(more.hubs);
        picked.unknown.extend(more.unknown);
    }
    (picked.hubs, picked.unknown)
}

/// `run`: one pass of every named policy (now), or of every due policy of `policies/` (its
/// latest slot, unless handled already), then exit: 0 all ok, 2 all failed or nothing could
/// run, 3 some hubs failed and others succeeded.
pub async fn run(
    config: &Config,
    global: &Global,
    args: RunArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    Box::pin(run_pass(config, global, args.schedule, shutdown)).await
}

/// [`run`], boxed by it (a drill's future is large).
async fn run_pass(
    config: &Config,
    global: &Global,
    args: ScheduleArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let mut loaded = Loaded::read(&args.policy, config)?;
    loaded.for_store(&config.store(global.store.as_deref()));
    let ctx = context(config, global, &args, &loaded).await?;
    let log = log::RunLog::open(&args.log_format, args.log_file.as_deref())?;
    let named = !args.policy.is_empty();
    let notifier = Notifier::new();
    let now = Utc::now();
    let mut reports: Vec<Report> = Vec::new();
    let mut errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    for p in &loaded.run {
        let (hubs, unknown) = hubs_of(p, config);
        errors.extend(
            unknown
                .iter()
                .map(|h| format!("policy {}: hub {h:?} is not in the config", p.name)),
        );
        if named && hubs.is_empty() && unknown.is_empty() {
            errors.push(format!(
                "policy {} covers no hub of the config; add [hubs.NAME] to hubvault.toml or fix `hubs`",
                p.name
            ));
        }
        let env = drill::DrillEnv {
            config: config.clone(),
            global: global.clone(),
            args: args.clone(),
        };
        let timeout = timeout_of(&loaded.run, &p.name);
        let events = |phase: Phase, r: &Report| log.event(phase, r);
        let targets = ctx.notify.get(&p.name).cloned().unwrap_or_default();
        let backup_slot = slot_for(p, named, now);
        for hub in hubs.iter().filter(|_| backup_slot.is_some()) {
            let (Some(slot), false) = (backup_slot, shutdown.is_requested()) else {
                break;
            };
            let due = Due {
                policy: p.name.clone(),
                hub: hub.clone(),
                slot,
            };
            notifier.started(&targets);
            let report = hub_run::run(&ctx, &due, timeout, &shutdown, &events).await;
            notifier.finished(&targets, &report);
            reports.push(report);
        }
        // Drills follow the backups, so a drill of this pass restores the snapshot just made.
        let Some(section) = &p.file.drill else {
            continue;
        };
        let Some(slot) = drill_slot_for(section, named, now) else {
            continue;
        };
        for hub in drilled(&hubs, section, config) {
            if shutdown.is_requested() {
                break;
            }
            let due = Due {
                policy: p.name.clone(),
                hub,
                slot,
            };
            let report = drill::run(&ctx, &env, section, &due, timeout, &shutdown, &events).await;
            notifier.finished(&targets, &report);
            reports.push(report);
        }
    }
    // Notifications are sent in the background: give them a moment before the process ends.
    notifier.drain(Duration::from_secs(10)).await;
    Ok(run_outcome(&reports, &errors))
}

/// The slot a `run` pass runs `p` for: now when named; else its latest slot (within a year),
/// `None` when it has no schedule.
fn slot_for(p: &Policy, named: bool, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if named {
        return Some(now);
    }
    let schedule = p.file.schedule.as_ref()?;
    let year_ago = now.checked_sub_signed(chrono::TimeDelta::days(366))?;
    hubvault::service::slots::latest_slot(schedule, year_ago, now)
}

/// A drill's figures in words: ` into TO: RTO …, RPO …, restored N/M, left L`.
fn drill_words(d: &hubvault::service::drill_run::DrillFigures) -> String {
    let num = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.1}s"));
    let count = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let mut text = format!(
        " into {}: RTO {}, RPO {}, restored {}/{}",
        d.to,
        num(d.rto_seconds),
        num(d.rpo_seconds),
        count(d.restored),
        count(d.expected)
    );
    if let Some(left) = d.left_on_target {
        let _ = write!(text, ", {left} left after cleanup");
    }
    if let Some(r) = &d.report {
        let _ = write!(text, ", report {r}");
    }
    text
}

/// The slot a `run` pass drills for: now when named; else the `[drill]` schedule's latest slot
/// (within a year).
fn drill_slot_for(
    section: &policy::DrillSection,
    named: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if named {
        return Some(now);
    }
    let year_ago = now.checked_sub_signed(chrono::TimeDelta::days(366))?;
    hubvault::service::slots::latest_slot(&section.schedule(), year_ago, now)
}

/// The hubs of a policy its `[drill]` drills: hubs of the config (not DPS instances), never the
/// scratch hub itself.
fn drilled(hubs: &[String], section: &policy::DrillSection, config: &Config) -> Vec<String> {
    hubs.iter()
        .filter(|h| config.hubs.contains_key(*h) && **h != section.to)
        .cloned()
        .collect()
}

fn run_outcome(reports: &[Report], errors: &[String]) -> Outcome {
    let failed_runs = reports
        .iter()
        .filter(|r| r.outcome == RunOutcome::Failed)
        .count();
    let failed = failed_runs.saturating_add(errors.len());
    let ok = reports.len().saturating_sub(failed_runs);
    let exit_code = match (failed, ok) {
        (0, _) => 0,
        (_, 0) => 2,
        _ => 3,
    };
    let mut human = String::new();
    for r in reports {
        let line = match (&r.outcome, &r.error) {
            (RunOutcome::Ok, _) if r.drill.is_some() => {
                let d = r.drill.as_ref().map(drill_words).unwrap_or_default();
                format!(
                    "{}: drill passed, snapshot {}{d}",
                    r.hub,
                    r.snapshot.as_deref().unwrap_or("?")
                )
            }
            (RunOutcome::Ok, _) => format!(
                "{}: ok, snapshot {} ({} devices)",
                r.hub,
                r.snapshot.as_deref().unwrap_or("?"),
                r.devices.unwrap_or(0)
            ),
            (RunOutcome::Skipped, _) => {
                format!("{}: skipped, this slot was handled already", r.hub)
            }
            (RunOutcome::Stopped, _) => {
                format!("{}: stopped by shutdown, nothing left behind", r.hub)
            }
            (RunOutcome::Failed, e) => format!(
                "{}: FAILED {}",
                r.hub,
                e.as_ref()
                    .map_or(String::new(), |e| format!("[{}] {}", e.code, e.message))
            ),
        };
        human.push_str(&line);
        human.push('\n');
    }
    for e in errors {
        let _ = writeln!(human, "error: {e}");
    }
    if reports.is_empty() && errors.is_empty() {
        human.push_str("nothing was due\n");
    }
    Outcome::ok(
        json!({"runs": reports, "errors": errors, "exit_code": exit_code}),
        human,
    )
}
