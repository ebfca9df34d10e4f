//! DPS service SAS validation (docs/azure.md algorithm with `sr` = the DPS host name).
//!
//! A pure function of the header, the policies, the host, the request path and `now`. It owns
//! the parsing and the HMAC check; it must not decide permissions per operation (the caller does).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use crate::shared::AccessPolicy;

/// What `WebUtility.UrlEncode` leaves alone: alphanumerics and `- _ . ! * ( )`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')');

/// Why a token is refused. All of these become 401 on the wire; the variant is for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    UnknownPolicy,
    Expired,
    WrongAudience,
    BadSignature,
}

/// Validate `SharedAccessSignature sr=…&sig=…&se=…&skn=…` and return the matching policy.
pub fn validate<'p>(
    header: &str,
    policies: &'p [AccessPolicy],
    host: &str,
    path: &str,
    now_epoch: i64,
) -> Result<&'p AccessPolicy, Rejection> {
    let fields = header
        .strip_prefix("SharedAccessSignature ")
        .ok_or(Rejection::Malformed)?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in fields.split('&') {
        let (k, v) = pair.split_once('=').ok_or(Rejection::Malformed)?;
        let v = percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| Rejection::Malformed)?
            .into_owned();
        match k {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let (sr, sig, se) = (
        sr.ok_or(Rejection::Malformed)?,
        sig.ok_or(Rejection::Malformed)?,
        se.ok_or(Rejection::Malformed)?,
    );
    let skn = skn.ok_or(Rejection::UnknownPolicy)?;
    let expiry: i64 = se.parse().map_err(|_| Rejection::Malformed)?;
    let policy = policies
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(&skn))
        .ok_or(Rejection::UnknownPolicy)?;
    if expiry <= now_epoch {
        return Err(Rejection::Expired);
    }
    if !audience_matches(&sr, host, path) {
        return Err(Rejection::WrongAudience);
    }
    let given = STANDARD.decode(sig).map_err(|_| Rejection::BadSignature)?;
    let ok = [&policy.primary_key, &policy.secondary_key]
        .into_iter()
        .any(|key| signature_matches(key, &sr, &se, &given));
    if ok {
        Ok(policy)
    } else {
        Err(Rejection::BadSignature)
    }
}

/// `sr` is the host, or the host followed by a prefix of the requested path.
fn audience_matches(sr: &str, host: &str, path: &str) -> bool {
    let sr = sr.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match sr.strip_prefix(&host) {
        Some("" | "/") => true,
        Some(rest) if rest.starts_with('/') => path.to_ascii_lowercase().starts_with(rest),
        _ => false,
    }
}

/// SDKs differ in hex case when encoding `sr`; accept both spellings of the string to sign.
fn signature_matches(key_b64: &str, sr: &str, se: &str, given: &[u8]) -> bool {
    let Ok(key) = STANDARD.decode(key_b64) else {
        return false;
    };
    let upper = utf8_percent_encode(sr, URL_ENCODE).to_string();
    let lower = lower_hex_escapes(&upper);
    [upper, lower].iter().any(|encoded| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{encoded}\n{se}").as_bytes());
        mac.verify_slice(given).is_ok()
    })
}

fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// Build a token (used by tests and by the control API to hand out working tokens).
pub fn token(host: &str, policy: &str, key_b64: &str, expiry: i64) -> String {
    let encoded = utf8_percent_encode(host, URL_ENCODE).to_string();
    let key = STANDARD.decode(key_b64).unwrap_or_default();
    #[allow(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length, new_from_slice never fails"
    )]
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={policy}",
        utf8_percent_encode(&sig, URL_ENCODE)
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const HOST: &str = "mydps.azure-devices-provisioning.net";

    fn policies() -> Vec<AccessPolicy> {
        vec![AccessPolicy {
            name: "provisioningserviceowner".into(),
            primary_key: KEY.into(),
            secondary_key: STANDARD.encode([9u8; 32]),
            rights: vec!["EnrollmentWrite".into()],
        }]
    }

    #[test]
    fn contract_test_vector_is_accepted() {
        // docs/azure.md DPS vector: sig +5V0HFPIoMYrcltM2Jj4oxVByh5pkp677OYUHTEHW70=
        let header = "SharedAccessSignature sr=mydps.azure-devices-provisioning.net&sig=%2B5V0HFPIoMYrcltM2Jj4oxVByh5pkp677OYUHTEHW70%3D&se=1700000000&skn=provisioningserviceowner";
        let p = policies();
        assert!(validate(header, &p, HOST, "/enrollments/x", 1_699_999_999).is_ok());
        assert_eq!(
            token(HOST, "provisioningserviceowner", KEY, 1_700_000_000),
            header
        );
    }

    #[test]
    fn rejections() {
        let p = policies();
        let good = token(HOST, "provisioningserviceowner", KEY, 2_000);
        assert_eq!(
            validate(&good, &p, HOST, "/", 2_000).unwrap_err(),
            Rejection::Expired
        );
        let other = token(
            "other.azure-devices-provisioning.net",
            "provisioningserviceowner",
            KEY,
            2_000,
        );
        assert_eq!(
            validate(&other, &p, HOST, "/", 1).unwrap_err(),
            Rejection::WrongAudience
        );
        let unknown = token(HOST, "nobody", KEY, 2_000);
        assert_eq!(
            validate(&unknown, &p, HOST, "/", 1).unwrap_err(),
            Rejection::UnknownPolicy
        );
        let wrong_key = token(
            HOST,
            "provisioningserviceowner",
            &STANDARD.encode([1u8; 32]),
            2_000,
        );
        assert_eq!(
            validate(&wrong_key, &p, HOST, "/", 1).unwrap_err(),
            Rejection::BadSignature
        );
        assert_eq!(
            validate("Bearer x", &p, HOST, "/", 1).unwrap_err(),
            Rejection::Malformed
        );
    }

    #[test]
    fn secondary_key_is_accepted() {
        let p = policies();
        let t = token(HOST, "provisioningserviceowner", &p[0].secondary_key, 2_000);
        assert!(validate(&t, &p, HOST, "/", 1).is_ok());
    }
}
