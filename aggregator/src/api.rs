//! HTTP: ingest, coverage reports, health. Coverage knows nothing of HTTP;
//! this layer parses the request, calls it, and renders the answer.

use crate::auth::{self, AuthError, Authorizer, Caller};
use crate::ingest::{self, LineError};
use crate::report::{self, Format};
use crate::spec_live::SharedIndex;
use crate::store::{IngestItem, IngestOutcome, Scope, Store, StoreError};
use apiwitness_record::DropReport;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub spec: Arc<SharedIndex>,
    /// `None` only with --insecure-no-auth.
    pub auth: Option<Arc<Authorizer>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the pages that watch for new records.
    pub live: Arc<crate::live::Live>,
    /// Stores ingested batches, several to a commit.
    pub committer: crate::committer::Committer,
}

/// Every error answers JSON `{"error": "..."}` with a status that says whose
/// fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    /// The store failed: the client should retry (an interceptor will).
    #[error("{0}")]
    Unavailable(String),
    /// A batch compressed in a way this aggregator does not read: an
    /// interceptor falls back to gzip.
    #[error("{0}")]
    UnsupportedEncoding(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Ambiguous(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::NoToken | AuthError::Unauthenticated(_) => {
                ApiError::Unauthorized(e.to_string())
            }
            AuthError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            AuthError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// The caller, when authentication is on.
pub(crate) async fn caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    match &state.auth {
        None => Ok(None),
        Some(auth) => Ok(Some(auth.authenticate(auth::bearer(headers)?).await?)),
    }
}

pub(crate) async fn check_read(
    state: &AppState,
    caller: &Option<Caller>,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    match (&state.auth, caller) {
        (Some(auth), Some(caller)) => Ok(auth.may_read(caller, namespace).await?),
        _ => Ok(()),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/ingest", post(ingest))
        .route("/audit", post(audit_events))
        .route("/coverage", get(coverage))
        .route("/coverage/{pod}", get(coverage_of_pod))
        .route("/records/{id}", get(record))
        .route(
            "/coverage/{namespace}/{pod}",
            get(coverage_of_namespaced_pod),
        )
        .route(
            "/provenance/namespaces/{namespace}/{resource}/{name}/{view}",
            get(crate::api_provenance::namespaced),
        )
        .route(
            "/provenance/{resource}/{name}/{view}",
            get(crate::api_provenance::cluster_scoped),
        )
        .route("/scopes", get(crate::api_browse::scopes))
        .route("/spec/operations", get(crate::api_browse::operations))
        .route(
            "/spec/operations/{id}/fields",
            get(crate::api_browse::operation_fields),
        )
        .route("/objects", get(crate::api_browse::objects))
        .route("/events", get(crate::api_browse::events))
        .merge(crate::ui::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .spec_operations
        .set(state.spec.get().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.spec.get().is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no OpenAPI spec loaded yet",
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

#[derive(Debug, serde::Serialize)]
struct IngestAnswer {
    #[serde(flatten)]
    outcome: IngestOutcome,
    drop_reports: usize,
    errors: Vec<LineError>,
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the store task failed: {e}")))?
        .map_err(ApiError::from)
}

async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let encoding = ingest::Encoding::of_header(
        headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("(not text)")),
    )
    .map_err(|e| ApiError::UnsupportedEncoding(e.to_string()))?;
    let writer = caller(&state, &headers).await?;
    let text =
        ingest::decompress(&body, encoding).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut batch = ingest::parse_batch(&text);
    if let Some(writer) = &writer {
        let mut refused = Vec::new();
        batch.items.retain(|item| {
            match auth::may_write(writer, &item.pod_namespace, &item.pod_name) {
                Ok(()) => true,
                Err(error) => {
                    refused.push(LineError {
                        line: item.line_number,
                        error,
                    });
                    false
                }
            }
        });
        batch.drops.retain(|(line, d)| {
            match auth::may_write(writer, &d.pod.namespace, &d.pod.name) {
                Ok(()) => true,
                Err(error) => {
                    refused.push(LineError { line: *line, error });
                    false
                }
            }
        });
        batch.errors.extend(refused);
        batch.errors.sort_by_key(|e| e.line);
    }
    let drop_reports = batch.drops.len();
    let drops: Vec<_> = batch.drops.into_iter().map(|(_, d)| d).collect();
    // Kept as it came only when every line of it is stored as it came: a
    // malformed or refused line stays out of the store, and a line whose
    // protobuf bodies ingest decoded is stored as written again.
    let received =
        (encoding == ingest::Encoding::Zstd && batch.errors.is_empty() && batch.rewritten == 0)
            .then(|| body.to_vec());
    let outcome = store_batch(
        &state,
        "interceptor",
        batch.items,
        drops,
        received,
        batch.errors.len(),
    )
    .await?;
    state.metrics.drop_reports.inc_by(drop_reports as u64);
    // The sidecar makes its records for the format stated here.
    let format = [(
        apiwitness_record::FORMAT_HEADER,
        apiwitness_record::FORMAT_VERSION.to_string(),
    )];
    Ok((
        format,
        Json(IngestAnswer {
            outcome,
            drop_reports,
            errors: batch.errors,
        }),
    ))
}

/// Stores a batch through the committer, and counts it: the metrics, the
/// raw-record gauge and the pages that watch for new records.
async fn store_batch(
    state: &AppState,
    source: &'static str,
    items: Vec<IngestItem>,
    drops: Vec<DropReport>,
    received: Option<Vec<u8>>,
    refused_lines: usize,
) -> Result<IngestOutcome, ApiError> {
    let outcome = state.committer.ingest(items, drops, received).await?;
    state
        .metrics
        .count_ingest(source, outcome.accepted, outcome.duplicates, refused_lines);
    state.metrics.raw_records.inc_by(outcome.accepted as i64);
    state.live.ingested(outcome.accepted);
    Ok(outcome)
}

/// The audit webhook backend: an `audit.k8s.io/v1` EventList per request.
async fn audit_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<IngestAnswer>, ApiError> {
    if let (Some(auth), Some(caller)) = (&state.auth, caller(&state, &headers).await?) {
        auth.may_send_audit(&caller).await?;
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".into()))?;
    let parsed = crate::audit::parse_event_list(text).map_err(ApiError::BadRequest)?;
    let outcome = store_batch(
        &state,
        "audit",
        parsed.items,
        Vec::new(),
        None,
        parsed.errors.len(),
    )
    .await?;
    Ok(Json(IngestAnswer {
        outcome,
        drop_reports: 0,
        errors: parsed.errors,
    }))
}

#[derive(Debug, Deserialize, Default)]
pub struct CoverageQuery {
    #[serde(flatten)]
    scope: Scope,
    format: Option<Format>,
    /// The release APISnoop's format names (`format=apisnoop`).
    release: Option<String>,
}

fn format_of(query: Option<Format>, headers: &HeaderMap) -> Format {
    query.unwrap_or_else(|| {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.starts_with("text/plain") {
            Format::Text
        } else if accept.contains("xml") {
            Format::Junit
        } else {
            Format::Json
        }
    })
}

async fn render(
    state: AppState,
    scope: Scope,
    format: Format,
    release: Option<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let index = state.spec.get();
    let (body, content_type) = blocking(move || {
        let mut report = report::from_store(store.as_ref(), scope, &index)?;
        report.release = release;
        Ok(report.render(format, &index))
    })
    .await?;
    state.metrics.reports.inc();
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn coverage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CoverageQuery>,
) -> Result<Response, ApiError> {
    let reader = caller(&state, &headers).await?;
    let namespace = q.scope.namespace.as_deref().filter(|n| !n.is_empty());
    check_read(&state, &reader, namespace).await?;
    let format = format_of(q.format, &headers);
    render(state, q.scope, format, q.release).await
}

/// One stored record, as it was ingested: what a version's `record` names.
async fn record(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reader = caller(&state, &headers).await?;
    let store = state.store.clone();
    let wanted = id.clone();
    let found = blocking(move || store.record(&wanted)).await?;
    let missing = || {
        ApiError::NotFound(format!(
            "no record {id:?}: never stored, or removed by retention"
        ))
    };
    let Some(stored) = found else {
        return Err(missing());
    };
    // Not found rather than forbidden: a reader learns nothing of a
    // namespace it may not read.
    let namespace = Some(stored.pod_namespace.as_str()).filter(|n| !n.is_empty());
    if check_read(&state, &reader, namespace).await.is_err() {
        return Err(missing());
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], stored.line).into_response())
}

async fn coverage_of_pod(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pod): Path<String>,
    Query(q): Query<CoverageQuery>,
) -> Result<Response, ApiError> {
    let reader = caller(&state, &headers).await?;
    let store = state.store.clone();
    let name = pod.clone();
    let mut namespaces = blocking(move || store.namespaces_of_pod(&name)).await?;
    // Only the namespaces the reader may see count, or exist.
    let mut readable = Vec::new();
    for ns in namespaces.drain(..) {
        if check_read(&state, &reader, Some(&ns)).await.is_ok() {
            readable.push(ns);
        }
    }
    let namespaces = readable;
    let namespace = match namespaces.as_slice() {
        [] => {
            return Err(ApiError::NotFound(format!(
                "no records of a pod named {pod:?}"
            )));
        }
        [one] => one.clone(),
        many => {
            return Err(ApiError::Ambiguous(format!(
                "pods named {pod:?} exist in several namespaces ({}): ask for /coverage/<namespace>/{pod}",
                many.join(", ")
            )));
        }
    };
    let scope = Scope {
        namespace: Some(namespace),
        pod: Some(pod),
        ..q.scope
    };
    render(state, scope, format_of(q.format, &headers), q.release).await
}

async fn coverage_of_namespaced_pod(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, pod)): Path<(String, String)>,
    Query(q): Query<CoverageQuery>,
) -> Result<Response, ApiError> {
    let reader = caller(&state, &headers).await?;
    check_read(&state, &reader, Some(&namespace)).await?;
    let scope = Scope {
        namespace: Some(namespace),
        pod: Some(pod),
        ..q.scope
    };
    render(state, scope, format_of(q.format, &headers), q.release).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::{Conformance, OperationIndex};
    use crate::store::sqlite::SqliteStore;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    pub(crate) fn state(dir: &std::path::Path) -> AppState {
        let doc = serde_json::json!({"paths": {"/api/v1/namespaces/{namespace}/configmaps": {
            "get": {"operationId": "listCoreV1NamespacedConfigMap"}}}});
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("t.db")).unwrap());
        AppState {
            committer: crate::committer::Committer::start(store.clone()).unwrap(),
            store,
            spec: Arc::new(SharedIndex::new(OperationIndex::from_documents(
                [&doc],
                &Conformance::default(),
                &Default::default(),
            ))),
            auth: None,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            live: Default::default(),
        }
    }

    pub(crate) async fn call(
        app: Router,
        request: axum::http::Request<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    pub(crate) const LINE: &str = r#"{"kind":"exchange","format":1,"id":"r1","pod":{"namespace":"ns","name":"web-1"},"started_at":"2026-11-24T06:00:00Z","duration_us":5,"method":"GET","path":"/api/v1/namespaces/ns/configmaps","status":200}"#;

    #[tokio::test]
    async fn ingest_then_report_a_pod() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(state(dir.path()));
        let post = |body: String| {
            axum::http::Request::post("/ingest")
                .body(Body::from(body))
                .unwrap()
        };
        let (status, answer) = call(app.clone(), post(format!("{LINE}\ngarbage\n"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["accepted"], 1);
        assert_eq!(answer["errors"][0]["line"], 2);
        let (_, again) = call(app.clone(), post(LINE.to_string())).await;
        assert_eq!(
            (again["accepted"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(1))
        );
        // Every answer to a batch states the format this aggregator reads.
        let answer = app.clone().oneshot(post(LINE.to_string())).await.unwrap();
        assert_eq!(
            answer.headers()[apiwitness_record::FORMAT_HEADER],
            apiwitness_record::FORMAT_VERSION.to_string().as_str()
        );

        let (status, report) = call(
            app.clone(),
            axum::http::Request::get("/coverage/web-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            report["operations"][0]["operation_id"],
            "listCoreV1NamespacedConfigMap"
        );
        assert_eq!(report["operations"][0]["hits"], 1);
        let (status, error) = call(
            app,
            axum::http::Request::get("/coverage/nobody")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error["error"].as_str().unwrap().contains("nobody"));
    }

    #[tokio::test]
    async fn metrics_count_what_ingest_did() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(state(dir.path()));
        let post = axum::http::Request::post("/ingest")
            .body(Body::from(format!("{LINE}\ngarbage\n")))
            .unwrap();
        let _ = call(app.clone(), post).await;
        let response = app
            .oneshot(
                axum::http::Request::get("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let text = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(
            text.contains("apiwitness_aggregator_records_accepted_total{source=\"interceptor\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apiwitness_aggregator_lines_refused_total{source=\"interceptor\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("apiwitness_aggregator_spec_operations 1"),
            "{text}"
        );
        assert!(
            text.contains("apiwitness_aggregator_raw_records 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_gzip_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let request = axum::http::Request::post("/ingest")
            .header("content-encoding", "gzip")
            .body(Body::from("plain"))
            .unwrap();
        let (status, error) = call(app(state(dir.path())), request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error["error"].as_str().unwrap().contains("gzip"));
    }

    #[tokio::test]
    async fn each_record_reads_back_as_stored_whether_its_zstd_batch_is_kept_as_it_came_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(state(dir.path()));
        let line = |id: &str| LINE.replace(r#""id":"r1""#, &format!(r#""id":"{id}""#));
        let drops = r#"{"kind":"drop_report","format":1,"id":"d1","pod":{"namespace":"ns","name":"web-1"},"dropped":3,"first_dropped_at":"2026-11-24T06:00:00Z","last_dropped_at":"2026-11-24T06:00:01Z"}"#;
        let post = |text: String| {
            axum::http::Request::post("/ingest")
                .header("content-encoding", "zstd")
                .body(Body::from(
                    zstd::bulk::compress(text.as_bytes(), 1).unwrap(),
                ))
                .unwrap()
        };
        // Every line stored: the batch is kept as it came, its lines
        // numbered with the blank one and a drop report among them.
        let whole = format!("{}\r\n\n{drops}\n{}", line("a"), line("b"));
        let (status, answer) = call(app.clone(), post(whole.clone())).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["drop_reports"].as_u64()),
            (Some(2), Some(1))
        );
        // A malformed line: only the records' lines are kept.
        let (_, answer) = call(
            app.clone(),
            post(format!("{}\ngarbage\n{}\n", line("c"), line("d"))),
        )
        .await;
        assert_eq!(answer["accepted"], 2, "{answer}");
        for id in ["a", "b", "c", "d"] {
            let response = app
                .clone()
                .oneshot(
                    axum::http::Request::get(format!("/records/{id}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{id}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(std::str::from_utf8(&body).unwrap(), line(id), "{id}");
        }
        let blobs: Vec<Vec<u8>> = rusqlite::Connection::open(dir.path().join("t.db"))
            .unwrap()
            .prepare("SELECT lines FROM record_batches ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let texts: Vec<Vec<u8>> = blobs
            .iter()
            .map(|b| zstd::stream::decode_all(b.as_slice()).unwrap())
            .collect();
        assert_eq!(texts[0], whole.as_bytes(), "kept as it came");
        assert_eq!(
            texts[1],
            format!("{}\n{}\n", line("c"), line("d")).as_bytes()
        );

        // A protobuf body shipped as it came is stored decoded: the record
        // reads back as written again, and the batch is not kept as it came.
        let mut exchange: apiwitness_record::Exchange = serde_json::from_str(&line("e")).unwrap();
        exchange.path = "/api/v1/namespaces/ns/pods".into();
        let pods = include_bytes!("../../interceptor/benches/data/pods-50.pb");
        exchange.response_body = Some(apiwitness_record::Body {
            content: apiwitness_record::BodyContent::Protobuf(
                apiwitness_record::protobuf::shipped_body(
                    apiwitness_record::protobuf::envelope_kind(pods).unwrap(),
                    pods,
                ),
            ),
            size: pods.len() as u64,
            truncated: false,
            content_encoding: None,
        });
        let mut sent = Vec::new();
        exchange.write_line(&mut sent);
        let sent = String::from_utf8(sent).unwrap();
        let (status, answer) = call(app.clone(), post(sent.clone())).await;
        assert_eq!(
            (status, &answer["accepted"]),
            (StatusCode::OK, &serde_json::json!(1)),
            "{answer}"
        );
        let response = app
            .clone()
            .oneshot(
                axum::http::Request::get("/records/e")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let stored = std::str::from_utf8(&body).unwrap();
        assert!(
            stored.contains(r#""response_body":{"json":{"kind":"PodList","apiVersion":"v1","#),
            "{}",
            &stored[..stored.len().min(400)]
        );
        assert!(!stored.contains("\"base64\""));
    }

    #[tokio::test]
    async fn a_zstd_batch_is_read_and_an_unknown_encoding_refused_with_415() {
        let dir = tempfile::tempdir().unwrap();
        let line = r#"{"kind":"exchange","format":1,"id":"z1","pod":{"namespace":"ns","name":"p"},"started_at":"2026-11-24T06:00:00Z","duration_us":1,"method":"GET","path":"/api/v1/namespaces/ns/configmaps","status":200}"#;
        let request = axum::http::Request::post("/ingest")
            .header("content-encoding", "zstd")
            .body(Body::from(
                zstd::bulk::compress(line.as_bytes(), 1).unwrap(),
            ))
            .unwrap();
        let (status, answer) = call(app(state(dir.path())), request).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["accepted"], 1, "{answer}");

        let request = axum::http::Request::post("/ingest")
            .header("content-encoding", "br")
            .body(Body::from(line))
            .unwrap();
        let (status, error) = call(app(state(dir.path())), request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            error["error"].as_str().unwrap().contains("\"br\""),
            "{error}"
        );
    }
}
