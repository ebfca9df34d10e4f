//! Records held for sorting, without an allocation per record: their bytes in one arena, and
//! a fixed-size entry per record pointing into it. The arena is reused from run to run.
//!
//! Why: a shuffled backup used to make (and later free, on another thread) three heap objects
//! per line, then three more per line again in the merge. That was about 7 % of its CPU time,
//! and the freed memory fragmented the heap, so peak memory wandered from run to run.

use std::cmp::Ordering;

use super::super::prefetch::RecordRef;
use super::Error;

/// Flag bits, as in a spilled run's frame.
pub(super) const MODULE: u8 = 1;
pub(super) const EDGE: u8 = 2;

/// A record as the sort sees it: its key, line and where it came from, borrowed.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) id: &'a [u8],
    pub(super) module: Option<&'a [u8]>,
    pub(super) line: &'a [u8],
    pub(super) line_no: u64,
    pub(super) edge: bool,
}

impl View<'_> {
    /// Order by `(id, moduleId)` in byte order; a device sorts before its modules (as
    /// `Record::key_cmp`).
    pub(super) fn key_cmp(&self, other: &View<'_>) -> Ordering {
        self.id
            .cmp(other.id)
            .then_with(|| self.module.cmp(&other.module))
    }

    pub(super) fn flags(&self) -> u8 {
        (if self.module.is_some() { MODULE } else { 0 }) | (if self.edge { EDGE } else { 0 })
    }

    /// `id` or `id/moduleId`, as shown to users (the bytes were checked as UTF-8 when read).
    pub(super) fn key_display(&self) -> String {
        let id = String::from_utf8_lossy(self.id);
        match self.module {
            Some(m) => format!("{id}/{}", String::from_utf8_lossy(m)),
            None => id.into_owned(),
        }
    }
}

impl<'a> From<&RecordRef<'a>> for View<'a> {
    fn from(r: &RecordRef<'a>) -> Self {
        View {
            id: r.id.as_bytes(),
            module: r.module_id.map(str::as_bytes),
            line: r.line,
            line_no: r.line_no,
            edge: r.edge,
        }
    }
}

/// Where one record's bytes are: id, then module id, then line, from `start`.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    line_no: u64,
    id_len: u32,
    module_len: u32,
    line_len: u32,
    flags: u8,
}

#[derive(Default)]
pub(super) struct Buffer {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Buffer {
    /// What holding `rec` costs, in bytes of memory.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "the id and module id lie inside the line (or are their shorter unescaped copies), so the sum is about twice a line held in memory at most"
    )]
    pub(super) fn cost(rec: &RecordRef<'_>) -> usize {
        rec.id.len() + rec.module_id.map_or(0, str::len) + rec.line.len() + size_of::<Entry>()
    }

    /// Memory held by the records so far.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "each term is the size of a live allocation (at most isize::MAX), so the sum fits in usize"
    )]
    pub(super) fn used(&self) -> usize {
        self.bytes.len() + self.entries.len() * size_of::<Entry>()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Give the memory back. Shrunk before it is freed, because freeing a large block makes
    /// glibc's malloc raise its mmap threshold (to the block's size, up to 32 MiB) and keep up
    /// to twice that of freed memory in each thread's arena from then on: after the sort's
    /// 8 MiB buffers were freed, the merge and its zstd workers peaked 20–25 MiB higher at 10^6
    /// devices. Shrinking is a `realloc` (an `mremap` of the mapping), which changes nothing.
    pub(super) fn release(mut self) {
        self.clear();
        // Not to 0: that would free the block as it is.
        self.bytes.shrink_to(1);
        self.entries.shrink_to(1);
    }

    /// Forget the records, keep the memory.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    pub(super) fn push(&mut self, rec: &RecordRef<'_>) -> Result<(), Error> {
        let len = |b: &[u8]| {
            u32::try_from(b.len()).map_err(|_| {
                Error::Spill(std::io::Error::other(
                    "a line of the export is longer than 4 GiB",
                ))
            })
        };
        let view = View::from(rec);
        let entry = Entry {
            start: self.bytes.len(),
            line_no: rec.line_no,
            id_len: len(view.id)?,
            module_len: len(view.module.unwrap_or_default())?,
            line_len: len(view.line)?,
            flags: view.flags(),
        };
        self.bytes.extend_from_slice(view.id);
        self.bytes
            .extend_from_slice(view.module.unwrap_or_default());
        self.bytes.extend_from_slice(view.line);
        self.entries.push(entry);
        Ok(())
    }

    #[allow(
        clippy::arithmetic_side_effects,
        reason = "push wrote an entry's id, module id and line into bytes from start on, so every end is at most bytes.len()"
    )]
    fn view(&self, e: &Entry) -> View<'_> {
        let id_end = e.start + e.id_len as usize;
        let module_end = id_end + e.module_len as usize;
        View {
            id: &self.bytes[e.start..id_end],
            module: (e.flags & MODULE != 0).then(|| &self.bytes[id_end..module_end]),
            line: &self.bytes[module_end..module_end + e.line_len as usize],
            line_no: e.line_no,
            edge: e.flags & EDGE != 0,
        }
    }

    /// Sort by key. Unstable is fine: keys are unique once duplicates are refused.
    pub(super) fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.view(a).key_cmp(&self.view(b)));
        self.entries = entries;
    }

    /// The records, in their current order.
    pub(super) fn views(&self) -> impl Iterator<Item = View<'_>> {
        self.entries.iter().map(|e| self.view(e))
    }
}
