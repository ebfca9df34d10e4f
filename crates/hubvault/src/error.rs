//! One house for errors. Every module keeps its own error enum; each says what happened and,
//! where there is one, what to do next ("what happened; what to do next"). The next step is data
//! of the type ([`Diagnostic::fix`]), and the message shows those same words (the `#[error]`
//! strings print [`fix_text`]), so no fix is written twice and none is recovered from text.
//! [`Error`] wraps them all, and its [`Diagnostic`] impl is an exhaustive match: an error type
//! without a code does not compile. The trait itself lives in [`crate::diagnostic`], a leaf every
//! module depends on; this module depends on every module and nothing depends on it.

use std::error::Error as StdError;
use std::fmt;

pub use crate::diagnostic::{Diagnostic, fix_text, full_message};

/// Any hubvault error, and the command-line mistakes of a program built on the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Arm(#[from] crate::arm::Error),
    #[error(transparent)]
    Backup(#[from] crate::backup::Error),
    /// Boxed, as is `Restore`: they are the largest, and every `Result` carries the size.
    #[error(transparent)]
    Clone(Box<crate::clone::Error>),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Diff(#[from] crate::diff::Error),
    #[error(transparent)]
    Dump(#[from] crate::dump::Error),
    #[error(transparent)]
    Failover(#[from] crate::failover::Error),
    #[error(transparent)]
    Forget(#[from] crate::forget::Error),
    #[error(transparent)]
    Rotate(#[from] crate::rotate::Error),
    #[error(transparent)]
    Enroll(#[from] crate::enroll::Error),
    #[error(transparent)]
    Hub(#[from] crate::hub::Error),
    #[error(transparent)]
    Integrity(#[from] crate::integrity::Error),
    #[error(transparent)]
    Keys(#[from] crate::keys::Error),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::Error),
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    #[error(transparent)]
    Restore(Box<crate::restore::Error>),
    #[error(transparent)]
    RestoreJob(#[from] crate::restore::JobError),
    #[error(transparent)]
    Service(#[from] crate::service::Error),
    #[error(transparent)]
    Services(#[from] crate::services::Error),
    #[error(transparent)]
    Interrupted(#[from] crate::shutdown::Interrupted),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    #[error(transparent)]
    Staging(#[from] crate::staging::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// How the program was called is wrong: a flag, an argument or an environment variable.
    #[error("{message}; {fix}")]
    Usage { message: String, fix: String },
    /// An error type of the program using the library (the `hubvault` binary's demo and
    /// commands), with its own code and fix.
    #[error(transparent)]
    App(AppError),
}

impl Error {
    /// A command-line mistake: what is wrong, and what to pass instead.
    pub fn usage(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// An error of the program using the library.
    pub fn app(e: impl Diagnostic + Send + Sync + 'static) -> Self {
        Error::App(AppError(Box::new(e)))
    }
}

impl From<crate::clone::Error> for Error {
    fn from(e: crate::clone::Error) -> Self {
        Error::Clone(Box::new(e))
    }
}

impl From<crate::restore::Error> for Error {
    fn from(e: crate::restore::Error) -> Self {
        Error::Restore(Box::new(e))
    }
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Arm(e) => e.code(),
            Error::Backup(e) => e.code(),
            Error::Clone(e) => e.code(),
            Error::Config(e) => e.code(),
            Error::Diff(e) => e.code(),
            Error::Dump(e) => e.code(),
            Error::Forget(e) => e.code(),
            Error::Rotate(e) => e.code(),
            Error::Failover(e) => e.code(),
            Error::Enroll(e) => e.code(),
            Error::Hub(e) => e.code(),
            Error::Integrity(e) => e.code(),
            Error::Keys(e) => e.code(),
            Error::Pipeline(e) => e.code(),
            Error::Policy(e) => e.code(),
            Error::Restore(e) => e.code(),
            Error::RestoreJob(e) => e.code(),
            Error::Service(e) => e.code(),
            Error::Services(e) => e.code(),
            Error::Interrupted(e) => e.code(),
            Error::Snapshot(e) => e.code(),
            Error::Staging(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Usage { .. } => "usage",
            Error::App(e) => e.code(),
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Arm(e) => e.fix(),
            Error::Backup(e) => e.fix(),
            Error::Clone(e) => e.fix(),
            Error::Config(e) => e.fix(),
            Error::Diff(e) => e.fix(),
            Error::Dump(e) => e.fix(),
            Error::Forget(e) => e.fix(),
            Error::Rotate(e) => e.fix(),
            Error::Failover(e) => e.fix(),
            Error::Enroll(e) => e.fix(),
            Error::Hub(e) => e.fix(),
            Error::Integrity(e) => e.fix(),
            Error::Keys(e) => e.fix(),
            Error::Pipeline(e) => e.fix(),
            Error::Policy(e) => e.fix(),
            Error::Restore(e) => e.fix(),
            Error::RestoreJob(e) => e.fix(),
            Error::Service(e) => e.fix(),
            Error::Services(e) => e.fix(),
            Error::Interrupted(e) => e.fix(),
            Error::Snapshot(e) => e.fix(),
            Error::Staging(e) => e.fix(),
            Error::Store(e) => e.fix(),
            Error::Usage { fix, .. } => Some(fix.clone()),
            Error::App(e) => e.fix(),
        }
    }
}

/// A boxed error of the program using the library; message, causes, code and fix are its own.
pub struct AppError(Box<dyn Diagnostic + Send + Sync>);

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for AppError {
    /// Transparent: the causes of the wrapped error, not the wrapped error itself.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl Diagnostic for AppError {
    fn code(&self) -> &'static str {
        self.0.code()
    }

    fn fix(&self) -> Option<String> {
        self.0.fix()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        arm, backup, clone, config, diff, dump, forget, hub, integrity, keys, pipeline, policy,
        restore, services, snapshot, staging, store,
    };

    fn io() -> std::io::Error {
        std::io::Error::other("disk on fire")
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn a_cause_the_message_already_holds_is_said_once() {
        let e = Error::from(store::Error::Io {
            store: s("/vault"),
            context: s("write"),
            source: io(),
        });
        let text = full_message(&e);
        assert_eq!(text, "I/O error on /vault (write): disk on fire");
        // A message that wraps another error's message, which is also its source.
        let e = Error::from(clone::Error::Backup(backup::Error::NoRecipients));
        assert_eq!(full_message(&e), e.to_string());
        assert_eq!(full_message(&e).matches("no recipients").count(), 1);
    }

    #[test]
    fn a_cause_the_message_does_not_hold_is_said_once_at_the_end() {
        let e = Error::from(snapshot::Error::Read {
            file: s("devices.txt"),
            source: io(),
        });
        assert_eq!(full_message(&e), "cannot read devices.txt: disk on fire");
        // Three levels: the middle one is quoted by the top, the bottom one is not.
        let e = Error::from(clone::Error::Backup(backup::Error::Input {
            path: PathBuf::from("/exports/devices.txt"),
            source: io(),
        }));
        let text = full_message(&e);
        assert_eq!(
            text,
            "clone stopped while backing up the source: cannot read the export at \
             /exports/devices.txt (check the path): disk on fire"
        );
        assert_eq!(text.matches("cannot read the export").count(), 1);
        assert_eq!(text.matches("disk on fire").count(), 1);
    }

    /// One error of each module, each with a next step in its message.
    fn one_of_each() -> Vec<Error> {
        vec![
            arm::Error::Refused {
                method: "GET",
                resource: s("/subscriptions/x"),
                status: 403,
                message: s("denied"),
            }
            .into(),
            backup::Error::NoDevicesFile {
                path: PathBuf::from("/exports"),
            }
            .into(),
            clone::Error::SnapshotMissing { id: s("20260101") }.into(),
            config::Error::UnknownHub {
                name: s("hub-x"),
                config: s("hubvault.toml"),
            }
            .into(),
            diff::Error::Unsorted {
                side: diff::Side::Old,
                previous: s("b"),
                next: s("a"),
            }
            .into(),
            dump::Error::Exists {
                path: PathBuf::from("/out/devices.txt"),
            }
            .into(),
            forget::Error::Incomplete {
                failed: 1,
                total: 3,
                first: s("boom"),
            }
            .into(),
            hub::Error::JobSlotBusy {
                hub: s("hub-a"),
                running_job: Some(s("job-1")),
            }
            .into(),
            integrity::Error::WrongKey {
                snapshot: s("20260101"),
                expected: vec![s("age1a")],
            }
            .into(),
            keys::Error::NoIdentity {
                looked_in: s("~/.config/hubvault"),
            }
            .into(),
            pipeline::Error::WrongKey.into(),
            policy::Error::NoPolicies {
                dir: PathBuf::from("policies"),
            }
            .into(),
            restore::Error::NoStaging.into(),
            restore::JobError::Failed {
                hub: s("hub-b"),
                job_id: s("job-2"),
                status: s("failed"),
                reason: s("quota"),
            }
            .into(),
            services::Error::NoCredential {
                kind: "hub",
                name: s("hub-a"),
                config: s("hubvault.toml"),
            }
            .into(),
            snapshot::Error::NotFound {
                spec: s("latest"),
                store: s("/vault"),
            }
            .into(),
            staging::Error::NotConfigured {
                config: s("hubvault.toml"),
            }
            .into(),
            store::Error::PermissionDenied {
                store: s("/vault"),
                detail: s("403"),
            }
            .into(),
            Error::usage("--at is not a time", "write e.g. 2026-12-01T02:00:00Z"),
        ]
    }

    fn is_snake_case(code: &str) -> bool {
        !code.is_empty()
            && !code.starts_with('_')
            && !code.ends_with('_')
            && code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn every_module_error_has_a_code_and_its_next_step() {
        for e in one_of_each() {
            let code = e.code();
            assert!(is_snake_case(code), "{code:?} of {e}");
            assert_ne!(code, "error", "{e}");
            let fix = e.fix().unwrap_or_else(|| panic!("no fix for {e}"));
            assert!(!fix.is_empty(), "{e}");
            // The message says the same next step: the fix is data, the message shows it.
            assert!(e.to_string().contains(&fix), "{fix:?} not in {e}");
        }
    }

    #[test]
    fn an_error_without_a_next_step_has_no_fix() {
        let plain: Vec<Error> = vec![
            store::Error::Backend {
                store: s("/vault"),
                detail: s("gone"),
            }
            .into(),
            hub::Error::Decode {
                hub: s("hub-a"),
                what: s("job"),
                detail: s("bad json"),
            }
            .into(),
            config::Error::Parse {
                path: PathBuf::from("hubvault.toml"),
                message: s("line 1"),
            }
            .into(),
        ];
        for e in plain {
            assert!(is_snake_case(e.code()), "{e}");
            assert_eq!(e.fix(), None, "{e}");
        }
    }

    #[test]
    fn wrapping_errors_take_code_and_fix_from_what_they_wrap() {
        let inner = hub::Error::Throttled {
            hub: s("hub-a"),
            retry_after: None,
        };
        let (code, fix) = (inner.code(), inner.fix());
        let wrapped = Error::from(restore::Error::Target(inner));
        assert_eq!(wrapped.code(), code);
        assert_eq!(wrapped.fix(), fix);
        let wrapped = Error::from(clone::Error::Restore(restore::Error::NoStaging));
        assert_eq!(wrapped.code(), "restore_no_staging");
        assert_eq!(wrapped.fix(), restore::Error::NoStaging.fix());
    }

    #[test]
    fn usage_errors_say_what_to_pass() {
        let e = Error::usage("--only \"[\" is not a valid glob", "quote the pattern");
        assert_eq!(e.code(), "usage");
        assert_eq!(
            e.to_string(),
            "--only \"[\" is not a valid glob; quote the pattern"
        );
        assert_eq!(e.fix().as_deref(), Some("quote the pattern"));
    }

    /// An application's own error joins with its code, fix and causes.
    #[derive(Debug, thiserror::Error)]
    #[error("the demo stopped: {source}; {}", fix_text(self))]
    struct Demo {
        source: std::io::Error,
    }

    impl Diagnostic for Demo {
        fn code(&self) -> &'static str {
            "demo_stopped"
        }

        fn fix(&self) -> Option<String> {
            Some("run it again".to_owned())
        }
    }

    #[test]
    fn application_errors_keep_their_code_fix_and_causes() {
        let e = Error::app(Demo { source: io() });
        assert_eq!(e.code(), "demo_stopped");
        assert_eq!(e.fix().as_deref(), Some("run it again"));
        assert_eq!(
            full_message(&e),
            "the demo stopped: disk on fire; run it again"
        );
        assert!(e.source().is_some(), "the cause stays reachable");
    }
}
