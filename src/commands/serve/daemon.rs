//! `serve`: load policies, schedule every (policy, hub), run them under the store's leases until
//! SIGTERM/SIGINT (running runs end or abandon cleanly; exit 0). SIGHUP re-reads the policies;
//! a policy that fails to load is reported and the others keep running.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::mpsc;

use hubvault::config::Config;
use hubvault::service::hub_run::{self, Context, Phase, Report};
use hubvault::service::metrics::Metrics;
use hubvault::service::notify::Notifier;
use hubvault::service::scheduler::{self, Clock, Observer, Settings};
use hubvault::service::slots::{Due, Plan};
use hubvault::shutdown::Shutdown;

use super::super::Result;
use super::{Loaded, context, drill, http, hubs_of, log::RunLog, timeout_of};
use crate::Outcome;
use crate::cli::{Global, ServeArgs};

/// The context every run reads; replaced on SIGHUP.
type Shared = Arc<RwLock<Arc<Context>>>;

fn current(shared: &Shared) -> Arc<Context> {
    shared
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

struct Watch {
    metrics: Arc<Metrics>,
    ctx: Shared,
}

impl Observer for Watch {
    fn still_running(&self, due: &Due) {
        tracing::warn!(
            policy = %due.policy, hub = %due.hub,
            "slot {} skipped: the previous run of this hub under this policy is still going",
            due.slot
        );
    }

    fn planned(&self, plan: &Plan) {
        self.metrics.next_runs(&plan.next_by_policy());
    }

    fn jitter(&self, due: &Due) -> Duration {
        let ctx = current(&self.ctx);
        let max = ctx
            .policies
            .iter()
            .find(|p| p.name == due.policy)
            .and_then(|p| p.file.jitter)
            .map_or(Duration::ZERO, hubvault::policy::Interval::as_duration);
        scheduler::jitter_for(due, max)
    }
}

/// Every scheduled (policy, hub) of `loaded`, each starting from its last handled slot in the
/// store's status record (a missed slot then runs once), or from now.
async fn plan(loaded: &Loaded, config: &Config, ctx: &Context, metrics: &Metrics) -> Plan {
    let mut plan = Plan::default();
    let now = Utc::now();
    for p in &loaded.run {
        let (hubs, unknown) = hubs_of(p, config);
        for h in unknown {
            tracing::error!(policy = %p.name, "hub {h:?} is not in the config: it is not scheduled");
        }
        if let Some(section) = &p.file.drill {
            plan_drills(
                &mut plan,
                p,
                section,
                &super::drilled(&hubs, section, config),
                ctx,
                metrics,
            )
            .await;
        }
        let Some(schedule) = &p.file.schedule else {
            if p.file.drill.is_none() {
                tracing::warn!(policy = %p.name, "no [schedule]: serve does not run it (`hubvault run --policy` does)");
            }
            continue;
        };
        for hub in hubs {
            let status = match ctx.leases.read_status(&hub).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(hub, "could not read the hub's status record: {e}");
                    hubvault::service::status::HubStatus::default()
                }
            };
            metrics.status(&hub, &status);
            let last = status.slots.get(&p.name).copied().unwrap_or(now);
            plan.add(&p.name, &hub, schedule, last.min(now));
        }
    }
    plan
}

/// The drills of `p` into its scratch hub, each from its last slot in the scratch hub's status
/// record (which also sets the drill gauges).
async fn plan_drills(
    plan: &mut Plan,
    p: &hubvault::policy::Policy,
    section: &hubvault::policy::DrillSection,
    hubs: &[String],
    ctx: &Context,
    metrics: &Metrics,
) {
    let now = Utc::now();
    let status = match ctx.leases.read_status(&section.to).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(hub = %section.to, "could not read the scratch hub's status record: {e}");
            hubvault::service::status::HubStatus::default()
        }
    };
    metrics.drill_status(&status);
    let schedule = section.schedule();
    for hub in hubs {
        let key = hubvault::service::drill_run::slot_key(&p.name, hub);
        let last = status.slots.get(&key).copied().unwrap_or(now);
        plan.add(&drill::plan_name(&p.name), hub, &schedule, last.min(now));
    }
}

/// The scratch hubs of the drills of `loaded` (their records carry the drill gauges).
fn scratch_hubs(loaded: &Loaded) -> Vec<String> {
    loaded
        .run
        .iter()
        .filter_map(|p| p.file.drill.as_ref().map(|d| d.to.clone()))
        .collect()
}

pub async fn serve(
    config: &Config,
    global: &Global,
    args: ServeArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let sched = &args.schedule;
    let mut loaded = Loaded::read(&sched.policy, config)?;
    loaded.for_store(&config.store(global.store.as_deref()));
    for e in &loaded.errors {
        tracing::error!("{e}");
    }
    let metrics = Arc::new(Metrics::new());
    let ctx = context(config, global, sched, &loaded).await?;
    let first = plan(&loaded, config, &ctx, &metrics).await;
    let probe = Arc::new(http::Probe {
        metrics: metrics.clone(),
        leases: ctx.leases.clone(),
        loaded: (!first.entries().is_empty()).into(),
        hubs: std::sync::Mutex::new(hubs_in(&first, scratch_hubs(&loaded))),
    });
    spawn_gauge_refresh(probe.clone(), shutdown.clone());
    if let Some(addr) = args.metrics {
        http::start(addr, probe.clone(), shutdown.clone()).await?;
    }
    let shared: Shared = Arc::new(RwLock::new(Arc::new(ctx)));
    let log = Arc::new(RunLog::open(&sched.log_format, sched.log_file.as_deref())?);
    let (reload_tx, reload) = mpsc::channel(1);
    spawn_reload(
        Reload {
            config: config.clone(),
            paths: sched.policy.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            probe,
        },
        reload_tx,
    );
    eprintln!(
        "serving {} scheduled run(s) of {} policy file(s); SIGHUP re-reads them, SIGTERM stops",
        first.entries().len(),
        loaded.run.len()
    );
    let watch = Watch {
        metrics: metrics.clone(),
        ctx: shared.clone(),
    };
    let settings = Settings {
        concurrency: args.concurrency,
        ..Settings::default()
    };
    let stop = shutdown.clone();
    let env = Arc::new(drill::DrillEnv {
        config: config.clone(),
        global: global.clone(),
        args: sched.clone(),
    });
    let notifier = Notifier::new();
    let pending = notifier.clone();
    let start = move |due: Due| {
        let runner = Runner {
            shared: shared.clone(),
            metrics: metrics.clone(),
            log: log.clone(),
            stop: stop.clone(),
            notifier: notifier.clone(),
            env: env.clone(),
        };
        async move { runner.run(due).await }
    };
    scheduler::serve(
        first,
        Clock::System,
        settings,
        reload,
        shutdown,
        &watch,
        start,
    )
    .await;
    // Messages of the last runs are still being sent: give them a moment.
    pending.drain(Duration::from_secs(10)).await;
    Ok(Outcome::ok(
        json!({"stopped": true}),
        "stopped: no run is left running\n",
    ))
}

/// What each scheduled run (a backup or a drill) shares.
struct Runner {
    shared: Shared,
    metrics: Arc<Metrics>,
    log: Arc<RunLog>,
    stop: Shutdown,
    notifier: Notifier,
    env: Arc<drill::DrillEnv>,
}

impl Runner {
    /// One due run: a backup, or (for a `drill:` entry) the policy's drill.
    async fn run(self, due: Due) {
        let Runner {
            shared,
            metrics,
            log,
            stop,
            notifier,
            env,
        } = self;
        let ctx = current(&shared);
        let named = drill::drill_policy(&due.policy)
            .unwrap_or(&due.policy)
            .to_owned();
        let targets = ctx.notify.get(&named).cloned().unwrap_or_default();
        notifier.started(&targets);
        let timeout = timeout_of(&ctx.policies, &due.policy);
        let events = |phase: Phase, r: &Report| {
            let leased = r.drill.as_ref().map_or(r.hub.as_str(), |d| d.to.as_str());
            match phase {
                Phase::Backup | Phase::Drill => metrics.lease(leased, true),
                Phase::Done => metrics.lease(leased, false),
                Phase::Lease | Phase::Forget => {}
            }
            log.event(phase, r);
        };
        let report = match drill::drill_policy(&due.policy).map(str::to_owned) {
            Some(policy) => {
                let section = ctx
                    .policies
                    .iter()
                    .find(|p| p.name == policy)
                    .and_then(|p| p.file.drill.clone());
                let Some(section) = section else {
                    return;
                };
                let timeout = timeout_of(&ctx.policies, &policy);
                let due = Due {
                    policy,
                    ..due.clone()
                };
                drill::run(&ctx, &env, &section, &due, timeout, &stop, &events).await
            }
            None => hub_run::run(&ctx, &due, timeout, &stop, &events).await,
        };
        metrics.record(&report);
        notifier.finished(&targets, &report);
    }
}

/// What SIGHUP needs to re-read policies.
struct Reload {
    config: Config,
    paths: Vec<std::path::PathBuf>,
    shared: Shared,
    metrics: Arc<Metrics>,
    probe: Arc<http::Probe>,
}

/// On SIGHUP: re-read the policy files, swap them into the context, and hand the loop a new plan
/// (each entry from its last slot in the store). A file that fails is reported and the policies
/// that load keep running; if none loads, the old plan stays. The handler is installed before
/// this returns, so a SIGHUP sent once `serve` says it is serving never meets the default action
/// (which ends the process).
fn spawn_reload(r: Reload, tx: mpsc::Sender<Plan>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::error!("SIGHUP cannot be handled ({e}): restart serve to re-read policies");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let mut loaded = match Loaded::read(&r.paths, &r.config) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("SIGHUP: policies not re-read, the old ones keep running: {e}");
                    continue;
                }
            };
            for e in &loaded.errors {
                tracing::error!("SIGHUP: {e}");
            }
            let mut ctx = (*current(&r.shared)).clone();
            loaded.for_store(&ctx.location);
            ctx.policies = loaded.all.clone();
            ctx.policies.retain(|p| p.applies_to_store(&ctx.location));
            ctx.forget = !loaded.incomplete;
            ctx.notify = super::targets(&r.config, &loaded.run).await;
            let new = plan(&loaded, &r.config, &ctx, &r.metrics).await;
            r.probe
                .loaded
                .store(!new.entries().is_empty(), Ordering::Relaxed);
            *r.probe.hubs.lock().unwrap_or_else(PoisonError::into_inner) =
                hubs_in(&new, scratch_hubs(&loaded));
            *r.shared.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ctx);
            eprintln!(
                "SIGHUP: {} scheduled run(s) of {} policy file(s)",
                new.entries().len(),
                loaded.run.len()
            );
            if tx.send(new).await.is_err() {
                return;
            }
        }
    });
}

/// The hubs of a plan and the scratch hubs of its drills, once each.
fn hubs_in(plan: &Plan, scratch: Vec<String>) -> Vec<String> {
    let mut hubs: Vec<String> = plan.entries().iter().map(|e| e.hub.clone()).collect();
    hubs.extend(scratch);
    hubs.sort();
    hubs.dedup();
    hubs
}

/// How often the store-state gauges are re-read from the status records, so a replica that
/// ran nothing still reports what the others did.
const GAUGE_REFRESH: Duration = Duration::from_secs(30);

fn spawn_gauge_refresh(probe: Arc<http::Probe>, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(GAUGE_REFRESH) => {}
            }
            let hubs = probe
                .hubs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for hub in hubs {
                if let Ok(status) = probe.leases.read_status(&hub).await {
                    probe.metrics.status(&hub, &status);
                }
            }
        }
    });
}
