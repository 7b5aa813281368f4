//! Interceptor benchmark: what turning one captured body into its record line
//! costs, as a JSON tree (parsed, walked by the redactor, written out again)
//! and as the text it came in, for a body that needs no redaction; and what
//! compressing a batch of record lines costs, with gzip (the baseline) and
//! zstd. Each pair runs in the same process on the same data. It also times
//! the whole of an exchange's way from the proxy's hand-over to its line in
//! the queue. Not a test: it prints figures.
//!
//!   cargo bench -p apiwitness-interceptor --bench record

use apiwitness_interceptor::aggregator_format::AggregatorFormat;
use apiwitness_interceptor::capture::{Capture, Captured};
use apiwitness_interceptor::decode;
use apiwitness_interceptor::drops::Reports;
use apiwitness_interceptor::metrics::Metrics;
use apiwitness_interceptor::recorder::{self, RawExchange};
use apiwitness_interceptor::redact::Redactor;
use apiwitness_interceptor::ship::{Queue, ShipEncoding, encode_batch};
use apiwitness_record::{ApiRequest, Exchange, PodIdentity};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Base64 of pseudo-random bytes, as in `hack/bench/interceptor.sh`'s
/// ConfigMaps: the hardest case for compression, and a long string to
/// escape.
fn base64_of_noise(len: usize, seed: u64) -> String {
    use base64::Engine;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A ConfigMap as the apiserver answers a GET of it.
fn config_map(value: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"large\",\"namespace\":\"apiwitness-bench\",\"uid\":\"0b7c4f6e-5a0e-4b8e-9d0f-3c2e1a1b2c3d\",\"resourceVersion\":\"1234\",\"creationTimestamp\":\"2026-12-01T01:00:00Z\",\"managedFields\":[{{\"manager\":\"kubectl-create\",\"operation\":\"Update\",\"apiVersion\":\"v1\",\"time\":\"2026-12-01T01:00:00Z\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{{\"f:data\":{{\".\":{{}},\"f:v\":{{}}}}}}}}]}},\"data\":{{\"v\":\"{value}\"}}}}\n"
    ))
}

/// Microseconds a call of `run` takes, over `rounds` calls; what each
/// returns is summed and kept, so that no call is optimized away.
fn micros_per_call(rounds: usize, run: impl Fn() -> usize) -> f64 {
    let started = Instant::now();
    let mut sum = 0usize;
    for _ in 0..rounds {
        sum = sum.wrapping_add(run());
    }
    std::hint::black_box(sum);
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

/// Microseconds for one body, decoded, redacted and written into its
/// record's line, as the queue writes it.
fn per_body(
    captured: &Captured,
    request: &ApiRequest,
    redactor: &Redactor,
    keeps_text: bool,
    decoding: decode::Decoding,
) -> f64 {
    let rounds = (20_000_000 / captured.bytes.len().max(1)).clamp(200, 200_000);
    let started = Instant::now();
    let mut written = 0;
    // As the recorder asks: the redactor's judgement of the text, or (the
    // baseline) a tree for every body.
    let redactor_keeps = keeps_text && redactor.redacts_nothing_by_request(request);
    let mut record = Exchange {
        id: "0193a1b2-0000-7000-8000-000000000001".into(),
        started_at: "2026-12-01T01:00:00.000001Z".into(),
        duration_us: 812,
        method: "GET".into(),
        path: "/api/v1/namespaces/apiwitness-bench/configmaps/large".into(),
        status: 200,
        ..Default::default()
    };
    for _ in 0..rounds {
        let mut body = decode::body(
            captured,
            Some("application/json"),
            None,
            redactor_keeps,
            decoding,
        )
        .expect("a body");
        redactor.body(request, &mut body);
        record.response_body = Some(body);
        let mut line = Vec::with_capacity(captured.bytes.len() + 512);
        record.write_line(&mut line);
        written += line.len();
    }
    std::hint::black_box(written);
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

/// Microseconds and compressed bytes for one batch.
fn per_batch(lines: &[Vec<u8>], encoding: ShipEncoding, zstd_level: i32) -> (f64, usize) {
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let rounds = (100_000_000 / bytes.max(1)).clamp(20, 10_000);
    let no_drops = Reports::default();
    let started = Instant::now();
    let mut size = 0;
    for _ in 0..rounds {
        size = encode_batch(lines, &no_drops, encoding, zstd_level).len();
    }
    (started.elapsed().as_secs_f64() * 1e6 / rounds as f64, size)
}

/// A record line with `body` as its response, as the recorder writes it.
fn record_line(n: usize, body: &Bytes) -> Vec<u8> {
    let record = Exchange {
        id: format!("0193a1b2-0000-7000-8000-{n:012}"),
        pod: PodIdentity {
            namespace: "apiwitness-bench".into(),
            name: "bench-7d9f8-x2v4q".into(),
            ..Default::default()
        },
        started_at: "2026-12-01T01:00:00.000001Z".into(),
        duration_us: 812,
        method: "GET".into(),
        path: "/api/v1/namespaces/apiwitness-bench/configmaps/large".into(),
        status: 200,
        user_agent: Some("kubectl/v1.35.4 (linux/amd64) kubernetes/abc".into()),
        response_content_type: Some("application/json".into()),
        response_body: Some(apiwitness_record::Body {
            content: apiwitness_record::BodyContent::RawJson(
                apiwitness_record::RawJson::parse(body).expect("the bench's body is JSON"),
            ),
            size: body.len() as u64,
            truncated: false,
            content_encoding: None,
        }),
        ..Default::default()
    };
    let mut line = Vec::with_capacity(body.len() + 512);
    record.write_line(&mut line);
    line
}

/// Microseconds for one exchange with `body` as its response, from what the
/// proxy hands over to its line in the shipper's queue: the recorder's
/// `build` (decoding, redaction, the record's fields) and the queue's
/// `push` (the line written), as the recorder's task runs them. The
/// request comes parsed, as the proxy hands it over.
fn per_exchange(body: &Bytes) -> f64 {
    let new_queue = || Queue::new(10_000, 16 << 20, Arc::new(Metrics::new()));
    let mut queue = new_queue();
    let (_handle, recorder) = recorder::channel(
        4 << 20,
        PodIdentity::default(),
        Redactor::default(),
        Arc::new(AggregatorFormat::new(apiwitness_record::FORMAT_VERSION)),
        queue.clone(),
        Arc::new(Metrics::new()),
    );
    let path = "/api/v1/namespaces/apiwitness-bench/configmaps/large";
    let request = ApiRequest::parse("GET", path, "", None).ok();
    let rounds = (50_000_000 / body.len()).clamp(1_000, 100_000);
    let started = Instant::now();
    for n in 1..=rounds {
        // A new queue every thousand, as batches leave the real one.
        if n % 1_000 == 0 {
            queue = new_queue();
        }
        let raw = RawExchange {
            started_at: SystemTime::now(),
            duration: Duration::from_micros(812),
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            status: 200,
            user_agent: Some("kubectl/v1.35.4 (linux/amd64) kubernetes/abc".into()),
            request_content_type: None,
            response_content_type: Some("application/json".into()),
            response_content_encoding: None,
            request_body: Capture::finished(Captured::default()),
            response_body: Some(Capture::finished(Captured {
                bytes: body.clone(),
                size: body.len() as u64,
                complete: true,
                ..Captured::default()
            })),
            request: request.clone(),
            watch: false,
            watch_id: None,
            upgrade: None,
            error: None,
        };
        queue.push(recorder.build(raw));
    }
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

/// A Pod as a Deployment's controller would make it, in protobuf.
fn pod(n: usize) -> k8s_pb::api::core::v1::Pod {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    let quantity = |s: &str| Quantity {
        string: Some(s.into()),
    };
    let time = Some(Time {
        seconds: Some(1_764_550_800 + n as i64),
        nanos: Some(0),
    });
    core::Pod {
        metadata: Some(ObjectMeta {
            name: Some(format!("web-7d9c8b6f5-{n:05}")),
            generate_name: Some("web-7d9c8b6f5-".into()),
            namespace: Some("apiwitness-bench".into()),
            uid: Some(format!("0b7c4f6e-5a0e-4b8e-9d0f-{n:012}")),
            resource_version: Some(format!("{}", 1000 + n)),
            creation_timestamp: time,
            labels: [
                ("app".to_string(), "web".to_string()),
                ("pod-template-hash".to_string(), "7d9c8b6f5".to_string()),
            ]
            .into(),
            owner_references: vec![OwnerReference {
                api_version: Some("apps/v1".into()),
                kind: Some("ReplicaSet".into()),
                name: Some("web-7d9c8b6f5".into()),
                uid: Some("5a0e4b8e-9d0f-3c2e-1a1b-2c3d0b7c4f6e".into()),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("web".into()),
                image: Some("registry.k8s.io/nginx:1.27".into()),
                ports: vec![core::ContainerPort {
                    name: Some("http".into()),
                    container_port: Some(8080),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }],
                resources: Some(core::ResourceRequirements {
                    limits: [
                        ("cpu".to_string(), quantity("500m")),
                        ("memory".to_string(), quantity("128Mi")),
                    ]
                    .into(),
                    requests: [("cpu".to_string(), quantity("100m"))].into(),
                    ..Default::default()
                }),
                termination_message_path: Some("/dev/termination-log".into()),
                termination_message_policy: Some("File".into()),
                image_pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            }],
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(30),
            dns_policy: Some("ClusterFirst".into()),
            service_account_name: Some("default".into()),
            scheduler_name: Some("default-scheduler".into()),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some("Burstable".into()),
            ..Default::default()
        }),
    }
}

/// Reading a protobuf body into JSON, against parsing the same object's JSON
/// into a tree (what the recorder does with a JSON body it must walk).
fn protobuf_rows() {
    use apiwitness_record::protobuf::{Decoded, DecodedText, decode_body, decode_body_text};
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message;
    println!(
        "a protobuf body read into JSON text (what the recorder keeps) and into a tree, against parsing the same JSON"
    );
    let enveloped = |kind: &str, raw: Vec<u8>| {
        let mut out = b"k8s\0".to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode(&mut out)
        .expect("encodable");
        out
    };
    let made = |pods: usize| {
        if pods == 1 {
            return enveloped("Pod", pod(0).encode_to_vec());
        }
        let list = k8s_pb::api::core::v1::PodList {
            metadata: None,
            items: (0..pods).map(pod).collect(),
        };
        enveloped("PodList", list.encode_to_vec())
    };
    // The list the interceptor bench reads from the apiserver, as the
    // apiserver wrote it: its Pods carry what the apiserver fills in
    // (defaults, a projected token volume, managedFields), 4 KB of JSON each.
    let from_apiserver = include_bytes!("data/pods-50.pb").to_vec();
    for (label, body) in [
        ("one Pod", made(1)),
        ("a list of 50 Pods", made(50)),
        ("the apiserver's 50", from_apiserver),
    ] {
        let Ok(Decoded::Full(value)) = decode_body(&body) else {
            panic!("the bench's body does not decode")
        };
        let json = serde_json::to_vec(&value).expect("serializable");
        let rounds = (20_000_000 / json.len()).clamp(100, 100_000);
        let time = |read: &dyn Fn() -> usize| micros_per_call(rounds, read);
        let from_json = time(&|| {
            serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&json))
                .map(|v| v.as_object().map_or(0, |m| m.len()))
                .expect("JSON")
        });
        let to_text = time(
            &|| match decode_body_text(std::hint::black_box(&body), &[]) {
                Ok(DecodedText::Full { json, .. }) => json.len(),
                _ => 0,
            },
        );
        let to_tree = time(&|| match decode_body(std::hint::black_box(&body)) {
            Ok(Decoded::Full(v)) => v.as_object().map_or(0, |m| m.len()),
            _ => 0,
        });
        println!(
            "{label:<19}: protobuf ({} bytes) to text {to_text:8.1} µs, to a tree {to_tree:8.1} µs; its JSON ({} bytes) parsed {from_json:8.1} µs: text {:.2}x the parse's speed",
            body.len(),
            json.len(),
            from_json / to_text
        );
    }
}

/// The check that a JSON body is JSON, as the recorder runs it on each body
/// it keeps as text (with the words it notes), against the reader that did
/// it a string at a time before.
fn json_check_rows() {
    use apiwitness_record::RawJson;
    use apiwitness_record::json_reader::JsonReader;
    println!("a JSON body checked as JSON, noting the recorder's words");
    const WORDS: &[&[u8]] = &[b"Secret", b"protobuf", b"Table"];
    let config_map = config_map(&base64_of_noise(49_152, 11));
    for (label, json) in [
        // As the apiserver wrote it, in its own order of keys: the same
        // list re-written with sorted keys read a third faster by the
        // reader, and no faster by the check.
        (
            "the apiserver's 50 Pods",
            include_bytes!("data/pods-50.json").to_vec(),
        ),
        ("ConfigMap 64 KiB", config_map.to_vec()),
    ] {
        let text = std::str::from_utf8(&json).expect("UTF-8");
        let rounds = (100_000_000 / json.len()).clamp(100, 100_000);
        let time = |check: &dyn Fn() -> u32| micros_per_call(rounds, || check() as usize);
        let reader = time(&|| {
            let mut reader = JsonReader::new(std::hint::black_box(text)).noting(WORDS);
            reader.skip_value().expect("JSON");
            reader.finish().expect("JSON");
            reader.words_seen() + 1
        });
        let check = time(&|| {
            RawJson::scan_in_place(std::hint::black_box(&json), WORDS)
                .expect("JSON")
                .words_seen
                + 1
        });
        let rate = |us: f64| json.len() as f64 / us;
        println!(
            "{label:<24} ({} bytes): a string at a time {reader:7.1} µs ({:5.0} MB/s), by its structure {check:7.1} µs ({:5.0} MB/s): {:.2}x",
            json.len(),
            rate(reader),
            rate(check),
            reader / check
        );
    }
}

fn main() {
    let request = ApiRequest::parse(
        "GET",
        "/api/v1/namespaces/apiwitness-bench/configmaps/large",
        "",
        None,
    )
    .expect("a request");
    let redactor = Redactor::default();
    println!("apiwitness interceptor benchmark: a captured JSON body to its record");
    // Checked here, as a body under `decode::UNCHECKED_FROM` always is.
    let checked_here = decode::Decoding {
        json: decode::DecodedIn::Interceptor,
        ..Default::default()
    };
    let recorded_as = |captured: &Captured, decoding| {
        decode::body(
            captured,
            Some("application/json"),
            None,
            redactor.redacts_nothing_by_request(&request),
            decoding,
        )
        .map(|b| b.content)
    };
    for (label, bytes) in [
        ("ConfigMap 1 KiB", config_map(&base64_of_noise(768, 0))),
        ("ConfigMap 64 KiB", config_map(&base64_of_noise(49_152, 0))),
        (
            "50 Pods",
            Bytes::from_static(include_bytes!("data/pods-50.json")),
        ),
    ] {
        let captured = Captured {
            size: bytes.len() as u64,
            bytes,
            complete: true,
            ..Default::default()
        };
        // The bodies this bench times as text must be ones the recorder
        // keeps so.
        assert!(matches!(
            recorded_as(&captured, checked_here),
            Some(apiwitness_record::BodyContent::RawJson(_))
        ));
        let tree = per_body(&captured, &request, &redactor, false, checked_here);
        let text = per_body(&captured, &request, &redactor, true, checked_here);
        let unchecked = if captured.bytes.len() >= decode::UNCHECKED_FROM {
            assert!(matches!(
                recorded_as(&captured, decode::Decoding::default()),
                Some(apiwitness_record::BodyContent::NextLine(_))
            ));
            let unchecked = per_body(
                &captured,
                &request,
                &redactor,
                true,
                decode::Decoding::default(),
            );
            format!(
                ", unchecked on a line of its own {unchecked:7.1} µs: {:.2}x the checked text",
                text / unchecked
            )
        } else {
            String::new()
        };
        println!(
            "{label:<16} ({} bytes): as a tree {tree:7.1} µs, as its text {text:7.1} µs: {:.2}x{unchecked}",
            captured.bytes.len(),
            tree / text
        );
    }
    // What `kubectl get pods` gets: a Table, with `<none>` escaped as Go
    // escapes it. It went through a tree before it kept its text.
    let bytes = Bytes::from_static(include_bytes!("data/pods-50-table.json"));
    let captured = Captured {
        size: bytes.len() as u64,
        bytes,
        complete: true,
        ..Default::default()
    };
    let kept = decode::body(
        &captured,
        Some("application/json"),
        None,
        redactor.redacts_nothing_by_request(&request),
        decode::Decoding::default(),
    )
    .expect("a body");
    assert!(matches!(
        kept.content,
        apiwitness_record::BodyContent::RawJson(_)
    ));
    assert!(decode::is_table(&kept));
    let tree = per_body(&captured, &request, &redactor, false, checked_here);
    let text = per_body(&captured, &request, &redactor, true, checked_here);
    println!(
        "Table of 50 Pods ({} bytes): as a tree {tree:7.1} µs, as its text {text:7.1} µs: {:.2}x",
        captured.bytes.len(),
        tree / text
    );
    println!("an exchange from the proxy's hand-over to its line in the queue");
    for (label, value_bytes) in [("1 KiB", 768), ("64 KiB", 49_152)] {
        let body = config_map(&base64_of_noise(value_bytes, 3));
        println!(
            "ConfigMap {label:>6} ({} bytes): {:7.2} µs",
            body.len(),
            per_exchange(&body)
        );
    }
    println!("a text body (not JSON) written into its record line as a JSON string");
    for (label, value_bytes) in [("1 KiB", 768), ("64 KiB", 49_152)] {
        let text = base64_of_noise(value_bytes, 7);
        let rounds = (50_000_000 / text.len()).clamp(200, 200_000);
        let time = |write: &dyn Fn(&str) -> usize| {
            micros_per_call(rounds, || write(std::hint::black_box(&text)))
        };
        let serde = time(&|t| serde_json::to_string(t).expect("a string").len());
        let words = time(&|t| apiwitness_record::json_string::json_string(t).len());
        println!(
            "text {label:>6} ({} bytes): serde_json {serde:7.2} µs ({:5.0} MB/s), in blocks of 64 bytes {words:7.2} µs ({:5.0} MB/s): {:.2}x",
            text.len(),
            text.len() as f64 / serde,
            text.len() as f64 / words,
            serde / words
        );
    }
    json_check_rows();
    protobuf_rows();
    println!("a batch of record lines, compressed for shipping");
    for (label, value_bytes, records) in [
        ("1 KiB ConfigMaps", 768, 180),
        ("64 KiB ConfigMaps", 49_152, 4),
    ] {
        // Each record its own data: the same body again would compress to
        // a reference to the first.
        let lines: Vec<Vec<u8>> = (0..records)
            .map(|n| record_line(n, &config_map(&base64_of_noise(value_bytes, n as u64 + 1))))
            .collect();
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        let (gzip_us, gzip_size) = per_batch(&lines, ShipEncoding::Gzip, 1);
        let (zstd_us, zstd_size) = per_batch(&lines, ShipEncoding::Zstd, 1);
        let (fast_us, fast_size) = per_batch(&lines, ShipEncoding::Zstd, -1);
        let rate = |us: f64| bytes as f64 / us;
        println!(
            "{records:>3} x {label:<17} ({bytes} bytes): gzip {gzip_us:7.0} µs ({:5.0} MB/s, {gzip_size} bytes), zstd level 1 {zstd_us:7.0} µs ({:5.0} MB/s, {zstd_size} bytes): {:.2}x",
            rate(gzip_us),
            rate(zstd_us),
            gzip_us / zstd_us
        );
        println!(
            "{records:>3} x {label:<17} zstd level -1 (the default): {fast_us:7.0} µs ({:5.0} MB/s, {fast_size} bytes)",
            rate(fast_us)
        );
    }
}
