//! State that the simulated `IoT` Hub data plane and the simulated ARM endpoint both touch.
//!
//! The ARM resource document (`IotHubDescription`, docs/azure.md) is the single source of truth
//! for a hub's networking: ARM GET/PUT read and replace it, and the data plane evaluates
//! `publicNetworkAccess`, `networkRuleSets` and classic `ipFilterRules` from it on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

/// A shared-access policy of a hub (or DPS): name, keys, rights. `Debug` hides the keys.
#[derive(Clone)]
pub struct AccessPolicy {
    pub name: String,
    /// Base64 keys, as shown by ARM `listkeys`.
    pub primary_key: String,
    pub secondary_key: String,
    /// Rights as ARM spells them: `RegistryRead`, `RegistryWrite`, `ServiceConnect`, `DeviceConnect`
    /// (DPS: `ServiceConfig`, `EnrollmentRead`, `EnrollmentWrite`, `DeviceConnect`, `RegistrationStatusRead`, `RegistrationStatusWrite`).
    pub rights: Vec<String>,
}

/// One simulated hub as seen by both planes.
#[derive(Debug)]
pub struct HubShared {
    /// Short name (`hub-a`).
    pub name: String,
    /// Real-looking host name (`hub-a.azure-devices.net`): SAS tokens are signed for it.
    pub host: String,
    /// ARM id: `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Devices/IotHubs/{name}`.
    pub resource_id: String,
    pub policies: Vec<AccessPolicy>,
    /// The ARM `IotHubDescription` document.
    pub resource: Mutex<Value>,
    /// Until when (Unix ms) a manual failover keeps the data plane answering 404012.
    pub failing_over_until_ms: AtomicU64,
}

impl HubShared {
    /// A failover started now: the data plane answers 404012 for `window`.
    pub fn fail_over_for(&self, window: time::Duration) {
        let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0);
        let ms = u64::try_from(window.whole_milliseconds()).unwrap_or(0);
        self.failing_over_until_ms
            .store(now.saturating_add(ms), Ordering::SeqCst);
    }

    /// Whether a failover keeps the data plane down at `now_ms`.
    pub fn failing_over(&self, now_ms: u64) -> bool {
        now_ms < self.failing_over_until_ms.load(Ordering::SeqCst)
    }
}

pub type Hubs = Arc<Vec<Arc<HubShared>>>;

/// Lock a mutex; a poisoned lock means a handler panicked mid-update, and the simulator state
/// can no longer be trusted, so failing loudly is right.
#[allow(
    clippy::expect_used,
    reason = "poisoning only follows a panic in another handler; the simulator's state is then untrustworthy and stopping loudly is intended"
)]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("simulator state lock poisoned")
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("name", &self.name)
            .field("primary_key", &"<redacted>")
            .field("secondary_key", &"<redacted>")
            .field("rights", &self.rights)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keys_never_print() {
        let p = AccessPolicy {
            name: "iothubowner".into(),
            primary_key: "UFJJTUFSWS1TRUNSRVQ=".into(),
            secondary_key: "U0VDT05EQVJZLVNFQ1JFVA==".into(),
            rights: vec!["RegistryWrite".into()],
        };
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("UFJJ") && !shown.contains("U0VD"),
            "{shown}"
        );
    }
}
