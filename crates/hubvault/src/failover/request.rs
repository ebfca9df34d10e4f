//! What a run is given: the hub and its config, the clients, the store, the probes, timeouts and
//! the test-only pause.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::Variant;
use crate::arm::ArmClient;
use crate::config::FailoverEntry;
use crate::device::telemetry::DeviceTarget;
use crate::hub::HubClient;
use crate::snapshot::catalog::HubNames;
use crate::store::Store;

/// A test-only pause: called after a step's ARM calls, before it is journalled.
pub type Pause = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a run needs.
pub struct RunRequest<'a> {
    pub hub: &'a str,
    pub hub_id: &'a str,
    pub entry: &'a FailoverEntry,
    pub variant: Variant,
    /// `failover back`: refused unless the journal holds a completed failover to undo.
    pub back: bool,
    pub dry_run: bool,
    pub arm: &'a ArmClient,
    pub store: Arc<dyn Store>,
    pub names: HubNames,
    /// The hub's data plane, for probe devices (`None`: no probes, "not measured").
    pub hub_client: Option<&'a HubClient>,
    pub device_target: Option<DeviceTarget>,
    pub probe_devices: usize,
    pub http: reqwest::Client,
    pub now: OffsetDateTime,
    pub timeouts: Timeouts,
    pub pause: Option<(String, Pause)>,
    /// Key Vault, for consumers whose settings go to a secret (`None`: none do).
    pub vaults: Option<crate::keys::Vaults>,
}

/// How long each wait may last, and how often things are sampled.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub operation: Duration,
    pub consumers: Duration,
    pub tick: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            operation: Duration::from_secs(3600),
            consumers: Duration::from_secs(1800),
            tick: Duration::from_secs(2),
        }
    }
}
