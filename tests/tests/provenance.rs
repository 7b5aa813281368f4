//! Provenance on the real control plane: kubeprovenance's own scenario (a
//! Postgres custom resource created, patched three ways, its status updated,
//! deleted) and a Deployment rolled out three times, both written through the
//! interceptor; and versions written by someone else, seen only through the
//! workload's watch. The aggregator answers versions, spechistory, diff and
//! bisect from the records alone.

use apiwitness_e2e::aggregator::{Aggregator, StoreKind, token_of};
use apiwitness_e2e::certify::CertifyStandIn;
use apiwitness_e2e::intercepted::{InterceptedPod, InterceptorOptions};
use apiwitness_e2e::postgres_crd::CrdScenario;
use apiwitness_e2e::{Cluster, TestNamespace, repo_root, wait_until};
use serde_json::{Value, json};
use std::io::BufRead;
use std::time::Duration;

fn setup(
    prefix: &str,
    store: StoreKind,
) -> (&'static Cluster, TestNamespace, Aggregator, CertifyStandIn) {
    // The workload may manage Postgres objects; a reader may get them;
    // nobody may not.
    let s = CrdScenario::start(
        prefix,
        store,
        "postgreses.postgrescontroller.kubeplus,deployments.apps,configmaps",
    );
    (s.cluster, s.ns, s.aggregator, s.certify)
}

fn intercepted(
    cluster: &'static Cluster,
    ns: &str,
    aggregator: &Aggregator,
    certify: &CertifyStandIn,
) -> InterceptedPod {
    let ingest = aggregator.ingest_url();
    InterceptedPod::start_app(
        cluster,
        ns,
        InterceptorOptions::shipping_to(&certify.url, &ingest),
    )
}

fn run(pod: &InterceptedPod, kubectl: &str, args: &[&str]) -> String {
    let mut command = vec![kubectl];
    command.extend_from_slice(args);
    let out = pod.exec(&command).unwrap();
    assert!(out.success, "kubectl {args:?}: {}", out.stderr);
    out.stdout
}

fn run_stdin(pod: &InterceptedPod, kubectl: &str, args: &[&str], input: &Value) -> String {
    let mut command = vec![kubectl];
    command.extend_from_slice(args);
    let out = pod.exec_stdin(&command, &input.to_string()).unwrap();
    assert!(out.success, "kubectl {args:?}: {}", out.stderr);
    out.stdout
}

fn postgres(ns: &str, replicas: i64, image: &str, role: &str) -> Value {
    json!({"apiVersion": "postgrescontroller.kubeplus/v1", "kind": "Postgres",
        "metadata": {"name": "client25", "namespace": ns},
        "spec": {"replicas": replicas, "image": image, "users": [{"name": "alice", "role": role}]}})
}

#[test]
fn the_seed_scenario_a_custom_resource_written_many_ways_on_sqlite() {
    seed_scenario("prov-crd-sqlite", StoreKind::Sqlite);
}

#[test]
fn the_seed_scenario_a_custom_resource_written_many_ways_on_postgres() {
    seed_scenario("prov-crd-pg", StoreKind::Postgres);
}

fn seed_scenario(prefix: &str, store: StoreKind) {
    let (cluster, ns, aggregator, certify) = setup(prefix, store);
    let n = ns.name.as_str();
    let mut pod = intercepted(cluster, n, &aggregator, &certify);
    let kubectl = cluster.bin("kubectl");
    let k = kubectl.to_str().unwrap();

    run_stdin(
        &pod,
        k,
        &["create", "-f", "-"],
        &postgres(n, 1, "postgres:15", "reader"),
    );
    run(
        &pod,
        k,
        &[
            "patch",
            "postgres",
            "client25",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ],
    );
    run(
        &pod,
        k,
        &[
            "patch",
            "postgres",
            "client25",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/image","value":"postgres:16"}]"#,
        ],
    );
    run_stdin(
        &pod,
        k,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &postgres(n, 3, "postgres:16", "admin"),
    );
    run(
        &pod,
        k,
        &[
            "patch",
            "postgres",
            "client25",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"ready":true}}"#,
        ],
    );
    // A conflict: an update carrying a stale resourceVersion changes nothing.
    let mut stale = postgres(n, 9, "postgres:9", "nobody");
    stale["metadata"]["resourceVersion"] = json!("1");
    let conflict = pod
        .exec_stdin(&[k, "replace", "-f", "-"], &stale.to_string())
        .unwrap();
    assert!(
        !conflict.success && conflict.stderr.contains("modified"),
        "{conflict:?}"
    );
    run(&pod, k, &["delete", "postgres", "client25"]);
    pod.stop().unwrap();

    let reader = token_of(cluster, n, "reader").unwrap();
    let base = format!("/provenance/namespaces/{n}/postgreses/client25");
    let listing = wait_until("the versions of client25", Duration::from_secs(20), || {
        aggregator
            .get_json(&format!("{base}/versions"), Some(&reader))
            .ok()
            .filter(|v| v["versions"].as_array().is_some_and(|a| a.len() >= 6))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", aggregator.log()));
    let versions = listing["versions"].as_array().unwrap();
    let verbs: Vec<&str> = versions
        .iter()
        .map(|v| v["verb"].as_str().unwrap())
        .collect();
    assert_eq!(
        verbs,
        [
            "create",
            "patch",
            "patch",
            "apply",
            "patch status",
            "delete"
        ],
        "{listing:#}"
    );
    assert!(
        versions
            .iter()
            .all(|v| v["source"] == "write" && v["who"]["pod"] == format!("{n}/{n}-p"))
    );
    assert!(versions.iter().all(|v| v["who"]["serviceAccount"] == "app"));
    assert!(versions.iter().all(|v| {
        v["who"]["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl/")
    }));
    assert_eq!(versions[3]["who"]["fieldManager"], "kubectl");
    assert_eq!(versions[5]["deleted"], true);
    assert_eq!(listing["object"]["kind"], "Postgres");
    let rvs: Vec<u64> = versions[..5]
        .iter()
        .map(|v| v["resourceVersion"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    assert!(versions.iter().all(|v| v["uid"] == versions[0]["uid"]));
    assert_eq!(
        versions
            .iter()
            .map(|v| v["ordinal"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // The refused write is an attempt, not a version.
    let attempts = listing["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(
        (attempts[0]["verb"].as_str(), attempts[0]["status"].as_u64()),
        (Some("update"), Some(409))
    );
    // The Kind, and the resource with its group, name the same object.
    for alias in [
        "Postgres",
        "postgres",
        "postgreses.postgrescontroller.kubeplus",
    ] {
        let other = aggregator
            .get_json(
                &format!("/provenance/namespaces/{n}/{alias}/client25/versions"),
                Some(&reader),
            )
            .unwrap();
        assert_eq!(other["versions"].as_array().unwrap().len(), 6, "{alias}");
    }

    let history = aggregator
        .get_json(&format!("{base}/spechistory"), Some(&reader))
        .unwrap();
    let specs: Vec<Value> = history["spechistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spec"].clone())
        .collect();
    let replicas: Vec<Value> = specs.iter().map(|s| s["replicas"].clone()).collect();
    assert_eq!(
        replicas,
        [
            json!(1),
            json!(2),
            json!(2),
            json!(3),
            json!(3),
            Value::Null
        ]
    );
    let images: Vec<Value> = specs.iter().map(|s| s["image"].clone()).collect();
    assert_eq!(
        images[..5],
        [
            json!("postgres:15"),
            json!("postgres:15"),
            json!("postgres:16"),
            json!("postgres:16"),
            json!("postgres:16")
        ]
    );
    let ranged = aggregator
        .get_json(&format!("{base}/spechistory?start=2&end=3"), Some(&reader))
        .unwrap();
    assert_eq!(ranged["spechistory"].as_array().unwrap().len(), 2);

    let diff = aggregator
        .get_json(&format!("{base}/diff?start=1&end=4"), Some(&reader))
        .unwrap();
    let changes = diff["changes"].as_array().unwrap();
    let change = |path: &str| {
        changes
            .iter()
            .find(|c| c["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no change at {path}: {diff:#}"))
    };
    assert_eq!(
        change("spec.replicas"),
        json!({"path": "spec.replicas", "before": 1, "after": 3})
    );
    assert_eq!(change("spec.image")["after"], "postgres:16");
    assert_eq!(
        change("spec.users[name=alice].role"),
        json!({"path": "spec.users[name=alice].role", "before": "reader", "after": "admin"})
    );
    let patch = diff["patch"].as_array().unwrap();
    assert!(
        patch
            .iter()
            .any(|op| op["op"] == "replace" && op["path"] == "/spec/replicas" && op["value"] == 3),
        "{patch:?}"
    );
    let nested = aggregator
        .get_json(
            &format!("{base}/diff?start=1&end=5&field=spec.users%5Bname%3Dalice%5D.role"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(
        nested["changes"],
        json!([{"path": "spec.users[name=alice].role", "before": "reader", "after": "admin"}])
    );
    let pointer = aggregator
        .get_json(
            &format!("{base}/diff?start=2&end=3&field=/spec/image"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(pointer["changes"][0]["after"], "postgres:16");
    let text = aggregator
        .get_text(
            &format!("{base}/diff?start=1&end=2&format=yaml-diff"),
            Some(&reader),
        )
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with('-') && l.trim_end().ends_with("replicas: 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with('+') && l.trim_end().ends_with("replicas: 2")),
        "{text}"
    );

    let bisect = aggregator
        .get_json(
            &format!("{base}/bisect?field=spec.replicas&value=2"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(bisect["first"]["ordinal"], 2, "{bisect:#}");
    let transitions: Vec<(u64, &str)> = bisect["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["ordinal"].as_u64().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(transitions, [(2, "entered"), (4, "left")]);
    let both = aggregator
        .get_json(&format!("{base}/bisect?field=spec.replicas&value=3&field2=spec.users%5Bname%3Dalice%5D.role&value2=admin"), Some(&reader))
        .unwrap();
    assert_eq!(both["first"]["ordinal"], 4);
    let never = aggregator
        .get_json(
            &format!("{base}/bisect?field=spec.replicas&value=7"),
            Some(&reader),
        )
        .unwrap();
    assert!(never["first"].is_null());

    // Errors say what is wrong, and a reader who may not get the object is refused.
    for (path, code) in [
        (format!("{base}/diff?start=1&end=99"), 404),
        (format!("{base}/diff?start=1&end=2&field=spec..x"), 400),
        (format!("{base}/diff?start=1"), 400),
        (format!("{base}/bisect"), 400),
        (
            format!("/provenance/namespaces/{n}/postgreses/nobody-here/versions"),
            404,
        ),
        (format!("{base}/history"), 404),
    ] {
        let (status, body) = aggregator.get(&path, Some(&reader)).unwrap();
        assert_eq!(status, code, "{path}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    let nobody = token_of(cluster, n, "nobody").unwrap();
    let (status, body) = aggregator
        .get(&format!("{base}/versions"), Some(&nobody))
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("may not get postgreses.postgrescontroller.kubeplus"),
        "{body}"
    );
    // Nor does such a reader learn which names were never seen: refused
    // too, where a reader of the namespace is told there is nothing.
    for view in ["versions", "bisect?field=spec.replicas&value=3"] {
        let path = format!("/provenance/namespaces/{n}/postgreses/nobody-here/{view}");
        let (status, body) = aggregator.get(&path, Some(&nobody)).unwrap();
        assert_eq!(status, 403, "{path}: {body}");
        let (status, body) = aggregator.get(&path, Some(&reader)).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
    }
}

#[test]
fn a_deployment_rolled_out_three_times_and_a_second_writer_seen_through_a_watch() {
    let (cluster, ns, aggregator, certify) = setup("prov-dep", StoreKind::Sqlite);
    let n = ns.name.as_str();
    let mut pod = intercepted(cluster, n, &aggregator, &certify);

    // The workload's watch is open while an administrator, outside the pod
    // and apiwitness, writes a ConfigMap three times.
    let watcher_script = repo_root().join("tests/python/watch_configmaps.py");
    let mut watcher = pod
        .pod
        .exec_command(&[], &["python3", watcher_script.to_str().unwrap(), n, "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "watching");
    let mut written = Vec::new();
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": n}, "data": {"v": v}});
    for (verb, v) in [("create", "1"), ("replace", "2"), ("replace", "3")] {
        let out = cluster
            .kubectl_stdin(&[verb, "-o", "json"], &cm(v))
            .unwrap();
        let object: Value = serde_json::from_str(&out).unwrap();
        written.push(
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let seen: Vec<Value> = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    assert!(watcher.wait().unwrap().success());
    assert_eq!(
        seen.iter().filter(|e| e[1] == "shared").count(),
        3,
        "{seen:?}"
    );

    // The Deployment, by the Python client (JSON bodies), through the interceptor.
    let rollout_script = repo_root().join("tests/python/rollout.py");
    let out = pod
        .exec(&[
            "python3",
            rollout_script.to_str().unwrap(),
            n,
            "web",
            "nginx:1.25",
            "nginx:1.26",
            "nginx:1.27",
        ])
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let rollout_rvs: Vec<String> = serde_json::from_str(out.stdout.trim()).unwrap();
    // kubectl writes built-in kinds in protobuf. A ConfigMap holds nothing
    // to redact, so the interceptor ships its bodies as they came, and the
    // aggregator decodes them into the versions below.
    let kubectl = cluster.bin("kubectl");
    let created = run(
        &pod,
        kubectl.to_str().unwrap(),
        &[
            "create",
            "configmap",
            "by-kubectl",
            "-n",
            n,
            "--from-literal=k=v",
        ],
    );
    assert!(created.contains("by-kubectl"), "{created}");
    pod.stop().unwrap();

    let reader = token_of(cluster, n, "reader").unwrap();
    let listing = wait_until(
        "the versions of the shared ConfigMap",
        Duration::from_secs(20),
        || {
            aggregator
                .get_json(
                    &format!("/provenance/namespaces/{n}/configmaps/shared/versions"),
                    Some(&reader),
                )
                .ok()
                .filter(|v| v["versions"].as_array().is_some_and(|a| a.len() >= 3))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", aggregator.log()));
    let versions = listing["versions"].as_array().unwrap();
    let rvs: Vec<&str> = versions
        .iter()
        .map(|v| v["resourceVersion"].as_str().unwrap())
        .collect();
    assert_eq!(
        rvs,
        written.iter().map(String::as_str).collect::<Vec<_>>(),
        "{listing:#}"
    );
    assert!(
        versions
            .iter()
            .all(|v| v["source"] == "observed" && v["verb"] == "watch"),
        "{listing:#}"
    );
    let history = aggregator
        .get_json(
            &format!("/provenance/namespaces/{n}/configmaps/shared/spechistory"),
            Some(&reader),
        )
        .unwrap();
    let data: Vec<Value> = history["spechistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spec"]["data"]["v"].clone())
        .collect();
    assert_eq!(data, [json!("1"), json!("2"), json!("3")]);

    let history = aggregator
        .get_json(
            &format!("/provenance/namespaces/{n}/configmaps/by-kubectl/spechistory"),
            Some(&reader),
        )
        .unwrap();
    let written: Vec<(&Value, &Value)> = history["spechistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["source"], &s["spec"]["data"]))
        .collect();
    assert_eq!(
        written,
        [(&json!("write"), &json!({"k": "v"}))],
        "{history:#}"
    );

    let base = format!("/provenance/namespaces/{n}/deployments/web");
    let listing = aggregator
        .get_json(&format!("{base}/versions"), Some(&reader))
        .unwrap();
    let writes: Vec<&Value> = listing["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["source"] == "write")
        .collect();
    let write_rvs: Vec<&str> = writes
        .iter()
        .map(|v| v["resourceVersion"].as_str().unwrap())
        .collect();
    assert_eq!(
        write_rvs,
        rollout_rvs.iter().map(String::as_str).collect::<Vec<_>>(),
        "{listing:#}"
    );
    let ordinal = |rv: &str| {
        writes.iter().find(|v| v["resourceVersion"] == rv).unwrap()["ordinal"]
            .as_u64()
            .unwrap()
    };
    let (first, last) = (ordinal(&rollout_rvs[0]), ordinal(&rollout_rvs[2]));
    let image = "spec.template.spec.containers%5Bname%3Dweb%5D.image";
    let diff = aggregator
        .get_json(
            &format!("{base}/diff?start={first}&end={last}&field={image}"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(
        diff["changes"],
        json!([{"path": "spec.template.spec.containers[name=web].image", "before": "nginx:1.25", "after": "nginx:1.27"}])
    );
    let bisect = aggregator
        .get_json(
            &format!("{base}/bisect?field={image}&value=nginx:1.26"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(
        bisect["first"]["resourceVersion"],
        rollout_rvs[1].as_str(),
        "{bisect:#}"
    );
    // By Kind, with the group.
    let by_kind = aggregator
        .get_json(
            &format!("/provenance/namespaces/{n}/Deployment.apps/web/versions"),
            Some(&reader),
        )
        .unwrap();
    assert_eq!(
        by_kind["versions"].as_array().unwrap().len(),
        listing["versions"].as_array().unwrap().len()
    );
}
