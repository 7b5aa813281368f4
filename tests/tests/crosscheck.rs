//! The apiserver's own audit log as an independent witness: the demo's
//! controller-like workload runs through the interceptor, and then
//!
//! - every request the audit log attributes to the pod's ServiceAccount has
//!   exactly one apiwitness record with the same verb, URI and status, and no
//!   record lacks its audit event;
//! - every version apiwitness shows of the ConfigMap and the custom resource
//!   equals the audit log's responseObject at the same resourceVersion;
//! - the coverage of the records equals the coverage of the audit events,
//!   mapped by the same engine;
//! - no token and no Secret value is in the store or in any log;
//! - with the aggregator down for the run and a small queue, what arrives is
//!   a subset of the audit log, and the drop count explains the rest.

use apiwitness_aggregator::store::Store;
use apiwitness_aggregator::store::sqlite::SqliteStore;
use apiwitness_e2e::aggregator::{Aggregator, StoreKind, token_of};
use apiwitness_e2e::audit_log::AuditTail;
use apiwitness_e2e::certify::{CertifyStandIn, Signer};
use apiwitness_e2e::intercepted::{InterceptedPod, InterceptorOptions};
use apiwitness_e2e::postgres_crd::{ensure_postgres_crd, grant_postgres_admin};
use apiwitness_e2e::{
    Cluster, CommandOutput, TestNamespace, repo_root, wait_until, workspace_binary,
};
use apiwitness_record::{ApiRequest, Exchange, Line};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// (verb, URI, status), counted.
type Calls = BTreeMap<(String, String, u16), usize>;

/// The namespace's records, read back through the store as they were
/// ingested.
fn stored_records(db: &str, namespace: &str) -> Vec<Exchange> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut select = conn
        .prepare("SELECT id FROM records WHERE pod_namespace = ?1")
        .unwrap();
    let ids: Vec<String> = select
        .query_map([namespace], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let store = SqliteStore::open(std::path::Path::new(db)).unwrap();
    ids.iter()
        .map(|id| store.record(id).unwrap().unwrap().line)
        .map(|l| match Line::parse(&l).unwrap() {
            Line::Exchange(e) => *e,
            other => panic!("not an exchange: {other:?}"),
        })
        .collect()
}

fn without_managed_fields(mut object: Value) -> Value {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    object
}

fn operation_ids(report: &Value) -> Vec<String> {
    let mut ids: Vec<String> = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A namespace for the demo's workload: its ServiceAccount `app` may manage
/// Postgres objects and has a Secret to read; `reader` may read the results.
fn prepare(cluster: &'static Cluster, prefix: &str, secret_value: &str) -> TestNamespace {
    ensure_postgres_crd(cluster);
    let ns = TestNamespace::with_app(cluster, prefix);
    let n = ns.name.as_str();
    grant_postgres_admin(cluster, n, "app");
    let secret = format!("--from-literal=password={secret_value}");
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "db-password",
            "-n",
            n,
            &secret,
        ])
        .unwrap();
    ns.add_reader("pods,configmaps,postgreses.postgrescontroller.kubeplus");
    ns
}

fn audited_calls(events: &[Value]) -> Calls {
    let mut calls = Calls::new();
    for e in events {
        let key = (
            e["verb"].as_str().unwrap().to_string(),
            e["requestURI"].as_str().unwrap().to_string(),
            e["responseStatus"]["code"].as_u64().unwrap() as u16,
        );
        *calls.entry(key).or_default() += 1;
    }
    calls
}

fn recorded_calls(records: &[Exchange]) -> Calls {
    let mut calls = Calls::new();
    // A long watch comes in parts; its first part stands for the call.
    for r in records
        .iter()
        .filter(|r| r.part.as_ref().is_none_or(|p| p.index == 0))
    {
        let request = ApiRequest::parse(
            &r.method,
            &r.path,
            &r.query,
            r.request_content_type.as_deref(),
        )
        .unwrap();
        let uri = if r.query.is_empty() {
            r.path.clone()
        } else {
            format!("{}?{}", r.path, r.query)
        };
        *calls
            .entry((request.verb.as_str().to_string(), uri, r.status))
            .or_default() += 1;
    }
    calls
}

/// The workload's audit events, once its last request is in the log.
fn workload_events(audit: &AuditTail, namespace: &str) -> Vec<Value> {
    let username = format!("system:serviceaccount:{namespace}:app");
    wait_until(
        "the audit log to hold the workload's requests",
        Duration::from_secs(30),
        || {
            let events = audit.events(&username);
            events
                .iter()
                .any(|e| e["verb"] == "delete" && e["objectRef"]["resource"] == "configmaps")
                .then_some(events)
        },
    )
    .unwrap()
}

#[test]
fn the_audit_log_and_apiwitness_agree_on_every_request_version_and_operation() {
    let cluster = Cluster::shared();
    let secret_value = format!("s3cr3t-{}", std::process::id());
    let audit = AuditTail::start(cluster);
    let ns = prepare(cluster, "crosscheck", &secret_value);
    let n = ns.name.as_str();
    // The CRD is served before the aggregator reads the spec.
    let aggregator = Aggregator::start_on(cluster, n, StoreKind::Sqlite).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let ingest = aggregator.ingest_url();
    let pod_name = format!("{n}-p");
    let mut pod = InterceptedPod::start_app(
        cluster,
        n,
        InterceptorOptions::shipping_to(&certify.url, &ingest),
    );
    // A list over 128 KiB, which the apiserver gzips for kubectl: the
    // sidecar ships it as it came, and the aggregator undoes it. Listed
    // before the workload, whose last request ends the wait for the audit
    // log.
    let filler = "x".repeat(2048);
    let big: Vec<Value> = (0..80)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("big-{i}")}, "data": {"f": filler}})
        })
        .collect();
    cluster
        .kubectl_stdin(
            &["create", "-n", n],
            &json!({"apiVersion": "v1", "kind": "List", "items": big}),
        )
        .unwrap();
    let kubectl = cluster.bin("kubectl");
    let listed = pod
        .exec(&[kubectl.to_str().unwrap(), "get", "configmaps", "-o", "json"])
        .unwrap();
    assert!(listed.success, "{}", listed.stderr);
    let workload = repo_root().join("hack/demo.d/workload.py");
    let out = pod
        .exec(&["python3", workload.to_str().unwrap(), n])
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let token = std::fs::read_to_string(repo_root().join(format!(
        ".cache/cluster/{}/tmpfs/pods/{pod_name}/serviceaccount/token",
        cluster.index
    )))
    .unwrap();
    pod.stop().unwrap();

    // The apiserver's account of the pod's requests, and apiwitness's.
    let events = workload_events(&audit, n);
    let audited = audited_calls(&events);
    let records = stored_records(&aggregator.db, n);
    let recorded = recorded_calls(&records);
    assert!(audited.len() >= 14, "{audited:#?}");
    assert_eq!(recorded, audited, "records and audit events differ");

    // The gzip list is stored as the JSON the apiserver wrote, and each of
    // its objects is a version.
    let list = records
        .iter()
        .find(|r| {
            r.path == format!("/api/v1/namespaces/{n}/configmaps")
                && r.response_body
                    .as_ref()
                    .is_some_and(|b| b.content_encoding.as_deref() == Some("gzip"))
        })
        .expect("the list, gzip");
    assert_eq!(list.format, apiwitness_record::FORMAT_GZIP);
    let body = list.response_body.as_ref().unwrap();
    let items = body.content.json().expect("stored as JSON")["items"]
        .as_array()
        .unwrap()
        .len();
    assert!(items >= 80, "{items} items");
    assert!(body.size > 128 * 1024, "{}", body.size);

    // The Python client asks for no gzip: its list of the same ConfigMaps
    // travelled to the aggregator unchecked, on a line of its own, and is
    // stored as the JSON the apiserver wrote.
    let python_list = records
        .iter()
        .find(|r| {
            r.path == format!("/api/v1/namespaces/{n}/configmaps")
                && r.query.is_empty()
                && r.user_agent
                    .as_deref()
                    .is_some_and(|ua| ua.starts_with("OpenAPI-Generator/"))
        })
        .expect("the Python client's list");
    assert_eq!(python_list.format, apiwitness_record::FORMAT_VERSION);
    let body = python_list.response_body.as_ref().unwrap();
    assert!(body.content_encoding.is_none());
    let items = body.content.json().expect("stored as JSON")["items"]
        .as_array()
        .map(Vec::len);
    assert!(items >= Some(80), "{items:?} items");

    // Every version apiwitness shows equals the apiserver's responseObject at
    // the same resourceVersion.
    let reader = token_of(cluster, n, "reader").unwrap();
    // A list's items are objects of their own, which the list gives their
    // kind and apiVersion.
    let responses: BTreeMap<(String, String), Value> = events
        .iter()
        .filter_map(|e| e.get("responseObject"))
        .flat_map(|o| {
            let kind = o["kind"].as_str().and_then(|k| k.strip_suffix("List"));
            let items = o["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |item| {
                    let mut item = item.clone();
                    item["kind"] = json!(kind);
                    item["apiVersion"] = o["apiVersion"].clone();
                    item
                });
            std::iter::once(o.clone()).chain(items)
        })
        .filter_map(|o| {
            let uid = o.pointer("/metadata/uid")?.as_str()?.to_string();
            let rv = o
                .pointer("/metadata/resourceVersion")?
                .as_str()?
                .to_string();
            Some(((uid, rv), without_managed_fields(o)))
        })
        .collect();
    for (resource, name, expected) in [
        ("configmaps", "settings", 3),
        ("postgreses", "client25", 6),
        ("configmaps", "big-7", 1),
    ] {
        let listing = aggregator
            .get_json(
                &format!("/provenance/namespaces/{n}/{resource}/{name}/versions?objects=true"),
                Some(&reader),
            )
            .unwrap();
        let versions = listing["versions"].as_array().unwrap();
        assert_eq!(versions.len(), expected, "{resource}/{name}: {listing:#}");
        let mut compared = 0;
        for v in versions {
            let Some(object) = v.get("object") else {
                continue;
            };
            let key = (
                v["uid"].as_str().unwrap().to_string(),
                v["resourceVersion"].as_str().unwrap().to_string(),
            );
            let audited = responses.get(&key).unwrap_or_else(|| {
                panic!("no audit responseObject for {resource}/{name} at {key:?}")
            });
            assert_eq!(
                object, audited,
                "{resource}/{name} at resourceVersion {}",
                key.1
            );
            compared += 1;
        }
        assert!(
            compared >= expected - 1,
            "{resource}/{name}: only {compared} compared"
        );
    }

    // Coverage: the records', and the audit events' mapped by the same engine.
    let from_records = aggregator
        .get_json(&format!("/coverage?namespace={n}"), Some(&reader))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("apiwitness-crosscheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit_file = dir.join("audit.log");
    std::fs::write(
        &audit_file,
        events.iter().map(|e| format!("{e}\n")).collect::<String>(),
    )
    .unwrap();
    let db = dir.join("audit.db");
    let aggregator_bin = workspace_binary("apiwitness-aggregator");
    for args in [
        vec!["import-audit", audit_file.to_str().unwrap()],
        vec!["report", "--namespace", n, "--format", "json"],
    ] {
        let out = CommandOutput::run(
            Command::new(&aggregator_bin)
                .args(["--db", db.to_str().unwrap(), "--spec", "live"])
                .args(&args)
                .env("KUBECONFIG", cluster.kubeconfig()),
        )
        .unwrap();
        assert!(out.success, "{args:?}: {out:?}");
        if args[0] == "import-audit" {
            // The audit events' objects are versions too: the same ones.
            let conn = rusqlite::Connection::open(&db).unwrap();
            let mut select = conn
                .prepare("SELECT resource_version FROM versions WHERE namespace = ?1 AND name = 'client25' ORDER BY 1")
                .unwrap();
            let from_audit: Vec<String> = select
                .query_map([n], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let listing = aggregator
                .get_json(
                    &format!("/provenance/namespaces/{n}/postgreses/client25/versions"),
                    Some(&reader),
                )
                .unwrap();
            let mut from_records: Vec<String> = listing["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["resourceVersion"].as_str().unwrap().to_string())
                .collect();
            from_records.sort();
            assert_eq!(from_audit, from_records);
        }
        if args[0] == "report" {
            let from_audit: Value = serde_json::from_str(&out.stdout).unwrap();
            let ids = operation_ids(&from_records);
            assert!(ids.iter().any(|i| i.contains("Postgres")), "{ids:?}");
            assert_eq!(ids, operation_ids(&from_audit));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    // No token and no Secret value anywhere apiwitness wrote.
    let mut written = vec![aggregator.log(), pod.log()];
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", aggregator.db)) {
            written.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    for text in &written {
        assert!(!text.contains(&secret_value), "a Secret value was written");
        assert!(!text.contains(token.trim()), "a token was written");
    }
}

#[test]
fn with_the_aggregator_down_what_is_kept_agrees_and_the_drop_count_explains_the_rest() {
    let cluster = Cluster::shared();
    let audit = AuditTail::start(cluster);
    let ns = prepare(cluster, "crossfault", "unused");
    let n = ns.name.as_str();
    let mut aggregator = Aggregator::start_on(cluster, n, StoreKind::Sqlite).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let ingest = aggregator.ingest_url();
    let mut pod = InterceptedPod::start_app(
        cluster,
        n,
        InterceptorOptions {
            // A queue that cannot hold the whole run.
            extra_args: vec!["--queue-capacity".into(), "5".into()],
            ..InterceptorOptions::shipping_to(&certify.url, &ingest)
        },
    );

    // The aggregator goes down for the whole run, and comes back after it.
    aggregator.kill();
    let workload = repo_root().join("hack/demo.d/workload.py");
    let out = pod
        .exec(&["python3", workload.to_str().unwrap(), n])
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    aggregator.spawn(cluster).unwrap();
    let reader = token_of(cluster, n, "reader").unwrap();
    let events = workload_events(&audit, n);
    // The queue's records and the drop report arrive once the aggregator is back.
    let report = wait_until(
        "the kept records and the drop report",
        Duration::from_secs(60),
        || {
            let r = aggregator
                .get_json(&format!("/coverage?namespace={n}"), Some(&reader))
                .ok()?;
            (r["dropped"].as_u64()? > 0 && !stored_records(&aggregator.db, n).is_empty())
                .then_some(r)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\ninterceptor:\n{}\naggregator:\n{}",
            pod.log(),
            aggregator.log()
        )
    });
    pod.stop().unwrap();
    let dropped = aggregator
        .get_json(&format!("/coverage?namespace={n}"), Some(&reader))
        .unwrap()["dropped"]
        .as_u64()
        .unwrap();

    let audited = audited_calls(&events);
    let recorded = recorded_calls(&stored_records(&aggregator.db, n));
    // Nothing invented: every kept record is an audited request.
    for (call, count) in &recorded {
        assert!(
            audited.get(call).is_some_and(|a| a >= count),
            "{call:?} was recorded but not audited"
        );
    }
    // Nothing unexplained: what is missing is what the interceptor dropped.
    let audited_total: usize = audited.values().sum();
    let recorded_total: usize = recorded.values().sum();
    assert!(
        recorded_total <= 10,
        "the queue holds at most 5 whole records and 5 stripped of their bodies, and {recorded_total} arrived"
    );
    assert_eq!(
        audited_total - recorded_total,
        dropped as usize,
        "{report:#}"
    );
}
