//! hubvault against what its simulator writes and serves: the `hubvault.toml` that
//! `hubvault-sim --write-config` writes is read by hubvault and reaches every hub, over plain
//! HTTP and over `--tls` with the written CA. (The simulator's own conformance is tested in its
//! package, without hubvault.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hubvault::Diagnostic as _;
use hubvault::config::Config;
use hubvault::hub::HubClient;

/// The `hubvault-sim` binary, built next to this test binary (`cargo test` builds every default
/// member's binaries; `scripts/test` runs the whole workspace).
fn sim_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("hubvault-sim");
    assert!(
        bin.exists(),
        "{} is not built: run the tests of the whole workspace (scripts/test, or cargo test --workspace)",
        bin.display()
    );
    bin
}

/// Start the binary with `args`, wait until it has written its config, and hand it to `check`.
fn with_written_config(args: &[&str], check: impl FnOnce(&Path, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("sim.json");
    let config = dir.path().join("hubvault.toml");
    let mut child = std::process::Command::new(sim_binary())
        .args(args)
        .arg("--info")
        .arg(&info)
        .arg("--write-config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::metadata(&config).is_ok_and(|m| m.len() > 0) {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("simulator did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&config, dir.path())));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// hubvault, configured by nothing but the written file, reaches hub-a (3 devices).
fn reaches_hub_a(config: &Path) -> Config {
    let parsed = Config::parse(&std::fs::read_to_string(config).unwrap(), config)
        .expect("hubvault reads the written config");
    let resolved = hubvault::services::resolve_hub("hub-a", &parsed).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = rt
        .block_on(HubClient::new(resolved.target).unwrap().statistics())
        .unwrap();
    assert_eq!(stats.total_device_count, 3);
    parsed
}

#[test]
fn hubvault_reads_the_config_the_simulator_writes_and_reaches_its_hubs() {
    with_written_config(
        &[
            "--listen",
            "127.0.0.1:0",
            "--hub",
            "hub-a",
            "--hub",
            "hub-b",
            "--devices",
            "hub-a=3",
        ],
        |config, _| {
            let parsed = reaches_hub_a(config);
            assert_eq!(parsed.hubs.len(), 2);
        },
    );
}

#[test]
fn over_tls_hubvault_trusts_the_written_ca_and_reaches_its_hubs() {
    with_written_config(
        &[
            "--tls",
            "--hub",
            "hub-a",
            "--dps",
            "dps-a",
            "--devices",
            "hub-a=3",
        ],
        |config, dir| {
            let parsed = reaches_hub_a(config);
            let ca = dir.join("sim-ca.pem");
            assert_eq!(parsed.hubs["hub-a"].ca_file.as_deref(), Some(ca.as_path()));
            // Without the CA, hubvault's client refuses the simulator's certificate.
            let mut target = hubvault::services::resolve_hub("hub-a", &parsed)
                .unwrap()
                .target;
            target.ca_file = None;
            target.retry = hubvault::hub::RetryPolicy::none();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let err = rt
                .block_on(HubClient::new(target).unwrap().statistics())
                .unwrap_err();
            assert_eq!(err.code(), "hub_transport", "{err}");
        },
    );
}
