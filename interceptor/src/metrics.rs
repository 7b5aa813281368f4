//! Prometheus metrics of the interceptor, served on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The HTTP status class (`2xx` ... `5xx`), or `error` when the apiserver
    /// gave no response.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub exchanges: Family<StatusLabel, Counter>,
    pub bytes: Family<DirectionLabel, Counter>,
    pub duration: Histogram,
    pub queue_depth: Gauge,
    pub dropped: Counter,
    pub stripped: Counter,
    pub batches_compressed_fast: Counter,
    pub shipped: Counter,
    pub ship_failures: Counter,
    pub upstream_errors: Counter,
    pub certificate_expiry: Gauge<f64, AtomicU64>,
    pub connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("apiwitness_interceptor");
        let exchanges = Family::<StatusLabel, Counter>::default();
        registry.register(
            "exchanges",
            "Exchanges proxied, by status class",
            exchanges.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "body_bytes",
            "Body bytes proxied, by direction",
            bytes.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "exchange_duration_seconds",
            "From the request's arrival to the end of the response body",
            duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Records waiting to be shipped",
            queue_depth.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "records_dropped",
            "Records dropped because the queue was full",
            dropped.clone(),
        );
        let stripped = Counter::default();
        registry.register(
            "records_stripped",
            "Records kept without their bodies and watch events because the queue was full",
            stripped.clone(),
        );
        let batches_compressed_fast = Counter::default();
        registry.register(
            "batches_compressed_fast",
            "Batches compressed at zstd's fastest level, because the queue was half full or the batch before kept more than half its size",
            batches_compressed_fast.clone(),
        );
        let shipped = Counter::default();
        registry.register(
            "records_shipped",
            "Records acknowledged by the aggregator",
            shipped.clone(),
        );
        let ship_failures = Counter::default();
        registry.register(
            "ship_failures",
            "Batches the aggregator did not acknowledge (retried)",
            ship_failures.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "Requests the apiserver could not be reached for",
            upstream_errors.clone(),
        );
        let certificate_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            certificate_expiry.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open",
            connections.clone(),
        );
        Metrics {
            registry,
            exchanges,
            bytes,
            duration,
            queue_depth,
            dropped,
            stripped,
            batches_compressed_fast,
            shipped,
            ship_failures,
            upstream_errors,
            certificate_expiry,
            connections,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn status_label(status: u16) -> StatusLabel {
        let code = match status / 100 {
            _ if status == 0 => "error",
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "other",
        };
        StatusLabel { code }
    }
}
