//! Seal and open byte streams: zstd, then age. One `finish()` closes both; sha256 of what was written.
//!
//! Owns: [`SealWriter`] (plaintext in, compressed-then-encrypted bytes out, with the stored
//! bytes' sha256), [`open`] (the reverse), and the bridges between these synchronous streams and
//! the asynchronous [`crate::store`] ([`bridge`]). Compression comes before encryption because
//! ciphertext does not compress.
//!
//! Must not: know hubs, snapshots, stores' names or where keys come from. Callers hand in age
//! recipients and identities.

pub mod bridge;
pub mod handoff;
mod open;
pub mod read_ahead;
mod seal;

pub use open::{Identities, Opened, open};
pub use seal::{SealOptions, SealStats, SealWriter, hex, unfinished_drops};

use crate::diagnostic::{Diagnostic, fix_text};

/// Errors when opening a sealed stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of the identities can decrypt: the stream was sealed to other recipients.
    #[error(
        "none of the given identities can decrypt this object; {}",
        fix_text(self)
    )]
    WrongKey,
    #[error("not a valid age stream ({detail}); the object is damaged or not made by hubvault")]
    NotSealed { detail: String },
    #[error("cannot start the zstd decoder")]
    Zstd(#[source] std::io::Error),
    #[error("no recipients given; a stream must be sealed to at least one age recipient")]
    NoRecipients,
    #[error("sealing failed")]
    Seal(#[source] std::io::Error),
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::WrongKey => "pipeline_wrong_key",
            Error::NotSealed { .. } => "pipeline_not_sealed",
            Error::Zstd(_) => "pipeline_zstd",
            Error::NoRecipients => "pipeline_no_recipients",
            Error::Seal(_) => "pipeline_seal",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::WrongKey => {
                Some("use the identity of one of the recipients it was sealed to".to_owned())
            }
            Error::NotSealed { .. } | Error::Zstd(_) | Error::NoRecipients | Error::Seal(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
