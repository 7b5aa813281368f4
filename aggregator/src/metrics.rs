//! Prometheus metrics of the aggregator, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `interceptor` (POST /ingest) or `audit` (POST /audit).
    pub source: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub accepted: Family<SourceLabel, Counter>,
    pub duplicates: Family<SourceLabel, Counter>,
    pub refused_lines: Family<SourceLabel, Counter>,
    pub drop_reports: Counter,
    pub reports: Counter,
    pub spec_operations: Gauge,
    pub raw_records: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("apiwitness_aggregator");
        let accepted = Family::<SourceLabel, Counter>::default();
        registry.register(
            "records_accepted",
            "Records stored, by source",
            accepted.clone(),
        );
        let duplicates = Family::<SourceLabel, Counter>::default();
        registry.register(
            "records_duplicate",
            "Records received again (a retried batch), counted once",
            duplicates.clone(),
        );
        let refused_lines = Family::<SourceLabel, Counter>::default();
        registry.register(
            "lines_refused",
            "Lines refused as malformed or not the writer's to write",
            refused_lines.clone(),
        );
        let drop_reports = Counter::default();
        registry.register(
            "drop_reports",
            "Drop reports received from interceptors",
            drop_reports.clone(),
        );
        let reports = Counter::default();
        registry.register("reports", "Coverage reports served", reports.clone());
        let spec_operations = Gauge::default();
        registry.register(
            "spec_operations",
            "Operations in the loaded OpenAPI spec",
            spec_operations.clone(),
        );
        let raw_records = Gauge::default();
        registry.register(
            "raw_records",
            "Raw records kept in the store, within the retention bounds",
            raw_records.clone(),
        );
        Metrics {
            registry,
            accepted,
            duplicates,
            refused_lines,
            drop_reports,
            reports,
            spec_operations,
            raw_records,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn count_ingest(
        &self,
        source: &'static str,
        accepted: usize,
        duplicates: usize,
        refused: usize,
    ) {
        let label = SourceLabel { source };
        self.accepted.get_or_create(&label).inc_by(accepted as u64);
        self.duplicates
            .get_or_create(&label)
            .inc_by(duplicates as u64);
        self.refused_lines
            .get_or_create(&label)
            .inc_by(refused as u64);
    }
}
