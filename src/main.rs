//! The `hubvault` binary: parse flags, load config, run a use case, print, exit.
//!
//! Exit codes: 0 ok, 1 a check found something (verify mismatch, diff not empty, preflight
//! finding), 2 error. With `--json`, stdout carries exactly one JSON document (on error:
//! `{"error": {"code", "message", "fix"}}`) and human text goes to stderr.

mod cli;
mod commands;
mod demo;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use hubvault::Diagnostic as _;
use serde_json::{Value, json};

use cli::Cli;

/// What a command produced: a JSON document, text for people, and whether a check found something.
pub struct Outcome {
    pub json: Value,
    pub human: String,
    pub found_something: bool,
    /// Settings of a policy file that nothing acts on yet (config warnings are added by `run`).
    pub warnings: Vec<String>,
    /// The command ran but ended refused or failed (exit 2, with its document, not an error).
    pub failed: bool,
}

impl Outcome {
    pub fn ok(json: Value, human: impl Into<String>) -> Self {
        Outcome {
            json,
            human: human.into(),
            found_something: false,
            warnings: Vec::new(),
            failed: false,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let json_mode = cli.global.json;
    // Kept to the end of main, as before: dropping a runtime waits for its blocking tasks.
    let built = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let (_runtime, warnings, result) = match built {
        Ok(runtime) => {
            let (warnings, result) = runtime.block_on(commands::run(cli));
            (Some(runtime), warnings, result)
        }
        Err(e) => (None, Vec::new(), Err(commands::Error::Runtime(e).into())),
    };
    // Settings nothing acts on yet: said on stderr, and in `--json` documents as `warnings`.
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let with_warnings = |mut doc: Value| {
        if let (Some(map), false) = (doc.as_object_mut(), warnings.is_empty()) {
            map.insert("warnings".into(), json!(warnings));
        }
        doc
    };
    match result {
        Ok(outcome) => {
            // `run` says its own code in its document (3: some hubs failed, others did not).
            let own = outcome.json.get("exit_code").and_then(Value::as_u64);
            if json_mode {
                out(&pretty(&with_warnings(outcome.json)));
                if !outcome.human.is_empty() {
                    eprint!("{}", ensure_newline(&outcome.human));
                }
            } else {
                out(outcome.human.trim_end_matches('\n'));
            }
            match own.and_then(|c| u8::try_from(c).ok()) {
                Some(code) => ExitCode::from(code),
                None if outcome.failed => ExitCode::from(2),
                None if outcome.found_something => ExitCode::from(1),
                None => ExitCode::SUCCESS,
            }
        }
        Err(err) => {
            let message = hubvault::error::full_message(&err);
            if json_mode {
                out(&pretty(&with_warnings(error_json(&err, &message))));
            }
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// A JSON document for stdout.
#[allow(
    clippy::expect_used,
    reason = "a serde_json::Value has string keys and finite numbers only: serializing it cannot fail"
)]
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("json")
}

/// Write to stdout; a closed pipe (`hubvault snapshots | head`) is not an error worth a panic.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if !text.is_empty() {
        let _ = writeln!(stdout, "{text}");
    }
    let _ = stdout.flush();
}

fn ensure_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// The `--json` error document: the error's code, its whole message, and its next step.
fn error_json(err: &hubvault::Error, message: &str) -> Value {
    json!({"error": {"code": err.code(), "message": message, "fix": err.fix()}})
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUBVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hubvault={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::other("disk on fire")
    }

    fn document(err: &hubvault::Error) -> Value {
        error_json(err, &hubvault::error::full_message(err))
    }

    #[test]
    fn json_error_has_code_message_and_fix() {
        let err = hubvault::Error::from(hubvault::snapshot::Error::NotFound {
            spec: "latest".into(),
            store: "/vault".into(),
        });
        let doc = document(&err);
        let keys: Vec<&String> = doc["error"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["code", "fix", "message"]);
        assert_eq!(doc["error"]["code"], "snapshot_not_found");
        assert_eq!(
            doc["error"]["message"],
            "no snapshot latest in /vault; run `hubvault snapshots` to see what exists"
        );
        assert_eq!(
            doc["error"]["fix"],
            "run `hubvault snapshots` to see what exists"
        );
    }

    #[test]
    fn json_error_without_a_next_step_has_a_null_fix_and_its_cause_once() {
        let err = hubvault::Error::from(hubvault::store::Error::Io {
            store: "/vault".into(),
            context: "write".into(),
            source: io(),
        });
        let doc = document(&err);
        assert_eq!(doc["error"]["code"], "store_io");
        assert_eq!(
            doc["error"]["message"],
            "I/O error on /vault (write): disk on fire"
        );
        assert!(doc["error"]["fix"].is_null(), "{doc}");
    }

    #[test]
    fn the_binarys_own_errors_have_codes_and_fixes() {
        let interrupted = hubvault::Error::from(hubvault::shutdown::Interrupted {
            done: "; job j on hub-a cancelled".into(),
            next: "no snapshot was made; run the backup again",
        });
        assert_eq!(interrupted.code(), "interrupted");
        assert_eq!(
            interrupted.to_string(),
            "interrupted; job j on hub-a cancelled; no snapshot was made; run the backup again"
        );
        assert_eq!(
            interrupted.fix().as_deref(),
            Some("no snapshot was made; run the backup again")
        );
        let demo = hubvault::Error::from(demo::Error::Simulator("no hub-a".into()));
        assert_eq!(demo.code(), "demo_simulator");
        let fix = demo.fix().unwrap();
        assert!(demo.to_string().ends_with(&fix), "{demo}");
        let runtime = hubvault::Error::from(commands::Error::Runtime(io()));
        assert_eq!(runtime.code(), "runtime_start");
        assert_eq!(
            hubvault::error::full_message(&runtime),
            "cannot start the async runtime: disk on fire"
        );
        // The demo's I/O error quotes its cause; the chain does not repeat it.
        let demo_io = hubvault::Error::from(demo::Error::Io {
            action: "create",
            path: "/demo".into(),
            source: io(),
        });
        assert_eq!(demo_io.code(), "demo_io");
        assert_eq!(
            hubvault::error::full_message(&demo_io)
                .matches("disk on fire")
                .count(),
            1
        );
    }

    #[test]
    fn usage_errors_have_the_usage_code() {
        let err = hubvault::Error::usage("--hub-name NAME is missing", "pass --hub-name NAME");
        let doc = document(&err);
        assert_eq!(doc["error"]["code"], "usage");
        assert_eq!(doc["error"]["fix"], "pass --hub-name NAME");
        assert_eq!(
            doc["error"]["message"],
            "--hub-name NAME is missing; pass --hub-name NAME"
        );
    }
}
