//! The manifest (cleartext, no secrets; the commit point of a snapshot) and the header line that
//! starts every encrypted stream, in vault format 2 (written) and 1 (read forever). Field names
//! are fixed (docs/vault-format.md); unknown fields are tolerated so a later writer of the same
//! format can add some. Format 2 adds `generation` and `signer`: its manifest is signed.

use serde::{Deserialize, Serialize};

use super::Error;

/// The format this build writes (signed snapshots, generations).
pub const FORMAT: u64 = 2;
/// The first format (unsigned), still read.
pub const FORMAT_V1: u64 = 1;
/// Object kinds.
pub const DEVICES: &str = "devices";
pub const CONFIGURATIONS: &str = "configurations";
/// A DPS snapshot's individual enrollments (`{"id", "enrollment", "attestation"}` per record).
pub const ENROLLMENTS: &str = "enrollments";
/// A DPS snapshot's enrollment groups (same record shape).
pub const ENROLLMENT_GROUPS: &str = "enrollment-groups";
/// `source.kind` of a DPS snapshot (its `hub` is the DPS host name).
pub const SOURCE_DPS: &str = "dps-query";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u64,
    pub id: String,
    pub hub: String,
    /// RFC 3339, UTC, whole seconds.
    pub created: String,
    pub source: Source,
    pub counts: Counts,
    pub objects: Vec<ObjectEntry>,
    /// age public keys the data objects are sealed to.
    pub recipients: Vec<String>,
    /// Writer, e.g. `hubvault 0.1.0`.
    pub tool: String,
    /// Format 2: the generation this manifest commits (`manifest.g<N>.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Format 2: the writer's public key (`hvsig1…`), covered by the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// What the catalog found about its signature (never stored).
    #[serde(skip)]
    pub trust: super::trust::Trust,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `export-job` or `file`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub devices: u64,
    pub modules: u64,
    pub edge_devices: u64,
    pub configurations: u64,
    pub skipped_lines: u64,
    /// DPS snapshots only (absent from hub snapshots' manifests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enrollments: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enrollment_groups: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// File name inside the snapshot folder, e.g. `devices.jsonl.zst.age`.
    pub name: String,
    /// `devices` or `configurations`.
    pub kind: String,
    /// Bytes as stored (encrypted).
    pub bytes: u64,
    /// sha256 of the stored bytes, lower-case hex.
    pub sha256: String,
    /// Records in the object (header line not counted).
    pub records: u64,
}

impl Manifest {
    /// Parse a manifest read from `name`; a newer format is refused with an upgrade hint.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Manifest, Error> {
        let bad = |detail: String| Error::BadManifest {
            name: name.to_owned(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(FORMAT | FORMAT_V1) => {}
            Some(found) if found > FORMAT => {
                return Err(Error::NewerFormat {
                    name: name.to_owned(),
                    found,
                });
            }
            _ => return Err(bad("\"format\" is missing, or neither 1 nor 2".to_owned())),
        }
        serde_json::from_value(value).map_err(|e| bad(e.to_string()))
    }

    /// Pretty JSON, as stored.
    #[allow(
        clippy::expect_used,
        reason = "derived Serialize over strings, integers, options and vectors: serde_json cannot fail on it"
    )]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        v.push(b'\n');
        v
    }

    /// Stored bytes of all objects.
    pub fn bytes(&self) -> u64 {
        // Saturating: the sizes come from a file, and `sum` would panic on overflow in debug.
        self.objects
            .iter()
            .fold(0, |total: u64, o| total.saturating_add(o.bytes))
    }

    /// Whether this is a snapshot of a DPS instance (its `hub` is the DPS host name).
    pub fn is_dps(&self) -> bool {
        self.source.kind == SOURCE_DPS
    }

    pub fn object(&self, kind: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.kind == kind)
    }

    /// Refuse to read the data of a snapshot whose signature is bad or whose signer is not
    /// trusted: the second line behind the repository's check (`repo::Repository::accept`), in
    /// every reader of data. (Whether an unsigned format 1 snapshot may be read is the caller's
    /// decision, made with `--allow-unsigned`.)
    pub fn check_not_refused(&self) -> Result<(), Error> {
        use super::trust::Trust;
        match &self.trust {
            Trust::BadSignature(_) | Trust::UntrustedSigner(_) => Err(Error::Untrusted {
                hub: self.hub.clone(),
                id: self.id.clone(),
                trust: self.trust.describe(),
                unsigned: false,
            }),
            Trust::Signed(_) | Trust::Unsigned | Trust::Unchecked => Ok(()),
        }
    }
}

/// A format 2 manifest of generation 1 without objects, for tests of what reads manifests.
#[cfg(test)]
pub(crate) fn sample_v2(
    hub: &str,
    id: &str,
    created: &str,
    signer: &crate::keys::Signer,
) -> Manifest {
    Manifest {
        format: FORMAT,
        id: id.into(),
        hub: hub.into(),
        created: created.into(),
        source: Source {
            kind: "file".into(),
            job_id: None,
            path: None,
        },
        counts: Counts::default(),
        objects: vec![],
        recipients: vec!["age1xyz".into()],
        tool: "t".into(),
        generation: Some(1),
        signer: Some(signer.to_string()),
        trust: super::trust::Trust::Unchecked,
    }
}

/// The first line of every encrypted stream. It binds the payload to its snapshot and object
/// (and, from format 2, generation) so a payload cannot be swapped between snapshots, objects or
/// generations unnoticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format of the snapshot (`1`, `2`).
    pub hubvault: u64,
    pub snapshot: String,
    pub hub: String,
    pub object: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl Header {
    /// The header of a format 1 object (kept for tests and old snapshots).
    pub fn new(manifest_id: &str, hub: &str, object: &str, created: &str) -> Self {
        Header {
            hubvault: FORMAT_V1,
            snapshot: manifest_id.into(),
            hub: hub.into(),
            object: object.into(),
            created: created.into(),
            generation: None,
        }
    }

    /// The header `manifest`'s object of `kind` carries (format 1 or 2).
    pub fn for_object(manifest: &Manifest, kind: &str) -> Self {
        Header {
            hubvault: manifest.format,
            snapshot: manifest.id.clone(),
            hub: manifest.hub.clone(),
            object: kind.into(),
            created: manifest.created.clone(),
            generation: manifest.generation,
        }
    }

    /// The header as one line, with its `\n`.
    #[allow(
        clippy::expect_used,
        reason = "derived Serialize over strings and integers: serde_json cannot fail on it"
    )]
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a header serialises");
        v.push(b'\n');
        v
    }

    pub fn parse(line: &[u8]) -> Option<Header> {
        serde_json::from_slice(line).ok()
    }

    /// What differs from the header `manifest` expects for `object`, if anything.
    pub fn mismatch(&self, manifest: &Manifest, object: &str) -> Option<String> {
        let expected = Header::for_object(manifest, object);
        (self != &expected).then(|| {
            format!(
                "header says snapshot {} / hub {} / object {} / created {} / generation {:?}, manifest expects {} / {} / {} / {} / {:?}",
                self.snapshot, self.hub, self.object, self.created, self.generation, expected.snapshot, expected.hub, expected.object, expected.created, expected.generation
            )
        })
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

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            id: "20261126T020000Z-3f9a1c2e".into(),
            hub: "plant-hub".into(),
            created: "2026-11-26T02:00:00Z".into(),
            source: Source {
                kind: "file".into(),
                job_id: None,
                path: Some("devices.txt".into()),
            },
            counts: Counts {
                devices: 2,
                modules: 1,
                edge_devices: 1,
                configurations: 0,
                skipped_lines: 1,
                ..Counts::default()
            },
            objects: vec![ObjectEntry {
                name: "devices.jsonl.zst.age".into(),
                kind: "devices".into(),
                bytes: 10,
                sha256: "ab".into(),
                records: 3,
            }],
            recipients: vec!["age1xyz".into()],
            tool: "hubvault 0.1.0".into(),
            generation: None,
            signer: None,
            trust: crate::snapshot::trust::Trust::Unchecked,
        }
    }

    #[test]
    fn v1_field_names_are_fixed() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let keys = [
            "format",
            "id",
            "hub",
            "created",
            "source",
            "kind",
            "path",
            "counts",
            "devices",
            "modules",
            "edge_devices",
            "configurations",
            "skipped_lines",
            "objects",
            "name",
            "kind",
            "bytes",
            "sha256",
            "records",
            "recipients",
            "tool",
        ];
        let mut at = 0;
        for key in keys {
            let found = text[at..]
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} missing or out of order in {text}"));
            at += found + 1;
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["source"],
            serde_json::json!({"kind": "file", "path": "devices.txt"})
        );
        assert_eq!(
            Manifest::parse(&sample().to_bytes(), "m").unwrap(),
            sample()
        );
    }

    #[test]
    fn v2_adds_generation_and_signer_after_v1s_fields() {
        let mut m = sample();
        m.format = 2;
        m.generation = Some(1);
        m.signer = Some("hvsig1xyz".into());
        let text = String::from_utf8(m.to_bytes()).unwrap();
        let tool = text.find("\"tool\":").unwrap();
        let generation = text.find("\"generation\": 1").unwrap();
        let signer = text.find("\"signer\": \"hvsig1xyz\"").unwrap();
        assert!(tool < generation && generation < signer, "{text}");
        assert!(!text.contains("trust"), "trust is never stored: {text}");
        assert_eq!(Manifest::parse(&m.to_bytes(), "m").unwrap(), m);
        assert!(
            !String::from_utf8(sample().to_bytes())
                .unwrap()
                .contains("generation")
        );
    }

    #[test]
    fn newer_format_says_upgrade() {
        let text = sample().to_bytes();
        let newer = String::from_utf8(text)
            .unwrap()
            .replace("\"format\": 1", "\"format\": 3");
        let err = Manifest::parse(newer.as_bytes(), "hub/x/manifest.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("newer hubvault") && err.contains("upgrade"),
            "{err}"
        );
        assert!(Manifest::parse(b"{}", "m").is_err());
    }

    #[test]
    fn header_binds_snapshot_and_object() {
        let m = sample();
        let h = Header::new(&m.id, &m.hub, DEVICES, &m.created);
        assert_eq!(
            String::from_utf8(h.to_line()).unwrap(),
            "{\"hubvault\":1,\"snapshot\":\"20261126T020000Z-3f9a1c2e\",\"hub\":\"plant-hub\",\"object\":\"devices\",\"created\":\"2026-11-26T02:00:00Z\"}\n"
        );
        assert!(h.mismatch(&m, DEVICES).is_none());
        assert!(h.mismatch(&m, CONFIGURATIONS).is_some());
    }
}
