//! Bodies a sidecar ships gzip, as they came, for the aggregator to undo.
//!
//! The apiserver gzips answers over 128 KiB for clients that ask, as
//! client-go does: a list of 50 Pods is 208 KB of JSON and 26 KB as it
//! travels. Where nothing in such a body can need redacting, the sidecar
//! ships those 26 KB instead of checking, copying and compressing the
//! 208 KB again (which took about 40% of its CPU for that list), and the
//! aggregator undoes it here into what the sidecar would have recorded.

use crate::protobuf::{DecodedText, decode_body_text};
use crate::{Body, BodyContent, RawJson, media};
use std::io::Read;

/// A body's bytes as they came, gzip, for a record.
pub fn shipped_body(compressed: &[u8]) -> BodyContent {
    BodyContent::Gzip(media::base64(compressed))
}

/// The most bytes a shipped body is undone into, whatever size it claims.
pub const MAX_UNDONE: u64 = 256 << 20;

/// Undoes a body shipped gzip, read as `content_type` says, into what the
/// sidecar records for such a body: JSON text, the JSON of a protobuf body
/// this decoder knows, text, or base64. Returns whether it did. A body that
/// is not gzip base64, or undoes into more or fewer bytes than its size
/// says, stays as it is.
pub fn undo_shipped(body: &mut Body, content_type: Option<&str>) -> bool {
    let BodyContent::Gzip(text) = &body.content else {
        return false;
    };
    if body.size > MAX_UNDONE {
        return false;
    }
    let Ok(compressed) = base64_simd::STANDARD.decode_to_vec(text) else {
        return false;
    };
    // Room for what the claim says, up to a bound: a claim is not the truth
    // until the bytes are undone.
    let mut undone = Vec::with_capacity(body.size.min(4 << 20) as usize);
    let read = flate2::read::GzDecoder::new(compressed.as_slice())
        .take(body.size + 1)
        .read_to_end(&mut undone);
    if read.is_err() || undone.len() as u64 != body.size {
        return false;
    }
    body.content = content_of_shipped(bytes::Bytes::from(undone), content_type);
    true
}

/// What the sidecar records for a body's bytes that it shipped as they came
/// (gzip undone): JSON text, the JSON of a protobuf body this decoder
/// knows, text, or base64.
pub(crate) fn content_of_shipped(bytes: bytes::Bytes, content_type: Option<&str>) -> BodyContent {
    let media = media::media_type(content_type);
    if media::is_protobuf(&media) {
        return match decode_body_text(&bytes, &[]) {
            Ok(DecodedText::Full { json, .. }) => {
                match RawJson::written(bytes::Bytes::from(json)) {
                    Some(raw) => BodyContent::RawJson(raw),
                    None => BodyContent::Base64(media::base64(&bytes)),
                }
            }
            Ok(DecodedText::Partial(body)) => BodyContent::Protobuf(body),
            Err(_) => BodyContent::Base64(media::base64(&bytes)),
        };
    }
    if media::is_json(&media)
        && let Some(scan) = RawJson::scan_shared(&bytes, &[])
    {
        return BodyContent::RawJson(scan.json);
    }
    media::content_of(&bytes, &media, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn shipped(bytes: &[u8], size: u64) -> Body {
        Body {
            content: shipped_body(&gzip(bytes)),
            size,
            truncated: false,
            content_encoding: Some("gzip".into()),
        }
    }

    #[test]
    fn json_is_undone_into_its_text() {
        let list = br#"{"kind":"PodList","items":[{"metadata":{"name":"a"}}]}"#;
        let mut body = shipped(list, list.len() as u64);
        assert!(undo_shipped(&mut body, Some("application/json")));
        let BodyContent::RawJson(raw) = &body.content else {
            panic!("{:?}", body.content);
        };
        assert_eq!(raw.text(), std::str::from_utf8(list).unwrap());
        assert_eq!(body.content_encoding.as_deref(), Some("gzip"));
        // Over several lines it is a tree; not JSON, it is text.
        let mut body = shipped(b"{\n\"a\": 1\n}", 10);
        assert!(undo_shipped(&mut body, Some("application/json")));
        assert_eq!(body.content, BodyContent::Json(json!({"a": 1})));
        let mut body = shipped(b"a: b", 4);
        assert!(undo_shipped(&mut body, Some("application/yaml")));
        assert_eq!(body.content, BodyContent::Text("a: b".into()));
    }

    #[test]
    fn a_protobuf_body_is_undone_into_the_json_the_apiserver_writes() {
        use k8s_pb::api::core::v1::ConfigMap;
        let map = ConfigMap {
            metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        let bytes =
            crate::protobuf::enveloped("v1", "ConfigMap", prost::Message::encode_to_vec(&map));
        let mut body = shipped(&bytes, bytes.len() as u64);
        assert!(undo_shipped(
            &mut body,
            Some("application/vnd.kubernetes.protobuf")
        ));
        assert_eq!(
            body.content.json().unwrap().into_owned(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn a_body_that_does_not_undo_to_its_size_stays_as_it_came() {
        let text = br#"{"a":1}"#;
        for size in [6, 8] {
            let mut body = shipped(text, size);
            let before = body.clone();
            assert!(!undo_shipped(&mut body, Some("application/json")), "{size}");
            assert_eq!(body, before);
        }
        let mut not_gzip = Body {
            content: BodyContent::Gzip(media::base64(b"not gzip")),
            ..shipped(text, 7)
        };
        assert!(!undo_shipped(&mut not_gzip, Some("application/json")));
        let mut not_base64 = Body {
            content: BodyContent::Gzip("%%%".into()),
            ..shipped(text, 7)
        };
        assert!(!undo_shipped(&mut not_base64, Some("application/json")));
        // A claim past the bound is not undone at all.
        let mut huge = shipped(text, MAX_UNDONE + 1);
        assert!(!undo_shipped(&mut huge, Some("application/json")));
    }
}
