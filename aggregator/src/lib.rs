//! The aggregator: receives the interceptors' records, stores them durably,
//! and reports API coverage against the apiserver's live OpenAPI spec.
//!
//! [`api`] (HTTP) → [`ingest`] (NDJSON in) → [`store`] (SQLite) ;
//! [`spec`] and [`spec_live`] (the operations) → [`report`] (coverage).

pub mod aggregated;
pub mod api;
pub mod api_browse;
pub mod api_provenance;
pub mod apisnoop;
pub mod audit;
pub mod auth;
pub mod committer;
pub mod config;
pub mod fields;
pub mod front_proxy;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod provenance;
pub mod record_line;
pub mod report;
pub mod spec;
pub mod spec_live;
pub mod store;
pub mod ui;

use crate::config::{Command, Config};
use crate::spec::{Conformance, OperationIndex, SpecError};
use crate::spec_live::SharedIndex;
use crate::store::Scope;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the aggregated API: {0}")]
    AggregatedApi(String),
    #[error("could not read the audit log {path}: {error}")]
    AuditLog { path: String, error: std::io::Error },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error(
        "no Kubernetes credentials for the live spec: {0} (give --spec DIR to read files instead)"
    )]
    Kube(String),
    #[error("cannot start the store's writer: {0}")]
    Writer(std::io::Error),
}

/// Imports an audit log, in chunks, printing what was taken and what was not.
fn import_audit(store: &dyn store::Store, file: &Path) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    let text = std::fs::read_to_string(file).map_err(|error| StartError::AuditLog {
        path: file.display().to_string(),
        error,
    })?;
    let parsed = audit::parse_log(&text);
    let mut outcome = store::IngestOutcome::default();
    for chunk in parsed.items.chunks(50_000) {
        let o = store.ingest(chunk, &[])?;
        outcome.accepted += o.accepted;
        outcome.duplicates += o.duplicates;
    }
    for e in parsed.errors.iter().take(20) {
        eprintln!("{}:{}: {}", file.display(), e.line, e.error);
    }
    println!(
        "imported {} audit events ({} already stored, {} of other stages skipped, {} refused) in {:.2?}",
        outcome.accepted,
        outcome.duplicates,
        parsed.skipped,
        parsed.errors.len(),
        started.elapsed()
    );
    Ok(())
}

fn conformance(config: &Config) -> Result<Conformance, SpecError> {
    match &config.conformance_dir {
        Some(dir) => Conformance::load(dir),
        None => Ok(Conformance::default()),
    }
}

/// Loads the spec once: from a directory, or live. For live, also returns the
/// client and the fingerprint that the refresh loop needs.
async fn load_spec(
    config: &Config,
    conformance: &Conformance,
) -> Result<(OperationIndex, Option<(kube::Client, serde_json::Value)>), StartError> {
    if config.spec != "live" {
        return Ok((
            OperationIndex::from_dir(Path::new(&config.spec), conformance)?,
            None,
        ));
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| StartError::Kube(e.to_string()))?;
    let (index, fingerprint) = spec_live::load(&client, conformance).await?;
    Ok((index, Some((client, fingerprint))))
}

pub async fn run(config: Config) -> Result<(), StartError> {
    // The store's calls block (PostgreSQL's client runs its own runtime):
    // they run on blocking threads, never on the async workers.
    let db = config.db.clone();
    let store = blocking(move || store::open(&db)).await??;
    if let Some(Command::ImportAudit { file }) = &config.command {
        let (store, file) = (store.clone(), file.clone());
        return blocking(move || import_audit(store.as_ref(), &file)).await?;
    }
    let conformance = conformance(&config)?;
    let (index, live) = load_spec(&config, &conformance).await?;
    tracing::info!(operations = index.len(), spec = %config.spec, "OpenAPI spec loaded");

    if let Some(Command::Report {
        pod,
        namespace,
        workload,
        user_agent,
        format,
    }) = &config.command
    {
        let scope = Scope {
            namespace: namespace.clone(),
            pod: pod.clone(),
            workload: workload.clone(),
            user_agent: user_agent.clone(),
            since: None,
        };
        let format = *format;
        let (text, _) = blocking(move || {
            report::from_store(store.as_ref(), scope, &index).map(|r| r.render(format, &index))
        })
        .await??;
        println!("{text}");
        return Ok(());
    }

    let auth = if config.serve.insecure_no_auth {
        tracing::warn!(
            "--insecure-no-auth: anyone who reaches this port may write and read records"
        );
        None
    } else {
        let client = match &live {
            Some((client, _)) => client.clone(),
            None => kube::Client::try_default().await.map_err(|e| {
                StartError::Kube(format!("{e} (authentication needs the apiserver)"))
            })?,
        };
        Some(Arc::new(auth::Authorizer::new(
            client,
            config.serve.token_audiences.clone(),
        )))
    };
    let shared = Arc::new(SharedIndex::new(index));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    if let Some((client, fingerprint)) = live {
        tokio::spawn(spec_live::keep_fresh(
            client,
            conformance,
            shared.clone(),
            fingerprint,
            config.serve.spec_refresh,
            shutdown_rx.clone(),
        ));
    }
    let metrics = Arc::new(metrics::Metrics::new());
    tokio::spawn(prune(
        store.clone(),
        config.serve.retention,
        config.serve.retention_records,
        metrics.clone(),
        shutdown_rx.clone(),
    ));
    let committer = committer::Committer::start(store.clone()).map_err(StartError::Writer)?;
    let state = api::AppState {
        committer,
        metrics,
        store,
        spec: shared,
        auth,
        live: Default::default(),
    };
    if let Some(addr) = config.serve.aggregated_api_listen {
        start_aggregated_api(&config, addr, state.clone(), shutdown_rx.clone()).await?;
    }
    let app = api::app(state);
    let listener = tokio::net::TcpListener::bind(config.serve.listen)
        .await
        .map_err(|error| StartError::Listen {
            addr: config.serve.listen,
            error,
        })?;
    tracing::info!(
        addr = %config.serve.listen,
        record_format = apiwitness_record::FORMAT_VERSION,
        "serving"
    );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            apiwitness_runtime::shutdown_signal().await;
            let _ = shutdown_tx.send(true);
        })
        .await;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        StartError::Store(store::StoreError::Invalid(format!(
            "a store task failed: {e}"
        )))
    })
}

/// The aggregated API: its own TLS (a CA and certificate kept in a Secret,
/// the CA in the APIService's caBundle), the front-proxy client CA, and the
/// listener, kept fresh in the background.
async fn start_aggregated_api(
    config: &Config,
    addr: std::net::SocketAddr,
    state: api::AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StartError> {
    let fail = |e: String| StartError::AggregatedApi(e);
    let serve = &config.serve;
    if serve.namespace.is_empty() {
        return Err(fail(
            "--namespace (POD_NAMESPACE) is needed to keep its TLS Secret".into(),
        ));
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| StartError::Kube(e.to_string()))?;
    let front_proxy = Arc::new(
        front_proxy::FrontProxy::load(&client)
            .await
            .map_err(|e| fail(e.to_string()))?,
    );
    let names = aggregated_names(&client, config)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let lifetime = std::time::Duration::from_secs(30 * 24 * 3600);
    let bundle = apiwitness_selfcert::ensure_bundle(
        &client,
        &serve.namespace,
        &serve.tls_secret,
        &names,
        lifetime,
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    let resolver = Arc::new(apiwitness_selfcert::Resolver::default());
    resolver.set(bundle.certified_key().map_err(|e| fail(e.to_string()))?);
    patch_apiservice(&client, &serve.apiservice, &bundle.ca_cert).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Listen { addr, error })?;
    tracing::info!(%addr, group = aggregated::GROUP, "serving the aggregated API");
    let router = aggregated::router(state, front_proxy.clone());
    let mut stop = shutdown.clone();
    let serving = resolver.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = aggregated::serve(listener, serving, front_proxy, router, stopped).await {
            tracing::error!("the aggregated API stopped: {e}");
        }
    });
    // Renewal, another replica's rotation, and an APIService created after
    // the aggregator started.
    let (config, mut current) = (config.clone(), bundle);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let renewed = match aggregated_names(&client, &config).await {
                Ok(names) => {
                    apiwitness_selfcert::renew(
                        &client,
                        &config.serve.namespace,
                        &config.serve.tls_secret,
                        &names,
                        lifetime,
                        &current,
                        &resolver,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match renewed {
                Ok(Some(bundle)) => {
                    tracing::info!("the aggregated API's certificate reloaded");
                    current = bundle;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("the aggregated API's certificate: {e}"),
            }
            patch_apiservice(&client, &config.serve.apiservice, &current.ca_cert).await;
        }
    });
    Ok(())
}

async fn aggregated_names(
    client: &kube::Client,
    config: &Config,
) -> Result<apiwitness_selfcert::ServingNames, apiwitness_selfcert::CertError> {
    let serve = &config.serve;
    apiwitness_selfcert::ServingNames::of_service(
        client,
        &serve.namespace,
        &serve.service_name,
        &serve.cluster_domain,
    )
    .await
}

async fn patch_apiservice(client: &kube::Client, name: &str, ca: &str) {
    match apiwitness_selfcert::patch_apiservice_ca_bundle(client, name, ca).await {
        Ok(true) => tracing::info!(apiservice = name, "caBundle set"),
        Ok(false) => {}
        Err(e) => tracing::warn!("the APIService's caBundle is not set yet: {e}"),
    }
}

/// Applies the retention bounds to raw records, now and every 10 minutes,
/// and then counts what is kept for `/metrics` (ingest adds to the count in
/// between): a full count at every scrape would hold the store meanwhile.
async fn prune(
    store: Arc<dyn store::Store>,
    age: std::time::Duration,
    keep_at_most: u64,
    metrics: Arc<metrics::Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let bounded = !age.is_zero() || keep_at_most > 0;
    loop {
        let before = if age.is_zero() {
            String::new()
        } else {
            let cutoff = k8s_openapi::chrono::Utc::now()
                - k8s_openapi::chrono::Duration::from_std(age)
                    .unwrap_or(k8s_openapi::chrono::Duration::MAX);
            cutoff.to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Micros, true)
        };
        let s = store.clone();
        let keep = (keep_at_most > 0).then_some(keep_at_most);
        if bounded {
            match blocking(move || s.prune_records(&before, keep)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(removed = n, "raw records past the retention bounds removed")
                }
                Ok(Err(e)) => tracing::warn!("pruning raw records: {e}"),
                Err(e) => tracing::warn!("pruning raw records: {e}"),
            }
        }
        let s = store.clone();
        match blocking(move || s.record_count()).await {
            Ok(Ok(n)) => {
                metrics.raw_records.set(n as i64);
            }
            Ok(Err(e)) => tracing::warn!("counting raw records: {e}"),
            Err(e) => tracing::warn!("counting raw records: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
