//! The versions a record shows. A version is the authoritative object the
//! apiserver returned: the answer to a write (create, update, every patch
//! type, an apply that creates, a delete), or an object seen in a get, list
//! or watch. Dry runs, Tables and refused writes are not versions; a refused
//! write is an [`Attempt`].

use super::text::{ListText, ObjectText, Outline, object_of, read_object};
use super::{Attempt, EncodedVersion, ObjectHead, Source, TOMBSTONE_RV, Version, Who};
use apiwitness_record::{ApiRequest, Body, BodyContent, Exchange, PatchType, Verb};
use serde_json::Value;
use std::borrow::Cow;

/// What [`from_exchange`] found: versions encoded as the store writes them.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub versions: Vec<EncodedVersion>,
    pub attempts: Vec<Attempt>,
}

struct Context<'a> {
    exchange: &'a Exchange,
    request: &'a ApiRequest,
    who: Who,
    /// The response body's, where the line's reading outlined it.
    response_outline: Option<&'a Outline>,
}

impl Context<'_> {
    /// Takes the object: a record's bodies are read once and never copied.
    fn version(
        &self,
        mut object: Value,
        verb: &str,
        source: Source,
        partial: bool,
    ) -> Option<Version> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let meta = object.get_mut("metadata")?.as_object_mut()?;
        // managedFields change with every write and say nothing a diff wants.
        meta.remove("managedFields");
        let uid = meta.get("uid")?.as_str()?.to_string();
        let name = meta.get("name").and_then(Value::as_str).map(str::to_string);
        let namespace = text(meta.get("namespace"));
        let resource_version = text(meta.get("resourceVersion"));
        let generation = meta.get("generation").and_then(Value::as_i64);
        let head = ObjectHead {
            kind: text(object.get("kind")),
            api_version: text(object.get("apiVersion")),
            uid,
            name,
            namespace,
            resource_version,
            generation,
        };
        Some(Version {
            partial,
            object: Some(object),
            ..self.stamped(head, verb, source)
        })
    }

    /// The version an object shows, without the object: its head, and
    /// who saw it where and how.
    fn stamped(&self, head: ObjectHead, verb: &str, source: Source) -> Version {
        Version {
            group: self.request.group.clone(),
            resource: self.request.resource.clone(),
            kind: head.kind,
            api_version: head.api_version,
            namespace: head.namespace.if_empty(&self.request.namespace),
            name: head.name.unwrap_or_else(|| self.request.name.clone()),
            uid: head.uid,
            resource_version: head.resource_version,
            generation: head.generation,
            time: self.exchange.started_at.clone(),
            verb: verb.to_string(),
            source,
            deleted: false,
            partial: false,
            who: self.who.clone(),
            record: self.exchange.id.clone(),
            object: None,
        }
    }

    /// A version read from its object's text, which is kept as it came
    /// (less managedFields).
    fn version_of_text(
        &self,
        object: ObjectText,
        verb: &str,
        source: Source,
    ) -> Result<EncodedVersion, serde_json::Error> {
        let version = self.stamped(object.head, verb, source);
        EncodedVersion::with_text(version, object.text)
    }

    /// The version of a whole body: from its text where it can be read
    /// there, else from its tree.
    fn version_of_body(
        &self,
        body: &mut Option<Body>,
        verb: &str,
        source: Source,
    ) -> Result<Option<EncodedVersion>, serde_json::Error> {
        let object = json_text(body).and_then(|text| match self.response_outline {
            Some(outline) => object_of(text, outline),
            None => read_object(text),
        });
        if let Some(object) = object {
            return self.version_of_text(object, verb, source).map(Some);
        }
        take_object(body)
            .and_then(|(object, partial)| self.version(object, verb, source, partial))
            .map(EncodedVersion::new)
            .transpose()
    }
}

/// The text of a whole JSON body, as it came.
fn json_text(body: &Option<Body>) -> Option<&str> {
    match body.as_ref().filter(|b| !b.truncated).map(|b| &b.content) {
        Some(BodyContent::RawJson(raw)) => Some(raw.text()),
        _ => None,
    }
}

trait IfEmpty {
    fn if_empty(self, other: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_string()
        } else {
            self
        }
    }
}

/// The body as a JSON object, and whether only its metadata was readable.
/// The body is taken out of the record: it is decoded once, and its objects
/// move into versions.
fn take_object(body: &mut Option<Body>) -> Option<(Value, bool)> {
    let body = body.as_mut()?;
    if body.truncated {
        return None;
    }
    match &mut body.content {
        BodyContent::Json(v) if v.is_object() => Some((v.take(), false)),
        BodyContent::RawJson(raw) => Some(raw.to_value())
            .filter(Value::is_object)
            .map(|v| (v, false)),
        BodyContent::Protobuf(p) => {
            let mut object = serde_json::json!({"apiVersion": p.api_version, "kind": p.kind});
            if let Some(m) = p.metadata.take() {
                object["metadata"] = m;
            }
            if let Some(items) = p.items.take() {
                object["items"] = Value::Array(
                    items
                        .into_iter()
                        .map(|m| serde_json::json!({"metadata": m}))
                        .collect(),
                );
            }
            Some((object, true))
        }
        _ => None,
    }
}

/// A body's JSON object.
fn object_in(body: &Option<Body>) -> Option<Cow<'_, Value>> {
    body.as_ref()?.content.json().filter(|v| v.is_object())
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(&v.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The versions and attempts of one exchange. The objects of its response
/// body and watch events move into the versions.
pub fn from_exchange(exchange: &mut Exchange) -> Result<Found, serde_json::Error> {
    match ApiRequest::parse(
        &exchange.method,
        &exchange.path,
        &exchange.query,
        exchange.request_content_type.as_deref(),
    ) {
        Ok(request) => from_request(exchange, &request, None),
        Err(_) => Ok(Found::default()),
    }
}

/// [`from_exchange`], for a caller that has parsed the request already,
/// and may have outlined the response body as it read the record
/// ([`crate::record_line`]). Fails only where a version cannot be encoded
/// as JSON text.
pub fn from_request(
    exchange: &mut Exchange,
    request: &ApiRequest,
    response_outline: Option<&Outline>,
) -> Result<Found, serde_json::Error> {
    let mut found = Found::default();
    if !request.is_resource_request || request.dry_run || exchange.table || exchange.status == 0 {
        return Ok(found);
    }
    let mut response = exchange.response_body.take();
    let watch = exchange.watch.take();
    let exchange: &Exchange = exchange;
    let who = Who {
        pod: [&*exchange.pod.namespace, "/", &exchange.pod.name].concat(),
        service_account: exchange.pod.service_account.clone(),
        user_agent: exchange.user_agent.clone().unwrap_or_default(),
        field_manager: query_value(&exchange.query, "fieldManager"),
    };
    let cx = Context {
        exchange,
        request,
        who,
        response_outline,
    };
    let encoded = |v: Option<Version>| v.map(EncodedVersion::new).transpose();
    let ok = (200..300).contains(&exchange.status);
    let write_verb = match request.verb {
        Verb::Create => Some("create"),
        Verb::Update => Some("update"),
        Verb::Patch if request.patch_type == Some(PatchType::Apply) => Some("apply"),
        Verb::Patch => Some("patch"),
        Verb::Delete => Some("delete"),
        _ => None,
    };
    if let Some(verb) = write_verb {
        let verb = if request.subresource.is_empty() {
            verb.to_string()
        } else {
            format!("{verb} {}", request.subresource)
        };
        if !ok {
            found.attempts.push(attempt(&cx, &verb, &response));
            return Ok(found);
        }
        if request.verb == Verb::Delete {
            if let Some((object, partial)) = take_object(&mut response) {
                found
                    .versions
                    .extend(encoded(tombstone(&cx, object, partial, &verb))?);
            }
        } else {
            found
                .versions
                .extend(cx.version_of_body(&mut response, &verb, Source::Write)?);
        }
        return Ok(found);
    }
    if !ok {
        return Ok(found);
    }
    match request.verb {
        Verb::Get => {
            found
                .versions
                .extend(cx.version_of_body(&mut response, "get", Source::Observed)?);
        }
        Verb::List => {
            let list = json_text(&response).and_then(|text| match response_outline {
                Some(outline) => ListText::of(text, outline),
                None => ListText::read(text),
            });
            if let Some(list) = list {
                for item in list.items {
                    let version = match item.object {
                        Some(object) => cx.version_of_text(object, "list", Source::Observed)?,
                        None => {
                            let api_version = match list.api_version {
                                Some(v) => serde_json::from_str(v)?,
                                None => Value::Null,
                            };
                            let item = with_list_defaults(
                                serde_json::from_str(item.text)?,
                                &list.item_kind,
                                &api_version,
                            );
                            match encoded(cx.version(item, "list", Source::Observed, false))? {
                                Some(version) => version,
                                None => continue,
                            }
                        }
                    };
                    found.versions.push(version);
                }
            } else if let Some((mut list, partial)) = take_object(&mut response) {
                let kind = list.get("kind").and_then(Value::as_str).unwrap_or_default();
                let item_kind = kind.strip_suffix("List").unwrap_or(kind).to_string();
                let api_version = list.get("apiVersion").cloned().unwrap_or(Value::Null);
                let items = match list.get_mut("items").map(Value::take) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for item in items {
                    let item = with_list_defaults(item, &item_kind, &api_version);
                    found.versions.extend(encoded(cx.version(
                        item,
                        "list",
                        Source::Observed,
                        partial,
                    ))?);
                }
            }
        }
        Verb::Watch => {
            for event in watch.into_iter().flat_map(|w| w.events) {
                let deleted = match event.event_type.as_str() {
                    "ADDED" | "MODIFIED" => false,
                    "DELETED" => true,
                    _ => continue,
                };
                let version = cx
                    .version(event.object, "watch", Source::Observed, false)
                    .map(|mut v| {
                        v.deleted = deleted;
                        v
                    });
                found.versions.extend(encoded(version)?);
            }
        }
        _ => {}
    }
    Ok(found)
}

/// List items do not say what they are: the list does.
fn with_list_defaults(mut item: Value, item_kind: &str, api_version: &Value) -> Value {
    if let Some(o) = item.as_object_mut() {
        o.entry("kind")
            .or_insert_with(|| Value::String(item_kind.to_string()));
        o.entry("apiVersion").or_insert_with(|| api_version.clone());
    }
    item
}

/// A delete's answer: the object (its last state, or with a deletion
/// timestamp while finalizers hold it), or a Status naming what went.
fn tombstone(cx: &Context<'_>, object: Value, partial: bool, verb: &str) -> Option<Version> {
    if object.get("kind").and_then(Value::as_str) == Some("Status") {
        let details = object.get("details")?;
        let uid = details.get("uid").and_then(Value::as_str)?.to_string();
        return Some(Version {
            group: cx.request.group.clone(),
            resource: cx.request.resource.clone(),
            kind: details
                .get("kind")
                .and_then(Value::as_str)
                .map(kind_of_resource_word)
                .unwrap_or_default(),
            api_version: String::new(),
            namespace: cx.request.namespace.clone(),
            name: details
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&cx.request.name)
                .to_string(),
            uid,
            resource_version: TOMBSTONE_RV.into(),
            generation: None,
            time: cx.exchange.started_at.clone(),
            verb: verb.into(),
            source: Source::Write,
            deleted: true,
            partial: false,
            who: cx.who.clone(),
            record: cx.exchange.id.clone(),
            object: None,
        });
    }
    let meta = &object["metadata"];
    let held = meta.get("deletionTimestamp").is_some()
        && meta
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let mut version = cx.version(object, verb, Source::Write, partial)?;
    // Held by finalizers, the object still exists, terminating.
    version.deleted = !held;
    Some(version)
}

/// A Status's details.kind is the resource's plural for custom resources
/// (`postgreses`): the Kind is unknown there, so it is left for the other
/// versions of the lineage to name.
fn kind_of_resource_word(word: &str) -> String {
    if word.chars().next().is_some_and(char::is_uppercase) {
        word.to_string()
    } else {
        String::new()
    }
}

fn attempt(cx: &Context<'_>, verb: &str, response: &Option<Body>) -> Attempt {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    // What the refused request said it was, from its JSON or protobuf body.
    let content = cx.exchange.request_body.as_ref().map(|b| &b.content);
    let (kind, named) = match (content, content.and_then(BodyContent::json)) {
        (_, Some(o)) if o.is_object() => (text(o.get("kind")), text(o.pointer("/metadata/name"))),
        (Some(BodyContent::Protobuf(p)), _) => (
            p.kind.clone(),
            text(p.metadata.as_ref().and_then(|m| m.get("name"))),
        ),
        _ => Default::default(),
    };
    let name = if cx.request.name.is_empty() {
        named
    } else {
        cx.request.name.clone()
    };
    let message = text(
        object_in(response)
            .as_deref()
            .and_then(|o| o.get("message")),
    );
    Attempt {
        group: cx.request.group.clone(),
        resource: cx.request.resource.clone(),
        kind,
        namespace: cx.request.namespace.clone(),
        name,
        time: cx.exchange.started_at.clone(),
        verb: verb.into(),
        status: cx.exchange.status,
        message,
        who: cx.who.clone(),
        record: cx.exchange.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiwitness_record::{PodIdentity, WatchEvent, WatchEvents};
    use serde_json::json;

    fn exchange(
        method: &str,
        path: &str,
        query: &str,
        status: u16,
        response: Option<Value>,
    ) -> Exchange {
        Exchange {
            format: 1,
            id: format!("r-{method}-{status}"),
            pod: PodIdentity {
                namespace: "shop".into(),
                name: "web-1".into(),
                service_account: "web".into(),
                ..Default::default()
            },
            started_at: "2026-11-30T10:00:00Z".into(),
            duration_us: 1,
            method: method.into(),
            path: path.into(),
            query: query.into(),
            status,
            user_agent: Some("kubectl/v1.35.4".into()),
            request_content_type: Some(
                if method == "PATCH" {
                    "application/apply-patch+yaml"
                } else {
                    "application/json"
                }
                .into(),
            ),
            response_content_type: Some("application/json".into()),
            request_body: None,
            response_body: response.map(|v| Body {
                content: BodyContent::Json(v),
                size: 10,
                truncated: false,
                content_encoding: None,
            }),
            watch: None,
            table: false,
            upgrade: None,
            error: None,
            part: None,
        }
    }

    fn pg(rv: &str, replicas: i64) -> Value {
        json!({"apiVersion": "postgrescontroller.kubeplus/v1", "kind": "Postgres",
            "metadata": {"name": "client25", "namespace": "shop", "uid": "u1", "resourceVersion": rv, "generation": replicas,
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": replicas}})
    }

    /// What an exchange shows, its bodies read both ways: as the text a
    /// line holds (what ingest reads) and as trees. Both must find the same.
    fn found(exchange: Exchange) -> Found {
        let mut as_text = exchange.clone();
        for body in [&mut as_text.request_body, &mut as_text.response_body]
            .into_iter()
            .flatten()
        {
            if let BodyContent::Json(v) = &body.content {
                let text = serde_json::to_string(v).unwrap();
                body.content = BodyContent::RawJson(
                    apiwitness_record::RawJson::parse(text.as_bytes()).unwrap(),
                );
            }
        }
        let from_text = from_exchange(&mut as_text).unwrap();
        let from_tree = from_exchange(&mut exchange.clone()).unwrap();
        let decoded = |f: &Found| -> Vec<Version> {
            f.versions.iter().map(|v| v.decoded().unwrap()).collect()
        };
        assert_eq!(decoded(&from_text), decoded(&from_tree));
        assert_eq!(from_text.attempts, from_tree.attempts);
        from_text
    }

    /// The versions an exchange shows, objects decoded.
    fn versions(exchange: Exchange) -> Vec<Version> {
        found(exchange)
            .versions
            .iter()
            .map(|v| v.decoded().unwrap())
            .collect()
    }

    const PATH: &str = "/apis/postgrescontroller.kubeplus/v1/namespaces/shop/postgreses/client25";

    #[test]
    fn an_apply_is_a_write_version_with_its_field_manager() {
        let found = versions(exchange(
            "PATCH",
            PATH,
            "fieldManager=kubectl&force=true",
            200,
            Some(pg("12", 2)),
        ));
        let v = &found[0];
        assert_eq!(
            (v.verb.as_str(), v.source, v.resource_version.as_str()),
            ("apply", Source::Write, "12")
        );
        assert_eq!(
            (v.group.as_str(), v.resource.as_str(), v.kind.as_str()),
            ("postgrescontroller.kubeplus", "postgreses", "Postgres")
        );
        assert_eq!(v.who.field_manager.as_deref(), Some("kubectl"));
        assert_eq!(v.who.pod, "shop/web-1");
        assert!(
            v.object.as_ref().unwrap()["metadata"]
                .get("managedFields")
                .is_none()
        );
    }

    #[test]
    fn dry_runs_tables_and_refusals_are_not_versions() {
        assert_eq!(
            found(exchange(
                "PATCH",
                PATH,
                "dryRun=All",
                200,
                Some(pg("12", 2))
            )),
            Found::default()
        );
        let mut table = exchange("GET", PATH, "", 200, Some(pg("12", 2)));
        table.table = true;
        assert_eq!(found(table), Found::default());
        let refused = found(exchange(
            "PUT",
            PATH,
            "",
            409,
            Some(json!({"kind": "Status", "message": "the object has been modified"})),
        ));
        assert!(refused.versions.is_empty());
        assert_eq!(refused.attempts[0].status, 409);
        assert_eq!(refused.attempts[0].message, "the object has been modified");
        assert_eq!(refused.attempts[0].name, "client25");
    }

    #[test]
    fn a_status_write_belongs_to_the_parent() {
        let found = versions(exchange(
            "PUT",
            &format!("{PATH}/status"),
            "",
            200,
            Some(pg("14", 2)),
        ));
        assert_eq!(found[0].verb, "update status");
        assert_eq!(found[0].name, "client25");
    }

    #[test]
    fn a_custom_resources_delete_is_a_tombstone_from_its_status() {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
            "details": {"name": "client25", "group": "postgrescontroller.kubeplus", "kind": "postgreses", "uid": "u1"}});
        let found = versions(exchange("DELETE", PATH, "", 200, Some(status)));
        let v = &found[0];
        assert!(v.deleted);
        assert_eq!(
            (v.uid.as_str(), v.resource_version.as_str(), v.verb.as_str()),
            ("u1", TOMBSTONE_RV, "delete")
        );
        assert!(v.object.is_none());
    }

    #[test]
    fn a_delete_held_by_finalizers_is_not_gone_yet() {
        let mut held = pg("20", 2);
        held["metadata"]["deletionTimestamp"] = json!("2026-11-30T10:00:01Z");
        held["metadata"]["finalizers"] = json!(["keep"]);
        let found = versions(exchange("DELETE", PATH, "", 200, Some(held)));
        assert!(!found[0].deleted);
        let found = versions(exchange("DELETE", PATH, "", 200, Some(pg("21", 2))));
        assert!(found[0].deleted);
    }

    #[test]
    fn lists_and_watches_are_observations() {
        let list = json!({"kind": "PostgresList", "apiVersion": "postgrescontroller.kubeplus/v1", "metadata": {"resourceVersion": "30"},
            "items": [{"metadata": {"name": "a", "uid": "ua", "resourceVersion": "3"}}, {"metadata": {"name": "b", "uid": "ub", "resourceVersion": "4"}}]});
        let found = versions(exchange(
            "GET",
            "/apis/postgrescontroller.kubeplus/v1/namespaces/shop/postgreses",
            "",
            200,
            Some(list),
        ));
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[1].kind.as_str(), found[1].source),
            ("Postgres", Source::Observed)
        );
        let mut watch = exchange(
            "GET",
            "/apis/postgrescontroller.kubeplus/v1/namespaces/shop/postgreses",
            "watch=true",
            200,
            None,
        );
        watch.watch = Some(WatchEvents {
            events: vec![
                WatchEvent::new("MODIFIED", pg("40", 3)),
                WatchEvent::new("BOOKMARK", json!({"metadata": {"resourceVersion": "41"}})),
                WatchEvent::new("DELETED", pg("42", 3)),
            ],
            cut: 0,
        });
        let found = versions(watch);
        assert_eq!(found.len(), 2);
        assert!(!found[0].deleted && found[1].deleted);
        assert_eq!(found[0].verb, "watch");
    }

    #[test]
    fn a_write_beats_an_observation_of_the_same_state() {
        let mut seen = versions(exchange("GET", PATH, "", 200, Some(pg("12", 2)))).remove(0);
        let written = versions(exchange(
            "PATCH",
            PATH,
            "fieldManager=ctl",
            200,
            Some(pg("12", 2)),
        ))
        .remove(0);
        seen.merge(written);
        assert_eq!((seen.source, seen.verb.as_str()), (Source::Write, "apply"));
    }
}
