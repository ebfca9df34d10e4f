//! A `Write` that hands its bytes, in large batches, to another thread owning the real writer.
//!
//! Why: reading and checking an export (every line proven a JSON object, order and duplicates
//! checked) and sealing it (feeding zstd's workers, age, sha256, the upload chunks) are both
//! CPU work. On one thread they take turns; with [`Handoff`] the checking thread fills the next
//! batch while the sealing thread writes the previous one, as the baseline `zstd | age` overlaps
//! its two processes. The channel is bounded and batch buffers are recycled, so the memory added
//! is at most `(depth + 2) × batch_bytes` whatever the input size.
//!
//! Must not: reorder, drop or copy bytes more than once (one copy into the batch), or hide the
//! inner writer's error: [`Handoff::finish`] returns it with the writer, which the caller must
//! still finish or abandon.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// Bytes per batch by default: large enough that the per-batch channel cost is negligible,
/// small enough that the sealing thread starts early.
pub const BATCH_BYTES: usize = 512 * 1024;
/// Batches in flight by default.
pub const DEPTH: usize = 2;

/// What crosses to the writing thread.
enum Msg {
    Batch(Vec<u8>),
    /// Flush the inner writer and answer (`Write::flush` waits for it).
    Flush(SyncSender<io::Result<()>>),
}

/// The writing end; the inner writer lives on a thread of its own until [`Handoff::finish`].
pub struct Handoff<W: Write + Send + 'static> {
    tx: Option<SyncSender<Msg>>,
    recycled: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    batch_bytes: usize,
    thread: Option<JoinHandle<(W, io::Result<()>)>>,
}

impl<W: Write + Send + 'static> Handoff<W> {
    /// Move `inner` to a new thread with the default batch size and depth.
    pub fn spawn(inner: W) -> io::Result<Self> {
        Self::with_batches(inner, BATCH_BYTES, DEPTH)
    }

    /// Move `inner` to a new thread; at most `depth` full batches of `batch_bytes` wait for it.
    pub fn with_batches(inner: W, batch_bytes: usize, depth: usize) -> io::Result<Self> {
        let batch_bytes = batch_bytes.max(1);
        let (tx, rx) = sync_channel::<Msg>(depth.max(1));
        let (back_tx, recycled) = sync_channel::<Vec<u8>>(depth.max(1).saturating_add(1));
        let thread = std::thread::Builder::new()
            .name("hubvault-seal".into())
            .spawn(move || drain(inner, &rx, &back_tx))?;
        Ok(Handoff {
            tx: Some(tx),
            recycled,
            buf: Vec::with_capacity(batch_bytes),
            batch_bytes,
            thread: Some(thread),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.recycled.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                Vec::with_capacity(self.batch_bytes)
            }
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.post(Msg::Batch(full))
    }

    fn post(&self, msg: Msg) -> io::Result<()> {
        // `tx` is gone only once the thread was told to stop.
        let Some(tx) = self.tx.as_ref() else {
            return Err(stopped());
        };
        tx.send(msg).map_err(|_| stopped())
    }

    /// Send what is buffered, wait for the thread to write everything, and hand back the inner
    /// writer with the first error it met (if any). The caller finishes or abandons it.
    pub fn finish(mut self) -> (W, io::Result<()>) {
        let sent = self.send();
        let (inner, written) = self.join();
        (inner, written.and(sent))
    }

    /// Stop without sending what is buffered; hand back the inner writer (to abandon it) and
    /// the error it met, if any (it may explain why the caller stopped).
    pub fn abandon(mut self) -> (W, io::Result<()>) {
        self.buf.clear();
        self.join()
    }

    #[allow(
        clippy::expect_used,
        reason = "thread is Some from with_batches on, and join is only reached from finish and abandon, which consume the Handoff"
    )]
    fn join(&mut self) -> (W, io::Result<()>) {
        // Closing the channel ends the thread's loop.
        self.tx.take();
        let thread = self.thread.take().expect("Handoff joined twice");
        match thread.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the sealing thread stopped (see its error)",
    )
}

/// The thread: write batches in order until the channel closes or a write fails. After a
/// failure it stops receiving, so the sender sees a closed channel instead of blocking.
fn drain<W: Write>(
    mut inner: W,
    rx: &Receiver<Msg>,
    back: &SyncSender<Vec<u8>>,
) -> (W, io::Result<()>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Batch(batch) => {
                if let Err(e) = inner.write_all(&batch) {
                    return (inner, Err(e));
                }
                // Give the buffer back for reuse; if the return lane is full it is freed.
                let _ = back.try_send(batch);
            }
            Msg::Flush(reply) => {
                let flushed = inner.flush();
                let failed = flushed.as_ref().map_err(io::Error::kind).err();
                let _ = reply.send(flushed);
                if let Some(kind) = failed {
                    return (inner, Err(io::Error::new(kind, "flushing failed")));
                }
            }
        }
    }
    (inner, Ok(()))
}

impl<W: Write + Send + 'static> Write for Handoff<W> {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "buf never holds more than batch_bytes: a write adds at most the room left, and a full buf is swapped out at once"
    )]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.batch_bytes - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.batch_bytes {
            self.send()?;
        }
        Ok(n)
    }

    /// Send what is buffered and wait until the thread has written and flushed it. Rarely
    /// wanted (it stalls the pipeline); batches otherwise go out when full or at finish.
    fn flush(&mut self) -> io::Result<()> {
        self.send()?;
        let (reply, answer) = sync_channel(1);
        self.post(Msg::Flush(reply))?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl<W: Write + Send + 'static> Drop for Handoff<W> {
    fn drop(&mut self) {
        // Dropped without finish/abandon (an early return): stop the thread and let the inner
        // writer's own drop report what it must.
        if self.thread.is_some() {
            self.tx.take();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
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

    #[test]
    fn bytes_arrive_in_order_across_many_batches() {
        let data: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
        let mut h = Handoff::with_batches(Vec::new(), 4096, 2).unwrap();
        for piece in data.chunks(1000) {
            h.write_all(piece).unwrap();
        }
        let (out, result) = h.finish();
        result.unwrap();
        assert_eq!(out, data);
    }

    /// A writer that fails after `ok` bytes.
    struct Failing {
        ok: usize,
    }
    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.ok);
            self.ok -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_inner_error_reaches_the_writer_and_finish() {
        let mut h = Handoff::with_batches(Failing { ok: 10_000 }, 1024, 1).unwrap();
        let chunk = [7u8; 512];
        // The writer must fail (not block forever) once the thread has stopped.
        let failed = (0..10_000).any(|_| h.write_all(&chunk).is_err());
        assert!(
            failed,
            "writes kept succeeding after the inner writer failed"
        );
        let (_, result) = h.finish();
        assert_eq!(result.unwrap_err().to_string(), "disk full");
    }

    #[test]
    fn flush_waits_until_the_inner_writer_has_the_bytes() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let seen = Shared::default();
        let mut h = Handoff::with_batches(seen.clone(), 1 << 20, 2).unwrap();
        h.write_all(b"half a batch").unwrap();
        h.flush().unwrap();
        assert_eq!(&seen.0.lock().unwrap()[..], b"half a batch");
        let (_, result) = h.finish();
        result.unwrap();
    }

    #[test]
    fn abandon_drops_what_is_buffered() {
        let mut h = Handoff::with_batches(Vec::new(), 1024, 2).unwrap();
        h.write_all(&[1u8; 1500]).unwrap();
        let (out, result) = h.abandon();
        result.unwrap();
        assert_eq!(out.len(), 1024, "only the full batch was sent");
    }
}
