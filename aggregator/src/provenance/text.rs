//! An object's version read from its JSON text, without building its tree.
//!
//! Ingest keeps the objects of the answers it sees as versions. Decoding
//! each body into a `Value` tree, only to write it out again as text, was
//! most of what parsing a record cost (a 2 KB record: about 8.6 µs, of
//! which the trees and their writing took two thirds). The apiserver's text
//! is already what the store keeps: compact JSON. Here the few fields a
//! version needs are read from the text, managedFields is cut out of it,
//! and the rest is kept as it came. One pass over the text checks it, tells
//! whether it is canonical, and finds the head (and a list's items).
//!
//! Only text that is written the way serde_json would write it is taken as
//! it is ([`JsonReader::canonical`]): bisect searches the stored text for
//! `"key":value` (see [`super::path::FieldPath::needles`]). Anything else,
//! and anything this reader cannot tell for sure, goes through the tree.

use super::ObjectHead;
use apiwitness_record::json_reader::{JsonError, JsonReader, string_value};
use std::ops::Range;

/// Where the parts of a body that versions need lie in the text it was
/// read from, found in the one pass that checked it: its head, and a
/// list's items. Ingest reads it while it reads the record's line, so that
/// the body is walked once in all.
#[derive(Debug)]
pub struct Outline {
    /// Where the body starts and ends in that text: positions count from
    /// its start.
    base: usize,
    end: usize,
    /// Whether the whole body is canonical ([`JsonReader::canonical`]).
    canonical: bool,
    /// `None` where the body is not an object.
    object: Option<ObjectSpans>,
}

impl Outline {
    /// Whether `text` is as long as the body outlined: a text that is not
    /// the body is never read through its outline.
    fn outlines(&self, text: &str) -> bool {
        self.end - self.base == text.len()
    }
}

/// Where the parts of an object a version needs lie in its text.
#[derive(Debug, Default)]
struct ObjectSpans {
    kind: Option<Range<usize>>,
    api_version: Option<Range<usize>>,
    metadata: Option<MetadataSpans>,
    /// The metadata cannot be read from the text: it is no object, or it
    /// says one of its fields twice (serde refuses that; the tree decides).
    metadata_unread: bool,
    /// Only read at the top: a list's.
    items: Option<Items>,
    /// Kind, apiVersion or items said twice: a list is then left to the
    /// tree (an object takes the first).
    list_key_twice: bool,
}

#[derive(Debug)]
enum Items {
    Null,
    /// Neither an array nor null.
    Other,
    /// Each item's span, and where its head lies.
    Array(Vec<(Range<usize>, Option<ObjectSpans>)>),
}

#[derive(Debug, Default)]
struct MetadataSpans {
    uid: Option<Range<usize>>,
    name: Option<Range<usize>>,
    namespace: Option<Range<usize>>,
    resource_version: Option<Range<usize>>,
    generation: Option<Range<usize>>,
    /// From its key's opening quote, and its value.
    managed_fields: Option<(usize, Range<usize>)>,
}

/// Reads one whole value at the reader, which must not have read anything
/// yet that its canonical state should not cover (see
/// [`JsonReader::restart_canonical`]).
pub fn read_outline(reader: &mut JsonReader<'_>) -> Result<Outline, JsonError> {
    let base = reader.start_of_value();
    let object = read_object_spans(reader, true)?;
    Ok(Outline {
        base,
        end: reader.position(),
        canonical: reader.canonical(),
        object,
    })
}

/// Reads the value at the reader, which it consumes whole, and where it
/// is an object, where its head lies (and at the `top`, its items). Where
/// a key repeats in the object, which the apiserver never writes, the
/// first counts, as in bisect's probe.
fn read_object_spans(
    reader: &mut JsonReader<'_>,
    top: bool,
) -> Result<Option<ObjectSpans>, JsonError> {
    let Some(mut members) = reader.object() else {
        reader.skip_value()?;
        return Ok(None);
    };
    let mut spans = ObjectSpans::default();
    let mut metadata_seen = false;
    while let Some(key) = reader.next_key(&mut members)? {
        match key.raw {
            b"kind" => {
                let value = reader.skip_value()?;
                spans.list_key_twice |= spans.kind.is_some();
                spans.kind.get_or_insert(value);
            }
            b"apiVersion" => {
                let value = reader.skip_value()?;
                spans.list_key_twice |= spans.api_version.is_some();
                spans.api_version.get_or_insert(value);
            }
            b"metadata" if !metadata_seen => {
                metadata_seen = true;
                match read_metadata_spans(reader)? {
                    Some(metadata) => spans.metadata = Some(metadata),
                    None => spans.metadata_unread = true,
                }
            }
            b"items" if top => {
                spans.list_key_twice |= spans.items.is_some();
                spans.items = Some(read_items(reader)?);
            }
            _ => {
                reader.skip_value()?;
            }
        }
    }
    Ok(Some(spans))
}

fn read_items(reader: &mut JsonReader<'_>) -> Result<Items, JsonError> {
    let Some(mut elements) = reader.array() else {
        let value = reader.skip_value()?;
        return Ok(if reader.bytes(value) == b"null" {
            Items::Null
        } else {
            Items::Other
        });
    };
    let mut items = Vec::new();
    while reader.next_element(&mut elements)? {
        let start = reader.start_of_value();
        let spans = read_object_spans(reader, false)?;
        items.push((start..reader.position(), spans));
    }
    Ok(Items::Array(items))
}

/// `None` for metadata that is not an object (read whole all the same), or
/// that says one of the fields read here twice.
fn read_metadata_spans(reader: &mut JsonReader<'_>) -> Result<Option<MetadataSpans>, JsonError> {
    let Some(mut members) = reader.object() else {
        reader.skip_value()?;
        return Ok(None);
    };
    let mut spans = MetadataSpans::default();
    let mut twice = false;
    while let Some(key) = reader.next_key(&mut members)? {
        let field = match key.raw {
            b"uid" => &mut spans.uid,
            b"name" => &mut spans.name,
            b"namespace" => &mut spans.namespace,
            b"resourceVersion" => &mut spans.resource_version,
            b"generation" => &mut spans.generation,
            b"managedFields" => {
                let value = reader.skip_value()?;
                twice |= spans.managed_fields.replace((key.start, value)).is_some();
                continue;
            }
            _ => {
                reader.skip_value()?;
                continue;
            }
        };
        twice |= field.replace(reader.skip_value()?).is_some();
    }
    Ok((!twice).then_some(spans))
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
fn string_or_empty(raw: Option<&str>) -> String {
    raw.and_then(string_value).unwrap_or_default()
}

/// `text` without the member from `key_start` to the end of `value`, and
/// one comma beside it.
fn without_member(text: &str, key_start: usize, value: Range<usize>) -> String {
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
    out
}

/// What a list says of its items, which do not say it themselves: their
/// kind, and the list's apiVersion as it is (even where it is no string).
#[derive(Debug, Clone, Copy)]
struct ListDefaults<'a> {
    item_kind: &'a str,
    api_version: Option<&'a str>,
}

/// Reads one object from its text. `None` where the tree must decide: not
/// an object with metadata and a string uid, or text this reader does not
/// take as it is (see [`JsonReader::canonical`]: bisect searches the stored
/// text for `"key":value`).
pub fn read_object(text: &str) -> Option<ObjectText> {
    object_of(text, &outline_of(text)?)
}

/// The outline of a whole text, `None` where it is not one JSON value.
pub(crate) fn outline_of(text: &str) -> Option<Outline> {
    let mut reader = JsonReader::new(text);
    let outline = read_outline(&mut reader).ok()?;
    reader.finish().ok()?;
    Some(outline)
}

/// [`read_object`], from the body's outline.
pub fn object_of(text: &str, outline: &Outline) -> Option<ObjectText> {
    if !outline.canonical || !outline.outlines(text) {
        return None;
    }
    let spans = outline.object.as_ref()?;
    let whole = outline.base..outline.base + text.len();
    object_text(text, outline.base, whole, spans, None)
}

/// The part of `text` at `span`, a position that counts from `base`.
fn at_span<'t>(text: &'t str, base: usize, span: &Range<usize>) -> &'t str {
    &text[span.start - base..span.end - base]
}

/// The object at `span` of `text`, whose positions (the span's too) count
/// from `base`, from where its head lies; a list item gets the kind and
/// apiVersion it lacks from its list, as the tree path adds them.
fn object_text(
    text: &str,
    base: usize,
    span: Range<usize>,
    spans: &ObjectSpans,
    list: Option<ListDefaults<'_>>,
) -> Option<ObjectText> {
    if spans.metadata_unread {
        return None;
    }
    let meta = spans.metadata.as_ref()?;
    let at = |part: &Option<Range<usize>>| part.as_ref().map(|p| at_span(text, base, p));
    let uid = string_value(at(&meta.uid)?)?;
    let generation = match at(&meta.generation) {
        None => None,
        // A generation that is no integer counts as none, as in the tree.
        Some(g) => serde_json::from_str::<serde_json::Value>(g).ok()?.as_i64(),
    };
    let kind_raw = at(&spans.kind);
    let mut api_version = at(&spans.api_version);
    let mut kind = string_or_empty(kind_raw);
    let object = at_span(text, base, &span);
    let mut object_text = match &meta.managed_fields {
        Some((key, value)) => without_member(
            object,
            key - span.start,
            value.start - span.start..value.end - span.start,
        ),
        None => object.to_string(),
    };
    if let Some(list) = list {
        let mut added = String::new();
        if kind_raw.is_none() {
            added.push_str("\"kind\":");
            added.push_str(&serde_json::to_string(list.item_kind).ok()?);
            added.push(',');
            kind = list.item_kind.to_string();
        }
        if api_version.is_none() {
            api_version = list.api_version;
            added.push_str("\"apiVersion\":");
            added.push_str(list.api_version.unwrap_or("null"));
            added.push(',');
        }
        if !added.is_empty() {
            if object_text == "{}" {
                added.pop();
            }
            object_text.insert_str(1, &added);
        }
    }
    Some(ObjectText {
        head: ObjectHead {
            kind,
            api_version: string_or_empty(api_version),
            uid,
            name: at(&meta.name).and_then(string_value),
            namespace: string_or_empty(at(&meta.namespace)),
            resource_version: string_or_empty(at(&meta.resource_version)),
            generation,
        },
        text: object_text,
    })
}

/// A list read from its text in one pass: its items' texts, each with its
/// version where the text can say it.
#[derive(Debug)]
pub struct ListText<'a> {
    pub item_kind: String,
    /// The list's apiVersion as it is, even where it is no string.
    pub api_version: Option<&'a str>,
    pub items: Vec<ListItem<'a>>,
}

#[derive(Debug)]
pub struct ListItem<'a> {
    pub text: &'a str,
    /// `None` where the tree must read the item.
    pub object: Option<ObjectText>,
}

impl<'a> ListText<'a> {
    /// `None` where the tree must read the list: not canonical, no object,
    /// or a kind, apiVersion or items said twice.
    pub fn read(text: &'a str) -> Option<ListText<'a>> {
        ListText::of(text, &outline_of(text)?)
    }

    /// [`ListText::read`], from the body's outline.
    pub fn of(text: &'a str, outline: &Outline) -> Option<ListText<'a>> {
        let spans = outline.object.as_ref()?;
        if !outline.canonical || spans.list_key_twice || !outline.outlines(text) {
            return None;
        }
        let base = outline.base;
        let at = |part: &Range<usize>| at_span(text, base, part);
        let kind = string_or_empty(spans.kind.as_ref().map(at));
        let item_kind = kind.strip_suffix("List").unwrap_or(&kind).to_string();
        let api_version = spans.api_version.as_ref().map(at);
        let defaults = ListDefaults {
            item_kind: &item_kind,
            api_version,
        };
        let items = match &spans.items {
            None | Some(Items::Null) => Vec::new(),
            Some(Items::Other) => return None,
            Some(Items::Array(items)) => items
                .iter()
                .map(|(span, item)| ListItem {
                    text: at(span),
                    object: item.as_ref().and_then(|item| {
                        object_text(text, base, span.clone(), item, Some(defaults))
                    }),
                })
                .collect(),
        };
        Some(ListText {
            item_kind,
            api_version,
            items,
        })
    }
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
            r#"{"metadata":{"uid":"u1"},"a":-9300000000000000000}"#,
            r#"{"metadata":{"uid":"u1"},"a":-0}"#,
            // No version, or not the shape a version needs.
            r#"{"metadata":{"name":"c"}}"#,
            r#"{"metadata":{"uid":7}}"#,
            r#"{"metadata":"m"}"#,
            r#"{"kind":"ConfigMap"}"#,
            r#"[{"metadata":{"uid":"u1"}}]"#,
            // A key twice: serde refuses, the tree decides.
            r#"{"metadata":{"uid":"u1","uid":"u2"}}"#,
            r#"{"metadata":{"uid":"u1","managedFields":[],"managedFields":[]}}"#,
            // Not JSON at all, or more than one document.
            r#"{"metadata":{"uid":"u1"}"#,
            r#"{"metadata":{"uid":"u1"}}{}"#,
        ] {
            assert_eq!(read_object(text), None, "{text}");
        }
    }

    #[test]
    fn list_items_get_the_kind_and_api_version_they_lack() {
        let list = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"uid":"a","managedFields":[]}},{"kind":"Other","metadata":{"uid":"b"}},{"kind":null,"metadata":{"uid":"c"}},{},"odd"]}"#;
        let read = ListText::read(list).unwrap();
        assert_eq!(read.item_kind, "ConfigMap");
        assert_eq!(read.api_version, Some("\"v1\""));
        let got: Vec<Option<Value>> = read
            .items
            .iter()
            .map(|item| {
                let object = item.object.as_ref()?;
                Some(serde_json::from_str(&object.text).unwrap())
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
        let texts: Vec<Value> = read
            .items
            .iter()
            .map(|item| serde_json::from_str(item.text).unwrap())
            .collect();
        assert_eq!(&texts, tree["items"].as_array().unwrap());
        let kinds: Vec<&str> = read
            .items
            .iter()
            .take(3)
            .map(|item| item.object.as_ref().unwrap().head.kind.as_str())
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Other", ""]);
        let no_items = ListText::read(r#"{"kind":"PodList","items":null}"#).unwrap();
        assert!(no_items.items.is_empty());
        for tree_decides in [
            r#"{"kind": "PodList"}"#,
            r#"{"kind":"PodList","items":{}}"#,
            r#"{"kind":"PodList","items":[],"items":[]}"#,
            r#"{"kind":"PodList","kind":"PodList"}"#,
            r#"{"kind":"PodList","items":[{"a":1.5}]}"#,
            r#"{"kind":"PodList","items":[]}x"#,
            r#"["not",{"a":"list"}]"#,
        ] {
            assert!(ListText::read(tree_decides).is_none(), "{tree_decides}");
        }
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
