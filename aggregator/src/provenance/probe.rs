//! One field of an object read straight from its stored JSON text. Bisect
//! looks at one or two fields of every version: decoding each whole object
//! into a `Value` tree (10,000 objects of 1.7 KB take about 160 ms) is most
//! of its cost, while skipping over the text to the field is a small part
//! of that. Only the field's own value is decoded. Before any probe, a
//! search for text that must appear where the field has a value (its
//! needles) passes over most objects.

use super::path::{FieldPath, Step, scalar_text};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::cell::Cell;
use std::fmt;

impl FieldPath {
    /// The value at this path in an object given as JSON text, as
    /// [`FieldPath::resolve`] finds it in the decoded object (where a key
    /// repeats, which serde_json never writes, the first one counts here).
    /// One pass over the text, which stops where the answer is known:
    /// everything before it is skipped, not built, and nothing after it is
    /// read.
    pub fn resolve_text(&self, object: &[u8]) -> Option<Value> {
        walk(object, &self.steps)
    }

    /// Text of which one appears in an object's JSON, written compact as
    /// serde_json writes it (as the store does), wherever this field's
    /// value as text is `value`: a cheap search passes over most objects
    /// where it is not, without probing them. Empty where no such text is
    /// sure (a value that JSON would escape).
    pub fn needles(&self, value: &str) -> Vec<Vec<u8>> {
        let verbatim = |t: &str| !t.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        if !verbatim(value) {
            return Vec::new();
        }
        match self.steps.last() {
            // `"replicas":3` or `"image":"nginx:1.29"`, far rarer than the
            // value alone.
            Some(Step::Key(key)) if verbatim(key) => {
                let mut needles = vec![format!("\"{key}\":\"{value}\"").into_bytes()];
                let literal = serde_json::from_str::<Value>(value).is_ok_and(|v| {
                    !v.is_string() && serde_json::to_string(&v).is_ok_and(|t| t == value)
                });
                if literal {
                    needles.push(format!("\"{key}\":{value}").into_bytes());
                }
                needles
            }
            _ => vec![value.as_bytes().to_vec()],
        }
    }
}

fn walk(json: &[u8], steps: &[Step]) -> Option<Value> {
    let answer = Cell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(json);
    let read = Probe {
        steps,
        answer: &answer,
    }
    .deserialize(&mut reader);
    match answer.take() {
        Some(found) => found,
        // Read to the end without meeting the path's last key.
        None => {
            read.ok()?;
            reader.end().ok()?;
            None
        }
    }
}

/// Once the answer is known, the walk ends by returning this error: the
/// deserializer then reads no further.
fn stop<E: de::Error>(answer: &Cell<Option<Option<Value>>>, found: Option<Value>) -> E {
    answer.set(Some(found));
    E::custom("field found")
}

/// Reads the value at `steps` from here into `answer`, skipping the rest.
struct Probe<'s> {
    steps: &'s [Step],
    answer: &'s Cell<Option<Option<Value>>>,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.steps.split_first() {
            None => {
                let value = Value::deserialize(d)?;
                Err(stop(self.answer, Some(value)))
            }
            Some((step, rest)) => d.deserialize_any(StepIn {
                step,
                rest,
                answer: self.answer,
            }),
        }
    }
}

/// Takes one step into whatever value comes; a value of the wrong shape
/// for the step has no field there.
struct StepIn<'s> {
    step: &'s Step,
    rest: &'s [Step],
    answer: &'s Cell<Option<Option<Value>>>,
}

impl StepIn<'_> {
    fn absent<E: de::Error>(self) -> Result<(), E> {
        Err(stop(self.answer, None))
    }

    fn deeper(&self) -> Probe<'_> {
        Probe {
            steps: self.rest,
            answer: self.answer,
        }
    }
}

impl<'de> Visitor<'de> for StepIn<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let wanted = match self.step {
            Step::Key(k) => k.clone(),
            // A pointer's number may be a map key.
            Step::Index(i) => i.to_string(),
            Step::Select { .. } => return self.absent(),
        };
        while let Some(is_wanted) = map.next_key_seed(KeyAmong([wanted.as_str()]))? {
            if is_wanted.is_some() {
                // Returns only if the rest of the path is not under it.
                map.next_value_seed(self.deeper())?;
                return self.absent();
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.step {
            Step::Index(wanted) => {
                for _ in 0..*wanted {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        return self.absent();
                    }
                }
                seq.next_element_seed(self.deeper())?;
                self.absent()
            }
            Step::Select { key, value } => {
                // The first item whose key has the value, as when decoding.
                if let Some((Step::Key(next), rest)) = self.rest.split_first() {
                    // One pass over each item: its key's value and the next
                    // step's text are read together.
                    let pick = Pick { key, value, next };
                    while let Some(picked) = seq.next_element_seed(pick)? {
                        if let Some(under) = picked {
                            let found = under.and_then(|raw| walk(raw.get().as_bytes(), rest));
                            return Err(stop(self.answer, found));
                        }
                    }
                    return self.absent();
                }
                let key = [Step::Key(key.clone())];
                while let Some(item) = seq.next_element::<&RawValue>()? {
                    let item = item.get().as_bytes();
                    if walk(item, &key).is_some_and(|v| scalar_text(&v) == *value) {
                        return Err(stop(self.answer, walk(item, self.rest)));
                    }
                }
                self.absent()
            }
            Step::Key(_) => self.absent(),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.absent()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.absent()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.absent()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.absent()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.absent()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.absent()
    }
}

/// Reads one list item for a `[key=value]` step followed by the key
/// `next`: `None` if the item is not the one picked, else the text under
/// `next` in it, if it has that key.
#[derive(Clone, Copy)]
struct Pick<'s> {
    key: &'s str,
    value: &'s str,
    next: &'s str,
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Option<Option<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Option<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut picked, mut under) = (false, None);
        while let Some(which) = map.next_key_seed(KeyAmong([self.key, self.next]))? {
            match which {
                Some(0) => picked = scalar_text(&map.next_value::<Value>()?) == self.value,
                Some(_) => under = Some(map.next_value::<&RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(picked.then_some(under))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Which of the wanted keys a map key is, compared without keeping it.
struct KeyAmong<'k, const N: usize>([&'k str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for KeyAmong<'_, N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for KeyAmong<'_, N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == key))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object() -> Value {
        json!({
            "metadata": {"name": "web", "annotations": {"a/b": "x", "7": "seven"}},
            "spec": {
                "replicas": 3,
                "paused": false,
                "template": {"spec": {"containers": [
                    {"name": "sidecar", "image": "envoy:1.31", "ports": [{"containerPort": 9901}]},
                    {"name": "web", "image": "nginx:1.29", "env": [{"name": "MODE", "value": "fast \"quoted\" ü"}]}
                ]}},
                "selector": null
            }
        })
    }

    #[test]
    fn finds_what_resolve_finds_in_the_decoded_object() {
        let decoded = object();
        let text = serde_json::to_string_pretty(&decoded).unwrap();
        for path in [
            "spec.replicas",
            "/spec/paused",
            "spec.selector",
            "spec.template.spec.containers[name=web].image",
            "spec.template.spec.containers[name=web].env[name=MODE].value",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "/spec/template/spec/containers/1/name",
            "/metadata/annotations/a~1b",
            "/metadata/annotations/7",
            "spec.template",
            "spec.template.spec.containers[name=db].image",
            "spec.template.spec.containers[5]",
            "spec.replicas.deeper",
            "spec.template.spec.containers.name",
            "metadata.missing",
        ] {
            let field = FieldPath::parse(path).unwrap();
            assert_eq!(
                field.resolve_text(text.as_bytes()),
                field.resolve(&decoded).cloned(),
                "{path}"
            );
        }
    }

    #[test]
    fn a_field_with_the_value_always_has_a_needle_in_the_text() {
        let decoded = object();
        let text = decoded.to_string();
        let present = |path: &str, value: &str| {
            let needles = FieldPath::parse(path).unwrap().needles(value);
            needles.is_empty()
                || needles
                    .iter()
                    .any(|n| memchr::memmem::find(text.as_bytes(), n).is_some())
        };
        for (path, value) in [
            ("spec.replicas", "3"),
            ("spec.paused", "false"),
            ("spec.selector", "null"),
            (
                "spec.template.spec.containers[name=web].image",
                "nginx:1.29",
            ),
            (
                "spec.template.spec.containers[0].ports[0].containerPort",
                "9901",
            ),
            ("/spec/template/spec/containers/1/name", "web"),
            ("/metadata/annotations/a~1b", "x"),
            ("/metadata/annotations/7", "seven"),
            (
                "spec.template.spec.containers[name=web].env[name=MODE].value",
                "fast \"quoted\" ü",
            ),
        ] {
            let field = FieldPath::parse(path).unwrap();
            let resolved = field.resolve(&decoded).map(scalar_text);
            assert_eq!(resolved.as_deref(), Some(value), "{path}");
            assert!(present(path, value), "{path} = {value}");
        }
        // A value it does not have: the search alone rules it out.
        assert!(!present("spec.replicas", "4"));
        assert!(!present(
            "spec.template.spec.containers[name=web].image",
            "nginx:1.30"
        ));
        // The value elsewhere, under another key, is not enough.
        assert!(!present(
            "spec.template.spec.containers[name=web].name",
            "nginx:1.29"
        ));
    }

    #[test]
    fn text_that_is_not_json_has_no_field() {
        let field = FieldPath::parse("spec.replicas").unwrap();
        assert_eq!(field.resolve_text(b"{\"spec\": {\"replicas\": "), None);
        assert_eq!(field.resolve_text(b"not json"), None);
        assert_eq!(field.resolve_text(b""), None);
    }
}
