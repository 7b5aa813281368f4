//! A record's line of a batch, written by hand where serde_json would read
//! its long parts twice. The line is bytes (UTF-8), so that a body kept in
//! the buffer it was captured into goes in without being checked again.
//!
//! serde_json writes pre-made JSON only through a `RawValue`, and makes one
//! only by parsing the text again: a body the interceptor checked once (a
//! JSON document), or escaped itself (text, base64), was parsed a second
//! time on its way into the line, a byte at a time. Here each body goes in
//! as it is; the small parts still go through serde_json. What comes out is
//! byte for byte what serde_json writes for [`crate::Line::Exchange`] (the
//! tests compare the two).

use crate::exchange::{Body, BodyContent, Exchange, ProtobufBody, WatchEvents};
use crate::json_string::push_json_string;
use serde::Serialize;
use std::io::Write;

impl Exchange {
    /// Appends the record's line (`{"kind":"exchange",...}`), and after it,
    /// each on a line of its own, the text of the bodies that travel so
    /// ([`crate::next_line`]). No line break at the end.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Every field named: one added to Exchange fails to compile here
        // until it is written too.
        let Exchange {
            format,
            id,
            pod,
            started_at,
            duration_us,
            method,
            path,
            query,
            status,
            user_agent,
            request_content_type,
            response_content_type,
            request_body,
            response_body,
            watch,
            table,
            upgrade,
            error,
            part,
        } = self;
        out.extend_from_slice(b"{\"kind\":\"exchange\"");
        number(out, "format", *format);
        string(out, "id", id);
        key(out, "pod");
        serialized(out, pod);
        string(out, "started_at", started_at);
        number(out, "duration_us", *duration_us);
        string(out, "method", method);
        string(out, "path", path);
        if !query.is_empty() {
            string(out, "query", query);
        }
        number(out, "status", *status);
        for (name, value) in [
            ("user_agent", user_agent),
            ("request_content_type", request_content_type),
            ("response_content_type", response_content_type),
        ] {
            if let Some(value) = value {
                string(out, name, value);
            }
        }
        for (name, body) in [
            ("request_body", request_body),
            ("response_body", response_body),
        ] {
            if let Some(body) = body {
                key(out, name);
                write_body(out, body);
            }
        }
        if let Some(watch) = watch {
            key(out, "watch");
            write_watch(out, watch);
        }
        if *table {
            key(out, "table");
            out.extend_from_slice(b"true");
        }
        for (name, value) in [("upgrade", upgrade), ("error", error)] {
            if let Some(value) = value {
                string(out, name, value);
            }
        }
        if let Some(part) = part {
            key(out, "part");
            serialized(out, part);
        }
        out.push(b'}');
        for body in [request_body, response_body].into_iter().flatten() {
            if let BodyContent::NextLine(next) = &body.content
                && let Some(text) = next.text()
            {
                out.push(b'\n');
                out.extend_from_slice(text);
            }
        }
    }
}

fn write_body(out: &mut Vec<u8>, body: &Body) {
    let Body {
        content,
        size,
        truncated,
        content_encoding,
    } = body;
    out.push(b'{');
    match content {
        BodyContent::Json(value) => {
            out.extend_from_slice(b"\"json\":");
            serialized(out, value);
        }
        // Checked to be one JSON document on one line when it was made.
        BodyContent::RawJson(raw) => {
            out.extend_from_slice(b"\"json\":");
            out.extend_from_slice(raw.as_bytes());
        }
        BodyContent::Text(text) => {
            out.extend_from_slice(b"\"text\":");
            push_json_string(out, text);
        }
        BodyContent::Base64(text) => {
            out.extend_from_slice(b"\"base64\":");
            push_json_string(out, text);
        }
        BodyContent::Gzip(text) => {
            out.extend_from_slice(b"\"gzip\":");
            push_json_string(out, text);
        }
        BodyContent::Protobuf(protobuf) => {
            out.extend_from_slice(b"\"protobuf\":");
            write_protobuf(out, protobuf);
        }
        BodyContent::NextLine(next) => {
            out.extend_from_slice(b"\"next_line\":");
            let _ = write!(out, "{}", next.len());
        }
    }
    number(out, "size", *size);
    if *truncated {
        key(out, "truncated");
        out.extend_from_slice(b"true");
    }
    if let Some(encoding) = content_encoding {
        string(out, "content_encoding", encoding);
    }
    out.push(b'}');
}

/// As serde writes [`WatchEvents`], but for an event's object kept as its
/// text, which goes in as it is.
fn write_watch(out: &mut Vec<u8>, watch: &WatchEvents) {
    let WatchEvents { events, cut } = watch;
    out.extend_from_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":");
        push_json_string(out, &event.event_type);
        out.extend_from_slice(b",\"object\":");
        match &event.object_text {
            // Checked to be one JSON document on one line when it was made.
            Some(text) => out.extend_from_slice(text.as_bytes()),
            None => serialized(out, &event.object),
        }
        out.push(b'}');
    }
    out.push(b']');
    number(out, "cut", *cut);
    out.push(b'}');
}

/// As serde writes a [`ProtobufBody`], but for its base64, the whole body
/// (140 KB for a list of 50 Pods), which serde_json would escape a byte at
/// a time.
fn write_protobuf(out: &mut Vec<u8>, protobuf: &ProtobufBody) {
    let ProtobufBody {
        api_version,
        kind,
        metadata,
        items,
        base64,
    } = protobuf;
    out.extend_from_slice(b"{\"apiVersion\":");
    push_json_string(out, api_version);
    string(out, "kind", kind);
    if let Some(metadata) = metadata {
        key(out, "metadata");
        serialized(out, metadata);
    }
    if let Some(items) = items {
        key(out, "items");
        serialized(out, items);
    }
    if let Some(base64) = base64 {
        string(out, "base64", base64);
    }
    out.push(b'}');
}

/// `,"name":`: every key but the first, which the line's `kind` is.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn string(out: &mut Vec<u8>, name: &str, value: &str) {
    key(out, name);
    push_json_string(out, value);
}

fn number(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    key(out, name);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

fn serialized(out: &mut Vec<u8>, value: &impl Serialize) {
    // Our own types: serde_json cannot fail on them.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use crate::exchange::{
        Body, BodyContent, Exchange, Line, PodIdentity, ProtobufBody, RawJson, WatchEvent,
        WatchEvents, WatchPart, WorkloadRef,
    };
    use serde_json::json;

    fn bare() -> Exchange {
        Exchange {
            id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            pod: PodIdentity {
                namespace: "ns".into(),
                name: "p".into(),
                ..Default::default()
            },
            started_at: "2026-12-01T18:00:00.000001Z".into(),
            duration_us: 1234,
            method: "GET".into(),
            path: "/api/v1/namespaces/ns/configmaps/c".into(),
            status: 200,
            ..Default::default()
        }
    }

    fn body(content: BodyContent) -> Body {
        Body {
            content,
            size: 42,
            truncated: false,
            content_encoding: None,
        }
    }

    fn same_as_serde(record: Exchange) {
        let mut written = Vec::new();
        record.write_line(&mut written);
        let written = String::from_utf8(written).unwrap();
        let by_serde = serde_json::to_string(&Line::Exchange(Box::new(record))).unwrap();
        assert_eq!(written, by_serde);
        // And it reads back as a record.
        assert!(Line::parse(&written).is_ok(), "{written}");
    }

    #[test]
    fn a_line_is_what_serde_json_writes_with_every_field_absent_or_present() {
        same_as_serde(bare());
        let mut full = bare();
        full.pod = PodIdentity {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            service_account: "sa".into(),
            node: "n".into(),
            workload: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
        };
        full.query = "watch=true&labelSelector=a%3Db".into();
        full.user_agent = Some("kubectl/v1.35.4 (linux/amd64) \"quoted\"".into());
        full.request_content_type = Some("application/json".into());
        full.response_content_type = Some("application/vnd.kubernetes.protobuf".into());
        full.request_body = Some(Body {
            content: BodyContent::Text("a: 1\n\tb: \"2\"\u{1}é".into()),
            size: 9000,
            truncated: true,
            content_encoding: Some("gzip".into()),
        });
        full.response_body = Some(body(BodyContent::RawJson(
            RawJson::parse(br#"{"kind":"ConfigMap","data":{"a":"\"b\\"}}"#).unwrap(),
        )));
        full.watch = Some(WatchEvents {
            events: vec![
                WatchEvent::new("ADDED", json!({"kind": "ConfigMap", "n": 1.5, "s": "x\ny"})),
                WatchEvent::text(
                    "MODIFIED",
                    RawJson::parse(br#"{"kind":"ConfigMap","data":{"a":"\"b\\"}}"#).unwrap(),
                ),
            ],
            cut: 3,
        });
        full.table = true;
        full.upgrade = Some("SPDY/3.1".into());
        full.error = Some("the apiserver at x could not be reached: \u{7f}".into());
        full.part = Some(WatchPart {
            watch: "w".into(),
            index: 2,
            last: true,
        });
        same_as_serde(full);
    }

    #[test]
    fn every_kind_of_body_is_written_as_serde_json_writes_it() {
        for content in [
            BodyContent::Json(json!({"a": [1, -2, 3.25, null, true, "\u{0}"]})),
            BodyContent::RawJson(RawJson::parse(b"  [1, {\"b\": \"c\"}]  ").unwrap()),
            BodyContent::RawJson(RawJson::parse(b"null").unwrap()),
            BodyContent::Text(String::new()),
            BodyContent::Base64("AAEC/+==".into()),
            BodyContent::Protobuf(ProtobufBody {
                api_version: "example.com/v1".into(),
                kind: "Gadget".into(),
                metadata: Some(json!({"name": "g"})),
                items: None,
                base64: Some("azhzAA==".into()),
            }),
            BodyContent::Protobuf(ProtobufBody {
                api_version: "v1".into(),
                kind: "Gadget\"List".into(),
                metadata: None,
                items: Some(vec![json!({"name": "a"}), json!(null)]),
                base64: None,
            }),
            // As the interceptor ships a body for the aggregator to decode.
            BodyContent::Protobuf(ProtobufBody {
                api_version: "v1".into(),
                kind: "PodList".into(),
                metadata: None,
                items: None,
                base64: Some("azhzAAo=".repeat(40)),
            }),
            // A body shipped gzip as it came, for the aggregator to undo.
            BodyContent::Gzip("H4sIAAAAAAAA/w==".into()),
        ] {
            let mut record = bare();
            record.request_body = Some(body(content.clone()));
            record.response_body = Some(body(content));
            same_as_serde(record);
        }
    }

    #[test]
    fn a_body_on_a_line_of_its_own_follows_the_line_serde_json_writes() {
        let text = bytes::Bytes::from_static(br#"{"kind":"ConfigMap","data":{"a":"\u00e9"}}"#);
        let mut record = bare();
        record.request_body = Some(body(BodyContent::Text("t".into())));
        record.response_body = Some(body(BodyContent::NextLine(
            crate::NextLine::of(text.clone()).unwrap(),
        )));
        let mut written = Vec::new();
        record.write_line(&mut written);
        let written = String::from_utf8(written).unwrap();
        let (line, next) = written.split_once('\n').unwrap();
        assert_eq!(next.as_bytes(), &text[..]);
        let member = format!(
            r#""response_body":{{"next_line":{},"size":42}}"#,
            text.len()
        );
        assert!(line.contains(&member), "{line}");
        assert_eq!(
            line,
            serde_json::to_string(&Line::Exchange(Box::new(record))).unwrap()
        );
    }
}
