//! The export job's work: write `devices.txt` (device lines, then each device's module lines,
//! §3.1) and optionally `configurations.txt` (§3.2) through the job's container.
//!
//! The registry is read in chunks under short locks, so a 1M-device export never blocks the
//! data plane for long; devices written later may reflect later writes, as with the service.

use std::sync::Arc;

use serde_json::Value;

use super::blob::Container;
use super::state::{Hub, lock};
use super::wire::{export_device_line, export_module_line};
use super::work::{JobEnd, Progress, storage_failure};

/// Lines for up to `n` devices after `cursor`, and the new cursor.
fn next_lines(
    hub: &Hub,
    cursor: Option<&str>,
    n: usize,
    keys: bool,
    skip: &mut u32,
) -> (String, usize, Option<Box<str>>) {
    use std::ops::Bound;
    let reg = lock(&hub.registry);
    let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = String::new();
    let mut last = None;
    let mut count = 0_usize;
    for (id, d) in reg
        .devices
        .range::<str, _>((start, Bound::Unbounded))
        .take(n)
    {
        if *skip > 0 {
            // The `export_skip_devices` fault: this device is lost from the export.
            *skip = skip.saturating_sub(1);
            last = Some(id.clone());
            count = count.saturating_add(1);
            continue;
        }
        out.push_str(&export_device_line(id, d, keys));
        out.push('\n');
        for m in d.modules() {
            out.push_str(&export_module_line(id, m, keys));
            out.push('\n');
        }
        last = Some(id.clone());
        count = count.saturating_add(1);
    }
    (out, count, last)
}

pub async fn run(hub: &Arc<Hub>, request: &Value, progress: &mut Progress) -> Result<(), JobEnd> {
    let uri = request["outputBlobContainerUri"]
        .as_str()
        .unwrap_or_default();
    let container =
        Container::parse(uri).map_err(|e| storage_failure("output blob container", &e))?;
    container
        .check_permissions("rwd")
        .map_err(|e| storage_failure("output blob container", &e))?;
    let keys = !request["excludeKeysInExport"].as_bool().unwrap_or(false);
    let name = request["outputBlobName"].as_str().unwrap_or("devices.txt");
    let (block_size, warning) = {
        let l = lock(&hub.limits);
        (l.block_size, l.export_warning.clone())
    };
    progress.set_total(lock(&hub.registry).devices.len());
    let http = &hub.http;
    let mut writer = container
        .writer(name, block_size)
        .await
        .map_err(|e| storage_failure("output blob container", &e))?;
    if let Some(w) = warning {
        writer
            .write(http, format!("{w}\n").as_bytes())
            .await
            .map_err(|e| storage_failure("output blob", &e))?;
    }
    let mut skip = std::mem::take(&mut lock(&hub.faults).export_skip_devices);
    let mut cursor: Option<Box<str>> = None;
    loop {
        let (text, count, last) =
            next_lines(hub, cursor.as_deref(), progress.chunk(), keys, &mut skip);
        if count == 0 {
            break;
        }
        writer
            .write(http, text.as_bytes())
            .await
            .map_err(|e| storage_failure("output blob", &e))?;
        cursor = last;
        progress.advance(count).await?;
    }
    writer
        .finish(http)
        .await
        .map_err(|e| storage_failure("output blob", &e))?;
    if request["includeConfigurations"].as_bool().unwrap_or(false) {
        let name = request["configurationsBlobName"]
            .as_str()
            .unwrap_or("configurations.txt");
        let text = lock(&hub.registry).configuration_lines();
        let mut w = container
            .writer(name, block_size)
            .await
            .map_err(|e| storage_failure("output blob container", &e))?;
        w.write(http, text.as_bytes())
            .await
            .map_err(|e| storage_failure("configurations blob", &e))?;
        w.finish(http)
            .await
            .map_err(|e| storage_failure("configurations blob", &e))?;
    }
    Ok(())
}
