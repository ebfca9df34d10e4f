//! The failover report as a browser shows it: rendered by headless Chromium (installed by
//! `scripts/test` when missing), its timeline drawn (the screenshot has the bars' colours) and
//! its figures in the rendered text (`--dump-dom`). Each Chromium run is bounded in time and only
//! the process this test started is killed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Hubvault, SimProcess};

const CHROMIUM: &str = "chromium";
const LIMIT: Duration = Duration::from_secs(90);

/// Run Chromium headless with `args` + a private profile; its stdout.
fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{CHROMIUM} did not start ({e}); scripts/test installs it"));
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{CHROMIUM} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out.path()).unwrap()
}

/// Pixels of the shared report's first three bar colours (#2b6cb0, #6b46c1, #2c7a7b).
fn bar_pixels(png_path: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let near = |p: &[u8], c: (u8, u8, u8)| {
        p[0].abs_diff(c.0) < 24 && p[1].abs_diff(c.1) < 24 && p[2].abs_diff(c.2) < 24
    };
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| {
            p.len() >= 3
                && [(0x2b, 0x6c, 0xb0), (0x6b, 0x46, 0xc1), (0x2c, 0x7a, 0x7b)]
                    .iter()
                    .any(|c| near(p, *c))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_its_timeline_and_figures_in_chromium() {
    let sim = SimProcess::start(&[
        "--hub",
        "hub-a",
        "--private-endpoints",
        "hub-a",
        "--failover-window-ms",
        "1500",
    ]);
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("failover.html");
    let out = Hubvault::new(work.path())
        .arg("--config")
        .arg(sim.config())
        .env("HUBVAULT_ARM_TOKEN", "test-token")
        .env("HUBVAULT_FAILOVER_TICK_MS", "100")
        .args(["failover", "run", "--hub", "hub-a", "--json", "--report"])
        .arg(&report)
        .within(Duration::from_secs(90))
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = out.doc();
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));

    let url = format!("file://{}", report.display());
    let shot = work.path().join("shot.png");
    let report_shot = shot.clone();
    let (pixels, dom) = tokio::task::spawn_blocking(move || {
        chromium(&[
            format!("--screenshot={}", report_shot.display()),
            "--window-size=1000,900".to_owned(),
            url.clone(),
        ]);
        let dom = chromium(&["--dump-dom".to_owned(), url]);
        (bar_pixels(&report_shot), dom)
    })
    .await
    .unwrap();
    assert!(pixels > 500, "the timeline is blank ({pixels} bar pixels)");
    assert!(dom.contains("devices cannot send") && dom.contains("consumer hub-a-reader broken"));
    assert!(dom.contains("eastus"));
    let after = doc["eventhub_endpoint_after"]["endpoint"].as_str().unwrap();
    assert!(dom.contains(after), "the new endpoint is shown");
    let outage = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "devices cannot send")
        .unwrap();
    let secs = (time::OffsetDateTime::parse(
        outage["end"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
        - time::OffsetDateTime::parse(
            outage["start"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap())
    .as_seconds_f64();
    let shown = hubvault::report::duration_text(secs);
    assert!(dom.contains(&shown), "the measured outage {shown} is shown");
    assert!(dom.contains("devices could not send") && dom.contains("+0 ms"));
}
