//! Web UI benchmark: how long the cluster's coverage page takes to draw over
//! a store of a million records, in headless Chromium, with its baselines in
//! the same run. Not a test: it prints figures. Run by `hack/bench-ui`:
//!
//!   APIWITNESS_AGGREGATOR_BIN=target/release/apiwitness-aggregator \
//!     cargo bench -p apiwitness-e2e --bench ui_load [-- RECORDS]
//!
//! - The store is filled through `/ingest` of a release aggregator, with the
//!   variety of a busy cluster: 400 pods in 40 namespaces, 12 clients, 90
//!   request shapes over 30 resources, statuses, and 48 hours.
//! - Report: `GET /coverage` (the cluster) against the baseline of one
//!   GROUP BY over the raw records' rows, less than a report that rescans
//!   them would pay: it would also unpack and read every record's line.
//! - Page: navigation to the coverage page until the sunburst and tables are
//!   drawn (the page's own performance mark), against the baseline of the
//!   moment its two JSON documents had arrived (the page's resource timing),
//!   which any page showing them must wait for.

use apiwitness_e2e::browser::Browser;
use apiwitness_e2e::repo_root;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACES: usize = 40;
const PODS: usize = 400;
const CLIENTS: [&str; 12] = [
    "kubectl/v1.35.4 (linux/amd64) kubernetes/abc",
    "kube-rs/2.0",
    "OpenAPI-Generator/33.1.0/python",
    "helm/v3.22.0",
    "argocd-application-controller/v3.1",
    "cert-manager-controller/v1.19",
    "prometheus/3.7",
    "external-dns/0.19",
    "fluent-bit/4.1",
    "keda-operator/2.18",
    "velero/1.17",
    "postgres-operator/1.14",
];
const RESOURCES: [(&str, &str); 30] = [
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/api/v1", "pods"),
    ("/api/v1", "services"),
    ("/api/v1", "endpoints"),
    ("/api/v1", "events"),
    ("/api/v1", "serviceaccounts"),
    ("/api/v1", "persistentvolumeclaims"),
    ("/api/v1", "limitranges"),
    ("/api/v1", "resourcequotas"),
    ("/apis/apps/v1", "deployments"),
    ("/apis/apps/v1", "statefulsets"),
    ("/apis/apps/v1", "daemonsets"),
    ("/apis/apps/v1", "replicasets"),
    ("/apis/apps/v1", "controllerrevisions"),
    ("/apis/batch/v1", "jobs"),
    ("/apis/batch/v1", "cronjobs"),
    ("/apis/coordination.k8s.io/v1", "leases"),
    ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("/apis/networking.k8s.io/v1", "ingresses"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("/apis/storage.k8s.io/v1", "csistoragecapacities"),
    ("/apis/events.k8s.io/v1", "events"),
    ("/apis/resource.k8s.io/v1", "resourceclaims"),
    ("/apis/apps/v1", "deployments/scale"),
    ("/api/v1", "pods/log"),
];

/// One NDJSON record line of the interceptor's format.
fn record(k: usize) -> String {
    let pod = (k * 7919) % PODS;
    let ns = pod % NAMESPACES;
    let client = CLIENTS[pod % CLIENTS.len()];
    let (prefix, resource) = RESOURCES[(k / 3 + pod) % RESOURCES.len()];
    let (method, path, status, body) = match k % 3 {
        0 => (
            "GET",
            format!("{prefix}/namespaces/ns{ns}/{resource}"),
            200,
            "",
        ),
        1 if resource.contains('/') => {
            let (r, sub) = resource.split_once('/').unwrap_or((resource, ""));
            let status = if k.is_multiple_of(11) { 404 } else { 200 };
            (
                "GET",
                format!("{prefix}/namespaces/ns{ns}/{r}/o{}/{sub}", k % 50),
                status,
                "",
            )
        }
        1 => {
            let status = if k.is_multiple_of(11) { 404 } else { 200 };
            (
                "GET",
                format!("{prefix}/namespaces/ns{ns}/{resource}/o{}", k % 50),
                status,
                "",
            )
        }
        _ if resource.contains('/') => {
            let (r, sub) = resource.split_once('/').unwrap_or((resource, ""));
            (
                "PATCH",
                format!("{prefix}/namespaces/ns{ns}/{r}/o{}/{sub}", k % 50),
                200,
                r#","request_content_type":"application/merge-patch+json","request_body":{"json":{"spec":{"replicas":3}},"size":26}"#,
            )
        }
        _ => {
            let status = if k.is_multiple_of(13) { 409 } else { 201 };
            (
                "POST",
                format!("{prefix}/namespaces/ns{ns}/{resource}"),
                status,
                r#","request_content_type":"application/json","request_body":{"json":{"metadata":{"name":"o1","labels":{"app":"web"}},"spec":{"replicas":1}},"size":70}"#,
            )
        }
    };
    let hour = k % 48;
    format!(
        "{{\"kind\":\"exchange\",\"format\":1,\"id\":\"b-{k}\",\"pod\":{{\"namespace\":\"ns{ns}\",\"name\":\"pod-{pod}\",\"workload\":{{\"kind\":\"Deployment\",\"name\":\"app-{}\"}}}},\"started_at\":\"2026-11-{:02}T{:02}:{:02}:00.000001Z\",\"duration_us\":812,\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"user_agent\":\"{client}\"{body}}}\n",
        pod % 25,
        28 + hour / 24,
        hour % 24,
        k % 60
    )
}

/// A plain HTTP/1.1 request on loopback: the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    stream.write_all(body).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest);
    }
    (status, rest)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find(|a| a.chars().all(|c| c.is_ascii_digit()))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let binary = std::env::var("APIWITNESS_AGGREGATOR_BIN")
        .expect("APIWITNESS_AGGREGATOR_BIN: the aggregator to measure (hack/bench-ui builds it)");
    let spec = repo_root().join("../shared/k8s-openapi/v1.35");
    let dir = std::env::temp_dir().join(format!("apiwitness-bench-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("apiwitness.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let aggregator = Command::new(&binary)
        .args(["--db", db.to_str().expect("path")])
        .args(["--spec", spec.to_str().expect("path")])
        .args(["--conformance-dir", spec.to_str().expect("path")])
        .args(["--listen", &addr, "--insecure-no-auth", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the aggregator");
    let _aggregator = KillOnDrop(aggregator);
    let ready = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        TcpStream::connect(&addr).is_ok()
    });
    assert!(ready, "the aggregator did not listen");

    println!(
        "apiwitness web UI benchmark ({} cores), {records} records",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let started = Instant::now();
    let batch = 5000;
    for b in 0..records.div_ceil(batch) {
        let text: String = (b * batch..records.min((b + 1) * batch))
            .map(record)
            .collect();
        let (status, body) = http(&addr, "POST", "/ingest", text.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    println!(
        "filled through /ingest in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let pid = _aggregator.0.id();
    println!(
        "aggregator memory: peak {} while it ingested batches of {batch} records, {} after",
        process_memory(pid, "VmHWM"),
        process_memory(pid, "VmRSS")
    );

    // The report, and the rescan of raw records it avoids.
    let mut ours = Vec::new();
    let mut size = 0;
    for _ in 0..9 {
        let t = Instant::now();
        let (status, body) = http(&addr, "GET", "/coverage", b"");
        assert_eq!(status, 200);
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    let raw = rusqlite::Connection::open(&db).expect("sqlite");
    let mut rescan = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let groups: i64 = raw
            .query_row(
                "SELECT COUNT(*) FROM (SELECT pod_namespace, COUNT(*) FROM records GROUP BY 1)",
                [],
                |r| r.get(0),
            )
            .expect("rescan");
        assert!(groups > 0);
        rescan.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let hit_rows: i64 = raw
        .query_row("SELECT COUNT(*) FROM hits", [], |r| r.get(0))
        .expect("hits");
    let (ours_ms, rescan_ms) = (median(ours), median(rescan));
    println!(
        "cluster report GET /coverage: {ours_ms:.1} ms median of 9 ({size} bytes; {hit_rows} aggregate rows)"
    );
    println!(
        "baseline: one GROUP BY over the {records} raw records: {rescan_ms:.1} ms median of 3"
    );
    println!(
        "  ratio: the report takes {:.3}x the rescan's time",
        ours_ms / rescan_ms
    );

    // The page, in Chromium.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let browser = Browser::start(1280, 800).await.expect("chromium");
        let url = format!("http://{addr}/ui/#/coverage?scope=cluster");
        let mut drawn = Vec::new();
        let mut fetched = Vec::new();
        for round in 0..8 {
            browser.client.goto("about:blank").await.expect("blank");
            browser.client.goto(&url).await.expect("goto");
            browser
                .wait_until(
                    "the coverage page is drawn",
                    "return performance.getEntriesByName('apiwitness:coverage-drawn').length > 0",
                    Duration::from_secs(30),
                )
                .await
                .expect("drawn");
            let at = browser
                .client
                .execute(
                    "return performance.getEntriesByName('apiwitness:coverage-drawn')[0].startTime",
                    vec![],
                )
                .await
                .expect("mark");
            // When the page's two JSON documents had arrived, from its own
            // resource timing: the least any page showing them must wait.
            let fetch = browser
                .client
                .execute(
                    "return Math.max(...performance.getEntriesByType('resource')
                       .filter(e => /\\/(coverage|spec\\/operations)(\\?|$)/.test(new URL(e.name).pathname + '?'))
                       .map(e => e.responseEnd))",
                    vec![],
                )
                .await
                .expect("resource timing");
            // The first round warms the browser's own caches: not counted.
            if round > 0 {
                drawn.push(at.as_f64().unwrap_or(f64::NAN));
                fetched.push(fetch.as_f64().unwrap_or(f64::NAN));
            }
        }
        let arcs = browser
            .client
            .execute("return document.querySelectorAll('svg.sunburst path').length", vec![])
            .await
            .expect("arcs");
        let worst = drawn.iter().cloned().fold(0.0, f64::max);
        let (drawn_ms, fetched_ms) = (median(drawn), median(fetched));
        println!(
            "cluster coverage page, navigation to drawn: {drawn_ms:.0} ms median of 7, worst {worst:.0} ms ({arcs} arcs)"
        );
        println!("baseline: the page's two JSON documents arrived at {fetched_ms:.0} ms (median of 7)");
        println!("  ratio: drawn at {:.2}x the time its data took to arrive", drawn_ms / fetched_ms);
        browser.close().await;
    });
    println!(
        "aggregator memory: peak {} over the whole run, reports and pages included",
        process_memory(pid, "VmHWM")
    );
    drop(_aggregator);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One memory figure of a process, as `/proc/<pid>/status` gives it.
fn process_memory(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                Some(
                    l.strip_prefix(field)?
                        .trim_start_matches(':')
                        .trim()
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The aggregator goes with the benchmark, even when it panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
