//! `hubvault drill` and `restore --verify` against the in-process simulator, judged by what the
//! simulator's control API reads back (registry, messages, jobs), and the drill's HTML report
//! rendered by a real headless Chromium.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Out, Staging, Workdir, World, assert_no_secrets, azurite};

/// hub-a seeded, empty drill hubs, a snapshot of hub-a in the store, staging in Azurite.
pub(crate) struct Fixture {
    pub(crate) world: World,
    pub(crate) wd: Workdir,
    _staging: Staging,
}

impl Fixture {
    async fn start(cs: &str, devices: usize, drill_hubs: &[&str], tag: &str) -> Fixture {
        Fixture::over(Fixture::world(devices, drill_hubs).start().await, cs, tag).await
    }

    /// hub-a with `devices` seeded and the empty `drill_hubs`, fast jobs, no ARM.
    pub(crate) fn world(devices: usize, drill_hubs: &[&str]) -> crate::support::WorldBuilder {
        let mut hubs = vec![("hub-a", devices)];
        hubs.extend(drill_hubs.iter().map(|h| (*h, 0)));
        World::builder().hubs(&hubs).arm(false).fast_jobs()
    }

    /// A work folder on `world` whose store holds a snapshot of hub-a as it is now.
    pub(crate) async fn over(world: World, cs: &str, tag: &str) -> Fixture {
        let staging = Staging::fresh(cs, tag).await;
        let wd = Workdir::new();
        let recipient = wd.write_identity();
        wd.set_env("HUBVAULT_JOB_POLL_MS", "20");
        wd.config(&world).staging(&staging).write();
        let export = wd.join("export");
        world.write_export("hub-a", &export).await;
        let out = wd
            .hubvault()
            .args(["backup", "--from-export", export.to_str().unwrap()])
            .args(["--hub-name", "hub-a", "--recipient", &recipient])
            .run()
            .await;
        assert_eq!(out.code, 0, "backup: {}", out.stderr);
        std::fs::remove_dir_all(&export).unwrap();
        Fixture {
            world,
            wd,
            _staging: staging,
        }
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Out {
        self.wd
            .hubvault()
            .args(args)
            .within(Duration::from_secs(300))
            .run()
            .await
    }

    /// `hubvault --json drill latest EXTRA…`.
    pub(crate) async fn drill(&self, extra: &[&str]) -> Out {
        let mut args = vec!["--json", "drill", "latest"];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    /// `id` or `id/moduleId` of every identity on `hub`, without the hub's own system modules.
    pub(crate) async fn identities(&self, hub: &str) -> BTreeSet<String> {
        self.world
            .registry(hub)
            .await
            .iter()
            .filter(|l| !matches!(l["moduleId"].as_str(), Some("$edgeAgent" | "$edgeHub")))
            .map(|l| match l["moduleId"].as_str() {
                Some(m) => format!("{}/{m}", l["id"].as_str().unwrap()),
                None => l["id"].as_str().unwrap().to_owned(),
            })
            .collect()
    }
}

fn count(v: &Value) -> usize {
    usize::try_from(v.as_u64().unwrap_or_else(|| panic!("a count: {v}"))).unwrap()
}

fn seconds(doc: &Value, field: &str) -> f64 {
    doc[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {doc:#}"))
}

fn time(text: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        text.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The drill's phases are in order, tile the run, and the hub's import jobs ran inside apply
/// and links (the simulator's job list is the truth for when they ran).
fn assert_phases_match_the_jobs(doc: &Value, jobs: &[Value]) {
    let phases = doc["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "preflight",
        "open + plan",
        "apply",
        "first device accepted",
        "probe",
        "verification",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for pair in phases.windows(2) {
        assert_eq!(pair[0]["end"], pair[1]["start"], "phases tile the run");
    }
    let span = |name: &str| {
        let p = phases.iter().find(|p| p["name"] == name).unwrap();
        (time(&p["start"]), time(&p["end"]))
    };
    let (apply_start, _) = span("apply");
    let (_, probe_end) = span("probe");
    let imports: Vec<&Value> = jobs.iter().filter(|j| j["type"] == "import").collect();
    assert!(!imports.is_empty(), "{jobs:?}");
    let slack = time::Duration::milliseconds(50);
    for j in imports {
        assert!(
            time(&j["startTimeUtc"]) + slack >= apply_start,
            "{j} before apply"
        );
        assert!(
            time(&j["endTimeUtc"]) <= probe_end + slack,
            "{j} after the probe"
        );
    }
    // RTO: from the start to the probe's end, no later than the last import job's end.
    let started = time(&doc["started"]);
    let rto = (probe_end - started).as_seconds_f64();
    assert!((seconds(doc, "rto_seconds") - rto).abs() < 0.01, "{doc:#}");
}

/// Accepted probe messages as the simulator counted them, against the drill's probe report.
async fn assert_probe_matches_the_hub(world: &World, hub: &str, probe: &Value) {
    let counted = world.messages(hub).await;
    let mut accepted = BTreeSet::new();
    for (kind, result) in probe["by_kind"].as_object().unwrap() {
        for d in result["devices"].as_array().unwrap() {
            if d["accepted"] == true {
                accepted.insert(d["id"].as_str().unwrap().to_owned());
            }
        }
        if kind == "x509" {
            assert_eq!(result["tried"], 0, "{result}");
            assert!(
                result["note"].as_str().unwrap().contains("not measured"),
                "{result}"
            );
        }
    }
    let on_hub: BTreeSet<String> = counted.keys().cloned().collect();
    assert_eq!(
        accepted, on_hub,
        "the probe's accepted devices are the ones the hub counted"
    );
    assert_eq!(count(&probe["accepted"]), on_hub.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_of_10000_devices_reports_what_happened_renders_and_cleans_up() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::start(&cs, 10_000, &["hub-drill", "hub-drill2"], "drill").await;
    let source = f.identities("hub-a").await;
    let report = f.wd.join("drill.html");

    let out = f
        .drill(&[
            "--to",
            "hub-drill",
            "--report",
            report.to_str().unwrap(),
            "--rto-target",
            "30m",
            "--rpo-target",
            "24h",
        ])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let doc = out.doc();
    assert_eq!(doc["verdict"], "passed", "{doc:#}");
    // Counts against the simulator's own registry.
    let restored = f.identities("hub-drill").await;
    assert_eq!(count(&doc["expected"]), source.len());
    assert_eq!(count(&doc["restored"]), restored.len());
    assert_eq!(restored, source);
    assert_eq!(doc["differences"], json!([]));
    assert_eq!(doc["restore"]["verified_keys"], "all");
    // `--engine auto`: the estimate chose the import job (10,000 lines; bulk would take 100
    // minutes at S1's 100 registry operations a minute), said why, and the actual time is there.
    let choice = &doc["restore"]["engine_choice"];
    assert_eq!(doc["restore"]["engine"], "job", "{choice}");
    assert!(choice["job_seconds"].as_f64().unwrap() < choice["bulk_seconds"].as_f64().unwrap());
    assert!(
        choice["reason"]
            .as_str()
            .unwrap()
            .contains("S1, 1 unit assumed"),
        "{choice}"
    );
    assert!(choice["actual_seconds"].as_f64().unwrap() > 0.0, "{choice}");
    assert_eq!(doc["targets"]["rto"], "met");
    assert_eq!(doc["targets"]["rpo"], "met");
    assert!(seconds(&doc, "rpo_seconds") >= 0.0);
    assert_phases_match_the_jobs(&doc, &f.world.jobs("hub-drill").await);
    assert_probe_matches_the_hub(&f.world, "hub-drill", &doc["probe"]).await;
    for kind in ["sas", "edge", "children"] {
        assert!(
            doc["probe"]["by_kind"][kind]["accepted"].as_u64().unwrap() >= 1,
            "{kind}"
        );
    }
    render_in_chromium(&report, &f.wd, &doc);
    let secrets = f.world.secrets(&["hub-a", "hub-drill"]).await;
    let page = std::fs::read_to_string(&report).unwrap();
    for (text, what) in [
        (&out.stdout, "--json"),
        (&out.stderr, "stderr"),
        (&page, "report"),
    ] {
        assert_no_secrets(text, &secrets, what);
    }

    // The same drill with --cleanup leaves its hub empty.
    let out = f
        .drill(&["--to", "hub-drill2", "--cleanup", "--verify", "sample"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let doc = out.doc();
    assert_eq!(count(&doc["restored"]), source.len(), "{doc:#}");
    assert_eq!(doc["restore"]["verified_keys"], "sample of 100");
    assert_eq!(doc["cleanup"]["left_on_target"], 0, "{doc:#}");
    assert_eq!(doc["cleanup"]["could_not"], json!([]));
    assert!(
        f.world.registry("hub-drill2").await.is_empty(),
        "hub-drill2 is empty"
    );
    assert!(f.world.configurations("hub-drill2").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_silently_drops_one_percent_fails_the_drill_with_the_missing_ids_named() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::start(&cs, 3_000, &["hub-drill"], "drilldrop").await;
    let source = f.identities("hub-a").await;
    f.world
        .faults("hub-drill", json!({"drop_imports_percent": 1.0}))
        .await;
    for verify in ["sample", "full"] {
        f.world.wipe("hub-drill").await;
        let out = f.drill(&["--to", "hub-drill", "--verify", verify]).await;
        assert_eq!(out.code, 1, "{verify}: {}\n{}", out.stdout, out.stderr);
        let doc = out.doc();
        let lost: BTreeSet<String> = source
            .difference(&f.identities("hub-drill").await)
            .cloned()
            .collect();
        assert!(lost.len() >= 10, "the fault lost about 1 %: {}", lost.len());
        let named: BTreeSet<String> = doc["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(doc["verdict"], "failed", "{verify}");
        assert_eq!(named, lost, "{verify}: every lost id named, nothing else");
        assert_eq!(count(&doc["restored"]), source.len() - lost.len());
        let reason = doc["reasons"][0].as_str().unwrap();
        let example = lost.iter().next().unwrap();
        assert!(reason.contains(example.as_str()), "{reason}");
        assert!(out.stderr.contains(example.as_str()), "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_refuses_a_hub_with_identities_and_changes_nothing() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::start(&cs, 200, &["hub-drill"], "drillrefuse").await;
    f.world.seed("hub-drill", 3, 9).await;
    let before = f.world.registry_text("hub-drill").await;
    let out = f.drill(&["--to", "hub-drill"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let err = &out.doc()["error"];
    assert_eq!(err["code"], "drill_target_not_empty");
    assert!(
        err["fix"]
            .as_str()
            .unwrap()
            .contains("--allow-nonempty-target"),
        "{err}"
    );
    assert_eq!(
        f.world.registry_text("hub-drill").await,
        before,
        "nothing changed"
    );

    // A --via-dps instance the config does not name: refused, named, nothing changed.
    let out = f.drill(&["--to", "hub-drill", "--via-dps", "dps-a"]).await;
    assert_eq!(out.code, 2);
    let err = out.doc()["error"]["message"].as_str().unwrap().to_owned();
    assert!(err.contains("dps-a"), "{err}");
    assert_eq!(f.world.registry_text("hub-drill").await, before);

    // Allowed: the drill mirrors the snapshot there, past the brake, and passes.
    let out = f
        .drill(&["--to", "hub-drill", "--allow-nonempty-target"])
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(f.identities("hub-drill").await, f.identities("hub-a").await);
}

/// An import job that fails half-way leaves part of the snapshot on the drill hub. With
/// `--cleanup` the drill removes it (the hub was empty, so all of it is the drill's) and says so;
/// without, it says what is left and that the next drill into that hub is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_fails_half_way_is_cleaned_up_or_named() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::start(&cs, 300, &["hub-drill"], "drillhalf").await;
    f.world
        .faults("hub-drill", json!({"fail_next_job": true}))
        .await;
    let out = f
        .drill(&["--to", "hub-drill", "--engine", "job", "--cleanup"])
        .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let message = out.doc()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("the drill's cleanup removed what the restore had written"),
        "{message}"
    );
    assert!(message.contains("the hub reads empty"), "{message}");
    assert!(
        f.world.registry("hub-drill").await.is_empty(),
        "the scratch hub is empty again"
    );
    assert!(f.world.configurations("hub-drill").await.is_empty());

    // Without --cleanup: what is left is named, and the next drill is refused until it is gone.
    f.world
        .faults("hub-drill", json!({"fail_next_job": true}))
        .await;
    let out = f.drill(&["--to", "hub-drill", "--engine", "job"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let message = out.doc()["error"]["message"].as_str().unwrap().to_owned();
    let left = f.world.registry("hub-drill").await;
    let devices = left.iter().filter(|l| l["moduleId"].is_null()).count();
    assert!(devices > 0, "the failed job wrote part of the snapshot");
    assert!(
        message.contains(&format!("now holds {devices} device(s)"))
            && message.contains("--cleanup"),
        "{message}"
    );
    let out = f.drill(&["--to", "hub-drill"]).await;
    assert_eq!(out.doc()["error"]["code"], "drill_target_not_empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reports_usable_before_verified_and_the_sample_it_proved() {
    let Some(cs) = azurite() else { return };
    let f = Fixture::start(&cs, 600, &["hub-b"], "verifysample").await;
    let out = f
        .run(&[
            "--json", "restore", "latest", "--to", "hub-b", "--verify", "sample=7",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.doc();
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["verified_keys"], "sample of 7");
    let share = doc["key_check"]["detects_share"].as_f64().unwrap();
    assert!(
        share > 0.3 && share < 0.6,
        "7 of ~600 catch ≥ about 45 % with 99 %: {share}"
    );
    assert!(out.stderr.contains("99 % probability"), "{}", out.stderr);
    assert!(time(&doc["usable_at"]) <= time(&doc["verified_at"]));
    assert!(seconds(&doc, "usable_after_seconds") <= seconds(&doc, "verified_after_seconds"));

    f.world.wipe("hub-b").await;
    let out = f
        .run(&[
            "--json", "restore", "latest", "--to", "hub-b", "--verify", "none",
        ])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.doc();
    assert_eq!(doc["verified_keys"], "none");
    assert_eq!(doc["verified"], Value::Null);
    assert_eq!(f.identities("hub-b").await, f.identities("hub-a").await);

    let out = f
        .run(&["restore", "latest", "--to", "hub-b", "--verify", "sample=0"])
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("sample=N"), "{}", out.stderr);
}

/// Open the report in headless Chromium: the screenshot's timeline area is drawn (not the
/// page's background) and the rendered text holds the figures.
fn render_in_chromium(report: &Path, wd: &Workdir, doc: &Value) {
    let url = format!("file://{}", report.display());
    let shot = wd.join("drill.png");
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(wd, &[&shot_arg, "--window-size=1000,900", &url]);
    let dom = chromium(wd, &["--dump-dom", &url]);
    let rto = hubvault::report::duration_text(seconds(doc, "rto_seconds"));
    for text in [
        "PASSED".to_owned(),
        "RTO (start → probe success)".to_owned(),
        rto,
        format!("{} / {}", doc["restored"], doc["expected"]),
        "target 30m 00s — met".to_owned(),
        "first device accepted".to_owned(),
    ] {
        assert!(dom.contains(&text), "{text:?} not rendered");
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let width = frame.width as usize;
    // The timeline's bars: right of the labels (24 px margin + 190 px), below the header.
    let mut drawn = 0;
    for y in 150..400.min(frame.height as usize) {
        for x in 230..950.min(width) {
            let at = (y * width + x) * channels;
            let px = &pixels[at..at + 3];
            if px.iter().any(|c| *c < 200) {
                drawn += 1;
            }
        }
    }
    assert!(
        drawn > 2_000,
        "the timeline area is blank: {drawn} drawn pixels"
    );
}

/// Run Debian's `chromium` headless with a throw-away profile, at most 60 s; its stdout.
fn chromium(wd: &Workdir, args: &[&str]) -> String {
    let profile = tempfile::tempdir_in(wd.path()).unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (Debian's chromium package; scripts/test installs it)");
    // Read its output on a thread of its own, so a full pipe cannot stall it.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}
