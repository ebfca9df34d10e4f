//! The fault matrix: simulator faults × commands (backup, restore with each engine and mode,
//! clone) × a SIGKILL in the middle, each cell in a world of its own (a seeded hub-a, an empty
//! hub-b, real Azurite staging). A cell runs the command with the fault on (and the kill, if
//! any), then, if that did not finish the job, runs it again with the fault off. It is good when:
//! the first run ended with a known outcome (0, or 1/2 with an error code, never a panic); the
//! job is done after at most the re-run (the target equals the source, or the newest snapshot
//! equals the hub); staging is empty; `verify --all --read-data` passes.
//!
//! A slice runs in the test command; `scripts/fault-matrix` runs it all and prints the table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Out, Staging, Workdir, World, azurite};

/// A fault, as control API documents for the target hub(s).
#[derive(Clone, Copy)]
struct Fault {
    name: &'static str,
    faults: &'static str,
    limits: &'static str,
}

const FAULTS: [Fault; 8] = [
    Fault {
        name: "none",
        faults: "{}",
        limits: "{}",
    },
    Fault {
        name: "429-storm",
        faults: "{}",
        limits: r#"{"rates":{"registry":2.0,"jobs":2.0,"statistics":1.0},"retry_after_secs":1}"#,
    },
    Fault {
        name: "5xx-burst",
        faults: r#"{"error_burst":4,"error_status":503}"#,
        limits: "{}",
    },
    Fault {
        name: "500-burst",
        faults: r#"{"error_burst":3,"error_status":500}"#,
        limits: "{}",
    },
    Fault {
        name: "dropped",
        faults: r#"{"drop_count":3}"#,
        limits: "{}",
    },
    Fault {
        name: "job-fails-half-way",
        faults: r#"{"fail_next_job":true}"#,
        limits: "{}",
    },
    Fault {
        name: "sas-expiry",
        faults: r#"{"expire_tokens_early_secs":3599}"#,
        limits: "{}",
    },
    Fault {
        name: "failover-404012",
        faults: r#"{"failing_over_ms":2500}"#,
        limits: "{}",
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Backup,
    Restore(&'static str, &'static str),
    Clone,
}

impl Command {
    fn name(self) -> String {
        match self {
            Command::Backup => "backup".into(),
            Command::Restore(engine, mode) => format!("restore {engine} {mode}"),
            Command::Clone => "clone".into(),
        }
    }

    fn args(self) -> Vec<String> {
        let v: Vec<&str> = match self {
            Command::Backup => vec!["backup", "--hub", "hub-a"],
            Command::Restore(engine, mode) => vec![
                "restore",
                "latest",
                "--hub",
                "hub-a",
                "--to",
                "hub-b",
                "--engine",
                engine,
                "--mode",
                mode,
                "--max-delete",
                "100%",
            ],
            Command::Clone => vec![
                "clone", "--from", "hub-a", "--to", "hub-b", "--mode", "upsert",
            ],
        };
        v.into_iter().map(str::to_owned).collect()
    }

    /// The hubs a fault is set on: the one the command works against.
    fn hubs(self) -> &'static [&'static str] {
        match self {
            Command::Backup => &["hub-a"],
            Command::Restore(..) => &["hub-b"],
            Command::Clone => &["hub-a", "hub-b"],
        }
    }
}

const COMMANDS: [Command; 8] = [
    Command::Backup,
    Command::Restore("job", "create"),
    Command::Restore("job", "upsert"),
    Command::Restore("job", "mirror"),
    Command::Restore("bulk", "create"),
    Command::Restore("bulk", "upsert"),
    Command::Restore("bulk", "mirror"),
    Command::Clone,
];

/// Where the first run is killed (SIGKILL), if anywhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    No,
    /// At the named pause point once the export job runs (backup, clone).
    ExportRunning,
    /// Once the hub runs the restore's import job (job engine).
    ImportRunning,
}

struct Cell {
    fault: Fault,
    command: Command,
    kill: Kill,
}

struct Row {
    cell: String,
    first: i32,
    code: String,
    rerun: Option<i32>,
    done: bool,
    staging_empty: bool,
    store_ok: bool,
}

impl Row {
    fn good(&self) -> bool {
        let known = self.first == 0
            || ((self.first == 1 || self.first == 2) && !self.code.is_empty())
            || self.first == -1;
        known && self.done && self.staging_empty && self.store_ok
    }
}

async fn run_cell(cs: &str, cell: &Cell, n: usize) -> Row {
    let world = World::builder()
        .hubs(&[("hub-a", 30), ("hub-b", 0)])
        .seed(40 + n as u64)
        .fast_jobs()
        .start()
        .await;
    let staging = Staging::fresh(cs, &format!("fm{n}")).await;
    let wd = Workdir::new();
    let recipient = wd.write_identity();
    wd.config(&world).staging(&staging).write();
    wd.set_env("HUBVAULT_JOB_POLL_MS", "50");
    // A dead run's lease lapses in 15 s; the re-run after a kill must not wait for it longer.
    wd.set_env("HUBVAULT_STAGING_LEFTOVER_SECS", "1");
    let hv = |args: &[String]| {
        wd.hubvault()
            .args(["--json"])
            .args(args)
            .args(["--recipient", &recipient])
            .within(Duration::from_secs(120))
    };
    // Restores need a snapshot of hub-a; hub-b holds a few strangers a mirror must remove.
    if matches!(cell.command, Command::Restore(..)) {
        hv(&Command::Backup.args()).run().await.expect_code(0);
        world
            .load("hub-b", &[json!({"id": "stranger-1", "status": "enabled"})])
            .await;
    }
    for hub in cell.command.hubs() {
        world
            .faults(hub, serde_json::from_str(cell.fault.faults).unwrap())
            .await;
        world
            .limits(hub, serde_json::from_str(cell.fault.limits).unwrap())
            .await;
    }
    if cell.command == Command::Restore("bulk", "create")
        || cell.command == Command::Restore("job", "create")
    {
        // create never removes: start from an empty target.
        world.wipe("hub-b").await;
    }

    let first = first_run(&world, &hv, cell).await;
    let code = first.doc()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    calm(&world).await;
    let mut rerun = None;
    let mut done = is_done(&world, &wd, cell.command).await;
    if !done || first.code != 0 {
        let again = hv(&cell.command.args()).run().await;
        rerun = Some(again.code);
        if again.code != 0 {
            eprintln!("cell {n}: the re-run said {}", again.stdout);
        }
        done = again.code == 0 && is_done(&world, &wd, cell.command).await;
    }
    // Staging is empty after the next run: it finds a killed run dead at once through its
    // journal (same machine, process gone), cancels its job, waits for it to stop and deletes
    // what it wrote, even inside the dead run's 15 s lease.
    if rerun.is_none() && !staging.leftovers().await.is_empty() {
        hv(&cell.command.args()).run().await;
    }
    let left = staging.leftovers().await;
    let staging_empty = left.is_empty();
    if !staging_empty {
        eprintln!("cell {n}: staging holds {left:?}");
    }
    let verify = wd
        .hubvault()
        .args(["--json", "verify", "--all", "--read-data"])
        .run()
        .await;
    let store_ok = verify.code == 0;
    staging.delete().await;
    Row {
        cell: format!(
            "{} × {}{}",
            cell.fault.name,
            cell.command.name(),
            match cell.kill {
                Kill::No => "",
                Kill::ExportRunning => " × kill@export-running",
                Kill::ImportRunning => " × kill@import-running",
            }
        ),
        first: first.code,
        code,
        rerun,
        done,
        staging_empty,
        store_ok,
    }
}

/// The first run, with the fault on: to its end, or killed where the cell says.
async fn first_run(
    world: &World,
    hv: &impl Fn(&[String]) -> crate::support::Hubvault,
    cell: &Cell,
) -> Out {
    match cell.kill {
        Kill::No => hv(&cell.command.args()).run().await,
        Kill::ExportRunning => {
            let mut child = hv(&cell.command.args())
                .env("HUBVAULT_FAULT_PAUSE", "export-running")
                .spawn();
            assert!(
                child
                    .wait_for_stderr("paused at export-running", Duration::from_secs(60))
                    .await
            );
            child.kill().await;
            child.finish().await.unwrap()
        }
        Kill::ImportRunning => {
            world.limits("hub-b", json!({"job_rate": 20.0})).await;
            let mut child = hv(&cell.command.args()).spawn();
            world
                .running_job("hub-b", Some("import"), Duration::from_secs(60))
                .await;
            child.kill().await;
            world.limits("hub-b", json!({"job_rate": 0.0})).await;
            child.finish().await.unwrap()
        }
    }
}

/// The fault is over; a job a killed run left is allowed to end before the re-run.
async fn calm(world: &World) {
    for hub in ["hub-a", "hub-b"] {
        world
            .faults(
                hub,
                json!({"error_burst": 0, "drop_count": 0, "fail_next_job": false,
                       "expire_tokens_early_secs": 0, "failing_over_ms": 0}),
            )
            .await;
        world
            .limits(hub, json!({"rates": {}, "retry_after_secs": null}))
            .await;
        world.jobs_done(hub, Duration::from_secs(60)).await;
    }
}

/// Whether the command's job is done: hub-b holds hub-a's devices and keys (and, after a
/// mirror, nothing else), or the newest snapshot equals hub-a.
async fn is_done(world: &World, wd: &Workdir, command: Command) -> bool {
    match command {
        Command::Backup => {
            wd.hubvault()
                .args(["diff", "latest", "--hub", "hub-a"])
                .run()
                .await
                .code
                == 0
        }
        Command::Restore(_, mode) => {
            let a = keys(&world.registry("hub-a").await);
            let b = keys(&world.registry("hub-b").await);
            if mode == "mirror" {
                a == b
            } else {
                a.iter().all(|d| b.contains(d))
            }
        }
        Command::Clone => {
            let b = keys(&world.registry("hub-b").await);
            keys(&world.registry("hub-a").await)
                .iter()
                .all(|d| b.contains(d))
        }
    }
}

/// (id, moduleId, primary key) of every identity.
fn keys(registry: &[Value]) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = registry
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or_default().to_owned(),
                d["moduleId"].as_str().unwrap_or_default().to_owned(),
                d["authentication"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn all_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for fault in FAULTS {
        for command in COMMANDS {
            cells.push(Cell {
                fault,
                command,
                kill: Kill::No,
            });
        }
    }
    for command in [Command::Backup, Command::Clone] {
        cells.push(Cell {
            fault: FAULTS[0],
            command,
            kill: Kill::ExportRunning,
        });
    }
    for mode in ["create", "upsert", "mirror"] {
        cells.push(Cell {
            fault: FAULTS[0],
            command: Command::Restore("job", mode),
            kill: Kill::ImportRunning,
        });
    }
    cells
}

async fn run_matrix(cells: &[Cell]) -> (String, usize) {
    let Some(cs) = azurite() else {
        return ("no Azurite: skipped\n".into(), 0);
    };
    let started = Instant::now();
    let mut table = format!(
        "{:<52} {:>5} {:<26} {:>5} {:>5} {:>8} {:>6}  {}\n",
        "CELL", "EXIT", "CODE", "RERUN", "DONE", "STAGING", "STORE", "VERDICT"
    );
    let mut bad = 0;
    for (n, cell) in cells.iter().enumerate() {
        let row = run_cell(&cs, cell, n).await;
        if !row.good() {
            bad += 1;
        }
        let _ = writeln!(
            table,
            "{:<52} {:>5} {:<26} {:>5} {:>5} {:>8} {:>6}  {}",
            row.cell,
            row.first,
            if row.code.is_empty() { "-" } else { &row.code },
            row.rerun.map_or("-".to_owned(), |c| c.to_string()),
            if row.done { "yes" } else { "NO" },
            if row.staging_empty { "empty" } else { "LEFT" },
            if row.store_ok { "ok" } else { "BAD" },
            if row.good() { "good" } else { "BAD" }
        );
    }
    let _ = writeln!(
        table,
        "{} cells, {bad} bad, {:.0} s",
        cells.len(),
        started.elapsed().as_secs_f64()
    );
    (table, bad)
}

/// A slice of the matrix, in the test command: one transient fault, a job failing half-way, two
/// kills, on the commands that meet them most (the create-mode cells were red before a re-run of
/// a half-failed create converged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_slice() {
    let all = all_cells();
    let pick = |fault: &str, command: Command, kill: Kill| {
        all.iter()
            .find(|c| c.fault.name == fault && c.command == command && c.kill == kill)
            .map(|c| Cell {
                fault: c.fault,
                command: c.command,
                kill: c.kill,
            })
            .unwrap()
    };
    let cells = [
        pick("5xx-burst", Command::Backup, Kill::No),
        pick(
            "job-fails-half-way",
            Command::Restore("job", "create"),
            Kill::No,
        ),
        pick(
            "none",
            Command::Restore("job", "create"),
            Kill::ImportRunning,
        ),
        pick("dropped", Command::Restore("bulk", "upsert"), Kill::No),
        pick("none", Command::Clone, Kill::ExportRunning),
    ];
    let (table, bad) = run_matrix(&cells).await;
    eprintln!("{table}");
    assert_eq!(bad, 0, "{table}");
}

/// The whole matrix (`scripts/fault-matrix`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the whole matrix takes minutes: scripts/fault-matrix"]
async fn fault_matrix_full() {
    let (table, bad) = run_matrix(&all_cells()).await;
    println!("{table}");
    assert_eq!(bad, 0, "{table}");
}
