//! The interceptor at its edges, on the real control plane: bad and hostile
//! clients, certificate rotation under live connections, a CA that comes
//! into its CA file while it runs, explicit mode, and an apiserver it
//! cannot reach.

use apiwitness_e2e::certify::{CertifyStandIn, Signer};
use apiwitness_e2e::collector::Collector;
use apiwitness_e2e::intercepted::{AppPod, InterceptedPod, InterceptorOptions};
use apiwitness_e2e::tls::TestCa;
use apiwitness_e2e::{Cluster, TestNamespace, repo_root, wait_until};
use std::sync::Arc;
use std::time::Duration;

const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
fn malformed_stalled_and_huge_requests_leave_memory_bounded_and_others_unaffected() {
    let cluster = Cluster::shared();
    let mut edge = AppPod::start(Cluster::shared(), "edge-abuse", |_| {});
    let (pod, collector) = (&mut edge.pod, &edge.collector);
    let n = edge.ns.name.clone();
    let kubectl = cluster.bin("kubectl");
    let k = kubectl.to_str().unwrap();
    let baseline = pod.peak_rss_kib().unwrap();

    let tls_to_service = format!(
        "openssl s_client -quiet -connect $KUBERNETES_SERVICE_HOST:443 -CAfile {SA}/ca.crt"
    );
    // Garbage where an HTTP request should be: a 400 and a closed connection.
    let garbage = pod
        .exec(&[
            "sh",
            "-c",
            &format!(
                "printf 'NOT HTTP AT ALL\\r\\n\\r\\n' | timeout 10 {tls_to_service} 2>/dev/null"
            ),
        ])
        .unwrap();
    assert!(garbage.stdout.starts_with("HTTP/1.1 400"), "{garbage:?}");

    std::thread::scope(|s| {
        // A client that sends half a request line and stalls.
        let stall = s.spawn(|| {
            pod.exec(&["sh", "-c", &format!("(printf 'GET /api'; sleep 8) | timeout 12 {tls_to_service} >/dev/null 2>&1; echo done")])
                .unwrap()
        });
        // A 100 MB body, streamed: the apiserver refuses it past its own limit.
        let huge = s.spawn(|| {
            pod.exec(&[
                "sh",
                "-c",
                &format!(
                    "head -c 100000000 /dev/zero | tr '\\0' 'x' | curl -sS -o /dev/null -w '%{{http_code}}' -X PUT \
                     --cacert {SA}/ca.crt -H \"Authorization: Bearer $(cat {SA}/token)\" \
                     -H 'Content-Type: application/json' --data-binary @- \
                     https://$KUBERNETES_SERVICE_HOST/api/v1/namespaces/{n}/configmaps/huge"
                ),
            ])
            .unwrap()
        });
        // Meanwhile, an ordinary client is served as usual.
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..5 {
            let out = pod
                .exec(&[k, "create", "configmap", &format!("ok-{i}")])
                .unwrap();
            assert!(
                out.success,
                "an ordinary request failed beside the abuse: {}",
                out.stderr
            );
        }
        let huge = huge.join().unwrap();
        assert!(
            huge.stdout.starts_with('4') || !huge.stderr.is_empty(),
            "the apiserver refuses a 100 MB body: {huge:?}"
        );
        assert!(stall.join().unwrap().stdout.contains("done"));
    });

    let peak = pod.peak_rss_kib().unwrap();
    assert!(
        peak < baseline + 48 * 1024,
        "memory stays bounded: peak {peak} KiB against {baseline} KiB at start"
    );
    pod.stop().unwrap();
    let all = collector.exchanges();
    let put = all
        .iter()
        .find(|e| e.method == "PUT" && e.path.ends_with("/configmaps/huge"))
        .expect("the huge PUT is recorded");
    let body = put.request_body.as_ref().expect("its body, truncated");
    assert!(body.truncated, "only the first MiB is kept");
    assert!(
        body.size >= 1 << 20,
        "the size says how much passed: {}",
        body.size
    );
    assert_eq!(
        all.iter()
            .filter(|e| e.method == "POST" && e.status == 201)
            .count(),
        5
    );
}

#[test]
fn certificates_rotate_under_live_connections_without_a_failed_request() {
    let cluster = Cluster::shared();
    let ns = TestNamespace::with_app(cluster, "edge-rotate");
    let n = ns.name.clone();
    let ca = Arc::new(TestCa::new("apiwitness-test-sidecar-ca").unwrap());
    // The app trusts the cluster CA and the sidecar's CA; the sidecar itself
    // verifies the apiserver against the same bundle.
    let bundle = std::env::temp_dir().join(format!("apiwitness-{n}-bundle.crt"));
    let cluster_ca = std::fs::read_to_string(cluster.var("APIWITNESS_CLUSTER_CA")).unwrap();
    std::fs::write(&bundle, format!("{cluster_ca}{}", ca.cert_pem)).unwrap();
    let certify = CertifyStandIn::start(
        cluster,
        Signer::TestCa {
            ca: ca.clone(),
            // Renewed at 70% of a validity that starts a second back, a
            // certificate has 2.7 s left when its successor is asked for:
            // with 4 s it had 1.5, and a renewal on two cores busy with the
            // other tests' 100 MB body once came later than that.
            lifetime: Duration::from_secs(8),
        },
    )
    .unwrap();
    let collector = Collector::start(cluster).unwrap();
    let mut pod = InterceptedPod::start(
        cluster,
        &format!("{n}-p"),
        &n,
        "app",
        &["--ca", bundle.to_str().unwrap()],
        InterceptorOptions::shipping_to(&certify.url, &collector.url),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let script = repo_root().join("tests/python/keepalive_probe.py");
    let out = pod
        .exec(&["python3", script.to_str().unwrap(), &n, "16"])
        .unwrap();
    // When the sidecar loaded and planned to renew each certificate.
    let renewals = || {
        pod.log()
            .lines()
            .filter(|line| line.contains("certificate"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.success,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        renewals()
    );
    let seen: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        seen["failures"],
        serde_json::json!([]),
        "no request failed across rotations; the sidecar's certificates:\n{}",
        renewals()
    );
    assert!(seen["requests"].as_u64().unwrap() >= 20);
    let serials = seen["serials"].as_array().unwrap();
    assert!(
        serials.len() >= 3,
        "new connections saw rotated certificates: {serials:?}"
    );
    assert!(certify.issued() >= 3, "issued {}", certify.issued());
    pod.stop().unwrap();
    let _ = std::fs::remove_file(bundle);
}

#[test]
fn explicit_mode_serves_clients_pointed_at_the_sidecar() {
    let cluster = Cluster::shared();
    let service = cluster.var("APIWITNESS_KUBERNETES_SERVICE_IP").to_string();
    let mut edge = AppPod::start(Cluster::shared(), "edge-explicit", |opts| {
        opts.explicit_upstream = Some(format!("https://{service}:443"));
    });
    let (pod, collector) = (&mut edge.pod, &edge.collector);
    let n = edge.ns.name.clone();
    let kubectl = cluster.bin("kubectl");
    // What the injector's env mode does: the app's KUBERNETES_SERVICE_* point at the sidecar.
    let out = pod
        .pod
        .exec(
            &[
                ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", "15443"),
            ],
            &[
                kubectl.to_str().unwrap(),
                "create",
                "configmap",
                "via-env",
                "-v=6",
            ],
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("https://127.0.0.1:15443/"),
        "{}",
        out.stderr
    );
    pod.stop().unwrap();
    let all = collector.exchanges();
    assert!(
        all.iter().any(|e| e.method == "POST"
            && e.path == format!("/api/v1/namespaces/{n}/configmaps")
            && e.status == 201),
        "{all:#?}"
    );
}

#[test]
fn an_unreachable_apiserver_is_a_failure_for_the_client_never_a_fake_response() {
    let cluster = Cluster::shared();
    let mut edge = AppPod::start(Cluster::shared(), "edge-down", |opts| {
        // A port on the node where nothing listens.
        opts.explicit_upstream = Some(format!("https://{}:1", cluster.node_ip()));
    });
    let (pod, collector) = (&mut edge.pod, &edge.collector);
    let kubectl = cluster.bin("kubectl");
    let out = pod
        .pod
        .exec(
            &[
                ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", "15443"),
            ],
            &[
                kubectl.to_str().unwrap(),
                "get",
                "--raw",
                "/api/v1/namespaces/default/configmaps",
            ],
        )
        .unwrap();
    assert!(!out.success);
    assert!(
        !out.stderr.contains("Error from server"),
        "no response was made up: {}",
        out.stderr
    );
    pod.stop().unwrap();
    let failed = collector
        .exchanges()
        .into_iter()
        .find(|e| e.path == "/api/v1/namespaces/default/configmaps")
        .expect("the failed exchange is recorded");
    assert_eq!(failed.status, 0);
    assert!(
        failed.error.is_some(),
        "the record says why there is no response"
    );
}

/// A rotation of the apiserver's CA, as the sidecar sees it: the CA file
/// it verifies the apiserver with (the projected `ca.crt`, which the
/// kubelet rewrites from `kube-root-ca.crt`) comes to hold the CA that
/// signed the apiserver's certificate only while the sidecar runs. Here it
/// starts with another CA only, so that the apiserver is refused; once the
/// file holds both, as it does during a rotation, the next request goes
/// through, without a restart and long before the 30 s refresh: a failed
/// verification reads the file again.
#[test]
fn a_ca_that_comes_into_the_ca_file_is_trusted_without_a_restart() {
    let cluster = Cluster::shared();
    let stranger = TestCa::new("apiwitness-test-not-the-apiservers-ca").unwrap();
    let dir = std::env::temp_dir().join(format!("apiwitness-ca-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &stranger.cert_pem).unwrap();
    let mut edge = AppPod::start(cluster, "edge-ca-file", |opts| {
        opts.upstream_ca_file = Some(ca_file.to_str().unwrap().to_string());
    });
    let (pod, collector) = (&mut edge.pod, &edge.collector);
    let kubectl = cluster.bin("kubectl");
    let get = || {
        pod.exec(&[kubectl.to_str().unwrap(), "get", "configmaps", "-o", "name"])
            .unwrap()
    };
    let refused = get();
    assert!(!refused.success, "{}", refused.stdout);
    assert!(
        !refused.stderr.contains("Error from server"),
        "no response was made up: {}",
        refused.stderr
    );
    assert!(pod.log().contains("UnknownIssuer"), "{}", pod.log());

    // Swapped whole, as the kubelet swaps a projected volume's files.
    let cluster_ca = std::fs::read_to_string(cluster.var("APIWITNESS_CLUSTER_CA")).unwrap();
    let next = dir.join("ca.crt.next");
    std::fs::write(&next, format!("{}{cluster_ca}", stranger.cert_pem)).unwrap();
    std::fs::rename(&next, &ca_file).unwrap();
    let answered = wait_until(
        "kubectl through the sidecar",
        Duration::from_secs(10),
        || {
            let out = get();
            out.success.then_some(out)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", pod.log()));
    assert!(
        answered.stdout.contains("configmap/kube-root-ca.crt"),
        "{}",
        answered.stdout
    );
    assert_eq!(
        pod.metric("apiwitness_interceptor_ca_file_changes_total"),
        1.0
    );
    assert_eq!(
        pod.metric("apiwitness_interceptor_ca_file_failures_total"),
        0.0
    );
    assert!(pod.log().contains("the CA file changed"), "{}", pod.log());

    pod.stop().unwrap();
    // kubectl's first request, whichever it is, is refused; the list
    // itself is answered once the CA is in the file.
    let exchanges = collector.exchanges();
    assert!(
        exchanges.iter().any(|e| e.status == 0
            && e.error
                .as_deref()
                .is_some_and(|error| error.contains("UnknownIssuer"))),
        "the refused request is recorded with why: {exchanges:#?}"
    );
    let path = format!("/api/v1/namespaces/{}/configmaps", edge.ns.name);
    assert!(
        exchanges.iter().any(|e| e.path == path && e.status == 200),
        "{exchanges:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The interceptor holds a response's first bytes for a while
/// (--coalesce-wait), to write them as fewer, larger TLS records. The end of
/// a response never waits for that, and a watch's events never do: with a
/// wait of an hour, a list of many chunks still completes at once, and a
/// watch event still arrives as it happens.
#[test]
fn joining_writes_holds_back_neither_a_response_end_nor_a_watch_event() {
    let cluster = Cluster::shared();
    let mut edge = AppPod::start(Cluster::shared(), "edge-join", |opts| {
        opts.extra_args = vec!["--coalesce-wait".into(), "1h".into()];
    });
    let (pod, collector) = (&mut edge.pod, &edge.collector);
    let n = edge.ns.name.clone();
    let kubectl = cluster.bin("kubectl");
    let k = kubectl.to_str().unwrap();
    // 40 ConfigMaps of 3 KiB: a list the apiserver writes in about 60 chunks.
    let items: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},"data":{{"v":"{}"}}}}"#,
                "x".repeat(3 << 10)
            )
        })
        .collect();
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    );
    let created = pod.exec_stdin(&[k, "create", "-f", "-"], &list).unwrap();
    assert!(created.success, "{}", created.stderr);

    let listed = pod
        .exec(&["timeout", "30", k, "get", "configmaps", "-o", "name"])
        .unwrap();
    assert!(
        listed.success,
        "the list did not complete: {}",
        listed.stderr
    );
    for i in 0..40 {
        assert!(
            listed.stdout.contains(&format!("configmap/cm-{i}\n")),
            "{}",
            listed.stdout
        );
    }

    std::thread::scope(|s| {
        let watch = s.spawn(|| pod.watch_configmaps(k, 12).unwrap());
        std::thread::sleep(Duration::from_secs(3));
        let late = pod.exec(&[k, "create", "configmap", "late"]).unwrap();
        assert!(late.success, "{}", late.stderr);
        let watched = watch.join().unwrap();
        assert!(
            watched.stdout.contains("configmap/late"),
            "the event did not arrive while the watch was open: {watched:?}"
        );
    });
    pod.stop().unwrap();
    let all = collector.exchanges();
    let list_path = format!("/api/v1/namespaces/{n}/configmaps");
    assert!(
        all.iter()
            .any(|e| e.method == "GET" && e.path == list_path && e.status == 200),
        "the list was recorded"
    );
}
