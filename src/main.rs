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
}

impl Outcome {
    pub fn ok(json: Value, human: impl Into<String>) -> Self {
        Outcome {
            json,
            human: human.into(),
            found_something: false,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let json_mode = cli.global.json;
    // Dropped at the end of main, as before: dropping a runtime waits for its blocking tasks.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = match &runtime {
        Ok(runtime) => runtime.block_on(commands::run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(outcome) => {
            if json_mode {
                out(&pretty(&outcome.json));
                if !outcome.human.is_empty() {
                    eprint!("{}", ensure_newline(&outcome.human));
                }
            } else {
                out(outcome.human.trim_end_matches('\n'));
            }
            if outcome.found_something {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            let code = diagnose(&err);
            let message = format!("{err:#}");
            let fix = fix_of(&message);
            if json_mode {
                let doc = json!({"error": {"code": code, "message": message, "fix": fix}});
                out(&pretty(&doc));
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

/// A stable code for `--json` errors: the first error in the chain that hubvault knows.
fn diagnose(err: &anyhow::Error) -> &'static str {
    macro_rules! known {
        ($cause:expr, $($ty:ty),+) => {
            $(if let Some(e) = $cause.downcast_ref::<$ty>() {
                return e.code();
            })+
        };
    }
    for cause in err.chain() {
        known!(
            cause,
            hubvault::config::Error,
            hubvault::store::Error,
            hubvault::keys::Error,
            hubvault::policy::Error,
            hubvault::forget::Error,
            hubvault::diff::Error,
            hubvault::backup::Error,
            hubvault::staging::Error,
            hubvault::services::Error,
            hubvault::snapshot::Error,
            hubvault::integrity::Error,
            hubvault::dump::Error,
            hubvault::restore::Error,
            hubvault::services::Error,
            hubvault::hub::Error,
            hubvault::arm::Error,
            crate::demo::Error,
            hubvault::clone::Error
        );
    }
    "error"
}

/// The next step, where the message states one: hubvault messages read "what happened; what to do".
fn fix_of(message: &str) -> Option<String> {
    message.rsplit_once("; ").map(|(_, fix)| fix.to_owned())
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
