//! What an error tells a program besides its message: a stable code and the next step
//! ([`Diagnostic`]), and how a cause chain is said once ([`full_message`]). Every module's error
//! enum implements it; the umbrella [`crate::Error`] wraps them all. A leaf: it knows no module.

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

/// The message of `err` followed by each cause in its `source()` chain that the text so far does
/// not already hold: a cause the message already quotes is not said twice.
pub fn full_message(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}
