//! The identity registry of one simulated hub: devices, modules, twins, configurations.
//!
//! Owns: the compact in-memory model (1M devices must fit in modest memory, so fields are boxed
//! strings and raw JSON, not `serde_json::Value` trees), etags, generation ids, edge scopes, the
//! create / replace / delete rules with their error codes (§5.1, §6.2).
//! Must not: know HTTP, JSON request shapes (see `wire`), or import modes (see `apply`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::error::HubError;
pub use super::records::{Auth, Key, Twin, compact, etag_matches, expand};

#[derive(Clone, Debug)]
pub struct Module {
    pub id: Box<str>,
    pub managed_by: Option<Box<str>>,
    pub etag: u64,
    pub generation: u64,
    pub auth: Auth,
    pub twin: Twin,
}

#[derive(Clone, Debug)]
pub struct Device {
    pub etag: u64,
    pub generation: u64,
    pub enabled: bool,
    pub status_updated: i64,
    pub auth: Auth,
    pub edge: bool,
    pub twin: Twin,
    /// Fields most devices lack, boxed so that a plain device stays small.
    extras: Option<Box<Extras>>,
}

#[derive(Clone, Debug, Default)]
struct Extras {
    status_reason: Option<Box<str>>,
    device_scope: Option<Box<str>>,
    parent_scopes: Vec<Box<str>>,
    modules: Vec<Module>,
}

impl Device {
    pub fn new(etag: u64, generation: u64, auth: Auth, now: i64) -> Device {
        Device {
            etag,
            generation,
            enabled: true,
            status_updated: now,
            auth,
            edge: false,
            twin: Twin::new(now),
            extras: None,
        }
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    pub fn status_reason(&self) -> Option<&str> {
        self.extras.as_ref()?.status_reason.as_deref()
    }

    pub fn device_scope(&self) -> Option<&str> {
        self.extras.as_ref()?.device_scope.as_deref()
    }

    pub fn parent_scopes(&self) -> &[Box<str>] {
        self.extras.as_ref().map_or(&[], |e| &e.parent_scopes)
    }

    pub fn modules(&self) -> &[Module] {
        self.extras.as_ref().map_or(&[], |e| &e.modules)
    }

    pub fn modules_mut(&mut self) -> &mut Vec<Module> {
        &mut self.extras_mut().modules
    }

    pub fn set_status_reason(&mut self, reason: Option<String>) {
        if reason.is_some() || self.extras.is_some() {
            self.extras_mut().status_reason = reason.map(String::into_boxed_str);
        }
    }

    pub fn set_scopes(&mut self, scope: Option<Box<str>>, parents: Vec<Box<str>>) {
        if scope.is_some() || !parents.is_empty() || self.extras.is_some() {
            let e = self.extras_mut();
            e.device_scope = scope;
            e.parent_scopes = parents;
        }
    }
}

/// Identity fields a caller may set on a device (from a PUT body, a bulk entry or an import line).
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub enabled: bool,
    pub status_reason: Option<String>,
    /// `None`: SAS with generated keys.
    pub auth: Option<Auth>,
    pub edge: bool,
    pub device_scope: Option<String>,
    pub parent_scopes: Vec<String>,
}

/// Rules the hub applies when it creates or replaces identities.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Maximum number of devices (403002 beyond).
    pub device_quota: Option<usize>,
    /// Reject a leaf `deviceScope` that names no existing edge device (400028). The service
    /// behaviour is UNCERTAIN (§4.2, §12.8); strict is the safer assumption for a client.
    pub strict_scopes: bool,
}

/// The registry of one hub.
#[derive(Debug, Default)]
pub struct Registry {
    /// Boxed values: B-tree nodes fill to about half on ascending inserts, so keeping values
    /// out of the nodes saves more than the pointer costs.
    pub devices: BTreeMap<Box<str>, Box<Device>>,
    /// Bumped on every identity write: device and module etags come from it, so they change on
    /// every write and never repeat within a run.
    counter: u64,
    pub configurations: BTreeMap<String, Value>,
}

/// Device and module etag: base64 of a decimal number (`MQ==`, `NzE0MzIwMjE5`), as seen in exports.
pub fn identity_etag(n: u64) -> String {
    B64.encode(n.to_string())
}

/// Device id rule of the service (`^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c))
}

/// `(deviceScope, parentScopes)` of a device.
type Scopes = (Option<Box<str>>, Vec<Box<str>>);

const GENERATION_BASE: u64 = 638_000_000_000_000_000;

/// The generation id for counter value `n`; wraps like the counter itself (2^64 writes never
/// happen, but an id must not panic).
fn generation_id(n: u64) -> u64 {
    GENERATION_BASE.wrapping_add(n)
}

impl Registry {
    fn next(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        self.counter
    }

    /// `configurations.txt` content: one JSON line per configuration.
    pub fn configuration_lines(&self) -> String {
        let mut out = String::new();
        for c in self.configurations.values() {
            out.push_str(&c.to_string());
            out.push('\n');
        }
        out
    }

    pub fn device(&self, id: &str) -> Result<&Device, HubError> {
        self.devices
            .get(id)
            .map(|d| &**d)
            .ok_or_else(|| HubError::device_not_found(id))
    }

    pub fn device_mut(&mut self, id: &str) -> Result<&mut Device, HubError> {
        self.devices
            .get_mut(id)
            .map(|d| &mut **d)
            .ok_or_else(|| HubError::device_not_found(id))
    }

    pub fn module_mut(&mut self, id: &str, module: &str) -> Result<&mut Module, HubError> {
        let d = self.device_mut(id)?;
        d.modules_mut()
            .iter_mut()
            .find(|m| &*m.id == module)
            .ok_or_else(|| HubError::module_not_found(id, module))
    }

    /// Create a device. Edge devices get their own scope and the two system modules.
    pub fn create_device(
        &mut self,
        id: &str,
        identity: Identity,
        rules: Rules,
        now: i64,
    ) -> Result<&mut Device, HubError> {
        if !valid_id(id) {
            return Err(HubError::argument_invalid(format!(
                "Device id '{id}' is invalid."
            )));
        }
        if self.devices.contains_key(id) {
            return Err(HubError::new(
                409_001,
                "DeviceAlreadyExists",
                format!("A device with ID '{id}' is already registered."),
            ));
        }
        if rules.device_quota.is_some_and(|q| self.devices.len() >= q) {
            return Err(HubError::new(
                403_002,
                "IotHubQuotaExceeded",
                "Total number of devices on IotHub exceeded the allocated quota.",
            ));
        }
        let (device_scope, parent_scopes) = self.scopes_for(id, &identity, None, rules)?;
        let etag = self.next();
        let generation = generation_id(self.next());
        let mut device = Device::new(
            etag,
            generation,
            identity.auth.unwrap_or_else(Auth::generated_sas),
            now,
        );
        device.enabled = identity.enabled;
        device.edge = identity.edge;
        device.set_status_reason(identity.status_reason);
        device.set_scopes(device_scope, parent_scopes);
        if device.edge {
            let own = format!("ms-azure-iot-edge://{id}-{generation}").into_boxed_str();
            let parents = device.parent_scopes().to_vec();
            device.set_scopes(Some(own), parents);
            for system in ["$edgeAgent", "$edgeHub"] {
                let module = Module {
                    id: system.into(),
                    managed_by: Some("iotEdge".into()),
                    etag: self.next(),
                    generation: generation_id(self.next()),
                    auth: Auth::None,
                    twin: Twin::new(now),
                };
                device.modules_mut().push(module);
            }
        }
        Ok(self.devices.entry(id.into()).or_insert(Box::new(device)))
    }

    /// Replace a device's identity (twin and modules kept). `if_match` per `etag_matches`.
    pub fn replace_device(
        &mut self,
        id: &str,
        identity: Identity,
        if_match: Option<&str>,
        rules: Rules,
        now: i64,
    ) -> Result<&mut Device, HubError> {
        let current = self.device(id)?;
        if !etag_matches(&identity_etag(current.etag), if_match) {
            return Err(HubError::precondition_failed(&format!("device '{id}'")));
        }
        let (scope, parents) = self.scopes_for(id, &identity, Some(current), rules)?;
        let etag = self.next();
        let (n1, n2) = (self.next(), self.next());
        let d = self.device_mut(id)?;
        if d.enabled != identity.enabled {
            d.status_updated = now;
        }
        d.etag = etag;
        d.enabled = identity.enabled;
        d.set_status_reason(identity.status_reason);
        if let Some(auth) = identity.auth {
            d.auth = auth;
        }
        let became_edge = identity.edge && !d.edge;
        d.edge = identity.edge;
        let scope = if d.edge {
            Some(format!("ms-azure-iot-edge://{id}-{}", d.generation).into_boxed_str())
        } else {
            scope
        };
        d.set_scopes(scope, parents);
        if became_edge && !d.modules().iter().any(|m| &*m.id == "$edgeAgent") {
            for (system, n) in [("$edgeAgent", n1), ("$edgeHub", n2)] {
                d.modules_mut().push(Module {
                    id: system.into(),
                    managed_by: Some("iotEdge".into()),
                    etag: n,
                    generation: generation_id(n),
                    auth: Auth::None,
                    twin: Twin::new(now),
                });
            }
        }
        Ok(d)
    }

    pub fn delete_device(&mut self, id: &str, if_match: Option<&str>) -> Result<Device, HubError> {
        let current = self.device(id)?;
        if !etag_matches(&identity_etag(current.etag), if_match) {
            return Err(HubError::precondition_failed(&format!("device '{id}'")));
        }
        self.devices
            .remove(id)
            .map(|d| *d)
            .ok_or_else(|| HubError::device_not_found(id))
    }

    /// Create a module or replace its identity (when `if_match` is given).
    pub fn put_module(
        &mut self,
        id: &str,
        module: &str,
        auth: Option<Auth>,
        managed_by: Option<String>,
        if_match: Option<&str>,
        now: i64,
    ) -> Result<&mut Module, HubError> {
        if !valid_id(module) || module.starts_with('$') {
            return Err(HubError::argument_invalid(format!(
                "Module id '{module}' is invalid or reserved for IoT Edge."
            )));
        }
        let etag = self.next();
        let generation = generation_id(self.next());
        let d = self.device_mut(id)?;
        if let Some(pos) = d.modules().iter().position(|m| &*m.id == module) {
            let m = &mut d.modules_mut()[pos];
            if if_match.is_none() {
                return Err(HubError::new(
                    409_301,
                    "ModuleAlreadyExistsOnDevice",
                    format!("A module with ID '{module}' is already registered on device '{id}'."),
                ));
            }
            if !etag_matches(&identity_etag(m.etag), if_match) {
                return Err(HubError::precondition_failed(&format!(
                    "module '{id}/{module}'"
                )));
            }
            m.etag = etag;
            if let Some(a) = auth {
                m.auth = a;
            }
            m.managed_by = managed_by.map(String::into_boxed_str);
            return Ok(m);
        }
        if if_match.is_some_and(|m| m.trim() != "*") {
            return Err(HubError::module_not_found(id, module));
        }
        let m = Module {
            id: module.into(),
            managed_by: managed_by.map(String::into_boxed_str),
            etag,
            generation,
            auth: auth.unwrap_or_else(Auth::generated_sas),
            twin: Twin::new(now),
        };
        let modules = d.modules_mut();
        modules.push(m);
        modules
            .last_mut()
            .ok_or_else(|| HubError::module_not_found(id, module))
    }

    pub fn delete_module(
        &mut self,
        id: &str,
        module: &str,
        if_match: Option<&str>,
    ) -> Result<(), HubError> {
        let d = self.device_mut(id)?;
        let pos = d
            .modules()
            .iter()
            .position(|m| &*m.id == module)
            .ok_or_else(|| HubError::module_not_found(id, module))?;
        if !etag_matches(&identity_etag(d.modules()[pos].etag), if_match) {
            return Err(HubError::precondition_failed(&format!(
                "module '{id}/{module}'"
            )));
        }
        d.modules_mut().remove(pos);
        Ok(())
    }

    /// The `(deviceScope, parentScopes)` a device gets. A leaf's scope must name an existing edge
    /// device with the same generation (the generation id inside the scope differs between hubs).
    fn scopes_for(
        &self,
        id: &str,
        identity: &Identity,
        current: Option<&Device>,
        rules: Rules,
    ) -> Result<Scopes, HubError> {
        let requested = identity
            .device_scope
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| identity.parent_scopes.first().map(String::as_str));
        let requested = if identity.edge {
            identity.parent_scopes.first().map(String::as_str)
        } else {
            requested
        };
        let Some(scope) = requested else {
            return Ok((None, Vec::new()));
        };
        if current.is_some_and(|c| {
            c.device_scope() == Some(scope) || c.parent_scopes().iter().any(|p| &**p == scope)
        }) {
            let parents = vec![scope.into()];
            return Ok(((!identity.edge).then(|| scope.into()), parents));
        }
        if self.scope_owner(scope).is_none_or(|owner| owner == id) {
            if rules.strict_scopes {
                return Err(HubError::new(
                    400_028,
                    "InvalidDeviceScope",
                    format!(
                        "Device scope '{scope}' of device '{id}' does not name an edge device in this hub."
                    ),
                ));
            }
            return Ok((None, Vec::new()));
        }
        Ok(((!identity.edge).then(|| scope.into()), vec![scope.into()]))
    }

    /// The edge device whose current scope is `scope`.
    pub fn scope_owner(&self, scope: &str) -> Option<&str> {
        let rest = scope.strip_prefix("ms-azure-iot-edge://")?;
        let (owner, _) = rest.rsplit_once('-')?;
        let (key, device) = self.devices.get_key_value(owner)?;
        (device.edge && device.device_scope() == Some(scope)).then_some(&**key)
    }
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

    const RULES: Rules = Rules {
        device_quota: Some(2),
        strict_scopes: true,
    };

    fn sas() -> Identity {
        Identity {
            enabled: true,
            ..Identity::default()
        }
    }

    #[test]
    fn etags_change_on_every_write_and_if_match_is_honoured() {
        let mut r = Registry::default();
        let e1 = identity_etag(r.create_device("d1", sas(), RULES, 0).unwrap().etag);
        let e2 = identity_etag(
            r.replace_device("d1", sas(), Some(&format!("\"{e1}\"")), RULES, 0)
                .unwrap()
                .etag,
        );
        assert_ne!(e1, e2);
        let stale = r
            .replace_device("d1", sas(), Some(&e1), RULES, 0)
            .unwrap_err();
        assert_eq!(stale.code, 412_001);
        assert_eq!(r.delete_device("d1", Some(&e1)).unwrap_err().code, 412_001);
        r.delete_device("d1", Some("*")).unwrap();
        assert_eq!(r.delete_device("d1", Some("*")).unwrap_err().code, 404_001);
    }

    #[test]
    fn quota_duplicates_and_bad_ids() {
        let mut r = Registry::default();
        r.create_device("a", sas(), RULES, 0).unwrap();
        assert_eq!(
            r.create_device("a", sas(), RULES, 0).unwrap_err().code,
            409_001
        );
        r.create_device("b", sas(), RULES, 0).unwrap();
        assert_eq!(
            r.create_device("c", sas(), RULES, 0).unwrap_err().code,
            403_002
        );
        assert_eq!(
            r.create_device("bad/id", sas(), RULES, 0).unwrap_err().code,
            400_004
        );
    }

    #[test]
    fn edge_devices_get_scope_system_modules_and_children() {
        let mut r = Registry::default();
        let rules = Rules {
            device_quota: None,
            strict_scopes: true,
        };
        let gw = r
            .create_device(
                "gw",
                Identity {
                    edge: true,
                    ..sas()
                },
                rules,
                0,
            )
            .unwrap();
        let scope = gw.device_scope().unwrap().to_string();
        assert!(scope.starts_with("ms-azure-iot-edge://gw-638"));
        assert_eq!(gw.modules().len(), 2);
        let child = r
            .create_device(
                "leaf",
                Identity {
                    device_scope: Some(scope.clone()),
                    ..sas()
                },
                rules,
                0,
            )
            .unwrap();
        assert_eq!(child.parent_scopes(), vec![scope.into_boxed_str()]);
        let foreign = Identity {
            device_scope: Some("ms-azure-iot-edge://gw-1".into()),
            ..sas()
        };
        assert_eq!(
            r.create_device("leaf2", foreign, rules, 0)
                .unwrap_err()
                .code,
            400_028
        );
    }
}
