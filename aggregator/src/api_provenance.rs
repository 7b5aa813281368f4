//! HTTP for provenance: `/provenance/namespaces/{ns}/{resource}/{name}/{view}`
//! and `/provenance/{resource}/{name}/{view}` for cluster-scoped objects,
//! where `{resource}` is the plural resource or the Kind (optionally
//! `.group`), and `{view}` is `versions`, `spechistory`, `diff` or `bisect`.
//! Provenance itself knows nothing of HTTP: this layer reads the versions,
//! checks that the reader may get the object, and renders.

use crate::api::{ApiError, AppState, blocking, caller};
use crate::auth::Caller;
use crate::provenance::history::{self, HistoryError, Numbered};
use crate::provenance::{ObjectQuery, Version, yaml};
use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Deserialize, Default)]
pub struct ViewQuery {
    start: Option<usize>,
    end: Option<usize>,
    field: Option<String>,
    format: Option<String>,
    /// `versions?objects=true` includes each version's object.
    #[serde(default)]
    objects: bool,
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        match e {
            HistoryError::NoVersion(..) => ApiError::NotFound(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

pub async fn namespaced(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((namespace, resource, name, view)): Path<(String, String, String, String)>,
    Query(q): Query<ViewQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ObjectQuery {
        namespace,
        resource,
        name,
    };
    let reader = caller(&state, &headers).await?;
    answer(state, reader, query, &view, q, raw.unwrap_or_default()).await
}

pub async fn cluster_scoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((resource, name, view)): Path<(String, String, String)>,
    Query(q): Query<ViewQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = ObjectQuery {
        namespace: String::new(),
        resource,
        name,
    };
    let reader = caller(&state, &headers).await?;
    answer(state, reader, query, &view, q, raw.unwrap_or_default()).await
}

/// The answer for an authenticated `reader` (`None` only without
/// authentication): the bearer-token routes and the aggregated API both
/// come here.
pub async fn answer(
    state: AppState,
    reader: Option<Caller>,
    query: ObjectQuery,
    view: &str,
    q: ViewQuery,
    raw_query: String,
) -> Result<Response, ApiError> {
    if !["versions", "spechistory", "diff", "bisect"].contains(&view) {
        return Err(ApiError::NotFound(format!(
            "no view {view:?}: ask for versions, spechistory, diff or bisect"
        )));
    }
    if view == "bisect" {
        return bisect(state, reader, query, raw_query).await;
    }
    // Objects are most of the bytes: only a listing that asks reads them
    // all; a diff or a range of history loads its own below.
    let store = state.store.clone();
    let asked = query.clone();
    let objects = view == "versions" && q.objects;
    let keys_only = view == "diff";
    let (versions, attempts) = blocking(move || {
        // A diff orders the versions from the key columns alone, and
        // reads only the two it compares.
        let versions = if keys_only {
            store.version_keys(&asked)?
        } else {
            store.versions(&asked, objects)?
        };
        Ok((versions, store.attempts(&asked)?))
    })
    .await?;
    if versions.is_empty() && attempts.is_empty() {
        // Nothing was recorded of it: no group to ask the apiserver about.
        return Err(nothing_recorded(&state, &reader, &query).await);
    }
    let (group, resource) = versions
        .first()
        .map(|v| (v.group.clone(), v.resource.clone()))
        .or_else(|| {
            attempts
                .first()
                .map(|a| (a.group.clone(), a.resource.clone()))
        })
        .unwrap_or_default();
    authorize(&state, &reader, &query, &group, &resource).await?;
    let mut numbered = history::number(versions);
    let object = summary(&query, numbered.iter());
    match view {
        "versions" => {
            let listed: Vec<Value> = numbered
                .iter()
                .map(|n| {
                    let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                    if !q.objects
                        && let Some(o) = v.as_object_mut()
                    {
                        o.remove("object");
                    }
                    v
                })
                .collect();
            Ok(
                Json(json!({"object": object, "versions": listed, "attempts": attempts}))
                    .into_response(),
            )
        }
        "spechistory" => {
            let (start, end) = range(&numbered, q.start, q.end)?;
            let ordinals: Vec<usize> = (start..=end).collect();
            load_whole(&state, &mut numbered, &ordinals).await?;
            let specs: Vec<Value> = numbered[start - 1..end].iter().map(spec_entry).collect();
            Ok(Json(json!({"object": object, "spechistory": specs})).into_response())
        }
        "diff" => {
            let (Some(start), Some(end)) = (q.start, q.end) else {
                return Err(ApiError::BadRequest(
                    "diff needs start and end (version ordinals, from versions)".into(),
                ));
            };
            load_whole(&state, &mut numbered, &[start, end]).await?;
            let diff = history::diff(&numbered, start, end, q.field.as_deref())?;
            match q.format.as_deref() {
                None | Some("json") => Ok(Json(json!({
                    "object": object,
                    "start": start,
                    "end": end,
                    "field": diff.field,
                    "patch": diff.patch,
                    "changes": diff.changes,
                }))
                .into_response()),
                Some("yaml-diff") => {
                    let text = yaml::unified_diff(
                        &yaml::to_yaml(&diff.before),
                        &yaml::to_yaml(&diff.after),
                        &label(&numbered[start - 1]),
                        &label(&numbered[end - 1]),
                    );
                    Ok(
                        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
                            .into_response(),
                    )
                }
                Some("side-by-side") => Ok(Json(json!({
                    "object": object,
                    "start": start,
                    "end": end,
                    "labels": [label(&numbered[start - 1]), label(&numbered[end - 1])],
                    "field": diff.field,
                    "rows": yaml::side_by_side(
                        &yaml::to_yaml(&diff.before),
                        &yaml::to_yaml(&diff.after),
                    ),
                }))
                .into_response()),
                Some(other) => Err(ApiError::BadRequest(format!(
                    "no format {other:?}: json, yaml-diff or side-by-side"
                ))),
            }
        }
        _ => Err(ApiError::NotFound(format!("no view {view:?}"))),
    }
}

/// Bisect looks at every version's object. The store reads each object's
/// JSON text and the conditions are tested on it in place: a search rules
/// out most objects, and the rest are probed for the conditions' fields
/// without decoding the object. Only the first version found is read whole.
async fn bisect(
    state: AppState,
    reader: Option<Caller>,
    query: ObjectQuery,
    raw_query: String,
) -> Result<Response, ApiError> {
    let pairs = condition_pairs(&raw_query)?;
    let conditions = history::conditions(&pairs)?;
    let store = state.store.clone();
    let asked = query.clone();
    let (versions, attempts) = blocking(move || {
        let holds = |object: &[u8]| history::all_hold_in_text(&conditions, object);
        Ok((
            store.version_keys_where(&asked, &holds)?,
            store.attempts(&asked)?,
        ))
    })
    .await?;
    if versions.is_empty() {
        return Err(match attempts.first() {
            Some(a) => {
                authorize(&state, &reader, &query, &a.group, &a.resource).await?;
                not_found(&query, false)
            }
            None => nothing_recorded(&state, &reader, &query).await,
        });
    }
    let numbered = history::number_with(versions);
    let first_version = &numbered[0].0.version;
    authorize(
        &state,
        &reader,
        &query,
        &first_version.group,
        &first_version.resource,
    )
    .await?;
    let found = history::bisect_states(numbered.iter().map(|(n, holds)| (n, *holds)));
    let first = match found.first {
        Some(ordinal) => {
            // Read whole: the one version the answer shows.
            let mut first = [numbered[ordinal - 1].0.clone()];
            load_whole(&state, &mut first, &[1]).await?;
            Some(spec_entry(&first[0]))
        }
        None => None,
    };
    Ok(Json(json!({
        "object": summary(&query, numbered.iter().map(|(n, _)| n)),
        "conditions": pairs.iter().map(|(f, v)| json!({"field": f, "value": v})).collect::<Vec<_>>(),
        "first": first,
        "transitions": found.transitions,
    }))
    .into_response())
}

/// Nothing was recorded of the object. That is said only to a reader who
/// may get it, were it there; anyone else is refused as for an object that
/// was recorded, so that nobody learns which names apiwitness saw where
/// they may not look. The group comes from the query (`resource.group`) or
/// from any recorded object of the same resource; for a resource never
/// recorded, the reader must be allowed to read the namespace (get pods
/// there, as every report asks).
async fn nothing_recorded(
    state: &AppState,
    reader: &Option<Caller>,
    query: &ObjectQuery,
) -> ApiError {
    let (Some(auth), Some(reader)) = (&state.auth, reader) else {
        return not_found(query, true);
    };
    let namespace = Some(query.namespace.as_str()).filter(|n| !n.is_empty());
    let kind = match query.resource.split_once('.') {
        Some((resource, group)) => Some((group.to_string(), resource.to_string())),
        None => {
            let store = state.store.clone();
            let filter = crate::store::ObjectFilter {
                kind: Some(query.resource.clone()),
                ..Default::default()
            };
            match blocking(move || store.objects(&filter, 1)).await {
                Ok(found) => found.into_iter().next().map(|o| (o.group, o.resource)),
                Err(e) => return e,
            }
        }
    };
    let allowed = match &kind {
        Some((group, resource)) => {
            auth.may_get_object(reader, group, resource, namespace, &query.name)
                .await
        }
        None => auth.may_get_resource(reader, "", "pods", namespace).await,
    };
    match allowed {
        Ok(()) => not_found(query, true),
        Err(refused) => refused.into(),
    }
}

fn not_found(query: &ObjectQuery, nothing_at_all: bool) -> ApiError {
    let at = if query.namespace.is_empty() {
        String::new()
    } else {
        format!(" in namespace {}", query.namespace)
    };
    if nothing_at_all {
        ApiError::NotFound(format!(
            "no version of {} {}{at} was seen: no recorded traffic touched it",
            query.resource, query.name
        ))
    } else {
        ApiError::NotFound(format!(
            "{} {}{at} has only refused writes recorded: no version to bisect",
            query.resource, query.name
        ))
    }
}

/// The reader must be allowed to get the object, by the group and resource
/// its records name.
async fn authorize(
    state: &AppState,
    reader: &Option<Caller>,
    query: &ObjectQuery,
    group: &str,
    resource: &str,
) -> Result<(), ApiError> {
    if let (Some(auth), Some(reader)) = (&state.auth, reader) {
        let namespace = Some(query.namespace.as_str()).filter(|n| !n.is_empty());
        auth.may_get_object(reader, group, resource, namespace, &query.name)
            .await?;
    }
    Ok(())
}

fn summary<'a>(query: &ObjectQuery, mut numbered: impl Iterator<Item = &'a Numbered>) -> Value {
    let first = numbered.next().map(|n| &n.version);
    let kind = first
        .map(|v| &v.kind)
        .into_iter()
        .chain(numbered.map(|n| &n.version.kind))
        .find(|k| !k.is_empty());
    json!({
        "namespace": query.namespace,
        "name": query.name,
        "group": first.map(|v| v.group.clone()).unwrap_or_default(),
        "resource": first.map(|v| v.resource.clone()).unwrap_or_default(),
        "kind": kind.cloned().unwrap_or_default(),
    })
}

/// Replaces the versions at these ordinals with whole ones (documents and
/// objects), where they were read without.
async fn load_whole(
    state: &AppState,
    numbered: &mut [Numbered],
    ordinals: &[usize],
) -> Result<(), ApiError> {
    let wanted: Vec<usize> = ordinals
        .iter()
        .copied()
        .filter(|o| *o > 0 && *o <= numbered.len())
        .collect();
    let keys: Vec<(String, String)> = wanted
        .iter()
        .map(|o| {
            (
                numbered[o - 1].version.uid.clone(),
                numbered[o - 1].version.resource_version.clone(),
            )
        })
        .collect();
    let store = state.store.clone();
    let whole = blocking(move || store.versions_by_key(&keys)).await?;
    let mut whole: HashMap<(String, String), Version> = whole
        .into_iter()
        .map(|v| ((v.uid.clone(), v.resource_version.clone()), v))
        .collect();
    for o in wanted {
        let n = &mut numbered[o - 1];
        let key = (n.version.uid.clone(), n.version.resource_version.clone());
        if let Some(v) = whole.remove(&key) {
            n.version = v;
        }
    }
    Ok(())
}

fn label(n: &Numbered) -> String {
    format!(
        "version {} (resourceVersion {}, {})",
        n.ordinal, n.version.resource_version, n.version.verb
    )
}

fn spec_entry(n: &Numbered) -> Value {
    json!({
        "ordinal": n.ordinal,
        "resourceVersion": n.version.resource_version,
        "generation": n.version.generation,
        "time": n.version.time,
        "verb": n.version.verb,
        "source": n.version.source,
        "deleted": n.version.deleted,
        "spec": history::spec_of(&n.version),
    })
}

fn range(
    numbered: &[Numbered],
    start: Option<usize>,
    end: Option<usize>,
) -> Result<(usize, usize), ApiError> {
    let last = numbered.len();
    let (start, end) = (start.unwrap_or(1), end.unwrap_or(last));
    for o in [start, end] {
        if o == 0 || o > last {
            return Err(HistoryError::NoVersion(o, last).into());
        }
    }
    if start > end {
        return Err(ApiError::BadRequest(format!(
            "start {start} is after end {end}"
        )));
    }
    Ok((start, end))
}

/// `field=&value=`, then `field2=&value2=`, and so on, in that order.
fn condition_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let params: HashMap<String, String> = url_pairs(raw).into_iter().collect();
    let mut pairs = Vec::new();
    for i in 1.. {
        let suffix = if i == 1 { String::new() } else { i.to_string() };
        match (
            params.get(&format!("field{suffix}")),
            params.get(&format!("value{suffix}")),
        ) {
            (Some(f), Some(v)) => pairs.push((f.clone(), v.clone())),
            (None, None) => break,
            (Some(_), None) => {
                return Err(ApiError::BadRequest(format!(
                    "field{suffix} has no value{suffix}"
                )));
            }
            (None, Some(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "value{suffix} has no field{suffix}"
                )));
            }
        }
    }
    Ok(pairs)
}

fn url_pairs(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_come_in_numbered_pairs() {
        let pairs = condition_pairs(
            "field=spec.replicas&value=3&field2=%2Fspec%2Fimage&value2=nginx%3A1.27",
        )
        .unwrap();
        assert_eq!(
            pairs,
            [
                ("spec.replicas".into(), "3".into()),
                ("/spec/image".into(), "nginx:1.27".into())
            ]
        );
        assert!(condition_pairs("field=a").is_err());
        assert!(condition_pairs("").unwrap().is_empty());
    }
}
