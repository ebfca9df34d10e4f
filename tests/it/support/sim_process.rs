//! The `hubvault-sim` binary as a process, for the tests of what it writes (`--write-config`,
//! `--info`); every other test starts the simulator in-process ([`super::World`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long building the binary may take when this test run did not build it.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

/// A running `hubvault-sim`, its `--info` and `--write-config` files in a folder of its own.
/// Dropping it kills the process.
pub struct SimProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimProcess {
    /// Start the binary with `args` plus `--info` and `--write-config`; returns once it has
    /// written its config.
    pub fn start(args: &[&str]) -> SimProcess {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(binary())
            .args(args)
            .arg("--info")
            .arg(dir.path().join("sim.json"))
            .arg("--write-config")
            .arg(dir.path().join("hubvault.toml"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sim = SimProcess { child, dir };
        let started = Instant::now();
        while !std::fs::metadata(sim.config()).is_ok_and(|m| m.len() > 0) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "simulator did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        sim
    }

    /// The `hubvault.toml` it wrote.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hubvault.toml")
    }

    /// Its folder (where `--tls` writes `sim-ca.pem`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The `hubvault-sim` binary next to this test binary. `cargo test --workspace` (`scripts/test`)
/// builds it; `cargo test -p hubvault-cli` does not, so the first test to need it builds it into
/// the same target folder (offline, bounded in time).
fn binary() -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("hubvault-sim");
    let _one_at_a_time = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bin.exists() {
        build(profile_dir);
    }
    bin
}

fn build(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cargo = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet", "-p", "hubvault-sim"])
        .args(["--bin", "hubvault-sim", "--profile", profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(profile_dir.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = cargo.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BUILD_LIMIT {
            let _ = cargo.kill();
            let _ = cargo.wait();
            panic!("building hubvault-sim took longer than {BUILD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "cargo build -p hubvault-sim failed (or run the tests of the whole workspace: scripts/test):\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
}
