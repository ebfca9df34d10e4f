//! State that the simulated `IoT` Hub data plane and the simulated ARM endpoint both touch.
//!
//! The ARM resource document (`IotHubDescription`, contract §7.1) is the single source of truth
//! for a hub's networking: ARM GET/PUT read and replace it, and the data plane evaluates
//! `publicNetworkAccess`, `networkRuleSets` and classic `ipFilterRules` from it on every request.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A shared-access policy of a hub (or DPS): name, keys, rights.
#[derive(Clone, Debug)]
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
}

pub type Hubs = Arc<Vec<Arc<HubShared>>>;
