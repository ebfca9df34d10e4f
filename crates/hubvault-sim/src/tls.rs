//! HTTPS for the simulator (`--tls`, [`crate::Options::tls`]): one generated self-signed
//! certificate for every real-looking host name, and a listener that terminates TLS in front of
//! any other axum [`Listener`] — a plain TCP listener, or the hubs' [`crate::net::HubListener`],
//! so the dropped-connection fault and the caller's address keep working over TLS.
//!
//! Must not: decide which services are served or where (that is `sim::run`), or serve routers
//! (that is `serve`). Uses rustls on
//! aws-lc-rs only (ring stays out of the tree). The certificate is its own trust root: clients
//! add the PEM written by [`write_ca_file`] as an extra root. Handshakes run in their own tasks so
//! one slow or broken client cannot stall `accept`.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt as _, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio_rustls::server::TlsStream;

use crate::net::{ClientCert, Peer};

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve every port over HTTPS (`Options.tls`).
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// Write the CA certificate (PEM) here at start; `None`: only `Running::ca_pem` has it.
    pub ca_file: Option<PathBuf>,
    /// Names the certificate must cover beyond the hubs', the plugged-in services'
    /// (`Options::service_hosts`), `localhost` and `127.0.0.1`.
    pub extra_hosts: Vec<String>,
}

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
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Generate(_) => "tls_generate",
            Error::Load(_) => "tls_load",
            Error::WriteCa { .. } => "tls_write_ca",
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

/// Asks every client for a certificate and takes any (or none), as IoT Hub's device endpoint
/// does: the handshake proves the client holds the certificate's key, and which device that
/// certificate belongs to is judged per request against the registry's thumbprints (`hub`).
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The generated certificate's server side: clone it into every [`TlsListener`].
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, Error> {
    Ok(TlsAcceptor::from(Arc::new(server_config(
        cert_pem, key_pem,
    )?)))
}

fn server_config(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, Error> {
    let load = |e: &dyn std::fmt::Display| Error::Load(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| load(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| load(&e))?
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
        .with_single_cert(certs, key)
        .map_err(|e| load(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `Options::tls`: generate the run's certificate for `hosts`, write the CA file if asked, and
/// return the acceptor every port shares with the CA PEM.
pub(crate) fn start(
    config: &TlsConfig,
    mut hosts: Vec<String>,
) -> Result<(TlsAcceptor, String), Error> {
    hosts.extend(config.extra_hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    let (cert, key) = self_signed(&hosts)?;
    if let Some(path) = &config.ca_file {
        write_ca_file(path, &cert)?;
    }
    Ok((acceptor(&cert, &key)?, cert))
}

/// What [`listener`] returns: wrapped in `TapIo` so that axum's
/// `into_make_service_with_connect_info::<SocketAddr>()` works as it does over plain TCP.
pub type Incoming = TapIo<TlsListener<TcpListener>, fn(&mut TlsStream<TcpStream>)>;

/// Terminate TLS on a plain `tcp` listener with the given certificate and key (for a router
/// served outside `sim::run`; `sim::run` itself wraps its listeners with [`TlsListener::new`]).
/// Usage: `axum::serve(tls::listener(tcp, &cert, &key)?, app.into_make_service_with_connect_info::<SocketAddr>())`.
pub fn listener(tcp: TcpListener, cert_pem: &str, key_pem: &str) -> Result<Incoming, Error> {
    let tls = TlsListener::new(tcp, acceptor(cert_pem, key_pem)?);
    let noop: fn(&mut TlsStream<TcpStream>) = |_| {};
    Ok(tls.tap_io(noop))
}

/// Connections of an inner listener, handed to axum once their TLS handshake is done.
///
/// The inner listener's `Io` stays underneath the TLS stream (a `HubStream` still fails its
/// next write when its connection is marked to drop) and its `Addr` is passed through
/// unchanged (`ConnectInfo` sees the TCP peer).
pub struct TlsListener<L: Listener> {
    local: io::Result<L::Addr>,
    ready: mpsc::Receiver<(TlsStream<L::Io>, L::Addr)>,
    acceptor_task: AbortHandle,
}

impl<L> TlsListener<L>
where
    L: Listener,
    L::Addr: Clone + Debug + Sync + 'static,
{
    /// Terminate TLS on `inner`'s connections. Must be called inside a Tokio runtime.
    /// Usage: `axum::serve(TlsListener::new(inner, acceptor), app)`.
    pub fn new(inner: L, acceptor: TlsAcceptor) -> Self {
        let local = inner.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(accept_loop(inner, acceptor, tx)).abort_handle();
        TlsListener {
            local,
            ready,
            acceptor_task,
        }
    }
}

async fn accept_loop<L>(
    mut inner: L,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<L::Io>, L::Addr)>,
) where
    L: Listener,
    L::Addr: Debug + 'static,
{
    loop {
        // `Listener::accept` retries transient errors itself.
        let (stream, peer) = inner.accept().await;
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!("sim tls: handshake with {peer:?} failed: {e}"),
                Err(_) => tracing::debug!("sim tls: handshake with {peer:?} timed out"),
            }
        });
    }
}

impl<L> Listener for TlsListener<L>
where
    L: Listener,
    L::Addr: Clone + Debug + Sync + 'static,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when aborted, which happens when we are dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

// The caller is the TCP peer underneath the TLS session (the firewall judges it as over HTTP),
// with the leaf certificate it presented.
impl<L: Listener<Addr = SocketAddr>> Connected<IncomingStream<'_, TlsListener<L>>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener<L>>) -> Self {
        let cert = stream
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .map(|leaf| ClientCert::of(leaf));
        Peer(*stream.remote_addr(), cert)
    }
}

impl<L: Listener> Drop for TlsListener<L> {
    fn drop(&mut self) {
        self.acceptor_task.abort();
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
    fn certificate_and_key_load_into_a_server_config() {
        let (cert, key) = self_signed(&["hub-a.azure-devices.net".to_string()]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert!(server_config(&cert, &key).is_ok());
    }

    #[tokio::test]
    async fn start_writes_the_ca_it_serves_and_names_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let config = TlsConfig {
            ca_file: Some(path.clone()),
            extra_hosts: vec!["extra.example".into()],
        };
        let (_, pem) = start(&config, vec!["hub-a.azure-devices.net".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);

        let missing = TlsConfig {
            ca_file: Some(dir.path().join("no-such-dir").join("ca.pem")),
            extra_hosts: Vec::new(),
        };
        let Err(err) = start(&missing, Vec::new()) else {
            panic!("a CA file in a missing directory cannot be written");
        };
        assert_eq!(err.code(), "tls_write_ca");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_a_load_error() {
        let err = server_config("nope", "nope").unwrap_err();
        assert_eq!(err.code(), "tls_load");
    }
}
