//! Field paths. A field is named by a JSON Pointer (`/spec/replicas`) or a
//! dotted path (`spec.template.spec.containers[name=web].image`), where a
//! list item is picked by index (`[0]`) or by a key's value (`[name=web]`),
//! as a strategic merge key names it.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
    /// The list item whose `key` is `value`.
    Select {
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub steps: Vec<Step>,
    /// As the user wrote it, for messages.
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad field path {path:?}: {why}")]
pub struct PathError {
    pub path: String,
    pub why: String,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let err = |why: &str| PathError {
            path: text.into(),
            why: why.into(),
        };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        let steps = if let Some(pointer) = text.strip_prefix('/') {
            pointer
                .split('/')
                .map(|t| {
                    let t = t.replace("~1", "/").replace("~0", "~");
                    match t.parse::<usize>() {
                        Ok(i) => Step::Index(i),
                        Err(_) => Step::Key(t),
                    }
                })
                .collect()
        } else {
            parse_dotted(text).map_err(|why| err(&why))?
        };
        if steps
            .iter()
            .any(|s| matches!(s, Step::Key(k) if k.is_empty()))
        {
            return Err(err("it has an empty field name"));
        }
        Ok(FieldPath {
            steps,
            text: text.into(),
        })
    }

    /// The value at this path, if the object has one.
    pub fn resolve<'a>(&self, object: &'a Value) -> Option<&'a Value> {
        let mut at = object;
        for step in &self.steps {
            at = match step {
                Step::Key(k) => match at {
                    Value::Object(m) => m.get(k)?,
                    // A pointer's number may be a map key.
                    _ => return None,
                },
                Step::Index(i) => match at {
                    Value::Array(a) => a.get(*i)?,
                    Value::Object(m) => m.get(&i.to_string())?,
                    _ => return None,
                },
                Step::Select { key, value } => at
                    .as_array()?
                    .iter()
                    .find(|item| item.get(key).is_some_and(|v| scalar_text(v) == *value))?,
            };
        }
        Some(at)
    }
}

fn parse_dotted(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut chars = text.chars().peekable();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !name.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut name)));
                } else if !matches!(steps.last(), Some(Step::Index(_) | Step::Select { .. })) {
                    return Err("it has an empty field name".into());
                }
            }
            '[' => {
                if !name.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut name)));
                }
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(c) => inner.push(c),
                        None => return Err("a '[' is not closed".into()),
                    }
                }
                steps.push(match inner.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Step::Select {
                        key: k.trim().into(),
                        value: v.trim().into(),
                    },
                    Some(_) => return Err(format!("[{inner}] has no key")),
                    // `[0]` is an index; `[app.kubernetes.io/name]` a map key
                    // that has dots in it.
                    None => match inner.trim().parse() {
                        Ok(i) => Step::Index(i),
                        Err(_) if !inner.is_empty() => Step::Key(inner),
                        Err(_) => return Err("[] names nothing".into()),
                    },
                });
            }
            ']' => return Err("a ']' has no '['".into()),
            c => name.push(c),
        }
    }
    if !name.is_empty() {
        steps.push(Step::Key(name));
    }
    Ok(steps)
}

/// A scalar as text: a string as it is, anything else as JSON.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The key that names the items of a list, where they all have one: the
/// common strategic merge keys, in the order Kubernetes' schemas use them.
fn merge_key(items: &[Value]) -> Option<&'static str> {
    [
        "name",
        "mountPath",
        "containerPort",
        "devicePath",
        "ip",
        "type",
        "topologyKey",
    ]
    .into_iter()
    .find(|key| {
        !items.is_empty()
            && items
                .iter()
                .all(|i| i.get(*key).is_some_and(|v| v.is_string() || v.is_number()))
    })
}

/// Every leaf of `value` as (dotted path, value), list items named by their
/// merge key where they have one.
pub fn leaves(value: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn walk(value: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if k.contains(['.', '[', ']']) {
                    format!("[{k}]")
                } else {
                    k.clone()
                };
                let next = if at.is_empty() || key.starts_with('[') {
                    format!("{at}{key}")
                } else {
                    format!("{at}.{key}")
                };
                walk(v, next, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let key = merge_key(a);
            for (i, v) in a.iter().enumerate() {
                let step = match key {
                    Some(k) => format!("[{k}={}]", scalar_text(&v[k])),
                    None => format!("[{i}]"),
                };
                walk(v, format!("{at}{step}"), out);
            }
        }
        leaf => out.push((at, leaf.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.27"}, {"name": "sidecar", "image": "envoy:1"}]}}}})
    }

    #[test]
    fn pointers_and_dotted_paths_find_the_same_field() {
        let d = deployment();
        assert_eq!(
            FieldPath::parse("/spec/replicas").unwrap().resolve(&d),
            Some(&json!(3))
        );
        assert_eq!(
            FieldPath::parse("spec.replicas").unwrap().resolve(&d),
            Some(&json!(3))
        );
        let by_key = FieldPath::parse("spec.template.spec.containers[name=web].image").unwrap();
        assert_eq!(by_key.resolve(&d), Some(&json!("nginx:1.27")));
        let by_index = FieldPath::parse("/spec/template/spec/containers/1/image").unwrap();
        assert_eq!(by_index.resolve(&d), Some(&json!("envoy:1")));
        assert_eq!(
            FieldPath::parse("spec.template.spec.containers[1].name")
                .unwrap()
                .resolve(&d),
            Some(&json!("sidecar"))
        );
        assert_eq!(FieldPath::parse("spec.nope").unwrap().resolve(&d), None);
    }

    #[test]
    fn bad_paths_say_why() {
        for bad in [
            "",
            "spec..replicas",
            "spec.containers[name=web",
            "spec]",
            "a[=x]",
            "a[]",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leaves_name_list_items_by_merge_key() {
        let paths: Vec<String> = leaves(&deployment()).into_iter().map(|(p, _)| p).collect();
        assert!(
            paths.contains(&"spec.template.spec.containers[name=web].image".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"spec.replicas".to_string()));
        let plain: Vec<String> = leaves(&json!({"args": ["a", "b"]}))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(plain, ["args[0]", "args[1]"]);
        let labelled = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        let (path, _) = leaves(&labelled).remove(0);
        assert_eq!(path, "metadata.labels[app.kubernetes.io/name]");
        assert_eq!(
            FieldPath::parse(&path).unwrap().resolve(&labelled),
            Some(&json!("web"))
        );
        // Every leaf path parses back to its own value.
        for (path, value) in leaves(&deployment()) {
            assert_eq!(
                FieldPath::parse(&path).unwrap().resolve(&deployment()),
                Some(&value),
                "{path}"
            );
        }
    }
}
