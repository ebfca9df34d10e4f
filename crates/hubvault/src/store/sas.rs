//! Azure Storage account-key signing: Shared Key request signatures and container SAS tokens.
//!
//! The official SDK signs with Entra or takes a ready SAS, but cannot sign with an account key
//! (Azurite's `devstoreaccount1`, or a staging account reached by key), and `azure_storage_sas`
//! only does user-delegation SAS. So this module signs requests (Shared Key, used by the
//! pipeline policy in `store::azure`) and mints least-privilege **service SAS for a container**
//! (`sr=c`), which is what IoT Hub import/export jobs take. A token shows itself only through
//! [`crate::redact`].
//!
//! Must not: do I/O or read the clock (`start`/`expiry` are parameters).

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use url::Url;

use super::{Error, Result};

/// Signed version of the SAS tokens we mint (the layout below is the one for >= 2020-12-06).
pub const SAS_VERSION: &str = "2022-11-02";
/// Azurite's well-known development account and key (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const ISO8601Z: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
const RFC1123: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// An `x-ms-date` value.
#[allow(
    clippy::expect_used,
    reason = "an OffsetDateTime supplies every component of the description and a String takes any output, so formatting cannot fail"
)]
pub fn rfc1123(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(RFC1123)
        .expect("RFC 1123 formats every date")
}

/// A storage account name and its key (secret; `Debug` redacts the key).
#[derive(Clone)]
pub struct SharedKey {
    pub account: String,
    key: Vec<u8>,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// SAS permission letters, least privilege: ask only for what the job needs.
// One bool per letter mirrors the `sp` field; an enum set would hide nothing here.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SasPermissions {
    pub read: bool,
    pub add: bool,
    pub create: bool,
    pub write: bool,
    pub delete: bool,
    pub list: bool,
}

impl SasPermissions {
    /// Export output container: the hub writes, reads back and deletes (docs/azure.md).
    pub fn export_output() -> Self {
        SasPermissions {
            read: true,
            write: true,
            delete: true,
            ..Self::default()
        }
    }
    /// Import input container: the hub only reads.
    pub fn import_input() -> Self {
        SasPermissions {
            read: true,
            ..Self::default()
        }
    }
    /// Import output container (`importErrors.log`): like an export.
    pub fn import_output() -> Self {
        Self::export_output()
    }
    /// Everything a store needs (tests; a hand-made SAS for `--store`).
    pub fn all() -> Self {
        SasPermissions {
            read: true,
            add: true,
            create: true,
            write: true,
            delete: true,
            list: true,
        }
    }

    /// The `sp` value, letters in the order the service requires (`racwdl`).
    pub fn letters(&self) -> String {
        [
            (self.read, 'r'),
            (self.add, 'a'),
            (self.create, 'c'),
            (self.write, 'w'),
            (self.delete, 'd'),
            (self.list, 'l'),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect()
    }
}

/// A SAS query string (`sv=…&sig=…`): a secret, redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken(String);

impl SasToken {
    /// Wrap a SAS query string someone else made (`sv=…&sig=…`, no leading `?`).
    pub fn from_query(query: &str) -> Self {
        SasToken(query.trim_start_matches('?').to_owned())
    }

    /// The raw query string, to put on the wire (never in messages).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `container_url` with this SAS as its query (a URL the hub or a client can use).
    pub fn on(&self, container_url: &Url) -> Url {
        let mut u = container_url.clone();
        u.set_query(Some(&self.0));
        u
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SasToken({})", crate::redact::redact(&self.0))
    }
}

impl fmt::Display for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::redact(&self.0))
    }
}

impl SharedKey {
    pub fn new(account: &str, key_b64: &str) -> Result<Self> {
        let key = B64.decode(key_b64.trim()).map_err(|_| Error::Backend {
            store: format!("account {account}"),
            detail:
                "AccountKey is not base64; copy it again from the storage account's access keys"
                    .into(),
        })?;
        Ok(SharedKey {
            account: account.to_owned(),
            key,
        })
    }

    #[allow(
        clippy::expect_used,
        reason = "HMAC accepts keys of any length, new_from_slice never fails"
    )]
    fn hmac_b64(&self, s: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(s.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// The Shared Key string to sign. `headers` have lower-case names; `content_length` is the
    /// body length (0 is signed as empty). The canonical resource uses the path exactly as sent
    /// (the SDK sends `/` in blob names as `%2F`; Azurite agrees).
    pub fn string_to_sign(
        &self,
        method: &str,
        url: &Url,
        headers: &BTreeMap<String, String>,
        content_length: Option<u64>,
    ) -> String {
        let h = |n: &str| headers.get(n).map_or("", String::as_str);
        let len = match content_length {
            Some(0) | None => String::new(),
            Some(n) => n.to_string(),
        };
        let standard = [
            h("content-encoding"),
            h("content-language"),
            len.as_str(),
            h("content-md5"),
            h("content-type"),
            h("date"),
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
        ];
        let mut s = format!("{method}\n");
        for part in standard {
            s.push_str(part);
            s.push('\n');
        }
        for (k, v) in headers.iter().filter(|(k, _)| k.starts_with("x-ms-")) {
            let _ = writeln!(s, "{k}:{}", v.trim());
        }
        let _ = write!(s, "/{}{}", self.account, url.path());
        let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in url.query_pairs() {
            query
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.into_owned());
        }
        for (k, mut values) in query {
            values.sort();
            let _ = write!(s, "\n{k}:{}", values.join(","));
        }
        s
    }

    /// The `Authorization` header for a string to sign.
    pub fn authorization(&self, string_to_sign: &str) -> String {
        format!(
            "SharedKey {}:{}",
            self.account,
            self.hmac_b64(string_to_sign)
        )
    }

    /// A service SAS for one container (`sr=c`), valid from `start` to `expiry`.
    pub fn container_sas(
        &self,
        container: &str,
        perms: SasPermissions,
        start: OffsetDateTime,
        expiry: OffsetDateTime,
    ) -> SasToken {
        #[allow(
            clippy::expect_used,
            reason = "an OffsetDateTime supplies every component of the description and a String takes any output, so formatting cannot fail"
        )]
        let fmt = |t: OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC)
                .format(ISO8601Z)
                .expect("ISO 8601 formats every date")
        };
        let (st, se, sp) = (fmt(start), fmt(expiry), perms.letters());
        let resource = format!("/blob/{}/{container}", self.account);
        // sp, st, se, canonicalizedResource, si, sip, spr, sv, sr, snapshot, ses, rscc, rscd, rsce, rscl, rsct
        let fields = [
            sp.as_str(),
            &st,
            &se,
            &resource,
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ];
        let sig = self.hmac_b64(&fields.join("\n"));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sv", SAS_VERSION)
            .append_pair("st", &st)
            .append_pair("se", &se)
            .append_pair("sr", "c")
            .append_pair("sp", &sp)
            .append_pair("sig", &sig)
            .finish();
        SasToken(query)
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

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    #[test]
    fn permission_letters_are_ordered_and_least_privilege() {
        assert_eq!(SasPermissions::export_output().letters(), "rwd");
        assert_eq!(SasPermissions::import_input().letters(), "r");
        assert_eq!(SasPermissions::all().letters(), "racwdl");
    }

    #[test]
    fn container_sas_has_the_service_sas_shape() {
        let key = SharedKey::new(AZURITE_ACCOUNT, AZURITE_KEY).unwrap();
        let sas = key.container_sas(
            "staging",
            SasPermissions::export_output(),
            at(1_700_000_000),
            at(1_700_021_600),
        );
        let pairs: BTreeMap<_, _> = url::form_urlencoded::parse(sas.expose().as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs["sv"], SAS_VERSION);
        assert_eq!(pairs["sr"], "c");
        assert_eq!(pairs["sp"], "rwd");
        assert_eq!(pairs["st"], "2023-11-14T22:13:20Z");
        assert_eq!(pairs["se"], "2023-11-15T04:13:20Z");
        // The signature is the HMAC of the documented 16-field layout.
        let sts = [
            "rwd",
            "2023-11-14T22:13:20Z",
            "2023-11-15T04:13:20Z",
            "/blob/devstoreaccount1/staging",
            "",
            "",
            "",
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        assert_eq!(pairs["sig"], key.hmac_b64(&sts));
    }

    #[test]
    fn sas_token_and_key_never_print_secrets() {
        let key = SharedKey::new(AZURITE_ACCOUNT, AZURITE_KEY).unwrap();
        let sas = key.container_sas("c", SasPermissions::all(), at(0), at(3600));
        let sig: String = url::form_urlencoded::parse(sas.expose().as_bytes())
            .find(|(k, _)| k == "sig")
            .unwrap()
            .1
            .into_owned();
        for text in [format!("{sas:?}"), sas.to_string(), format!("{key:?}")] {
            assert!(
                !text.contains(&sig) && !text.contains("Eby8vdM02x"),
                "{text}"
            );
        }
        assert!(sas.to_string().contains("sig=<redacted>"));
    }

    #[test]
    fn shared_key_string_to_sign_layout() {
        let key = SharedKey::new(AZURITE_ACCOUNT, AZURITE_KEY).unwrap();
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c/a%2Fb?comp=block&blockid=QQ%3D%3D",
        )
        .unwrap();
        let headers: BTreeMap<String, String> = [
            ("x-ms-version", "2026-04-06"),
            ("x-ms-date", "D"),
            ("range", "bytes=0-9"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let sts = key.string_to_sign("PUT", &url, &headers, Some(5));
        assert_eq!(
            sts,
            "PUT\n\n\n5\n\n\n\n\n\n\n\nbytes=0-9\nx-ms-date:D\nx-ms-version:2026-04-06\n/devstoreaccount1/devstoreaccount1/c/a%2Fb\nblockid:QQ==\ncomp:block"
        );
    }
}
