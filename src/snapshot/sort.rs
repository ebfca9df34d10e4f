//! External merge sort of records by `(id, moduleId)`, in bounded memory.
//!
//! A sort is tried **streaming** first: records pass straight to the output while they come in
//! order, so an export already sorted costs no buffer and no spill, and compression starts with
//! the first line. When the order breaks, [`sort_into`] returns [`Sorted::Restart`]; the caller
//! discards that output and runs again with streaming off (the export is a file, so reading it
//! twice is cheap; a shuffled export breaks order within its first lines). Without streaming,
//! records are buffered up to a budget ([`SortOptions::run_bytes`]): input that fits is sorted
//! in memory, otherwise each full buffer is sorted and spilled as a *run*, and runs are merged
//! k-way at the end.
//!
//! Spilled runs hold device keys, so they are compressed and encrypted (through
//! [`crate::pipeline`]) to a throw-away X25519 key that exists only in this process's memory:
//! plaintext never touches the disk, and a run left behind by a killed process is unreadable.
//! The temp folder is removed when the sort ends.
//!
//! Duplicates `(id, moduleId)` are adjacent once sorted, so one comparison with the previous
//! output record finds them all.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::Error;
use super::record::Record;
use crate::pipeline::{self, Identities, SealOptions, SealWriter};

/// Runs merged at once; more are merged in rounds (each open run costs a decoder's buffers).
const MAX_FAN_IN: usize = 64;
/// Name prefix of spill folders.
const SPILL_PREFIX: &str = "hubvault-sort-";
/// Default memory budget for one run of buffered records.
pub const DEFAULT_RUN_BYTES: usize = 16 * 1024 * 1024;

/// Sort settings.
#[derive(Clone)]
pub struct SortOptions {
    /// Memory budget for buffered records before a run is spilled.
    pub run_bytes: usize,
    /// Where spilled runs go (default: the system temp folder).
    pub temp_dir: Option<PathBuf>,
    /// Called once, in the middle of writing the first spilled run (test fault hook).
    pub on_spill: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Default for SortOptions {
    fn default() -> Self {
        SortOptions {
            run_bytes: DEFAULT_RUN_BYTES,
            temp_dir: None,
            on_spill: None,
        }
    }
}

/// How a sort ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sorted {
    /// All records were written in order.
    Done { records: u64, runs_spilled: usize },
    /// Streaming began but the input's order broke: discard the output, run again with
    /// `streaming: false`.
    Restart,
}

/// Write `records` sorted into `out`, each line followed by `\n`. `file` names the source in
/// messages. With `streaming`, records pass straight through while in order (see the module
/// docs); the first out-of-order record ends the pass with [`Sorted::Restart`].
pub fn sort_into<I, W>(
    records: I,
    file: &str,
    out: &mut W,
    options: &SortOptions,
    streaming: bool,
) -> Result<Sorted, Error>
where
    I: Iterator<Item = Result<Record, Error>>,
    W: Write,
{
    if streaming {
        return stream(records, file, out);
    }
    let mut buf: Vec<Record> = Vec::new();
    let mut bytes = 0usize;
    let mut spill: Option<Spill> = None;
    let mut total = 0u64;
    for rec in records {
        let rec = rec?;
        total += 1;
        bytes += rec.footprint();
        buf.push(rec);
        if bytes < options.run_bytes {
            continue;
        }
        let spill = match &mut spill {
            Some(s) => s,
            None => spill.insert(Spill::new(options)?),
        };
        sort_checked(&mut buf, file)?;
        spill.write_run(&buf)?;
        // Free the records' memory, keep the vector's slots for the next run.
        buf.clear();
        bytes = 0;
    }
    sort_checked(&mut buf, file)?;
    let Some(mut spill) = spill else {
        for rec in &buf {
            emit(out, rec)?;
        }
        return Ok(Sorted::Done {
            records: total,
            runs_spilled: 0,
        });
    };
    // Spill the last buffer too: the merge then holds one small reader per run instead of a
    // whole buffer, which keeps the peak memory at one buffer *or* the merge, not both.
    if !buf.is_empty() {
        spill.write_run(&buf)?;
    }
    drop(buf);
    let runs_spilled = spill.runs.len();
    let sources = spill.open_runs(file)?;
    merge(sources, file, |rec| emit(out, rec))?;
    Ok(Sorted::Done {
        records: total,
        runs_spilled,
    })
}

/// Pass records through while they come in order.
fn stream<I, W>(records: I, file: &str, out: &mut W) -> Result<Sorted, Error>
where
    I: Iterator<Item = Result<Record, Error>>,
    W: Write,
{
    let mut total = 0;
    let mut last: Option<Record> = None;
    for rec in records {
        let rec = rec?;
        total += 1;
        if let Some(last) = &last {
            match last.key_cmp(&rec) {
                Ordering::Less => {}
                Ordering::Equal => return Err(duplicate(file, last, &rec)),
                Ordering::Greater => return Ok(Sorted::Restart),
            }
        }
        emit(out, &rec)?;
        last = Some(rec);
    }
    Ok(Sorted::Done {
        records: total,
        runs_spilled: 0,
    })
}

fn emit<W: Write>(out: &mut W, rec: &Record) -> Result<(), Error> {
    out.write_all(&rec.line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Error::Output)
}

fn duplicate(file: &str, a: &Record, b: &Record) -> Error {
    Error::Duplicate {
        file: file.to_owned(),
        what: "id",
        key: b.key_display(),
        first_line: a.line_no.min(b.line_no),
        second_line: a.line_no.max(b.line_no),
    }
}

/// Sort a buffer (stable, and nearly free when already in order) and reject duplicates.
fn sort_checked(buf: &mut [Record], file: &str) -> Result<(), Error> {
    buf.sort_by(Record::key_cmp);
    match buf
        .windows(2)
        .find(|w| w[0].key_cmp(&w[1]) == Ordering::Equal)
    {
        Some(w) => Err(duplicate(file, &w[0], &w[1])),
        None => Ok(()),
    }
}

type Source = Box<dyn Iterator<Item = Result<Record, Error>>>;

/// Merge sorted sources into `emit`, rejecting duplicates across sources.
fn merge(
    sources: Vec<Source>,
    file: &str,
    mut emit: impl FnMut(&Record) -> Result<(), Error>,
) -> Result<(), Error> {
    struct Head(Record, usize);
    impl PartialEq for Head {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Head {
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.key_cmp(&other.0).then(self.1.cmp(&other.1))
        }
    }
    let mut sources = sources;
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        if let Some(rec) = s.next() {
            heap.push(Reverse(Head(rec?, i)));
        }
    }
    let mut prev: Option<Record> = None;
    while let Some(Reverse(Head(rec, i))) = heap.pop() {
        if let Some(p) = &prev
            && p.key_cmp(&rec) == Ordering::Equal
        {
            return Err(duplicate(file, p, &rec));
        }
        emit(&rec)?;
        prev = Some(rec);
        if let Some(next) = sources[i].next() {
            heap.push(Reverse(Head(next?, i)));
        }
    }
    Ok(())
}

/// Spilled runs: a temp folder removed on drop, and the throw-away key they are sealed to.
struct Spill {
    dir: tempfile::TempDir,
    recipient: age::x25519::Recipient,
    identities: Identities,
    runs: Vec<PathBuf>,
    next_name: usize,
    hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Spill {
    fn new(options: &SortOptions) -> Result<Self, Error> {
        let parent = options.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        sweep_stale(&parent);
        let dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir_in(&parent)
            .map_err(Error::Spill)?;
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public();
        Ok(Spill {
            dir,
            recipient,
            identities: Arc::new(vec![Box::new(key)]),
            runs: Vec::new(),
            next_name: 0,
            hook: options.on_spill.clone(),
        })
    }

    /// Start a new run file sealed to the throw-away key.
    fn run_writer(&mut self) -> Result<RunWriter, Error> {
        let path = self.dir.path().join(format!("run-{:05}", self.next_name));
        self.next_name += 1;
        let sink = File::create(&path).map_err(Error::Spill)?;
        let seal = SealWriter::new(
            sink,
            std::slice::from_ref(&self.recipient),
            SealOptions::spill(),
        )
        .map_err(|e| Error::Spill(io::Error::other(e)))?;
        let hook = if self.runs.is_empty() {
            self.hook.take()
        } else {
            None
        };
        Ok(RunWriter {
            path,
            w: BufWriter::with_capacity(256 * 1024, seal),
            written: 0,
            hook,
        })
    }

    /// Write sorted records as a new run.
    fn write_run(&mut self, records: &[Record]) -> Result<(), Error> {
        let mut w = self.run_writer()?;
        for rec in records {
            if let Err(e) = w.push(rec) {
                w.abandon();
                return Err(e);
            }
        }
        self.runs.push(w.finish()?);
        Ok(())
    }

    fn read_run(&self, path: &PathBuf) -> Result<Source, Error> {
        let f = File::open(path).map_err(Error::Spill)?;
        let plain = pipeline::open_with_buffer(f, &self.identities, 16 * 1024)
            .map_err(|e| Error::Spill(io::Error::other(e)))?;
        let reader: Box<dyn Read> = Box::new(plain);
        Ok(Box::new(RunReader {
            r: BufReader::with_capacity(16 * 1024, reader),
        }))
    }

    /// All runs, merged down to [`MAX_FAN_IN`] in rounds, as sources.
    fn open_runs(mut self, file: &str) -> Result<Vec<Source>, Error> {
        while self.runs.len() > MAX_FAN_IN {
            let batch: Vec<PathBuf> = self.runs.drain(..MAX_FAN_IN).collect();
            let sources = batch
                .iter()
                .map(|p| self.read_run(p))
                .collect::<Result<Vec<_>, _>>()?;
            let mut w = self.run_writer()?;
            if let Err(e) = merge(sources, file, |rec| w.push(rec)) {
                w.abandon();
                return Err(e);
            }
            self.runs.push(w.finish()?);
            for p in batch {
                let _ = std::fs::remove_file(p);
            }
        }
        let mut sources = self
            .runs
            .iter()
            .map(|p| self.read_run(p))
            .collect::<Result<Vec<_>, _>>()?;
        // The folder (and its runs) must outlive the readers: keep it alive inside a source.
        sources.push(Box::new(KeepAlive(Some(self))));
        Ok(sources)
    }
}

/// One run being written.
struct RunWriter {
    path: PathBuf,
    w: BufWriter<SealWriter<File>>,
    written: u64,
    hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl RunWriter {
    fn push(&mut self, rec: &Record) -> Result<(), Error> {
        write_frame(&mut self.w, rec).map_err(Error::Spill)?;
        self.written += 1;
        // Pause mid-run (test hook) so a kill lands while a spill file is half written.
        if self.written == 100 {
            self.pause()?;
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<(), Error> {
        if let Some(hook) = self.hook.take() {
            self.w.flush().map_err(Error::Spill)?;
            hook();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<PathBuf, Error> {
        let flushed = self.pause().map_err(|e| match e {
            Error::Spill(io) => io,
            other => io::Error::other(other.to_string()),
        });
        let flushed = flushed.and_then(|()| self.w.flush());
        let (seal, _) = self.w.into_parts();
        if let Err(e) = flushed {
            seal.abandon();
            return Err(Error::Spill(e));
        }
        seal.finish().map_err(Error::Spill)?;
        Ok(self.path)
    }

    fn abandon(self) {
        self.w.into_parts().0.abandon();
    }
}

/// Remove spill folders a killed process left behind. Their runs are sealed to a key that died
/// with that process, so they are unreadable garbage; a day is far longer than any sort runs.
fn sweep_stale(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(24 * 3600);
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPILL_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < day_ago);
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A source yielding nothing, holding the spill folder until the merge drops its sources.
struct KeepAlive(#[allow(dead_code)] Option<Spill>);
impl Iterator for KeepAlive {
    type Item = Result<Record, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        None
    }
}

// Frame: line_no u64, flags u8 (1: module, 2: edge), id (u32 len + bytes), [module], line.
fn write_frame<W: Write>(w: &mut W, rec: &Record) -> io::Result<()> {
    w.write_all(&rec.line_no.to_le_bytes())?;
    let flags = u8::from(rec.module_id.is_some()) | (u8::from(rec.edge) << 1);
    w.write_all(&[flags])?;
    write_bytes(w, rec.id.as_bytes())?;
    if let Some(m) = &rec.module_id {
        write_bytes(w, m.as_bytes())?;
    }
    write_bytes(w, &rec.line)
}

fn write_bytes<W: Write>(w: &mut W, b: &[u8]) -> io::Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| io::Error::other("record longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)
}

struct RunReader {
    r: BufReader<Box<dyn Read>>,
}

impl RunReader {
    fn read_frame(&mut self) -> io::Result<Option<Record>> {
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            let n = self.r.read(&mut head[got..])?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            got += n;
        }
        let line_no = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let flags = head[8];
        let id = self.read_string()?;
        let module_id = if flags & 1 == 1 {
            Some(self.read_string()?)
        } else {
            None
        };
        let line = self.read_bytes()?;
        Ok(Some(Record {
            id,
            module_id,
            edge: flags & 2 == 2,
            line,
            line_no,
        }))
    }

    fn read_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len)?;
        let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn read_string(&mut self) -> io::Result<String> {
        String::from_utf8(self.read_bytes()?)
            .map_err(|_| io::Error::other("spilled run is damaged"))
    }
}

impl Iterator for RunReader {
    type Item = Result<Record, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_frame().map_err(Error::Spill).transpose()
    }
}

#[cfg(test)]
mod tests;
