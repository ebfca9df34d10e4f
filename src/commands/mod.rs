//! The binary's edge: maps each parsed command onto the library's use cases and renders the result.
//! No domain decisions here: only argument resolution (flags > env > file > defaults) and output.

mod clone;
mod drill;
mod error;
mod failover;
mod forget;
mod key;
mod live;
mod progress;
mod restore;
mod serve;
mod snapshots;

use std::fmt::Display;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use hubvault::config::Config;
use hubvault::keys::{
    self, IdentityLocation, IdentityOrigin, SigningKey, SigningKeyLocation, Vaults,
};
use hubvault::pipeline::Identities;
use hubvault::repo::{ReadPolicy, Repository};
use hubvault::shutdown::Shutdown;
use hubvault::snapshot::catalog::HubNames;
use hubvault::store::{self, Store};

use crate::Outcome;
use crate::cli::{
    Cli, Command, FailoverCommand, Global, KeyCommand, Keys, PolicyCommand, StoreCommand,
};

pub use error::Error;

/// What every command returns: its outcome, or any hubvault error.
pub type Result<T, E = hubvault::Error> = std::result::Result<T, E>;

/// Run the command; also returns the warnings about settings nothing acts on yet (of the config
/// file, and of policy files the command read).
pub async fn run(cli: Cli) -> (Vec<String>, Result<Outcome>) {
    let mut config = match Config::load(cli.global.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), Err(e.into())),
    };
    let mut warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    if let Err(e) = read_connection_secrets(&mut config, &cli.command).await {
        return (warnings, Err(e));
    }
    let result = dispatch(cli, &config).await.map(|mut outcome| {
        warnings.append(&mut outcome.warnings);
        outcome
    });
    (warnings, result)
}

/// Read from Key Vault the connection strings (`connection-string-secret`) of the hubs this
/// command names, and of `[staging]` when it may run hub jobs.
async fn read_connection_secrets(config: &mut Config, command: &Command) -> Result<()> {
    // `serve` and `run` may back up any hub of the config.
    let every_hub: Vec<String> = match command {
        Command::Serve(_) | Command::Run(_) => config
            .hubs
            .keys()
            .chain(config.dps.keys())
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let (names, staging): (Vec<&str>, bool) = match command {
        Command::Serve(_) | Command::Run(_) => {
            (every_hub.iter().map(String::as_str).collect(), true)
        }
        Command::Backup(a) => (
            a.hub.iter().chain(&a.dps).map(String::as_str).collect(),
            a.hub.is_some(),
        ),
        Command::Restore(a) => (
            a.to.iter().chain(&a.to_dps).map(String::as_str).collect(),
            true,
        ),
        Command::Clone(a) => (vec![a.from.as_str(), a.to.as_str()], true),
        Command::Preflight(a) => (
            a.to.iter().chain(&a.to_dps).map(String::as_str).collect(),
            a.to.is_some(),
        ),
        Command::Drill(a) => (vec![a.to.as_str()], true),
        Command::Diff(a) if a.to.is_none() => (a.hub.hub.as_deref().into_iter().collect(), false),
        _ => (Vec::new(), false),
    };
    let wanted = |name: &&str| config.hubs.contains_key(*name) || config.dps.contains_key(*name);
    let names: Vec<String> = names
        .into_iter()
        .filter(wanted)
        .map(str::to_owned)
        .collect();
    let needs_staging = staging
        && config
            .staging
            .as_ref()
            .is_some_and(|s| s.connection_string_secret.is_some());
    let needs_hubs = names.iter().any(|n| {
        config
            .hubs
            .get(n)
            .or_else(|| config.dps.get(n))
            .is_some_and(|e| e.connection_string_secret.is_some())
    });
    if !needs_staging && !needs_hubs {
        return Ok(());
    }
    let vaults = vaults(config)?;
    hubvault::services::read_connection_secrets(config, &vaults, &names, needs_staging).await?;
    Ok(())
}

async fn dispatch(cli: Cli, config: &Config) -> Result<Outcome> {
    let global = &cli.global;
    let shutdown = on_signals();
    match cli.command {
        Command::Key(KeyCommand::Init(args)) => key::init(config, global, &args).await,
        Command::Key(KeyCommand::Rotate(args)) => key::rotate(config, global, &args).await,
        Command::Key(KeyCommand::ShowRecipient(args)) => {
            key::show_recipient(config, global, &args).await
        }
        Command::Store(StoreCommand::Init) => forget::store_init(config, global).await,
        Command::Backup(args) if args.dps.is_some() => {
            snapshots::backup_dps(config, global, args).await
        }
        Command::Backup(args) if args.hub.is_some() => {
            live::backup(config, global, args, shutdown).await
        }
        Command::Backup(args) => snapshots::backup(config, global, args).await,
        Command::Snapshots(args) => snapshots::list(config, global, &args).await,
        Command::Show(args) => snapshots::show(config, global, &args).await,
        Command::Verify(args) => snapshots::verify(config, global, args).await,
        Command::Diff(args) if args.to.is_none() => restore::diff_hub(config, global, args).await,
        Command::Diff(args) => snapshots::diff(config, global, args).await,
        Command::Restore(args) => restore::run(config, global, args, shutdown).await,
        Command::Dump(args) => snapshots::dump(config, global, args).await,
        Command::Forget(args) => forget::run(config, global, &args).await,
        Command::Clone(args) => clone::clone(config, global, args, shutdown).await,
        Command::Demo(args) => clone::demo(global, &args).await,
        Command::Preflight(args) => live::preflight(config, global, &args).await,
        Command::Drill(args) => drill::run(config, global, args, shutdown).await,
        Command::Failover(FailoverCommand::Plan(args)) => {
            failover::plan(config, global, &args).await
        }
        Command::Failover(FailoverCommand::Run(args)) => {
            failover::run(config, global, &args, false).await
        }
        Command::Failover(FailoverCommand::Back(args)) => {
            failover::run(config, global, &args, true).await
        }
        Command::Failover(FailoverCommand::Status(args)) => {
            failover::status(config, global, &args).await
        }
        Command::Failover(FailoverCommand::Abandon(args)) => {
            failover::abandon(config, global, &args).await
        }
        Command::Policy(PolicyCommand::Check(args)) => serve::policy_check(config, &args),
        Command::Serve(args) => serve::serve(config, global, args, shutdown).await,
        Command::Run(args) => serve::run(config, global, args, shutdown).await,
    }
}

/// The shutdown signal, fired by Ctrl-C or SIGTERM: the use case that started a hub job cancels
/// it and deletes its staging itself (`Staging::abandon`); a second signal is not waited for.
fn on_signals() -> Shutdown {
    let (trigger, shutdown) = hubvault::shutdown::channel();
    tokio::spawn(async move {
        let interrupt = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
        trigger.fire();
    });
    shutdown
}

/// Every name the hub given by `--hub` goes by (see [`hubvault::services::hub_names`]).
fn hub_names(config: &Config, spec: Option<&str>) -> Option<HubNames> {
    spec.map(|s| hubvault::services::hub_names(s, config))
}

/// The repository (the store and its catalog) named by `--store` / `HUBVAULT_STORE` / config /
/// default, its snapshots judged by the trusted signers (and `--allow-unsigned`).
async fn open_repository(
    config: &Config,
    global: &Global,
    allow_unsigned: bool,
) -> Result<Repository> {
    let policy = read_policy(config, global, allow_unsigned).await?;
    Ok(Repository::open(open_store(config, global)?, policy).await?)
}

/// Which snapshots a reader accepts: `--trusted-signer` / `HUBVAULT_TRUSTED_SIGNERS` /
/// `trusted-signers`, plus this host's own signing key; unsigned ones with `--allow-unsigned`.
async fn read_policy(config: &Config, global: &Global, allow_unsigned: bool) -> Result<ReadPolicy> {
    let local = signing_key_location(config, global)?;
    let trusted = keys::trusted_signers(
        &config.trusted_signers(&global.trusted_signers),
        &local,
        &vaults(config)?,
    )
    .await?;
    if allow_unsigned {
        tracing::warn!(
            "--allow-unsigned: unsigned (format 1) snapshots are accepted; anyone who could write \
             to the store could have made one"
        );
    }
    Ok(ReadPolicy {
        trusted,
        allow_unsigned,
    })
}

/// How Key Vault is reached (`[keyvault]`).
fn vaults(config: &Config) -> Result<Vaults> {
    Ok(Vaults::from_config(config).map_err(keys::Error::from)?)
}

/// Where the signing key is: `--signing-key` / `HUBVAULT_SIGNING_KEY` / `signing-key` / default
/// (a file or a Key Vault secret URL).
fn signing_key_location(config: &Config, global: &Global) -> Result<SigningKeyLocation> {
    Ok(SigningKeyLocation::resolve(
        global.signing_key.as_deref(),
        config,
    )?)
}

/// The signing key a backup signs its snapshot with.
async fn signing_key(config: &Config, global: &Global) -> Result<Arc<SigningKey>> {
    let location = signing_key_location(config, global)?;
    Ok(Arc::new(location.load_from(&vaults(config)?).await?))
}

/// The loud line a command that read an unsigned snapshot adds to its warnings.
fn unsigned_warning(m: &hubvault::snapshot::Manifest) -> Option<String> {
    (m.trust == hubvault::snapshot::signature::Trust::Unsigned).then(|| {
        format!(
            "snapshot {}/{} is UNSIGNED (vault format 1) and was used only because of \
             --allow-unsigned: nothing proves a hubvault backup of yours wrote it",
            m.hub, m.id
        )
    })
}

/// The store named by `--store` / `HUBVAULT_STORE` / config / default.
fn open_store(config: &Config, global: &Global) -> Result<Arc<dyn Store>> {
    Ok(store::open(&config.store(global.store.as_deref()))?)
}

/// Where the identities are (file or Key Vault), if any flag, env var or config entry names them.
fn named_identity(config: &Config, keys: &Keys) -> Result<Option<IdentityLocation>> {
    let location = IdentityLocation::resolve(keys.identity.as_deref(), config)?;
    Ok((location.origin != IdentityOrigin::Default).then_some(location))
}

/// Recipients to encrypt to: flags/env/config, plus the identity file's own recipient (never
/// read from Key Vault: a backup host must not be able to).
fn recipients(config: &Config, keys: &Keys) -> Result<Vec<age::x25519::Recipient>> {
    let values = config.recipients(&keys.recipients);
    let location = named_identity(config, keys)?;
    Ok(keys::backup_recipients(&values, location.as_ref())?.into_inner())
}

/// Identities for reading snapshots (the default identity path when nothing names one).
async fn identities(config: &Config, keys: &Keys) -> Result<Identities> {
    Ok(identities_and_recipients(config, keys).await?.0)
}

/// [`identities`], and their public recipients.
async fn identities_and_recipients(
    config: &Config,
    keys: &Keys,
) -> Result<(Identities, Vec<String>)> {
    let location = IdentityLocation::resolve(keys.identity.as_deref(), config)?;
    let loaded = location.load_from(&vaults(config)?).await?;
    let recipients = loaded.recipients().to_strings();
    Ok((Arc::new(loaded.into_boxed()), recipients))
}

/// A report as the `--json` document.
fn to_json<T: Serialize + ?Sized>(report: &T) -> Result<Value> {
    serde_json::to_value(report).map_err(|e| Error::from(e).into())
}

/// A number from the environment variable `var`, when it is set; `unit` says what it must be
/// ("whole seconds").
fn env_number<T>(var: &str, unit: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    let Ok(value) = std::env::var(var) else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|e| {
        hubvault::Error::usage(
            format!("{var}={value:?} is not {unit} ({e})"),
            format!("set {var} to {unit}, or unset it"),
        )
    })
}

/// A test-only pause point named by `var` that this command does not have.
fn unknown_pause_point(var: &str, point: &str, command: &str, known: &str) -> hubvault::Error {
    hubvault::Error::usage(
        format!("{var}={point}: {command} has no such pause point (test-only)"),
        format!("use {known}, or unset {var}"),
    )
}

/// `diff` with one snapshot and no `--hub` (clap normally rules it out).
fn diff_needs_two_sides() -> hubvault::Error {
    hubvault::Error::usage(
        "diff needs a second snapshot or --hub HUB",
        "name a second snapshot, or pass --hub HUB to compare with the live hub",
    )
}
