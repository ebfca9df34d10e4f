//! DPS snapshots through the real binary against the simulator's DPS: `backup --dps` seals every
//! individual enrollment and group with the keys only `attestationmechanism` returns; the
//! snapshot lists beside hubs' (`--dps NAME` finds it), verifies, and dumps to records that hold
//! the very keys enrolled; no key reaches any output. (Restores into DPS are not built yet.)

use serde_json::{Value, json};

use hubvault::dps::{BulkMode, DpsClient, Kind};
use hubvault::hub::Connection;

use crate::support::{Workdir, World, assert_no_secrets, ndjson};

fn key(n: usize) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| {
            u8::try_from(n % 251)
                .unwrap()
                .wrapping_mul(31)
                .wrapping_add(i.wrapping_mul(7))
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A DPS with `count` individual enrollments and 3 groups (symmetric keys), and a work folder
/// whose config names it `dps-a`.
pub(crate) async fn dps_world(count: usize) -> (World, Workdir, DpsClient, Vec<String>) {
    let world = World::builder()
        .hubs(&[("hub-a", 0)])
        .arm(false)
        .dps("dps-a")
        .start()
        .await;
    let state = world.dps.clone().unwrap();
    let owner = &state.policies[0];
    let cs = format!(
        "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
        state.host, owner.name, owner.primary_key
    );
    let endpoint = world.running.dps.clone().unwrap();
    let client = DpsClient::new(
        Connection::from_connection_string(&cs)
            .unwrap()
            .with_endpoint(endpoint.parse().unwrap()),
    )
    .unwrap();
    let mut keys = Vec::new();
    let enrollments: Vec<Value> = (0..count)
        .map(|i| {
            keys.push(key(i));
            json!({"registrationId": format!("sensor-{i:04}"),
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(i), "secondaryKey": key(i + 10_000)}},
                   "capabilities": {"iotEdge": i % 50 == 0},
                   "initialTwin": {"tags": {"site": "plant-7"}},
                   "iotHubHostName": "hub-a.azure-devices.net",
                   "provisioningStatus": if i % 10 == 3 { "disabled" } else { "enabled" }})
        })
        .collect();
    let refused = client
        .bulk(Kind::Individual, BulkMode::Create, &enrollments)
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let groups: Vec<Value> = (0..3)
        .map(|g| {
            keys.push(key(50_000 + g));
            json!({"enrollmentGroupId": format!("line-{g}"),
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(50_000 + g), "secondaryKey": key(60_000 + g)}}})
        })
        .collect();
    assert!(
        client
            .bulk(Kind::Group, BulkMode::Create, &groups)
            .await
            .unwrap()
            .is_empty()
    );

    let wd = Workdir::new();
    wd.write_identity();
    wd.config(&world).write();
    let text = std::fs::read_to_string(wd.config_path()).unwrap();
    std::fs::write(
        wd.config_path(),
        format!(
            "{text}\n[dps.dps-a]\nconnection-string = {}\nendpoint = {}\n",
            toml::Value::String(cs),
            toml::Value::String(endpoint)
        ),
    )
    .unwrap();
    (world, wd, client, keys)
}

/// The headline of the backup half: every enrollment and group, keys included, sealed; listed
/// by `--dps`, verified, and dumped back with the keys that were enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dps_backup_seals_every_enrollment_with_its_keys() {
    let (world, wd, _client, keys) = dps_world(240).await;
    let recipient = std::fs::read_to_string(wd.identity()).unwrap();
    let recipient: age::x25519::Identity = recipient
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .parse()
        .unwrap();
    let backup = wd
        .hubvault()
        .args(["-vvv", "--json", "backup", "--dps", "dps-a", "--recipient"])
        .arg(recipient.to_public().to_string())
        .run()
        .await;
    assert_eq!(backup.code, 0, "{}", backup.text());
    let doc = backup.json();
    assert_eq!(doc["enrollments"], 240, "{doc:#}");
    assert_eq!(doc["enrollment_groups"], 3, "{doc:#}");
    assert_eq!(doc["hub"], "dps-a.azure-devices-provisioning.net");
    let mut secrets = world.secrets(&[]).await;
    secrets.extend(keys.iter().cloned());
    assert_no_secrets(&backup.text(), &secrets, "backup --dps -vvv");

    let listed = wd
        .hubvault()
        .args(["--json", "snapshots", "--dps", "dps-a"])
        .run()
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    wd.hubvault()
        .args(["verify", "--all", "--read-data"])
        .run()
        .await
        .expect_code(0);

    let out = wd.join("dump");
    wd.hubvault()
        .args(["dump", "latest", "--dps", "dps-a", "--out"])
        .arg(&out)
        .run()
        .await
        .expect_code(0);
    let records = ndjson(&std::fs::read_to_string(out.join("enrollments.txt")).unwrap());
    assert_eq!(records.len(), 240);
    let r = records.iter().find(|r| r["id"] == "sensor-0007").unwrap();
    assert_eq!(r["attestation"]["symmetricKey"]["primaryKey"], key(7));
    assert_eq!(
        r["attestation"]["symmetricKey"]["secondaryKey"],
        key(10_007)
    );
    assert_eq!(r["enrollment"]["initialTwin"]["tags"]["site"], "plant-7");
    assert_eq!(
        records.iter().find(|r| r["id"] == "sensor-0003").unwrap()["enrollment"]["provisioningStatus"],
        "disabled"
    );
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "records sorted by id");
    // Enrollments are not devices: a DPS snapshot never reaches a hub.
    let refused = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-a", "--to", "hub-a", "--engine", "bulk",
        ])
        .run()
        .await;
    assert_eq!(refused.code, 2, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "restore_dps_snapshot");
    assert!(
        world.registry("hub-a").await.is_empty(),
        "nothing reached the hub"
    );

    let groups = ndjson(&std::fs::read_to_string(out.join("enrollment-groups.txt")).unwrap());
    assert_eq!(groups.len(), 3);
    assert_eq!(
        groups[1]["attestation"]["symmetricKey"]["primaryKey"],
        key(50_001)
    );
}

/// A DPS the credential cannot read: stopped by its preflight (or, without one, refused with the
/// DPS's own error); nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dps_backup_with_a_wrong_key_stores_nothing() {
    let (_world, wd, _client, _) = dps_world(3).await;
    let text = std::fs::read_to_string(wd.config_path()).unwrap();
    // Swap the policy key for another valid one (base64 of other bytes).
    let cs_line = text
        .lines()
        .rfind(|l| {
            l.starts_with("connection-string = ") && l.contains("azure-devices-provisioning")
        })
        .unwrap()
        .to_owned();
    let start = cs_line.find("SharedAccessKey=").unwrap() + "SharedAccessKey=".len();
    let wrong = format!("{}{}\"", &cs_line[..start], key(999));
    std::fs::write(wd.config_path(), text.replace(&cs_line, &wrong)).unwrap();
    let recipient = hubvault::keys::Identities::generate()
        .recipients()
        .to_strings()[0]
        .clone();
    // Its preflight stops it first, saying why (exit 1, a finding)…
    let out = wd
        .hubvault()
        .args([
            "--json",
            "backup",
            "--dps",
            "dps-a",
            "--recipient",
            &recipient,
        ])
        .run()
        .await;
    assert_eq!(out.code, 1, "{}", out.text());
    let finding = &out.json()["findings"][0];
    assert_eq!(finding["check"], "credentials", "{}", out.text());
    assert_eq!(finding["code"], "401002", "{}", out.text());
    // …and without it, the DPS's own refusal is the error (exit 2).
    let out = wd
        .hubvault()
        .args(["--json", "backup", "--dps", "dps-a", "--no-preflight"])
        .args(["--recipient", &recipient])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.text());
    assert_eq!(
        out.json()["error"]["code"],
        "hub_unauthorized",
        "{}",
        out.text()
    );
    assert!(!wd.store().exists() || std::fs::read_dir(wd.store()).unwrap().count() == 0);
}

/// Every enrollment and group id of the instance, with its primary key as
/// `attestationmechanism` gives it, and the hub it names.
async fn live_keys(client: &DpsClient) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for kind in [Kind::Individual, Kind::Group] {
        for e in client.query_all(kind).await.unwrap() {
            let id = e[kind.id_field()].as_str().unwrap().to_owned();
            let a = client.attestation(kind, &id).await.unwrap();
            out.push((
                id,
                a["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned(),
                e["iotHubHostName"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// `--json restore latest --dps dps-a --to-dps dps-a` with `extra`.
async fn restore_dps(wd: &Workdir, extra: &[&str]) -> crate::support::Out {
    wd.hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-a",
        ])
        .args(extra)
        .run()
        .await
}

async fn backup(wd: &Workdir) {
    let recipient = hubvault::keys::load_identities(&wd.identity())
        .unwrap()
        .recipients()
        .to_strings()
        .remove(0);
    wd.hubvault()
        .args(["backup", "--dps", "dps-a", "--recipient", &recipient])
        .run()
        .await
        .expect_code(0);
}

/// A DPS instance emptied (lost) and rebuilt from its snapshot holds every enrollment and group
/// again with the very keys devices use; a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_dps_is_rebuilt_from_its_snapshot_keys_included() {
    let (_world, wd, client, _) = dps_world(120).await;
    let before = live_keys(&client).await;
    backup(&wd).await;
    for kind in [Kind::Individual, Kind::Group] {
        let all: Vec<Value> = client
            .query_all(kind)
            .await
            .unwrap()
            .into_iter()
            .map(|e| json!({kind.id_field(): e[kind.id_field()]}))
            .collect();
        assert!(
            client
                .bulk(kind, BulkMode::Delete, &all)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(live_keys(&client).await.is_empty(), "the instance is empty");

    let doc = restore_dps(&wd, &["--mode", "create"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(doc["enrollments"]["create"], 120, "{doc:#}");
    assert_eq!(doc["enrollment_groups"]["create"], 3, "{doc:#}");
    assert_eq!(
        live_keys(&client).await,
        before,
        "every id back with its keys"
    );

    let again = restore_dps(&wd, &["--mode", "create"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(again["enrollments"]["unchanged"], 120, "{again:#}");
    assert_eq!(again["enrollments"]["create"], 0, "{again:#}");
}

/// The DR headline: hub-a is lost; the snapshot's enrollments are pointed at hub-b with
/// `--map-hub` in an upsert, and every enrollment names hub-b while its keys stay the same (an
/// update sends them explicitly: DPS would mint new ones otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollments_retargeted_at_another_hub_keep_their_keys() {
    let (_world, wd, client, _) = dps_world(60).await;
    let before = live_keys(&client).await;
    backup(&wd).await;
    let retarget = [
        "--mode",
        "upsert",
        "--map-hub",
        "hub-a.azure-devices.net=hub-b.azure-devices.net",
    ];
    let dry = restore_dps(&wd, &[&retarget[..], &["--dry-run"]].concat())
        .await
        .expect_code(0)
        .json();
    assert_eq!(dry["enrollments"]["update"], 60, "{dry:#}");
    assert_eq!(
        live_keys(&client).await,
        before,
        "a dry run changes nothing"
    );

    restore_dps(&wd, &retarget).await.expect_code(0);
    let after = live_keys(&client).await;
    let individual: Vec<_> = after
        .iter()
        .filter(|(id, _, _)| id.starts_with("sensor-"))
        .collect();
    assert_eq!(individual.len(), 60);
    assert!(
        individual
            .iter()
            .all(|(_, _, hub)| hub == "hub-b.azure-devices.net"),
        "{individual:?}"
    );
    let keys = |v: &[(String, String, String)]| -> Vec<(String, String)> {
        v.iter().map(|(id, k, _)| (id.clone(), k.clone())).collect()
    };
    assert_eq!(keys(&after), keys(&before), "keys unchanged by the update");
}

/// A snapshot of hub-a seeded with 300 devices of every kind (`backup --from-export`); its
/// registry as the simulator holds it.
async fn hub_snapshot(world: &World, wd: &Workdir) -> Vec<Value> {
    world.seed("hub-a", 300, 5).await;
    let export = wd.join("export");
    world.write_export("hub-a", &export).await;
    let recipient = hubvault::keys::load_identities(&wd.identity())
        .unwrap()
        .recipients()
        .to_strings()
        .remove(0);
    wd.hubvault()
        .args([
            "backup",
            "--hub-name",
            "hub-a",
            "--recipient",
            &recipient,
            "--from-export",
        ])
        .arg(&export)
        .run()
        .await
        .expect_code(0);
    world.registry("hub-a").await
}

/// `restore latest --hub hub-a --to-dps dps-a --iot-hub hub-b… --mode create`.
async fn enroll_hub_a(wd: &Workdir, extra: &[&str]) -> crate::support::Out {
    wd.hubvault()
        .args(extra)
        .args([
            "--json",
            "restore",
            "latest",
            "--hub",
            "hub-a",
            "--to-dps",
            "dps-a",
            "--iot-hub",
            "hub-b.azure-devices.net",
            "--mode",
            "create",
        ])
        .run()
        .await
}

/// A hub's devices as enrollments (`restore --hub hub-a --to-dps`): every SAS device enrolled
/// under its own id with its own keys, pointing at the `--iot-hub`, its tags, status and edge
/// flag kept; x509 devices skipped and named (exit 1); modules counted; children listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubs_devices_become_enrollments_with_their_own_keys() {
    let (world, wd, client, _) = dps_world(0).await;
    let registry = hub_snapshot(&world, &wd).await;
    let no_hub = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--hub", "hub-a", "--to-dps", "dps-a",
        ])
        .run()
        .await;
    assert_eq!(no_hub.code, 2, "{}", no_hub.text());
    assert_eq!(no_hub.json()["error"]["code"], "enroll_no_iot_hub");

    let out = enroll_hub_a(&wd, &["-vvv"]).await;
    let doc = out.json();
    let devices: Vec<&Value> = registry
        .iter()
        .filter(|d| d.get("moduleId").is_none())
        .collect();
    let sas: Vec<&&Value> = devices
        .iter()
        .filter(|d| d["authentication"]["type"] == "sas")
        .collect();
    let x509 = devices.len() - sas.len();
    assert!(
        x509 > 0 && sas.len() > 200,
        "the seeded fleet has both: {x509} x509"
    );
    assert_eq!(out.code, 1, "x509 devices were skipped: {}", out.text());
    assert_eq!(doc["skipped"].as_array().unwrap().len(), x509, "{doc:#}");
    assert!(
        doc["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("x509")
    );
    assert_eq!(doc["enrollments"]["create"], sas.len(), "{doc:#}");
    assert_eq!(
        doc["modules"],
        registry.len() - devices.len(),
        "modules counted, not enrolled"
    );
    let mut secrets = world.secrets(&["hub-a"]).await;
    secrets.retain(|s| s.len() > 8);
    assert_no_secrets(&out.text(), &secrets, "restore --to-dps -vvv");

    let live: Vec<_> = live_keys(&client)
        .await
        .into_iter()
        .filter(|(id, _, _)| !id.starts_with("line-"))
        .collect();
    assert_eq!(live.len(), sas.len(), "the 3 groups aside");
    for d in sas.iter().take(40) {
        let id = d["id"].as_str().unwrap();
        let (_, key, hub) = live.iter().find(|(i, _, _)| i == id).unwrap();
        assert_eq!(
            key,
            d["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap()
        );
        assert_eq!(hub, "hub-b.azure-devices.net");
        let e = client.get(Kind::Individual, id).await.unwrap().unwrap();
        assert_eq!(e["initialTwin"]["tags"], d["tags"], "{id}");
        let want = if d["status"] == "disabled" {
            "disabled"
        } else {
            "enabled"
        };
        assert_eq!(e["provisioningStatus"], want, "{id}");
    }
    // A second run: what is there is unchanged (only the skips remain to report).
    let again = enroll_hub_a(&wd, &[]).await.json();
    assert_eq!(again["enrollments"]["unchanged"], sas.len(), "{again:#}");
    assert_eq!(again["enrollments"]["conflicts"], 0, "{again:#}");
}

/// `diff latest --dps dps-a`: equal right after the backup (exit 0, keys included); a changed
/// key and an enrollment made since are differences (exit 1), named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_tells_a_dps_apart_from_its_snapshot_keys_included() {
    let (_world, wd, client, _) = dps_world(30).await;
    backup(&wd).await;
    let diff = || async {
        wd.hubvault()
            .args(["--json", "diff", "latest", "--dps", "dps-a"])
            .run()
            .await
    };
    let same = diff().await.expect_code(0).json();
    assert_eq!(same["enrollments"]["unchanged"], 30, "{same:#}");

    let mut changed = client
        .get(Kind::Individual, "sensor-0005")
        .await
        .unwrap()
        .unwrap();
    changed["attestation"] = json!({"type": "symmetricKey",
        "symmetricKey": {"primaryKey": key(777), "secondaryKey": key(778)}});
    let extra = json!({"registrationId": "newcomer", "attestation": {"type": "symmetricKey"}});
    assert!(
        client
            .bulk(Kind::Individual, BulkMode::Update, &[changed])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        client
            .bulk(Kind::Individual, BulkMode::Create, &[extra])
            .await
            .unwrap()
            .is_empty()
    );
    let out = diff().await;
    assert_eq!(out.code, 1, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["enrollments"]["update"], 1, "the changed key: {doc:#}");
    assert_eq!(doc["only_live"], json!(["newcomer"]), "{doc:#}");
    assert!(!out.text().contains(&key(777)), "no key in the output");
}

/// `mirror` into DPS deletes what the snapshot lacks, last, under the same brake as a hub's: a
/// few strangers go; many are refused (exit 2, nothing changed) until `--max-delete` allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_into_dps_deletes_what_the_snapshot_lacks_within_the_brake() {
    let (_world, wd, client, _) = dps_world(50).await;
    backup(&wd).await;
    let strangers = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"registrationId": format!("stranger-{i}"), "attestation": {"type": "symmetricKey"}}))
            .collect()
    };
    let mirror = |extra: &'static [&'static str]| {
        let wd = &wd;
        async move { restore_dps(wd, &[&["--mode", "mirror"][..], extra].concat()).await }
    };
    assert!(
        client
            .bulk(Kind::Individual, BulkMode::Create, &strangers(0, 2))
            .await
            .unwrap()
            .is_empty()
    );
    let doc = mirror(&[]).await.expect_code(0).json();
    assert_eq!(doc["deleted"], 2, "{doc:#}");
    assert!(
        client
            .get(Kind::Individual, "stranger-0")
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        client
            .bulk(Kind::Individual, BulkMode::Create, &strangers(10, 20))
            .await
            .unwrap()
            .is_empty()
    );
    let dry = mirror(&["--dry-run"]).await;
    assert_eq!(
        dry.code,
        1,
        "a dry run says a real one would be braked: {}",
        dry.text()
    );
    let braked = mirror(&[]).await;
    assert_eq!(braked.code, 2, "{}", braked.text());
    assert_eq!(braked.json()["error"]["code"], "restore_mirror_brake");
    assert!(
        client
            .get(Kind::Individual, "stranger-10")
            .await
            .unwrap()
            .is_some(),
        "nothing deleted"
    );
    let doc = mirror(&["--max-delete", "100%"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(doc["deleted"], 20, "{doc:#}");
    assert_eq!(
        live_keys(&client).await.len(),
        53,
        "the 50 enrollments and 3 groups, no strangers"
    );
}
