//! Encryption of spilled runs: AES-256-GCM over 16 KiB chunks, each chunk's nonce its number
//! and a last-chunk flag (the STREAM construction, as age's payload uses), under a key made
//! for one run that exists only in this process's memory.
//!
//! Why not age, as for snapshots: a run is written and read back once, within seconds, by the
//! process that made its key; age's ChaCha20-Poly1305 took about a sixth of a shuffled backup's
//! CPU time there, and AES-GCM (AES-NI, through aws-lc, already in the tree for TLS) costs a
//! small fraction of that. What the format must still give: nothing readable on disk,
//! a damaged, cut-off, reordered or swapped chunk is an error, never wrong records.
//!
//! Must not: reuse a key for two runs (a nonce would repeat), or write a chunk in plaintext.

use std::io::{self, BufRead, Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Plaintext bytes per chunk. A reader holds one chunk, and the merge holds up to 128 readers:
/// 16 KiB keeps that at 2 MiB, where 64 KiB chunks cost 8 MiB for no measurable speed.
const CHUNK: usize = 16 * 1024;
/// The GCM tag after each chunk.
const TAG: usize = 16;

/// A fresh random key, for one run; wiped from memory when dropped.
pub(super) struct RunKey(zeroize::Zeroizing<[u8; 32]>);

impl RunKey {
    pub(super) fn generate() -> io::Result<Self> {
        // The system's generator (aws-lc's own seeds a jitter source first: slower per key).
        let mut key = RunKey(zeroize::Zeroizing::new([0u8; 32]));
        rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut key.0[..])
            .map_err(|e| io::Error::other(format!("no random bytes for a sort run's key: {e}")))?;
        Ok(key)
    }

    fn cipher(&self) -> io::Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.0[..])
            .map(LessSafeKey::new)
            .map_err(|_| io::Error::other("AES-256-GCM key refused"))
    }
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn damaged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a spilled sort run is damaged or cut off",
    )
}

/// Sealed chunks gathered into one write: 16 of them, about 256 KiB, in the writer's own
/// buffer (sealed in place), so no second buffer (and copy) is needed in front of the file.
const CHUNKS_PER_WRITE: usize = 16;

/// Encrypts what is written to it into `inner`; end it with [`ChunkWriter::finish`].
pub(super) struct ChunkWriter<W: Write> {
    key: LessSafeKey,
    inner: W,
    /// Sealed chunks not yet written, then (from `open`) the plaintext of the chunk being filled.
    buf: Vec<u8>,
    open: usize,
    counter: u64,
}

impl<W: Write> ChunkWriter<W> {
    pub(super) fn new(key: &RunKey, inner: W) -> io::Result<Self> {
        Ok(ChunkWriter {
            key: key.cipher()?,
            inner,
            buf: Vec::with_capacity(CHUNKS_PER_WRITE * (CHUNK + TAG)),
            open: 0,
            counter: 0,
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.counter, last),
                Aad::empty(),
                &mut self.buf[self.open..],
            )
            .map_err(|_| io::Error::other("encrypting a sort run failed"))?;
        // A nonce must never repeat: refuse a 2^64th chunk rather than wrap the counter.
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("a sort run outgrew its nonce counter"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.open = self.buf.len();
        if last || self.open >= CHUNKS_PER_WRITE * (CHUNK + TAG) {
            self.write_sealed()?;
        }
        Ok(())
    }

    /// Write the sealed chunks out (the open chunk's plaintext stays).
    fn write_sealed(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf[..self.open])?;
        self.buf.drain(..self.open);
        self.open = 0;
        Ok(())
    }

    /// Chunks sealed so far.
    pub(super) fn chunks_sealed(&self) -> u64 {
        self.counter
    }

    /// Seal the last chunk (shorter than a full one, possibly empty) and hand back `inner`.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "open <= buf.len() and the open chunk buf[open..] is sealed the moment it holds CHUNK bytes, so neither subtraction goes below zero"
    )]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - (self.buf.len() - self.open));
        self.buf.extend_from_slice(&data[..n]);
        // A full chunk is never the last: `finish` always seals one more, shorter chunk.
        if self.buf.len() - self.open == CHUNK {
            self.seal(false)?;
        }
        Ok(n)
    }

    /// Write out the chunks sealed so far (never the open one: it is still plaintext).
    fn flush(&mut self) -> io::Result<()> {
        self.write_sealed()?;
        self.inner.flush()
    }
}

/// Decrypts a run written by [`ChunkWriter`] with the same key.
pub(super) struct ChunkReader<R: Read> {
    key: LessSafeKey,
    inner: R,
    buf: Vec<u8>,
    /// Plaintext of the current chunk is `buf[pos..end]`.
    pos: usize,
    end: usize,
    counter: u64,
    done: bool,
}

impl<R: Read> ChunkReader<R> {
    pub(super) fn new(key: &RunKey, inner: R) -> io::Result<Self> {
        Ok(ChunkReader {
            key: key.cipher()?,
            inner,
            buf: vec![0; CHUNK + TAG],
            pos: 0,
            end: 0,
            counter: 0,
            done: false,
        })
    }

    /// Read and open the next chunk; `false` after the last.
    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        let mut got = 0;
        while got < self.buf.len() {
            match self.inner.read(&mut self.buf[got..]) {
                Ok(0) => break,
                #[allow(
                    clippy::arithmetic_side_effects,
                    reason = "read fills at most buf[got..], so got stays <= buf.len()"
                )]
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A full chunk is not the last; anything shorter must be, and must open as such.
        let last = got < self.buf.len();
        if got < TAG {
            return Err(damaged());
        }
        let plain = self
            .key
            .open_in_place(
                nonce(self.counter, last),
                Aad::empty(),
                &mut self.buf[..got],
            )
            .map_err(|_| damaged())?
            .len();
        self.counter = self.counter.checked_add(1).ok_or_else(damaged)?;
        self.pos = 0;
        self.end = plain;
        self.done = last;
        Ok(true)
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = out.len().min(available.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for ChunkReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.end {
            if !self.next_chunk()? {
                return Ok(&[]);
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.end);
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

    fn sealed(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
        let mut w = ChunkWriter::new(&key_from(key), Vec::new()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn key_from(bytes: &[u8; 32]) -> RunKey {
        RunKey(zeroize::Zeroizing::new(*bytes))
    }

    fn opened(key: &[u8; 32], data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkReader::new(&key_from(key), data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_size_around_a_chunk() {
        let key = [7u8; 32];
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let stored = sealed(&key, &data);
            assert_eq!(opened(&key, &stored).unwrap(), data, "length {len}");
            if len > 64 {
                assert!(
                    !stored.windows(64).any(|w| w == &data[..64]),
                    "plaintext visible"
                );
            }
        }
    }

    #[test]
    fn damage_truncation_reordering_and_a_wrong_key_are_errors() {
        let key = [7u8; 32];
        let data: Vec<u8> = (0..3 * CHUNK + 100)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        let stored = sealed(&key, &data);
        let whole = CHUNK + TAG;

        let mut flipped = stored.clone();
        flipped[CHUNK + 3] ^= 1;
        assert!(opened(&key, &flipped).is_err(), "flipped byte");
        // Cut at a chunk boundary: the last full chunk is not marked last.
        assert!(
            opened(&key, &stored[..2 * whole]).is_err(),
            "cut at a boundary"
        );
        assert!(
            opened(&key, &stored[..stored.len() - 1]).is_err(),
            "cut short"
        );
        let mut swapped = stored[whole..2 * whole].to_vec();
        swapped.extend_from_slice(&stored[..whole]);
        swapped.extend_from_slice(&stored[2 * whole..]);
        assert!(opened(&key, &swapped).is_err(), "chunks swapped");
        assert!(opened(&[8u8; 32], &stored).is_err(), "wrong key");
    }

    #[test]
    fn two_runs_never_share_a_key() {
        let data = vec![0u8; 1000];
        let mut a = ChunkWriter::new(&RunKey::generate().unwrap(), Vec::new()).unwrap();
        let mut b = ChunkWriter::new(&RunKey::generate().unwrap(), Vec::new()).unwrap();
        a.write_all(&data).unwrap();
        b.write_all(&data).unwrap();
        assert_ne!(a.finish().unwrap(), b.finish().unwrap());
    }
}
