//! Blob containers that import/export jobs read and write: Azure Blob REST through the
//! container SAS URI the job was given (Azurite in tests), or a `file://` folder (a
//! simulator-only convenience; no real hub can write there).
//!
//! Owns: Put Blob, Put Block + Put Block List for big outputs, Get Blob, and the job-side
//! permission check of docs/azure.md. Must not: show a SAS — errors carry the blob name and the
//! storage error code only, never a URL (`reqwest::Error::without_url`).

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use url::Url;

const X_MS_VERSION: &str = "2021-08-06";
/// Characters escaped in a blob path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the container URI is not a valid http(s):// or file:// URL")]
    BadUri,
    #[error(
        "the container SAS lacks the '{0}' permission the job needs (give r, w and d for outputs, r for inputs)"
    )]
    Permission(char),
    #[error("storage answered HTTP {status} {code} for blob '{blob}'")]
    Status {
        status: u16,
        code: String,
        blob: String,
    },
    #[error("the blob '{0}' does not exist in the container")]
    NotFound(String),
    #[error(
        "the blob name '{0}' is not valid: use '/'-separated names without '.' or '..' segments"
    )]
    BadName(String),
    #[error("storage could not be reached: {0}")]
    Transport(reqwest::Error),
    #[error("the local container folder cannot be used: {0}")]
    Local(std::io::Error),
}

impl BlobError {
    pub fn code(&self) -> &'static str {
        match self {
            BlobError::BadUri => "blob_bad_uri",
            BlobError::Permission(_) => "blob_permission",
            BlobError::Status { .. } => "blob_status",
            BlobError::NotFound(_) => "blob_not_found",
            BlobError::BadName(_) => "blob_bad_name",
            BlobError::Transport(_) => "blob_transport",
            BlobError::Local(_) => "blob_local",
        }
    }
}

fn transport(e: reqwest::Error) -> BlobError {
    BlobError::Transport(e.without_url())
}

/// Send a storage request, retrying transport failures a few times as the real job service
/// does: a pooled keep-alive connection that the storage server closed meanwhile (Node-based
/// Azurite drops idle ones after 5 s) must not fail a whole job. Blob GET and PUT are idempotent.
async fn send(make: impl Fn() -> reqwest::RequestBuilder) -> Result<reqwest::Response, BlobError> {
    const TRIES: u32 = 3;
    let mut attempt = 1;
    loop {
        match make().send().await {
            Ok(resp) => return Ok(resp),
            Err(e) if attempt < TRIES && !e.is_timeout() => {
                tokio::time::sleep(std::time::Duration::from_millis(100).saturating_mul(attempt))
                    .await;
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(transport(e)),
        }
    }
}

/// The file for a blob in a folder container. Blob names use `/` as a virtual folder separator;
/// `.`/`..` segments would leave the container, so they are refused.
fn local_path(dir: &std::path::Path, name: &str) -> Result<PathBuf, BlobError> {
    let mut path = dir.to_path_buf();
    for seg in name.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\') {
            return Err(BlobError::BadName(name.to_string()));
        }
        path.push(seg);
    }
    Ok(path)
}

/// A job's container. `Debug` shows no SAS.
#[derive(Clone)]
pub enum Container {
    File(PathBuf),
    Azure { base: Url, sas: Option<String> },
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Container::File(p) => write!(f, "Container::File({})", p.display()),
            Container::Azure { base, sas } => write!(
                f,
                "Container::Azure({base}, sas: {})",
                if sas.is_some() { "<redacted>" } else { "none" }
            ),
        }
    }
}

impl Container {
    pub fn parse(uri: &str) -> Result<Container, BlobError> {
        let url = Url::parse(uri).map_err(|_| BlobError::BadUri)?;
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(Container::File)
                .map_err(|()| BlobError::BadUri),
            "http" | "https" => {
                let sas = url.query().filter(|q| !q.is_empty()).map(str::to_owned);
                let mut base = url;
                base.set_query(None);
                base.set_fragment(None);
                Ok(Container::Azure { base, sas })
            }
            _ => Err(BlobError::BadUri),
        }
    }

    /// The job-side check of §1.4: a service SAS (`sp`) must hold every letter of `needed`.
    pub fn check_permissions(&self, needed: &str) -> Result<(), BlobError> {
        let Container::Azure { sas: Some(sas), .. } = self else {
            return Ok(());
        };
        let sp = url::form_urlencoded::parse(sas.as_bytes())
            .find(|(k, _)| k == "sp")
            .map(|(_, v)| v.into_owned());
        match sp {
            Some(sp) => needed
                .chars()
                .find(|c| !sp.contains(*c))
                .map_or(Ok(()), |c| Err(BlobError::Permission(c))),
            None => Ok(()),
        }
    }

    fn blob_url(&self, name: &str, extra: &str) -> Result<Url, BlobError> {
        let Container::Azure { base, sas } = self else {
            return Err(BlobError::BadUri);
        };
        let path = name
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        let mut url = base.clone();
        url.set_path(&format!("{}/{path}", base.path().trim_end_matches('/')));
        let query = [extra, sas.as_deref().unwrap_or("")]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("&");
        url.set_query((!query.is_empty()).then_some(query.as_str()));
        Ok(url)
    }

    fn check(resp: reqwest::Response, blob: &str) -> Result<reqwest::Response, BlobError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status == 404 && (code.is_empty() || code == "BlobNotFound") {
            return Err(BlobError::NotFound(blob.to_string()));
        }
        Err(BlobError::Status {
            status,
            code,
            blob: blob.to_string(),
        })
    }

    /// Read a whole blob.
    pub async fn get(&self, http: &reqwest::Client, name: &str) -> Result<Vec<u8>, BlobError> {
        if let Container::File(dir) = self {
            return match tokio::fs::read(local_path(dir, name)?).await {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
                    Err(BlobError::NotFound(name.to_string()))
                }
                Err(e) => Err(BlobError::Local(e)),
            };
        }
        let url = self.blob_url(name, "")?;
        let resp = send(|| http.get(url.clone()).header("x-ms-version", X_MS_VERSION)).await?;
        let resp = Self::check(resp, name)?;
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }

    async fn put(
        &self,
        http: &reqwest::Client,
        name: &str,
        extra: &str,
        body: Vec<u8>,
        block_blob: bool,
    ) -> Result<(), BlobError> {
        let url = self.blob_url(name, extra)?;
        // Put Blob requires Content-Length, and an empty body (an empty `importErrors.log`)
        // goes out without one unless it is set: Azurite then answers 400.
        let body = bytes::Bytes::from(body);
        let resp = send(|| {
            let req = http
                .put(url.clone())
                .header("x-ms-version", X_MS_VERSION)
                .header("content-length", body.len());
            let req = if block_blob {
                req.header("x-ms-blob-type", "BlockBlob")
            } else {
                req
            };
            req.body(body.clone())
        })
        .await?;
        Self::check(resp, name).map(drop)
    }

    /// Start writing a blob (replaced if it exists).
    pub async fn writer(&self, name: &str, block_size: usize) -> Result<BlobWriter, BlobError> {
        let file = match self {
            Container::File(dir) => {
                if !dir.is_dir() {
                    return Err(BlobError::Local(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the container folder does not exist",
                    )));
                }
                let path = local_path(dir, name)?;
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(BlobError::Local)?;
                }
                Some(
                    tokio::fs::File::create(path)
                        .await
                        .map_err(BlobError::Local)?,
                )
            }
            Container::Azure { .. } => None,
        };
        Ok(BlobWriter {
            container: self.clone(),
            name: name.to_string(),
            buf: Vec::new(),
            blocks: Vec::new(),
            block_size: block_size.max(1),
            file,
        })
    }
}

/// Writes one blob: blocks of `block_size` bytes are uploaded as they fill (Put Block) and
/// committed by `finish` (Put Block List); a blob that fits one block is a single Put Blob.
pub struct BlobWriter {
    container: Container,
    name: String,
    buf: Vec<u8>,
    blocks: Vec<String>,
    block_size: usize,
    file: Option<tokio::fs::File>,
}

impl BlobWriter {
    pub async fn write(&mut self, http: &reqwest::Client, bytes: &[u8]) -> Result<(), BlobError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= self.block_size {
            self.flush_block(http).await?;
        }
        Ok(())
    }

    async fn flush_block(&mut self, http: &reqwest::Client) -> Result<(), BlobError> {
        let data = std::mem::take(&mut self.buf);
        if let Some(f) = &mut self.file {
            use tokio::io::AsyncWriteExt as _;
            return f.write_all(&data).await.map_err(BlobError::Local);
        }
        // Block ids must all have the same length within a blob.
        let id = B64.encode(format!("block-{:08}", self.blocks.len()));
        let extra = format!(
            "comp=block&blockid={}",
            utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        );
        self.container
            .put(http, &self.name, &extra, data, false)
            .await?;
        self.blocks.push(id);
        Ok(())
    }

    /// Commit the blob. Must be called: an unfinished writer leaves uncommitted blocks only.
    pub async fn finish(mut self, http: &reqwest::Client) -> Result<(), BlobError> {
        if let Some(mut f) = self.file.take() {
            use tokio::io::AsyncWriteExt as _;
            f.write_all(&self.buf).await.map_err(BlobError::Local)?;
            return f.flush().await.map_err(BlobError::Local);
        }
        if self.blocks.is_empty() {
            let data = std::mem::take(&mut self.buf);
            return self.container.put(http, &self.name, "", data, true).await;
        }
        if !self.buf.is_empty() {
            self.flush_block(http).await?;
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &self.blocks {
            let _ = write!(xml, "<Latest>{id}</Latest>");
        }
        xml.push_str("</BlockList>");
        self.container
            .put(http, &self.name, "comp=blocklist", xml.into_bytes(), false)
            .await
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

    #[test]
    fn sas_is_kept_out_of_debug_and_permissions_are_checked() {
        let c = Container::parse(
            "http://127.0.0.1:10000/devstoreaccount1/bk?sv=2022-11-02&sr=c&sp=rl&sig=SECRETSIG",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("SECRETSIG"));
        assert!(c.check_permissions("r").is_ok());
        let e = c.check_permissions("rwd").unwrap_err();
        assert!(matches!(e, BlobError::Permission('w')));
        assert!(!e.to_string().contains("SECRETSIG"));
        let url = c
            .blob_url("staging/hub a/devices.txt", "comp=block")
            .unwrap();
        assert_eq!(
            url.path(),
            "/devstoreaccount1/bk/staging/hub%20a/devices.txt"
        );
        assert!(url.query().unwrap().starts_with("comp=block&sv="));
    }

    #[test]
    fn folder_blob_names_stay_inside_the_container() {
        let dir = std::path::Path::new("/tmp/c");
        assert_eq!(
            local_path(dir, "a/b/devices.txt").unwrap(),
            dir.join("a").join("b").join("devices.txt")
        );
        for bad in ["../x", "a/../../x", "/abs", "a//b"] {
            assert!(
                matches!(local_path(dir, bad), Err(BlobError::BadName(_))),
                "{bad}"
            );
        }
    }
}
