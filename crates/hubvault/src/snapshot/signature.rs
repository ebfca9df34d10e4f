//! Signed snapshots (vault format 2, docs/vault-format.md#v2-signature): the signature object a
//! writer puts beside a manifest, and what a reader concludes about a snapshot ([`Trust`]).
//!
//! The signature covers the manifest's exact bytes, so it covers every object's name, size,
//! sha256 and record count, the recipients, the hub, the id, the time, the generation and the
//! signer's own key: a copied signature, an edited manifest or a forged one does not verify.
//!
//! Must not: trust a key because a snapshot names it: only [`TrustedSigners`] decides.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::Manifest;
pub use super::trust::Trust;
pub use crate::keys::TrustedSigners;
use crate::keys::{Signer, SigningKey};

/// The only algorithm.
const ALGORITHM: &str = "ed25519";

/// The signature object (`signature.g<N>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureObject {
    pub format: u64,
    /// The manifest object it signs (`manifest.g<N>.json`).
    pub manifest: String,
    /// The signer's public key, `hvsig1…`.
    pub signer: String,
    pub algorithm: String,
    /// The same key as PEM, so `openssl` alone can check the signature.
    pub public_key_pem: String,
    /// Base64 of the 64-byte Ed25519 signature of the manifest's bytes.
    pub signature: String,
}

impl SignatureObject {
    /// Sign `manifest_bytes` (stored as `manifest_name`) with `key`.
    pub fn sign(manifest_bytes: &[u8], manifest_name: &str, key: &SigningKey) -> SignatureObject {
        let signer = key.signer();
        SignatureObject {
            format: super::manifest::FORMAT,
            manifest: manifest_name.to_owned(),
            signer: signer.to_string(),
            algorithm: ALGORITHM.to_owned(),
            public_key_pem: signer.to_pem(),
            signature: B64.encode(key.sign(manifest_bytes)),
        }
    }

    /// Pretty JSON, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Judge a snapshot: `manifest` parsed from `manifest_bytes`, `signature` the bytes of its
/// signature object (if there is one).
pub fn judge(
    manifest: &Manifest,
    manifest_name: &str,
    manifest_bytes: &[u8],
    signature: Option<&[u8]>,
    trusted: &TrustedSigners,
) -> Trust {
    if manifest.format == super::manifest::FORMAT_V1 {
        return Trust::Unsigned;
    }
    let bad = |why: &str| Trust::BadSignature(why.to_owned());
    let Some(bytes) = signature else {
        return bad("the signature object is missing");
    };
    let Ok(object) = serde_json::from_slice::<SignatureObject>(bytes) else {
        return bad("the signature object is not valid JSON of the expected shape");
    };
    if object.algorithm != ALGORITHM {
        return bad("the signature is not ed25519");
    }
    if object.manifest != manifest_name {
        return bad("the signature names another manifest object");
    }
    let Ok(signer) = object.signer.parse::<Signer>() else {
        return bad("the signature's signer is not an hvsig1… key");
    };
    if manifest.signer.as_deref() != Some(object.signer.as_str()) {
        return bad("the signature's signer is not the signer the manifest names");
    }
    if object.public_key_pem != signer.to_pem() {
        return bad("the signature's PEM key is not its signer");
    }
    let Ok(sig) = B64.decode(object.signature.trim()) else {
        return bad("the signature is not base64");
    };
    if !signer.verifies(manifest_bytes, &sig) {
        return bad("the signature does not match the manifest's bytes");
    }
    if trusted.contains(&signer) {
        Trust::Signed(signer)
    } else {
        Trust::UntrustedSigner(signer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn manifest(signer: &Signer) -> Manifest {
        crate::snapshot::manifest::sample_v2(
            "hub-a",
            "20261126T020000Z-3f9a1c2e",
            "2026-11-26T02:00:00Z",
            signer,
        )
    }

    #[test]
    fn only_a_trusted_signature_over_these_exact_bytes_is_accepted() {
        let key = SigningKey::generate().unwrap();
        let m = manifest(&key.signer());
        let bytes = m.to_bytes();
        let name = "manifest.g1.json";
        let sig = SignatureObject::sign(&bytes, name, &key).to_bytes();
        let trusted = TrustedSigners::new([key.signer()]);
        assert_eq!(
            judge(&m, name, &bytes, Some(&sig), &trusted),
            Trust::Signed(key.signer())
        );
        assert!(matches!(
            judge(&m, name, &bytes, Some(&sig), &TrustedSigners::default()),
            Trust::UntrustedSigner(_)
        ));
        // An edited manifest (other recipients), a copied signature, another key, no signature.
        let mut edited = m.clone();
        edited.recipients = vec!["age1attacker".into()];
        let edited_bytes = edited.to_bytes();
        assert!(matches!(
            judge(&edited, name, &edited_bytes, Some(&sig), &trusted),
            Trust::BadSignature(_)
        ));
        let other = SigningKey::generate().unwrap();
        let forged = SignatureObject::sign(&bytes, name, &other).to_bytes();
        assert!(matches!(
            judge(&m, name, &bytes, Some(&forged), &trusted),
            Trust::BadSignature(_)
        ));
        assert!(matches!(
            judge(&m, name, &bytes, None, &trusted),
            Trust::BadSignature(_)
        ));
        assert!(matches!(
            judge(&m, "manifest.g2.json", &bytes, Some(&sig), &trusted),
            Trust::BadSignature(_)
        ));
        assert!(Trust::Signed(key.signer()).accepted(false));
        assert!(!Trust::Unsigned.accepted(false) && Trust::Unsigned.accepted(true));
    }
}
