//! Prometheus metrics of the injector, served on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Pod, Deployment, ...
    pub kind: String,
    /// injected, patched, skipped, ignored, malformed
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<DecisionLabels, Counter>,
    pub admission_seconds: Histogram,
    pub certificates: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("apiwitness_injector");
        let admissions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "admissions",
            "AdmissionReviews answered, by kind and decision",
            admissions.clone(),
        );
        let admission_seconds = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0,
        ]);
        registry.register(
            "admission_seconds",
            "Time to answer an AdmissionReview, from its body to the answer",
            admission_seconds.clone(),
        );
        let certificates = Family::<ResultLabel, Counter>::default();
        registry.register(
            "certificates",
            "Certify requests, by result",
            certificates.clone(),
        );
        Metrics {
            registry,
            admissions,
            admission_seconds,
            certificates,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
