//! Credentials for the IoT Hub data plane: connection strings, SAS tokens, Entra tokens.
//!
//! Owns parsing of `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`, the HMAC-SHA256 SAS
//! signature of docs/azure.md, and a small cache that renews a token before it expires. Every type
//! that holds a key redacts it in `Debug`/`Display`. Pure parts take `now` as a parameter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::error::{Error, Result};

/// The Entra scope of the IoT Hub data plane.
pub const IOTHUB_SCOPE: &str = "https://iothubs.azure.net/.default";
/// Default lifetime of the SAS tokens we mint (as the .NET and Python service clients do).
pub const DEFAULT_SAS_TTL: Duration = Duration::from_secs(3600);

/// What `WebUtility.UrlEncode` leaves alone (`-_.` and alphanumerics, plus `~`).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(crate) fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_ENCODE).to_string()
}

/// A parsed IoT Hub (or DPS) service connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub host_name: String,
    pub key_name: String,
    key: String,
}

impl ConnectionString {
    /// Parse by splitting on `;`, then each segment on its **first** `=` (keys end in `=`).
    /// Names match case-insensitively; empty segments (a trailing `;`) are skipped; unknown
    /// names are ignored (e.g. `DeviceId` is rejected separately: not a service string).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidConnectionString {
            reason: reason.to_owned(),
        };
        let (mut host, mut name, mut key) = (None, None, None);
        for seg in s.split(';').map(str::trim).filter(|seg| !seg.is_empty()) {
            let (k, v) = seg.split_once('=').ok_or_else(|| {
                // Never echo the segment: it might be a key pasted without its name.
                bad("a segment has no '='")
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "hostname" => host = Some(v.trim().to_owned()),
                "sharedaccesskeyname" => name = Some(v.trim().to_owned()),
                "sharedaccesskey" => key = Some(v.trim().to_owned()),
                "deviceid" | "moduleid" => {
                    return Err(bad(
                        "this is a device connection string; use a hub policy (e.g. iothubowner)",
                    ));
                }
                _ => {}
            }
        }
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("HostName is missing"))?;
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(
                "HostName has characters other than letters, digits, '-', '_', '.'",
            ));
        }
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("SharedAccessKeyName is missing"))?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_@.".contains(c))
        {
            return Err(bad(
                "SharedAccessKeyName has characters other than letters, digits, '-', '_', '@', '.'",
            ));
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("SharedAccessKey is missing"))?;
        B64.decode(&key)
            .map_err(|_| bad("SharedAccessKey is not base64"))?;
        Ok(ConnectionString {
            host_name: host,
            key_name: name,
            key,
        })
    }

    /// The signer for this policy.
    #[allow(
        clippy::expect_used,
        reason = "parse only keeps a key that decodes as base64, which is all SasSigner::new checks"
    )]
    pub fn signer(&self) -> SasSigner {
        SasSigner::new(&self.key_name, &self.key).expect("key checked as base64 by parse")
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostName={};SharedAccessKeyName={};SharedAccessKey=<redacted>",
            self.host_name, self.key_name
        )
    }
}

/// Signs IoT Hub / DPS SAS tokens with a shared access policy key.
#[derive(Clone)]
pub struct SasSigner {
    key_name: Option<String>,
    key: Vec<u8>,
}

impl fmt::Debug for SasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasSigner")
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SasSigner {
    /// `key_name` is the policy (`skn`); empty for device-scoped tokens. `key_b64` is base64.
    pub fn new(key_name: &str, key_b64: &str) -> Result<Self> {
        let key = B64
            .decode(key_b64.trim())
            .map_err(|_| Error::InvalidConnectionString {
                reason: "SharedAccessKey is not base64".into(),
            })?;
        let key_name = Some(key_name.to_owned()).filter(|n| !n.is_empty());
        Ok(SasSigner { key_name, key })
    }

    /// The base64 HMAC-SHA256 of `urlenc(resource_uri) + "\n" + expiry`.
    #[allow(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length, new_from_slice never fails"
    )]
    pub fn signature(&self, resource_uri: &str, expiry: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{}\n{expiry}", url_encode(resource_uri)).as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// The `Authorization` header value, fields in the order the SDKs write them.
    pub fn token(&self, resource_uri: &str, expiry: i64) -> String {
        let sig = self.signature(resource_uri, expiry);
        let mut t = format!(
            "SharedAccessSignature sr={}&sig={}&se={expiry}",
            url_encode(resource_uri),
            url_encode(&sig)
        );
        if let Some(n) = &self.key_name {
            t.push_str("&skn=");
            t.push_str(&url_encode(n));
        }
        t
    }
}

/// How the client proves who it is.
#[derive(Clone)]
pub enum HubCredential {
    /// A shared access policy key (from a connection string).
    Sas(SasSigner),
    /// An Entra credential (`azure_identity`), scope [`IOTHUB_SCOPE`].
    Entra(Arc<dyn TokenCredential>),
}

impl fmt::Debug for HubCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubCredential::Sas(s) => f.debug_tuple("Sas").field(s).finish(),
            HubCredential::Entra(_) => f.write_str("Entra(<credential>)"),
        }
    }
}

/// A token with its expiry; the header value is a secret.
#[derive(Clone)]
struct CachedToken {
    header: String,
    expires: OffsetDateTime,
}

/// Mints `Authorization` headers and reuses them until shortly before they expire.
pub(crate) struct TokenSource {
    host: String,
    credential: HubCredential,
    ttl: Duration,
    cached: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("host", &self.host)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// Renew when less than this share of the lifetime is left (at most 5 minutes before expiry).
#[allow(clippy::arithmetic_side_effects, reason = "division by the constant 5")]
fn renew_margin(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(300))
}

/// Whether a cached token is still good at `now`.
fn still_valid(expires: OffsetDateTime, ttl: Duration, now: OffsetDateTime) -> bool {
    after(now, renew_margin(ttl)) < expires
}

/// `at + d`, or the end of the calendar when that is later (a very long TTL).
fn after(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    at.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

impl TokenSource {
    pub(crate) fn new(host: &str, credential: HubCredential, ttl: Duration) -> Self {
        TokenSource {
            host: host.to_owned(),
            credential,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The header value to send now (renewed before expiry), and whether it was minted just
    /// now (`false`: reused from the cache).
    pub(crate) async fn header(&self, now: OffsetDateTime) -> Result<(String, bool)> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached
            .as_ref()
            .filter(|t| still_valid(t.expires, self.ttl, now))
        {
            return Ok((t.header.clone(), false));
        }
        let fresh = self.mint(now).await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok((header, true))
    }

    /// Forget the cached token if it is still `used` (a 401 refused it): the next request signs
    /// a fresh one. Another request may have replaced it already; that one is kept.
    pub(crate) async fn invalidate(&self, used: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.header == used) {
            *cached = None;
        }
    }

    async fn mint(&self, now: OffsetDateTime) -> Result<CachedToken> {
        match &self.credential {
            HubCredential::Sas(signer) => {
                let expires = after(now, self.ttl);
                Ok(CachedToken {
                    header: signer.token(&self.host, expires.unix_timestamp()),
                    expires,
                })
            }
            HubCredential::Entra(cred) => {
                let token =
                    cred.get_token(&[IOTHUB_SCOPE], None)
                        .await
                        .map_err(|e| Error::Credential {
                            hub: self.host.clone(),
                            detail: e.to_string(),
                        })?;
                Ok(CachedToken {
                    header: format!("Bearer {}", token.token.secret()),
                    expires: token.expires_on,
                })
            }
        }
    }
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

    #[test]
    fn service_token_matches_contract_vector() {
        let s = SasSigner::new("iothubowner", KEY).unwrap();
        assert_eq!(
            s.signature("myhub.azure-devices.net", 1_700_000_000),
            "iIzEw6hi6GK79RY5jNXO6QeQkSL/Ax4zTmy44X2G1VY="
        );
        assert_eq!(
            s.token("myhub.azure-devices.net", 1_700_000_000),
            "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL%2FAx4zTmy44X2G1VY%3D&se=1700000000&skn=iothubowner"
        );
    }

    #[test]
    fn device_scoped_token_matches_contract_vector() {
        let s = SasSigner::new("", KEY).unwrap();
        assert_eq!(
            s.signature("myhub.azure-devices.net/devices/dev-01", 1_700_000_000),
            "VOvP4VRAE6ohczHZpu6xkF1lbm/lbEIgqyZEPpxC7dI="
        );
        assert!(
            !s.token("myhub.azure-devices.net/devices/dev-01", 1)
                .contains("skn=")
        );
    }

    #[test]
    fn dps_token_matches_contract_vector() {
        let s = SasSigner::new("provisioningserviceowner", KEY).unwrap();
        assert_eq!(
            s.signature("mydps.azure-devices-provisioning.net", 1_700_000_000),
            "+5V0HFPIoMYrcltM2Jj4oxVByh5pkp677OYUHTEHW70="
        );
    }

    #[test]
    fn connection_string_parses_tolerantly() {
        let cs = ConnectionString::parse(&format!(
            " hostname=h.azure-devices.net;;sharedaccesskeyname=iothubowner;SharedAccessKey={KEY};"
        ))
        .unwrap();
        assert_eq!(cs.host_name, "h.azure-devices.net");
        assert_eq!(cs.key_name, "iothubowner");
        assert_eq!(
            cs.signer().signature("x", 1),
            SasSigner::new("iothubowner", KEY)
                .unwrap()
                .signature("x", 1)
        );
    }

    #[test]
    fn connection_string_errors_are_clear_and_never_echo_the_key() {
        let cases = [
            (
                format!("SharedAccessKeyName=a;SharedAccessKey={KEY}"),
                "HostName is missing",
            ),
            (
                format!("HostName=h;SharedAccessKey={KEY}"),
                "SharedAccessKeyName is missing",
            ),
            (
                "HostName=h;SharedAccessKeyName=a".to_owned(),
                "SharedAccessKey is missing",
            ),
            (
                "HostName=h;SharedAccessKeyName=a;SharedAccessKey=%%%notbase64".to_owned(),
                "not base64",
            ),
            (
                "HostName=h;SharedAccessKeyName=a;pastedkeywithoutname".to_owned(),
                "no '='",
            ),
            (
                format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
                "device connection string",
            ),
            (
                format!("HostName=h/x;SharedAccessKeyName=a;SharedAccessKey={KEY}"),
                "HostName has",
            ),
        ];
        for (input, want) in cases {
            let e = ConnectionString::parse(&input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
            assert!(!e.contains("AAECAwQF"), "key leaked: {e}");
        }
    }

    #[test]
    fn connection_string_and_signer_redact_the_key() {
        let cs = ConnectionString::parse(&format!(
            "HostName=h;SharedAccessKeyName=a;SharedAccessKey={KEY}"
        ))
        .unwrap();
        for text in [
            format!("{cs:?}"),
            cs.to_string(),
            format!("{:?}", cs.signer()),
            format!("{:?}", HubCredential::Sas(cs.signer())),
        ] {
            assert!(!text.contains("AAECAwQF"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[tokio::test]
    async fn sas_tokens_are_reused_then_renewed_before_expiry() {
        let src = TokenSource::new(
            "h",
            HubCredential::Sas(SasSigner::new("a", KEY).unwrap()),
            Duration::from_secs(3600),
        );
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let (first, fresh) = src.header(t0).await.unwrap();
        assert!(fresh && first.contains("se=1700003600"));
        assert_eq!(
            src.header(t0 + Duration::from_secs(3000)).await.unwrap(),
            (first.clone(), false),
            "reused from the cache"
        );
        let (renewed, fresh) = src.header(t0 + Duration::from_secs(3400)).await.unwrap();
        assert!(fresh && renewed.contains("se=1700007000"), "{renewed}");

        // A 401 to the token in use drops it; a stale copy does not drop its successor.
        src.invalidate(&first).await;
        assert_eq!(
            src.header(t0 + Duration::from_secs(3401)).await.unwrap(),
            (renewed.clone(), false)
        );
        src.invalidate(&renewed).await;
        let (again, fresh) = src.header(t0 + Duration::from_secs(3402)).await.unwrap();
        assert!(fresh && again.contains("se=1700007002"), "{again}");
    }
}
