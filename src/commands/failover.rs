//! `hubvault failover plan|run|back|status`: arguments → a `failover::run::RunRequest` → the
//! plan, the run document, the HTML report.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use hubvault::config::{Config, FailoverEntry};
use hubvault::device::telemetry::DeviceTarget;
use hubvault::failover::journal::Journal;
use hubvault::failover::plan::Plan;
use hubvault::failover::run::{self, Pause, RunRequest, RunResult, Status, Timeouts};
use hubvault::failover::{Error, Variant, report};
use hubvault::hub::HubClient;
use hubvault::service::hub_run::DEFAULT_LEASE;
use hubvault::service::lease::{Lease, Leases, Owner};

use super::live::arm_client;
use super::{Result, env_number, hub_names, open_store};
use crate::Outcome;
use crate::cli::{FailoverAbandonArgs, FailoverArgs, FailoverRunArgs, FailoverStatusArgs, Global};

/// Test-only: `HUBVAULT_FAULT_PAUSE=<step name>` stops a run after that step's ARM calls, before
/// it is journalled (printing `HUBVAULT_FAULT_PAUSE: paused at <step>`), so a test can kill it.
const FAULT_PAUSE_ENV: &str = "HUBVAULT_FAULT_PAUSE";
/// Test-only: the clock Azure's limits are judged on runs this many seconds ahead.
const CLOCK_SKEW_ENV: &str = "HUBVAULT_FAILOVER_CLOCK_SKEW_SECS";
/// Test-only: sampling tick and consumer wait.
const TICK_ENV: &str = "HUBVAULT_FAILOVER_TICK_MS";
const CONSUMER_TIMEOUT_ENV: &str = "HUBVAULT_FAILOVER_CONSUMER_TIMEOUT_SECS";

struct Parts {
    arm: hubvault::arm::ArmClient,
    hub_id: String,
    client: HubClient,
    target: DeviceTarget,
}

fn parts(config: &Config, hub: &str) -> Result<Parts> {
    let resolved = hubvault::services::resolve_hub(hub, config)?;
    let hub_id = resolved
        .resource_id
        .clone()
        .ok_or_else(|| Error::NoResourceId {
            hub: hub.to_owned(),
        })?;
    let arm = arm_client(config)?.ok_or(Error::NoArm)?;
    let endpoint = match &resolved.target.endpoint {
        Some(u) => u.clone(),
        None => Url::parse(&format!("https://{}", resolved.target.host)).map_err(|e| {
            hubvault::Error::usage(format!("bad hub host: {e}"), "check [hubs] host")
        })?,
    };
    let target = DeviceTarget {
        host: resolved.target.host.clone(),
        endpoint,
    };
    let client = HubClient::new(resolved.target)?;
    Ok(Parts {
        arm,
        hub_id,
        client,
        target,
    })
}

fn entry<'a>(config: &'a Config, hub: &str) -> Result<&'a hubvault::config::FailoverEntry> {
    Ok(config
        .failover
        .get(hub)
        .ok_or_else(|| Error::NotConfigured {
            hub: hub.to_owned(),
            config: config.describe(),
        })?)
}

fn request<'a>(
    config: &'a Config,
    global: &Global,
    args: &FailoverArgs,
    parts: &'a Parts,
) -> Result<RunRequest<'a>> {
    let skew: i64 = env_number(CLOCK_SKEW_ENV, "whole seconds")?.unwrap_or(0);
    let tick: u64 = env_number(TICK_ENV, "whole milliseconds")?.unwrap_or(1000);
    let consumers: u64 = env_number(CONSUMER_TIMEOUT_ENV, "whole seconds")?.unwrap_or(1800);
    Ok(RunRequest {
        hub: hub_static(&args.hub, config),
        hub_id: &parts.hub_id,
        entry: entry(config, &args.hub)?,
        variant: if args.network_failure {
            Variant::NetworkFailure
        } else {
            Variant::Normal
        },
        back: false,
        dry_run: false,
        arm: &parts.arm,
        store: open_store(config, global)?,
        names: hub_names(config, Some(&args.hub))
            .unwrap_or_else(|| hubvault::snapshot::catalog::HubNames::new([&args.hub])),
        hub_client: Some(&parts.client),
        device_target: Some(parts.target.clone()),
        probe_devices: 2,
        http: reqwest::Client::new(),
        now: time::OffsetDateTime::now_utc().saturating_add(time::Duration::seconds(skew)),
        timeouts: Timeouts {
            tick: Duration::from_millis(tick.max(10)),
            consumers: Duration::from_secs(consumers),
            ..Timeouts::default()
        },
        pause: None,
        vaults: vaults(config, &args.hub)?,
    })
}

/// Key Vault access when a consumer's settings go to a secret.
fn vaults(config: &Config, hub: &str) -> Result<Option<hubvault::keys::Vaults>> {
    let wanted = config
        .failover
        .get(hub)
        .is_some_and(|e| e.consumers.iter().any(|c| c.settings_secret.is_some()));
    if !wanted {
        return Ok(None);
    }
    Ok(Some(
        hubvault::keys::Vaults::from_config(config).map_err(Error::from)?,
    ))
}

/// The config's own spelling of the hub name (borrowed from the config, which outlives the run).
fn hub_static<'a>(hub: &str, config: &'a Config) -> &'a str {
    config
        .failover
        .keys()
        .find(|k| *k == hub)
        .map_or("", String::as_str)
}

fn plan_text(plan: &Plan, entry: &FailoverEntry) -> String {
    let mut out = format!(
        "failover plan for {}: {} → {} ({}{})\n",
        plan.hub,
        plan.route.from,
        plan.route.to,
        if plan.route.failback {
            "failback"
        } else {
            "failover"
        },
        if plan.route.variant == Variant::NetworkFailure {
            ", network failure"
        } else {
            ""
        }
    );
    for f in &plan.findings {
        let _ = writeln!(
            out,
            "  [{}] {}",
            serde_json::to_value(&f.level)
                .unwrap_or_default()
                .as_str()
                .unwrap_or(""),
            f.text
        );
    }
    out.push_str("steps and their ARM calls:\n");
    let hub_id = &plan.route.hub_id;
    for s in &plan.steps {
        let _ = writeln!(out, "  {}", s.name);
        for c in s.calls(hub_id) {
            let _ = writeln!(out, "      {}", c.to_string().replace('\n', "\n      "));
        }
        for w in s.other_writes(hub_id, &plan.hub, entry) {
            let _ = writeln!(out, "      also: {w}");
        }
    }
    out
}

fn plan_json(plan: &Plan, entry: &FailoverEntry) -> Value {
    let mut doc = json!(plan);
    let hub_id = &plan.route.hub_id;
    doc["calls"] = plan
        .steps
        .iter()
        .map(|s| {
            json!({"step": s.name, "calls": s.calls(hub_id),
                   "other_writes": s.other_writes(hub_id, &plan.hub, entry)})
        })
        .collect();
    doc
}

pub async fn plan(config: &Config, global: &Global, args: &FailoverArgs) -> Result<Outcome> {
    let parts = parts(config, &args.hub)?;
    let req = request(config, global, args, &parts)?;
    let (plan, _) = run::plan(&req).await?;
    let found = plan.refusal.is_some()
        || plan
            .findings
            .iter()
            .any(|f| f.level != hubvault::failover::plan::Level::Ok);
    Ok(Outcome {
        found_something: found,
        ..Outcome::ok(plan_json(&plan, req.entry), plan_text(&plan, req.entry))
    })
}

pub async fn run(
    config: &Config,
    global: &Global,
    args: &FailoverRunArgs,
    back: bool,
) -> Result<Outcome> {
    let parts = parts(config, &args.target.hub)?;
    let mut req = request(config, global, &args.target, &parts)?;
    req.back = back;
    req.dry_run = args.dry_run;
    req.probe_devices = args.probe_devices;
    req.pause = pause_point();
    let lock = if args.dry_run {
        None
    } else {
        Some(take_lock(config, global, &args.target.hub).await?)
    };
    let result = run::run(&req).await;
    if let Some(lock) = lock {
        if lock.lost() {
            tracing::warn!(
                "the failover lock of {} could not be renewed during the run; another run may have started meanwhile: read `hubvault failover status --hub {}`",
                args.target.hub,
                args.target.hub
            );
        }
        if let Err(e) = lock.release().await {
            tracing::warn!("could not release the failover lock (it lapses by itself): {e}");
        }
    }
    let result = result?;
    if args.dry_run {
        return Ok(dry_run_outcome(&result));
    }
    let Some(record) = &result.run else {
        let reason = result.reason.clone().unwrap_or_default();
        let doc = json!({
            "status": Status::Refused.as_str(), "failover_region": result.plan.as_ref().map(|p| p.route.to.clone()),
            "eventhub_endpoint_before": result.plan.as_ref().map(|p| json!(p.route.events_before)),
            "eventhub_endpoint_after": null, "phases": [], "steps": [], "reason": reason,
        });
        return Ok(Outcome {
            failed: true,
            ..Outcome::ok(doc, format!("refused: {reason}\n"))
        });
    };
    let phases = report::phases(record, &result.samples);
    let doc = report::document(
        result.status.as_str(),
        record,
        &phases,
        result.reason.as_deref(),
    );
    if let Some(path) = &args.report {
        let page = report::page(
            &report::Page {
                title: format!("Failover of {}", args.target.hub),
                status: result.status.as_str(),
                completed: result.status == Status::Completed,
                reason: result.reason.as_deref(),
                command: format!(
                    "hubvault failover {} --hub {}",
                    if back { "back" } else { "run" },
                    args.target.hub
                ),
            },
            record,
            &phases,
        );
        std::fs::write(path, page.html()).map_err(|source| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    let human = run_text(&doc, result.resumed);
    Ok(Outcome {
        failed: result.status != Status::Completed,
        found_something: report::has_findings(record) || result.samples.devices.is_empty(),
        ..Outcome::ok(doc, human)
    })
}

/// One `failover run` or `back` of a hub at a time, across processes and machines: a lease on
/// the store that holds the journal (`failover.<hub>`, beside `serve`'s hub leases). A killed
/// run's lease lapses after its duration, so this waits that long (plus a little) before it
/// refuses: an operator who reruns right after a crash resumes instead of being turned away.
async fn take_lock(config: &Config, global: &Global, hub: &str) -> Result<Lease> {
    let leases = Leases::open(&config.store(global.store.as_deref()))?;
    let ttl = env_number::<u64>("HUBVAULT_LEASE_SECS", "a number of seconds")?
        .map_or(DEFAULT_LEASE, Duration::from_secs);
    let owner = Owner::this_process();
    let key = format!("failover.{hub}");
    let patience = leases.duration(ttl).saturating_add(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        if let Some(lease) = leases.try_acquire(&key, &owner, ttl).await? {
            return Ok(lease);
        }
        if started.elapsed() >= patience {
            return Err(hubvault::Error::usage(
                format!(
                    "another `failover run` or `back` of {hub} holds its lock (taken on the store \
                     that holds the journal). Nothing was changed."
                ),
                format!(
                    "wait for that run to end and read `hubvault failover status --hub {hub}`; a \
                     killed run's lock lapses by itself within {} s, and the next run resumes it",
                    leases.duration(ttl).as_secs()
                ),
            ));
        }
        if !said {
            tracing::warn!(
                "another failover run of {hub} holds its lock; waiting up to {} s for it (a killed run's lock lapses by itself)",
                patience.as_secs()
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn run_text(doc: &Value, resumed: bool) -> String {
    let mut out = format!(
        "failover {}{}: region {}\n",
        doc["status"].as_str().unwrap_or(""),
        if resumed { " (resumed)" } else { "" },
        doc["failover_region"].as_str().unwrap_or("")
    );
    for s in doc["steps"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<8} {}: {}",
            s["outcome"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["detail"].as_str().unwrap_or("")
        );
    }
    for p in doc["phases"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  phase {}: {} → {}",
            p["name"].as_str().unwrap_or(""),
            p["start"].as_str().unwrap_or(""),
            p["end"].as_str().unwrap_or("")
        );
    }
    if let Some(r) = doc["reason"].as_str() {
        let _ = writeln!(
            out,
            "stopped: {r}; run `hubvault failover run` again to resume"
        );
    }
    out
}

fn dry_run_outcome(result: &RunResult) -> Outcome {
    let mut human = String::from("dry run: nothing is changed; a run would make these ARM calls\n");
    let mut steps = Vec::new();
    for (name, calls) in &result.calls {
        let _ = writeln!(human, "  {name}");
        for c in calls {
            let _ = writeln!(human, "      {}", c.to_string().replace('\n', "\n      "));
        }
        let other: &[String] = result
            .other_writes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, w)| w.as_slice());
        for w in other {
            let _ = writeln!(human, "      also: {w}");
        }
        steps.push(json!({"name": name, "calls": calls, "other_writes": other}));
    }
    let doc = json!({"dry_run": true, "resumes": result.resumed, "steps": steps});
    Outcome::ok(doc, human)
}

fn pause_point() -> Option<(String, Pause)> {
    let point = std::env::var(FAULT_PAUSE_ENV).ok()?;
    let pause: Pause = Arc::new(|at: &str| {
        eprintln!("{FAULT_PAUSE_ENV}: paused at {at}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    Some((point, pause))
}

/// `failover abandon`: under the hub's failover lock (never beside a live run), end the run in
/// progress as `abandoned` in the journal, remove its probe devices, and say what it had done.
pub async fn abandon(
    config: &Config,
    global: &Global,
    args: &FailoverAbandonArgs,
) -> Result<Outcome> {
    let lock = take_lock(config, global, &args.hub).await?;
    let result = abandon_locked(config, global, args).await;
    if let Err(e) = lock.release().await {
        tracing::warn!("could not release the failover lock (it lapses by itself): {e}");
    }
    result
}

async fn abandon_locked(
    config: &Config,
    global: &Global,
    args: &FailoverAbandonArgs,
) -> Result<Outcome> {
    let hub = &args.hub;
    let journal = Journal::new(open_store(config, global)?, hub);
    let runs = journal.runs().await.map_err(hubvault::Error::from)?;
    let Some(mut run) = runs.last().filter(|r| r.end.is_none()).cloned() else {
        return Err(hubvault::Error::usage(
            format!("no failover run of {hub} is in progress: there is nothing to abandon"),
            format!("read `hubvault failover status --hub {hub}`"),
        ));
    };
    journal
        .finish(&mut run, "abandoned", time::OffsetDateTime::now_utc())
        .await
        .map_err(hubvault::Error::from)?;
    let ids: Vec<String> = (0..args.probe_devices)
        .map(|i| hubvault::failover::probe::probe_id(&run.id, i))
        .collect();
    let removed = match hubvault::services::resolve_hub(hub, config)
        .and_then(|r| HubClient::new(r.target).map_err(Into::into))
    {
        Ok(client) => Some(hubvault::failover::probe::remove(&client, &ids).await),
        Err(e) => {
            tracing::warn!("the abandoned run's probe devices were not removed ({e})");
            None
        }
    };
    let done: Vec<Value> = run
        .done
        .values()
        .map(|r| json!({"name": r.name, "outcome": r.outcome, "detail": r.detail}))
        .collect();
    let left: Vec<&str> = run
        .plan
        .steps
        .iter()
        .enumerate()
        .filter(|(i, _)| !run.done.contains_key(i))
        .map(|(_, s)| s.name.as_str())
        .collect();
    let mut human = format!(
        "abandoned run {} of {hub} → {}: {} of {} steps were done\n",
        run.id,
        run.plan.route.to,
        done.len(),
        run.plan.steps.len()
    );
    for r in run.done.values() {
        let _ = writeln!(human, "  done     {}: {}", r.name, r.detail);
    }
    for name in &left {
        let _ = writeln!(human, "  not done {name}");
    }
    let _ = writeln!(
        human,
        "hubvault changes nothing more for this run: the hub and its network are as the done steps \
         left them. Finish by hand, or plan afresh from what ARM shows now: `hubvault failover plan --hub {hub}`"
    );
    let doc = json!({"hub": hub, "run": run.id, "state": "abandoned", "failover_region": run.plan.route.to,
        "steps_done": done, "steps_left": left, "probe_devices_removed": removed});
    Ok(Outcome::ok(doc, human))
}

pub async fn status(
    config: &Config,
    global: &Global,
    args: &FailoverStatusArgs,
) -> Result<Outcome> {
    let journal = Journal::new(open_store(config, global)?, &args.hub);
    let runs = journal.runs().await.map_err(hubvault::Error::from)?;
    let Some(last) = runs.last() else {
        return Ok(Outcome::ok(
            json!({"hub": args.hub, "runs": 0}),
            format!("no failover of {} in the journal\n", args.hub),
        ));
    };
    let next = last.next_step().map(|s| s.name.clone());
    let state = match &last.end {
        Some(e) => e.status.clone(),
        None => "in progress (resume with `hubvault failover run`)".to_owned(),
    };
    let done: Vec<Value> = last
        .done
        .values()
        .map(|r| json!({"name": r.name, "outcome": r.outcome, "detail": r.detail}))
        .collect();
    let doc = json!({"hub": args.hub, "runs": runs.len(), "run": last.id, "state": state, "failover_region": last.plan.route.to,
        "variant": last.plan.route.variant, "next_step": next, "steps": done});
    let mut human = format!(
        "run {} of {} → {}: {state}\n",
        last.id, args.hub, last.plan.route.to
    );
    for r in last.done.values() {
        let _ = writeln!(human, "  done {}: {}", r.name, r.detail);
    }
    if let Some(n) = &next {
        let _ = writeln!(human, "  next {n}");
    }
    Ok(Outcome::ok(doc, human))
}
