//! HTTP for what a browser needs beyond the reports: the scopes a reader
//! may pick, the spec's operations and their fields, an object search, and
//! a stream that says when records arrive. Each answer holds only what the
//! reader may read, under the same authorization as the reports.

use crate::api::{ApiError, AppState, blocking, caller, check_read};
use crate::auth::Caller;
use crate::spec::{Operation, level_name};
use crate::store::ObjectFilter;
use apiwitness_record::ApiRequest;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::time::Duration;

/// An object search returns at most this many objects.
const OBJECTS_LIMIT: usize = 200;

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Pod {
    namespace: String,
    name: String,
    workload: String,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Workload {
    namespace: String,
    name: String,
}

/// `GET /scopes`: the namespaces, pods, workloads and clients with traffic
/// that the reader may read, and whether it may read the whole cluster.
pub async fn scopes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let reader = caller(&state, &headers).await?;
    let store = state.store.clone();
    let origins = blocking(move || store.origins()).await?;
    // One review per namespace, all at once: a cluster of many namespaces
    // is not read one round trip after another.
    let namespaces: BTreeSet<&str> = origins.iter().map(|o| o.namespace.as_str()).collect();
    let decisions = futures_util::future::join_all(
        namespaces
            .iter()
            .map(|ns| check_read(&state, &reader, Some(ns))),
    )
    .await;
    let readable: BTreeMap<String, bool> = namespaces
        .iter()
        .zip(decisions)
        .map(|(ns, decision)| (ns.to_string(), decision.is_ok()))
        .collect();
    let cluster = check_read(&state, &reader, None).await.is_ok();
    let mut pods = BTreeSet::new();
    let mut workloads = BTreeSet::new();
    let mut clients = BTreeSet::new();
    for o in origins.into_iter().filter(|o| readable[&o.namespace]) {
        if !o.workload.is_empty() {
            workloads.insert(Workload {
                namespace: o.namespace.clone(),
                name: o.workload.clone(),
            });
        }
        if !o.client.is_empty() {
            clients.insert(o.client);
        }
        pods.insert(Pod {
            namespace: o.namespace,
            name: o.pod,
            workload: o.workload,
        });
    }
    let namespaces: Vec<&String> = readable
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(ns, _)| ns)
        .collect();
    Ok(Json(json!({
        "cluster": cluster,
        "namespaces": namespaces,
        "pods": pods,
        "workloads": workloads,
        "clients": clients,
    })))
}

/// The resource an operation acts on, and its subresource, from its path:
/// what a sunburst's third ring groups operations by. A path that names no
/// resource (discovery, `/version`) is its own.
fn resource_of(op: &Operation) -> (String, String) {
    match ApiRequest::parse(&op.method, &op.path, "", None) {
        Ok(request) if request.is_resource_request && !request.resource.is_empty() => {
            (request.resource, request.subresource)
        }
        _ => (op.path.clone(), String::new()),
    }
}

/// `GET /spec/operations`: every operation of the live spec, so that what
/// nothing called can be drawn too.
pub async fn operations(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).await?;
    let index = state.spec.get();
    let mut operations: Vec<Value> = index
        .operations()
        .map(|op| {
            let (resource, subresource) = resource_of(op);
            json!({
                "operation_id": op.operation_id,
                "method": op.method,
                "path": op.path,
                "level": level_name(&op.level),
                "group": op.group,
                "version": op.version,
                "kind": op.kind,
                "resource": resource,
                "subresource": subresource,
                "action": op.action,
                "deprecated": op.deprecated,
                "eligible": op.eligible,
                "pending_eligible": op.pending_eligible,
                "crd": op.crd,
                "aggregated": op.aggregated,
                "fields": op.request_fields.as_ref().map(|f| f.all.len()),
            })
        })
        .collect();
    operations.sort_by(|a, b| a["operation_id"].as_str().cmp(&b["operation_id"].as_str()));
    Ok(Json(json!({ "operations": operations })))
}

/// `GET /spec/operations/{id}/fields`: the fields its request body's schema
/// names, which a field table shows as hit or not.
pub async fn operation_fields(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers).await?;
    let index = state.spec.get();
    let op = index
        .operations()
        .find(|op| op.operation_id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no operation {id:?} in the spec")))?;
    let fields = op
        .request_fields
        .as_ref()
        .map(|f| f.all.clone())
        .unwrap_or_default();
    Ok(Json(json!({ "operation_id": id, "fields": fields })))
}

/// `GET /objects?kind=&namespace=&name=`: objects with recorded versions,
/// latest first, of the resources and namespaces the reader may get.
pub async fn objects(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<ObjectFilter>,
) -> Result<Json<Value>, ApiError> {
    let reader = caller(&state, &headers).await?;
    let store = state.store.clone();
    // One more than shown says whether there were more.
    let found = blocking(move || store.objects(&filter, OBJECTS_LIMIT + 1)).await?;
    let truncated = found.len() > OBJECTS_LIMIT;
    let mut allowed: BTreeMap<(String, String, String), bool> = BTreeMap::new();
    let mut shown = Vec::new();
    for object in found.into_iter().take(OBJECTS_LIMIT) {
        let key = (
            object.group.clone(),
            object.resource.clone(),
            object.namespace.clone(),
        );
        let ok = match allowed.get(&key) {
            Some(ok) => *ok,
            None => {
                let ok = may_get(&state, &reader, &key).await;
                allowed.insert(key, ok);
                ok
            }
        };
        if ok {
            shown.push(object);
        }
    }
    Ok(Json(json!({ "objects": shown, "truncated": truncated })))
}

async fn may_get(
    state: &AppState,
    reader: &Option<Caller>,
    (group, resource, namespace): &(String, String, String),
) -> bool {
    match (&state.auth, reader) {
        (Some(auth), Some(reader)) => {
            let namespace = Some(namespace.as_str()).filter(|n| !n.is_empty());
            auth.may_get_resource(reader, group, resource, namespace)
                .await
                .is_ok()
        }
        _ => true,
    }
}

/// `GET /events`: a server-sent `ingested` event whenever records are
/// stored, carrying the count stored since the aggregator started.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller(&state, &headers).await?;
    let mut receiver = state.live.subscribe();
    receiver.mark_changed();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        let count = *receiver.borrow_and_update();
        let event = Event::default().event("ingested").data(count.to_string());
        // A burst of batches wakes a page four times a second at most.
        tokio::time::sleep(Duration::from_millis(250)).await;
        Some((Ok(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use crate::api::app;
    use crate::api::tests::{LINE, call, state};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A GET of a ConfigMap by another pod and client, whose response is
    /// the object: one version of it.
    const READ: &str = r#"{"kind":"exchange","format":1,"id":"r2","pod":{"namespace":"team","name":"api-0","workload":{"kind":"StatefulSet","name":"api"}},"started_at":"2026-11-24T07:00:00Z","duration_us":5,"method":"GET","path":"/api/v1/namespaces/team/configmaps/settings","status":200,"user_agent":"reader/1.0","response_content_type":"application/json","response_body":{"json":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"team","uid":"u-1","resourceVersion":"7"},"data":{"a":"1"}},"size":120}}"#;

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    async fn filled(dir: &std::path::Path) -> axum::Router {
        let app = app(state(dir));
        let post = Request::post("/ingest")
            .body(Body::from(format!("{LINE}\n{READ}\n")))
            .unwrap();
        let (status, answer) = call(app.clone(), post).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (StatusCode::OK, Some(2))
        );
        app
    }

    #[tokio::test]
    async fn scopes_list_the_namespaces_pods_workloads_and_clients_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (status, scopes) = call(filled(dir.path()).await, get("/scopes")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(scopes["cluster"], true);
        assert_eq!(scopes["namespaces"], serde_json::json!(["ns", "team"]));
        assert_eq!(
            scopes["pods"],
            serde_json::json!([
                {"namespace": "ns", "name": "web-1", "workload": ""},
                {"namespace": "team", "name": "api-0", "workload": "StatefulSet/api"}
            ])
        );
        assert_eq!(
            scopes["workloads"],
            serde_json::json!([{"namespace": "team", "name": "StatefulSet/api"}])
        );
        assert_eq!(scopes["clients"], serde_json::json!(["reader/1.0"]));
    }

    #[tokio::test]
    async fn the_spec_lists_every_operation_with_its_resource_and_an_unknown_one_is_a_404() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(state(dir.path()));
        let (status, spec) = call(app.clone(), get("/spec/operations")).await;
        assert_eq!(status, StatusCode::OK);
        let op = &spec["operations"][0];
        assert_eq!(op["operation_id"], "listCoreV1NamespacedConfigMap");
        assert_eq!(op["resource"], "configmaps");
        assert_eq!(op["level"], "stable");
        let (status, error) = call(app, get("/spec/operations/noSuchThing/fields")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error["error"].as_str().unwrap().contains("noSuchThing"));
    }

    #[tokio::test]
    async fn objects_are_found_by_kind_namespace_and_part_of_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let app = filled(dir.path()).await;
        for query in [
            "/objects",
            "/objects?kind=ConfigMap",
            "/objects?kind=configmaps&namespace=team&name=sett",
        ] {
            let (status, found) = call(app.clone(), get(query)).await;
            assert_eq!(status, StatusCode::OK, "{query}");
            assert_eq!(
                found["objects"].as_array().unwrap().len(),
                1,
                "{query}: {found}"
            );
            assert_eq!(found["objects"][0]["name"], "settings");
            assert_eq!(found["objects"][0]["versions"], 1);
        }
        for query in [
            "/objects?kind=Secret",
            "/objects?namespace=ns",
            "/objects?name=nothing",
        ] {
            let (_, found) = call(app.clone(), get(query)).await;
            assert_eq!(found["objects"], serde_json::json!([]), "{query}");
        }
    }

    #[tokio::test]
    async fn the_event_stream_says_when_records_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(state(dir.path()));
        let response = app.clone().oneshot(get("/events")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut body = response.into_body();
        // The first event tells the count at once, so a page starts in step.
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&first),
            "event: ingested\ndata: 0\n\n"
        );
        let post = Request::post("/ingest").body(Body::from(LINE)).unwrap();
        let _ = call(app, post).await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&next),
            "event: ingested\ndata: 1\n\n"
        );
    }
}
