//! The web UI's files, embedded in the binary so that it works offline and
//! with no CDN: plain HTML, CSS and ES modules, with no build step. The
//! files hold no data; every view reads the JSON routes, under their
//! authorization.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/api.js"),
    ),
    (
        "coverage.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/coverage.js"),
    ),
    (
        "sunburst.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/sunburst.js"),
    ),
    (
        "provenance.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/provenance.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/dom.js"),
    ),
];

/// Only this origin's scripts, styles and requests; never framed.
const SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CONTENT_SECURITY_POLICY, SECURITY_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                // Small files: always revalidated, so an upgrade shows at once.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no file {name:?} in the UI")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(path: &str) -> (StatusCode, HeaderPairs, String) {
        let response = routes::<()>()
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    type HeaderPairs = Vec<(String, String)>;

    fn header_of<'a>(headers: &'a HeaderPairs, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn the_page_and_its_modules_are_served_with_a_strict_policy() {
        let (status, headers, body) = get_path("/ui/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("<script type=\"module\" src=\"app.js\">"),
            "{body}"
        );
        assert!(
            header_of(&headers, "content-security-policy")
                .unwrap()
                .contains("script-src 'self'")
        );
        // Every module the page imports is served, so no import 404s.
        for (name, _, text) in ASSETS {
            for imported in text
                .split("from \"./")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
            {
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == imported),
                    "{name} imports {imported}, which is not embedded"
                );
            }
        }
        let (status, headers, _) = get_path("/ui/sunburst.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_404_and_the_root_leads_to_the_ui() {
        let (status, _, body) = get_path("/ui/../../etc/passwd").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _, _) = get_path("/ui/nothing.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) = get_path("/").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(header_of(&headers, "location"), Some("/ui/"));
    }
}
