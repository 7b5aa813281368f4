//! What a body is, by its content type, and its record content where it is
//! read into a tree or kept as text or base64.

use crate::BodyContent;
use serde_json::Value;

/// The media type of a Content-Type, lower case, without its parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

pub fn is_text(media: &str) -> bool {
    media.starts_with("text/") || media.ends_with("+yaml") || media == "application/yaml"
}

pub fn is_protobuf(media: &str) -> bool {
    media.contains("protobuf")
}

/// With vector instructions where the CPU has them.
pub fn base64(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// The content of a body of `media` read as a tree where it is JSON,
/// else kept as text where it is UTF-8, else as base64: nothing is
/// dropped. A body sent without a content type, or as text, that parses as
/// JSON is JSON; a `truncated` one is never read as JSON.
pub fn content_of(bytes: &[u8], media: &str, truncated: bool) -> BodyContent {
    let may_be_json = is_json(media) || media.is_empty() || is_text(media);
    if may_be_json
        && !truncated
        && let Ok(value) = serde_json::from_slice::<Value>(bytes)
    {
        return BodyContent::Json(value);
    }
    if may_be_json && let Ok(text) = std::str::from_utf8(bytes) {
        return BodyContent::Text(text.to_string());
    }
    BodyContent::Base64(base64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_is_json_text_or_base64_as_its_type_and_bytes_say() {
        assert_eq!(
            media_type(Some(" Application/JSON; charset=utf-8")),
            "application/json"
        );
        assert_eq!(
            content_of(b"{\"a\":1}", "application/json", false),
            BodyContent::Json(json!({"a": 1}))
        );
        assert_eq!(
            content_of(b"{\"a\":1}", "", false),
            BodyContent::Json(json!({"a": 1}))
        );
        assert_eq!(
            content_of(b"{\"a\":", "application/json", true),
            BodyContent::Text("{\"a\":".into())
        );
        assert_eq!(
            content_of(b"a: b", "application/apply-patch+yaml", false),
            BodyContent::Text("a: b".into())
        );
        assert_eq!(
            content_of(b"{\"a\":1}", "application/octet-stream", false),
            BodyContent::Base64("eyJhIjoxfQ==".into())
        );
        assert_eq!(
            content_of(&[0xff, 0xfe], "application/json", false),
            BodyContent::Base64("//4=".into())
        );
    }
}
