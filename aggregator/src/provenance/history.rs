//! An object's history: its versions in order, the spec at each, the diff
//! between two, and bisect. Pure functions over the versions of one object.

use super::path::{FieldPath, PathError, leaves, scalar_text};
use super::{TOMBSTONE_RV, Version};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A version with its place in the object's history (1-based), and its
/// lineage: a recreated object of the same name is a new lineage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Numbered {
    pub ordinal: usize,
    pub lineage: usize,
    #[serde(flatten)]
    pub version: Version,
}

/// How a resourceVersion sorts: etcd's numbers, then opaque text, then a
/// tombstone's marker.
type RvKey = (u8, u128, String);

fn rv_key(rv: &str) -> RvKey {
    match rv.parse::<u128>() {
        Ok(n) => (0, n, String::new()),
        Err(_) if rv == TOMBSTONE_RV => (2, 0, String::new()),
        // An opaque resourceVersion (not etcd's): by text, after numbers.
        Err(_) => (1, 0, rv.to_string()),
    }
}

/// Orders versions: lineages by their first sighting, and within a lineage
/// by resourceVersion (etcd's revision, which orders writes however late an
/// observer saw them), a tombstone last.
pub fn number(versions: Vec<Version>) -> Vec<Numbered> {
    number_with(versions.into_iter().map(|v| (v, ())).collect())
        .into_iter()
        .map(|(n, ())| n)
        .collect()
}

/// [`number`], each version keeping what came with it (its object's text).
pub fn number_with<T>(mut versions: Vec<(Version, T)>) -> Vec<(Numbered, T)> {
    let mut first_time: BTreeMap<String, (String, RvKey)> = BTreeMap::new();
    for (v, _) in &versions {
        let entry = first_time
            .entry(v.uid.clone())
            .or_insert((v.time.clone(), rv_key(&v.resource_version)));
        let here = (v.time.clone(), rv_key(&v.resource_version));
        if here < *entry {
            *entry = here;
        }
    }
    let mut lineages: Vec<(&String, &(String, RvKey))> = first_time.iter().collect();
    lineages.sort_by(|a, b| a.1.cmp(b.1));
    let lineage_of: BTreeMap<String, usize> = lineages
        .iter()
        .enumerate()
        .map(|(i, (uid, _))| ((*uid).clone(), i + 1))
        .collect();
    versions.sort_by_cached_key(|(v, _)| {
        (
            lineage_of[&v.uid],
            rv_key(&v.resource_version),
            v.time.clone(),
        )
    });
    versions
        .into_iter()
        .enumerate()
        .map(|(i, (version, with))| {
            (
                Numbered {
                    ordinal: i + 1,
                    lineage: lineage_of[&version.uid],
                    version,
                },
                with,
            )
        })
        .collect()
}

/// The desired state at a version: `spec` where the kind has one, or else
/// the object's own fields (a ConfigMap's `data`) without metadata and
/// status. `None` for a tombstone that carries no object.
pub fn spec_of(version: &Version) -> Option<Value> {
    let object = version.object.as_ref()?;
    if let Some(spec) = object.get("spec") {
        return Some(spec.clone());
    }
    let mut rest = object.as_object()?.clone();
    for k in ["apiVersion", "kind", "metadata", "status"] {
        rest.remove(k);
    }
    Some(Value::Object(rest))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("no version {0}: this object has versions 1 to {1}")]
    NoVersion(usize, usize),
    #[error("version {0} is a tombstone without an object, and cannot be compared")]
    NoObject(usize),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    Bad(String),
}

fn pick(versions: &[Numbered], ordinal: usize) -> Result<&Numbered, HistoryError> {
    versions
        .get(ordinal.wrapping_sub(1))
        .ok_or(HistoryError::NoVersion(ordinal, versions.len()))
}

/// One field that changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    pub start: usize,
    pub end: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// RFC 6902, from the start's value to the end's.
    pub patch: json_patch::Patch,
    pub changes: Vec<Change>,
    /// The two values compared (the whole objects, or the field).
    #[serde(skip)]
    pub before: Value,
    #[serde(skip)]
    pub after: Value,
}

/// What is compared of a version: its object, or one field of it (null
/// where the field is absent).
fn compared(v: &Numbered, field: Option<&FieldPath>) -> Result<Value, HistoryError> {
    let object = v
        .version
        .object
        .as_ref()
        .ok_or(HistoryError::NoObject(v.ordinal))?;
    Ok(match field {
        Some(f) => f.resolve(object).cloned().unwrap_or(Value::Null),
        None => object.clone(),
    })
}

pub fn diff(
    versions: &[Numbered],
    start: usize,
    end: usize,
    field: Option<&str>,
) -> Result<Diff, HistoryError> {
    let field = field.map(FieldPath::parse).transpose()?;
    let before = compared(pick(versions, start)?, field.as_ref())?;
    let after = compared(pick(versions, end)?, field.as_ref())?;
    let patch = json_patch::diff(&before, &after);
    let old: BTreeMap<String, Value> = leaves(&before).into_iter().collect();
    let new: BTreeMap<String, Value> = leaves(&after).into_iter().collect();
    let prefix = field.as_ref().map(|f| f.text.clone()).unwrap_or_default();
    let named = |p: &str| match (prefix.is_empty(), p.is_empty()) {
        (true, _) => p.to_string(),
        (false, true) => prefix.clone(),
        (false, false) if p.starts_with('[') => format!("{prefix}{p}"),
        (false, false) => format!("{prefix}.{p}"),
    };
    let mut changes = Vec::new();
    for (path, b) in &old {
        match new.get(path) {
            Some(a) if a == b => {}
            a => changes.push(Change {
                path: named(path),
                before: Some(b.clone()),
                after: a.cloned(),
            }),
        }
    }
    for (path, a) in &new {
        if !old.contains_key(path) {
            changes.push(Change {
                path: named(path),
                before: None,
                after: Some(a.clone()),
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Diff {
        start,
        end,
        field: field.map(|f| f.text),
        patch,
        changes,
        before,
        after,
    })
}

/// One condition of a bisect: the field's value, as text, equals `value`.
#[derive(Debug, Clone)]
pub struct Condition {
    pub field: FieldPath,
    pub value: String,
    /// Searches for text of which one appears in any object's JSON where
    /// this holds.
    needles: Vec<memchr::memmem::Finder<'static>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub ordinal: usize,
    /// `entered`: from here every condition holds; `left`: from here one no longer does.
    pub state: &'static str,
    #[serde(rename = "resourceVersion")]
    pub resource_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bisect {
    /// The first version where every condition holds.
    pub first: Option<usize>,
    pub transitions: Vec<Transition>,
}

pub fn conditions(pairs: &[(String, String)]) -> Result<Vec<Condition>, HistoryError> {
    if pairs.is_empty() {
        return Err(HistoryError::Bad(
            "bisect needs field and value (and may take field2 and value2, and so on)".into(),
        ));
    }
    pairs
        .iter()
        .map(|(f, v)| {
            let field = FieldPath::parse(f)?;
            Ok(Condition {
                needles: field
                    .needles(v)
                    .iter()
                    .map(|n| memchr::memmem::Finder::new(n).into_owned())
                    .collect(),
                field,
                value: v.clone(),
            })
        })
        .collect()
}

impl Condition {
    fn holds_in(&self, object: &Value) -> bool {
        self.field
            .resolve(object)
            .is_some_and(|x| scalar_text(x) == self.value)
    }

    /// Whether the condition may hold in an object's JSON text as the
    /// store writes it: false only where it cannot.
    pub fn may_hold_in_text(&self, object: &[u8]) -> bool {
        self.needles.is_empty() || self.needles.iter().any(|n| n.find(object).is_some())
    }

    /// The same as on the decoded object, on its JSON text, read without
    /// the search (which [`all_hold_in_text`] runs first).
    fn probe_holds_in_text(&self, object: &[u8]) -> bool {
        self.field
            .resolve_text(object)
            .is_some_and(|x| scalar_text(&x) == self.value)
    }
}

pub fn bisect(versions: &[Numbered], conditions: &[Condition]) -> Bisect {
    bisect_states(versions.iter().map(|v| {
        let holds = v
            .version
            .object
            .as_ref()
            .is_some_and(|o| conditions.iter().all(|c| c.holds_in(o)));
        (v, holds)
    }))
}

/// Whether every condition holds in an object's JSON text as the store
/// writes it. Every condition's search comes first: it is far cheaper than
/// a probe, and rules out most objects.
pub fn all_hold_in_text(conditions: &[Condition], object: &[u8]) -> bool {
    conditions.iter().all(|c| c.may_hold_in_text(object))
        && conditions.iter().all(|c| c.probe_holds_in_text(object))
}

/// Bisect over the versions in order, each with whether every condition
/// holds there.
pub fn bisect_states<'a>(states: impl Iterator<Item = (&'a Numbered, bool)>) -> Bisect {
    let mut transitions = Vec::new();
    let mut before = false;
    for (v, now) in states {
        if now != before {
            transitions.push(Transition {
                ordinal: v.ordinal,
                state: if now { "entered" } else { "left" },
                resource_version: v.version.resource_version.clone(),
            });
        }
        before = now;
    }
    Bisect {
        first: transitions.first().map(|t| t.ordinal),
        transitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{Source, Who};
    use serde_json::json;

    fn version(uid: &str, rv: &str, time: &str, spec: Value) -> Version {
        Version {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: uid.into(),
            resource_version: rv.into(),
            generation: None,
            time: time.into(),
            verb: "patch".into(),
            source: Source::Write,
            deleted: false,
            partial: false,
            who: Who::default(),
            record: format!("r{rv}"),
            object: Some(json!({"metadata": {"name": "web", "resourceVersion": rv}, "spec": spec})),
        }
    }

    fn image(i: &str) -> Value {
        json!({"template": {"spec": {"containers": [{"name": "web", "image": i}]}}})
    }

    fn history() -> Vec<Numbered> {
        number(vec![
            version("u1", "30", "2026-11-30T10:00:03Z", image("nginx:1.27")),
            version("u1", "9", "2026-11-30T10:00:01Z", image("nginx:1.25")),
            version("u1", "12", "2026-11-30T10:00:02Z", image("nginx:1.26")),
            version("u2", "50", "2026-11-30T11:00:00Z", image("nginx:1.25")),
            Version {
                object: None,
                deleted: true,
                ..version("u1", TOMBSTONE_RV, "2026-11-30T10:00:04Z", Value::Null)
            },
        ])
    }

    #[test]
    fn versions_order_by_lineage_then_resource_version_with_tombstones_last() {
        let h = history();
        let order: Vec<(usize, &str)> = h
            .iter()
            .map(|n| (n.lineage, n.version.resource_version.as_str()))
            .collect();
        assert_eq!(
            order,
            [(1, "9"), (1, "12"), (1, "30"), (1, TOMBSTONE_RV), (2, "50")]
        );
        assert_eq!(h[4].ordinal, 5);
    }

    #[test]
    fn diff_of_a_nested_field_names_the_list_item_by_merge_key() {
        let h = history();
        let d = diff(
            &h,
            1,
            3,
            Some("spec.template.spec.containers[name=web].image"),
        )
        .unwrap();
        assert_eq!(
            d.changes,
            [Change {
                path: "spec.template.spec.containers[name=web].image".into(),
                before: Some(json!("nginx:1.25")),
                after: Some(json!("nginx:1.27"))
            }]
        );
        assert_eq!(
            serde_json::to_value(&d.patch).unwrap(),
            json!([{"op": "replace", "path": "", "value": "nginx:1.27"}])
        );
        let whole = diff(&h, 1, 2, None).unwrap();
        let paths: Vec<&str> = whole.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.resourceVersion",
                "spec.template.spec.containers[name=web].image"
            ]
        );
        assert!(
            serde_json::to_string(&whole.patch)
                .unwrap()
                .contains("/spec/template/spec/containers/0/image")
        );
    }

    #[test]
    fn diff_errors_name_the_problem() {
        let h = history();
        assert_eq!(
            diff(&h, 1, 9, None).unwrap_err(),
            HistoryError::NoVersion(9, 5)
        );
        assert_eq!(diff(&h, 1, 4, None).unwrap_err(), HistoryError::NoObject(4));
        assert!(matches!(
            diff(&h, 1, 2, Some("spec..x")),
            Err(HistoryError::Path(_))
        ));
    }

    #[test]
    fn bisect_finds_the_first_version_and_every_transition() {
        let h = history();
        let c = conditions(&[(
            "spec.template.spec.containers[name=web].image".into(),
            "nginx:1.25".into(),
        )])
        .unwrap();
        let b = bisect(&h, &c);
        assert_eq!(b.first, Some(1));
        let states: Vec<(usize, &str)> =
            b.transitions.iter().map(|t| (t.ordinal, t.state)).collect();
        assert_eq!(states, [(1, "entered"), (2, "left"), (5, "entered")]);
        let c = conditions(&[
            (
                "/spec/template/spec/containers/0/image".into(),
                "nginx:1.27".into(),
            ),
            ("metadata.name".into(), "web".into()),
        ])
        .unwrap();
        assert_eq!(bisect(&h, &c).first, Some(3));
        assert!(conditions(&[]).is_err());
    }

    #[test]
    fn bisect_over_json_text_agrees_with_bisect_over_decoded_objects() {
        let decoded = history();
        let texts: Vec<Option<Vec<u8>>> = decoded
            .iter()
            .map(|n| {
                n.version
                    .object
                    .as_ref()
                    .map(|o| o.to_string().into_bytes())
            })
            .collect();
        let bisect_texts = |texts: &[Option<Vec<u8>>], c: &[Condition]| {
            bisect_states(
                decoded
                    .iter()
                    .zip(texts)
                    .map(|(n, text)| (n, text.as_deref().is_some_and(|o| all_hold_in_text(c, o)))),
            )
        };
        for pairs in [
            vec![(
                "spec.template.spec.containers[name=web].image",
                "nginx:1.25",
            )],
            vec![("/spec/template/spec/containers/0/image", "nginx:1.27")],
            vec![
                (
                    "spec.template.spec.containers[name=web].image",
                    "nginx:1.26",
                ),
                ("metadata.resourceVersion", "12"),
            ],
            vec![("spec.replicas", "3")],
            // Quoted in the text: compared after decoding the field.
            vec![(
                "spec.template.spec.containers[name=web]",
                r#"{"image":"nginx:1.26","name":"web"}"#,
            )],
        ] {
            let c = conditions(
                &pairs
                    .iter()
                    .map(|(f, v)| (f.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let (by_text, decoded) = (bisect_texts(&texts, &c), bisect(&decoded, &c));
            assert_eq!(by_text.first, decoded.first, "{pairs:?}");
            assert_eq!(by_text.transitions, decoded.transitions, "{pairs:?}");
        }
        let first_26 = conditions(&[(
            "spec.template.spec.containers[name=web].image".into(),
            "nginx:1.26".into(),
        )])
        .unwrap();
        assert_eq!(bisect_texts(&texts, &first_26).first, Some(2));
        let whole_container = conditions(&[(
            "spec.template.spec.containers[name=web]".into(),
            r#"{"image":"nginx:1.26","name":"web"}"#.into(),
        )])
        .unwrap();
        assert_eq!(bisect_texts(&texts, &whole_container).first, Some(2));
    }

    #[test]
    fn spec_of_a_kind_without_spec_is_its_own_fields() {
        let mut cm = version("u9", "1", "t", Value::Null);
        cm.object = Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}),
        );
        assert_eq!(spec_of(&cm), Some(json!({"data": {"k": "v"}})));
    }
}
