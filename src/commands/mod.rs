//! The binary's edge: maps each parsed command onto the library's use cases and renders the result.
//! No domain decisions here: only argument resolution (flags > env > file > defaults) and output.

mod clone;
mod forget;
mod key;
mod live;
mod progress;
mod restore;
mod snapshots;

use std::sync::Arc;

use anyhow::Result;

use hubvault::config::Config;
use hubvault::keys::{self, IdentityLocation};
use hubvault::pipeline::Identities;
use hubvault::snapshot::catalog::HubNames;
use hubvault::store::{self, Store};

use crate::Outcome;
use crate::cli::{Cli, Command, Global, KeyCommand, Keys, StoreCommand};

pub async fn run(cli: Cli) -> Result<Outcome> {
    let config = Config::load(cli.global.config.as_deref())?;
    let global = &cli.global;
    match cli.command {
        Command::Key(KeyCommand::Init(args)) => key::init(&config, &args),
        Command::Store(StoreCommand::Init) => forget::store_init(&config, global).await,
        Command::Backup(args) if args.hub.is_some() => live::backup(&config, global, args).await,
        Command::Backup(args) => snapshots::backup(&config, global, args).await,
        Command::Snapshots(args) => snapshots::list(&config, global, &args).await,
        Command::Show(args) => snapshots::show(&config, global, &args).await,
        Command::Verify(args) => snapshots::verify(&config, global, args).await,
        Command::Diff(args) if args.to.is_none() => restore::diff_hub(&config, global, args).await,
        Command::Diff(args) => snapshots::diff(&config, global, args).await,
        Command::Restore(args) => restore::run(&config, global, args).await,
        Command::Dump(args) => snapshots::dump(&config, global, args).await,
        Command::Forget(args) => forget::run(&config, global, &args).await,
        Command::Clone(args) => clone::clone(&config, global, args).await,
        Command::Demo(args) => clone::demo(global, &args).await,
        Command::Preflight(args) => live::preflight(&config, global, &args).await,
    }
}

/// Every name the hub given by `--hub` goes by (see [`hubvault::services::hub_names`]).
fn hub_names(config: &Config, spec: Option<&str>) -> Option<HubNames> {
    spec.map(|s| hubvault::services::hub_names(s, config))
}

/// The store named by `--store` / `HUBVAULT_STORE` / config / default.
fn open_store(config: &Config, global: &Global) -> Result<Arc<dyn Store>> {
    Ok(store::open(&config.store(global.store.as_deref()))?)
}

/// Where the identity file is, if any flag, env var or config entry names one.
fn named_identity(config: &Config, keys: &Keys) -> Option<IdentityLocation> {
    config.identity(keys.identity.as_deref())?;
    Some(IdentityLocation::resolve(keys.identity.as_deref(), config))
}

/// Recipients to encrypt to: flags/env/config, plus the identity file's own recipient.
fn recipients(config: &Config, keys: &Keys) -> Result<Vec<age::x25519::Recipient>> {
    let values = config.recipients(&keys.recipients);
    let location = named_identity(config, keys);
    Ok(keys::backup_recipients(&values, location.as_ref())?.into_inner())
}

/// Identities for reading snapshots (the default identity path when nothing names one).
fn identities(config: &Config, keys: &Keys) -> Result<Identities> {
    let location = IdentityLocation::resolve(keys.identity.as_deref(), config);
    Ok(Arc::new(location.load()?.into_boxed()))
}
