//! Maps each parsed command onto the library's use cases and renders the result.
//! No domain decisions here: only argument resolution (flags > env > file > defaults) and output.

use anyhow::{Result, bail};

use hubvault::config::Config;

use crate::Outcome;
use crate::cli::{Cli, Command, KeyCommand};

pub async fn run(cli: Cli) -> Result<Outcome> {
    let config = Config::load(cli.global.config.as_deref())?;
    let global = &cli.global;
    match cli.command {
        Command::Key(KeyCommand::Init(_args)) => not_yet("key init"),
        Command::Backup(_args) => not_yet("backup"),
        Command::Snapshots(_args) => not_yet("snapshots"),
        Command::Show(_args) => not_yet("show"),
        Command::Verify(_args) => not_yet("verify"),
        Command::Diff(_args) => not_yet("diff"),
        Command::Dump(_args) => not_yet("dump"),
        Command::Forget(_args) => {
            let _ = (&config, global);
            not_yet("forget")
        }
    }
}

fn not_yet(what: &str) -> Result<Outcome> {
    bail!("`hubvault {what}` is not implemented in this build")
}
