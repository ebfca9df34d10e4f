//! `hubvault demo`: the whole story on a laptop with no Azure, no Azurite and no config — the
//! README's first command. It starts the simulator in-process, backs up hub-a into a local vault,
//! lists the snapshot, shows a preflight that a firewall fails and the fix, clones hub-a into
//! hub-b, checks hub-b against the snapshot, and proves devices authenticate on hub-b with their
//! original keys. Each step reports what it did in plain words, with its result.
//!
//! Owns: the order of the story and its narration. Must not: implement backup, restore,
//! preflight or clone (it calls the real use cases), or print (the binary renders `Step`s).
//! Every wait is bounded by [`STEP_TIMEOUT`].

mod dps_act;
mod story;
mod world;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hubvault::error::{Diagnostic, fix_text};
use serde::Serialize;

pub use world::Fleet;

/// No step of the demo may take longer than this (the whole story takes seconds).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The caller address the demo's firewall lets in before the fix (not this machine's).
const OTHER_CALLER: &str = "127.0.0.2";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the demo's simulator failed: {}; {}", .0, fix_text(self))]
    Simulator(String),
    #[error("cannot {action} {}: {source}; {}", path.display(), fix_text(self))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "step '{step}' did not finish within {secs} s; the demo stopped (nothing outside its folders was touched)"
    )]
    Timeout { step: &'static str, secs: u64 },
    #[error("step '{step}' failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error(transparent)]
    Vault(#[from] hubvault::keys::Error),
    #[error(transparent)]
    Hub(#[from] hubvault::hub::Error),
    #[error(transparent)]
    Snapshot(#[from] hubvault::snapshot::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Simulator(_) => "demo_simulator",
            Error::Io { .. } => "demo_io",
            Error::Timeout { .. } => "demo_timeout",
            Error::Step { .. } => "demo_step_failed",
            Error::Vault(e) => e.code(),
            Error::Hub(e) => e.code(),
            Error::Snapshot(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Simulator(_) => Some("this is a bug in the demo, please report it".to_owned()),
            Error::Io { .. } => Some("check the folder is writable or pass --dir".to_owned()),
            Error::Timeout { .. } | Error::Step { .. } => None,
            Error::Vault(e) => e.fix(),
            Error::Hub(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
        }
    }
}

impl From<Error> for hubvault::Error {
    fn from(e: Error) -> Self {
        hubvault::Error::app(e)
    }
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the vault goes (kept after the demo).
    pub dir: PathBuf,
    /// Devices seeded on hub-a.
    pub devices: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: PathBuf::from("hubvault-demo"),
            devices: 3000,
        }
    }
}

/// One step of the story: what it did and how it came out.
#[derive(Debug, Clone, Serialize)]
#[allow(
    clippy::struct_field_names,
    reason = "`step` is a field of `demo --json`, which scripts read"
)]
pub struct Step {
    pub step: &'static str,
    /// The step came out as the story expects (the blocked preflight is expected to fail).
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

/// The `--json` summary of a demo run.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub ok: bool,
    /// The vault folder the demo left behind.
    pub vault: String,
    pub snapshot: Option<String>,
    pub fleet: Fleet,
    pub steps: Vec<Step>,
}

/// Receives each step as soon as it is done, so the story can be followed live.
pub type Progress<'a> = &'a (dyn Fn(&Step) + Send + Sync);

/// Collects the steps and tells `progress` about each.
struct Story<'a> {
    steps: Vec<Step>,
    progress: Progress<'a>,
}

impl Story<'_> {
    /// Run one step under [`STEP_TIMEOUT`]; `Ok((ok, detail))` is recorded, an error ends the demo.
    async fn step<T>(
        &mut self,
        step: &'static str,
        work: impl Future<Output = Result<(bool, String, T), Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let (ok, detail, value) =
            tokio::time::timeout(STEP_TIMEOUT, work)
                .await
                .map_err(|_| Error::Timeout {
                    step,
                    secs: STEP_TIMEOUT.as_secs(),
                })??;
        let s = Step {
            step,
            ok,
            detail,
            seconds: started.elapsed().as_secs_f64(),
        };
        (self.progress)(&s);
        self.steps.push(s);
        Ok(value)
    }
}

/// Run the whole story. Errors end it early; a step that comes out wrong is recorded with
/// `ok: false` and makes `DemoReport::ok` false.
pub async fn run(options: &DemoOptions, progress: Progress<'_>) -> Result<DemoReport, Error> {
    let mut story = Story {
        steps: Vec::new(),
        progress,
    };
    let world = story
        .step("start", async {
            let world = world::start(options.devices, &options.dir).await?;
            let fleet = world::fleet(&world.registry("hub-a").await?);
            let detail = format!(
                "started two simulated IoT Hubs on 127.0.0.1 with ARM and a DPS instance (dps-a, linked to both): hub-a holds {} devices ({} SAS, {} x509, \
                 {} edge gateways with {} modules and {} child devices, {} disabled) and 2 configurations; hub-b is empty. \
                 A throw-away age identity is at {} (0600, deleted at the end), a throw-away signing key {} is in memory; \
                 the vault is {}",
                fleet.devices,
                fleet.sas,
                fleet.x509,
                fleet.edge,
                fleet.modules,
                fleet.children,
                fleet.disabled,
                world.identity_path.display(),
                world.signing_key.signer(),
                world.store_dir.display()
            );
            Ok((true, detail, (world, fleet)))
        })
        .await?;
    let (world, fleet) = world;
    let snapshot = Box::pin(story::tell(&mut story, &world)).await;
    let steps = std::mem::take(&mut story.steps);
    let ok = snapshot.is_ok() && steps.iter().all(|s| s.ok);
    Ok(DemoReport {
        ok,
        vault: world.store_dir.display().to_string(),
        snapshot: snapshot?,
        fleet,
        steps,
    })
}
