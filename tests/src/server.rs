//! A small HTTP(S) server for tests that play a webhook, an ingest endpoint
//! or a certify endpoint. It runs on its own runtime and stops when dropped.

use crate::tls::ServingCert;
use anyhow::Context;
use rustls::pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct TestServer {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Serves `app` over TLS with `cert` on `bind` (port 0 picks one).
    pub fn start_tls(
        bind: &str,
        cert: ServingCert,
        app: axum::Router,
    ) -> anyhow::Result<TestServer> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert_der], PrivateKeyDer::Pkcs8(cert.key_der))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TestServer::start(
            bind,
            app,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    /// Serves `app` over plain HTTP on `bind`.
    pub fn start_plain(bind: &str, app: axum::Router) -> anyhow::Result<TestServer> {
        TestServer::start(bind, app, None)
    }

    fn start(
        bind: &str,
        app: axum::Router,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<TestServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(bind))
            .with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        None => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await
                        }
                    };
                });
            }
        });
        Ok(TestServer {
            addr,
            runtime: Some(runtime),
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
