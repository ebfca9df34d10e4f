//! `hubvault restore` and `hubvault diff SNAPSHOT --hub HUB`: argument resolution and output.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use hubvault::config::Config;
use hubvault::diff::DiffReport;
use hubvault::hub::HubClient;
use hubvault::restore::{self, Engine, Mode, RestoreOptions, Scope, plan::Action};
use hubvault::snapshot::{Manifest, catalog};
use hubvault::store::Store;
use hubvault::target;

use super::{identities, open_store};
use crate::Outcome;
use crate::cli::{DiffArgs, Global, RestoreArgs, RestoreEngine, RestoreMode};

pub async fn run(config: &Config, global: &Global, args: RestoreArgs) -> Result<Outcome> {
    let store = open_store(config, global)?;
    let manifest =
        resolve_snapshot(store.as_ref(), &args.snapshot, args.hub.hub.as_deref()).await?;
    let hub = target::resolve_hub(&args.to, config)?;
    let client = HubClient::new(hub.target)?;
    let only = args
        .only
        .as_deref()
        .map(glob::Pattern::new)
        .transpose()
        .context(
            "--only is not a valid glob (use * ? [abc]); quote it so the shell leaves it alone",
        )?;
    let options = RestoreOptions {
        mode: match args.mode {
            RestoreMode::Create => Mode::Create,
            RestoreMode::Upsert => Mode::Upsert,
            RestoreMode::Mirror => Mode::Mirror,
        },
        only,
        engine: match args.engine {
            RestoreEngine::Job => Engine::Job,
            RestoreEngine::Bulk => Engine::Bulk,
            RestoreEngine::Auto => Engine::Auto,
        },
        dry_run: args.dry_run,
        verify: true,
        preflight: !args.no_preflight,
    };
    let identities = identities(config, &args.keys)?;
    let report = restore::run(store, &manifest, identities, &client, &options).await?;
    let verbose = global.verbose > 0;
    Ok(Outcome {
        json: report.to_json(verbose),
        human: report.human(verbose),
        found_something: report.found_something(),
    })
}

async fn resolve_snapshot(store: &dyn Store, spec: &str, hub: Option<&str>) -> Result<Manifest> {
    let all = catalog::list(store).await?;
    Ok(catalog::resolve(&all, spec, hub, &store.location())?.clone())
}

/// `diff SNAPSHOT --hub HUB`: the snapshot is the older side, the live hub the newer.
pub async fn diff_hub(config: &Config, global: &Global, args: DiffArgs) -> Result<Outcome> {
    let spec = args
        .hub
        .hub
        .as_deref()
        .context("diff needs a second snapshot or --hub HUB")?;
    let store = open_store(config, global)?;
    let hub = target::resolve_hub(spec, config)?;
    let all = catalog::list(store.as_ref()).await?;
    // `latest` means the newest snapshot of this hub if the store has any, else of the only hub.
    let manifest = catalog::resolve(&all, &args.from, Some(&hub.name), &store.location())
        .or_else(|_| catalog::resolve(&all, &args.from, Some(&hub.target.host), &store.location()))
        .or_else(|_| catalog::resolve(&all, &args.from, None, &store.location()))?
        .clone();
    let client = HubClient::new(hub.target)?;
    let identities = identities(config, &args.keys)?;
    let records = restore::snapshot_records(store, &manifest, identities).await?;
    let (plan, _) =
        restore::plan_against(&client, &records, Mode::Mirror, &Scope::default()).await?;
    let mut report = DiffReport::default();
    for item in &plan.items {
        match item.action {
            Action::Create => report.removed.push(item.key()),
            Action::Delete => report.added.push(item.key()),
            Action::Update => report.changed.push((item.key(), item.aspects.clone())),
            Action::Unchanged => report.unchanged += 1,
        }
    }
    let mut human = String::new();
    for key in &report.added {
        let _ = writeln!(human, "+ {key} (only on the hub)");
    }
    for key in &report.removed {
        let _ = writeln!(human, "- {key} (only in the snapshot)");
    }
    for (key, aspects) in &report.changed {
        let names: Vec<&str> = aspects.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(human, "~ {key} ({})", names.join(", "));
    }
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
    })
}
