//! The client side: accept, terminate TLS, and serve HTTP/1.1 or HTTP/2 (with
//! upgrades) on each connection, until shutdown.

use crate::accept;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Target};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Where a connection's requests go.
#[derive(Clone)]
pub enum Upstream {
    /// Each connection to its original destination (transparent mode).
    OriginalDestination,
    /// Every connection to one apiserver (explicit mode), as `host:port`.
    Fixed(Target),
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts on `listener` until `shutdown` fires. Each connection is watched by
/// `graceful`, so the caller can wait for in-flight exchanges to finish.
pub async fn serve(
    listener: TcpListener,
    upstream: Upstream,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    graceful: Arc<GracefulShutdown>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let target = match &upstream {
            Upstream::Fixed(target) => target.clone(),
            Upstream::OriginalDestination => match accept::original_destination(&tcp)
                .map_err(|e| e.to_string())
                .and_then(|dst| Target::new(&dst.to_string()).map_err(|e| e.to_string()))
            {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "refusing a connection");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        let metrics = metrics.clone();
        let graceful = graceful.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            metrics.connections.inc();
            let service = hyper::service::service_fn(move |request| {
                proxy.clone().handle(target.clone(), request)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = graceful.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            metrics.connections.dec();
        });
    }
}
