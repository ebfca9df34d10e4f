//! SAS token parsing and checking for the simulated hub (docs/azure.md).
//!
//! Owns: splitting a `SharedAccessSignature …` header, recomputing the HMAC, the policy rights
//! model. Pure: the caller passes `now`; nothing here reads a clock or touches the registry.
//! Must not: decide which right an operation needs (see `access`), or log a signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use super::error::HubError;
use super::shared::AccessPolicy;

/// Rights a policy grants, as a small bit set. `RegistryWrite` includes `RegistryRead`, as in
/// Azure (the `iothubowner` listkeys shows "`RegistryWrite`, `ServiceConnect`, `DeviceConnect`").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(u8);

impl Rights {
    pub const REGISTRY_READ: Rights = Rights(1);
    pub const REGISTRY_WRITE: Rights = Rights(2 | 1);
    pub const SERVICE_CONNECT: Rights = Rights(4);
    pub const DEVICE_CONNECT: Rights = Rights(8);
    pub const ALL: Rights = Rights(15);

    pub fn from_names(names: &[String]) -> Rights {
        names.iter().fold(Rights(0), |acc, n| match n.trim() {
            "RegistryRead" => acc.union(Self::REGISTRY_READ),
            "RegistryWrite" => acc.union(Self::REGISTRY_WRITE),
            "ServiceConnect" => acc.union(Self::SERVICE_CONNECT),
            "DeviceConnect" => acc.union(Self::DEVICE_CONNECT),
            _ => acc,
        })
    }

    #[must_use]
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Rights) -> bool {
        self.0 & other.0 != 0
    }
}

/// A parsed SAS token. `Debug` hides the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// URL-decoded resource URI (`hub.azure-devices.net` or `hub…/devices/{id}`).
    pub sr: String,
    sig: String,
    pub se: u64,
    pub skn: Option<String>,
}

impl std::fmt::Debug for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasToken")
            .field("sr", &self.sr)
            .field("se", &self.se)
            .field("skn", &self.skn)
            .field("sig", &"<redacted>")
            .finish()
    }
}

/// Parse the value of an `Authorization` header; `None` when it is not a well-formed SAS token.
pub fn parse(header: &str) -> Option<SasToken> {
    let rest = header.strip_prefix("SharedAccessSignature ")?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in rest.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        let v = percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned();
        match k {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v.parse::<u64>().ok()?),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    Some(SasToken {
        sr: sr?,
        sig: sig?,
        se: se?,
        skn: skn.filter(|s| !s.is_empty()),
    })
}

/// .NET `WebUtility.UrlEncode` keeps these unencoded besides alphanumerics.
const DOTNET_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')');
/// Python `quote_plus(safe='')` keeps these.
const PYTHON_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HMAC-SHA256 of `string_to_sign` with a base64 key, as base64. `None` if the key is not base64.
pub fn sign(key_b64: &str, string_to_sign: &str) -> Option<String> {
    let key = B64.decode(key_b64).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(string_to_sign.as_bytes());
    Some(B64.encode(mac.finalize().into_bytes()))
}

impl SasToken {
    /// True when the signature matches `key_b64`. SDKs differ in how they URL-encode `sr` (upper
    /// or lower hex, which characters stay literal), so every common spelling is tried.
    pub fn signed_with(&self, key_b64: &str) -> bool {
        let Ok(key) = B64.decode(key_b64) else {
            return false;
        };
        let Ok(sig) = B64.decode(&self.sig) else {
            return false;
        };
        let dotnet = utf8_percent_encode(&self.sr, DOTNET_KEEP).to_string();
        let python = utf8_percent_encode(&self.sr, PYTHON_KEEP).to_string();
        let lower = lower_hex(&dotnet);
        [dotnet, python, lower].iter().any(|enc| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
                return false;
            };
            mac.update(format!("{enc}\n{}", self.se).as_bytes());
            mac.verify_slice(&sig).is_ok()
        })
    }

    /// The device id when `sr` is `{host}/devices/{id}` (device- or module-scoped token).
    pub fn device_scope<'a>(&'a self, host: &str) -> Option<&'a str> {
        let rest = strip_host(&self.sr, host)?.strip_prefix("/devices/")?;
        let id = rest.split("/modules/").next().unwrap_or(rest);
        (!id.is_empty()).then_some(id)
    }

    /// True when `sr` names the hub itself.
    pub fn is_for_hub(&self, host: &str) -> bool {
        strip_host(&self.sr, host).is_some_and(|rest| rest.is_empty() || rest == "/")
    }
}

fn strip_host<'a>(sr: &'a str, host: &str) -> Option<&'a str> {
    let sr = sr.strip_prefix("https://").unwrap_or(sr);
    let head = sr.get(..host.len())?;
    head.eq_ignore_ascii_case(host).then(|| &sr[host.len()..])
}

fn lower_hex(s: &str) -> String {
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

/// Check a service (policy) token for the hub: host, expiry, policy, signature. Returns the rights
/// of the policy. `expiry_skew` makes tokens expire early (a fault the control API injects).
pub fn check_service_token(
    token: &SasToken,
    host: &str,
    policies: &[AccessPolicy],
    now_secs: u64,
    expiry_skew: u64,
) -> Result<Rights, HubError> {
    if token.se <= now_secs.saturating_add(expiry_skew) {
        return Err(HubError::unauthorized());
    }
    if !token.is_for_hub(host) && token.device_scope(host).is_none() {
        return Err(HubError::unauthorized());
    }
    let name = token.skn.as_deref().ok_or_else(HubError::unauthorized)?;
    let policy = policies
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(HubError::unauthorized)?;
    if !(token.signed_with(&policy.primary_key) || token.signed_with(&policy.secondary_key)) {
        return Err(HubError::unauthorized());
    }
    Ok(Rights::from_names(&policy.rights))
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

    fn policy(name: &str, rights: &[&str]) -> AccessPolicy {
        AccessPolicy {
            name: name.into(),
            primary_key: KEY.into(),
            secondary_key: "c2Vjb25kYXJ5LWtleS1zZWNvbmRhcnkta2V5LTAwMA==".into(),
            rights: rights.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    #[test]
    fn contract_test_vector_verifies() {
        let header = "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL%2FAx4zTmy44X2G1VY%3D&se=1700000000&skn=iothubowner";
        let t = parse(header).unwrap();
        assert!(t.signed_with(KEY));
        let rights = check_service_token(
            &t,
            "myhub.azure-devices.net",
            &[policy("iothubowner", &["RegistryWrite"])],
            1_600_000_000,
            0,
        )
        .unwrap();
        assert!(rights.contains(Rights::REGISTRY_READ));
        assert!(!format!("{t:?}").contains("iIzEw6"));
    }

    #[test]
    fn device_vector_verifies_and_names_the_device() {
        let t = parse("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-01&sig=VOvP4VRAE6ohczHZpu6xkF1lbm%2FlbEIgqyZEPpxC7dI%3D&se=1700000000").unwrap();
        assert!(t.signed_with(KEY));
        assert_eq!(t.device_scope("myhub.azure-devices.net"), Some("dev-01"));
    }

    #[test]
    fn rejections_are_401002() {
        let p = [policy("iothubowner", &["RegistryWrite"])];
        let ok = "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL%2FAx4zTmy44X2G1VY%3D&se=1700000000&skn=iothubowner";
        let t = parse(ok).unwrap();
        let expired =
            check_service_token(&t, "myhub.azure-devices.net", &p, 1_700_000_000, 0).unwrap_err();
        assert_eq!(expired.code, 401_002);
        let early = check_service_token(&t, "myhub.azure-devices.net", &p, 1_699_999_000, 3600)
            .unwrap_err();
        assert_eq!(early.code, 401_002);
        let host =
            check_service_token(&t, "other.azure-devices.net", &p, 1_600_000_000, 0).unwrap_err();
        assert_eq!(host.code, 401_002);
        let unknown = check_service_token(
            &t,
            "myhub.azure-devices.net",
            &[policy("service", &["ServiceConnect"])],
            1_600_000_000,
            0,
        );
        assert_eq!(unknown.unwrap_err().code, 401_002);
        let tampered = parse(&ok.replace("iIzE", "jIzE")).unwrap();
        assert!(
            check_service_token(&tampered, "myhub.azure-devices.net", &p, 1_600_000_000, 0)
                .is_err()
        );
    }
}
