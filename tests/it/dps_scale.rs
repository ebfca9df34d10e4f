//! The DPS issue's must-hold cases at their stated sizes, ending where a user would check: a
//! device registering through the device registration API with its original key, landing on the
//! hub the enrollments now name, and that hub accepting its telemetry.
//!
//! - hub-a (3,000 devices: SAS, x509, edge + children, disabled) → `restore --to-dps`;
//! - 1,000 enrollments + 3 groups at hub-a, backed up, retargeted at hub-b (`--map-hub`);
//! - `backup --dps` of 10,000 enrollments + 20 groups → an empty DPS, equal keys included.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use hubvault::device::register::{DeviceKey, Registration, derive_group_key};
use hubvault::dps::{BulkMode, DpsClient, Kind};
use hubvault::hub::Connection;

use crate::support::{Workdir, World, assert_no_secrets};

const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";

/// hub-a (seeded with `devices`), an empty hub-b, the DPS instances `dps` (the first is the
/// world's `dps`), and a work folder whose config names them all.
pub(crate) async fn world(devices: usize, dps: &[&str]) -> (World, Workdir) {
    let mut builder = World::builder()
        .hubs(&[("hub-a", devices), ("hub-b", 0)])
        .arm(false)
        .dps(dps[0]);
    for d in &dps[1..] {
        builder = builder.more_dps(d);
    }
    let world = builder.start().await;
    let wd = Workdir::new();
    wd.write_identity();
    wd.config(&world).write();
    let mut text = std::fs::read_to_string(wd.config_path()).unwrap();
    for d in &world.running.dps_instances {
        let p = &d.state.policies[0];
        let cs = format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            d.state.host, p.name, p.primary_key
        );
        let _ = write!(
            text,
            "\n[dps.{}]\nconnection-string = {}\nendpoint = {}\nid-scope = {}\ndevice-endpoint = {}\n",
            d.state.name,
            toml::Value::String(cs),
            toml::Value::String(d.endpoint.clone()),
            toml::Value::String(d.state.id_scope.clone()),
            toml::Value::String(d.endpoint.clone()),
        );
    }
    std::fs::write(wd.config_path(), text).unwrap();
    (world, wd)
}

pub(crate) fn client(world: &World, dps: &str) -> DpsClient {
    let d = world.running.dps_instance(dps).unwrap();
    let p = &d.state.policies[0];
    let cs = format!(
        "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
        d.state.host, p.name, p.primary_key
    );
    DpsClient::new(
        Connection::from_connection_string(&cs)
            .unwrap()
            .with_endpoint(d.endpoint.parse().unwrap()),
    )
    .unwrap()
}

pub(crate) fn recipient(wd: &Workdir) -> String {
    hubvault::keys::load_identities(&wd.identity())
        .unwrap()
        .recipients()
        .to_strings()
        .remove(0)
}

/// `--json backup --dps dps-a`, sealed to the work folder's identity.
async fn backup_dps_a(wd: &Workdir) -> crate::support::Out {
    wd.hubvault()
        .args([
            "--json",
            "backup",
            "--dps",
            "dps-a",
            "--recipient",
            &recipient(wd),
        ])
        .run()
        .await
}

/// Every enrollment of one kind as the simulator holds it (keys included), by lower-case id:
/// (primary key, secondary key, hubs named).
fn held(world: &World, dps: &str, kind: Kind) -> BTreeMap<String, (String, String, String)> {
    let state = &world.running.dps_instance(dps).unwrap().state;
    let docs = match kind {
        Kind::Individual => state.enrollments(),
        Kind::Group => state.enrollment_groups(),
    };
    docs.into_iter()
        .map(|d| {
            let sk = &d["attestation"]["symmetricKey"];
            let hubs = d["iotHubs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .or_else(|| d["iotHubHostName"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                d[kind.id_field()].as_str().unwrap().to_ascii_lowercase(),
                (
                    sk["primaryKey"].as_str().unwrap_or_default().to_owned(),
                    sk["secondaryKey"].as_str().unwrap_or_default().to_owned(),
                    hubs,
                ),
            )
        })
        .collect()
}

pub(crate) fn key(n: usize) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| {
            u8::try_from(n % 251)
                .unwrap()
                .wrapping_mul(29)
                .wrapping_add(i.wrapping_mul(11))
                .wrapping_add(u8::try_from(n / 251 % 251).unwrap())
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `count` enrollments (`sensor-NNNNN`) and `groups` groups (`line-N`) at hub-a, created in bulk.
pub(crate) async fn enroll(client: &DpsClient, count: usize, groups: usize) {
    let enrollments: Vec<Value> = (0..count)
        .map(|i| {
            json!({"registrationId": format!("sensor-{i:05}"),
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(i), "secondaryKey": key(i + 100_000)}},
                   "initialTwin": {"tags": {"line": i % 7}},
                   "iotHubHostName": HUB_A,
                   "provisioningStatus": if i % 97 == 5 { "disabled" } else { "enabled" }})
        })
        .collect();
    assert!(
        client
            .bulk(Kind::Individual, BulkMode::Create, &enrollments)
            .await
            .unwrap()
            .is_empty()
    );
    let groups: Vec<Value> = (0..groups)
        .map(|g| {
            json!({"enrollmentGroupId": format!("line-{g}"),
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(200_000 + g), "secondaryKey": key(300_000 + g)}},
                   "allocationPolicy": "static", "iotHubs": [HUB_A]})
        })
        .collect();
    assert!(
        client
            .bulk(Kind::Group, BulkMode::Create, &groups)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Register `id` with `key` and expect it on hub-b as device `id`.
async fn lands_on_hub_b(world: &World, dps: &str, id: &str, key: DeviceKey<'_>) {
    let got = world.device_register(dps, id, key).await;
    let Registration::Assigned(a) = &got else {
        panic!("{id} was not assigned: {got:?}");
    };
    assert_eq!(a.hub, HUB_B, "{id}");
    assert_eq!(a.device_id, id);
}

/// Must hold: a hub's 3,000 devices become enrollments with their own keys; a sample registers
/// through the device API with those keys, lands on hub-b and sends telemetry hub-b accepts; the
/// x509 devices are reported (exit 1), not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3000_device_hub_enrolls_and_its_devices_reprovision_onto_hub_b() {
    let (world, wd) = world(3_000, &["dps-a"]).await;
    let export = wd.join("export");
    world.write_export("hub-a", &export).await;
    wd.hubvault()
        .args([
            "backup",
            "--hub-name",
            "hub-a",
            "--recipient",
            &recipient(&wd),
        ])
        .arg("--from-export")
        .arg(&export)
        .run()
        .await
        .expect_code(0);
    let registry = world.registry("hub-a").await;
    let devices: Vec<&Value> = registry
        .iter()
        .filter(|d| d.get("moduleId").is_none())
        .collect();
    assert_eq!(devices.len(), 3_000);
    let (sas, x509): (Vec<&Value>, Vec<&Value>) = devices
        .iter()
        .partition(|d| d["authentication"]["type"] == "sas");

    let out = wd
        .hubvault()
        .args(["-vvv", "--json", "restore", "latest", "--hub", "hub-a"])
        .args(["--to-dps", "dps-a", "--iot-hub", HUB_B, "--mode", "create"])
        .run()
        .await;
    assert_eq!(out.code, 1, "x509 devices were skipped: {}", out.text());
    let doc = out.json();
    let mut secrets = world.secrets(&["hub-a"]).await;
    secrets.retain(|s| s.len() > 8);
    assert_no_secrets(&out.text(), &secrets, "restore --to-dps -vvv");

    let mut skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = x509.iter().map(|d| d["id"].as_str().unwrap()).collect();
    skipped.sort_unstable();
    want.sort_unstable();
    assert!(!want.is_empty());
    assert_eq!(skipped, want, "every x509 device reported by id");
    assert!(
        doc["children"].as_array().is_some_and(|c| !c.is_empty()),
        "edge children named: {doc:#}"
    );

    let enrolled = held(&world, "dps-a", Kind::Individual);
    assert_eq!(enrolled.len(), sas.len(), "every SAS device, nothing else");
    for d in &sas {
        let id = d["id"].as_str().unwrap();
        let sk = &d["authentication"]["symmetricKey"];
        let (p, s, hub) = &enrolled[&id.to_ascii_lowercase()];
        assert_eq!(
            (p.as_str(), s.as_str()),
            (
                sk["primaryKey"].as_str().unwrap(),
                sk["secondaryKey"].as_str().unwrap()
            ),
            "{id}: its own keys"
        );
        assert_eq!(hub, HUB_B, "{id}");
    }

    let sample: Vec<&&Value> = sas
        .iter()
        .filter(|d| d["status"] == "enabled")
        .step_by(97)
        .take(12)
        .collect();
    for d in &sample {
        let id = d["id"].as_str().unwrap();
        let key = d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap();
        lands_on_hub_b(&world, "dps-a", id, DeviceKey::Own(key)).await;
        assert_eq!(world.device_send("hub-b", id, key).await, 204, "{id}");
    }
    let messages = world.messages("hub-b").await;
    assert_eq!(messages.values().sum::<u64>(), sample.len() as u64);
}

/// Must hold: 1,000 enrollments and 3 groups at hub-a, backed up, retargeted at hub-b with
/// `--map-hub hub-a=hub-b --mode upsert`: every enrollment names hub-b, keys unchanged, and a
/// sample of devices (own keys and group-derived keys) re-registers and lands on hub-b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_enrollment_dps_is_retargeted_and_its_devices_land_on_hub_b() {
    let (world, wd) = world(0, &["dps-a"]).await;
    let dps = client(&world, "dps-a");
    enroll(&dps, 1_000, 3).await;
    let before = held(&world, "dps-a", Kind::Individual);
    let groups_before = held(&world, "dps-a", Kind::Group);
    // Devices provisioned before the disaster sit on hub-a.
    let group_key = key(200_001);
    let derived = derive_group_key(&group_key, "machine-7").unwrap();
    let first = world
        .device_register("dps-a", "machine-7", DeviceKey::Group(&group_key))
        .await;
    assert_eq!(first.assigned().unwrap().hub, HUB_A, "{first:?}");

    backup_dps_a(&wd).await.expect_code(0);
    let out = wd
        .hubvault()
        .args(["-vvv", "--json", "restore", "latest", "--dps", "dps-a"])
        .args([
            "--to-dps",
            "dps-a",
            "--map-hub",
            "hub-a=hub-b",
            "--mode",
            "upsert",
        ])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["enrollments"]["update"], 1_000, "{doc:#}");
    assert_eq!(doc["enrollment_groups"]["update"], 3, "{doc:#}");
    let secrets: Vec<String> = before
        .values()
        .chain(groups_before.values())
        .flat_map(|(p, s, _)| [p.clone(), s.clone()])
        .collect();
    assert_no_secrets(&out.text(), &secrets, "restore --to-dps --map-hub -vvv");

    let after = held(&world, "dps-a", Kind::Individual);
    let groups_after = held(&world, "dps-a", Kind::Group);
    assert_eq!(after.len(), 1_000);
    assert!(
        after.values().all(|(_, _, hub)| hub == HUB_B),
        "every enrollment names hub-b"
    );
    assert!(
        groups_after.values().all(|(_, _, hub)| hub == HUB_B),
        "{groups_after:?}"
    );
    let keys = |m: &BTreeMap<String, (String, String, String)>| -> Vec<(String, String, String)> {
        m.iter()
            .map(|(id, (p, s, _))| (id.clone(), p.clone(), s.clone()))
            .collect()
    };
    assert_eq!(keys(&after), keys(&before), "individual keys unchanged");
    assert_eq!(
        keys(&groups_after),
        keys(&groups_before),
        "group keys unchanged"
    );

    for i in (0..1_000).step_by(111).filter(|i| i % 97 != 5) {
        let id = format!("sensor-{i:05}");
        lands_on_hub_b(&world, "dps-a", &id, DeviceKey::Own(&key(i))).await;
        assert_eq!(world.device_send("hub-b", &id, &key(i)).await, 204, "{id}");
    }
    for (g, device) in [(0, "machine-1"), (1, "machine-7"), (2, "machine-9")] {
        lands_on_hub_b(&world, "dps-a", device, DeviceKey::Group(&key(200_000 + g))).await;
    }
    assert_eq!(world.device_send("hub-b", "machine-7", &derived).await, 204);
    // A disabled enrollment is still refused after the retarget.
    let off = world
        .device_register("dps-a", "sensor-00005", DeviceKey::Own(&key(5)))
        .await;
    assert!(
        matches!(&off, Registration::NotAssigned { status, .. } if status == "disabled"),
        "{off:?}"
    );
}

/// Must hold: `backup --dps` of 10,000 enrollments and 20 groups → `restore --to-dps` into an
/// empty DPS: every enrollment and group equal, keys included (read back through
/// `attestationmechanism`); `verify --read-data` passes; a device of the rebuilt instance
/// registers under its new ID scope with its original key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_enrollment_dps_is_rebuilt_in_an_empty_instance_keys_included() {
    let (world, wd) = world(0, &["dps-a", "dps-b"]).await;
    let a = client(&world, "dps-a");
    enroll(&a, 10_000, 20).await;
    let backup = backup_dps_a(&wd).await;
    assert_eq!(backup.code, 0, "{}", backup.text());
    assert_eq!(backup.json()["enrollments"], 10_000);
    assert_eq!(backup.json()["enrollment_groups"], 20);
    wd.hubvault()
        .args(["verify", "latest", "--dps", "dps-a", "--read-data"])
        .run()
        .await
        .expect_code(0);

    let out = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-b",
        ])
        .args(["--mode", "create"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(out.json()["enrollments"]["create"], 10_000);
    assert_eq!(out.json()["enrollment_groups"]["create"], 20);

    for kind in [Kind::Individual, Kind::Group] {
        assert_eq!(
            held(&world, "dps-b", kind),
            held(&world, "dps-a", kind),
            "{kind:?}: every id, keys and hubs"
        );
    }
    // Keys as a client reads them: through attestationmechanism, on a sample.
    let b = client(&world, "dps-b");
    for i in (0..10_000).step_by(499) {
        let id = format!("sensor-{i:05}");
        let att = b.attestation(Kind::Individual, &id).await.unwrap();
        assert_eq!(att["symmetricKey"]["primaryKey"], key(i), "{id}");
        assert_eq!(
            att["symmetricKey"]["secondaryKey"],
            key(i + 100_000),
            "{id}"
        );
    }
    let diff = wd
        .hubvault()
        .args(["--json", "diff", "latest", "--dps", "dps-b"])
        .run()
        .await;
    assert_eq!(
        diff.code,
        0,
        "the rebuilt instance equals the snapshot: {}",
        diff.text()
    );
    // hub-a names in the enrollments: a device of dps-b lands on hub-a with its old key.
    let got = world
        .device_register("dps-b", "sensor-00042", DeviceKey::Own(&key(42)))
        .await;
    assert_eq!(got.assigned().unwrap().hub, HUB_A, "{got:?}");
}

/// Config entries `[dps.NAME]` for (name, served instance, policy, key).
fn add_dps_entries(wd: &Workdir, world: &World, entries: &[(&str, &str, &str, &str)]) {
    let mut text = std::fs::read_to_string(wd.config_path()).unwrap();
    for (name, dps, policy, key) in entries {
        let d = world.running.dps_instance(dps).unwrap();
        let cs = format!(
            "HostName={};SharedAccessKeyName={policy};SharedAccessKey={key}",
            d.state.host
        );
        let _ = write!(
            text,
            "\n[dps.{name}]\nconnection-string = {}\nendpoint = {}\nresource-id = {}\n",
            toml::Value::String(cs),
            toml::Value::String(d.endpoint.clone()),
            toml::Value::String(d.state.resource_id.clone()),
        );
    }
    std::fs::write(wd.config_path(), text).unwrap();
}

/// `preflight --to-dps`: the owner policy reads and writes, and the limits are reported (exit
/// 0); a read-only policy is a permissions finding naming `EnrollmentWrite` and a wrong key a
/// credentials finding explained like the hubs' 401002 (exit 1); no key in any output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_to_dps_checks_rights_and_limits() {
    use hubvault_sim::shared::AccessPolicy;
    let reader = AccessPolicy {
        name: "reader".into(),
        primary_key: key(7),
        secondary_key: key(8),
        rights: vec!["EnrollmentRead".into()],
    };
    let world = World::builder()
        .hubs(&[("hub-a", 0)])
        .arm(false)
        .dps("dps-a")
        .more_dps_with("dps-r", vec![reader.clone()])
        .start()
        .await;
    let wd = Workdir::new();
    wd.write_identity();
    wd.config(&world).write();
    let a = client(&world, "dps-a");
    enroll(&a, 25, 2).await;
    let run = |spec: &'static str| {
        let wd = &wd;
        async move {
            wd.hubvault()
                .args(["-vvv", "--json", "preflight", "--to-dps", spec])
                .run()
                .await
        }
    };
    let owner = world.dps.as_ref().unwrap().policies[0].clone();
    // Connection strings reach the simulator through a config endpoint only: use config names.
    add_dps_entries(
        &wd,
        &world,
        &[
            ("dps-a", "dps-a", owner.name.as_str(), &owner.primary_key),
            ("dps-r", "dps-r", "reader", &key(7)),
            ("dps-bad", "dps-a", owner.name.as_str(), &key(9)),
        ],
    );
    let secrets = vec![
        owner.primary_key.clone(),
        owner.secondary_key.clone(),
        key(7),
        key(9),
    ];

    let ok = run("dps-a").await;
    assert_eq!(ok.code, 0, "{}", ok.text());
    let doc = ok.json();
    let checks: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["credentials", "permissions", "enrollment-limits"],
        "{doc:#}"
    );
    assert!(
        doc["findings"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("25 of 1000000 individual enrollments, 2 of 100"),
        "{doc:#}"
    );
    assert!(
        a.get(Kind::Individual, "hubvault-preflight-write-probe")
            .await
            .unwrap()
            .is_none()
    );

    let ro = run("dps-r").await;
    assert_eq!(ro.code, 1, "{}", ro.text());
    let f = &ro.json()["findings"][1];
    assert_eq!(f["check"], "permissions", "{f:#}");
    assert!(
        f["fix"].as_str().unwrap().contains("EnrollmentWrite"),
        "{f:#}"
    );

    let bad = run("dps-bad").await;
    assert_eq!(bad.code, 1, "{}", bad.text());
    let f = &bad.json()["findings"][0];
    assert_eq!(
        (&f["check"], &f["code"]),
        (&json!("credentials"), &json!("401002")),
        "{f:#}"
    );
    assert!(f["fix"].as_str().unwrap().contains("IP filter"), "{f:#}");
    assert!(
        f["detail"].as_str().unwrap().starts_with("DPS dps-bad"),
        "{f:#}"
    );
    for out in [&ok, &ro, &bad] {
        assert_no_secrets(&out.text(), &secrets, "preflight --to-dps -vvv");
    }
}

/// The binary: `--dps` twice and `--link dps-a=hub-b`. hubvault, configured by nothing but the
/// written file, enrolls into dps-a (an enrollment naming the unlinked hub-a is refused) and a
/// device registers at the written `device-endpoint` under the written `id-scope`, landing on
/// hub-b; dps-b, given no `--link`, is linked to every hub. `--info` names each instance.
#[test]
fn the_simulator_binary_serves_linked_dps_instances_hubvault_registers_through() {
    let sim = crate::support::SimProcess::start(&[
        "--hub",
        "hub-a",
        "--hub",
        "hub-b",
        "--dps",
        "dps-a",
        "--dps",
        "dps-b",
        "--link",
        "dps-a=hub-b",
    ]);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(sim.dir().join("sim.json")).unwrap())
            .unwrap();
    for name in ["dps-a", "dps-b"] {
        let d = &info["dps"][name];
        for field in [
            "connection_string",
            "endpoint",
            "host",
            "id_scope",
            "resource_id",
            "device_endpoint",
        ] {
            assert!(d[field].is_string(), "{name}.{field}: {d:#}");
        }
    }
    assert_eq!(info["dps"]["dps-a"]["linked_hubs"], json!([HUB_B]));
    assert_eq!(info["dps"]["dps-b"]["linked_hubs"], json!([HUB_A, HUB_B]));

    let path = sim.config();
    let config =
        hubvault::config::Config::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let dps = DpsClient::new(hubvault::services::resolve_dps("dps-a", &config).unwrap()).unwrap();
    let enrollment = |id: &str, hub: &str| {
        json!({"registrationId": id, "iotHubHostName": hub, "attestation": {"type": "symmetricKey",
               "symmetricKey": {"primaryKey": key(1), "secondaryKey": key(2)}}})
    };
    let refused = crate::support::blocking(dps.bulk(
        Kind::Individual,
        BulkMode::Create,
        &[enrollment("on-a", HUB_A), enrollment("on-b", HUB_B)],
    ))
    .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].id, "on-a", "the unlinked hub refused");

    let mut at = hubvault::services::dps_provisioning("dps-a", &config).unwrap();
    assert_eq!(
        at.id_scope,
        info["dps"]["dps-a"]["id_scope"].as_str().unwrap()
    );
    at.poll_interval = std::time::Duration::from_millis(20);
    let http = reqwest::Client::new();
    let got = crate::support::blocking(hubvault::device::register::register(
        &http,
        &at,
        "on-b",
        DeviceKey::Own(&key(1)),
    ))
    .unwrap();
    assert_eq!(got.assigned().unwrap().hub, HUB_B, "{got:?}");
    let wrong = crate::support::blocking(hubvault::device::register::register(
        &http,
        &at,
        "on-b",
        DeviceKey::Own(&key(3)),
    ))
    .unwrap();
    assert!(
        matches!(
            wrong,
            Registration::Refused {
                http_status: 401,
                code: Some(401_002),
                ..
            }
        ),
        "{wrong:?}"
    );
}

/// `preflight --to-dps` with ARM: the hubs the enrollments will name must be linked (an
/// unlinked one is named with the command that links it), and a caller the DPS IP filter blocks
/// is told so — before its 401002 is blamed on the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_to_dps_reads_linked_hubs_and_the_ip_filter_through_arm() {
    let world = World::builder()
        .hubs(&[("hub-a", 0), ("hub-b", 0)])
        .dps("dps-a")
        .start()
        .await;
    let dps = world.dps.clone().unwrap();
    dps.set_linked_hubs(Some(vec![HUB_B.to_owned()]));
    let wd = Workdir::new();
    wd.write_identity();
    wd.config(&world).write();
    let owner = dps.policies[0].clone();
    add_dps_entries(
        &wd,
        &world,
        &[("dps-a", "dps-a", owner.name.as_str(), &owner.primary_key)],
    );
    let run = |hub: &'static str| {
        let wd = &wd;
        async move {
            wd.hubvault()
                .args([
                    "--json",
                    "preflight",
                    "--to-dps",
                    "dps-a",
                    "--caller-ip",
                    "127.0.0.1",
                ])
                .args(["--iot-hub", hub])
                .run()
                .await
        }
    };
    let linked = run("hub-b").await;
    assert_eq!(linked.code, 0, "{}", linked.text());
    assert_eq!(finding(&linked.json(), "linked-hubs")["ok"], true);
    assert_eq!(finding(&linked.json(), "ip-firewall")["ok"], true);

    let unlinked = run("hub-a").await;
    assert_eq!(unlinked.code, 1, "{}", unlinked.text());
    let f = finding(&unlinked.json(), "linked-hubs");
    assert_eq!(f["code"], "hub_not_linked", "{f:#}");
    assert!(f["detail"].as_str().unwrap().contains(HUB_A), "{f:#}");
    assert!(
        f["fix"].as_str().unwrap().contains("linked-hub create"),
        "{f:#}"
    );

    dps.set_network(
        "Enabled",
        json!([{"filterName": "office-only", "action": "Reject", "ipMask": "127.0.0.0/8", "target": "all"}]),
    );
    let blocked = run("hub-b").await;
    assert_eq!(blocked.code, 1, "{}", blocked.text());
    let doc = blocked.json();
    let fw = finding(&doc, "ip-firewall");
    assert_eq!(fw["code"], "401002", "{fw:#}");
    assert!(
        fw["detail"].as_str().unwrap().contains("office-only"),
        "{fw:#}"
    );
    let cred = finding(&doc, "credentials");
    assert!(
        cred["detail"]
            .as_str()
            .unwrap()
            .contains("IP filter blocks 127.0.0.1"),
        "{cred:#}"
    );
    // A rule guarding only the device API leaves the service API (hubvault's) open.
    dps.set_network(
        "Enabled",
        json!([{"filterName": "no-devices", "action": "Reject", "ipMask": "0.0.0.0/0", "target": "deviceApi"}]),
    );
    assert_eq!(run("hub-b").await.code, 0);

    restore_is_stopped_by_an_unlinked_target(&world, &wd).await;
}

/// The finding of `check` in a preflight report.
fn finding(doc: &Value, check: &str) -> Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .cloned()
        .unwrap_or_else(|| panic!("no {check} finding: {doc:#}"))
}

/// `restore --to-dps` runs the same checks on its plan: retargeting at the unlinked hub-a is
/// stopped before anything is written.
async fn restore_is_stopped_by_an_unlinked_target(world: &World, wd: &Workdir) {
    let a = client(world, "dps-a");
    let one = json!({"registrationId": "m-1", "iotHubHostName": HUB_B,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key(1), "secondaryKey": key(2)}}});
    assert!(
        a.bulk(Kind::Individual, BulkMode::Create, &[one])
            .await
            .unwrap()
            .is_empty()
    );
    backup_dps_a(wd).await.expect_code(0);
    let out = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-a",
        ])
        .args([
            "--map-hub",
            "hub-b=hub-a",
            "--mode",
            "upsert",
            "--caller-ip",
            "127.0.0.1",
        ])
        .run()
        .await;
    assert_eq!(out.code, 1, "{}", out.text());
    assert_eq!(
        finding(&out.json(), "linked-hubs")["code"],
        "hub_not_linked"
    );
    let held = a.get(Kind::Individual, "m-1").await.unwrap().unwrap();
    assert_eq!(held["iotHubHostName"], HUB_B, "nothing written");
}

/// `clone --from dps-a --to dps-b`: every enrollment and group lands in dps-b with its keys,
/// through an ephemeral snapshot (the store stays empty) or a kept one (`--keep`); a second run
/// finds everything unchanged; a hub and a DPS cannot be cloned into each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_copies_one_dps_into_another_keys_included() {
    let (world, wd) = world(0, &["dps-a", "dps-b"]).await;
    enroll(&client(&world, "dps-a"), 300, 4).await;
    let out = wd
        .hubvault()
        .args([
            "-vvv", "--json", "clone", "--from", "dps-a", "--to", "dps-b",
        ])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["kept"], false, "{doc:#}");
    assert_eq!(doc["restore"]["enrollments"]["create"], 300, "{doc:#}");
    assert_eq!(doc["restore"]["enrollment_groups"]["create"], 4, "{doc:#}");
    for kind in [Kind::Individual, Kind::Group] {
        assert_eq!(
            held(&world, "dps-b", kind),
            held(&world, "dps-a", kind),
            "{kind:?}"
        );
    }
    let secrets: Vec<String> = held(&world, "dps-a", Kind::Individual)
        .into_values()
        .flat_map(|(p, s, _)| [p, s])
        .collect();
    assert_no_secrets(&out.text(), &secrets, "clone dps -vvv");
    let listed = wd.hubvault().args(["--json", "snapshots"]).run().await;
    assert_eq!(
        listed.json().as_array().map_or(0, Vec::len),
        0,
        "ephemeral: nothing stored"
    );

    let kept = wd
        .hubvault()
        .args([
            "--json", "clone", "--from", "dps-a", "--to", "dps-b", "--keep",
        ])
        .args(["--recipient", &recipient(&wd)])
        .run()
        .await;
    assert_eq!(kept.code, 0, "{}", kept.text());
    assert_eq!(kept.json()["restore"]["enrollments"]["unchanged"], 300);
    let listed = wd
        .hubvault()
        .args(["--json", "snapshots", "--dps", "dps-a"])
        .run()
        .await;
    assert_eq!(
        listed.json().as_array().unwrap().len(),
        1,
        "{}",
        listed.text()
    );

    let mixed = wd
        .hubvault()
        .args(["--json", "clone", "--from", "dps-a", "--to", "hub-b"])
        .run()
        .await;
    assert_eq!(mixed.code, 2, "{}", mixed.text());
    assert_eq!(mixed.json()["error"]["code"], "usage");
}

/// `clone --from dps-a --to dps-b --map-hub hub-a=hub-b`: every enrollment and group lands in
/// dps-b naming hub-b, keys unchanged, and a device registering through dps-b with its original
/// key lands on hub-b; `--map-hub` on a clone of hubs is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_of_dps_retargets_its_enrollments_with_map_hub() {
    let (world, wd) = world(0, &["dps-a", "dps-b"]).await;
    enroll(&client(&world, "dps-a"), 50, 2).await;
    let out = wd
        .hubvault()
        .args(["--json", "clone", "--from", "dps-a", "--to", "dps-b"])
        .args(["--map-hub", "hub-a=hub-b", "--caller-ip", "127.0.0.1"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.text());
    for kind in [Kind::Individual, Kind::Group] {
        let (source, target) = (held(&world, "dps-a", kind), held(&world, "dps-b", kind));
        assert_eq!(source.len(), target.len(), "{kind:?}");
        for (id, (primary, secondary, hubs)) in &source {
            assert_eq!(hubs, HUB_A, "{id}: the source is left as it was");
            let (p, s, h) = &target[id];
            assert_eq!((p, s), (primary, secondary), "{id}: keys unchanged");
            assert_eq!(h, HUB_B, "{id}: retargeted");
        }
    }
    lands_on_hub_b(&world, "dps-b", "sensor-00007", DeviceKey::Own(&key(7))).await;

    let hubs = wd
        .hubvault()
        .args(["--json", "clone", "--from", "hub-a", "--to", "hub-b"])
        .args(["--map-hub", "hub-a=hub-b"])
        .run()
        .await;
    assert_eq!(hubs.code, 2, "{}", hubs.text());
    let message = hubs.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("applies to a clone of DPS"), "{message}");
}
