//! `backup --dps`: every individual enrollment and enrollment group of a DPS instance, with its
//! attestation keys, sealed into a snapshot of its own kind (docs/vault-format.md#dps).
//!
//! A GET or query never returns keys, so each enrollment's keys are read with `POST
//! …/attestationmechanism`. Each record keeps both answers verbatim, as
//! `{"id": …, "enrollment": <the query's item>, "attestation": <the attestation mechanism>}`,
//! and records are sorted by id like every object. The snapshot's `hub` is the DPS host name and
//! its `source.kind` is `dps-query`, so its snapshots list beside hubs' and never mix with them.
//!
//! The records are gathered in memory (the keys never touch local disk), about 1 KB each: a
//! million enrollments hold about 1 GB while they are sealed.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{BackupOptions, BackupReport, Error, Input, write_snapshot};
use crate::dps::{DpsClient, Kind};
use crate::snapshot::Source;
use crate::snapshot::manifest::{ENROLLMENT_GROUPS, ENROLLMENTS, SOURCE_DPS};
use crate::store::Store;

/// Back up the DPS instance behind `client` into `store`, sealed to `recipients`.
pub async fn from_dps(
    store: Arc<dyn Store>,
    client: &DpsClient,
    recipients: &[age::x25519::Recipient],
    options: BackupOptions,
) -> Result<BackupReport, Error> {
    let mut inputs = Vec::new();
    for (kind, object) in [
        (Kind::Individual, ENROLLMENTS),
        (Kind::Group, ENROLLMENT_GROUPS),
    ] {
        let lines = records(client, kind).await?;
        tracing::info!(dps = %client.host(), object, bytes = lines.len(), "enrollments read with their keys");
        inputs.push((
            object,
            Input::Memory {
                name: object,
                lines: Arc::new(zeroize::Zeroizing::new(lines)),
            },
        ));
    }
    let source = Source {
        kind: SOURCE_DPS.to_owned(),
        job_id: None,
        path: None,
    };
    write_snapshot(store, &inputs, client.host(), source, recipients, &options).await
}

/// Every enrollment (or group) of `kind` as record lines, sorted by id.
async fn records(client: &DpsClient, kind: Kind) -> Result<Vec<u8>, Error> {
    let mut items: Vec<(String, Value)> = client
        .query_all(kind)
        .await?
        .into_iter()
        .filter_map(|item| {
            let id = item.get(kind.id_field())?.as_str()?.to_owned();
            Some((id, item))
        })
        .collect();
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    items.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::new();
    for (id, enrollment) in items {
        let attestation = client.attestation(kind, &id).await?;
        let line = json!({"id": id, "enrollment": enrollment, "attestation": attestation});
        serde_json::to_writer(&mut out, &line).map_err(|e| {
            Error::Snapshot(crate::snapshot::Error::Output(std::io::Error::other(
                e.to_string(),
            )))
        })?;
        out.push(b'\n');
    }
    Ok(out)
}
