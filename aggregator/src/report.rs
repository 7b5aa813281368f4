//! Coverage reports: the stored hits mapped onto the spec's operations, with
//! totals per level and of eligible operations, the calls no operation
//! matches, and the drops that may hide some calls. Rendered as JSON, a
//! plain-text table, or JUnit XML.

use crate::spec::{OperationIndex, Unmatched, level_name};
use crate::store::{FieldHit, Hit, Scope, Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Text,
    Junit,
    /// APISnoop's per-endpoint coverage JSON.
    Apisnoop,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    pub hit: usize,
    pub total: usize,
    pub percent: f64,
}

/// `hit` of `total` in percent, to one decimal; 0 of nothing is 0.
fn percent(hit: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        (hit as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

impl Tally {
    fn new(hit: usize, total: usize) -> Tally {
        Tally {
            hit,
            total,
            percent: percent(hit, total),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationCoverage {
    pub operation_id: String,
    pub method: String,
    pub path: String,
    pub level: &'static str,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub action: String,
    pub deprecated: bool,
    pub eligible: bool,
    pub pending_eligible: bool,
    pub crd: bool,
    pub aggregated: bool,
    pub hits: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub first_seen: String,
    pub last_seen: String,
    pub clients: BTreeSet<String>,
    /// The fields its request bodies set, where it takes a body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldCoverage>,
}

/// The fields of an operation's request body that calls set, out of those
/// its schema names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldCoverage {
    pub hit: usize,
    pub total: usize,
    pub percent: f64,
    /// Each field set, with how many request bodies set it.
    pub set: BTreeMap<String, u64>,
    /// Paths the schema does not name (a custom resource that keeps unknown
    /// fields, or a field the server drops).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub unknown: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnknownCall {
    pub method: String,
    pub path: String,
    pub reason: Unmatched,
    pub hits: u64,
    pub statuses: BTreeMap<u16, u64>,
}

/// Hit and total operations per level, and of the conformance-eligible ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub stable: Tally,
    pub beta: Tally,
    pub alpha: Tally,
    pub eligible: Tally,
}

impl Summary {
    fn rows(&self) -> [(&'static str, &Tally); 4] {
        [
            ("stable", &self.stable),
            ("beta", &self.beta),
            ("alpha", &self.alpha),
            ("eligible", &self.eligible),
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scope: Scope,
    pub spec_operations: usize,
    pub summary: Summary,
    pub operations: Vec<OperationCoverage>,
    pub unknown: Vec<UnknownCall>,
    /// Records interceptors dropped (their queue was full); calls among them
    /// are missing from this report.
    pub dropped: u64,
    /// Eligible operations that nothing called (JUnit failures).
    #[serde(skip)]
    pub untested_eligible: Vec<(String, String, String)>,
    /// The Kubernetes release APISnoop's format names, when the reader gave
    /// it.
    #[serde(skip)]
    pub release: Option<String>,
}

pub fn build(
    scope: Scope,
    hits: &[Hit],
    fields: &[FieldHit],
    index: &OperationIndex,
    dropped: u64,
) -> Report {
    let mut covered: BTreeMap<String, OperationCoverage> = BTreeMap::new();
    let mut unknown: BTreeMap<(String, String), UnknownCall> = BTreeMap::new();
    for hit in hits {
        match index.lookup(&hit.method, &hit.template) {
            Ok(op) => {
                let entry =
                    covered
                        .entry(op.operation_id.clone())
                        .or_insert_with(|| OperationCoverage {
                            operation_id: op.operation_id.clone(),
                            method: op.method.clone(),
                            path: op.path.clone(),
                            level: level_name(&op.level),
                            group: op.group.clone(),
                            version: op.version.clone(),
                            kind: op.kind.clone(),
                            action: op.action.clone(),
                            deprecated: op.deprecated,
                            eligible: op.eligible,
                            pending_eligible: op.pending_eligible,
                            crd: op.crd,
                            aggregated: op.aggregated,
                            hits: 0,
                            statuses: BTreeMap::new(),
                            first_seen: hit.first_seen.clone(),
                            last_seen: hit.last_seen.clone(),
                            clients: BTreeSet::new(),
                            fields: None,
                        });
                entry.hits += hit.hits;
                *entry.statuses.entry(hit.status).or_default() += hit.hits;
                if hit.first_seen < entry.first_seen {
                    entry.first_seen = hit.first_seen.clone();
                }
                if hit.last_seen > entry.last_seen {
                    entry.last_seen = hit.last_seen.clone();
                }
                if !hit.client.is_empty() {
                    entry.clients.insert(hit.client.clone());
                }
            }
            Err(reason) => {
                let entry = unknown
                    .entry((hit.method.clone(), hit.template.clone()))
                    .or_insert_with(|| UnknownCall {
                        method: hit.method.clone(),
                        path: hit.template.clone(),
                        reason,
                        hits: 0,
                        statuses: BTreeMap::new(),
                    });
                entry.hits += hit.hits;
                *entry.statuses.entry(hit.status).or_default() += hit.hits;
            }
        }
    }

    let totals = index.totals();
    let tally = |name: &str, hit: usize| Tally::new(hit, totals.get(name).copied().unwrap_or(0));
    let at_level = |level: &str| covered.values().filter(|o| o.level == level).count();
    let summary = Summary {
        stable: tally("stable", at_level("stable")),
        beta: tally("beta", at_level("beta")),
        alpha: tally("alpha", at_level("alpha")),
        eligible: tally("eligible", covered.values().filter(|o| o.eligible).count()),
    };
    let mut untested_eligible: Vec<_> = index
        .operations()
        .filter(|o| o.eligible && !covered.contains_key(&o.operation_id))
        .map(|o| (o.operation_id.clone(), o.method.clone(), o.path.clone()))
        .collect();
    untested_eligible.sort();

    for f in fields {
        let Ok(op) = index.lookup(&f.method, &f.template) else {
            continue;
        };
        let (Some(schema), Some(entry)) = (&op.request_fields, covered.get_mut(&op.operation_id))
        else {
            continue;
        };
        let coverage = entry.fields.get_or_insert_with(|| FieldCoverage {
            total: schema.all.len(),
            ..Default::default()
        });
        match schema.field_of(&f.field) {
            Some(field) => *coverage.set.entry(field).or_default() += f.hits,
            None => {
                coverage.unknown.insert(f.field.clone());
            }
        }
    }
    for entry in covered.values_mut() {
        if let Some(c) = entry.fields.as_mut() {
            c.hit = c.set.len();
            c.percent = percent(c.hit, c.total);
        }
    }
    Report {
        scope,
        spec_operations: index.len(),
        summary,
        operations: covered.into_values().collect(),
        unknown: unknown.into_values().collect(),
        dropped,
        untested_eligible,
        release: None,
    }
}

/// A scope's report from a store's aggregates: what the HTTP routes and the
/// `report` command both answer.
pub fn from_store(
    store: &dyn Store,
    scope: Scope,
    index: &OperationIndex,
) -> Result<Report, StoreError> {
    let hits = store.hits(&scope)?;
    let fields = store.field_hits(&scope)?;
    let dropped = store.dropped(&scope)?;
    Ok(build(scope, &hits, &fields, index, dropped))
}

impl Report {
    /// The report in `format`; APISnoop's lists every operation of `index`.
    pub fn render(&self, format: Format, index: &OperationIndex) -> (String, &'static str) {
        match format {
            Format::Json => (
                serde_json::to_string_pretty(self).unwrap_or_default(),
                "application/json",
            ),
            Format::Text => (self.text(), "text/plain; charset=utf-8"),
            Format::Junit => (self.junit(), "application/xml"),
            Format::Apisnoop => (
                serde_json::to_string_pretty(&crate::apisnoop::document(
                    self,
                    index,
                    self.release.as_deref(),
                ))
                .unwrap_or_default(),
                "application/json",
            ),
        }
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "API coverage of {}", describe(&self.scope));
        for (name, t) in self.summary.rows() {
            let _ = writeln!(
                out,
                "  {name:<9} {:>5} of {:<5} ({:.1}%)",
                t.hit, t.total, t.percent
            );
        }
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "  ({} records were dropped by interceptors and are not counted)",
                self.dropped
            );
        }
        let _ = writeln!(out);
        let width = self
            .operations
            .iter()
            .map(|o| o.operation_id.len())
            .max()
            .unwrap_or(9)
            .max(9);
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {:>5}  {:<14}  {:>9}  CLIENTS",
            "OPERATION", "LEVEL", "HITS", "STATUS", "FIELDS"
        );
        for o in &self.operations {
            let statuses: Vec<String> =
                o.statuses.iter().map(|(s, n)| format!("{s}x{n}")).collect();
            let clients: Vec<&str> = o.clients.iter().map(String::as_str).collect();
            let fields = o
                .fields
                .as_ref()
                .map(|f| format!("{}/{}", f.hit, f.total))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<width$}  {:<6}  {:>5}  {:<14}  {:>9}  {}",
                o.operation_id,
                o.level,
                o.hits,
                statuses.join(","),
                fields,
                clients.join(",")
            );
        }
        if !self.unknown.is_empty() {
            let _ = writeln!(out, "\nCalls the spec does not know:");
            for u in &self.unknown {
                let _ = writeln!(
                    out,
                    "  {} {}  ({:?}, {} hits)",
                    u.method, u.path, u.reason, u.hits
                );
            }
        }
        out
    }

    fn junit(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let eligible: Vec<&OperationCoverage> =
            self.operations.iter().filter(|o| o.eligible).collect();
        let total = eligible.len() + self.untested_eligible.len();
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"apiwitness coverage of {}\" tests=\"{}\" failures=\"{}\">\n",
            esc(&describe(&self.scope)),
            total,
            self.untested_eligible.len()
        );
        for o in eligible {
            out.push_str(&format!(
                "  <testcase classname=\"{}\" name=\"{}\"/>\n",
                esc(&o.path),
                esc(&o.operation_id)
            ));
        }
        for (id, method, path) in &self.untested_eligible {
            out.push_str(&format!(
                "  <testcase classname=\"{}\" name=\"{}\"><failure message=\"eligible operation never called\">{} {}</failure></testcase>\n",
                esc(path),
                esc(id),
                esc(method),
                esc(path)
            ));
        }
        out.push_str("</testsuite>\n");
        out
    }
}

fn describe(scope: &Scope) -> String {
    let mut parts = Vec::new();
    if let (Some(ns), Some(pod)) = (&scope.namespace, &scope.pod) {
        parts.push(format!("pod {ns}/{pod}"));
    } else if let Some(pod) = &scope.pod {
        parts.push(format!("pod {pod}"));
    } else if let Some(ns) = &scope.namespace {
        parts.push(format!("namespace {ns}"));
    }
    if let Some(w) = &scope.workload {
        parts.push(format!("workload {w}"));
    }
    if let Some(ua) = &scope.user_agent {
        parts.push(format!("client {ua}"));
    }
    if parts.is_empty() {
        "the whole cluster".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Conformance, OperationIndex};
    use serde_json::json;

    fn index() -> OperationIndex {
        let doc = json!({"paths": {
            "/api/v1/namespaces/{namespace}/configmaps": {
                "get": {"operationId": "listCoreV1NamespacedConfigMap", "x-kubernetes-action": "list"},
                "post": {"operationId": "createCoreV1NamespacedConfigMap", "x-kubernetes-action": "post"}
            },
            "/apis/batch/v1beta1/jobs": {"get": {"operationId": "listBatchV1beta1Job"}}
        }});
        OperationIndex::from_documents([&doc], &Conformance::default(), &Default::default())
    }

    fn hit(method: &str, template: &str, status: u16, hits: u64) -> Hit {
        Hit {
            method: method.into(),
            template: template.into(),
            status,
            client: "kubectl/v1.35.4".into(),
            hits,
            first_seen: "2026-11-24T06:00:00Z".into(),
            last_seen: "2026-11-24T06:00:01Z".into(),
        }
    }

    #[test]
    fn hits_map_to_operations_and_the_rest_is_unknown() {
        let hits = [
            hit("GET", "/api/v1/namespaces/{namespace}/configmaps", 200, 3),
            hit("GET", "/api/v1/namespaces/{namespace}/configmaps", 403, 1),
            hit("PUT", "/api/v1/namespaces/{namespace}/configmaps", 405, 1),
            hit("GET", "/apis/example.com/v1/widgets", 404, 2),
        ];
        let r = build(Scope::default(), &hits, &[], &index(), 7);
        assert_eq!(r.operations.len(), 1);
        let op = &r.operations[0];
        assert_eq!(
            (op.operation_id.as_str(), op.hits),
            ("listCoreV1NamespacedConfigMap", 4)
        );
        assert_eq!(op.statuses, BTreeMap::from([(200, 3), (403, 1)]));
        assert_eq!(r.summary.stable, Tally::new(1, 2));
        assert_eq!(r.summary.beta, Tally::new(0, 1));
        assert_eq!(r.summary.eligible.total, 2);
        let reasons: Vec<_> = r.unknown.iter().map(|u| u.reason.clone()).collect();
        assert_eq!(reasons, [Unmatched::NotInSpec, Unmatched::MethodNotAllowed]);
        assert_eq!(r.untested_eligible.len(), 1);
        let (text, _) = r.render(Format::Text, &OperationIndex::default());
        assert!(
            text.contains("listCoreV1NamespacedConfigMap")
                && text.contains("7 records were dropped"),
            "{text}"
        );
        let (xml, _) = r.render(Format::Junit, &OperationIndex::default());
        assert!(
            xml.contains("failures=\"1\"") && xml.contains("createCoreV1NamespacedConfigMap"),
            "{xml}"
        );
    }
}
