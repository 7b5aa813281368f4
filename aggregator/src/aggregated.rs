//! Provenance as a Kubernetes aggregated API, so that
//! `kubectl get --raw /apis/provenance.apiwitness.io/v1/namespaces/default/postgreses/client25/versions`
//! works against the real apiserver. kube-apiserver authenticates the user
//! and proxies here over TLS with its front-proxy client certificate; the
//! user's identity comes from its headers ([`crate::front_proxy`]), and the
//! user must be allowed to get the object itself (a SubjectAccessReview),
//! as on the aggregator's own routes.

use crate::api::{ApiError, AppState};
use crate::api_provenance::{ViewQuery, answer};
use crate::front_proxy::{FrontProxy, common_name};
use crate::provenance::ObjectQuery;
use apiwitness_selfcert::Resolver;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "provenance.apiwitness.io";
pub const VERSION: &str = "v1";

#[derive(Clone)]
struct Aggregated {
    state: AppState,
    front_proxy: Arc<FrontProxy>,
}

/// Errors as the Kubernetes `Status` that kubectl prints.
struct StatusError(ApiError);

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        let (code, reason) = match &self.0 {
            ApiError::BadRequest(_) => (400, "BadRequest"),
            ApiError::Unauthorized(_) => (401, "Unauthorized"),
            ApiError::Forbidden(_) => (403, "Forbidden"),
            ApiError::NotFound(_) => (404, "NotFound"),
            ApiError::Ambiguous(_) => (409, "Conflict"),
            ApiError::Unavailable(_) => (503, "ServiceUnavailable"),
            ApiError::UnsupportedEncoding(_) => (415, "UnsupportedMediaType"),
        };
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.0.to_string(), "reason": reason, "code": code});
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(body),
        )
            .into_response()
    }
}

fn group_version() -> serde_json::Value {
    json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION})
}

pub fn router(state: AppState, front_proxy: Arc<FrontProxy>) -> Router {
    let base = format!("/apis/{GROUP}/{VERSION}");
    Router::new()
        .route(
            "/apis",
            get(|| async {
                Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": GROUP, "versions": [group_version()], "preferredVersion": group_version()}]}))
            }),
        )
        .route(
            &format!("/apis/{GROUP}"),
            get(|| async {
                Json(json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
                    "versions": [group_version()], "preferredVersion": group_version()}))
            }),
        )
        .route(
            &base,
            get(|| async {
                // The paths below name any resource of the cluster, so there is
                // no fixed resource to list.
                Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": format!("{GROUP}/{VERSION}"), "resources": []}))
            }),
        )
        .route(&format!("{base}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{view}}"), get(namespaced))
        .route(&format!("{base}/{{resource}}/{{name}}/{{view}}"), get(cluster_scoped))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(Aggregated { state, front_proxy })
}

fn reader(a: &Aggregated, headers: &HeaderMap) -> Result<Option<crate::auth::Caller>, StatusError> {
    if a.state.auth.is_none() {
        return Ok(None);
    }
    a.front_proxy.caller(headers).map(Some).ok_or_else(|| {
        StatusError(ApiError::Unauthorized(
            "no user in the front-proxy headers".into(),
        ))
    })
}

async fn namespaced(
    State(a): State<Aggregated>,
    headers: HeaderMap,
    Path((namespace, resource, name, view)): Path<(String, String, String, String)>,
    Query(q): Query<ViewQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, StatusError> {
    let reader = reader(&a, &headers)?;
    let query = ObjectQuery {
        namespace,
        resource,
        name,
    };
    answer(a.state, reader, query, &view, q, raw.unwrap_or_default())
        .await
        .map_err(StatusError)
}

async fn cluster_scoped(
    State(a): State<Aggregated>,
    headers: HeaderMap,
    Path((resource, name, view)): Path<(String, String, String)>,
    Query(q): Query<ViewQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, StatusError> {
    let reader = reader(&a, &headers)?;
    let query = ObjectQuery {
        namespace: String::new(),
        resource,
        name,
    };
    answer(a.state, reader, query, &view, q, raw.unwrap_or_default())
        .await
        .map_err(StatusError)
}

/// Serves `router` over TLS, requiring a front-proxy client certificate of
/// an allowed name, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    resolver: Arc<Resolver>,
    front_proxy: Arc<FrontProxy>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::front_proxy::FrontProxyError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| crate::front_proxy::FrontProxyError(e.to_string()))?
    .with_client_cert_verifier(front_proxy.client_verifier()?)
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { tracing::warn!("aggregated API accept: {e}"); continue; }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, router, front_proxy) =
            (acceptor.clone(), router.clone(), front_proxy.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "aggregated API: TLS refused: {e}");
                    return;
                }
                Err(_) => return,
            };
            let name = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| common_name(c));
            if !name.as_deref().is_some_and(|n| front_proxy.allows(n)) {
                tracing::info!(%peer, ?name, "aggregated API: a client certificate not allowed to proxy");
                return;
            }
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                .await;
        });
    }
}
