//! A device's own X.509 certificate, given for a probe (`drill --x509-cert [DEVICE=]FILE`): the
//! device authenticates with it in the TLS handshake and sends without a token, as the device
//! SDKs' HTTPS transport does (docs/azure.md, "X.509 devices").
//!
//! The snapshot holds only an X.509 device's thumbprints, never its private key, so a drill can
//! act as such a device only with a certificate the user gives. Without a device id, the
//! certificate names its device by thumbprint: the SHA-1 or SHA-256 of its DER, the two forms a
//! device's `x509Thumbprint` may hold.
//!
//! Owns: reading the PEM (certificate chain and private key, in one file or the key beside it),
//! the thumbprints, the HTTP client that presents it. Must not: keep the private key anywhere
//! but inside that client, or print it.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use base64::Engine as _;
use rustls_pki_types::pem::{self, SectionKind};
use zeroize::Zeroizing;

use crate::diagnostic::{Diagnostic, fix_text};

#[derive(Debug, thiserror::Error)]
#[error("X.509 certificate {file}: {reason}. {}", fix_text(self))]
pub struct Error {
    pub file: String,
    pub reason: String,
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        "x509_certificate"
    }

    fn fix(&self) -> Option<String> {
        Some(
            "give --x509-cert [DEVICE=]FILE, where FILE is a PEM file holding the device's \
             certificate and its private key (or the key in FILE's name with the extension .key \
             beside it); DEVICE names the device when its thumbprint is not the certificate's"
                .to_owned(),
        )
    }
}

/// A loaded device certificate and the client that presents it.
pub struct DeviceCertificate {
    /// The file it was read from (shown; never its content).
    pub file: PathBuf,
    /// The device named with `DEVICE=`; `None`: the device whose thumbprint it is.
    pub device: Option<String>,
    /// Upper-case hex SHA-1 and SHA-256 of the leaf certificate's DER.
    pub sha1: String,
    pub sha256: String,
    /// An HTTP client presenting this certificate (its private key lives only here).
    pub http: reqwest::Client,
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceCertificate({}, sha1 {}, key redacted)",
            self.file.display(),
            self.sha1
        )
    }
}

impl DeviceCertificate {
    /// Whether `thumbprint` (hex, any case, `:` separators allowed) is this certificate's.
    pub fn matches(&self, thumbprint: &str) -> bool {
        let t: String = thumbprint
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_uppercase();
        !t.is_empty() && (t == self.sha1 || t == self.sha256)
    }

    /// The certificate as the user named it: `FILE` or `DEVICE=FILE`.
    pub fn label(&self) -> String {
        match &self.device {
            Some(d) => format!("{d}={}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// `[DEVICE=]FILE`: a device id may itself hold `=`, and so may a path, so the split is at the
/// first `=` after which an existing file is named; a spec that is an existing file has no device.
pub fn parse_spec(spec: &str) -> (Option<String>, PathBuf) {
    if Path::new(spec).is_file() {
        return (None, PathBuf::from(spec));
    }
    for (at, _) in spec.match_indices('=') {
        let (device, file) = (&spec[..at], &spec[at.saturating_add(1)..]);
        if !device.is_empty() && Path::new(file).is_file() {
            return (Some(device.to_owned()), PathBuf::from(file));
        }
    }
    match spec.split_once('=') {
        Some((d, f)) if !d.is_empty() => (Some(d.to_owned()), PathBuf::from(f)),
        _ => (None, PathBuf::from(spec)),
    }
}

/// Read `[DEVICE=]FILE` and build a client presenting it on top of `builder` (which carries the
/// hub's trust roots).
pub fn load(spec: &str, builder: reqwest::ClientBuilder) -> Result<DeviceCertificate, Error> {
    let (device, file) = parse_spec(spec);
    let fail = |reason: String| Error {
        file: file.display().to_string(),
        reason,
    };
    let text = read(&file).map_err(&fail)?;
    let mut sections = sections(&text).map_err(&fail)?;
    if !sections.iter().any(|(k, _)| is_key(*k)) {
        let beside = file.with_extension("key");
        let key_text = read(&beside).map_err(|e| {
            fail(format!(
                "it holds no private key, and none was found beside it ({e})"
            ))
        })?;
        sections.extend(
            sections_of(&key_text)
                .map_err(|e| fail(format!("{}: {e}", beside.display())))?
                .into_iter()
                .filter(|(k, _)| is_key(*k)),
        );
    }
    let leaf = sections
        .iter()
        .find(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| der.clone())
        .ok_or_else(|| fail("it holds no CERTIFICATE section".to_owned()))?;
    let identity_pem = identity_pem(&sections)
        .ok_or_else(|| fail("no private key (PRIVATE KEY, RSA or EC) was found".to_owned()))?;
    let identity = reqwest::Identity::from_pem(identity_pem.as_bytes())
        .map_err(|e| fail(format!("the certificate or key is not usable: {e}")))?;
    let http = builder
        .identity(identity)
        .build()
        .map_err(|e| fail(format!("cannot build a client presenting it: {e}")))?;
    Ok(DeviceCertificate {
        file,
        device,
        sha1: hex(digest(&SHA1_FOR_LEGACY_USE_ONLY, &leaf).as_ref()),
        sha256: hex(digest(&SHA256, &leaf).as_ref()),
        http,
    })
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

type Sections = Vec<(SectionKind, Zeroizing<Vec<u8>>)>;

fn sections(text: &[u8]) -> Result<Sections, String> {
    let found = sections_of(text)?;
    if found.is_empty() {
        return Err("it is not a PEM file (no -----BEGIN … ----- section)".to_owned());
    }
    Ok(found)
}

/// The certificates and private keys of a PEM text, in order; other sections are skipped.
fn sections_of(text: &[u8]) -> Result<Sections, String> {
    let mut cursor = Cursor::new(text);
    let mut out = Vec::new();
    // A PEM file of a device certificate holds a handful of sections.
    for _ in 0..64 {
        match pem::from_buf(&mut cursor) {
            Ok(Some((kind, der))) => {
                if kind == SectionKind::Certificate || is_key(kind) {
                    out.push((kind, Zeroizing::new(der)));
                }
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("it is not valid PEM ({e:?})")),
        }
    }
    Ok(out)
}

fn is_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

/// The certificates and the first private key, re-encoded as the one PEM text
/// `reqwest::Identity::from_pem` takes (sections it would refuse, such as `EC PARAMETERS`,
/// are left out).
fn identity_pem(sections: &Sections) -> Option<Zeroizing<String>> {
    let key = sections.iter().find(|(k, _)| is_key(*k))?;
    let mut out = Zeroizing::new(String::new());
    for (kind, der) in sections
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .chain(std::iter::once(key))
    {
        let label = match kind {
            SectionKind::Certificate => "CERTIFICATE",
            SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
            SectionKind::EcPrivateKey => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
        let _ = writeln!(out, "-----BEGIN {label}-----");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        let _ = writeln!(out, "-----END {label}-----");
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn made() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["cam-1".to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
    }

    #[test]
    fn a_pem_with_certificate_and_key_loads_with_its_thumbprints() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = made();
        let file = dir.path().join("cam-1.pem");
        // Extra sections (as `openssl ecparam` writes) are skipped.
        std::fs::write(
            &file,
            format!("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{cert}{key}"),
        )
        .unwrap();
        let loaded = load(file.to_str().unwrap(), builder()).unwrap();
        assert_eq!(loaded.sha1.len(), 40);
        assert_eq!(loaded.sha256.len(), 64);
        assert!(loaded.matches(&loaded.sha1.to_lowercase()));
        assert!(loaded.matches(&loaded.sha256));
        assert!(!loaded.matches(""));
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        assert_eq!(loaded.device, None);
    }

    #[test]
    fn the_key_beside_the_certificate_is_found_and_a_device_can_be_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = made();
        let file = dir.path().join("cam=1.crt");
        std::fs::write(&file, cert).unwrap();
        std::fs::write(dir.path().join("cam=1.key"), key).unwrap();
        let spec = format!("id=with=eq={}", file.display());
        let loaded = load(&spec, builder()).unwrap();
        assert_eq!(loaded.device.as_deref(), Some("id=with=eq"));
        assert_eq!(loaded.file, file);
        assert_eq!(loaded.label(), spec);
    }

    #[test]
    fn a_missing_key_a_missing_file_and_a_non_pem_file_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = made();
        let only_cert = dir.path().join("c.pem");
        std::fs::write(&only_cert, &cert).unwrap();
        let e = load(only_cert.to_str().unwrap(), builder()).unwrap_err();
        assert!(e.to_string().contains("holds no private key"), "{e}");
        let only_key = dir.path().join("k.pem");
        std::fs::write(&only_key, &key).unwrap();
        let e = load(only_key.to_str().unwrap(), builder()).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        assert!(!e.to_string().contains("PRIVATE KEY-----"), "{e}");
        let e = load("dev-1=/nonexistent/x.pem", builder()).unwrap_err();
        assert!(
            e.to_string().contains("cannot read /nonexistent/x.pem"),
            "{e}"
        );
        let junk = dir.path().join("j.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = load(junk.to_str().unwrap(), builder()).unwrap_err();
        assert!(e.to_string().contains("not a PEM file"), "{e}");
        assert_eq!(e.code(), "x509_certificate");
    }
}
