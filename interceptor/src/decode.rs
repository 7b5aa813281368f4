//! Captured bytes into the record's body and watch events.
//!
//! JSON stays JSON, text stays text, Kubernetes protobuf becomes the JSON the
//! apiserver would have sent, and anything else is kept as base64 beside its
//! content type, so nothing is silently lost. Where nothing in a body can
//! need redacting, a protobuf body, or a gzip one, may instead go as it
//! came, for the aggregator to decode.

use crate::capture::Captured;
#[cfg(doc)]
use crate::redact::Redactor;
use apiwitness_record::media::{base64, content_of, is_json, is_protobuf, media_type};
use apiwitness_record::{
    Body, BodyContent, FORMAT_GZIP, FORMAT_NEXT_LINE, NextLine, RawJson, WatchEvent, WatchEvents,
};
use bytes::Bytes;
use serde_json::Value;

/// The strings that send a JSON body down the tree path when they stand in
/// it whole: what the redactor walks for ([`Redactor::WORDS`]), and the
/// kind `is_table` looks for. A `\u` escape of a letter could spell any.
pub(crate) const WORDS: &[&[u8]] = &[b"Secret", b"protobuf", b"Table"];

/// `Table`'s bit among the words a scan saw: a body in which only it
/// stands keeps its text, and `is_table` reads the text's kind.
const TABLE_SEEN: u32 = 1 << 2;

/// Where a kind of body is decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DecodedIn {
    /// In the aggregator, for a body in which there can be nothing to
    /// redact: the sidecar ships it as it came (base64). Every other body
    /// is decoded in the sidecar.
    #[default]
    Aggregator,
    /// Every body in the sidecar, for an aggregator that does not decode
    /// this kind.
    Interceptor,
}

/// Where protobuf bodies become JSON, and where gzip bodies are undone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decoding {
    /// A protobuf body may go undecoded where its kind is known and holds
    /// no other object, is no Secret, and the request's bodies are not
    /// redacted by path: decoding a list of 50 Pods took a third of the
    /// sidecar's CPU.
    pub protobuf: DecodedIn,
    /// A gzip body may go as it came where, undone, it is JSON or text in
    /// which none of [`WORDS`] stands (or protobuf that may go undecoded),
    /// and the request's bodies are not redacted by path: for a list of 50
    /// Pods, 26 KB as it came against 208 KB to check, copy and compress.
    pub gzip: DecodedIn,
    /// A JSON body of [`UNCHECKED_FROM`] bytes or more may go unchecked, on
    /// the line after its record's, where none of [`WORDS`] stands in it
    /// and the request's bodies are not redacted by path: checking a list
    /// of 50 Pods was a tenth of the sidecar's CPU for it.
    pub json: DecodedIn,
}

impl Decoding {
    /// What an aggregator that reads record formats up to `format` can
    /// decode. An aggregator of format 2 may be older than its decoding of
    /// protobuf bodies, which came without a format of its own: it gets
    /// every body decoded here.
    pub fn for_aggregator_format(format: u32) -> Decoding {
        let here_below = |first: u32| {
            if format < first {
                DecodedIn::Interceptor
            } else {
                DecodedIn::Aggregator
            }
        };
        Decoding {
            protobuf: here_below(FORMAT_GZIP),
            gzip: here_below(FORMAT_GZIP),
            json: here_below(FORMAT_NEXT_LINE),
        }
    }
}

/// The smallest JSON body that may go unchecked: below it, the check
/// costs a few microseconds, and the record keeps its body in its line.
pub const UNCHECKED_FROM: usize = 8 << 10;

/// The record's body for a captured body, or `None` for an empty one.
/// `redactor_keeps`: the redactor leaves this request's bodies as they are
/// but for what their text holds (`Redactor::redacts_nothing_by_request`),
/// so that a JSON body may stay text, and a protobuf or gzip one go as it
/// came where `decoding` says so.
pub fn body(
    captured: &Captured,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    redactor_keeps: bool,
    decoding: Decoding,
) -> Option<Body> {
    if captured.size == 0 && captured.bytes.is_empty() {
        return None;
    }
    let media = media_type(content_type);
    if let Some(compressed) = &captured.compressed
        && decoding.gzip == DecodedIn::Aggregator
        && redactor_keeps
        && may_go_compressed(&captured.bytes, &media, decoding.protobuf)
    {
        return Some(Body {
            content: apiwitness_record::gzip::shipped_body(compressed),
            size: captured.size,
            truncated: false,
            content_encoding: content_encoding.map(str::to_string),
        });
    }
    if is_json(&media)
        && decoding.json == DecodedIn::Aggregator
        && redactor_keeps
        && !captured.truncated
        && captured.bytes.len() >= UNCHECKED_FROM
        && holds_no_word(&captured.bytes)
        // The apiserver ends every JSON body with a line break, which a
        // body on a line of its own cannot hold: JSON's whitespace around
        // the document is left out, as the check leaves it out.
        && let Some(next) = NextLine::of(captured.bytes.slice_ref(
            apiwitness_record::json_reader::trim_whitespace(&captured.bytes),
        ))
    {
        return Some(Body {
            content: BodyContent::NextLine(next),
            size: captured.size,
            truncated: false,
            content_encoding: content_encoding.map(str::to_string),
        });
    }
    // One pass checks the text is one JSON document on one line and finds
    // the words; five searches and serde_json's check took twice as long.
    let raw = (is_json(&media) && !captured.truncated && redactor_keeps)
        .then(|| RawJson::scan_shared(&captured.bytes, WORDS))
        .flatten()
        .filter(|scan| !scan.letter_escape && scan.words_seen & !TABLE_SEEN == 0)
        .map(|scan| scan.json);
    let content = match raw {
        Some(raw) => BodyContent::RawJson(raw),
        None if is_protobuf(&media) && !captured.truncated => {
            protobuf(&captured.bytes, redactor_keeps, decoding.protobuf)
        }
        None => content_of(&captured.bytes, &media, captured.truncated),
    };
    Some(Body {
        content,
        size: captured.size,
        truncated: captured.truncated,
        content_encoding: content_encoding.map(str::to_string),
    })
}

/// Whether a gzip body, `undone`, holds nothing the sidecar must look at:
/// the aggregator undoes it and reads it as the sidecar would have. Any
/// text in which none of [`WORDS`] stands (nor a `\u` escape of a letter
/// or digit, which could spell one),
/// where the sidecar would look for them anyway; or protobuf that may go
/// undecoded. Nothing is checked as JSON here: the body travels as base64,
/// whatever it holds.
fn may_go_compressed(undone: &[u8], media: &str, protobuf: DecodedIn) -> bool {
    if is_protobuf(media) {
        return protobuf == DecodedIn::Aggregator
            && apiwitness_record::protobuf::envelope_kind(undone)
                .is_ok_and(|envelope| leaves_undecoded(&envelope));
    }
    holds_no_word(undone)
}

/// Whether none of [`WORDS`] stands anywhere in `text`, nor a `\u`
/// escape of a letter or digit, which could spell one: four memmem
/// searches, about 30 µs for a list of 50 Pods, where the JSON check that
/// also finds them took about 200.
fn holds_no_word(text: &[u8]) -> bool {
    // Where no four hex digits follow, as if it spelled a letter.
    let letter_escape = memchr::memmem::find_iter(text, b"\\u")
        .any(|at| apiwitness_record::json_reader::letter_escape_at(text, at).unwrap_or(true));
    !letter_escape
        && WORDS
            .iter()
            .all(|word| memchr::memmem::find(text, word).is_none())
}

/// Whether a protobuf object of this kind can hold nothing to redact, so
/// that it may leave undecoded (where the request's bodies are not
/// redacted by path either): a kind the decoder knows, that holds no other
/// object, and is no Secret.
fn leaves_undecoded(envelope: &apiwitness_record::protobuf::EnvelopeKind) -> bool {
    envelope.known && !envelope.holds_objects && !envelope.kind.starts_with("Secret")
}

/// A whole protobuf body: left for the aggregator to decode where nothing
/// in it can need redacting, or else decoded into JSON text, which then
/// goes the way a JSON body goes: kept as text where nothing in it needs
/// the tree. The decoder notes the words as it writes, so the text is not
/// scanned again.
fn protobuf(bytes: &Bytes, redactor_keeps: bool, decoding: DecodedIn) -> BodyContent {
    if decoding == DecodedIn::Aggregator
        && redactor_keeps
        && let Ok(envelope) = apiwitness_record::protobuf::envelope_kind(bytes)
        && leaves_undecoded(&envelope)
    {
        return BodyContent::Protobuf(apiwitness_record::protobuf::shipped_body(envelope, bytes));
    }
    match apiwitness_record::protobuf::decode_body_text(bytes, WORDS) {
        Ok(apiwitness_record::protobuf::DecodedText::Full { json, words_seen }) => {
            let json = Bytes::from(json);
            if redactor_keeps
                && !words_seen
                && let Some(raw) = RawJson::written(json.clone())
            {
                return BodyContent::RawJson(raw);
            }
            match serde_json::from_slice(&json) {
                Ok(value) => BodyContent::Json(value),
                Err(_) => BodyContent::Base64(base64(bytes)),
            }
        }
        Ok(apiwitness_record::protobuf::DecodedText::Partial(body)) => BodyContent::Protobuf(body),
        Err(_) => BodyContent::Base64(base64(bytes)),
    }
}

/// The events of a captured watch response. In a protobuf watch, an
/// event's object in which there can be nothing to redact is left for the
/// aggregator to decode, as a body is (`redactor_keeps`, `decoding`), as
/// `{"protobuf": {"apiVersion", "kind", "base64"}}`.
pub fn watch(
    captured: &Captured,
    content_type: Option<&str>,
    redactor_keeps: bool,
    decoding: DecodedIn,
) -> WatchEvents {
    let media = media_type(content_type);
    let mut out = WatchEvents {
        events: Vec::with_capacity(captured.events.len()),
        cut: captured.events_cut,
    };
    let defer = redactor_keeps && decoding == DecodedIn::Aggregator;
    for raw in &captured.events {
        if is_protobuf(&media) {
            let object = apiwitness_record::protobuf::read_watch_frame(raw).and_then(
                |(event_type, bytes)| {
                    // The envelope is read for its kind only where the
                    // event may leave undecoded.
                    let object =
                        match defer.then(|| apiwitness_record::protobuf::envelope_kind(&bytes)) {
                            Some(Ok(envelope)) if leaves_undecoded(&envelope) => {
                                apiwitness_record::protobuf::shipped_object(envelope, &bytes)
                            }
                            _ => apiwitness_record::protobuf::decode_object(&bytes)?,
                        };
                    Ok(WatchEvent::new(event_type, object))
                },
            );
            match object {
                Ok(event) => out.events.push(event),
                Err(_) => out.cut += 1,
            }
            continue;
        }
        if let Some(event) = redactor_keeps.then(|| event_as_text(raw)).flatten() {
            out.events.push(event);
            continue;
        }
        match serde_json::from_slice::<WatchEvent>(raw) {
            Ok(event) => out.events.push(event),
            Err(_) => out.cut += 1,
        }
    }
    out
}

/// A JSON watch event whose object stays the text it came as, as a body
/// does: the event is one JSON document in which none of [`WORDS`] stands,
/// and its object holds no line break. Made into a tree and written out
/// again, an event of a small ConfigMap cost more than this one read of
/// its members, which checks the event and notes the words as it goes.
/// `None` sends the event down the tree path, which also says why one is
/// not an event.
fn event_as_text(raw: &[u8]) -> Option<WatchEvent> {
    use apiwitness_record::json_reader::{JsonReader, string_value};
    let text = std::str::from_utf8(raw.trim_ascii()).ok()?;
    let mut reader = JsonReader::new(text).noting(WORDS);
    let mut members = reader.object()?;
    let (mut event_type, mut object) = (None, None);
    while let Some(key) = reader.next_key(&mut members).ok()? {
        let span = reader.skip_value().ok()?;
        let slot = match (key.escaped, key.raw) {
            (false, b"type") => &mut event_type,
            (false, b"object") => &mut object,
            _ => continue,
        };
        // A member twice is an error to serde: the tree path says so.
        if slot.replace(span).is_some() {
            return None;
        }
    }
    reader.finish().ok()?;
    if reader.words_seen() != 0 || reader.read_letter_escape() {
        return None;
    }
    let object = &text[object?];
    // The reader takes line breaks between tokens, as serde_json does; the
    // object goes into a line of NDJSON, which cannot hold one. Any other
    // control byte it refuses.
    if memchr::memchr2(b'\n', b'\r', object.as_bytes()).is_some() {
        return None;
    }
    Some(WatchEvent::text(
        string_value(&text[event_type?])?,
        RawJson::read(object),
    ))
}

/// A `meta.k8s.io` Table, as `kubectl get` asks for.
pub fn is_table(body: &Body) -> bool {
    let says_table = |kind: Option<&str>, api_version: Option<&str>| {
        kind == Some("Table") && api_version.is_some_and(|a| a.starts_with("meta.k8s.io/"))
    };
    match &body.content {
        BodyContent::Json(v) => says_table(
            v.get("kind").and_then(Value::as_str),
            v.get("apiVersion").and_then(Value::as_str),
        ),
        // Read only where the word stands in it, and then only as far as
        // its kind and apiVersion, which the apiserver writes first.
        BodyContent::RawJson(raw)
            if memchr::memmem::find(raw.as_bytes(), b"\"Table\"").is_some() =>
        {
            let (kind, api_version) = kind_and_api_version(raw.text());
            says_table(kind.as_deref(), api_version.as_deref())
        }
        _ => false,
    }
}

/// The `kind` and `apiVersion` members of a JSON object's text, read
/// without the rest of it past them.
fn kind_and_api_version(text: &str) -> (Option<String>, Option<String>) {
    use apiwitness_record::json_reader::{JsonReader, string_value};
    let (mut kind, mut api_version) = (None, None);
    let mut reader = JsonReader::new(text);
    let Some(mut members) = reader.object() else {
        return (None, None);
    };
    while kind.is_none() || api_version.is_none() {
        let Ok(Some(key)) = reader.next_key(&mut members) else {
            break;
        };
        let Ok(span) = reader.skip_value() else {
            break;
        };
        match (key.escaped, key.raw) {
            (false, b"kind") => kind = string_value(&text[span]),
            (false, b"apiVersion") => api_version = string_value(&text[span]),
            _ => {}
        }
    }
    (kind, api_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;
    use apiwitness_record::ApiRequest;
    use apiwitness_record::ProtobufBody;
    use serde_json::json;

    fn captured(bytes: &'static [u8], truncated: bool) -> Captured {
        Captured {
            bytes: Bytes::from_static(bytes),
            size: bytes.len() as u64 + u64::from(truncated) * 100,
            truncated,
            complete: true,
            ..Default::default()
        }
    }

    /// The content recorded for `bytes`, sent as `content_type` in a GET of
    /// a ConfigMap; `keeps_text`: as the redactor judges such a request, or
    /// as for a request whose bodies the redactor must walk.
    fn content(
        bytes: &'static [u8],
        truncated: bool,
        content_type: &str,
        keeps_text: bool,
    ) -> BodyContent {
        let request =
            ApiRequest::parse("GET", "/api/v1/namespaces/ns/configmaps/c", "", None).unwrap();
        let redactor_keeps = keeps_text && Redactor::default().redacts_nothing_by_request(&request);
        body(
            &captured(bytes, truncated),
            Some(content_type),
            None,
            redactor_keeps,
            Decoding::default(),
        )
        .unwrap()
        .content
    }

    /// A ConfigMap's JSON of at least `len` bytes, with `inner` in its data.
    fn large_json(inner: &str, len: usize) -> Vec<u8> {
        let filler = "x".repeat(len);
        format!(r#"{{"kind":"ConfigMap","data":{{"a":"{inner}","b":"{filler}"}}}}"#).into_bytes()
    }

    #[test]
    fn large_json_goes_unchecked_on_its_own_line_only_where_there_can_be_nothing_to_redact() {
        let request =
            ApiRequest::parse("GET", "/api/v1/namespaces/ns/configmaps/c", "", None).unwrap();
        let keeps = Redactor::default().redacts_nothing_by_request(&request);
        assert!(keeps);
        let recorded = |bytes: Vec<u8>, truncated: bool, keeps: bool, decoding: Decoding| {
            let captured = Captured {
                size: bytes.len() as u64 + u64::from(truncated),
                bytes: Bytes::from(bytes),
                truncated,
                complete: true,
                ..Default::default()
            };
            body(&captured, Some("application/json"), None, keeps, decoding)
                .unwrap()
                .content
        };
        let is_next_line = |c: &BodyContent| matches!(c, BodyContent::NextLine(_));

        let plain = large_json("<b> & \\u003c", UNCHECKED_FROM);
        // As the apiserver writes it, with a line break at its end, which
        // is left out, as a checked body leaves it out.
        let mut sent_by_the_apiserver = plain.clone();
        sent_by_the_apiserver.extend_from_slice(b"\r\n");
        let sent = recorded(sent_by_the_apiserver, false, keeps, Decoding::default());
        let BodyContent::NextLine(next) = &sent else {
            panic!("{sent:?}");
        };
        assert_eq!(next.text().unwrap()[..], plain[..]);
        // Not JSON, and still sent so: the aggregator keeps it as text.
        let mut broken = plain.clone();
        broken.truncate(plain.len() - 1);
        assert!(is_next_line(&recorded(
            broken,
            false,
            keeps,
            Decoding::default()
        )));

        // A small body, a cut one, one the redactor walks by request, or
        // when the aggregator does not read format 4: checked here.
        let small = large_json("a", UNCHECKED_FROM - 100);
        assert!(matches!(
            recorded(small, false, keeps, Decoding::default()),
            BodyContent::RawJson(_)
        ));
        assert!(matches!(
            recorded(plain.clone(), true, keeps, Decoding::default()),
            BodyContent::Text(_)
        ));
        assert!(matches!(
            recorded(plain.clone(), false, false, Decoding::default()),
            BodyContent::Json(_)
        ));
        let checked_here = Decoding {
            json: DecodedIn::Interceptor,
            ..Decoding::default()
        };
        assert!(matches!(
            recorded(plain.clone(), false, keeps, checked_here),
            BodyContent::RawJson(_)
        ));

        // Whatever the redactor or is_table must see, wherever it stands.
        for inner in ["Secret", "protobuf", "Table", "a\\u0053b", "SecretList"] {
            let content = recorded(
                large_json(inner, UNCHECKED_FROM),
                false,
                keeps,
                Decoding::default(),
            );
            assert!(!is_next_line(&content), "{inner}: {content:?}");
        }
        // And what a line cannot hold.
        for inner in ["\n", "\r"] {
            let mut bytes = large_json("a", UNCHECKED_FROM);
            bytes.splice(1..1, inner.bytes());
            let content = recorded(bytes, false, keeps, Decoding::default());
            assert!(
                matches!(content, BodyContent::Json(_)),
                "{inner:?}: {content:?}"
            );
        }
        let mut not_utf8 = large_json("a", UNCHECKED_FROM);
        not_utf8[30] = 0xff;
        assert!(matches!(
            recorded(not_utf8, false, keeps, Decoding::default()),
            BodyContent::Base64(_)
        ));
    }

    #[test]
    fn json_that_needs_no_tree_stays_text_on_one_line() {
        let json = |text: &'static [u8]| content(text, false, "application/json", true);
        let plain = json(b"{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"b\"}}\n");
        assert!(
            matches!(&plain, BodyContent::RawJson(r) if r.text() == "{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"b\"}}"),
            "{plain:?}"
        );
        // Whatever the redactor must see goes the long way: a Secret by
        // kind, a `\u` escape that could spell one (or a Table), a protobuf
        // payload; and so does a document over several lines. (A Table
        // keeps its text: `is_table` reads its kind there.)
        for text in [
            &b"{\"kind\":\"List\",\"items\":[{\"kind\":\"Secret\",\"data\":{\"k\":\"dg==\"}}]}"[..],
            b"{\"kind\":\"Secr\\u0065t\",\"data\":{\"k\":\"dg==\"}}",
            b"{\"protobuf\":{\"kind\":\"Secret\"}}",
            b"{\n  \"kind\": \"ConfigMap\"\n}",
        ] {
            assert!(
                matches!(json(text), BodyContent::Json(_)),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // Not for a request whose bodies the redactor must walk, nor when cut.
        assert_eq!(
            content(b"{\"a\":1}", false, "application/json", false),
            BodyContent::Json(json!({"a": 1}))
        );
        assert_eq!(
            content(b"{\"a\":", true, "application/json", true),
            BodyContent::Text("{\"a\":".into())
        );
    }

    /// `kind` (a List or a single object) of `api_version` in Kubernetes'
    /// protobuf envelope, as the apiserver sends it.
    fn protobuf_body(api_version: &str, kind: &str, raw: Vec<u8>) -> Bytes {
        use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
        use prost::Message;
        let mut out = b"k8s\0".to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            ..Default::default()
        }
        .encode(&mut out)
        .unwrap();
        Bytes::from(out)
    }

    #[test]
    fn protobuf_is_kept_as_json_text_unless_the_redactor_must_walk_it() {
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use prost::Message;
        let meta = |name: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            labels: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
            ..Default::default()
        };
        let list = core::ConfigMapList {
            items: vec![core::ConfigMap {
                metadata: Some(meta("c")),
                data: [("k".to_string(), "line\n\"quoted\"".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = protobuf_body("v1", "ConfigMapList", list.encode_to_vec());
        let decode = |bytes: &Bytes, keeps: bool| {
            let captured = Captured {
                size: bytes.len() as u64,
                bytes: bytes.clone(),
                complete: true,
                ..Default::default()
            };
            body(
                &captured,
                Some("application/vnd.kubernetes.protobuf"),
                None,
                keeps,
                Decoding {
                    protobuf: DecodedIn::Interceptor,
                    ..Decoding::default()
                },
            )
            .unwrap()
            .content
        };
        let BodyContent::RawJson(text) = decode(&bytes, true) else {
            panic!("a ConfigMap list needs no tree")
        };
        let apiwitness_record::protobuf::Decoded::Full(tree) =
            apiwitness_record::protobuf::decode_body(&bytes).unwrap()
        else {
            panic!("a ConfigMap list decodes whole")
        };
        assert_eq!(text.to_value(), tree);
        assert_eq!(tree["items"][0]["data"]["k"], "line\n\"quoted\"");
        assert_eq!(
            tree["items"][0]["metadata"]["labels"],
            json!({"a": "1", "b": "2"})
        );
        assert!(
            text.text()
                .starts_with("{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",")
        );
        // For a request whose bodies the redactor walks: the tree.
        assert_eq!(decode(&bytes, false), BodyContent::Json(tree));
        // So does an object where a word stands whole, as a key or a value:
        // the decoder notes it as it writes.
        for (key, value) in [("Secret", "v"), ("k", "Table"), ("protobuf", "v")] {
            let config_map = core::ConfigMap {
                metadata: Some(meta("w")),
                data: [(key.to_string(), value.to_string())].into(),
                ..Default::default()
            };
            let bytes = protobuf_body("v1", "ConfigMap", config_map.encode_to_vec());
            assert!(
                matches!(decode(&bytes, true), BodyContent::Json(_)),
                "{key}: {value}"
            );
        }
        // A Secret goes the long way, so that the redactor sees its data.
        let secret = core::Secret {
            metadata: Some(meta("s")),
            data: [("k".to_string(), b"v".to_vec())].into(),
            ..Default::default()
        };
        let bytes = protobuf_body("v1", "Secret", secret.encode_to_vec());
        let BodyContent::Json(tree) = decode(&bytes, true) else {
            panic!("a Secret is decoded into a tree")
        };
        assert_eq!(tree["data"]["k"], "dg==");
    }

    /// The content recorded for a protobuf body of `kind`, in a GET of
    /// `path`, with protobuf left to the aggregator.
    fn left_to_the_aggregator(
        path: &str,
        api_version: &str,
        kind: &str,
        raw: Vec<u8>,
    ) -> BodyContent {
        let request = ApiRequest::parse("GET", path, "", None).unwrap();
        let bytes = protobuf_body(api_version, kind, raw);
        let captured = Captured {
            size: bytes.len() as u64,
            bytes,
            complete: true,
            ..Default::default()
        };
        let redactor = Redactor::default();
        let mut body = body(
            &captured,
            Some("application/vnd.kubernetes.protobuf"),
            None,
            redactor.redacts_nothing_by_request(&request),
            Decoding::default(),
        )
        .unwrap();
        redactor.body(&request, &mut body);
        body.content
    }

    #[test]
    fn protobuf_goes_as_it_came_only_where_there_can_be_nothing_to_redact() {
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use prost::Message;
        let metadata = Some(ObjectMeta {
            name: Some("o".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        });
        let config_maps = core::ConfigMapList {
            items: vec![core::ConfigMap {
                metadata: metadata.clone(),
                data: [("Secret".to_string(), "v".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let path = "/api/v1/namespaces/ns/configmaps";
        let sent = protobuf_body("v1", "ConfigMapList", config_maps.clone());
        assert_eq!(
            left_to_the_aggregator(path, "v1", "ConfigMapList", config_maps.clone()),
            BodyContent::Protobuf(ProtobufBody {
                api_version: "v1".into(),
                kind: "ConfigMapList".into(),
                metadata: None,
                items: None,
                base64: Some(base64(&sent)),
            })
        );
        // A Secret, wherever it is read, is decoded here and redacted.
        let secret = core::Secret {
            metadata: metadata.clone(),
            data: [("k".to_string(), b"hunter2".to_vec())].into(),
            ..Default::default()
        }
        .encode_to_vec();
        for path in [path, "/api/v1/namespaces/ns/secrets/o"] {
            let BodyContent::Json(tree) =
                left_to_the_aggregator(path, "v1", "Secret", secret.clone())
            else {
                panic!("a Secret is decoded in the sidecar")
            };
            assert!(
                tree["data"]["k"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("<redacted ")),
                "{path}: {tree}"
            );
        }
        // So is a kind that may hold any other object.
        let revision = k8s_pb::api::apps::v1::ControllerRevision {
            metadata: metadata.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let path = "/apis/apps/v1/namespaces/ns/controllerrevisions/o";
        assert!(matches!(
            left_to_the_aggregator(path, "apps/v1", "ControllerRevision", revision),
            BodyContent::RawJson(_)
        ));
        // A kind the decoder does not know keeps the partial reading.
        let widget = core::ConfigMap {
            metadata,
            ..Default::default()
        }
        .encode_to_vec();
        let BodyContent::Protobuf(partial) = left_to_the_aggregator(
            "/apis/example.com/v1/namespaces/ns/widgets/o",
            "example.com/v1",
            "Widget",
            widget,
        ) else {
            panic!("an unknown kind is read partly")
        };
        assert!(partial.metadata.is_some());
        // A request whose bodies the redactor walks: decoded, as a tree.
        assert!(matches!(
            left_to_the_aggregator(
                "/api/v1/namespaces/ns/secrets",
                "v1",
                "ConfigMapList",
                config_maps
            ),
            BodyContent::Json(_)
        ));
    }

    /// `undone` as a gzip body the capture kept as it came, too.
    fn captured_gzip(undone: &[u8]) -> Captured {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(undone).unwrap();
        Captured {
            bytes: Bytes::copy_from_slice(undone),
            compressed: Some(Bytes::from(encoder.finish().unwrap())),
            size: undone.len() as u64,
            complete: true,
            ..Default::default()
        }
    }

    #[test]
    fn gzip_goes_as_it_came_only_where_there_can_be_nothing_to_redact() {
        use k8s_pb::api::core::v1 as core;
        use prost::Message;
        let recorded = |captured: &Captured, media: &str, keeps: bool, decoding: Decoding| {
            body(captured, Some(media), Some("gzip"), keeps, decoding).unwrap()
        };
        let list = br#"{"kind":"ConfigMapList","items":[{"data":{"k":"v"}}]}"#;
        let captured = captured_gzip(list);
        let shipped = recorded(&captured, "application/json", true, Decoding::default());
        assert_eq!(
            shipped.content,
            apiwitness_record::gzip::shipped_body(captured.compressed.as_ref().unwrap())
        );
        assert_eq!(shipped.size, list.len() as u64);
        assert_eq!(shipped.content_encoding.as_deref(), Some("gzip"));
        // The aggregator undoes it into what the sidecar records itself.
        let in_the_sidecar = Decoding {
            gzip: DecodedIn::Interceptor,
            ..Decoding::default()
        };
        let mut undone = shipped.clone();
        assert!(apiwitness_record::gzip::undo_shipped(
            &mut undone,
            Some("application/json")
        ));
        assert_eq!(
            undone,
            recorded(&captured, "application/json", true, in_the_sidecar)
        );
        assert!(matches!(undone.content, BodyContent::RawJson(_)));

        // Undone in the sidecar: where it says so, where the redactor walks
        // the request's bodies, where a word or an escape stands in it, and
        // where the capture kept no copy as it came.
        let undone_here = |captured: &Captured, keeps: bool, decoding: Decoding| {
            !matches!(
                recorded(captured, "application/json", keeps, decoding).content,
                BodyContent::Gzip(_)
            )
        };
        assert!(undone_here(&captured, true, in_the_sidecar));
        assert!(undone_here(&captured, false, Decoding::default()));
        for text in [
            &br#"{"kind":"List","items":[{"kind":"Secret","data":{"k":"dg=="}}]}"#[..],
            br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1"}"#,
            br#"{"kind":"Secret","data":{"k":"dg=="}}"#,
            br#"{"protobuf":{"kind":"Secret"}}"#,
        ] {
            assert!(
                undone_here(&captured_gzip(text), true, Decoding::default()),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        // An escape of `<` spells no word; an escape of a letter might.
        let escaped = captured_gzip(br#"{"kind":"ConfigMap","data":{"k":"\u003cv\u003e"}}"#);
        assert!(!undone_here(&escaped, true, Decoding::default()));
        let letter = captured_gzip(br#"{"kind":"ConfigMap","data":{"k":"\u0076"}}"#);
        assert!(undone_here(&letter, true, Decoding::default()));
        let without_copy = Captured {
            compressed: None,
            ..captured_gzip(list)
        };
        assert!(undone_here(&without_copy, true, Decoding::default()));

        // Protobuf: as it would go undecoded.
        let protobuf = "application/vnd.kubernetes.protobuf";
        let map = protobuf_body(
            "v1",
            "ConfigMap",
            core::ConfigMap::default().encode_to_vec(),
        );
        let secret = protobuf_body("v1", "Secret", core::Secret::default().encode_to_vec());
        let is_gzip = |bytes: &Bytes, decoding: Decoding| {
            matches!(
                recorded(&captured_gzip(bytes), protobuf, true, decoding).content,
                BodyContent::Gzip(_)
            )
        };
        assert!(is_gzip(&map, Decoding::default()));
        assert!(!is_gzip(&secret, Decoding::default()));
        let protobuf_here = Decoding {
            protobuf: DecodedIn::Interceptor,
            ..Decoding::default()
        };
        assert!(!is_gzip(&map, protobuf_here));
    }

    #[test]
    fn json_text_and_binary() {
        assert_eq!(
            content(b"{\"a\":1}", false, "application/json", false),
            BodyContent::Json(json!({"a": 1}))
        );
        assert_eq!(
            content(b"a: 1\n", false, "application/apply-patch+yaml", false),
            BodyContent::Text("a: 1\n".into())
        );
        // A protobuf body that is not Kubernetes' envelope stays base64.
        assert_eq!(
            content(
                b"k8s\0\x0a\x01",
                false,
                "application/vnd.kubernetes.protobuf",
                false
            ),
            BodyContent::Base64("azhzAAoB".into())
        );
        // Truncated JSON is kept as the text it is.
        let b = body(
            &captured(b"{\"a\":", true),
            Some("application/json"),
            Some("gzip"),
            false,
            Decoding::default(),
        )
        .unwrap();
        assert_eq!(b.content, BodyContent::Text("{\"a\":".into()));
        assert!(b.truncated);
        assert_eq!(b.content_encoding.as_deref(), Some("gzip"));
        assert!(body(&Captured::default(), None, None, false, Decoding::default()).is_none());
    }

    #[test]
    fn watch_events_and_undecodable_ones() {
        let c = Captured {
            events: vec![
                Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"ConfigMap\"}}"),
                Bytes::from_static(b"garbage"),
            ],
            events_cut: 3,
            ..Default::default()
        };
        let w = watch(&c, Some("application/json"), true, DecodedIn::default());
        assert_eq!(w.events.len(), 1);
        assert_eq!(w.events[0].event_type, "ADDED");
        assert_eq!(w.cut, 4);
    }

    /// A JSON watch event's object stays its text where the redactor has
    /// nothing to do with it; any event the text path cannot vouch for
    /// goes down the tree path, which keeps or cuts it as before. Either
    /// way the line reads back as the apiserver's event.
    #[test]
    fn json_watch_events_stay_text_only_where_there_is_nothing_to_redact() {
        let events: &[&'static [u8]] = &[
            // Text: the apiserver's own shape, and its line break.
            b"{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"ConfigMap\",\"data\":{\"a\":\"x\\\"y\"}}}\n",
            // Text: members in another order, whitespace, and one more.
            b" { \"object\" : [1, 2.5e3] , \"extra\": {}, \"type\": \"ADDED\" } ",
            // Tree: a word the redactor looks for.
            b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Secret\",\"data\":{\"k\":\"dg==\"}}}",
            // Tree: a \u escape, which could spell one.
            b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"\\u0053ecret\"}}",
            // Tree: a line break between the object's tokens.
            b"{\"type\":\"ADDED\",\"object\":{\"kind\":\r\n\"ConfigMap\"}}",
            // Tree, then cut: no object, a member twice, not JSON.
            b"{\"type\":\"ADDED\"}",
            b"{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}",
            b"{\"type\":\"ADDED\",\"object\":{}",
        ];
        let c = Captured {
            events: events.iter().map(|e| Bytes::from_static(e)).collect(),
            ..Default::default()
        };
        let as_text = |w: &WatchEvents| -> Vec<bool> {
            w.events.iter().map(|e| e.object_text.is_some()).collect()
        };
        let kept = watch(&c, Some("application/json"), true, DecodedIn::default());
        assert_eq!(as_text(&kept), [true, true, false, false, false]);
        assert_eq!(kept.cut, 3);
        let walked = watch(&c, Some("application/json"), false, DecodedIn::default());
        assert_eq!(as_text(&walked), [false; 5]);
        assert_eq!(walked.cut, 3);

        // The line holds each event as the tree path would have: read back,
        // the two records say the same.
        let read_back = |w: WatchEvents| -> Value {
            let record = apiwitness_record::Exchange {
                watch: Some(w),
                ..Default::default()
            };
            let mut line = Vec::new();
            record.write_line(&mut line);
            let line: Value = serde_json::from_slice(&line).unwrap();
            line["watch"].clone()
        };
        let kept = read_back(kept);
        assert_eq!(kept, read_back(walked));
        assert_eq!(
            kept["events"][0]["object"],
            serde_json::json!({"kind": "ConfigMap", "data": {"a": "x\"y"}})
        );
        assert_eq!(kept["events"][1]["type"], "ADDED");
        assert_eq!(kept["events"][1]["object"], serde_json::json!([1, 2500.0]));
    }

    #[test]
    fn protobuf_watch_events_go_as_they_came_only_where_there_can_be_nothing_to_redact() {
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, WatchEvent as Frame};
        use k8s_pb::apimachinery::pkg::runtime::RawExtension;
        use prost::Message;
        let metadata = Some(ObjectMeta {
            name: Some("o".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        });
        let frame = |kind: &str, raw: Vec<u8>| {
            let object = protobuf_body("v1", kind, raw).to_vec();
            Bytes::from(
                Frame {
                    r#type: Some("ADDED".into()),
                    object: Some(RawExtension { raw: Some(object) }),
                }
                .encode_to_vec(),
            )
        };
        let config_map = core::ConfigMap {
            metadata: metadata.clone(),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let secret = core::Secret {
            metadata,
            data: [("k".to_string(), b"hunter2".to_vec())].into(),
            ..Default::default()
        };
        let captured = Captured {
            events: vec![
                frame("ConfigMap", config_map.encode_to_vec()),
                frame("Secret", secret.encode_to_vec()),
            ],
            ..Default::default()
        };
        let media = Some("application/vnd.kubernetes.protobuf;stream=watch");
        let in_the_sidecar = watch(&captured, media, true, DecodedIn::Interceptor);
        assert_eq!(in_the_sidecar.events[0].object["data"]["k"], "v");
        let left = watch(&captured, media, true, DecodedIn::Aggregator);
        assert_eq!(left.events[0].object["protobuf"]["kind"], "ConfigMap");
        assert!(left.events[0].object["protobuf"]["base64"].is_string());
        // A Secret is decoded here, for the redactor.
        assert_eq!(left.events[1], in_the_sidecar.events[1]);
        assert_eq!(left.events[1].object["data"]["k"], "aHVudGVyMg==");
        // The aggregator reads the one left as the sidecar would have.
        let mut object = left.events[0].object.clone();
        assert!(apiwitness_record::protobuf::decode_shipped_object(
            &mut object
        ));
        assert_eq!(object, in_the_sidecar.events[0].object);
        // A request whose bodies the redactor walks: every event decoded.
        assert_eq!(
            watch(&captured, media, false, DecodedIn::Aggregator),
            in_the_sidecar
        );
    }

    #[test]
    fn the_words_that_send_a_body_down_the_tree_include_the_redactors() {
        for word in Redactor::WORDS {
            assert!(WORDS.contains(word), "{}", String::from_utf8_lossy(word));
        }
    }

    /// The protobuf decoder writes member names without noting words in
    /// them, so none may be a word.
    #[test]
    fn no_member_name_of_the_protobuf_decoder_is_a_word() {
        let mut names = apiwitness_record::protobuf::member_names().peekable();
        assert!(names.peek().is_some());
        for name in names {
            assert!(!WORDS.contains(&name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_table_keeps_its_text_and_is_recognised_as_the_tree_is() {
        let table = |text: &'static [u8], keeps: bool| {
            body(
                &captured(text, false),
                Some("application/json"),
                None,
                keeps,
                Decoding::default(),
            )
            .unwrap()
        };
        for (text, is_one) in [
            (
                &br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[],"rows":[{"cells":["a"],"object":{"kind":"PartialObjectMetadata"}}]}"#[..],
                true,
            ),
            // Its kind past a value that holds the word.
            (
                br#"{"rows":[{"cells":["Table"]}],"apiVersion":"meta.k8s.io/v1","kind":"Table"}"#,
                true,
            ),
            // As kubectl gets it: Go writes `<none>` with escapes.
            (
                br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{"cells":["\u003cnone\u003e"]}]}"#,
                true,
            ),
            (br#"{"kind":"Table","apiVersion":"example.com/v1"}"#, false),
            (br#"{"kind":"ConfigMap","data":{"a":"Table"}}"#, false),
            (br#"["Table"]"#, false),
        ] {
            let kept = table(text, true);
            assert!(
                matches!(kept.content, BodyContent::RawJson(_)),
                "{}",
                String::from_utf8_lossy(text)
            );
            let tree = table(text, false);
            assert!(matches!(tree.content, BodyContent::Json(_)));
            assert_eq!(is_table(&kept), is_one, "{}", String::from_utf8_lossy(text));
            assert_eq!(is_table(&tree), is_one, "{}", String::from_utf8_lossy(text));
        }
        // With another word beside it, the tree as before.
        let both = table(
            br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{"cells":["Secret"]}]}"#,
            true,
        );
        assert!(matches!(both.content, BodyContent::Json(_)));
        assert!(is_table(&both));
    }

    #[test]
    fn tables_are_recognised() {
        let b = body(
            &captured(
                b"{\"kind\":\"Table\",\"apiVersion\":\"meta.k8s.io/v1\"}",
                false,
            ),
            Some("application/json"),
            None,
            // Even where the redactor would keep the text, a Table is read.
            true,
            Decoding::default(),
        )
        .unwrap();
        assert!(is_table(&b));
    }
}
