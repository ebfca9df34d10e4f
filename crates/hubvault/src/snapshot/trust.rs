//! What a reader knows about a snapshot's origin (a leaf: the manifest carries it, the
//! signature module decides it).

use crate::keys::Signer;

/// What a reader knows about a snapshot's origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// Not looked at (a manifest not read through the catalog).
    #[default]
    Unchecked,
    /// Format 1: no signature. Anyone who could write to the store could have made it.
    Unsigned,
    /// Signed by a trusted signer.
    Signed(Signer),
    /// A valid signature, by a key this reader does not trust.
    UntrustedSigner(Signer),
    /// The signature is missing, damaged, made over other bytes, or by another key than the
    /// manifest names.
    BadSignature(String),
}

impl Trust {
    /// Whether a reader may use the snapshot: signed by a trusted signer, or (with
    /// `--allow-unsigned`) a format 1 snapshot.
    pub fn accepted(&self, allow_unsigned: bool) -> bool {
        match self {
            Trust::Signed(_) => true,
            Trust::Unsigned => allow_unsigned,
            Trust::Unchecked | Trust::UntrustedSigner(_) | Trust::BadSignature(_) => false,
        }
    }

    /// `signed by hvsig1…`, `unsigned`, `untrusted signer hvsig1…`, `bad signature: …`.
    pub fn describe(&self) -> String {
        match self {
            Trust::Unchecked => "not checked".to_owned(),
            Trust::Unsigned => "unsigned (format 1)".to_owned(),
            Trust::Signed(s) => format!("signed by {s}"),
            Trust::UntrustedSigner(s) => format!("signed by {s}, which is not trusted here"),
            Trust::BadSignature(why) => format!("bad signature: {why}"),
        }
    }

    /// One word for scripts (`--json`): `signed`, `untrusted-signer`, `bad-signature`,
    /// `unsigned`, `unchecked`.
    pub fn word(&self) -> &'static str {
        match self {
            Trust::Signed(_) => "signed",
            Trust::UntrustedSigner(_) => "untrusted-signer",
            Trust::BadSignature(_) => "bad-signature",
            Trust::Unsigned => "unsigned",
            Trust::Unchecked => "unchecked",
        }
    }

    /// The signer, when the signature verifies.
    pub fn signer(&self) -> Option<&Signer> {
        match self {
            Trust::Signed(s) | Trust::UntrustedSigner(s) => Some(s),
            _ => None,
        }
    }
}
