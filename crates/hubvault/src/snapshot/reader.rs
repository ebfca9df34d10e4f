//! Reading a snapshot object back as records, in stored order (sorted by `(id, moduleId)`).
//!
//! The reader is blocking (age and zstd are synchronous): create and drive it from a blocking
//! thread (`spawn_blocking`). It checks what a reader must not take on trust: the header line
//! binds the stream to this snapshot and object, every line is a record, the order is strictly
//! increasing, and the count matches the manifest — so diff, restore and verify can stream in
//! constant memory without re-checking.

use std::cmp::Ordering;
use std::io::{BufRead, BufReader};

use super::record::{self, Line, Record};
use super::{Error, Header, Manifest, ObjectEntry, catalog};
use crate::pipeline::bridge::StreamReader;
use crate::pipeline::{self, Identities, Opened};
use crate::store::Store;

/// Records of one object of one snapshot.
pub struct ObjectReader {
    lines: BufReader<Opened<StreamReader>>,
    snapshot: String,
    object: ObjectEntry,
    previous: Option<Record>,
    seen: u64,
    done: bool,
}

impl ObjectReader {
    /// Open `kind` (`devices` or `configurations`) of snapshot `m`. Blocking.
    pub fn open(
        store: &dyn Store,
        handle: &tokio::runtime::Handle,
        m: &Manifest,
        kind: &str,
        identities: &Identities,
    ) -> Result<ObjectReader, Error> {
        m.check_not_refused()?;
        let object = m.object(kind).cloned().ok_or_else(|| Error::Damaged {
            snapshot: m.id.clone(),
            object: kind.to_owned(),
            detail: "the manifest lists no such object".to_owned(),
        })?;
        let name = catalog::object_name(&m.hub, &m.id, &object.name);
        let stream = handle.block_on(store.get(&name))?;
        let damaged = |detail: String| Error::Damaged {
            snapshot: m.id.clone(),
            object: object.name.clone(),
            detail,
        };
        let plain =
            pipeline::open(StreamReader::new(handle.clone(), stream), identities).map_err(|e| {
                match e {
                    pipeline::Error::WrongKey => Error::WrongKey {
                        snapshot: m.id.clone(),
                        expected: m.recipients.clone(),
                    },
                    other => damaged(other.to_string()),
                }
            })?;
        let mut lines = BufReader::with_capacity(256 * 1024, plain);
        let mut first = Vec::new();
        lines
            .read_until(b'\n', &mut first)
            .map_err(|e| damaged(e.to_string()))?;
        let header = Header::parse(first.strip_suffix(b"\n").unwrap_or(&first))
            .ok_or_else(|| damaged("the first line is not a hubvault header".to_owned()))?;
        if let Some(mismatch) = header.mismatch(m, &object.kind) {
            return Err(damaged(mismatch));
        }
        Ok(ObjectReader {
            lines,
            snapshot: m.id.clone(),
            object,
            previous: None,
            seen: 0,
            done: false,
        })
    }

    fn damaged(&self, detail: String) -> Error {
        Error::Damaged {
            snapshot: self.snapshot.clone(),
            object: self.object.name.clone(),
            detail,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>, Error> {
        let mut line = Vec::new();
        if self
            .lines
            .read_until(b'\n', &mut line)
            .map_err(|e| self.damaged(e.to_string()))?
            == 0
        {
            if self.seen != self.object.records {
                return Err(self.damaged(format!(
                    "it holds {} records, the manifest says {}",
                    self.seen, self.object.records
                )));
            }
            return Ok(None);
        }
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        self.seen = self.seen.saturating_add(1);
        // The header is line 1.
        let line_no = self.seen.saturating_add(1);
        let record = match record::classify(trimmed, line_no, &self.object.name) {
            Ok(Line::Record(r)) => r,
            Ok(Line::Skipped) => {
                return Err(self.damaged(format!("record {} is not a JSON object", self.seen)));
            }
            Err(e) => return Err(self.damaged(e.to_string())),
        };
        if let Some(previous) = &self.previous
            && previous.key_cmp(&record) != Ordering::Less
        {
            return Err(self.damaged(format!(
                "records are out of order at {}",
                record.key_display()
            )));
        }
        self.previous = Some(Record {
            line: Vec::new(),
            ..record.clone()
        });
        Ok(Some(record))
    }
}

impl Iterator for ObjectReader {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}
