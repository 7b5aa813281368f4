//! An exchange's line, read in one pass.
//!
//! serde_json checked a JSON body as it read the line (into a `RawValue`),
//! and ingest then walked the response body again to find the versions in
//! it. Here one [`JsonReader`] pass over the line checks it all, outlines
//! the response body ([`Outline`]), and reads the record's fields where
//! they have the shapes the interceptor writes. Anything else (a field of
//! another shape, a key twice or escaped, a field missing) is left to
//! serde, which then reads the line with its JSON bodies left out: the
//! record keeps serde's rules and serde's error messages.

use crate::provenance::text::{Outline, read_outline};
use apiwitness_record::json_reader::{JsonError, JsonReader, string_value};
use apiwitness_record::{
    Body, BodyContent, Exchange, NextLine, PodIdentity, ProtobufBody, RawJson, WatchEvents,
    WatchPart, WorkloadRef,
};
use std::ops::Range;

/// A body's JSON document, as it lies in the line.
struct JsonBody {
    span: Range<usize>,
    response: bool,
    /// The response's.
    outline: Option<Outline>,
}

/// What one pass over a line found.
struct LineRead {
    bodies: Vec<JsonBody>,
    /// `None` where serde must read the record.
    exchange: Option<Exchange>,
}

/// Puts a field's value in its slot: `false` where it was there already,
/// or is not of the shape read here.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) if slot.is_none() => {
            *slot = Some(value);
            true
        }
        _ => false,
    }
}

fn optional_string_of(text: &str) -> Option<Option<String>> {
    if text == "null" {
        return Some(None);
    }
    string_value(text).map(Some)
}

/// An integer written with digits alone, as serde reads it into a `u64`.
fn unsigned_of(text: &str) -> Option<u64> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn bool_of(text: &str) -> Option<bool> {
    match text {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The record's fields, each `None` until read.
#[derive(Default)]
struct Fields {
    format: Option<u32>,
    id: Option<String>,
    pod: Option<PodIdentity>,
    started_at: Option<String>,
    duration_us: Option<u64>,
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    status: Option<u16>,
    user_agent: Option<Option<String>>,
    request_content_type: Option<Option<String>>,
    response_content_type: Option<Option<String>>,
    request_body: Option<Option<Body>>,
    response_body: Option<Option<Body>>,
    watch: Option<Option<WatchEvents>>,
    table: Option<bool>,
    upgrade: Option<Option<String>>,
    error: Option<Option<String>>,
    part: Option<Option<WatchPart>>,
}

impl Fields {
    /// Reads a field that is none of the structures read apart.
    fn read(&mut self, key: &[u8], text: &str) -> bool {
        match key {
            b"format" => set(
                &mut self.format,
                unsigned_of(text).and_then(|n| u32::try_from(n).ok()),
            ),
            b"id" => set(&mut self.id, string_value(text)),
            b"started_at" => set(&mut self.started_at, string_value(text)),
            b"duration_us" => set(&mut self.duration_us, unsigned_of(text)),
            b"method" => set(&mut self.method, string_value(text)),
            b"path" => set(&mut self.path, string_value(text)),
            b"query" => set(&mut self.query, string_value(text)),
            b"status" => set(
                &mut self.status,
                unsigned_of(text).and_then(|n| u16::try_from(n).ok()),
            ),
            b"user_agent" => set(&mut self.user_agent, optional_string_of(text)),
            b"request_content_type" => {
                set(&mut self.request_content_type, optional_string_of(text))
            }
            b"response_content_type" => {
                set(&mut self.response_content_type, optional_string_of(text))
            }
            b"watch" => set(&mut self.watch, serde_json::from_str(text).ok()),
            b"table" => set(&mut self.table, bool_of(text)),
            b"upgrade" => set(&mut self.upgrade, optional_string_of(text)),
            b"error" => set(&mut self.error, optional_string_of(text)),
            b"part" => set(&mut self.part, serde_json::from_str(text).ok()),
            // serde passes over keys it does not know.
            _ => true,
        }
    }

    /// `None` where a field serde requires is missing.
    fn into_exchange(self) -> Option<Exchange> {
        Some(Exchange {
            format: self.format?,
            id: self.id?,
            pod: self.pod?,
            started_at: self.started_at?,
            duration_us: self.duration_us?,
            method: self.method?,
            path: self.path?,
            query: self.query.unwrap_or_default(),
            status: self.status?,
            user_agent: self.user_agent.flatten(),
            request_content_type: self.request_content_type.flatten(),
            response_content_type: self.response_content_type.flatten(),
            request_body: self.request_body.flatten(),
            response_body: self.response_body.flatten(),
            watch: self.watch.flatten(),
            table: self.table.unwrap_or(false),
            upgrade: self.upgrade.flatten(),
            error: self.error.flatten(),
            part: self.part.flatten(),
        })
    }
}

/// Reads the line once: checks it, finds its JSON bodies, outlines the
/// response's, and reads the record where it can. `Ok` with nothing read
/// where the line is no object: serde says what it is.
fn read_line(line: &str) -> Result<LineRead, JsonError> {
    let mut reader = JsonReader::new(line);
    let mut bodies = Vec::new();
    let Some(mut members) = reader.object() else {
        return Ok(LineRead {
            bodies,
            exchange: None,
        });
    };
    let mut fields = Fields::default();
    // Still reading the record's fields; serde reads them otherwise.
    let mut reading = true;
    while let Some(key) = reader.next_key(&mut members)? {
        // serde reads an escaped key as the key it spells.
        reading &= !key.escaped;
        match key.raw {
            b"request_body" | b"response_body" => {
                let response = key.raw == b"response_body";
                let body = read_body(&mut reader, line, response, &mut bodies)?;
                if reading {
                    let slot = if response {
                        &mut fields.response_body
                    } else {
                        &mut fields.request_body
                    };
                    reading = set(slot, body);
                }
            }
            b"pod" if reading => {
                let pod = read_pod(&mut reader, line)?;
                reading = set(&mut fields.pod, pod);
            }
            key => {
                let span = reader.skip_value()?;
                if reading {
                    reading = fields.read(key, &line[span]);
                }
            }
        }
    }
    reader.finish()?;
    Ok(LineRead {
        bodies,
        exchange: if reading {
            fields.into_exchange()
        } else {
            None
        },
    })
}

/// Reads a body: its JSON document checked (and outlined, for the
/// response) and put in `bodies`, and the body itself where it has the
/// shape read here (`Some(None)` for null).
fn read_body(
    reader: &mut JsonReader<'_>,
    line: &str,
    response: bool,
    bodies: &mut Vec<JsonBody>,
) -> Result<Option<Option<Body>>, JsonError> {
    let Some(mut members) = reader.object() else {
        let span = reader.skip_value()?;
        return Ok((&line[span] == "null").then_some(None));
    };
    let mut json: Option<Range<usize>> = None;
    let (mut text, mut base64, mut gzip, mut encoding) = (None, None, None, None);
    let mut next_line = None;
    let mut protobuf: Option<Option<ProtobufBody>> = None;
    let (mut size, mut truncated) = (None, None);
    let mut reading = true;
    while let Some(key) = reader.next_key(&mut members)? {
        reading &= !key.escaped;
        if key.raw == b"json" {
            let body = if response {
                reader.restart_canonical();
                let start = reader.start_of_value();
                let outline = read_outline(reader)?;
                JsonBody {
                    span: start..reader.position(),
                    response,
                    outline: Some(outline),
                }
            } else {
                JsonBody {
                    span: reader.skip_value()?,
                    response,
                    outline: None,
                }
            };
            reading &= set(&mut json, Some(body.span.clone()));
            bodies.push(body);
            continue;
        }
        let span = reader.skip_value()?;
        if !reading {
            continue;
        }
        let value = &line[span];
        reading = match key.raw {
            b"text" => set(&mut text, optional_string_of(value)),
            b"base64" => set(&mut base64, optional_string_of(value)),
            b"gzip" => set(&mut gzip, optional_string_of(value)),
            b"next_line" => set(&mut next_line, unsigned_of(value)),
            b"protobuf" => set(&mut protobuf, serde_json::from_str(value).ok()),
            b"size" => set(&mut size, unsigned_of(value)),
            b"truncated" => set(&mut truncated, bool_of(value)),
            b"content_encoding" => set(&mut encoding, optional_string_of(value)),
            _ => true,
        };
    }
    if !reading {
        return Ok(None);
    }
    let content = match (
        json,
        text.flatten(),
        base64.flatten(),
        protobuf.flatten(),
        gzip.flatten(),
        next_line,
    ) {
        (Some(span), None, None, None, None, None) => {
            BodyContent::RawJson(RawJson::read(&line[span]))
        }
        (None, Some(text), None, None, None, None) => BodyContent::Text(text),
        (None, None, Some(base64), None, None, None) => BodyContent::Base64(base64),
        (None, None, None, Some(protobuf), None, None) => BodyContent::Protobuf(protobuf),
        (None, None, None, None, Some(gzip), None) => BodyContent::Gzip(gzip),
        (None, None, None, None, None, Some(len)) => BodyContent::NextLine(NextLine::awaited(len)),
        // Not one content: serde says so.
        _ => return Ok(None),
    };
    Ok(size.map(|size| {
        Some(Body {
            content,
            size,
            truncated: truncated.unwrap_or(false),
            content_encoding: encoding.flatten(),
        })
    }))
}

/// Reads the pod's identity where it has the shape read here.
fn read_pod(reader: &mut JsonReader<'_>, line: &str) -> Result<Option<PodIdentity>, JsonError> {
    let Some(mut members) = reader.object() else {
        reader.skip_value()?;
        return Ok(None);
    };
    let (mut namespace, mut name, mut uid) = (None, None, None);
    let (mut service_account, mut node) = (None, None);
    let mut workload: Option<Option<WorkloadRef>> = None;
    let mut reading = true;
    while let Some(key) = reader.next_key(&mut members)? {
        reading &= !key.escaped;
        if key.raw == b"workload" && reading {
            reading = set(&mut workload, read_workload(reader, line)?);
            continue;
        }
        let span = reader.skip_value()?;
        if !reading {
            continue;
        }
        let value = string_value(&line[span]);
        reading = match key.raw {
            b"namespace" => set(&mut namespace, value),
            b"name" => set(&mut name, value),
            b"uid" => set(&mut uid, value),
            b"service_account" => set(&mut service_account, value),
            b"node" => set(&mut node, value),
            b"workload" => false,
            _ => true,
        };
    }
    if !reading {
        return Ok(None);
    }
    Ok(namespace.zip(name).map(|(namespace, name)| PodIdentity {
        namespace,
        name,
        uid: uid.unwrap_or_default(),
        service_account: service_account.unwrap_or_default(),
        node: node.unwrap_or_default(),
        workload: workload.flatten(),
    }))
}

/// `Some(None)` for null.
fn read_workload(
    reader: &mut JsonReader<'_>,
    line: &str,
) -> Result<Option<Option<WorkloadRef>>, JsonError> {
    let Some(mut members) = reader.object() else {
        let span = reader.skip_value()?;
        return Ok((&line[span] == "null").then_some(None));
    };
    let (mut kind, mut name) = (None, None);
    let mut reading = true;
    while let Some(key) = reader.next_key(&mut members)? {
        reading &= !key.escaped;
        let span = reader.skip_value()?;
        if !reading {
            continue;
        }
        reading = match key.raw {
            b"kind" => set(&mut kind, string_value(&line[span])),
            b"name" => set(&mut name, string_value(&line[span])),
            _ => true,
        };
    }
    Ok(match (reading, kind, name) {
        (true, Some(kind), Some(name)) => Some(Some(WorkloadRef { kind, name })),
        _ => None,
    })
}

/// Reads an exchange's line, and outlines its response body where that is
/// JSON. Fails as `serde_json::from_str::<Exchange>` fails on the line.
pub(crate) fn read_exchange(
    line: &str,
) -> Result<(Box<Exchange>, Option<Outline>), serde_json::Error> {
    let read = match read_line(line) {
        Ok(read) => read,
        // Not JSON: serde says what is wrong, in its words.
        Err(_) => return serde_json::from_str(line).map(|e| (e, None)),
    };
    let mut bodies = read.bodies;
    let outline = bodies
        .iter_mut()
        .rev()
        .find(|b| b.response)
        .and_then(|b| b.outline.take());
    if let Some(exchange) = read.exchange {
        return Ok((Box::new(exchange), outline));
    }
    if bodies.is_empty() {
        return serde_json::from_str(line).map(|e| (e, None));
    }
    let cut: usize = bodies.iter().map(|b| b.span.len()).sum();
    let mut rest = String::with_capacity(line.len() - cut + 4 * bodies.len());
    let mut from = 0;
    for body in &bodies {
        rest.push_str(&line[from..body.span.start]);
        // `"json":null` is a JSON body too, as serde reads it.
        rest.push_str("null");
        from = body.span.end;
    }
    rest.push_str(&line[from..]);
    let mut exchange: Box<Exchange> = match serde_json::from_str(&rest) {
        Ok(exchange) => exchange,
        // serde's error, told of the line as it came.
        Err(_) => return serde_json::from_str(line).map(|e| (e, None)),
    };
    for body in &bodies {
        let slot = if body.response {
            &mut exchange.response_body
        } else {
            &mut exchange.request_body
        };
        if let Some(b) = slot
            && let BodyContent::RawJson(_) = b.content
        {
            b.content = BodyContent::RawJson(RawJson::read(&line[body.span.clone()]));
        }
    }
    Ok((exchange, outline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::text::{ListText, object_of, read_object};

    const LINE: &str = r#"{"kind":"exchange","format":1,"id":"r1","pod":{"namespace":"ns","name":"p"},"started_at":"2026-11-24T06:00:00Z","duration_us":5,"method":"PATCH","path":"/api/v1/namespaces/ns/configmaps/c","status":200,"request_content_type":"application/merge-patch+json","request_body":{"json":{"data":{"a":"b"}},"size":20},"response_body":{"size":99,"json":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"ns","uid":"u1","resourceVersion":"7","managedFields":[{"manager":"m"}]},"data":{"a":"b\nc"}}}}"#;

    const WATCH_PART: &str = r#"{"kind":"exchange","format":2,"id":"w1","pod":{"namespace":"ns","name":"p","uid":"u","service_account":"sa","node":"n","workload":{"kind":"Deployment","name":"web"}},"started_at":"t","duration_us":1,"method":"GET","path":"/api/v1/pods","query":"watch=true","status":200,"user_agent":"k\u00e9 \"x\"","response_content_type":"application/json","watch":{"events":[{"type":"ADDED","object":{"kind":"Pod"}}],"cut":0},"part":{"watch":"w0","index":1,"last":false},"table":false,"upgrade":null,"error":"e","request_body":{"text":"a: b","size":4,"truncated":true,"content_encoding":"gzip"},"response_body":{"base64":"AAE=","size":2,"text":null}}"#;

    /// What the line reads as, as serde_json reads it.
    fn as_serde_reads(line: &str) -> Result<Box<Exchange>, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    fn as_read(line: &str) -> Result<Box<Exchange>, String> {
        read_exchange(line)
            .map(|(exchange, _)| exchange)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_line_reads_as_serde_reads_it() {
        let lines = [
            LINE.to_string(),
            WATCH_PART.to_string(),
            WATCH_PART.replace(r#""table":false"#, r#""table":null"#),
            WATCH_PART.replace(
                r#""workload":{"kind":"Deployment","name":"web"}"#,
                r#""workload":null"#,
            ),
            WATCH_PART.replace(r#""name":"web""#, r#""name":"web","name":"x""#),
            WATCH_PART.replace(r#""uid":"u""#, r#""u\u0069d":"u""#),
            WATCH_PART.replace(r#""duration_us":1"#, r#""duration_us":1.0"#),
            WATCH_PART.replace(r#""status":200"#, r#""status":70000"#),
            WATCH_PART.replace(r#""format":2"#, r#""format":2,"format":2"#),
            WATCH_PART.replace(r#""id":"w1","#, ""),
            WATCH_PART.replace(
                r#""user_agent":"k\u00e9 \"x\"""#,
                r#""user_agent":"\ud800""#,
            ),
            LINE.replace(r#""size":99,"#, ""),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""json":null"#),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""json" : [ 1 , "x" ] "#),
            LINE.replace(r#""size":20"#, r#""size":20,"json":{}"#),
            LINE.replace(r#""size":20"#, r#""size":20,"text":"t""#),
            LINE.replace(
                r#""json":{"data":{"a":"b"}}"#,
                r#""gzip":"H4sIAAAAAAAA/w==""#,
            ),
            LINE.replace(r#""size":20"#, r#""size":20,"gzip":"H4sI""#),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""next_line":20"#),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""next_line":-1"#),
            LINE.replace(r#""size":20"#, r#""size":20,"next_line":3"#),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""j\u0073on":{"a":1}"#),
            LINE.replace(r#""request_body":"#, r#""request_body":null,"x":"#),
            LINE.replace(r#""status":200"#, r#""status":"200""#),
            LINE.replace(r#"{"manager":"m"}"#, r#"{"manager":}"#),
            LINE.replace(r#""response_body":{"#, r#""response_body":{"json":1,"#),
            format!("{LINE} "),
            format!("{LINE}x"),
            LINE[..LINE.len() - 1].to_string(),
            "[]".to_string(),
            "".to_string(),
        ];
        for line in &lines {
            assert_eq!(as_read(line), as_serde_reads(line), "{line}");
        }
        assert!(as_read(&lines[0]).is_ok());
        // Lines as the interceptor writes them are read in the one pass;
        // serde reads the others.
        let read_in_one_pass = |line: &str| read_line(line).unwrap().exchange.is_some();
        assert!(read_in_one_pass(&lines[0]) && read_in_one_pass(&lines[1]));
        assert!(!read_in_one_pass(&lines[5]) && !read_in_one_pass(&lines[6]));
        let gzip = lines
            .iter()
            .find(|l| l.contains(r#""gzip":"H4sIAAAAAAAA/w==""#))
            .unwrap();
        assert!(read_in_one_pass(gzip));
        let gzip = as_read(gzip).unwrap();
        assert!(matches!(
            &gzip.request_body.as_ref().unwrap().content,
            BodyContent::Gzip(g) if g == "H4sIAAAAAAAA/w=="
        ));
        let next_line = lines
            .iter()
            .find(|l| l.contains(r#""next_line":20"#))
            .unwrap();
        assert!(read_in_one_pass(next_line));
        assert!(matches!(
            &as_read(next_line).unwrap().request_body.as_ref().unwrap().content,
            BodyContent::NextLine(n) if n.len() == 20 && n.text().is_none()
        ));
        let watch_part = as_read(&lines[1]).unwrap();
        assert_eq!(watch_part.user_agent.as_deref(), Some("ké \"x\""));
        assert_eq!(watch_part.pod.workload.as_ref().unwrap().name, "web");
        let error = |fragment: &str| {
            lines
                .iter()
                .filter_map(|l| as_read(l).err())
                .any(|e| e.contains(fragment))
        };
        for expected in [
            "duplicate field `json`",
            "duplicate field `name`",
            "missing field `id`",
            "expected u16",
            "column",
        ] {
            assert!(error(expected), "{expected}");
        }
    }

    /// Every line one edit away from a real one reads as serde reads it:
    /// the same record, or the same error, told of the same place.
    #[test]
    fn a_line_one_edit_from_a_record_reads_as_serde_reads_it() {
        let mut compared = 0;
        for line in [LINE, WATCH_PART] {
            compared += compare_one_edit_from(line);
        }
        assert!(compared > 3000, "{compared}");
    }

    fn compare_one_edit_from(line: &str) -> usize {
        let bytes = line.as_bytes();
        let mut compared = 0;
        for at in 0..bytes.len() {
            for edit in [
                [&bytes[..at], &bytes[at + 1..]].concat(),
                [&bytes[..at], b"\"", &bytes[at..]].concat(),
                [&bytes[..at], b",", &bytes[at + 1..]].concat(),
                [&bytes[..at], b" ", &bytes[at..]].concat(),
            ] {
                let Ok(line) = String::from_utf8(edit) else {
                    continue;
                };
                assert_eq!(as_read(&line), as_serde_reads(&line), "{line}");
                compared += 1;
            }
        }
        compared
    }

    #[test]
    fn the_response_is_outlined_as_its_own_text_reads() {
        let (exchange, outline) = read_exchange(LINE).unwrap();
        let outline = outline.expect("a JSON response");
        let text = match &exchange.response_body.as_ref().unwrap().content {
            BodyContent::RawJson(raw) => raw.text().to_string(),
            other => panic!("{other:?}"),
        };
        let object = object_of(&text, &outline).expect("a canonical object");
        assert_eq!(Some(&object), read_object(&text).as_ref());
        assert_eq!(object.head.uid, "u1");
        assert!(!object.text.contains("managedFields"));

        let list = LINE.replace(
            r#""json":{"kind":"ConfigMap","#,
            r#""json":{"kind":"ConfigMapList","apiVersion":"v1","items":[{"metadata":{"uid":"i1"}},{"metadata":{"uid":"i2"}}]},"was":{"#,
        );
        let (exchange, outline) = read_exchange(&list).unwrap();
        let text = match &exchange.response_body.as_ref().unwrap().content {
            BodyContent::RawJson(raw) => raw.text().to_string(),
            other => panic!("{other:?}"),
        };
        let outlined = ListText::of(&text, &outline.unwrap()).unwrap();
        let uids: Vec<&str> = outlined
            .items
            .iter()
            .map(|i| i.object.as_ref().unwrap().head.uid.as_str())
            .collect();
        assert_eq!(uids, ["i1", "i2"]);
        let read = ListText::read(&text).unwrap();
        let texts = |l: &ListText<'_>| {
            l.items
                .iter()
                .map(|i| {
                    (
                        i.text.to_string(),
                        i.object.as_ref().map(|o| o.text.clone()),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&outlined), texts(&read));

        // Whitespace inside the body: outlined, but not canonical.
        let spaced = LINE.replace(r#""data":{"a":"b\nc"}"#, r#""data": {"a":"b\nc"}"#);
        let (exchange, outline) = read_exchange(&spaced).unwrap();
        let text = match &exchange.response_body.as_ref().unwrap().content {
            BodyContent::RawJson(raw) => raw.text().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(object_of(&text, &outline.unwrap()), None);
    }
}
