//! The interceptor reads a protobuf body into the JSON the real apiserver
//! writes for the same object. Every list the apiserver serves is fetched in
//! both encodings, and each object unchanged between the two fetches must
//! read the same, field for field, zero values and all.

use apiwitness_e2e::{Cluster, TestNamespace};
use apiwitness_record::protobuf::{Decoded, decode_body, decode_watch_frame};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `path` from the apiserver as the cluster admin, asking for `accept`;
/// the body and the content type it came in.
fn fetch(cluster: &Cluster, path: &str, accept: &str) -> (Vec<u8>, String) {
    let pki = Path::new(cluster.var("APIWITNESS_CLUSTER_DIR")).join("pki");
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .args(["-H", &format!("Accept: {accept}")])
        .args(["-w", "\n%{content_type}"])
        .arg(format!("{}{path}", cluster.var("APIWITNESS_APISERVER")))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let split = body
        .iter()
        .rposition(|b| *b == b'\n')
        .expect("the content type line");
    let content_type = String::from_utf8_lossy(&body[split + 1..]).into_owned();
    body.truncate(split);
    (body, content_type)
}

/// Every listable built-in resource the apiserver serves: `(list path,
/// resource)`, each group at each version it serves.
fn listable(cluster: &Cluster) -> Vec<(String, String)> {
    let mut prefixes = vec!["/api/v1".to_string()];
    let raw = |path: &str| -> Value {
        serde_json::from_str(&cluster.kubectl_ok(&["get", "--raw", path]).unwrap()).unwrap()
    };
    // Custom resources are served in JSON only, and a CRD that another test
    // has just made may not be served yet.
    let custom: BTreeSet<String> =
        raw("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|crd| crd["spec"]["group"].as_str().map(str::to_string))
            .collect();
    let groups = raw("/apis");
    for group in groups["groups"].as_array().unwrap() {
        if custom.contains(group["name"].as_str().unwrap_or("")) {
            continue;
        }
        for version in group["versions"].as_array().unwrap() {
            prefixes.push(format!(
                "/apis/{}",
                version["groupVersion"].as_str().unwrap()
            ));
        }
    }
    let mut out = Vec::new();
    for prefix in prefixes {
        let list = raw(&prefix);
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !name.contains('/') && verbs.contains(&"list") {
                out.push((format!("{prefix}/{name}"), name.to_string()));
            }
        }
    }
    out
}

/// The paths at which two documents differ; with the values unless
/// `values_hidden` (a Secret's data must never reach a log).
fn differences(at: &str, a: &Value, b: &Value, values_hidden: bool, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (x.get(k.as_str()), y.get(k.as_str()));
                match (va, vb) {
                    (Some(va), Some(vb)) => {
                        differences(&format!("{at}/{k}"), va, vb, values_hidden, out)
                    }
                    (Some(_), None) => out.push(format!("{at}/{k}: only in the JSON")),
                    (None, Some(_)) => out.push(format!("{at}/{k}: only in the decoded protobuf")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{at}/{i}"), va, vb, values_hidden, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) if values_hidden => out.push(format!(
            "{at}: differs ({} against {})",
            kind_of(a),
            kind_of(b)
        )),
        (a, b) => out.push(format!("{at}: JSON {a}, decoded {b}")),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Items by uid (or name) and resourceVersion.
fn by_version(list: &Value) -> BTreeMap<(String, String), Value> {
    list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            let meta = &item["metadata"];
            let id = meta["uid"]
                .as_str()
                .or(meta["name"].as_str())
                .unwrap_or("")
                .to_string();
            let rv = meta["resourceVersion"].as_str().unwrap_or("").to_string();
            ((id, rv), item.clone())
        })
        .collect()
}

/// Objects of many kinds and shapes: quantities, int-or-strings, inline
/// structs, byte fields, raw extensions, micro-times, CRD schemas.
fn create_objects(cluster: &Cluster, ns: &str) {
    let pod_template = json!({
        "metadata": {"labels": {"app": "pb"}},
        "spec": {"containers": [{
            "name": "c", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "0.1"}},
            "livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 7},
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        }],
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}
    });
    let selector = json!({"matchLabels": {"app": "pb"}});
    let items = json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
         "spec": {"replicas": 1, "selector": selector, "template": pod_template,
                  "strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
         "spec": {"replicas": 1, "serviceName": "svc", "selector": selector, "template": pod_template}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
         "spec": {"selector": selector, "template": pod_template}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
         "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
             "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
         "spec": {"backoffLimit": 2, "podFailurePolicy": {"rules": [{"action": "FailJob",
                  "onExitCodes": {"operator": "In", "values": [42]}}]},
                  "template": {"spec": {"restartPolicy": "Never",
                  "containers": [{"name": "c", "image": "busybox"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
         "spec": {"selector": {"app": "pb"}, "ports": [{"port": 80, "targetPort": "http"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                  "minReplicas": 1, "maxReplicas": 3,
                  "metrics": [{"type": "Resource", "resource": {"name": "memory",
                               "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
         "spec": {"minAvailable": "50%", "selector": selector}},
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
         "spec": {"hard": {"pods": "10", "requests.cpu": "2"}}},
        {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
         "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np"},
         "spec": {"podSelector": selector, "ingress": [{"ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing"},
         "spec": {"rules": [{"host": "pb.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                  "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
         "data": {"a": "b"}, "binaryData": {"bin": "AAEC"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
         "stringData": {"password": "not-a-real-secret"}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
         "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15,
                  "renewTime": "2026-01-02T03:04:05.678901Z"}},
        {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
         "eventTime": "2026-01-02T03:04:05.123456Z", "reportingController": "pb/test",
         "reportingInstance": "i", "action": "Tested", "reason": "Testing", "type": "Normal",
         "regarding": {"kind": "ConfigMap", "name": "cm", "namespace": ns}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "image": "busybox",
                  "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}}],
                  "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}},
                              {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}}]}}]}}
    ]);
    cluster
        .kubectl_stdin(
            &["create", "-n", ns],
            &json!({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        .unwrap();
}

fn create_cluster_objects(cluster: &Cluster, suffix: &str) {
    let crd_group = format!("pb{suffix}.e2e.apiwitness.test");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{crd_group}")},
        "spec": {"group": crd_group, "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 0, "maximum": 100, "default": 3},
                            "ratio": {"type": "number", "multipleOf": 0.5},
                            "mode": {"type": "string", "enum": ["a", "b"]},
                            "port": {"x-kubernetes-int-or-string": true},
                            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                        },
                        "x-kubernetes-validations": [{"rule": "self.size >= 0", "message": "size"}]}
                }}}}]}
    });
    let pem = rcgen::KeyPair::generate()
        .and_then(|key| {
            rcgen::CertificateParams::new(vec!["pb.example".to_string()])?.serialize_request(&key)
        })
        .and_then(|csr| csr.pem())
        .unwrap();
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": format!("pb-{suffix}")},
        "spec": {"request": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem),
                 "signerName": "example.com/pb", "usages": ["digital signature", "client auth"],
                 "expirationSeconds": 3600}
    });
    let priority = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": format!("pb-{suffix}")}, "value": 1000, "description": "pb"});
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": format!("pb-{suffix}")},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["example.com"], "apiVersions": ["v1"],
                 "operations": ["CREATE"], "resources": ["things"]}]},
                 "validations": [{"expression": "true"}], "failurePolicy": "Ignore"}});
    cluster
        .kubectl_stdin(
            &["create"],
            &json!({"apiVersion": "v1", "kind": "List", "items": [crd, csr, priority, policy]}),
        )
        .unwrap();
}

fn delete_cluster_objects(cluster: &Cluster, suffix: &str) {
    for (kind, name) in [
        ("crd", format!("gadgets.pb{suffix}.e2e.apiwitness.test")),
        ("csr", format!("pb-{suffix}")),
        ("priorityclass", format!("pb-{suffix}")),
        ("validatingadmissionpolicy", format!("pb-{suffix}")),
    ] {
        let _ = cluster.kubectl(&["delete", kind, &name, "--ignore-not-found", "--wait=false"]);
    }
}

#[test]
fn every_protobuf_list_reads_as_the_json_the_apiserver_writes() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "pb-bodies");
    let suffix = ns.name.rsplit('-').next().unwrap().to_string();
    create_objects(cluster, &ns.name);
    create_cluster_objects(cluster, &suffix);
    // The controllers make ReplicaSets, Pods, ControllerRevisions,
    // EndpointSlices and Events of these.
    apiwitness_e2e::wait_until(
        "a ReplicaSet and a ControllerRevision",
        std::time::Duration::from_secs(30),
        || {
            cluster
                .kubectl_ok(&[
                    "get",
                    "replicasets,controllerrevisions",
                    "-n",
                    &ns.name,
                    "-o",
                    "name",
                ])
                .ok()
                .filter(|out| out.contains("replicaset") && out.contains("controllerrevision"))
        },
    )
    .unwrap();

    let mut compared: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (path, resource) in listable(cluster) {
        let (pb_body, content_type) =
            fetch(cluster, &path, &format!("{PROTOBUF}, application/json"));
        if !content_type.starts_with(PROTOBUF) {
            // Custom resources and a few others are served in JSON only.
            continue;
        }
        let decoded = match decode_body(&pb_body) {
            Ok(Decoded::Full(v)) => v,
            Ok(Decoded::Partial(p)) => {
                failures.push(format!(
                    "{path}: {} {} is not in the table",
                    p.api_version, p.kind
                ));
                continue;
            }
            Err(e) => {
                failures.push(format!("{path}: {e}"));
                continue;
            }
        };
        let (json_body, _) = fetch(cluster, &path, "application/json");
        let from_json: Value = serde_json::from_slice(&json_body).unwrap();
        for key in ["kind", "apiVersion"] {
            if from_json[key] != decoded[key] {
                failures.push(format!(
                    "{path}: {key} {} against {}",
                    from_json[key], decoded[key]
                ));
            }
        }
        let (a, b) = (by_version(&from_json), by_version(&decoded));
        let hidden = resource == "secrets";
        for (id, item) in &a {
            let Some(other) = b.get(id) else { continue };
            let mut diffs = Vec::new();
            differences("", item, other, hidden, &mut diffs);
            if diffs.is_empty() {
                *compared.entry(path.clone()).or_default() += 1;
            } else {
                failures.push(format!("{path} {}: {}", id.0, diffs.join("; ")));
            }
        }
    }
    delete_cluster_objects(cluster, &suffix);
    eprintln!(
        "compared {} objects of {} resources",
        compared.values().sum::<usize>(),
        compared.len()
    );
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // What this test created, and what the control plane holds of its own,
    // must have been compared.
    for must in [
        "/api/v1/pods",
        "/api/v1/services",
        "/api/v1/configmaps",
        "/api/v1/secrets",
        "/api/v1/resourcequotas",
        "/api/v1/limitranges",
        "/api/v1/namespaces",
        "/api/v1/serviceaccounts",
        "/api/v1/events",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1/controllerrevisions",
        "/apis/batch/v1/jobs",
        "/apis/batch/v1/cronjobs",
        "/apis/autoscaling/v2/horizontalpodautoscalers",
        "/apis/autoscaling/v1/horizontalpodautoscalers",
        "/apis/policy/v1/poddisruptionbudgets",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "/apis/networking.k8s.io/v1/ingresses",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/coordination.k8s.io/v1/leases",
        "/apis/events.k8s.io/v1/events",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
        "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations",
        "/apis/apiregistration.k8s.io/v1/apiservices",
    ] {
        assert!(
            compared.get(must).copied().unwrap_or(0) > 0,
            "no object of {must} was compared; compared: {compared:?}"
        );
    }
}

#[test]
fn a_protobuf_watch_reads_as_the_json_of_each_object() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "pb-watch");
    for i in 0..3 {
        cluster
            .kubectl_ok(&[
                "create",
                "configmap",
                &format!("w{i}"),
                "-n",
                &ns.name,
                &format!("--from-literal=k={i}"),
            ])
            .unwrap();
    }
    // From resourceVersion 0 the apiserver sends an ADDED event for each
    // object there is, then ends the watch at the timeout.
    let path = format!(
        "/api/v1/namespaces/{}/configmaps?watch=1&resourceVersion=0&timeoutSeconds=2",
        ns.name
    );
    let (stream, content_type) = fetch(cluster, &path, PROTOBUF);
    assert!(content_type.starts_with(PROTOBUF), "{content_type}");
    // Each frame: its length (four bytes, big-endian), then the frame.
    let mut rest = &stream[..];
    let mut events = Vec::new();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 4 + len, "a frame cut short");
        events.push(decode_watch_frame(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
    // The three made here, and the namespace's kube-root-ca.crt.
    let names: BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, o)| o["metadata"]["name"].as_str())
        .collect();
    assert!(
        ["w0", "w1", "w2"].iter().all(|n| names.contains(n)),
        "{names:?}"
    );
    for (event_type, object) in &events {
        assert_eq!(event_type, "ADDED");
        let name = object["metadata"]["name"].as_str().unwrap();
        let (json, _) = fetch(
            cluster,
            &format!("/api/v1/namespaces/{}/configmaps/{name}", ns.name),
            "application/json",
        );
        let direct: Value = serde_json::from_slice(&json).unwrap();
        let mut diffs = Vec::new();
        differences("", &direct, object, false, &mut diffs);
        assert!(diffs.is_empty(), "{name}: {}", diffs.join("; "));
    }
}
