//! Aggregator benchmark: ingest rate, audit import and report latency, with
//! their baselines in the same run. Not a test: it prints figures.
//!
//!   cargo bench -p apiwitness-aggregator --bench ingest [-- RECORDS]
//!   cargo bench -p apiwitness-aggregator --bench ingest -- protobuf
//!
//! - Ingest: NDJSON batches of interceptor records with 2 KiB bodies,
//!   compressed with zstd as an interceptor sends them, then decompressed,
//!   parsed and stored as `/ingest` does, into SQLite (and PostgreSQL when
//!   APIWITNESS_BENCH_POSTGRES_URL names a database). The baseline is the raw
//!   INSERT of the same rows into the same SQLite table, without parsing.
//! - Audit import: 313,000 events in the real apiserver's audit log shape,
//!   against Python's `json.loads` of every line (the issue's baseline).
//! - Report: the coverage of one pod and of the whole cluster over the store
//!   filled above.
//! - With `protobuf`, only this: ingest of a protobuf list of 50 Pods shipped
//!   as it came, which ingest decodes, against the same list decoded in the
//!   sidecar.
//!
//! To profile one timed pass and nothing else, give perf a control FIFO and
//! name it in APIWITNESS_BENCH_PERF_CTL: the benchmark enables perf just
//! before that pass and disables it just after. The pass is the one-sender
//! ingest into SQLite, or with APIWITNESS_BENCH_PERF_PASS=senders the
//! 8-sender one.
//!
//!   mkfifo /tmp/ctl && APIWITNESS_BENCH_PERF_CTL=/tmp/ctl \
//!     perf record -D -1 --control fifo:/tmp/ctl -g <bench binary> 200000

use apiwitness_aggregator::spec::{Conformance, OperationIndex};
use apiwitness_aggregator::store::{self, Scope, Store};
use apiwitness_aggregator::{audit, committer, ingest, report};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

// The aggregator's own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PODS: usize = 50;

/// Records a batch carries: an interceptor's batch holds those of its own
/// pod, so each batch is one pod's.
const BATCH_RECORDS: usize = 500;

fn shared() -> PathBuf {
    PathBuf::from(apiwitness_runtime::manifest_dir!()).join("../../shared/k8s-openapi/v1.35")
}

/// Pseudo-random hex, the same for the same seed.
fn hex(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        out.push_str(&format!("{:016x}", x));
    }
    out.truncate(len);
    out
}

/// What the apiserver adds to every object that was written: which field
/// manager owns which fields. Ingest strips it from the versions it stores.
const MANAGED_FIELDS: &str = r#"[{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1","time":"2026-11-24T05:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:config-0.yaml":{},"f:config-1.yaml":{},"f:config-2.yaml":{},"f:config-3.yaml":{},"f:config-4.yaml":{},"f:config-5.yaml":{}},"f:metadata":{"f:annotations":{".":{},"f:apiwitness.io/bench":{}},"f:labels":{".":{},"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{},"f:tier":{}}}}}]"#;

/// An object as the apiserver answers it, about 2.4 KiB: metadata with
/// labels, annotations and managed fields, and data that is half prose,
/// half hashes.
fn object(kind: &str, api_version: &str, ns: &str, name: &str, rv: u64) -> String {
    let uid = hex(
        name.len() as u64 * 7919 + ns.len() as u64 + name.bytes().map(u64::from).sum::<u64>(),
        32,
    );
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &uid[..8],
        &uid[8..12],
        &uid[12..16],
        &uid[16..20],
        &uid[20..]
    );
    let data: Vec<String> = (0..6)
        .map(|j| {
            format!(
                "\"config-{j}.yaml\":\"listen: 0.0.0.0:80{j}0\\nlog_level: info\\nupstream: http://backend-{j}.{ns}.svc.cluster.local:8080\\ntoken_hash: {}\\nretries: 3\\ntimeout: 30s\\nfeatures: [tracing, metrics, gzip]\\n\"",
                hex(rv * 31 + j, 64)
            )
        })
        .collect();
    format!(
        "{{\"kind\":\"{kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\",\"uid\":\"{uid}\",\"resourceVersion\":\"{rv}\",\"generation\":{},\"creationTimestamp\":\"2026-11-24T05:00:00Z\",\"labels\":{{\"app.kubernetes.io/name\":\"{name}\",\"app.kubernetes.io/part-of\":\"shop\",\"tier\":\"backend\"}},\"annotations\":{{\"apiwitness.io/bench\":\"{}\"}},\"managedFields\":{MANAGED_FIELDS}}},\"data\":{{{}}}}}",
        rv % 50 + 1,
        hex(rv, 48),
        data.join(",")
    )
}

/// Realistic record lines: a mix of reads and writes over a few resources,
/// with bodies as the apiserver sends them (about 2 KiB). Reads see the
/// same object again until it changes, as a polling or relisting client
/// does; every write makes a new version. Each batch is one pod's calls,
/// as its interceptor ships them, to objects in all `PODS` namespaces.
fn record_lines(n: usize, offset: usize) -> String {
    let mut out = String::with_capacity(n * 2600);
    for k in offset..offset + n {
        let p = k % PODS;
        let caller = (k / BATCH_RECORDS) % PODS;
        let i = k % 97;
        let ns = format!("ns{p}");
        // Reads go to a few objects per namespace, and see the version of
        // their 6,000-record epoch: the same state again and again, as a
        // polling or relisting client does.
        let watched = k % 7;
        let seen = 1_000_000 + (k / 6000) as u64 * 1000 + watched as u64;
        let (method, path, status, request, response) = match k % 6 {
            0 => {
                let name = format!("c{watched}");
                ("GET", format!("/api/v1/namespaces/{ns}/configmaps/{name}"), 200, None,
                 object("ConfigMap", "v1", &ns, &name, seen))
            }
            1 => ("GET", format!("/api/v1/namespaces/{ns}/configmaps"), 200, None,
                  format!("{{\"kind\":\"ConfigMapList\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{seen}\"}},\"items\":[{}]}}",
                          object("ConfigMap", "v1", &ns, &format!("c{watched}"), seen))),
            2 => {
                let name = format!("n{k}");
                ("POST", format!("/api/v1/namespaces/{ns}/configmaps"), 201,
                 Some(format!("{{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"{name}\"}},\"data\":{{\"a\":\"b\"}}}}")),
                 object("ConfigMap", "v1", &ns, &name, 2_000_000 + k as u64))
            }
            3 => {
                let name = format!("d{i}");
                ("PATCH", format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"), 200,
                 Some("{\"spec\":{\"replicas\":3}}".to_string()),
                 object("Deployment", "apps/v1", &ns, &name, 2_000_000 + k as u64))
            }
            4 => ("GET", format!("/apis/apps/v1/namespaces/{ns}/deployments/d{i}/scale"), 404, None,
                  "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"reason\":\"NotFound\",\"code\":404}".to_string()),
            _ => ("DELETE", format!("/api/v1/namespaces/{ns}/secrets/s{k}"), 200, None,
                  format!("{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\",\"details\":{{\"name\":\"s{k}\",\"kind\":\"secrets\",\"uid\":\"{}\"}}}}", hex(k as u64, 32))),
        };
        let request = request
            .map(|b| format!(",\"request_content_type\":\"application/merge-patch+json\",\"request_body\":{{\"json\":{b},\"size\":{}}}", b.len()))
            .unwrap_or_default();
        out.push_str(&format!(
            "{{\"kind\":\"exchange\",\"format\":1,\"id\":\"{}\",\"pod\":{{\"namespace\":\"ns{caller}\",\"name\":\"pod-{caller}\",\"workload\":{{\"kind\":\"Deployment\",\"name\":\"web\"}}}},\"started_at\":\"2026-11-24T06:{:02}:00.000001Z\",\"duration_us\":812,\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"user_agent\":\"kubectl/v1.35.4 (linux/amd64) kubernetes/abc\"{request},\"response_content_type\":\"application/json\",\"response_body\":{{\"json\":{response},\"size\":{}}}}}\n",
            record_id(k),
            k % 60,
            response.len()
        ));
    }
    out
}

/// Audit events as kube-apiserver writes them at Metadata level.
fn audit_log(n: usize) -> String {
    let mut out = String::with_capacity(n * 900);
    for k in 0..n {
        let p = k % PODS;
        let (verb, uri, code) = match k % 4 {
            0 => (
                "get",
                format!("/api/v1/namespaces/ns{p}/configmaps/c{}", k % 97),
                200,
            ),
            1 => (
                "list",
                format!("/api/v1/namespaces/ns{p}/pods?limit=500"),
                200,
            ),
            2 => (
                "watch",
                format!(
                    "/api/v1/namespaces/ns{p}/configmaps?allowWatchBookmarks=true&resourceVersion=1&watch=true"
                ),
                200,
            ),
            _ => ("create", format!("/api/v1/namespaces/ns{p}/events"), 201),
        };
        out.push_str(&format!(
            "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{k:08x}-9d5b-4e29-889b-340071b7ceaa\",\"stage\":\"ResponseComplete\",\"requestURI\":\"{uri}\",\"verb\":\"{verb}\",\"user\":{{\"username\":\"system:serviceaccount:ns{p}:app\",\"uid\":\"a58902de-e920-4e22-961c-3e21f428273e\",\"groups\":[\"system:serviceaccounts\",\"system:serviceaccounts:ns{p}\",\"system:authenticated\"],\"extra\":{{\"authentication.kubernetes.io/pod-name\":[\"pod-{p}\"],\"authentication.kubernetes.io/credential-id\":[\"JTI=42cf07a0-a5e5-44d9-bb11-ffc31c23ac61\"]}}}},\"sourceIPs\":[\"10.250.0.10\"],\"userAgent\":\"kubectl/v1.35.4 (linux/amd64) kubernetes/abc\",\"objectRef\":{{\"resource\":\"configmaps\",\"namespace\":\"ns{p}\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"metadata\":{{}},\"code\":{code}}},\"requestReceivedTimestamp\":\"2026-11-24T06:00:00.000001Z\",\"stageTimestamp\":\"2026-11-24T06:00:00.001001Z\",\"annotations\":{{\"authorization.k8s.io/decision\":\"allow\",\"authorization.k8s.io/reason\":\"RBAC: allowed\"}}}}\n"
        ));
    }
    out
}

/// A record id as the interceptor writes it: a UUIDv7, whose first 48 bits
/// are the time in milliseconds, so ids rise with time (here 50 records a
/// millisecond), with random bits after.
fn record_id(k: usize) -> String {
    let ms = 1_795_000_000_000u64 + k as u64 / 50;
    let random = hex(k as u64 ^ 0x5eed, 20);
    format!(
        "{:08x}-{:04x}-7{}-{}-{}",
        ms >> 16,
        ms & 0xffff,
        &random[..3],
        &random[3..7],
        &random[7..19]
    )
}

/// User and system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here,
    // in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process has handed to write calls so far.
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A batch as an interceptor sends it: zstd at level 1, saying its size.
fn as_sent(text: &str) -> Vec<u8> {
    zstd::bulk::compress(text.as_bytes(), 1).expect("zstd")
}

/// A sent batch's text, as `/ingest` reads it.
fn as_received(body: &[u8]) -> String {
    ingest::decompress(body, ingest::Encoding::Zstd).expect("zstd")
}

fn rate(n: usize, secs: f64) -> String {
    format!("{:>9.0}/s", n as f64 / secs)
}

/// Tells a perf that listens on the FIFO named in APIWITNESS_BENCH_PERF_CTL
/// to start or stop sampling, if `pass` is the one to profile. perf reads
/// the FIFO only when told to, so it is opened read-write: opening it for
/// writing alone would wait for perf.
fn perf_control(pass: &str, command: &str) {
    let Ok(path) = std::env::var("APIWITNESS_BENCH_PERF_CTL") else {
        return;
    };
    let profiled = std::env::var("APIWITNESS_BENCH_PERF_PASS").unwrap_or_else(|_| "SQLite".into());
    if !profiled.eq_ignore_ascii_case(pass) {
        return;
    }
    let written = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .and_then(|mut fifo| fifo.write_all(format!("{command}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("perf control {path}: {e}");
    }
}

/// Decompresses, parses and stores each batch as `/ingest` does, with the
/// batch kept as it came. Gives the number of object versions seen.
fn store_all(store: &dyn Store, bodies: &[Vec<u8>]) -> usize {
    let mut versions = 0;
    for body in bodies {
        let text = as_received(body);
        let parsed = ingest::parse_batch(&text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
        versions += parsed.items.iter().map(|i| i.versions.len()).sum::<usize>();
        store
            .ingest_group(&[store::Batch {
                items: &parsed.items,
                drops: &[],
                packed: Some((body, store::packed::Lines::Received)),
            }])
            .expect("ingest");
    }
    versions
}

/// Deletes a SQLite store, or the baseline's database, with its WAL.
fn delete_sqlite(db: &Path) {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", db.display()));
    for file in [db.to_path_buf(), with("-wal"), with("-shm")] {
        let _ = std::fs::remove_file(file);
    }
}

/// Runs `pass` into a scratch store, which is then deleted, so that the
/// timed pass after it writes into memory that this machine has already
/// backed. On this virtual machine the first touch of a page of memory
/// costs about 2.5 s a GB (the host backs it then), and the host takes
/// freed memory back within seconds: a store's new pages land in such
/// memory, where an aggregator that has run for a while, or that keeps its
/// store at the retention bound, reuses pages it holds. Gives the seconds
/// and CPU seconds the pass took, for [`print_first_pass`].
fn first_pass(scratch: &Path, pass: impl FnOnce(std::sync::Arc<dyn Store>)) -> (f64, f64) {
    let store = store::open(scratch.to_str().expect("path")).expect("scratch store");
    let (started, cpu) = (Instant::now(), cpu_seconds());
    pass(store);
    let taken = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    delete_sqlite(scratch);
    taken
}

fn print_first_pass(records: usize, (secs, cpu): (f64, f64)) {
    println!(
        "  first pass, into a scratch store then deleted (memory not backed yet): {secs:.2}s, {}; CPU time {cpu:.2}s, {} per core",
        rate(records, secs),
        rate(records, cpu)
    );
}

fn ingest_into(name: &str, store: &dyn Store, records: usize, scratch: Option<&Path>) -> f64 {
    let batch = BATCH_RECORDS;
    let mut texts = Vec::new();
    for b in 0..records.div_ceil(batch) {
        texts.push(record_lines(batch.min(records - b * batch), b * batch));
    }
    // Each batch as an interceptor sends it: zstd at level 1. Sending is
    // the interceptor's work, not the aggregator's: done before the clock.
    let bodies: Vec<Vec<u8>> = texts.iter().map(|t| as_sent(t)).collect();
    // Decompressing alone, and parsing alone, to show where the time goes.
    let started = Instant::now();
    for body in &bodies {
        std::hint::black_box(as_received(body));
    }
    let decompress_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for text in &texts {
        std::hint::black_box(ingest::parse_batch(text));
    }
    let parse_secs = started.elapsed().as_secs_f64();
    // Packing a batch's lines into one compressed blob, alone.
    let parsed: Vec<_> = texts
        .iter()
        .take(40)
        .map(|t| ingest::parse_batch(t))
        .collect();
    let started = Instant::now();
    let packed: usize = parsed
        .iter()
        .map(|p| store::packed::pack(&p.items).expect("pack").len())
        .sum();
    let pack_secs = started.elapsed().as_secs_f64();
    let packed_records: usize = parsed.iter().map(|p| p.items.len()).sum();
    let packed_bytes: usize = parsed
        .iter()
        .flat_map(|p| &p.items)
        .map(|i| i.line.len() + 1)
        .sum();
    drop(parsed);
    let first = scratch.map(|scratch| {
        first_pass(scratch, |store| {
            store_all(store.as_ref(), &bodies);
        })
    });
    let memory = memory_from_here();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let written = bytes_written();
    perf_control(name, "enable");
    let versions = store_all(store, &bodies);
    let secs = started.elapsed().as_secs_f64();
    perf_control(name, "disable");
    let cpu = cpu_seconds() - cpu;
    let written = bytes_written() - written;
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "ingest into {name:<10} {records} records ({:.1} KB each, batches of {batch}, {versions} object versions): {:.2}s, {}",
        bytes as f64 / records as f64 / 1e3,
        secs,
        rate(records, secs)
    );
    println!(
        "  CPU time {cpu:.2}s: {} per core; decompressing alone {:.1} µs a record, parsing (with version extraction) alone {:.1}",
        rate(records, cpu),
        decompress_secs * 1e6 / records as f64,
        parse_secs * 1e6 / records as f64
    );
    if let Some(first) = first {
        print_first_pass(records, first);
    }
    print_memory_since("parsing and storing", memory);
    println!(
        "  packing a batch's lines alone (for batches not sent in zstd) {:.1} µs a record ({:.1} times smaller)",
        pack_secs * 1e6 / packed_records as f64,
        packed_bytes as f64 / packed as f64
    );
    // A server database writes in its own process: nothing shows here.
    if written > 0 {
        println!(
            "  written to files: {:.0} MB, {:.0} bytes a record (the WAL, then the database at checkpoints)",
            written as f64 / 1e6,
            written as f64 / records as f64
        );
    }
    secs
}

/// A figure of this process's memory from `/proc/self/status`, in kB.
fn memory_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts measuring what ingest takes beyond the benchmark's own inputs,
/// which it holds all along: the resident memory now, and a peak counted
/// from here (Linux resets VmHWM when "5" is written to clear_refs).
fn memory_from_here() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    memory_kb("VmRSS")
}

fn print_memory_since(what: &str, before_kb: u64) {
    let peak = memory_kb("VmHWM");
    println!(
        "  memory: {what} peaked at {:.0} MB above the benchmark's own inputs ({:.0} MB, held throughout)",
        peak.saturating_sub(before_kb) as f64 / 1024.0,
        before_kb as f64 / 1024.0
    );
}

/// Where the bytes of a store go: writing them is most of what ingest
/// costs (each page is written to the WAL, then checkpointed).
fn print_what_is_stored(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    let (versions, objects, documents): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(object)), 0), COALESCE(SUM(LENGTH(doc)), 0) FROM versions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("versions");
    println!(
        "  stored: {versions} distinct versions, with {:.0} MB of objects and {:.0} MB of documents",
        objects as f64 / 1e6,
        documents as f64 / 1e6,
    );
    // SQLite's own account of its pages, table by table, where built in.
    let Ok(mut pages) = conn.prepare(
        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name HAVING SUM(pgsize) > 1000000 ORDER BY 2 DESC",
    ) else {
        return;
    };
    let tables: Vec<String> = pages
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("dbstat")
        .filter_map(Result::ok)
        .map(|(name, bytes)| format!("{name} {:.0} MB", bytes as f64 / 1e6))
        .collect();
    println!("  pages: {}", tables.join(", "));
    print_pages_each_commit_writes(&conn, path);
}

/// Which tables' pages the last commits wrote, from the frames still in
/// the WAL: a commit writes every page it touched, so a table whose rows
/// land at random places costs whole pages for a few bytes of change.
fn print_pages_each_commit_writes(conn: &rusqlite::Connection, path: &std::path::Path) {
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let Ok(wal) = std::fs::read(&wal_path) else {
        return;
    };
    let word = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().expect("4 bytes"));
    if wal.len() < 32 {
        return;
    }
    let page_size = word(8) as usize;
    let salts = (word(16), word(20));
    // The frames since the last checkpoint carry the header's salts; older
    // ones past them are left from before and do not count.
    let mut written = Vec::new();
    let mut commits = 0;
    let mut at = 32;
    while at + 24 + page_size <= wal.len() && (word(at + 8), word(at + 12)) == salts {
        written.push(i64::from(word(at)));
        if word(at + 4) != 0 {
            commits += 1;
        }
        at += 24 + page_size;
    }
    if commits == 0 {
        return;
    }
    let Ok(mut owners) = conn.prepare("SELECT pageno, name FROM dbstat") else {
        return;
    };
    let owner: std::collections::HashMap<i64, String> = owners
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("dbstat")
        .filter_map(Result::ok)
        .collect();
    let mut by_table: std::collections::BTreeMap<&str, usize> = Default::default();
    for page in &written {
        *by_table
            .entry(owner.get(page).map_or("(free or new)", String::as_str))
            .or_default() += 1;
    }
    let mut by_table: Vec<_> = by_table.into_iter().collect();
    by_table.sort_by_key(|(_, frames)| std::cmp::Reverse(*frames));
    let shown: Vec<String> = by_table
        .iter()
        .map(|(table, frames)| format!("{table} {:.1}", *frames as f64 / commits as f64))
        .collect();
    println!(
        "  pages a commit wrote to the WAL (last {commits} commits): {:.1} in all; {}",
        written.len() as f64 / commits as f64,
        shown.join(", ")
    );
}

/// As the aggregator ingests under load: `senders` interceptors post at once,
/// each batch is parsed on the runtime's threads (as the HTTP handler does),
/// and the committer stores the batches that wait together, one commit each
/// group.
fn ingest_concurrently(dir: &Path, records: usize, senders: usize) -> f64 {
    let batch = BATCH_RECORDS;
    let bodies: Vec<Vec<u8>> = (0..records.div_ceil(batch))
        .map(|b| record_lines(batch.min(records - b * batch), 10_000_000 + b * batch))
        .map(|text| as_sent(&text))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .build()
        .expect("runtime");
    let bodies = std::sync::Arc::new(bodies);
    let first = first_pass(&dir.join("scratch-senders.db"), |store| {
        send_all(&runtime, store, &bodies, senders);
    });
    let store = store::open(dir.join("senders.db").to_str().expect("path")).expect("store");
    let memory = memory_from_here();
    perf_control("senders", "enable");
    let (secs, cpu) = send_all(&runtime, store, &bodies, senders);
    perf_control("senders", "disable");
    println!(
        "ingest into SQLite     {records} records from {senders} senders at once (group commit), into a store of their own: {secs:.2}s, {}; CPU time {cpu:.2}s, {} per core",
        rate(records, secs),
        rate(records, cpu)
    );
    print_first_pass(records, first);
    print_memory_since("parsing and storing from 8 senders", memory);
    secs
}

/// Each sender decompresses and parses its share of the batches and hands
/// them to one committer, as the HTTP route does. Gives the seconds and the
/// CPU seconds it took; the committer's handles are dropped, so the store
/// closes once its writer ends.
fn send_all(
    runtime: &tokio::runtime::Runtime,
    store: std::sync::Arc<dyn Store>,
    bodies: &std::sync::Arc<Vec<Vec<u8>>>,
    senders: usize,
) -> (f64, f64) {
    let committer = committer::Committer::start(store).expect("committer");
    let started = Instant::now();
    let cpu = cpu_seconds();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..senders)
            .map(|s| {
                let (bodies, committer) = (bodies.clone(), committer.clone());
                tokio::spawn(async move {
                    for body in bodies.iter().skip(s).step_by(senders) {
                        let text = as_received(body);
                        let parsed = ingest::parse_batch(&text);
                        committer
                            .ingest(parsed.items, Vec::new(), Some(body.clone()))
                            .await
                            .expect("ingest");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("sender");
        }
    });
    (started.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// The baseline: each line inserted as it is, with its id, into a table of
/// its own in a new database. Gives the seconds it took.
fn raw_insert(db: &Path, text: &str) -> f64 {
    let raw = rusqlite::Connection::open(db).expect("sqlite");
    raw.pragma_update(None, "journal_mode", "WAL").expect("wal");
    raw.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    raw.execute_batch("CREATE TABLE records (id TEXT PRIMARY KEY, line TEXT NOT NULL)")
        .expect("table");
    let started = Instant::now();
    let tx = raw.unchecked_transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare("INSERT INTO records (id, line) VALUES (?1, ?2)")
            .expect("stmt");
        for (i, line) in text.lines().enumerate() {
            stmt.execute(rusqlite::params![record_id(i), line])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    started.elapsed().as_secs_f64()
}

/// The apiserver's list of 50 Pods in protobuf (what the interceptor
/// bench's rows get), its JSON 208 KB.
const PODS_50: &[u8] = include_bytes!("../../interceptor/benches/data/pods-50.pb");

/// A record of a GET of that list, with `content` as its response body,
/// of `content_type`.
fn pod_list_line(id: usize, content: apiwitness_record::BodyContent, content_type: &str) -> String {
    let exchange = apiwitness_record::Exchange {
        format: apiwitness_record::FORMAT_VERSION,
        id: record_id(id),
        pod: apiwitness_record::PodIdentity {
            namespace: "ns-0".into(),
            name: "pod-0".into(),
            ..Default::default()
        },
        started_at: "2026-12-02T08:00:00Z".into(),
        duration_us: 90_000,
        method: "GET".into(),
        path: "/api/v1/namespaces/apiwitness-bench/pods".into(),
        query: String::new(),
        status: 200,
        user_agent: Some("kubectl/v1.35.4 (linux/amd64) kubernetes/abc".into()),
        request_content_type: None,
        response_content_type: Some(content_type.into()),
        request_body: None,
        response_body: Some(apiwitness_record::Body {
            content,
            size: PODS_50.len() as u64,
            truncated: false,
            content_encoding: None,
        }),
        watch: None,
        table: false,
        upgrade: None,
        error: None,
        part: None,
    };
    let mut line = Vec::new();
    exchange.write_line(&mut line);
    String::from_utf8(line).expect("a line is UTF-8")
}

/// What ingest costs a protobuf list the interceptor ships as it came (by
/// default; `--aggregator-format 2` decodes it in the sidecar), which
/// ingest decodes, against the same list decoded in the sidecar: the
/// decoding moved from every pod's sidecar to the aggregator. And what it
/// costs that list's JSON sent unchecked on a line of its own (record
/// format 4), which ingest checks.
fn protobuf_list_rows() {
    use apiwitness_record::protobuf::{DecodedText, decode_body_text};
    let Ok(DecodedText::Full { json, .. }) = decode_body_text(PODS_50, &[]) else {
        panic!("the list decodes whole")
    };
    let on_its_own_line = apiwitness_record::BodyContent::NextLine(
        apiwitness_record::NextLine::of(json.clone()).expect("one line of UTF-8"),
    );
    let decoded = apiwitness_record::BodyContent::RawJson(
        apiwitness_record::RawJson::written(json.into()).expect("one line of JSON"),
    );
    let envelope = apiwitness_record::protobuf::envelope_kind(PODS_50).expect("an envelope");
    let as_it_came = apiwitness_record::BodyContent::Protobuf(
        apiwitness_record::protobuf::shipped_body(envelope, PODS_50),
    );
    let rounds = 200;
    let time = |content: &apiwitness_record::BodyContent, content_type: &str| {
        let text: String = (0..rounds)
            .map(|i| pod_list_line(i, content.clone(), content_type) + "\n")
            .collect();
        let started = Instant::now();
        let batch = ingest::parse_batch(&text);
        let micros = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        assert!(batch.items.iter().all(|i| i.versions.len() == 50));
        (micros, text.len() / rounds)
    };
    for _ in 0..3 {
        let protobuf = "application/vnd.kubernetes.protobuf";
        let (json_us, json_bytes) = time(&decoded, protobuf);
        let (protobuf_us, protobuf_bytes) = time(&as_it_came, protobuf);
        println!(
            "ingest, a list of 50 Pods a record: decoded in the sidecar (a {json_bytes}-byte line) {json_us:.0} µs; shipped as it came (a {protobuf_bytes}-byte line), decoded here {protobuf_us:.0} µs: {:.0} µs more",
            protobuf_us - json_us
        );
        let (checked_us, _) = time(&decoded, "application/json");
        let (unchecked_us, _) = time(&on_its_own_line, "application/json");
        println!(
            "ingest, its JSON a record: checked in the sidecar {checked_us:.0} µs; sent unchecked on a line of its own, checked here {unchecked_us:.0} µs: {:.0} µs more",
            unchecked_us - checked_us
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "protobuf") {
        protobuf_list_rows();
        return;
    }
    let records: usize = std::env::args()
        .skip(1)
        .find(|a| a.chars().all(|c| c.is_ascii_digit()))
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "apiwitness aggregator benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Baseline: the same rows, inserted raw; first into a scratch database,
    // deleted, for the reason `first_pass` gives.
    let text = record_lines(records, 0);
    let scratch = dir.path().join("raw-scratch.db");
    let first_secs = raw_insert(&scratch, &text);
    delete_sqlite(&scratch);
    let raw_secs = raw_insert(&dir.path().join("raw.db"), &text);
    println!(
        "baseline: raw SQLite INSERT of the same {records} lines: {:.2}s, {} (first pass, into a scratch database then deleted: {})",
        raw_secs,
        rate(records, raw_secs),
        rate(records, first_secs)
    );
    drop(text);

    let sqlite_path = dir.path().join("apiwitness.db");
    let sqlite = store::open(sqlite_path.to_str().expect("path")).expect("sqlite store");
    let ours = ingest_into(
        "SQLite",
        sqlite.as_ref(),
        records,
        Some(&dir.path().join("scratch.db")),
    );
    println!(
        "  ratio to the raw insert: {:.2}x the time",
        ours / raw_secs
    );
    let on_disk: u64 = ["apiwitness.db", "apiwitness.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  on disk: {:.0} MB, {:.0} bytes a record (raw records, aggregates and object versions)",
        on_disk as f64 / 1e6,
        on_disk as f64 / records as f64
    );
    print_what_is_stored(&sqlite_path);
    ingest_concurrently(dir.path(), records, 8);
    if let Ok(url) = std::env::var("APIWITNESS_BENCH_POSTGRES_URL") {
        let pg = store::open(&url).expect("postgres store");
        ingest_into("PostgreSQL", pg.as_ref(), records.min(50_000), None);
    }

    // Audit import against Python's json.loads of the same lines.
    let events = 313_000;
    let log = audit_log(events);
    let log_path = dir.path().join("audit.log");
    std::fs::File::create(&log_path)
        .and_then(|mut f| f.write_all(log.as_bytes()))
        .expect("audit log");
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg("import json,sys,time\nt=time.perf_counter()\nfor l in open(sys.argv[1]): json.loads(l)\nprint(time.perf_counter()-t)")
        .arg(&log_path)
        .output();
    let audit_db = store::open(dir.path().join("audit.db").to_str().expect("path")).expect("store");
    let started = Instant::now();
    let text = std::fs::read_to_string(&log_path).expect("read");
    let parsed = audit::parse_log(&text);
    let parse_secs = started.elapsed().as_secs_f64();
    for chunk in parsed.items.chunks(50_000) {
        audit_db.ingest(chunk, &[]).expect("ingest");
    }
    let secs = started.elapsed().as_secs_f64();
    match python {
        Ok(out) if out.status.success() => println!(
            "baseline: Python json.loads of {events} audit events: {}s",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        _ => println!("baseline: python3 not available"),
    }
    println!(
        "audit import of {events} events: {secs:.2}s in all ({parse_secs:.2}s parsing), {}",
        rate(events, secs)
    );

    // Reports over what the SQLite store now holds.
    let index =
        OperationIndex::from_dir(&shared(), &Conformance::load(&shared()).unwrap_or_default())
            .expect("spec");
    for (what, scope) in [
        (
            "one pod",
            Scope {
                namespace: Some("ns7".into()),
                pod: Some("pod-7".into()),
                ..Default::default()
            },
        ),
        ("the whole cluster", Scope::default()),
    ] {
        let started = Instant::now();
        let hits = sqlite.hits(&scope).expect("hits");
        let dropped = sqlite.dropped(&scope).expect("dropped");
        let built = report::build(scope, &hits, &[], &index, dropped);
        let (_json, _) = built.render(report::Format::Json, &index);
        println!(
            "report of {what} over {records} records: {:.1} ms ({} operations)",
            started.elapsed().as_secs_f64() * 1000.0,
            built.operations.len()
        );
    }
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.to_string())
        })
        .unwrap_or_default();
    println!(
        "peak memory of this process, the benchmark's inputs included: {}",
        rss.trim_start_matches("VmHWM:").trim()
    );
}
