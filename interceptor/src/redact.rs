//! Removes secrets from a record before it leaves the process.
//!
//! What is removed, wherever it appears (request, response, list items, watch
//! events, Table rows):
//! - the values of a Secret's `data` and `stringData` (keys stay; each value
//!   becomes a marker with its length);
//! - a Secret's `kubectl.kubernetes.io/last-applied-configuration`, which holds
//!   the Secret again;
//! - the token of a TokenRequest response and of a TokenReview;
//! - any JSON Pointer configured by the operator.
//!
//! A protobuf body of a kind the decoder knows arrives here as JSON and is
//! walked like any other. A body that belongs to a Secret, a TokenRequest or a
//! TokenReview but is not JSON (a YAML apply patch, protobuf of a kind the
//! decoder does not know) cannot be walked, so it is replaced whole.

use apiwitness_record::{ApiRequest, Body, BodyContent};
use serde_json::Value;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The marker that stands where a secret value was.
pub fn marker(len: usize) -> Value {
    Value::String(format!("<redacted {len} bytes>"))
}

fn redact_string(v: &mut Value) {
    let len = match &*v {
        Value::String(s) => s.len(),
        Value::Null => return,
        other => other.to_string().len(),
    };
    *v = marker(len);
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Extra JSON Pointers (RFC 6901) to redact in every JSON body.
    extra_pointers: Vec<String>,
}

/// What a request's resource says about its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sensitive {
    No,
    /// Secrets: data, stringData, last-applied.
    Secret,
    /// TokenRequest (serviceaccounts/token) and TokenReview: the token.
    Token,
}

fn sensitivity(request: &ApiRequest) -> Sensitive {
    match (
        request.group.as_str(),
        request.resource.as_str(),
        request.subresource.as_str(),
    ) {
        ("", "secrets", _) => Sensitive::Secret,
        ("", "serviceaccounts", "token") => Sensitive::Token,
        ("authentication.k8s.io", "tokenreviews" | "tokenrequests", _) => Sensitive::Token,
        _ => Sensitive::No,
    }
}

impl Redactor {
    pub fn new(extra_pointers: Vec<String>) -> Result<Redactor, String> {
        for p in &extra_pointers {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!(
                    "redact path {p:?} is not a JSON Pointer: it must start with '/'"
                ));
            }
        }
        Ok(Redactor { extra_pointers })
    }

    /// The strings that, standing whole in a JSON body (a key or a value),
    /// give the redactor something to look at: the kind of a Secret, and
    /// the key of a protobuf payload. A `\u` escape of a letter could
    /// spell either.
    pub const WORDS: &'static [&'static [u8]] = &[b"Secret", b"protobuf"];

    /// Whether no body of `request` is redacted for what it is: no Secret or
    /// token resource, and no extra path. Its text may still hold a Secret:
    /// a body keeps its text only where, besides, none of
    /// [`Redactor::WORDS`] stands in it (`decode::body` looks).
    pub fn redacts_nothing_by_request(&self, request: &ApiRequest) -> bool {
        self.extra_pointers.is_empty() && sensitivity(request) == Sensitive::No
    }

    /// Redacts a captured body of `request` in place.
    pub fn body(&self, request: &ApiRequest, body: &mut Body) {
        let sensitive = sensitivity(request);
        if !self.redacts_nothing_by_request(request) {
            match &body.content {
                BodyContent::RawJson(raw) => body.content = BodyContent::Json(raw.to_value()),
                // Never sent unchecked for such a request; should that
                // change, it is read here, to be redacted as what it is.
                BodyContent::NextLine(next) => {
                    let text = next.text().cloned().unwrap_or_default();
                    body.content = apiwitness_record::media::content_of(&text, "", false);
                }
                _ => {}
            }
        }
        match &mut body.content {
            // Made only of text in which none of `WORDS` stands.
            BodyContent::RawJson(_) => {}
            BodyContent::Json(value) => self.json(sensitive, value),
            BodyContent::Protobuf(pb) => {
                // The metadata is kept; the payload goes where it may hold a secret.
                if sensitive != Sensitive::No || pb.kind.starts_with("Secret") {
                    pb.base64 = None;
                }
                for meta in pb.metadata.iter_mut().chain(pb.items.iter_mut().flatten()) {
                    if let Some(v) = meta.pointer_mut(
                        "/annotations/kubectl.kubernetes.io~1last-applied-configuration",
                    ) {
                        redact_string(v);
                    }
                }
            }
            // Shipped gzip only where nothing in it needs redacting; the
            // check stands here too, should that ever change.
            BodyContent::Text(text) | BodyContent::Base64(text) | BodyContent::Gzip(text) => {
                if sensitive != Sensitive::No {
                    let len = text.len();
                    body.content = BodyContent::Json(marker(len));
                }
            }
            // Made only of text in which none of `WORDS` stands.
            BodyContent::NextLine(next) => {
                if sensitive != Sensitive::No {
                    body.content = BodyContent::Json(marker(next.len() as usize));
                }
            }
        }
    }

    /// Redacts one JSON document (a body, or a watch event's object).
    pub fn value(&self, request: &ApiRequest, value: &mut Value) {
        self.json(sensitivity(request), value)
    }

    fn json(&self, sensitive: Sensitive, value: &mut Value) {
        strip_protobuf_payloads(sensitive, value);
        match sensitive {
            Sensitive::Secret => redact_secret_fields_everywhere(value),
            Sensitive::Token => redact_tokens(value),
            Sensitive::No => redact_secrets_by_kind(value),
        }
        for pointer in &self.extra_pointers {
            if let Some(v) = value.pointer_mut(pointer) {
                redact_string(v);
            }
        }
    }
}

/// A watch event's object of a kind the protobuf decoder does not know is
/// `{"protobuf": {..., "base64"}}`: the payload goes where it may hold a secret.
fn strip_protobuf_payloads(sensitive: Sensitive, value: &mut Value) {
    if let Some(Value::Object(pb)) = value.get_mut("protobuf") {
        let secret_kind = pb
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.starts_with("Secret"));
        if sensitive != Sensitive::No || secret_kind {
            pb.remove("base64");
        }
    }
}

fn redact_secret_object(object: &mut serde_json::Map<String, Value>) {
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = object.get_mut(field) {
            map.values_mut().for_each(redact_string);
        }
    }
    if let Some(Value::Object(meta)) = object.get_mut("metadata")
        && let Some(Value::Object(annotations)) = meta.get_mut("annotations")
        && let Some(v) = annotations.get_mut(LAST_APPLIED)
    {
        redact_string(v);
    }
}

/// For a request to the secrets resource: every object inside is (part of) a
/// Secret, whatever its `kind` says (patches have none, Table rows carry
/// partial metadata), so every `data`, `stringData` and last-applied
/// annotation is redacted, and so is the `value` of every JSON Patch op.
fn redact_secret_fields_everywhere(value: &mut Value) {
    match value {
        Value::Object(map) => {
            redact_secret_object(map);
            if map.contains_key("op")
                && let Some(v) = map.get_mut("value")
            {
                redact_string_or_tree(v);
            }
            for (key, child) in map.iter_mut() {
                if key != "data" && key != "stringData" {
                    redact_secret_fields_everywhere(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secret_fields_everywhere),
        _ => {}
    }
}

/// A JSON Patch value may be a whole data map, or one value.
fn redact_string_or_tree(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("data")
                || map.contains_key("stringData")
                || map.contains_key("metadata")
            {
                redact_secret_object(map);
            } else {
                map.values_mut().for_each(redact_string);
            }
        }
        _ => redact_string(v),
    }
}

/// Any object of kind Secret, however deep (lists, watch events, mixed lists).
fn redact_secrets_by_kind(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_secret = map.get("kind").and_then(Value::as_str) == Some("Secret")
                && map
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .is_none_or(|v| v == "v1");
            if is_secret {
                redact_secret_object(map);
            }
            for child in map.values_mut() {
                redact_secrets_by_kind(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets_by_kind),
        _ => {}
    }
}

fn redact_tokens(value: &mut Value) {
    for pointer in ["/status/token", "/spec/token"] {
        if let Some(v) = value.pointer_mut(pointer) {
            redact_string(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(method: &str, path: &str) -> ApiRequest {
        ApiRequest::parse(method, path, "", Some("application/json-patch+json")).unwrap()
    }

    fn json_body(v: Value) -> Body {
        Body {
            content: BodyContent::Json(v),
            size: 0,
            truncated: false,
            content_encoding: None,
        }
    }

    fn redacted(r: &Redactor, request: &ApiRequest, v: Value) -> Value {
        let mut body = json_body(v);
        r.body(request, &mut body);
        match body.content {
            BodyContent::Json(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_kept_for_a_sensitive_request_is_still_redacted() {
        let secrets =
            ApiRequest::parse("GET", "/api/v1/namespaces/ns/secrets/s", "", None).unwrap();
        let configmaps =
            ApiRequest::parse("GET", "/api/v1/namespaces/ns/configmaps/c", "", None).unwrap();
        let r = Redactor::default();
        let text = br#"{"data":{"a":"b"}}"#;
        assert!(
            apiwitness_record::RawJson::scan(text, Redactor::WORDS)
                .is_some_and(|scan| scan.holds_none())
        );
        assert!(!r.redacts_nothing_by_request(&secrets));
        assert!(r.redacts_nothing_by_request(&configmaps));
        assert!(
            !Redactor::new(vec!["/data/x".into()])
                .unwrap()
                .redacts_nothing_by_request(&configmaps)
        );
        let mut body = Body {
            content: BodyContent::RawJson(
                apiwitness_record::RawJson::parse(br#"{"data":{"password":"aHVudGVyMg=="}}"#)
                    .unwrap(),
            ),
            size: 36,
            truncated: false,
            content_encoding: None,
        };
        r.body(&secrets, &mut body);
        assert_eq!(
            body.content,
            BodyContent::Json(json!({"data": {"password": marker(12)}}))
        );
    }

    #[test]
    fn secret_values_become_markers_and_keys_stay() {
        let r = Redactor::default();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "annotations": {LAST_APPLIED: "{\"data\":{\"password\":\"aHVudGVyMg==\"}}", "keep": "me"}},
            "data": {"password": "aHVudGVyMg=="},
            "stringData": {"token": "s3cr3t"}
        });
        let out = redacted(
            &r,
            &req("POST", "/api/v1/namespaces/ns/secrets"),
            secret.clone(),
        );
        assert_eq!(out["data"]["password"], json!("<redacted 12 bytes>"));
        assert_eq!(out["stringData"]["token"], json!("<redacted 6 bytes>"));
        assert_eq!(out["metadata"]["annotations"]["keep"], json!("me"));
        assert!(!out.to_string().contains("aHVudGVyMg"));
        // The same Secret inside a list of another request is found by kind.
        let list = json!({"kind": "List", "items": [secret]});
        let out = redacted(&r, &req("GET", "/api/v1/namespaces/ns/configmaps"), list);
        assert!(!out.to_string().contains("aHVudGVyMg"), "{out}");
        assert!(!out.to_string().contains("s3cr3t"));
    }

    #[test]
    fn patches_to_secrets_are_redacted() {
        let r = Redactor::default();
        let path = "/api/v1/namespaces/ns/secrets/s";
        let json_patch = json!([
            {"op": "replace", "path": "/data/password", "value": "bmV3"},
            {"op": "add", "path": "/data", "value": {"k": "dg=="}}
        ]);
        let out = redacted(&r, &req("PATCH", path), json_patch);
        assert!(
            !out.to_string().contains("bmV3") && !out.to_string().contains("dg=="),
            "{out}"
        );
        assert_eq!(out[0]["path"], json!("/data/password"));

        let merge = json!({"stringData": {"x": "plain"}});
        let out = redacted(&r, &req("PATCH", path), merge);
        assert_eq!(out["stringData"]["x"], json!("<redacted 5 bytes>"));

        // A YAML apply patch cannot be walked: it goes whole.
        let mut yaml = Body {
            content: BodyContent::Text("stringData:\n  x: plain\n".into()),
            size: 23,
            truncated: false,
            content_encoding: None,
        };
        r.body(&req("PATCH", path), &mut yaml);
        assert_eq!(
            yaml.content,
            BodyContent::Json(json!("<redacted 23 bytes>"))
        );
    }

    #[test]
    fn tokens_are_redacted() {
        let r = Redactor::default();
        let token_response = json!({"kind": "TokenRequest", "status": {"token": "eyJhbGciOi.x.y", "expirationTimestamp": "t"}});
        let out = redacted(
            &r,
            &req("POST", "/api/v1/namespaces/ns/serviceaccounts/sa/token"),
            token_response,
        );
        assert_eq!(out["status"]["token"], json!("<redacted 14 bytes>"));
        assert_eq!(out["status"]["expirationTimestamp"], json!("t"));
        let review = json!({"kind": "TokenReview", "spec": {"token": "eyJhbGciOi.x.y"}});
        let out = redacted(
            &r,
            &req("POST", "/apis/authentication.k8s.io/v1/tokenreviews"),
            review,
        );
        assert!(!out.to_string().contains("eyJ"));
        // A protobuf body of a Secret cannot be walked either.
        let mut proto = Body {
            content: BodyContent::Base64("azhzAAo=".into()),
            size: 5,
            truncated: false,
            content_encoding: None,
        };
        r.body(&req("GET", "/api/v1/namespaces/ns/secrets/s"), &mut proto);
        assert!(matches!(proto.content, BodyContent::Json(Value::String(_))));
    }

    #[test]
    fn protobuf_secrets_keep_metadata_and_lose_their_payload() {
        let r = Redactor::default();
        let mut body = Body {
            content: BodyContent::Protobuf(apiwitness_record::ProtobufBody {
                api_version: "v1".into(),
                kind: "Secret".into(),
                metadata: Some(
                    json!({"name": "s", "annotations": {LAST_APPLIED: "{\"data\":{}}"}}),
                ),
                items: None,
                base64: Some("azhzAA==".into()),
            }),
            size: 6,
            truncated: false,
            content_encoding: None,
        };
        r.body(&req("GET", "/api/v1/namespaces/ns/secrets/s"), &mut body);
        let BodyContent::Protobuf(pb) = &body.content else {
            panic!()
        };
        assert_eq!(pb.base64, None);
        assert_eq!(pb.metadata.as_ref().unwrap()["name"], json!("s"));
        assert!(
            pb.metadata.as_ref().unwrap()["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap()
                .starts_with("<redacted")
        );

        let mut event = json!({"protobuf": {"kind": "Secret", "base64": "azhzAA=="}});
        r.value(&req("GET", "/api/v1/configmaps"), &mut event);
        assert!(event["protobuf"].get("base64").is_none());
    }

    #[test]
    fn extra_pointers_from_config() {
        let r = Redactor::new(vec!["/spec/password".into()]).unwrap();
        let out = redacted(
            &r,
            &req("POST", "/apis/example.com/v1/namespaces/ns/dbs"),
            json!({"spec": {"password": "pw", "user": "u"}}),
        );
        assert_eq!(
            out["spec"],
            json!({"password": "<redacted 2 bytes>", "user": "u"})
        );
        assert!(Redactor::new(vec!["spec.password".into()]).is_err());
    }

    #[test]
    fn other_kinds_are_untouched() {
        let r = Redactor::default();
        let cm = json!({"kind": "ConfigMap", "data": {"password": "visible"}});
        let out = redacted(
            &r,
            &req("POST", "/api/v1/namespaces/ns/configmaps"),
            cm.clone(),
        );
        assert_eq!(out, cm);
    }
}
