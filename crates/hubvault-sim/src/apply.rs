//! Import modes (docs/azure.md): apply one `ExportImportDevice` line to a registry. Shared by
//! import jobs, bulk `POST /devices` and the control API's `devices.txt` loader.
//!
//! Owns: the per-mode rules (device etag vs twin etag, missing vs existing device) and the
//! error code each failure gets. Must not: know blobs or HTTP.

use serde_json::Value;

use super::error::HubError;
use super::registry::{Registry, Rules, Twin, compact, identity_etag};
use super::wire::{parse_auth, parse_identity};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    Create,
    CreateOrUpdate,
    CreateOrUpdateIfMatchETag,
    Update,
    UpdateIfMatchETag,
    Delete,
    DeleteIfMatchETag,
    UpdateTwin,
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    /// Enum names as the service spells them; matched case-insensitively (§4.1).
    pub fn parse(s: &str) -> Option<ImportMode> {
        use ImportMode::{
            Create, CreateOrUpdate, CreateOrUpdateIfMatchETag, Delete, DeleteIfMatchETag, Update,
            UpdateIfMatchETag, UpdateTwin, UpdateTwinIfMatchETag,
        };
        [
            Create,
            CreateOrUpdate,
            CreateOrUpdateIfMatchETag,
            Update,
            UpdateIfMatchETag,
            Delete,
            DeleteIfMatchETag,
            UpdateTwin,
            UpdateTwinIfMatchETag,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::CreateOrUpdate => "createOrUpdate",
            ImportMode::CreateOrUpdateIfMatchETag => "createOrUpdateIfMatchETag",
            ImportMode::Update => "update",
            ImportMode::UpdateIfMatchETag => "updateIfMatchETag",
            ImportMode::Delete => "delete",
            ImportMode::DeleteIfMatchETag => "deleteIfMatchETag",
            ImportMode::UpdateTwin => "updateTwin",
            ImportMode::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }
}

/// How lines are applied beyond the mode itself.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    pub rules: Rules,
    /// Apply `properties.reported` from the line. The service behaviour is UNCERTAIN (§4.2);
    /// jobs and bulk default to ignoring it (reported properties are device-owned), the control
    /// loader applies it so seeded fleets round-trip.
    pub apply_reported: bool,
}

/// The mode of a line: its `importMode`, else `default`.
pub fn line_mode(line: &Value, default: ImportMode) -> Result<ImportMode, HubError> {
    match line.get("importMode").and_then(Value::as_str) {
        None => Ok(default),
        Some(s) => ImportMode::parse(s).ok_or_else(|| {
            HubError::argument_invalid(format!(
                "Error converting value \"{s}\" to type 'ImportMode'."
            ))
        }),
    }
}

/// Apply one line. On error nothing of the line is applied.
pub fn apply_line(
    reg: &mut Registry,
    line: &Value,
    mode: ImportMode,
    opts: ApplyOptions,
    now: i64,
) -> Result<(), HubError> {
    let id = line
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HubError::argument_null("The device id ('id') is missing."))?;
    match line.get("moduleId").and_then(Value::as_str) {
        Some(module) => apply_module(reg, id, module, line, mode, opts, now),
        None => apply_device(reg, id, line, mode, opts, now),
    }
}

fn etag_of<'a>(line: &'a Value, key: &str) -> Option<&'a str> {
    line.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn has_twin(line: &Value) -> bool {
    line.get("tags").is_some_and(|t| !t.is_null())
        || line.get("properties").is_some_and(|t| !t.is_null())
}

/// Overwrite tags and desired (and reported when allowed) from the line.
fn write_twin(t: &mut Twin, line: &Value, apply_reported: bool, now: i64) {
    t.version = t.version.saturating_add(1);
    t.set_tags(compact(line.get("tags")).as_deref());
    if let Some(desired) = line.pointer("/properties/desired") {
        t.set_desired(compact(Some(desired)).as_deref());
        t.desired_version = t.desired_version.saturating_add(1);
        t.updated = now;
    }
    if apply_reported && let Some(reported) = line.pointer("/properties/reported") {
        t.set_reported(compact(Some(reported)).as_deref());
        t.reported_version = t.reported_version.saturating_add(1);
    }
}

fn apply_device(
    reg: &mut Registry,
    id: &str,
    line: &Value,
    mode: ImportMode,
    opts: ApplyOptions,
    now: i64,
) -> Result<(), HubError> {
    use ImportMode::{
        Create, CreateOrUpdate, CreateOrUpdateIfMatchETag, Delete, DeleteIfMatchETag, Update,
        UpdateIfMatchETag, UpdateTwin, UpdateTwinIfMatchETag,
    };
    let exists = reg.devices.contains_key(id);
    let device_etag = etag_of(line, "eTag");
    let twin_etag = etag_of(line, "twinETag");
    let mismatch = || HubError::precondition_failed(&format!("device '{id}'"));
    match (mode, exists) {
        (
            Update
            | UpdateIfMatchETag
            | Delete
            | DeleteIfMatchETag
            | UpdateTwin
            | UpdateTwinIfMatchETag,
            false,
        ) => Err(HubError::device_not_found(id)),
        (Create, true) => Err(HubError::new(
            409_001,
            "DeviceAlreadyExists",
            format!("A device with ID '{id}' is already registered."),
        )),
        (Delete | DeleteIfMatchETag, true) => {
            let if_match = if mode == DeleteIfMatchETag {
                Some(device_etag.ok_or_else(mismatch)?)
            } else {
                None
            };
            reg.delete_device(id, if_match).map(drop)
        }
        (UpdateTwin | UpdateTwinIfMatchETag, true) => {
            let d = reg.device_mut(id)?;
            if mode == UpdateTwinIfMatchETag
                && !d.twin.matches(Some(twin_etag.ok_or_else(mismatch)?))
            {
                return Err(mismatch());
            }
            write_twin(&mut d.twin, line, opts.apply_reported, now);
            Ok(())
        }
        (Create | CreateOrUpdate | CreateOrUpdateIfMatchETag, false) => {
            let identity = parse_identity(line)?;
            let d = reg.create_device(id, identity, opts.rules, now)?;
            if has_twin(line) {
                write_twin(&mut d.twin, line, opts.apply_reported, now);
                // A new twin starts at version 1 whatever the line carried.
                d.twin.version = 1;
            }
            Ok(())
        }
        (CreateOrUpdate | CreateOrUpdateIfMatchETag | Update | UpdateIfMatchETag, true) => {
            let identity = parse_identity(line)?;
            let current = reg.device(id)?;
            let checked = matches!(mode, CreateOrUpdateIfMatchETag | UpdateIfMatchETag);
            if checked && device_etag != Some(identity_etag(current.etag).as_str()) {
                return Err(mismatch());
            }
            if twin_etag.is_some() && !current.twin.matches(twin_etag) {
                return Err(HubError::precondition_failed(&format!(
                    "the twin of device '{id}'"
                )));
            }
            let d = reg.replace_device(id, identity, None, opts.rules, now)?;
            if has_twin(line) {
                write_twin(&mut d.twin, line, opts.apply_reported, now);
            }
            Ok(())
        }
    }
}

fn apply_module(
    reg: &mut Registry,
    id: &str,
    module: &str,
    line: &Value,
    mode: ImportMode,
    opts: ApplyOptions,
    now: i64,
) -> Result<(), HubError> {
    use ImportMode::{
        Create, CreateOrUpdateIfMatchETag, Delete, DeleteIfMatchETag, Update, UpdateIfMatchETag,
        UpdateTwin, UpdateTwinIfMatchETag,
    };
    if module.starts_with('$') {
        // System modules are recreated with their edge device; the service refuses them on import
        // (issue azure-iot-sdk-csharp#1146).
        return Err(HubError::argument_invalid(format!(
            "Module '{module}' on device '{id}' is managed by IoT Edge and cannot be imported."
        )));
    }
    let device = reg.device(id)?;
    let existing = device.modules().iter().find(|m| &*m.id == module);
    let mismatch = || HubError::precondition_failed(&format!("module '{id}/{module}'"));
    let device_etag = etag_of(line, "eTag");
    match (mode, existing) {
        (
            Update
            | UpdateIfMatchETag
            | Delete
            | DeleteIfMatchETag
            | UpdateTwin
            | UpdateTwinIfMatchETag,
            None,
        ) => Err(HubError::module_not_found(id, module)),
        (Create, Some(_)) => Err(HubError::new(
            409_301,
            "ModuleAlreadyExistsOnDevice",
            format!("A module with ID '{module}' is already registered on device '{id}'."),
        )),
        (Delete | DeleteIfMatchETag, Some(m)) => {
            if mode == DeleteIfMatchETag && device_etag != Some(identity_etag(m.etag).as_str()) {
                return Err(mismatch());
            }
            reg.delete_module(id, module, None)
        }
        (UpdateTwin | UpdateTwinIfMatchETag, Some(m)) => {
            if mode == UpdateTwinIfMatchETag
                && !m
                    .twin
                    .matches(Some(etag_of(line, "twinETag").ok_or_else(mismatch)?))
            {
                return Err(mismatch());
            }
            let m = reg.module_mut(id, module)?;
            write_twin(&mut m.twin, line, opts.apply_reported, now);
            Ok(())
        }
        (_, existing) => {
            let checked = matches!(mode, CreateOrUpdateIfMatchETag | UpdateIfMatchETag);
            if let Some(m) = existing {
                if checked && device_etag != Some(identity_etag(m.etag).as_str()) {
                    return Err(mismatch());
                }
                if let Some(te) = etag_of(line, "twinETag").filter(|te| !m.twin.matches(Some(te))) {
                    return Err(HubError::precondition_failed(&format!(
                        "the twin of module '{id}/{module}' ({te})"
                    )));
                }
            }
            let auth = parse_auth(line.get("authentication"))?;
            let if_match = existing.map(|_| "*");
            let m = reg.put_module(id, module, auth, None, if_match, now)?;
            if has_twin(line) {
                write_twin(&mut m.twin, line, opts.apply_reported, now);
            }
            Ok(())
        }
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
    use serde_json::json;

    const OPTS: ApplyOptions = ApplyOptions {
        rules: Rules {
            device_quota: None,
            strict_scopes: true,
        },
        apply_reported: false,
    };

    #[test]
    fn every_mode_on_missing_and_existing_devices() {
        use ImportMode::*;
        let mut reg = Registry::default();
        let line = json!({"id": "d1", "tags": {"a": 1}, "properties": {"desired": {"x": 1}, "reported": {"r": 2}}});
        for mode in [
            Update,
            UpdateIfMatchETag,
            Delete,
            DeleteIfMatchETag,
            UpdateTwin,
            UpdateTwinIfMatchETag,
        ] {
            assert_eq!(
                apply_line(&mut reg, &line, mode, OPTS, 0).unwrap_err().code,
                404_001,
                "{mode:?}"
            );
        }
        apply_line(&mut reg, &line, Create, OPTS, 0).unwrap();
        assert!(
            reg.devices["d1"].twin.reported().is_none(),
            "reported ignored by default"
        );
        assert_eq!(
            apply_line(&mut reg, &line, Create, OPTS, 0)
                .unwrap_err()
                .code,
            409_001
        );
        apply_line(&mut reg, &line, CreateOrUpdate, OPTS, 0).unwrap();
        let stale = json!({"id": "d1", "eTag": "bm9wZQ=="});
        assert_eq!(
            apply_line(&mut reg, &stale, UpdateIfMatchETag, OPTS, 0)
                .unwrap_err()
                .code,
            412_001
        );
        assert_eq!(
            apply_line(&mut reg, &stale, CreateOrUpdateIfMatchETag, OPTS, 0)
                .unwrap_err()
                .code,
            412_001
        );
        let twin_stale = json!({"id": "d1", "twinETag": "AAAAAAAAAAA=", "tags": {}});
        assert_eq!(
            apply_line(&mut reg, &twin_stale, CreateOrUpdate, OPTS, 0)
                .unwrap_err()
                .code,
            412_001
        );
        apply_line(&mut reg, &twin_stale, UpdateTwin, OPTS, 0).unwrap();
        assert_eq!(
            apply_line(&mut reg, &twin_stale, UpdateTwinIfMatchETag, OPTS, 0)
                .unwrap_err()
                .code,
            412_001
        );
        let etag = identity_etag(reg.devices["d1"].etag);
        assert_eq!(
            apply_line(&mut reg, &stale, DeleteIfMatchETag, OPTS, 0)
                .unwrap_err()
                .code,
            412_001
        );
        apply_line(
            &mut reg,
            &json!({"id": "d1", "eTag": etag}),
            DeleteIfMatchETag,
            OPTS,
            0,
        )
        .unwrap();
        assert!(reg.devices.is_empty());
    }

    #[test]
    fn modules_and_system_modules() {
        let mut reg = Registry::default();
        apply_line(
            &mut reg,
            &json!({"id": "gw", "capabilities": {"iotEdge": true}}),
            ImportMode::Create,
            OPTS,
            0,
        )
        .unwrap();
        apply_line(
            &mut reg,
            &json!({"id": "gw", "moduleId": "filter"}),
            ImportMode::CreateOrUpdate,
            OPTS,
            0,
        )
        .unwrap();
        assert_eq!(reg.devices["gw"].modules().len(), 3);
        let sys = apply_line(
            &mut reg,
            &json!({"id": "gw", "moduleId": "$edgeAgent"}),
            ImportMode::CreateOrUpdate,
            OPTS,
            0,
        );
        assert_eq!(sys.unwrap_err().code, 400_004);
        let orphan = apply_line(
            &mut reg,
            &json!({"id": "nope", "moduleId": "m"}),
            ImportMode::CreateOrUpdate,
            OPTS,
            0,
        );
        assert_eq!(orphan.unwrap_err().code, 404_001);
    }

    #[test]
    fn unknown_mode_is_an_argument_error() {
        assert_eq!(
            line_mode(&json!({"importMode": "merge"}), ImportMode::CreateOrUpdate)
                .unwrap_err()
                .code,
            400_004
        );
        assert_eq!(
            line_mode(&json!({"importMode": "CREATE"}), ImportMode::CreateOrUpdate).unwrap(),
            ImportMode::Create
        );
    }
}
