//! Deterministic synthetic fleets: the same `(count, seed)` gives the same ids, keys, twins.
//!
//! The mix, per 50 devices: one edge gateway (`gw-…`, with a custom `filter` module next to
//! `$edgeAgent`/`$edgeHub`) whose next five devices are its children; about 10% x509
//! self-signed and 4% CA-signed devices; 6% disabled (`statusReason: "retired"`); tags on every
//! device, desired and reported properties on most; two configurations (a device configuration
//! and an edge deployment). Everything else is SAS with keys drawn from the seeded generator.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

use super::registry::{Auth, Identity, Key, Registry, Rules};

fn key(rng: &mut StdRng) -> Key {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    Key::Bytes32(b)
}

fn thumbprint(rng: &mut StdRng) -> Box<str> {
    let mut hex = String::with_capacity(40);
    for _ in 0..20 {
        let _ = write!(hex, "{:02X}", rng.r#gen::<u8>());
    }
    hex.into_boxed_str()
}

/// Add `count` devices (ids `dev-0000001`…, gateways `gw-0000001`…, numbered from `start`) and
/// the sample configurations. Ids that already exist are skipped. Returns devices created.
pub fn seed(reg: &mut Registry, count: usize, seed: u64, start: usize, now: i64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let rules = Rules {
        device_quota: None,
        strict_scopes: false,
    };
    let mut created = 0_usize;
    let mut gateway_scope: Option<String> = None;
    for i in start..start.saturating_add(count) {
        let slot = i % 50;
        let edge = slot == 0;
        let id = if edge {
            format!("gw-{i:07}")
        } else {
            format!("dev-{i:07}")
        };
        let roll: u32 = rng.gen_range(0..100);
        let auth = if edge {
            Auth::Sas {
                primary: key(&mut rng),
                secondary: key(&mut rng),
            }
        } else {
            match roll {
                0..10 => Auth::SelfSigned {
                    primary: thumbprint(&mut rng),
                    secondary: Some(thumbprint(&mut rng)),
                },
                10..14 => Auth::CertificateAuthority,
                _ => Auth::Sas {
                    primary: key(&mut rng),
                    secondary: key(&mut rng),
                },
            }
        };
        let disabled = !edge && (14..20).contains(&roll);
        let child = !edge && (1..=5).contains(&slot);
        let identity = Identity {
            enabled: !disabled,
            status_reason: disabled.then(|| "retired".to_string()),
            auth: Some(auth),
            edge,
            device_scope: if child { gateway_scope.clone() } else { None },
            parent_scopes: Vec::new(),
        };
        let Ok(device) = reg.create_device(&id, identity, rules, now) else {
            continue;
        };
        created = created.saturating_add(1);
        let site = i / 1000;
        let tags = json!({"site": format!("plant-{site}"), "line": i % 7}).to_string();
        if roll.is_multiple_of(4) {
            device.twin.set_docs(Some(&tags), None, None);
        } else {
            #[allow(clippy::arithmetic_side_effects, reason = "roll < 100")]
            let desired = json!({"telemetryIntervalSec": 10 + roll % 50}).to_string();
            let reported = json!({"fwVersion": format!("2.{}.{}", roll % 5, i % 10)}).to_string();
            device
                .twin
                .set_docs(Some(&tags), Some(&desired), Some(&reported));
            device.twin.version = 3;
            device.twin.desired_version = 2;
            device.twin.reported_version = 2;
        }
        if edge {
            gateway_scope = device.device_scope().map(String::from);
            let _ = reg.put_module(
                &id,
                "filter",
                Some(Auth::Sas {
                    primary: key(&mut rng),
                    secondary: key(&mut rng),
                }),
                None,
                None,
                now,
            );
        }
    }
    seed_configurations(reg, now);
    created
}

fn seed_configurations(reg: &mut Registry, now: i64) {
    let ts = super::error::timestamp(
        time::OffsetDateTime::from_unix_timestamp(now).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    );
    let device_config = json!({
        "id": "thermostat-v2", "schemaVersion": "1.0", "labels": {"team": "ops"},
        "content": {"deviceContent": {"properties.desired.setpoint": 21}},
        "targetCondition": "tags.site='plant-0'", "createdTimeUtc": ts, "lastUpdatedTimeUtc": ts, "priority": 10,
        "systemMetrics": {"results": {}, "queries": {}}, "metrics": {"results": {}, "queries": {}}, "etag": "MQ==",
    });
    let deployment = json!({
        "id": "edge-base", "schemaVersion": "1.0", "labels": {},
        "content": {"modulesContent": {
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"}, "modules": {}}},
            "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}}},
        }},
        "targetCondition": "capabilities.iotEdge=true", "createdTimeUtc": ts, "lastUpdatedTimeUtc": ts, "priority": 5,
        "systemMetrics": {"results": {}, "queries": {}}, "metrics": {"results": {}, "queries": {}}, "etag": "MQ==",
    });
    for c in [device_config, deployment] {
        let id = c["id"].as_str().unwrap_or_default().to_string();
        reg.configurations.entry(id).or_insert(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::export_device_line;

    #[test]
    fn same_seed_same_fleet_with_the_promised_mix() {
        let (mut a, mut b) = (Registry::default(), Registry::default());
        assert_eq!(seed(&mut a, 200, 7, 0, 0), 200);
        seed(&mut b, 200, 7, 0, 0);
        let lines = |r: &Registry| {
            r.devices
                .iter()
                .map(|(id, d)| export_device_line(id, d, true))
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&a), lines(&b));
        let kinds: std::collections::HashSet<&str> =
            a.devices.values().map(|d| d.auth.type_name()).collect();
        assert_eq!(kinds.len(), 3, "sas, selfSigned and certificateAuthority");
        assert!(a.devices.values().any(|d| !d.enabled));
        assert!(
            a.devices.values().any(|d| !d.parent_scopes().is_empty()),
            "children of edge gateways"
        );
        assert_eq!(a.devices["gw-0000000"].modules().len(), 3);
        assert_eq!(a.configurations.len(), 2);
    }
}
