//! `hubvault failover`: the manual failover runbook of a hub reached through private endpoints
//! (docs/failover.md). A failover moves the hub to its paired region and changes its Event
//! Hub-compatible endpoint; everything that depends on it must follow: private endpoints are
//! re-created (their DNS configuration names the old namespace), their `privateDnsZoneGroups`
//! write the new A records, and in the network-failure variant the clients' Private DNS zone
//! links move to the secondary region's zones.
//!
//! | part | owns |
//! |---|---|
//! | `observe` | what ARM and the store show (`Observed`): the hub, its private endpoints, zone groups, links, permissions, the backup age |
//! | `limits` | Azure's failover limits over past operations: pure, takes `now` |
//! | `steps` | the step list of a variant and each step's ARM calls |
//! | `plan` | the findings, the refusal and the steps: pure, takes `now` |
//! | `journal` | the run's journal in the store: the plan, each step's outcome, the end; past operations |
//! | `request` | what a run is given (`RunRequest`: clients, store, timeouts, the test pause) |
//! | `execute` | one step's ARM calls and waits, each idempotent |
//! | `settings` | the consumers' new settings: printed, a file, or a Key Vault secret (a connection string) |
//! | `run` | plan → journal → the steps not yet journalled, resuming where a killed run stopped |
//! | `probe` | dedicated probe devices and consumer health checks sampled during the run |
//! | `report` | the `--json` document, the phases, and the run as a shared [`crate::report::Document`] |
//!
//! Must not: touch device identities other than its own probes (`hubvault-probe-…`), or edit
//! A records that a zone group owns (it re-creates the zone group instead).

pub mod execute;
pub mod journal;
pub mod limits;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod report;
pub mod request;
pub mod run;
pub mod settings;
pub mod steps;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, fix_text};

/// The two runbooks of the seed kit: TEST 1 (the primary region's network still works) and
/// TEST 2 (it does not: the secondary virtual network gets the endpoint and the DNS links move to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Normal,
    NetworkFailure,
}

pub use plan::Plan;
pub use steps::{Step, StepKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no [failover.{hub}] section in {config}; {}", fix_text(self))]
    NotConfigured { hub: String, config: String },
    #[error("[hubs.{hub}] has no resource-id; {}", fix_text(self))]
    NoResourceId { hub: String },
    #[error("no ARM access configured; {}", fix_text(self))]
    NoArm,
    #[error("failover of {hub}: {message}")]
    Hub { hub: String, message: String },
    #[error(transparent)]
    Arm(#[from] crate::arm::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    KeyVault(#[from] crate::keys::keyvault::Error),
    #[error("the failover journal object {name} is unreadable: {detail}")]
    Journal { name: String, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::NotConfigured { .. } => "failover_not_configured",
            Error::NoResourceId { .. } => "failover_no_resource_id",
            Error::NoArm => "failover_no_arm",
            Error::Hub { .. } => "failover_hub",
            Error::Arm(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::KeyVault(e) => e.code(),
            Error::Journal { .. } => "failover_journal",
            Error::Write { .. } => "failover_write",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::NotConfigured { hub, .. } => Some(format!(
                "add [failover.{hub}] with regions, client-vnets and consumers (docs/failover.md)"
            )),
            Error::NoResourceId { hub } => Some(format!(
                "add resource-id = \"/subscriptions/…/IotHubs/NAME\" to [hubs.{hub}]"
            )),
            Error::NoArm => Some("add [arm] with token-env or credential".to_owned()),
            Error::Arm(e) => e.fix(),
            Error::Store(e) => e.fix(),
            Error::KeyVault(e) => e.fix(),
            Error::Hub { .. } | Error::Journal { .. } | Error::Write { .. } => None,
        }
    }
}

/// `/subscriptions/s/resourceGroups/rg/providers/P/T/name` → `name`.
pub(crate) fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// `West US` / `westus` → `westus`: how ARM spells a region in ids and bodies.
pub fn region_key(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}
