//! Kubernetes audit events (`audit.k8s.io/v1`) as records, the way APISnoop
//! reads a cluster: from an audit log file (`import-audit`) or from the
//! apiserver's audit webhook backend (`POST /audit`, an EventList). They feed
//! the same store and reports as interceptor records.
//!
//! An event has no bodies at Metadata level, and that is enough for coverage:
//! the verb, the URI and the status. The caller is the event's user: a
//! ServiceAccount's namespace, and its pod where the token was bound to one.

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
    Ok(Some(IngestItem {
        id: format!("audit:{}", event.audit_id),
        started_at: event.request_received_timestamp.unwrap_or("").to_string(),
        pod_namespace: namespace,
        pod_name: pod,
        workload: String::new(),
        client: client_of(event.user_agent.as_deref()),
        method: method.to_string(),
        path: path.to_string(),
        status: event.response_status.map(|s| s.code).unwrap_or(0),
        templates,
        // The event itself is not kept: at RequestResponse level it holds
        // bodies that redaction has not seen.
        line: String::new(),
        line_number,
        versions: Vec::new(),
        attempts: Vec::new(),
    }))
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
    let lines: Vec<&str> = text.lines().collect();
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
