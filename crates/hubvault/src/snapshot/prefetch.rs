//! [`Lines`] on a thread of its own: the lines of the next batch are read and proven JSON
//! objects while the consumer sorts, checks and seals the previous one.
//!
//! The parsing thread makes no records: it reads each line straight into a batch buffer and
//! notes where its id and module id are. Consumers borrow records from the batch
//! ([`Prefetched::next_ref`]): streaming input and the sort (which copies them into its own
//! arena) never make a [`Record`](super::record::Record). Batch buffers go back to the parsing
//! thread for reuse, so what this adds to memory is fixed: `DEPTH + 2` batches of about
//! `BATCH_BYTES`.
//!
//! Must not: reorder, drop or invent records, or yield anything after the first error.

use std::borrow::Cow;
use std::io::BufRead;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::Error;
use super::json_line::Fields;
use super::record::Lines;
#[cfg(test)]
use super::record::Record;

/// Line bytes per batch (a batch also ends at [`BATCH_RECORDS`]).
const BATCH_BYTES: usize = 256 * 1024;
const BATCH_RECORDS: usize = 1024;
/// Batches in flight between the threads.
const DEPTH: usize = 2;

/// Where a string of a parsed line is: in the batch's bytes, or (when it held escapes) owned.
enum Text {
    At(Range<usize>),
    Owned(String),
}

/// One record of a batch, not yet made.
struct Parsed {
    line: Range<usize>,
    id: Text,
    module_id: Option<Text>,
    edge: bool,
    line_no: u64,
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    parsed: Vec<Parsed>,
    /// The error that ended the input, after the records before it.
    error: Option<Error>,
}

impl Parsed {
    /// The record whose line is `all[line]` (`fields` borrowed from it).
    fn new(all: &[u8], line: Range<usize>, line_no: u64, fields: Fields<'_>) -> Self {
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "a borrowed field is a slice of all[line] (the scanner read that line), so it starts at or after all and ends within it"
        )]
        let text = |s: Cow<'_, str>| match s {
            Cow::Borrowed(b) => {
                let start = b.as_ptr().addr() - all.as_ptr().addr();
                Text::At(start..start + b.len())
            }
            Cow::Owned(o) => Text::Owned(o),
        };
        Parsed {
            line,
            edge: fields.edge(),
            id: text(fields.id),
            module_id: fields.module_id.map(text),
            line_no,
        }
    }
}

impl Batch {
    fn full(&self) -> bool {
        self.bytes.len() >= BATCH_BYTES || self.parsed.len() >= BATCH_RECORDS
    }

    #[allow(
        clippy::expect_used,
        reason = "Text::At is the inside of a string token of a line the scanner checked as UTF-8, so it starts and ends on character boundaries"
    )]
    fn str<'b>(&'b self, text: &'b Text) -> &'b str {
        match text {
            Text::At(range) => std::str::from_utf8(&self.bytes[range.clone()])
                .expect("the scanner checked the line as UTF-8"),
            Text::Owned(s) => s,
        }
    }

    fn borrowed<'b>(&'b self, p: &'b Parsed) -> RecordRef<'b> {
        RecordRef {
            id: self.str(&p.id),
            module_id: p.module_id.as_ref().map(|m| self.str(m)),
            edge: p.edge,
            line: &self.bytes[p.line.clone()],
            line_no: p.line_no,
        }
    }
}

/// A record still in its batch: what streaming input needs, without copying the line.
#[derive(Clone, Copy)]
pub struct RecordRef<'b> {
    pub id: &'b str,
    pub module_id: Option<&'b str>,
    pub edge: bool,
    pub line: &'b [u8],
    pub line_no: u64,
}

#[cfg(test)]
impl RecordRef<'_> {
    /// The record, made (copied).
    pub fn to_record(&self) -> Record {
        Record {
            id: self.id.to_owned(),
            module_id: self.module_id.map(str::to_owned),
            edge: self.edge,
            line: self.line.to_vec(),
            line_no: self.line_no,
        }
    }
}

/// Yields exactly what the inner [`Lines`] yields, in order, and stops after the first error.
pub struct Prefetched {
    rx: Option<Receiver<Batch>>,
    recycle: Option<SyncSender<Batch>>,
    current: Batch,
    next: usize,
    thread: Option<JoinHandle<u64>>,
    skipped: u64,
}

impl Prefetched {
    /// Start parsing `lines` on a new thread.
    pub fn spawn<R: BufRead + Send + 'static>(mut lines: Lines<R>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Batch>(DEPTH);
        let (recycle, recycled) = sync_channel::<Batch>(DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("hubvault-parse".into())
            .spawn(move || {
                loop {
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    batch.bytes.clear();
                    batch.parsed.clear();
                    let mut last = false;
                    while !batch.full() {
                        // Lines are read straight into the batch: no copy from a line buffer.
                        let Batch { bytes, parsed, .. } = &mut batch;
                        let next = lines.next_into(bytes, |all, line, no, fields| {
                            parsed.push(Parsed::new(all, line, no, fields));
                        });
                        match next {
                            Ok(true) => {}
                            Ok(false) => {
                                last = true;
                                break;
                            }
                            Err(e) => {
                                batch.error = Some(e);
                                last = true;
                                break;
                            }
                        }
                    }
                    // A closed channel: the consumer stopped early (restart or error).
                    if tx.send(batch).is_err() || last {
                        break;
                    }
                }
                lines.skipped()
            })?;
        Ok(Prefetched {
            rx: Some(rx),
            recycle: Some(recycle),
            current: Batch::default(),
            next: 0,
            thread: Some(thread),
            skipped: 0,
        })
    }

    /// Lines skipped (blank or not an object). Complete once the iterator has ended.
    pub fn skipped(&mut self) -> u64 {
        self.stop();
        self.skipped
    }

    /// Stop the thread (if still running) and collect its count.
    fn stop(&mut self) {
        self.rx.take();
        self.recycle.take();
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(skipped) => self.skipped = skipped,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

impl Prefetched {
    /// The next record, borrowed from its batch until the next call: for a consumer that
    /// keeps no record (streaming input), which saves making and freeing one per line.
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>, Error>> {
        loop {
            let i = self.next;
            if i < self.current.parsed.len() {
                #[allow(clippy::arithmetic_side_effects, reason = "i < parsed.len()")]
                {
                    self.next = i + 1;
                }
                let batch = &self.current;
                return Some(Ok(batch.borrowed(&batch.parsed[i])));
            }
            if let Some(e) = self.current.error.take() {
                self.rx.take();
                return Some(Err(e));
            }
            let batch = self.rx.as_ref()?.recv().ok()?;
            let done = std::mem::replace(&mut self.current, batch);
            self.next = 0;
            if let Some(recycle) = &self.recycle {
                let _ = recycle.try_send(done);
            }
        }
    }
}

/// Made records, for tests that compare with [`Lines`] (production code borrows them).
#[cfg(test)]
impl Iterator for Prefetched {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|r| r.to_record()))
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
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

    fn read(text: &[u8]) -> (Vec<Result<Record, Error>>, u64) {
        let mut lines = Lines::new(text, "devices.txt");
        let out: Vec<_> = lines.by_ref().collect();
        (out, lines.skipped())
    }

    #[test]
    fn yields_the_same_records_errors_and_skips_as_lines() {
        let mut text = b"\xEF\xBB\xBFWarning: keys\n".to_vec();
        for i in 0..5000 {
            text.extend_from_slice(
                format!("{{\"id\":\"d{i:04}\",\"capabilities\":{{\"iotEdge\":true}}}}\r\n\n")
                    .as_bytes(),
            );
            if i % 7 == 0 {
                let line = format!("{{\"id\":\"d{i:04}\",\"moduleId\":\"m\\u0031\",\"x\":1}}\n");
                text.extend_from_slice(line.as_bytes());
            }
        }
        text.extend_from_slice(b"{\"id\":\"bad\"\n{\"id\":\"after\"}\n");
        let (direct, direct_skipped) = read(&text);
        let mut pre =
            Prefetched::spawn(Lines::new(std::io::Cursor::new(text), "devices.txt")).unwrap();
        let got: Vec<_> = pre.by_ref().collect();
        // Lines itself goes on after an error; the prefetcher stops at the first one.
        let stop = direct.iter().position(Result::is_err).unwrap() + 1;
        assert_eq!(got.len(), stop);
        assert_eq!(
            pre.skipped(),
            direct_skipped,
            "all skips come before the error"
        );
        for (a, b) in got.iter().zip(&direct) {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("different results"),
            }
        }
        assert!(got.last().unwrap().is_err());
        assert_eq!(
            got[1].as_ref().unwrap().module_id.as_deref(),
            Some("m1"),
            "escaped ids are unescaped"
        );
    }

    #[test]
    fn dropping_it_early_stops_its_thread() {
        let text: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{{\"id\":\"d{i:06}\"}}\n").into_bytes())
            .collect();
        let mut pre = Prefetched::spawn(Lines::new(std::io::Cursor::new(text), "f")).unwrap();
        assert!(pre.next().unwrap().is_ok());
        drop(pre); // must return (join) rather than hang
    }
}
