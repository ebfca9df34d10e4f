//! What the registry stores per device and module, packed for memory: 1M devices must fit in
//! a few hundred MB. Keys that are canonical base64 of 32 bytes (all generated keys, and what
//! the service generates) live inline as bytes; the three twin documents share one allocation.
//!
//! Must not: know HTTP or import rules. `Debug` of a key never shows it.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde_json::Value;

/// A symmetric key as given (base64 text), stored compactly. Re-encodes to exactly the text it
/// was made from, so exports return keys verbatim.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    Bytes32([u8; 32]),
    Text(Box<str>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn new(b64: &str) -> Key {
        if let Ok(bytes) = B64.decode(b64)
            && let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
            && B64.encode(arr) == b64
        {
            return Key::Bytes32(arr);
        }
        Key::Text(b64.into())
    }

    pub fn random() -> Key {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Key::Bytes32(b)
    }

    /// The base64 text.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Key::Bytes32(b) => Cow::Owned(B64.encode(b)),
            Key::Text(t) => Cow::Borrowed(t),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::new(s)
    }
}

/// Device or module authentication, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Sas {
        primary: Key,
        secondary: Key,
    },
    SelfSigned {
        primary: Box<str>,
        secondary: Option<Box<str>>,
    },
    CertificateAuthority,
    None,
}

impl Auth {
    pub fn type_name(&self) -> &'static str {
        match self {
            Auth::Sas { .. } => "sas",
            Auth::SelfSigned { .. } => "selfSigned",
            Auth::CertificateAuthority => "certificateAuthority",
            Auth::None => "none",
        }
    }

    /// A SAS auth with two fresh random 32-byte keys, as the service generates when keys are omitted.
    pub fn generated_sas() -> Auth {
        Auth::Sas {
            primary: Key::random(),
            secondary: Key::random(),
        }
    }
}

/// Twin state. `docs` holds tags, desired and reported JSON texts back to back (an empty slice
/// means `{}`), split at `tags_end` and `desired_end`.
#[derive(Clone, Debug, Default)]
pub struct Twin {
    pub version: u64,
    docs: Box<str>,
    tags_end: u32,
    desired_end: u32,
    pub desired_version: u32,
    pub reported_version: u32,
    /// Unix seconds of the last desired write (for `$metadata.$lastUpdated`).
    pub updated: i64,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl Twin {
    pub fn new(now: i64) -> Twin {
        Twin {
            version: 1,
            desired_version: 1,
            reported_version: 1,
            updated: now,
            ..Twin::default()
        }
    }

    /// Twin etag: base64 of the 8-byte big-endian version (`AAAAAAAAAAE=`), as the service writes it.
    pub fn etag(&self) -> String {
        B64.encode(self.version.to_be_bytes())
    }

    pub fn matches(&self, if_match: Option<&str>) -> bool {
        etag_matches(&self.etag(), if_match)
    }

    pub fn tags(&self) -> Option<&str> {
        non_empty(&self.docs[..self.tags_end as usize])
    }

    pub fn desired(&self) -> Option<&str> {
        non_empty(&self.docs[self.tags_end as usize..self.desired_end as usize])
    }

    pub fn reported(&self) -> Option<&str> {
        non_empty(&self.docs[self.desired_end as usize..])
    }

    /// Replace all three documents (`None`: empty).
    pub fn set_docs(&mut self, tags: Option<&str>, desired: Option<&str>, reported: Option<&str>) {
        let (t, d, r) = (
            tags.unwrap_or(""),
            desired.unwrap_or(""),
            reported.unwrap_or(""),
        );
        self.tags_end = u32::try_from(t.len()).unwrap_or(u32::MAX);
        self.desired_end = u32::try_from(t.len().saturating_add(d.len())).unwrap_or(u32::MAX);
        self.docs = [t, d, r].concat().into_boxed_str();
    }

    pub fn set_tags(&mut self, tags: Option<&str>) {
        let (d, r) = (
            self.desired().map(str::to_owned),
            self.reported().map(str::to_owned),
        );
        self.set_docs(tags, d.as_deref(), r.as_deref());
    }

    pub fn set_desired(&mut self, desired: Option<&str>) {
        let (t, r) = (
            self.tags().map(str::to_owned),
            self.reported().map(str::to_owned),
        );
        self.set_docs(t.as_deref(), desired, r.as_deref());
    }

    pub fn set_reported(&mut self, reported: Option<&str>) {
        let (t, d) = (
            self.tags().map(str::to_owned),
            self.desired().map(str::to_owned),
        );
        self.set_docs(t.as_deref(), d.as_deref(), reported);
    }
}

/// Compact JSON of an object, `None` for null/empty. `$metadata`/`$version` are dropped: the
/// simulator generates them.
pub fn compact(v: Option<&Value>) -> Option<String> {
    let obj = v?.as_object()?;
    let kept: serde_json::Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then(|| Value::Object(kept).to_string())
}

/// Parse a stored document back into a map (empty when absent).
pub fn expand(raw: Option<&str>) -> serde_json::Map<String, Value> {
    raw.and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// `If-Match` semantics: absent or `*` matches; otherwise compare without quotes.
pub fn etag_matches(current: &str, if_match: Option<&str>) -> bool {
    match if_match.map(|s| s.trim().trim_matches('"')) {
        None | Some("*") => true,
        Some(given) => given == current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_verbatim_and_never_print() {
        let canonical = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(matches!(Key::new(canonical), Key::Bytes32(_)));
        assert_eq!(Key::new(canonical).text(), canonical);
        let odd = "c2hvcnQta2V5LTE2Ynl0ZXM=";
        assert_eq!(Key::new(odd).text(), odd);
        let auth = Auth::Sas {
            primary: Key::new(canonical),
            secondary: Key::new(odd),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("AAECAw") && !shown.contains("c2hvcnQ"),
            "{shown}"
        );
    }

    #[test]
    fn twin_documents_share_one_buffer() {
        let mut t = Twin::new(0);
        assert_eq!((t.tags(), t.desired(), t.reported()), (None, None, None));
        t.set_docs(Some(r#"{"a":1}"#), None, Some(r#"{"r":2}"#));
        t.set_desired(Some(r#"{"d":3}"#));
        assert_eq!(
            (t.tags(), t.desired(), t.reported()),
            (Some(r#"{"a":1}"#), Some(r#"{"d":3}"#), Some(r#"{"r":2}"#))
        );
        t.set_tags(None);
        assert_eq!((t.tags(), t.desired()), (None, Some(r#"{"d":3}"#)));
    }
}
