//! Policy files (`policies/*.toml`) and the pure decisions they drive: retention (which snapshots to
//! keep) and schedule (when to run). Decisions take `now` as a parameter; this module reads policy
//! files but does no other I/O and never reads the clock.
//!
//! The whole schema is defined here; `forget` acts on retention and the hubs, `serve` and `run`
//! (`crate::service`) on the rest, `[drill]` included (scheduled restore drills, see [`drill`]):
//!
//! ```toml
//! description = "nightly backup of every hub"   # optional, for people
//! hubs = "*"                     # or ["hub-a", "hub-b"]: which hubs (names in hubvault.toml / --hub-name)
//! dps = ["dps-a"]                # DPS instances too (names in hubvault.toml's [dps]); none by default
//! store = "./hubvault-store"     # optional: only for this store (default: whichever store is used)
//! orphan-grace = "24h"           # unfinished snapshots younger than this are never removed
//!
//! jitter = "5m"                  # `serve`/`run`: start each hub's run up to this much later
//! timeout = "2h"                 # a hub's run is abandoned (job cancelled, staging deleted) after this
//!
//! [schedule]
//! cron = "0 2 * * *"             # 5 fields: minute hour day-of-month month day-of-week (or
//!                                # `@daily`-style, or 6 with seconds first, for tests)
//! time-zone = "Europe/Berlin"    # IANA name; default UTC. DST: see `schedule`
//!
//! [retention]                    # restic semantics, UTC buckets; see `retention`
//! keep-last = 3
//! keep-hourly = 24
//! keep-daily = 7
//! keep-weekly = 4
//! keep-monthly = 12
//! keep-yearly = 3
//! keep-within = "30d"            # y, m (months), d, h
//!
//! [staging]                      # overrides of hubvault.toml's [staging] for this policy's runs
//! container = "hubvault-staging"
//! sas-lifetime = "6h"
//!
//! [notifications]
//! webhook-url-env = "HUBVAULT_WEBHOOK_URL"   # the URL is a secret: name the variable holding it
//! # webhook-url-secret = "https://kv.vault.azure.net/secrets/hook"   # or a Key Vault secret
//! ping-url-env = "HUBVAULT_PING_URL"         # healthchecks-style pings: /start, success, /fail
//! on = ["failure", "success"]                # failure: first failure + recovery; success: every one
//!
//! [drill]                        # scheduled restore drills into a scratch hub; see `drill`
//! cron = "0 4 * * 0"
//! to = "hub-drill"
//! rto-target = "30m"
//! ```
//!
//! `hubs` and `dps` entries may be globs (`"plant-*"`), matched against the config's names and
//! the names snapshots are stored under.
//!
//! Keys are kebab-case and unknown keys are rejected with file, line and column. Values are checked
//! while parsing (cron, zone, spans, counts), so those errors carry the line too.

pub mod drill;
pub mod interval;
pub mod retention;
pub mod schedule;
pub mod span;
pub mod words;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, fix_text};
use crate::snapshot::catalog::HubNames;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

pub use drill::DrillSection;
pub use interval::Interval;
pub use retention::{Decision, Rules, SnapshotRef, decide};
pub use schedule::Schedule;
pub use span::Span;

/// How long an unfinished snapshot (data without manifest) is left alone by default: far longer
/// than any backup takes, so a backup in flight is never taken for an orphan.
pub const DEFAULT_ORPHAN_GRACE: Span = Span::hours(24);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no policy files in {dir}; {}", fix_text(self))]
    NoPolicies { dir: PathBuf },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Read { .. } => "policy_read",
            Error::Parse { .. } => "policy_parse",
            Error::NoPolicies { .. } => "policy_none",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Read { .. } | Error::Parse { .. } => None,
            Error::NoPolicies { .. } => {
                Some("add one (see policies/default.toml) or pass --policy FILE".to_owned())
            }
        }
    }
}

/// One parsed policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file stem (`default` for `policies/default.toml`), for messages and reasons.
    pub name: String,
    pub path: PathBuf,
    pub file: PolicyFile,
    /// Sections of the file nothing acts on yet (none today: every section is acted on).
    pub warnings: Vec<crate::config::Warning>,
}

/// The contents of a policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyFile {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub hubs: HubSelector,
    /// DPS instances (names in hubvault.toml's `[dps]`, globs, or `"*"`); none by default.
    #[serde(default)]
    pub dps: Option<HubSelector>,
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default = "default_grace", deserialize_with = "span::non_zero")]
    pub orphan_grace: Span,
    #[serde(default)]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub retention: Rules,
    #[serde(default)]
    pub staging: Option<StagingOverrides>,
    #[serde(default)]
    pub notifications: Option<Notifications>,
    /// Each hub's scheduled run starts up to this much after its slot (spreads load).
    #[serde(default)]
    pub jitter: Option<Interval>,
    /// A hub's run is abandoned after this long (job cancelled, staging deleted).
    #[serde(default)]
    pub timeout: Option<Interval>,
    /// `[drill]`: scheduled restore drills of the policy's hubs into a scratch hub.
    #[serde(default)]
    pub drill: Option<DrillSection>,
}

fn default_grace() -> Span {
    DEFAULT_ORPHAN_GRACE
}

/// `[staging]`: per-policy overrides of the config file's staging settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StagingOverrides {
    pub container: Option<String>,
    pub sas_lifetime: Option<Span>,
}

/// `[notifications]`: where `serve` and `run` report run outcomes. URLs carry tokens, so they
/// are never written in the file: name an environment variable or a Key Vault secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Notifications {
    /// Name of the environment variable holding the webhook URL.
    pub webhook_url_env: Option<String>,
    /// A Key Vault secret URL holding the webhook URL.
    pub webhook_url_secret: Option<String>,
    /// healthchecks-style pings: the variable holding the check's URL (`/start`, success at
    /// the URL itself, `/fail`).
    pub ping_url_env: Option<String>,
    /// `failure`: the first failure of a hub and its recovery (one pair per outage);
    /// `success`: every successful run too. Default: `["failure"]`.
    #[serde(default = "default_notify_on")]
    pub on: Vec<NotifyOn>,
}

fn default_notify_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failure]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    Failure,
    Success,
}

/// Which hubs a policy applies to: `"*"` or a list of names. Each name stands for every name
/// that hub goes by ([`HubNames`]): at first the name as written, which also matches a host name
/// that extends it (`hub-a` matches `hub-a.azure-devices.net`, where live backups are recorded);
/// [`Policy::bind_hubs`] adds what `hubvault.toml` knows (a config name's host name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HubSelector {
    #[default]
    All,
    Named(Vec<HubNames>),
}

impl HubSelector {
    /// Does this selector cover the hub stored as `hub`?
    pub fn matches(&self, hub: &str) -> bool {
        match self {
            HubSelector::All => true,
            HubSelector::Named(names) => names.iter().any(|n| match glob_of(n.label()) {
                Some(pattern) => pattern.matches(&hub.to_ascii_lowercase()),
                None => n.matches(hub),
            }),
        }
    }

    /// Which of the config's hub names (`configured`) this selector names, in order, plus the
    /// names it lists that are not in the config (the caller reports those).
    pub fn pick<'a>(&self, configured: impl IntoIterator<Item = &'a str>) -> Picked {
        let configured: Vec<&str> = configured.into_iter().collect();
        let mut picked = Picked::default();
        let mut add = |name: &str| {
            if !picked.hubs.iter().any(|h| h == name) {
                picked.hubs.push(name.to_owned());
            }
        };
        match self {
            HubSelector::All => configured.iter().for_each(|c| add(c)),
            HubSelector::Named(names) => {
                for n in names {
                    let label = n.label();
                    match glob_of(label) {
                        Some(p) => configured
                            .iter()
                            .filter(|c| p.matches(&c.to_ascii_lowercase()))
                            .for_each(|c| add(c)),
                        None => match configured.iter().find(|c| n.matches(c)) {
                            Some(c) => add(c),
                            None => picked.unknown.push(label.to_owned()),
                        },
                    }
                }
            }
        }
        picked
    }
}

/// The hubs a policy names, as [`HubSelector::pick`] found them in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Picked {
    pub hubs: Vec<String>,
    /// Names (not globs) that the config does not know.
    pub unknown: Vec<String>,
}

/// A hub name with glob characters (`*`, `?`, `[`) as a pattern; `None` for a plain name.
fn glob_of(name: &str) -> Option<glob::Pattern> {
    if !name.contains(['*', '?', '[']) {
        return None;
    }
    glob::Pattern::new(name).ok()
}

impl<'de> Deserialize<'de> for HubSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HubSelector, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HubSelector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"*\" or a list of hub names like [\"hub-a\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HubSelector, E> {
                if v == "*" {
                    Ok(HubSelector::All)
                } else {
                    Err(E::custom(format!(
                        "hubs = {v:?}: write \"*\" for every hub, or a list: [{v:?}]"
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HubSelector, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                if names.is_empty() {
                    return Err(de::Error::custom(
                        "hubs = []: the policy would apply to no hub; list at least one or write \"*\"",
                    ));
                }
                Ok(HubSelector::Named(
                    names.iter().map(|n| HubNames::new([n])).collect(),
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl Policy {
    /// Parse policy text; errors name the file, line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, Error> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: crate::config::describe_toml_error(text, &e),
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let warnings = Vec::new();
        Ok(Policy {
            name,
            path: path.to_path_buf(),
            file,
            warnings,
        })
    }

    /// Read and parse one policy file.
    pub fn load(path: &Path) -> Result<Policy, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&text, path)
    }

    /// Every `*.toml` in `dir`, sorted by file name. An empty folder is an error: running
    /// `forget` with no policy at all is almost certainly a mistake.
    pub fn load_dir(dir: &Path) -> Result<Vec<Policy>, Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        if paths.is_empty() {
            return Err(Error::NoPolicies {
                dir: dir.to_path_buf(),
            });
        }
        paths.sort();
        paths.iter().map(|p| Policy::load(p)).collect()
    }

    /// Widen each named hub to every name it goes by (`names_of` knows the config: a config
    /// name's host name, the config names of a host).
    pub fn bind_hubs(&mut self, names_of: impl Fn(&str) -> HubNames) {
        let selectors = std::iter::once(&mut self.file.hubs).chain(self.file.dps.as_mut());
        for selector in selectors {
            if let HubSelector::Named(list) = selector {
                for n in list.iter_mut().filter(|n| glob_of(n.label()).is_none()) {
                    *n = names_of(n.label());
                }
            }
        }
    }

    /// Does this policy cover the snapshots stored as `stored` (a hub, or one of its DPS
    /// instances)?
    pub fn covers(&self, stored: &str) -> bool {
        self.file.hubs.matches(stored) || self.file.dps.as_ref().is_some_and(|d| d.matches(stored))
    }

    /// Does this policy govern snapshots of `hub` in the store at `store`?
    pub fn applies_to(&self, hub: &str, store: &str) -> bool {
        self.covers(hub) && self.applies_to_store(store)
    }

    /// Is this policy for the store at `store` (a policy without `store` is for every store)?
    pub fn applies_to_store(&self, store: &str) -> bool {
        self.file
            .store
            .as_deref()
            .is_none_or(|s| same_store(s, store))
    }
}

/// Compare store locations loosely: `file://` prefix, `./` and trailing slashes do not matter.
fn same_store(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.strip_prefix("file://").unwrap_or(s);
        let s = s.strip_prefix("./").unwrap_or(s);
        s.trim_end_matches('/').to_owned()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, Error> {
        Policy::parse(text, Path::new("policies/test.toml"))
    }

    #[test]
    fn full_schema_parses() {
        let text = r#"
description = "all of it"
hubs = ["hub-a", "hub-b"]
store = "./hubvault-store"
orphan-grace = "2d"

[schedule]
cron = "0 2 * * *"
time-zone = "Europe/Berlin"

[retention]
keep-last = 3
keep-hourly = 24
keep-daily = 7
keep-weekly = 4
keep-monthly = 12
keep-yearly = -1
keep-within = "1y2m"

[staging]
container = "stage"
sas-lifetime = "6h"

[notifications]
webhook-url-env = "HOOK"
on = ["failure", "success"]
"#;
        let p = parse(text).unwrap();
        assert_eq!(p.name, "test");
        let f = &p.file;
        assert_eq!(
            f.hubs,
            HubSelector::Named(vec![HubNames::new(["hub-a"]), HubNames::new(["hub-b"])])
        );
        assert_eq!(f.orphan_grace, Span::days(2));
        assert_eq!(f.retention.keep_yearly, Some(-1));
        assert_eq!(
            f.retention.keep_within,
            Some(Span {
                years: 1,
                months: 2,
                days: 0,
                hours: 0
            })
        );
        assert_eq!(f.schedule.as_ref().unwrap().cron.as_str(), "0 2 * * *");
        assert_eq!(
            f.staging.as_ref().unwrap().sas_lifetime,
            Some(Span::hours(6))
        );
        assert_eq!(
            f.notifications.as_ref().unwrap().on,
            vec![NotifyOn::Failure, NotifyOn::Success]
        );
        assert!(p.applies_to("hub-a", "hubvault-store/"));
        assert!(!p.applies_to("hub-a", "/elsewhere"));
        assert!(!p.applies_to("hub-c", "./hubvault-store"));
        // a config name covers the host name live backups are stored under, and nothing else
        assert!(p.applies_to("hub-a.azure-devices.net", "./hubvault-store"));
        assert!(!p.applies_to("hub-ab.azure-devices.net", "./hubvault-store"));
        assert!(!p.applies_to("hub", "./hubvault-store"));
    }

    #[test]
    fn defaults() {
        let p = parse("").unwrap();
        assert_eq!(p.file.hubs, HubSelector::All);
        assert_eq!(p.file.orphan_grace, DEFAULT_ORPHAN_GRACE);
        assert!(p.file.retention.is_empty());
        assert!(p.applies_to("any", "any"));
    }

    /// Each bad file is rejected with the file, the line of the problem, and a word about it.
    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            ("[retention]\nkeep-dialy = 7\n", 2, "keep-dialy"),
            ("hubs = \"hub-a\"\n", 1, "\"*\""),
            ("hubs = []\n", 1, "no hub"),
            ("\n[schedule]\ncron = \"0 2 * *\"\n", 3, "5 fields"),
            (
                "[schedule]\ncron = \"0 2 * * *\"\ntime-zone = \"Mars/Olympus\"\n",
                3,
                "Mars/Olympus",
            ),
            ("[retention]\nkeep-within = \"30x\"\n", 2, "30x"),
            ("[retention]\nkeep-daily = 0\n", 2, "-1 for unlimited"),
            ("orphan-grace = \"soon\"\n", 1, "soon"),
            ("orphan-grace = \"0h\"\n", 1, "zero span"),
            ("[retention]\nkeep-within = \"0d\"\n", 2, "zero span"),
            ("[notifications]\non = [\"sometimes\"]\n", 2, "sometimes"),
            ("[staging]\nsas_lifetime = \"6h\"\n", 2, "sas_lifetime"),
        ];
        for (text, line, word) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.code(), "policy_parse");
            let msg = err.to_string();
            assert!(msg.contains("policies/test.toml"), "{msg}");
            assert!(
                msg.contains(&format!("line {line},")),
                "want line {line}: {msg}"
            );
            assert!(msg.contains(word), "want {word:?}: {msg}");
        }
    }

    /// Every policy shipped in `policies/` parses, and the default one says what the docs say.
    #[test]
    fn shipped_policies_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let policies = Policy::load_dir(&dir).unwrap();
        assert!(policies.len() >= 2, "{policies:?}");
        for p in &policies {
            let schedule = p
                .file
                .schedule
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no schedule", p.name));
            assert!(
                schedule.next_fire(chrono::Utc::now()).is_some(),
                "{} never fires",
                p.name
            );
            assert!(!p.file.retention.is_empty(), "{} keeps everything", p.name);
        }
        let default = policies.iter().find(|p| p.name == "default").unwrap();
        let r = &default.file.retention;
        assert_eq!(
            (r.keep_daily, r.keep_weekly, r.keep_monthly),
            (Some(7), Some(4), Some(12))
        );
        let next = default
            .file
            .schedule
            .as_ref()
            .unwrap()
            .next_fire("2026-11-26T10:00:00Z".parse().unwrap());
        assert_eq!(
            next,
            Some("2026-11-27T01:00:00Z".parse().unwrap()),
            "02:00 Berlin is 01:00 UTC in winter"
        );
    }

    #[test]
    fn empty_policy_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Policy::load_dir(dir.path()).unwrap_err();
        assert_eq!(err.code(), "policy_none");
    }
}
