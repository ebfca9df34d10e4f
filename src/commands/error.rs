//! The binary's own errors: what happens around the library's use cases (a task that died, a result that cannot be rendered, a runtime that cannot start). They join
//! [`hubvault::Error`] as application errors, with their codes and fixes.

use hubvault::error::{Diagnostic, fix_text};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blocking task of a command panicked or was cancelled.
    #[error("{what} task failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A report did not serialize (a bug: reports are plain data).
    #[error("cannot render the result as JSON: {source}; {}", fix_text(self))]
    Json {
        #[from]
        source: serde_json::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Task { .. } => "task_failed",
            Error::Json { .. } => "json_output",
            Error::Runtime(_) => "runtime_start",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Json { .. } => Some("this is a bug in hubvault, please report it".to_owned()),
            Error::Task { .. } | Error::Runtime(_) => None,
        }
    }
}

impl From<Error> for hubvault::Error {
    fn from(e: Error) -> Self {
        hubvault::Error::app(e)
    }
}
