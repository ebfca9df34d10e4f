//! The import job's work: read `inputBlobName` (default `devices.txt`), apply each line with its
//! `importMode` (§4.2), and write `importErrors.log` (§4.3) — always, empty when nothing failed
//! (UNCERTAIN §12.5; a client must also accept a missing log). Lines fail on their own; the job
//! still completes. Configurations (`includeConfigurations`) are imported with the only mode
//! they have, `createOrUpdateIfMatchETag`, and their errors go to `importConfigErrors.log`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::apply::{ApplyOptions, ImportMode, apply_line, line_mode};
use super::blob::{BlobError, Container};
use super::devices::upsert_configuration;
use super::error::HubError;
use super::state::{Hub, lock, now_secs};
use super::work::{JobEnd, Progress, storage_failure};

fn log_line(e: &HubError) -> String {
    format!(
        "{}\n",
        json!({"errorCode": e.code, "errorStatus": e.message})
    )
}

/// A line the service could not read: 400012 with the line quoted, as in the real log sample.
fn bad_line(line: &str, err: &serde_json::Error) -> HubError {
    HubError::new(
        400_012,
        "DeserializationError",
        format!("Invalid device format in line: {line}. {err}"),
    )
}

/// The input's non-blank lines (BOM stripped). Lines stay text until applied, so a 1M-line
/// import holds the blob once, not a million parsed trees.
fn input_lines(text: &str) -> Vec<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Parse one line, checking duplicates by `(id, moduleId)` against the lines before it (400011).
fn parse_line(l: &str, seen: &mut HashSet<(String, Option<String>)>) -> Result<Value, HubError> {
    let v: Value = serde_json::from_str(l).map_err(|e| bad_line(l, &e))?;
    if !v.is_object() {
        return Err(HubError::new(
            400_012,
            "DeserializationError",
            format!("Invalid device format in line: {l}."),
        ));
    }
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let module = v.get("moduleId").and_then(Value::as_str).map(String::from);
    if !seen.insert((id.clone(), module)) {
        return Err(HubError::new(
            400_011,
            "DeviceDefinedMultipleTimes",
            format!("The device '{id}' is defined multiple times in the input file."),
        ));
    }
    Ok(v)
}

pub async fn run(hub: &Arc<Hub>, request: &Value, progress: &mut Progress) -> Result<(), JobEnd> {
    let input = Container::parse(
        request["inputBlobContainerUri"]
            .as_str()
            .unwrap_or_default(),
    )
    .map_err(|e| storage_failure("input blob container", &e))?;
    let output = Container::parse(
        request["outputBlobContainerUri"]
            .as_str()
            .unwrap_or_default(),
    )
    .map_err(|e| storage_failure("output blob container", &e))?;
    input
        .check_permissions("r")
        .map_err(|e| storage_failure("input blob container", &e))?;
    output
        .check_permissions("rwd")
        .map_err(|e| storage_failure("output blob container", &e))?;
    let http = &hub.http;
    let name = request["inputBlobName"].as_str().unwrap_or("devices.txt");
    let bytes = input
        .get(http, name)
        .await
        .map_err(|e| storage_failure("input blob", &e))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines = input_lines(&text);
    let mut seen = HashSet::new();
    progress.set_total(lines.len());
    let rules = hub.rules();
    let (apply_reported, block_size) = {
        let l = lock(&hub.limits);
        (l.import_reported, l.block_size)
    };
    let opts = ApplyOptions {
        rules,
        apply_reported,
    };
    let mut log = String::new();
    for chunk in lines.chunks(progress.chunk()) {
        {
            let mut reg = lock(&hub.registry);
            let now = now_secs();
            for line in chunk {
                let result = parse_line(line, &mut seen).and_then(|v| {
                    let mut faults = lock(&hub.faults);
                    if faults.drops_import(&v) {
                        return Ok(());
                    }
                    let v = faults.corrupt_key(v);
                    drop(faults);
                    line_mode(&v, ImportMode::CreateOrUpdate)
                        .and_then(|m| apply_line(&mut reg, &v, m, opts, now))
                });
                if let Err(e) = result {
                    log.push_str(&log_line(&e));
                }
            }
        }
        progress.advance(chunk.len()).await?;
    }
    write_blob(hub, &output, "importErrors.log", &log, block_size).await?;
    if request["includeConfigurations"].as_bool().unwrap_or(false) {
        let name = request["configurationsBlobName"]
            .as_str()
            .unwrap_or("configurations.txt");
        match input.get(http, name).await {
            Ok(bytes) => {
                let log = import_configurations(hub, &String::from_utf8_lossy(&bytes));
                write_blob(hub, &output, "importConfigErrors.log", &log, block_size).await?;
            }
            Err(BlobError::NotFound(_)) => {}
            Err(e) => return Err(storage_failure("configurations blob", &e)),
        }
    }
    Ok(())
}

fn import_configurations(hub: &Hub, text: &str) -> String {
    let mut log = String::new();
    let mut reg = lock(&hub.registry);
    let now = time::OffsetDateTime::now_utc();
    for line in text.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        let result = serde_json::from_str::<Value>(line)
            .map_err(|e| bad_line(line, &e))
            .and_then(|mut v| {
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| HubError::argument_null("The configuration id is missing."))?;
                let tag = v.get("etag").and_then(Value::as_str).map(String::from);
                // createOrUpdateIfMatchETag: an etag must match an existing configuration.
                let tag = if reg.configurations.contains_key(&id) {
                    Some(tag.unwrap_or_else(|| "*".into()))
                } else {
                    None
                };
                if let Some(o) = v.as_object_mut() {
                    o.remove("importMode");
                }
                upsert_configuration(&mut reg.configurations, &id, &mut v, tag.as_deref(), now)
                    .map(drop)
            });
        if let Err(e) = result {
            log.push_str(&log_line(&e));
        }
    }
    log
}

async fn write_blob(
    hub: &Hub,
    container: &Container,
    name: &str,
    text: &str,
    block_size: usize,
) -> Result<(), JobEnd> {
    let mut w = container
        .writer(name, block_size)
        .await
        .map_err(|e| storage_failure("output blob container", &e))?;
    w.write(&hub.http, text.as_bytes())
        .await
        .map_err(|e| storage_failure("output blob", &e))?;
    w.finish(&hub.http)
        .await
        .map_err(|e| storage_failure("output blob", &e))
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
    fn bom_blank_bad_and_duplicate_lines() {
        let text = "\u{feff}{\"id\":\"a\"}\n\n{\"id\":\"a\"}\nnot json\n{\"id\":\"a\",\"moduleId\":\"m\"}\r\n";
        let mut seen = HashSet::new();
        let lines: Vec<_> = input_lines(text)
            .into_iter()
            .map(|l| parse_line(l, &mut seen))
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].is_ok());
        assert_eq!(lines[1].as_ref().unwrap_err().code, 400_011);
        assert_eq!(lines[2].as_ref().unwrap_err().code, 400_012);
        assert!(lines[3].is_ok());
    }
}
