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
use super::{Loaded, context, http, hubs_of, log::RunLog, timeout_of};
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
        let Some(schedule) = &p.file.schedule else {
            tracing::warn!(policy = %p.name, "no [schedule]: serve does not run it (`hubvault run --policy` does)");
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
        hubs: std::sync::Mutex::new(hubs_in(&first)),
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
    let notifier = Notifier::new();
    let pending = notifier.clone();
    let start = move |due: Due| {
        let (shared, metrics, log, stop) =
            (shared.clone(), metrics.clone(), log.clone(), stop.clone());
        let notifier = notifier.clone();
        async move {
            let ctx = current(&shared);
            let targets = ctx.notify.get(&due.policy).cloned().unwrap_or_default();
            notifier.started(&targets);
            let timeout = timeout_of(&ctx.policies, &due.policy);
            let events = |phase: Phase, r: &Report| {
                match phase {
                    Phase::Backup => metrics.lease(&r.hub, true),
                    Phase::Done => metrics.lease(&r.hub, false),
                    Phase::Lease | Phase::Forget => {}
                }
                log.event(phase, r);
            };
            let report = hub_run::run(&ctx, &due, timeout, &stop, &events).await;
            metrics.record(&report);
            notifier.finished(&targets, &report);
        }
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
            *r.probe.hubs.lock().unwrap_or_else(PoisonError::into_inner) = hubs_in(&new);
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

/// The hubs of a plan, once each.
fn hubs_in(plan: &Plan) -> Vec<String> {
    let mut hubs: Vec<String> = plan.entries().iter().map(|e| e.hub.clone()).collect();
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
