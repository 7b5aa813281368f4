//! The spec as the apiserver serves it now: `/openapi/v3` and every
//! group-version document it lists (CRDs and aggregated APIs included), or
//! `/openapi/v2` where v3 is not served. The index of `/openapi/v3` carries a
//! hash per document, so a refresh refetches only when something changed.

use crate::spec::{Conformance, OperationIndex, Origins, SpecError};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::{Arc, RwLock};

/// The operation index every report reads, swapped whole on refresh.
#[derive(Default)]
pub struct SharedIndex {
    current: RwLock<Arc<OperationIndex>>,
}

impl SharedIndex {
    pub fn new(index: OperationIndex) -> SharedIndex {
        SharedIndex {
            current: RwLock::new(Arc::new(index)),
        }
    }
    pub fn get(&self) -> Arc<OperationIndex> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }
    pub fn set(&self, index: OperationIndex) {
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(index);
        }
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, SpecError> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| SpecError::Live(e.to_string()))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| SpecError::Live(format!("GET {path}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| SpecError::Live(format!("GET {path}: {e}")))
}

/// The document index (`/openapi/v3`), whose hashes say what changed.
pub async fn fingerprint(client: &kube::Client) -> Result<Value, SpecError> {
    get_json(client, "/openapi/v3").await
}

async fn origins(client: &kube::Client) -> Origins {
    let mut origins = Origins::default();
    if let Ok(crds) = get_json(
        client,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    )
    .await
    {
        for crd in crds["items"].as_array().into_iter().flatten() {
            if let (Some(group), Some(plural)) = (
                crd["spec"]["group"].as_str(),
                crd["spec"]["names"]["plural"].as_str(),
            ) {
                origins.crd_resources.insert(format!("{group}/{plural}"));
            }
        }
    }
    if let Ok(services) = get_json(client, "/apis/apiregistration.k8s.io/v1/apiservices").await {
        for s in services["items"].as_array().into_iter().flatten() {
            if !s["spec"]["service"].is_null()
                && let (Some(g), Some(v)) =
                    (s["spec"]["group"].as_str(), s["spec"]["version"].as_str())
            {
                origins.aggregated.insert(format!("{g}/{v}"));
            }
        }
    }
    origins
}

/// Loads every document the apiserver lists, and classifies the operations.
pub async fn load(
    client: &kube::Client,
    conformance: &Conformance,
) -> Result<(OperationIndex, Value), SpecError> {
    let listing = fingerprint(client).await?;
    let urls: Vec<String> = listing["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(|entry| entry["serverRelativeURL"].as_str().map(str::to_string))
        .collect();
    let fetched = futures_util::stream::iter(urls.iter().cloned().map(|url| {
        let client = client.clone();
        async move { get_json(&client, &url).await }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let mut documents = Vec::new();
    for (doc, url) in fetched.into_iter().zip(&urls) {
        match doc {
            Ok(doc) => documents.push(doc),
            // A group-version listed a moment ago can be gone (a CRD deleted
            // meanwhile): the next refresh sees the new listing.
            Err(e) => tracing::warn!(%url, error = %e, "skipping a spec document"),
        }
    }
    if documents.is_empty() {
        documents.push(get_json(client, "/openapi/v2").await?);
    }
    let origins = origins(client).await;
    Ok((
        OperationIndex::from_documents(documents.iter(), conformance, &origins),
        listing,
    ))
}

/// Reloads the spec whenever the apiserver's document index changes (a CRD
/// or an APIService came or went), until `shutdown` fires.
pub async fn keep_fresh(
    client: kube::Client,
    conformance: Conformance,
    shared: Arc<SharedIndex>,
    mut last: Value,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match fingerprint(&client).await {
            Ok(now) if now == last => {}
            Ok(_) => match load(&client, &conformance).await {
                Ok((index, listing)) => {
                    tracing::info!(
                        operations = index.len(),
                        "the apiserver's spec changed: reloaded"
                    );
                    shared.set(index);
                    last = listing;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reloading the spec failed; keeping the last one")
                }
            },
            Err(e) => tracing::warn!(error = %e, "checking the spec failed"),
        }
    }
}
