//! `key init`: the keys of a new store (an age identity and a signing key), or of a backup host
//! (`--signing-only`: the signing key alone).

use serde_json::{Value, json};

use hubvault::config::Config;
use hubvault::keys::{self, IdentityLocation, SigningKey};

use super::{Result, signing_key_location};
use crate::Outcome;
use crate::cli::{Global, KeyInitArgs};

/// Create what is missing, keep what exists (never overwritten), print both public halves. Fails
/// only when there was nothing to create, or a file that exists cannot be read.
pub fn init(config: &Config, global: &Global, args: &KeyInitArgs) -> Result<Outcome> {
    let mut json = json!({});
    let mut lines = Vec::new();
    let mut created = Vec::new();
    let mut first_exists: Option<keys::Error> = None;

    if !args.signing_only {
        let location = IdentityLocation::resolve(args.identity.as_deref(), config);
        let file = location.path.display().to_string();
        let recipient = match keys::init_identity(&location.path) {
            Ok(r) => {
                created.push("identity");
                eprintln!(
                    "created {file} (mode 0600): the age identity. It opens every snapshot encrypted \
                     to it: keep a copy somewhere safe, never next to the backups, and never on a \
                     backup host."
                );
                r.to_string()
            }
            Err(e @ keys::Error::IdentityExists { .. }) => {
                let r = location.load()?.recipients().to_strings().remove(0);
                eprintln!("kept {file}: an identity is there already");
                first_exists.get_or_insert(e);
                r
            }
            Err(e) => return Err(e.into()),
        };
        json["recipient"] = json!(recipient);
        json["identity_file"] = json!(file);
        lines.push(recipient);
    }

    let location = signing_key_location(config, global);
    let file = location.path.display().to_string();
    let signer = match SigningKey::create(&location.path) {
        Ok(key) => {
            created.push("signing_key");
            eprintln!(
                "created {file} (mode 0600): the signing key. Backups sign their snapshots with it; \
                 it decrypts nothing. Put its signer in `trusted-signers` of every host that \
                 restores."
            );
            key.signer().to_string()
        }
        Err(e @ keys::Error::SigningKeyExists { .. }) => {
            let signer = location.load()?.signer().to_string();
            eprintln!("kept {file}: a signing key is there already");
            first_exists.get_or_insert(e);
            signer
        }
        Err(e) => return Err(e.into()),
    };
    json["signer"] = json!(signer);
    json["signing_key_file"] = json!(file);
    lines.push(signer);

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
