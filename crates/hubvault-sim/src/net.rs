//! Listening sockets for simulated hubs: a TCP listener whose connections can be cut on demand
//! (the "dropped connection" fault), the caller address handlers see, and the scheme they are
//! served with. Over `--tls`, the TLS listener (module `tls`) wraps a `HubListener`, so both
//! keep working. Must not: know about TLS (`tls` depends on this module, not the reverse) or
//! serve routers (that is `serve`).
//!
//! Why not a panic or an erroring body: both still let hyper write a status line first, or spam
//! stderr. Failing the connection's first write makes the client see a connection closed with
//! no response at all, which is what a dropped connection looks like on the wire.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::shared::lock;

/// Connections (by peer address) whose next write must fail.
#[derive(Debug, Default)]
pub struct DropSet {
    armed: AtomicUsize,
    peers: Mutex<HashSet<SocketAddr>>,
}

impl DropSet {
    /// Cut the connection of `peer` instead of answering it.
    pub fn arm(&self, peer: SocketAddr) {
        let mut peers = lock(&self.peers);
        peers.insert(peer);
        self.armed.store(peers.len(), Ordering::SeqCst);
    }

    fn take(&self, peer: &SocketAddr) -> bool {
        if self.armed.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut peers = lock(&self.peers);
        let hit = peers.remove(peer);
        self.armed.store(peers.len(), Ordering::SeqCst);
        hit
    }
}

/// The caller's address (`ConnectInfo<Peer>`): the source IP the firewall judges, and the
/// client certificate it presented in its TLS handshake, if any (X.509 device authentication).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr, pub Option<ClientCert>);

/// The thumbprints of the leaf certificate a client presented (SHA-1 and SHA-256 of its DER, the
/// two forms a device's `x509Thumbprint` may hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

impl ClientCert {
    /// The thumbprints of a DER certificate.
    pub fn of(der: &[u8]) -> ClientCert {
        use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
        let mut sha1 = [0u8; 20];
        let mut sha256 = [0u8; 32];
        sha1.copy_from_slice(digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref());
        sha256.copy_from_slice(digest(&SHA256, der).as_ref());
        ClientCert { sha1, sha256 }
    }

    /// Whether `thumbprint` (hex, any case, `:` separators allowed) names this certificate.
    pub fn matches(&self, thumbprint: &str) -> bool {
        let hex: Vec<u8> = thumbprint.bytes().filter(|c| *c != b':').collect();
        let byte = |pair: &[u8]| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        };
        [&self.sha1[..], &self.sha256[..]].iter().any(|digest| {
            hex.len() == digest.len().saturating_mul(2)
                && digest
                    .iter()
                    .zip(hex.chunks(2))
                    .all(|(b, pair)| byte(pair) == Some(*b))
        })
    }
}

pub struct HubListener {
    inner: TcpListener,
    drops: Arc<DropSet>,
}

impl HubListener {
    pub fn new(inner: TcpListener, drops: Arc<DropSet>) -> Self {
        HubListener { inner, drops }
    }
}

pub struct HubStream {
    stream: TcpStream,
    peer: SocketAddr,
    drops: Arc<DropSet>,
}

impl Listener for HubListener {
    type Io = HubStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (HubStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        HubStream {
                            stream,
                            peer,
                            drops: self.drops.clone(),
                        },
                        peer,
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

// One impl per listener the simulator serves on (a blanket impl over every `Listener` would
// collide with axum's own for `TapIo`); the one for `TlsListener` is in `tls`.
impl Connected<IncomingStream<'_, HubListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, HubListener>) -> Self {
        Peer(*stream.remote_addr(), None)
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr(), None)
    }
}

/// The URL scheme a service is served with, as a request extension (set by `sim::run`):
/// handlers that write absolute URLs back (ARM's `Azure-AsyncOperation`) need it, since an
/// HTTP/1.1 request line does not carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme(pub &'static str);

impl AsyncRead for HubStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for HubStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.drops.take(&self.peer) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection dropped by fault injection",
            )));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.drops.take(&self.peer) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection dropped by fault injection",
            )));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
