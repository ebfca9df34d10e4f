//! Where age keys come from: public recipients for backup, identities (secret keys) for restore.
//!
//! Backup needs only [`Recipients`] (public `age1…` keys), so a stolen backup host cannot read
//! history. Reading a snapshot needs [`Identities`], from an identity file that must be private to
//! its owner (mode 0600, see [`identity_file`]) or from an Azure Key Vault secret ([`keyvault`]):
//! wherever a file path is accepted, a secret URL works too ([`IdentityLocation::load_from`],
//! [`SigningKeyLocation::load_from`]).
//!
//! This module must never let a secret key reach `Debug`, `Display`, an error or a log line: the
//! wrapper types redact, and errors name files and line numbers, never their contents.

pub mod identity_file;
pub mod keyvault;
pub mod signing;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr as _;

use crate::diagnostic::{Diagnostic, fix_text};

pub use identity_file::{
    IdentityLocation, IdentityOrigin, default_identity_path, init_identity, init_identity_in_vault,
    load_identities,
};
pub use keyvault::{SecretUrl, Vaults};
pub use signing::{
    DEFAULT_SIGNING_KEY, Signer, SigningKey, SigningKeyLocation, TrustedSigners, trusted_signers,
};

/// The prefix of an age X25519 secret key; used to recognise (and never echo) misplaced secrets.
const SECRET_KEY_PREFIX: &str = "AGE-SECRET-KEY-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "recipient #{position} ({shape}) is not an age public key ({reason}); {}. The value is not \
         shown: a misplaced secret (an identity file's text, a connection string) must not reach logs",
        fix_text(self)
    )]
    BadRecipient {
        /// 1-based position among the recipients given.
        position: usize,
        /// What the value looks like, without any of its content.
        shape: String,
        reason: &'static str,
    },
    #[error(
        "a secret age identity (AGE-SECRET-KEY-…) was given where a public recipient is expected; {}",
        fix_text(self)
    )]
    SecretGivenAsRecipient,
    #[error(
        "no recipients: backup encrypts to public age keys; {}",
        fix_text(self)
    )]
    NoRecipients,
    #[error("no age identity found (looked in {looked_in}); {}", fix_text(self))]
    NoIdentity { looked_in: String },
    #[error(
        "identity file {path} already exists; refusing to overwrite a secret key. {}",
        fix_text(self)
    )]
    IdentityExists { path: PathBuf },
    #[error(
        "identity file {path} is readable by other users (mode {mode:03o}); it holds a secret key. {}",
        fix_text(self)
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error(
        "identity file {path} is {kind}, not a regular file; {}",
        fix_text(self)
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "identity file {path} belongs to user id {owner}, not to this user (id {me}) or root; another \
         user could change it. {}",
        fix_text(self)
    )]
    WrongOwner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "the folder of identity file {path}, {folder}, can be written by other users or belongs to \
         another user (mode {mode:03o}, owner id {owner}): they could replace the file. {}",
        fix_text(self)
    )]
    InsecureFolder {
        folder: PathBuf,
        path: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error(
        "identity file {path}, line {line}: not an age identity ({reason}); {}",
        fix_text(self)
    )]
    BadIdentity {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error(
        "identity file {path} holds no AGE-SECRET-KEY-1… line; {}",
        fix_text(self)
    )]
    EmptyIdentityFile { path: PathBuf },
    #[error(
        "signer ({shape}) is not a hubvault signing public key ({reason}); {}",
        fix_text(self)
    )]
    BadSigner { shape: String, reason: &'static str },
    #[error(
        "trusted signer #{position} ({shape}) is not a hubvault signing public key ({reason}); {}",
        fix_text(self)
    )]
    BadTrustedSigner {
        position: usize,
        shape: String,
        reason: &'static str,
    },
    #[error("no signing key found (looked in {looked_in}); {}", fix_text(self))]
    NoSigningKey { looked_in: String },
    #[error("signing key file {path}: {reason}; {}", fix_text(self))]
    BadSigningKey { path: PathBuf, reason: &'static str },
    #[error(
        "signing key file {path} already exists; refusing to overwrite a secret key. {}",
        fix_text(self)
    )]
    SigningKeyExists { path: PathBuf },
    #[error("the system could not make a new key; {}", fix_text(self))]
    KeyGeneration,
    #[error(
        "Key Vault secret {secret} is not {what} (line {line}: {reason}); {}",
        fix_text(self)
    )]
    BadVaultKey {
        what: &'static str,
        secret: String,
        /// 1-based; 0 when the whole value is wrong.
        line: usize,
        reason: &'static str,
    },
    #[error("the {what} is in Key Vault ({secret}) and was asked for where only files are read")]
    VaultNeeded { what: &'static str, secret: String },
    #[error(transparent)]
    KeyVault(#[from] keyvault::Error),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::BadRecipient { .. } => "vault_bad_recipient",
            Error::SecretGivenAsRecipient => "vault_secret_given_as_recipient",
            Error::NoRecipients => "vault_no_recipients",
            Error::NoIdentity { .. } => "vault_no_identity",
            Error::IdentityExists { .. } => "vault_identity_exists",
            Error::InsecurePermissions { .. } => "vault_insecure_permissions",
            Error::NotAFile { .. } => "vault_identity_not_a_file",
            Error::WrongOwner { .. } => "vault_identity_wrong_owner",
            Error::InsecureFolder { .. } => "vault_insecure_folder",
            Error::BadIdentity { .. } => "vault_bad_identity",
            Error::EmptyIdentityFile { .. } => "vault_empty_identity_file",
            Error::BadSigner { .. } => "vault_bad_signer",
            Error::BadTrustedSigner { .. } => "vault_bad_trusted_signer",
            Error::NoSigningKey { .. } => "vault_no_signing_key",
            Error::BadSigningKey { .. } => "vault_bad_signing_key",
            Error::SigningKeyExists { .. } => "vault_signing_key_exists",
            Error::KeyGeneration => "vault_key_generation",
            Error::BadVaultKey { .. } => "keyvault_not_a_key",
            Error::VaultNeeded { .. } => "keyvault_needed",
            Error::KeyVault(e) => e.code(),
            Error::Io { .. } => "vault_io",
        }
    }

    fn fix(&self) -> Option<String> {
        Some(match self {
            Error::BadRecipient { .. } => {
                "recipients look like age1… and are printed by `hubvault key init`".to_owned()
            }
            Error::SecretGivenAsRecipient => "pass its public key (age1…, printed by `hubvault \
                 key init`) instead, and treat that secret as exposed"
                .to_owned(),
            Error::NoRecipients => "pass --recipient age1… or --identity FILE, set \
                 HUBVAULT_RECIPIENTS, or add `recipients = [\"age1…\"]` to hubvault.toml"
                .to_owned(),
            Error::NoIdentity { .. } => "create one with `hubvault key init`, or point to an \
                 existing one with --identity FILE (or HUBVAULT_IDENTITY, or `identity` in \
                 hubvault.toml)"
                .to_owned(),
            Error::IdentityExists { .. } => "Use it as it is, choose another path with \
                 --identity FILE, or move the old file away first (snapshots encrypted to it can \
                 only be read with it)"
                .to_owned(),
            Error::InsecurePermissions { path, .. } => {
                format!("Fix it with `chmod 600 {}`", path.display())
            }
            Error::NotAFile { .. } => "point --identity (or HUBVAULT_IDENTITY, or `identity` in \
                 hubvault.toml) at the file `hubvault key init` wrote"
                .to_owned(),
            Error::WrongOwner { path, me, .. } => format!(
                "Fix it with `chown {me} {}` (or run hubvault as its owner)",
                path.display()
            ),
            Error::InsecureFolder { folder, .. } => format!(
                "Fix it with `chmod go-w {}`, or move the identity into a private folder",
                folder.display()
            ),
            Error::BadIdentity { .. } => "expected AGE-SECRET-KEY-1… lines".to_owned(),
            Error::EmptyIdentityFile { .. } => "create one with `hubvault key init`".to_owned(),
            Error::BadSigner { .. } => "signers look like hvsig1… and are printed by `hubvault \
                 key init` on the backup host"
                .to_owned(),
            Error::BadTrustedSigner { .. } => "trusted signers look like hvsig1…: fix the entry \
                 of --trusted-signer, HUBVAULT_TRUSTED_SIGNERS or `trusted-signers` in \
                 hubvault.toml (`hubvault key init` prints a backup host's signer)"
                .to_owned(),
            Error::NoSigningKey { .. } => "a backup signs what it writes: create a signing key \
                 with `hubvault key init` (or `hubvault key init --signing-only` on a backup host), \
                 or point to one with --signing-key FILE (or HUBVAULT_SIGNING_KEY, or `signing-key` \
                 in hubvault.toml)"
                .to_owned(),
            Error::BadSigningKey { .. } => "point --signing-key at the PEM file `hubvault key \
                 init` wrote (a PKCS#8 Ed25519 private key)"
                .to_owned(),
            Error::SigningKeyExists { .. } => "Use it as it is, choose another path with \
                 --signing-key FILE, or move the old file away first (restore hosts trust its \
                 public key)"
                .to_owned(),
            Error::KeyGeneration => "run the command again".to_owned(),
            Error::BadVaultKey { .. } => "point the setting at the secret `hubvault key init \
                 --key-vault` wrote, or pin a version that holds the key \
                 (https://…/secrets/NAME/VERSION)"
                .to_owned(),
            Error::KeyVault(e) => return e.fix(),
            Error::VaultNeeded { .. } | Error::Io { .. } => return None,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parse one public recipient (the `position`-th given, 1-based). A value that does not parse is
/// never echoed: it may be a secret pasted into the wrong place (a secret key, an identity file's
/// text, a connection string). A secret age key is recognised and named as such.
pub fn parse_recipient(value: &str, position: usize) -> Result<age::x25519::Recipient> {
    let value = value.trim();
    if value
        .to_ascii_uppercase()
        .contains(SECRET_KEY_PREFIX.trim_end_matches('-'))
    {
        return Err(Error::SecretGivenAsRecipient);
    }
    age::x25519::Recipient::from_str(value).map_err(|reason| Error::BadRecipient {
        position,
        shape: shape_of(value),
        reason,
    })
}

/// A description of a rejected value that carries none of its content: its length, and whether
/// it has the `age1` prefix (a typo) or looks like something else entirely.
fn shape_of(value: &str) -> String {
    let chars = value.chars().count();
    let kind = if value.starts_with("age1") {
        "starts with age1"
    } else if value.contains('=') || value.contains(';') {
        "looks like a connection string or URL, not a key"
    } else if value.contains('\n') || value.contains(' ') {
        "holds spaces or several lines"
    } else {
        "does not start with age1"
    };
    format!("{chars} characters, {kind}")
}

/// The public keys a snapshot is encrypted to. Order is kept and duplicates are dropped, so the
/// manifest's `recipients` list is stable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl Recipients {
    /// Parse `age1…` strings (flags, `HUBVAULT_RECIPIENTS`, config). Empty strings are ignored
    /// (a trailing comma in the environment variable).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Recipients> {
        let mut out = Recipients::default();
        for (i, v) in values
            .iter()
            .map(AsRef::as_ref)
            .filter(|v| !v.trim().is_empty())
            .enumerate()
        {
            out.push(parse_recipient(v, i.saturating_add(1))?);
        }
        Ok(out)
    }

    /// Add one recipient unless already present.
    pub fn push(&mut self, recipient: age::x25519::Recipient) {
        if !self.0.contains(&recipient) {
            self.0.push(recipient);
        }
    }

    /// Add the public half of every identity (an identity file also yields its recipient).
    pub fn extend_from(&mut self, identities: &Identities) {
        for r in identities.recipients().0 {
            self.push(r);
        }
    }

    /// Fail with a message saying where recipients come from when there are none.
    pub fn require_some(self) -> Result<Recipients> {
        if self.0.is_empty() {
            Err(Error::NoRecipients)
        } else {
            Ok(self)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &age::x25519::Recipient> {
        self.0.iter()
    }

    /// The form `age::Encryptor::with_recipients` takes.
    pub fn as_dyn(&self) -> Vec<&dyn age::Recipient> {
        self.0.iter().map(|r| r as &dyn age::Recipient).collect()
    }

    /// The recipients themselves, for APIs that take a `Vec`.
    pub fn into_inner(self) -> Vec<age::x25519::Recipient> {
        self.0
    }

    /// `age1…` strings, e.g. for the manifest's `recipients`.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// Secret age identities that can open snapshots. `Debug` shows only how many there are and their
/// public keys; there is no `Display`, and no way to get the secret back out as text.
#[derive(Clone, Default)]
pub struct Identities(Vec<age::x25519::Identity>);

impl Identities {
    pub(crate) fn from_vec(ids: Vec<age::x25519::Identity>) -> Identities {
        Identities(ids)
    }

    /// Generate one fresh identity (tests, throw-away keys).
    pub fn generate() -> Identities {
        Identities(vec![age::x25519::Identity::generate()])
    }

    /// The public keys that match these identities.
    pub fn recipients(&self) -> Recipients {
        let mut r = Recipients::default();
        for id in &self.0 {
            r.push(id.to_public());
        }
        r
    }

    /// Boxed, shareable across threads (for a pipeline that opens objects concurrently).
    pub fn into_boxed(self) -> Vec<Box<dyn age::Identity + Send + Sync>> {
        self.0
            .into_iter()
            .map(|i| Box::new(i) as Box<dyn age::Identity + Send + Sync>)
            .collect()
    }

    /// The form `age::Decryptor::decrypt` takes.
    pub fn as_dyn(&self) -> Vec<&dyn age::Identity> {
        self.0.iter().map(|i| i as &dyn age::Identity).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("secret_keys", &"<redacted>")
            .field("recipients", &self.recipients())
            .finish()
    }
}

/// The recipients a backup encrypts to: the given `age1…` strings, plus the public half of the
/// identity file. An identity file named by a flag, the environment or the config must load (its
/// errors are shown); the default one is used only if it exists. An identity in Key Vault is
/// never read here: a backup host must not be able to (list its recipient instead). At least
/// one recipient is required.
pub fn backup_recipients<S: AsRef<str>>(
    values: &[S],
    identity: Option<&IdentityLocation>,
) -> Result<Recipients> {
    let mut recipients = Recipients::parse(values)?;
    if let Some(loc) = identity.filter(|l| l.vault.is_none()) {
        match loc.load() {
            Ok(ids) => recipients.extend_from(&ids),
            Err(Error::NoIdentity { .. }) if loc.origin == IdentityOrigin::Default => {}
            Err(e) => return Err(e),
        }
    }
    recipients.require_some()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use age::secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn parses_recipients_and_drops_duplicates() {
        let a = Identities::generate().recipients().to_strings().remove(0);
        let b = Identities::generate().recipients().to_strings().remove(0);
        let r = Recipients::parse(&[a.clone(), b.clone(), a.clone(), String::new()]).unwrap();
        assert_eq!(r.to_strings(), vec![a, b]);
    }

    #[test]
    fn bad_recipient_is_named() {
        let good = Identities::generate().recipients().to_strings().remove(0);
        let err = Recipients::parse(&[good.as_str(), "age1notakey"]).unwrap_err();
        assert_eq!(err.code(), "vault_bad_recipient");
        let shown = err.to_string();
        assert!(
            shown.contains("recipient #2") && shown.contains("starts with age1"),
            "{shown}"
        );
        assert!(!shown.contains("notakey"), "{shown}");
    }

    #[test]
    fn a_rejected_recipient_is_never_echoed() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string().expose_secret().to_owned();
        let file_text = format!("# created: 2026-01-01T00:00:00Z\n# public key: x\n{secret}\n");
        let cs = "HostName=h.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=U0VDUkVUS0VZ";
        for bad in [file_text.as_str(), cs, "U0VDUkVUS0VZ", secret.as_str()] {
            let err = Recipients::parse(&[bad]).unwrap_err();
            let shown = format!("{err} {err:?}");
            for part in ["U0VDUkVUS0VZ", secret.as_str(), "SharedAccessKey="] {
                assert!(!shown.contains(part), "{part} echoed: {shown}");
            }
        }
        let err = Recipients::parse(&[file_text.as_str()]).unwrap_err();
        assert_eq!(err.code(), "vault_secret_given_as_recipient");
    }

    #[test]
    fn secret_given_as_recipient_is_not_echoed() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string().expose_secret().to_owned();
        let err = Recipients::parse(&[secret.as_str()]).unwrap_err();
        assert_eq!(err.code(), "vault_secret_given_as_recipient");
        assert!(!err.to_string().contains(&secret));
        assert!(!format!("{err:?}").contains(&secret));
        // lower-case (some tools print it so) is recognised too
        let lower = Recipients::parse(&[secret.to_lowercase()]).unwrap_err();
        assert!(
            !lower
                .to_string()
                .to_lowercase()
                .contains(&secret.to_lowercase())
        );
    }

    #[test]
    fn no_recipients_says_where_they_come_from() {
        let err = Recipients::default()
            .require_some()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--recipient") && err.contains("HUBVAULT_RECIPIENTS"),
            "{err}"
        );
    }

    #[test]
    fn backup_recipients_add_the_identity_files_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        let own = init_identity(&path).unwrap().to_string();
        let other = Identities::generate().recipients().to_strings().remove(0);
        let loc = IdentityLocation {
            path: path.clone(),
            origin: IdentityOrigin::FlagOrEnv,
            vault: None,
        };
        let r = backup_recipients(std::slice::from_ref(&other), Some(&loc)).unwrap();
        assert_eq!(r.to_strings(), vec![other.clone(), own]);
        // a missing default identity is no error when recipients are given ...
        let missing = IdentityLocation {
            path: dir.path().join("none.txt"),
            origin: IdentityOrigin::Default,
            vault: None,
        };
        assert_eq!(
            backup_recipients(std::slice::from_ref(&other), Some(&missing))
                .unwrap()
                .len(),
            1
        );
        // ... but a missing identity someone named is
        let named = IdentityLocation {
            origin: IdentityOrigin::FlagOrEnv,
            ..missing.clone()
        };
        assert_eq!(
            backup_recipients(&[other], Some(&named))
                .unwrap_err()
                .code(),
            "vault_no_identity"
        );
        assert_eq!(
            backup_recipients::<&str>(&[], Some(&missing))
                .unwrap_err()
                .code(),
            "vault_no_recipients"
        );
    }

    #[test]
    fn identities_debug_redacts_the_secret() {
        let ids = Identities::generate();
        let secret = ids.0[0].to_string().expose_secret().to_owned();
        let shown = format!("{ids:?} {ids:#?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
        assert!(shown.contains(&ids.recipients().to_strings()[0]), "{shown}");
    }
}
