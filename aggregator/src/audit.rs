//! Kubernetes audit events (`audit.k8s.io/v1`) as records, the way APISnoop
//! reads a cluster: from an audit log file (`import-audit`) or from the
//! apiserver's audit webhook backend (`POST /audit`, an EventList). They feed
//! the same store and reports as interceptor records.
//!
//! An event has no bodies at Metadata level, and that is enough for coverage:
//! the verb, the URI and the status. The caller is the event's user: a
//! ServiceAccount's namespace, and its pod where the token was bound to one.
//!
//! At RequestResponse level an event also carries the request and response
//! objects: they become provenance versions, as an interceptor's record
//! would (`provenance::extract`), with Secret values redacted first. The
//! event itself is not kept.

use crate::ingest::{LineError, client_of};
use crate::store::IngestItem;
use serde::Deserialize;
use std::collections::BTreeMap;

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(default)]
    kind: Option<&'a str>,
    #[serde(borrow, rename = "auditID")]
    audit_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stage: Option<&'a str>,
    #[serde(borrow, rename = "requestURI")]
    request_uri: std::borrow::Cow<'a, str>,
    verb: &'a str,
    #[serde(default)]
    user: User,
    #[serde(default, borrow)]
    user_agent: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    response_status: Option<Status>,
    #[serde(default)]
    request_received_timestamp: Option<&'a str>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    request_object: Option<serde_json::Value>,
    #[serde(default)]
    response_object: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    code: u16,
}

#[derive(Debug, Deserialize)]
struct EventList<'a> {
    #[serde(borrow, default)]
    items: Vec<Event<'a>>,
}

/// The HTTP method of an audit verb. Watches, lists and gets are GETs.
fn method_of(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "get" | "list" | "watch" => "GET",
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => return None,
    })
}

fn item_of(event: Event<'_>, line_number: usize) -> Result<Option<IngestItem>, String> {
    // One request produces an event per stage; only the last one counts.
    if event.stage.is_some_and(|s| s != "ResponseComplete") {
        return Ok(None);
    }
    if event.kind.is_some_and(|k| k != "Event") {
        return Err(format!("not an audit Event: kind {:?}", event.kind));
    }
    let method =
        method_of(event.verb).ok_or_else(|| format!("unknown audit verb {:?}", event.verb))?;
    let (path, query) = event
        .request_uri
        .split_once('?')
        .unwrap_or((&event.request_uri, ""));
    let (namespace, pod) = match event.user.username.strip_prefix("system:serviceaccount:") {
        Some(rest) => (
            rest.split_once(':')
                .map(|(ns, _)| ns)
                .unwrap_or("")
                .to_string(),
            event
                .user
                .extra
                .get(POD_NAME_EXTRA)
                .and_then(|p| p.first())
                .cloned()
                .unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let templates = match apiwitness_record::ApiRequest::parse(method, path, query, None) {
        Ok(r) => {
            let mut t = vec![r.path_template()];
            t.extend(r.watch_twin_template());
            t
        }
        Err(_) => vec![path.to_string()],
    };
    let id = format!("audit:{}", event.audit_id);
    let status = event.response_status.as_ref().map(|s| s.code).unwrap_or(0);
    let found = versions_of(&event, &id, method, path, query, status, &namespace, &pod)
        .map_err(|e| format!("encoding a version: {e}"))?;
    Ok(Some(IngestItem {
        id,
        started_at: event.request_received_timestamp.unwrap_or("").to_string(),
        pod_namespace: namespace,
        pod_name: pod,
        workload: String::new(),
        client: client_of(event.user_agent.as_deref()),
        method: method.to_string(),
        path: path.to_string(),
        status,
        templates,
        // The event itself is not kept: at RequestResponse level it holds
        // bodies that redaction has not seen.
        line: String::new(),
        line_number,
        fields: crate::fields::written_fields(method, event.request_object.as_ref()),
        later_part: false,
        versions: found.versions,
        attempts: found.attempts,
    }))
}

/// The versions an event's objects show, read as an interceptor's record of
/// the same exchange would be.
#[allow(clippy::too_many_arguments)]
fn versions_of(
    event: &Event<'_>,
    id: &str,
    method: &str,
    path: &str,
    query: &str,
    status: u16,
    namespace: &str,
    pod: &str,
) -> Result<crate::provenance::extract::Found, serde_json::Error> {
    use apiwitness_record::{Body, BodyContent, Exchange, PodIdentity};
    if event.response_object.is_none() && event.request_object.is_none() {
        return Ok(Default::default());
    }
    let secrets = event
        .object_ref
        .as_ref()
        .is_some_and(|r| r.resource == "secrets");
    let body = |object: &Option<serde_json::Value>| {
        object.as_ref().filter(|o| o.is_object()).map(|o| {
            let mut o = o.clone();
            if secrets {
                redact_secret_values(&mut o);
            }
            Body {
                content: BodyContent::Json(o),
                size: 0,
                truncated: false,
                content_encoding: None,
            }
        })
    };
    let table = event
        .response_object
        .as_ref()
        .and_then(|o| o.get("kind"))
        .is_some_and(|k| k == "Table");
    let service_account = event
        .user
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .map(|(_, sa)| sa.to_string())
        .unwrap_or_default();
    let mut exchange = Exchange {
        format: apiwitness_record::FORMAT_VERSION,
        id: id.to_string(),
        pod: PodIdentity {
            namespace: namespace.to_string(),
            name: pod.to_string(),
            service_account,
            ..Default::default()
        },
        started_at: event.request_received_timestamp.unwrap_or("").to_string(),
        duration_us: 0,
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        status,
        user_agent: event.user_agent.as_deref().map(str::to_string),
        request_content_type: None,
        response_content_type: Some("application/json".into()),
        request_body: body(&event.request_object),
        response_body: body(&event.response_object),
        watch: None,
        table,
        upgrade: None,
        error: None,
        part: None,
    };
    crate::provenance::extract::from_exchange(&mut exchange)
}

/// A Secret's values (and a SecretList's items' values) become a marker:
/// an audit policy that logs Secrets at RequestResponse must not put their
/// values in the store.
fn redact_secret_values(object: &mut serde_json::Value) {
    if let Some(items) = object
        .get_mut("items")
        .and_then(serde_json::Value::as_array_mut)
    {
        items.iter_mut().for_each(redact_secret_values);
    }
    for field in ["data", "stringData"] {
        if let Some(map) = object
            .get_mut(field)
            .and_then(serde_json::Value::as_object_mut)
        {
            for value in map.values_mut() {
                let len = value.as_str().map_or(0, str::len);
                *value = serde_json::Value::String(format!("<redacted: {len} bytes>"));
            }
        }
    }
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(serde_json::Value::as_object_mut)
    {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

#[derive(Debug, Default)]
pub struct ParsedEvents {
    pub items: Vec<IngestItem>,
    pub errors: Vec<LineError>,
    /// Events of other stages than ResponseComplete, skipped.
    pub skipped: usize,
}

impl ParsedEvents {
    fn take(&mut self, result: Result<Event<'_>, serde_json::Error>, line: usize) {
        match result
            .map_err(|e| e.to_string())
            .and_then(|e| item_of(e, line))
        {
            Ok(Some(item)) => self.items.push(item),
            Ok(None) => self.skipped += 1,
            Err(error) => self.errors.push(LineError { line, error }),
        }
    }
}

/// An audit log file: one Event per line. Large logs are parsed on every
/// core, in contiguous slices, and the results joined in order.
pub fn parse_log(text: &str) -> ParsedEvents {
    let lines: Vec<&str> = crate::ingest::lines_of(text).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let slice = lines.len().div_ceil(threads).max(10_000);
    let parse_slice = |start: usize, slice: &[&str]| {
        let mut parsed = ParsedEvents::default();
        for (i, line) in slice.iter().enumerate() {
            if !line.trim().is_empty() {
                parsed.take(serde_json::from_str::<Event<'_>>(line), start + i + 1);
            }
        }
        parsed
    };
    let parts: Vec<ParsedEvents> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(slice)
            .enumerate()
            .map(|(k, chunk)| scope.spawn(move || parse_slice(k * slice, chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut parsed = ParsedEvents::default();
    for part in parts {
        parsed.items.extend(part.items);
        parsed.errors.extend(part.errors);
        parsed.skipped += part.skipped;
    }
    parsed
}

/// What the webhook backend posts: an EventList.
pub fn parse_event_list(text: &str) -> Result<ParsedEvents, String> {
    let list: EventList<'_> =
        serde_json::from_str(text).map_err(|e| format!("not an audit EventList: {e}"))?;
    let mut parsed = ParsedEvents::default();
    for (i, event) in list.items.into_iter().enumerate() {
        parsed.take(Ok(event), i + 1);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"3a38","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/configmaps?watch=true","verb":"watch","user":{"username":"system:serviceaccount:shop:app","extra":{"authentication.kubernetes.io/pod-name":["web-1"]}},"userAgent":"kubectl/v1.35.4 (linux/amd64)","responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-24T06:00:00.000001Z"}"#;

    #[test]
    fn a_request_response_event_is_a_version_with_secret_values_redacted() {
        let event = serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": "a1", "stage": "ResponseComplete", "verb": "create",
            "requestURI": "/api/v1/namespaces/shop/secrets", "objectRef": {"resource": "secrets", "namespace": "shop"},
            "user": {"username": "system:serviceaccount:shop:web", "extra": {"authentication.kubernetes.io/pod-name": ["web-1"]}},
            "userAgent": "kubectl/v1.35.4", "responseStatus": {"code": 201},
            "requestReceivedTimestamp": "2026-11-30T10:00:00.000001Z",
            "responseObject": {"kind": "Secret", "apiVersion": "v1",
                "metadata": {"name": "db", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
                "data": {"password": "aHVudGVyMg=="}}});
        let parsed = parse_log(&event.to_string());
        let encoded = &parsed.items[0].versions[0];
        let v = &encoded.version;
        assert_eq!(
            (
                v.verb.as_str(),
                v.resource_version.as_str(),
                v.who.pod.as_str()
            ),
            ("create", "7", "shop/web-1")
        );
        assert_eq!(v.who.service_account, "web");
        let text = encoded.object.clone().unwrap();
        assert!(!text.contains("aHVudGVyMg=="), "{text}");
        assert!(text.contains("<redacted: 12 bytes>"), "{text}");
    }

    #[test]
    fn an_event_becomes_a_record_of_its_pod() {
        let text = format!(
            "{EVENT}\n{}\nnot json\n",
            EVENT.replace("ResponseComplete", "ResponseStarted")
        );
        let parsed = parse_log(&text);
        assert_eq!(
            (parsed.items.len(), parsed.skipped, parsed.errors.len()),
            (1, 1, 1)
        );
        let item = &parsed.items[0];
        assert_eq!(
            (item.method.as_str(), item.path.as_str(), item.status),
            ("GET", "/api/v1/namespaces/shop/configmaps", 200)
        );
        assert_eq!(
            (item.pod_namespace.as_str(), item.pod_name.as_str()),
            ("shop", "web-1")
        );
        assert_eq!(item.client, "kubectl/v1.35.4");
        assert_eq!(item.id, "audit:3a38");
        assert_eq!(
            item.templates.len(),
            2,
            "a watch counts for both operations"
        );
        assert_eq!(parsed.errors[0].line, 3);
    }

    #[test]
    fn an_event_list_from_the_webhook() {
        let list =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{EVENT}]}}"#);
        assert_eq!(parse_event_list(&list).unwrap().items.len(), 1);
        assert!(parse_event_list("not json").is_err());
        assert!(parse_event_list(r#"{"items": 5}"#).is_err());
    }
}
