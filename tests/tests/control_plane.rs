//! The local control plane is a real Kubernetes: the spec it serves, the CSR
//! signing it does, the in-cluster clients it authorizes, the webhooks it calls
//! through Services, and the workloads its controllers roll out.

use apiwitness_e2e::TestServer;
use apiwitness_e2e::tls::TestCa;
use apiwitness_e2e::{Cluster, CommandOutput, NetnsPod, TestNamespace, repo_root, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn shared_spec_dir() -> std::path::PathBuf {
    std::env::var_os("APIWITNESS_SHARED_OPENAPI")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("../shared/k8s-openapi/v1.35"))
}

fn pinned_kube_version() -> String {
    let versions = std::fs::read_to_string(repo_root().join("hack/versions.env")).unwrap();
    versions
        .lines()
        .find_map(|l| l.strip_prefix("KUBE_VERSION="))
        .expect("KUBE_VERSION in hack/versions.env")
        .to_string()
}

#[test]
fn serves_the_pinned_release_and_its_full_openapi_v2_spec() {
    let cluster = Cluster::shared();
    let version: Value =
        serde_json::from_str(&cluster.kubectl_ok(&["get", "--raw", "/version"]).unwrap()).unwrap();
    assert_eq!(version["gitVersion"], json!(pinned_kube_version()));
    assert_eq!(version["minor"], json!("35"));

    let live: Value = serde_json::from_str(
        &cluster
            .kubectl_ok(&["get", "--raw", "/openapi/v2"])
            .unwrap(),
    )
    .unwrap();
    let reference: Value = serde_json::from_slice(
        &std::fs::read(shared_spec_dir().join("swagger.json")).expect("reference swagger.json"),
    )
    .unwrap();
    let paths = |doc: &Value| -> BTreeSet<String> {
        doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect()
    };
    // Other tests (and the demo) add custom resources to this cluster: their
    // paths are not Kubernetes' own.
    let custom_groups = cluster
        .kubectl_ok(&["get", "crd", "-o", "jsonpath={.items[*].spec.group}"])
        .unwrap();
    let custom: Vec<String> = custom_groups
        .split_whitespace()
        .map(|g| format!("/apis/{g}/"))
        .collect();
    let live_paths: BTreeSet<String> = paths(&live)
        .into_iter()
        .filter(|p| !custom.iter().any(|c| p.starts_with(c.as_str())))
        .collect();
    let reference_paths = paths(&reference);
    let missing: Vec<_> = reference_paths.difference(&live_paths).collect();
    let extra: Vec<_> = live_paths.difference(&reference_paths).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "live /openapi/v2 differs from the v1.35 reference: {} missing {:?}, {} extra {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(10).collect::<Vec<_>>()
    );
}

#[test]
fn kubelet_serving_csr_is_signed_by_the_controller_manager_and_verifies_against_pod_ca() {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "csr");

    let mut params = CertificateParams::new(vec![
        "kubernetes.default.svc".to_string(),
        cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP").to_string(),
    ])
    .unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "system:node:apiwitness-test");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    let key = KeyPair::generate().unwrap();
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let name = format!("{}-serving", ns.name);
    cluster
        .kubectl_stdin(
            &["create"],
            &json!({
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"name": name},
                "spec": {
                    "signerName": "kubernetes.io/kubelet-serving",
                    "request": base64_encode(csr_pem.as_bytes()),
                    "usages": ["digital signature", "server auth"],
                    "expirationSeconds": 3600
                }
            }),
        )
        .unwrap();
    let _delete = Defer(|| {
        let _ = cluster.kubectl(&["delete", "csr", &name, "--wait=false"]);
    });
    cluster
        .kubectl_ok(&["certificate", "approve", &name])
        .unwrap();
    let cert_b64 = wait_until(
        "the controller-manager to sign the CSR",
        Duration::from_secs(30),
        || {
            let csr = cluster.kubectl_json(&["get", "csr", &name]).ok()?;
            csr["status"]["certificate"].as_str().map(str::to_string)
        },
    )
    .unwrap();
    let cert_pem = String::from_utf8(base64_decode(&cert_b64)).unwrap();

    // The ca.crt a pod receives, read from inside a pod, must verify the cert.
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "default", &[]).unwrap();
    let pod_ca = pod
        .exec(
            &[],
            &[
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            ],
        )
        .unwrap()
        .ok("reading ca.crt in the pod")
        .unwrap()
        .stdout;
    let root_ca_configmap = cluster
        .kubectl_json(&["get", "configmap", "kube-root-ca.crt", "-n", &ns.name])
        .unwrap();
    assert_eq!(
        root_ca_configmap["data"]["ca.crt"].as_str(),
        Some(pod_ca.as_str())
    );

    let dir = tempfile_dir();
    std::fs::write(dir.join("ca.crt"), &pod_ca).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    let verify = CommandOutput::run(
        Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(dir.join("ca.crt"))
            .arg(dir.join("cert.pem")),
    )
    .unwrap();
    assert!(
        verify.success,
        "openssl verify: {} {}",
        verify.stdout, verify.stderr
    );
    // And it is a different CA from a fresh one: verification can fail.
    let other = TestCa::new("not-the-cluster-ca").unwrap();
    std::fs::write(dir.join("other.crt"), &other.cert_pem).unwrap();
    let refused = CommandOutput::run(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("other.crt"))
            .arg(dir.join("cert.pem")),
    )
    .unwrap();
    assert!(
        !refused.success,
        "a foreign CA must not verify the certificate"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Tests add pods in parallel. Two pods given one address would each get
/// some of the other's replies: a connection that works one way only.
#[test]
fn pods_added_at_the_same_time_get_addresses_of_their_own() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "podaddr");
    let pods: Vec<NetnsPod> = std::thread::scope(|scope| {
        let adds: Vec<_> = (0..8)
            .map(|i| {
                let name = format!("{}-{i}", ns.name);
                let namespace = ns.name.clone();
                scope.spawn(move || NetnsPod::add(cluster, &name, &namespace, "default", &[]))
            })
            .collect();
        adds.into_iter()
            .map(|add| add.join().unwrap().unwrap())
            .collect()
    });
    let addresses: BTreeSet<String> = pods.iter().map(|p| p.ip().unwrap()).collect();
    assert_eq!(addresses.len(), pods.len(), "{addresses:?}");
}

#[test]
fn in_cluster_kubectl_and_python_client_in_a_netns_pod_reach_the_kubernetes_service() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "incluster");
    cluster
        .kubectl_ok(&["create", "serviceaccount", "reader", "-n", &ns.name])
        .unwrap();
    cluster
        .kubectl_ok(&[
            "create",
            "role",
            "configmap-reader",
            "-n",
            &ns.name,
            "--verb=get,list",
            "--resource=configmaps",
        ])
        .unwrap();
    cluster
        .kubectl_ok(&[
            "create",
            "rolebinding",
            "reader",
            "-n",
            &ns.name,
            "--role=configmap-reader",
            &format!("--serviceaccount={}:reader", ns.name),
        ])
        .unwrap();
    cluster
        .kubectl_ok(&[
            "create",
            "configmap",
            "greeting",
            "-n",
            &ns.name,
            "--from-literal=hello=world",
        ])
        .unwrap();
    let pod = NetnsPod::add(cluster, &format!("{}-p", ns.name), &ns.name, "reader", &[]).unwrap();
    let kubectl = cluster.bin("kubectl");
    let kubectl = kubectl.to_str().unwrap();

    // kubectl, with no kubeconfig, uses the in-cluster config: the Service IP,
    // the mounted token, the mounted CA and the mounted namespace.
    let whoami = pod
        .exec(&[], &[kubectl, "auth", "whoami", "-o", "json"])
        .unwrap()
        .ok("kubectl auth whoami in the pod")
        .unwrap();
    let whoami: Value = serde_json::from_str(&whoami.stdout).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        json!(format!("system:serviceaccount:{}:reader", ns.name))
    );
    let got = pod
        .exec(
            &[],
            &[
                kubectl,
                "get",
                "configmap",
                "greeting",
                "-o",
                "jsonpath={.data.hello}",
                "-v=6",
            ],
        )
        .unwrap()
        .ok("kubectl get configmap in the pod")
        .unwrap();
    assert_eq!(got.stdout, "world");
    let service_url = format!(
        "https://{}:443/",
        cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP")
    );
    assert!(
        got.stderr.contains(&service_url),
        "kubectl should have gone to {service_url}: {}",
        got.stderr
    );
    let forbidden = pod.exec(&[], &[kubectl, "get", "secrets", "-v=6"]).unwrap();
    assert!(!forbidden.success, "listing secrets must be refused");
    assert!(
        forbidden.stderr.contains("403 Forbidden") && forbidden.stderr.contains("forbidden"),
        "expected a 403 from the apiserver: {}",
        forbidden.stderr
    );

    let probe = repo_root().join("tests/python/incluster_probe.py");
    let python = pod
        .exec(
            &[],
            &["python3", probe.to_str().unwrap(), &ns.name, "greeting"],
        )
        .unwrap()
        .ok("the Python client in the pod")
        .unwrap();
    let seen: Value = serde_json::from_str(python.stdout.trim()).unwrap();
    assert_eq!(seen["host"], json!(service_url.trim_end_matches('/')));
    assert!(
        seen["configmaps"]
            .as_array()
            .unwrap()
            .contains(&json!("greeting"))
    );
    assert_eq!(seen["configmap_data"], json!({"hello": "world"}));
    assert_eq!(
        seen["username"],
        json!(format!("system:serviceaccount:{}:reader", ns.name))
    );
    assert_eq!(seen["secrets_list_status"], json!(403));
}

#[test]
fn mutating_webhook_referenced_by_service_is_called_on_pod_create() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "webhook");
    let ca = TestCa::new("test-webhook-ca").unwrap();
    let service_dns = format!("webhook.{}.svc", ns.name);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let calls = calls.clone();
        axum::Router::new().route(
            "/mutate",
            axum::routing::post(move |axum::Json(review): axum::Json<Value>| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let patch = json!([{
                        "op": "add",
                        "path": "/metadata/annotations",
                        "value": {"webhook.apiwitness.test/seen": "true"}
                    }]);
                    axum::Json(json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {
                            "uid": review["request"]["uid"],
                            "allowed": true,
                            "patchType": "JSONPatch",
                            "patch": base64_encode(patch.to_string().as_bytes()),
                        }
                    }))
                }
            }),
        )
    };
    let server = TestServer::start_tls(
        &format!("{}:0", cluster.node_ip()),
        ca.serving_cert(&[&service_dns]).unwrap(),
        app,
    )
    .unwrap();

    // A Service with no selector: like a webhook Deployment's Service, it is
    // reached through its ClusterIP, which the local kube-proxy stand-in serves.
    cluster
        .kubectl_stdin(
            &["create"],
            &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "webhook", "namespace": ns.name},
                "spec": {"ports": [{"port": 443, "targetPort": server.addr.port()}]}
            }),
        )
        .unwrap();
    let service_ref = format!("{}/webhook", ns.name);
    cluster
        .serve(&service_ref, &server.addr.to_string())
        .unwrap();
    let _unserve = Defer(|| {
        let _ = cluster.unserve(&service_ref);
    });
    let config_name = format!("{}-test", ns.name);
    cluster
        .kubectl_stdin(
            &["create"],
            &json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": config_name},
                "webhooks": [{
                    "name": "pods.webhook.apiwitness.test",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                    "clientConfig": {
                        "service": {"namespace": ns.name, "name": "webhook", "path": "/mutate"},
                        "caBundle": base64_encode(ca.cert_pem.as_bytes()),
                    },
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
                }]
            }),
        )
        .unwrap();
    let _delete = Defer(|| {
        let _ = cluster.kubectl(&["delete", "mutatingwebhookconfiguration", &config_name]);
    });

    // The webhook configuration takes effect once the apiserver's informer has
    // seen it; until then a create goes through unmutated, so retry on fresh pods.
    let mutated = wait_until(
        "the apiserver to call the webhook",
        Duration::from_secs(30),
        || {
            let pod_name = format!("p{}", calls.load(Ordering::SeqCst) + rand_suffix());
            let created = cluster
                .kubectl_stdin(
                    &["create", "-o", "json"],
                    &json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod_name, "namespace": ns.name},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                    }),
                )
                .ok()?;
            let pod: Value = serde_json::from_str(&created).ok()?;
            pod["metadata"]["annotations"]["webhook.apiwitness.test/seen"]
                .as_str()
                .map(str::to_string)
        },
    )
    .unwrap();
    assert_eq!(mutated, "true");
    assert!(calls.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_deployment_yields_pods_through_the_real_controllers() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::new(cluster, "deploy");
    cluster
        .kubectl_ok(&[
            "create",
            "deployment",
            "web",
            "-n",
            &ns.name,
            "--image=registry.k8s.io/pause:3.10",
            "--replicas=2",
        ])
        .unwrap();
    let pods = wait_until(
        "two Pods of deployment web",
        Duration::from_secs(60),
        || {
            let list = cluster
                .kubectl_json(&["get", "pods", "-n", &ns.name, "-l", "app=web"])
                .ok()?;
            let items = list["items"].as_array()?.clone();
            (items.len() == 2).then_some(items)
        },
    )
    .unwrap();
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], json!("ReplicaSet"));
        // The ServiceAccount admission plugin gave it the token volume.
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes.iter().any(|v| v["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access-")),
            "{volumes:?}"
        );
    }
    let rs = cluster
        .kubectl_json(&["get", "replicasets", "-n", &ns.name, "-l", "app=web"])
        .unwrap();
    assert_eq!(
        rs["items"][0]["metadata"]["ownerReferences"][0]["kind"],
        json!("Deployment")
    );
}

struct Defer<F: FnMut()>(F);
impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn rand_suffix() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize % 100_000)
        .unwrap_or(0)
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "apiwitness-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
