//! The interceptor on the real control plane: unmodified in-cluster clients in
//! a netns pod, redirected by iptables, see what they would see directly, and
//! every exchange arrives as an exact record.

use apiwitness_e2e::certify::{CertifyStandIn, Signer};
use apiwitness_e2e::collector::Collector;
use apiwitness_e2e::intercepted::{InterceptedPod, InterceptorOptions};
use apiwitness_e2e::{
    Cluster, CommandOutput, NetnsPod, TestNamespace, repo_root, wait_until, workspace_binary,
};
use apiwitness_record::{ApiRequest, Exchange, Verb};
use serde_json::{Value, json};
use std::time::Duration;

const WIDGET_CRD: &str = "widgets.e2e.apiwitness.test";

/// A namespace with ServiceAccount `app`, allowed what `admin` allows there
/// plus the test CRD's objects. The CRD is made first, once, whichever
/// test comes first.
fn namespace_with_app(cluster: &'static Cluster, prefix: &str) -> TestNamespace {
    static CRD: std::sync::Once = std::sync::Once::new();
    CRD.call_once(|| ensure_widget_crd(cluster));
    let ns = TestNamespace::with_app(cluster, prefix);
    let n = ns.name.as_str();
    cluster
        .kubectl_ok(&[
            "create",
            "role",
            "widgets",
            "-n",
            n,
            "--verb=*",
            "--resource=widgets.e2e.apiwitness.test",
        ])
        .unwrap();
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "app-widgets",
            "-n",
            n,
            "--role=widgets",
            &format!("--serviceaccount={n}:app"),
        ])
        .unwrap();
    ns
}

fn ensure_widget_crd(cluster: &Cluster) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": WIDGET_CRD},
        "spec": {
            "group": "e2e.apiwitness.test",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    });
    cluster
        .kubectl_stdin(&["apply", "--server-side", "--force-conflicts"], &crd)
        .unwrap();
    cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{WIDGET_CRD}"),
            "--timeout=30s",
        ])
        .unwrap();
}

fn kubectl_path(cluster: &Cluster) -> String {
    cluster.bin("kubectl").to_string_lossy().into_owned()
}

fn start_pod<'a>(
    cluster: &'static Cluster,
    ns: &TestNamespace,
    name: &str,
    collector: &'a Collector,
    certify: &'a CertifyStandIn,
    extra_args: &[&str],
) -> InterceptedPod {
    InterceptedPod::start(
        cluster,
        &format!("{}-{name}", ns.name),
        &ns.name,
        "app",
        &[],
        InterceptorOptions {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            ..InterceptorOptions::shipping_to(&certify.url, &collector.url)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn is_watch(e: &Exchange) -> bool {
    ApiRequest::parse(&e.method, &e.path, &e.query, None).is_ok_and(|r| r.verb == Verb::Watch)
}

/// The records of `method` on exactly `path`.
fn records<'r>(all: &'r [Exchange], method: &str, path: &str) -> Vec<&'r Exchange> {
    all.iter()
        .filter(|e| e.method == method && e.path == path)
        .collect()
}

fn one<'r>(all: &'r [Exchange], method: &str, path: &str, status: u16) -> &'r Exchange {
    let found: Vec<_> = records(all, method, path)
        .into_iter()
        .filter(|e| e.status == status)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {method} {path} {status}, found {}: all records {:#?}",
        found.len(),
        all.iter()
            .map(|e| format!("{} {} {} {}", e.method, e.path, e.query, e.status))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// A body's JSON, as the aggregator stores it: a protobuf body the
/// interceptor shipped as it came is decoded first, and a JSON body that
/// travelled on its own line checked, as the aggregator does.
fn json_of(body: &Option<apiwitness_record::Body>) -> Value {
    let mut body = body.clone();
    if let Some(b) = body.as_mut() {
        apiwitness_record::protobuf::decode_shipped(b);
        apiwitness_record::next_line::read_shipped(b, Some("application/json"));
    }
    match body.as_ref().and_then(|b| b.content.json()) {
        Some(v) => v.into_owned(),
        None => panic!("expected a JSON body, got {body:?}"),
    }
}

/// The records as the aggregator reads them: every gzip body undone, and
/// every protobuf body and watch event's object decoded, that was shipped
/// as it came.
fn decoded_as_the_aggregator_does(all: &[Exchange]) -> Vec<Exchange> {
    let mut all = all.to_vec();
    let mut unbounded = u64::MAX;
    for e in &mut all {
        e.decode_shipped(&mut unbounded);
    }
    all
}

/// Stops the interceptor (SIGTERM flushes its queue) and returns what arrived.
fn stop_and_collect(pod: &mut InterceptedPod, collector: &Collector) -> Vec<Exchange> {
    let status = pod.stop().unwrap();
    assert!(
        status.success(),
        "the interceptor exited with {status} on SIGTERM:\n{}",
        pod.log()
    );
    collector.exchanges()
}

#[test]
fn kubectl_sees_what_it_would_see_directly_and_every_exchange_is_recorded() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-kubectl");
    let n = ns.name.clone();
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);
    // The same ServiceAccount, without interception: what the client would see directly.
    let direct = NetnsPod::add(cluster, &format!("{n}-direct"), &n, "app", &[]).unwrap();
    let kubectl = kubectl_path(cluster);
    let k = kubectl.as_str();
    let run = |args: &[&str]| -> CommandOutput {
        let mut cmd = vec![k];
        cmd.extend_from_slice(args);
        pod.exec(&cmd).unwrap()
    };
    let run_direct = |args: &[&str]| -> CommandOutput {
        let mut cmd = vec![k];
        cmd.extend_from_slice(args);
        direct.exec(&[], &cmd).unwrap()
    };

    let created = run(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=1",
        "-o",
        "json",
    ]);
    assert!(created.success, "{}\n{}", created.stderr, pod.log());
    let created: Value = serde_json::from_str(&created.stdout).unwrap();

    let got = run(&["get", "configmap", "c1", "-o", "json"]);
    let got_direct = run_direct(&["get", "configmap", "c1", "-o", "json"]);
    assert_eq!(
        got.stdout, got_direct.stdout,
        "the same object, byte for byte"
    );
    let got: Value = serde_json::from_str(&got.stdout).unwrap();

    let table = run(&["get", "configmaps"]);
    assert!(
        table.success && table.stdout.contains("c1"),
        "{}",
        table.stderr
    );

    assert!(
        run(&[
            "patch",
            "configmap",
            "c1",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#
        ])
        .success
    );
    assert!(
        run(&[
            "patch",
            "configmap",
            "c1",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/c","value":"3"}]"#
        ])
        .success
    );
    assert!(
        run(&[
            "patch",
            "configmap",
            "c1",
            "--type=strategic",
            "-p",
            r#"{"data":{"d":"4"}}"#
        ])
        .success
    );

    let c2 = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2"},"data":{"x":"y"}}"#;
    let applied = pod
        .exec_stdin(
            &[
                k,
                "apply",
                "--server-side",
                "--field-manager=e2e",
                "-f",
                "-",
            ],
            c2,
        )
        .unwrap();
    assert!(applied.success, "{}", applied.stderr);
    let replaced = pod
        .exec_stdin(
            &[k, "replace", "-f", "-"],
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c2"},"data":{"x":"z"}}"#,
        )
        .unwrap();
    assert!(replaced.success, "{}", replaced.stderr);

    let missing = run(&["get", "configmap", "nope"]);
    let missing_direct = run_direct(&["get", "configmap", "nope"]);
    assert!(!missing.success);
    assert_eq!(missing.stderr, missing_direct.stderr, "the same 404");
    let conflict = run(&["create", "configmap", "c1"]);
    assert!(
        conflict.stderr.contains("already exists"),
        "{}",
        conflict.stderr
    );
    let forbidden = run(&["get", "nodes"]);
    assert_eq!(
        forbidden.stderr,
        run_direct(&["get", "nodes"]).stderr,
        "the same 403"
    );

    let widget = r#"{"apiVersion":"e2e.apiwitness.test/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":3}}"#;
    let w = pod
        .exec_stdin(&[k, "create", "-f", "-", "-o", "json"], widget)
        .unwrap();
    assert!(w.success, "{}", w.stderr);

    // A watch that sees one object arrive.
    let watcher = std::thread::scope(|s| {
        let watch = s.spawn(|| pod.watch_configmaps(k, 4).unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        cluster
            .kubectl_ok(&["create", "configmap", "c3", "-n", &n, "--from-literal=w=1"])
            .unwrap();
        watch.join().unwrap()
    });
    assert!(watcher.stdout.contains("configmap/c3"), "{watcher:?}");

    assert!(run(&["delete", "configmap", "c2"]).success);

    let all = stop_and_collect(&mut pod, &collector);
    let base = format!("/api/v1/namespaces/{n}/configmaps");

    let create = one(&all, "POST", &base, 201);
    // kubectl sends built-in types as protobuf, and asks for them so: both
    // bodies are recorded as the JSON the apiserver would have written. A
    // ConfigMap holds nothing to redact: the interceptor ships it as it
    // came, and the aggregator decodes it (`json_of` does as it does).
    assert_eq!(
        create.request_content_type.as_deref(),
        Some("application/vnd.kubernetes.protobuf")
    );
    for body in [&create.request_body, &create.response_body] {
        assert!(
            matches!(
                body.as_ref().map(|b| &b.content),
                Some(apiwitness_record::BodyContent::Protobuf(apiwitness_record::ProtobufBody {
                    kind,
                    base64: Some(_),
                    metadata: None,
                    ..
                })) if kind == "ConfigMap"
            ),
            "{body:?}"
        );
    }
    let sent = json_of(&create.request_body);
    assert_eq!(
        (
            &sent["kind"],
            &sent["apiVersion"],
            &sent["metadata"]["name"],
            &sent["data"]
        ),
        (
            &json!("ConfigMap"),
            &json!("v1"),
            &json!("c1"),
            &json!({"a": "1"})
        ),
        "{sent}"
    );
    let mut answered = json_of(&create.response_body);
    let managed = answered["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("managedFields"));
    assert_eq!(
        managed.as_ref().and_then(|m| m[0]["manager"].as_str()),
        Some("kubectl-create")
    );
    assert_eq!(
        answered, created,
        "the created object, as kubectl printed it (which hides managedFields)"
    );
    assert!(
        create
            .user_agent
            .as_deref()
            .unwrap_or("")
            .starts_with("kubectl/")
    );
    assert_eq!(create.pod.namespace, n);
    assert_eq!(create.pod.service_account, "app");

    let gets = records(&all, "GET", &format!("{base}/c1"));
    let get = gets.iter().find(|e| e.status == 200).expect("a GET of c1");
    // What the apiserver sent, which kubectl printed less its managedFields.
    let mut recorded = json_of(&get.response_body);
    recorded["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(recorded, got);

    let list = records(&all, "GET", &base)
        .into_iter()
        .find(|e| !is_watch(e))
        .expect("the list");
    assert!(
        list.table,
        "kubectl get asks for a Table: {:?}",
        list.response_content_type
    );

    let patches = records(&all, "PATCH", &format!("{base}/c1"));
    let mut types: Vec<_> = patches
        .iter()
        .map(|e| e.request_content_type.clone().unwrap_or_default())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json"
        ]
    );
    assert!(patches.iter().all(|e| e.status == 200));
    let json_patch = patches
        .iter()
        .find(|e| e.request_content_type.as_deref() == Some("application/json-patch+json"))
        .unwrap();
    assert_eq!(
        json_of(&json_patch.request_body),
        json!([{"op": "add", "path": "/data/c", "value": "3"}])
    );

    let apply = one(&all, "PATCH", &format!("{base}/c2"), 201);
    assert_eq!(
        apply.request_content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(apply.query.contains("fieldManager=e2e"), "{}", apply.query);
    let put = one(&all, "PUT", &format!("{base}/c2"), 200);
    assert_eq!(json_of(&put.response_body)["data"], json!({"x": "z"}));

    let not_found = one(&all, "GET", &format!("{base}/nope"), 404);
    assert_eq!(
        json_of(&not_found.response_body)["reason"],
        json!("NotFound")
    );
    let conflict = one(&all, "POST", &base, 409);
    assert_eq!(
        json_of(&conflict.response_body)["reason"],
        json!("AlreadyExists")
    );
    let forbidden = one(&all, "GET", "/api/v1/nodes", 403);
    assert_eq!(
        json_of(&forbidden.response_body)["reason"],
        json!("Forbidden")
    );

    let widget_create = one(
        &all,
        "POST",
        &format!("/apis/e2e.apiwitness.test/v1/namespaces/{n}/widgets"),
        201,
    );
    assert_eq!(
        json_of(&widget_create.response_body)["spec"],
        json!({"size": 3})
    );

    let watch = records(&all, "GET", &base)
        .into_iter()
        .find(|e| is_watch(e))
        .expect("the watch");
    let events = &watch.watch.as_ref().expect("watch events").events;
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "ADDED" && e.object["metadata"]["name"] == "c3"),
        "{events:?}"
    );
    assert!(watch.response_body.is_none());

    one(&all, "DELETE", &format!("{base}/c2"), 200);
    // Nothing recorded twice: every id is unique.
    let mut ids: Vec<_> = all.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
}

#[test]
fn python_client_workload_is_recorded_with_deletecollection_and_watch() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-python");
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);
    let script = repo_root().join("tests/python/workload.py");
    let out = pod
        .exec(&["python3", script.to_str().unwrap(), &ns.name])
        .unwrap();
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let seen: Value = serde_json::from_str(out.stdout.trim()).unwrap();

    let all = stop_and_collect(&mut pod, &collector);
    let base = format!("/api/v1/namespaces/{}/configmaps", ns.name);
    let creates = records(&all, "POST", &base);
    let created = |name: &str| {
        creates
            .iter()
            .find(|e| json_of(&e.request_body)["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no create of {name}"))
    };
    let create = created("py-1");
    assert_eq!(create.status, 201);
    // The large one's request body travelled apart too.
    assert!(matches!(
        created("py-large")
            .request_body
            .as_ref()
            .map(|b| &b.content),
        Some(apiwitness_record::BodyContent::NextLine(_))
    ));
    assert!(
        create
            .user_agent
            .as_deref()
            .unwrap_or("")
            .starts_with("OpenAPI-Generator/")
    );
    let read = one(&all, "GET", &format!("{base}/py-1"), 200);
    assert_eq!(
        json_of(&read.response_body)["metadata"]["resourceVersion"],
        seen["read_resource_version"]
    );
    // 40 KiB of JSON with nothing to redact in it: it travelled on the
    // line after its record's, unchecked, exactly as the client got it.
    let large = one(&all, "GET", &format!("{base}/py-large"), 200);
    let body = large.response_body.as_ref().unwrap();
    let apiwitness_record::BodyContent::NextLine(next) = &body.content else {
        panic!(
            "not on a line of its own: {}",
            format!("{:?}", body.content)
                .chars()
                .take(200)
                .collect::<String>()
        );
    };
    // Less the line break the apiserver ends it with.
    let sent = seen["large_body"].as_str().unwrap();
    assert_eq!(next.text().unwrap()[..], *sent.trim_end().as_bytes());
    assert_eq!(body.size, sent.len() as u64);
    assert_eq!(large.format, apiwitness_record::FORMAT_VERSION);
    assert_eq!(
        json_of(&large.response_body),
        serde_json::from_str::<Value>(sent).unwrap()
    );
    let watch = records(&all, "GET", &base)
        .into_iter()
        .find(|e| is_watch(e))
        .expect("watch");
    let names: Vec<_> = watch
        .watch
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| e.object["metadata"]["name"].clone())
        .collect();
    assert!(names.contains(&json!("py-1")), "{names:?}");
    let collection = one(&all, "DELETE", &base, 200);
    assert_eq!(
        json_of(&collection.response_body)["kind"],
        json!("ConfigMapList")
    );
    one(&all, "GET", &format!("{base}/py-gone"), 404);
}

#[test]
fn kube_rs_workload_is_recorded_as_it_saw_it() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-kube-rs");
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);
    let workload = workspace_binary("kube-rs-workload");
    let out = pod.exec(&[workload.to_str().unwrap(), &ns.name]).unwrap();
    assert!(out.success, "{}\n{}\n{}", out.stdout, out.stderr, pod.log());
    let seen: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(seen["missing"], json!(true));
    assert_eq!(seen["applied_data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        seen["events"],
        json!([["ADDED", "rs-1"], ["MODIFIED", "rs-1"]]),
        "the watch replayed the create and the apply"
    );

    let all = stop_and_collect(&mut pod, &collector);
    let base = format!("/api/v1/namespaces/{}/configmaps", ns.name);
    let create = one(&all, "POST", &base, 201);
    assert_eq!(
        json_of(&create.request_body)["data"],
        json!({"a": "1"}),
        "kube-rs sends JSON"
    );
    assert_eq!(
        json_of(&create.response_body)["metadata"]["resourceVersion"],
        seen["created"]
    );
    let read = one(&all, "GET", &format!("{base}/rs-1"), 200);
    assert_eq!(
        json_of(&read.response_body)["metadata"]["resourceVersion"],
        seen["read"]
    );
    let apply = one(&all, "PATCH", &format!("{base}/rs-1"), 200);
    assert_eq!(
        apply.request_content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        apply.query.contains("fieldManager=kube-rs-workload"),
        "{}",
        apply.query
    );
    assert_eq!(
        json_of(&apply.response_body)["metadata"]["resourceVersion"],
        seen["applied"]
    );
    let watch = records(&all, "GET", &base)
        .into_iter()
        .find(|e| is_watch(e))
        .expect("the watch's record");
    let events: Vec<Value> = watch
        .watch
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| json!([e.event_type, e.object["metadata"]["name"]]))
        .collect();
    assert_eq!(Value::Array(events), seen["events"]);
    one(&all, "DELETE", &format!("{base}/rs-1"), 200);
    one(&all, "GET", &format!("{base}/rs-missing"), 404);
}

#[test]
fn secret_values_and_tokens_never_leave_the_pod() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-secret");
    let n = ns.name.clone();
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);
    let kubectl = kubectl_path(cluster);
    let k = kubectl.as_str();
    let secret_value = format!("hunter2-{}", std::process::id());
    let string_value = format!("stringly-{}", std::process::id());
    let created = pod
        .exec(&[
            k,
            "create",
            "secret",
            "generic",
            "s1",
            &format!("--from-literal=password={secret_value}"),
        ])
        .unwrap();
    assert!(created.success, "{}", created.stderr);
    let manifest = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "stringData": {"key": string_value}});
    assert!(
        pod.exec_stdin(&[k, "apply", "-f", "-"], &manifest.to_string())
            .unwrap()
            .success
    );
    assert!(
        pod.exec_stdin(
            &[k, "apply", "--server-side", "-f", "-"],
            &manifest.to_string()
        )
        .unwrap()
        .success
    );
    let got = pod.exec(&[k, "get", "secret", "s1", "-o", "json"]).unwrap();
    assert!(
        got.stdout.contains("password"),
        "the client itself still gets the value"
    );
    assert!(
        pod.exec(&[k, "get", "secrets", "-o", "yaml"])
            .unwrap()
            .success
    );
    assert!(
        pod.exec(&[
            k,
            "patch",
            "secret",
            "s1",
            "-p",
            &format!(r#"{{"stringData":{{"more":"{string_value}"}}}}"#)
        ])
        .unwrap()
        .success
    );
    // A list of Secrets large enough for the apiserver to gzip it (over
    // 128 KiB): undone and redacted in the sidecar, never shipped as it came.
    let filler = "x".repeat(2048);
    let many: Vec<Value> = (0..70)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("many-{i}")},
                   "stringData": {"password": secret_value, "filler": filler}})
        })
        .collect();
    cluster
        .kubectl_stdin(
            &["create", "-n", &n],
            &json!({"apiVersion": "v1", "kind": "List", "items": many}),
        )
        .unwrap();
    let listed = pod.exec(&[k, "get", "secrets", "-o", "json"]).unwrap();
    assert!(listed.success, "{}", listed.stderr);
    assert!(listed.stdout.contains("many-69"));
    let token = pod.exec(&[k, "create", "token", "app"]).unwrap();
    assert!(token.success, "{}", token.stderr);
    let token = token.stdout.trim().to_string();
    assert!(token.len() > 100);
    let pod_token = std::fs::read_to_string(
        cluster_pod_dir(cluster, &format!("{n}-p")).join("serviceaccount/token"),
    )
    .unwrap();

    let all = stop_and_collect(&mut pod, &collector);
    // As shipped, and with any protobuf body that went as it came decoded,
    // so that a value hidden in its base64 would show too.
    let everything = serde_json::to_string(&all).unwrap()
        + &serde_json::to_string(&decoded_as_the_aggregator_does(&all)).unwrap()
        + &pod.log();
    let encoded = base64_encode(secret_value.as_bytes());
    for needle in [
        secret_value.as_str(),
        &encoded,
        &string_value,
        &base64_encode(string_value.as_bytes()),
        &token,
        pod_token.trim(),
    ] {
        assert!(
            !everything.contains(needle),
            "a secret value or token leaked into a record or log line"
        );
    }
    // The structure stays: keys are kept, values marked.
    // kubectl patch reads the object first: the first GET is kubectl get's.
    let get = records(&all, "GET", &format!("/api/v1/namespaces/{n}/secrets/s1"))[0];
    let data = json_of(&get.response_body)["data"].clone();
    assert!(
        data["password"].as_str().unwrap().starts_with("<redacted "),
        "{data}"
    );
    assert!(
        all.iter()
            .any(|e| e.path.ends_with("/serviceaccounts/app/token") && e.status == 201)
    );
    let list = records(&all, "GET", &format!("/api/v1/namespaces/{n}/secrets"))
        .into_iter()
        .find(|e| {
            e.response_body
                .as_ref()
                .is_some_and(|b| b.content_encoding.as_deref() == Some("gzip"))
        })
        .expect("the list of Secrets, gzip");
    let items = json_of(&list.response_body)["items"].clone();
    let many = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["metadata"]["name"].as_str().unwrap().starts_with("many-"))
        .collect::<Vec<_>>();
    assert_eq!(many.len(), 70);
    assert!(
        many.iter().all(|i| i["data"]["password"]
            .as_str()
            .unwrap()
            .starts_with("<redacted ")),
        "{}",
        many[0]["data"]
    );
}

/// curl in the pod, with its ServiceAccount's token, asking the apiserver
/// for `path` in `accept`: prints the status and the content type.
fn curl_as_pod(pod: &InterceptedPod, accept: &str, path: &str) -> CommandOutput {
    pod.exec(&[
        "sh",
        "-c",
        &format!(
            "curl -sS -o /dev/null -w '%{{http_code}} %{{content_type}}' \
             --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt \
             -H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" \
             -H 'Accept: {accept}' \"https://$KUBERNETES_SERVICE_HOST{path}\""
        ),
    ])
    .unwrap()
}

/// An aggregator older than the sidecar reads only the record formats it
/// knows. With `--aggregator-format`, every body that a newer format would
/// have left to the aggregator is decoded in the sidecar, and no line says
/// a newer format.
/// In `ns`, 80 ConfigMaps of 2 KiB, a list over 128 KiB, which the
/// apiserver gzips for kubectl, and one ConfigMap `large` of 20 KiB: JSON
/// large enough to go unchecked on its own line, to an aggregator that
/// reads that. Gives the ConfigMaps' path, and `large`'s value.
fn create_config_maps_for_every_format(cluster: &Cluster, ns: &TestNamespace) -> (String, String) {
    let config_map = |name: String, value: String| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name}, "data": {"f": value}})
    };
    let large = "y".repeat(20 << 10);
    let items: Vec<Value> = (0..80)
        .map(|i| config_map(format!("big-{i}"), "x".repeat(2048)))
        .chain([config_map("large".into(), large.clone())])
        .collect();
    cluster
        .kubectl_stdin(
            &["create", "-n", &ns.name],
            &json!({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        .unwrap();
    (format!("/api/v1/namespaces/{}/configmaps", ns.name), large)
}

#[test]
fn an_older_aggregator_gets_only_lines_of_its_format() {
    use apiwitness_record::BodyContent;
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-older");
    let (base, _) = create_config_maps_for_every_format(cluster, &ns);
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    for format in [
        apiwitness_record::FORMAT_GZIP,
        apiwitness_record::FORMAT_PLAIN,
    ] {
        let collector = Collector::start(cluster).unwrap();
        let flag = format.to_string();
        let name = format!("f{format}");
        let mut pod = start_pod(
            cluster,
            &ns,
            &name,
            &collector,
            &certify,
            &["--aggregator-format", &flag],
        );
        let kubectl = kubectl_path(cluster);
        let list = pod
            .exec(&[&kubectl, "get", "configmaps", "-o", "json"])
            .unwrap();
        assert!(list.success, "{}", list.stderr);
        for accept in ["application/json", "application/vnd.kubernetes.protobuf"] {
            // Unindented: the apiserver indents JSON for curl, and a body
            // with line breaks is checked here whatever the format.
            let got = curl_as_pod(&pod, accept, &format!("{base}/large?pretty=false"));
            assert_eq!(got.stdout, format!("200 {accept}"), "{}", got.stderr);
        }
        let shipped = stop_and_collect(&mut pod, &collector);
        assert!(!shipped.is_empty());
        for e in &shipped {
            assert!(
                e.format <= format,
                "format {} in a line to an aggregator of format {format}: {} {}",
                e.format,
                e.method,
                e.path
            );
        }

        let list = records(&shipped, "GET", &base)
            .into_iter()
            .find(|e| e.status == 200)
            .expect("the list");
        let list_body = list.response_body.as_ref().unwrap();
        assert_eq!(list_body.content_encoding.as_deref(), Some("gzip"));
        let large = records(&shipped, "GET", &format!("{base}/large"));
        let json_get = large
            .iter()
            .find(|e| e.response_content_type.as_deref() == Some("application/json"))
            .expect("the JSON GET");
        let protobuf_get = large
            .iter()
            .find(|e| e.response_content_type.as_deref() != Some("application/json"))
            .expect("the protobuf GET");
        let json_body = &json_get.response_body.as_ref().unwrap().content;
        let protobuf_body = &protobuf_get.response_body.as_ref().unwrap().content;
        // Checked here, never on a line of its own, below format 4.
        assert!(
            matches!(json_body, BodyContent::RawJson(_)),
            "{json_body:?}"
        );
        if format == apiwitness_record::FORMAT_GZIP {
            // Format 3 reads a gzip body as it came, and a protobuf one.
            assert!(
                matches!(list_body.content, BodyContent::Gzip(_)),
                "{:?}",
                list.error
            );
            assert!(
                matches!(protobuf_body, BodyContent::Protobuf(p) if p.base64.is_some()),
                "{protobuf_body:?}"
            );
        } else {
            // Format 2: the list undone and the protobuf decoded, here.
            assert!(
                matches!(list_body.content, BodyContent::RawJson(_)),
                "{:?}",
                list.error
            );
            assert!(
                matches!(protobuf_body, BodyContent::RawJson(_)),
                "{protobuf_body:?}"
            );
        }
        let decoded = decoded_as_the_aggregator_does(&shipped);
        let list = records(&decoded, "GET", &base)
            .into_iter()
            .find(|e| e.status == 200)
            .expect("the list");
        let listed = json_of(&list.response_body)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
            .filter(|name| name.starts_with("big-") || name == "large")
            .count();
        assert_eq!(listed, 81);
        for get in [json_get, protobuf_get] {
            assert_eq!(
                json_of(&get.response_body)["data"]["f"],
                json!("y".repeat(20 << 10))
            );
        }
    }
}

/// An aggregator of format 3, older than the format header, and a sidecar
/// told nothing of it: the sidecar finds out from the first line of format
/// 4 that the aggregator cannot read. That record is written again at
/// format 2 and sent again, and the records made after it are made for
/// format 3. Nothing is lost.
#[test]
fn a_record_an_older_aggregator_cannot_read_is_sent_again_and_later_ones_made_for_it() {
    use apiwitness_record::{BodyContent, FORMAT_GZIP, FORMAT_PLAIN};
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-learn");
    let (base, large) = create_config_maps_for_every_format(cluster, &ns);
    let collector = Collector::start(cluster).unwrap();
    collector.read_formats_up_to(FORMAT_GZIP);
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);

    let large_path = format!("{base}/large");
    // The apiserver indents JSON for curl unless told not to, and a body
    // with line breaks is checked in the sidecar whatever the format.
    let large_json = format!("{large_path}?pretty=false");
    let got = curl_as_pod(&pod, "application/json", &large_json);
    assert_eq!(got.stdout, "200 application/json", "{}", got.stderr);
    wait_until(
        "the refused record, sent again",
        Duration::from_secs(60),
        || {
            collector
                .exchanges()
                .into_iter()
                .any(|e| e.path == large_path)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", pod.log()));
    assert_eq!(
        pod.metric("apiwitness_interceptor_lines_written_again_total"),
        1.0
    );
    // The record, and the line its body travelled on.
    assert_eq!(collector.refused(), 2);

    let kubectl = kubectl_path(cluster);
    let list = pod
        .exec(&[&kubectl, "get", "configmaps", "-o", "json"])
        .unwrap();
    assert!(list.success, "{}", list.stderr);
    let got = curl_as_pod(&pod, "application/json", &large_json);
    assert_eq!(got.stdout, "200 application/json", "{}", got.stderr);
    let refused = pod.metric("apiwitness_interceptor_lines_refused_total");
    let written_again = pod.metric("apiwitness_interceptor_lines_written_again_total");
    let shipped = stop_and_collect(&mut pod, &collector);
    assert_eq!(refused, 0.0);
    assert_eq!(written_again, 1.0, "only the first record was refused");
    assert_eq!(collector.refused(), 2);

    let gets = records(&shipped, "GET", &large_path);
    let formats: Vec<u32> = gets.iter().map(|e| e.format).collect();
    // The first written again at format 2; the second made for format 3,
    // which leaves a JSON body in its line.
    assert_eq!(formats, [FORMAT_PLAIN, FORMAT_PLAIN]);
    for get in &gets {
        let body = get.response_body.as_ref().unwrap();
        assert!(matches!(body.content, BodyContent::RawJson(_)), "{body:?}");
        assert_eq!(json_of(&get.response_body)["data"]["f"], json!(large));
    }
    // A gzip body, which format 3 reads, still goes as it came.
    let list = records(&shipped, "GET", &base)
        .into_iter()
        .find(|e| e.status == 200)
        .expect("the list");
    assert_eq!(list.format, FORMAT_GZIP);
    assert!(matches!(
        list.response_body.as_ref().map(|b| &b.content),
        Some(BodyContent::Gzip(_))
    ));
    assert!(shipped.iter().all(|e| e.format <= FORMAT_GZIP));
}

#[test]
fn protobuf_gzip_and_exec_are_recorded() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-wire");
    let n = ns.name.clone();
    // A list large enough for the apiserver to gzip it (over 128 KiB).
    let filler = "x".repeat(2048);
    for i in 0..80 {
        cluster
            .kubectl_ok(&[
                "create",
                "configmap",
                &format!("big-{i}"),
                "-n",
                &n,
                &format!("--from-literal=f={filler}"),
            ])
            .unwrap();
    }
    cluster
        .kubectl_stdin(
            &["create", "-n", &n],
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target"},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}),
        )
        .unwrap();
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    let mut pod = start_pod(cluster, &ns, "p", &collector, &certify, &[]);
    let kubectl = kubectl_path(cluster);
    let k = kubectl.as_str();

    let big = pod.exec(&[k, "get", "configmaps", "-o", "json"]).unwrap();
    assert!(big.success, "{}", big.stderr);
    let protobuf = curl_as_pod(
        &pod,
        "application/vnd.kubernetes.protobuf",
        &format!("/api/v1/namespaces/{n}/configmaps/big-1"),
    );
    assert_eq!(
        protobuf.stdout, "200 application/vnd.kubernetes.protobuf",
        "{}",
        protobuf.stderr
    );
    // A watch in protobuf: the apiserver's frames, each event bare and its
    // object enveloped, from resourceVersion 0 (an ADDED event for each).
    let protobuf_watch = curl_as_pod(
        &pod,
        "application/vnd.kubernetes.protobuf;stream=watch",
        &format!("/api/v1/namespaces/{n}/configmaps?watch=1&resourceVersion=0&timeoutSeconds=1"),
    );
    assert!(
        protobuf_watch
            .stdout
            .starts_with("200 application/vnd.kubernetes.protobuf"),
        "{} {}",
        protobuf_watch.stdout,
        protobuf_watch.stderr
    );
    let exec = pod.exec(&[k, "exec", "target", "--", "ls"]).unwrap();
    assert!(
        !exec.success,
        "no kubelet runs: exec must fail at the apiserver"
    );

    let shipped = stop_and_collect(&mut pod, &collector);
    let base = format!("/api/v1/namespaces/{n}/configmaps");
    // Nothing in it to redact: the list went as it came, gzip, in a line
    // of the format that reads that.
    let list = records(&shipped, "GET", &base)
        .into_iter()
        .find(|e| e.status == 200)
        .expect("the list");
    assert!(
        matches!(
            list.response_body.as_ref().map(|b| &b.content),
            Some(apiwitness_record::BodyContent::Gzip(_))
        ),
        "{:?}",
        list.error
    );
    assert_eq!(list.format, apiwitness_record::FORMAT_GZIP);
    let all = decoded_as_the_aggregator_does(&shipped);
    let list = records(&all, "GET", &base)
        .into_iter()
        .find(|e| e.status == 200)
        .expect("the list");
    assert_eq!(list.format, apiwitness_record::FORMAT_GZIP);
    let body = list.response_body.as_ref().unwrap();
    assert!(
        matches!(body.content, apiwitness_record::BodyContent::RawJson(_)),
        "size {} truncated {} error {:?}",
        body.size,
        body.truncated,
        list.error
    );
    assert_eq!(
        body.content_encoding.as_deref(),
        Some("gzip"),
        "the apiserver gzips a list this large"
    );
    assert!(
        body.size > 128 * 1024,
        "the true, decompressed size: {}",
        body.size
    );
    let items = json_of(&list.response_body)["items"]
        .as_array()
        .unwrap()
        .clone();
    let big = items
        .iter()
        .filter(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("big-")
        })
        .count();
    assert_eq!(big, 80);

    let pb = one(&all, "GET", &format!("{base}/big-1"), 200);
    assert_eq!(
        pb.response_content_type.as_deref(),
        Some("application/vnd.kubernetes.protobuf")
    );
    // Read into the very JSON the apiserver writes for it.
    let direct: Value = serde_json::from_str(
        &cluster
            .kubectl_ok(&["get", "--raw", &format!("{base}/big-1")])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json_of(&pb.response_body), direct);

    // Every event of the protobuf watch, each object as the JSON of a GET.
    // 80 objects of 2 KiB are more than one part's 64 KiB: the watch comes
    // in parts, in order of their index. A ConfigMap holds nothing to
    // redact: each event's object was shipped as it came, and is read as
    // the aggregator reads it.
    let watch_shipped = shipped
        .iter()
        .filter(|e| e.path == base && e.query.contains("watch=1"));
    assert!(
        watch_shipped
            .flat_map(|e| e.watch.iter().flat_map(|w| &w.events))
            .all(|e| e.object["protobuf"]["base64"].is_string()),
        "every event's object left for the aggregator"
    );
    let mut parts: Vec<_> = all
        .iter()
        .filter(|e| e.path == base && e.query.contains("watch=1"))
        .collect();
    assert!(!parts.is_empty(), "no record of the protobuf watch");
    parts.sort_by_key(|e| e.part.as_ref().map_or(0, |p| p.index));
    assert!(
        parts.len() > 1,
        "{} part(s) for 160 KiB of events",
        parts.len()
    );
    let events: Vec<_> = parts
        .iter()
        .flat_map(|e| &e.watch.as_ref().expect("its events").events)
        .collect();
    assert!(
        parts
            .iter()
            .all(|e| e.watch.as_ref().is_some_and(|w| w.cut == 0))
    );
    let big_1 = events
        .iter()
        .find(|e| e.object["metadata"]["name"] == json!("big-1"))
        .unwrap_or_else(|| panic!("{} events, none of big-1", events.len()));
    assert_eq!(big_1.event_type, "ADDED");
    assert_eq!(big_1.object, direct);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("big-"))
            .count(),
        80
    );

    let exec_record = all
        .iter()
        .find(|e| e.path == format!("/api/v1/namespaces/{n}/pods/target/exec"))
        .unwrap_or_else(|| {
            panic!(
                "no exec record; kubectl said {:?}; records: {:?}",
                exec.stderr,
                all.iter()
                    .map(|e| (&e.method, &e.path, e.status))
                    .collect::<Vec<_>>()
            )
        });
    assert!(exec_record.status >= 400, "{}", exec_record.status);
    assert!(exec_record.query.contains("command=ls"));
}

#[test]
fn records_survive_an_unreachable_aggregator_and_drops_are_reported() {
    let cluster = Cluster::shared();
    let ns = namespace_with_app(cluster, "icpt-down");
    let collector = Collector::start(cluster).unwrap();
    let certify = CertifyStandIn::start(cluster, Signer::ClusterCa).unwrap();
    // Room for 10 whole records, and 10 stripped of their bodies, while the
    // aggregator is down.
    let mut pod = start_pod(
        cluster,
        &ns,
        "p",
        &collector,
        &certify,
        &["--queue-capacity", "10"],
    );
    let kubectl = kubectl_path(cluster);
    let k = kubectl.as_str();
    collector.set_available(false);
    for i in 0..25 {
        // --raw: exactly one request each, whose record can be told apart.
        let out = pod
            .exec(&[
                k,
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{}/configmaps/missing-{i}", ns.name),
            ])
            .unwrap();
        assert!(
            out.stderr.contains("NotFound"),
            "client requests never fail for the aggregator: {}",
            out.stderr
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    assert!(collector.exchanges().is_empty());
    collector.set_available(true);
    let all = wait_until(
        "the queued records to arrive",
        Duration::from_secs(60),
        || {
            let got = collector.exchanges();
            (got.len() >= 10 && !collector.drops().is_empty()).then_some(got)
        },
    )
    .unwrap();
    let summary: Vec<_> = all
        .iter()
        .map(|e| format!("{} {}?{} {}", e.method, e.path, e.query, e.status))
        .collect();
    let numbered = |stripped: bool| -> Vec<u32> {
        let mut n: Vec<u32> = all
            .iter()
            .filter(|e| e.path.contains("/configmaps/missing-"))
            .filter(|e| e.response_body.as_ref().is_some_and(|b| b.truncated) == stripped)
            .map(|e| e.path.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        n.sort();
        n
    };
    // The newest ten were kept whole; the ten before them kept their call
    // and status but not their bodies; the oldest were dropped and reported.
    assert_eq!(
        numbered(false),
        (15..25).collect::<Vec<_>>(),
        "{summary:#?}"
    );
    assert_eq!(numbered(true), (5..15).collect::<Vec<_>>(), "{summary:#?}");
    assert!(
        all.iter()
            .filter(|e| e.path.contains("/configmaps/missing-"))
            .all(|e| e.status == 404 && e.response_body.as_ref().is_some_and(|b| b.size > 0)),
        "{summary:#?}"
    );
    // Every record is either here or counted in a drop report: the five
    // oldest gets, and whatever kubectl did before them.
    let dropped: u64 = collector.drops().iter().map(|d| d.dropped).sum();
    assert!(dropped >= 5, "dropped {dropped}");
    assert_eq!(
        all.len(),
        20,
        "the newest ten whole and ten stripped arrive"
    );
    pod.stop().unwrap();
}

fn cluster_pod_dir(cluster: &Cluster, pod: &str) -> std::path::PathBuf {
    std::path::Path::new(cluster.var("APIWITNESS_CLUSTER_DIR"))
        .join("tmpfs/pods")
        .join(pod)
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
