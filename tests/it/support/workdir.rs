//! A work folder for one test: the `hubvault.toml` naming the simulated world, a private age
//! identity, a signing key where `hubvault key init` puts it, a local store (`store/`), and the
//! binary run there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use age::secrecy::ExposeSecret as _;

use super::azurite::Staging;
use super::bin::Hubvault;
use super::world::World;

/// A temporary folder; the binary runs in it with `HOME` there, so it finds `hubvault.toml`
/// (`./hubvault.toml`) and nothing of the user's.
pub struct Workdir {
    dir: tempfile::TempDir,
    /// Environment every run here gets (the staging connection string, test knobs).
    env: Mutex<Vec<(String, String)>>,
}

impl Workdir {
    /// A folder whose user has a signing key at the default place (as after `hubvault key
    /// init`), so backups sign and readers trust them.
    pub fn new() -> Workdir {
        let wd = Workdir::bare();
        hubvault::keys::SigningKey::create(&wd.signing_key()).unwrap();
        wd
    }

    /// A folder without any key.
    pub fn bare() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
            env: Mutex::new(Vec::new()),
        }
    }

    /// The signing key at the default place (`$HOME/.config/hubvault/signing-key.pem`).
    pub fn signing_key(&self) -> PathBuf {
        self.join(".config/hubvault/signing-key.pem")
    }

    /// The signer (`hvsig1…`) of [`Workdir::signing_key`].
    pub fn signer(&self) -> String {
        hubvault::keys::SigningKey::load(&self.signing_key())
            .unwrap()
            .signer()
            .to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.join("hubvault.toml")
    }

    /// The identity file the config names.
    pub fn identity(&self) -> PathBuf {
        self.join("identity.txt")
    }

    /// The local store the config names.
    pub fn store(&self) -> PathBuf {
        self.join("store")
    }

    /// Ids of the committed snapshots of a hub (by the name it is stored under) in the local
    /// store, sorted.
    pub fn snapshot_ids(&self, stored_as: &str) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.store().join(stored_as))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("manifest.g1.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Set `key` for every later run here (a later value replaces an earlier one).
    pub fn set_env(&self, key: &str, value: &str) {
        let mut env = self.env.lock().unwrap();
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    }

    /// A new age identity in [`Workdir::identity`] (mode 0600); returns its recipient.
    pub fn write_identity(&self) -> String {
        let id = age::x25519::Identity::generate();
        write_private(
            &self.identity(),
            &format!("# test key\n{}\n", id.to_string().expose_secret()),
        );
        id.to_public().to_string()
    }

    /// The real binary, run in this folder with a clean environment and this folder's.
    pub fn hubvault(&self) -> Hubvault {
        let mut cmd = Hubvault::new(self.path());
        for (k, v) in self.env.lock().unwrap().iter() {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    /// A `hubvault.toml` naming the hubs of `world`; [`ConfigFile::write`] writes it.
    pub fn config<'a>(&'a self, world: &'a World) -> ConfigFile<'a> {
        ConfigFile {
            wd: self,
            world,
            arm: true,
            staging: None,
            sas_lifetime: None,
            replaced: None,
        }
    }
}

/// The `hubvault.toml` of a work folder: `store` and `identity` in the folder, one `[hubs.NAME]`
/// per hub (connection string, endpoint, resource id, and the CA of a TLS world), `[arm]` when the
/// world serves ARM (and the config wants it), `[staging]` when given.
pub struct ConfigFile<'a> {
    wd: &'a Workdir,
    world: &'a World,
    arm: bool,
    staging: Option<(String, String)>,
    sas_lifetime: Option<String>,
    replaced: Option<(String, String)>,
}

impl ConfigFile<'_> {
    /// Leave `[arm]` out even when the world serves it.
    pub fn arm(mut self, on: bool) -> Self {
        self.arm = on;
        self
    }

    /// `[staging]` in the container of `staging`, its connection string in `HUBVAULT_STAGING_CS`
    /// (`connection-string-env`) for every run of the folder.
    pub fn staging(mut self, staging: &Staging) -> Self {
        self.staging = Some((staging.connection_string.clone(), staging.container.clone()));
        self
    }

    /// Staging under `prefix` inside that container (`container = "CONTAINER/PREFIX"`).
    pub fn staging_prefix(mut self, prefix: &str) -> Self {
        if let Some((_, container)) = &mut self.staging {
            *container = format!("{container}/{prefix}");
        }
        self
    }

    /// `sas-lifetime` of `[staging]`.
    pub fn sas_lifetime(mut self, lifetime: &str) -> Self {
        self.sas_lifetime = Some(lifetime.to_owned());
        self
    }

    /// `connection_string` for `hub` instead of its `iothubowner` one (a wrong key, a weak policy).
    pub fn hub_connection_string(mut self, hub: &str, connection_string: &str) -> Self {
        self.replaced = Some((hub.to_owned(), connection_string.to_owned()));
        self
    }

    pub fn write(self) {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: PathBuf| q(&p.display().to_string());
        let ca = self
            .world
            .ca_file()
            .map(|p| format!("ca-file = {}\n", path(p.to_owned())))
            .unwrap_or_default();
        let mut text = format!(
            "store = {}\nidentity = {}\n",
            path(self.wd.store()),
            path(self.wd.identity())
        );
        for h in &self.world.running.hubs {
            let cs = match &self.replaced {
                Some((hub, cs)) if *hub == h.name => cs.clone(),
                _ => self.world.connection_string(&h.name),
            };
            let _ = write!(
                text,
                "\n[hubs.{}]\nconnection-string = {}\nendpoint = {}\nresource-id = {}\n{ca}",
                h.name,
                q(&cs),
                q(&h.endpoint),
                q(&h.resource_id)
            );
        }
        if let Some(arm) = self.world.running.arm.as_deref().filter(|_| self.arm) {
            let _ = write!(
                text,
                "\n[arm]\nendpoint = {}\ntoken-env = \"HUBVAULT_ARM_TOKEN\"\n{ca}",
                q(arm)
            );
        }
        if let Some((cs, container)) = &self.staging {
            let _ = write!(
                text,
                "\n[staging]\nconnection-string-env = \"HUBVAULT_STAGING_CS\"\ncontainer = {}\n",
                q(container)
            );
            if let Some(lifetime) = &self.sas_lifetime {
                let _ = writeln!(text, "sas-lifetime = {}", q(lifetime));
            }
            self.wd.set_env("HUBVAULT_STAGING_CS", cs);
        }
        if self.world.running.arm.is_some() {
            self.wd
                .set_env("HUBVAULT_ARM_TOKEN", super::world::ARM_TOKEN);
        }
        std::fs::write(self.wd.config_path(), text).unwrap();
    }
}

/// Write `text` to a new file readable by its owner only (0600), as an identity must be.
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
