//! The apiserver's operations, from its OpenAPI documents (v3 per
//! group-version, or v2), indexed by method and path template, and classified:
//! level, deprecation, conformance eligibility, CRD or aggregated.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Ordered as reports list them: stable first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Stable,
    Beta,
    Alpha,
}

impl Level {
    /// From the version segment of a path: `v1beta2` is beta, `v2alpha1` alpha.
    pub fn of_path(path: &str) -> Level {
        let version = path
            .split('/')
            .find(|s| {
                s.len() > 1 && s.starts_with('v') && s[1..2].chars().all(|c| c.is_ascii_digit())
            })
            .unwrap_or("");
        if version.contains("alpha") {
            Level::Alpha
        } else if version.contains("beta") {
            Level::Beta
        } else {
            Level::Stable
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Operation {
    pub operation_id: String,
    pub method: String,
    pub path: String,
    pub action: String,
    /// The spec's description of the operation.
    pub description: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub level: Level,
    pub deprecated: bool,
    /// Stable, not deprecated, and not on Kubernetes' ineligible list.
    pub eligible: bool,
    /// On Kubernetes' list of operations pending eligibility.
    pub pending_eligible: bool,
    /// Served for a CustomResourceDefinition.
    pub crd: bool,
    /// Served by an aggregated API (an APIService backed by a Service).
    pub aggregated: bool,
    /// The fields of its request body's schema; for a PATCH, those of the
    /// PUT of the same path (a patch sets fields of the object).
    #[serde(skip)]
    pub request_fields: Option<std::sync::Arc<crate::fields::SchemaFields>>,
}

/// Conformance lists, by operationId.
#[derive(Debug, Clone, Default)]
pub struct Conformance {
    pub ineligible: HashSet<String>,
    pub pending: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("could not read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not an OpenAPI document: {error}")]
    Parse { path: String, error: String },
    #[error("no OpenAPI document in {0} (expected v3/*.json or swagger.json)")]
    Empty(String),
    #[error("the apiserver's spec could not be read: {0}")]
    Live(String),
}

impl Conformance {
    pub fn load(dir: &Path) -> Result<Conformance, SpecError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| SpecError::Read {
                path: path.display().to_string(),
                error,
            })
        };
        let ineligible: Value =
            serde_json::from_str(&read("ineligible_endpoints.json")?).map_err(|e| {
                SpecError::Parse {
                    path: "ineligible_endpoints.json".into(),
                    error: e.to_string(),
                }
            })?;
        let ineligible = ineligible
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
            .collect();
        // A plain YAML list of operationIds: one `- name` per line.
        let pending = read("pending_eligible_endpoints.yaml")?
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(|s| s.trim().to_string())
            .collect();
        Ok(Conformance {
            ineligible,
            pending,
        })
    }
}

/// Which groups are served for CRDs and by aggregated APIs.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `group/plural` of each CRD.
    pub crd_resources: HashSet<String>,
    /// `group/version` of each APIService with a Service behind it.
    pub aggregated: HashSet<String>,
}

/// Every operation of a spec, by `(METHOD, template)`.
#[derive(Debug, Default)]
pub struct OperationIndex {
    by_key: HashMap<(String, String), Operation>,
    methods_by_path: HashMap<String, Vec<String>>,
}

/// Why a request matched no operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    NotInSpec,
    MethodNotAllowed,
}

impl OperationIndex {
    /// Builds the index from OpenAPI documents (v3 or v2; each has `paths`).
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = &'a Value>,
        conformance: &Conformance,
        origins: &Origins,
    ) -> OperationIndex {
        let mut index = OperationIndex::default();
        let mut schemas = crate::fields::SchemaCache::default();
        for doc in documents {
            let Some(paths) = doc["paths"].as_object() else {
                continue;
            };
            for (path, item) in paths {
                let Some(item) = item.as_object() else {
                    continue;
                };
                for (method, op) in item {
                    if !matches!(
                        method.as_str(),
                        "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
                    ) {
                        continue;
                    }
                    let Some(operation_id) = op["operationId"].as_str() else {
                        continue;
                    };
                    let gvk = &op["x-kubernetes-group-version-kind"];
                    let group = gvk["group"].as_str().unwrap_or("").to_string();
                    let version = gvk["version"].as_str().unwrap_or("").to_string();
                    let level = Level::of_path(path);
                    let deprecated = op["deprecated"].as_bool().unwrap_or(false)
                        || op["description"]
                            .as_str()
                            .is_some_and(|d| d.to_ascii_lowercase().contains("deprecated"));
                    let (crd, aggregated) = origin_of(path, origins);
                    let eligible = level == Level::Stable
                        && !deprecated
                        && !crd
                        && !aggregated
                        && !conformance.ineligible.contains(operation_id);
                    let method = method.to_ascii_uppercase();
                    index
                        .methods_by_path
                        .entry(path.clone())
                        .or_default()
                        .push(method.clone());
                    index.by_key.insert(
                        (method.clone(), path.clone()),
                        Operation {
                            operation_id: operation_id.to_string(),
                            method,
                            path: path.clone(),
                            action: op["x-kubernetes-action"].as_str().unwrap_or("").to_string(),
                            description: op["description"].as_str().unwrap_or("").to_string(),
                            group,
                            version,
                            kind: gvk["kind"].as_str().unwrap_or("").to_string(),
                            level,
                            deprecated,
                            eligible,
                            pending_eligible: conformance.pending.contains(operation_id),
                            crd,
                            aggregated,
                            request_fields: schemas.fields_of(doc, op),
                        },
                    );
                }
            }
        }
        let puts: HashMap<String, std::sync::Arc<crate::fields::SchemaFields>> = index
            .by_key
            .iter()
            .filter(|((m, _), _)| m == "PUT")
            .filter_map(|((_, p), op)| Some((p.clone(), op.request_fields.clone()?)))
            .collect();
        for ((method, path), op) in index.by_key.iter_mut() {
            if method == "PATCH" && op.request_fields.is_none() {
                op.request_fields = puts.get(path).cloned();
            }
        }
        index
    }

    /// Reads `v3/*.json` (preferred) or `swagger.json` from a directory.
    pub fn from_dir(dir: &Path, conformance: &Conformance) -> Result<OperationIndex, SpecError> {
        let docs = read_dir_documents(dir)?;
        Ok(OperationIndex::from_documents(
            docs.iter(),
            conformance,
            &Origins::default(),
        ))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.by_key.values()
    }

    /// The operation of `method` on `template`. Discovery paths appear in the
    /// spec with a trailing slash (`/apis/apps/v1/`), so both forms are tried.
    pub fn lookup(&self, method: &str, template: &str) -> Result<&Operation, Unmatched> {
        let method = if method == "HEAD" { "GET" } else { method };
        for candidate in [
            template.to_string(),
            format!("{}/", template.trim_end_matches('/')),
        ] {
            if let Some(op) = self.by_key.get(&(method.to_string(), candidate.clone())) {
                return Ok(op);
            }
            if self.methods_by_path.contains_key(&candidate) {
                return Err(Unmatched::MethodNotAllowed);
            }
        }
        Err(Unmatched::NotInSpec)
    }

    /// Totals per level, and of eligible operations.
    pub fn totals(&self) -> BTreeMap<&'static str, usize> {
        let mut totals = BTreeMap::new();
        for op in self.by_key.values() {
            *totals.entry(level_name(&op.level)).or_default() += 1;
            if op.eligible {
                *totals.entry("eligible").or_default() += 1;
            }
        }
        totals
    }
}

pub fn level_name(level: &Level) -> &'static str {
    match level {
        Level::Stable => "stable",
        Level::Beta => "beta",
        Level::Alpha => "alpha",
    }
}

fn origin_of(path: &str, origins: &Origins) -> (bool, bool) {
    let mut parts = path.trim_start_matches('/').split('/');
    if parts.next() != Some("apis") {
        return (false, false);
    }
    let (Some(group), Some(version)) = (parts.next(), parts.next()) else {
        return (false, false);
    };
    let rest: Vec<&str> = parts.collect();
    let plural = match rest.as_slice() {
        ["watch", "namespaces", _, plural, ..] | ["namespaces", _, plural, ..] => *plural,
        ["watch", plural, ..] | [plural, ..] => *plural,
        [] => "",
    };
    let crd = origins.crd_resources.contains(&format!("{group}/{plural}"));
    let aggregated = origins.aggregated.contains(&format!("{group}/{version}"));
    (crd, aggregated)
}

fn read_dir_documents(dir: &Path) -> Result<Vec<Value>, SpecError> {
    let parse = |path: &Path| -> Result<Value, SpecError> {
        let text = std::fs::read(path).map_err(|error| SpecError::Read {
            path: path.display().to_string(),
            error,
        })?;
        serde_json::from_slice(&text).map_err(|e| SpecError::Parse {
            path: path.display().to_string(),
            error: e.to_string(),
        })
    };
    let v3 = dir.join("v3");
    let mut docs = Vec::new();
    if v3.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(&v3)
            .map_err(|error| SpecError::Read {
                path: v3.display().to_string(),
                error,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            docs.push(parse(&f)?);
        }
    } else if dir.join("swagger.json").is_file() {
        docs.push(parse(&dir.join("swagger.json"))?);
    }
    if docs.is_empty() {
        return Err(SpecError::Empty(dir.display().to_string()));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shared() -> PathBuf {
        PathBuf::from(apiwitness_runtime::manifest_dir!()).join("../../shared/k8s-openapi/v1.35")
    }

    fn index() -> OperationIndex {
        let conformance = Conformance::load(&shared()).unwrap();
        OperationIndex::from_dir(&shared(), &conformance).unwrap()
    }

    #[test]
    fn the_v135_spec_indexes_every_operation_once() {
        let idx = index();
        assert!(idx.len() > 1000, "{}", idx.len());
        let op = idx
            .lookup("GET", "/api/v1/namespaces/{namespace}/configmaps")
            .unwrap();
        assert_eq!(op.operation_id, "listCoreV1NamespacedConfigMap");
        assert_eq!((op.level.clone(), op.eligible), (Level::Stable, true));
        let op = idx
            .lookup(
                "PATCH",
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
            )
            .unwrap();
        assert_eq!(op.operation_id, "patchAppsV1NamespacedDeploymentScale");
        assert_eq!(
            idx.lookup("GET", "/apis/apps/v1").unwrap().operation_id,
            "getAppsV1APIResources"
        );
        assert!(matches!(
            idx.lookup("PUT", "/api/v1/namespaces/{namespace}/configmaps"),
            Err(Unmatched::MethodNotAllowed)
        ));
        assert!(matches!(
            idx.lookup("GET", "/apis/nope.example/v1/things"),
            Err(Unmatched::NotInSpec)
        ));
    }

    #[test]
    fn levels_and_eligibility() {
        let idx = index();
        let alpha = idx
            .operations()
            .find(|o| o.path.contains("/v1alpha1/"))
            .unwrap();
        assert_eq!(alpha.level, Level::Alpha);
        assert!(!alpha.eligible);
        // On the ineligible list.
        let proxy = idx
            .operations()
            .find(|o| o.operation_id == "connectCoreV1DeleteNodeProxy")
            .unwrap();
        assert!(!proxy.eligible);
        assert_eq!(Level::of_path("/apis/autoscaling/v2/x"), Level::Stable);
        assert_eq!(
            Level::of_path("/apis/resource.k8s.io/v1beta2/x"),
            Level::Beta
        );
        let totals = idx.totals();
        assert!(totals["eligible"] < totals["stable"]);
    }

    #[test]
    fn crd_and_aggregated_origins() {
        let origins = Origins {
            crd_resources: ["example.com/widgets".to_string()].into(),
            aggregated: ["metrics.k8s.io/v1beta1".to_string()].into(),
        };
        assert_eq!(
            origin_of(
                "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}",
                &origins
            ),
            (true, false)
        );
        assert_eq!(
            origin_of("/apis/example.com/v1/watch/widgets", &origins),
            (true, false)
        );
        assert_eq!(
            origin_of("/apis/metrics.k8s.io/v1beta1/pods", &origins),
            (false, true)
        );
        assert_eq!(origin_of("/api/v1/pods", &origins), (false, false));
    }
}
