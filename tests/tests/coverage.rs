//! `curl <aggregator>/coverage/<pod>` on the real control plane: a workload
//! runs through the interceptor, its records reach the real aggregator, and
//! the report names exactly the operations it called, against the live spec.

use apiwitness_e2e::aggregator::{
    Aggregator, StoreKind, reader_token, token_of, write_auth_header,
};
use apiwitness_e2e::certify::{CertifyStandIn, Signer};
use apiwitness_e2e::intercepted::{InterceptedPod, InterceptorOptions};
use apiwitness_e2e::{Cluster, CommandOutput, TestNamespace, repo_root, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn operation_ids(report: &Value) -> BTreeSet<String> {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn coverage_of_a_pod_is_exactly_the_operations_its_workload_called_on_sqlite() {
    pod_coverage(StoreKind::Sqlite, "cov-pod-sqlite");
}

#[test]
fn coverage_of_a_pod_is_exactly_the_operations_its_workload_called_on_postgres() {
    pod_coverage(StoreKind::Postgres, "cov-pod-pg");
}

fn pod_coverage(store: StoreKind, prefix: &str) {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, prefix);
    let n = ns.name.clone();
    let aggregator = Aggregator::start_on(cluster, &n, store).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let pod_name = format!("{n}-p");
    let ingest = aggregator.ingest_url();
    let mut pod = InterceptedPod::start_app(
        cluster,
        &n,
        InterceptorOptions::shipping_to(&certify.url, &ingest),
    );
    let script = repo_root().join("tests/python/workload.py");
    let out = pod
        .exec(&["python3", script.to_str().unwrap(), &n])
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    pod.stop().unwrap();

    let reader = reader_token(cluster).unwrap();
    let report = aggregator
        .get_json(&format!("/coverage/{pod_name}"), Some(&reader))
        .unwrap();
    let expected: BTreeSet<String> = [
        "createCoreV1NamespacedConfigMap",
        "readCoreV1NamespacedConfigMap",
        "listCoreV1NamespacedConfigMap",
        // The watch counts for both the list and the /watch/ operation.
        "watchCoreV1NamespacedConfigMapList",
        "patchCoreV1NamespacedConfigMap",
        "deleteCoreV1CollectionNamespacedConfigMap",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(operation_ids(&report), expected, "{report:#}");
    let read = report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation_id"] == "readCoreV1NamespacedConfigMap")
        .unwrap();
    // py-1 and the 40 KiB py-large, and py-gone.
    assert_eq!(read["statuses"], json!({"200": 2, "404": 1}));
    assert_eq!(read["level"], "stable");
    assert_eq!(read["eligible"], true);
    assert!(
        read["clients"][0]
            .as_str()
            .unwrap()
            .starts_with("OpenAPI-Generator/")
    );
    // Field coverage: the fields the workload's bodies set, out of the
    // ConfigMap schema's; labels are one field, whatever their keys.
    let operation = |id: &str| {
        report["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["operation_id"] == id)
            .cloned()
            .unwrap()
    };
    let created = operation("createCoreV1NamespacedConfigMap");
    let set: Vec<&str> = created["fields"]["set"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for field in ["data", "metadata.labels", "metadata.name"] {
        assert!(set.contains(&field), "{field} not in {set:?}");
    }
    assert!(
        set.iter().all(|f| !f.starts_with("metadata.labels.")),
        "{set:?}"
    );
    assert!(
        created["fields"]["total"].as_u64().unwrap() > 20,
        "{created:#}"
    );
    assert_eq!(
        created["fields"]["hit"].as_u64().unwrap() as usize,
        set.len()
    );
    assert!(created["fields"].get("unknown").is_none(), "{created:#}");
    let patched = operation("patchCoreV1NamespacedConfigMap");
    assert_eq!(patched["fields"]["set"], json!({"data": 1}), "{patched:#}");
    assert!(
        operation("listCoreV1NamespacedConfigMap")
            .get("fields")
            .is_none()
    );
    assert_eq!(report["summary"]["stable"]["hit"], 6);
    assert!(report["summary"]["eligible"]["total"].as_u64().unwrap() > 300);
    assert_eq!(report["unknown"], json!([]));
    assert_eq!(report["dropped"], 0);

    // The same through the namespaced route, as text, and as JUnit.
    let text = aggregator
        .get_text(
            &format!("/coverage/{n}/{pod_name}?format=text"),
            Some(&reader),
        )
        .unwrap();
    assert!(
        text.contains("deleteCoreV1CollectionNamespacedConfigMap"),
        "{text}"
    );
    let junit = aggregator
        .get_text(
            &format!("/coverage/{n}/{pod_name}?format=junit"),
            Some(&reader),
        )
        .unwrap();
    assert!(
        junit.contains("<testsuite") && junit.contains("<failure"),
        "untested eligible operations fail"
    );
    // APISnoop's per-endpoint format: every operation of the live spec, the
    // same ones tested.
    let apisnoop = aggregator
        .get_json(
            &format!("/coverage/{n}/{pod_name}?format=apisnoop&release=1.35.4"),
            Some(&reader),
        )
        .unwrap();
    let endpoints = apisnoop["endpoints"].as_array().unwrap();
    assert!(endpoints.len() > 1000, "{} endpoints", endpoints.len());
    let tested: BTreeSet<String> = endpoints
        .iter()
        .filter(|e| e["tested"] == true)
        .map(|e| e["endpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tested, operation_ids(&report));
    let listed = endpoints
        .iter()
        .find(|e| e["endpoint"] == "listCoreV1NamespacedConfigMap")
        .unwrap();
    assert_eq!(
        (&listed["category"], &listed["level"], &listed["release"]),
        (&json!("core"), &json!("stable"), &json!("1.35.4"))
    );
    // A workload filter that matches nothing gives an empty report, not an error.
    let none = aggregator
        .get_json(
            &format!("/coverage?namespace={n}&user_agent=nobody"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(none["operations"], json!([]));
}

#[test]
fn a_new_crds_operations_are_covered_without_a_restart() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "cov-crd");
    let n = ns.name.clone();
    let aggregator = Aggregator::start(cluster, &n).unwrap();
    // A group of this test's own, created after the aggregator loaded its spec.
    let group = format!("{n}.apiwitness.test");
    let crd_name = format!("gadgets.{group}");
    cluster
        .kubectl_stdin(
            &["create"],
            &json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": crd_name},
                "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
            }),
        )
        .unwrap();
    let _delete = DeleteOnDrop(cluster, crd_name.clone());
    cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd_name}"),
            "--timeout=30s",
        ])
        .unwrap();
    // A record as the interceptor ships it: one create of a Gadget.
    let line = json!({
        "kind": "exchange", "format": 1, "id": format!("{n}-1"),
        "pod": {"namespace": n, "name": "maker"},
        "started_at": "2026-11-24T06:00:00Z", "duration_us": 10,
        "method": "POST", "path": format!("/apis/{group}/v1alpha1/namespaces/{n}/gadgets"),
        "status": 201, "user_agent": "maker/1.0"
    });
    let writer = token_of(cluster, &n, "app").unwrap();
    post_batch(&aggregator, &format!("{line}\n"), &writer).unwrap();
    let reader = reader_token(cluster).unwrap();
    let op = wait_until(
        "the new CRD's operation in the report",
        Duration::from_secs(30),
        || {
            let report = aggregator
                .get_json(&format!("/coverage/{n}/maker"), Some(&reader))
                .ok()?;
            report["operations"].as_array()?.first().cloned()
        },
    )
    .unwrap();
    assert!(
        op["operation_id"].as_str().unwrap().starts_with("create"),
        "{op}"
    );
    assert_eq!(op["crd"], true);
    assert_eq!(op["level"], "alpha");
    assert_eq!(op["eligible"], false);
}

#[test]
fn killing_the_aggregator_mid_ingest_loses_nothing_and_counts_nothing_twice_on_sqlite() {
    kill_mid_ingest(StoreKind::Sqlite, "cov-crash-sqlite");
}

#[test]
fn killing_the_aggregator_mid_ingest_loses_nothing_and_counts_nothing_twice_on_postgres() {
    kill_mid_ingest(StoreKind::Postgres, "cov-crash-pg");
}

/// A namespace, its `app`'s token to write with, a reader's token, and an
/// aggregator on `store`: where the tests that post records themselves start.
fn posting(store: StoreKind, prefix: &str) -> (TestNamespace, String, String, Aggregator) {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, prefix);
    let writer = token_of(cluster, &ns.name, "app").unwrap();
    let reader = reader_token(cluster).unwrap();
    let aggregator = Aggregator::start_on(cluster, &ns.name, store).unwrap();
    (ns, writer, reader, aggregator)
}

/// All the hits of a report.
fn total_hits(report: &Value) -> u64 {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["hits"].as_u64().unwrap())
        .sum()
}

fn kill_mid_ingest(store: StoreKind, prefix: &str) {
    let cluster = Cluster::shared();
    let (ns, writer, reader, mut aggregator) = posting(store, prefix);
    let n = ns.name.clone();
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 250;
    let batch = |b: usize| -> String {
        (0..PER_BATCH)
            .map(|i| {
                json!({"kind": "exchange", "format": 1, "id": format!("{n}-{b}-{i}"),
                    "pod": {"namespace": n, "name": "busy"}, "started_at": "2026-11-24T06:00:00Z",
                    "duration_us": 1, "method": "GET", "path": format!("/api/v1/namespaces/{n}/configmaps/c{i}"),
                    "status": 200})
                .to_string()
                    + "\n"
            })
            .collect()
    };
    // Send until the kill; every batch that got a 200 was acknowledged.
    let mut acknowledged = Vec::new();
    for b in 0..BATCHES {
        if b == BATCHES / 2 {
            aggregator.kill();
        }
        if post_batch(&aggregator, &batch(b), &writer).is_ok() {
            acknowledged.push(b);
        }
    }
    assert_eq!(
        acknowledged.len(),
        BATCHES / 2,
        "the batches before the kill were acknowledged"
    );
    aggregator.spawn(cluster).unwrap();
    let report = aggregator
        .get_json(&format!("/coverage/{n}/busy"), Some(&reader))
        .unwrap();
    let hits = total_hits(&report);
    assert_eq!(
        hits,
        (acknowledged.len() * PER_BATCH) as u64,
        "nothing acknowledged was lost"
    );
    // The raw lines too: the first and last record of each batch, exactly
    // as sent.
    let stored_line = |b: usize, i: usize| {
        let sent = batch(b).lines().nth(i).unwrap().to_string();
        let id = format!("{n}-{b}-{i}");
        let stored = aggregator
            .get_text(&format!("/records/{id}"), Some(&reader))
            .unwrap();
        assert_eq!(stored, sent, "record {id} as stored");
    };
    let (code, body) = aggregator
        .get(&format!("/records/{n}-never"), Some(&reader))
        .unwrap();
    assert_eq!(code, 404, "{body}");
    for &b in &acknowledged {
        stored_line(b, 0);
        stored_line(b, PER_BATCH - 1);
    }
    // The sender retries everything (it cannot know what the kill interrupted).
    for b in 0..BATCHES {
        post_batch(&aggregator, &batch(b), &writer).unwrap();
    }
    let report = aggregator
        .get_json(&format!("/coverage/{n}/busy"), Some(&reader))
        .unwrap();
    let hits = total_hits(&report);
    assert_eq!(
        hits,
        (BATCHES * PER_BATCH) as u64,
        "every record counted exactly once"
    );
    for b in 0..BATCHES {
        stored_line(b, PER_BATCH / 2);
    }
}

#[test]
fn raw_records_past_the_retention_bounds_go_and_the_coverage_stays_on_sqlite() {
    retention(StoreKind::Sqlite, "cov-keep");
}

#[test]
fn raw_records_past_the_retention_bounds_go_and_the_coverage_stays_on_postgres() {
    retention(StoreKind::Postgres, "cov-keep-pg");
}

/// Raw records past the age bound, then beyond the count bound, are removed
/// when the aggregator starts; the hits they counted stay.
fn retention(store: StoreKind, prefix: &str) {
    let cluster = Cluster::shared();
    let (ns, writer, reader, mut aggregator) = posting(store, prefix);
    let n = ns.name.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let line = |i: usize, started_at: &str| {
        json!({"kind": "exchange", "format": 1, "id": format!("{n}-{i}"),
            "pod": {"namespace": n, "name": "kept"}, "started_at": started_at,
            "duration_us": 1, "method": "GET", "path": format!("/api/v1/namespaces/{n}/configmaps/c{i}"),
            "status": 200})
        .to_string()
            + "\n"
    };
    // Two records from 2020, and four from this hour, a second apart.
    let mut batch = line(0, "2020-01-01T00:00:00Z") + &line(1, "2020-01-01T00:00:01Z");
    for i in 2..6 {
        let at = now - 60 + i as u64;
        batch += &line(i, &rfc3339(at));
    }
    post_batch(&aggregator, &batch, &writer).unwrap();
    let stored = |aggregator: &Aggregator| -> u64 {
        let text = aggregator.get_text("/metrics", None).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("apiwitness_aggregator_raw_records "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(stored(&aggregator), 6);

    aggregator.kill();
    aggregator.retention = ("30days".into(), 3);
    aggregator.spawn(cluster).unwrap();
    // The two from 2020 are past 30 days; of the four left, the oldest goes.
    wait_until("the prune at start", Duration::from_secs(30), || {
        (stored(&aggregator) == 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}; stored {}", stored(&aggregator)));
    let report = aggregator
        .get_json(&format!("/coverage/{n}/kept"), Some(&reader))
        .unwrap();
    let hits = total_hits(&report);
    assert_eq!(hits, 6, "the coverage still counts every record");
}

/// Seconds since the epoch as RFC 3339, by date(1).
fn rfc3339(secs: u64) -> String {
    CommandOutput::run(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{secs}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]))
    .and_then(|o| o.ok("date"))
    .unwrap()
    .stdout
    .trim()
    .to_string()
}

/// POSTs one NDJSON batch, gzip, with a bearer token, as the interceptor does.
fn post_batch(aggregator: &Aggregator, ndjson: &str, token: &str) -> anyhow::Result<Value> {
    let (code, body) = post_batch_status(aggregator, ndjson, Some(token))?;
    anyhow::ensure!(code == 200, "ingest answered {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

fn post_batch_status(
    aggregator: &Aggregator,
    ndjson: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(ndjson.as_bytes())?;
    let path = std::env::temp_dir().join(format!(
        "apiwitness-batch-{}-{}",
        std::process::id(),
        rand()
    ));
    std::fs::write(&path, gz.finish()?)?;
    let header = token.map(write_auth_header).transpose()?;
    let mut cmd = Command::new("curl");
    if let Some(h) = &header {
        cmd.arg("-H").arg(format!("@{}", h.display()));
    }
    let out = CommandOutput::run(cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Encoding: gzip",
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &format!("@{}", path.display()),
        &aggregator.ingest_url(),
    ]));
    let _ = std::fs::remove_file(&path);
    if let Some(h) = header {
        let _ = std::fs::remove_file(h);
    }
    let out = out?;
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
    Ok((code.parse().unwrap_or(0), body.to_string()))
}

fn rand() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

struct DeleteOnDrop(&'static Cluster, String);
impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["delete", "crd", &self.1, "--wait=false"]);
    }
}

#[test]
fn replicas_sharing_one_postgres_database_count_each_record_once() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "cov-replicas");
    let n = ns.name.clone();
    let first = Aggregator::start_on(cluster, &n, StoreKind::Postgres).unwrap();
    let second = first.replica(cluster, &format!("{n}-2")).unwrap();
    let writer = token_of(cluster, &n, "app").unwrap();
    let reader = reader_token(cluster).unwrap();
    let batch: String = (0..500)
        .map(|i| {
            json!({"kind": "exchange", "format": 1, "id": format!("{n}-{i}"),
                "pod": {"namespace": n, "name": "shared"}, "started_at": "2026-11-24T06:00:00Z",
                "duration_us": 1, "method": "GET", "path": format!("/api/v1/namespaces/{n}/pods"),
                "status": 200})
            .to_string()
                + "\n"
        })
        .collect();
    // The same batch to both replicas at once, as a retry after a timeout would.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| post_batch(&first, &batch, &writer).unwrap());
        let b = s.spawn(|| post_batch(&second, &batch, &writer).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let accepted = a["accepted"].as_u64().unwrap() + b["accepted"].as_u64().unwrap();
    assert_eq!(
        accepted, 500,
        "each record is accepted by exactly one replica: {a} {b}"
    );
    for aggregator in [&first, &second] {
        let report = aggregator
            .get_json(&format!("/coverage/{n}/shared"), Some(&reader))
            .unwrap();
        assert_eq!(
            report["operations"][0]["operation_id"],
            "listCoreV1NamespacedPod"
        );
        assert_eq!(report["operations"][0]["hits"], 500);
    }
}

#[test]
fn writers_and_readers_are_who_the_apiserver_says_they_are() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "cov-auth");
    let other = TestNamespace::with_app(cluster, "cov-auth-other");
    let n = ns.name.clone();
    let aggregator = Aggregator::start(cluster, &n).unwrap();
    let record = |id: &str, namespace: &str| {
        json!({"kind": "exchange", "format": 1, "id": id, "pod": {"namespace": namespace, "name": "p"},
            "started_at": "2026-11-24T06:00:00Z", "duration_us": 1, "method": "GET",
            "path": "/api/v1/namespaces/x/configmaps", "status": 200})
        .to_string()
    };
    let own = token_of(cluster, &n, "app").unwrap();
    let foreign = token_of(cluster, &other.name, "app").unwrap();

    // Writes: no token, a made-up token, another namespace's token.
    let (code, body) = post_batch_status(&aggregator, &record("a1", &n), None).unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (code, _) = post_batch_status(&aggregator, &record("a1", &n), Some("not-a-token")).unwrap();
    assert_eq!(code, 401);
    let two = format!("{}\n{}\n", record("a1", &n), record("a2", &n));
    let answer = post_batch(&aggregator, &two, &foreign).unwrap();
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 2);
    assert!(
        answer["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("may not write records of namespace"),
        "{answer}"
    );
    let answer = post_batch(&aggregator, &format!("{}\n", record("a3", &n)), &own).unwrap();
    assert_eq!(answer["accepted"], 1);

    // Reads: no token, a reader of its own namespace only, a cluster-wide reader.
    let (code, _) = aggregator.get(&format!("/coverage/{n}/p"), None).unwrap();
    assert_eq!(code, 401);
    assert!(
        aggregator
            .get_json(&format!("/coverage/{n}/p"), Some(&own))
            .is_ok(),
        "an admin of its namespace may read it"
    );
    let (code, body) = aggregator
        .get(&format!("/coverage/{n}/p"), Some(&foreign))
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("may not get pods"), "{body}");
    let (code, _) = aggregator.get("/coverage", Some(&own)).unwrap();
    assert_eq!(
        code, 403,
        "a namespace admin may not read the cluster-wide report"
    );
    let reader = reader_token(cluster).unwrap();
    assert!(aggregator.get_json("/coverage", Some(&reader)).is_ok());
    // A pod that exists only where the reader may not look is not found.
    let (code, _) = aggregator.get("/coverage/p", Some(&foreign)).unwrap();
    assert_eq!(code, 404);
}

#[test]
fn the_insecure_flag_serves_without_tokens() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "cov-insecure");
    let aggregator = Aggregator::start_insecure(cluster, &ns.name).unwrap();
    let line = json!({"kind": "exchange", "format": 1, "id": "i1", "pod": {"namespace": ns.name, "name": "p"},
        "started_at": "2026-11-24T06:00:00Z", "duration_us": 1, "method": "GET", "path": "/version", "status": 200});
    let (code, body) = post_batch_status(&aggregator, &format!("{line}\n"), None).unwrap();
    assert_eq!(code, 200, "{body}");
    let report = aggregator
        .get_json(&format!("/coverage/{}/p", ns.name), None)
        .unwrap();
    assert_eq!(report["operations"][0]["operation_id"], "getCodeVersion");
}

#[test]
fn the_apiservers_audit_log_imports_into_the_same_coverage() {
    let cluster = Cluster::shared();
    let audit = apiwitness_e2e::audit_log::AuditTail::start(cluster);
    let ns = TestNamespace::with_app(cluster, "cov-audit");
    let n = ns.name.clone();
    // A client in a pod, not intercepted: only the audit log sees it.
    let pod = apiwitness_e2e::NetnsPod::add(cluster, &format!("{n}-p"), &n, "app", &[]).unwrap();
    let kubectl = cluster.bin("kubectl");
    let k = kubectl.to_str().unwrap();
    for args in [
        vec![k, "create", "configmap", "audited", "--from-literal=a=b"],
        vec![k, "get", "configmap", "audited", "-o", "name"],
        vec![k, "delete", "configmap", "audited"],
    ] {
        let out = pod.exec(&[], &args).unwrap();
        assert!(out.success, "{}", out.stderr);
    }
    // The apiserver writes its audit log in batches: wait for the delete.
    let needle = format!("/api/v1/namespaces/{n}/configmaps/audited");
    let lines = wait_until(
        "the audit log to have the delete",
        Duration::from_secs(30),
        || {
            let lines = audit.lines();
            lines
                .iter()
                .any(|l| {
                    l.contains(&needle)
                        && l.contains("\"verb\":\"delete\"")
                        && l.contains("ResponseComplete")
                })
                .then_some(lines)
        },
    )
    .unwrap();

    // This test's part of the log, as a file to import.
    let log = std::env::temp_dir().join(format!("apiwitness-audit-{n}.log"));
    std::fs::write(
        &log,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let db = std::env::temp_dir().join(format!("apiwitness-audit-{n}.db"));
    let _ = std::fs::remove_file(&db);
    let binary = apiwitness_e2e::workspace_binary("apiwitness-aggregator");
    let spec = repo_root().join("../shared/k8s-openapi/v1.35");
    let aggregator = |args: &[&str]| {
        CommandOutput::run(
            Command::new(&binary)
                .args(["--db", db.to_str().unwrap(), "--spec"])
                .arg(&spec)
                .args(args),
        )
        .unwrap()
        .ok("apiwitness-aggregator")
        .unwrap()
        .stdout
    };
    let imported = aggregator(&["import-audit", log.to_str().unwrap()]);
    assert!(imported.starts_with("imported "), "{imported}");
    let report: Value = serde_json::from_str(&aggregator(&[
        "report",
        "--namespace",
        &n,
        "--format",
        "json",
    ]))
    .unwrap();
    let ids = operation_ids(&report);
    for expected in [
        "createCoreV1NamespacedConfigMap",
        "readCoreV1NamespacedConfigMap",
        "deleteCoreV1NamespacedConfigMap",
    ] {
        assert!(ids.contains(expected), "{expected} missing from {ids:?}");
    }
    // Importing the same log again counts nothing twice.
    let again = aggregator(&["import-audit", log.to_str().unwrap()]);
    assert!(again.starts_with("imported 0 audit events"), "{again}");
    let _ = std::fs::remove_file(&db);
    let _ = std::fs::remove_file(&log);
}

/// A watch stays open for minutes or hours. Its events reach the aggregator
/// in parts while it runs, and the report counts it as the one call it is.
#[test]
fn a_long_watch_arrives_in_parts_while_it_runs_and_counts_once() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "cov-watch-parts");
    let n = ns.name.clone();
    let aggregator = Aggregator::start(cluster, &n).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let ingest = aggregator.ingest_url();
    let mut pod = InterceptedPod::start_app(
        cluster,
        &n,
        InterceptorOptions {
            // A part every two events, or every second.
            extra_args: ["--watch-events", "2", "--watch-part-wait", "1s"]
                .map(String::from)
                .to_vec(),
            ..InterceptorOptions::shipping_to(&certify.url, &ingest)
        },
    );
    let reader = reader_token(cluster).unwrap();
    let kubectl = cluster.bin("kubectl").to_string_lossy().into_owned();
    let create = |name: &str| {
        cluster
            .kubectl_ok(&["create", "configmap", name, "-n", &n, "--from-literal=k=v"])
            .unwrap();
    };
    let versions_of = |name: &str| -> usize {
        aggregator
            .get_json(
                &format!("/provenance/namespaces/{n}/configmaps/{name}/versions"),
                Some(&reader),
            )
            .ok()
            .and_then(|v| v["versions"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    std::thread::scope(|s| {
        let watch = s.spawn(|| pod.watch_configmaps(&kubectl, 15).unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        for name in ["w1", "w2", "w3"] {
            create(name);
        }
        // Seen at the aggregator while the watch still runs.
        wait_until(
            "the watch's first events at the aggregator",
            Duration::from_secs(10),
            || (versions_of("w1") > 0 && versions_of("w3") > 0).then_some(()),
        )
        .unwrap();
        assert!(
            !watch.is_finished(),
            "the events arrived only once the watch had ended"
        );
        create("w4");
        let out = watch.join().unwrap();
        for name in ["w1", "w2", "w3", "w4"] {
            assert!(out.stdout.contains(&format!("configmap/{name}")), "{out:?}");
        }
    });
    pod.stop().unwrap();

    for name in ["w1", "w2", "w3", "w4"] {
        assert_eq!(versions_of(name), 1, "{name}");
    }
    let report = aggregator
        .get_json(&format!("/coverage/{n}/{n}-p"), Some(&reader))
        .unwrap();
    let hits = |id: &str| {
        report["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["operation_id"] == id)
            .map(|o| o["hits"].clone())
    };
    // Four events in parts of two, and a last part when the watch ended:
    // one call. It counts for the list operation too, beside the list that
    // kubectl makes before it watches.
    assert_eq!(
        hits("watchCoreV1NamespacedConfigMapList"),
        Some(json!(1)),
        "{report:#}"
    );
    assert_eq!(
        hits("listCoreV1NamespacedConfigMap"),
        Some(json!(2)),
        "{report:#}"
    );
}
