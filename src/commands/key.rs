//! `key init`.

use serde_json::json;

use hubvault::config::Config;
use hubvault::keys::{self, IdentityLocation};

use super::Result;
use crate::Outcome;
use crate::cli::KeyInitArgs;

pub fn init(config: &Config, args: &KeyInitArgs) -> Result<Outcome> {
    let location = IdentityLocation::resolve(args.identity.as_deref(), config);
    let recipient = keys::init_identity(&location.path)?.to_string();
    let file = location.path.display().to_string();
    eprintln!(
        "created {file} (mode 0600). It opens every snapshot encrypted to it: keep a copy somewhere safe, \
         never next to the backups. Its public recipient (safe to share, used by backup):"
    );
    let json = json!({"recipient": recipient, "identity_file": file});
    Ok(Outcome::ok(json, recipient))
}
