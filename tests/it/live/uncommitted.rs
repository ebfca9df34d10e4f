//! Uncommitted staging blobs: blocks uploaded with Put Block and never committed (an export
//! job cancelled half-way) hold plaintext keys that a plain List Blobs does not show. Each test
//! makes them for real — the simulator's export job writes `devices.txt` block by block into
//! Azurite (a small `block_size`, a slow `job_rate`) — or plants one with Put Block, and judges
//! staging by Azurite's listing with `include=uncommittedblobs` through the SDK itself.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{HUB_A, Live, Setup, kill_backup_while_its_job_runs};
use crate::support::{Staging, azurite};

/// What an export line looks like: an id and a key in plaintext.
const PLAINTEXT: &[u8] =
    br#"{"id":"planted","authentication":{"symmetricKey":{"primaryKey":"cGxhaW50ZXh0IGtleQ=="}}}"#;

/// hub-a with 20 devices, an empty hub-b.
async fn twenty_devices(cs: &str) -> Live {
    let setup = Setup {
        devices: 20,
        ..Setup::default()
    };
    Live::start(cs, setup).await
}

/// hub-a with 20 devices whose export jobs write 256-byte blocks at `rate` devices a second.
async fn slow_exports(cs: &str, rate: f64) -> Live {
    let w = twenty_devices(cs).await;
    w.sim
        .limits("hub-a", json!({"job_rate": rate, "block_size": 256}))
        .await;
    w
}

/// Names under `prefix` that only the listing with uncommitted blobs shows.
async fn uncommitted_under(staging: &Staging, prefix: &str) -> Vec<String> {
    let committed = staging.leftovers().await;
    staging
        .everything()
        .await
        .into_iter()
        .filter(|n| n.starts_with(prefix) && !committed.contains(n))
        .collect()
}

/// Poll (every 100 ms, up to `within`) until `devices.txt` under `prefix` exists as
/// uncommitted blocks only: the job is half-way through writing it.
async fn half_written(staging: &Staging, prefix: &str, within: Duration) {
    let start = Instant::now();
    let devices = format!("{prefix}devices.txt");
    while start.elapsed() < within {
        if uncommitted_under(staging, prefix).await.contains(&devices) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no uncommitted {devices} within {within:?}: {:?}",
        staging.everything().await
    );
}

/// A `backup --hub` started, and found half-way through writing its export: the process, its
/// run id and its staging folder.
async fn backup_half_way(w: &Live) -> (crate::support::Spawned, String, String) {
    let first = w
        .command(&["--json", "backup", "--hub", "hub-a"], &[])
        .spawn();
    let run = journal_run(&w.staging, Duration::from_secs(30)).await;
    let prefix = format!("staging/{HUB_A}/{run}/");
    half_written(&w.staging, &prefix, Duration::from_secs(10)).await;
    (first, run, prefix)
}

/// The run id of the only journal in staging, polled (every 100 ms, up to `within`).
async fn journal_run(staging: &Staging, within: Duration) -> String {
    let start = Instant::now();
    while start.elapsed() < within {
        let names = staging.leftovers().await;
        if let Some(run) = names.iter().find_map(|n| {
            n.strip_prefix("hubvault-runs/")
                .and_then(|n| n.strip_suffix(".json"))
        }) {
            return run.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no run journal within {within:?}");
}

/// A backup killed while its export runs; the next run cancels that job half-way through
/// `devices.txt` (left as uncommitted blocks) and must discard those blocks and a planted
/// uncommitted blob of the dead run, counting them as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_half_written_export_is_discarded_by_the_next_run() {
    let Some(cs) = azurite() else { return };
    let w = slow_exports(&cs, 2.0).await;
    kill_backup_while_its_job_runs(&w).await;
    // Only the dead run's job is slow (the rate is read when a job starts).
    w.sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    let run = journal_run(&w.staging, Duration::from_secs(5)).await;
    let prefix = format!("staging/{HUB_A}/{run}/");
    half_written(&w.staging, &prefix, Duration::from_secs(10)).await;
    w.staging
        .put_uncommitted(&format!("{prefix}planted.txt"), PLAINTEXT)
        .await;
    let planted = uncommitted_under(&w.staging, &prefix).await;
    assert_eq!(planted.len(), 2, "devices.txt and planted.txt: {planted:?}");

    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead:#}");
    assert_eq!(dead[0]["run"], run.as_str(), "{dead:#}");
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert!(dead[0]["cancelled_job"].is_string(), "{dead:#}");
    assert_eq!(
        dead[0]["blobs_deleted"], 2,
        "both uncommitted blobs count as deleted: {dead:#}"
    );
    assert_eq!(
        w.staging.everything().await,
        Vec::<String>::new(),
        "nothing is left, not even uncommitted blocks"
    );
    // The cancelled job takes no further step (one would be half a second at 2 a second).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.staging.everything().await, Vec::<String>::new());
    assert_eq!(w.snapshots(HUB_A).len(), 1);
}

/// A run's own uncommitted blob goes at its end (counted in `staging_deleted`), while a second
/// run, started during the first one's export and treating every earlier run as old enough to
/// sweep, leaves the live job's half-written `devices.txt` alone: the first run's export
/// commits it and its snapshot verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_uncommitted_blobs_go_at_its_end_and_a_live_jobs_stay() {
    let Some(cs) = azurite() else { return };
    let w = slow_exports(&cs, 2.0).await;
    let (first, _, prefix) = backup_half_way(&w).await;
    w.sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    w.staging
        .put_uncommitted(&format!("{prefix}planted.txt"), PLAINTEXT)
        .await;

    let second = w
        .run(
            // No preflight: it would wait for the job slot, and sweep only after the live job.
            &[
                "--json",
                "backup",
                "--hub",
                "hub-a",
                "--wait",
                "--no-preflight",
            ],
            &[("HUBVAULT_STAGING_LEFTOVER_SECS", "0")],
        )
        .await;
    assert!(second.status.success(), "{}", second.stderr);
    assert_eq!(second.json()["leftovers_removed"], 0, "{}", second.stdout);
    let first = first.finish().await.expect("the first run ends");
    w.assert_no_secrets(&first.text()).await;
    assert!(first.status.success(), "{}", first.stderr);
    let jobs = w.jobs("hub-a").await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(jobs.iter().all(|j| j["status"] == "completed"), "{jobs:#?}");
    // devices.txt, configurations.txt and the planted blob.
    assert_eq!(first.json()["staging_deleted"], 3, "{}", first.stdout);
    assert_eq!(w.staging.everything().await, Vec::<String>::new());
    assert_eq!(w.snapshots(HUB_A).len(), 2);
    let verify = w.run(&["verify", "--all", "--read-data"], &[]).await;
    assert!(verify.status.success(), "{}", verify.stderr);
}

/// Uncommitted blocks of an old run without a journal (a version before the journal, or a
/// journal lost) are leftovers like its committed blobs: removed once older than the longest
/// job, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_runs_uncommitted_blob_is_a_leftover() {
    let Some(cs) = azurite() else { return };
    let w = Live::start(&cs, Setup::default()).await;
    let old = format!("staging/{HUB_A}/20200101T000000Z-00000000/devices.txt");
    w.staging.put_uncommitted(&old, PLAINTEXT).await;
    assert_eq!(w.staging.everything().await, vec![old.clone()]);
    assert_eq!(w.staging.leftovers().await, Vec::<String>::new());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a"],
            &[("HUBVAULT_STAGING_LEFTOVER_SECS", "1")],
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["leftovers_removed"], 1, "{}", out.stdout);
    assert_eq!(w.staging.everything().await, Vec::<String>::new());
}

/// A dead run swept by a run of another hub, which cannot ask hub-a whether the dead run's job
/// has ended: its committed plaintext goes at once, but an uncommitted blob stays (an empty
/// commit could race a job still writing it) until a run of hub-a sees the job ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runs_uncommitted_blobs_wait_until_its_job_has_ended() {
    let Some(cs) = azurite() else { return };
    let w = twenty_devices(&cs).await;
    w.sim.seed("hub-b", 5, 7).await;
    kill_backup_while_its_job_runs(&w).await;
    w.wait_jobs_done("hub-a").await;
    let run = journal_run(&w.staging, Duration::from_secs(5)).await;
    let prefix = format!("staging/{HUB_A}/{run}/");
    let planted = format!("{prefix}planted.txt");
    w.staging.put_uncommitted(&planted, PLAINTEXT).await;

    let out = w.run(&["--json", "backup", "--hub", "hub-b"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead[0]["run"], run.as_str(), "{dead:#}");
    assert_eq!(dead[0]["finished"], false, "{dead:#}");
    let left: Vec<String> = w
        .staging
        .everything()
        .await
        .into_iter()
        .filter(|n| n.starts_with("staging/"))
        .collect();
    assert_eq!(
        left,
        vec![planted.clone()],
        "only the uncommitted blob waits"
    );

    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert_eq!(dead[0]["blobs_deleted"], 1, "the planted blob: {dead:#}");
    assert_eq!(w.staging.everything().await, Vec::<String>::new());
}

/// The store calls under a location prefix: only the prefix's uncommitted blobs are listed
/// (store-relative names), discarding one leaves the others, and "discarding" a blob that was
/// committed meanwhile still deletes it (its empty commit is refused with 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_lists_and_discards_uncommitted_blobs_under_its_prefix() {
    use hubvault::store::Store as _;
    let Some(cs) = azurite() else { return };
    let staging = Staging::fresh(&cs, "uncommitted").await;
    let store = staging.under("tenant/a");
    staging
        .put_uncommitted("tenant/a/staging/r1/devices.txt", PLAINTEXT)
        .await;
    staging
        .put_uncommitted("tenant/b/staging/r1/devices.txt", PLAINTEXT)
        .await;
    store
        .put(
            "staging/r1/configurations.txt",
            bytes::Bytes::from_static(b"{}\n"),
        )
        .await
        .unwrap();

    let (committed, found) = store.list_with_uncommitted("staging/").await.unwrap();
    let names = |l: &[hubvault::store::ObjectMeta]| l.iter().map(|m| m.name.clone()).collect();
    let names: (Vec<String>, Vec<String>) = (names(&committed), names(&found));
    assert_eq!(
        names,
        (
            vec!["staging/r1/configurations.txt".to_owned()],
            vec!["staging/r1/devices.txt".to_owned()]
        )
    );
    store
        .discard_uncommitted("staging/r1/devices.txt")
        .await
        .unwrap();
    store
        .discard_uncommitted("staging/r1/configurations.txt")
        .await
        .unwrap();
    assert_eq!(
        staging.everything().await,
        vec!["tenant/b/staging/r1/devices.txt".to_owned()]
    );
    let (committed, found) = store.list_with_uncommitted("staging/").await.unwrap();
    assert!(committed.is_empty() && found.is_empty());
    staging.delete().await;
}

/// A backup that gives up on its export job (its wait timed out) while the job still writes:
/// the job is cancelled and awaited before the run's staging is deleted, so nothing the job
/// would have written outlives the run — no committed `devices.txt`, no uncommitted blocks, no
/// journal — and the next run has nothing to sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_gives_up_on_its_job_cancels_it_before_deleting_staging() {
    let Some(cs) = azurite() else { return };
    // 20 devices at 2 a second: a 10 s export, given up after 2 s.
    let w = slow_exports(&cs, 2.0).await;
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a"],
            &[("HUBVAULT_JOB_TIMEOUT_SECS", "2")],
        )
        .await;
    assert!(!out.status.success(), "{}", out.stderr);
    let jobs = w.sim.jobs("hub-a").await;
    let export = jobs
        .iter()
        .find(|j| j["type"] == "export")
        .unwrap_or_else(|| panic!("an export job: {jobs:?}"));
    assert_eq!(export["status"], "cancelled", "{export}");
    assert_eq!(w.staging.everything().await, Vec::<String>::new());
    // Past the time the export would have taken to finish: still nothing.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        w.staging.everything().await,
        Vec::<String>::new(),
        "nothing the job would have written appeared after the run"
    );
    assert!(w.snapshots(HUB_A).is_empty());
}

/// A run with a live journal is never a leftover, however old its blobs: a backup paused after
/// its export job finished (its `devices.txt` waiting to be read) keeps its journal alive, and
/// a second backup that treats every earlier run as old enough to sweep leaves that folder alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_runs_blobs_are_never_swept_as_leftovers() {
    let Some(cs) = azurite() else { return };
    let w = twenty_devices(&cs).await;
    let mut first = w
        .command(
            &["backup", "--hub", "hub-a"],
            &[("HUBVAULT_FAULT_PAUSE", "export-running")],
        )
        .spawn();
    assert!(
        first
            .wait_for_stderr("paused at export-running", Duration::from_secs(60))
            .await
    );
    let run = journal_run(&w.staging, Duration::from_secs(5)).await;
    let devices = format!("staging/{HUB_A}/{run}/devices.txt");
    let start = Instant::now();
    while !w.staging.leftovers().await.contains(&devices) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the paused run's export never wrote {devices}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = w
        .run(
            &["--json", "backup", "--hub", "hub-a"],
            &[("HUBVAULT_STAGING_LEFTOVER_SECS", "0")],
        )
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.json()["leftovers_removed"], 0, "{}", out.stdout);
    assert!(
        w.staging.leftovers().await.contains(&devices),
        "the live run's export is still there to be read"
    );
    first.kill().await;
}

/// A run shut out of its hub (the firewall closes) while its export runs cannot stop or watch
/// that job: it deletes what it can at once and leaves its journal (no longer kept alive) to the
/// next run, which, let in again, finds the run dead, waits out its job and discards everything
/// the job wrote, uncommitted blocks included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shut_out_mid_export_leaves_its_job_to_the_next_run() {
    let Some(cs) = azurite() else { return };
    let w = slow_exports(&cs, 2.0).await;
    let (first, run, _) = backup_half_way(&w).await;
    w.sim.allow_only("hub-a", "10.9.9.9").await;
    let out = first.finish().await.expect("the shut-out backup ends");
    assert_eq!(out.code, 2, "{}", out.text());
    let journal = format!("hubvault-runs/{run}.json");
    assert!(
        w.staging.leftovers().await.contains(&journal),
        "the journal is left for the next run's sweep"
    );
    w.sim
        .firewall(
            "hub-a",
            json!({"publicNetworkAccess": "Enabled",
                   "networkRuleSets": {"defaultAction": "Allow", "ipRules": []}}),
        )
        .await;
    w.sim.limits("hub-a", json!({"job_rate": 0.0})).await;
    let out = w.run(&["--json", "backup", "--hub", "hub-a"], &[]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dead = &out.json()["dead_runs"];
    assert_eq!(dead[0]["run"], run.as_str(), "{dead:#}");
    assert_eq!(dead[0]["finished"], true, "{dead:#}");
    assert_eq!(
        w.staging.everything().await,
        Vec::<String>::new(),
        "nothing of the shut-out run is left"
    );
}
