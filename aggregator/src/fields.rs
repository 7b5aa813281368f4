//! Field-level coverage: which fields of an operation's request body were
//! set, out of the fields its schema names. Fields are dotted paths, with
//! list items collapsed (`spec.template.spec.containers[].image`); a map (a
//! schema with `additionalProperties`, such as `metadata.labels`) is one
//! field, whatever keys it holds.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// How deep a schema is walked: Kubernetes' deepest built-in request bodies
/// stay well within it, and recursive schemas (JSONSchemaProps) stop here.
const MAX_DEPTH: usize = 14;
/// At most this many fields are taken from one request body.
const MAX_FIELDS_PER_BODY: usize = 1000;

/// The fields of one request schema.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchemaFields {
    pub all: Vec<String>,
    set: HashSet<String>,
}

impl SchemaFields {
    fn new(all: Vec<String>) -> SchemaFields {
        let set = all.iter().cloned().collect();
        SchemaFields { all, set }
    }

    /// The schema field a body's leaf path belongs to: itself, or the
    /// nearest enclosing field (a map's keys, or a free-form object, belong
    /// to it). `None` when the schema does not know it.
    pub fn field_of(&self, raw: &str) -> Option<String> {
        let mut at = raw;
        loop {
            if self.set.contains(at) {
                return Some(at.to_string());
            }
            let cut = at.rfind(['.', '['])?;
            at = &at[..cut];
        }
    }
}

/// The request body's schema of an OpenAPI v3 operation (or v2, through its
/// body parameter), resolved within `doc`.
pub fn request_schema<'a>(doc: &'a Value, op: &'a Value) -> Option<&'a Value> {
    let schema = match op.get("requestBody") {
        Some(body) => {
            let content = body.get("content")?;
            ["application/json", "*/*"]
                .iter()
                .find_map(|t| content.get(*t))
                .or_else(|| content.as_object()?.values().next())?
                .get("schema")?
        }
        None => op
            .get("parameters")?
            .as_array()?
            .iter()
            .find(|p| p["in"] == "body")?
            .get("schema")?,
    };
    Some(resolve(doc, schema))
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut at = schema;
    for _ in 0..8 {
        if let Some(r) = at.get("$ref").and_then(Value::as_str) {
            let pointer = r.trim_start_matches('#');
            match doc.pointer(pointer) {
                Some(target) => at = target,
                None => return at,
            }
        } else if let Some(one) = at
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
        {
            at = &one[0];
        } else {
            return at;
        }
    }
    at
}

/// Every field a schema names.
pub fn schema_fields(doc: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(doc, schema, String::new(), 0, &mut Vec::new(), &mut out);
    out
}

fn walk(
    doc: &Value,
    schema: &Value,
    at: String,
    depth: usize,
    refs: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    let reference = schema
        .get("$ref")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(r) = &reference {
        if refs.contains(r) {
            out.push(at);
            return;
        }
        refs.push(r.clone());
    }
    let schema = resolve(doc, schema);
    let properties = schema.get("properties").and_then(Value::as_object);
    let items = schema.get("items");
    match (properties, items) {
        (Some(props), _) if depth < MAX_DEPTH && !props.is_empty() => {
            for (name, sub) in props {
                let next = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                walk(doc, sub, next, depth + 1, refs, out);
            }
        }
        (_, Some(items)) if depth < MAX_DEPTH && !at.is_empty() => {
            walk(doc, items, format!("{at}[]"), depth + 1, refs, out);
        }
        _ if !at.is_empty() => out.push(at),
        _ => {}
    }
    if reference.is_some() {
        refs.pop();
    }
}

/// The fields a request of `method` set with `body`: a write's JSON object
/// body, as interceptor records and audit events carry it.
pub fn written_fields(method: &str, body: Option<&Value>) -> Vec<String> {
    match body {
        Some(body) if body.is_object() && matches!(method, "POST" | "PUT" | "PATCH") => {
            body_leaves(body)
        }
        _ => Vec::new(),
    }
}

/// The leaf paths a request body sets, list items collapsed.
pub fn body_leaves(body: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    leaves(body, String::new(), &mut out);
    out.into_iter().take(MAX_FIELDS_PER_BODY).collect()
}

fn leaves(v: &Value, at: String, out: &mut BTreeSet<String>) {
    if out.len() >= MAX_FIELDS_PER_BODY {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, sub) in m {
                let next = if at.is_empty() {
                    k.clone()
                } else {
                    [&*at, ".", k].concat()
                };
                leaves(sub, next, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                leaves(item, [&*at, "[]"].concat(), out);
            }
        }
        _ if !at.is_empty() => {
            out.insert(at);
        }
        _ => {}
    }
}

/// Field lists by schema, shared by the operations that take the same body
/// (while the documents are read, a schema is known by its address).
#[derive(Default)]
pub struct SchemaCache {
    by_schema: HashMap<usize, Arc<SchemaFields>>,
}

impl SchemaCache {
    pub fn fields_of(&mut self, doc: &Value, op: &Value) -> Option<Arc<SchemaFields>> {
        let schema = request_schema(doc, op)?;
        // A Patch body (`type: object`, no properties) names no fields.
        schema.get("properties")?;
        let key = schema as *const Value as usize;
        if let Some(cached) = self.by_schema.get(&key) {
            return Some(cached.clone());
        }
        let fields = Arc::new(SchemaFields::new(schema_fields(doc, schema)));
        self.by_schema.insert(key, fields.clone());
        Some(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Value {
        let v3: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../../shared/k8s-openapi/v1.35/v3/apis__apps__v1_openapi.json",
                apiwitness_runtime::manifest_dir!()
            ))
            .expect("the reference spec"),
        )
        .unwrap();
        v3
    }

    #[test]
    fn a_deployments_fields_come_from_its_schema_with_maps_and_lists_collapsed() {
        let doc = spec();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        let fields = SchemaFields::new(schema_fields(&doc, request_schema(&doc, op).unwrap()));
        for f in [
            "spec.replicas",
            "metadata.labels",
            "spec.template.spec.containers[].image",
            "spec.template.spec.containers[].env[].name",
        ] {
            assert!(
                fields.set.contains(f),
                "{f} missing from {} fields",
                fields.all.len()
            );
        }
        assert!(fields.all.len() > 300, "{}", fields.all.len());
        assert_eq!(
            fields.field_of("metadata.labels.app"),
            Some("metadata.labels".into())
        );
        assert_eq!(
            fields.field_of("spec.template.spec.containers[].image"),
            Some("spec.template.spec.containers[].image".into())
        );
        assert_eq!(fields.field_of("spec.nonsense"), None);
    }

    #[test]
    fn a_body_gives_its_leaves() {
        let body = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}}, "empty": {}});
        assert_eq!(
            body_leaves(&body),
            [
                "empty",
                "metadata.labels.app",
                "metadata.name",
                "spec.replicas",
                "spec.template.spec.containers[].image",
                "spec.template.spec.containers[].name"
            ]
        );
    }

    #[test]
    fn a_patch_body_names_no_fields() {
        let doc = spec();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(SchemaCache::default().fields_of(&doc, op).is_none());
    }
}
