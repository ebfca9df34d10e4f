//! Use case: diff — what changed between two snapshots' device and module records.
//!
//! Both sides are streams of records sorted by `(id, moduleId)` (the vault's storage order,
//! docs/vault-format.md), so the diff is one merge pass in constant memory: only the current record of each
//! side is held (the report itself grows with the number of *changes*, and [`for_each_change`]
//! avoids even that).
//!
//! A changed record says **which aspects** changed, never the values: keys are compared but never
//! printed, and neither is anything else taken from a record. Volatile fields that change without
//! anyone changing the device (etags, reported properties, `$metadata`/`$version`, activity and
//! connection timestamps) are ignored, so two backups of an untouched registry diff empty.
//!
//! Must not: know where records come from (the snapshot reader feeds it), print.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, fix_text};

/// One record as stored: its key and the exact export line.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub module_id: Option<String>,
    pub line: Vec<u8>,
}

impl Entry {
    /// `id` for a device, `id/moduleId` for a module (device ids cannot contain `/`).
    pub fn key(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.id),
            None => self.id.clone(),
        }
    }

    fn order(&self, other: &Entry) -> Ordering {
        // Byte order, device line (no moduleId) before its modules: the vault's sort order.
        (
            self.id.as_bytes(),
            self.module_id.as_deref().map(str::as_bytes),
        )
            .cmp(&(
                other.id.as_bytes(),
                other.module_id.as_deref().map(str::as_bytes),
            ))
    }
}

impl fmt::Debug for Entry {
    // The line holds device keys: show only the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({:?}, {} bytes)", self.key(), self.line.len())
    }
}

/// Which side of the diff a problem is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "older snapshot",
            Side::New => "newer snapshot",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{side}: records are not sorted by (id, moduleId): {next:?} follows {previous:?}; {}",
        fix_text(self)
    )]
    Unsorted {
        side: Side,
        previous: String,
        next: String,
    },
    #[error(
        "{side}: record {key:?} is not a JSON object ({reason}); {}",
        fix_text(self)
    )]
    BadRecord {
        side: Side,
        key: String,
        reason: String,
    },
    #[error("{side}: cannot read records: {source}")]
    Read {
        side: Side,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Unsorted { .. } => "diff_unsorted",
            Error::BadRecord { .. } => "diff_bad_record",
            Error::Read { .. } => "diff_read",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Unsorted { .. } | Error::BadRecord { .. } => {
                Some("run `hubvault verify --read-data` on it".to_owned())
            }
            Error::Read { .. } => None,
        }
    }
}

/// A part of a record that a person cares about. Order is the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aspect {
    /// Symmetric keys or x509 thumbprints (compared, never shown).
    Keys,
    AuthType,
    /// `status` or `statusReason`.
    Status,
    Tags,
    DesiredProperties,
    Capabilities,
    /// `deviceScope` or `parentScopes` (edge parent/child links).
    Scopes,
    /// Any other non-volatile field, including ones this version does not know.
    Other,
}

impl Aspect {
    pub fn as_str(self) -> &'static str {
        match self {
            Aspect::Keys => "keys",
            Aspect::AuthType => "auth_type",
            Aspect::Status => "status",
            Aspect::Tags => "tags",
            Aspect::DesiredProperties => "desired_properties",
            Aspect::Capabilities => "capabilities",
            Aspect::Scopes => "scopes",
            Aspect::Other => "other",
        }
    }
}

/// One difference between the two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Removed(String),
    Changed(String, Vec<Aspect>),
}

/// Everything that differs, as keys (`id` or `id/moduleId`) and aspect names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<(String, Vec<Aspect>)>,
    pub unchanged: u64,
}

impl DiffReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `{"added", "removed", "changed"}` (arrays of keys, the stable shape), plus `changes` with the
    /// aspects of each changed record and `unchanged` (a count).
    pub fn to_json(&self) -> Value {
        let changes: Vec<Value> = self
            .changed
            .iter()
            .map(|(k, a)| serde_json::json!({"id": k, "aspects": a.iter().map(|x| x.as_str()).collect::<Vec<_>>()}))
            .collect();
        serde_json::json!({
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "changes": changes,
            "unchanged": self.unchanged,
        })
    }
}

/// Diff two sorted record streams into a report.
pub fn compare<A, B, E>(old: A, new: B) -> Result<DiffReport, Error>
where
    A: IntoIterator<Item = Result<Entry, E>>,
    B: IntoIterator<Item = Result<Entry, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut report = DiffReport::default();
    report.unchanged = for_each_change(old, new, |c| match c {
        Change::Added(k) => report.added.push(k),
        Change::Removed(k) => report.removed.push(k),
        Change::Changed(k, a) => report.changed.push((k, a)),
    })?;
    Ok(report)
}

/// Diff two sorted record streams, calling `on_change` for each difference in key order. Returns
/// how many records are unchanged.
pub fn for_each_change<A, B, E>(
    old: A,
    new: B,
    mut on_change: impl FnMut(Change),
) -> Result<u64, Error>
where
    A: IntoIterator<Item = Result<Entry, E>>,
    B: IntoIterator<Item = Result<Entry, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut old = Sorted::new(old.into_iter(), Side::Old);
    let mut new = Sorted::new(new.into_iter(), Side::New);
    let (mut a, mut b) = (old.next()?, new.next()?);
    let mut unchanged = 0;
    loop {
        let ord = match (&a, &b) {
            (None, None) => return Ok(unchanged),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.order(y),
        };
        match ord {
            Ordering::Less => {
                on_change(Change::Removed(
                    a.as_ref().map(Entry::key).unwrap_or_default(),
                ));
                a = old.next()?;
            }
            Ordering::Greater => {
                on_change(Change::Added(
                    b.as_ref().map(Entry::key).unwrap_or_default(),
                ));
                b = new.next()?;
            }
            Ordering::Equal => {
                let (x, y) = (
                    a.take().unwrap_or_else(|| unreachable!()),
                    b.take().unwrap_or_else(|| unreachable!()),
                );
                let aspects = changed_aspects(&x, &y)?;
                if aspects.is_empty() {
                    #[allow(
                        clippy::arithmetic_side_effects,
                        reason = "one per record read; 2^64 records cannot be read"
                    )]
                    {
                        unchanged += 1;
                    }
                } else {
                    on_change(Change::Changed(x.key(), aspects));
                }
                a = old.next()?;
                b = new.next()?;
            }
        }
    }
}

/// An input stream that checks it is strictly increasing (sorted, no duplicates).
struct Sorted<I> {
    inner: I,
    side: Side,
    previous: Option<(String, Option<String>)>,
}

impl<I, E> Sorted<I>
where
    I: Iterator<Item = Result<Entry, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(inner: I, side: Side) -> Self {
        Sorted {
            inner,
            side,
            previous: None,
        }
    }

    fn next(&mut self) -> Result<Option<Entry>, Error> {
        let Some(item) = self.inner.next() else {
            return Ok(None);
        };
        let entry = item.map_err(|e| Error::Read {
            side: self.side,
            source: e.into(),
        })?;
        if let Some((id, module_id)) = &self.previous {
            let prev = Entry {
                id: id.clone(),
                module_id: module_id.clone(),
                line: Vec::new(),
            };
            if prev.order(&entry) != Ordering::Less {
                return Err(Error::Unsorted {
                    side: self.side,
                    previous: prev.key(),
                    next: entry.key(),
                });
            }
        }
        self.previous = Some((entry.id.clone(), entry.module_id.clone()));
        Ok(Some(entry))
    }
}

/// Top-level fields that change without anyone changing the device (or are import-only).
const VOLATILE: &[&str] = &[
    "eTag",
    "etag",
    "twinETag",
    "version",
    "statusUpdateTime",
    "lastActivityTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "cloudToDeviceMessageCount",
    "generationId",
    "importMode",
];

/// Twin metadata, volatile wherever it appears (inside tags and desired properties too).
const VOLATILE_ANYWHERE: &[&str] = &["$metadata", "$version"];

fn changed_aspects(old: &Entry, new: &Entry) -> Result<Vec<Aspect>, Error> {
    if old.line == new.line {
        return Ok(Vec::new());
    }
    let a = parse(old, Side::Old)?;
    let b = parse(new, Side::New)?;
    let mut aspects: Vec<Aspect> = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for field in keys {
        if a.get(field) == b.get(field) {
            continue;
        }
        match field.as_str() {
            "authentication" => authentication_aspects(a.get(field), b.get(field), &mut aspects),
            "properties" => aspects.push(Aspect::DesiredProperties),
            "status" | "statusReason" => aspects.push(Aspect::Status),
            "tags" => aspects.push(Aspect::Tags),
            "capabilities" => aspects.push(Aspect::Capabilities),
            "deviceScope" | "parentScopes" => aspects.push(Aspect::Scopes),
            _ => aspects.push(Aspect::Other),
        }
    }
    aspects.sort_unstable();
    aspects.dedup();
    Ok(aspects)
}

fn authentication_aspects(a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Aspect>) {
    let part =
        |v: Option<&Value>, name: &str| v.and_then(|v| v.get(name)).cloned().unwrap_or(Value::Null);
    if part(a, "type") != part(b, "type") {
        out.push(Aspect::AuthType);
    }
    if part(a, "symmetricKey") != part(b, "symmetricKey")
        || part(a, "x509Thumbprint") != part(b, "x509Thumbprint")
    {
        out.push(Aspect::Keys);
    }
    // `authentication: null` vs an object with only nulls is no change to report; anything else is.
    let known = ["type", "symmetricKey", "x509Thumbprint"];
    let rest = |v: Option<&Value>| -> Map<String, Value> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !known.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    if rest(a) != rest(b) {
        out.push(Aspect::Other);
    }
}

/// Parse a record and drop what is volatile: the top-level fields above, reported properties, and
/// `$metadata`/`$version` at any depth. Error reasons carry positions, never record contents.
fn parse(entry: &Entry, side: Side) -> Result<Map<String, Value>, Error> {
    let bad = |reason: String| Error::BadRecord {
        side,
        key: entry.key(),
        reason,
    };
    let value: Value = serde_json::from_slice(&entry.line)
        .map_err(|e| bad(format!("invalid JSON at column {}", e.column())))?;
    let Value::Object(mut map) = value else {
        return Err(bad("not an object".into()));
    };
    map.retain(|k, _| !VOLATILE.contains(&k.as_str()));
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        props.remove("reported");
    }
    strip_metadata(&mut map);
    Ok(map)
}

fn strip_metadata(map: &mut Map<String, Value>) {
    map.retain(|k, _| !VOLATILE_ANYWHERE.contains(&k.as_str()));
    for v in map.values_mut() {
        match v {
            Value::Object(m) => strip_metadata(m),
            Value::Array(items) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(strip_metadata),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
