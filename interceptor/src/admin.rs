//! The admin port: `/healthz`, `/readyz` (a certificate is loaded and the
//! listeners are up: what the native sidecar's startupProbe waits for) and
//! Prometheus `/metrics`.

use crate::metrics::Metrics;
use crate::tls::RotatingResolver;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub resolver: Arc<RotatingResolver>,
    pub listening: Arc<AtomicBool>,
}

pub fn app(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match (
        state.resolver.is_loaded(),
        state.listening.load(Ordering::Acquire),
    ) {
        (true, true) => (StatusCode::OK, "ok"),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate yet",
        ),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not listening yet"),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state() -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            resolver: Arc::new(RotatingResolver::default()),
            listening: Arc::new(AtomicBool::new(true)),
        }
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn not_ready_without_a_certificate() {
        let (status, body) = get(app(state()), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("certificate"));
        assert_eq!(get(app(state()), "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let s = state();
        s.metrics.dropped.inc_by(3);
        let (status, body) = get(app(s), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("apiwitness_interceptor_records_dropped_total 3"),
            "{body}"
        );
    }
}
