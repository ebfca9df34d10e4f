//! External merge sort of records by `(id, moduleId)`, in bounded memory.
//!
//! A sort is tried **streaming** first ([`stream_borrowed`]): records pass straight to the
//! output while they come in order, so an export already sorted costs no buffer and no spill,
//! and compression starts with the first line. When the order breaks, it returns
//! [`Sorted::Restart`]; the caller discards that output and runs [`sort_into`] (the export is a
//! file, so reading it twice is cheap; a shuffled export breaks order within its first lines).
//! There, records are buffered up to half a budget ([`SortOptions::run_bytes`]): input that fits is
//! sorted in memory, otherwise each full buffer is handed to a spilling thread that sorts it
//! and writes it as a *run* while the next buffer fills, and runs are merged k-way at the end.
//!
//! Spilled runs hold device keys, so they are encrypted (AES-256-GCM, module `cipher`) with a
//! throw-away key per run that exists only in this process's memory: plaintext never touches
//! the disk, and a run left behind by a killed process is unreadable. The temp folder is
//! removed when the sort ends.
//!
//! Duplicates `(id, moduleId)` are adjacent once sorted, so one comparison with the previous
//! output record finds them all.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::TrySendError;

use super::Error;
use super::prefetch::{Prefetched, RecordRef};
use buffer::{Buffer, View};
use runs::{RunReader, Slot, Spill};

mod buffer;
mod cipher;
mod runs;

/// Runs merged at once; more are merged in rounds (only as many as needed, see `open_runs`).
/// Each open run costs ~20 KiB (one 16 KiB decrypted chunk; runs are not compressed, so no
/// zstd decoder) next to the archive's encoder, and the sort's buffers are gone by then: 128
/// runs cost ~3 MiB, and a million devices (~130 runs of 8 MiB) merge in one round plus a
/// small one.
const MAX_FAN_IN: usize = 128;
/// Name prefix of spill folders.
const SPILL_PREFIX: &str = "hubvault-sort-";
/// Default memory budget for buffered records: two buffers of half of it (one filling, one
/// being spilled), so runs are half of it.
pub const DEFAULT_RUN_BYTES: usize = 16 * 1024 * 1024;

/// Sort settings.
#[derive(Clone)]
pub struct SortOptions {
    /// Memory budget for buffered records: two buffers of half of it, so runs of half of it.
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
    /// Streaming began but the input's order broke: discard the output and use [`sort_into`].
    Restart,
}

/// Write the records of `records` sorted into `out`, each line followed by `\n`. `file` names
/// the source in messages; `seen` is called for each record read.
pub fn sort_into<W: Write>(
    records: &mut Prefetched,
    file: &str,
    out: &mut W,
    options: &SortOptions,
    mut seen: impl FnMut(&RecordRef<'_>),
) -> Result<Sorted, Error> {
    // Two buffers of half the budget each: while the spilling thread sorts and writes one,
    // this thread fills the other (and the parser goes on feeding it).
    let half = (options.run_bytes / 2).max(1);
    let mut buf = Buffer::default();
    let mut spiller: Option<Spiller> = None;
    let mut total = 0u64;
    while let Some(rec) = records.next_ref() {
        let rec = rec?;
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "one per record read; 2^64 records cannot be read"
        )]
        {
            total += 1;
        }
        seen(&rec);
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "both are sizes of memory in use, far below usize::MAX"
        )]
        let full = !buf.is_empty() && buf.used() + Buffer::cost(&rec) > half;
        if full {
            let spiller = match &mut spiller {
                Some(s) => s,
                None => spiller.insert(Spiller::start(Spill::new(options)?, file)?),
            };
            spiller.hand_over(&mut buf)?;
        }
        buf.push(&rec)?;
    }
    let Some(mut spiller) = spiller else {
        sort_checked(&mut buf, file)?;
        for rec in buf.views() {
            emit(out, &rec)?;
        }
        buf.release();
        return Ok(Sorted::Done {
            records: total,
            runs_spilled: 0,
        });
    };
    // Spill the last buffer too: the merge then holds one small reader per run instead of a
    // whole buffer, which keeps the peak memory at the buffers *or* the merge, not both.
    if !buf.is_empty() {
        spiller.hand_over(&mut buf)?;
    }
    buf.release();
    let spill = spiller.finish()?;
    let runs_spilled = spill.runs();
    tracing::debug!(
        runs = runs_spilled,
        records = total,
        "runs spilled; merging"
    );
    let mut runs = spill.open_runs(file)?;
    merge(runs.readers(), file, |rec| emit(out, rec))?;
    Ok(Sorted::Done {
        records: total,
        runs_spilled,
    })
}

/// Sorting and writing runs on a thread of its own. At most two buffers exist: the one the
/// thread is spilling and the one being filled (the hand-over waits for the thread).
struct Spiller {
    tx: Option<std::sync::mpsc::SyncSender<Buffer>>,
    /// Emptied buffers coming back, to keep their memory.
    back: std::sync::mpsc::Receiver<Buffer>,
    thread: Option<std::thread::JoinHandle<Result<Spill, Error>>>,
}

impl Spiller {
    fn start(mut spill: Spill, file: &str) -> Result<Self, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Buffer>(0);
        let (back_tx, back) = std::sync::mpsc::sync_channel(1);
        let file = file.to_owned();
        let thread = std::thread::Builder::new()
            .name("hubvault-spill".into())
            .spawn(move || {
                for mut buf in rx {
                    sort_checked(&mut buf, &file)?;
                    spill.write_run(&buf)?;
                    buf.clear();
                    if let Err(TrySendError::Full(unused) | TrySendError::Disconnected(unused)) =
                        back_tx.try_send(buf)
                    {
                        unused.release();
                    }
                }
                Ok(spill)
            })
            .map_err(Error::Spill)?;
        Ok(Spiller {
            tx: Some(tx),
            back,
            thread: Some(thread),
        })
    }

    /// Hand `buf` over to be spilled (waiting while the previous one is) and leave an empty
    /// buffer in its place.
    fn hand_over(&mut self, buf: &mut Buffer) -> Result<(), Error> {
        let empty = self.back.try_recv().unwrap_or_default();
        let full = std::mem::replace(buf, empty);
        let sent = self.tx.as_ref().map(|tx| tx.send(full));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped: its error says why.
            _ => Err(self.join().err().unwrap_or_else(|| {
                Error::Spill(std::io::Error::other("the spilling thread stopped"))
            })),
        }
    }

    /// Wait for the last run and hand back the spilled runs.
    fn finish(mut self) -> Result<Spill, Error> {
        let spill = self.join();
        while let Ok(buf) = self.back.try_recv() {
            buf.release();
        }
        spill
    }

    fn join(&mut self) -> Result<Spill, Error> {
        self.tx.take();
        let thread = self.thread.take().ok_or_else(|| {
            Error::Spill(std::io::Error::other("the spilling thread already ended"))
        })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Spiller {
    fn drop(&mut self) {
        // An early return (an error upstream): stop the thread and wait for it, so its runs
        // are gone with the folder before the caller goes on.
        if self.thread.is_some() && !std::thread::panicking() {
            let _ = self.join();
        }
    }
}

/// The streaming pass: records borrowed from their batches ([`Prefetched::next_ref`]) pass
/// straight to `out` while they come in order, none of them made; the first out-of-order
/// record ends it with [`Sorted::Restart`]. `seen` is called for each record passed through.
pub fn stream_borrowed<W: Write>(
    records: &mut Prefetched,
    file: &str,
    out: &mut W,
    mut seen: impl FnMut(&RecordRef<'_>),
) -> Result<Sorted, Error> {
    let mut total = 0;
    // The previous record's key, in buffers reused from line to line.
    let (mut last_id, mut last_module, mut last_line) = (String::new(), String::new(), 0);
    let mut last_has_module = false;
    while let Some(rec) = records.next_ref() {
        let rec = rec?;
        if total > 0 {
            let last_key = (
                last_id.as_bytes(),
                last_has_module.then_some(last_module.as_bytes()),
            );
            let key = (rec.id.as_bytes(), rec.module_id.map(str::as_bytes));
            match last_key.cmp(&key) {
                Ordering::Less => {}
                Ordering::Equal => {
                    let mut first = View::from(&rec);
                    first.line_no = last_line;
                    return Err(duplicate(file, &first, &View::from(&rec)));
                }
                Ordering::Greater => return Ok(Sorted::Restart),
            }
        }
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "one per record read; 2^64 records cannot be read"
        )]
        {
            total += 1;
        }
        seen(&rec);
        out.write_all(rec.line)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(Error::Output)?;
        last_id.clear();
        last_id.push_str(rec.id);
        last_module.clear();
        last_module.push_str(rec.module_id.unwrap_or(""));
        last_has_module = rec.module_id.is_some();
        last_line = rec.line_no;
    }
    Ok(Sorted::Done {
        records: total,
        runs_spilled: 0,
    })
}

fn emit<W: Write>(out: &mut W, rec: &View<'_>) -> Result<(), Error> {
    out.write_all(rec.line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Error::Output)
}

fn duplicate(file: &str, a: &View<'_>, b: &View<'_>) -> Error {
    Error::Duplicate {
        file: file.to_owned(),
        what: "id",
        key: b.key_display(),
        first_line: a.line_no.min(b.line_no),
        second_line: a.line_no.max(b.line_no),
    }
}

/// Sort a buffer and reject duplicates (adjacent once sorted).
fn sort_checked(buf: &mut Buffer, file: &str) -> Result<(), Error> {
    buf.sort();
    let mut prev: Option<View<'_>> = None;
    for rec in buf.views() {
        if let Some(p) = prev
            && p.key_cmp(&rec) == Ordering::Equal
        {
            return Err(duplicate(file, &p, &rec));
        }
        prev = Some(rec);
    }
    Ok(())
}

/// Merge sorted runs into `emit`, rejecting duplicates across runs. Each run's head record is
/// read into a slot that is refilled in place, so nothing is allocated per record.
fn merge(
    runs: &mut [RunReader],
    file: &str,
    mut emit: impl FnMut(&View<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    struct Head(Slot, usize);
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
            self.0
                .view()
                .key_cmp(&other.0.view())
                .then(self.1.cmp(&other.1))
        }
    }
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.iter_mut().enumerate() {
        let mut slot = Slot::default();
        if run.read_into(&mut slot)? {
            heap.push(Reverse(Head(slot, i)));
        }
    }
    // The previous record's key (and line number), for duplicates.
    let mut prev: Option<Slot> = None;
    while let Some(mut top) = heap.peek_mut() {
        let Head(slot, i) = &mut top.0;
        if let Some(p) = &prev
            && p.view().key_cmp(&slot.view()) == Ordering::Equal
        {
            return Err(duplicate(file, &p.view(), &slot.view()));
        }
        emit(&slot.view())?;
        prev.get_or_insert_default().copy_key(slot);
        if !runs[*i].read_into(slot)? {
            PeekMut::pop(top);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
