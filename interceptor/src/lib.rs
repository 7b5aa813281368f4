//! The interceptor: a sidecar that terminates its pod's TLS to the apiserver,
//! forwards every request, and records each exchange for the aggregator.
//!
//! The data path, one module each: [`accept`] (listeners, original
//! destination) → [`tls`] (serving certificate, upstream trust) → [`serve`]
//! (HTTP/1.1 and HTTP/2 per connection) → [`proxy`] (forwarding, upgrades) →
//! [`capture`] (tee of both bodies) → [`recorder`] (off the hot path:
//! [`decode`], [`redact`]) → [`ship`] (bounded queue to the aggregator, with
//! [`drops`] accounting for what the queue could not keep).

pub mod accept;
pub mod admin;
pub mod aggregator_format;
pub mod capture;
pub mod coalesce;
pub mod config;
pub mod decode;
pub mod drops;
pub mod metrics;
pub mod proxy;
pub mod read_ahead;
pub mod recorder;
pub mod redact;
pub mod replay;
pub mod serve;
pub mod ship;
pub mod tls;
pub mod trust;
pub mod upstream;

use crate::aggregator_format::AggregatorFormat;
use crate::capture::Limits;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::tls::{ApiserverNames, CertSource, CertifyClient, RotatingResolver};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Accept(#[from] accept::AcceptError),
    #[error("{0}")]
    Other(String),
}

/// Runs the interceptor until SIGTERM or SIGINT, then shuts down in order:
/// stop accepting, let in-flight exchanges finish, flush the queue.
pub async fn run(config: Config) -> Result<(), StartError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let redactor = redact::Redactor::new(config.redact_paths.clone()).map_err(StartError::Other)?;
    let upstream_tls = tls::client_config(&config.upstream_ca_file, &metrics.trust)?;
    let pod = config.pod_identity();

    let names = ApiserverNames::new(
        &config.cluster_domain,
        config.service_ip,
        &config.extra_sans,
    );
    let source = match (
        &config.tls_cert_file,
        &config.tls_key_file,
        &config.certify_url,
    ) {
        (Some(cert), Some(key), _) => CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, Some(url)) => CertSource::Certify(Box::new(CertifyClient {
            url: url.clone(),
            token_file: config.token_file.clone(),
            tls: match (&config.certify_ca_file, &config.certify_ca_pem) {
                (Some(ca), _) => tls::client_config(ca, &metrics.trust)?,
                (None, Some(pem)) => {
                    tls::client_config_from_pem(pem.as_bytes(), "APIWITNESS_CERTIFY_CA_PEM")?
                }
                (None, None) => upstream_tls.clone(),
            },
            names,
            identity: format!("{}/{}", pod.namespace, pod.name),
        })),
        _ => return Err(config::ConfigError::NoCertSource.into()),
    };

    let resolver = Arc::new(RotatingResolver::default());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));

    let queue = ship::Queue::new(config.queue_capacity, config.queue_bytes, metrics.clone());
    let aggregator_format = Arc::new(AggregatorFormat::new(config.aggregator_format));
    let (recorder_handle, recorder) = recorder::channel(
        config.recorder_bytes,
        pod.clone(),
        redactor,
        aggregator_format.clone(),
        queue.clone(),
        metrics.clone(),
    );
    let recorder_task = tokio::spawn(recorder.run());

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (flush_tx, flush_rx) = tokio::sync::watch::channel(false);
    let shipper_task = match &config.aggregator_url {
        Some(url) => {
            let tls = match &config.aggregator_ca_file {
                Some(ca) => tls::client_config(ca, &metrics.trust)?,
                None => upstream_tls.clone(),
            };
            let shipper = ship::Shipper::new(
                ship::ShipConfig {
                    url: url.clone(),
                    batch_records: config.batch_records,
                    batch_bytes: config.batch_bytes,
                    batch_wait: config.batch_wait,
                    token_file: Some(config.token_file.clone()).filter(|p| p.exists()),
                    pod: pod.clone(),
                    encoding: config.ship_encoding,
                    zstd_level: config.ship_zstd_level,
                    format: aggregator_format,
                },
                queue.clone(),
                tls,
                metrics.clone(),
            );
            Some(tokio::spawn(shipper.run(flush_rx, config.shutdown_grace)))
        }
        None => {
            tracing::warn!("no --aggregator-url: records are counted but not shipped");
            None
        }
    };

    tokio::spawn(tls::keep_certified(
        source,
        resolver.clone(),
        config.cert_renew_fraction,
        metrics.clone(),
        shutdown_rx.clone(),
    ));

    let limits = Limits {
        body: config.body_limit,
        watch_event: config.watch_event_limit,
        watch_events: config.watch_events,
        watch_part_bytes: config.watch_part_bytes,
        watch_part_wait: config.watch_part_wait,
    };
    let proxy = Arc::new(
        proxy::Proxy::new(
            upstream_tls,
            &config.upstream_server_name,
            config.upstream_http2,
            recorder_handle,
            limits,
            config.coalesce_wait,
            metrics.clone(),
        )
        .map_err(StartError::Other)?,
    );
    let upstream = match (config.mode, &config.upstream) {
        (Mode::Explicit, Some(url)) => {
            let authority = url
                .authority()
                .map(|a| a.to_string())
                .ok_or(config::ConfigError::ExplicitWithoutUpstream)?;
            let authority = if url.port().is_some() {
                authority
            } else {
                format!("{authority}:443")
            };
            serve::Upstream::Fixed(
                proxy::Target::new(&authority).map_err(|e| StartError::Other(e.to_string()))?,
            )
        }
        _ => serve::Upstream::OriginalDestination,
    };

    let listening = Arc::new(AtomicBool::new(false));
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|error| accept::AcceptError::Bind {
            addr: config.admin_addr,
            error,
        })?;
    let admin = admin::app(admin::AdminState {
        metrics: metrics.clone(),
        resolver: resolver.clone(),
        listening: listening.clone(),
    });
    let mut admin_shutdown = shutdown_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move {
                let _ = admin_shutdown.changed().await;
            })
            .await;
    });

    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let mut servers = Vec::new();
    for addr in &config.listen {
        let listener = accept::bind(*addr)?;
        tracing::info!(%addr, mode = ?config.mode, "accepting clients");
        servers.push(tokio::spawn(serve::serve(
            listener,
            upstream.clone(),
            acceptor.clone(),
            proxy.clone(),
            metrics.clone(),
            graceful.clone(),
            shutdown_rx.clone(),
        )));
    }
    listening.store(true, Ordering::Release);
    drop(proxy);

    apiwitness_runtime::shutdown_signal().await;
    tracing::info!("shutting down: no new connections; finishing in-flight exchanges");
    let _ = shutdown_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    let graceful = Arc::try_unwrap(graceful)
        .unwrap_or_else(|_| hyper_util::server::graceful::GracefulShutdown::new());
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight exchanges did not finish within the grace period");
    }
    // The recorder ends once every exchange has handed over its record.
    let _ = tokio::time::timeout(Duration::from_secs(2), recorder_task).await;
    let _ = flush_tx.send(true);
    if let Some(task) = shipper_task {
        let _ = task.await;
    }
    tracing::info!(unshipped = queue.len(), "stopped");
    Ok(())
}
