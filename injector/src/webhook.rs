//! The HTTP side: AdmissionReviews in and out, and the certify endpoint.
//! An AdmissionReview that parses is always allowed; whatever goes wrong is
//! an Event or a log line, never a blocked pod and never a 500 to the
//! apiserver. One that does not parse gets a 400 that says why.

use crate::certify::{Certifier, CertifyError};
use crate::events::{Events, Skip};
use crate::inject::{self, INJECT, PodDecision};
use crate::metrics::{DecisionLabels, Metrics, ResultLabel};
use crate::settings::InjectSettings;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Answers that are not AdmissionReviews: a status and a JSON message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Certify(#[from] CertifyError),
    #[error("this injector does not certify interceptors (no --certify)")]
    NoCertifier,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoCertifier => StatusCode::NOT_FOUND,
            ApiError::Certify(e) => match e {
                CertifyError::BadRequest(_) => StatusCode::BAD_REQUEST,
                CertifyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                CertifyError::Forbidden(_) => StatusCode::FORBIDDEN,
                CertifyError::Upstream(_) => StatusCode::BAD_GATEWAY,
                CertifyError::NotSigned(..) => StatusCode::GATEWAY_TIMEOUT,
            },
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// Which namespaces opted in by label.
pub enum Namespaces {
    Fixed(HashSet<String>),
    /// Looked up, and remembered for a short while: a pod burst in one
    /// namespace costs one lookup.
    Live {
        client: kube::Client,
        cache: Mutex<HashMap<String, (Instant, bool)>>,
    },
}

const NAMESPACE_CACHE_FOR: Duration = Duration::from_secs(10);

impl Namespaces {
    pub fn live(client: kube::Client) -> Namespaces {
        Namespaces::Live {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn opted_in(&self, namespace: &str) -> Result<bool, String> {
        match self {
            Namespaces::Fixed(set) => Ok(set.contains(namespace)),
            Namespaces::Live { client, cache } => {
                if let Some((at, v)) = cache.lock().ok().and_then(|c| c.get(namespace).copied())
                    && at.elapsed() < NAMESPACE_CACHE_FOR
                {
                    return Ok(v);
                }
                let ns = Api::<Namespace>::all(client.clone())
                    .get_opt(namespace)
                    .await
                    .map_err(|e| format!("reading namespace {namespace}: {e}"))?;
                let v = ns
                    .and_then(|n| n.metadata.labels)
                    .and_then(|l| l.get(INJECT).cloned())
                    .is_some_and(|v| v == "true");
                if let Ok(mut c) = cache.lock() {
                    c.insert(namespace.to_string(), (Instant::now(), v));
                }
                Ok(v)
            }
        }
    }
}

pub struct AppState {
    pub settings: RwLock<Arc<InjectSettings>>,
    pub namespaces: Namespaces,
    pub events: Events,
    pub certifier: Option<Certifier>,
    /// Private-CA mode: the per-namespace trust bundles.
    pub trust: Option<crate::trust::Bundles>,
    pub metrics: Metrics,
}

impl AppState {
    pub fn settings(&self) -> Arc<InjectSettings> {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// The routes the apiserver and the interceptors call (served over TLS).
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/certify", post(certify))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// The routes for probes and Prometheus (served in plain HTTP on the admin port).
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.encode(),
                )
            }),
        )
        .with_state(state)
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<AdmissionReview<DynamicObject>>, ApiError> {
    let started = Instant::now();
    let parsed = parse_review(&body);
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            state
                .metrics
                .admissions
                .get_or_create(&DecisionLabels {
                    kind: String::new(),
                    decision: "malformed",
                })
                .inc();
            return Err(e);
        }
    };
    let kind = request.kind.kind.clone();
    let (response, decision) = review(&state, &request).await;
    state
        .metrics
        .admissions
        .get_or_create(&DecisionLabels { kind, decision })
        .inc();
    state
        .metrics
        .admission_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(Json(response.into_review()))
}

fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ApiError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not an AdmissionReview: {e}")))?;
    if review.types.kind != "AdmissionReview"
        || !review.types.api_version.starts_with("admission.k8s.io/")
    {
        return Err(ApiError::BadRequest(format!(
            "expected an admission.k8s.io AdmissionReview, got {} {}",
            review.types.api_version, review.types.kind
        )));
    }
    review
        .try_into()
        .map_err(|_| ApiError::BadRequest("the AdmissionReview has no request".into()))
}

/// Decides, and always allows.
async fn review(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, &'static str) {
    let response = AdmissionResponse::from(request);
    let Some(object) = request
        .object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
    else {
        return (response, "ignored");
    };
    let namespace = request.namespace.clone().unwrap_or_default();
    let kind = request.kind.kind.as_str();
    let operation = match request.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        _ => return (response, "ignored"),
    };
    if kind == "Pod" {
        if operation != "CREATE" {
            return (response, "ignored");
        }
        return review_pod(state, request, response, &namespace, &object).await;
    }
    let ops = inject::workload_patch(kind, operation, &object);
    if ops.is_empty() {
        return (response, "ignored");
    }
    match with_patch(response.clone(), ops) {
        Ok(r) => (r, "patched"),
        Err(e) => {
            tracing::error!(kind, %namespace, "could not encode a workload patch: {e}");
            (response, "ignored")
        }
    }
}

async fn review_pod(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
    namespace: &str,
    pod: &Value,
) -> (AdmissionResponse, &'static str) {
    let annotated = pod
        .pointer(&format!("/metadata/annotations/{}", inject::escape(INJECT)))
        .and_then(Value::as_str);
    // Only an unannotated pod needs its namespace's label.
    let namespace_opted_in = match annotated {
        Some("true") => false,
        _ => match state.namespaces.opted_in(namespace).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%namespace, "{e}; treating the namespace as not opted in");
                false
            }
        },
    };
    let settings = state.settings();
    match inject::decide_pod(pod, namespace_opted_in, &settings) {
        PodDecision::Ignore => (response, "ignored"),
        PodDecision::Skip { reason, message } => {
            // A dry run must have no side effects (sideEffects: NoneOnDryRun).
            if !request.dry_run {
                state
                    .events
                    .report(Skip::about(namespace, pod, reason, &message));
            }
            tracing::info!(%namespace, reason, "skipped: {message}");
            (response, "skipped")
        }
        PodDecision::Inject { patch, warnings } => {
            // The pod will mount the namespace's trust bundle: it must exist
            // first (a dry run writes nothing, and needs nothing mounted).
            if let Some(bundles) = &state.trust
                && !request.dry_run
                && let Err(e) = bundles.ensure(namespace).await
            {
                state
                    .events
                    .report(Skip::about(namespace, pod, "NoTrustBundle", &e.to_string()));
                tracing::warn!(%namespace, "skipped: {e}");
                return (response, "skipped");
            }
            inject_response(response, patch, warnings, namespace)
        }
    }
}

fn inject_response(
    response: AdmissionResponse,
    patch: Vec<Value>,
    warnings: Vec<String>,
    namespace: &str,
) -> (AdmissionResponse, &'static str) {
    match with_patch(response.clone(), patch) {
        Ok(mut r) => {
            if !warnings.is_empty() {
                r.warnings = Some(warnings);
            }
            (r, "injected")
        }
        Err(e) => {
            tracing::error!(%namespace, "could not encode the pod patch: {e}");
            (response, "ignored")
        }
    }
}

fn with_patch(response: AdmissionResponse, ops: Vec<Value>) -> Result<AdmissionResponse, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(|e| e.to_string())?;
    response.with_patch(patch).map_err(|e| e.to_string())
}

#[derive(serde::Deserialize)]
struct CertifyRequest {
    csr: String,
}

async fn certify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let result = certify_inner(&state, &headers, &body).await;
    let label = match &result {
        Ok(_) => "issued",
        Err(ApiError::Certify(CertifyError::Forbidden(_) | CertifyError::Unauthenticated(_))) => {
            "refused"
        }
        Err(ApiError::BadRequest(_) | ApiError::Certify(CertifyError::BadRequest(_))) => {
            "malformed"
        }
        Err(_) => "failed",
    };
    state
        .metrics
        .certificates
        .get_or_create(&ResultLabel { result: label })
        .inc();
    if let Err(e) = &result {
        tracing::info!(result = label, "certify: {e}");
    }
    result
}

async fn certify_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let certifier = state.certifier.as_ref().ok_or(ApiError::NoCertifier)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or(CertifyError::Unauthenticated(
            "no bearer token: send the pod's projected ServiceAccount token".into(),
        ))?;
    let request: CertifyRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"csr\": \"<PEM>\"}}: {e}")))?;
    let certificate = certifier.certify(token, &request.csr).await?;
    Ok(Json(json!({ "certificate": certificate })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(opted_in_namespaces: &[&str]) -> Arc<AppState> {
        Arc::new(AppState {
            settings: RwLock::new(Arc::new(InjectSettings::example())),
            namespaces: Namespaces::Fixed(
                opted_in_namespaces.iter().map(|s| s.to_string()).collect(),
            ),
            events: Events::recorded(),
            certifier: None,
            trust: None,
            metrics: Metrics::default(),
        })
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/{name}",
            apiwitness_runtime::manifest_dir!()
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    async fn post(state: Arc<AppState>, path: &str, body: String) -> (StatusCode, Value) {
        let response = app(state)
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The patch bytes travel as a JSON array of numbers, which the
    /// apiserver's decoder takes for a `[]byte` as well as base64.
    fn decoded_patch(review: &Value) -> Vec<Value> {
        let bytes: Vec<u8> =
            serde_json::from_value(review["response"]["patch"].clone()).expect("a patch");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_opted_in_pod_is_patched_and_the_uid_echoed() {
        let (status, review) = post(state(&[]), "/mutate", fixture("pod-opted-in.json")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(
            review["response"]["uid"],
            "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
        );
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let ops = decoded_patch(&review);
        assert!(
            ops.iter().any(|o| o["path"] == "/spec/initContainers/1"
                && o["value"]["name"] == inject::INTERCEPTOR)
        );
    }

    #[tokio::test]
    async fn a_host_network_pod_is_allowed_unpatched_with_an_event() {
        let s = state(&[]);
        let (status, review) = post(s.clone(), "/mutate", fixture("pod-host-network.json")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], true);
        assert!(review["response"].get("patch").is_none());
        let events = s.events.taken();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "node-agent");
        assert!(events[0].message.contains("HostNetwork"));
    }

    #[tokio::test]
    async fn a_deployment_gets_its_template_annotated() {
        let (_, review) = post(state(&[]), "/mutate", fixture("deployment-annotated.json")).await;
        let ops = decoded_patch(&review);
        assert_eq!(ops[0]["path"], "/spec/template/metadata/annotations");
        assert_eq!(ops[0]["value"][INJECT], "true");
    }

    #[tokio::test]
    async fn a_namespace_label_opts_in_an_unannotated_pod() {
        let mut review: Value = serde_json::from_str(&fixture("pod-opted-in.json")).unwrap();
        review["request"]["object"]["metadata"]["annotations"] = json!({});
        let (_, out) = post(state(&[]), "/mutate", review.to_string()).await;
        assert!(out["response"].get("patch").is_none());
        let (_, out) = post(state(&["shop"]), "/mutate", review.to_string()).await;
        assert!(out["response"]["patch"].is_array());
    }

    #[tokio::test]
    async fn malformed_reviews_get_a_clear_400() {
        for (body, expected) in [
            ("{not json".to_string(), "not an AdmissionReview"),
            (
                fixture("not-a-review.json"),
                "expected an admission.k8s.io AdmissionReview, got v1 Pod",
            ),
            (fixture("review-without-request.json"), "has no request"),
        ] {
            let (status, out) = post(state(&[]), "/mutate", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(out["error"].as_str().unwrap().contains(expected), "{out}");
        }
    }

    #[tokio::test]
    async fn certify_without_a_certifier_or_token_says_why() {
        let (status, out) = post(state(&[]), "/certify", r#"{"csr": "x"}"#.into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(out["error"].as_str().unwrap().contains("does not certify"));
    }

    #[tokio::test]
    async fn metrics_count_decisions() {
        let s = state(&[]);
        post(s.clone(), "/mutate", fixture("pod-opted-in.json")).await;
        post(s.clone(), "/mutate", "{".into()).await;
        let text = s.metrics.encode();
        assert!(
            text.contains(
                r#"apiwitness_injector_admissions_total{kind="Pod",decision="injected"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"decision="malformed"} 1"#), "{text}");
    }
}
