//! Spilled runs of the external sort: sorted records framed and encrypted (`cipher`: a
//! throw-away key per run, held only in memory), in a temp folder that is removed when the
//! sort ends.
//!
//! Runs are not compressed: zstd's cost (compressing each run, then decompressing it in the
//! merge) was about an eighth of a shuffled backup's CPU time, for a temp file that lives
//! seconds. The price is temp space about the size of the export (≈ 1 GB for a million
//! devices), freed as the sort ends; the output object is compressed as always.
//!
//! Frame: `line_no` u64 LE, flags u8 (1: module line, 2: edge device), id (u32 LE length +
//! bytes), module id if flagged, line (u32 LE length + bytes).

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::buffer::{Buffer, EDGE, MODULE, View};
use super::cipher::{ChunkReader, ChunkWriter, RunKey};
use super::{Error, MAX_FAN_IN, SPILL_PREFIX, SortOptions, merge};

/// A spilled run: its file and the key it was encrypted with.
type Run = (PathBuf, RunKey);

/// Spilled runs: a temp folder removed on drop.
pub(super) struct Spill {
    dir: tempfile::TempDir,
    runs: Vec<Run>,
    next_name: usize,
    hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Spill {
    /// Runs written so far.
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }

    pub(super) fn new(options: &SortOptions) -> Result<Self, Error> {
        let parent = options.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        sweep_stale(&parent);
        let dir = tempfile::Builder::new()
            .prefix(SPILL_PREFIX)
            .tempdir_in(&parent)
            .map_err(Error::Spill)?;
        Ok(Spill {
            dir,
            runs: Vec::new(),
            next_name: 0,
            hook: options.on_spill.clone(),
        })
    }

    /// Start a new run file, encrypted with a key of its own.
    fn run_writer(&mut self) -> Result<RunWriter, Error> {
        let path = self.dir.path().join(format!("run-{:05}", self.next_name));
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "one per run file; a sort never writes usize::MAX runs"
        )]
        {
            self.next_name += 1;
        }
        let key = RunKey::generate().map_err(Error::Spill)?;
        let file = File::create(&path).map_err(Error::Spill)?;
        // The writer gathers its small chunks (see `cipher`) into larger writes itself.
        let w = ChunkWriter::new(&key, file).map_err(Error::Spill)?;
        let hook = if self.runs.is_empty() {
            self.hook.take()
        } else {
            None
        };
        Ok(RunWriter {
            run: (path, key),
            w,
            hook,
        })
    }

    /// Write a sorted buffer as a new run.
    pub(super) fn write_run(&mut self, records: &Buffer) -> Result<(), Error> {
        let mut w = self.run_writer()?;
        for rec in records.views() {
            if let Err(e) = w.push(&rec) {
                drop(w); // a half-written run: the folder goes when the sort ends
                return Err(e);
            }
        }
        self.runs.push(w.finish()?);
        Ok(())
    }

    fn read_run((path, key): &Run) -> Result<RunReader, Error> {
        let f = File::open(path).map_err(Error::Spill)?;
        let plain = ChunkReader::new(key, f).map_err(Error::Spill)?;
        // The reader holds a whole decrypted chunk: no second buffer in front of it.
        Ok(RunReader { r: plain })
    }

    /// All runs, merged down to [`MAX_FAN_IN`] in rounds, open for the final merge. Merged runs
    /// go to the end of the list, so each round merges the oldest (and smallest) runs first.
    pub(super) fn open_runs(mut self, file: &str) -> Result<Runs, Error> {
        while self.runs.len() > MAX_FAN_IN {
            // Merge just enough runs that the rest fit one final merge: 65 runs cost one
            // merge of 2, not a rewrite of 64 (every extra round re-reads and re-seals it all).
            #[allow(
                clippy::arithmetic_side_effects,
                reason = "runs.len() > MAX_FAN_IN (the loop condition)"
            )]
            let take = (self.runs.len() - MAX_FAN_IN + 1).min(MAX_FAN_IN);
            let batch: Vec<Run> = self.runs.drain(..take).collect();
            let mut readers = batch
                .iter()
                .map(Self::read_run)
                .collect::<Result<Vec<_>, _>>()?;
            let mut w = self.run_writer()?;
            if let Err(e) = merge(&mut readers, file, |rec| w.push(rec)) {
                drop(w); // a half-written run: the folder goes when the sort ends
                return Err(e);
            }
            self.runs.push(w.finish()?);
            for (path, _) in batch {
                let _ = std::fs::remove_file(path);
            }
        }
        let readers = self
            .runs
            .iter()
            .map(Self::read_run)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Runs {
            readers,
            _spill: self,
        })
    }
}

/// Runs open for reading, and their folder, which goes when they do.
pub(super) struct Runs {
    readers: Vec<RunReader>,
    _spill: Spill,
}

impl Runs {
    pub(super) fn readers(&mut self) -> &mut [RunReader] {
        &mut self.readers
    }
}

/// One run being written.
struct RunWriter {
    run: Run,
    w: ChunkWriter<File>,
    hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl RunWriter {
    fn push(&mut self, rec: &View<'_>) -> Result<(), Error> {
        write_frame(&mut self.w, rec).map_err(Error::Spill)?;
        // Pause mid-run (test hook), once the first chunk is on disk, so a kill lands while
        // a spill file is half written.
        if self.hook.is_some() && self.w.chunks_sealed() > 0 {
            self.pause();
        }
        Ok(())
    }

    fn pause(&mut self) {
        if let Some(hook) = self.hook.take() {
            // The sealed chunks so far reach the file, so the pause shows a half-written run.
            let _ = self.w.flush();
            hook();
        }
    }

    fn finish(self) -> Result<Run, Error> {
        let RunWriter { run, w, hook } = self;
        drop(w.finish().map_err(Error::Spill)?);
        // A run too short to fill a chunk pauses here, complete (and still ciphertext).
        if let Some(hook) = hook {
            hook();
        }
        Ok(run)
    }
}

/// Remove spill folders a killed process left behind. Their runs are sealed to a key that died
/// with that process, so they are unreadable garbage; a day is far longer than any sort runs.
pub(super) fn sweep_stale(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let Some(day_ago) =
        std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs(24 * 3600))
    else {
        return;
    };
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

fn write_frame<W: Write>(w: &mut W, rec: &View<'_>) -> io::Result<()> {
    w.write_all(&rec.line_no.to_le_bytes())?;
    w.write_all(&[rec.flags()])?;
    write_bytes(w, rec.id)?;
    if let Some(m) = rec.module {
        write_bytes(w, m)?;
    }
    write_bytes(w, rec.line)
}

fn write_bytes<W: Write>(w: &mut W, b: &[u8]) -> io::Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| io::Error::other("record longer than 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)
}

/// A record read back from a run, in buffers reused from record to record.
#[derive(Default)]
pub(super) struct Slot {
    id: Vec<u8>,
    module: Vec<u8>,
    flags: u8,
    line: Vec<u8>,
    line_no: u64,
}

impl Slot {
    pub(super) fn view(&self) -> View<'_> {
        View {
            id: &self.id,
            module: (self.flags & MODULE != 0).then_some(&self.module[..]),
            line: &self.line,
            line_no: self.line_no,
            edge: self.flags & EDGE != 0,
        }
    }

    /// Take `other`'s key and line number (not its line).
    pub(super) fn copy_key(&mut self, other: &Slot) {
        self.id.clone_from(&other.id);
        self.module.clone_from(&other.module);
        self.flags = other.flags;
        self.line_no = other.line_no;
    }
}

pub(super) struct RunReader {
    r: ChunkReader<File>,
}

impl RunReader {
    /// Read the next record into `slot`; `false` at the end of the run.
    pub(super) fn read_into(&mut self, slot: &mut Slot) -> Result<bool, Error> {
        self.read_frame(slot).map_err(Error::Spill)
    }

    fn read_frame(&mut self, slot: &mut Slot) -> io::Result<bool> {
        if self.r.fill_buf()?.is_empty() {
            return Ok(false);
        }
        let mut head = [0u8; 9];
        self.r.read_exact(&mut head)?;
        let [l0, l1, l2, l3, l4, l5, l6, l7, flags] = head;
        slot.line_no = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
        slot.flags = flags;
        self.read_bytes(&mut slot.id)?;
        if slot.flags & MODULE != 0 {
            self.read_bytes(&mut slot.module)?;
        }
        self.read_bytes(&mut slot.line).map(|()| true)
    }

    /// A length-prefixed byte string, into `out` (replacing what it held).
    fn read_bytes(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len)?;
        let mut left = u32::from_le_bytes(len) as usize;
        out.clear();
        out.reserve(left);
        while left > 0 {
            let available = self.r.fill_buf()?;
            if available.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = available.len().min(left);
            out.extend_from_slice(&available[..n]);
            self.r.consume(n);
            #[allow(clippy::arithmetic_side_effects, reason = "n <= left")]
            {
                left -= n;
            }
        }
        Ok(())
    }
}
