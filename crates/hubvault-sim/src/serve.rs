//! Serving one router on one listener for the length of a run: plain HTTP, or HTTPS with the
//! run's certificate in front of any listener (a hub's droppable `net::HubListener` or a plain
//! TCP listener), with the caller's address and the scheme handed to the handlers.
//!
//! Owns: `Serving`, shared by every port of one run. Must not: decide which services are served
//! or where (that is `sim::run`).

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::net::{Peer, Scheme};
use crate::tls::TlsListener;

/// How every port of one run is served: plain HTTP, or HTTPS with the run's certificate.
#[derive(Clone)]
pub(crate) struct Serving {
    pub tls: Option<TlsAcceptor>,
    pub stop: watch::Receiver<bool>,
}

impl Serving {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn base_url(&self, l: &TcpListener) -> String {
        l.local_addr()
            .map(|a| format!("{}://{a}", self.scheme()))
            .unwrap_or_default()
    }

    /// Serve `router` on `listener` (behind TLS when configured) until the run stops.
    /// Handlers see the caller as `ConnectInfo<Peer>` and the scheme as `Extension<Scheme>`.
    pub fn spawn<L>(&self, listener: L, router: Router) -> JoinHandle<()>
    where
        L: Listener<Addr = SocketAddr>,
        Peer: for<'a> Connected<IncomingStream<'a, L>>,
    {
        let router = router.layer(Extension(Scheme(self.scheme())));
        match &self.tls {
            Some(acceptor) => spawn_server::<TlsListener<L>>(
                TlsListener::new(listener, acceptor.clone()),
                router,
                self.stop.clone(),
            ),
            None => spawn_server(listener, router, self.stop.clone()),
        }
    }
}

fn spawn_server<L>(listener: L, router: Router, mut stop: watch::Receiver<bool>) -> JoinHandle<()>
where
    L: Listener<Addr = SocketAddr>,
    Peer: for<'a> Connected<IncomingStream<'a, L>>,
{
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<Peer>();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    })
}
