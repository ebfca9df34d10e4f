//! Restores into DPS when DPS pushes back: a 429 storm (the run rides it out on `Retry-After`),
//! bulk answers that say `isSuccessful: true` over per-item errors (an enrollment naming an
//! unlinked hub), existing enrollments that differ in `create` mode (conflicts, left alone),
//! and a run killed (SIGKILL) half-way (the next run converges, nothing twice). No key in any output.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use hubvault::dps::{BulkMode, DpsClient, Kind};
use hubvault::hub::Connection;

use crate::support::{Workdir, World, assert_no_secrets};

const HUB_A: &str = "hub-a.azure-devices.net";

fn key(n: usize) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| {
            u8::try_from(n % 241)
                .unwrap()
                .wrapping_mul(37)
                .wrapping_add(i.wrapping_mul(13))
                .wrapping_add(u8::try_from(n / 241 % 241).unwrap())
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// hub-a, hub-b, dps-a holding `count` enrollments at hub-a (backed up), an empty dps-b; a work
/// folder naming both instances. Returns the keys enrolled.
async fn backed_up(count: usize) -> (World, Workdir, Vec<String>) {
    let world = World::builder()
        .hubs(&[("hub-a", 0), ("hub-b", 0)])
        .arm(false)
        .dps("dps-a")
        .more_dps("dps-b")
        .start()
        .await;
    let wd = Workdir::new();
    wd.write_identity();
    wd.config(&world).write();
    let mut text = std::fs::read_to_string(wd.config_path()).unwrap();
    for d in &world.running.dps_instances {
        let p = &d.state.policies[0];
        let _ = write!(
            text,
            "\n[dps.{}]\nconnection-string = {}\nendpoint = {}\n",
            d.state.name,
            toml::Value::String(format!(
                "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
                d.state.host, p.name, p.primary_key
            )),
            toml::Value::String(d.endpoint.clone())
        );
    }
    std::fs::write(wd.config_path(), text).unwrap();
    let enrollments: Vec<Value> = (0..count)
        .map(|i| {
            json!({"registrationId": format!("meter-{i:04}"), "iotHubHostName": HUB_A,
                   "attestation": {"type": "symmetricKey",
                       "symmetricKey": {"primaryKey": key(i), "secondaryKey": key(i + 5_000)}}})
        })
        .collect();
    assert!(
        client(&world, "dps-a")
            .bulk(Kind::Individual, BulkMode::Create, &enrollments)
            .await
            .unwrap()
            .is_empty()
    );
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
    let keys = (0..count).flat_map(|i| [key(i), key(i + 5_000)]).collect();
    (world, wd, keys)
}

fn client(world: &World, dps: &str) -> DpsClient {
    let d = world.running.dps_instance(dps).unwrap();
    let p = &d.state.policies[0];
    DpsClient::new(
        Connection::from_connection_string(&format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            d.state.host, p.name, p.primary_key
        ))
        .unwrap()
        .with_endpoint(d.endpoint.parse().unwrap()),
    )
    .unwrap()
}

fn restore_into_b(wd: &Workdir) -> crate::support::Hubvault {
    wd.hubvault().args([
        "-vvv", "--json", "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-b", "--mode",
        "create",
    ])
}

/// The primary keys dps-b holds, by id.
fn keys_in_b(world: &World) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = world
        .running
        .dps_instance("dps-b")
        .unwrap()
        .state
        .enrollments()
        .iter()
        .map(|e| {
            (
                e["registrationId"].as_str().unwrap().to_owned(),
                e["attestation"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A DPS answering 429 most of the time (5 operations a second, `Retry-After: 1`): the restore
/// waits as told and completes; every enrollment arrives with its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_ridden_out_on_retry_after() {
    let (world, wd, keys) = backed_up(150).await;
    let b = world.running.dps_instance("dps-b").unwrap().state.clone();
    b.set_rate(Some(300.0), 1);
    let started = Instant::now();
    let out = restore_into_b(&wd).run().await;
    assert_eq!(out.code, 0, "{}", out.text());
    assert_eq!(out.json()["enrollments"]["create"], 150);
    assert!(b.throttled() > 0, "the storm happened");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(keys_in_b(&world).len(), 150);
    let expected: Vec<(String, String)> = (0..150)
        .map(|i| (format!("meter-{i:04}"), key(i)))
        .collect();
    assert_eq!(keys_in_b(&world), expected);
    assert_no_secrets(&out.text(), &keys, "restore --to-dps through 429s");
}

/// dps-b is linked to hub-b only and says `isSuccessful: true` over its per-item errors: every
/// enrollment naming hub-a is still reported refused (exit 1), with what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_errors_count_even_under_is_successful_true() {
    let (world, wd, keys) = backed_up(25).await;
    let b = world.running.dps_instance("dps-b").unwrap().state.clone();
    b.set_linked_hubs(Some(vec!["hub-b.azure-devices.net".into()]));
    b.lie_about_bulk_success(100);
    let out = restore_into_b(&wd).run().await;
    assert_eq!(out.code, 1, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["failed"].as_array().unwrap().len(), 25, "{doc:#}");
    assert_eq!(doc["failed"][0]["code"], "400004", "{doc:#}");
    assert!(keys_in_b(&world).is_empty());
    let human = restore_into_b(&wd).args(["--dry-run"]).run().await;
    assert_eq!(human.code, 0, "a dry run sends nothing: {}", human.text());
    let human = wd
        .hubvault()
        .args(["restore", "latest", "--dps", "dps-a", "--to-dps", "dps-b"])
        .args(["--mode", "create"])
        .run()
        .await;
    assert!(
        human.stdout.contains("preflight --to-dps"),
        "{}",
        human.text()
    );
    assert_no_secrets(&out.text(), &keys, "restore --to-dps refused per item");

    // Remapped to the linked hub, they all go in.
    let fixed = restore_into_b(&wd)
        .args(["--map-hub", "hub-a=hub-b"])
        .run()
        .await;
    assert_eq!(fixed.code, 0, "{}", fixed.text());
    assert_eq!(keys_in_b(&world).len(), 25);
}

/// `create` never overwrites: an enrollment that exists with other keys is a conflict, named,
/// and keeps its keys (exit 1); `upsert` then makes it the snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mode_leaves_conflicting_enrollments_alone() {
    let (world, wd, _) = backed_up(20).await;
    let other = json!({"registrationId": "meter-0007", "iotHubHostName": HUB_A,
        "attestation": {"type": "symmetricKey",
            "symmetricKey": {"primaryKey": key(999), "secondaryKey": key(998)}}});
    assert!(
        client(&world, "dps-b")
            .bulk(Kind::Individual, BulkMode::Create, &[other])
            .await
            .unwrap()
            .is_empty()
    );
    let out = restore_into_b(&wd).run().await;
    assert_eq!(out.code, 1, "{}", out.text());
    let doc = out.json();
    assert_eq!(doc["conflicts"], json!(["meter-0007"]), "{doc:#}");
    assert_eq!(doc["enrollments"]["create"], 19, "{doc:#}");
    let b = keys_in_b(&world);
    assert_eq!(b[7], ("meter-0007".to_owned(), key(999)), "left alone");
    let upsert = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-a", "--to-dps", "dps-b",
        ])
        .args(["--mode", "upsert"])
        .run()
        .await;
    assert_eq!(upsert.code, 0, "{}", upsert.text());
    assert_eq!(keys_in_b(&world)[7], ("meter-0007".to_owned(), key(7)));
}

/// SIGKILL while a slow restore is half-way: the next run converges — everything once, with
/// its keys, nothing created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_restore_converges_on_the_next_run() {
    let (world, wd, _) = backed_up(200).await;
    let b = world.running.dps_instance("dps-b").unwrap().state.clone();
    b.set_rate(Some(180.0), 1);
    let mut run = restore_into_b(&wd).spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.enrollments().len() < 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.kill().await;
    let part = b.enrollments().len();
    assert!((30..200).contains(&part), "killed half-way: {part}");
    b.set_rate(None, 1);
    let again = restore_into_b(&wd).run().await;
    assert_eq!(again.code, 0, "{}", again.text());
    let doc = again.json();
    let create = doc["enrollments"]["create"].as_u64().unwrap();
    let unchanged = doc["enrollments"]["unchanged"].as_u64().unwrap();
    assert_eq!(create + unchanged, 200, "{doc:#}");
    assert!(unchanged >= u64::try_from(part).unwrap(), "{doc:#}");
    let expected: Vec<(String, String)> = (0..200)
        .map(|i| (format!("meter-{i:04}"), key(i)))
        .collect();
    assert_eq!(keys_in_b(&world), expected);
}

/// Naming a DPS with no snapshot says so in DPS words (not "hub"), and lists what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dps_without_snapshots_is_named_as_a_dps() {
    let (_world, wd, _) = backed_up(2).await;
    let out = wd
        .hubvault()
        .args([
            "--json", "restore", "latest", "--dps", "dps-b", "--to-dps", "dps-a",
        ])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.text());
    let error = &out.json()["error"];
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("no snapshot of dps-b"), "{message}");
    assert!(!message.contains("hub dps-b"), "{message}");
    assert!(
        message.contains("dps-a.azure-devices-provisioning.net"),
        "{message}"
    );
    assert!(error["fix"].as_str().unwrap().contains("--dps"), "{error}");
}
