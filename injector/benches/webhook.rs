//! Webhook latency, server side: the time from an AdmissionReview's body to
//! the answer's body, through the real router (`webhook::app`), for a pod
//! that is injected and for a Deployment whose template is annotated. Not a
//! test: it prints figures.
//!
//!   cargo bench -p apiwitness-injector --bench webhook [-- REQUESTS]
//!
//! The baseline, in the same run, is the least any webhook must do: parse
//! the same AdmissionReview and serialize an allowed answer, with no
//! decision and no patch. The target is a p99 under 2 ms.

use apiwitness_injector::events::Events;
use apiwitness_injector::metrics::Metrics;
use apiwitness_injector::settings::InjectSettings;
use apiwitness_injector::webhook::{AppState, Namespaces, app};
use axum::body::Body;
use http_body_util::BodyExt;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        apiwitness_runtime::manifest_dir!()
    ))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Figures {
    samples.sort();
    Figures {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        max: *samples.last().unwrap(),
    }
}

fn baseline(body: &str, n: usize) -> Figures {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let review: AdmissionReview<DynamicObject> = serde_json::from_str(body).unwrap();
        let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        let answer = serde_json::to_vec(&AdmissionResponse::from(&request).into_review()).unwrap();
        std::hint::black_box(answer);
        samples.push(started.elapsed());
    }
    summarize(samples)
}

async fn webhook(state: Arc<AppState>, body: &str, n: usize) -> Figures {
    let router = app(state);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let request = axum::http::Request::post("/mutate")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let started = Instant::now();
        let response = router.clone().oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        samples.push(started.elapsed());
        assert!(bytes.len() > 100);
    }
    summarize(samples)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let state = Arc::new(AppState {
        settings: RwLock::new(Arc::new(InjectSettings::example())),
        namespaces: Namespaces::Fixed(Default::default()),
        events: Events::recorded(),
        certifier: None,
        trust: None,
        metrics: Metrics::default(),
    });
    println!("webhook latency, server side, {n} requests each (one core)");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "case", "p50", "p99", "max", "p99 ratio"
    );
    for (case, file) in [
        ("pod, injected", "pod-opted-in.json"),
        ("deployment, annotated", "deployment-annotated.json"),
    ] {
        let body = fixture(file);
        // Warm up allocators and caches.
        webhook(state.clone(), &body, 500).await;
        baseline(&body, 500);
        let base = baseline(&body, n);
        let ours = webhook(state.clone(), &body, n).await;
        println!(
            "{:<28} {:>12} {:>12} {:>12}",
            format!("{case}: baseline"),
            us(base.p50),
            us(base.p99),
            us(base.max)
        );
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>11.2}x",
            format!("{case}: apiwitness"),
            us(ours.p50),
            us(ours.p99),
            us(ours.max),
            ours.p99.as_secs_f64() / base.p99.as_secs_f64()
        );
        let verdict = if ours.p99 < Duration::from_millis(2) {
            "met"
        } else {
            "MISSED"
        };
        println!("{:<28} target p99 < 2 ms: {verdict}", "");
    }
}
