//! Provenance benchmark: the versions listing, diff and bisect of one object
//! with 10,000 versions, read from a SQLite store that also holds many other
//! records, as the HTTP routes do (load, order, compute). Not a test: it
//! prints figures.
//!
//!   cargo bench -p apiwitness-aggregator --bench provenance [-- VERSIONS [OTHER_RECORDS]]
//!
//! Baselines, in the same run: reading the same rows from SQLite without
//! decoding them (the store's floor), `json_patch::diff` of the two objects
//! alone (the diff's floor), and bisect over every object decoded (how
//! bisect read them before it probed their text). Targets: diff and bisect
//! under 20 ms.

use apiwitness_aggregator::provenance::history::{self, conditions};
use apiwitness_aggregator::provenance::{ObjectQuery, Source, Version, Who};
use apiwitness_aggregator::store::sqlite::SqliteStore;
use apiwitness_aggregator::store::{EncodedVersion, IngestItem, Store};
use serde_json::json;
use std::time::{Duration, Instant};

// The aggregator's own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn version(i: usize, name: &str, uid: &str) -> Version {
    let object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": (1000 + i).to_string(),
            "generation": i, "labels": {"app": name}, "annotations": {"revision": i.to_string(), "note": "x".repeat(600)}},
        "spec": {"replicas": i % 7, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "web", "image": format!("nginx:1.{}", i % 30), "args": ["--port", "8080"],
                 "env": (0..10).map(|e| json!({"name": format!("VAR_{e}"), "value": format!("{}", (i + e) % 5)})).collect::<Vec<_>>()},
                {"name": "sidecar", "image": "envoy:1.31"}]}}},
        "status": {"observedGeneration": i, "replicas": i % 7},
    });
    Version {
        group: "apps".into(),
        resource: "deployments".into(),
        kind: "Deployment".into(),
        api_version: "apps/v1".into(),
        namespace: "shop".into(),
        name: name.into(),
        uid: uid.into(),
        resource_version: (1000 + i).to_string(),
        generation: Some(i as i64),
        time: format!("2026-11-30T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        verb: "patch".into(),
        source: Source::Write,
        deleted: false,
        partial: false,
        who: Who {
            pod: "shop/web-1".into(),
            service_account: "web".into(),
            user_agent: "kubectl/v1.35.4".into(),
            field_manager: None,
        },
        record: format!("r-{name}-{i}"),
        object: Some(object),
    }
}

fn item(id: String, versions: Vec<Version>) -> IngestItem {
    IngestItem {
        id,
        started_at: "2026-11-30T10:00:00Z".into(),
        pod_namespace: "shop".into(),
        pod_name: "web-1".into(),
        workload: String::new(),
        client: "kubectl/v1.35.4".into(),
        method: "PATCH".into(),
        path: "/apis/apps/v1/namespaces/shop/deployments/x".into(),
        status: 200,
        templates: vec!["/apis/apps/v1/namespaces/{namespace}/deployments/{name}".into()],
        line: "{}".into(),
        line_number: 1,
        fields: Vec::new(),
        later_part: false,
        versions: versions
            .into_iter()
            .map(|v| EncodedVersion::new(v).expect("encode"))
            .collect(),
        attempts: Vec::new(),
    }
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f());
        best = best.min(started.elapsed());
    }
    (best, last.expect("runs > 0"))
}

fn ms(d: Duration) -> String {
    format!("{:>8.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let versions = numbers.first().copied().unwrap_or(10_000);
    let others = numbers.get(1).copied().unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let store = SqliteStore::open(&path).expect("store");

    let started = Instant::now();
    // Other objects' versions first: 20 versions each, so the object's rows
    // sit among many.
    let mut k = 0;
    while k < others {
        let batch: Vec<IngestItem> = (0..500.min(others - k))
            .map(|j| {
                let n = k + j;
                let name = format!("other-{}", n / 20);
                item(
                    format!("o-{n}"),
                    vec![version(n % 20, &name, &format!("uid-{name}"))],
                )
            })
            .collect();
        store.ingest(&batch, &[]).expect("ingest");
        k += batch.len();
    }
    let mut i = 0;
    while i < versions {
        let batch: Vec<IngestItem> = (i..(i + 500).min(versions))
            .map(|n| item(format!("w-{n}"), vec![version(n, "web", "uid-web")]))
            .collect();
        store.ingest(&batch, &[]).expect("ingest");
        i += 500;
    }
    println!(
        "provenance benchmark: {versions} versions of deployments/web among {others} other records' versions (filled in {:.1}s)",
        started.elapsed().as_secs_f64()
    );
    let query = ObjectQuery {
        namespace: "shop".into(),
        resource: "deployments".into(),
        name: "web".into(),
    };

    // Baselines: the same rows, read without decoding, through a connection
    // with the store's page cache.
    let raw = rusqlite::Connection::open(&path).expect("sqlite");
    raw.pragma_update(None, "cache_size", -64 * 1024)
        .expect("cache_size");
    let read_rows = |column: &str| {
        let sql = format!("SELECT {column} FROM versions WHERE namespace = ?1 AND name = ?2");
        timed(5, || {
            let mut select = raw.prepare_cached(&sql).expect("prepare");
            let rows = select
                .query_map(["shop", "web"], |r| r.get::<_, Option<String>>(0))
                .expect("query");
            rows.map(|r| r.expect("row").map_or(0, |t| t.len()))
                .sum::<usize>()
        })
    };
    let (floor, bytes) = read_rows("doc");
    println!(
        "{:<44}{}  ({} rows, {:.1} MB)",
        "baseline: read the documents, no decoding",
        ms(floor),
        versions,
        bytes as f64 / 1e6
    );
    let (objects_floor, bytes) = read_rows("object");
    println!(
        "{:<44}{}  ({:.1} MB)",
        "baseline: read the objects, no decoding",
        ms(objects_floor),
        bytes as f64 / 1e6
    );

    let (listing, _) = timed(5, || {
        history::number(store.versions(&query, false).expect("versions"))
    });
    println!(
        "{:<44}{}  ({:.1}x the baseline)",
        "versions listing (load, decode, order)",
        ms(listing),
        listing.as_secs_f64() / floor.as_secs_f64()
    );
    let (whole, numbered) = timed(3, || {
        history::number(store.versions(&query, true).expect("versions"))
    });
    println!(
        "{:<44}{}  ({:.1}x the baseline)",
        "versions with objects (load, decode, order)",
        ms(whole),
        whole.as_secs_f64() / floor.as_secs_f64()
    );

    let (a, b) = (
        numbered[0].version.object.clone().unwrap(),
        numbered[versions - 1].version.object.clone().unwrap(),
    );
    let (patch_floor, _) = timed(20, || json_patch::diff(&a, &b));
    println!(
        "{:<44}{}",
        "baseline: json_patch::diff of the two objects",
        ms(patch_floor)
    );

    let report = |what: &str, d: Duration| {
        let verdict = if d < Duration::from_millis(20) {
            "met"
        } else {
            "MISSED"
        };
        println!("{what:<44}{}  target < 20 ms: {verdict}", ms(d));
    };
    let (d, _) = timed(5, || {
        history::diff(&numbered, 1, versions, None).expect("diff")
    });
    report("diff 1..N, whole objects (computed)", d);
    let (d, _) = timed(5, || {
        history::diff(
            &numbered,
            1,
            versions,
            Some("spec.template.spec.containers[name=web].image"),
        )
        .expect("diff")
    });
    report("diff 1..N, one nested field (computed)", d);
    let one = conditions(&[(
        "spec.template.spec.containers[name=web].image".into(),
        "nginx:1.29".into(),
    )])
    .expect("conditions");
    let (d, found) = timed(5, || history::bisect(&numbered, &one));
    report("bisect, one condition (computed)", d);
    assert_eq!(found.first, Some(30));
    let two = conditions(&[
        ("spec.replicas".into(), "3".into()),
        (
            "/spec/template/spec/containers/0/env/0/value".into(),
            "3".into(),
        ),
    ])
    .expect("conditions");
    let (d, _) = timed(5, || history::bisect(&numbered, &two));
    report("bisect, two conditions (computed)", d);
    let (d, _) = timed(5, || {
        // As the route does it: the key columns, then the two versions.
        let mut n = history::number(store.version_keys(&query).expect("keys"));
        let ends = [0, versions - 1];
        let keys: Vec<(String, String)> = ends
            .iter()
            .map(|&i| {
                (
                    n[i].version.uid.clone(),
                    n[i].version.resource_version.clone(),
                )
            })
            .collect();
        let whole = store.versions_by_key(&keys).expect("versions");
        for (i, v) in ends.into_iter().zip(whole) {
            n[i].version = v;
        }
        history::diff(&n, 1, versions, Some("spec.replicas")).expect("diff")
    });
    report("diff as the route answers it (keys, two versions, diff)", d);
    let (d, _) = timed(3, || {
        let n = history::number(store.versions(&query, true).expect("versions"));
        history::bisect(&n, &one)
    });
    println!(
        "{:<44}{}  (decoding every object, as before)",
        "baseline: bisect over decoded objects",
        ms(d)
    );
    let route = |conditions: &[history::Condition]| {
        // As the route does it: the key columns, each object's text tested
        // where it is read, the order, and the first version read whole.
        let holds = |object: &[u8]| history::all_hold_in_text(conditions, object);
        let keyed = history::number_with(store.version_keys_where(&query, &holds).expect("keys"));
        let found = history::bisect_states(keyed.iter().map(|(n, held)| (n, *held)));
        let first = &keyed[found.first.expect("found") - 1].0.version;
        let whole = store
            .versions_by_key(&[(first.uid.clone(), first.resource_version.clone())])
            .expect("first version");
        (found, whole)
    };
    let (d, (found, _)) = timed(5, || route(&one));
    assert_eq!(found.first, Some(30));
    report("bisect as the route answers it", d);
    let (d, (found, _)) = timed(5, || route(&two));
    // Bisect over decoded objects agrees.
    assert_eq!(
        found.transitions,
        history::bisect(&numbered, &two).transitions
    );
    report("  the same, two conditions", d);
    // The worst case: the search rules nothing out, every object is probed.
    let everywhere = conditions(&[(
        "spec.template.spec.containers[name=sidecar].image".into(),
        "envoy:1.31".into(),
    )])
    .expect("conditions");
    let (d, (found, _)) = timed(5, || route(&everywhere));
    assert_eq!(found.first, Some(1));
    report("  the same, a condition true in every version", d);
}
