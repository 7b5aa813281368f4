//! Prometheus metrics of the interceptor, served on the admin port.

use crate::trust::TrustMetrics;
use crate::upstream::UpstreamMetrics;
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

/// The status classes of [`StatusLabel`].
const STATUS_CLASSES: [&str; 7] = ["error", "1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub struct Metrics {
    pub registry: Registry,
    // The series of the labelled families, looked up once: a family finds
    // a series by hashing its labels, three times an exchange, which was
    // half a percent of the proxy's instructions for a small GET.
    exchanges_by_class: [Counter; STATUS_CLASSES.len()],
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    pub duration: Histogram,
    pub queue_depth: Gauge,
    pub dropped: Counter,
    pub stripped: Counter,
    pub batches_compressed_fast: Counter,
    pub shipped: Counter,
    pub ship_failures: Counter,
    pub lines_refused: Counter,
    pub lines_written_again: Counter,
    pub upstream_errors: Counter,
    pub upstream: UpstreamMetrics,
    pub trust: TrustMetrics,
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
        let lines_refused = Counter::default();
        registry.register(
            "lines_refused",
            "Lines of batches the aggregator took that it could not read, and did not store, and that could not be written for it again (its answer, logged, says why)",
            lines_refused.clone(),
        );
        let lines_written_again = Counter::default();
        registry.register(
            "lines_written_again",
            "Records the aggregator could not read at their record format (it is older than this sidecar), written again at format 2 and sent again",
            lines_written_again.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "Requests the apiserver could not be reached for",
            upstream_errors.clone(),
        );
        let upstream = UpstreamMetrics::default();
        registry.register(
            "upstream_http2_connections",
            "HTTP/2 connections open to the apiserver",
            upstream.http2_connections.clone(),
        );
        registry.register(
            "upstream_resends",
            "Requests sent again after the apiserver refused them unprocessed (a GOAWAY, REFUSED_STREAM)",
            upstream.resent.clone(),
        );
        let trust = TrustMetrics::default();
        registry.register(
            "ca_file_changes",
            "Times a CA file (the apiserver's, the aggregator's, the certify endpoint's) was found changed and its new CAs trusted",
            trust.changes.clone(),
        );
        registry.register(
            "ca_file_failures",
            "Times a CA file could not be read again or held no usable CA; the CAs read before stay trusted",
            trust.failures.clone(),
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
        let exchanges_by_class =
            STATUS_CLASSES.map(|code| exchanges.get_or_create(&StatusLabel { code }).clone());
        let bytes_of = |direction| bytes.get_or_create(&DirectionLabel { direction }).clone();
        Metrics {
            registry,
            exchanges_by_class,
            request_bytes: bytes_of("request"),
            response_bytes: bytes_of("response"),
            duration,
            queue_depth,
            dropped,
            stripped,
            batches_compressed_fast,
            shipped,
            ship_failures,
            lines_refused,
            lines_written_again,
            upstream_errors,
            upstream,
            trust,
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

    /// Counts an exchange by the class of its status (0: no response).
    pub fn count_exchange(&self, status: u16) {
        let class = match status {
            0 => 0,
            100..=599 => usize::from(status / 100),
            _ => STATUS_CLASSES.len() - 1,
        };
        self.exchanges_by_class[class].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_counted_by_status_class() {
        let metrics = Metrics::new();
        for status in [200, 201, 404, 0, 503, 700, 101] {
            metrics.count_exchange(status);
        }
        metrics.response_bytes.inc_by(5);
        let text = metrics.encode();
        for (code, count) in [
            ("2xx", 2),
            ("4xx", 1),
            ("error", 1),
            ("5xx", 1),
            ("other", 1),
            ("1xx", 1),
            ("3xx", 0),
        ] {
            let line =
                format!("apiwitness_interceptor_exchanges_total{{code=\"{code}\"}} {count}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains("apiwitness_interceptor_body_bytes_total{direction=\"response\"} 5\n")
        );
        assert!(
            text.contains("apiwitness_interceptor_body_bytes_total{direction=\"request\"} 0\n")
        );
    }
}
