//! Kubernetes protobuf bodies, read as far as is possible without each type's
//! schema: the `k8s\0` envelope (runtime.Unknown) gives apiVersion and kind,
//! and every Kubernetes object carries its ObjectMeta as field 1 (a list: its
//! ListMeta as field 1 and its items as field 2), which gives what provenance
//! needs: name, namespace, uid, resourceVersion, generation, labels, owners.
//!
//! Watch streams in protobuf are frames of a `WatchEvent` whose object is
//! itself an enveloped object.

use apiwitness_record::ProtobufBody;
use base64::Engine;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};
use std::time::{Duration, UNIX_EPOCH};

const MAGIC: &[u8] = b"k8s\0";

/// Any object: field 1 is its ObjectMeta; the rest is skipped.
#[derive(Clone, PartialEq, Message)]
struct AnyObject {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// Any list: field 1 is its ListMeta, field 2 its items.
#[derive(Clone, PartialEq, Message)]
struct AnyList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ListMeta>,
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
    /// Envelope and metadata only.
    Partial(ProtobufBody),
}

/// Reads one body: a `Status` (every error the apiserver returns) whole,
/// anything else as envelope and metadata.
pub fn decode_body(bytes: &[u8]) -> Result<Decoded, ProtobufError> {
    let unknown = envelope(bytes)?;
    let type_meta = unknown.type_meta.clone().unwrap_or_default();
    if type_meta.kind.as_deref() == Some("Status") {
        let raw = unknown.raw.unwrap_or_default();
        let status = k8s_pb::apimachinery::pkg::apis::meta::v1::Status::decode(&raw[..])
            .map_err(|e| ProtobufError::Decode(e.to_string()))?;
        return Ok(Decoded::Full(status_json(
            &status,
            type_meta.api_version.as_deref().unwrap_or("v1"),
        )));
    }
    decode(bytes).map(Decoded::Partial)
}

fn status_json(s: &k8s_pb::apimachinery::pkg::apis::meta::v1::Status, api_version: &str) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Status"));
    out.insert("apiVersion".into(), json!(api_version));
    out.insert(
        "metadata".into(),
        s.metadata
            .as_ref()
            .map(list_meta)
            .unwrap_or_else(|| json!({})),
    );
    insert_str(&mut out, "status", &s.status);
    insert_str(&mut out, "message", &s.message);
    insert_str(&mut out, "reason", &s.reason);
    if let Some(d) = &s.details {
        let mut details = Map::new();
        insert_str(&mut details, "name", &d.name);
        insert_str(&mut details, "group", &d.group);
        insert_str(&mut details, "kind", &d.kind);
        insert_str(&mut details, "uid", &d.uid);
        if !d.causes.is_empty() {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| {
                    let mut m = Map::new();
                    insert_str(&mut m, "reason", &c.reason);
                    insert_str(&mut m, "message", &c.message);
                    insert_str(&mut m, "field", &c.field);
                    Value::Object(m)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = d.retry_after_seconds.filter(|r| *r != 0) {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        out.insert("details".into(), Value::Object(details));
    }
    if let Some(code) = s.code {
        out.insert("code".into(), json!(code));
    }
    Value::Object(out)
}

/// Reads the envelope and metadata of one body.
pub fn decode(bytes: &[u8]) -> Result<ProtobufBody, ProtobufError> {
    let unknown = envelope(bytes)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let (metadata, items) = if kind.ends_with("List") {
        let list = AnyList::decode(&raw[..]).map_err(|e| ProtobufError::Decode(e.to_string()))?;
        let items = list
            .items
            .iter()
            .map(|item| {
                AnyObject::decode(&item[..])
                    .ok()
                    .and_then(|o| o.metadata)
                    .map(|m| object_meta(&m))
                    .unwrap_or(Value::Null)
            })
            .collect();
        (list.metadata.map(|m| list_meta(&m)), Some(items))
    } else {
        let object =
            AnyObject::decode(&raw[..]).map_err(|e| ProtobufError::Decode(e.to_string()))?;
        (object.metadata.map(|m| object_meta(&m)), None)
    };
    Ok(ProtobufBody {
        api_version: type_meta.api_version.unwrap_or_default(),
        kind,
        metadata,
        items,
        base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
    })
}

fn envelope(bytes: &[u8]) -> Result<Unknown, ProtobufError> {
    let inner = bytes.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    Unknown::decode(inner).map_err(|e| ProtobufError::Decode(e.to_string()))
}

/// One frame of a protobuf watch stream: the event type and its object.
pub fn decode_watch_frame(frame: &[u8]) -> Result<(String, ProtobufBody), ProtobufError> {
    let unknown = envelope(frame)?;
    let raw = unknown.raw.unwrap_or_default();
    let event = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&raw[..])
        .map_err(|e| ProtobufError::Decode(e.to_string()))?;
    let object_raw = event.object.and_then(|o| o.raw).unwrap_or_default();
    Ok((event.r#type.unwrap_or_default(), decode(&object_raw)?))
}

fn time(t: &Time) -> Value {
    let at = UNIX_EPOCH + Duration::from_secs(t.seconds.unwrap_or(0).max(0) as u64);
    Value::String(humantime::format_rfc3339_seconds(at).to_string())
}

fn insert_str(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
        map.insert(key.into(), Value::String(v.clone()));
    }
}

fn list_meta(m: &ListMeta) -> Value {
    let mut out = Map::new();
    insert_str(&mut out, "resourceVersion", &m.resource_version);
    insert_str(&mut out, "continue", &m.r#continue);
    if let Some(n) = m.remaining_item_count {
        out.insert("remainingItemCount".into(), json!(n));
    }
    Value::Object(out)
}

/// ObjectMeta as the apiserver writes it in JSON.
pub fn object_meta(m: &ObjectMeta) -> Value {
    let mut out = Map::new();
    insert_str(&mut out, "name", &m.name);
    insert_str(&mut out, "generateName", &m.generate_name);
    insert_str(&mut out, "namespace", &m.namespace);
    insert_str(&mut out, "uid", &m.uid);
    insert_str(&mut out, "resourceVersion", &m.resource_version);
    if let Some(g) = m.generation.filter(|g| *g != 0) {
        out.insert("generation".into(), json!(g));
    }
    if let Some(t) = &m.creation_timestamp {
        out.insert("creationTimestamp".into(), time(t));
    }
    if let Some(t) = &m.deletion_timestamp {
        out.insert("deletionTimestamp".into(), time(t));
    }
    if let Some(s) = m.deletion_grace_period_seconds {
        out.insert("deletionGracePeriodSeconds".into(), json!(s));
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    if !m.owner_references.is_empty() {
        let owners: Vec<Value> = m
            .owner_references
            .iter()
            .map(|o| {
                let mut r = Map::new();
                insert_str(&mut r, "apiVersion", &o.api_version);
                insert_str(&mut r, "kind", &o.kind);
                insert_str(&mut r, "name", &o.name);
                insert_str(&mut r, "uid", &o.uid);
                if let Some(c) = o.controller {
                    r.insert("controller".into(), json!(c));
                }
                if let Some(b) = o.block_owner_deletion {
                    r.insert("blockOwnerDeletion".into(), json!(b));
                }
                Value::Object(r)
            })
            .collect();
        out.insert("ownerReferences".into(), Value::Array(owners));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    if !m.managed_fields.is_empty() {
        let entries: Vec<Value> = m
            .managed_fields
            .iter()
            .map(|f| {
                let mut r = Map::new();
                insert_str(&mut r, "manager", &f.manager);
                insert_str(&mut r, "operation", &f.operation);
                insert_str(&mut r, "apiVersion", &f.api_version);
                if let Some(t) = &f.time {
                    r.insert("time".into(), time(t));
                }
                insert_str(&mut r, "fieldsType", &f.fields_type);
                if let Some(raw) = f.fields_v1.as_ref().and_then(|v| v.raw.as_ref())
                    && let Ok(v) = serde_json::from_slice::<Value>(raw)
                {
                    r.insert("fieldsV1".into(), v);
                }
                insert_str(&mut r, "subresource", &f.subresource);
                Value::Object(r)
            })
            .collect();
        out.insert("managedFields".into(), Value::Array(entries));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn enveloped(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
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

    fn config_map(name: &str, rv: &str) -> Vec<u8> {
        k8s_pb::api::core::v1::ConfigMap {
            metadata: Some(ObjectMeta {
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
            }),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn an_object_gives_its_envelope_and_metadata() {
        let body = enveloped("v1", "ConfigMap", config_map("c1", "42"));
        let decoded = decode(&body).unwrap();
        assert_eq!(
            (decoded.api_version.as_str(), decoded.kind.as_str()),
            ("v1", "ConfigMap")
        );
        assert_eq!(
            decoded.metadata.unwrap(),
            json!({"name": "c1", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
                   "creationTimestamp": "2023-11-14T22:13:20Z", "labels": {"app": "web"}})
        );
        assert!(decoded.base64.is_some());
    }

    #[test]
    fn a_list_gives_each_items_metadata() {
        let list = k8s_pb::api::core::v1::ConfigMapList {
            metadata: Some(ListMeta {
                resource_version: Some("99".into()),
                ..Default::default()
            }),
            items: vec![
                k8s_pb::api::core::v1::ConfigMap::decode(&config_map("a", "1")[..]).unwrap(),
                k8s_pb::api::core::v1::ConfigMap::decode(&config_map("b", "2")[..]).unwrap(),
            ],
        };
        let decoded = decode(&enveloped("v1", "ConfigMapList", list.encode_to_vec())).unwrap();
        assert_eq!(decoded.metadata.unwrap(), json!({"resourceVersion": "99"}));
        let items = decoded.items.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["name"], json!("b"));
    }

    #[test]
    fn a_watch_frame_gives_the_event_and_its_object() {
        let object = enveloped("v1", "ConfigMap", config_map("w", "7"));
        let event = k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent {
            r#type: Some("MODIFIED".into()),
            object: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(object) }),
        };
        let frame = enveloped("v1", "WatchEvent", event.encode_to_vec());
        let (event_type, body) = decode_watch_frame(&frame).unwrap();
        assert_eq!(event_type, "MODIFIED");
        assert_eq!(body.metadata.unwrap()["resourceVersion"], json!("7"));
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
        let body = enveloped("v1", "Status", status.encode_to_vec());
        let Decoded::Full(v) = decode_body(&body).unwrap() else {
            panic!()
        };
        assert_eq!(v["reason"], json!("AlreadyExists"));
        assert_eq!(v["code"], json!(409));
        assert_eq!(v["details"], json!({"name": "c1", "kind": "configmaps"}));
    }

    #[test]
    fn bodies_without_the_envelope_are_refused() {
        assert_eq!(decode(b"{\"kind\":\"x\"}"), Err(ProtobufError::NoEnvelope));
        assert!(matches!(
            decode(b"k8s\0\xff\xff"),
            Err(ProtobufError::Decode(_))
        ));
    }
}
