//! HTTPS for the simulator (`--tls`): a generated self-signed certificate for the real-looking
//! host names, and a listener that terminates TLS in front of any axum `Router`.
//!
//! Uses rustls on aws-lc-rs only (ring stays out of the tree). The certificate is its own trust
//! root: clients add the PEM written by [`write_ca_file`] as an extra root. Handshakes run in
//! their own tasks so one slow or broken client cannot stall `accept`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt as _, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not generate the simulator's TLS certificate: {0}; check the host names given")]
    Generate(#[from] rcgen::Error),
    #[error(
        "could not load the TLS certificate or key: {0}; regenerate them with tls::self_signed"
    )]
    Load(String),
    #[error(
        "could not write the CA file {path}: {source}; check that its directory exists and is writable"
    )]
    WriteCa { path: String, source: io::Error },
    #[error("could not read the listener address: {0}")]
    Listener(io::Error),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Generate(_) => "tls_generate",
            Error::Load(_) => "tls_load",
            Error::WriteCa { .. } => "tls_write_ca",
            Error::Listener(_) => "tls_listener",
        }
    }
}

/// A self-signed certificate (PEM) valid for every name in `hosts`, and its private key (PEM).
/// The certificate doubles as the CA clients trust.
pub fn self_signed(hosts: &[String]) -> Result<(String, String), Error> {
    let mut names = hosts.to_vec();
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// Write the CA PEM (the self-signed certificate) for clients to trust.
pub fn write_ca_file(path: &Path, cert_pem: &str) -> Result<(), Error> {
    std::fs::write(path, cert_pem).map_err(|source| Error::WriteCa {
        path: path.display().to_string(),
        source,
    })
}

/// Accepted TLS connections of one TCP listener, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: AbortHandle,
}

/// What [`listener`] returns: wrapped in `TapIo` so that axum's
/// `into_make_service_with_connect_info::<SocketAddr>()` works as it does over plain TCP.
pub type Incoming = TapIo<TlsListener, fn(&mut TlsStream<TcpStream>)>;

/// Terminate TLS on `tcp` with the given certificate and key.
/// Usage: `axum::serve(tls::listener(tcp, &cert, &key)?, app.into_make_service_with_connect_info::<SocketAddr>())`.
pub fn listener(tcp: TcpListener, cert_pem: &str, key_pem: &str) -> Result<Incoming, Error> {
    let config = server_config(cert_pem, key_pem)?;
    let local = tcp.local_addr().map_err(Error::Listener)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, ready) = mpsc::channel(64);
    let acceptor_task = tokio::spawn(accept_loop(tcp, acceptor, tx)).abort_handle();
    let tls = TlsListener {
        local,
        ready,
        acceptor_task,
    };
    let noop: fn(&mut TlsStream<TcpStream>) = |_| {};
    Ok(tls.tap_io(noop))
}

fn server_config(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, Error> {
    let load = |e: &dyn std::fmt::Display| Error::Load(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| load(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| load(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| load(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("sim tls: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!("sim tls: handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("sim tls: handshake with {peer} timed out"),
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when aborted, which happens when we are dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_and_key_load_into_a_server_config() {
        let (cert, key) = self_signed(&["hub-a.azure-devices.net".to_string()]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert!(server_config(&cert, &key).is_ok());
    }

    #[test]
    fn garbage_is_refused_with_a_load_error() {
        let err = server_config("nope", "nope").unwrap_err();
        assert_eq!(err.code(), "tls_load");
    }
}
