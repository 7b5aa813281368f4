//! Serving the webhook over TLS with the rotating resolver, and the admin
//! routes in plain HTTP, until SIGTERM; then in-flight requests finish
//! within the grace period.

use crate::config::Config;
use crate::webhook::{AppState, admin_app, app};
use apiwitness_selfcert::Resolver;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    config: &Config,
    state: Arc<AppState>,
    resolver: Arc<Resolver>,
) -> anyhow::Result<()> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.admin_addr))?;
    tracing::info!(listen = %config.listen, admin = %config.admin_addr, "serving");

    let admin_router = admin_app(state.clone());
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin, admin_router)
            .with_graceful_shutdown(apiwitness_runtime::shutdown_signal())
            .await;
    });

    let router = app(state);
    let graceful = GracefulShutdown::new();
    let shutdown = apiwitness_runtime::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at the end of the grace period");
    }
    let _ = admin_task.await;
    Ok(())
}
