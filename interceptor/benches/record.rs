//! Interceptor benchmark: what turning one captured body into its record line
//! costs, as a JSON tree (parsed, walked by the redactor, written out again)
//! and as the text it came in, for a body that needs no redaction. Both run
//! in the same process on the same bodies. Not a test: it prints figures.
//!
//!   cargo bench -p apiwitness-interceptor --bench record

use apiwitness_interceptor::capture::Captured;
use apiwitness_interceptor::decode;
use apiwitness_interceptor::redact::Redactor;
use apiwitness_record::ApiRequest;
use bytes::Bytes;
use std::time::Instant;

/// Base64 of pseudo-random bytes, as in `hack/bench/interceptor.sh`'s
/// ConfigMaps: the hardest case for compression, and a long string to
/// escape.
fn base64_of_noise(len: usize) -> String {
    use base64::Engine;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
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

/// Microseconds for one body, decoded, redacted and written as a line.
fn per_body(
    captured: &Captured,
    request: &ApiRequest,
    redactor: &Redactor,
    keeps_text: bool,
) -> f64 {
    let rounds = (20_000_000 / captured.bytes.len().max(1)).clamp(200, 200_000);
    let started = Instant::now();
    let mut written = 0;
    for _ in 0..rounds {
        let mut body =
            decode::body(captured, Some("application/json"), None, keeps_text).expect("a body");
        redactor.body(request, &mut body);
        written += serde_json::to_vec(&body).expect("serializable").len();
    }
    std::hint::black_box(written);
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
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
    assert!(redactor.keeps_text(&request));
    println!("apiwitness interceptor benchmark: a captured JSON body to its record");
    for (label, value_bytes) in [("1 KiB", 768), ("64 KiB", 49_152)] {
        let bytes = config_map(&base64_of_noise(value_bytes));
        let captured = Captured {
            size: bytes.len() as u64,
            bytes,
            complete: true,
            ..Default::default()
        };
        let tree = per_body(&captured, &request, &redactor, false);
        let text = per_body(&captured, &request, &redactor, true);
        println!(
            "ConfigMap {label:>6} ({} bytes): as a tree {tree:7.1} µs, as its text {text:7.1} µs: {:.2}x",
            captured.bytes.len(),
            tree / text
        );
    }
}
