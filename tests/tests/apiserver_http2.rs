//! The interceptor's HTTP/2 connections to the apiserver, under what real
//! apiservers do. The interceptor shares them among all of a pod's HTTP/2
//! clients, so that what one client alone would rarely meet, they meet
//! together:
//! - an apiserver that closes a connection with a GOAWAY after 2% of the
//!   requests (`--goaway-chance`, as HA control planes are run), on a
//!   control plane of its own (index 5): requests racing a GOAWAY are
//!   refused unprocessed many times in a run, and each must still be
//!   answered, and a write must reach the apiserver once, never twice;
//! - the apiserver's limit of 100 streams a connection: a pod's clients
//!   holding more watches than that must not hold up its other requests.

use apiwitness_e2e::collector::Collector;
use apiwitness_e2e::intercepted::{AppPod, InterceptedPod};
use apiwitness_e2e::{Cluster, CommandOutput, repo_root, wait_until};
use apiwitness_record::Exchange;
use std::process::Command;
use std::time::Duration;

const INDEX: u8 = 5;
const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const READS: usize = 1500;
const WRITES: usize = 600;

fn hack_cluster(args: &[&str]) -> CommandOutput {
    let shared_bins = Cluster::shared().var("APIWITNESS_BIN_DIR").to_string();
    CommandOutput::run(
        Command::new(repo_root().join("hack/cluster"))
            .args(args)
            .env("APIWITNESS_CLUSTER_INDEX", INDEX.to_string())
            .env("APIWITNESS_BIN_DIR", shared_bins)
            .env("APIWITNESS_APISERVER_GOAWAY_CHANCE", "0.02"),
    )
    .unwrap()
}

/// Takes the cluster down when the test ends, however it ends.
struct ClusterDown;

impl Drop for ClusterDown {
    fn drop(&mut self) {
        let _ = hack_cluster(&["down"]);
    }
}

/// Runs curl in `pod` over HTTP/2, `parallel` transfers at a time on one
/// connection, with the pod's token: the status of each transfer on its
/// standard output, one a line, and curl's own errors on its error output.
fn curl(pod: &InterceptedPod, parallel: usize, args: &str) -> CommandOutput {
    pod.exec(&[
        "sh",
        "-c",
        &format!(
            "curl -sS --no-progress-meter --http2 -Z --parallel-max {parallel} \
             --cacert {SA}/ca.crt -H \"Authorization: Bearer $(cat {SA}/token)\" \
             -o /dev/null -w 'status %{{http_code}}\\n' {args}"
        ),
    ])
    .unwrap()
}

fn statuses(out: &CommandOutput) -> Vec<&str> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("status "))
        .collect()
}

/// Watches over the apiserver's limit of streams on one connection (100,
/// its default), from the pod's clients together, as a controller with many
/// informers holds: none waits for another to end, and a request beside
/// them is answered at once. Go's client opens another connection for them;
/// so must the interceptor.
/// The collector's exchanges of `method` on a path ending in `path_end`,
/// one for each id. A batch the shipper sent again, since its answer came
/// too late on a loaded machine, arrives twice; the aggregator keeps one
/// record of each id, and so does this. A request recorded twice under two
/// ids still counts twice.
fn recorded_once(collector: &Collector, method: &str, path_end: &str) -> Vec<Exchange> {
    let mut seen = std::collections::BTreeSet::new();
    collector
        .exchanges()
        .into_iter()
        .filter(|e| e.method == method && e.path.ends_with(path_end))
        .filter(|e| seen.insert(e.id.clone()))
        .collect()
}

/// The records of one kind of request: those answered with the status
/// expected, and those the interceptor gave back to the client refused
/// unprocessed, after its own attempts to send them again.
struct AnsweredAndRefused {
    answered: Vec<Exchange>,
    refused: Vec<Exchange>,
    /// Any other record, which the test does not expect.
    other: Vec<Exchange>,
}

fn answered_and_refused(
    collector: &Collector,
    method: &str,
    path_end: &str,
    status: u16,
) -> AnsweredAndRefused {
    let mut records = AnsweredAndRefused {
        answered: Vec::new(),
        refused: Vec::new(),
        other: Vec::new(),
    };
    for e in recorded_once(collector, method, path_end) {
        let refused = e.status == 0
            && e.error
                .as_deref()
                .is_some_and(|error| error.contains("refused unprocessed"));
        if e.status == status {
            records.answered.push(e);
        } else if refused {
            records.refused.push(e);
        } else {
            records.other.push(e);
        }
    }
    records
}

impl AnsweredAndRefused {
    /// Each of `count` requests (told apart by their query) answered and
    /// recorded once, and each one given back refused answered after.
    fn assert_each_answered_once(&self, count: usize, pod: &InterceptedPod) {
        assert!(
            self.other.is_empty(),
            "records neither answered nor refused:\n{}",
            described(&self.other)
        );
        assert_eq!(
            self.answered.len(),
            count,
            "requests recorded answered more than once:\n{}\ninterceptor log:\n{}",
            described_twice(&self.answered),
            pod.log()
        );
        let queries: std::collections::BTreeSet<_> =
            self.answered.iter().map(|e| e.query.as_str()).collect();
        assert_eq!(queries.len(), count, "each request recorded answered once");
        assert!(self.answered.iter().all(|e| e.error.is_none()));
        for refused in &self.refused {
            assert!(
                queries.contains(refused.query.as_str()),
                "refused, and never answered after: {}",
                described(std::slice::from_ref(refused))
            );
        }
    }
}

/// Records, without their bodies, for a failure's account.
fn described(exchanges: &[Exchange]) -> String {
    exchanges
        .iter()
        .map(|e| {
            format!(
                "{} {} ?{} -> {} at {} for {} µs, error {:?}, response body {:?} bytes, user agent {:?}",
                e.id,
                e.method,
                e.query,
                e.status,
                e.started_at,
                e.duration_us,
                e.error,
                e.response_body.as_ref().map(|b| b.size),
                e.user_agent
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The records that share a query with another, without their bodies: a
/// failure's account of a request recorded twice.
fn described_twice(exchanges: &[Exchange]) -> String {
    let mut by_query = std::collections::BTreeMap::<&str, Vec<Exchange>>::new();
    for e in exchanges {
        by_query.entry(&e.query).or_default().push(e.clone());
    }
    let twice: Vec<Exchange> = by_query
        .into_values()
        .filter(|same| same.len() > 1)
        .flatten()
        .collect();
    described(&twice)
}

#[test]
fn watches_past_the_apiservers_stream_limit_hold_up_nothing() {
    const WATCHES: usize = 150;
    const WATCH_SECONDS: u64 = 20;
    let cluster = Cluster::shared();
    let app = AppPod::start(cluster, "streams", |_| {});
    let (pod, collector, n) = (&app.pod, &app.collector, app.ns.name.clone());
    let host = "https://$KUBERNETES_SERVICE_HOST";

    std::thread::scope(|s| {
        let started = std::time::Instant::now();
        let watches = s.spawn(|| {
            curl(
                pod,
                WATCHES,
                &format!(
                    "\"{host}/api/v1/namespaces/{n}/configmaps?watch=1&timeoutSeconds={WATCH_SECONDS}&limit=[1-{WATCHES}]\""
                ),
            )
        });
        // Once they are all open (the apiserver counts them), a list beside
        // them, and a write that every watch sees.
        std::thread::sleep(Duration::from_secs(5));
        let kubectl = cluster.bin("kubectl");
        let k = kubectl.to_str().unwrap();
        let asked = std::time::Instant::now();
        let list = pod
            .exec(&["timeout", "10", k, "get", "configmaps", "-o", "name"])
            .unwrap();
        assert!(
            list.success,
            "a list beside {WATCHES} watches waited {:?}: {}\ninterceptor log:\n{}",
            asked.elapsed(),
            list.stderr,
            pod.log()
        );
        let create = pod
            .exec(&["timeout", "10", k, "create", "configmap", "seen-by-all"])
            .unwrap();
        assert!(create.success, "{}", create.stderr);
        let connections = pod.metric("apiwitness_interceptor_upstream_http2_connections");
        assert!(connections >= 2.0, "{connections} HTTP/2 connections");

        let watches = watches.join().unwrap();
        let ended = started.elapsed();
        let statuses = statuses(&watches);
        assert_eq!(statuses.len(), WATCHES, "{}", watches.stderr);
        assert!(statuses.iter().all(|s| *s == "200"), "{}", watches.stderr);
        // Each ended when its own timeout did, none after another's.
        assert!(
            ended < Duration::from_secs(WATCH_SECONDS + 8),
            "{WATCHES} watches of {WATCH_SECONDS} s took {ended:?}"
        );
    });
    // Every watch saw the write, so every one was open when it was made
    // (`limit` tells them apart; a watch is shipped in parts).
    let saw_it = wait_until("the watches' records", Duration::from_secs(60), || {
        let mut saw_it: Vec<_> = collector
            .exchanges()
            .into_iter()
            .filter(|e| {
                e.query.contains("watch=1")
                    && e.watch
                        .as_ref()
                        .is_some_and(|w| serde_json::to_string(w).unwrap().contains("seen-by-all"))
            })
            .map(|e| e.query)
            .collect();
        saw_it.sort();
        saw_it.dedup();
        (saw_it.len() >= WATCHES).then_some(saw_it)
    });
    assert!(saw_it.is_ok(), "not every watch saw the write: {saw_it:?}");
}

#[test]
fn requests_racing_an_apiserver_goaway_are_answered_and_writes_land_once() {
    let _ = hack_cluster(&["down"]);
    let _down = ClusterDown;
    let up = hack_cluster(&["up"]);
    assert!(up.success, "up: {}\n{}", up.stdout, up.stderr);
    let cluster: &'static Cluster = Box::leak(Box::new(Cluster::describe(INDEX).unwrap()));

    let app = AppPod::start(cluster, "goaway", |_| {});
    let (pod, collector, n) = (&app.pod, &app.collector, app.ns.name.clone());
    let host = "https://$KUBERNETES_SERVICE_HOST";

    // Reads, each its own list: `limit` tells them apart in the records.
    let reads = curl(
        pod,
        32,
        &format!("\"{host}/api/v1/namespaces/{n}/configmaps?limit=[1-{READS}]\""),
    );
    let read_statuses = statuses(&reads);
    assert_eq!(read_statuses.len(), READS, "{}", reads.stderr);
    let failed: Vec<_> = read_statuses.iter().filter(|s| **s != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {READS} reads failed: {}\ninterceptor log:\n{}",
        failed.len(),
        reads.stderr,
        pod.log()
    );
    // The proof that the run raced GOAWAYs at all: requests refused
    // unprocessed and sent again by the interceptor.
    let resent = pod.metric("apiwitness_interceptor_upstream_resends_total");
    assert!(
        resent > 0.0,
        "no request was refused: the test proves nothing"
    );

    // Writes, each a new ConfigMap: one refused is sent again with its body.
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"w-"},"data":{"k":"v"}}"#;
    let writes = curl(
        pod,
        32,
        &format!(
            "-X POST -H 'Content-Type: application/json' -d '{body}' \
             \"{host}/api/v1/namespaces/{n}/configmaps?fieldManager=w[1-{WRITES}]\""
        ),
    );
    let write_statuses = statuses(&writes);
    assert_eq!(write_statuses.len(), WRITES, "{}", writes.stderr);
    assert!(
        write_statuses.iter().all(|s| *s == "201"),
        "{}\ninterceptor log:\n{}",
        writes.stderr,
        pod.log()
    );
    let created = cluster
        .kubectl_json(&["get", "configmaps", "-n", &n, "-o", "json"])
        .unwrap();
    let written = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metadata"]["name"].as_str().unwrap().starts_with("w-"))
        .count();
    assert_eq!(written, WRITES, "each write landed once");

    // Every read is recorded once, answered: a request the interceptor sent
    // again is one exchange, not two. One refused more often than the
    // interceptor sends it again is given back to curl refused unprocessed,
    // and curl sends it again: that is two exchanges, and two records.
    let reads = wait_until("the reads' records", Duration::from_secs(60), || {
        let reads = answered_and_refused(collector, "GET", &format!("{n}/configmaps"), 200);
        (reads.answered.len() >= READS).then_some(reads)
    })
    .unwrap();
    reads.assert_each_answered_once(READS, pod);

    let resent_writes = pod.metric("apiwitness_interceptor_upstream_resends_total") - resent;
    assert!(
        resent_writes > 0.0,
        "no write was refused: the test proves nothing"
    );

    // Each write is recorded once, with its body.
    let writes = wait_until("the writes' records", Duration::from_secs(60), || {
        let writes = answered_and_refused(collector, "POST", &format!("{n}/configmaps"), 201);
        (writes.answered.len() >= WRITES).then_some(writes)
    })
    .unwrap();
    writes.assert_each_answered_once(WRITES, pod);
    assert!(writes.answered.iter().all(|e| {
        e.request_body
            .as_ref()
            .is_some_and(|b| b.size == body.len() as u64)
    }));
    println!(
        "sent again by the interceptor: {resent} reads, {resent_writes} writes; \
         given back refused, and sent again by curl: {} reads, {} writes",
        reads.refused.len(),
        writes.refused.len()
    );
}
