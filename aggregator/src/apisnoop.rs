//! A report in APISnoop's per-endpoint coverage format (the JSON of its
//! `resources/coverage/<release>.json`), so that tools and dashboards built
//! for APISnoop read apiwitness's coverage as they are.
//!
//! APISnoop learns which e2e test made a call from the test's User-Agent;
//! apiwitness knows each call's client by its User-Agent too. So a client
//! is a "test", `tested` means some client hit the endpoint, and
//! `conf_tested` means a client whose User-Agent names a `[Conformance]`
//! test did, as APISnoop decides it.

use crate::report::Report;
use crate::spec::{OperationIndex, level_name};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const CONFORMANCE_TAG: &str = "[Conformance]";

/// APISnoop's category of a path: its group without `.k8s.io`, in camel
/// case (`rbac.authorization.k8s.io` is `rbacAuthorization`), `core` for the
/// core group, and the first segment for a path outside `/api` and `/apis`.
pub fn category(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or("");
    let group = match first {
        "api" => return "core".into(),
        "apis" => segments.next().unwrap_or(""),
        other => return other.trim_start_matches('.').to_string(),
    };
    let mut out = String::new();
    for (i, word) in group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if i == 0 {
            out.push_str(word);
        } else {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// Every operation of the spec, hit or not, with the report's clients.
pub fn document(report: &Report, index: &OperationIndex, release: Option<&str>) -> Value {
    let hit: BTreeMap<&str, &BTreeSet<String>> = report
        .operations
        .iter()
        .filter(|o| o.hits > 0)
        .map(|o| (o.operation_id.as_str(), &o.clients))
        .collect();
    let release = release.map(Value::from).unwrap_or(Value::Null);
    let mut operations: Vec<_> = index.operations().collect();
    operations.sort_by(|a, b| (&a.level, &a.operation_id).cmp(&(&b.level, &b.operation_id)));
    let mut clients = BTreeSet::new();
    let endpoints: Vec<Value> = operations
        .iter()
        .map(|op| {
            let by = hit.get(op.operation_id.as_str());
            let tests: Vec<&String> = by.map(|c| c.iter().collect()).unwrap_or_default();
            clients.extend(tests.iter().map(|c| c.as_str()));
            json!({
                "endpoint": op.operation_id,
                "path": op.path,
                "kind": text_or_null(&op.kind),
                "group": if op.kind.is_empty() { Value::Null } else { Value::from(op.group.as_str()) },
                "version": text_or_null(&op.version),
                "level": level_name(&op.level),
                "category": category(&op.path),
                "action": text_or_null(&op.action),
                "description": op.description,
                "release": release,
                "tested": by.is_some(),
                "conf_tested": tests.iter().any(|t| t.contains(CONFORMANCE_TAG)),
                "tests": tests,
            })
        })
        .collect();
    let tests: Vec<Value> = clients
        .iter()
        .map(|client| {
            json!({
                "test": client,
                "testname": null,
                "file": null,
                "release": release,
                "conformance_test": client.contains(CONFORMANCE_TAG),
                "promotion_release": null,
            })
        })
        .collect();
    json!({ "spec": null, "tests": tests, "endpoints": endpoints })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Conformance;
    use crate::store::{Hit, Scope};

    #[test]
    fn categories_are_apisnoops() {
        assert_eq!(category("/api/v1/namespaces/{namespace}/pods"), "core");
        assert_eq!(category("/apis/apps/v1/deployments"), "apps");
        assert_eq!(
            category("/apis/rbac.authorization.k8s.io/v1/roles"),
            "rbacAuthorization"
        );
        assert_eq!(
            category("/apis/internal.apiserver.k8s.io/v1alpha1/storageversions"),
            "internalApiserver"
        );
        assert_eq!(
            category("/apis/postgrescontroller.kubeplus/v1/"),
            "postgrescontrollerKubeplus"
        );
        assert_eq!(category("/version/"), "version");
    }

    #[test]
    fn every_endpoint_is_listed_and_a_conformance_client_marks_conf_tested() {
        let doc = serde_json::json!({"paths": {
            "/api/v1/namespaces/{namespace}/configmaps": {
                "get": {"operationId": "listCoreV1NamespacedConfigMap", "description": "list or watch objects of kind ConfigMap",
                        "x-kubernetes-action": "list",
                        "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "ConfigMap"}},
                "post": {"operationId": "createCoreV1NamespacedConfigMap", "description": "create a ConfigMap",
                         "x-kubernetes-action": "post",
                         "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": "ConfigMap"}}},
            "/apis/apps/v1beta9/": {"get": {"operationId": "getAppsV1beta9APIResources", "description": "get available resources"}}}});
        let index =
            OperationIndex::from_documents([&doc], &Conformance::default(), &Default::default());
        let hits = [Hit {
            method: "GET".into(),
            template: "/api/v1/namespaces/{namespace}/configmaps".into(),
            status: 200,
            client: "e2e.test/v1.35.4 -- [sig-node] ConfigMap should list [Conformance]".into(),
            hits: 2,
            first_seen: "2026-11-30T10:00:00Z".into(),
            last_seen: "2026-11-30T10:00:00Z".into(),
        }];
        let report = crate::report::build(Scope::default(), &hits, &[], &index, 0);
        let out = document(&report, &index, Some("1.35.4"));
        let endpoints = out["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 3);
        let list = endpoints
            .iter()
            .find(|e| e["endpoint"] == "listCoreV1NamespacedConfigMap")
            .unwrap();
        assert_eq!(list["tested"], true);
        assert_eq!(list["conf_tested"], true);
        assert_eq!(list["category"], "core");
        assert_eq!(list["group"], "");
        assert_eq!(list["kind"], "ConfigMap");
        assert_eq!(list["release"], "1.35.4");
        assert_eq!(
            list["description"],
            "list or watch objects of kind ConfigMap"
        );
        let create = endpoints
            .iter()
            .find(|e| e["endpoint"] == "createCoreV1NamespacedConfigMap")
            .unwrap();
        assert_eq!(
            (
                create["tested"].as_bool(),
                create["tests"].as_array().map(Vec::len)
            ),
            (Some(false), Some(0))
        );
        let discovery = endpoints.last().unwrap();
        assert_eq!(discovery["level"], "beta");
        assert_eq!(discovery["kind"], Value::Null);
        assert_eq!(discovery["group"], Value::Null);
        assert_eq!(out["tests"][0]["conformance_test"], true);
    }
}
