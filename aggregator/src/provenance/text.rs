//! An object's version read from its JSON text, without building its tree.
//!
//! Ingest keeps the objects of the answers it sees as versions. Decoding
//! each body into a `Value` tree, only to write it out again as text, was
//! most of what parsing a record cost (a 2 KB record: about 8.6 µs, of
//! which the trees and their writing took two thirds). The apiserver's text
//! is already what the store keeps: compact JSON. Here the few fields a
//! version needs are read from the text, managedFields is cut out of it,
//! and the rest is kept as it came.
//!
//! Only text that is written the way serde_json would write it is taken as
//! it is ([`is_canonical`]): bisect searches the stored text for
//! `"key":value` (see [`super::path::FieldPath::needles`]). Anything else,
//! and anything this reader cannot tell for sure, goes through the tree.

use super::ObjectHead;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

/// What a version needs of an object: its kind, apiVersion and metadata.
#[derive(Debug, Default)]
struct Head<'a> {
    kind: Option<&'a RawValue>,
    api_version: Option<&'a RawValue>,
    /// `None` where it is missing or `null`.
    metadata: Option<Metadata<'a>>,
}

#[derive(Debug, Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<&'a RawValue>,
    #[serde(default, borrow)]
    namespace: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "resourceVersion")]
    resource_version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    generation: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "managedFields")]
    managed_fields: Option<&'a RawValue>,
}

/// Reads an object's head in one pass, which stops once kind, apiVersion
/// and metadata are read: the apiserver writes them first, and the rest
/// (data, spec, status) is most of the text. Where a key repeats, which
/// the apiserver never writes, the first counts, as in bisect's probe.
/// `None` for text that is not an object or whose metadata is malformed.
fn read_head(text: &str) -> Option<Head<'_>> {
    let read = Cell::new(None);
    let mut reader = serde_json::Deserializer::from_str(text);
    // Stopping early leaves the map unfinished, which serde_json reports as
    // an error: what was read is in `read` either way.
    let _ = HeadReader { read: &read }.deserialize(&mut reader);
    read.take()
}

struct HeadReader<'c, 'a> {
    read: &'c Cell<Option<Head<'a>>>,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for HeadReader<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for HeadReader<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut head = Head::default();
        let (mut kind, mut api_version, mut metadata) = (false, false, false);
        while !(kind && api_version && metadata) {
            // A key with an escape in it fails here: the tree reads those.
            let Some(key) = map.next_key::<&'de str>()? else {
                break;
            };
            match key {
                "kind" if !kind => {
                    head.kind = Some(map.next_value()?);
                    kind = true;
                }
                "apiVersion" if !api_version => {
                    head.api_version = Some(map.next_value()?);
                    api_version = true;
                }
                "metadata" if !metadata => {
                    head.metadata = map.next_value()?;
                    metadata = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.read.set(Some(head));
        Ok(())
    }
}

/// One object read from its text.
#[derive(Debug, PartialEq)]
pub struct ObjectText {
    pub head: ObjectHead,
    /// The object without managedFields, compact.
    pub text: String,
}

/// The string a JSON value holds, and empty for any other value, as the
/// tree's `as_str().unwrap_or_default()` reads it.
fn string_or_empty(raw: Option<&RawValue>) -> String {
    raw.and_then(string_in).unwrap_or_default()
}

fn string_in(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Cow<'_, str>>(raw.get())
        .ok()
        .map(Cow::into_owned)
}

/// Where `part` lies in `whole`, which it was borrowed from.
fn span_in(whole: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (whole.get(start..end)? == part).then_some(start..end)
}

/// `text` without the member whose value is at `value` (`"key":value` and
/// one comma beside it). `None` where the text before it is not the key.
fn without_member(text: &str, value: std::ops::Range<usize>, key: &str) -> Option<String> {
    // `"key":` just before the value.
    let key_start = value.start.checked_sub(key.len() + 3)?;
    let before = text.get(key_start..value.start)?;
    if before.strip_prefix('"').and_then(|b| b.strip_suffix("\":")) != Some(key) {
        return None;
    }
    let cut = if text[..key_start].ends_with(',') {
        key_start - 1..value.end
    } else if text[value.end..].starts_with(',') {
        key_start..value.end + 1
    } else {
        key_start..value.end
    };
    let mut out = String::with_capacity(text.len() - cut.len());
    out.push_str(&text[..cut.start]);
    out.push_str(&text[cut.end..]);
    Some(out)
}

/// What a list says of its items, which do not say it themselves: their
/// kind, and the list's apiVersion as it is (even where it is no string).
#[derive(Debug, Clone, Copy)]
pub struct ListDefaults<'a> {
    pub item_kind: &'a str,
    pub api_version: Option<&'a RawValue>,
}

/// Reads one object, given as canonical compact text. `None` where the
/// tree must decide: not an object with metadata and a string uid, or
/// text this reader does not take as it is.
pub fn read_object(text: &str) -> Option<ObjectText> {
    if !is_canonical(text.as_bytes()) {
        return None;
    }
    read_canonical_object(text, None)
}

/// [`read_object`], for text already known to be canonical; a list item
/// gets the kind and apiVersion it lacks from its list, as the tree path
/// adds them.
pub fn read_canonical_object(text: &str, list: Option<ListDefaults<'_>>) -> Option<ObjectText> {
    if !text.starts_with('{') {
        return None;
    }
    let head = read_head(text)?;
    let meta = head.metadata?;
    let uid = meta.uid?.into_owned();
    let generation = match meta.generation {
        None => None,
        // A generation that is no integer counts as none, as in the tree.
        Some(g) => serde_json::from_str::<serde_json::Value>(g.get())
            .ok()?
            .as_i64(),
    };
    let mut text = match meta.managed_fields {
        Some(managed) => without_member(text, span_in(text, managed.get())?, "managedFields")?,
        None => text.to_string(),
    };
    let mut api_version = head.api_version;
    let mut kind = string_or_empty(head.kind);
    if let Some(list) = list {
        let mut added = String::new();
        if head.kind.is_none() {
            added.push_str("\"kind\":");
            added.push_str(&serde_json::to_string(list.item_kind).ok()?);
            added.push(',');
            kind = list.item_kind.to_string();
        }
        if api_version.is_none() {
            api_version = list.api_version;
            added.push_str("\"apiVersion\":");
            added.push_str(list.api_version.map_or("null", RawValue::get));
            added.push(',');
        }
        if !added.is_empty() {
            if text == "{}" {
                added.pop();
            }
            text.insert_str(1, &added);
        }
    }
    Some(ObjectText {
        head: ObjectHead {
            kind,
            api_version: string_or_empty(api_version),
            uid,
            name: meta.name.and_then(string_in),
            namespace: string_or_empty(meta.namespace),
            resource_version: string_or_empty(meta.resource_version),
            generation,
        },
        text,
    })
}

/// A list's kind and apiVersion, and its items' texts.
#[derive(Debug, Deserialize)]
pub struct ListText<'a> {
    #[serde(default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "apiVersion")]
    api_version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

impl<'a> ListText<'a> {
    /// `None` where the tree must read the list.
    pub fn read(text: &'a str) -> Option<ListText<'a>> {
        if !text.starts_with('{') || !is_canonical(text.as_bytes()) {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The kind of the list's items: `ConfigMapList` holds `ConfigMap`s.
    pub fn item_kind(&self) -> String {
        let kind = string_or_empty(self.kind);
        kind.strip_suffix("List").unwrap_or(&kind).to_string()
    }

    /// The items' texts, canonical as the list is.
    pub fn items(&self) -> &[&'a RawValue] {
        self.items.as_deref().unwrap_or_default()
    }

    pub fn defaults<'k>(&'k self, item_kind: &'k str) -> ListDefaults<'k> {
        ListDefaults {
            item_kind,
            api_version: self.api_version,
        }
    }
}

/// Whether JSON text is written as serde_json writes a tree: no whitespace
/// between tokens, no escape but `\"`, `\\`, `\n`, `\r`, `\t`, `\b` and
/// `\f` (Go writes `<` as `\u003c`, which a search for `<` would miss), and
/// only integers that fit 64 bits (serde_json would write any other number
/// differently). Keys in the order they came are fine: the search does not
/// look at order. The text is known to be one JSON document.
pub fn is_canonical(text: &[u8]) -> bool {
    let mut at = 0;
    let mut digits = 0;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'"' => {
                digits = 0;
                at += 1;
                loop {
                    let Some(stop) = memchr::memchr2(b'"', b'\\', &text[at..]) else {
                        return false;
                    };
                    at += stop;
                    if text[at] == b'"' {
                        at += 1;
                        break;
                    }
                    match text.get(at + 1) {
                        Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => at += 2,
                        _ => return false,
                    }
                }
                continue;
            }
            b'0'..=b'9' => {
                digits += 1;
                // Every integer of up to 19 digits fits 64 bits; longer
                // ones are left to the tree, which knows.
                if digits > 19 {
                    return false;
                }
            }
            b'e' | b'E' if digits > 0 => return false,
            b' ' | b'\t' | b'\n' | b'\r' | b'.' | b'+' => return false,
            _ => digits = 0,
        }
        at += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The object as the tree path stores it.
    fn through_the_tree(text: &str) -> Value {
        let mut v: Value = serde_json::from_str(text).unwrap();
        v["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        v
    }

    #[test]
    fn an_object_is_read_and_its_managed_fields_cut_wherever_they_stand() {
        let objects = [
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"ns","uid":"u1","resourceVersion":"7","generation":2,"managedFields":[{"manager":"kubectl","fieldsV1":{"f:data":{}}}]},"data":{"a":"b c"}}"#,
            r#"{"metadata":{"managedFields":[],"uid":"u1"},"kind":"ConfigMap"}"#,
            r#"{"metadata":{"managedFields":[{"m":"x"}],"uid":"u1","name":"c"}}"#,
            r#"{"metadata":{"uid":"u1","managedFields":{}}}"#,
            r#"{"metadata":{"uid":"u1","name":"with \"quotes\" and \\"}}"#,
        ];
        for text in objects {
            let read = read_object(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(read.head.uid, "u1");
            let back: Value = serde_json::from_str(&read.text).unwrap();
            assert_eq!(back, through_the_tree(text), "{text} became {}", read.text);
            assert!(!read.text.contains("managedFields"), "{}", read.text);
        }
        let first = read_object(objects[0]).unwrap().head;
        assert_eq!(
            (
                first.kind.as_str(),
                first.api_version.as_str(),
                first.name.as_deref(),
                first.namespace.as_str(),
                first.resource_version.as_str(),
                first.generation
            ),
            ("ConfigMap", "v1", Some("c"), "ns", "7", Some(2))
        );
        assert_eq!(
            read_object(objects[4]).unwrap().head.name.as_deref(),
            Some("with \"quotes\" and \\")
        );
    }

    #[test]
    fn what_the_text_cannot_say_for_sure_is_left_to_the_tree() {
        for text in [
            // Not canonical: the stored text must be what a search expects.
            r#"{"metadata": {"uid":"u1"}}"#,
            r#"{"metadata":{"uid":"u1"},"a":"\u003c"}"#,
            r#"{"metadata":{"uid":"u1"},"a":"\/"}"#,
            r#"{"metadata":{"uid":"u1"},"a":1.5}"#,
            r#"{"metadata":{"uid":"u1"},"a":1e3}"#,
            r#"{"metadata":{"uid":"u1"},"a":123456789012345678901}"#,
            // No version, or not the shape a version needs.
            r#"{"metadata":{"name":"c"}}"#,
            r#"{"metadata":{"uid":7}}"#,
            r#"{"metadata":"m"}"#,
            r#"{"kind":"ConfigMap"}"#,
            r#"[{"metadata":{"uid":"u1"}}]"#,
            // A key twice: serde refuses, the tree decides.
            r#"{"metadata":{"uid":"u1","uid":"u2"}}"#,
        ] {
            assert_eq!(read_object(text), None, "{text}");
        }
    }

    #[test]
    fn canonical_text_is_what_serde_json_writes() {
        for value in [
            json!({"a": [1, -2, true, false, null], "b": "x y\n\t\"\\", "c": {}, "é": "ü"}),
            json!({"big": i64::MAX, "small": i64::MIN, "e": "1e5 and 2.5"}),
        ] {
            let text = serde_json::to_string(&value).unwrap();
            assert!(is_canonical(text.as_bytes()), "{text}");
        }
        for text in ["{\"a\": 1}", "[1,\n2]", "{\"a\":-1.0}", "{\"a\":2E7}"] {
            assert!(!is_canonical(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn list_items_get_the_kind_and_api_version_they_lack() {
        let list = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"uid":"a","managedFields":[]}},{"kind":"Other","metadata":{"uid":"b"}},{"kind":null,"metadata":{"uid":"c"}},{},"odd"]}"#;
        let read = ListText::read(list).unwrap();
        let item_kind = read.item_kind();
        assert_eq!(item_kind, "ConfigMap");
        let got: Vec<Option<Value>> = read
            .items()
            .iter()
            .map(|item| {
                read_canonical_object(item.get(), Some(read.defaults(&item_kind)))
                    .map(|o| serde_json::from_str(&o.text).unwrap())
            })
            .collect();
        let tree: Value = serde_json::from_str(list).unwrap();
        let expected: Vec<Option<Value>> = tree["items"]
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .map(|mut item| {
                let o = item.as_object_mut()?;
                o.entry("kind").or_insert(json!("ConfigMap"));
                o.entry("apiVersion").or_insert(json!("v1"));
                o.get("metadata")?.get("uid")?;
                Some(through_the_tree(&item.to_string()))
            })
            .collect();
        assert_eq!(got, expected);
        let kinds: Vec<String> = read
            .items()
            .iter()
            .take(3)
            .map(|item| {
                read_canonical_object(item.get(), Some(read.defaults(&item_kind)))
                    .unwrap()
                    .head
                    .kind
            })
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Other", ""]);
        let no_items = ListText::read(r#"{"kind":"PodList","items":null}"#).unwrap();
        assert!(no_items.items().is_empty());
        assert!(ListText::read(r#"{"kind": "PodList"}"#).is_none());
    }

    #[test]
    fn reading_stops_after_the_head_and_the_first_of_a_repeated_key_counts() {
        // Past the head, the text is not read: what follows is not looked at.
        let text = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"uid":"u1"},"data":{"a":"b"},"metadata":{"uid":"u2"}}"#;
        assert_eq!(read_object(text).unwrap().head.uid, "u1");
        // Kind after the metadata is still read.
        let late = r#"{"metadata":{"uid":"u1"},"data":{},"kind":"ConfigMap"}"#;
        assert_eq!(read_object(late).unwrap().head.kind, "ConfigMap");
    }
}
