//! The age identity file: create it (0600, never overwrite), find it (flag/env > config > default),
//! load it (refusing one that other users can read).
//!
//! The format is the `age-keygen` one, so the `age` CLI reads our files and we read its files:
//!
//! ```text
//! # created: 2026-11-26T10:00:00Z
//! # public key: age1…
//! AGE-SECRET-KEY-1…
//! ```
//!
//! Errors name the file and, for a bad line, its number, never its contents.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::keyvault::{SecretUrl, Vaults};
use super::{Error, Identities, Result};
use crate::config::{Config, expand_home};

/// Where the identity file is looked for when neither flag, environment nor config names one.
pub const DEFAULT_IDENTITY: &str = "~/.config/hubvault/identity.txt";

/// The default identity path with `~` expanded.
pub fn default_identity_path() -> PathBuf {
    expand_home(Path::new(DEFAULT_IDENTITY))
}

/// Which setting named the identity file; said in "not found" messages so the user knows what to
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityOrigin {
    /// `--identity` or `HUBVAULT_IDENTITY` (clap merges the two).
    FlagOrEnv,
    /// `identity = …` in this config file.
    Config(String),
    /// Nothing named one: the built-in default.
    Default,
}

/// Where the identities are (a file, or a Key Vault secret) and the setting that named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLocation {
    /// The file (meaningless when `vault` is set).
    pub path: PathBuf,
    pub origin: IdentityOrigin,
    /// A Key Vault secret instead of a file: `identity = "https://…/secrets/NAME"`, or
    /// `[keyvault] url` + `secret` when nothing else names an identity.
    pub vault: Option<SecretUrl>,
}

impl IdentityLocation {
    /// Resolve with the documented precedence: flag/env > config file (`identity`, then
    /// `[keyvault] url` + `secret`) > default. A value that is a URL must be a secret URL.
    pub fn resolve(flag_or_env: Option<&Path>, config: &Config) -> Result<IdentityLocation> {
        let configured = config.identity.clone().or_else(|| {
            let kv = config.keyvault.as_ref()?;
            let (url, secret) = (kv.url.as_deref()?, kv.secret.as_deref()?);
            Some(PathBuf::from(format!(
                "{}/secrets/{secret}",
                url.trim_end_matches('/')
            )))
        });
        let (path, origin) = locate(flag_or_env, configured.as_deref(), config, DEFAULT_IDENTITY);
        let vault = secret_url_of(&path)?;
        Ok(IdentityLocation {
            path,
            origin,
            vault,
        })
    }

    /// The file or the secret URL, for messages.
    pub fn describe_short(&self) -> String {
        place(self.vault.as_ref(), &self.path)
    }

    /// Say where we looked, for [`Error::NoIdentity`].
    pub fn describe(&self) -> String {
        let path = self.describe_short();
        match &self.origin {
            IdentityOrigin::FlagOrEnv => format!("{path}, from --identity or HUBVAULT_IDENTITY"),
            IdentityOrigin::Config(file) => format!("{path}, from `identity` in {file}"),
            IdentityOrigin::Default => {
                format!(
                    "{path}, the default; no --identity, HUBVAULT_IDENTITY or `identity` in hubvault.toml was set"
                )
            }
        }
    }

    /// Load the identities of a file, with a "not found" message that says which setting named
    /// the file. A Key Vault location needs [`IdentityLocation::load_from`].
    pub fn load(&self) -> Result<Identities> {
        if let Some(url) = &self.vault {
            return Err(Error::VaultNeeded {
                what: "identity",
                secret: url.to_string(),
            });
        }
        load_identities(&self.path).map_err(|e| match e {
            Error::NoIdentity { .. } => Error::NoIdentity {
                looked_in: self.describe(),
            },
            other => other,
        })
    }

    /// Load the identities, from the file or from every enabled version of the Key Vault secret
    /// (newest first, so snapshots sealed before a new version still open).
    pub async fn load_from(&self, vaults: &Vaults) -> Result<Identities> {
        let Some(url) = &self.vault else {
            return self.load();
        };
        let mut ids = Vec::new();
        for version in vaults.read(url).await? {
            let found =
                parse_identities(&version.value).map_err(|(line, reason)| Error::BadVaultKey {
                    what: "an age identity",
                    secret: url.with_version(&version.version).to_string(),
                    line,
                    reason,
                })?;
            ids.extend(found);
        }
        tracing::info!(secret = %url, identities = ids.len(), "identity read from Key Vault");
        Ok(Identities::from_vec(ids))
    }
}

/// A key's place for messages: the secret URL, else the file.
pub(super) fn place(vault: Option<&SecretUrl>, path: &Path) -> String {
    vault.map_or_else(|| path.display().to_string(), ToString::to_string)
}

/// The Key Vault secret `path` names, if it is a URL (a URL that is not a secret URL is an
/// error, never a file name).
pub(super) fn secret_url_of(path: &Path) -> Result<Option<SecretUrl>> {
    let text = path.to_string_lossy();
    if !super::keyvault::is_secret_url(&text) {
        return Ok(None);
    }
    Ok(Some(text.parse::<SecretUrl>()?))
}

/// The X25519 identities of an age identity file's text (`age-keygen`'s format: comments, blank
/// lines, `AGE-SECRET-KEY-1…` lines). Fails with the 1-based line and why (line 0: none at all),
/// never the line itself.
pub(super) fn parse_identities(
    text: &str,
) -> std::result::Result<Vec<age::x25519::Identity>, (usize, &'static str)> {
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-PLUGIN-") {
            return Err((
                n.saturating_add(1),
                "age plugin identities are not supported",
            ));
        }
        ids.push(
            age::x25519::Identity::from_str(line)
                .map_err(|reason| (n.saturating_add(1), reason))?,
        );
    }
    if ids.is_empty() {
        return Err((0, "it holds no AGE-SECRET-KEY-1… line"));
    }
    Ok(ids)
}

/// A key file's path and the setting that named it: flag/env > `configured` (in `config`) >
/// `default` (each with `~/` expanded). Shared by the identity and the signing key.
pub(super) fn locate(
    flag_or_env: Option<&Path>,
    configured: Option<&Path>,
    config: &Config,
    default: &str,
) -> (PathBuf, IdentityOrigin) {
    match (flag_or_env, configured) {
        (Some(p), _) => (expand_home(p), IdentityOrigin::FlagOrEnv),
        (None, Some(p)) => (expand_home(p), IdentityOrigin::Config(config.describe())),
        (None, None) => (expand_home(Path::new(default)), IdentityOrigin::Default),
    }
}

/// Create a new identity file at `path` and return its public recipient.
///
/// The file is created with mode 0600 and `create_new`, so an existing identity is never
/// overwritten (losing it would make every snapshot encrypted to it unreadable). Missing parent
/// folders are created with mode 0700.
pub fn init_identity(path: &Path) -> Result<age::x25519::Recipient> {
    let mut file = create_private(path)?;
    let (recipient, text) = new_identity_text();
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        // Do not leave a half-written secret behind; the next `key init` must be able to retry.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(Error::Io {
            action: "write identity file",
            path: path.into(),
            source,
        });
    }
    Ok(recipient)
}

/// A new identity in `age-keygen`'s format, and its recipient.
fn new_identity_text() -> (age::x25519::Recipient, Zeroizing<String>) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    ));
    (recipient, text)
}

/// Create a new identity inside Key Vault secret `url` (never on disk) and return its recipient
/// and the secret's new version. An existing secret is kept unless `new_version` (older versions
/// stay readable: [`IdentityLocation::load_from`] reads them all).
pub async fn init_identity_in_vault(
    vaults: &Vaults,
    url: &SecretUrl,
    new_version: bool,
) -> Result<(age::x25519::Recipient, String)> {
    let (recipient, text) = new_identity_text();
    let version = vaults
        .create(url, &text, "application/x-age-identity", new_version)
        .await?;
    Ok((recipient, version))
}

/// Create a new secret key file at `path`: mode 0600 and `create_new` (an existing secret is
/// never overwritten: losing it would make what it opens or signs unusable), missing parent
/// folders 0700. Shared by the identity file and the signing key.
pub(super) fn create_private(path: &Path) -> Result<fs::File> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        create_private_dirs(parent).map_err(|source| Error::Io {
            action: "create folder",
            path: parent.into(),
            source,
        })?;
    }
    match open_new_private(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Error::IdentityExists { path: path.into() })
        }
        Err(source) => Err(Error::Io {
            action: "create key file",
            path: path.into(),
            source,
        }),
    }
}

/// Read a secret key file with the identity file's checks; a missing file is `not_found`.
pub(super) fn read_private(path: &Path, not_found: Error) -> Result<Zeroizing<String>> {
    let file = match open_private(path) {
        Err(Error::NoIdentity { .. }) => return Err(not_found),
        other => other?,
    };
    Ok(Zeroizing::new(read_text(file).map_err(|source| {
        Error::Io {
            action: "read key file",
            path: path.into(),
            source,
        }
    })?))
}

/// Load every X25519 identity from an age identity file.
///
/// It holds the key to every snapshot, so the file must be a regular file (a FIFO or a device
/// could feed anything, and a FIFO would hang the read), owned by this user or root, readable by
/// nobody else, in a folder nobody else can write (else the file could be swapped). The checks
/// run on the opened file, so what is checked is what is read. Comment and blank lines are
/// skipped.
pub fn load_identities(path: &Path) -> Result<Identities> {
    let file = open_private(path)?;
    let text = Zeroizing::new(read_text(file).map_err(|source| Error::Io {
        action: "read identity file",
        path: path.into(),
        source,
    })?);
    match parse_identities(&text) {
        Ok(ids) => Ok(Identities::from_vec(ids)),
        Err((0, _)) => Err(Error::EmptyIdentityFile { path: path.into() }),
        Err((line, reason)) => Err(Error::BadIdentity {
            path: path.into(),
            line,
            reason,
        }),
    }
}

/// An identity file is a few lines; anything much larger is not one (and is not read whole).
const MAX_IDENTITY_BYTES: u64 = 64 * 1024;

fn read_text(file: fs::File) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    file.take(MAX_IDENTITY_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// Open `path` for reading and check it is a private regular file in a private folder.
fn open_private(path: &Path) -> Result<fs::File> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => Error::NoIdentity {
            looked_in: path.display().to_string(),
        },
        _ => Error::Io {
            action: "read identity file",
            path: path.into(),
            source,
        },
    };
    let file = open_nonblocking(path).map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.file_type().is_file() {
        return Err(Error::NotAFile {
            path: path.into(),
            kind: describe_type(meta.file_type()),
        });
    }
    check_private(path, &meta)?;
    check_folder(path)?;
    Ok(file)
}

/// Open without blocking: opening a FIFO for reading would otherwise wait for a writer.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    Ok(fs::File::from(fd))
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path)
}

fn describe_type(t: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.into(),
            mode,
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(Error::WrongOwner {
            path: path.into(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    // No POSIX modes: rely on the folder's ACLs.
    Ok(())
}

/// The identity's folder must not let other users replace the file: not writable by group or
/// others, owned by this user or root.
#[cfg(unix)]
fn check_folder(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let meta = fs::metadata(&folder).map_err(|source| Error::Io {
        action: "check the folder of",
        path: path.into(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    let me = rustix::process::geteuid().as_raw();
    if mode & 0o022 != 0 || (meta.uid() != me && meta.uid() != 0) {
        return Err(Error::InsecureFolder {
            folder,
            path: path.into(),
            mode: mode & 0o777,
            owner: meta.uid(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_folder(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn open_new_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_new_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(all(test, unix))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::diagnostic::Diagnostic as _;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_writes_age_keygen_format_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/identity.txt");
        let recipient = init_identity(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&dir.path().join("new/sub")), 0o700);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# created: "), "{text}");
        assert_eq!(lines[1], format!("# public key: {recipient}"));
        assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
        let ids = load_identities(&path).unwrap();
        assert_eq!(ids.recipients().to_strings(), vec![recipient.to_string()]);
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        init_identity(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let err = init_identity(&path).unwrap_err();
        assert_eq!(err.code(), "vault_identity_exists");
        assert!(err.to_string().contains("--identity"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn world_or_group_readable_identity_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        init_identity(&path).unwrap();
        for bad in [0o644, 0o640, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = load_identities(&path).unwrap_err();
            assert_eq!(err.code(), "vault_insecure_permissions");
            assert!(
                err.to_string()
                    .contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_identities(&path).is_ok());
    }

    #[test]
    fn a_fifo_or_a_folder_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("identity.fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = load_identities(&fifo).unwrap_err();
        assert_eq!(err.code(), "vault_identity_not_a_file");
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = load_identities(dir.path()).unwrap_err();
        assert_eq!(err.code(), "vault_identity_not_a_file");
        assert!(err.to_string().contains("folder"), "{err}");
    }

    #[test]
    fn an_identity_in_a_folder_others_can_write_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let path = shared.join("identity.txt");
        init_identity(&path).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = load_identities(&path).unwrap_err();
        assert_eq!(err.code(), "vault_insecure_folder");
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("chmod go-w {}", shared.display())),
            "{shown}"
        );
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(load_identities(&path).is_ok());
    }

    #[test]
    fn missing_identity_says_where_it_looked_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            identity: Some(dir.path().join("nope.txt")),
            source: Some("conf.toml".into()),
            ..Config::default()
        };
        let loc = IdentityLocation::resolve(None, &config).unwrap();
        let err = loc.load().unwrap_err();
        assert_eq!(err.code(), "vault_no_identity");
        let msg = err.to_string();
        assert!(
            msg.contains("nope.txt") && msg.contains("conf.toml"),
            "{msg}"
        );
        assert!(
            msg.contains("hubvault key init") && msg.contains("--identity"),
            "{msg}"
        );
        // the flag wins over the config file
        let flag = dir.path().join("flag.txt");
        assert_eq!(
            IdentityLocation::resolve(Some(&flag), &config)
                .unwrap()
                .origin,
            IdentityOrigin::FlagOrEnv
        );
        assert_eq!(
            IdentityLocation::resolve(None, &Config::default())
                .unwrap()
                .origin,
            IdentityOrigin::Default
        );
    }

    #[test]
    fn bad_line_names_line_number_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.txt");
        // Shaped like a secret key but not one (built at run time so no key-like literal sits in src/).
        let secretish = format!("AGE-SECRET-KEY-1{}", "NOTREALLYAKEYBUTSECRETLOOKING");
        fs::write(&path, format!("# comment\n\n{secretish}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_identities(&path).unwrap_err();
        assert_eq!(err.code(), "vault_bad_identity");
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(!err.to_string().contains(&secretish) && !format!("{err:?}").contains(&secretish));
    }

    #[test]
    fn reads_a_file_in_the_age_cli_layout_with_several_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let text = format!(
            "# created: 2026-01-01T00:00:00Z\r\n# public key: {}\r\n{}\r\n{}\n",
            a.to_public(),
            a.to_string().expose_secret(),
            b.to_string().expose_secret()
        );
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let ids = load_identities(&path).unwrap();
        assert_eq!(
            ids.recipients().to_strings(),
            vec![a.to_public().to_string(), b.to_public().to_string()]
        );
    }
}
