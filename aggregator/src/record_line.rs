//! An exchange's line, read so that its bodies are walked once.
//!
//! serde_json checks a JSON body as it reads the line (into a `RawValue`),
//! and ingest then walked the response body again to find the versions in
//! it. Here one [`JsonReader`] pass over the line checks the bodies and
//! outlines the response's ([`Outline`]), and serde reads the rest of the
//! line, with each JSON body left out: the record's fields keep serde's
//! rules and serde's error messages.

use crate::provenance::text::{Outline, read_outline};
use apiwitness_record::json_reader::{JsonError, JsonReader};
use apiwitness_record::{BodyContent, Exchange, RawJson};
use std::ops::Range;

/// A body's JSON document, as it lies in the line.
struct JsonBody {
    span: Range<usize>,
    response: bool,
    /// The response's.
    outline: Option<Outline>,
}

/// The JSON documents of the line's bodies, each checked. `Ok` with none
/// where the line is no object: serde says what it is.
fn json_bodies(line: &str) -> Result<Vec<JsonBody>, JsonError> {
    let mut reader = JsonReader::new(line);
    let mut found = Vec::new();
    let Some(mut members) = reader.object() else {
        return Ok(found);
    };
    while let Some(key) = reader.next_key(&mut members)? {
        let response = match key.raw {
            b"request_body" => false,
            b"response_body" => true,
            _ => {
                reader.skip_value()?;
                continue;
            }
        };
        let Some(mut fields) = reader.object() else {
            reader.skip_value()?;
            continue;
        };
        while let Some(field) = reader.next_key(&mut fields)? {
            if field.raw != b"json" {
                reader.skip_value()?;
            } else if response {
                reader.restart_canonical();
                let start = reader.start_of_value();
                let outline = read_outline(&mut reader)?;
                found.push(JsonBody {
                    span: start..reader.position(),
                    response,
                    outline: Some(outline),
                });
            } else {
                found.push(JsonBody {
                    span: reader.skip_value()?,
                    response,
                    outline: None,
                });
            }
        }
    }
    reader.finish()?;
    Ok(found)
}

/// Reads an exchange's line, and outlines its response body where that is
/// JSON. Fails as `serde_json::from_str::<Exchange>` fails on the line.
pub(crate) fn read_exchange(
    line: &str,
) -> Result<(Box<Exchange>, Option<Outline>), serde_json::Error> {
    let bodies = match json_bodies(line) {
        Ok(bodies) if !bodies.is_empty() => bodies,
        // No JSON body, or no JSON: serde reads it, and says what is wrong.
        _ => return serde_json::from_str(line).map(|e| (e, None)),
    };
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
    let mut outline = None;
    for body in bodies {
        let slot = if body.response {
            &mut exchange.response_body
        } else {
            &mut exchange.request_body
        };
        if let Some(b) = slot
            && let BodyContent::RawJson(_) = b.content
        {
            b.content = BodyContent::RawJson(RawJson::read(&line[body.span]));
        }
        if body.response {
            outline = body.outline;
        }
    }
    Ok((exchange, outline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::text::{ListText, object_of, read_object};

    const LINE: &str = r#"{"kind":"exchange","format":1,"id":"r1","pod":{"namespace":"ns","name":"p"},"started_at":"2026-11-24T06:00:00Z","duration_us":5,"method":"PATCH","path":"/api/v1/namespaces/ns/configmaps/c","status":200,"request_content_type":"application/merge-patch+json","request_body":{"json":{"data":{"a":"b"}},"size":20},"response_body":{"size":99,"json":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"ns","uid":"u1","resourceVersion":"7","managedFields":[{"manager":"m"}]},"data":{"a":"b\nc"}}}}"#;

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
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""json":null"#),
            LINE.replace(r#""json":{"data":{"a":"b"}}"#, r#""json" : [ 1 , "x" ] "#),
            LINE.replace(r#""size":20"#, r#""size":20,"json":{}"#),
            LINE.replace(r#""size":20"#, r#""size":20,"text":"t""#),
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
        assert!(
            as_read(&lines[3])
                .unwrap_err()
                .contains("duplicate field `json`")
        );
        assert!(as_read(&lines[7]).unwrap_err().contains("column"));
    }

    /// Every line one edit away from a real one reads as serde reads it:
    /// the same record, or the same error, told of the same place.
    #[test]
    fn a_line_one_edit_from_a_record_reads_as_serde_reads_it() {
        let bytes = LINE.as_bytes();
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
        assert!(compared > 1000, "{compared}");
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
