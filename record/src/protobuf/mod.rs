//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`), read
//! into the JSON the apiserver would have written for the same object.
//!
//! The `k8s\0` envelope (runtime.Unknown: apiVersion, kind and the object's
//! bytes) is read in place, a watch stream's frames by prost. The object itself
//! is read with a table made from the Go types, which know the JSON names
//! and Go's rules for leaving a field out
//! (`generated.rs`, by `hack/tools/gen-protobuf-schema.sh`). A kind the
//! table does not know (a newer apiserver's) is kept as its envelope and its
//! ObjectMeta, which every Kubernetes object carries as field 1 (a list: its
//! ListMeta as field 1 and its items as field 2), beside the whole body as
//! base64.

#[rustfmt::skip]
mod generated;
mod json;
mod schema;

use crate::ProtobufBody;
use base64::Engine;
use json::JsonText;
use prost::Message;
use serde_json::Value;

const MAGIC: &[u8] = b"k8s\0";

/// Any object, of a kind the table does not know: field 1 is its ObjectMeta.
#[derive(Clone, PartialEq, Message)]
struct AnyObject {
    #[prost(bytes = "vec", optional, tag = "1")]
    metadata: Option<Vec<u8>>,
}

/// A watch stream's frame (meta.k8s.io/v1 WatchEvent): its type, and its
/// object as a RawExtension, whose field 1 holds the enveloped object.
#[derive(Clone, PartialEq, Message)]
struct WatchFrame {
    #[prost(string, optional, tag = "1")]
    r#type: Option<String>,
    #[prost(message, optional, tag = "2")]
    object: Option<RawExtension>,
}

#[derive(Clone, PartialEq, Message)]
struct RawExtension {
    #[prost(bytes = "vec", optional, tag = "1")]
    raw: Option<Vec<u8>>,
}

/// Any list: field 1 is its ListMeta, field 2 its items.
#[derive(Clone, PartialEq, Message)]
struct AnyList {
    #[prost(bytes = "vec", optional, tag = "1")]
    metadata: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    items: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf body (no k8s envelope)")]
    NoEnvelope,
    #[error("undecodable protobuf: {0}")]
    Decode(String),
}

/// A protobuf body as far as it could be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Decoded whole, into the JSON the apiserver would have sent.
    Full(Value),
    /// A kind the table does not know: envelope and metadata only.
    Partial(ProtobufBody),
}

/// A protobuf body as far as it could be read, with a whole one as JSON
/// text: written straight from the message, where a tree of it, built and
/// then written out and dropped, took three times as long.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedText {
    /// Decoded whole: the JSON the apiserver would have sent, on one line,
    /// and whether any of the words asked for stands in it as a whole
    /// string (a key or a value), or might (JSON embedded in the message
    /// that had to be written again).
    Full { json: Vec<u8>, words_seen: bool },
    /// A kind the table does not know: envelope and metadata only.
    Partial(ProtobufBody),
}

/// Reads one body.
pub fn decode_body(bytes: &[u8]) -> Result<Decoded, ProtobufError> {
    Ok(match decode_body_text(bytes, &[])? {
        DecodedText::Full { json, .. } => Decoded::Full(read_back(&json)?),
        DecodedText::Partial(body) => Decoded::Partial(body),
    })
}

/// Reads one body, a whole one into JSON text, noting which of `words`
/// stand in it.
pub fn decode_body_text(
    bytes: &[u8],
    words: &'static [&'static [u8]],
) -> Result<DecodedText, ProtobufError> {
    let (api_version, kind, raw) = envelope(bytes)?;
    match json::message_of(&api_version, &kind) {
        Some(index) => {
            let mut out = JsonText::new(raw.len(), words);
            typed_object(index, &api_version, &kind, raw, 0, &mut out)?;
            Ok(DecodedText::Full {
                words_seen: out.words_seen,
                json: out.text,
            })
        }
        None => partial(bytes, api_version, kind, raw).map(DecodedText::Partial),
    }
}

/// The tree of JSON text the decoder wrote.
fn read_back(text: &[u8]) -> Result<Value, ProtobufError> {
    serde_json::from_slice(text).map_err(|e| {
        ProtobufError::Decode(format!("the JSON written for it did not read back: {e}"))
    })
}

/// Writes an enveloped object nested in another (a RawExtension), `depth`
/// messages deep in the body: the object itself, or for a kind the table
/// does not know, the record's `{"protobuf": ...}` form.
fn write_object_json(bytes: &[u8], depth: usize, out: &mut JsonText) -> Result<(), ProtobufError> {
    let (api_version, kind, raw) = envelope(bytes)?;
    match json::message_of(&api_version, &kind) {
        Some(index) => typed_object(index, &api_version, &kind, raw, depth, out),
        None => {
            let body = partial(bytes, api_version, kind, raw)?;
            let body =
                serde_json::to_vec(&body).map_err(|e| ProtobufError::Decode(e.to_string()))?;
            out.extend_from_slice(b"{");
            out.string("protobuf");
            out.push(b':');
            out.unknown_json(&body);
            out.push(b'}');
            Ok(())
        }
    }
}

/// Writes an object of a kind the table knows, with its kind and
/// apiVersion first, as the apiserver writes them.
fn typed_object(
    index: u16,
    api_version: &str,
    kind: &str,
    raw: &[u8],
    depth: usize,
    out: &mut JsonText,
) -> Result<(), ProtobufError> {
    json::write_object(
        index,
        raw,
        depth,
        &[("kind", kind), ("apiVersion", api_version)],
        out,
    )
}

/// The envelope and metadata of a body of a kind the table does not know.
fn partial(
    bytes: &[u8],
    api_version: String,
    kind: String,
    raw: &[u8],
) -> Result<ProtobufBody, ProtobufError> {
    let meta = |index, bytes: Option<&Vec<u8>>| {
        bytes
            .map(|b| json::message(index, b, 0).map(Value::Object))
            .transpose()
    };
    let (metadata, items) = if kind.ends_with("List") {
        let list = AnyList::decode(raw).map_err(|e| ProtobufError::Decode(e.to_string()))?;
        let items = list
            .items
            .iter()
            .map(|item| {
                AnyObject::decode(&item[..])
                    .ok()
                    .and_then(|o| {
                        meta(generated::OBJECT_META, o.metadata.as_ref())
                            .ok()
                            .flatten()
                    })
                    .unwrap_or(Value::Null)
            })
            .collect();
        (
            meta(generated::LIST_META, list.metadata.as_ref())?,
            Some(items),
        )
    } else {
        let object = AnyObject::decode(raw).map_err(|e| ProtobufError::Decode(e.to_string()))?;
        (
            meta(generated::OBJECT_META, object.metadata.as_ref())?,
            None,
        )
    };
    Ok(ProtobufBody {
        api_version,
        kind,
        metadata,
        items,
        base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
    })
}

/// Decodes a protobuf body that a sidecar shipped as it came (its envelope
/// and base64) into the JSON text the apiserver would have written, where
/// this decoder knows its kind. Returns whether it did; a body it cannot
/// decode stays as it is, its bytes kept.
pub fn decode_shipped(body: &mut crate::Body) -> bool {
    let crate::BodyContent::Protobuf(ProtobufBody {
        base64: Some(text), ..
    }) = &body.content
    else {
        return false;
    };
    let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text) else {
        return false;
    };
    let Ok(DecodedText::Full { json, .. }) = decode_body_text(&bytes, &[]) else {
        return false;
    };
    match crate::RawJson::written(bytes::Bytes::from(json)) {
        Some(raw) => {
            body.content = crate::BodyContent::RawJson(raw);
            true
        }
        None => false,
    }
}

/// What a body's envelope says of it, read without the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeKind {
    pub api_version: String,
    pub kind: String,
    /// The decoder knows the kind, and reads it whole.
    pub known: bool,
    /// The kind can hold other objects (a RawExtension somewhere in it),
    /// of any kind, a Secret too. Unknown kinds count as holding them.
    pub holds_objects: bool,
}

/// Reads a body's envelope: its apiVersion and kind, and what the decoder
/// knows of that kind.
pub fn envelope_kind(bytes: &[u8]) -> Result<EnvelopeKind, ProtobufError> {
    let (api_version, kind, _) = envelope(bytes)?;
    let message = json::message_of(&api_version, &kind);
    Ok(EnvelopeKind {
        known: message.is_some(),
        holds_objects: message.is_none_or(holds_objects),
        api_version,
        kind,
    })
}

/// Whether a message reaches a RawExtension through its fields, worked out
/// once for every message of the table.
fn holds_objects(message: u16) -> bool {
    static HOLDS: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    let holds = HOLDS.get_or_init(|| {
        let reaches = |ty: schema::Ty, holds: &[bool]| match ty {
            schema::Ty::RawExtension => true,
            schema::Ty::Message(m)
            | schema::Ty::SchemaOrArray(m)
            | schema::Ty::SchemaOrBool(m)
            | schema::Ty::SchemaOrStringArray(m) => holds[usize::from(m)],
            _ => false,
        };
        let mut holds = vec![false; generated::MESSAGES.len()];
        // Until nothing changes: messages nest (JSONSchemaProps in itself).
        loop {
            let mut changed = false;
            for (i, m) in generated::MESSAGES.iter().enumerate() {
                if !holds[i] && m.fields().iter().any(|f| reaches(f.ty, &holds)) {
                    holds[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break holds;
            }
        }
    });
    holds.get(usize::from(message)).copied().unwrap_or(true)
}

/// Every member name the decoder writes as it is, without noting words in
/// it: a word a reader of the text looks for must not be among them.
pub fn member_names() -> impl Iterator<Item = &'static str> {
    generated::FIELDS.iter().map(|f| f.json.get())
}

/// apiVersion, kind and the object's bytes, which stay where they are:
/// prost's reading of the envelope copied them (the whole body) twice.
fn envelope(bytes: &[u8]) -> Result<(String, String, &[u8]), ProtobufError> {
    let inner = bytes.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    json::read_envelope(inner)
}

/// One frame of a protobuf watch stream: the event type and its object.
/// The apiserver writes each event bare (its raw serializer: no `k8s\0`
/// envelope), and the object inside it enveloped; a frame in an envelope
/// is read too.
pub fn decode_watch_frame(frame: &[u8]) -> Result<(String, Value), ProtobufError> {
    let (event_type, object_raw) = read_watch_frame(frame)?;
    Ok((event_type, decode_object(&object_raw)?))
}

/// One frame of a protobuf watch stream, not decoded: the event type, and
/// its object's bytes (enveloped).
pub fn read_watch_frame(frame: &[u8]) -> Result<(String, Vec<u8>), ProtobufError> {
    let event_bytes = if frame.starts_with(MAGIC) {
        envelope(frame)?.2
    } else {
        frame
    };
    let event =
        WatchFrame::decode(event_bytes).map_err(|e| ProtobufError::Decode(e.to_string()))?;
    Ok((
        event.r#type.unwrap_or_default(),
        event.object.and_then(|o| o.raw).unwrap_or_default(),
    ))
}

/// An enveloped object as a tree: the JSON the apiserver would have
/// written, or for a kind the table does not know, `{"protobuf": ...}`.
pub fn decode_object(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut object = JsonText::new(bytes.len(), &[]);
    write_object_json(bytes, 0, &mut object)?;
    read_back(&object.text)
}

/// A protobuf body as a sidecar ships it for the aggregator to decode:
/// its envelope's apiVersion and kind, and the bytes as base64 (with
/// vector instructions where the CPU has them: 19 against 97 µs with the
/// base64 crate for a list of 140 KB).
pub fn shipped_body(envelope: EnvelopeKind, bytes: &[u8]) -> ProtobufBody {
    ProtobufBody {
        api_version: envelope.api_version,
        kind: envelope.kind,
        metadata: None,
        items: None,
        base64: Some(base64_simd::STANDARD.encode_to_string(bytes)),
    }
}

/// A watch event's object that a sidecar shipped as it came:
/// `{"protobuf": {"apiVersion", "kind", "base64"}}`, as the decoder writes
/// an object of a kind it does not know, with no metadata.
pub fn shipped_object(envelope: EnvelopeKind, bytes: &[u8]) -> Value {
    serde_json::json!({ "protobuf": shipped_body(envelope, bytes) })
}

/// Decodes a watch event's object that a sidecar shipped as it came (see
/// [`shipped_object`]), where this decoder knows its kind. Returns whether
/// it did; an object it cannot decode stays as it is.
pub fn decode_shipped_object(object: &mut Value) -> bool {
    let Some(Value::String(text)) = object.pointer("/protobuf/base64") else {
        return false;
    };
    if object.as_object().is_none_or(|o| o.len() != 1) {
        return false;
    }
    let Ok(bytes) = base64_simd::STANDARD.decode_to_vec(text) else {
        return false;
    };
    match envelope_kind(&bytes) {
        Ok(envelope) if envelope.known => {}
        _ => return false,
    }
    match decode_object(&bytes) {
        Ok(decoded) => {
            *object = decoded;
            true
        }
        Err(_) => false,
    }
}

/// `raw`, a message of `kind`, in the envelope the apiserver writes.
#[cfg(test)]
pub(crate) fn enveloped(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let mut out = MAGIC.to_vec();
    Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    }
    .encode(&mut out)
    .unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    fn meta(name: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            resource_version: Some(rv.into()),
            creation_timestamp: Some(Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    fn config_map(name: &str, rv: &str) -> core::ConfigMap {
        core::ConfigMap {
            metadata: Some(meta(name, rv)),
            data: [("k".to_string(), "v".to_string())].into(),
            binary_data: [("b".to_string(), vec![0u8, 1, 2])].into(),
            ..Default::default()
        }
    }

    fn full(body: &[u8]) -> Value {
        match decode_body(body).unwrap() {
            Decoded::Full(v) => v,
            other => panic!("expected a whole decode: {other:?}"),
        }
    }

    #[test]
    fn an_object_reads_as_the_json_the_apiserver_writes() {
        let body = enveloped("v1", "ConfigMap", config_map("c1", "42").encode_to_vec());
        assert_eq!(
            full(&body),
            json!({
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "c1", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
                             "creationTimestamp": "2023-11-14T22:13:20Z", "labels": {"app": "web"}},
                "data": {"k": "v"},
                "binaryData": {"b": "AAEC"}
            })
        );
    }

    /// Plain ASCII strings are copied as they are and the rest go through
    /// the escaping writer: either way each is written as serde_json
    /// writes it, and the words are noted in both.
    #[test]
    fn strings_of_every_kind_are_written_as_serde_json_writes_them() {
        let values = [
            "plain",
            "",
            "Secret",
            "with \"quotes\"",
            "back\\slash",
            "line\nbreak\r\t",
            "\u{1}control\u{1f}",
            "\u{7f}delete",
            "é ünïcode",
            "emoji 😀",
            &"long plain text ".repeat(20),
            &format!("{}\"", "long text ending in a quote ".repeat(10)),
        ];
        let mut map = config_map("c1", "1");
        map.data = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i:02}"), v.to_string()))
            .collect();
        let body = enveloped("v1", "ConfigMap", map.encode_to_vec());
        let Ok(DecodedText::Full { json, words_seen }) = decode_body_text(&body, &[b"Secret"])
        else {
            panic!("expected a whole decode")
        };
        assert!(words_seen, "the plain value `Secret` was not noted");
        let text = String::from_utf8(json).unwrap();
        for (i, value) in values.iter().enumerate() {
            let member = format!("\"k{i:02}\":{}", serde_json::to_string(value).unwrap());
            assert!(text.contains(&member), "{member} not in {text}");
        }
        let read: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(read["data"]["k03"], json!(values[3]));

        // Bytes that are not UTF-8 read as U+FFFD, as encoding/json writes
        // them: put in place of a placeholder of the same length.
        let mut map = config_map("c1", "1");
        map.data = [("bad".to_string(), "PLACEHOLDER".to_string())].into();
        let mut raw = map.encode_to_vec();
        let at = raw.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
        raw[at..at + 11].copy_from_slice(b"\xffa\xfeb plain.");
        let body = enveloped("v1", "ConfigMap", raw);
        assert_eq!(
            full(&body)["data"]["bad"],
            json!("\u{fffd}a\u{fffd}b plain.")
        );
    }

    /// The envelope is read in place as prost reads it, a field given twice
    /// (two messages back to back merge) included.
    #[test]
    fn the_envelope_reads_as_prost_reads_it() {
        let body = enveloped("v1", "ConfigMap", config_map("c1", "1").encode_to_vec());
        let later = Unknown {
            type_meta: Some(TypeMeta {
                api_version: None,
                kind: Some("Later".into()),
            }),
            raw: Some(b"later bytes".to_vec()),
            content_encoding: Some("gzip".into()),
            content_type: None,
        }
        .encode_to_vec();
        for body in [body.clone(), [body, later].concat()] {
            let by_prost = Unknown::decode(&body[MAGIC.len()..]).unwrap();
            let type_meta = by_prost.type_meta.unwrap_or_default();
            let (api_version, kind, raw) = envelope(&body).unwrap();
            assert_eq!(Some(api_version), type_meta.api_version);
            assert_eq!(Some(kind), type_meta.kind);
            assert_eq!(Some(raw.to_vec()), by_prost.raw);
        }
    }

    #[test]
    fn fields_missing_from_the_message_appear_as_go_writes_them() {
        // Go writes a field that is not `omitempty` even when unset, a struct
        // even when `omitempty`, and its own forms for Quantity, IntOrString
        // and an inline struct (a probe's handler).
        let pod = core::Pod {
            metadata: Some(ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            }),
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: Some("c".into()),
                    resources: Some(core::ResourceRequirements {
                        limits: [(
                            "cpu".to_string(),
                            Quantity {
                                string: Some("500m".into()),
                            },
                        )]
                        .into(),
                        ..Default::default()
                    }),
                    liveness_probe: Some(core::Probe {
                        handler: Some(core::ProbeHandler {
                            http_get: Some(core::HttpGetAction {
                                port: Some(IntOrString {
                                    r#type: Some(1),
                                    str_val: Some("http".into()),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        period_seconds: Some(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = full(&enveloped("v1", "Pod", pod.encode_to_vec()));
        assert_eq!(
            v["metadata"],
            json!({"name": "p"}),
            "omitzero leaves out a zero creationTimestamp"
        );
        assert_eq!(
            v["status"],
            json!({}),
            "an unset struct is written, its omitempty fields left out"
        );
        let container = &v["spec"]["containers"][0];
        assert_eq!(container["resources"], json!({"limits": {"cpu": "500m"}}));
        assert_eq!(
            container["livenessProbe"],
            json!({"httpGet": {"port": "http"}}),
            "the handler is inline; periodSeconds 0 is omitempty"
        );
        assert!(container.get("image").is_none(), "image is omitempty");
        assert_eq!(container["name"], json!("c"));
        // `containers` is not omitempty; an unset slice of it would be null.
        let empty = core::Pod {
            spec: Some(core::PodSpec::default()),
            ..Default::default()
        };
        let v = full(&enveloped("v1", "Pod", empty.encode_to_vec()));
        assert_eq!(v["spec"]["containers"], Value::Null);
        assert!(v["spec"].as_object().unwrap().contains_key("containers"));
    }

    #[test]
    fn a_list_reads_whole() {
        let list = core::ConfigMapList {
            metadata: Some(ListMeta {
                resource_version: Some("99".into()),
                ..Default::default()
            }),
            items: vec![config_map("a", "1"), config_map("b", "2")],
        };
        let v = full(&enveloped("v1", "ConfigMapList", list.encode_to_vec()));
        assert_eq!(v["metadata"], json!({"resourceVersion": "99"}));
        assert_eq!(v["items"][1]["metadata"]["name"], json!("b"));
        assert_eq!(v["items"][1]["data"], json!({"k": "v"}));
        assert!(
            v["items"][1].get("kind").is_none(),
            "items carry no kind, as in JSON"
        );
    }

    #[test]
    fn a_watch_frame_gives_the_event_and_its_object() {
        let object = enveloped("v1", "ConfigMap", config_map("w", "7").encode_to_vec());
        let event = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent {
            r#type: Some("MODIFIED".into()),
            object: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(object) }),
        };
        // As the apiserver writes it: the event bare, its object enveloped.
        let (event_type, object) = decode_watch_frame(&event.encode_to_vec()).unwrap();
        assert_eq!(event_type, "MODIFIED");
        assert_eq!(object["metadata"]["resourceVersion"], json!("7"));
        assert_eq!(object["kind"], json!("ConfigMap"));
        // An enveloped event reads the same.
        let frame = enveloped("v1", "WatchEvent", event.encode_to_vec());
        assert_eq!(
            decode_watch_frame(&frame).unwrap(),
            ("MODIFIED".to_string(), object)
        );
    }

    #[test]
    fn a_status_is_decoded_whole() {
        let status = k8s_pb::apimachinery::pkg::apis::meta::v1::Status {
            status: Some("Failure".into()),
            message: Some("configmaps \"c1\" already exists".into()),
            reason: Some("AlreadyExists".into()),
            details: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::StatusDetails {
                name: Some("c1".into()),
                kind: Some("configmaps".into()),
                ..Default::default()
            }),
            code: Some(409),
            ..Default::default()
        };
        let v = full(&enveloped("v1", "Status", status.encode_to_vec()));
        assert_eq!(v["reason"], json!("AlreadyExists"));
        assert_eq!(v["code"], json!(409));
        assert_eq!(v["details"], json!({"name": "c1", "kind": "configmaps"}));
        assert_eq!(v["metadata"], json!({}));
    }

    #[test]
    fn a_kind_the_table_does_not_know_keeps_its_metadata_and_bytes() {
        // Any object carries its ObjectMeta as field 1.
        let body = enveloped(
            "example.com/v1",
            "Gadget",
            config_map("g", "5").encode_to_vec(),
        );
        let Decoded::Partial(pb) = decode_body(&body).unwrap() else {
            panic!("an unknown kind cannot be read whole")
        };
        assert_eq!(
            (pb.api_version.as_str(), pb.kind.as_str()),
            ("example.com/v1", "Gadget")
        );
        assert_eq!(pb.metadata.unwrap()["name"], json!("g"));
        assert!(pb.base64.is_some());
        let list = core::ConfigMapList {
            items: vec![config_map("a", "1")],
            ..Default::default()
        };
        let Decoded::Partial(pb) = decode_body(&enveloped(
            "example.com/v1",
            "GadgetList",
            list.encode_to_vec(),
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(pb.items.unwrap()[0]["name"], json!("a"));
    }

    #[test]
    fn bodies_without_the_envelope_or_broken_are_refused() {
        assert_eq!(
            decode_body(b"{\"kind\":\"x\"}"),
            Err(ProtobufError::NoEnvelope)
        );
        assert!(matches!(
            decode_body(b"k8s\0\xff\xff"),
            Err(ProtobufError::Decode(_))
        ));
        // A ConfigMap cut short names the field it broke in.
        let mut raw = config_map("c", "1").encode_to_vec();
        raw.truncate(raw.len() - 2);
        let err = decode_body(&enveloped("v1", "ConfigMap", raw)).unwrap_err();
        assert!(err.to_string().contains("ConfigMap"), "{err}");
    }

    #[test]
    fn any_bytes_of_any_kind_give_a_result_never_a_panic() {
        // Random bodies, and real ones with bytes changed, for every kind.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let real = config_map("c", "1").encode_to_vec();
        for kind in generated::KINDS.iter() {
            let (api_version, kind) = (kind.api_version.get(), kind.kind.get());
            for round in 0..32 {
                let raw: Vec<u8> = if round % 2 == 0 {
                    (0..next() % 200).map(|_| next() as u8).collect()
                } else {
                    let mut changed = real.clone();
                    for _ in 0..3 {
                        let at = (next() as usize) % changed.len();
                        changed[at] = next() as u8;
                    }
                    changed
                };
                let _ = decode_body(&enveloped(api_version, kind, raw.clone()));
                let _ = decode_watch_frame(&raw);
            }
        }
    }

    #[test]
    fn the_envelope_says_which_kinds_may_hold_other_objects() {
        let kind_of = |api_version: &str, kind: &str| {
            let read = envelope_kind(&enveloped(api_version, kind, Vec::new())).unwrap();
            assert_eq!(
                (read.api_version.as_str(), read.kind.as_str()),
                (api_version, kind)
            );
            (read.known, read.holds_objects)
        };
        assert_eq!(kind_of("v1", "ConfigMapList"), (true, false));
        assert_eq!(kind_of("v1", "Pod"), (true, false));
        assert_eq!(kind_of("apps/v1", "DeploymentList"), (true, false));
        // A Secret holds nothing else, but is a Secret: the caller sees the kind.
        assert_eq!(kind_of("v1", "Secret"), (true, false));
        // Its data is a RawExtension, which may hold any object.
        assert_eq!(kind_of("apps/v1", "ControllerRevision"), (true, true));
        assert_eq!(kind_of("apps/v1", "ControllerRevisionList"), (true, true));
        // JSONSchemaProps nests in itself; its defaults are JSON, not objects.
        assert_eq!(
            kind_of("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            (true, false)
        );
        assert_eq!(kind_of("example.com/v9", "Widget"), (false, true));
        assert_eq!(envelope_kind(b"{}"), Err(ProtobufError::NoEnvelope));
    }

    #[test]
    fn the_table_fits_the_decoder() {
        // The decoder finds kinds by binary search.
        for m in &generated::MESSAGES {
            assert!(!m.name.get().is_empty());
        }
        let kinds: Vec<(&str, &str)> = generated::KINDS
            .iter()
            .map(|k| (k.api_version.get(), k.kind.get()))
            .collect();
        assert!(kinds.windows(2).all(|w| w[0] < w[1]));
        // Only an inline field has no JSON name: the places are right. The
        // decoder writes the names between quotes as they are.
        for f in &generated::FIELDS {
            assert_eq!(
                f.json.get().is_empty(),
                f.shape == schema::Shape::Inline,
                "{f:?}"
            );
            assert_eq!(
                serde_json::to_string(f.json.get()).unwrap(),
                format!("\"{}\"", f.json.get())
            );
        }
        assert!(json::message_of("v1", "Pod").is_some());
        assert!(json::message_of("apps/v1", "Deployment").is_some());
        assert!(json::message_of("meta.k8s.io/v1", "Table").is_none());
    }

    /// The JSONSchemaProps message of apiextensions.k8s.io/v1.
    fn schema_props() -> u16 {
        generated::MESSAGES
            .iter()
            .position(|m| {
                m.name.get()
                    == "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1.JSONSchemaProps"
            })
            .unwrap() as u16
    }

    fn key(tag: u32, wire: u8) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
        out
    }

    fn length_delimited(tag: u32, inner: &[u8]) -> Vec<u8> {
        let mut out = key(tag, 2);
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn schemas_write_their_unions_and_whole_floats_as_go_does() {
        let mut props = length_delimited(5, b"object"); // type
        props.extend(key(9, 1)); // maximum
        props.extend(100.0f64.to_le_bytes());
        props.extend(key(11, 1)); // minimum
        props.extend(0.5f64.to_le_bytes());
        // additionalProperties: {allows: false}; items: {jSONSchemas: [{}, {}]}
        props.extend(length_delimited(30, &[8, 0]));
        props.extend(length_delimited(
            24,
            &[length_delimited(2, &[]), length_delimited(2, &[])].concat(),
        ));
        let v = json::message(schema_props(), &props, 0).unwrap();
        assert_eq!(v["type"], json!("object"));
        assert_eq!(serde_json::to_string(&v["maximum"]).unwrap(), "100");
        assert_eq!(v["minimum"], json!(0.5));
        assert_eq!(v["additionalProperties"], json!(false));
        assert_eq!(v["items"], json!([{}, {}]));
    }

    #[test]
    fn nesting_past_any_real_object_is_an_error_not_a_crash() {
        // `not` (field 28) holds another schema, 10,000 deep.
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested = length_delimited(28, &nested);
        }
        let err = json::message(schema_props(), &nested, 0).unwrap_err();
        assert!(err.to_string().contains("nest too deep"), "{err}");
    }

    #[test]
    fn a_body_whose_json_would_grow_past_sixteen_times_its_bytes_is_refused() {
        // An empty Pod is two bytes of a list (field 2, length 0), and about
        // fifty of JSON: Go writes its empty metadata, spec and status.
        let list_of =
            |items: usize| enveloped("v1", "PodList", length_delimited(2, &[]).repeat(items));
        let Ok(DecodedText::Full { json, .. }) = decode_body_text(&list_of(1_000), &[]) else {
            panic!("a thousand empty Pods are written")
        };
        assert!(json.len() > 20 * 2_000, "{}", json.len());
        let err = decode_body_text(&list_of(100_000), &[]).unwrap_err();
        assert!(err.to_string().contains("its JSON grows past"), "{err}");
        // Shipped as it came, such a body stays as it came.
        let mut body = crate::Body {
            content: crate::BodyContent::Protobuf(ProtobufBody {
                api_version: "v1".into(),
                kind: "PodList".into(),
                metadata: None,
                items: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(list_of(100_000))),
            }),
            size: 0,
            truncated: false,
            content_encoding: None,
        };
        let before = body.clone();
        assert!(!decode_shipped(&mut body));
        assert_eq!(body, before);
    }

    #[test]
    fn times_are_written_to_the_second_and_micro_times_to_the_microsecond() {
        let lease = k8s_pb::api::coordination::v1::Lease {
            spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
                renew_time: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime {
                    seconds: Some(1_700_000_000),
                    nanos: Some(123_456_789),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = full(&enveloped(
            "coordination.k8s.io/v1",
            "Lease",
            lease.encode_to_vec(),
        ));
        assert_eq!(v["spec"]["renewTime"], json!("2023-11-14T22:13:20.123456Z"));
    }
}
