//! The mutating admission webhook that adds init-iptables and the
//! interceptor to opted-in workloads, and the certify endpoint that gets each
//! interceptor its serving certificate.
//!
//! - [`inject`]: the pure decisions and JSON Patches;
//! - [`webhook`]: AdmissionReviews and the certify endpoint over HTTP;
//! - [`certify`]: the checks and the CertificateSigningRequest;
//! - its own CA, certificate and caBundle come from `apiwitness-selfcert`;
//! - [`cluster`]: what is learnt from the apiserver.

pub mod certify;
pub mod cluster;
pub mod config;
pub mod events;
pub mod inject;
pub mod metrics;
pub mod serve;
pub mod settings;
pub mod trust;
pub mod webhook;

use apiwitness_selfcert::{self as serving_cert, Resolver, ServingNames};
use certify::{Certifier, ExpectedNames};
use config::Config;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use webhook::{AppState, Namespaces};

/// The injector's CA, certificate and key PEM: it signs in private-CA mode,
/// and goes into each trust bundle.
pub type SharedCa = Arc<RwLock<(String, String)>>;

pub async fn run(config: Config) -> anyhow::Result<()> {
    config.check()?;
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes client configuration (in-cluster or KUBECONFIG): {e}")
    })?;
    let native_sidecars = cluster::has_native_sidecars(&client).await?;
    if !native_sidecars {
        tracing::warn!(
            "this cluster predates native sidecars (Kubernetes 1.29): opted-in pods will be skipped, each with an Event"
        );
    }
    let (service, endpoints) = cluster::apiserver_addresses(&client).await?;
    let names = serving_names(&client, &config).await?;
    let bundle = serving_cert::ensure_bundle(
        &client,
        &config.namespace,
        &config.tls_secret,
        &names,
        config.serving_cert_lifetime,
    )
    .await?;
    let resolver = Arc::new(Resolver::default());
    resolver.set(bundle.certified_key()?);
    patch_ca_bundle(&client, &config, &bundle.ca_cert).await;
    let ca: SharedCa = Arc::new(RwLock::new((bundle.ca_cert.clone(), bundle.ca_key.clone())));

    let settings = config.settings(bundle.ca_cert.clone(), service, endpoints, native_sidecars);
    tracing::info!(
        apiserver = %settings.apiserver_service,
        endpoints = ?settings.apiserver_endpoints,
        mode = ?settings.mode,
        signer = ?settings.signer,
        certify_url = %settings.certify_url,
        "injecting"
    );
    let state = Arc::new(AppState {
        settings: RwLock::new(Arc::new(settings)),
        namespaces: Namespaces::live(client.clone()),
        events: events::Events::Live(client.clone()),
        certifier: Some(Certifier {
            client: client.clone(),
            audience: config.token_audience.clone(),
            expected: ExpectedNames::new(&config.cluster_domain, service.ip()),
            lifetime: config.cert_lifetime,
            sign_timeout: Duration::from_secs(20),
            signer: config.signer,
            private_ca: ca.clone(),
        }),
        trust: (config.signer == settings::SignerMode::PrivateCa)
            .then(|| trust::Bundles::new(client.clone(), ca.clone())),
        metrics: metrics::Metrics::default(),
    });

    let refresher = tokio::spawn(refresh(
        client,
        config.clone(),
        state.clone(),
        resolver.clone(),
        ca,
        bundle,
    ));
    let result = serve::serve(&config, state, resolver).await;
    refresher.abort();
    result
}

async fn serving_names(client: &kube::Client, config: &Config) -> anyhow::Result<ServingNames> {
    let names = ServingNames::of_service(
        client,
        &config.namespace,
        &config.service_name,
        &config.cluster_domain,
    )
    .await?;
    if names.ips.is_empty() {
        tracing::warn!(service = %config.service_name, "the injector's Service has no ClusterIP yet: the serving certificate names only its DNS names");
    }
    Ok(names)
}

async fn patch_ca_bundle(client: &kube::Client, config: &Config, ca: &str) {
    if config.webhook_config.is_empty() {
        return;
    }
    match serving_cert::patch_ca_bundle(client, &config.webhook_config, ca).await {
        Ok(true) => tracing::info!(config = %config.webhook_config, "caBundle set"),
        Ok(false) => {}
        // The chart may create the configuration after the injector starts:
        // the next refresh tries again.
        Err(e) => tracing::warn!("caBundle not set yet: {e}"),
    }
}

/// Keeps the serving certificate fresh (and picks up another replica's
/// rotation, or a Secret deleted to rotate the CA), the caBundle and the
/// trust bundles true, and the apiserver's endpoints current.
async fn refresh(
    client: kube::Client,
    config: Config,
    state: Arc<AppState>,
    resolver: Arc<Resolver>,
    ca: SharedCa,
    mut current: serving_cert::Bundle,
) {
    loop {
        tokio::time::sleep(config.refresh_interval).await;
        match serving_names(&client, &config).await {
            Ok(names) => match serving_cert::renew(
                &client,
                &config.namespace,
                &config.tls_secret,
                &names,
                config.serving_cert_lifetime,
                &current,
                &resolver,
            )
            .await
            {
                Ok(Some(bundle)) => {
                    if let Ok(mut shared) = ca.write() {
                        *shared = (bundle.ca_cert.clone(), bundle.ca_key.clone());
                    }
                    let mut next = (*state.settings()).clone();
                    next.certify_ca_pem = bundle.ca_cert.clone();
                    if let Ok(mut s) = state.settings.write() {
                        *s = Arc::new(next);
                    }
                    tracing::info!("serving certificate reloaded");
                    current = bundle;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("checking the serving certificate: {e}"),
            },
            Err(e) => tracing::warn!("{e}"),
        }
        patch_ca_bundle(&client, &config, &current.ca_cert).await;
        if let Some(bundles) = &state.trust
            && let Err(e) = bundles.refresh_all().await
        {
            tracing::warn!("{e}");
        }
        if let Ok((service, endpoints)) = cluster::apiserver_addresses(&client).await {
            let mut next = (*state.settings()).clone();
            if next.apiserver_service != service || next.apiserver_endpoints != endpoints {
                tracing::info!(%service, ?endpoints, "the apiserver moved");
                next.apiserver_service = service;
                next.apiserver_endpoints = endpoints;
                if let Ok(mut s) = state.settings.write() {
                    *s = Arc::new(next);
                }
            }
        }
    }
}
