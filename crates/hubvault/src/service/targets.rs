//! Where one policy's notifications go: the webhook and ping URLs (secrets: never shown) and
//! which events are asked for. Read by [`super::hub_run::Context`], used by [`super::notify`].

use std::fmt;

use crate::policy::NotifyOn;

/// A URL that may carry a token: never shown.
#[derive(Clone)]
pub struct HookUrl(String);

impl HookUrl {
    /// The URL itself, for the one place that sends to it.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }

    pub fn new(url: impl Into<String>) -> HookUrl {
        HookUrl(url.into())
    }
}

impl fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookUrl(<redacted>)")
    }
}

/// Where one policy's notifications go.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub webhook: Option<HookUrl>,
    pub ping: Option<HookUrl>,
    pub on: Vec<NotifyOn>,
}
