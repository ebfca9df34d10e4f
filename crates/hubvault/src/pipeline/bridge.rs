//! Bridges between the synchronous seal/open streams (CPU work, run in `spawn_blocking`) and the
//! asynchronous [`Store`](crate::store::Store).
//!
//! Writing: [`ChunkSender`] is a `Write` that cuts its input into chunks and sends them over a
//! bounded channel to [`upload`], an async task feeding an [`ObjectWriter`]. The bound keeps
//! memory flat: a slow store slows the sealing thread instead of queueing the whole object.
//! Reading: [`StreamReader`] is a `Read` that pulls a [`ByteStream`] on the runtime.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use tokio::sync::mpsc;

use crate::store::{ByteStream, ObjectMeta, ObjectWriter};

/// Size of the chunks handed to the store.
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;
/// Chunks in flight between the sealing thread and the upload task.
pub const CHUNKS_IN_FLIGHT: usize = 2;

/// What the sealing side sends. `Done` is explicit so a producer that stops on an error (and
/// simply drops its sender) can never be mistaken for a complete object.
#[derive(Debug)]
pub enum Piece {
    Chunk(Bytes),
    Done,
}

/// A channel for one object: the sending half for the blocking side, the receiving half for
/// [`upload`].
pub fn channel() -> (ChunkSender, mpsc::Receiver<Piece>) {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    (
        ChunkSender {
            tx,
            buf: BytesMut::with_capacity(CHUNK_BYTES),
        },
        rx,
    )
}

/// The `Write` end. Must be used from a blocking thread (it blocks when the channel is full).
pub struct ChunkSender {
    tx: mpsc::Sender<Piece>,
    buf: BytesMut,
}

impl ChunkSender {
    fn send(&mut self, piece: Piece) -> io::Result<()> {
        self.tx.blocking_send(piece).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload stopped (see the store error)",
            )
        })
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES);
        self.send(Piece::Chunk(chunk))
    }

    /// Send what is buffered and mark the object complete.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffered()?;
        self.send(Piece::Done)
    }
}

impl Write for ChunkSender {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "buf never holds more than CHUNK_BYTES: a write adds at most the room left, and a full buf is sent (split off) at once"
    )]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Chunks go out when full or at finish: flushing small pieces would only make more requests.
        Ok(())
    }
}

/// Feed `writer` from `rx` until `Done` (then finish: the object becomes visible) or until the
/// sender goes away without `Done` (then abort: nothing becomes visible, `Ok(None)`).
/// `after_first_write` runs once after the first chunk reached the store (test fault hooks).
pub async fn upload(
    mut rx: mpsc::Receiver<Piece>,
    mut writer: Box<dyn ObjectWriter>,
    mut after_first_write: Option<Box<dyn FnOnce() + Send>>,
) -> crate::store::Result<Option<ObjectMeta>> {
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Chunk(chunk) => {
                if let Err(e) = writer.write(chunk).await {
                    let _ = writer.abort().await;
                    return Err(e);
                }
                if let Some(hook) = after_first_write.take() {
                    hook();
                }
            }
            Piece::Done => return writer.finish().await.map(Some),
        }
    }
    writer.abort().await?;
    Ok(None)
}

/// A `Read` over a store's byte stream. Use it from a blocking thread only.
pub struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: ByteStream,
    current: Bytes,
}

impl StreamReader {
    /// `handle` is the runtime that polls `stream`.
    pub fn new(handle: tokio::runtime::Handle, stream: ByteStream) -> Self {
        StreamReader {
            handle,
            stream,
            current: Bytes::new(),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
