//! One house for errors. Every module keeps its own error enum; each says what happened and,
//! where there is one, what to do next ("what happened; what to do next"). The next step is data
//! of the type ([`Diagnostic::fix`]), and the message shows those same words (the `#[error]`
//! strings print [`fix_text`]), so no fix is written twice and none is recovered from text.

use std::error::Error as StdError;

/// What an error tells a program besides its message: a stable code and the next step.
pub trait Diagnostic: StdError {
    /// Stable machine-readable code (`snake_case`) for `--json` error output.
    fn code(&self) -> &'static str;
    /// What to do next, when the error has a next step (its message ends with or holds the
    /// same words); `None` when there is nothing the caller can do about it.
    fn fix(&self) -> Option<String>;
}

/// The fix as a message shows it (empty when there is none), for `#[error(...)]` strings.
pub fn fix_text(e: &impl Diagnostic) -> String {
    e.fix().unwrap_or_default()
}
