//! A `Read` whose inner reader runs on a thread of its own, a few blocks ahead.
//!
//! Why: opening a sealed object (sha256, age, zstd) and checking its records (line splitting,
//! the JSON check, order) are both CPU work; on one thread they take turns. With [`ReadAhead`]
//! the opening thread decrypts and decompresses the next blocks while the caller checks the
//! previous ones. Memory is bounded: `DEPTH` blocks in flight, recycled.
//!
//! Must not: reorder or drop bytes, or hide the inner reader's error (it is returned in order,
//! after the bytes read before it).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

const BLOCK: usize = 256 * 1024;
const DEPTH: usize = 2;

pub struct ReadAhead {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    recycle: Option<SyncSender<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Move `inner` to a new thread that reads it ahead.
    pub fn spawn<R: Read + Send + 'static>(mut inner: R) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let thread = std::thread::Builder::new()
            .name("hubvault-open".into())
            .spawn(move || {
                loop {
                    let mut block = recycled.try_recv().unwrap_or_default();
                    block.resize(BLOCK, 0);
                    let (got, failed) = fill(&mut inner, &mut block);
                    block.truncate(got);
                    let end = got < BLOCK || failed.is_some();
                    // The bytes before an error, then the error. A closed channel: the reader
                    // stopped early. The end of input: this thread ends, closing the channel.
                    if (got > 0 && tx.send(Ok(block)).is_err()) || end {
                        if let Some(e) = failed {
                            let _ = tx.send(Err(e));
                        }
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            rx: Some(rx),
            recycle: Some(recycle),
            current: Vec::new(),
            pos: 0,
            done: false,
            thread: Some(thread),
        })
    }
}

/// Read until `block` is full, the input ends or an error: the count read, and the error.
fn fill<R: Read>(inner: &mut R, block: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut got = 0;
    while got < block.len() {
        match inner.read(&mut block[got..]) {
            Ok(0) => break,
            #[allow(
                clippy::arithmetic_side_effects,
                reason = "read fills at most block[got..], so got stays <= block.len()"
            )]
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

impl Read for ReadAhead {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "pos only moves by n <= current.len() - pos, so pos <= current.len()"
    )]
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let Some(next) = self.rx.as_ref().and_then(|rx| rx.recv().ok()) else {
                self.done = true;
                return Ok(0);
            };
            let block = next.inspect_err(|_| self.done = true)?;
            let used = std::mem::replace(&mut self.current, block);
            self.pos = 0;
            if let Some(recycle) = &self.recycle {
                let _ = recycle.try_send(used);
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    /// Stop the thread and wait for it, so the inner reader is dropped when this is.
    fn drop(&mut self) {
        self.rx.take();
        self.recycle.take();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !std::thread::panicking()
        {
            tracing::error!("bug: the read-ahead thread panicked");
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
    fn bytes_arrive_whole_and_in_order_then_the_error() {
        struct FailsAfter(usize);
        impl Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("damaged"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..(3 * BLOCK + 777))
            .map(|i| u8::try_from(i % 241).unwrap())
            .collect();
        let mut out = Vec::new();
        ReadAhead::spawn(io::Cursor::new(data.clone()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let mut r = ReadAhead::spawn(FailsAfter(BLOCK + 10)).unwrap();
        let mut got = vec![0u8; BLOCK];
        r.read_exact(&mut got).unwrap();
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap_err().to_string(), "damaged");
    }

    #[test]
    fn dropping_it_early_stops_its_thread() {
        let mut r = ReadAhead::spawn(io::repeat(7)).unwrap();
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        drop(r); // must return rather than read forever
    }
}
