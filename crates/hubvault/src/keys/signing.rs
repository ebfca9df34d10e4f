//! Writer keys: the Ed25519 key a backup host signs snapshots with, and the public keys
//! (`hvsig1…`) that restore, dump, diff and verify trust (docs/vault-format.md#v2-signature).
//!
//! A signing key can sign but decrypt nothing, so a backup host holds it next to the public
//! recipients: a stolen backup host can forge nothing that a restore host does not trust... only
//! as long as its key is not trusted any more, and it still cannot read history.
//!
//! The key file is a standard PKCS#8 Ed25519 private key in PEM (`-----BEGIN PRIVATE KEY-----`),
//! preceded by a comment line with its public key, so `openssl` reads it and nobody is locked in
//! to hubvault. It gets the identity file's checks (a private regular file, owned by this user,
//! in a folder only this user can write). A public key is shown as `hvsig1…`: bech32 of the 32
//! raw key bytes, like age's `age1…` recipients.
//!
//! Must not: show the private key anywhere (`Debug` redacts it; there is no `Display`).

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::keyvault::{SecretUrl, Vaults};
use super::{Error, IdentityOrigin, Result};
use crate::config::Config;

/// The bech32 prefix of a signer's public key.
const HRP: &str = "hvsig";
/// DER prefix of an Ed25519 `SubjectPublicKeyInfo`: the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A signer's public key: the one a snapshot's signature is checked with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signer([u8; 32]);

impl Signer {
    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this signer's Ed25519 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// The public key as a PEM `PUBLIC KEY` (`SubjectPublicKeyInfo`), for `openssl pkeyutl`.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        )
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = bech32::Hrp::parse_unchecked(HRP);
        let text = bech32::encode::<bech32::Bech32>(hrp, &self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({self})")
    }
}

impl FromStr for Signer {
    type Err = Error;

    /// Parse `hvsig1…`. A value that does not parse is never echoed (it may be a pasted secret).
    fn from_str(text: &str) -> Result<Signer> {
        let bad = |reason: &'static str| Error::BadSigner {
            shape: format!("{} characters", text.chars().count()),
            reason,
        };
        let (hrp, data) = bech32::decode(text.trim()).map_err(|_| bad("not a bech32 string"))?;
        if hrp.as_str() != HRP {
            return Err(bad("it does not start with hvsig1"));
        }
        let bytes: [u8; 32] = data
            .try_into()
            .map_err(|_| bad("it does not hold 32 key bytes"))?;
        Ok(Signer(bytes))
    }
}

/// The signers whose snapshots a reader accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSigners {
    signers: Vec<Signer>,
}

impl TrustedSigners {
    pub fn new(signers: impl IntoIterator<Item = Signer>) -> TrustedSigners {
        let mut out = TrustedSigners::default();
        for s in signers {
            if !out.signers.contains(&s) {
                out.signers.push(s);
            }
        }
        out
    }

    pub fn contains(&self, signer: &Signer) -> bool {
        self.signers.contains(signer)
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }
}

/// Where the signing key file is looked for when neither flag, environment nor config names one.
pub const DEFAULT_SIGNING_KEY: &str = "~/.config/hubvault/signing-key.pem";

/// Where the signing key is (a file, or a Key Vault secret) and the setting that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyLocation {
    /// The file (meaningless when `vault` is set).
    pub path: PathBuf,
    pub origin: IdentityOrigin,
    /// A Key Vault secret instead of a file (`signing-key = "https://…/secrets/NAME"`).
    pub vault: Option<SecretUrl>,
}

impl SigningKeyLocation {
    /// Resolve with the documented precedence: flag/env > config file > default.
    pub fn resolve(flag_or_env: Option<&Path>, config: &Config) -> Result<SigningKeyLocation> {
        let (path, origin) = super::identity_file::locate(
            flag_or_env,
            config.signing_key.as_deref(),
            config,
            DEFAULT_SIGNING_KEY,
        );
        let vault = super::identity_file::secret_url_of(&path)?;
        Ok(SigningKeyLocation {
            path,
            origin,
            vault,
        })
    }

    /// The file or the secret URL, for messages.
    pub fn describe_short(&self) -> String {
        super::identity_file::place(self.vault.as_ref(), &self.path)
    }

    /// Say where we looked, for [`Error::NoSigningKey`].
    pub fn describe(&self) -> String {
        let path = self.describe_short();
        match &self.origin {
            IdentityOrigin::FlagOrEnv => {
                format!("{path}, from --signing-key or HUBVAULT_SIGNING_KEY")
            }
            IdentityOrigin::Config(file) => format!("{path}, from `signing-key` in {file}"),
            IdentityOrigin::Default => format!(
                "{path}, the default; no --signing-key, HUBVAULT_SIGNING_KEY or `signing-key` in hubvault.toml was set"
            ),
        }
    }

    /// Load the key from the file or from the Key Vault secret (its latest enabled version: a
    /// new version is a new key, which restore hosts must be told to trust).
    pub async fn load_from(&self, vaults: &Vaults) -> Result<SigningKey> {
        let Some(url) = &self.vault else {
            return self.load();
        };
        let read = match url.version() {
            Some(_) => vaults.read(url).await?,
            None => vaults.read_latest(url).await?,
        };
        let Some(latest) = read.into_iter().next() else {
            return Err(Error::NoSigningKey {
                looked_in: self.describe(),
            });
        };
        SigningKey::from_text(&latest.value).map_err(|reason| Error::BadVaultKey {
            what: "a signing key",
            secret: url.with_version(&latest.version).to_string(),
            line: 0,
            reason,
        })
    }

    /// The signer of the key here, if there is a key (see [`SigningKeyLocation::local_signer`]).
    pub async fn local_signer_from(&self, vaults: &Vaults) -> Result<Option<Signer>> {
        if self.vault.is_none() {
            return self.local_signer();
        }
        Ok(Some(self.load_from(vaults).await?.signer()))
    }

    /// Load the key file, with a "not found" message that says which setting named the file.
    pub fn load(&self) -> Result<SigningKey> {
        if let Some(url) = &self.vault {
            return Err(Error::VaultNeeded {
                what: "signing key",
                secret: url.to_string(),
            });
        }
        SigningKey::load(&self.path).map_err(|e| match e {
            Error::NoSigningKey { .. } => Error::NoSigningKey {
                looked_in: self.describe(),
            },
            other => other,
        })
    }

    /// The signer of the key here, if there is a key: a reader trusts its own host's key (who
    /// holds it could sign anything anyway). A missing key at the default place is none; one
    /// that a setting names must be there.
    pub fn local_signer(&self) -> Result<Option<Signer>> {
        match self.load() {
            Ok(key) => Ok(Some(key.signer())),
            Err(Error::NoSigningKey { .. }) if self.origin == IdentityOrigin::Default => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The signers a reader trusts: `values` (`hvsig1…`: flags, environment or `trusted-signers`)
/// and the signer of the local signing key, if there is one (in Key Vault too).
pub async fn trusted_signers<S: AsRef<str>>(
    values: &[S],
    local: &SigningKeyLocation,
    vaults: &Vaults,
) -> Result<TrustedSigners> {
    let mut signers = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let v = v.as_ref().trim();
        if v.is_empty() {
            continue;
        }
        let signer = v.parse::<Signer>().map_err(|e| match e {
            Error::BadSigner { shape, reason } => Error::BadTrustedSigner {
                position: i.saturating_add(1),
                shape,
                reason,
            },
            other => other,
        })?;
        signers.push(signer);
    }
    signers.extend(local.local_signer_from(vaults).await?);
    Ok(TrustedSigners::new(signers))
}

/// A backup host's signing key (secret).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<redacted>, signer {})", self.signer())
    }
}

impl SigningKey {
    /// A fresh key (a throw-away one for clone's ephemeral snapshot and the demo, or a new
    /// host's key before it is written).
    pub fn generate() -> Result<SigningKey> {
        let doc = Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| Error::KeyGeneration)?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| Error::KeyGeneration)?;
        Ok(SigningKey { pair })
    }

    /// The public key others trust.
    pub fn signer(&self) -> Signer {
        let mut bytes = [0u8; 32];
        let public = self.pair.public_key().as_ref();
        if let Some(src) = public.get(..32) {
            bytes.copy_from_slice(src);
        }
        Signer(bytes)
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The key as the file holds it: a comment with the public key, then PKCS#8 PEM.
    fn to_file_text(&self) -> Result<Zeroizing<String>> {
        let der = self.pair.to_pkcs8v1().map_err(|_| Error::KeyGeneration)?;
        let b64 = Zeroizing::new(B64.encode(der.as_ref()));
        let mut pem = Zeroizing::new(format!("# public key: {}\n", self.signer()));
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// Read a key file (with the identity file's checks: see [`super::identity_file`]).
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = super::identity_file::read_private(
            path,
            Error::NoSigningKey {
                looked_in: path.display().to_string(),
            },
        )?;
        SigningKey::from_text(&text).map_err(|reason| Error::BadSigningKey {
            path: path.into(),
            reason,
        })
    }

    /// Create a new key inside Key Vault secret `url` (never on disk); returns the key and the
    /// secret's new version. An existing secret is kept unless `new_version`.
    pub async fn create_in_vault(
        vaults: &Vaults,
        url: &SecretUrl,
        new_version: bool,
    ) -> Result<(SigningKey, String)> {
        let key = SigningKey::generate()?;
        let text = key.to_file_text()?;
        let version = vaults
            .create(url, &text, "application/x-pem-file", new_version)
            .await?;
        Ok((key, version))
    }

    /// The key of a key file's text (a comment, then a PKCS#8 PEM block); the error says why,
    /// never what.
    pub fn from_text(text: &str) -> std::result::Result<SigningKey, &'static str> {
        let bad = |reason: &'static str| reason;
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END PRIVATE KEY-----"))
            .collect();
        if body.is_empty() {
            return Err(bad("no -----BEGIN PRIVATE KEY----- block"));
        }
        let der = Zeroizing::new(
            B64.decode(body.trim())
                .map_err(|_| bad("the PEM block is not base64"))?,
        );
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| bad("not a PKCS#8 Ed25519 private key"))?;
        Ok(SigningKey { pair })
    }

    /// Write a new key file (0600, never over an existing one) and return the key.
    pub fn create(path: &Path) -> Result<SigningKey> {
        let key = SigningKey::generate()?;
        let text = key.to_file_text()?;
        let mut file = super::identity_file::create_private(path).map_err(|e| match e {
            Error::IdentityExists { path } => Error::SigningKeyExists { path },
            other => other,
        })?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(Error::Io {
                action: "write signing key",
                path: path.into(),
                source,
            });
        }
        Ok(key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::diagnostic::Diagnostic as _;

    #[test]
    fn a_signature_checks_with_the_signer_and_nothing_else() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = key.sign(b"manifest bytes");
        assert!(key.signer().verifies(b"manifest bytes", &sig));
        assert!(!key.signer().verifies(b"manifest bytes!", &sig));
        assert!(!other.signer().verifies(b"manifest bytes", &sig));
    }

    #[test]
    fn signers_round_trip_as_hvsig1_and_bad_ones_are_not_echoed() {
        let s = SigningKey::generate().unwrap().signer();
        let text = s.to_string();
        assert!(text.starts_with("hvsig1"), "{text}");
        assert_eq!(text.parse::<Signer>().unwrap(), s);
        let age = "age1z62w0ze20jjuczl9jjq22ljlutftg8lqptsnqewgzjlyes55y9tqydhz6s";
        for bad in ["", "hvsig1notbech32", age, "SECRETVALUE"] {
            let err = bad.parse::<Signer>().unwrap_err().to_string();
            assert!(
                !err.contains("SECRETVALUE") && !err.contains("z62w0"),
                "{err}"
            );
        }
        assert!(
            s.to_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA")
        );
    }

    #[test]
    fn the_key_file_is_private_pem_and_loads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        let key = SigningKey::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!(
            "# public key: {}\n-----BEGIN PRIVATE KEY-----\n",
            key.signer()
        )));
        assert_eq!(SigningKey::load(&path).unwrap().signer(), key.signer());
        assert_eq!(
            SigningKey::create(&path).unwrap_err().code(),
            "vault_signing_key_exists"
        );
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("PRIVATE") && shown.contains("hvsig1"),
            "{shown}"
        );
    }
}
