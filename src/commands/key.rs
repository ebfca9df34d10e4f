//! `key init`: the keys of a new store (an age identity and a signing key), or of a backup host
//! (`--signing-only`: the signing key alone); either may live in a file or in Key Vault.
//! `key show-recipient`: the public halves of the keys this host is configured with.

use std::path::PathBuf;

use serde_json::{Value, json};

use hubvault::config::Config;
use hubvault::keys::{self, IdentityLocation, SecretUrl, SigningKey, SigningKeyLocation, Vaults};

use std::fmt::Write as _;
use std::sync::Arc;

use hubvault::rotate;

use super::{
    Result, hub_names, identities, open_repository, signing_key, signing_key_location, to_json,
    unknown_pause_point, vaults,
};
use crate::Outcome;
use crate::cli::{Global, KeyInitArgs, KeyRotateArgs, KeyShowArgs};

/// What one step of `key init` did: the public half, and the error to give if nothing at all
/// was created (the key was there already).
struct Step {
    public: String,
    created: bool,
    existed: Option<keys::Error>,
}

/// Create what is missing, keep what exists (never overwritten), print both public halves. Fails
/// only when there was nothing to create, or a key that exists cannot be read.
pub async fn init(config: &Config, global: &Global, args: &KeyInitArgs) -> Result<Outcome> {
    let vaults = vaults(config)?;
    let mut json = json!({});
    let mut lines = Vec::new();
    let mut created = Vec::new();
    let mut first_exists: Option<keys::Error> = None;

    if !args.signing_only {
        let location = match (&args.key_vault, &args.secret) {
            (Some(vault), Some(secret)) => {
                let url = SecretUrl::new(vault, secret).map_err(keys::Error::from)?;
                IdentityLocation {
                    path: PathBuf::from(url.to_string()),
                    origin: keys::IdentityOrigin::FlagOrEnv,
                    vault: Some(url),
                }
            }
            _ => IdentityLocation::resolve(args.identity.as_deref(), config)?,
        };
        let step = init_identity(&vaults, &location, args.new_version, &mut json).await?;
        if step.created {
            created.push("identity");
        }
        first_exists = first_exists.or(step.existed);
        json["recipient"] = json!(step.public);
        let key = if location.vault.is_some() {
            "identity_secret"
        } else {
            "identity_file"
        };
        json[key] = json!(location.describe_short());
        lines.push(step.public);
    }

    let location = signing_key_location(config, global)?;
    let step = init_signing_key(&vaults, &location, args.new_version).await?;
    if step.created {
        created.push("signing_key");
    }
    first_exists = first_exists.or(step.existed);
    json["signer"] = json!(step.public);
    let key = if location.vault.is_some() {
        "signing_key_secret"
    } else {
        "signing_key_file"
    };
    json[key] = json!(location.describe_short());
    lines.push(step.public);

    if created.is_empty()
        && let Some(e) = first_exists
    {
        return Err(e.into());
    }
    json["created"] = Value::from(created);
    eprintln!(
        "{}",
        if args.signing_only {
            "the signer (safe to share; trusted by restore hosts):"
        } else {
            "the recipient (safe to share; backups encrypt to it), then the signer (safe to share; \
             restore hosts trust it):"
        }
    );
    Ok(Outcome::ok(json, lines.join("\n")))
}

/// Create the identity (file or Key Vault secret), or read the recipient of the one there.
async fn init_identity(
    vaults: &Vaults,
    location: &IdentityLocation,
    new_version: bool,
    json: &mut Value,
) -> Result<Step> {
    let shown = location.describe_short();
    let made = match &location.vault {
        Some(url) => {
            if url.version().is_some() {
                return Err(keys::Error::from(keys::keyvault::Error::BadUrl {
                    value: url.to_string(),
                    reason: "key init makes a new version; name the secret without one",
                })
                .into());
            }
            keys::init_identity_in_vault(vaults, url, new_version)
                .await
                .map(|(r, version)| {
                    eprintln!(
                        "created the age identity inside Key Vault secret {url} (version \
                         {version}); it was never written to disk. It opens every snapshot \
                         encrypted to it: give only restore hosts `Key Vault Secrets User` on \
                         this secret, never a backup host."
                    );
                    json["identity_version"] = json!(version);
                    r
                })
        }
        None => keys::init_identity(&location.path).inspect(|_| {
            eprintln!(
                "created {shown} (mode 0600): the age identity. It opens every snapshot \
                 encrypted to it: keep a copy somewhere safe, never next to the backups, and \
                 never on a backup host."
            );
        }),
    };
    match made {
        Ok(r) => Ok(Step {
            public: r.to_string(),
            created: true,
            existed: None,
        }),
        Err(
            e @ (keys::Error::IdentityExists { .. }
            | keys::Error::KeyVault(keys::keyvault::Error::Exists { .. })),
        ) => {
            let ids = location.load_from(vaults).await?;
            eprintln!("kept {shown}: an identity is there already");
            Ok(Step {
                public: ids.recipients().to_strings().remove(0),
                created: false,
                existed: Some(e),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Create the signing key (file or Key Vault secret), or read the signer of the one there.
async fn init_signing_key(
    vaults: &Vaults,
    location: &SigningKeyLocation,
    new_version: bool,
) -> Result<Step> {
    let shown = location.describe_short();
    let made = match &location.vault {
        Some(url) => SigningKey::create_in_vault(vaults, url, new_version)
            .await
            .map(|(key, version)| {
                eprintln!(
                    "created the signing key inside Key Vault secret {url} (version {version}). \
                     Backups sign their snapshots with it; it decrypts nothing. Put its signer in \
                     `trusted-signers` of every host that restores."
                );
                key
            }),
        None => SigningKey::create(&location.path).inspect(|_| {
            eprintln!(
                "created {shown} (mode 0600): the signing key. Backups sign their snapshots with \
                 it; it decrypts nothing. Put its signer in `trusted-signers` of every host that \
                 restores."
            );
        }),
    };
    match made {
        Ok(key) => Ok(Step {
            public: key.signer().to_string(),
            created: true,
            existed: None,
        }),
        Err(
            e @ (keys::Error::SigningKeyExists { .. }
            | keys::Error::KeyVault(keys::keyvault::Error::Exists { .. })),
        ) => {
            let signer = location.load_from(vaults).await?.signer().to_string();
            eprintln!("kept {shown}: a signing key is there already");
            Ok(Step {
                public: signer,
                created: false,
                existed: Some(e),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The recipient(s) of the identity and the signer of the signing key, from wherever they are
/// configured. Either may be missing (a backup host has no identity); neither is an error then,
/// but nothing at all is.
pub async fn show_recipient(
    config: &Config,
    global: &Global,
    args: &KeyShowArgs,
) -> Result<Outcome> {
    let vaults = vaults(config)?;
    let identity = IdentityLocation::resolve(args.identity.as_deref(), config)?;
    let signing = signing_key_location(config, global)?;
    let mut json = json!({});
    let mut lines = Vec::new();
    let recipients = match identity.load_from(&vaults).await {
        Ok(ids) => Some(ids.recipients().to_strings()),
        Err(keys::Error::NoIdentity { .. }) if identity.origin == keys::IdentityOrigin::Default => {
            None
        }
        Err(e) => return Err(e.into()),
    };
    let signer = match signing.load_from(&vaults).await {
        Ok(key) => Some(key.signer().to_string()),
        Err(keys::Error::NoSigningKey { .. })
            if signing.origin == keys::IdentityOrigin::Default =>
        {
            None
        }
        Err(e) => return Err(e.into()),
    };
    if recipients.is_none() && signer.is_none() {
        return Err(keys::Error::NoIdentity {
            looked_in: format!("{} and {}", identity.describe(), signing.describe()),
        }
        .into());
    }
    if let Some(r) = &recipients {
        eprintln!(
            "the recipient{} of {} (safe to share):",
            if r.len() == 1 { "" } else { "s, newest first," },
            identity.describe_short()
        );
        json["recipients"] = json!(r);
        json["identity"] = json!(identity.describe_short());
        lines.extend(r.iter().cloned());
    }
    if let Some(s) = &signer {
        json["signer"] = json!(s);
        json["signing_key"] = json!(signing.describe_short());
        lines.push(s.clone());
    }
    Ok(Outcome::ok(json, lines.join("\n")))
}

/// Test-only: `HUBVAULT_FAULT_PAUSE=after-objects|after-signature|after-manifest|after-cleanup`
/// stops `key rotate` there (printing `HUBVAULT_FAULT_PAUSE: paused at <point>`), so a test can
/// kill it at that exact point. Never set it in production.
const FAULT_PAUSE_ENV: &str = "HUBVAULT_FAULT_PAUSE";

/// `key rotate`: re-seal to the new set; exit 1 when some snapshots were left as they were.
pub async fn rotate(config: &Config, global: &Global, args: &KeyRotateArgs) -> Result<Outcome> {
    let values = if args.to.is_empty() {
        config.recipients(&args.keys.recipients)
    } else {
        args.to.clone()
    };
    let to = keys::Recipients::parse(&values)?.require_some()?;
    let repo = open_repository(config, global, args.trust.allow_unsigned).await?;
    let pause = match std::env::var(FAULT_PAUSE_ENV) {
        Ok(point) if rotate::PAUSE_POINTS.contains(&point.as_str()) => {
            let shown = point.clone();
            let f: rotate::Pause = Arc::new(move || {
                eprintln!("{FAULT_PAUSE_ENV}: paused at {shown}");
                std::thread::sleep(std::time::Duration::from_secs(600));
            });
            Some((point, f))
        }
        Ok(point) => {
            return Err(unknown_pause_point(
                FAULT_PAUSE_ENV,
                &point,
                "key rotate",
                &rotate::PAUSE_POINTS.join(", "),
            ));
        }
        Err(_) => None,
    };
    let options = rotate::RotateOptions {
        to: to.into_inner(),
        hub: hub_names(config, args.hub.as_deref()),
        dry_run: args.dry_run,
        allow_unsigned: args.trust.allow_unsigned,
        signing_key: signing_key(config, global).await?,
        identities: if args.dry_run {
            Arc::new(Vec::new())
        } else {
            identities(config, &args.keys).await?
        },
        pause,
    };
    let manifests = repo.listing().manifests.clone();
    let verb = if args.dry_run {
        "would re-seal"
    } else {
        "re-sealed"
    };
    let report = rotate::run(repo.store(), manifests, &options, &|done, of, label| {
        eprintln!("[{done}/{of}] {label}");
    })
    .await?;
    let mut human = String::new();
    for r in &report.resealed {
        let _ = writeln!(
            human,
            "{verb} {}/{}: generation {} → {}",
            r.hub, r.id, r.from_generation, r.to_generation
        );
    }
    for (what, list) in [
        ("left as it is (not trusted)", &report.untrusted),
        ("left as it is (could not open)", &report.not_opened),
    ] {
        for l in list {
            let _ = writeln!(human, "{what}: {}/{}: {}", l.hub, l.id, l.reason);
        }
    }
    let _ = writeln!(
        human,
        "{} snapshot(s) {verb}, {} already sealed to the new set, {} left as they were; {} \
         object(s) of older generations removed. Recipients now: {}",
        report.resealed.len(),
        report.already.len(),
        report
            .untrusted
            .len()
            .saturating_add(report.not_opened.len()),
        report.removed_objects,
        report.recipients.join(", ")
    );
    let complete = report.complete();
    let mut outcome = Outcome::ok(to_json(&report)?, human);
    outcome.found_something = !complete;
    Ok(outcome)
}
